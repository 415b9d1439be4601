#!/usr/bin/env bats
# The step cache shared through a registry (--cache-from / --cache-to):
# two stores ("runners") share one cache repository of a real
# docker-registry, plain and TLS + htpasswd.

bats_require_minimum_version 1.5.0

load helpers/registry
load helpers/build

setup_file() {
	[ "$(id -u)" = 0 ] || skip "needs root"
	local missing
	if missing=$(reg_missing_tool); then
		skip "needs $missing"
	fi
	build_setup_file
	reg_start_open OPEN
	reg_start_basic BASIC alice wonderland
	# runner B's store has the same base image (built the same way)
	IMGBUILD_ROOT="$SUITE_TMP/rootB" "$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" \
		--context /bin -t localhost/busybox:latest >/dev/null
}

teardown_file() {
	reg_stop_all
	build_teardown_file
}

setup() {
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
	mkdir -p "$T/ctx"
	echo "one" >"$T/ctx/a.txt"
	echo "two" >"$T/ctx/b.txt"
	cat >"$T/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
run "echo base > /base.txt"
copy { "a.txt", "/a.txt" }
run "cat /a.txt > /a.copy"
copy { "b.txt", "/b.txt" }
LUA
	# runner B: another store, a copy of the context with other mtimes,
	# modes from another umask and another path
	mkdir -p "$T/other/place"
	cp -r "$T/ctx" "$T/other/place/ctx"
	touch -d "2001-02-03 04:05:06" "$T/other/place/ctx/"*
	chown -R 1234:1234 "$T/other/place/ctx"
	CACHE="127.0.0.1:$OPEN_PORT/ci/cache"
}

# A ARGS... / B ARGS...: imgbuild with runner A's / B's store
A() { IMGBUILD_ROOT="$SUITE_TMP/root" "$IMGBUILD" "$@"; }
B() { IMGBUILD_ROOT="$SUITE_TMP/rootB-$BATS_TEST_NUMBER" "$IMGBUILD" "$@"; }

# fresh_b: runner B with an empty store but the base image
fresh_b() {
	rm -rf "$SUITE_TMP/rootB-$BATS_TEST_NUMBER"
	cp -a "$SUITE_TMP/rootB" "$SUITE_TMP/rootB-$BATS_TEST_NUMBER"
}

# steps FILE: "run cached" of a --metadata-file
steps() {
	python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["steps.run"], m["steps.cached"])' "$1"
}

# reg_blob PORT_NAME DIGEST: the file of a blob in a test registry's storage
reg_blob() {
	local hex=${2#sha256:}
	echo "$REG_TMP/$1/data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
}

@test "runner B hits every step from the registry: one request after auth, no step run" {
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc1 --cache-to "$CACHE"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	[[ "$stderr" == *"cache-to $CACHE:index: 4 of 4 steps written"* ]]
	fresh_b
	run --separate-stderr bash -c 'umask 077; cd "$1" && shift && "$@"' _ "$T/other/place" \
		env IMGBUILD_ROOT="$SUITE_TMP/rootB-$BATS_TEST_NUMBER" "$IMGBUILD" --debug build \
		ctx/recipe.lua -t localhost/rc1 --cache-from "$CACHE" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 4" ]
	# hits decided by the index alone: no per-key request, no tag listing
	[ "$(grep -c 'debug: > GET .*/v2/ci/cache/manifests/' <<<"$stderr")" -eq 1 ]
	[[ "$stderr" != *"tags/list"* ]]
	# the image is whole in B's store
	run B verify
	[ "$status" -eq 0 ]
}

@test "one copied file changed: B runs only that copy and the steps after it" {
	A -q build "$T/ctx/recipe.lua" -t localhost/rc2 --cache-to "$CACHE"
	fresh_b
	echo "changed" >"$T/other/place/ctx/a.txt"
	echo "changed" >"$T/ctx/a.txt"
	want=$(A -q build "$T/ctx/recipe.lua" -t localhost/rc2-local)
	run --separate-stderr B --debug build "$T/other/place/ctx/recipe.lua" -t localhost/rc2 \
		--cache-from "$CACHE" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	# run base: hit; copy a, run cat, copy b: run (their keys chain from a.txt)
	[ "$(steps "$T/meta.json")" = "3 1" ]
	# misses: the index plus one tag listing, never one request per step
	[ "$(grep -c 'debug: > GET .*/manifests/' <<<"$stderr")" -eq 1 ]
	[ "$(grep -c 'debug: > GET .*/tags/list' <<<"$stderr")" -eq 1 ]
}

@test "--explain on runner B names the input that differs from the registry's record" {
	A -q build "$T/ctx/recipe.lua" -t localhost/rc11 --cache-to "127.0.0.1:$OPEN_PORT/ci/explain"
	fresh_b
	echo "changed" >"$T/other/place/ctx/a.txt"
	run --separate-stderr B build "$T/other/place/ctx/recipe.lua" -t localhost/rc11 \
		--cache-from "127.0.0.1:$OPEN_PORT/ci/explain" --explain --progress plain
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"#2 cache miss: a.txt changed (compared with the build recorded in 127.0.0.1:$OPEN_PORT/ci/explain)"* ]]
	[[ "$stderr" == *"#3 cache miss: an earlier step was rebuilt"* ]]
}

