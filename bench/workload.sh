# The reference workload R1, shared by bench/run.sh and bench/cache.sh.
#
#   bench_workload DIR   fill DIR with the context: a ~130 MB / 8000-file
#                        tree (/usr/include from linux-libc-dev), recipe.lua
#                        and the equivalent Containerfile for buildah
#
# busybox base; copy the tree; a run that writes 1000 files; a run that
# deletes a subtree; env, workdir, entrypoint.
bench_workload() {
	local ctx=$1
	mkdir -p "$ctx"
	cp -a /usr/include "$ctx/include"
	cat >"$ctx/recipe.lua" <<'LUA'
from "localhost/busybox:latest"
copy { "include/", "/usr/include/" }
run "mkdir -p /data && i=0; while [ $i -lt 1000 ]; do echo file $i > /data/f$i; i=$((i+1)); done"
run "rm -rf /usr/include/linux"
env { APP = "bench" }
workdir "/data"
entrypoint { "/bin/sh", "-c", "ls | wc -l" }
LUA
	cat >"$ctx/Containerfile" <<'DOCKER'
FROM localhost/busybox:latest
COPY include/ /usr/include/
RUN mkdir -p /data && i=0; while [ $i -lt 1000 ]; do echo file $i > /data/f$i; i=$((i+1)); done
RUN rm -rf /usr/include/linux
ENV APP=bench
WORKDIR /data
ENTRYPOINT ["/bin/sh", "-c", "ls | wc -l"]
DOCKER
	printf 'Containerfile\nrecipe.lua\n' >"$ctx/.dockerignore"
}
