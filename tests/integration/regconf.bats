#!/usr/bin/env bats
# Registries as people configure them: registries.conf (a real drop-in in
# /etc/containers/registries.conf.d, and files named by
# IMGBUILD_REGISTRIES_CONF), daemon.json, certs.d, SSL_CERT_FILE, names that
# resolve to loopback, and the fast failure when HTTPS is answered by plain
# HTTP.
#
# Names come from /etc/hosts lines this suite adds (each carrying a marker
# with the suite's pid) and removes in teardown_file.  A name that resolves
# into 127.0.0.0/8 is loopback and may use plain HTTP anyway, so the
# insecure-registry cases need a registry on an address that is not
# loopback: it runs in a network namespace of the suite's own, linked to the
# host by a veth pair (helpers/testnet.bash); they skip, saying so, where
# such a namespace cannot be made.  Everything written under /etc is removed by
# teardown (per test) and teardown_file, also when a test fails.

bats_require_minimum_version 1.5.0

load helpers/registry
load helpers/testnet

IMGBUILD=${IMGBUILD:-$BATS_TEST_DIRNAME/../../build/imgbuild}

MARK="imgbuild-regconf-test-$$"

# Remove every /etc change this suite makes.  Rewrites /etc/hosts in place
# (it may be a bind mount).
regconf_cleanup_etc() {
	rm -f "/etc/containers/registries.conf.d/zz-$MARK.conf"
	[ -n "${SEC_HOSTPORT:-}" ] && rm -rf "/etc/containers/certs.d/$SEC_HOSTPORT" \
		"/etc/docker/certs.d/$SEC_HOSTPORT"
	return 0
}

# The /etc directories the suite may create; those that did not exist
# before are removed again (when empty) by teardown_file.
ETC_DIRS="/etc/containers/registries.conf.d /etc/containers/certs.d /etc/docker/certs.d /etc/docker"

regconf_note_etc_dirs() {
	local d
	NEW_ETC_DIRS=""
	for d in $ETC_DIRS; do
		[ -e "$d" ] || NEW_ETC_DIRS="$NEW_ETC_DIRS $d"
	done
	export NEW_ETC_DIRS
}

regconf_remove_new_etc_dirs() {
	local d
	for d in ${NEW_ETC_DIRS:-}; do
		rmdir "$d" 2>/dev/null || true
	done
}

regconf_cleanup_hosts() {
	if grep -q "$MARK" /etc/hosts 2>/dev/null; then
		local keep
		keep=$(grep -v "$MARK" /etc/hosts)
		printf '%s\n' "$keep" >/etc/hosts
	fi
}

# _start_registry NAME ADDR [TLS_CERT TLS_KEY]: docker-registry on ADDR:port
# -> NAME_PORT
_start_registry() {
	local name=$1 addr=$2 cert=${3:-} key=${4:-} port tls=""
	port=$(reg_free_port)
	[ -n "$cert" ] && tls="  tls:
    certificate: $cert
    key: $key"
	_reg_config "$name" "$port" "$tls" ""
	sed -i "s/addr: 127.0.0.1:/addr: $addr:/" "$REG_TMP/$name/config.yml"
	local in=()
	[ "$addr" = "${LAN_IP:-}" ] && in=(ip netns exec "$TESTNET_NS")
	_reg_run "$name" "${in[@]}" docker-registry serve "$REG_TMP/$name/config.yml"
	local i
	for i in $(seq 100); do
		"$REG_PYTHON" -c 'import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$addr" "$port" \
			2>/dev/null && break
		sleep 0.1
	done
	_reg_export "${name}_PORT" "$port"
}

