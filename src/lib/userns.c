/* Rootless mode: re-entering a user namespace mapped with the caller's
 * subordinate ids (see userns.h). */
#include "userns.h"

#include <errno.h>
#include <linux/capability.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define SUBID_MAX 16

/* the caller's login name and whether its namespace has subordinate ids;
 * set by ib_userns_enter before the fork, read by the child */
static char userns_user[256];
static int userns_single = -1; /* 1: only the caller is mapped */

static bool uid_map_is_identity(void)
{
	cleanup_fclose FILE *f = fopen("/proc/self/uid_map", "re");
	if (!f)
		return true; /* no user namespaces in this kernel */
	unsigned long in, out, count;
	int lines = 0;
	bool identity = false;
	while (fscanf(f, "%lu %lu %lu", &in, &out, &count) == 3) {
		lines++;
		identity = in == 0 && out == 0 && count == 4294967295UL;
	}
	return lines == 1 && identity;
}

/* How many ids the current namespace maps (0 = unknown). */
static unsigned long uid_map_count(void)
{
	cleanup_fclose FILE *f = fopen("/proc/self/uid_map", "re");
	if (!f)
		return 0;
	unsigned long in, out, count, total = 0;
	while (fscanf(f, "%lu %lu %lu", &in, &out, &count) == 3)
		total += count;
	return total;
}

static int initial = -1; /* cached answer of ib_userns_is_initial */

bool ib_userns_is_initial(void)
{
	if (initial < 0)
		initial = uid_map_is_identity();
	return initial;
}

bool ib_userns_rootless(void)
{
	return !ib_userns_is_initial() || geteuid() != 0;
}

bool ib_userns_setgroups_denied(void)
{
	char buf[16] = "";
	cleanup_fclose FILE *f = fopen("/proc/self/setgroups", "re");
	if (!f || !fgets(buf, sizeof(buf), f))
		return false;
	return strncmp(buf, "deny", 4) == 0;
}

/* trusted.* needs CAP_SYS_ADMIN in the initial user namespace: a
 * container's root without it (chroot isolation) uses user.* too */
bool ib_overlay_userxattr(void)
{
	/* not cached: a process may drop root (setuid) between two calls */
	if (ib_userns_rootless())
		return true;
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	return syscall(SYS_capget, &hdr, data) != 0 || !(data[0].effective & (1u << CAP_SYS_ADMIN));
}

const char *ib_overlay_xattr_prefix(void)
{
	return ib_overlay_userxattr() ? "user.overlay." : "trusted.overlay.";
}

const char *ib_overlay_opaque_xattr(void)
{
	return ib_overlay_userxattr() ? "user.overlay.opaque" : "trusted.overlay.opaque";
}

size_t ib_subid_parse(const char *text, const char *name, unsigned long id, ib_subid_range *out,
		      size_t cap)
{
	char idstr[32];
	snprintf(idstr, sizeof(idstr), "%lu", id);
	size_t n = 0;
	const char *p = text;
	while (p && *p && n < cap) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		char line[512];
		if (len < sizeof(line) && len > 0 && p[0] != '#') {
			memcpy(line, p, len);
			line[len] = '\0';
			char *c1 = strchr(line, ':');
			char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			if (c2) {
				*c1 = '\0';
				*c2 = '\0';
				char *e1, *e2;
				errno = 0;
				unsigned long start = strtoul(c1 + 1, &e1, 10);
				unsigned long count = strtoul(c2 + 1, &e2, 10);
				bool owner = (name && !strcmp(line, name)) || !strcmp(line, idstr);
				if (owner && !errno && e1 != c1 + 1 && !*e1 && e2 != c2 + 1 &&
				    (!*e2 || *e2 == '\r') && count > 0)
					out[n++] = (ib_subid_range){start, count};
			}
		}
		p = eol ? eol + 1 : NULL;
	}
	return n;
}

