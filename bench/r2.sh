# shellcheck shell=bash
# The real-world workload R2, shared by bench/run.sh (sourced, not run alone).
#
#   r2_prepare CACHE   once per machine, idempotent: a Debian bookworm minbase
#                      rootfs (debootstrap) as CACHE/base.tar, and a local apt
#                      repository CACHE/repo (the .debs of R2_PKGS and their
#                      dependencies, downloaded once, indexed with
#                      dpkg-scanpackages).  Needs root and the machine's
#                      own Debian mirror, read from its apt sources.
#   r2_workload DIR    fill DIR with the context: the repository, an app
#                      tree (a few hundred files), recipe.lua and the
#                      equivalent Containerfile
#
# The image: the minbase base; copy the repository; apt-get update + install
# of R2_PKGS from it (a file: source, no network); copy the app; a non-root
# user; user, workdir, entrypoint.

R2_PKGS="curl ca-certificates python3-minimal"
# the install step, the same text in the recipe, the Containerfile and
# r2_floor
R2_APT="echo 'deb [trusted=yes] file:/srv/repo ./' > /etc/apt/sources.list && apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $R2_PKGS && rm -rf /var/lib/apt/lists/*"

# r2_mirror: the first http(s) URI this machine's apt sources use for the
# bookworm suite of Debian main (deb822 .sources or one-line .list)
r2_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		case $f in
		*.sources)
			awk 'BEGIN { RS = ""; FS = "\n" }
				{ uri = ""; suites = ""; en = 1
				  for (i = 1; i <= NF; i++) {
					if ($i ~ /^URIs:/) { uri = $i; sub(/^URIs:[ \t]*/, "", uri); sub(/[ \t].*/, "", uri) }
					if ($i ~ /^Suites:/) suites = " " $i " "
					if ($i ~ /^Enabled:[ \t]*no/) en = 0
				  }
				  if (en && uri ~ /^https?:/ && suites ~ /[ \t]bookworm[ \t]/) { print uri; exit } }' "$f"
			;;
		*)
			awk '$1 == "deb" {
				for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break
				if ($(i) ~ /^https?:/ && $(i + 1) == "bookworm") { print $(i); exit } }' "$f"
			;;
		esac
	done | head -n 1
}

