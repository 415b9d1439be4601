# shellcheck shell=bash
# Loopback registries for the benchmark; sourced by bench/run.sh before any
# section that pushes (bench/run.sh's build + push figures, bench/registry.sh).
# Needs $W (the scratch directory) and the now/elapsed helpers.  run.sh's EXIT
# trap calls rb_stop_all, so every registry started here is stopped on any
# exit.
#
# Each registry is docker-registry (distribution) with filesystem storage in
# $rb_dir/NAME, on a free port of 127.0.0.1 (plain HTTP over loopback).

rb_trials=${IB_BENCH_TRIALS:-3}
rb_dir=$W/registry
rb_pids=()
declare -gA rb_pid_of=()
rb_port=

# Stop every registry started here (by the pids recorded at start).
rb_stop_all() {
	local pid
	for pid in "${rb_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${rb_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rb_pids=()
}

# rb_fail MSG [LOG]: say what failed, show the log, stop the registries, exit.
rb_fail() {
	echo "bench: $1" >&2
	[ -n "${2:-}" ] && [ -f "$2" ] && tail -n 30 "$2" >&2
	rb_stop_all
	exit 1
}

rb_free_port() {
	/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# rb_start NAME: a fresh, empty registry in $rb_dir/NAME; its port -> $rb_port
rb_start() {
	local d=$rb_dir/$1 port pid n
	port=$(rb_free_port)
	rm -rf "$d"
	mkdir -p "$d/data"
	cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: imgbuild-bench-secret
EOF
	docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
	pid=$!
	rb_pids+=("$pid")
	rb_pid_of[$1]=$pid
	for n in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || rb_fail "registry $1 exited at start" "$d/log"
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			rb_port=$port
			return 0
		fi
		sleep 0.1
	done
	rb_fail "registry $1 does not answer on 127.0.0.1:$port" "$d/log"
}

# rb_stop NAME: stop that registry and delete its storage
rb_stop() {
	local pid=${rb_pid_of[$1]} p keep=()
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${rb_pids[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	rb_pids=("${keep[@]}")
	unset "rb_pid_of[$1]"
	rm -rf "${rb_dir:?}/$1"
}

# rb_time VAR LOG CMD...: run CMD (stdout to LOG.out, stderr to LOG), wall
# time in seconds -> VAR
rb_time() {
	local var=$1 log=$2 t
	shift 2
	t=$(now)
	"$@" >"$log.out" 2>"$log" || rb_fail "failed: $*" "$log"
	printf -v "$var" '%s' "$(elapsed "$t")"
}

# rb_mem SECVAR MBVAR LOG CMD...: run CMD under /usr/bin/time; wall seconds
# and peak RSS in MB
rb_mem() {
	local svar=$1 mvar=$2 log=$3 s kb
	shift 3
	/usr/bin/time -f '%e %M' -o "$log.time" "$@" >"$log.out" 2>"$log" ||
		rb_fail "failed: $*" "$log"
	read -r s kb <"$log.time"
	printf -v "$svar" '%.3f' "$s"
	printf -v "$mvar" '%d' "$((kb / 1024))"
}

rb_median() {
	printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"
}

# rb_check VALUE OP LIMIT UNIT: "OP LIMIT UNIT ok" or "... FAIL"
rb_check() {
	local ok
	ok=$(echo "$1 $2 $3" | bc -l)
	printf '%s %s%s %s' "$2" "$3" "$4" "$([ "$ok" = 1 ] && echo ok || echo FAIL)"
}

# rb_pushed_bytes NAME: the bytes stored in registry NAME's blobs (layers,
# config and manifest: what was uploaded)
rb_pushed_bytes() {
	find "$rb_dir/$1/data" -type f -name data -path '*/blobs/*' -printf '%s\n' |
		awk '{ s += $1 } END { print s + 0 }'
}