@test "--push after a fully cached build downloads zero layer bytes: the cache's blobs are mounted" {
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc12 --cache-to "$CACHE"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	fresh_b
	ref="127.0.0.1:$OPEN_PORT/team/app:c"
	run --separate-stderr B --debug build "$T/other/place/ctx/recipe.lua" -t "$ref" --push \
		--cache-from "$CACHE" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 4" ]
	[ "$(grep -c 'debug: > GET .*/blobs/sha256:' <<<"$stderr")" -eq 0 ]
	[ "$(grep -c 'debug: > POST .*/v2/team/app/blobs/uploads/?mount=.*&from=ci%2Fcache' <<<"$stderr")" -ge 4 ]
	[ "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")" = "$digest_a" ]
	# tagged in B's store too, its layers still in the cache registry
	run B images --format '{{.Reference}} {{.Digest}}'
	[ "$status" -eq 0 ]
	[[ "$output" == *"$ref $digest_a"* ]]
}

@test "re-exporting an unchanged cache uploads nothing" {
	A -q build "$T/ctx/recipe.lua" -t localhost/rc3 --cache-to "$CACHE"
	run --separate-stderr A --debug build "$T/ctx/recipe.lua" -t localhost/rc3 --cache-to "$CACHE"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"0 of 4 steps written"* ]]
	[[ "$stderr" != *"debug: > PUT"* ]]
	[[ "$stderr" != *"debug: > POST"* ]]
	[[ "$stderr" != *"debug: > HEAD"* ]]
}

@test "two writers to one cache reference at once both find their entries" {
	mkdir -p "$T/w1" "$T/w2"
	for w in w1 w2; do
		echo "$w" >"$T/$w/f.txt"
		cat >"$T/$w/recipe.lua" <<LUA
from "localhost/busybox:latest"
copy { "f.txt", "/f.txt" }
run "cat /f.txt > /$w.txt"
run "echo $w >> /$w.txt"
LUA
	done
	ref="127.0.0.1:$OPEN_PORT/ci/shared:main"
	rm -rf "$SUITE_TMP/rootW"
	cp -a "$SUITE_TMP/rootB" "$SUITE_TMP/rootW"
	A build "$T/w1/recipe.lua" -t localhost/w --cache-to "$ref" >"$T/w1.out" 2>&1 &
	p1=$!
	IMGBUILD_ROOT="$SUITE_TMP/rootW" "$IMGBUILD" build "$T/w2/recipe.lua" -t localhost/w \
		--cache-to "$ref" >"$T/w2.out" 2>&1 &
	p2=$!
	wait $p1
	wait $p2
	cat "$T/w1.out" "$T/w2.out"
	for w in w1 w2; do
		fresh_b
		run --separate-stderr B build "$T/$w/recipe.lua" -t localhost/w --cache-from "$ref" \
			--metadata-file "$T/meta.json"
		[ "$status" -eq 0 ]
		[ "$(steps "$T/meta.json")" = "0 3" ]
	done
}

