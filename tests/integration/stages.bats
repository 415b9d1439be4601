#!/usr/bin/env bats
# Stages that do not depend on each other are built side by side, each in a
# process of its own; the sequential pass then builds the target.

bats_require_minimum_version 1.5.0

load helpers/build

setup_file() {
	build_setup_file
}

teardown_file() {
	build_teardown_file
}

setup() {
	T="$(mktemp -d "$SUITE_TMP/t.XXXXXX")"
	mkdir -p "$T/ctx"
	cat > "$T/ctx/recipe.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run "sleep 3; echo a > /a"
stage("b", "localhost/busybox:latest")
run "sleep 3; echo b > /b"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/a", "/a" }
copy { from = "b", "/b", "/b" }
run "cat /a /b > /ab"
LUA
}

# The step events of a --progress json log, in order: "ID:STATE" per line.
step_events() {
	python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "step":
        print("%d:%s" % (e["id"], e["state"]))
' "$1"
}

@test "independent stages run at the same time; the image is the one a sequential build makes" {
	"$IMGBUILD" build "$T/ctx/recipe.lua" --no-cache --progress json -t localhost/par:1 \
		>"$T/par.digest" 2>"$T/par.log"
	step_events "$T/par.log" >"$T/par.ev"
	cat "$T/par.ev"
	# both stages' steps started before either finished
	[ "$(sed -n 1,2p "$T/par.ev" | sort | tr '\n' ' ')" = "1:running 2:running " ]
	# every step ran once: the sequential pass reran nothing
	[ "$(grep -c ':running' "$T/par.ev")" -eq 5 ]
	[ "$(grep -c ':done' "$T/par.ev")" -eq 5 ]
	! grep -q ':cached' "$T/par.ev"
	IMGBUILD_PARALLEL_STAGES=0 "$IMGBUILD" build "$T/ctx/recipe.lua" --no-cache --progress json \
		-t localhost/seq:1 >"$T/seq.digest" 2>"$T/seq.log"
	step_events "$T/seq.log" >"$T/seq.ev"
	[ "$(head -2 "$T/seq.ev" | tr '\n' ' ')" = "1:running 1:done " ]
	[ "$(cat "$T/par.digest")" = "$(cat "$T/seq.digest")" ]
	run podrun localhost/par:1 cat /ab
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf 'a\nb')" ]
	# a rebuild is cached in one process: every step CACHED, numbered as before
	run "$IMGBUILD" build "$T/ctx/recipe.lua" --progress plain --debug -t localhost/par:1
	[ "$status" -eq 0 ]
	[[ "$output" != *"built side by side"* ]]
	[ "$(grep -c '^#[1-5] .*CACHED' <<<"$output")" -eq 5 ]
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
}

@test "plain progress: each stage's output under its own step number" {
	cat > "$T/ctx/out.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run "echo from-a-$RANDOM; touch /x"
stage("b", "localhost/busybox:latest")
run "echo from-b-$RANDOM; touch /y"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/x", "/x" }
copy { from = "b", "/y", "/y" }
LUA
	run "$IMGBUILD" build "$T/ctx/out.lua" --no-cache --progress plain
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"#1 from-a-"* ]]
	[[ "$output" == *"#2 from-b-"* ]]
	[[ "$output" == *"#1 [a 1/1] RUN /bin/sh -c echo from-a-"* ]]
	[[ "$output" == *"#2 [b 1/1] RUN /bin/sh -c echo from-b-"* ]]
	[[ "$output" == *"#4 [final 2/2] COPY"* ]]
}

@test "a stage that fails stops the others: its error with its recipe line, exit 1, nothing left behind" {
	cat > "$T/ctx/fail.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run "echo slow-$$ > /dev/null; sleep 40"
stage("b", "localhost/busybox:latest")
run "sleep 1; exit 3"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/bin/busybox", "/a" }
copy { from = "b", "/bin/busybox", "/b" }
LUA
	run --separate-stderr "$IMGBUILD" build "$T/ctx/fail.lua" --progress plain -t localhost/fail:1
	echo "$stderr"
	[ "$status" -eq 1 ]
	last=$(tail -1 <<<"$stderr")
	[[ "$last" == "imgbuild: error: $T/ctx/fail.lua:4: "*"exit"*"3"* ]]
	[ "$(grep -c '^imgbuild: error' <<<"$stderr")" -eq 1 ]
	# stage a's sleep was stopped with the build
	! pgrep -f "sleep 40" >/dev/null
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
	run "$IMGBUILD" images
	[[ "$output" != *"localhost/fail"* ]]
}

@test "SIGINT while stages run side by side: exit 130, their steps stopped, nothing left behind" {
	cat > "$T/ctx/int.lua" <<'LUA'
stage("a", "localhost/busybox:latest")
run "sleep 41"
stage("b", "localhost/busybox:latest")
run "sleep 42"
stage("final", "localhost/busybox:latest")
copy { from = "a", "/bin/busybox", "/a" }
copy { from = "b", "/bin/busybox", "/b" }
LUA
	"$IMGBUILD" build "$T/ctx/int.lua" --progress plain >"$T/int.out" 2>"$T/int.err" &
	pid=$!
	for _ in $(seq 100); do
		pgrep -f "sleep 41" >/dev/null && pgrep -f "sleep 42" >/dev/null && break
		sleep 0.1
	done
	pgrep -f "sleep 41" >/dev/null
	pgrep -f "sleep 42" >/dev/null
	kill -INT "$pid"
	rc=0
	wait "$pid" || rc=$?
	cat "$T/int.err"
	[ "$rc" -eq 130 ]
	[ "$(tail -1 "$T/int.err")" = "imgbuild: error: interrupted" ]
	sleep 0.5
	! pgrep -f "sleep 4[12]" >/dev/null
	[ -z "$(ls -A "$IMGBUILD_ROOT/tmp")" ]
	run "$IMGBUILD" verify
	[ "$status" -eq 0 ]
}
