#!/usr/bin/env bash
# Benchmark: imgbuild against every peer that is installed -- buildah
# (bud --layers) and docker build (BuildKit, a private dockerd) -- on the same
# workloads, in the same run, on this machine.  Not a test: it prints figures.
#
#   sudo bash bench/run.sh       (needs root; builds imgbuild first)
#
# Workloads (see bench/README.md):
#   R1  busybox base; copy a ~130 MB / 8000-file tree; a run that writes 1000
#       files; a run that deletes a subtree; env, workdir, entrypoint
#       (bench/workload.sh)
#   R2  Debian bookworm minbase (debootstrap); apt-get install from a local
#       file: repository; an app copy; a non-root user (bench/r2.sh)
# Figures per workload: cold build, fully cached rebuild, rebuild after one
# copied file changes, build + push to an empty registry and the bytes
# pushed.  Then peak memory committing a 1 GB layer and the registry figures
# (bench/registry.sh).  One table of ratios (imgbuild / peer) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
T_START=$(date +%s)
bash scripts/install-deps.sh >/dev/null
cmake --preset default >/dev/null && cmake --build --preset default -j"$(nproc)" --target imgbuild >/dev/null
IB=$REPO/build/imgbuild

# R2's debootstrap rootfs and .debs are kept here across runs
CACHE=${IB_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild-bench}

W=$(mktemp -d /var/tmp/ib-bench.XXXXXX)
DK=
cleanup() {
	declare -F rb_stop_all >/dev/null && rb_stop_all
	declare -F dk_stop >/dev/null && dk_stop
	umount "$W/buildah/storage/overlay" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
export IMGBUILD_ROOT=$W/root
export SOURCE_DATE_EPOCH=0

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.3f'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
TRIALS=${IB_BENCH_TRIALS:-3}
[ "$TRIALS" -ge 3 ] || { echo "IB_BENCH_TRIALS must be at least 3" >&2; exit 2; }
WORKLOADS=" ${IB_BENCH_WORKLOADS:-R1 R2} "
want() { [[ $WORKLOADS == *" $1 "* ]]; }
for w in $WORKLOADS; do
	case $w in R1 | R2) ;; *) echo "IB_BENCH_WORKLOADS: unknown workload $w (R1, R2)" >&2; exit 2 ;; esac
done
. "$REPO/bench/regsrv.sh"

# ---- peers: ib (imgbuild) always; bh (buildah) and dk (BuildKit) if usable
PEERS=(ib)
declare -A NAME=([ib]=imgbuild [bh]=buildah [dk]=BuildKit)
BUILDAH=
if command -v buildah >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1; then
	BUILDAH_ROOT=$W/buildah
	BUILDAH="buildah --root $BUILDAH_ROOT/storage --runroot $BUILDAH_ROOT/run --storage-driver overlay"
	BH_STORE="containers-storage:[overlay@$BUILDAH_ROOT/storage+$BUILDAH_ROOT/run]"
	PEERS+=(bh)
else
	echo "== buildah skipped: buildah or skopeo is not installed"
fi

# A private dockerd (Debian docker.io): its own data root under $W, socket
# and exec root in a short /tmp directory (sun_path), no iptables, no bridge.
# The Debian client is preferred: it runs BuildKit with DOCKER_BUILDKIT=1
# without the buildx plugin.
DOCKER=${IB_BENCH_DOCKER:-}
if [ -z "$DOCKER" ]; then
	if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || true); fi
