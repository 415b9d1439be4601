#!/usr/bin/env bats
# The daily commands: names of bases, store visibility, build dates, output
# formats, operations and `imgbuild run`.  The real binary, checked with
# podman where it applies.

bats_require_minimum_version 1.5.0

load helpers/build
load helpers/testnet

setup_file() {
	build_setup_file
}

teardown_file() {
	build_teardown_file
}

setup() {
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
}

teardown() {
	testnet_down
}

# json_get EXPR: evaluate a python expression on `j` = JSON from stdin.
json_get() {
	python3 -c "import json, sys; j = json.load(sys.stdin); print(($1))"
}

# git_repo DIR: a repository with one commit dated 2023-11-14T22:13:20Z.
git_repo() {
	mkdir -p "$1"
	printf 'stage("s", "localhost/busybox:latest")\ncopy { "hello.txt", "/hello.txt" }\n' >"$1/recipe.lua"
	echo hello >"$1/hello.txt"
	git -C "$1" init -q
	git -C "$1" add -A
	GIT_AUTHOR_DATE="1700000000 +0000" GIT_COMMITTER_DATE="1700000000 +0000" \
		git -C "$1" -c user.name=t -c user.email=t@example.invalid commit -q -m one
}

@test "date: a git context's image carries the commit date, the same digest from two clones" {
	need git
	git_repo "$T/repo"
	git clone -q "$T/repo" "$T/clone1"
	sleep 1
	git clone -q "$T/repo" "$T/clone2"
	unset SOURCE_DATE_EPOCH
	run -0 "$IMGBUILD" -q build "$T/clone1/recipe.lua" -t localhost/dated:1
	d1=$output
	run -0 "$IMGBUILD" -q build "$T/clone2/recipe.lua" -t localhost/dated:2
	[ "$output" = "$d1" ]
	created=$("$IMGBUILD" inspect localhost/dated:1 | json_get 'j["Config"]["created"]')
	[ "$created" = "2023-11-14T22:13:20Z" ]
	# SOURCE_DATE_EPOCH and --source-date-epoch still win over git
	SOURCE_DATE_EPOCH=5 run -0 "$IMGBUILD" -q build "$T/clone1/recipe.lua" -t localhost/dated:3
	created=$("$IMGBUILD" inspect localhost/dated:3 | json_get 'j["Config"]["created"]')
	[ "$created" = "1970-01-01T00:00:05Z" ]
	# outside a git work tree: 0
	mkdir "$T/plain" && cp "$T/repo/recipe.lua" "$T/repo/hello.txt" "$T/plain/"
	run -0 "$IMGBUILD" -q build "$T/plain/recipe.lua" -t localhost/dated:4
	created=$("$IMGBUILD" inspect localhost/dated:4 | json_get 'j["Config"]["created"]')
	[ "$created" = "1970-01-01T00:00:00Z" ]
}

@test "date: git is asked only when the context is in a work tree; a subdirectory of one still is" {
	need git
	git_repo "$T/repo"
	mkdir -p "$T/repo/sub" "$T/bin" "$T/plain"
	cp "$T/repo/recipe.lua" "$T/repo/hello.txt" "$T/repo/sub/"
	cp "$T/repo/recipe.lua" "$T/repo/hello.txt" "$T/plain/"
	# a git on PATH that records each call, then runs the real one
	real=$(command -v git)
	printf '#!/bin/sh\necho "$*" >>"%s/calls"\nexec "%s" "$@"\n' "$T" "$real" >"$T/bin/git"
	chmod +x "$T/bin/git"
	unset SOURCE_DATE_EPOCH GIT_DIR
	PATH="$T/bin:$PATH" run -0 "$IMGBUILD" -q build "$T/plain/recipe.lua" -t localhost/dated:5
	[ ! -e "$T/calls" ]
	PATH="$T/bin:$PATH" run -0 "$IMGBUILD" -q build "$T/repo/sub/recipe.lua" -t localhost/dated:6
	[ "$(wc -l <"$T/calls")" -eq 1 ]
	created=$("$IMGBUILD" inspect localhost/dated:6 | json_get 'j["Config"]["created"]')
	[ "$created" = "2023-11-14T22:13:20Z" ]
	# GIT_DIR names a repository from anywhere: git is asked
	GIT_DIR="$T/repo/.git" PATH="$T/bin:$PATH" run -0 "$IMGBUILD" -q build "$T/plain/recipe.lua" -t localhost/dated:7
	[ "$(wc -l <"$T/calls")" -eq 2 ]
	created=$("$IMGBUILD" inspect localhost/dated:7 | json_get 'j["Config"]["created"]')
	[ "$created" = "2023-11-14T22:13:20Z" ]
}

