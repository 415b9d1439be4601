#!/usr/bin/env bats
# Rootless mode: builds as plain users, one with subordinate ids and one
# without.  The suite creates its users and their /etc/subuid, /etc/subgid
# lines and removes them in teardown_file, even when a test fails.

load helpers/common
load helpers/build

SUB_USER=ib-rl-sub
ONE_USER=ib-rl-one
SUB_RANGE_START=462144

remove_users() {
	for u in "$SUB_USER" "$ONE_USER"; do
		if id "$u" >/dev/null 2>&1; then
			pkill -KILL -u "$u" 2>/dev/null || true
			userdel -r "$u" >/dev/null 2>&1 || userdel "$u" >/dev/null 2>&1 || true
		fi
		for f in /etc/subuid /etc/subgid; do
			[ -f "$f" ] && sed -i "/^$u:/d" "$f"
		done
	done
}

setup_file() {
	[ "$(id -u)" = 0 ] || skip "creates users: run as root"
	need useradd newuidmap newgidmap
	remove_users
	useradd -m -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$SUB_USER"
	useradd -m -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$ONE_USER"
	echo "$SUB_USER:$SUB_RANGE_START:65536" >>/etc/subuid
	echo "$SUB_USER:$SUB_RANGE_START:65536" >>/etc/subgid
	build_setup_file
	chmod 755 "$SUITE_TMP"
	# the recipe of point 4: copy, a run step that chowns to 1000:1000, a
	# whiteout, an opaque directory and a multi-stage copy
	mkdir -m 755 "$SUITE_TMP/ctx"
	echo "from the context" >"$SUITE_TMP/ctx/hello.txt"
	chmod 644 "$SUITE_TMP/ctx/hello.txt"
	cat >"$SUITE_TMP/same.lua" <<'EOF'
stage("base", "localhost/busybox:latest")
copy { "hello.txt", "/srv/hello.txt" }
run { "sh", "-c", "mkdir -p /app/data /opq && echo hi > /app/data/f && touch /opq/a /opq/b && chown -R 1000:1000 /app" }
stage("final", "localhost/busybox:latest")
copy { from = "base", "/app", "/app" }
copy { from = "base", "/srv/hello.txt", "/srv/hello.txt" }
run { "sh", "-c", "rm /etc/group && rm -rf /home && mkdir /home && touch /home/x && chown 1000:1000 /home/x" }
EOF
	chmod 644 "$SUITE_TMP/same.lua"
	"$IMGBUILD" -q build --network none "$SUITE_TMP/same.lua" --context "$SUITE_TMP/ctx" \
		-t localhost/same:root >"$SUITE_TMP/root.digest"
	"$IMGBUILD" save -o "$SUITE_TMP/busybox.tar" localhost/busybox:latest
	chmod 644 "$SUITE_TMP/busybox.tar"
}

teardown_file() {
	remove_users
	build_teardown_file
}

# as USER ARGS...: imgbuild as USER with its default store under
# $SUITE_TMP/xdg-USER (XDG_DATA_HOME)
as() {
	local u=$1
	shift
	mkdir -p "$SUITE_TMP/xdg-$u"
	chown "$u:" "$SUITE_TMP/xdg-$u"
	runuser -u "$u" -- env -u IMGBUILD_ROOT XDG_DATA_HOME="$SUITE_TMP/xdg-$u" \
		SOURCE_DATE_EPOCH=0 "$@"
}

@test "rootless: a plain user with subordinate ids builds the same image as root, store under XDG_DATA_HOME" {
	run as "$SUB_USER" "$IMGBUILD" -q build --network none "$REPO_ROOT/recipes/busybox.lua" \
		--context /bin -t localhost/busybox:latest
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/busybox.digest")" ]
	run as "$SUB_USER" "$IMGBUILD" -q build --network none "$SUITE_TMP/same.lua" \
		--context "$SUITE_TMP/ctx" -t localhost/same:user
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
	[ -d "$SUITE_TMP/xdg-$SUB_USER/imgbuild/oci" ]
	# the last layer holds a whiteout, an opaque directory and 1000-owned files
	local blobs="$SUITE_TMP/xdg-$SUB_USER/imgbuild/oci/blobs/sha256"
	run bash -c "for b in $blobs/*; do tar tvzf \$b 2>/dev/null; done"
	[[ "$output" == *"etc/.wh.group"* ]]
	[[ "$output" == *"home/.wh..wh..opq"* ]]
	[[ "$output" == *"1000/1000"*"home/x"* ]]
	[[ "$output" == *"1000/1000"*"app/data/f"* ]]
}

