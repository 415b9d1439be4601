#!/usr/bin/env bats
# Hand-off and shared credentials with the real clients: a private dockerd
# (Debian's docker.io, its own data root and socket, no iptables, no bridge)
# started for this file, podman with a private containers-storage, and
# docker-registry instances on 127.0.0.1 (one open, one TLS + htpasswd).
#
#   build --load / load-into docker|podman, save to a pipe, docker's image ID
#   through load and save, login/logout shared with docker (plain file,
#   a credential helper, docker-credential-pass), multi-platform push.

bats_require_minimum_version 1.5.0

load helpers/registry

IMGBUILD=${IMGBUILD:-$BATS_TEST_DIRNAME/../../build/imgbuild}
HELPERS="$BATS_TEST_DIRNAME/helpers"

# The reason dockerd is unusable here, or nothing.
docker_skip_reason() {
	cat "$BATS_FILE_TMPDIR/docker-skip" 2>/dev/null || true
}

need_docker() {
	local why
	why=$(docker_skip_reason)
	[ -z "$why" ] || skip "$why"
}

docker_start() {
	if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
		echo "needs dockerd and docker (Debian docker.io)" >"$BATS_FILE_TMPDIR/docker-skip"
		return 0
	fi
	# A short directory: the socket path must fit in sun_path.
	DK=$(mktemp -d /tmp/ib-dockerd.XXXXXX)
	export DK
	echo "$DK" >"$BATS_FILE_TMPDIR/docker-dir"
	dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver vfs \
		--data-root "$DK/data" --exec-root "$DK/exec" -H "unix://$DK/d.sock" \
		--pidfile "$DK/d.pid" >"$DK/log" 2>&1 3>&- &
	local i
	for i in $(seq 300); do
		DOCKER_HOST="unix://$DK/d.sock" docker version >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "dockerd did not start: $(tail -n 3 "$DK/log" | tr '\n' ' ')" \
		>"$BATS_FILE_TMPDIR/docker-skip"
}

docker_stop() {
	local dk pid i
	dk=$(cat "$BATS_FILE_TMPDIR/docker-dir" 2>/dev/null) || return 0
	[ -n "$dk" ] || return 0
	if [ -f "$dk/d.pid" ]; then
		pid=$(cat "$dk/d.pid")
		kill "$pid" 2>/dev/null || true
		for i in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -rf "$dk"
}

setup_file() {
	[ "$(id -u)" = 0 ] || skip "needs root"
	local missing
	if missing=$(reg_missing_tool); then
		skip "needs $missing"
	fi
	[ -x /bin/busybox ] || skip "needs /bin/busybox (busybox-static)"
	[ -x "$IMGBUILD" ] || skip "needs the imgbuild binary at $IMGBUILD (build it first)"
	export IMGBUILD HELPERS

	# one base image for every test, copied into each test's store
	export BASE_ROOT="$BATS_FILE_TMPDIR/base"
	IMGBUILD_ROOT="$BASE_ROOT" SOURCE_DATE_EPOCH=0 "$IMGBUILD" -q build \
		"$BATS_TEST_DIRNAME/../../recipes/busybox.lua" --context /bin \
		-t localhost/busybox:latest >/dev/null

	reg_start_open OPEN
	reg_start_basic BASIC alice wonderland
	# docker checks the registry's certificate against certs.d
	[ -d /etc/docker/certs.d ] || touch "$BATS_FILE_TMPDIR/made-certs.d"
	mkdir -p "/etc/docker/certs.d/127.0.0.1:$BASIC_PORT"
	cp "$REG_CA" "/etc/docker/certs.d/127.0.0.1:$BASIC_PORT/ca.crt"

	docker_start
	local why
	why=$(docker_skip_reason)
	[ -z "$why" ] || echo "# docker tests skipped: $why" >&3
}

teardown_file() {
	docker_stop
	[ -n "${BASIC_PORT:-}" ] && rm -rf "/etc/docker/certs.d/127.0.0.1:$BASIC_PORT"
	if [ -f "$BATS_FILE_TMPDIR/made-certs.d" ]; then
		rmdir /etc/docker/certs.d 2>/dev/null || true
	fi
	reg_stop_all
}

