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
workdir "/srv"
workdir "$APP_HOME/work"
copy { "hello", "rel/" }
label { ["app.home"] = "${APP_HOME}", ["app.mode"] = "${MODE:-prod}${APP_HOME:+-set}" }
expose "${PORT:-8080}"
user "${APP_USER:-app}"
LUA
	run "$IMGBUILD" build "$T/ex/recipe.lua" -t localhost/ex:1 --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	run podrun localhost/ex:1 sh -c 'hello; pwd; id -un; echo "$APP_BIN $PRICE"; ls /opt/app/work/rel'
	echo "$output"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "hello-from-tool" ]
	[ "${lines[1]}" = "/opt/app/work" ]
	[ "${lines[2]}" = "app" ]
	[ "${lines[3]}" = '/opt/app/bin $5' ]
	[ "${lines[4]}" = "hello" ]
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

@test "secrets: --secret id=,src= alone is enough; env= takes the value from the environment and leaves no trace" {
	mkdir -p "$T/sc"
	echo "file-secret-value" > "$T/sc-ca.pem"
	cat > "$T/sc/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "cat /run/secrets/ca /run/secrets/tok | tr a-z A-Z > /seen.txt; ls -l /run/secrets", secrets = { "ca", { id = "tok" } } }
LUA
	run "$IMGBUILD" build "$T/sc/recipe.lua"
	[ "$status" -ne 0 ]
	[[ "$output" == *'secret "ca"'* || "$output" == *'secret "tok"'* ]]
	NPM_TOKEN_X=env-token-value run "$IMGBUILD" build "$T/sc/recipe.lua" -t localhost/sc:1 \
		--secret "id=ca,src=$T/sc-ca.pem" --secret id=tok,env=NPM_TOKEN_X --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	run podrun localhost/sc:1 cat /seen.txt
	[[ "$output" == *FILE-SECRET-VALUE*ENV-TOKEN-VALUE* ]]
	run podrun localhost/sc:1 ls /run/secrets
	[[ "$output" != *tok* && "$output" != *ca* ]]
	! grep -rqa "env-token-value" "$IMGBUILD_ROOT/oci/blobs" "$IMGBUILD_ROOT/cache" || false
	for b in "$IMGBUILD_ROOT"/oci/blobs/sha256/*; do
		if gzip -t "$b" 2>/dev/null; then ! zcat "$b" | grep -qa "env-token-value" || false; fi
	done
	# nothing of the step is left in the store's temp area
	[ -z "$(ls "$IMGBUILD_ROOT/tmp" 2>/dev/null)" ]
	# a variable that is not set is an error naming it
	run "$IMGBUILD" build "$T/sc/recipe.lua" --secret "id=ca,src=$T/sc-ca.pem" \
		--secret id=tok,env=IB_SURELY_UNSET_VAR --no-cache
	[ "$status" -ne 0 ]
	[[ "$output" == *"IB_SURELY_UNSET_VAR is not set"* ]]
}

@test "cache mounts: uid/gid/mode make a non-root cache writable; id shares it across targets" {
	mkdir -p "$T/cm"
	cat > "$T/cm/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "echo one >> /home/app/.cache/log; stat -c '%u:%g %a' /home/app/.cache > /tmp/owner",
      user = "app", cache_mounts = { { target = "/home/app/.cache", id = "appcache", uid = 1000, gid = 1000, mode = "0750" } } }
run { "/bin/sh", "-c", "cat /x/log > /seen; cat /tmp/owner >> /seen", cache_mounts = { { target = "/x", id = "appcache", sharing = "locked" } } }
run { "/bin/sh", "-c", "ls /y | wc -l > /private-count", cache_mounts = { { target = "/y", id = "appcache", sharing = "private" } } }
run { "/bin/sh", "-c", "ls /z | wc -l > /plain-count", cache_mounts = { "/z" } }
LUA
	run "$IMGBUILD" build "$T/cm/recipe.lua" -t localhost/cm:1 --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	run podrun localhost/cm:1 cat /seen /private-count /plain-count
	echo "$output"
	[ "${lines[0]}" = "one" ]
	[ "${lines[1]}" = "1000:1000 750" ]
	[ "${lines[2]}" = "1" ]
	[ "${lines[3]}" = "0" ]
	cat > "$T/cm/bad.lua" <<'LUA'
from "localhost/busybox:latest"
run { "true", cache_mounts = { { target = "/c", sharing = "sometimes" } } }
LUA
	run "$IMGBUILD" build "$T/cm/bad.lua"
	[ "$status" -ne 0 ]
	[[ "$output" == *"bad.lua:2"*"sharing"* ]]
}

@test "ignore file: .dockerignore keeps .git out of copy, context.glob and the cache key; RECIPE.lua.dockerignore wins" {
	mkdir -p "$T/ig/ctx/.git/objects" "$T/ig/ctx/src" "$T/ig/ctx/logs"
	echo "[core]" > "$T/ig/ctx/.git/config"
	echo "ref: refs/heads/main" > "$T/ig/ctx/.git/HEAD"
	echo "int main;" > "$T/ig/ctx/src/main.c"
	echo "x" > "$T/ig/ctx/logs/a.log"
	echo "keep" > "$T/ig/ctx/logs/keep.log"
	echo "notes" > "$T/ig/ctx/NOTES.md"
	printf '# docker syntax\n/.git\n**/*.log\n!logs/keep.log\n*.md\n' > "$T/ig/ctx/.dockerignore"
	cat > "$T/ig/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
local n = 0
for _, f in ipairs(context.glob("**")) do n = n + 1 end
label { seen = tostring(n), md = tostring(context.exists("NOTES.md")) }
copy { ".", "/ctx/" }
run "find /ctx | sort > /listing"
LUA
	run "$IMGBUILD" build "$T/ig/ctx/recipe.lua" -t localhost/ig:1 --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	run podrun localhost/ig:1 cat /listing
	echo "$output"
	[[ "$output" != *".git"* ]]
	[[ "$output" != *"a.log"* ]]
	[[ "$output" != *"NOTES.md"* ]]
	[[ "$output" == *"/ctx/logs/keep.log"* ]]
	[[ "$output" == *"/ctx/src/main.c"* ]]
	[[ "$output" == *"/ctx/recipe.lua"* ]]
	run config_of localhost/ig:1
	# context.glob("**"): .dockerignore, logs, logs/keep.log, recipe.lua, src, src/main.c
	[[ "$output" == *'"seen": "6"'* ]]
	[[ "$output" == *'"md": "false"'* ]]
	# an ignored file changes: the copy step stays cached
	echo "changed" >> "$T/ig/ctx/.git/config"
	echo "more" >> "$T/ig/ctx/logs/a.log"
	run "$IMGBUILD" build "$T/ig/ctx/recipe.lua" --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"COPY"*"CACHED"* ]]
	# an explicitly named ignored source is an error, like a missing file
	printf 'from "localhost/busybox:latest"\ncopy { "NOTES.md", "/n" }\n' > "$T/ig/ctx/named.lua"
	run "$IMGBUILD" build "$T/ig/ctx/named.lua"
	[ "$status" -ne 0 ]
	[[ "$output" == *"excluded by"*".dockerignore"* ]]
	# RECIPE.lua.dockerignore next to the recipe takes precedence
	printf 'src\n' > "$T/ig/ctx/recipe.lua.dockerignore"
	run "$IMGBUILD" build "$T/ig/ctx/recipe.lua" -t localhost/ig:2
	[ "$status" -eq 0 ]
	run podrun localhost/ig:2 cat /listing
	[[ "$output" == *"/ctx/.git/config"* ]]
	[[ "$output" != *"/ctx/src"* ]]
}