# r2_need CMD PKG...: apt-get install PKG... unless CMD is there
r2_need() {
	local cmd=$1
	shift
	command -v "$cmd" >/dev/null 2>&1 && return 0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

r2_prepare() {
	local cache=$1 mirror t
	mkdir -p "$cache"
	if [ -f "$cache/base.tar" ] && [ -f "$cache/repo/Packages" ]; then
		return 0
	fi
	r2_need debootstrap debootstrap
	r2_need dpkg-scanpackages dpkg-dev
	mirror=$(r2_mirror)
	[ -n "$mirror" ] || { echo "bench/r2.sh: no bookworm mirror in the apt sources" >&2; return 1; }
	t=$(date +%s)
	if [ ! -f "$cache/base.tar" ]; then
		echo "== R2: debootstrap --variant=minbase bookworm from $mirror (once)"
		rm -rf "$cache/rootfs"
		debootstrap --variant=minbase bookworm "$cache/rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
			{ tail -n 20 "$cache/debootstrap.log" >&2; return 1; }
		rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"*
		tar -C "$cache/rootfs" --numeric-owner --sort=name --xattrs -cf "$cache/base.tar.tmp" .
		mv "$cache/base.tar.tmp" "$cache/base.tar"
	fi
	if [ ! -f "$cache/repo/Packages" ]; then
		echo "== R2: downloading $R2_PKGS and their dependencies (once)"
		[ -d "$cache/rootfs" ] || { mkdir -p "$cache/rootfs" && tar -C "$cache/rootfs" -xf "$cache/base.tar"; }
		rm -rf "$cache/repo"
		mkdir -p "$cache/repo/partial"
		# resolve against the minbase's own dpkg status, so what the rootfs
		# lacks is downloaded, whatever the host has installed
		# shellcheck disable=SC2086
		apt-get -q -y --download-only --no-install-recommends \
			-o Dir::State::status="$cache/rootfs/var/lib/dpkg/status" \
			-o Dir::Cache::archives="$cache/repo" \
			install $R2_PKGS >"$cache/download.log" 2>&1 ||
			{ tail -n 20 "$cache/download.log" >&2; return 1; }
		rmdir "$cache/repo/partial" 2>/dev/null || true
		rm -f "$cache/repo/lock"
		(cd "$cache/repo" && dpkg-scanpackages -m . /dev/null >Packages.tmp 2>/dev/null && mv Packages.tmp Packages)
	fi
	rm -rf "$cache/rootfs"
	echo "== R2: prepared in $(($(date +%s) - t)) s: base $(du -sh "$cache/base.tar" | cut -f1)," \
		"repository $(find "$cache/repo" -name "*.deb" | wc -l) .debs, $(du -sh "$cache/repo" | cut -f1)"
}

# r2_app DIR: a small application source tree (~300 files, deterministic)
r2_app() {
	local dir=$1 i j
	for i in $(seq 0 14); do
		mkdir -p "$dir/app/pkg$i"
		for j in $(seq 0 19); do
			printf '"""module %d.%d of the benchmark app"""\n\ndef f%d_%d(x):\n    return x * %d + %d\n' \
				"$i" "$j" "$i" "$j" "$i" "$j" >"$dir/app/pkg$i/mod$j.py"
		done
		: >"$dir/app/pkg$i/__init__.py"
	done
	cat >"$dir/app/main.py" <<'PY'
import sys
print("bench app", sys.version.split()[0])
PY
}

r2_workload() {
	local ctx=$1 cache=$2
	mkdir -p "$ctx"
	cp -a "$cache/repo" "$ctx/repo"
	r2_app "$ctx"
	cat >"$ctx/recipe.lua" <<LUA
from "localhost/bookworm:base"
copy { "repo/", "/srv/repo/" }
run "$R2_APT"
copy { "app/", "/opt/app/" }
run "useradd --create-home --uid 1000 app"
user "app"
workdir "/opt/app"
entrypoint { "python3", "/opt/app/main.py" }
LUA
	cat >"$ctx/Containerfile" <<DOCKER
FROM localhost/bookworm:base
COPY repo/ /srv/repo/
RUN $R2_APT
COPY app/ /opt/app/
RUN useradd --create-home --uid 1000 app
USER app
WORKDIR /opt/app
ENTRYPOINT ["python3", "/opt/app/main.py"]
DOCKER
	printf 'Containerfile\nrecipe.lua\n' >"$ctx/.dockerignore"
}

# r2_floor CACHE DIR: seconds the install step takes with no build tool at
# all: the base unpacked into DIR (untimed), the repository copied in, then
# only the step, in a chroot with /proc, timed.  DIR is removed after.
# dpkg's syncs (about 1,260 fsync and 1,530 sync_file_range) reach the disk
# here, as in buildah's and BuildKit's steps; imgbuild's run steps answer
# them without doing anything (docs/sandbox.md, --sync-steps), so its apt
# step can come in under this floor.
r2_floor() {
	local cache=$1 dir=$2 t0 t1 rc=0
	rm -rf "$dir"
	mkdir -p "$dir"
	tar -C "$dir" -xf "$cache/base.tar"
	mkdir -p "$dir/srv"
	cp -a "$cache/repo" "$dir/srv/repo"
	mount -t proc proc "$dir/proc"
	t0=$(date +%s.%N)
	chroot "$dir" /bin/sh -c "$R2_APT" >"$dir.log" 2>&1 || rc=$?
	t1=$(date +%s.%N)
	umount "$dir/proc"
	rm -rf "$dir"
	[ "$rc" = 0 ] || { tail -n 20 "$dir.log" >&2; return 1; }
	echo "$t1 - $t0" | bc -l | xargs printf '%.3f'
}
