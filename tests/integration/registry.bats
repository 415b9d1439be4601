#!/usr/bin/env bats
# Registry transfers (SPEC §5) against real docker-registry instances on
# 127.0.0.1: an open one, one with TLS + htpasswd, one with token auth, one
# with a small catalog page size, and a fault-injecting proxy.  skopeo and
# podman check what we push; skopeo pushes what we pull.

bats_require_minimum_version 1.5.0

load helpers/registry

IMGBUILD=${IMGBUILD:-$BATS_TEST_DIRNAME/../../build/imgbuild}

setup_file() {
	[ "$(id -u)" = 0 ] || skip "needs root"
	local missing
	if missing=$(reg_missing_tool); then
		skip "needs $missing"
	fi
	command -v busybox >/dev/null || skip "needs busybox (busybox-static)"
	[ -x "$IMGBUILD" ] || skip "needs the imgbuild binary at $IMGBUILD (build it first)"
	export IMGBUILD

	reg_start_open OPEN
	reg_start_open PAGED 2
	reg_start_basic BASIC alice wonderland
	reg_start_token TOKEN
	faultproxy_start FP "$OPEN_PORT"

	# a tiny busybox root filesystem
	local r="$BATS_FILE_TMPDIR/rootfs"
	mkdir -p "$r/bin"
	cp "$(command -v busybox)" "$r/bin/busybox"
	ln -s busybox "$r/bin/sh"
	ln -s busybox "$r/bin/echo"
	ln -s busybox "$r/bin/cat"
	echo "hello from imgbuild" >"$r/greeting"
	tar -C "$r" -cf "$BATS_FILE_TMPDIR/rootfs.tar" .
	export ROOTFS_TAR="$BATS_FILE_TMPDIR/rootfs.tar"

	# an OCI layout made by umoci, with an amd64 and an arm64 image
	if command -v umoci >/dev/null; then
		local l="$BATS_FILE_TMPDIR/layout"
		umoci init --layout "$l"
		umoci new --image "$l:base"
		umoci insert --image "$l:base" "$r" /
		umoci config --image "$l:base" --os=linux --architecture=amd64 \
			--config.cmd=/bin/cat --config.cmd=/greeting --tag amd64
		umoci config --image "$l:base" --os=linux --architecture=arm64 --tag arm64
		export LAYOUT="$l"
	fi
}

teardown_file() {
	reg_stop_all
}

setup() {
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root"
	export REGISTRY_AUTH_FILE="$BATS_TEST_TMPDIR/auth.json"
	unset SSL_CERT_FILE SSL_CERT_DIR DOCKER_CONFIG XDG_RUNTIME_DIR
}

ib() {
	"$IMGBUILD" "$@"
}

# make_image REF: import the busybox rootfs as REF; sets DIGEST
make_image() {
	DIGEST=$(ib -q import "$ROOTFS_TAR" "$1" | tail -n 1)
	[[ "$DIGEST" == sha256:* ]]
}

# skopeo and podman would insist on reading our per-test REGISTRY_AUTH_FILE
skopeo() {
	env -u REGISTRY_AUTH_FILE skopeo "$@"
}

skopeo_digest() {
	skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$1"
}

# last line of stdout from `run --separate-stderr`
last_line() {
	printf '%s\n' "$output" | tail -n 1
}

# a failing command fails the test even under `!` (which set -e ignores)
not() {
	if "$@"; then
		return 1
	fi
}

needs() {
	local t
	for t in "$@"; do
		type -P "$t" >/dev/null || skip "needs $t"
	done
}

@test "push: skopeo sees the digest we print and copies every blob" {
	needs skopeo
	make_image "127.0.0.1:$OPEN_PORT/bb:1"
	run --separate-stderr ib push "127.0.0.1:$OPEN_PORT/bb:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[ "$(skopeo_digest "127.0.0.1:$OPEN_PORT/bb:1")" = "$DIGEST" ]
	# skopeo verifies every blob digest while copying
	skopeo copy --src-tls-verify=false "docker://127.0.0.1:$OPEN_PORT/bb:1" \
		"oci:$BATS_TEST_TMPDIR/copy:bb"
}