setup_file() {
	[ "$(id -u)" = 0 ] || skip "needs root (writes /etc/hosts and /etc/containers)"
	local missing
	if missing=$(reg_missing_tool); then
		skip "needs $missing"
	fi
	[ -x "$IMGBUILD" ] || skip "needs the imgbuild binary at $IMGBUILD (build it first)"
	export IMGBUILD MARK
	reg_tmp
	regconf_note_etc_dirs

	# a registry on an address that is not loopback: inside a network
	# namespace of the suite's own (helpers/testnet.bash)
	LAN_IP=""
	testnet_up && LAN_IP=$TESTNET_IP
	export LAN_IP
	export LAN_NAME="lan-$$.regconf.test" LOOP_NAME="loop-$$.regconf.test"
	export SEC_NAME="sec-$$.regconf.test"
	{
		echo "127.0.0.2 $LOOP_NAME # $MARK"
		[ -n "$LAN_IP" ] && echo "$LAN_IP $LAN_NAME $SEC_NAME # $MARK"
	} >>/etc/hosts

	# a CA of our own and a server certificate for SEC_NAME
	local d="$REG_TMP/sec-tls"
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imgbuild regconf test CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=keyCertSign,cRLSign" \
		-keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=$SEC_NAME" \
		-keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
	printf '%s\n' "subjectAltName=DNS:$SEC_NAME" "basicConstraints=CA:FALSE" \
		"keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/ext.cnf"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
	export SEC_CA="$d/ca.pem"

	reg_start_open MIR
	_start_registry LOOP 127.0.0.2
	if [ -n "$LAN_IP" ]; then
		_start_registry LAN "$LAN_IP"
		_start_registry SEC "$LAN_IP" "$d/server.pem" "$d/server.key"
		export SEC_HOSTPORT="$SEC_NAME:$SEC_PORT" LAN_HOSTPORT="$LAN_NAME:$LAN_PORT"
	fi

	local r="$BATS_FILE_TMPDIR/rootfs"
	mkdir -p "$r"
	echo "hello from imgbuild" >"$r/greeting"
	tar -C "$r" -cf "$BATS_FILE_TMPDIR/rootfs.tar" .
	export ROOTFS_TAR="$BATS_FILE_TMPDIR/rootfs.tar"
}

teardown_file() {
	regconf_cleanup_etc
	regconf_remove_new_etc_dirs
	regconf_cleanup_hosts
	reg_stop_all
	testnet_down
}

setup() {
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root"
	export REGISTRY_AUTH_FILE="$BATS_TEST_TMPDIR/auth.json"
	unset SSL_CERT_FILE SSL_CERT_DIR DOCKER_CONFIG XDG_RUNTIME_DIR CONTAINERS_REGISTRIES_CONF
	unset IMGBUILD_REGISTRIES_CONF_DIR
	# only what a test writes: no user files, an empty registries.conf
	export HOME="$BATS_TEST_TMPDIR/home"
	mkdir -p "$HOME"
	export IMGBUILD_REGISTRIES_CONF="$BATS_TEST_TMPDIR/none.conf"
	export IMGBUILD_DOCKER_DAEMON_JSON="$BATS_TEST_TMPDIR/none.json"
	export IMGBUILD_CERTS_D="$BATS_TEST_TMPDIR/no-certs.d"
}

teardown() {
	regconf_cleanup_etc
}

ib() {
	"$IMGBUILD" "$@"
}

need_lan() {
	[ -n "$LAN_IP" ] || skip "no test network namespace here: an insecure registry cannot be told apart from a loopback one"
}

# make_image REF: import the rootfs as REF; sets DIGEST
make_image() {
	DIGEST=$(ib -q import "$ROOTFS_TAR" "$1" | tail -n 1)
	[[ "$DIGEST" == sha256:* ]]
}

last_line() {
	printf '%s\n' "$output" | tail -n 1
}

# pull_fresh REF: pull into an empty store; prints the digest
pull_fresh() {
	IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2-$RANDOM" ib -q pull "$1" | tail -n 1
}

@test "HTTPS answered by plain HTTP fails at once and says what to do" {
	need_lan
	make_image "$LAN_HOSTPORT/app:1"
	SECONDS=0
	run --separate-stderr ib push "$LAN_HOSTPORT/app:1"
	local took=$SECONDS
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"registry speaks plain HTTP: add it to insecure registries (registries.conf or daemon.json) or use --tls-verify=false"* ]]
	[ "$took" -lt 4 ]
	# and --tls-verify=false, named on the command, still works
	run --separate-stderr ib push "$LAN_HOSTPORT/app:1" --tls-verify=false
	[ "$status" -eq 0 ]
}

@test "a drop-in in /etc/containers/registries.conf.d marks the registry insecure: push and pull without flags" {
	need_lan
	unset IMGBUILD_REGISTRIES_CONF
	local f="/etc/containers/registries.conf.d/zz-$MARK.conf"
	mkdir -p /etc/containers/registries.conf.d
	printf '# written by the imgbuild test suite\n[[registry]]\nlocation = "%s"\ninsecure = true\n' \
		"$LAN_HOSTPORT" >"$f"
	make_image "$LAN_HOSTPORT/team/app:2"
	run --separate-stderr ib push "$LAN_HOSTPORT/team/app:2"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[ "$(pull_fresh "$LAN_HOSTPORT/team/app:2")" = "$DIGEST" ]
	rm -f "$f"
	# without it, the registry is refused again
	run --separate-stderr ib push "$LAN_HOSTPORT/team/app:2"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"plain HTTP"* ]]
}

