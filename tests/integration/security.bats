#!/usr/bin/env bats
# A run step is hostile: what it must not see or do on the host.  The step
# runs a static probe (tests/fixtures/security/probe.c) so that nothing
# depends on the base image's tools.

bats_require_minimum_version 1.5.0

load helpers/registry
load helpers/build
load helpers/testnet

setup_file() {
	build_setup_file
	mkdir -p "$SUITE_TMP/ctx"
	cc -static -O2 -o "$SUITE_TMP/ctx/probe" "$REPO_ROOT/tests/fixtures/security/probe.c"
	cat >"$SUITE_TMP/ctx/probe.lua" <<-'EOF'
		from "localhost/busybox:latest"
		copy { "probe", "/probe", mode = "0755" }
	EOF
	"$IMGBUILD" -q build "$SUITE_TMP/ctx/probe.lua" -t localhost/probe:latest >/dev/null
}

teardown_file() {
	reg_stop_all 2>/dev/null || true
	build_teardown_file
}

setup() {
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
}

teardown() {
	[ -z "${BG_PID:-}" ] || kill "$BG_PID" 2>/dev/null || true
	[ -z "${KEY_ID:-}" ] || keyctl unlink "$KEY_ID" @u >/dev/null 2>&1 || true
	[ -z "${PUB:-}" ] || rm -rf "$PUB"
	testnet_down
	# registries a test started (REG_TMP is set in the test, not the file)
	reg_stop_all 2>/dev/null || true
}

# step ARGS...: a recipe running the probe with ARGS (exec form)
step() {
	local args="" a
	for a in "$@"; do args="$args, \"$a\""; done
	printf 'from "localhost/probe:latest"\nrun { "/probe"%s }\n' "$args" >"$T/recipe.lua"
}

build_step() {
	run "$IMGBUILD" build "$T/recipe.lua" --no-cache --progress plain "$@"
}

@test "a step cannot sniff the host's loopback traffic nor reach the host's loopback registry" {
	need docker-registry curl
	reg_start_open sniffreg
	# credentials in flight on the host's loopback while the step runs
	(for _ in $(seq 80); do
		curl -s -o /dev/null -H "Authorization: Basic aW1nYnVpbGQ6czNjcmV0" \
			"http://127.0.0.1:$sniffreg_PORT/v2/" || true
		sleep 0.1
	done) &
	BG_PID=$!
	printf 'from "localhost/probe:latest"\nrun { "/probe", "sniff", "3", "aW1nYnVpbGQ6czNjcmV0" }\nrun { "/probe", "connect", "127.0.0.1", "%s" }\n' \
		"$sniffreg_PORT" >"$T/recipe.lua"
	build_step
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"sniffed: no"* || "$output" == *"raw: EPERM"* ]]
	[[ "$output" != *"sniffed: yes"* ]]
	[[ "$output" == *"connect: ECONNREFUSED"* ]]
}

@test "a host abstract unix socket is not reachable from a step" {
	python3 - "$T/ready" <<-'EOF' &
		import socket, sys, time
		s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		s.bind("\0imgbuild-security-test")
		s.listen(5)
		open(sys.argv[1], "w").close()
		time.sleep(30)
	EOF
	BG_PID=$!
	for _ in $(seq 50); do [ -e "$T/ready" ] && break; sleep 0.1; done
	step abstract imgbuild-security-test
	build_step
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"abstract: ECONNREFUSED"* ]]
}

@test "outbound connections reach a non-loopback address; DNS config is generated and not captured" {
	need ip
	# the server stands for another machine: it runs in a network namespace
	# of the test's own, reached from the host through a veth link
	testnet_up || skip "cannot create a test network namespace here"
	local addr=$TESTNET_IP port
	port="$(reg_free_port)"
	ip netns exec "$TESTNET_NS" python3 - "$addr" "$port" "$T/ready" <<-'EOF' &
		import socket, sys
		s = socket.socket()
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		s.bind((sys.argv[1], int(sys.argv[2])))
		s.listen(5)
		open(sys.argv[3], "w").close()
		s.settimeout(30)
		c, _ = s.accept()
		c.sendall(b"hello-from-host\n")
		c.close()
	EOF
	BG_PID=$!
	for _ in $(seq 50); do [ -e "$T/ready" ] && break; sleep 0.1; done
	printf 'from "localhost/probe:latest"\nrun { "/probe", "connect", "%s", "%s" }\nrun "grep -c nameserver /etc/resolv.conf"\n' \
		"$addr" "$port" >"$T/recipe.lua"
	run "$IMGBUILD" build "$T/recipe.lua" --no-cache --progress plain -t localhost/outbound:1
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"connect: ok hello-from-host"* ]]
	# the resolv.conf of the step is not part of any layer
	run podrun localhost/outbound:1 /bin/sh -c 'test -s /etc/resolv.conf && echo captured || echo clean'
	[[ "$output" == *clean* ]]
}

@test "network none has only loopback" {
	step ifaces
	build_step --network none
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"ifaces: lo"$'\n'* || "$output" == *"ifaces: lo" ]]
	[[ "$output" != *"ifaces: lo "* ]]
}