@test "push: podman pulls and runs the pushed busybox image" {
	needs podman
	make_image "127.0.0.1:$OPEN_PORT/runme:1"
	ib -q push "127.0.0.1:$OPEN_PORT/runme:1"
	local p=(env -u REGISTRY_AUTH_FILE podman --root "$BATS_TEST_TMPDIR/podroot" --runroot "$BATS_TEST_TMPDIR/podrun"
		--storage-driver vfs)
	run "${p[@]}" run --rm --tls-verify=false "127.0.0.1:$OPEN_PORT/runme:1" /bin/cat /greeting
	"${p[@]}" rmi -a -f >/dev/null 2>&1 || true
	[ "$status" -eq 0 ]
	[[ "$output" == *"hello from imgbuild"* ]]
}

@test "push twice: the second push uploads nothing" {
	make_image "127.0.0.1:$FP_PORT/again:1"
	ib -q push "127.0.0.1:$FP_PORT/again:1"
	faultproxy_rules FP ''
	run --separate-stderr ib push "127.0.0.1:$FP_PORT/again:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[[ "$stderr" == *"already exists"* ]]
	not grep -E '^(POST|PATCH|PUT) /v2/again/blobs/' "$FP_LOG"
	grep -E '^HEAD /v2/again/blobs/sha256:[0-9a-f]{64} 200$' "$FP_LOG"
}

@test "push to another repository of the same registry mounts the blobs" {
	make_image "127.0.0.1:$FP_PORT/src/app:1"
	ib -q push "127.0.0.1:$FP_PORT/src/app:1"
	faultproxy_rules FP ''
	run --separate-stderr ib push "127.0.0.1:$FP_PORT/src/app:1" "127.0.0.1:$FP_PORT/dst/app:2"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[[ "$stderr" == *"mounted from another repository"* ]]
	[ "$(grep -c -E '^POST /v2/dst/app/blobs/uploads/\?mount=sha256:[0-9a-f]{64}&from=src%2Fapp 201$' "$FP_LOG")" -eq 2 ]
	not grep -E '^(PATCH|PUT) /v2/dst/app/blobs/' "$FP_LOG"
}

@test "push mounts from a repository an earlier push recorded; the record lives in the cache" {
	make_image "local/recorded:1"
	ib -q push "local/recorded:1" "127.0.0.1:$FP_PORT/rec/first:1"
	[ -f "$IMGBUILD_ROOT/cache/registry-blobs.json" ]
	[ ! -e "$IMGBUILD_ROOT/registry-blobs.json" ]
	grep -q "127.0.0.1:$FP_PORT/rec/first" "$IMGBUILD_ROOT/cache/registry-blobs.json"
	faultproxy_rules FP ''
	# the source is not on the registry: only the record knows rec/first
	run --separate-stderr ib push "local/recorded:1" "127.0.0.1:$FP_PORT/rec/second:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[ "$(grep -c -E '^POST /v2/rec/second/blobs/uploads/\?mount=sha256:[0-9a-f]{64}&from=rec%2Ffirst 201$' "$FP_LOG")" -eq 2 ]
	not grep -E '^(PATCH|PUT) /v2/rec/second/blobs/' "$FP_LOG"
	run ib verify
	[ "$status" -eq 0 ]
}

@test "push in chunks (PATCH + PUT) gives the same digest" {
	needs skopeo
	make_image "127.0.0.1:$FP_PORT/chunked:1"
	faultproxy_rules FP ''
	IMGBUILD_PUSH_CHUNK_SIZE=300000 ib -q push "127.0.0.1:$FP_PORT/chunked:1"
	[ "$(grep -c '^PATCH /v2/chunked/blobs/uploads/' "$FP_LOG")" -ge 4 ]
	[ "$(skopeo_digest "127.0.0.1:$OPEN_PORT/chunked:1")" = "$DIGEST" ]
	skopeo copy --src-tls-verify=false "docker://127.0.0.1:$OPEN_PORT/chunked:1" \
		"oci:$BATS_TEST_TMPDIR/copy:c"
}