setup() {
	T="$BATS_TEST_TMPDIR"
	export IMGBUILD_ROOT="$T/root"
	cp -a "$BASE_ROOT" "$IMGBUILD_ROOT"
	unset REGISTRY_AUTH_FILE SSL_CERT_FILE SSL_CERT_DIR XDG_RUNTIME_DIR
	# docker's config in the test's home (a DOCKER_CONFIG naming a missing
	# file makes podman fail)
	export HOME="$T/home"
	unset DOCKER_CONFIG
	DCFG="$HOME/.docker"
	mkdir -p "$HOME"
	if [ -f "$BATS_FILE_TMPDIR/docker-dir" ]; then
		DOCKER_HOST="unix://$(cat "$BATS_FILE_TMPDIR/docker-dir")/d.sock"
		export DOCKER_HOST
	fi
	# podman with a private storage, found through its own configuration
	cat >"$T/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$T/pstore"
runroot = "$T/prun"
EOF
	export CONTAINERS_STORAGE_CONF="$T/storage.conf"
}

teardown() {
	# the pass test's gpg-agent
	if [ -n "${GNUPGHOME:-}" ] && [ "${GNUPGHOME#"$BATS_TEST_TMPDIR"}" != "$GNUPGHOME" ]; then
		gpgconf --kill gpg-agent 2>/dev/null || true
	fi
	if [ -n "${CONTAINERS_STORAGE_CONF:-}" ] && command -v podman >/dev/null; then
		podman rmi -af >/dev/null 2>&1 || true
	fi
	if [ -z "$(docker_skip_reason)" ] && [ -n "${DOCKER_HOST:-}" ]; then
		docker rmi -f $(docker images -aq) >/dev/null 2>&1 || true
	fi
}

ib() {
	"$IMGBUILD" "$@"
}

# app_recipe DIR WORD: a recipe on the base image whose command prints WORD
app_recipe() {
	mkdir -p "$1"
	cat >"$1/recipe.lua" <<EOF
stage("app", "localhost/busybox:latest")
run { "sh", "-c", "echo $2 > /msg" }
cmd { "cat", "/msg" }
EOF
}

# ---- hand-off --------------------------------------------------------------

@test "build --load: docker run finds the image with no other command" {
	need_docker
	app_recipe "$T/app" hello-docker
	run --separate-stderr ib build "$T/app/recipe.lua" --load -t app
	[ "$status" -eq 0 ]
	[[ "$output" == sha256:* ]]
	[[ "$stderr" == *"Loaded image: app:latest"* ]]
	[[ "$stderr" == *"loaded into docker"* ]]
	run docker run --rm --network none app
	[ "$status" -eq 0 ]
	[ "$output" = hello-docker ]
	# docker's image ID is the config digest we built
	local cfg
	cfg=$(ib inspect app | python3 -c 'import json,sys; print(json.load(sys.stdin)["ConfigDigest"])')
	[ "$(docker image inspect -f '{{.Id}}' app)" = "$cfg" ]
}

@test "load-into docker: several tags in one stream; an unknown image loads nothing" {
	need_docker
	app_recipe "$T/app" two-tags
	ib -q build "$T/app/recipe.lua" -t app:1 -t localhost:5000/team/app:2 >/dev/null
	run --separate-stderr ib load-into docker app:1 localhost:5000/team/app:2
	[ "$status" -eq 0 ]
	run docker run --rm --network none localhost:5000/team/app:2
	[ "$output" = two-tags ]
	run --separate-stderr ib load-into docker nosuch:1
	[ "$status" -eq 1 ]
	[[ "$stderr" == *nosuch* ]]
}

@test "build --load=podman: podman run finds the image" {
	command -v podman >/dev/null || skip "needs podman"
	app_recipe "$T/app" hello-podman
	run --separate-stderr ib build "$T/app/recipe.lua" --load=podman -t app
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"loaded into podman"* ]]
	run podman run --rm --network none docker.io/library/app:latest
	[ "$status" -eq 0 ]
	[ "$output" = hello-podman ]
	# the short name finds it too
	run podman run --rm --network none app
	[ "$status" -eq 0 ]
	[ "$output" = hello-podman ]
}

