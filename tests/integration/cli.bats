#!/usr/bin/env bats
# The command line: global options (--root, --authfile, --tls-verify, -q,
# --debug) are accepted before the command and after it, as podman and
# buildah users type them, and every command's --help lists them once.

bats_require_minimum_version 1.5.0

load helpers/registry

IMGBUILD=${IMGBUILD:-$BATS_TEST_DIRNAME/../../build/imgbuild}

setup_file() {
	[ -x "$IMGBUILD" ] || skip "needs the imgbuild binary at $IMGBUILD (build it first)"
	export IMGBUILD
	local r="$BATS_FILE_TMPDIR/rootfs"
	mkdir -p "$r/etc"
	echo "hello" >"$r/etc/greeting"
	tar -C "$r" -cf "$BATS_FILE_TMPDIR/rootfs.tar" .
	export ROOTFS_TAR="$BATS_FILE_TMPDIR/rootfs.tar"
	if [ "$(id -u)" = 0 ] && ! reg_missing_tool >/dev/null; then
		reg_start_basic BASIC alice wonderland
	fi
}

teardown_file() {
	reg_stop_all
}

setup() {
	export IMGBUILD_ROOT="$BATS_TEST_TMPDIR/root"
	export HOME="$BATS_TEST_TMPDIR/home"
	mkdir -p "$HOME"
	unset REGISTRY_AUTH_FILE SSL_CERT_FILE SSL_CERT_DIR DOCKER_CONFIG XDG_RUNTIME_DIR
	T="$BATS_TEST_TMPDIR"
	printf 'from "scratch"\ncopy { "f", "/f" }\n' >"$T/recipe.lua"
	echo hi >"$T/f"
}

need_registry() {
	[ -n "${BASIC_PORT:-}" ] || skip "needs root and docker-registry"
}

@test "--root after the command: import and images use that store" {
	other="$BATS_TEST_TMPDIR/other"
	run "$IMGBUILD" import "$ROOTFS_TAR" cli/app:1 --root "$other"
	[ "$status" -eq 0 ]
	run "$IMGBUILD" images --root "$other"
	[ "$status" -eq 0 ]
	[[ "$output" == *"cli/app"* ]]
	run "$IMGBUILD" images --root="$other" --json
	[[ "$output" == *'"reference": "docker.io/cli/app:1"'* ]]
	# the default store was not touched
	run "$IMGBUILD" images --json
	[ "$output" = "[]" ]
}

@test "-q and --debug after build, and after the recipe of the shorthand" {
	run --separate-stderr "$IMGBUILD" build "$T/recipe.lua" -t cli/b:1
	[ "$status" -eq 0 ]
	[ -n "$stderr" ]
	digest=$output
	run --separate-stderr "$IMGBUILD" build -q "$T/recipe.lua"
	[ "$status" -eq 0 ]
	[ -z "$stderr" ]
	[ "$output" = "$digest" ]
	run --separate-stderr "$IMGBUILD" "$T/recipe.lua" -q
	[ "$status" -eq 0 ]
	[ -z "$stderr" ]
	[ "$output" = "$digest" ]
	run --separate-stderr "$IMGBUILD" build --debug "$T/recipe.lua"
	[ "$status" -eq 0 ]
	[ "$output" = "$digest" ]
	run --separate-stderr "$IMGBUILD" --quiet "$T/recipe.lua" --root "$T/root"
	[ "$status" -eq 0 ]
	[ -z "$stderr" ]
}