@test "rootless: a step's ids outside the user's ranges fail" {
	cat >"$SUITE_TMP/far.lua" <<'EOF'
stage("s", "localhost/busybox:latest")
run { "sh", "-c", "touch /f && chown 70000:70000 /f" }
EOF
	chmod 644 "$SUITE_TMP/far.lua"
	run as "$SUB_USER" "$IMGBUILD" -q build --network none "$SUITE_TMP/far.lua"
	[ "$status" -ne 0 ]
}

@test "rootless: without subordinate ids, an image owning other ids fails with one line naming /etc/subuid" {
	run as "$ONE_USER" "$IMGBUILD" load -i "$SUITE_TMP/busybox.tar"
	[ "$status" -eq 1 ]
	[[ "$output" == *"/etc/subuid"* ]]
	[[ "$output" == *"$ONE_USER"* ]]
	[ "$(printf '%s\n' "$output" | grep -c .)" -eq 1 ]
}

@test "rootless: without subordinate ids, a recipe owning only root's files builds" {
	cat >"$SUITE_TMP/solo.lua" <<'EOF'
stage("solo", "scratch")
copy { "busybox", "/bin/busybox", mode = "0755" }
run { "/bin/busybox", "sh", "-c", "/bin/busybox mkdir /data && echo ok > /data/ok" }
EOF
	chmod 644 "$SUITE_TMP/solo.lua"
	run as "$ONE_USER" "$IMGBUILD" -q build --network none "$SUITE_TMP/solo.lua" --context /bin
	[ "$status" -eq 0 ]
	"$IMGBUILD" -q build --network none "$SUITE_TMP/solo.lua" --context /bin >"$SUITE_TMP/solo.digest"
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/solo.digest")" ]
}

@test "rootless: missing newuidmap is one line naming uidmap, exit 1, no store" {
	rm -rf "$SUITE_TMP/xdg-$SUB_USER-nomap"
	run runuser -u "$SUB_USER" -- env -i PATH=/nonexistent HOME=/nonexistent \
		XDG_DATA_HOME="$SUITE_TMP/xdg-$SUB_USER-nomap" "$IMGBUILD" images
	[ "$status" -eq 1 ]
	[[ "$output" == *"newuidmap not found"*"apt-get install uidmap"* ]]
	[ "$(printf '%s\n' "$output" | grep -c .)" -eq 1 ]
	[ ! -e "$SUITE_TMP/xdg-$SUB_USER-nomap" ]
}

@test "rootless: under podman unshare (root of a user namespace) the same image, store under XDG_DATA_HOME" {
	need podman
	mkdir -p "$SUITE_TMP/xdg-$SUB_USER-pu"
	chown "$SUB_USER:" "$SUITE_TMP/xdg-$SUB_USER-pu"
	run runuser -u "$SUB_USER" -- env -u IMGBUILD_ROOT XDG_DATA_HOME="$SUITE_TMP/xdg-$SUB_USER-pu" \
		SOURCE_DATE_EPOCH=0 podman unshare sh -c "
		'$IMGBUILD' -q build --network none '$REPO_ROOT/recipes/busybox.lua' --context /bin \
			-t localhost/busybox:latest >/dev/null &&
		'$IMGBUILD' -q build --network none '$SUITE_TMP/same.lua' --context '$SUITE_TMP/ctx'"
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
	[ -d "$SUITE_TMP/xdg-$SUB_USER-pu/imgbuild/oci" ]
}

@test "isolation: --isolation chroot builds the same images as the namespaces and overlay (oci)" {
	run "$IMGBUILD" --debug build --no-cache --network none --isolation chroot \
		"$SUITE_TMP/same.lua" --context "$SUITE_TMP/ctx"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"run steps use chroot isolation"* ]]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
	run "$IMGBUILD" -q build --no-cache --isolation chroot "$REPO_ROOT/recipes/busybox.lua" \
		--context /bin
	[ "$status" -eq 0 ]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/busybox.digest")" ]
	run "$IMGBUILD" --debug build --no-cache --network none "$SUITE_TMP/same.lua" \
		--context "$SUITE_TMP/ctx"
	[ "$status" -eq 0 ]
	[[ "$output" == *"run steps use oci isolation"* ]]
	run "$IMGBUILD" build --isolation jail "$SUITE_TMP/same.lua"
	[ "$status" -eq 2 ]
}

