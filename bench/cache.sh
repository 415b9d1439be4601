#!/usr/bin/env bash
# Registry step cache benchmark: "runner A builds, runner B rebuilds".
# Not a test: it prints figures.
#
#   bash bench/cache.sh          (needs root; builds imgbuild first)
#
# Two fresh stores share one docker-registry on loopback.  Runner A builds
# the workload and exports its cache; runner B (an empty store holding only
# the base image) rebuilds (a) with nothing changed, (b) with one copied
# file changed, (c) like (a) followed by a push to the same registry.  For
# each: B's wall time, the requests B made to the registry and the blob
# bytes it downloaded (both read from the registry's access log), for
# imgbuild (--cache-from/--cache-to) and buildah bud --layers
# (--cache-from/--cache-to) on the same registry.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
bash scripts/install-deps.sh >/dev/null
cmake --preset default >/dev/null && cmake --build --preset default -j"$(nproc)" --target imgbuild >/dev/null
IB=$REPO/build/imgbuild

W=$(mktemp -d /var/tmp/ib-bench-cache.XXXXXX)
REG_PID=
cleanup() {
	[ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
	for d in "$W"/bh-*; do
		[ -d "$d" ] && umount "$d/storage/overlay" 2>/dev/null || true
	done
	rm -rf "$W"
}
trap cleanup EXIT
export SOURCE_DATE_EPOCH=0

# the registry, logging every request
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
mkdir -p "$W/reg"
cat >"$W/reg/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/reg/data
http:
  addr: $REG
  secret: bench
EOF
docker-registry serve "$W/reg/config.yml" >"$W/reg/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

# requests and downloaded blob bytes in the registry log after line $1
reg_figures() {
	tail -n +"$(($1 + 1))" "$W/reg/log" | python3 -c '
import re, sys
n = 0; down = 0
for line in sys.stdin:
    if "response completed" not in line:
        continue
    n += 1
    m = re.search(r"http.request.method=(\w+)", line)
    u = re.search(r"http.request.uri=\"([^\"]*)\"", line)
    w = re.search(r"http.response.written=(\d+)", line)
    if m and u and w and m.group(1) == "GET" and "/blobs/sha256:" in u.group(1):
        down += int(w.group(1))
print(n, down)'
}
log_mark() { wc -l <"$W/reg/log"; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }

# workload R1, the one of bench/run.sh
CTX=$W/ctx
. "$REPO/bench/workload.sh"
bench_workload "$CTX"

# the base image in a store, and as a seed for each fresh runner
IMGBUILD_ROOT=$W/ib-seed $IB -q build recipes/busybox.lua --context /bin -t localhost/busybox:latest >/dev/null
ib_fresh() { rm -rf "$W/ib-$1"; cp -a "$W/ib-seed" "$W/ib-$1"; }
bh() { buildah --root "$W/bh-$1/storage" --runroot "$W/bh-$1/run" --storage-driver overlay "${@:2}"; }
bh_fresh() {
	[ -d "$W/bh-$1" ] && { umount "$W/bh-$1/storage/overlay" 2>/dev/null || true; rm -rf "$W/bh-$1"; }
	skopeo copy -q "oci:$W/ib-seed/oci:localhost/busybox:latest" \
		"containers-storage:[overlay@$W/bh-$1/storage+$W/bh-$1/run]localhost/busybox:latest" >/dev/null
}

IBC=$REG/bench/ib-cache
BHC=$REG/bench/bh-cache
ib_build() { IMGBUILD_ROOT=$W/ib-$1 $IB -q build "$CTX/recipe.lua" "${@:2}" >/dev/null 2>"$W/ib-$1.err"; }
bh_build() {
	bh "$1" bud -q --layers --tls-verify=false -f "$CTX/Containerfile" "${@:2}" "$CTX" >/dev/null 2>"$W/bh-$1.err"
}

# runner A: build and export
ib_fresh A
bh_fresh A
t=$(now); ib_build A -t localhost/app --cache-to "$IBC,mode=max"; ib_export=$(elapsed "$t")
t=$(now); bh_build A -t localhost/app --cache-to "$BHC"; bh_export=$(elapsed "$t")
# re-export, nothing changed
m=$(log_mark); t=$(now); ib_build A -t localhost/app --cache-to "$IBC,mode=max"; ib_reexport=$(elapsed "$t")
read -r ib_reexport_req _ < <(reg_figures "$m")
m=$(log_mark); t=$(now); bh_build A -t localhost/app --cache-to "$BHC"; bh_reexport=$(elapsed "$t")
read -r bh_reexport_req _ < <(reg_figures "$m")

declare -A R
scenario() { # NAME SETUP...
	local name=$1
	ib_fresh B
	bh_fresh B
	# the runners' old stores were just deleted: ext4 skips inodes freed
	# less than 30 s ago when it allocates, which would bill seconds of
	# system time to whichever build creates files first (see run.sh)
	sync
	sleep "${IB_BENCH_SETTLE:-31}"
	local m t
	m=$(log_mark); t=$(now)
	if [ "$name" = c ]; then
		ib_build B -t "$REG/bench/ib-app:b" --cache-from "$IBC" --push
	else
		ib_build B -t localhost/app --cache-from "$IBC"
	fi
	R[ib_$name]="$(elapsed "$t") $(reg_figures "$m")"
	m=$(log_mark); t=$(now)
	bh_build B -t "$REG/bench/bh-app:b" --cache-from "$BHC"
	if [ "$name" = c ]; then
		bh B push -q --tls-verify=false "$REG/bench/bh-app:b" >/dev/null
	fi
	R[bh_$name]="$(elapsed "$t") $(reg_figures "$m")"
}
scenario a
scenario c
echo "/* bench $(now) */" >>"$CTX/include/stdio.h"
# A exports the changed build first (as the previous CI job would have)
ib_build A -t localhost/app --cache-to "$IBC,mode=max"
bh_build A -t localhost/app --cache-to "$BHC"
echo "/* bench again $(now) */" >>"$CTX/include/stdio.h"
scenario b

row() { # LABEL KEY
	read -r it ir ib <<<"${R[ib_$2]}"
	read -r bt br bb <<<"${R[bh_$2]}"
	printf '%-44s %8s s %5s req %12s B | %8s s %5s req %12s B\n' "$1" "$it" "$ir" "$ib" "$bt" "$br" "$bb"
}
echo
echo "runner B (empty store + base image), registry on loopback"
printf '%-44s %31s | %31s\n' "" "imgbuild" "buildah bud --layers"
row "(a) nothing changed" a
row "(b) one copied file changed" b
row "(c) as (a), then push to the same registry" c
echo
printf 'runner A export (cold build + cache-to): imgbuild %ss, buildah %ss\n' "$ib_export" "$bh_export"
printf 'runner A re-export, nothing changed:     imgbuild %ss (%s req), buildah %ss (%s req)\n' \
	"$ib_reexport" "$ib_reexport_req" "$bh_reexport" "$bh_reexport_req"
