#!/usr/bin/env bats
# A fully cached rebuild: what it reads and writes (the floor of a rebuild
# that changes nothing is the stat of the context).

bats_require_minimum_version 1.5.0

load helpers/build

setup_file() {
	build_setup_file
}

teardown_file() {
	build_teardown_file
}

setup() {
	need strace
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
	mkdir -p "$T/ctx/src/a" "$T/ctx/src/b"
	for i in 1 2 3 4 5; do
		echo "a $i" >"$T/ctx/src/a/f$i"
		echo "b $i" >"$T/ctx/src/b/f$i"
	done
	cat >"$T/ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "src/", "/src/" }
run "cat /src/a/f1 > /out"
env { K = "v" }
LUA
}

# traced CMD...: CMD under strace (LeakSanitizer, of an ASan build, cannot
# run under ptrace)
traced() {
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace "$@"
}

# cached_build LOG: a rebuild of $T/ctx tagged localhost/cached:1 under
# strace, the calls that create, change or remove files (or try to) in LOG
cached_build() {
	traced -f -qq -o "$1" \
		-e trace=mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,fsync,fdatasync,sync_file_range,ftruncate,truncate,link,linkat,symlink,symlinkat,chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,utimensat,setxattr,lsetxattr,fsetxattr,openat,open,creat \
		"$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1
}

@test "a fully cached rebuild creates, changes and removes nothing, stat cache included" {
	d1=$("$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1)
	# the context files settle (the stat cache remembers a file once its
	# ctime is 2 s old), and the next build records them
	sleep 2.2
	d2=$("$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1)
	[ "$d1" = "$d2" ]
	before=$(stat -c '%i %Y' "$IMGBUILD_ROOT/cache/stat.bin")
	run cached_build "$T/strace.log"
	[ "$status" -eq 0 ]
	[ "$output" = "$d1" ]
	# opened for writing: the two lock files only; nothing else tried
	run grep -v -e 'O_RDONLY' -e '+++ exited' -e '--- SIG' "$T/strace.log"
	echo "$output"
	[ "$(grep -vc -e 'gc\.lock"' -e 'index\.lock"' <<<"$output")" -eq 0 ]
	[ "$before" = "$(stat -c '%i %Y' "$IMGBUILD_ROOT/cache/stat.bin")" ]
}

@test "a cached rebuild in another context keeps the stat cache of the first" {
	"$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1 >/dev/null
	cp -a "$T/ctx" "$T/ctx2"
	sleep 2.2
	"$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1 >/dev/null
	"$IMGBUILD" -q build "$T/ctx2/recipe.lua" -t localhost/cached:2 >/dev/null
	# the first context's files are not read again
	run traced -f -qq -e trace=openat -o "$T/open.log" \
		"$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1
	[ "$status" -eq 0 ]
	cat "$T/open.log"
	! grep -E 'src/[ab]/f[0-9]"' "$T/open.log" || false
}

@test "a cached rebuild loads no shared object but libc and libm" {
	d1=$("$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1)
	run --separate-stderr env LD_DEBUG=files "$IMGBUILD" -q build "$T/ctx/recipe.lua" -t localhost/cached:1
	[ "$status" -eq 0 ]
	[ "$output" = "$d1" ]
	echo "$stderr" | grep -o 'file=[^ ]*' | sort -u
	loaded=$(echo "$stderr" | grep -o 'file=[^ ]*' | sed 's/^file=//' | sort -u |
		grep -v -e '^libc\.so\.' -e '^libm\.so\.' -e '^lib\(asan\|ubsan\|stdc++\|gcc_s\)\.so\.' || true)
	[ -z "$loaded" ]
}