fi
dk_start() {
	local i
	DK=$(mktemp -d /tmp/ib-dk.XXXXXX)
	dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver overlay2 \
		--data-root "$W/docker" --exec-root "$DK/exec" -H "unix://$DK/d.sock" \
		--pidfile "$DK/d.pid" >"$W/dockerd.log" 2>&1 3>&- &
	export DOCKER_HOST=unix://$DK/d.sock DOCKER_BUILDKIT=1
	for i in $(seq 300); do
		$DOCKER version >/dev/null 2>&1 && break
		sleep 0.1
	done
	$DOCKER version >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -n 2 "$W/dockerd.log" | tr '\n' ' ')"; return 1; }
	# BuildKit must work with this client (a docker >= 23 client needs buildx)
	mkdir -p "$W/dkprobe"
	printf 'FROM scratch\nLABEL probe=1\n' >"$W/dkprobe/Containerfile"
	$DOCKER build -q -f "$W/dkprobe/Containerfile" "$W/dkprobe" >"$W/dkprobe/log" 2>&1 ||
		{ echo "docker build (BuildKit) fails: $(grep -m 1 . "$W/dkprobe/log")"; return 1; }
}
dk_stop() {
	local pid i
	[ -n "$DK" ] || return 0
	if [ -f "$DK/d.pid" ]; then
		pid=$(cat "$DK/d.pid")
		kill "$pid" 2>/dev/null || true
		for i in $(seq 200); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	grep -o " $W/docker[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$DK"
	DK=
}
if [ -n "$DOCKER" ] && command -v dockerd >/dev/null 2>&1; then
	if dk_start >"$W/dk-why"; then
		PEERS+=(dk)
	else
		echo "== BuildKit skipped: $(cat "$W/dk-why")"
		dk_stop
	fi
else
	echo "== BuildKit skipped: dockerd or docker is not installed (Debian docker.io)"
fi
echo "== peers: $(for p in "${PEERS[@]}"; do printf '%s ' "${NAME[$p]}"; done)"

# ---- the three tools, one interface: base_P REF OCI-LAYOUT-REF, build_P CTX
# TAG [--no-cache], cold_P TAG (untimed: drop the tool's build cache and the
# image, keep the base), push_P TAG (TAG names the registry)
LOG=$W/log
fail() { echo "bench: failed: $*" >&2; tail -n 30 "$LOG" >&2; exit 1; }
base_ib() { :; }
base_bh() { skopeo copy -q "oci:$IMGBUILD_ROOT/oci:$1" "$BH_STORE$1" >/dev/null; }
base_dk() { $IB -q save -o "$W/base.tar" "$1" && $DOCKER load -q -i "$W/base.tar" >/dev/null && rm -f "$W/base.tar"; }
build_ib() {
	local ctx=$1 tag=$2
	shift 2
	$IB -q build "$ctx/recipe.lua" --context "$ctx" --network none -t "$tag" "$@" >"$LOG" 2>&1 || fail "imgbuild build $*"
}
build_bh() {
	local ctx=$1 tag=$2
	shift 2
	$BUILDAH bud --layers -q --network none "$@" -f "$ctx/Containerfile" -t "$tag" "$ctx" >"$LOG" 2>&1 || fail "buildah bud $*"
}
build_dk() {
	local ctx=$1 tag=$2
	shift 2
	$DOCKER build -q --network none "$@" -f "$ctx/Containerfile" -t "$tag" "$ctx" >"$LOG" 2>&1 || fail "docker build $*"
}
# imgbuild's cold state is what an ephemeral CI runner has: a fresh store
# holding only the base images (a copy of $IB_BASES, unpacked), so it
# deletes nothing; the peers drop their caches, then settle (below).
IB_BASES=$W/ib-bases IB_ROUND=0
cold_ib() {
	IB_ROUND=$((IB_ROUND + 1))
	mkdir -p "$W/ib-roots"
	cp -a "$IB_BASES" "$W/ib-roots/$IB_ROUND" || fail "copy the base store"
	export IMGBUILD_ROOT=$W/ib-roots/$IB_ROUND
}
cold_bh() { $BUILDAH rmi -f "$1" >/dev/null 2>&1 || true; $BUILDAH rmi --prune >/dev/null 2>&1 || true; }
cold_dk() { $DOCKER rmi -f "$1" >/dev/null 2>&1 || true; $DOCKER builder prune -af >/dev/null 2>&1 || fail "docker builder prune"; }
push_ib() { $IB -q push "$1" >"$LOG" 2>&1 || fail "imgbuild push $1"; }
push_bh() { $BUILDAH push -q --tls-verify=false "$1" "docker://$1" >"$LOG" 2>&1 || fail "buildah push $1"; }
push_dk() { $DOCKER push -q "$1" >"$LOG" 2>&1 || fail "docker push $1"; }