@test "--load picks podman when docker does not answer; no engine at all is an error" {
	command -v podman >/dev/null || skip "needs podman"
	app_recipe "$T/app" fallback
	DOCKER_HOST="unix://$T/nothing.sock" run --separate-stderr \
		ib build "$T/app/recipe.lua" --load -t app
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"loaded into podman"* ]]
	run podman run --rm --network none docker.io/library/app:latest
	[ "$output" = fallback ]
	run --separate-stderr env DOCKER_HOST="unix://$T/nothing.sock" PATH=/nonexistent \
		"$IMGBUILD" load-into auto app
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"docker does not answer at $T/nothing.sock and podman is not installed"* ]]
	run --separate-stderr ib load-into containerd app
	[ "$status" -eq 2 ]
	# an unknown engine is refused before anything is built
	run --separate-stderr ib build "$T/app/recipe.lua" --load=containerd -t other
	[ "$status" -eq 2 ]
	[[ "$stderr" == *"unknown engine 'containerd'"* ]]
	run ib inspect other
	[ "$status" -eq 1 ]
	DOCKER_HOST="ssh://me@far" run --separate-stderr ib load-into docker app
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"ssh://me@far is not supported"* ]]
}

@test "save without -o: to a pipe like docker save, refused on a terminal" {
	need_docker
	app_recipe "$T/app" piped
	ib -q build "$T/app/recipe.lua" -t piped:1 >/dev/null
	ib save piped:1 | docker load
	run docker run --rm --network none piped:1
	[ "$output" = piped ]
	command -v script >/dev/null || skip "needs script (bsdutils)"
	run script -qec "$IMGBUILD save piped:1" /dev/null
	[ "$status" -ne 0 ]
	[[ "$output" == *"cowardly refusing to save to a terminal"* ]]
}

# ---- credentials shared with docker ------------------------------------------

# push_image REF: build a small image and push it (credentials as configured)
push_image() {
	app_recipe "$T/img" "$2"
	ib -q build "$T/img/recipe.lua" -t "$1" >/dev/null
	SSL_CERT_FILE=$REG_CA ib -q push "$1" >/dev/null
}

@test "imgbuild login -> docker pull; docker login -> imgbuild push" {
	need_docker
	local reg="127.0.0.1:$BASIC_PORT"
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" login -u alice \
		--password-stdin "$reg" <<<wonderland
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"WARNING! Your password will be stored unencrypted in $DCFG/config.json."* ]]
	[ "$(stat -c %a "$DCFG/config.json")" = 600 ]
	push_image "$reg/team/shared:1" from-imgbuild
	run docker pull "$reg/team/shared:1"
	[ "$status" -eq 0 ]
	run docker run --rm --network none "$reg/team/shared:1"
	[ "$output" = from-imgbuild ]

	run ib logout "$reg"
	[ "$status" -eq 0 ]
	docker rmi -f "$reg/team/shared:1" >/dev/null
	run docker pull "$reg/team/shared:1"
	[ "$status" -ne 0 ]

	# the other way round: docker stores, imgbuild pushes with it.  Only
	# docker on PATH: docker picks docker-credential-pass or -secretservice
	# as default store whenever it finds them.
	mkdir -p "$T/dbin"
	ln -s "$(command -v docker)" "$T/dbin/docker"
	PATH="$T/dbin" docker login -u alice --password-stdin "$reg" <<<wonderland
	grep -q '"auth"' "$DCFG/config.json"
	push_image "$reg/team/shared:2" from-docker-login
	run docker pull "$reg/team/shared:2"
	[ "$status" -eq 0 ]
}