@test "a cache registry that is down is one warning and a normal build" {
	want=$(A -q build "$T/ctx/recipe.lua" -t localhost/rc5 --no-cache)
	fresh_b
	port=$(reg_free_port)
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/rc5 \
		--cache-from "127.0.0.1:$port/ci/cache" --cache-to "127.0.0.1:$port/ci/cache"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	[ "$(grep -c '^warning: cache-from' <<<"$stderr")" -eq 1 ]
	[ "$(grep -c '^warning: cache-to' <<<"$stderr")" -eq 1 ]
}

@test "a cache registry stopped mid-build: a warning and the same image as without cache" {
	reg_start_open MID
	ref="127.0.0.1:$MID_PORT/ci/cache"
	# B decides every hit from the index, then the registry goes away
	# during the first step, before B fetches the layers it needs
	sed -i '1a run { "sleep", "2", cache = false }' "$T/ctx/recipe.lua"
	# a last step that runs needs every layer (a build that runs none
	# downloads none: the layers stay in the registry, fetched on use)
	echo 'run { "cat", "/b.txt", cache = false }' >>"$T/ctx/recipe.lua"
	A -q build "$T/ctx/recipe.lua" -t localhost/rc6 --cache-to "$ref"
	want=$(A -q build "$T/ctx/recipe.lua" -t localhost/rc6 --no-cache)
	fresh_b
	B build "$T/ctx/recipe.lua" -t localhost/rc6 --cache-from "$ref" >"$T/out" 2>"$T/err" &
	pid=$!
	sleep 1
	kill "$(cat "$REG_TMP/MID/pid")"
	wait "$pid"
	cat "$T/err"
	[ "$(tail -1 "$T/out")" = "$want" ]
	# the hits were decided, then a layer could not be fetched
	grep -q 'CACHED' "$T/err"
	grep -q '^warning: cache .*layer' "$T/err"
	grep -q 'building again' "$T/err"
}

@test "a tampered cache blob is a miss: the step runs and the image is right" {
	reg_start_open TAMPER
	ref="127.0.0.1:$TAMPER_PORT/ci/cache"
	# a last step that runs: the build downloads the layers it runs on
	echo 'run { "cat", "/b.txt", cache = false }' >>"$T/ctx/recipe.lua"
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc7 --cache-to "$ref"
	[ "$status" -eq 0 ]
	want=${output##*$'\n'}
	# the layer of copy b.txt: flip its bytes in the registry's storage
	layer=$(A inspect localhost/rc7 |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"][-2]["digest"])')
	[ -n "$layer" ]
	f=$(reg_blob TAMPER "$layer")
	[ -f "$f" ]
	size=$(stat -c %s "$f")
	head -c "$size" /dev/urandom >"$f"
	fresh_b
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/rc7 --cache-from "$ref" \
		--metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	[[ "$stderr" == *"warning: cache"* ]]
	[ "$(steps "$T/meta.json")" = "2 3" ]
}

@test "skopeo lists and copies the cache artifacts" {
	A -q build "$T/ctx/recipe.lua" -t localhost/rc8 --cache-to "$CACHE"
	run skopeo list-tags --tls-verify=false "docker://$CACHE"
	[ "$status" -eq 0 ]
	[[ "$output" == *'"index"'* ]]
	tag=$(grep -o 'sha256-[0-9a-f]*' <<<"$output" | head -1)
	[ -n "$tag" ]
	run skopeo copy -q --src-tls-verify=false "docker://$CACHE:$tag" "oci:$T/oci:rec"
	[ "$status" -eq 0 ]
	run skopeo inspect --raw "oci:$T/oci:rec"
	[[ "$output" == *"application/vnd.imgbuild.cache.step.v1+json"* ]]
}

@test "TLS + htpasswd: the cache uses the credentials and CA of pulls" {
	export SSL_CERT_FILE=$REG_CA
	export REGISTRY_AUTH_FILE="$T/auth.json"
	ref="127.0.0.1:$BASIC_PORT/ci/cache"
	# without credentials: a warning, a build
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc9 --cache-to "$ref"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"warning: cache-to"* ]]
	A login -u alice --password-stdin "127.0.0.1:$BASIC_PORT" <<<"wonderland"
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc9 --cache-to "$ref"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	[[ "$stderr" == *"4 of 4 steps written"* ]]
	fresh_b
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/rc9 \
		--cache-from "type=registry,ref=$ref" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 4" ]
}

