#!/usr/bin/env bats
# Recipes and the build engine: the real binary, checked with podman and umoci.

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
	cp -a "$REPO_ROOT/tests/fixtures/build/all" "$T/all"
}

@test "busybox base recipe builds and runs" {
	run podrun localhost/busybox:latest /bin/sh -c 'echo base-ok; id -un'
	[ "$status" -eq 0 ]
	[[ "$output" == *base-ok* ]]
	[[ "$output" == *root* ]]
}

@test "every recipe function: podman sees entrypoint, cmd, env, user, workdir, exit code" {
	run "$IMGBUILD" build "$T/all/recipe.lua" -t localhost/all:latest --build-arg MSG=from-arg --progress plain
	[ "$status" -eq 0 ]
	run podrun localhost/all:latest
	[ "$status" -eq 3 ]
	[[ "$output" == *"greeting=hi msg=from-arg uid=1000 gid=1000 pwd=/work args=arg1"* ]]
	run podrun localhost/all:latest other args
	[ "$status" -eq 3 ]
	[[ "$output" == *"args=other args"* ]]
}

@test "every recipe function: the config carries labels, ports, volumes, signal, healthcheck, annotations" {
	"$IMGBUILD" -q build "$T/all/recipe.lua" -t localhost/all:latest >/dev/null
	run "$IMGBUILD" inspect localhost/all:latest
	[ "$status" -eq 0 ]
	echo "$output" > "$T/inspect.json"
	python3 - "$T/inspect.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
c = j["Config"]["config"]
# labels of the base image are inherited, as docker does
assert c["Labels"]["org.example.a"] == "1" and c["Labels"]["org.example.b"] == "2", c["Labels"]
assert c["Labels"]["org.opencontainers.image.title"] == "busybox", c["Labels"]
assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"}, c["ExposedPorts"]
assert "/data" in c["Volumes"]
assert c["StopSignal"] == "SIGINT"
assert c["Healthcheck"]["Test"] == ["CMD", "true"]
assert c["Healthcheck"]["Interval"] == 10 * 10**9
assert c["Healthcheck"]["Retries"] == 2
assert c["Entrypoint"] == ["/usr/local/bin/script"] and c["Cmd"] == ["arg1"]
assert "GREETING=hi" in c["Env"] and "MSG=default-msg" in c["Env"]
assert not any(e.startswith("RUN_ONLY=") for e in c["Env"]), "run env leaked into config"
assert j["Manifest"]["annotations"]["org.example.note"] == "n"
assert j["Config"]["created"] == "1970-01-01T00:00:00Z"
PY
}

@test "every recipe function: umoci sees whiteouts, opaque dirs, links, fifo, setuid, long and UTF-8 names, modes and owners" {
	"$IMGBUILD" -q build "$T/all/recipe.lua" -t localhost/all:latest >/dev/null
	unpack_image localhost/all:latest "$T/bundle"
	R="$T/bundle/rootfs"
	[ ! -e "$R/etc/gone.txt" ]
	[ ! -e "$R/opaque/old.txt" ]
	[ ! -e "$R/opaque/sub" ]
	[ "$(cat "$R/opaque/new.txt")" = new ]
	[ "$(stat -c %i "$R/hl1")" = "$(stat -c %i "$R/hl2")" ]
	[ "$(readlink "$R/sym")" = /hl1 ]
	[ -p "$R/fifo" ]
	[ "$(stat -c %a "$R/suid")" = 4755 ]
	[ -e "$R/$(printf 'n%.0s' $(seq 1 200))" ]
	[ -e "$R/ünïcødé-файл" ]
	[ "$(stat -c %u:%g "$R/app/one.txt")" = 1000:1000 ]
	[ "$(stat -c %u:%g "$R/app/sub/two.txt")" = 1000:1000 ]
	[ "$(readlink "$R/app/link-to-one")" = one.txt ]
	[ "$(stat -c %a "$R/usr/local/bin/script")" = 755 ]
	[ "$(stat -c %u:%g "$R/usr/local/bin/script")" = 0:0 ]
	[ "$(cat "$R/data/keep.txt")" = keep ]
	[ ! -e "$R/data/skip1.txt" ]
	[ "$(cat "$R/copied-from-base")" = a ]
	[ "$(stat -c %u:%g "$R/home/app/named-owner")" = 1000:1000 ]
	[ "$(cat "$R/run-only.txt")" = from-run-env ]
	[ "$(cat "$R/shell.txt")" = shell-form ]
	# a directory replaced by a file, and a file by a directory
	[ -f "$R/swap1" ] && [ "$(cat "$R/swap1")" = now-a-file ]
	[ -d "$R/swap2" ] && [ "$(cat "$R/swap2/child")" = child ]
	# mount points of the sandbox never land in a layer
	[ ! -e "$R/etc/resolv.conf" ] || [ -s "$R/etc/resolv.conf" ] || false
}

@test "layers hold OCI whiteout and opaque markers" {
	"$IMGBUILD" -q build "$T/all/recipe.lua" -t localhost/all:latest >/dev/null
	"$IMGBUILD" inspect localhost/all:latest > "$T/inspect.json"
	found=$(python3 - "$T/inspect.json" "$IMGBUILD_ROOT" <<'PY'
import json, sys, tarfile
j = json.load(open(sys.argv[1]))
names = []
for l in j["Manifest"]["layers"]:
    h = l["digest"].split(":")[1]
    with tarfile.open(f"{sys.argv[2]}/oci/blobs/sha256/{h}") as t:
        names += t.getnames()
print("\n".join(names))
PY
)
	echo "$found" | grep -qx 'etc/.wh.gone.txt'
	echo "$found" | grep -qx 'opaque/.wh..wh..opq'
	! echo "$found" | grep -q 'resolv.conf' || false
	! echo "$found" | grep -q '^etc/hosts$' || false
}