@test "isolation: chroot keeps the step's background processes from outliving it" {
	cat >"$SUITE_TMP/bg.lua" <<'EOF2'
stage("s", "localhost/busybox:latest")
run { "sh", "-c", "sleep 311 >/dev/null 2>&1 & echo started" }
EOF2
	run "$IMGBUILD" -q build --no-cache --isolation chroot "$SUITE_TMP/bg.lua"
	[ "$status" -eq 0 ]
	! pgrep -f "sleep 311"
}

# ctr_build PODMAN-OPTS...: in a podman container (root inside, the host's
# /usr read-only for imgbuild's libraries, the store on the container's own
# root unless the options mount /store), build busybox, then same.lua with
# --debug; output and status as bats' run.
ctr_build() {
	local r="$SUITE_TMP/ctr-root"
	rm -rf "$r"
	mkdir -p "$r"/{usr,etc,tmp,proc,dev,sys,var/tmp,root,store}
	ln -s usr/bin "$r/bin"
	ln -s usr/lib "$r/lib"
	ln -s usr/lib64 "$r/lib64"
	ln -s usr/sbin "$r/sbin"
	cp /etc/passwd /etc/group "$r/etc/"
	chmod 1777 "$r/tmp" "$r/var/tmp"
	local bindir exe
	bindir=$(dirname "$IMGBUILD")
	exe=$(basename "$IMGBUILD")
	run podman run --rm --network none "$@" -v /usr:/usr:ro -v "$bindir:/ib:ro" \
		-v "$REPO_ROOT/recipes:/recipes:ro" -v "$SUITE_TMP:/suite:ro" \
		-e SOURCE_DATE_EPOCH=0 -e IMGBUILD_ROOT=/store/s --rootfs "$r" sh -c "
		/ib/$exe -q build --network none /recipes/busybox.lua --context /bin \
			-t localhost/busybox:latest &&
		/ib/$exe --debug build --network none /suite/same.lua --context /suite/ctx"
	echo "$output"
}

# The default-settings container: auto must pick chroot isolation and
# build the same images.
@test "container: a default podman container builds the same images (auto picks chroot)" {
	need podman
	ctr_build
	[ "$status" -eq 0 ]
	[[ "$output" == *"run steps use chroot isolation"* ]]
	[[ "$output" == *"$(cat "$SUITE_TMP/busybox.digest")"* ]]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
}

@test "container: --cap-add SYS_ADMIN with the store on a volume builds the same images (oci)" {
	need podman
	mkdir -p "$SUITE_TMP/vol"
	ctr_build --cap-add SYS_ADMIN -v "$SUITE_TMP/vol:/store"
	[ "$status" -eq 0 ]
	[[ "$output" == *"run steps use oci isolation"* ]]
	[[ "$output" == *"$(cat "$SUITE_TMP/busybox.digest")"* ]]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
}

@test "container: --privileged builds the same images" {
	need podman
	ctr_build --privileged
	[ "$status" -eq 0 ]
	[[ "$output" == *"$(cat "$SUITE_TMP/busybox.digest")"* ]]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/root.digest")" ]
}

@test "store on overlayfs: oci says to use a volume or chroot; auto builds the same image" {
	local o="$SUITE_TMP/ovl"
	mkdir -p "$o"/{lower,upper,work,merged}
	mount -t overlay overlay -o "lowerdir=$o/lower,upperdir=$o/upper,workdir=$o/work" "$o/merged"
	run env IMGBUILD_ROOT="$o/merged/store" "$IMGBUILD" -q build --network none \
		--isolation oci "$REPO_ROOT/recipes/busybox.lua" --context /bin
	local oci_status=$status oci_output=$output
	run env IMGBUILD_ROOT="$o/merged/store" "$IMGBUILD" --debug build --network none \
		"$REPO_ROOT/recipes/busybox.lua" --context /bin
	umount "$o/merged"
	[ "$oci_status" -eq 1 ]
	[[ "$oci_output" == *"store is on overlayfs"*"--root on a volume"* ]]
	[ "$status" -eq 0 ]
	[[ "$output" == *"run steps use chroot isolation"* ]]
	[ "${lines[-1]}" = "$(cat "$SUITE_TMP/busybox.digest")" ]
}