@test "pull: an OCI image pushed by skopeo" {
	needs skopeo umoci
	skopeo copy --dest-tls-verify=false --format oci "oci:$LAYOUT:amd64" \
		"docker://127.0.0.1:$OPEN_PORT/sk/oci:1"
	local want
	want=$(skopeo_digest "127.0.0.1:$OPEN_PORT/sk/oci:1")
	run --separate-stderr ib pull "127.0.0.1:$OPEN_PORT/sk/oci:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$want" ]
	run ib images
	[[ "$output" == *"127.0.0.1:$OPEN_PORT/sk/oci"* ]]
	ib verify
}

@test "pull: a Docker schema2 image pushed by skopeo" {
	needs skopeo umoci
	skopeo copy --dest-tls-verify=false --format v2s2 "oci:$LAYOUT:amd64" \
		"docker://127.0.0.1:$OPEN_PORT/sk/v2s2:1"
	local want
	want=$(skopeo_digest "127.0.0.1:$OPEN_PORT/sk/v2s2:1")
	run --separate-stderr ib pull "127.0.0.1:$OPEN_PORT/sk/v2s2:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$want" ]
	# stored byte for byte: the manifest blob is the registry's
	local hex=${want#sha256:}
	grep -q 'application/vnd.docker.distribution.manifest.v2+json' \
		"$IMGBUILD_ROOT/oci/blobs/sha256/$hex"
	ib verify
}

# put_index REPO: push amd64 + arm64 manifests and an OCI index over them
# (arm64 first) as REPO:latest; sets AMD_DIGEST ARM_DIGEST
put_index() {
	local base="127.0.0.1:$OPEN_PORT" a
	for a in arm64 amd64; do
		skopeo copy --dest-tls-verify=false --format oci "oci:$LAYOUT:$a" "docker://$base/$1:$a"
		curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
			-o "$BATS_TEST_TMPDIR/$a.json" "http://$base/v2/$1/manifests/$a"
	done
	AMD_DIGEST=sha256:$(sha256sum "$BATS_TEST_TMPDIR/amd64.json" | cut -d' ' -f1)
	ARM_DIGEST=sha256:$(sha256sum "$BATS_TEST_TMPDIR/arm64.json" | cut -d' ' -f1)
	local mt=application/vnd.oci.image.manifest.v1+json
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
		"{\"mediaType\":\"$mt\",\"digest\":\"$ARM_DIGEST\",\"size\":$(stat -c %s "$BATS_TEST_TMPDIR/arm64.json"),\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}}" \
		"{\"mediaType\":\"$mt\",\"digest\":\"$AMD_DIGEST\",\"size\":$(stat -c %s "$BATS_TEST_TMPDIR/amd64.json"),\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}" \
		>"$BATS_TEST_TMPDIR/index.json"
	curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' \
		--data-binary "@$BATS_TEST_TMPDIR/index.json" "http://$base/v2/$1/manifests/latest"
}

@test "pull: a two-platform index gives the host platform; --platform another" {
	needs skopeo umoci
	put_index multi
	local host_digest other other_digest
	case "$(uname -m)" in
	x86_64) host_digest=$AMD_DIGEST other=linux/arm64 other_digest=$ARM_DIGEST ;;
	aarch64) host_digest=$ARM_DIGEST other=linux/amd64 other_digest=$AMD_DIGEST ;;
	*) skip "host is neither amd64 nor arm64" ;;
	esac
	run --separate-stderr ib pull "127.0.0.1:$OPEN_PORT/multi"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$host_digest" ]
	run --separate-stderr ib pull --platform "$other" "127.0.0.1:$OPEN_PORT/multi:latest"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$other_digest" ]
	run --separate-stderr ib pull --platform linux/s390x "127.0.0.1:$OPEN_PORT/multi"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"no image for platform linux/s390x"* ]]
	[[ "$stderr" == *"linux/amd64"* ]]
}