@test "same recipe, two fresh stores, two context paths: same digest" {
	mkdir -p "$T/a/deep/er" "$T/b"
	cp -a "$REPO_ROOT/tests/fixtures/build/all" "$T/a/deep/er/ctx"
	cp -a "$REPO_ROOT/tests/fixtures/build/all" "$T/b/ctx"
	touch -d '2001-01-01' "$T/b/ctx/files/one.txt"
	for s in a b; do
		IMGBUILD_ROOT="$T/root-$s" "$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" --context /bin -t localhost/busybox:latest >/dev/null
	done
	d1=$(IMGBUILD_ROOT="$T/root-a" "$IMGBUILD" -q build "$T/a/deep/er/ctx/recipe.lua")
	d2=$(IMGBUILD_ROOT="$T/root-b" "$IMGBUILD" -q build "$T/b/ctx/recipe.lua")
	echo "$d1 $d2"
	[[ "$d1" == sha256:* ]]
	[ "$d1" = "$d2" ]
}

@test "a fully cached rebuild runs no step" {
	"$IMGBUILD" -q build "$T/all/recipe.lua" >/dev/null
	run "$IMGBUILD" build "$T/all/recipe.lua" --progress plain --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[[ "$output" == *CACHED* ]]
	[[ "$output" != *DONE* ]]
	grep -q '"steps.run": 0' "$T/meta.json"
}

@test "changing one copied file re-runs only the steps from that copy on" {
	"$IMGBUILD" -q build "$T/all/recipe.lua" >/dev/null
	echo changed > "$T/all/files/sub/two.txt"
	run "$IMGBUILD" build "$T/all/recipe.lua" --progress plain --explain
	[ "$status" -eq 0 ]
	echo "$output"
	# base stage run: cached; final: copy files/ and everything after re-runs
	[[ "$output" == *"[base 1/1] RUN"*CACHED* ]]
	[[ "$output" == *"files/sub/two.txt changed"* ]]
	[ "$(echo "$output" | grep -c ' CACHED$')" -eq 1 ]
	[ "$(echo "$output" | grep -c ' DONE ')" -eq 7 ]
}

@test "--no-cache rebuild gives the same digest" {
	d1=$("$IMGBUILD" -q build "$T/all/recipe.lua")
	d2=$("$IMGBUILD" -q build "$T/all/recipe.lua" --no-cache)
	[ "$d1" = "$d2" ]
	run "$IMGBUILD" build "$T/all/recipe.lua" --check --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" == *reproducible* ]]
}

@test "a run step sees the same copied tree whether the copy layer was written directly or unpacked from its blob" {
	mkdir -p "$T/mat/ctx/d/e"
	echo a > "$T/mat/ctx/d/a"
	ln "$T/mat/ctx/d/a" "$T/mat/ctx/d/e/hard"
	ln -s ../a "$T/mat/ctx/d/e/sym"
	chmod 4750 "$T/mat/ctx/d/a"
	cat > "$T/mat/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "d/", "/opt/x/", owner = "7:8" }
copy { "d/a", "/opt/y/a", mode = "0600" }
run { "/bin/sh", "-c", "cd /opt && find . | sort | while read f; do stat -c '%n %A %u:%g %h %Y' \"$f\"; done; readlink x/e/sym", cache = false }
LUA
	# preserve: the setuid bit of the context file reaches the layer
	run "$IMGBUILD" build "$T/mat/ctx/recipe.lua" --progress plain --context-modes=preserve
	[ "$status" -eq 0 ]
	direct=$(echo "$output" | grep '^#3 ' | grep -v -e RUN -e DONE)
	# drop every unpacked layer: the cached copy layers now come from their blobs
	rm -rf "$IMGBUILD_ROOT/layers"
	run "$IMGBUILD" build "$T/mat/ctx/recipe.lua" --progress plain --context-modes=preserve
	[[ "$output" == *"COPY d/a /opt/y/a CACHED"* ]]
	[ "$status" -eq 0 ]
	unpacked=$(echo "$output" | grep '^#3 ' | grep -v -e RUN -e DONE)
	echo "direct:"; echo "$direct"; echo "unpacked:"; echo "$unpacked"
	[ -n "$direct" ]
	[ "$direct" = "$unpacked" ]
	[[ "$direct" == *"./x/a -rwsr-x--- 7:8 2 0"* ]]
	[[ "$direct" == *"./y/a -rw------- 0:0 1 0"* ]]
	[[ "$direct" == *"./y drwxr-xr-x 0:0 2 0"* ]]
}

@test "after one file changes, the next run sees new and unchanged files right (unchanged ones shared between layers)" {
	mkdir -p "$T/re/ctx/d"
	for i in 1 2 3; do echo "v1-$i" > "$T/re/ctx/d/f$i"; done
	cat > "$T/re/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "d/", "/d/" }
run "cat /d/f1 /d/f2 /d/f3 | tr '\n' ' '"
LUA
	run "$IMGBUILD" build "$T/re/ctx/recipe.lua" --progress plain
	[[ "$output" == *"#2 v1-1 v1-2 v1-3"* ]]
	echo "v2-2" > "$T/re/ctx/d/f2"
	run "$IMGBUILD" build "$T/re/ctx/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" == *"#2 v1-1 v2-2 v1-3"* ]]
	# the two copy layers share the unchanged files' inodes
	n=$(find "$IMGBUILD_ROOT/layers" -path '*/d/f1' -links 2 | wc -l)
	[ "$n" -eq 2 ]
}

@test "the build timestamp is part of every step's cache key" {
	d0=$("$IMGBUILD" -q build "$T/all/recipe.lua" --source-date-epoch 0)
	run "$IMGBUILD" build "$T/all/recipe.lua" --source-date-epoch 1700000000 --progress plain --metadata-file "$T/m.json"
	[ "$status" -eq 0 ]
	d1=$(echo "$output" | tail -1)
	[ "$d0" != "$d1" ]
	! grep -q '"steps.cached": [1-9]' "$T/m.json" || false
	"$IMGBUILD" inspect "$d1" | grep -q '"created": "2023-11-14T22:13:20Z"'
}