@test "daemon.json insecure-registries: a CIDR and a host:port name" {
	need_lan
	printf '{"insecure-registries": ["%s/32"], "log-level": "warn"}\n' "$LAN_IP" \
		>"$BATS_TEST_TMPDIR/daemon.json"
	export IMGBUILD_DOCKER_DAEMON_JSON="$BATS_TEST_TMPDIR/daemon.json"
	make_image "$LAN_HOSTPORT/cidr:1"
	run --separate-stderr ib push "$LAN_HOSTPORT/cidr:1"
	[ "$status" -eq 0 ]
	printf '{"insecure-registries": ["%s"]}\n' "$LAN_HOSTPORT" >"$BATS_TEST_TMPDIR/daemon.json"
	[ "$(pull_fresh "$LAN_HOSTPORT/cidr:1")" = "$DIGEST" ]
	printf '{"insecure-registries": ["%s:1"]}\n' "$LAN_NAME" >"$BATS_TEST_TMPDIR/daemon.json"
	run --separate-stderr ib push "$LAN_HOSTPORT/cidr:1"
	[ "$status" -ne 0 ]
}

@test "a name that resolves into 127.0.0.0/8 is loopback: plain HTTP without configuration" {
	make_image "$LOOP_NAME:$LOOP_PORT/loop:1"
	run --separate-stderr ib push "$LOOP_NAME:$LOOP_PORT/loop:1"
	[ "$status" -eq 0 ]
	[ "$(pull_fresh "$LOOP_NAME:$LOOP_PORT/loop:1")" = "$DIGEST" ]
}

@test "a blocked registry is refused for pull and push, naming the file" {
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	printf 'unqualified-search-registries = ["docker.io"]\n\n[[registry]]\nprefix = "%s/secret"\nblocked = true\n' \
		"127.0.0.1:$MIR_PORT" >"$conf"
	export IMGBUILD_REGISTRIES_CONF="$conf"
	make_image "127.0.0.1:$MIR_PORT/secret/app:1"
	run --separate-stderr ib push "127.0.0.1:$MIR_PORT/secret/app:1"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"127.0.0.1:$MIR_PORT/secret/app is blocked by the registry configuration ($conf:3)"* ]]
	run --separate-stderr ib pull "127.0.0.1:$MIR_PORT/secret/app:1"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"is blocked by the registry configuration ($conf:3)"* ]]
	# the rest of the registry is not
	make_image "127.0.0.1:$MIR_PORT/open/app:1"
	ib -q push "127.0.0.1:$MIR_PORT/open/app:1"
}

@test "malformed registries.conf: FILE:LINE" {
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	printf '[[registry]]\nlocation = "x.test"\ninsecure = yes\n' >"$conf"
	export CONTAINERS_REGISTRIES_CONF="$conf"
	unset IMGBUILD_REGISTRIES_CONF
	run --separate-stderr ib pull "127.0.0.1:$MIR_PORT/any:1"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"$conf:3: "* ]]
}

@test "mirrors are tried in order for pulls, then the location" {
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	# primary: the loopback-named registry; mirror: MIR under /mirror
	printf '[[registry]]\nprefix = "%s"\n\n[[registry.mirror]]\nlocation = "127.0.0.1:%s/gone"\n\n[[registry.mirror]]\nlocation = "127.0.0.1:%s/mirror"\n' \
		"$LOOP_NAME:$LOOP_PORT" "$MIR_PORT" "$MIR_PORT" >"$conf"
	# only the mirror has app:1; only the location has other:1
	make_image "127.0.0.1:$MIR_PORT/mirror/team/app:1"
	ib -q push "127.0.0.1:$MIR_PORT/mirror/team/app:1"
	local mdigest=$DIGEST
	export IMGBUILD_REGISTRIES_CONF="$conf"
	run --separate-stderr env IMGBUILD_ROOT="$BATS_TEST_TMPDIR/r3" "$IMGBUILD" --debug pull "$LOOP_NAME:$LOOP_PORT/team/app:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$mdigest" ]
	[[ "$stderr" == *"/v2/gone/team/app/manifests/1"* ]]
	[[ "$stderr" == *"/v2/mirror/team/app/manifests/1"* ]]
	# stored under the name asked for
	run env IMGBUILD_ROOT="$BATS_TEST_TMPDIR/r3" "$IMGBUILD" images
	[[ "$output" == *"$LOOP_NAME:$LOOP_PORT/team/app"* ]]
	# pushes go to the location, never to a mirror
	make_image "$LOOP_NAME:$LOOP_PORT/team/other:1"
	ib -q push "$LOOP_NAME:$LOOP_PORT/team/other:1"
	run --separate-stderr ib pull "127.0.0.1:$MIR_PORT/mirror/team/other:1"
	[ "$status" -ne 0 ]
	# a pull the mirrors cannot serve comes from the location
	[ "$(pull_fresh "$LOOP_NAME:$LOOP_PORT/team/other:1")" = "$DIGEST" ]
}