@test "pull by digest verifies it and tags NAME@DIGEST" {
	make_image "127.0.0.1:$OPEN_PORT/bydigest:1"
	ib -q push "127.0.0.1:$OPEN_PORT/bydigest:1"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	run --separate-stderr ib pull "127.0.0.1:$OPEN_PORT/bydigest@$DIGEST"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	grep -q "127.0.0.1:$OPEN_PORT/bydigest@$DIGEST" "$IMGBUILD_ROOT/oci/index.json"
}

@test "pull of a missing tag exits 1 with the registry's error code" {
	run --separate-stderr ib pull "127.0.0.1:$OPEN_PORT/nothing/here:nope"
	[ "$status" -eq 1 ]
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
	[[ "$stderr" == "imgbuild: error: pull 127.0.0.1:$OPEN_PORT/nothing/here:nope: "* ]]
	[[ "$stderr" == *"404"*"MANIFEST_UNKNOWN"* ]]
}

@test "search and tags list everything, following pagination" {
	make_image "127.0.0.1:$PAGED_PORT/a/one:1"
	local r
	for r in a/one:1 a/one:2 a/one:3 a/two:1 b/three:1; do
		ib tag "127.0.0.1:$PAGED_PORT/a/one:1" "127.0.0.1:$PAGED_PORT/$r"
		ib -q push "127.0.0.1:$PAGED_PORT/$r" >/dev/null
	done
	run --separate-stderr ib search "127.0.0.1:$PAGED_PORT"
	[ "$status" -eq 0 ]
	[ "$output" = "127.0.0.1:$PAGED_PORT/a/one
127.0.0.1:$PAGED_PORT/a/two
127.0.0.1:$PAGED_PORT/b/three" ]
	run --separate-stderr ib search "127.0.0.1:$PAGED_PORT/a/"
	[ "$status" -eq 0 ]
	[ "$output" = "127.0.0.1:$PAGED_PORT/a/one
127.0.0.1:$PAGED_PORT/a/two" ]
	run --separate-stderr ib tags "127.0.0.1:$PAGED_PORT/a/one"
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "$output" | sort | tr '\n' ' ')" = "1 2 3 " ]
}

@test "TLS: an untrusted CA fails; SSL_CERT_FILE or --tls-verify=false works" {
	echo wonderland >"$BATS_TEST_TMPDIR/pw"
	run --separate-stderr ib login -u alice --password-stdin "127.0.0.1:$BASIC_PORT" \
		<"$BATS_TEST_TMPDIR/pw"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"certificate"* ]]
	[ ! -e "$REGISTRY_AUTH_FILE" ]
	run --separate-stderr ib --tls-verify=false login -u alice --password-stdin \
		"127.0.0.1:$BASIC_PORT" <"$BATS_TEST_TMPDIR/pw"
	[ "$status" -eq 0 ]
	SSL_CERT_FILE=$REG_CA run --separate-stderr ib login -u alice --password-stdin \
		"127.0.0.1:$BASIC_PORT" <"$BATS_TEST_TMPDIR/pw"
	[ "$status" -eq 0 ]
}

@test "basic auth: push without credentials says authentication required" {
	export SSL_CERT_FILE=$REG_CA
	make_image "127.0.0.1:$BASIC_PORT/noauth:1"
	run --separate-stderr ib push "127.0.0.1:$BASIC_PORT/noauth:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == "imgbuild: error: push 127.0.0.1:$BASIC_PORT/noauth:1: authentication required"* ]]
	[[ "$stderr" == *"imgbuild login 127.0.0.1:$BASIC_PORT"* ]]
}

