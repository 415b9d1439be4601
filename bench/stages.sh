#!/usr/bin/env bash
# Benchmark: stages that do not depend on each other, built side by side.
# Not a test: it prints figures.
#
#   sudo bash bench/stages.sh      (needs root; builds imgbuild first)
#
# Workload S: two builder stages on busybox, each a step that runs for a
# second and writes 40 MB of random data (a layer that does not compress),
# then a second step; a final stage copies both results.  Every figure is a
# --no-cache build into a store that keeps the base, medians of 3 rounds,
# the tools taking turns:
#   imgbuild                         (stages side by side)
#   imgbuild IMGBUILD_PARALLEL_STAGES=0 (one after the other)
#   buildah bud --layers --jobs 2    (when installed: buildah's parallel stages)
# and the sum of the steps' own run times as imgbuild reports them
# (the floor a sequential tool approaches).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
cmake --preset default >/dev/null && cmake --build --preset default -j"$(nproc)" --target imgbuild >/dev/null
IB=$REPO/build/imgbuild
W=$(mktemp -d /var/tmp/ib-stages.XXXXXX)
BUILDAH=
cleanup() {
	[ -n "$BUILDAH" ] && umount "$W/buildah/storage/overlay" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
export IMGBUILD_ROOT=$W/root SOURCE_DATE_EPOCH=0
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }

CTX=$W/ctx
mkdir -p "$CTX"
cat >"$CTX/recipe.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run "sleep 1; head -c 41943040 /dev/urandom > /a.bin"
run "sleep 1; echo a > /a.txt"
stage("b", "localhost/busybox:latest")
run "sleep 1; head -c 41943040 /dev/urandom > /b.bin"
run "sleep 1; echo b > /b.txt"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/a.bin", "/a.txt", "/" }
copy { from = "b", "/b.bin", "/b.txt", "/" }
LUA
cat >"$CTX/Containerfile" <<'DOCKER'
FROM localhost/busybox:latest AS a
RUN sleep 1; head -c 41943040 /dev/urandom > /a.bin
RUN sleep 1; echo a > /a.txt
FROM localhost/busybox:latest AS b
RUN sleep 1; head -c 41943040 /dev/urandom > /b.bin
RUN sleep 1; echo b > /b.txt
FROM localhost/busybox:latest
COPY --from=a /a.bin /a.txt /
COPY --from=b /b.bin /b.txt /
DOCKER
printf 'Containerfile\nrecipe.lua\n' >"$CTX/.dockerignore"
$IB -q build recipes/busybox.lua --context /bin -t localhost/busybox:latest >/dev/null
$IB run --network none localhost/busybox:latest true >/dev/null

TOOLS=(par seq)
if command -v buildah >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1; then
	BUILDAH="buildah --root $W/buildah/storage --runroot $W/buildah/run --storage-driver overlay"
	skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/busybox:latest" \
		"containers-storage:[overlay@$W/buildah/storage+$W/buildah/run]localhost/busybox:latest" >/dev/null
	TOOLS+=(bh)
fi
declare -A NAME=([par]="imgbuild" [seq]="imgbuild IMGBUILD_PARALLEL_STAGES=0" [bh]="buildah --jobs 2")
build() {
	case $1 in
	par) $IB build "$CTX/recipe.lua" --context "$CTX" --network none --no-cache --progress plain -t localhost/s:1 ;;
	seq) IMGBUILD_PARALLEL_STAGES=0 $IB build "$CTX/recipe.lua" --context "$CTX" --network none --no-cache --progress plain -t localhost/s:1 ;;
	bh) $BUILDAH bud --layers --jobs 2 -q --network none --no-cache -f "$CTX/Containerfile" -t localhost/s:1 "$CTX" ;;
	esac
}
for t in "${TOOLS[@]}"; do build "$t" >"$W/warm.log" 2>&1; done
declare -A S=()
STEPS=()
for i in 1 2 3; do
	n=${#TOOLS[@]}
	for k in $(seq 0 $((n - 1))); do
		t=${TOOLS[$(((i + k) % n))]}
		sync
		t0=$(now)
		build "$t" >"$W/$t.log" 2>&1 || { tail -20 "$W/$t.log" >&2; exit 1; }
		S[$t]+=" $(elapsed "$t0")"
		if [ "$t" = seq ]; then
			# the run steps' own times: "#N DONE 1.2s"
			STEPS+=("$(sed -n 's/^#[0-9]* DONE \([0-9.]*\)s$/\1/p' "$W/seq.log" | paste -sd+ | bc -l)")
		fi
	done
done
echo "== S: two independent stages (2 steps each, 40 MB layer), then a final stage; --no-cache, medians of 3"
echo "load average:$(uptime | sed 's/.*load average://'), $(nproc) cores"
for t in "${TOOLS[@]}"; do
	# shellcheck disable=SC2086
	printf '  %-38s %8.3fs\n' "${NAME[$t]}" "$(median ${S[$t]})"
done
printf '  %-38s %8.3fs\n' "sum of the steps (sequential build)" "$(median "${STEPS[@]}")"