@test "secrets are readable by their step only, and never land in a layer, the config or the history" {
	mkdir -p "$T/sec"
	echo "s3cr3t-value" > "$T/sec/token"
	cat > "$T/sec/recipe.lua" <<LUA
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "cat /run/secrets/tok | tr a-z A-Z > /upper.txt; ls /run/secrets", secrets = { { id = "tok", src = "$T/sec/token" } }, cache_mounts = { "/var/cache/x" } }
run "test ! -e /run/secrets/tok && echo gone-in-next-step; ls /var/cache/x | wc -l"
LUA
	run "$IMGBUILD" build "$T/sec/recipe.lua" -t localhost/sec:1 --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"gone-in-next-step"* ]]
	unpack_image localhost/sec:1 "$T/secb"
	[ "$(cat "$T/secb/rootfs/upper.txt")" = "S3CR3T-VALUE" ]
	[ ! -e "$T/secb/rootfs/run/secrets/tok" ]
	# the value is nowhere in the store's blobs (layers, config, manifest)
	! grep -rqa "s3cr3t-value" "$IMGBUILD_ROOT/oci/blobs" || false
	for b in "$IMGBUILD_ROOT"/oci/blobs/sha256/*; do
		if gzip -t "$b" 2>/dev/null; then ! zcat "$b" | grep -qa "s3cr3t-value" || false; fi
	done
	! grep -rqa "s3cr3t-value" "$IMGBUILD_ROOT/cache" || false
}

@test "--progress json: one JSON event per line, stdout only the digest" {
	run --separate-stderr "$IMGBUILD" build "$T/all/recipe.lua" --no-cache --progress json
	[ "$status" -eq 0 ]
	[[ "$output" == sha256:* ]]
	[ "$(echo "$output" | wc -l)" -eq 1 ]
	echo "$stderr" | python3 -c '
import json, sys
events = [json.loads(l) for l in sys.stdin if l.strip()]
states = {(e["id"], e["state"]) for e in events if e["event"] == "step"}
assert any(s == "running" for _, s in states) and any(s == "done" for _, s in states), states
assert all("event" in e for e in events)
'
}

@test "--check names the layer and file that differ when a step is not reproducible" {
	mkdir -p "$T/nr"
	cat > "$T/nr/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "echo stable > /stable.txt"
run "cat /proc/sys/kernel/random/uuid > /random.txt"
LUA
	run "$IMGBUILD" build "$T/nr/recipe.lua" --check --progress plain
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"layer "*": random.txt: content"* ]]
	last=$(echo "$output" | tail -1)
	[[ "$last" == "imgbuild: error: not reproducible: 1 difference" ]]
}

@test "two builds at once in one store both succeed and leave a store verify accepts" {
	cp -a "$REPO_ROOT/tests/fixtures/build/all" "$T/par"
	echo "parallel" > "$T/par/files/par.txt"
	"$IMGBUILD" -q build "$T/par/recipe.lua" --no-cache -t localhost/par:a > "$T/a.out" 2> "$T/a.err" &
	pa=$!
	"$IMGBUILD" -q build "$T/par/recipe.lua" --no-cache -t localhost/par:b > "$T/b.out" 2> "$T/b.err" &
	pb=$!
	wait $pa
	wait $pb
	cat "$T/a.err" "$T/b.err"
	[ "$(cat "$T/a.out")" = "$(cat "$T/b.out")" ]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
	run "$IMGBUILD" images
	[[ "$output" == *"localhost/par"*"a"* ]]
	[[ "$output" == *"localhost/par"*"b"* ]]
}

@test "kill -9 in the middle of a build leaves a store verify accepts, and the retry succeeds" {
	# a store of its own: the killed build leaves temp files behind
	export IMGBUILD_ROOT="$T/killroot"
	"$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" --context /bin -t localhost/busybox:latest >/dev/null
	mkdir -p "$T/kill"
	head -c 300M /dev/urandom > "$T/kill/big.bin"
	cat > "$T/kill/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "big.bin", "/big.bin" }
run "wc -c < /big.bin"
LUA
	"$IMGBUILD" -q build "$T/kill/recipe.lua" -t localhost/killed:1 >/dev/null 2>&1 &
	pid=$!
	sleep 0.5
	kill -9 "$pid"
	wait "$pid" || true
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
	run "$IMGBUILD" images
	[[ "$output" != *killed* ]]
	run "$IMGBUILD" build "$T/kill/recipe.lua" -t localhost/killed:1 --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" == *"#2 314572800"* ]]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
	# prune clears what the killed build left in the store's tmp
	"$IMGBUILD" prune >/dev/null
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
}

@test "copy from a stage never follows the stage's absolute symlinks to host files" {
	mkdir -p "$T/esc"
	echo host-only > "$SUITE_TMP/host-marker-esc"
	cat > "$T/esc/recipe.lua" <<LUA
local s = stage("s", "localhost/busybox:latest")
run "ln -s $SUITE_TMP /evil"
stage("f", "scratch")
copy { from = s, "/evil/host-marker-esc", "/leak" }
LUA
	run "$IMGBUILD" build "$T/esc/recipe.lua" --progress plain -t localhost/esc:1
	echo "$output"
	[ "$status" -eq 1 ]
	last=$(echo "$output" | tail -1)
	[[ "$last" == "imgbuild: error: $T/esc/recipe.lua:4: copy: source \"evil/host-marker-esc\" is outside the source image"* ]]
	run "$IMGBUILD" images
	[[ "$output" != *"localhost/esc"* ]]
}

@test "copy globs match what the recipe matched: dot files, '**', never '.' or '..'" {
	mkdir -p "$T/gl/ctx/s/x/y"
	echo outside > "$T/gl/outside-secret.txt"
	touch "$T/gl/ctx/.env" "$T/gl/ctx/s/a.c" "$T/gl/ctx/s/x/b.c" "$T/gl/ctx/s/x/y/c.c"
	cat > "$T/gl/ctx/recipe.lua" <<'LUA'
from "scratch"
copy { ".*", "/dots/" }
copy { "s/**/*.c", "/c/" }
LUA
	run "$IMGBUILD" build "$T/gl/ctx/recipe.lua" -t localhost/glob:1
	[ "$status" -eq 0 ]
	unpack_image localhost/glob:1 "$T/glb"
	[ "$(ls -A "$T/glb/rootfs/dots")" = ".env" ]
	[ "$(ls "$T/glb/rootfs/c" | tr '\n' ' ')" = "a.c b.c c.c " ]
}