@test "run: a built image runs with its user, workdir, env and cmd; exit status passes through; nothing is kept" {
	cat >"$T/recipe.lua" <<'LUA'
stage("s", "localhost/busybox:latest")
run { "sh", "-c", "mkdir -p /work && chown 1000:1000 /work" }
env { GREETING = "hi" }
user "app"
workdir "/work"
cmd { "sh", "-c", "echo greeting=$GREETING uid=$(id -u) pwd=$(pwd); exit 3" }
LUA
	run -0 "$IMGBUILD" -q build "$T/recipe.lua" -t localhost/runme:1
	run -3 "$IMGBUILD" run localhost/runme:1
	[ "$output" = "greeting=hi uid=1000 pwd=/work" ]
	run -0 "$IMGBUILD" run -e GREETING=yo --network none localhost/runme:1 -- sh -c 'echo $GREETING; touch /work/x; ls /work'
	[ "${lines[0]}" = "yo" ]
	[ "${lines[1]}" = "x" ]
	# the file written by the last run is gone; a command's own status comes back
	run -0 "$IMGBUILD" run localhost/runme:1 ls -A /work
	[ "$output" = "" ]
	run -42 "$IMGBUILD" run localhost/runme:1 sh -c 'exit 42'
	run -127 "$IMGBUILD" run localhost/runme:1 /no/such/tool
	run -125 "$IMGBUILD" run localhost/no-such-image:1 true
	[[ "$output" == *"not found"* ]]
	# no run dir is left behind
	run ls "$IMGBUILD_ROOT/tmp"
	[[ "$output" != *run-* ]]
	# podman agrees on what the image does
	if command -v podman >/dev/null; then
		run -3 podrun localhost/runme:1
		[[ "$output" == *"greeting=hi uid=1000 pwd=/work"* ]]
	fi
}

@test "names: a short from name uses the one local image of that name; a localhost/ typo lists similar names, never connects" {
	run -0 "$IMGBUILD" tag localhost/busybox:latest localhost/debian:bookworm
	printf 'stage("s", "debian:bookworm")\nrun { "sh", "-c", "echo short-ok > /ok" }\n' >"$T/short.lua"
	run -0 "$IMGBUILD" build "$T/short.lua" -t localhost/short:1 --progress plain
	[[ "$output" == *"using the local localhost/debian:bookworm"* ]]
	run -0 "$IMGBUILD" run localhost/short:1 cat /ok
	[ "$output" = "short-ok" ]
	# the full docker.io name is not a short name: it is not taken from localhost/
	printf 'stage("s", "docker.io/library/debian:bookworm")\n' >"$T/full.lua"
	run -1 "$IMGBUILD" build "$T/full.lua" --pull never
	[[ "$output" != *"using the local"* ]]
	# a typo in a localhost/ name: no network, similar local names
	printf 'stage("s", "localhost/debain:bookworm")\n' >"$T/typo.lua"
	run -1 "$IMGBUILD" build "$T/typo.lua"
	[[ "$output" == *"not found locally; similar: localhost/debian:bookworm"* ]]
	[[ "$output" != *"connect"* ]]
	[ "${#lines[@]}" -eq 1 ]
	# two local images of one short name: ambiguous, say so
	run -0 "$IMGBUILD" tag localhost/busybox:latest quay.io/debian:bookworm
	run -1 "$IMGBUILD" build "$T/short.lua" --no-cache
	[[ "$output" == *"matches several local images"* ]]
	run -0 "$IMGBUILD" rmi quay.io/debian:bookworm localhost/debian:bookworm
}