@test "--check: lists every differing file with what differs, leaves the step cache and tags as they were" {
	mkdir -p "$T/ck"
	cat > "$T/ck/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "echo stable > /stable.txt"
run { "/bin/sh", "-c", "for i in 1 2 3 4 5; do cat /proc/sys/kernel/random/uuid > /r$i; done; echo x > /cache/seen", cache_mounts = { "/cache" } }
LUA
	run "$IMGBUILD" -q build "$T/ck/recipe.lua" -t localhost/ck:1
	[ "$status" -eq 0 ]
	first=$output
	snapshot() {
		sha256sum "$IMGBUILD_ROOT/oci/index.json"
		(cd "$IMGBUILD_ROOT/cache" && find . | sort && find . -type f -exec sha256sum {} + | sort)
	}
	before=$(snapshot)
	run "$IMGBUILD" build "$T/ck/recipe.lua" -t localhost/ck:1 -t localhost/ck:2 --check --progress plain
	echo "$output"
	[ "$status" -eq 1 ]
	for i in 1 2 3 4 5; do [[ "$output" == *"layer "*": r$i: content"* ]]; done
	[[ "$output" != *"the image configs differ"* ]]
	[[ "$output" == *"imgbuild: error: not reproducible: 5 differences"* ]]
	after=$(snapshot)
	[ "$before" = "$after" ]
	# the tag did not move, no new tag, and the next cached build gives the first digest
	! grep -q 'localhost/ck:2' "$IMGBUILD_ROOT/oci/index.json" || false
	run "$IMGBUILD" -q build "$T/ck/recipe.lua"
	[ "$output" = "$first" ]
	# --check-limit bounds the list
	run "$IMGBUILD" build "$T/ck/recipe.lua" --check-limit 2
	[ "$status" -eq 1 ]
	[ "$(echo "$output" | grep -c '^layer ')" -eq 2 ]
	[[ "$output" == *"... and 3 more (--check-limit)"* ]]
	# a reproducible recipe passes and then tags
	printf 'from "localhost/busybox:latest"\nrun "echo ok > /ok"\n' > "$T/ck/ok.lua"
	run "$IMGBUILD" build "$T/ck/ok.lua" -t localhost/ckok:1 --check
	[ "$status" -eq 0 ]
	[ -n "$(skopeo inspect --raw "oci:$IMGBUILD_ROOT/oci:localhost/ckok:1")" ]
}
