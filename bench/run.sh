#!/usr/bin/env bash
# Reference benchmark: imgbuild vs buildah (bud --layers) on the same
# workload, in the same run, on this machine.  Not a test: it prints figures.
#
#   bash bench/run.sh            (needs root; builds imgbuild first)
#
# Workload: busybox base; copy a ~130 MB / 8000-file tree (/usr/include from
# linux-libc-dev); a run that writes 1000 files; a run that deletes a
# subtree; env, workdir, entrypoint.  Figures: cold build (no cache), fully
# cached rebuild, rebuild after one copied file changes; peak memory while
# committing a 1 GB layer; and, when the registry client is built, push/pull.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
bash scripts/install-deps.sh >/dev/null
cmake --preset default >/dev/null && cmake --build --preset default -j"$(nproc)" --target imgbuild >/dev/null
IB=$REPO/build/imgbuild

W=$(mktemp -d /var/tmp/ib-bench.XXXXXX)
cleanup() {
	umount "$W/buildah/storage/overlay" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
export IMGBUILD_ROOT=$W/root
CTX=$W/ctx
. "$REPO/bench/workload.sh"
bench_workload "$CTX"
export SOURCE_DATE_EPOCH=0

# busybox base, for both tools
$IB -q build recipes/busybox.lua --context /bin -t localhost/busybox:latest >/dev/null
BUILDAH_ROOT=$W/buildah
BUILDAH="buildah --root $BUILDAH_ROOT/storage --runroot $BUILDAH_ROOT/run --storage-driver overlay"
skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/busybox:latest" \
	"containers-storage:[overlay@$BUILDAH_ROOT/storage+$BUILDAH_ROOT/run]localhost/busybox:latest" >/dev/null


now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.3f'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
TRIALS=${IB_BENCH_TRIALS:-3}
[ "$TRIALS" -ge 3 ] || { echo "IB_BENCH_TRIALS must be at least 3" >&2; exit 2; }

# One table for the whole run: every section adds its rows here, printed at
# the end.  row LABEL IMGBUILD OTHER UNIT [TARGET]; note TEXT: a line under it
TABLE=$W/table NOTES=$W/notes
: >"$TABLE"
: >"$NOTES"
row() {
	local r
	r=$(ratio "$2" "$3")
	if [ "$4" = s ]; then
		printf '%-30s %9ss %9ss %8s  %s\n' "$1" "$2" "$3" "$r" "${5:-}" >>"$TABLE"
	elif [ "$4" = MB ]; then
		printf '%-30s %8sMB %8sMB %8s  %s\n' "$1" "$2" "$3" "$r" "${5:-}" >>"$TABLE"
	else
		printf '%-30s %10s %10s %8s  %s\n' "$1" "$2" "$3" "$r" "${5:-}" >>"$TABLE"
	fi
}
note() { echo "$*" >>"$NOTES"; }

run_ib() { $IB -q build "$CTX/recipe.lua" --context "$CTX" -t localhost/bench:latest "$@" >/dev/null; }
run_bh() { $BUILDAH bud --layers -q "$@" -f "$CTX/Containerfile" -t localhost/bench:latest "$CTX" >"$W/buildah.log" 2>&1 || { cat "$W/buildah.log"; exit 1; }; }

# trial VAR_IB VAR_BH PREPARE ARGS...: TRIALS runs of each tool taking turns
# (which one goes first alternates); PREPARE runs before each pair; the
# medians -> VAR_IB, VAR_BH
trial() {
	local vib=$1 vbh=$2 prep=$3 i t tib=() tbh=()
	shift 3
	for i in $(seq "$TRIALS"); do
		$prep
		if [ $((i % 2)) = 1 ]; then
			t=$(now); run_ib "$@"; tib+=("$(elapsed "$t")")
			t=$(now); run_bh "$@"; tbh+=("$(elapsed "$t")")
		else
			t=$(now); run_bh "$@"; tbh+=("$(elapsed "$t")")
			t=$(now); run_ib "$@"; tib+=("$(elapsed "$t")")
		fi
	done
	printf -v "$vib" '%s' "$(median "${tib[@]}")"
	printf -v "$vbh" '%s' "$(median "${tbh[@]}")"
}
nothing() { :; }
touch_one() { echo "/* bench $(now) */" >>"$CTX/include/stdio.h"; }

echo "== workload: copy $(du -sh "$CTX/include" | cut -f1) / $(find "$CTX/include" -type f | wc -l) files, run x2, env/workdir/entrypoint"
echo "== medians of $TRIALS runs, imgbuild and buildah taking turns; load average:$(uptime | sed 's/.*load average://')"

# cold (no cache): warm the page cache once so both tools read the same way
run_ib --no-cache; run_bh --no-cache
trial ib_cold bh_cold nothing --no-cache
# fully cached
run_ib; run_bh
trial ib_cached bh_cached nothing
# one copied file changes before each pair of runs
trial ib_one bh_one touch_one

row "cold build (no cache)" "$ib_cold" "$bh_cold" s
row "fully cached rebuild" "$ib_cached" "$bh_cached" s
row "one copied file changed" "$ib_one" "$bh_one" s

# layer size: imgbuild's gzip blobs vs `gzip -6` (what docker and buildah
# write) of the same uncompressed tars
ib_gz=0; g6=0
for d in $($IB inspect localhost/bench:latest | python3 -c 'import json, sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["Manifest"]["layers"]))'); do
	b=$IMGBUILD_ROOT/oci/blobs/sha256/${d#sha256:}
	ib_gz=$((ib_gz + $(stat -c %s "$b")))
	g6=$((g6 + $(zcat "$b" | gzip -6 | wc -c)))
done
row "gzip layers, bytes (gzip -6)" "$ib_gz" "$g6" B
note "(gzip -6) row: the second column is gzip -6 (what docker and buildah write) of imgbuild's own tars"

# peak memory while committing a 1 GB layer (copy of one 1 GB file)
BIG=$W/big
mkdir -p "$BIG"
head -c 1G /dev/urandom > "$BIG/blob.bin"
printf 'from "scratch"\ncopy { "blob.bin", "/blob.bin" }\n' > "$BIG/recipe.lua"
big_mb=()
for i in $(seq "$TRIALS"); do
	/usr/bin/time -f '%M' -o "$W/mem" $IB -q build "$BIG/recipe.lua" --no-cache >/dev/null
	big_mb+=("$(( $(cat "$W/mem") / 1024 ))")
done
note "peak RSS committing a 1 GB layer (imgbuild only, median of $TRIALS): $(median "${big_mb[@]}") MB"

if [ -f bench/registry.sh ]; then
	source bench/registry.sh
fi

echo
printf '%-30s %10s %10s %8s  %s\n' figure imgbuild buildah ratio target
cat "$TABLE"
cat "$NOTES"
echo "load average at the end:$(uptime | sed 's/.*load average://')"