@test "names: a base only podman has: the error says how to bring it over" {
	need podman skopeo
	mkdir -p "$T/ps" "$T/pr"
	printf '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n' "$T/ps" "$T/pr" >"$T/storage.conf"
	export CONTAINERS_STORAGE_CONF="$T/storage.conf"
	skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/busybox:latest" \
		"containers-storage:docker.io/library/onlyinpodman:1"
	run -0 podman image exists docker.io/library/onlyinpodman:1
	printf 'stage("s", "onlyinpodman:1")\n' >"$T/p.lua"
	run -1 "$IMGBUILD" build "$T/p.lua" --pull never
	[[ "$output" == *"podman has it: podman save onlyinpodman:1 | imgbuild load"* ]]
	# and that command brings it over
	podman save onlyinpodman:1 | "$IMGBUILD" load
	run -0 "$IMGBUILD" build "$T/p.lua" --pull never
	podman rmi -af >/dev/null 2>&1 || true
}

@test "history: stage names in COPY --from= and the exec form of ENTRYPOINT/CMD, as docker shows them" {
	cat >"$T/recipe.lua" <<'LUA'
local build = stage("build", "localhost/busybox:latest")
run { "sh", "-c", "echo hi > /hello" }
stage("final", "localhost/busybox:latest")
copy { from = build, "/hello", "/hello" }
entrypoint { "/bin/sh" }
cmd { "-c", "cat /hello" }
LUA
	run -0 "$IMGBUILD" -q build "$T/recipe.lua" -t localhost/hist:1
	run -0 "$IMGBUILD" history --no-trunc localhost/hist:1
	[[ "$output" == *"COPY --from=build /hello /hello"* ]]
	[[ "$output" == *'ENTRYPOINT ["/bin/sh"]'* ]]
	[[ "$output" == *'CMD ["-c" "cat /hello"]'* ]]
	if command -v podman >/dev/null; then
		skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/hist:1" \
			"containers-storage:[vfs@$SUITE_TMP/pstore+$SUITE_TMP/prun]localhost/hist:1" >/dev/null
		run -0 pod history --no-trunc --format '{{.CreatedBy}}' localhost/hist:1
		[[ "$output" == *"COPY --from=build /hello /hello"* ]]
		[[ "$output" == *'ENTRYPOINT ["/bin/sh"]'* ]]
	fi
}