@test "network host: no CAP_NET_RAW, no raw socket" {
	printf 'from "localhost/probe:latest"\nrun { "/probe", "caps" }\nrun { "/probe", "sniff", "1", "x" }\n' >"$T/recipe.lua"
	build_step --network host
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"CapEff:"*"00000000a80405fb"* ]]
	[[ "$output" == *"raw: EPERM"* ]]
}

@test "a key in the host root's user keyring is not readable from a step" {
	need keyctl
	KEY_ID="$(keyctl add user imgbuild-security-test s3cret-key @u)"
	[ "$(keyctl pipe "$KEY_ID")" = "s3cret-key" ]
	step keyctl imgbuild-security-test
	build_step
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"keyctl: EPERM"* ]]
	[[ "$output" != *"s3cret-key"* ]]
}

@test "seccomp: user namespaces and mounts are refused; clone3 falls back" {
	printf 'from "localhost/probe:latest"\nrun { "/probe", "userns" }\nrun { "/probe", "mount" }\n' >"$T/recipe.lua"
	build_step
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"unshare: EPERM"* ]]
	[[ "$output" == *"clone3: ENOSYS"* ]]
	[[ "$output" == *"mount: EPERM"* ]]
	# the explicit opt-out lifts the filter
	printf 'from "localhost/probe:latest"\nrun { "/probe", "userns" }\n' >"$T/recipe.lua"
	build_step --security-opt seccomp=unconfined
	[ "$status" -eq 0 ]
	[[ "$output" == *"unshare: ok"* ]]
}

@test "a fork bomb stops at the pids limit and fails the build cleanly" {
	step forkbomb 1000
	# the build's pid names its cgroups (imgbuild-PID-N): other suites may
	# be building at the same time
	run sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$T/build.pid" \
		"$IMGBUILD" build "$T/recipe.lua" --no-cache --progress plain --pids-limit 100
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"forkbomb: refused after"* ]]
	[[ "$output" == *"pids limit of 100 reached"* ]]
	[[ "$output" == *"run: command exited with status 1"* ]]
	# nothing left behind: no process, no cgroup
	run pgrep -f '^/probe forkbomb'
	[ "$status" -ne 0 ]
	if [ -d /sys/fs/cgroup/pids ]; then
		run sh -c "find /sys/fs/cgroup/pids -maxdepth 3 -name 'imgbuild-$(cat "$T/build.pid")-*' | wc -l"
		[ "$output" = 0 ]
	fi
}

@test "a setuid binary of an unpacked layer cannot be run by another user" {
	need su
	local root
	# a world-traversable parent, as /var/lib is
	PUB="$(mktemp -d /var/tmp/ib-sec-pub.XXXXXX)"
	chmod 755 "$PUB"
	root="$PUB/root"
	cp "$SUITE_TMP/ctx/probe" "$T/probe"
	cat >"$T/suid.lua" <<-'EOF'
		stage("s", "scratch")
		copy { "probe", "/suid-probe", mode = "4755" }
		run { "/suid-probe", "euid" }
	EOF
	run env IMGBUILD_ROOT="$root" "$IMGBUILD" build "$T/suid.lua" --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	local bin
	bin="$(find "$root/layers" -name suid-probe -perm -4000 | head -1)"
	[ -n "$bin" ]
	# su, not setpriv: setpriv --reuid keeps the capabilities
	run su nobody -s /bin/sh -c "$bin euid"
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" != *"euid: 0"* ]]
	[ "$(stat -c %a "$root")" = 700 ]
	[ "$(stat -c %a "$root/layers")" = 700 ]
	# a store left world-readable by an earlier version is fixed on first
	# use, and verify says what it changed
	chmod 755 "$root" "$root/layers"
	run env IMGBUILD_ROOT="$root" "$IMGBUILD" verify
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"mode was 0755"* ]]
	[ "$(stat -c %a "$root")" = 700 ]
	[ "$(stat -c %a "$root/layers")" = 700 ]
	run su nobody -s /bin/sh -c "$bin euid"
	[ "$status" -ne 0 ]
}

@test "--memory bounds a step; --step-timeout bounds steps without their own timeout" {
	printf 'from "localhost/probe:latest"\nrun "dd if=/dev/zero of=/dev/null bs=100M count=1 && echo survived"\n' >"$T/recipe.lua"
	build_step --memory 32M
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"status 137"* ]]
	[[ "$output" != *"#1 survived"* ]]
	build_step
	[ "$status" -eq 0 ]
	[[ "$output" == *"#1 survived"* ]]
	printf 'from "localhost/probe:latest"\nrun "sleep 20"\n' >"$T/recipe.lua"
	build_step --step-timeout 1
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"timed out after 1 s"* ]]
}

@test "network none never widens to a real network: chroot isolation without a network namespace refuses" {
	need setpriv
	step ifaces
	# without CAP_SYS_ADMIN no network namespace can be made; this host's
	# namespace has more than loopback, so the step must not run in it
	run setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin \
		"$IMGBUILD" build "$T/recipe.lua" --no-cache --progress plain --isolation chroot --network none
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"network none: cannot make a network namespace and this one has more than loopback"* ]]
	# host is an explicit choice and works there
	run setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin \
		"$IMGBUILD" build "$T/recipe.lua" --no-cache --progress plain --isolation chroot --network host
	echo "$output"
	[ "$status" -eq 0 ]
}