@test "IMGBUILD_CACHE_FROM/TO and mode=max export every stage" {
	cat >"$T/ctx/multi.lua" <<'LUA'
stage("builder", "localhost/busybox:latest")
run "echo built > /out.txt"
stage("final", "localhost/busybox:latest")
copy { from = "builder", "/out.txt", "/out.txt" }
LUA
	ref="127.0.0.1:$OPEN_PORT/ci/multi"
	run --separate-stderr env IMGBUILD_CACHE_TO="$ref" "$IMGBUILD" build "$T/ctx/multi.lua" \
		-t localhost/rc10
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"1 of 1 steps written"* ]]
	run --separate-stderr A build "$T/ctx/multi.lua" -t localhost/rc10 --cache-to "$ref,mode=max"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"1 of 2 steps written"* ]]
	fresh_b
	run --separate-stderr env IMGBUILD_CACHE_FROM="$ref" \
		IMGBUILD_ROOT="$SUITE_TMP/rootB-$BATS_TEST_NUMBER" "$IMGBUILD" build \
		"$T/ctx/multi.lua" -t localhost/rc10 --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "$(steps "$T/meta.json")" = "0 2" ]
}

@test "a cache mount shared through the registry starts the next runner warm" {
	cat >"$T/ctx/mount.lua" <<'LUA'
from "localhost/busybox:latest"
run { "sh", "-c", "if test -f /cache/warm; then echo warm > /state; else echo cold > /state; echo x > /cache/warm; fi",
      cache_mounts = { { "/cache", share = "registry" } }, cache = false }
LUA
	ref="127.0.0.1:$OPEN_PORT/ci/mounts"
	rm -rf "$SUITE_TMP/rootM"
	cp -a "$SUITE_TMP/rootB" "$SUITE_TMP/rootM"
	run --separate-stderr env IMGBUILD_ROOT="$SUITE_TMP/rootM" "$IMGBUILD" build \
		"$T/ctx/mount.lua" -t localhost/rc13 --cache-to "$ref"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"cache mount /cache written"* ]]
	# unchanged content: not written again
	run --separate-stderr env IMGBUILD_ROOT="$SUITE_TMP/rootM" "$IMGBUILD" build \
		"$T/ctx/mount.lua" -t localhost/rc13 --cache-to "$ref"
	[ "$status" -eq 0 ]
	[[ "$stderr" != *"cache mount /cache written"* ]]
	fresh_b
	run --separate-stderr B build "$T/ctx/mount.lua" -t localhost/rc13 --cache-from "$ref"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"cache mount /cache: imported from $ref:index"* ]]
	umoci unpack --image "$SUITE_TMP/rootB-$BATS_TEST_NUMBER/oci:localhost/rc13:latest" "$T/unpacked" >/dev/null
	[ "$(cat "$T/unpacked/rootfs/state")" = "warm" ]
	# without the shared cache, a fresh runner starts cold
	fresh_b
	B -q build "$T/ctx/mount.lua" -t localhost/rc13
	umoci unpack --image "$SUITE_TMP/rootB-$BATS_TEST_NUMBER/oci:localhost/rc13:latest" "$T/unpacked2" >/dev/null
	[ "$(cat "$T/unpacked2/rootfs/state")" = "cold" ]
}

