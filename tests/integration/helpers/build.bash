# Helpers for the build suites: a store with the busybox base image built
# once per file, and podman/umoci wrappers that read our store directly.

REPO_ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
IMGBUILD="${IMGBUILD:-$REPO_ROOT/build/imgbuild}"

need() {
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || skip "needs $t (run scripts/install-deps.sh)"
	done
}

# setup_file: one store per suite with localhost/busybox:latest in it.
build_setup_file() {
	export SUITE_TMP="$(mktemp -d /var/tmp/ib-build.XXXXXX)"
	export IMGBUILD_ROOT="$SUITE_TMP/root"
	export SOURCE_DATE_EPOCH=0
	"$IMGBUILD" -q build "$REPO_ROOT/recipes/busybox.lua" --context /bin \
		-t localhost/busybox:latest >"$SUITE_TMP/busybox.digest"
}

build_teardown_file() {
	if [ -n "${SUITE_TMP:-}" ]; then
		podman --root "$SUITE_TMP/pstore" --runroot "$SUITE_TMP/prun" rmi -af >/dev/null 2>&1 || true
		rm -rf "$SUITE_TMP"
	fi
}

# pod ARGS...: podman with a private storage under the suite dir
pod() {
	podman --root "$SUITE_TMP/pstore" --runroot "$SUITE_TMP/prun" --storage-driver vfs "$@"
}

# podrun IMAGE [ARGS...]: run an image of our store with podman
podrun() {
	local img=$1
	shift
	skopeo copy -q "oci:$IMGBUILD_ROOT/oci:$img" \
		"containers-storage:[vfs@$SUITE_TMP/pstore+$SUITE_TMP/prun]$img" >/dev/null
	pod run --rm --network none "$img" "$@"
}

# unpack IMAGE DIR: umoci unpack of our store's image into DIR (rootfs in DIR/rootfs)
unpack_image() {
	umoci unpack --image "$IMGBUILD_ROOT/oci:$1" "$2" >/dev/null
}
