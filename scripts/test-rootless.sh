#!/usr/bin/env bash
# The build suite's cases that apply, run by a plain user with subordinate
# ids (tests/integration/rootless.bats covers the plain user's own
# re-entry, podman unshare and a default-settings podman container).
#
# Run as root: it creates the user and its /etc/subuid and /etc/subgid
# lines, makes /dev/net/tun usable by users (mode 0666, as on stock
# Debian; slirp4netns needs it) and undoes all of it on exit, failing or
# not.  bats runs as that user inside `unshare --map-auto --map-root-user`
# (root of a user namespace, like `podman unshare`): the suites can then
# remove their stores, whose files belong to subordinate ids.  Cases that
# run podman or umoci on the result are left to the root run.
#
#   scripts/test-rootless.sh [TAP-LOG]     exit status: bats'
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-rootless: run as root (it creates a user)" >&2; exit 1; }
IMGBUILD=${IMGBUILD:-$PWD/build-asan/imgbuild}
LOG=${1:-build-asan/rootless.log}
U=ib-ci-rootless
RANGE=593920:65536
for t in useradd userdel newuidmap newgidmap unshare runuser bats; do
	command -v "$t" >/dev/null || { echo "test-rootless: $t not found" >&2; exit 1; }
done

# one run at a time on a machine: runs share the user, whose processes
# the clean-up kills, and the mode of /dev/net/tun
exec 9>/run/lock/imgbuild-test-rootless.lock
flock 9
tun_mode=$(stat -c %a /dev/net/tun 2>/dev/null || true)
cleanup() {
	if id "$U" >/dev/null 2>&1; then
		pkill -KILL -u "$U" 2>/dev/null || true
		find /var/tmp /tmp -maxdepth 1 -user "$U" -exec rm -rf {} + 2>/dev/null || true
		userdel -r "$U" >/dev/null 2>&1 || userdel "$U" >/dev/null 2>&1 || true
	fi
	sed -i "/^$U:/d" /etc/subuid /etc/subgid 2>/dev/null || true
	[ -n "$tun_mode" ] && chmod "$tun_mode" /dev/net/tun
}
trap cleanup EXIT
cleanup
useradd -m -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$U" || exit 1
echo "$U:$RANGE" >>/etc/subuid
echo "$U:$RANGE" >>/etc/subgid
[ -n "$tun_mode" ] && chmod 0666 /dev/net/tun

cases='config carries|umoci sees|whiteout and opaque|two fresh stores|fully cached|changing one copied'
cases+='|--no-cache rebuild|same copied tree|after one file changes|build timestamp|secrets are readable'
cases+='|--check names|two builds at once|kill -9|copy from a stage never|copy globs|symlink and a directory'
cases+='|owner names|xattrs and hardlinks|cannot make a secret|copy destinations follow|failing run reports'
cases+='|cannot see or reach|network none|multi-stage example|broken recipes|timeout kills|usage errors'
cases+='|identical no-op|kept xattr|timeout beyond|progress json'
cases+="|each stage's output|stops the others|SIGINT while stages"

mkdir -p "$(dirname "$LOG")"
runuser -u "$U" -- env -u IMGBUILD_ROOT HOME="/home/$U" IMGBUILD="$IMGBUILD" TMPDIR=/var/tmp \
	ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" \
	unshare --map-auto --map-root-user bats --tap -f "$cases" tests/integration/build.bats \
	tests/integration/stages.bats \
	2>&1 | tee "$LOG"
status=$?
exit "$status"