@test "a cache mount entry with another share is refused" {
	cat >"$T/ctx/bad.lua" <<'LUA'
from "localhost/busybox:latest"
run { "true", cache_mounts = { { "/cache", share = "everyone" } } }
LUA
	run --separate-stderr A plan "$T/ctx/bad.lua"
	[ "$status" -ne 0 ]
	[[ "$stderr" == *"option 'share' must be \"registry\""* ]]
	cat >"$T/ctx/good.lua" <<'LUA'
from "localhost/busybox:latest"
run { "true", cache_mounts = { "/a", { "/b/", share = "registry" } } }
LUA
	run --separate-stderr A plan "$T/ctx/good.lua"
	[ "$status" -eq 0 ]
	python3 -c 'import json,sys; s=json.load(sys.stdin)["stages"][0]["steps"][0]; assert s["cache_mounts"][0]=="/a" and s["cache_mounts"][1]["target"]=="/b", s; assert s["shared_mounts"]==["/b"], s' <<<"$output"
}

@test "a cache registry that accepts connections but never answers: a warning after a bounded wait" {
	python3 -c 'import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    conns.append(s.accept()[0])' >"$T/port" 3>&- &
	pid=$!
	for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
	want=$(A -q build "$T/ctx/recipe.lua" -t localhost/rc14)
	fresh_b
	start=$(date +%s)
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/rc14 \
		--cache-from "127.0.0.1:$(cat "$T/port")/ci/cache"
	end=$(date +%s)
	kill "$pid"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	[ "$(grep -c '^warning: cache-from' <<<"$stderr")" -eq 1 ]
	[ $((end - start)) -lt 45 ]
}

