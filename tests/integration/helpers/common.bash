# Shared helpers for the bats suites.
#
#   load helpers/common
#
# gives: $REPO, $IMGBUILD (override with IMGBUILD=...), skip helpers that say
# loudly what is missing, a private store per test (common_setup), a busybox
# rootfs tarball builder, a throwaway podman, and error-output assertions.

REPO="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
IMGBUILD="${IMGBUILD:-$REPO/build/imgbuild}"
export REPO IMGBUILD

# need TOOL...: skip the test unless every tool is on PATH.
need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || skip "needs $t (not installed)"
	done
}

# need_root: skip unless running as root.
need_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root"
}

# need_file PATH...: skip unless every path exists.
need_file() {
	local f
	for f in "$@"; do
		[ -e "$f" ] || skip "needs $f"
	done
}

# need_imgbuild: fail (not skip) when the binary under test is missing:
# a suite that silently skips everything proves nothing.
need_imgbuild() {
	if [ ! -x "$IMGBUILD" ]; then
		echo "imgbuild binary not found at $IMGBUILD (build it, or set IMGBUILD)" >&2
		return 1
	fi
}

# common_setup: a fresh store for this test in $IMGBUILD_ROOT, scratch
# space in $T.  Both live under $BATS_TEST_TMPDIR, which bats removes.
common_setup() {
	need_imgbuild
	T="$BATS_TEST_TMPDIR"
	export IMGBUILD_ROOT="$T/root"
	unset SOURCE_DATE_EPOCH
}

# make_busybox_rootfs DIR: DIR/rootfs = a minimal root filesystem around
# Debian's static /bin/busybox (every applet symlinked in /bin), and
# DIR/rootfs.tar = that tree as a tarball (numeric owner root).  Prints the
# tarball's path.
make_busybox_rootfs() {
	local dir=$1 bb=/bin/busybox
	need_file "$bb"
	# A dynamic busybox would not run in an image without a libc.
	ldd "$bb" >/dev/null 2>&1 && skip "needs a static $bb (busybox-static)"
	mkdir -p "$dir/rootfs"
	local r="$dir/rootfs"
	mkdir -p "$r/bin" "$r/etc" "$r/root" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/var"
	chmod 1777 "$r/tmp"
	chmod 0700 "$r/root"
	cp "$bb" "$r/bin/busybox"
	local a
	for a in $("$bb" --list); do
		[ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
		>"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	echo "imgbuild test rootfs" >"$r/etc/motd"
	tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$dir/rootfs.tar" .
	echo "$dir/rootfs.tar"
}

# pod ARGS...: podman with private storage under $T (vfs: works anywhere).
pod() {
	podman --root "$T/podman/root" --runroot "$T/podman/run" --storage-driver vfs "$@"
}

# assert_error STATUS: the last `run` failed with STATUS and printed
# exactly one line, "imgbuild: error: ...".
assert_error() {
	local want=$1
	if [ "$status" -ne "$want" ]; then
		echo "exit status $status, expected $want; output:" >&2
		echo "$output" >&2
		return 1
	fi
	if [ "${#lines[@]}" -ne 1 ] || [[ "${lines[0]}" != "imgbuild: error: "* ]]; then
		echo "expected one 'imgbuild: error:' line, got:" >&2
		echo "$output" >&2
		return 1
	fi
}

# assert_output_contains TEXT: the last `run` printed TEXT somewhere.
assert_output_contains() {
	if [[ "$output" != *"$1"* ]]; then
		echo "output does not contain '$1':" >&2
		echo "$output" >&2
		return 1
	fi
}

# tags_snapshot: the store's tags as sorted "name digest" lines.
tags_snapshot() {
	"$IMGBUILD" images --json | python3 -c '
import json, sys
for i in sorted(json.load(sys.stdin), key=lambda i: i["reference"]):
    print(i["reference"], i["digest"])'
}
