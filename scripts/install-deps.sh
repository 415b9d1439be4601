#!/usr/bin/env bash
# Install every Debian package imgbuild's build, tests and benchmark need.
# Idempotent: packages already present are skipped by apt-get.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  liblua5.4-dev libarchive-dev libjansson-dev libcurl4-openssl-dev libssl-dev
  zlib1g-dev libzstd-dev libdeflate-dev libcmocka-dev
  bats docker-registry skopeo umoci podman runc buildah
  busybox-static linux-libc-dev python3 python3-jwt openssl apache2-utils
  zstd file time bc parallel iproute2
  libseccomp-dev slirp4netns keyutils uidmap util-linux passwd
  docker.io pass gnupg golang-docker-credential-helpers
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# podman on this kind of machine: runc, cgroupfs, no default ulimits.
mkdir -p /etc/containers
if ! grep -qs 'imgbuild' /etc/containers/containers.conf; then
  cat > /etc/containers/containers.conf <<'CONF'
# written by imgbuild scripts/install-deps.sh
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
if [ ! -s /etc/containers/policy.json ]; then
  cat > /etc/containers/policy.json <<'CONF'
{ "default": [ { "type": "insecureAcceptAnything" } ] }
CONF
fi