@test "df: images, unique and shared blobs, step cache, cache mounts, temp; prune says what it removed and keeps cache mounts unless asked" {
	"$IMGBUILD" save -o "$T/bb.tar" localhost/busybox:latest
	export IMGBUILD_ROOT="$T/root"
	run -0 "$IMGBUILD" load -i "$T/bb.tar"
	cat >"$T/a.lua" <<'LUA'
stage("s", "localhost/busybox:latest")
run { "sh", "-c", "head -c 100000 /dev/zero > /var/cache/x/blob; echo a > /a", cache_mounts = { "/var/cache/x" } }
LUA
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "echo b > /b" }\n' >"$T/b.lua"
	run -0 "$IMGBUILD" -q build "$T/a.lua" -t localhost/a:1
	run -0 "$IMGBUILD" -q build "$T/b.lua" -t localhost/b:1
	run -0 "$IMGBUILD" df --json
	echo "$output" >"$T/df.json"
	df_get() { json_get "$1" <"$T/df.json"; }
	[ "$(df_get 'j["images"]["count"]')" = 3 ]
	# the busybox layers are shared by all three images, each run layer is unique
	[ "$(df_get 'j["images"]["shared"] > 1000000')" = True ]
	[ "$(df_get 'j["images"]["unique"] > 0')" = True ]
	[ "$(df_get 'j["step_cache"]["entries"] >= 2')" = True ]
	[ "$(df_get 'j["cache_mounts"]["count"]')" = 1 ]
	[ "$(df_get 'j["cache_mounts"]["size"]')" = 100000 ]
	[ "$(df_get 'j["unpacked_layers"]["count"] >= 2')" = True ]
	run -0 "$IMGBUILD" df -v
	[[ "$output" == *"Cache mounts"*"1"*"97.7KB"* || "$output" == *"Cache mounts"*"1"*"100"* ]]
	[[ "$output" == *"localhost/a:1"* ]]
	# a plain prune keeps the cache mounts (and says what it deleted)
	mkdir -p "$IMGBUILD_ROOT/tmp/leftover"
	run -0 "$IMGBUILD" prune
	[[ "$output" == *"Deleted 1 temporary entries"* ]]
	[[ "$output" != *"cache mounts"* ]]
	[ "$("$IMGBUILD" df --json | json_get 'j["cache_mounts"]["count"]')" = 1 ]
	run -0 "$IMGBUILD" prune --cache-mounts
	[[ "$output" == *"Deleted 1 cache mounts"* ]]
	[ "$("$IMGBUILD" df --json | json_get 'j["cache_mounts"]["count"]')" = 0 ]
	# --all drops the step cache and the cache mounts, and says so
	run -0 "$IMGBUILD" -q build "$T/a.lua" -t localhost/a:1 --no-cache
	run -0 "$IMGBUILD" prune --all
	[[ "$output" == *"step cache entries"* ]]
	[[ "$output" == *"Deleted 1 cache mounts"* ]]
	[ "$("$IMGBUILD" df --json | json_get 'j["step_cache"]["entries"]')" = 0 ]
}

# interrupt_build SIGNAL: start a build whose step sleeps, send SIGNAL once
# the step runs; sets status/output of the build.
interrupt_build() {
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "echo started; sleep 4321" }\n' >"$T/sleep.lua"
	"$IMGBUILD" build "$T/sleep.lua" --no-cache --progress plain >"$T/out" 2>&1 &
	local pid=$!
	for _ in $(seq 100); do
		grep -q started "$T/out" && break
		sleep 0.1
	done
	grep -q started "$T/out"
	ls "$IMGBUILD_ROOT/tmp" | grep -q '^run-'
	kill -s "$1" "$pid"
	status=0
	wait "$pid" || status=$?
	output=$(cat "$T/out")
}

@test "interrupt: SIGINT/SIGTERM during a run step kill it, remove its temp dirs, exit 130/143 with 'interrupted'" {
	interrupt_build INT
	[ "$status" -eq 130 ]
	[[ "$output" == *"imgbuild: error: interrupted"* ]]
	[[ "$output" != *"exited with status"* ]]
	! ls "$IMGBUILD_ROOT/tmp" | grep -q '^run-'
	! pgrep -f "sleep 4321"
	interrupt_build TERM
	[ "$status" -eq 143 ]
	[[ "$output" == *"imgbuild: error: interrupted"* ]]
	! ls "$IMGBUILD_ROOT/tmp" | grep -q '^run-'
	! pgrep -f "sleep 4321"
}

@test "--progress json: every event has an RFC 3339 time with milliseconds; finished steps their wall time" {
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "sleep 0.3" }\n' >"$T/j.lua"
	run --separate-stderr -0 "$IMGBUILD" build "$T/j.lua" --no-cache --progress json
	echo "$stderr" | python3 -c '
import json, re, sys
events = [json.loads(l) for l in sys.stdin if l.strip()]
assert events
for e in events:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]), e
ids = {e["id"] for e in events if e["event"] == "step" and "sleep" in e.get("label", "")}
done = [e for e in events if e["event"] == "step" and e["state"] == "done" and e["id"] in ids]
assert done and all(e["seconds"] >= 0.3 for e in done), done
'
}