@test "certs.d: a registry's own CA in /etc/containers/certs.d, no flag, no SSL_CERT_FILE" {
	need_lan
	unset IMGBUILD_CERTS_D
	make_image "$SEC_HOSTPORT/tls/app:1"
	run --separate-stderr ib push "$SEC_HOSTPORT/tls/app:1"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"certs.d"* ]]
	mkdir -p "/etc/containers/certs.d/$SEC_HOSTPORT"
	cp "$SEC_CA" "/etc/containers/certs.d/$SEC_HOSTPORT/ca.crt"
	run --separate-stderr ib push "$SEC_HOSTPORT/tls/app:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	rm -rf "/etc/containers/certs.d/$SEC_HOSTPORT"
	# docker's directory works the same
	mkdir -p "/etc/docker/certs.d/$SEC_HOSTPORT"
	cp "$SEC_CA" "/etc/docker/certs.d/$SEC_HOSTPORT/ca.crt"
	[ "$(pull_fresh "$SEC_HOSTPORT/tls/app:1")" = "$DIGEST" ]
}

@test "SSL_CERT_FILE adds a CA" {
	need_lan
	make_image "$SEC_HOSTPORT/tls/env:1"
	SSL_CERT_FILE="$SEC_CA" run --separate-stderr ib push "$SEC_HOSTPORT/tls/env:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
}

@test "--tls-verify=false does not extend to mirrors the command did not name" {
	need_lan
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	# the mirror is a plain HTTP registry on a LAN name, not marked insecure
	printf '[[registry]]\nprefix = "%s"\n\n[[registry.mirror]]\nlocation = "%s"\n' \
		"$LOOP_NAME:$LOOP_PORT" "$LAN_HOSTPORT" >"$conf"
	make_image "$LOOP_NAME:$LOOP_PORT/nv/app:1"
	ib -q push "$LOOP_NAME:$LOOP_PORT/nv/app:1"
	make_image "$LAN_HOSTPORT/nv/app:1"
	ib -q push --tls-verify=false "$LAN_HOSTPORT/nv/app:1"
	export IMGBUILD_REGISTRIES_CONF="$conf"
	run --separate-stderr env IMGBUILD_ROOT="$BATS_TEST_TMPDIR/r4" "$IMGBUILD" --debug --tls-verify=false pull "$LOOP_NAME:$LOOP_PORT/nv/app:1"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"$LAN_HOSTPORT: registry speaks plain HTTP"* ]]
	[[ "$stderr" != *"http://$LAN_HOSTPORT/v2/nv/app/manifests"* ]]
}

@test "unqualified-search-registries: a short name is looked for in each, in order" {
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	printf 'unqualified-search-registries = ["%s", "127.0.0.1:%s"]\n' \
		"$LOOP_NAME:$LOOP_PORT" "$MIR_PORT" >"$conf"
	make_image "127.0.0.1:$MIR_PORT/searchme:1"
	ib -q push "127.0.0.1:$MIR_PORT/searchme:1"
	export IMGBUILD_REGISTRIES_CONF="$conf"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/r5"
	run --separate-stderr ib pull searchme:1
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	run ib images
	[[ "$output" == *"127.0.0.1:$MIR_PORT/searchme"* ]]
	run --separate-stderr ib pull nowhere:1
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"nowhere:1 is in none of the unqualified-search-registries ($conf:1)"* ]]
	[[ "$stderr" == *"$LOOP_NAME:$LOOP_PORT: "*"127.0.0.1:$MIR_PORT: "* ]]
	# qualified names are not searched
	run --separate-stderr ib pull "127.0.0.1:$MIR_PORT/searchme:1"
	[ "$status" -eq 0 ]
}

@test "unqualified-search-registries: a recipe's from with a short name is searched too" {
	local conf="$BATS_TEST_TMPDIR/registries.conf"
	printf 'unqualified-search-registries = ["127.0.0.1:%s"]\n' "$MIR_PORT" >"$conf"
	make_image "127.0.0.1:$MIR_PORT/searchbase:1"
	ib -q push "127.0.0.1:$MIR_PORT/searchbase:1"
	export IMGBUILD_REGISTRIES_CONF="$conf"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/r6"
	mkdir -p "$BATS_TEST_TMPDIR/ctx"
	printf 'from "searchbase:1"\nenv { A = "1" }\n' >"$BATS_TEST_TMPDIR/ctx/recipe.lua"
	run --separate-stderr ib build "$BATS_TEST_TMPDIR/ctx/recipe.lua" -t localhost/fromsearch:1
	echo "$stderr"
	[ "$status" -eq 0 ]
	run ib images
	[[ "$output" == *"127.0.0.1:$MIR_PORT/searchbase"* ]]
	[[ "$output" == *"localhost/fromsearch"* ]]
}
