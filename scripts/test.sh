#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds with ASan+UBSan,
# runs the cmocka unit tests and the bats integration tests against the
# sanitized binary, then the build suite as a plain user
# (scripts/test-rootless.sh).  Exit status is non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."

# phase NAME START: print how long a phase took (seconds since START).
phase_start() { date +%s.%N; }
phase_end() { printf 'phase %-12s %7.1fs\n' "$1" "$(echo "$(date +%s.%N) - $2" | bc -l)"; }
phases=()

t=$(phase_start)
bash scripts/install-deps.sh || exit 1
phases+=("$(phase_end deps "$t")")

t=$(phase_start)
cmake --preset asan >/dev/null || exit 1
cmake --build --preset asan -j"$(nproc)" || exit 1
phases+=("$(phase_end build "$t")")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

t=$(phase_start)
unit_ok=0
ctest --preset asan -j"$(nproc)" 2>&1 | tee build-asan/unit.log || unit_ok=1
phases+=("$(phase_end unit "$t")")
# ctest closes with "100% tests passed, 0 tests failed out of N"
summary=$(grep -E 'tests failed out of [0-9]+' build-asan/unit.log | tail -1)
unit_total=$(echo "$summary" | sed -nE 's/.* out of ([0-9]+).*/\1/p')
unit_failed=$(echo "$summary" | sed -nE 's/.* ([0-9]+) tests failed.*/\1/p')
unit_total=${unit_total:-0}
unit_passed=$(( unit_total - ${unit_failed:-$unit_total} ))

export IMGBUILD="$PWD/build-asan/imgbuild"
# The suites run side by side (each has its own store, registries and
# podman storage); the cases inside one file share state and stay in order.
t=$(phase_start)
bats_ok=0
bats --tap --jobs "${IB_TEST_JOBS:-$(nproc)}" --no-parallelize-within-files tests/integration 2>&1 |
	tee build-asan/integration.log || bats_ok=1
phases+=("$(phase_end integration "$t")")
# The build suite again as a plain user with subordinate ids (the
# rootless and container rows run inside tests/integration/rootless.bats).
t=$(phase_start)
rootless_ok=0
rm -f build-asan/rootless.log
bash scripts/test-rootless.sh build-asan/rootless.log >/dev/null 2>&1 || rootless_ok=1
grep -E '^(not )?ok ' build-asan/rootless.log 2>/dev/null | sed 's/^/rootless: /'
phases+=("$(phase_end rootless "$t")")
b_pass=$(cat build-asan/integration.log build-asan/rootless.log 2>/dev/null | grep -c '^ok ' || true)
b_fail=$(cat build-asan/integration.log build-asan/rootless.log 2>/dev/null | grep -c '^not ok ' || true)
b_skip=$(cat build-asan/integration.log build-asan/rootless.log 2>/dev/null | grep -c '^ok .*# skip' || true)
# a rootless run that failed before any case ran is one failure
if [ "$rootless_ok" != 0 ] && ! grep -q '^not ok ' build-asan/rootless.log 2>/dev/null; then
	b_fail=$((b_fail + 1))
fi

passed=$(( ${unit_passed:-0} + b_pass - b_skip ))
failed=$(( ${unit_total:-0} - ${unit_passed:-0} + b_fail ))
echo
printf '%s\n' "${phases[@]}"
echo "unit: ${unit_passed:-0}/${unit_total:-0} passed; integration: $((b_pass - b_skip)) passed, $b_fail failed, $b_skip skipped"
echo "$passed passed, $failed failed, $b_skip skipped"
[ "$unit_ok" = 0 ] && [ "$bats_ok" = 0 ] && [ "$rootless_ok" = 0 ] && [ "$failed" = 0 ]
