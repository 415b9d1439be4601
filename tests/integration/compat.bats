#!/usr/bin/env bats
# Docker-compatible recipe semantics: variable expansion, secrets, cache
# mounts, ignore files and --check; podman confirms what runs.

bats_require_minimum_version 1.5.0

load helpers/build

setup_file() {
	build_setup_file
}

teardown_file() {
	build_teardown_file
}

setup() {
	need podman umoci skopeo
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
}

# config_of IMAGE: the image config JSON of our store's image
config_of() {
	skopeo inspect --config "oci:$IMGBUILD_ROOT/oci:$1"
}

@test "expansion: env extends the base PATH, \${VAR} and defaults in env, workdir, user, label, copy" {
	mkdir -p "$T/ex"
	printf '#!/bin/sh\necho hello-from-tool\n' > "$T/ex/hello"
	chmod 755 "$T/ex/hello"
	cat > "$T/ex/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
env { APP_HOME = "/opt/app" }
env { PATH = "${APP_HOME}/bin:$PATH", APP_BIN = "${APP_HOME}/bin", PRICE = "\\$5" }
copy { "hello", "$APP_BIN/" }
workdir "$APP_HOME/work"
label { ["app.home"] = "${APP_HOME}", ["app.mode"] = "${MODE:-prod}${APP_HOME:+-set}" }
expose "${PORT:-8080}"
user "${APP_USER:-app}"
LUA
	run "$IMGBUILD" build "$T/ex/recipe.lua" -t localhost/ex:1 --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	run podrun localhost/ex:1 sh -c 'hello; pwd; id -un; echo "$APP_BIN $PRICE"'
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *hello-from-tool* ]]
	[[ "$output" == *"/opt/app/work"* ]]
	[[ "$output" == *app* ]]
	[[ "$output" == *'/opt/app/bin $5'* ]]
	run config_of localhost/ex:1
	[[ "$output" == *'"PATH=/opt/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'* ]]
	[[ "$output" == *'"app.mode": "prod-set"'* ]]
	[[ "$output" == *'"8080/tcp"'* ]]
}

@test "expansion: a base without PATH gets docker's default PATH; bad substitutions name the line" {
	mkdir -p "$T/np"
	cat > "$T/np/recipe.lua" <<'LUA'
stage("nopath", "scratch")
copy { "busybox", "/bin/busybox", mode = "0755" }
run { "/bin/busybox", "--install", "-s", "/bin" }
LUA
	cp "$(command -v busybox || echo /bin/busybox)" "$T/np/busybox"
	run "$IMGBUILD" build "$T/np/recipe.lua" -t localhost/np:1
	[ "$status" -eq 0 ]
	run config_of localhost/np:1
	[[ "$output" == *'"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'* ]]
	run podrun localhost/np:1 sh -c 'echo "$PATH"'
	[[ "$output" == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ]]
	cat > "$T/np/bad.lua" <<'LUA'
from "localhost/busybox:latest"
workdir "${APP_HOME"
LUA
	run "$IMGBUILD" build "$T/np/bad.lua"
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"bad.lua:2"*"missing '}'"* ]]
}