@test "images: SIZE is the uncompressed content (as podman shows it); --format with fields, json, index, join" {
	cat >"$T/recipe.lua" <<'LUA'
stage("s", "localhost/busybox:latest")
run { "sh", "-c", "head -c 3000000 /dev/zero > /zeros" }
label { k = "v" }
cmd { "sh", "-c", "echo hi" }
LUA
	run -0 "$IMGBUILD" -q build "$T/recipe.lua" -t localhost/fmt:1
	run -0 "$IMGBUILD" images --format '{{.Repository}}|{{.Tag}}|{{.SizeBytes}}|{{.CompressedSizeBytes}}'
	line=$(grep '^localhost/fmt|1|' <<<"$output")
	IFS='|' read -r _ _ size csize <<<"$line"
	# three MB of zeros compress to almost nothing: SIZE is what unpacks
	[ "$size" -gt 3000000 ]
	[ "$csize" -lt 2000000 ]
	[ "$("$IMGBUILD" images --json | json_get '[i["size"] for i in j if i["reference"] == "localhost/fmt:1"][0]')" = "$size" ]
	if command -v podman >/dev/null; then
		skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/fmt:1" \
			"containers-storage:[vfs@$SUITE_TMP/pstore+$SUITE_TMP/prun]localhost/fmt:1" >/dev/null
		# podman adds its copies of the manifest and config (a few kB)
		psize=$(pod image inspect --format '{{.Size}}' localhost/fmt:1)
		[ "$psize" -ge "$size" ] && [ "$((psize - size))" -lt 65536 ]
	fi
	run -0 "$IMGBUILD" inspect --format '{{index .Config.Labels "k"}} {{join .Config.Cmd " "}} {{json .Config.Cmd}}' localhost/fmt:1
	[ "$output" = 'v sh -c echo hi ["sh","-c","echo hi"]' ]
	run -0 "$IMGBUILD" inspect -f '{{.Config.Env}} {{.Size}}' localhost/fmt:1
	[ "$output" = "[PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin] $size" ]
	id=$("$IMGBUILD" inspect localhost/fmt:1 | json_get 'j["ConfigDigest"]')
	[ "$("$IMGBUILD" inspect -f '{{.Id}}' localhost/fmt:1)" = "$id" ]
	run -2 "$IMGBUILD" inspect -f '{{nosuch .Id}}' localhost/fmt:1
	[[ "$output" == *'unknown function "nosuch"'* ]]
}

@test "diff: images in docker and OCI archives and OCI layout dirs against the store; the store is left as it was" {
	need skopeo
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "echo x > /added; rm /bin/ls" }\n' >"$T/d.lua"
	run -0 "$IMGBUILD" -q build "$T/d.lua" -t localhost/d:1
	"$IMGBUILD" save -o "$T/d-docker.tar" localhost/d:1
	"$IMGBUILD" save --format oci -o "$T/d-oci.tar" localhost/d:1
	skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/d:1" "oci:$T/layout:v1"
	"$IMGBUILD" rmi localhost/d:1
	before=$("$IMGBUILD" images --format '{{.Reference}}')
	want=$'A /added\nD /bin/ls'
	run -0 "$IMGBUILD" diff localhost/busybox:latest "docker-archive:$T/d-docker.tar"
	[ "$output" = "$want" ]
	run -0 "$IMGBUILD" diff localhost/busybox:latest "oci-archive:$T/d-oci.tar"
	[ "$output" = "$want" ]
	run -0 "$IMGBUILD" diff "oci:$T/layout:v1" localhost/busybox:latest
	[ "$output" = $'D /added\nA /bin/ls' ]
	run -0 "$IMGBUILD" diff "oci:$T/layout:v1" "docker-archive:$T/d-docker.tar"
	[ "$output" = "" ]
	run -1 "$IMGBUILD" diff "oci:$T/layout:nope" localhost/busybox:latest
	[[ "$output" == *"no image tagged nope"* ]]
	[ "$("$IMGBUILD" images --format '{{.Reference}}')" = "$before" ]
	! ls "$IMGBUILD_ROOT/tmp" | grep -q '^diff-'
}