@test "basic auth: login with a wrong password exits 1 and stores nothing" {
	export SSL_CERT_FILE=$REG_CA
	run --separate-stderr ib login -u alice --password-stdin "127.0.0.1:$BASIC_PORT" <<<"nope"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"invalid username or password"* ]]
	[[ "$stderr" != *nope* ]]
	[ ! -e "$REGISTRY_AUTH_FILE" ]
}

@test "basic auth: login, push, pull, logout; no secret in any output" {
	export SSL_CERT_FILE=$REG_CA
	local secret_b64
	secret_b64=$(printf 'alice:wonderland' | base64)
	printf '{"auths":{"other.example":{"auth":"eDp5"}}}' >"$REGISTRY_AUTH_FILE"
	run ib --debug login -u alice --password-stdin "127.0.0.1:$BASIC_PORT" <<<"wonderland"
	[ "$status" -eq 0 ]
	[[ "$output" == *"Login Succeeded"* ]]
	[[ "$output" != *wonderland* ]]
	[[ "$output" != *"$secret_b64"* ]]
	[ "$(stat -c %a "$REGISTRY_AUTH_FILE")" = 600 ]
	grep -q "$secret_b64" "$REGISTRY_AUTH_FILE"
	grep -q other.example "$REGISTRY_AUTH_FILE"

	make_image "127.0.0.1:$BASIC_PORT/private/bb:1"
	run ib --debug push "127.0.0.1:$BASIC_PORT/private/bb:1"
	[ "$status" -eq 0 ]
	[[ "$output" != *"$secret_b64"* ]]
	[[ "$output" != *wonderland* ]]
	[ "$(printf '%s\n' "$output" | tail -n 1)" = "$DIGEST" ]

	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	run --separate-stderr ib pull "127.0.0.1:$BASIC_PORT/private/bb:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]

	run ib logout "127.0.0.1:$BASIC_PORT"
	[ "$status" -eq 0 ]
	not grep -q "$secret_b64" "$REGISTRY_AUTH_FILE"
	grep -q other.example "$REGISTRY_AUTH_FILE"
	run ib logout "127.0.0.1:$BASIC_PORT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not logged in"* ]]
}

@test "login refuses to prompt when stdin is not a terminal" {
	run --separate-stderr ib login -u alice "127.0.0.1:$BASIC_PORT" </dev/null
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"not a terminal"* ]]
	run --separate-stderr ib login --password-stdin "127.0.0.1:$BASIC_PORT" </dev/null
	[ "$status" -eq 2 ]
}

@test "token auth: login, push, pull, search and tags" {
	run ib login -u alice --password-stdin "127.0.0.1:$TOKEN_PORT" <<<"wonderland"
	[ "$status" -eq 0 ]
	make_image "127.0.0.1:$TOKEN_PORT/team/app:1"
	: >"$TOKEN_TOKEN_LOG"
	run --separate-stderr ib push "127.0.0.1:$TOKEN_PORT/team/app:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	grep -q '^TOKEN alice repository:team/app:pull,push$' "$TOKEN_TOKEN_LOG"
	# one token serves the whole push (cached until it expires)
	[ "$(grep -c '^TOKEN alice' "$TOKEN_TOKEN_LOG")" -eq 1 ]

	# a mount from team/app needs pull on it too: one token for both scopes
	run --separate-stderr ib push "127.0.0.1:$TOKEN_PORT/team/app:1" \
		"127.0.0.1:$TOKEN_PORT/team/copy:1"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"mounted from another repository"* ]]
	grep -q '^TOKEN alice repository:team/app:pull repository:team/copy:pull,push$' \
		"$TOKEN_TOKEN_LOG"

	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	run --separate-stderr ib pull "127.0.0.1:$TOKEN_PORT/team/app:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	run --separate-stderr ib search "127.0.0.1:$TOKEN_PORT/team"
	[ "$status" -eq 0 ]
	[[ "$output" == *"127.0.0.1:$TOKEN_PORT/team/app"* ]]
	run --separate-stderr ib tags "127.0.0.1:$TOKEN_PORT/team/app"
	[ "$status" -eq 0 ]
	[ "$output" = 1 ]
}

