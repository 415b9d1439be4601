#!/usr/bin/env bats
# Sync calls in run steps: fsync, fdatasync, sync, syncfs and sync_file_range
# succeed without reaching the kernel (the seccomp filter answers 0), in every
# isolation mode, unless --sync-steps keeps them.  fsync and fdatasync of
# /dev/null fail with EINVAL in the kernel, which makes the filter's answer
# visible.  (Rootless: tests/unit/test_sandbox.c.)

load helpers/build

setup_file() {
	build_setup_file
	mkdir -p "$SUITE_TMP/ctx"
	cat >"$SUITE_TMP/noop.lua" <<-'EOF2'
		from "localhost/busybox:latest"
		run "sync /dev/null && sync -d /dev/null && echo $((40 + 2))-noop"
	EOF2
	cat >"$SUITE_TMP/same.lua" <<-'EOF2'
		from "localhost/busybox:latest"
		run "mkdir /data && echo payload > /data/f && sync /data/f && sync -d /data/f && sync -f /data/f && sync"
	EOF2
}

teardown_file() {
	build_teardown_file
}

@test "sync calls: a no-op in a run step with oci and chroot isolation" {
	for iso in oci chroot; do
		run "$IMGBUILD" build --no-cache --progress plain --network none --isolation "$iso" \
			"$SUITE_TMP/noop.lua"
		echo "$output"
		[ "$status" -eq 0 ]
		[[ "$output" == *"42-noop"* ]]
		[[ "$output" != *"Invalid argument"* ]]
	done
}

@test "sync calls: --sync-steps lets them reach the kernel, with oci and chroot isolation" {
	for iso in oci chroot; do
		run "$IMGBUILD" build --no-cache --progress plain --network none --isolation "$iso" \
			--sync-steps "$SUITE_TMP/noop.lua"
		echo "$output"
		[ "$status" -ne 0 ]
		[[ "$output" == *"sync: /dev/null: Invalid argument"* ]]
		[[ "$output" != *"42-noop"* ]]
	done
	run "$IMGBUILD" build --help
	[[ "$output" == *"--sync-steps"* ]]
}

@test "sync calls: the same image with and without --sync-steps, and the step cache is shared" {
	run "$IMGBUILD" -q build --no-cache --network none "$SUITE_TMP/same.lua"
	[ "$status" -eq 0 ]
	local digest=${lines[-1]}
	run "$IMGBUILD" -q build --no-cache --network none --sync-steps "$SUITE_TMP/same.lua"
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "$digest" ]
	run "$IMGBUILD" build --progress plain --network none --sync-steps "$SUITE_TMP/same.lua"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"CACHED"* ]]
	[ "${lines[-1]}" = "$digest" ]
}