@test "--debug: a build shows the build time's source, cache lookups, sandbox setup and timings" {
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "echo dbg > /dbg" }\n' >"$T/dbg.lua"
	run --separate-stderr -0 "$IMGBUILD" build "$T/dbg.lua" --no-cache --progress plain
	[[ "$stderr" != *"debug:"* ]]
	run --separate-stderr -0 "$IMGBUILD" --debug build "$T/dbg.lua" --progress plain
	[[ "$stderr" == *"debug: ["*"s] build time 0 (--source-date-epoch / SOURCE_DATE_EPOCH)"* ]]
	[[ "$stderr" == *"cache lookup sha256:"*": hit, layer sha256:"* ]]
	[[ "$stderr" == *"build done after "*"s: 0 steps run, 1 cached"* ]]
	run --separate-stderr -0 "$IMGBUILD" build "$T/dbg.lua" --no-cache --progress plain --debug
	[[ "$stderr" == *"sandbox: "*" lower dirs, upper "*"/tmp/run-"*", user root, workdir /, network default,"* ]]
	[[ "$stderr" == *"sandbox: exit status 0 after "* ]]
	[[ "$stderr" == *"build done after "*"s: 1 steps run, 0 cached"* ]]
}

@test "diff: a registry image (docker://NAME) is pulled into a temporary store, not the store" {
	need docker-registry skopeo
	testnet_up || skip "cannot create a test network namespace here"
	mkdir -p "$T/reg/data"
	printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s:5000\n  secret: s\n' \
		"$T/reg/data" "$TESTNET_IP" >"$T/reg/config.yml"
	testnet_exec docker-registry serve "$T/reg/config.yml" >"$T/reg/log" 2>&1 3>&- &
	for _ in $(seq 50); do
		curl -fsS "http://$TESTNET_IP:5000/v2/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	printf 'stage("s", "localhost/busybox:latest")\nrun { "sh", "-c", "echo r > /remote" }\n' >"$T/r.lua"
	run -0 "$IMGBUILD" -q build "$T/r.lua" -t localhost/r:1
	skopeo copy -q --dest-tls-verify=false "oci:$IMGBUILD_ROOT/oci:localhost/r:1" \
		"docker://$TESTNET_IP:5000/team/r:1"
	"$IMGBUILD" rmi localhost/r:1
	before=$("$IMGBUILD" images --format '{{.Reference}}')
	run -0 "$IMGBUILD" --tls-verify=false diff localhost/busybox:latest "docker://$TESTNET_IP:5000/team/r:1"
	[ "$output" = "A /remote" ]
	[ "$("$IMGBUILD" images --format '{{.Reference}}')" = "$before" ]
}

@test "prune --cache-mounts waits until no build is using them" {
	mkdir -p "$T/pw"
	cat >"$T/pw/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "echo kept > /c/f; sleep 3; cat /c/f", cache_mounts = { "/c" } }
LUA
	"$IMGBUILD" build "$T/pw/recipe.lua" --no-cache --progress plain >"$T/pw/log" 2>&1 &
	local bp=$!
	# the build holds the store; prune must wait for it, not pull the
	# mount out from under the running step
	for _ in $(seq 50); do grep -q "RUN" "$T/pw/log" && break; sleep 0.1; done
	run -0 "$IMGBUILD" prune --cache-mounts
	! kill -0 "$bp" 2>/dev/null
	wait "$bp"
	grep -q "kept" "$T/pw/log"
	[[ "$output" == *"cache mount"* ]]
}
