#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (as root): install dependencies,
# build imgbuild, build the busybox base image and the example tool image
# from nothing (offline), list them, and run the example with podman.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)" --target imgbuild
IB=$PWD/build/imgbuild
export IMGBUILD_ROOT=${IMGBUILD_ROOT:-/var/lib/imgbuild}

"$IB" build recipes/busybox.lua --context /bin -t localhost/busybox:latest
"$IB" build examples/hello/recipe.lua -t localhost/hello:latest
"$IB" images

# Run it with an independent runtime: skopeo reads our OCI store as it is.
skopeo copy -q "oci:$IMGBUILD_ROOT/oci:localhost/hello:latest" \
	containers-storage:localhost/hello:latest
podman run --rm localhost/hello:latest imgbuild