@test "token auth: no login means authentication required; a read-only user is denied push" {
	make_image "127.0.0.1:$TOKEN_PORT/team/locked:1"
	run --separate-stderr ib push "127.0.0.1:$TOKEN_PORT/team/locked:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"authentication required"* ]]
	run ib login -u alice --password-stdin "127.0.0.1:$TOKEN_PORT" <<<"wrong"
	[ "$status" -eq 1 ]
	[[ "$output" == *"invalid username or password"* ]]
	run ib login -u reader --password-stdin "127.0.0.1:$TOKEN_PORT" <<<"readonly"
	[ "$status" -eq 0 ]
	run --separate-stderr ib push "127.0.0.1:$TOKEN_PORT/team/locked:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"access denied"* || "$stderr" == *"authentication required"* ]]
	[[ "$stderr" == *"401"* ]]
}

@test "fault proxy: pull survives a reset mid-blob and resumes with Range" {
	make_image "127.0.0.1:$OPEN_PORT/flaky:1"
	ib -q push "127.0.0.1:$OPEN_PORT/flaky:1"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	faultproxy_rules FP '{"rules":[{"method":"GET","path":"/blobs/sha256:","action":"reset","after_bytes":400000,"times":-1},{"method":"GET","path":"/manifests/","action":"status","status":503,"times":2}]}'
	run --separate-stderr ib pull "127.0.0.1:$FP_PORT/flaky:1"
	cp "$FP_LOG" "$BATS_TEST_TMPDIR/fp.log"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	faultproxy_rules FP ''
	grep -q ' reset \[reset\]$' "$BATS_TEST_TMPDIR/fp.log"
	grep -q ' 206 .*range=bytes=[1-9][0-9]*-$' "$BATS_TEST_TMPDIR/fp.log"
	# the proxy delivers exactly after_bytes before each reset, so the first
	# resume starts there (and the ~1 MB layer needs 2 resumes, well inside
	# the retry budget however slowly the client reads)
	grep -q ' range=bytes=400000-$' "$BATS_TEST_TMPDIR/fp.log"
	[ "$(grep -c '/manifests/1 503' "$BATS_TEST_TMPDIR/fp.log")" -eq 2 ]
	ib verify
}

@test "fault proxy: a link that drops every 100 KB still finishes (progress renews the retry budget)" {
	make_image "127.0.0.1:$OPEN_PORT/dropping:1"
	ib -q push "127.0.0.1:$OPEN_PORT/dropping:1"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	faultproxy_rules FP '{"rules":[{"method":"GET","path":"/blobs/sha256:","action":"reset","after_bytes":100000,"times":-1}]}'
	run --separate-stderr ib pull "127.0.0.1:$FP_PORT/dropping:1"
	cp "$FP_LOG" "$BATS_TEST_TMPDIR/fp.log"
	faultproxy_rules FP ''
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	# more resets than the plain retry budget (5) allows
	[ "$(grep -c ' reset \[reset\]' "$BATS_TEST_TMPDIR/fp.log")" -gt 5 ]
	ib verify
}

@test "fault proxy: push survives resets mid-upload, 503s and 429 with Retry-After" {
	needs skopeo
	make_image "127.0.0.1:$FP_PORT/bumpy:1"
	faultproxy_rules FP '{"rules":[
		{"method":"PUT","path":"/blobs/uploads/","action":"reset","after_bytes":200000,"times":2},
		{"method":"HEAD","path":"/blobs/","action":"status","status":503,"times":2},
		{"method":"PUT","path":"/manifests/","action":"status","status":429,"retry_after":"1","times":1}]}'
	local t0=$SECONDS
	run --separate-stderr ib push "127.0.0.1:$FP_PORT/bumpy:1"
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	[ $((SECONDS - t0)) -ge 1 ] # waited for Retry-After
	[ "$(grep -c 'reset \[reset\]$' "$FP_LOG")" -eq 2 ]
	grep -q '^PUT /v2/bumpy/manifests/1 429 \[status\]$' "$FP_LOG"
	grep -q '^PUT /v2/bumpy/manifests/1 201$' "$FP_LOG"
	[ "$(skopeo_digest "127.0.0.1:$OPEN_PORT/bumpy:1")" = "$DIGEST" ]
	skopeo copy --src-tls-verify=false "docker://127.0.0.1:$OPEN_PORT/bumpy:1" \
		"oci:$BATS_TEST_TMPDIR/copy:b"
}