@test "a symlink and a directory of the same name in one copy never lead the copy out of the store" {
	mkdir -p "$T/sx/ctx/d1" "$T/sx/ctx/d2/x" "$T/sx/victim"
	chmod 700 "$T/sx/victim"
	echo hi > "$T/sx/ctx/d2/x/evil"
	ln -s "$T/sx/victim" "$T/sx/ctx/d1/x"
	cat > "$T/sx/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "d1", "d2", "/dst/" }
run "ls -la /dst/x/ | grep -c evil"
LUA
	run "$IMGBUILD" build "$T/sx/ctx/recipe.lua" --progress plain -t localhost/sx:1
	[ "$status" -eq 0 ]
	[ -z "$(ls -A "$T/sx/victim")" ]
	[ "$(stat -c %a "$T/sx/victim")" = 700 ]
	# the run step saw the same tree as the layer: x is a directory with evil
	[[ "$output" == *"#2 1"* ]]
}

@test "owner names are read from the image, never through a symlink to the host" {
	mkdir -p "$T/on/ctx" "$T/on/hostetc"
	printf 'secretuser:x:4242:4343::/:/bin/sh\n' > "$T/on/hostetc/passwd"
	ln -s "$T/on/hostetc" "$T/on/ctx/etc"
	echo ok > "$T/on/ctx/f"
	cat > "$T/on/ctx/recipe.lua" <<'LUA'
from "scratch"
copy { "etc", "/etc" }
copy { "f", "/f", owner = "secretuser" }
LUA
	run "$IMGBUILD" build "$T/on/ctx/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *'recipe.lua:3: copy: no user "secretuser"'* ]]
}

@test "xattrs and hardlinks of copied files are part of the cache key" {
	mkdir -p "$T/xa/ctx/d"
	echo a > "$T/xa/ctx/d/a"
	echo a > "$T/xa/ctx/d/b"
	printf 'from "scratch"\ncopy { "d", "/d/" }\n' > "$T/xa/ctx/recipe.lua"
	d1=$("$IMGBUILD" -q build "$T/xa/ctx/recipe.lua")
	python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.note", b"hello")' "$T/xa/ctx/d/a"
	d2=$("$IMGBUILD" -q build "$T/xa/ctx/recipe.lua")
	d3=$("$IMGBUILD" -q build "$T/xa/ctx/recipe.lua" --no-cache)
	[ "$d1" != "$d2" ]
	[ "$d2" = "$d3" ]
	rm "$T/xa/ctx/d/b"
	ln "$T/xa/ctx/d/a" "$T/xa/ctx/d/b"
	d4=$("$IMGBUILD" -q build "$T/xa/ctx/recipe.lua")
	d5=$("$IMGBUILD" -q build "$T/xa/ctx/recipe.lua" --no-cache)
	[ "$d4" != "$d3" ]
	[ "$d4" = "$d5" ]
}

@test "a recipe cannot make a secret of a host file outside the context; --secret can" {
	mkdir -p "$T/hs/ctx"
	echo "host-secret" > "$T/hs/outside.txt"
	cat > "$T/hs/ctx/recipe.lua" <<LUA
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "wc -c < /run/secrets/s", secrets = { { id = "s", src = "$T/hs/outside.txt" } } }
LUA
	run "$IMGBUILD" build "$T/hs/ctx/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *"recipe.lua:2: run: secret \"s\": $T/hs/outside.txt is outside the build context; pass it with --secret id=s,src=PATH"* ]]
	run "$IMGBUILD" build "$T/hs/ctx/recipe.lua" --progress plain --secret "id=s,src=$T/hs/outside.txt"
	[ "$status" -eq 0 ]
	[[ "$output" == *"#1 12"* ]]
}

@test "a recipe secret is resolved in the context like a copy source: no absolute symlink, no '..' out" {
	mkdir -p "$T/sr/ctx/sub"
	echo "tok" > "$T/sr/ctx/token"
	ln -s "$T/sr/ctx/token" "$T/sr/ctx/abs-link"
	ln -s ../token "$T/sr/ctx/sub/rel-link"
	for src in sub/rel-link "$T/sr/ctx/sub/../token"; do
		printf 'from "localhost/busybox:latest"\nrun { "/bin/sh", "-c", "cat /run/secrets/s", secrets = { { id = "s", src = "%s" } } }\n' "$src" > "$T/sr/ctx/recipe.lua"
		run "$IMGBUILD" build "$T/sr/ctx/recipe.lua" --progress plain --no-cache
		echo "$output"
		[ "$status" -eq 0 ]
		[[ "$output" == *"#1 tok"* ]]
	done
	for src in abs-link sub/../../ctx/token; do
		printf 'from "localhost/busybox:latest"\nrun { "/bin/sh", "-c", "cat /run/secrets/s", secrets = { { id = "s", src = "%s" } } }\n' "$src" > "$T/sr/ctx/recipe.lua"
		run "$IMGBUILD" build "$T/sr/ctx/recipe.lua" --progress plain --no-cache
		echo "$output"
		[ "$status" -eq 1 ]
		[[ "$output" == *"run: secret \"s\": $src is outside the build context"* ]]
	done
}

@test "copy destinations and owner names see the image as overlayfs does: deleted and opaque dirs hide lower layers" {
	mkdir -p "$T/ov/ctx"
	echo x > "$T/ov/ctx/x"
	cat > "$T/ov/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "mkdir -p /d /e /etc && ln -s /etc /d/link && ln -s /etc /e/link && echo 'alice:x:4242:4343::/:/bin/sh' > /etc/passwd.real && ln -sf passwd.real /etc/passwd"
run "rm -rf /d /e && mkdir /e"
copy { "x", "/d/link/", owner = "alice" }
copy { "x", "/e/link/" }
run "test -f /d/link/x && test -f /e/link/x && test ! -e /etc/x && stat -c owner=%u:%g /d/link/x"
LUA
	run "$IMGBUILD" build "$T/ov/ctx/recipe.lua" --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"owner=4242:4343"* ]]
}