@test "--tls-verify and --authfile after login, push and pull" {
	need_registry
	auth="$T/creds.json"
	ref="127.0.0.1:$BASIC_PORT/cli/app:1"
	run "$IMGBUILD" -q import "$ROOTFS_TAR" "$ref"
	[ "$status" -eq 0 ]
	digest=$output
	# the registry's certificate is not trusted: refused unless told
	run --separate-stderr "$IMGBUILD" login -u alice --password-stdin --authfile "$auth" \
		"127.0.0.1:$BASIC_PORT" <<<"wonderland"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *certificate* ]]
	run --separate-stderr "$IMGBUILD" login -u alice --password-stdin --authfile "$auth" \
		--tls-verify=false "127.0.0.1:$BASIC_PORT" <<<"wonderland"
	[ "$status" -eq 0 ]
	[ -s "$auth" ]
	[ ! -e "$HOME/.docker/config.json" ]
	# without the auth file the registry wants credentials
	run --separate-stderr "$IMGBUILD" push --tls-verify=false "$ref"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"authentication required"* ]]
	run --separate-stderr "$IMGBUILD" push --tls-verify=false "$ref" --authfile "$auth"
	[ "$status" -eq 0 ]
	[ "$output" = "$digest" ]
	export IMGBUILD_ROOT="$T/root2"
	run --separate-stderr "$IMGBUILD" pull --authfile "$auth" "$ref" --tls-verify=false -q
	[ "$status" -eq 0 ]
	[ "$output" = "$digest" ]
	[ -z "$stderr" ]
	run --separate-stderr "$IMGBUILD" pull --authfile "$auth" --tls-verify=true "$ref"
	[ "$status" -eq 1 ]
	[[ "$stderr" == *certificate* ]]
}

@test "every command's --help lists the global options once" {
	for c in build plan images inspect history tag rmi pull push login logout search tags \
		save load import diff prune verify version; do
		run "$IMGBUILD" "$c" --help
		[ "$status" -eq 0 ]
		[[ "${lines[0]}" == "Usage: imgbuild $c"* ]]
		[ "$(grep -c -- '^  --root DIR ' <<<"$output")" -eq 1 ]
		[ "$(grep -c -- '^  --tls-verify' <<<"$output")" -eq 1 ]
		[ "$(grep -c -- '^  --authfile FILE ' <<<"$output")" -eq 1 ]
		[ "$(grep -c -- '^  -q, --quiet ' <<<"$output")" -eq 1 ]
		[ "$(grep -c -- '^  --debug ' <<<"$output")" -eq 1 ]
	done
	run "$IMGBUILD" --help
	[ "$status" -eq 0 ]
	[ "$(grep -c -- '^  --root DIR ' <<<"$output")" -eq 1 ]
}

@test "bad global options exit 2 with one error line, before or after the command" {
	for args in "--tls-verify=maybe images" "images --tls-verify=maybe" "images --root" \
		"--root" "--bogus images" "images --bogus" "push --bogus x" "nosuchcommand"; do
		run $IMGBUILD $args
		echo "imgbuild $args -> $status: $output"
		[ "$status" -eq 2 ]
		[ "${#lines[@]}" -eq 1 ]
		[[ "${lines[0]}" == "imgbuild: error: "*"(see 'imgbuild "*"--help')" ]]
	done
}

@test "libcurl and libarchive are loaded by the commands that use them, not at start" {
	run env LD_DEBUG=files "$IMGBUILD" --version
	[ "$status" -eq 0 ]
	[[ "$output" != *libcurl* && "$output" != *libarchive* ]]
	# the first build writes a layer with libarchive; the rebuild is cached
	run env LD_DEBUG=files "$IMGBUILD" -q build "$T/recipe.lua" -t localhost/lazy
	[ "$status" -eq 0 ]
	[[ "$output" == *"file=libarchive"* && "$output" != *libcurl* ]]
	first=$("$IMGBUILD" -q build "$T/recipe.lua" -t localhost/lazy)
	run env LD_DEBUG=files "$IMGBUILD" -q build "$T/recipe.lua" -t localhost/lazy
	[ "$status" -eq 0 ]
	[[ "$output" != *libcurl* && "$output" != *libarchive* ]]
	[[ "$output" == *"$first"* ]]
	# a pull goes through libcurl, which reports the refused connection
	run --separate-stderr env LD_DEBUG=files "$IMGBUILD" pull --tls-verify=false 127.0.0.1:1/none/x:1
	[ "$status" -eq 1 ]
	[[ "$stderr" == *"file=libcurl"* ]]
	[[ "$stderr" == *"onnect"* ]]
}
