#!/usr/bin/env bats
# Builds and registries together: build --push gives the digest the registry
# holds, and recipes build on images pulled from a registry (pushed there by
# skopeo in OCI and Docker schema2 form).

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
	# the busybox base, pushed by an independent client in both formats
	skopeo copy -q --dest-tls-verify=false "oci:$IMGBUILD_ROOT/oci:localhost/busybox:latest" \
		"docker://127.0.0.1:$OPEN_PORT/base/busybox:oci"
	skopeo copy -q --dest-tls-verify=false --format v2s2 \
		"oci:$IMGBUILD_ROOT/oci:localhost/busybox:latest" \
		"docker://127.0.0.1:$OPEN_PORT/base/busybox:v2s2"
}

teardown_file() {
	reg_stop_all
	build_teardown_file
}

setup() {
	need podman skopeo
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
	mkdir -p "$T/ctx"
	echo "pushed by imgbuild" > "$T/ctx/msg.txt"
}

recipe_from() {
	cat > "$T/ctx/recipe.lua" <<LUA
from "$1"
copy { "msg.txt", "/msg.txt" }
run "cat /msg.txt > /copy.txt"
cmd { "/bin/cat", "/copy.txt" }
LUA
}

@test "build --push: the printed digest is the one the registry holds, and podman runs it" {
	recipe_from localhost/busybox:latest
	ref="127.0.0.1:$OPEN_PORT/team/app:1.4"
	run --separate-stderr "$IMGBUILD" build "$T/ctx/recipe.lua" -t "$ref" --push --progress plain
	[ "$status" -eq 0 ]
	digest=$(echo "$output" | tail -1)
	[[ "$digest" == sha256:* ]]
	remote=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")
	[ "$remote" = "$digest" ]
	run pod pull -q --tls-verify=false "$ref"
	[ "$status" -eq 0 ]
	run pod run --rm --network none "$ref"
	[ "$status" -eq 0 ]
	[[ "$output" == *"pushed by imgbuild"* ]]
}

@test "build from registry images pushed by skopeo (OCI and Docker schema2) into an empty store" {
	for tag in oci v2s2; do
		recipe_from "127.0.0.1:$OPEN_PORT/base/busybox:$tag"
		run --separate-stderr env IMGBUILD_ROOT="$T/empty-$tag" "$IMGBUILD" build \
			"$T/ctx/recipe.lua" -t "localhost/onpulled:$tag" --progress plain
		echo "$stderr"
		[ "$status" -eq 0 ]
		[[ "$stderr" == *"pulling 127.0.0.1:$OPEN_PORT/base/busybox:$tag"* ]]
		IMGBUILD_ROOT="$T/empty-$tag" "$IMGBUILD" images | grep -q "base/busybox"
	done
}

@test "--pull never refuses a base that is not in the store; always re-pulls" {
	recipe_from "127.0.0.1:$OPEN_PORT/base/busybox:oci"
	run env IMGBUILD_ROOT="$T/never" "$IMGBUILD" build "$T/ctx/recipe.lua" --pull never
	[ "$status" -eq 1 ]
	[[ "$output" == *"recipe.lua:1: from 127.0.0.1:$OPEN_PORT/base/busybox:oci"*"not found"* ]]
	run --separate-stderr env IMGBUILD_ROOT="$T/always" "$IMGBUILD" build "$T/ctx/recipe.lua" --progress plain
	[ "$status" -eq 0 ]
	run --separate-stderr env IMGBUILD_ROOT="$T/always" "$IMGBUILD" build "$T/ctx/recipe.lua" --pull always --progress plain
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"pulling"* ]]
	[[ "$stderr" == *CACHED* ]]
}

@test "a base that is neither local nor in the registry: one clear line with the recipe line" {
	recipe_from "127.0.0.1:$OPEN_PORT/base/missing:1"
	run env IMGBUILD_ROOT="$T/miss" "$IMGBUILD" build "$T/ctx/recipe.lua" --progress plain
	[ "$status" -eq 1 ]
	last=$(echo "$output" | tail -1)
	[[ "$last" == "imgbuild: error: $T/ctx/recipe.lua:1: from 127.0.0.1:$OPEN_PORT/base/missing:1: "* ]]
	[[ "$last" == *"MANIFEST_UNKNOWN"* || "$last" == *"not found"* ]]
}

@test "copy from an image that is only in the registry pulls it first" {
	cat > "$T/ctx/recipe.lua" <<LUA
from "scratch"
copy { from = "127.0.0.1:$OPEN_PORT/base/busybox:oci", "/bin/busybox", "/bin/busybox" }
entrypoint { "/bin/busybox", "echo" }
LUA
	run --separate-stderr env IMGBUILD_ROOT="$T/cfi" "$IMGBUILD" build "$T/ctx/recipe.lua" -t localhost/copied:1 --progress plain
	echo "$stderr"
	[ "$status" -eq 0 ]
	[[ "$stderr" == *"pulling 127.0.0.1:$OPEN_PORT/base/busybox:oci"* ]]
	IMGBUILD_ROOT="$T/cfi" skopeo copy -q "oci:$T/cfi/oci:localhost/copied:1" \
		"containers-storage:[vfs@$SUITE_TMP/pstore+$SUITE_TMP/prun]localhost/copied:1"
	run pod run --rm --network none localhost/copied:1 from-a-copied-binary
	[ "$status" -eq 0 ]
	[[ "$output" == *from-a-copied-binary* ]]
}