@test "copy destinations follow the image's symlinks and keep its existing directories' metadata" {
	mkdir -p "$T/usr/ctx/d"
	echo x > "$T/usr/ctx/x"
	echo y > "$T/usr/ctx/d/y"
	cat > "$T/usr/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "mkdir -p /usr/lib2 && ln -s usr/lib2 /lib2 && ln -s /usr/lib2 /abs2 && mkdir -m 0750 /keep && chown 7:8 /keep"
copy { "x", "/tmp/x" }
copy { "x", "/lib2/x" }
copy { "d/", "/abs2/" }
copy { "x", "/keep/x" }
copy { "d/", "/newdir/", owner = "5:6" }
run "stat -c '%n %A %u:%g' /tmp /lib2 /usr/lib2/x /usr/lib2/y /keep /newdir /newdir/y | tr '\n' ';'"
LUA
	run "$IMGBUILD" build "$T/usr/ctx/recipe.lua" --progress plain -t localhost/usr:1
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"/tmp drwxrwxrwt 0:0;"* ]]
	[[ "$output" == *"/lib2 lrwxrwxrwx 0:0;"* ]]
	[[ "$output" == *"/usr/lib2/x -rw-r--r-- 0:0;"* ]]
	[[ "$output" == *"/usr/lib2/y -rw-r--r-- 0:0;"* ]]
	[[ "$output" == *"/keep drwxr-x--- 7:8;"* ]]
	[[ "$output" == *"/newdir drwxr-xr-x 5:6;/newdir/y -rw-r--r-- 5:6;"* ]]
	# the image itself, read by umoci, agrees
	unpack_image localhost/usr:1 "$T/usrb"
	[ -L "$T/usrb/rootfs/lib2" ]
	[ "$(stat -c %a "$T/usrb/rootfs/tmp")" = 1777 ]
	[ "$(cat "$T/usrb/rootfs/usr/lib2/y")" = y ]
}

@test "a failing run reports file:line, status and output; earlier steps stay cached" {
	mkdir -p "$T/fail"
	cat > "$T/fail/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "echo first > /first"
run "echo about to fail; echo on-stderr >&2; exit 7"
LUA
	run "$IMGBUILD" build "$T/fail/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *"about to fail"* ]]
	[[ "$output" == *"on-stderr"* ]]
	last=$(echo "$output" | tail -1)
	[[ "$last" == "imgbuild: error: $T/fail/recipe.lua:3: run: command exited with status 7"* ]]
	run "$IMGBUILD" build "$T/fail/recipe.lua" --progress plain
	[[ "$output" == *"RUN /bin/sh -c echo first > /first CACHED"* ]]
}