@test "login writes podman's auth.json too when it is in use; logout removes both" {
	local reg="127.0.0.1:$BASIC_PORT"
	export XDG_RUNTIME_DIR="$T/run"
	mkdir -p "$XDG_RUNTIME_DIR/containers"
	echo '{"auths":{}}' >"$XDG_RUNTIME_DIR/containers/auth.json"
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" login -u alice \
		--password-stdin "$reg" <<<wonderland
	[ "$status" -eq 0 ]
	grep -q "$reg" "$DCFG/config.json"
	grep -q "$reg" "$XDG_RUNTIME_DIR/containers/auth.json"
	# podman (and skopeo) find it in their file
	push_image "$reg/team/pod:1" x
	run skopeo inspect --tls-verify=false \
		"docker://$reg/team/pod:1"
	[ "$status" -eq 0 ]
	run ib logout "$reg"
	[ "$status" -eq 0 ]
	! grep -q "$reg" "$DCFG/config.json"
	! grep -q "$reg" "$XDG_RUNTIME_DIR/containers/auth.json"
	# --authfile wins: only that file is written
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" --authfile "$T/only.json" \
		login -u alice --password-stdin "$reg" <<<wonderland
	[ "$status" -eq 0 ]
	grep -q "$reg" "$T/only.json"
	! grep -q "$reg" "$DCFG/config.json"
}

@test "credential helper: login stores through credsStore, docker uses it, logout erases and keeps the mapping" {
	local reg="127.0.0.1:$BASIC_PORT"
	export IB_CRED_DIR="$T/creds"
	mkdir -p "$IB_CRED_DIR" "$DCFG"
	export PATH="$HELPERS:$PATH"
	echo '{"credsStore":"test","credHelpers":{"other.example":"test"}}' >"$DCFG/config.json"
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" login -u alice \
		--password-stdin "$reg" <<<wonderland
	[ "$status" -eq 0 ]
	[[ "$stderr" != *WARNING* ]]
	grep -qx "store $reg" "$IB_CRED_DIR/log"
	! grep -q wonderland "$DCFG/config.json"
	! grep -q "$(printf alice:wonderland | base64)" "$DCFG/config.json"
	push_image "$reg/team/helper:1" via-helper
	grep -qx "get $reg" "$IB_CRED_DIR/log"
	if [ -z "$(docker_skip_reason)" ]; then
		run docker pull "$reg/team/helper:1"
		[ "$status" -eq 0 ]
	fi
	run ib logout "$reg"
	[ "$status" -eq 0 ]
	grep -qx "erase $reg" "$IB_CRED_DIR/log"
	python3 - "$DCFG/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["credsStore"] == "test", c
assert c["credHelpers"] == {"other.example": "test"}, c
PY
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" push "$reg/team/helper:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"authentication required"* ]]

	# docker login through the same helper; imgbuild reads it back
	if [ -z "$(docker_skip_reason)" ]; then
		docker login -u alice --password-stdin "$reg" <<<wonderland
		push_image "$reg/team/helper:2" after-docker-login
	fi
}