# ---- one table for the whole run: row LABEL UNIT IB BH DK [GOAL] (a value
# is "-" where the peer did not run); note TEXT: a line under the table
TABLE=$W/table NOTES=$W/notes
: >"$TABLE"
: >"$NOTES"
vs() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else echo "$(ratio "$1" "$2")x"; fi; }
# cell VALUE UNIT: the value with its unit, or "-"
cell() { if [ "$1" = - ]; then echo -; else echo "$1$2"; fi; }
row() {
	local u=$2
	[ "$u" = B ] && u=
	printf '%-31s %10s %10s %10s %10s %11s  %s\n' "$1" "$(cell "$3" "$u")" "$(cell "$4" "$u")" \
		"$(cell "$5" "$u")" "$(vs "$3" "$4")" "$(vs "$3" "$5")" "${6:-}" >>"$TABLE"
}
note() { echo "$*" >>"$NOTES"; }
# goal TEXT VALUE OP LIMIT: "TEXT ok" / "TEXT FAIL" ("TEXT n/a" without a value)
goal() {
	local ok
	[ "$2" = - ] && { printf '%s n/a' "$1"; return; }
	ok=$(echo "$2 $3 $4" | bc -l)
	printf '%s %s' "$1" "$([ "$ok" = 1 ] && echo ok || echo FAIL)"
}
# R[FIGURE.PEER]: the medians; get FIGURE PEER prints it, or "-"
declare -A R=()
get() { printf '%s' "${R[$1.$2]:--}"; }

# settle: after dropping build caches (untimed), wait until ext4 reuses the
# inodes they freed: it skips inodes deleted less than 30 s ago when it
# allocates (recently_deleted() in find_inode_bit), reading each one's
# inode table block, which bills seconds of system time to the next build
# that creates thousands of files (43% of the samples of such a build)
settle() { sync; sleep "${IB_BENCH_SETTLE:-31}"; }