const char *ib_userns_unmapped_hint(void)
{
	static char hint[1024];
	int saved = errno; /* called in argument lists next to errno */
	if (!ib_userns_rootless())
		return "";
	if (userns_single == 1 || (userns_single < 0 && uid_map_count() <= 1)) {
		const char *u = userns_user[0] ? userns_user : "USER";
		snprintf(
		    hint, sizeof(hint),
		    " (rootless: only one id is mapped; give %s subordinate ids in /etc/subuid "
		    "and /etc/subgid, e.g. usermod --add-subuids 100000-165535 "
		    "--add-subgids 100000-165535 %s)",
		    u, u);
	} else {
		snprintf(
		    hint, sizeof(hint),
		    " (rootless: the id is outside the ranges of /etc/subuid and /etc/subgid)");
	}
	errno = saved;
	return hint;
}

static size_t read_subids(const char *path, const char *name, unsigned long id, ib_subid_range *out)
{
	cleanup_free char *text = NULL;
	ib_error *e = NULL;
	if (ib_read_file(path, 1 << 20, &text, NULL, &e) < 0) {
		ib_error_free(&e);
		return 0;
	}
	return ib_subid_parse(text, name, id, out, SUBID_MAX);
}

/* Full path of a helper (newuidmap) in $PATH. */
static char *find_helper(const char *name)
{
	const char *path = getenv("PATH");
	cleanup_free char *all = NULL;
	all = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
	for (char *dir = all, *next; dir; dir = next) {
		next = strchr(dir, ':');
		if (next)
			*next++ = '\0';
		if (!*dir)
			continue;
		char *p = ib_path_join(dir, name);
		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

/* newuidmap PID 0 ID 1 [1 START COUNT]... ; returns its exit status */
static int run_map(const char *helper, pid_t pid, unsigned long id, const ib_subid_range *r,
		   size_t n)
{
	cleanup_strv char **argv = NULL;
	char buf[64];
	ib_strv_push(&argv, helper);
	snprintf(buf, sizeof(buf), "%ld", (long)pid);
	ib_strv_push(&argv, buf);
	ib_strv_push(&argv, "0");
	snprintf(buf, sizeof(buf), "%lu", id);
	ib_strv_push(&argv, buf);
	ib_strv_push(&argv, "1");
	unsigned long next = 1;
	for (size_t i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), "%lu", next);
		ib_strv_push(&argv, buf);
		snprintf(buf, sizeof(buf), "%lu", r[i].start);
		ib_strv_push(&argv, buf);
		snprintf(buf, sizeof(buf), "%lu", r[i].count);
		ib_strv_push(&argv, buf);
		next += r[i].count;
	}
	pid_t c = fork();
	if (c < 0)
		return -1;
	if (c == 0) {
		execv(helper, argv);
		_exit(127);
	}
	int st;
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static volatile pid_t userns_child;

static void forward_signal(int sig)
{
	if (userns_child > 0)
		kill(userns_child, sig);
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	errno = e;
	return w == (ssize_t)strlen(s) ? 0 : -1;
}

/* In the child, after unshare: map only ourselves (no subordinate ids). */
static int map_self(uid_t uid, gid_t gid)
{
	char map[64];
	if (write_file("/proc/self/setgroups", "deny") < 0)
		return -1;
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
	if (write_file("/proc/self/uid_map", map) < 0)
		return -1;
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
	return write_file("/proc/self/gid_map", map);
}

int ib_userns_enter(ib_error **err)
{
	/* root of the initial namespace, or root of a namespace someone made
	 * for us (podman unshare): nothing to enter */
	if (geteuid() == 0)
		return 0;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	struct passwd *pw = getpwuid(uid);
	snprintf(userns_user, sizeof(userns_user), "%s", pw ? pw->pw_name : "");
	ib_subid_range ur[SUBID_MAX], gr[SUBID_MAX];
	size_t nu = read_subids("/etc/subuid", pw ? pw->pw_name : NULL, uid, ur);
	size_t ng = read_subids("/etc/subgid", pw ? pw->pw_name : NULL, uid, gr);
	bool subids = nu > 0 && ng > 0;
	cleanup_free char *newuidmap = NULL;
	cleanup_free char *newgidmap = NULL;
	if (subids) {
		newuidmap = find_helper("newuidmap");
		newgidmap = find_helper("newgidmap");
		if (!newuidmap || !newgidmap)
			return ib_error_setc(
			    err, IB_ERROR,
			    "rootless: %s not found: install it (Debian/Ubuntu: "
			    "apt-get install uidmap) to use the subordinate ids of "
			    "/etc/subuid and /etc/subgid",
			    newuidmap ? "newgidmap" : "newuidmap");
	}
	userns_single = !subids;

	int to_child[2], to_parent[2];
	if (pipe2(to_child, O_CLOEXEC) < 0)
		return ib_error_set(err, errno, "rootless: pipe");
	if (pipe2(to_parent, O_CLOEXEC) < 0) {
		int e = errno;
		close(to_child[0]);
		close(to_child[1]);
		return ib_error_set(err, e, "rootless: pipe");
	}
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(to_child[0]);
		close(to_child[1]);
		close(to_parent[0]);
		close(to_parent[1]);
		return ib_error_set(err, e, "rootless: fork");
	}
	if (pid == 0) {
		close(to_child[1]);
		close(to_parent[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (getppid() != parent)
			_exit(1);
		int e = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
		if (write(to_parent[1], &e, sizeof(e)) != (ssize_t)sizeof(e) || e)
			_exit(1);
		char go = 0;
		if (read(to_child[0], &go, 1) != 1 || go != 'g')
			_exit(1);
		close(to_child[0]);
		if (!subids && map_self(uid, gid) < 0) {
			e = errno;
			if (write(to_parent[1], &e, sizeof(e)) < 0)
				_exit(1);
			_exit(1);
		}
		e = 0;
		if (write(to_parent[1], &e, sizeof(e)) != (ssize_t)sizeof(e))
			_exit(1);
		close(to_parent[1]);
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			_exit(1);
		initial = 0;
		return 0;
	}
	close(to_child[0]);
	close(to_parent[1]);
	userns_child = pid;
	int e = 0;
	const char *what = NULL;
	char detail[512] = "";
	if (read(to_parent[0], &e, sizeof(e)) != (ssize_t)sizeof(e))
		e = ECHILD;
	if (e) {
		what = "unshare a user namespace";
		snprintf(detail, sizeof(detail),
			 " (user namespaces disabled? see sysctl user.max_user_namespaces and "
			 "kernel.unprivileged_userns_clone)");
	} else if (subids) {
		int st = run_map(newuidmap, pid, uid, ur, nu);
		if (st == 0)
			st = run_map(newgidmap, pid, gid, gr, ng);
		if (st != 0) {
			e = st < 0 ? errno : 0;
			what = "map the subordinate ids";
			snprintf(detail, sizeof(detail),
				 "%snewuidmap/newgidmap failed (status %d): check the entries of "
				 "%s in /etc/subuid and /etc/subgid and that the helpers are "
				 "setuid root",
				 e ? "" : ": ", st, userns_user[0] ? userns_user : "the user");
		}
	}
	if (!what) {
		char go = 'g';
		if (write(to_child[1], &go, 1) != 1 ||
		    read(to_parent[0], &e, sizeof(e)) != (ssize_t)sizeof(e))
			e = e ? e : ECHILD;
		if (e)
			what = "map the user namespace";
	}
	close(to_child[1]);
	close(to_parent[0]);
	if (what) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (e)
			return ib_error_set(err, e, "rootless: %s%s", what, detail);
		return ib_error_setc(err, IB_ERROR, "rootless: %s%s", what, detail);
	}

	struct sigaction sa = {.sa_handler = forward_signal};
	sigemptyset(&sa.sa_mask);
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			exit(1);
	if (WIFSIGNALED(st)) {
		signal(WTERMSIG(st), SIG_DFL);
		raise(WTERMSIG(st));
		exit(128 + WTERMSIG(st));
	}
	exit(WEXITSTATUS(st));
}