@test "docker-credential-pass: login and logout through pass, headless" {
	command -v docker-credential-pass >/dev/null || skip "needs docker-credential-pass (golang-docker-credential-helpers)"
	command -v pass >/dev/null || skip "needs pass"
	local reg="127.0.0.1:$BASIC_PORT"
	export GNUPGHOME="$T/gnupg" PASSWORD_STORE_DIR="$T/pass"
	mkdir -m 700 "$GNUPGHOME"
	gpg --batch --passphrase '' --quick-gen-key "imgbuild test <t@example.invalid>" \
		default default never 2>/dev/null
	local fpr
	fpr=$(gpg --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
	pass init "$fpr" >/dev/null
	mkdir -p "$DCFG"
	echo "{\"credHelpers\":{\"$reg\":\"pass\"}}" >"$DCFG/config.json"
	run --separate-stderr env SSL_CERT_FILE="$REG_CA" "$IMGBUILD" login -u alice \
		--password-stdin "$reg" <<<wonderland
	[ "$status" -eq 0 ]
	! grep -q auths "$DCFG/config.json"
	[ -n "$(find "$PASSWORD_STORE_DIR" -name '*.gpg')" ]
	push_image "$reg/team/pass:1" via-pass
	run ib logout "$reg"
	[ "$status" -eq 0 ]
	[ -z "$(find "$PASSWORD_STORE_DIR" -path '*docker-credential-helpers*' -name '*.gpg')" ]
	grep -q '"pass"' "$DCFG/config.json"
}

# ---- faithful round trips -----------------------------------------------------

@test "docker save -> imgbuild load -> imgbuild save -> docker load keeps docker's image ID" {
	need_docker
	app_recipe "$T/app" base
	ib -q build "$T/app/recipe.lua" --load -t app >/dev/null
	# an image docker made itself (its own config serialisation)
	docker run --name "rt-$$" --network none app sh -c 'echo native > /native'
	docker commit -c 'CMD ["cat", "/native"]' "rt-$$" native:1 >/dev/null
	docker rm "rt-$$" >/dev/null
	local id
	id=$(docker image inspect -f '{{.Id}}' native:1)
	docker save native:1 | ib load
	[ "$(ib inspect native:1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["ConfigDigest"])')" = "$id" ]
	docker rmi native:1 >/dev/null
	ib save native:1 | docker load
	[ "$(docker image inspect -f '{{.Id}}' native:1)" = "$id" ]
	run docker run --rm --network none native:1
	[ "$output" = native ]
}

@test "push compresses a loaded archive's uncompressed layers, once" {
	need_docker
	app_recipe "$T/app" squeeze
	ib -q build "$T/app/recipe.lua" --load -t app >/dev/null
	docker save app | ib load
	local local_digest pushed
	local_digest=$(ib inspect app | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
	ib inspect app | grep -q '"application/vnd.oci.image.layer.v1.tar"'
	run --separate-stderr ib push app "127.0.0.1:$OPEN_PORT/squeeze:1"
	[ "$status" -eq 0 ]
	pushed=$(printf '%s\n' "$output" | tail -n 1)
	[[ "$pushed" == sha256:* ]]
	[ "$pushed" != "$local_digest" ]
	skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$OPEN_PORT/squeeze:1" >"$T/m.json"
	python3 - "$T/m.json" "$pushed" <<'PY'
import hashlib, json, sys
raw = open(sys.argv[1], "rb").read()
assert "sha256:" + hashlib.sha256(raw).hexdigest() == sys.argv[2]
m = json.loads(raw)
assert m["layers"], m
for l in m["layers"]:
    assert l["mediaType"].endswith("+gzip"), l
PY
	# docker pulls what was pushed, and runs it
	docker rmi -f app >/dev/null
	docker pull "127.0.0.1:$OPEN_PORT/squeeze:1" >/dev/null
	run docker run --rm --network none "127.0.0.1:$OPEN_PORT/squeeze:1"
	[ "$output" = squeeze ]
	# again, elsewhere: same compressed blobs (none made again), none uploaded
	local blobs
	blobs=$(find "$IMGBUILD_ROOT" -path '*blobs/sha256/*' -type f | wc -l)
	run --separate-stderr ib push app "127.0.0.1:$OPEN_PORT/squeeze:2"
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "$output" | tail -n 1)" = "$pushed" ]
	[ "$(find "$IMGBUILD_ROOT" -path '*blobs/sha256/*' -type f | wc -l)" = "$blobs" ]
	[[ "$stderr" == *"mounted from another repository"* || "$stderr" == *"already exists"* ]]
}

# ---- multi-platform push --------------------------------------------------------

# multi_archive FILE: an OCI archive whose one tag "multi:1" is an index over
# a linux/amd64 and a linux/arm64 image (one gzip layer each, distinct)
multi_archive() {
	python3 - "$1" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
blobs = {}
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"digest": d, "size": len(data)}
def layer(text):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        body = text.encode()
        info = tarfile.TarInfo("hello")
        info.size = len(body)
        info.mode = 0o644
        t.addfile(info, io.BytesIO(body))
    tar = raw.getvalue()
    return tar, gzip.compress(tar, mtime=0)
manifests = []
for arch in ("amd64", "arm64"):
    tar, gz = layer("multi " + arch + "\n")
    cfg = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"]},
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode()
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": dict(put(cfg), mediaType="application/vnd.oci.image.config.v1+json"),
         "layers": [dict(put(gz), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")]}
    md = put(json.dumps(m).encode())
    manifests.append(dict(md, mediaType=m["mediaType"],
                          platform={"os": "linux", "architecture": arch}))
idx = put(json.dumps({"schemaVersion": 2,
                      "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": manifests}).encode())
top = {"schemaVersion": 2, "manifests": [dict(idx,
       mediaType="application/vnd.oci.image.index.v1+json",
       annotations={"org.opencontainers.image.ref.name": "multi:1"})]}
with tarfile.open(sys.argv[1], "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", json.dumps(top).encode())
    for d, data in blobs.items():
        add("blobs/sha256/" + d[7:], data)
PY
}

@test "push of an index: every platform, then the index; --platform narrows" {
	multi_archive "$T/multi.tar"
	ib load -i "$T/multi.tar"
	local reg="127.0.0.1:$OPEN_PORT"
	run --separate-stderr ib push multi:1 "$reg/multi:1"
	[ "$status" -eq 0 ]
	local d
	d=$(printf '%s\n' "$output" | tail -n 1)
	skopeo inspect --tls-verify=false --raw "docker://$reg/multi:1" >"$T/idx.json"
	python3 - "$T/idx.json" "$d" <<'PY'
import hashlib, json, sys
raw = open(sys.argv[1], "rb").read()
assert "sha256:" + hashlib.sha256(raw).hexdigest() == sys.argv[2]
idx = json.loads(raw)
assert sorted(m["platform"]["architecture"] for m in idx["manifests"]) == ["amd64", "arm64"], idx
for m in idx["manifests"]:
    print(m["digest"])
PY
	local m
	for m in $(python3 -c 'import json,sys; [print(x["digest"]) for x in json.load(open(sys.argv[1]))["manifests"]]' "$T/idx.json"); do
		skopeo inspect --tls-verify=false --raw "docker://$reg/multi@$m" | grep -q '"layers"'
	done
	# each platform's image is complete on the registry
	skopeo copy -q --src-tls-verify=false --override-arch arm64 "docker://$reg/multi:1" "oci:$T/back:arm"
	skopeo copy -q --src-tls-verify=false --override-arch amd64 "docker://$reg/multi:1" "oci:$T/back:amd"

	# --platform: that manifest alone under the tag
	run --separate-stderr ib push --platform linux/arm64 multi:1 "$reg/multi:arm"
	[ "$status" -eq 0 ]
	skopeo inspect --tls-verify=false --raw "docker://$reg/multi:arm" >"$T/arm.json"
	python3 - "$T/arm.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert "layers" in m and "manifests" not in m, m
PY
	run --separate-stderr ib push --platform linux/s390x multi:1 "$reg/multi:s390x"
	[ "$status" -eq 1 ]
	run --separate-stderr ib push --platform nonsense multi:1 "$reg/multi:x"
	[ "$status" -eq 2 ]
}

@test "push of an index with a platform missing from the store names it" {
	multi_archive "$T/multi.tar"
	ib load -i "$T/multi.tar"
	local reg="127.0.0.1:$OPEN_PORT" arm
	# the store keeps the index but loses the arm64 manifest
	arm=$(tar -xOf "$T/multi.tar" index.json | python3 -c '
import json, sys, tarfile
top = json.load(sys.stdin)["manifests"][0]["digest"][7:]
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("blobs/sha256/" + top))
print([m["digest"] for m in idx["manifests"] if m["platform"]["architecture"] == "arm64"][0])' "$T/multi.tar")
	rm "$IMGBUILD_ROOT/oci/blobs/sha256/${arm#sha256:}"
	run --separate-stderr ib push multi:1 "$reg/multi-part:1"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"platform linux/arm64 ($arm) is not in the store"* ]]
	# nothing was tagged on the registry
	run skopeo inspect --tls-verify=false --raw "docker://$reg/multi-part:1"
	[ "$status" -ne 0 ]
	run --separate-stderr ib push --platform linux/amd64 multi:1 "$reg/multi-part:1"
	[ "$status" -eq 0 ]
	skopeo inspect --tls-verify=false --raw "docker://$reg/multi-part:1" | grep -q '"layers"'
}