@test "fault proxy: too many failures give up with host and status" {
	make_image "127.0.0.1:$FP_PORT/down:1"
	faultproxy_rules FP '{"rules":[{"method":"*","path":"","action":"status","status":503,"times":-1}]}'
	run --separate-stderr ib push "127.0.0.1:$FP_PORT/down:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"503 Service Unavailable: UNAVAILABLE: injected by faultproxy"* ]]
	faultproxy_rules FP ''
}

@test "a redirect to another host never carries the credentials" {
	make_image "127.0.0.1:$OPEN_PORT/redir:1"
	ib -q push "127.0.0.1:$OPEN_PORT/redir:1"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	# the proxy wants Basic auth on 127.0.0.1 and sends blob GETs to localhost
	faultproxy_rules FP '{"rules":[
		{"method":"GET","path":"/blobs/","host":"^127\\.0\\.0\\.1:","action":"redirect","to_host":"localhost"},
		{"method":"*","path":"","host":"^127\\.0\\.0\\.1:","action":"require_basic"}]}'
	run ib login -u someone --password-stdin "127.0.0.1:$FP_PORT" <<<"pa55"
	[ "$status" -eq 0 ]
	run --separate-stderr ib pull "127.0.0.1:$FP_PORT/redir:1"
	local log="$BATS_TEST_TMPDIR/fp.log"
	cp "$FP_LOG" "$log"
	faultproxy_rules FP ''
	[ "$status" -eq 0 ]
	[ "$(last_line)" = "$DIGEST" ]
	# sent to the registry's own origin: with credentials
	grep -q '^GET /v2/redir/manifests/1 200 \[require_basic\] auth$' "$log"
	[ "$(grep -c '^GET /v2/redir/blobs/sha256:[0-9a-f]* 307 \[redirect\] auth$' "$log")" -eq 2 ]
	# followed to localhost: without
	[ "$(grep -c '^GET /v2/redir/blobs/sha256:[0-9a-f]* 200 host=localhost:[0-9]*$' "$log")" -eq 2 ]
	not grep -q 'auth host=localhost' "$log"
}

@test "fault proxy: a registry serving wrong bytes fails the pull and tags nothing" {
	make_image "127.0.0.1:$OPEN_PORT/corrupt:1"
	ib -q push "127.0.0.1:$OPEN_PORT/corrupt:1"
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root2"
	faultproxy_rules FP '{"rules":[{"method":"GET","path":"/blobs/","action":"corrupt","offset":5000,"times":-1}]}'
	run --separate-stderr ib pull "127.0.0.1:$FP_PORT/corrupt:1"
	faultproxy_rules FP ''
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"digest mismatch"* ]]
	run ib images
	[[ "$output" != *corrupt* ]]
	not grep -q corrupt "$IMGBUILD_ROOT/oci/index.json"
}

@test "every registry command has --help; bad usage exits 2" {
	local c
	for c in pull push login logout search tags; do
		run ib "$c" --help
		[ "$status" -eq 0 ]
		[[ "$output" == Usage:* ]]
	done
	run ib pull
	[ "$status" -eq 2 ]
	run ib push --bogus x
	[ "$status" -eq 2 ]
	run ib pull --platform linux x
	[ "$status" -eq 2 ]
	run ib tags
	[ "$status" -eq 2 ]
	run ib search a b
	[ "$status" -eq 2 ]
}