@test "a run step cannot see or reach host paths" {
	mkdir -p "$T/iso"
	echo secret > "$SUITE_TMP/host-marker"
	cat > "$T/iso/recipe.lua" <<LUA
from "localhost/busybox:latest"
run { "/bin/sh", "-c", [[
for f in /proc/self/fd/*; do echo "fd \$f -> \$(readlink \$f)"; done
ls /proc/1/root/ | tr '\n' ' '; echo
cd /../../../..; echo "pwd-after-dotdot=\$(pwd) \$(ls | tr '\n' ' ')"
test ! -e "$SUITE_TMP/host-marker" && echo no-host-marker
test ! -e "/proc/1/root$SUITE_TMP/host-marker" && echo no-host-marker-via-proc
echo pid1=\$(cat /proc/1/comm)
]] }
LUA
	run "$IMGBUILD" build "$T/iso/recipe.lua" --progress plain --no-cache
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *no-host-marker* ]]
	[[ "$output" == *no-host-marker-via-proc* ]]
	[[ "$output" == *"pwd-after-dotdot=/ "* ]]
	# only stdin/stdout/stderr (and the fd ls itself opens) are open
	fds=$(echo "$output" | grep -c ' fd /proc/self/fd/' || true)
	[ "$fds" -le 4 ]
	! echo "$output" | grep ' fd /proc/self/fd/' | grep -q "$SUITE_TMP" || false
	! echo "$output" | grep -q 'pid1=systemd' || false
}

@test "network none leaves only loopback" {
	mkdir -p "$T/net"
	cat > "$T/net/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,; echo", network = "none" }
LUA
	run "$IMGBUILD" build "$T/net/recipe.lua" --progress plain --no-cache
	[ "$status" -eq 0 ]
	[[ "$output" == *"#1 lo,"* ]]
}

@test "multi-stage example builds, only the final stage ships" {
	run "$IMGBUILD" build "$REPO_ROOT/examples/website/recipe.lua" -t localhost/website:latest --build-arg TITLE=Tested
	[ "$status" -eq 0 ]
	# the read-only views used by copy-from-stage are gone, on the host too
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	! grep -q "$IMGBUILD_ROOT" /proc/self/mountinfo || false
	unpack_image localhost/website:latest "$T/web"
	grep -q Tested "$T/web/rootfs/var/www/index.html"
	[ ! -e "$T/web/rootfs/src" ]
	run "$IMGBUILD" build "$REPO_ROOT/examples/website/recipe.lua" --target build -t localhost/website-build:latest
	[ "$status" -eq 0 ]
	unpack_image localhost/website-build:latest "$T/webb"
	[ -d "$T/webb/rootfs/src" ]
}

@test "the hello example runs" {
	"$IMGBUILD" -q build "$REPO_ROOT/examples/hello/recipe.lua" -t localhost/hello:latest >/dev/null
	run podrun localhost/hello:latest tester
	[ "$status" -eq 0 ]
	[[ "$output" == *"hello, tester!"* ]]
	[[ "$output" == *"uid 1000, in /home/app"* ]]
}

@test "broken recipes stop before any step with FILE:LINE" {
	n=0
	for f in "$REPO_ROOT"/tests/fixtures/recipes/broken/*.lua; do
		expect=$(head -1 "$f" | sed -n 's/^-- expect: \([0-9]*\): \(.*\)$/\1|\2/p')
		[ -n "$expect" ] || continue
		line=${expect%%|*}
		sub=${expect#*|}
		run "$IMGBUILD" build "$f" --progress plain
		echo "$f -> $output"
		[ "$status" -eq 1 ]
		# one error line, last, and no step ran
		[ "$(echo "$output" | grep -c 'imgbuild: error:')" -eq 1 ]
		last=$(echo "$output" | tail -1)
		[[ "$last" == "imgbuild: error: $f:$line: "* ]]
		[[ "$last" == *"$sub"* ]]
		[[ "$output" != *"#1 "* ]]
		n=$((n + 1))
	done
	[ "$n" -ge 15 ]
}

@test "timeout kills a long run step" {
	mkdir -p "$T/to"
	cat > "$T/to/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "sleep 100", timeout = 1 }
LUA
	run "$IMGBUILD" build "$T/to/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *"recipe.lua:2:"* ]]
	[[ "$output" == *"timed out"* ]]
}

@test "zstd compression builds a valid image" {
	run "$IMGBUILD" build "$T/all/recipe.lua" --compression zstd -t localhost/allz:latest
	[ "$status" -eq 0 ]
	"$IMGBUILD" inspect localhost/allz:latest | grep -q 'tar+zstd'
	# umoci 0.4 cannot read zstd layers; podman can
	run podrun localhost/allz:latest
	[ "$status" -eq 3 ]
	[[ "$output" == *"greeting=hi"* ]]
}

@test "build usage errors exit 2, missing recipe exits 1" {
	run "$IMGBUILD" build
	[ "$status" -eq 2 ]
	run "$IMGBUILD" build "$T/nope.lua"
	[ "$status" -eq 1 ]
	[[ "$output" == "imgbuild: error: "* ]]
	run "$IMGBUILD" build "$T/all/recipe.lua" --pull sometimes
	[ "$status" -eq 2 ]
	run "$IMGBUILD" build "$T/all/recipe.lua" --bogus
	[ "$status" -eq 2 ]
	[ "$output" = "imgbuild: error: unknown option or missing value: --bogus (see 'imgbuild build --help')" ]
	run "$IMGBUILD" plan "$T/all/recipe.lua" --target
	[ "$status" -eq 2 ]
	[ "$(echo "$output" | wc -l)" -eq 1 ]
	run "$IMGBUILD" build "$T/all/recipe.lua" -t 'UPPER/Case'
	[ "$status" -eq 2 ]
}

@test "identical no-op run steps stack the same layer twice: run and copy-from-stage still work" {
	mkdir -p "$T/noop"
	cat > "$T/noop/recipe.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run { "true" }
run { "true" }
run { "true" }
run "echo ok > /ok"
from "localhost/busybox:latest"
copy { "/ok", "/ok", from = "a" }
run "cat /ok"
LUA
	run "$IMGBUILD" build "$T/noop/recipe.lua" --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" != *"Too many levels"* ]]
	[[ "$output" == *"#6 ok"* ]]
}

@test "100,000 env steps build in linear time" {
	mkdir -p "$T/many"
	cat > "$T/many/recipe.lua" <<'LUA'
from "scratch"
for i = 1, 100000 do env { ["V" .. i] = tostring(i) } end
env { V1 = "again" }
LUA
	run timeout 60 "$IMGBUILD" -q build "$T/many/recipe.lua" -t localhost/many:1
	[ "$status" -eq 0 ]
	# read the config from the layout: it is larger than inspect reads
	python3 - "$IMGBUILD_ROOT/oci" "$output" <<'PY'
import json, sys
blob = lambda d: open(sys.argv[1] + "/blobs/sha256/" + d.split(":")[1], "rb").read()
env = json.loads(blob(json.loads(blob(sys.argv[2]))["config"]["digest"]))["config"]["Env"]
# scratch starts with docker's default PATH
assert len(env) == 100001, len(env)
assert env[0].startswith("PATH=") and env[1] == "V1=again" and env[-1] == "V100000=100000", (env[1], env[-1])
PY
}

@test "a change to a kept xattr larger than 4 KiB changes the copy step's key" {
	mkdir -p "$T/bx/ctx"
	mount -t tmpfs tmpfs "$T/bx/ctx" || skip "cannot mount a tmpfs"
	echo a > "$T/bx/ctx/f"
	printf 'from "scratch"\ncopy { "f", "/f" }\n' > "$T/bx/ctx/recipe.lua"
	setx() { python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.big", b"x" * 5999 + sys.argv[2].encode())' "$T/bx/ctx/f" "$1"; }
	setx 1
	d1=$("$IMGBUILD" -q build "$T/bx/ctx/recipe.lua" || true)
	setx 2
	d2=$("$IMGBUILD" -q build "$T/bx/ctx/recipe.lua" || true)
	d3=$("$IMGBUILD" -q build "$T/bx/ctx/recipe.lua" --no-cache || true)
	umount "$T/bx/ctx"
	[ -n "$d1" ] && [ -n "$d2" ]
	[ "$d1" != "$d2" ]
	[ "$d2" = "$d3" ]
}

@test "a run timeout beyond what the sandbox can hold is refused, not truncated to 1 s" {
	mkdir -p "$T/tb"
	cat > "$T/tb/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run { "/bin/sh", "-c", "sleep 2; echo slept", timeout = 4294967297 }
LUA
	run "$IMGBUILD" build "$T/tb/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *"recipe.lua:2: run: option 'timeout' must be a whole number of seconds from 0 to 4294967295"* ]]
	[[ "$output" != *"timed out"* ]]
	sed -i 's/4294967297/4294967295/' "$T/tb/recipe.lua"
	run "$IMGBUILD" build "$T/tb/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" == *"slept"* ]]
}

@test "gzip layers: same digest with 1 and 4 compression threads; gzip, tar, umoci and podman read the members" {
	mkdir -p "$T/gz"
	# ~6 MB of text: several 1 MiB gzip members in one layer
	seq 1 800000 >"$T/gz/numbers.txt"
	printf 'from "localhost/busybox:latest"\ncopy { "numbers.txt", "/numbers.txt" }\ncmd { "/bin/sh", "-c", "wc -l < /numbers.txt" }\n' >"$T/gz/recipe.lua"
	d1=$(IMGBUILD_COMPRESS_THREADS=1 "$IMGBUILD" -q build "$T/gz/recipe.lua" --no-cache -t localhost/gz:1)
	d4=$(IMGBUILD_COMPRESS_THREADS=4 "$IMGBUILD" -q build "$T/gz/recipe.lua" --no-cache -t localhost/gz:4)
	[ -n "$d1" ]
	[ "$d1" = "$d4" ]
	# the cache key holds the effective level: the default is level 6, and
	# level 1 is another layer
	run "$IMGBUILD" build "$T/gz/recipe.lua" --compression-level 6 --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" == *"COPY"*CACHED* ]]
	[ "$(echo "$output" | tail -1)" = "$d1" ]
	d_l1=$("$IMGBUILD" -q build "$T/gz/recipe.lua" --compression-level 1)
	[ "$d_l1" != "$d1" ]
	layer=$("$IMGBUILD" inspect localhost/gz:1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Manifest"]["layers"][-1]["digest"].split(":")[1])')
	blob="$IMGBUILD_ROOT/oci/blobs/sha256/$layer"
	gzip -t "$blob"
	[ "$(tar tzf "$blob")" = numbers.txt ]
	python3 -c 'import sys, tarfile; sys.exit(tarfile.open(sys.argv[1], "r:gz").extractfile("numbers.txt").read() != open(sys.argv[2], "rb").read())' "$blob" "$T/gz/numbers.txt"
	unpack_image localhost/gz:1 "$T/bundle"
	cmp "$T/gz/numbers.txt" "$T/bundle/rootfs/numbers.txt"
	run podrun localhost/gz:1
	[ "$status" -eq 0 ]
	[[ "$output" == *800000* ]]
	# a bad value is an error, not a silent fallback
	run env IMGBUILD_COMPRESS_THREADS=zero "$IMGBUILD" build "$T/gz/recipe.lua" --no-cache
	[ "$status" -eq 1 ]
	[[ "$output" == *IMGBUILD_COMPRESS_THREADS* ]]
}

@test "context copies: checkouts under umask 022, 077 and 000 give one image, from the cache; --context-modes=preserve keeps 0600" {
	for u in 022 077 000; do
		(
			umask $u
			mkdir -p "$T/um$u/ctx/bin/sub"
			echo conf >"$T/um$u/ctx/app.conf"
			printf '#!/bin/sh\necho tool\n' >"$T/um$u/ctx/bin/tool"
			chmod u+x "$T/um$u/ctx/bin/tool"
		)
		cat >"$T/um$u/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "app.conf", "/etc/app.conf" }
copy { "bin/", "/opt/bin/" }
run "stat -c '%n %a' /etc/app.conf /opt/bin/sub /opt/bin/tool > /modes"
LUA
	done
	[ "$(stat -c %a "$T/um077/ctx/app.conf")" = 600 ]
	[ "$(stat -c %a "$T/um000/ctx/app.conf")" = 666 ]
	d022=$("$IMGBUILD" -q build "$T/um022/ctx/recipe.lua" -t localhost/um:022)
	for u in 077 000; do
		run --separate-stderr "$IMGBUILD" build "$T/um$u/ctx/recipe.lua" -t "localhost/um:$u" \
			--metadata-file "$T/meta.json"
		[ "$status" -eq 0 ]
		[ "${output##*$'\n'}" = "$d022" ]
		python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m["steps.run"] != 0)' "$T/meta.json"
	done
	unpack_image localhost/um:000 "$T/b000"
	[ "$(cat "$T/b000/rootfs/modes")" = "$(printf '/etc/app.conf 644\n/opt/bin/sub 755\n/opt/bin/tool 755')" ]
	[ "$(stat -c %a "$T/b000/rootfs/etc/app.conf")" = 644 ]
	# docker's behaviour on request: the checkout's modes, another image
	dp=$("$IMGBUILD" -q build "$T/um077/ctx/recipe.lua" -t localhost/um:preserve --context-modes=preserve)
	[ "$dp" != "$d022" ]
	unpack_image localhost/um:preserve "$T/bp"
	[ "$(cat "$T/bp/rootfs/modes")" = "$(printf '/etc/app.conf 600\n/opt/bin/sub 700\n/opt/bin/tool 700')" ]
	run "$IMGBUILD" build "$T/um077/ctx/recipe.lua" --context-modes=keep
	[ "$status" -ne 0 ]
	[[ "$output" == *"--context-modes must be normalize or preserve"* ]]
}

# A recipe of two stages: copies and runs whose layers are compressed while
# the next step runs, a stage built on another, and a copy from a stage.
bg_recipe() {
	mkdir -p "$T/bg"
	seq 1 400000 >"$T/bg/numbers.txt"
	cat >"$T/bg/recipe.lua" <<'LUA'
stage("base", "localhost/busybox:latest")
copy { "numbers.txt", "/numbers.txt" }
run "seq 1 300000 > /more.txt"
stage("next", "base")
run "wc -l /numbers.txt /more.txt > /counts"
stage("final", "localhost/busybox:latest")
copy { from = "next", "/counts", "/counts" }
run "cat /counts > /again"
LUA
}

@test "background compression: the digest equals the one built with it off, and is 1/4-thread independent" {
	# on also in sanitizer builds, where it is off by default
	export IMGBUILD_COMPRESS_BACKGROUND=1
	bg_recipe
	run --separate-stderr "$IMGBUILD" --debug build "$T/bg/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" != *CACHED* ]]
	d_bg=$(echo "$output" | tail -1)
	# the layers were compressed in the background (and reported as done),
	# but the last one, compressed as it is written: no step follows
	[ "$(echo "$stderr" | grep -c 'compressed: sha256:')" -eq 4 ]
	run --separate-stderr env IMGBUILD_COMPRESS_BACKGROUND=0 "$IMGBUILD" --debug build "$T/bg/recipe.lua" --no-cache --progress plain
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | tail -1)" = "$d_bg" ]
	[[ "$stderr" != *"compressed: sha256:"* ]]
	d1=$(IMGBUILD_COMPRESS_THREADS=1 "$IMGBUILD" -q build "$T/bg/recipe.lua" --no-cache -t localhost/bg:1)
	d4=$(IMGBUILD_COMPRESS_THREADS=4 "$IMGBUILD" -q build "$T/bg/recipe.lua" --no-cache)
	[ "$d1" = "$d_bg" ]
	[ "$d4" = "$d_bg" ]
	# every step's cache entry was written once its layer was done
	run "$IMGBUILD" build "$T/bg/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | grep -c CACHED)" -eq 5 ]
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
	run podrun localhost/bg:1 cat /again
	[ "$status" -eq 0 ]
	[[ "$output" == *"400000 /numbers.txt"* ]]
	[[ "$output" == *"300000 /more.txt"* ]]
}

@test "background compression: a failing later step still leaves the earlier steps' cache entries" {
	# on also in sanitizer builds, where it is off by default
	export IMGBUILD_COMPRESS_BACKGROUND=1
	mkdir -p "$T/bgf"
	head -c 20M /dev/urandom >"$T/bgf/big.bin"
	printf 'from "localhost/busybox:latest"\ncopy { "big.bin", "/big.bin" }\nrun "seq 1 100000 > /n"\nrun "exit 7"\n' >"$T/bgf/recipe.lua"
	run "$IMGBUILD" build "$T/bgf/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$(echo "$output" | tail -1)" == "imgbuild: error: $T/bgf/recipe.lua:4: run: command exited with status 7"* ]]
	run "$IMGBUILD" build "$T/bgf/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	[[ "$output" == *"COPY big.bin /big.bin CACHED"* ]]
	[[ "$output" == *"seq 1 100000 > /n CACHED"* ]]
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
}

@test "background compression: SIGINT while a layer is compressed leaves no temp files and a store verify accepts" {
	# on also in sanitizer builds, where it is off by default
	export IMGBUILD_COMPRESS_BACKGROUND=1
	export IMGBUILD_ROOT="$T/introot"
	"$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" --context /bin -t localhost/busybox:latest >/dev/null
	mkdir -p "$T/bgi"
	head -c 150M /dev/urandom >"$T/bgi/big.bin"
	printf 'from "localhost/busybox:latest"\ncopy { "big.bin", "/big.bin" }\nrun { "sh", "-c", "echo started; sleep 4321" }\n' >"$T/bgi/recipe.lua"
	"$IMGBUILD" --debug build "$T/bgi/recipe.lua" --progress plain >"$T/out" 2>&1 &
	pid=$!
	for _ in $(seq 300); do
		grep -q started "$T/out" && break
		sleep 0.1
	done
	grep -q started "$T/out"
	# the copy's layer is still being compressed
	! grep -q 'compressed: sha256:' "$T/out"
	kill -s INT "$pid"
	status=0
	wait "$pid" || status=$?
	[ "$status" -eq 130 ]
	! pgrep -f "sleep 4321"
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
}

@test "background compression: a layer that cannot be stored is its step's error (FILE:LINE), and the step gets no cache entry" {
	# on also in sanitizer builds, where it is off by default
	export IMGBUILD_COMPRESS_BACKGROUND=1
	need chattr
	export IMGBUILD_ROOT="$T/failroot"
	"$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" --context /bin -t localhost/busybox:latest >/dev/null
	mkdir -p "$T/bgs"
	echo one >"$T/bgs/x"
	# the copy's layer is compressed in the background (a step follows); the
	# last step's layer is the same whatever x holds
	printf 'from "localhost/busybox:latest"\ncopy { "x", "/x" }\nrun "echo fixed > /fixed"\n' >"$T/bgs/recipe.lua"
	"$IMGBUILD" -q build "$T/bgs/recipe.lua" >/dev/null
	echo two >"$T/bgs/x"
	blobs="$IMGBUILD_ROOT/oci/blobs/sha256"
	chattr +i "$blobs" || skip "no immutable directories here"
	run "$IMGBUILD" build "$T/bgs/recipe.lua" --progress plain
	chattr -i "$blobs"
	[ "$status" -eq 1 ]
	[[ "$(echo "$output" | tail -1)" == "imgbuild: error: $T/bgs/recipe.lua:2: "*"store layer blob"* ]]
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	# the copy step has no entry: it runs again (the run step after it,
	# compressed at once, has its own)
	run "$IMGBUILD" build "$T/bgs/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	[[ "$output" != *"COPY x /x CACHED"* ]]
	[[ "$output" == *"COPY x /x"* ]]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
}

@test "a context walked by several threads gives the key and the image of a walk by one" {
	[ "$(nproc)" -ge 2 ] || skip "needs 2 CPUs"
	c="$T/tree/ctx"
	for d in $(seq 1 12); do
		mkdir -p "$c/src/d$d/sub"
		for f in $(seq 1 15); do echo "$d $f" >"$c/src/d$d/f$f"; done
		echo x >"$c/src/d$d/sub/y"
		ln -s f1 "$c/src/d$d/link"
	done
	mkdir -p "$c/src/gen/keep"
	echo k >"$c/src/gen/keep/k"
	echo g >"$c/src/gen/g"
	echo top >"$c/src/top"
	printf 'src/gen\n!src/gen/keep\n' >"$c/.dockerignore"
	printf 'from "scratch"\ncopy { "src/", "/src/" }\n' >"$c/recipe.lua"
	one=$(IMGBUILD_ROOT="$T/tree/r1" taskset -c 0 "$IMGBUILD" -q build "$c/recipe.lua" --no-cache)
	many=$(IMGBUILD_ROOT="$T/tree/r2" "$IMGBUILD" -q build "$c/recipe.lua" --no-cache)
	[ -n "$one" ] && [ "$one" = "$many" ]
	# the same key: a walk by one thread finds what several stored
	run env IMGBUILD_ROOT="$T/tree/r2" taskset -c 0 "$IMGBUILD" build "$c/recipe.lua" --debug
	[ "$status" -eq 0 ]
	[[ "$output" == *"cache lookup sha256:"*": hit"* ]]
	# the ignored directory's exception is in, the rest of it is not
	IMGBUILD_ROOT="$T/tree/r2" "$IMGBUILD" -q build "$c/recipe.lua" -t localhost/tree:1 >/dev/null
	IMGBUILD_ROOT="$T/tree/r2" unpack_image localhost/tree:1 "$T/tree/u"
	[ -f "$T/tree/u/rootfs/src/gen/keep/k" ] && [ ! -e "$T/tree/u/rootfs/src/gen/g" ]
	[ "$(cat "$T/tree/u/rootfs/src/d7/f9")" = "7 9" ] && [ -L "$T/tree/u/rootfs/src/d12/link" ]
}
