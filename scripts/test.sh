#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds with ASan+UBSan,
# runs the cmocka unit tests and the bats integration tests against the
# sanitized binary.  Exit status is non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1

cmake --preset asan >/dev/null || exit 1
cmake --build --preset asan -j"$(nproc)" || exit 1

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

unit_ok=0
ctest --preset asan -j2 2>&1 | tee build-asan/unit.log || unit_ok=1
# ctest closes with "100% tests passed, 0 tests failed out of 16"
summary=$(grep -E 'tests failed out of [0-9]+' build-asan/unit.log | tail -1)
unit_total=$(echo "$summary" | sed -nE 's/.* out of ([0-9]+).*/\1/p')
unit_failed=$(echo "$summary" | sed -nE 's/.* ([0-9]+) tests failed.*/\1/p')
unit_total=${unit_total:-0}
unit_passed=$(( unit_total - ${unit_failed:-$unit_total} ))

export IMGBUILD="$PWD/build-asan/imgbuild"
bats_ok=0
bats --tap tests/integration 2>&1 | tee build-asan/integration.log || bats_ok=1
b_pass=$(grep -c '^ok ' build-asan/integration.log || true)
b_fail=$(grep -c '^not ok ' build-asan/integration.log || true)
b_skip=$(grep -c '^ok .*# skip' build-asan/integration.log || true)

passed=$(( ${unit_passed:-0} + b_pass - b_skip ))
failed=$(( ${unit_total:-0} - ${unit_passed:-0} + b_fail ))
echo
echo "unit: ${unit_passed:-0}/${unit_total:-0} passed; integration: $((b_pass - b_skip)) passed, $b_fail failed, $b_skip skipped"
echo "$passed passed, $failed failed, $b_skip skipped"
[ "$unit_ok" = 0 ] && [ "$bats_ok" = 0 ] && [ "$failed" = 0 ]