# trial FIGURE CTX TAG PREPARE COLD ARGS...: TRIALS rounds; PREPARE runs before
# each round; in each round every peer builds once, the order rotating from
# round to round; COLD=1 runs cold_P (untimed) before each build.  Medians ->
# R[FIGURE.P]
trial() {
	local fig=$1 ctx=$2 tag=$3 prep=$4 cold=$5 i k n=${#PEERS[@]} p t
	shift 5
	declare -A s=()
	for i in $(seq "$TRIALS"); do
		$prep
		if [ "$cold" = 1 ]; then
			for p in "${PEERS[@]}"; do "cold_$p" "$tag"; done
			settle
		fi
		for k in $(seq 0 $((n - 1))); do
			p=${PEERS[$(((i + k) % n))]}
			# what the previous build or the preparation left to write
			# back is not billed to this one
			sync
			t=$(now)
			"build_$p" "$ctx" "$tag" "$@"
			s[$p]+=" $(elapsed "$t")"
		done
	done
	for p in "${PEERS[@]}"; do
		# shellcheck disable=SC2086
		R[$fig.$p]=$(median ${s[$p]})
	done
}

# ci FIGURE CTX: TRIALS rounds of (cold) build + push to an empty registry of
# its own, per peer, order rotating.  Medians -> R[FIGURE.P]; the bytes the
# registry stores after the last round -> R[FIGURE-bytes.P]
ci() {
	local fig=$1 ctx=$2 i k n=${#PEERS[@]} p t tag
	declare -A s=()
	for i in $(seq "$TRIALS"); do
		for k in $(seq 0 $((n - 1))); do
			p=${PEERS[$(((i + k) % n))]}
			rb_start "ci-$p"
			tag=127.0.0.1:$rb_port/bench/$p:1
			"cold_$p" "$tag"
			settle
			t=$(now)
			"build_$p" "$ctx" "$tag" --no-cache
			"push_$p" "$tag"
			s[$p]+=" $(elapsed "$t")"
			R[$fig-bytes.$p]=$(rb_pushed_bytes "ci-$p")
			rb_stop "ci-$p"
			"cold_$p" "$tag"
		done
	done
	for p in "${PEERS[@]}"; do
		# shellcheck disable=SC2086
		R[$fig.$p]=$(median ${s[$p]})
	done
}

# workload NAME CTX TAG TOUCH: the four figures of one workload
workload() {
	local w=$1 ctx=$2 tag=$3 touch=$4 p
	echo "== $w: medians of $TRIALS rounds, peers taking turns; load average:$(uptime | sed 's/.*load average://')"
	# warm the page cache and each tool's view of the base once, untimed
	for p in "${PEERS[@]}"; do "build_$p" "$ctx" "$tag" --no-cache; done
	trial "$w-cold" "$ctx" "$tag" nothing 1 --no-cache
	# --no-cache alone: every step runs, what each tool keeps besides its
	# step cache (imgbuild's context stat cache and blobs, BuildKit's context
	# snapshot, ...) stays
	trial "$w-nocache" "$ctx" "$tag" nothing 0 --no-cache
	for p in "${PEERS[@]}"; do "build_$p" "$ctx" "$tag"; done
	trial "$w-cached" "$ctx" "$tag" nothing 0
	trial "$w-one" "$ctx" "$tag" "$touch" 0
	if command -v docker-registry >/dev/null 2>&1; then
		ci "$w-ci" "$ctx"
	fi
	# leave the image built, for what follows
	for p in "${PEERS[@]}"; do "build_$p" "$ctx" "$tag"; done
}
nothing() { :; }

# ---- R1: busybox base, the tree of /usr/include
if want R1; then
CTX1=$W/r1
. "$REPO/bench/workload.sh"
bench_workload "$CTX1"
export IMGBUILD_ROOT=$IB_BASES
$IB -q build recipes/busybox.lua --context /bin -t localhost/busybox:latest >/dev/null
# unpacked, as the other tools hold their bases
$IB run --network none localhost/busybox:latest true >/dev/null || fail "unpack the R1 base"
for p in "${PEERS[@]}"; do "base_$p" localhost/busybox:latest; done
touch_r1() { echo "/* bench $(now) */" >>"$CTX1/include/stdio.h"; }
workload R1 "$CTX1" localhost/bench:latest touch_r1
R1_ROOT=$IMGBUILD_ROOT # holds localhost/bench:latest, for the figures below
fi

# ---- R2: Debian bookworm minbase, apt-get from a local repository
R2_PREP=-
if want R2; then
. "$REPO/bench/r2.sh"
t=$(date +%s)
r2_prepare "$CACHE/r2"
R2_PREP=$(($(date +%s) - t))
CTX2=$W/r2
r2_workload "$CTX2" "$CACHE/r2"
export IMGBUILD_ROOT=$IB_BASES
$IB -q import "$CACHE/r2/base.tar" localhost/bookworm:base >/dev/null
$IB run --network none localhost/bookworm:base true >/dev/null || fail "unpack the R2 base"
for p in "${PEERS[@]}"; do "base_$p" localhost/bookworm:base; done
touch_r2() { echo "# bench $(now)" >>"$CTX2/app/pkg0/mod0.py"; }
workload R2 "$CTX2" localhost/r2:latest touch_r2
# the install step alone, no tool: what every tool's cold build must pay
fl=()
for i in $(seq "$TRIALS"); do
	fl+=("$(r2_floor "$CACHE/r2" "$W/floor")")
done
R2_FLOOR=$(median "${fl[@]}")
fi

# ---- the rows, with the goals of the performance issue
for w in $WORKLOADS; do
	ib=$(get "$w-cold" ib) bh=$(get "$w-cold" bh) dk=$(get "$w-cold" dk)
	# the faster peer, for R2's goals
	fast=-
	for v in "$bh" "$dk"; do
		[ "$v" = - ] && continue
		if [ "$fast" = - ] || [ "$(echo "$v < $fast" | bc -l)" = 1 ]; then fast=$v; fi
	done
	if [ $w = R1 ]; then
		g="$(goal '<=0.2x buildah' "$(vs "$ib" "$bh" | tr -d x)" '<=' 0.2), $(goal '<=0.35x BuildKit' "$(vs "$ib" "$dk" | tr -d x)" '<=' 0.35)"
	else
		g=$(goal '<=0.8x faster peer' "$(vs "$ib" "$fast" | tr -d x)" '<=' 0.8)
	fi
	row "$w cold build" s "$ib" "$bh" "$dk" "$g"
	row "$w --no-cache, caches kept" s "$(get "$w-nocache" ib)" "$(get "$w-nocache" bh)" "$(get "$w-nocache" dk)"
	ib=$(get "$w-cached" ib) bh=$(get "$w-cached" bh) dk=$(get "$w-cached" dk)
	if [ $w = R1 ]; then
		g=$(goal '<=0.1x BuildKit' "$(vs "$ib" "$dk" | tr -d x)" '<=' 0.1)
	else
		fast=$dk
		[ "$bh" != - ] && { [ "$fast" = - ] || [ "$(echo "$bh < $fast" | bc -l)" = 1 ]; } && fast=$bh
		g=$(goal '<=0.1x faster peer' "$(vs "$ib" "$fast" | tr -d x)" '<=' 0.1)
	fi
	if [ $w = R2 ]; then
		# the cold build less the install step (measured alone): the tool's own part
		own() { if [ "$1" = - ]; then echo -; else echo "$1 - $R2_FLOOR" | bc -l | xargs printf '%.3f'; fi; }
		row "R2 cold less the apt step" s "$(own "$(get R2-cold ib)")" "$(own "$(get R2-cold bh)")" \
			"$(own "$(get R2-cold dk)")"
		note "R2 apt step alone (apt-get update + install in a chroot, no tool, median of $TRIALS): $R2_FLOOR s;" \
			"the 'R2 cold less the apt step' row is each tool's cold build minus it"
	fi
	row "$w fully cached rebuild" s "$ib" "$bh" "$dk" "$g"
	g=
	[ $w = R1 ] && g=$(goal '<=0.4x BuildKit' "$(vs "$(get "$w-one" ib)" "$(get "$w-one" dk)" | tr -d x)" '<=' 0.4)
	row "$w one copied file changed" s "$(get "$w-one" ib)" "$(get "$w-one" bh)" "$(get "$w-one" dk)" "$g"
	if [ -n "${R[$w-ci.ib]:-}" ]; then
		row "$w build + push, empty reg." s "$(get "$w-ci" ib)" "$(get "$w-ci" bh)" "$(get "$w-ci" dk)"
		ib=$(get "$w-ci-bytes" ib) dk=$(get "$w-ci-bytes" dk)
		row "$w pushed bytes" B "$ib" "$(get "$w-ci-bytes" bh)" "$dk" \
			"$(goal '<=1.02x docker' "$(vs "$ib" "$dk" | tr -d x)" '<=' 1.02)"
	fi
done

[ -n "${R1_ROOT:-}" ] && export IMGBUILD_ROOT=$R1_ROOT
# layer size: imgbuild's gzip blobs vs `gzip -6` (what docker and buildah
# write) of the same uncompressed tars (R1's image)
if want R1; then
ib_gz=0; g6=0
for d in $($IB inspect localhost/bench:latest | python3 -c 'import json, sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["Manifest"]["layers"]))'); do
	b=$IMGBUILD_ROOT/oci/blobs/sha256/${d#sha256:}
	ib_gz=$((ib_gz + $(stat -c %s "$b")))
	g6=$((g6 + $(zcat "$b" | gzip -6 | wc -c)))
done
row "R1 gzip layers, bytes (gzip -6)" B "$ib_gz" "$g6" -
note "(gzip -6) row: the buildah column is gzip -6 (what docker and buildah write) of imgbuild's own tars"
fi

# BuildKit is done: stop its daemon before the memory and registry figures
dk_stop

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

if [ "${IB_BENCH_REGISTRY:-1}" = 1 ] && [ -n "$BUILDAH" ] && want R1 && [ -f bench/registry.sh ]; then
	source bench/registry.sh
fi

echo
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
printf '%-31s %10s %10s %10s %10s %11s  %s\n' figure imgbuild buildah BuildKit "vs buildah" "vs BuildKit" goal
cat "$TABLE"
want R2 && note "R2 preparation (debootstrap and .debs, cached in $CACHE/r2): ${R2_PREP} s this run"
cat "$NOTES"
echo "load average at the end:$(uptime | sed 's/.*load average://'); whole run $(($(date +%s) - T_START)) s"