@test "an index entry whose diff_id does not match its layer is a miss" {
	reg_start_open LIAR
	ref="127.0.0.1:$LIAR_PORT/ci/cache"
	# a last step that runs: the build downloads the layers it runs on
	echo 'run { "cat", "/b.txt", cache = false }' >>"$T/ctx/recipe.lua"
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/rc15 --cache-to "$ref"
	[ "$status" -eq 0 ]
	want=${output##*$'\n'}
	# a writer that lies: copy b.txt's entry gets another diff_id
	layer=$(A inspect localhost/rc15 |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"][-2]["digest"])')
	mt=application/vnd.oci.image.index.v1+json
	curl -sf -H "Accept: $mt" "http://127.0.0.1:$LIAR_PORT/v2/ci/cache/manifests/index" \
		>"$T/index.json"
	python3 - "$T/index.json" "$layer" <<'PY'
import json, sys
path, layer = sys.argv[1], sys.argv[2]
ix = json.load(open(path))
for m in ix["manifests"]:
    a = m["annotations"]
    if a["org.imgbuild.cache.layer.digest"] == layer:
        a["org.imgbuild.cache.diff_id"] = "sha256:" + "0" * 64
json.dump(ix, open(path, "w"))
PY
	curl -sf -X PUT -H "Content-Type: $mt" --data-binary @"$T/index.json" \
		"http://127.0.0.1:$LIAR_PORT/v2/ci/cache/manifests/index"
	fresh_b
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/rc15 --cache-from "$ref" \
		--metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	[[ "$stderr" == *"the record says"* ]]
	[ "$(steps "$T/meta.json")" = "2 3" ]
	run B verify
	[ "$status" -eq 0 ]
}

# checkout UMASK DIR: the context of the setup, written under UMASK
checkout() {
	(
		umask "$1"
		mkdir -p "$2"
		echo "one" >"$2/a.txt"
		echo "two" >"$2/b.txt"
		cp "$T/ctx/recipe.lua" "$2/recipe.lua"
	)
}

@test "runners whose checkouts had umask 022, 077 and 000 share the cache entries" {
	checkout 022 "$T/u022"
	checkout 077 "$T/u077"
	checkout 000 "$T/u000"
	[ "$(stat -c %a "$T/u077/a.txt")" = 600 ]
	[ "$(stat -c %a "$T/u000/a.txt")" = 666 ]
	ref="127.0.0.1:$OPEN_PORT/ci/umask"
	run --separate-stderr A build "$T/u022/recipe.lua" -t localhost/rc20 --cache-to "$ref"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	for u in 077 000; do
		fresh_b
		run --separate-stderr B build "$T/u$u/recipe.lua" -t localhost/rc20 --cache-from "$ref" \
			--metadata-file "$T/meta.json"
		[ "$status" -eq 0 ]
		[ "${output##*$'\n'}" = "$digest_a" ]
		[ "$(steps "$T/meta.json")" = "0 4" ]
	done
}

@test "every step key, copy from a stage included, is computed before the first request to the cache registry; that copy's hit fetches nothing" {
	cat >"$T/ctx/multi.lua" <<'LUA'
stage("build", "localhost/busybox:latest")
run "echo built > /out.txt"
copy { "a.txt", "/a.txt" }
stage("final", "localhost/busybox:latest")
copy { "/out.txt", "/out.txt", from = "build" }
copy { "b.txt", "/b.txt" }
run "cat /out.txt /b.txt > /both.txt"
LUA
	cp "$T/ctx/multi.lua" "$T/other/place/ctx/multi.lua"
	ref="127.0.0.1:$OPEN_PORT/ci/keys"
	run --separate-stderr A build "$T/ctx/multi.lua" -t localhost/rc21 --cache-to "$ref,mode=max"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	fresh_b
	run --separate-stderr B --debug build "$T/other/place/ctx/multi.lua" -t localhost/rc21 \
		--cache-from "$ref" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 5" ]
	keys=$(grep -n 'cache keys: 5 computed before contacting the cache registry' <<<"$stderr" | cut -d: -f1)
	first=$(grep -n "debug: > [A-Z]* http[s]*://127.0.0.1:$OPEN_PORT/" <<<"$stderr" | head -1 | cut -d: -f1)
	[ -n "$keys" ] && [ -n "$first" ]
	[ "$keys" -lt "$first" ]
	# every hit decided by the index: one request after auth
	[[ "$stderr" == *"cache-from $ref:index: 5 of 5 keys found; requests after auth: 1"* ]]
	[[ "$stderr" != *"tags/list"* ]]
	[[ "$stderr" != *"differ from the key pass"* ]]
	# the hit of the copy from "build" needs none of build's layers, and
	# the final image is tagged with its layers left in the registry
	[ "$(grep -c 'debug: > GET .*/blobs/sha256:' <<<"$stderr")" -eq 0 ]
}

# lazy_b NAME: runner A exports the cache, fresh runner B builds NAME from
# it with every step cached; $digest_a is the image
lazy_b() {
	run --separate-stderr A build "$T/ctx/recipe.lua" -t "localhost/$1" --cache-to "$CACHE"
	[ "$status" -eq 0 ]
	digest_a=${output##*$'\n'}
	fresh_b
	run --separate-stderr B --debug build "$T/other/place/ctx/recipe.lua" -t "localhost/$1" \
		--cache-from "$CACHE" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 4" ]
}

@test "lazy: a fully cached build without --push is tagged locally and downloads no layer byte" {
	lazy_b lz1
	[ "$(grep -c 'debug: > GET .*/blobs/sha256:' <<<"$stderr")" -eq 0 ]
	[[ "$stderr" == *"4 layers left in the cache registry"* ]]
	run B images --format '{{.Reference}} {{.Digest}} {{.Size}} {{.CompressedSize}}'
	[ "$status" -eq 0 ]
	[[ "$output" == *"localhost/lz1:latest $digest_a N/A "[0-9]* ]]
	run B inspect --format '{{json .Size}} {{.CompressedSize}}' localhost/lz1
	[ "$status" -eq 0 ]
	[[ "$output" == "null "[1-9]* ]]
	# not downloaded is not corrupt
	run B verify
	[ "$status" -eq 0 ]
	[ "$(grep -c '^remote: sha256:.* (not downloaded; in '"$CACHE"')$' <<<"$output")" -eq 4 ]
	[[ "$output" == *"store OK: "*", 4 layers remote (not downloaded)" ]]
	run B df --json
	[ "$status" -eq 0 ]
	[ "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["remote_layers"]["count"])' <<<"$output")" = 4 ]
	# prune keeps the records of a tagged image, drops them with it
	B prune
	run B verify
	[[ "$output" == *", 4 layers remote (not downloaded)" ]]
	B rmi localhost/lz1
	B prune
	[ "$(cat "$SUITE_TMP/rootB-$BATS_TEST_NUMBER/remote-blobs.json")" = "{}" ]
}

@test "lazy: push to the cache's registry mounts the layers, to another registry fetches them" {
	lazy_b lz2
	ref="127.0.0.1:$OPEN_PORT/team/lazy:1"
	run --separate-stderr B --debug push localhost/lz2 "$ref"
	[ "$status" -eq 0 ]
	[ "$(grep -c 'debug: > GET .*/blobs/sha256:' <<<"$stderr")" -eq 0 ]
	[ "$(grep -c 'debug: > POST .*/v2/team/lazy/blobs/uploads/?mount=.*&from=ci%2Fcache' <<<"$stderr")" -eq 4 ]
	[ "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")" = "$digest_a" ]
	run B verify
	[[ "$output" == *", 4 layers remote (not downloaded)" ]]
	reg_start_open OTHER
	other="127.0.0.1:$OTHER_PORT/team/lazy:1"
	run --separate-stderr B --debug push localhost/lz2 "$other"
	[ "$status" -eq 0 ]
	[ "$(grep -c "debug: > GET .*$OPEN_PORT/v2/ci/cache/blobs/sha256:" <<<"$stderr")" -eq 4 ]
	[ "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$other")" = "$digest_a" ]
	run B verify
	[ "$status" -eq 0 ]
	[[ "$output" != *remote* ]]
}

@test "lazy: save and run fetch the layers, verify --fetch makes the image whole for skopeo" {
	lazy_b lz3
	run B save -o "$T/lz3.tar" localhost/lz3
	[ "$status" -eq 0 ]
	tar -tf "$T/lz3.tar" | grep -q manifest.json
	run B run localhost/lz3 cat /a.copy
	[ "$status" -eq 0 ]
	[ "$output" = "one" ]
	run B verify
	[ "$status" -eq 0 ]
	[[ "$output" != *remote* ]]
	# verify --fetch on another lazy store: skopeo reads the layout as is
	lazy_b lz4
	run B verify --fetch
	[ "$status" -eq 0 ]
	[[ "$output" != *remote* ]]
	skopeo copy -q "oci:$SUITE_TMP/rootB-$BATS_TEST_NUMBER/oci:localhost/lz4:latest" \
		"oci:$T/copy:lz4"
}

@test "lazy: a build FROM a lazily tagged image fetches the layers its steps need" {
	lazy_b lz6
	mkdir -p "$T/from"
	cat >"$T/from/recipe.lua" <<'LUA'
from "localhost/lz6"
run "cat /b.txt /a.copy > /c.txt"
LUA
	run --separate-stderr B build "$T/from/recipe.lua" -t localhost/lz6-child
	[ "$status" -eq 0 ]
	run B run localhost/lz6-child cat /c.txt
	[ "$status" -eq 0 ]
	[ "$output" = $'two\none' ]
	run B verify
	[ "$status" -eq 0 ]
	[[ "$output" != *remote* ]]
}

@test "lazy: the cache registry gone before save is one error line, exit 1, and a store that verifies" {
	reg_start_open GONE
	CACHE="127.0.0.1:$GONE_PORT/ci/cache"
	lazy_b lz5
	kill "$(cat "$REG_TMP/GONE/pid")"
	run --separate-stderr B save -o "$T/lz5.tar" localhost/lz5
	[ "$status" -eq 1 ]
	echo "$stderr"
	[ "$(grep -c . <<<"$stderr")" -eq 1 ]
	[[ "$stderr" == "imgbuild: error: "*"layer sha256:"*" of localhost/lz5:latest is in the cache registry $CACHE and could not be fetched: "* ]]
	[ ! -e "$T/lz5.tar" ]
	run --separate-stderr B run localhost/lz5 true
	[ "$status" -eq 125 ]
	[ "$(grep -c . <<<"$stderr")" -eq 1 ]
	[[ "$stderr" == *"could not be fetched"* ]]
	run B verify
	[ "$status" -eq 0 ]
	[[ "$output" == *", 4 layers remote (not downloaded)" ]]
	[ -z "$(ls -A "$SUITE_TMP/rootB-$BATS_TEST_NUMBER/tmp")" ]
}

@test "lazy: a layer the cache registry serves corrupt fails save once; the next build runs its step" {
	reg_start_open LZBAD
	ref="127.0.0.1:$LZBAD_PORT/ci/cache"
	run --separate-stderr A build "$T/ctx/recipe.lua" -t localhost/lz9 --cache-to "$ref"
	[ "$status" -eq 0 ]
	want=${output##*$'\n'}
	layer=$(A inspect localhost/lz9 |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"][-1]["digest"])')
	fresh_b
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/lz9 --cache-from "$ref"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	f=$(reg_blob LZBAD "$layer")
	[ -f "$f" ]
	head -c "$(stat -c %s "$f")" /dev/urandom >"$f"
	run --separate-stderr B save localhost/lz9 -o "$T/lz9.tar"
	[ "$status" -eq 1 ]
	[ "$(grep -c . <<<"$stderr")" -eq 1 ]
	[[ "$stderr" == *"$layer"*"build it again"* ]]
	[ ! -e "$T/lz9.tar" ]
	# the step whose layer came corrupt runs; the others still hit
	run --separate-stderr B build "$T/ctx/recipe.lua" -t localhost/lz9 --cache-from "$ref" \
		--metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$want" ]
	[ "$(steps "$T/meta.json")" = "1 3" ]
	run B save localhost/lz9 -o "$T/lz9.tar"
	[ "$status" -eq 0 ]
	run B verify
	[ "$status" -eq 0 ]
}

@test "independent stages all answered by the cache registry start no worker; changed ones are built side by side" {
	cat >"$T/ctx/par.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
copy { "a.txt", "/a.txt" }
run "cat /a.txt > /a.out"
stage("b", "localhost/busybox:latest")
copy { "b.txt", "/b.txt" }
run "cat /b.txt > /b.out"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/a.out", "/a.out" }
copy { from = "b", "/b.out", "/b.out" }
LUA
	cp "$T/ctx/par.lua" "$T/other/place/ctx/par.lua"
	ref="127.0.0.1:$OPEN_PORT/ci/par"
	run --separate-stderr A --debug build "$T/ctx/par.lua" -t localhost/rc30 --cache-to "$ref,mode=max"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"stages: 2 with work, built side by side"* ]]
	digest_a=${output##*$'\n'}
	fresh_b
	run --separate-stderr B --debug build "$T/other/place/ctx/par.lua" -t localhost/rc30 \
		--cache-from "$ref" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_a" ]
	[ "$(steps "$T/meta.json")" = "0 6" ]
	[[ "$stderr" != *"built by worker"* ]]
	# both stages' inputs change: B builds them side by side, the final
	# stage's copies hit nothing, and B's image is A's for the same inputs
	echo "uno" >"$T/ctx/a.txt"
	echo "dos" >"$T/ctx/b.txt"
	cp "$T/ctx/a.txt" "$T/ctx/b.txt" "$T/other/place/ctx/"
	run --separate-stderr B --debug build "$T/other/place/ctx/par.lua" -t localhost/rc30 \
		--cache-from "$ref" --metadata-file "$T/meta.json"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"stages: 2 with work, built side by side"* ]]
	[ "$(steps "$T/meta.json")" = "6 0" ]
	digest_b=${output##*$'\n'}
	run --separate-stderr A build "$T/ctx/par.lua" -t localhost/rc30
	[ "$status" -eq 0 ]
	[ "${output##*$'\n'}" = "$digest_b" ]
}
