/* The run step's cgroup: a pids limit (RLIMIT_NPROC does not bind uid 0)
 * and an optional memory limit.  One cgroup per step, next to the caller's
 * own: cgroup v2 where the host has it (the pids and memory controllers
 * must be enabled in the parent, as systemd does for delegated units), v1
 * on hybrid hosts (the caller's cgroup in the pids and memory hierarchies).
 * The monitor joins it before forking anything of the step, so every
 * process of the step is counted (its network helper is not: it runs
 * slirp4netns, trusted code, and forks before). */
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SB_CG_ROOT "/sys/fs/cgroup"

static atomic_uint sb_cg_counter;

/* The caller's path in a hierarchy: "0::/x" for v2 (controller NULL), or
 * the v1 line naming controller.  Owned string without the leading "/". */
static char *sb_cg_self(const char *controller)
{
	cleanup_free char *data = NULL;
	size_t len = 0;
	if (ib_read_file("/proc/self/cgroup", 1 << 20, &data, &len, NULL) < 0)
		return NULL;
	for (char *line = data; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2) {
			*c2 = '\0';
			const char *ctrls = c1 + 1;
			bool match = false;
			if (!controller) {
				match = strcmp(line, "0") == 0 && *ctrls == '\0';
			} else {
				for (const char *p = ctrls; *p;) {
					size_t n = strcspn(p, ",");
					if (n == strlen(controller) && !strncmp(p, controller, n))
						match = true;
					p += n + (p[n] == ',');
				}
			}
			if (match) {
				const char *path = c2 + 1;
				while (*path == '/')
					path++;
				return xstrdup(path);
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	return NULL;
}

static int sb_cg_write(const char *dir, const char *file, const char *value)
{
	cleanup_free char *p = xasprintf("%s/%s", dir, file);
	cleanup_close int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = strlen(value);
	return write(fd, value, n) == (ssize_t)n ? 0 : -1;
}

/* Make dir below base/self (or below base when self is ""); on v2 the
 * parent must delegate the controllers: enabled here when possible. */
static char *sb_cg_mkdir(const char *parent, const char *name)
{
	char *dir = xasprintf("%s/%s", parent, name);
	if (mkdir(dir, 0755) < 0) {
		free(dir);
		return NULL;
	}
	return dir;
}

static void sb_cg_add(ib_sb_cgroup *cg, char *dir)
{
	cg->dirs[cg->n_dirs] = dir;
	cg->procs[cg->n_dirs] = xasprintf("%s/cgroup.procs", dir);
	cg->n_dirs++;
}

static char *sb_cg_name(void)
{
	return xasprintf("imgbuild-%ld-%u", (long)getpid(), atomic_fetch_add(&sb_cg_counter, 1));
}

static int sb_cg_v2(ib_sb_cgroup *cg, const char *pids, const char *mem)
{
	cleanup_free char *self = sb_cg_self(NULL);
	if (!self)
		return -1;
	/* a sibling of the caller's cgroup: the caller's own cannot have
	 * children with controllers while it holds processes */
	cleanup_free char *parent = NULL;
	char *slash = strrchr(self, '/');
	if (slash) {
		*slash = '\0';
		parent = xasprintf(SB_CG_ROOT "/%s", self);
	} else {
		parent = xstrdup(SB_CG_ROOT);
	}
	sb_cg_write(parent, "cgroup.subtree_control", mem ? "+pids +memory" : "+pids");
	cleanup_free char *name = sb_cg_name();
	char *dir = sb_cg_mkdir(parent, name);
	if (!dir)
		return -1;
	sb_cg_add(cg, dir);
	if (sb_cg_write(dir, "pids.max", pids) < 0 ||
	    (mem && sb_cg_write(dir, "memory.max", mem) < 0))
		return -1;
	if (mem)
		sb_cg_write(dir, "memory.swap.max", "0");
	return 0;
}

static int sb_cg_v1(ib_sb_cgroup *cg, const char *pids, const char *mem)
{
	const char *ctrl[2] = {"pids", "memory"};
	const char *file[2] = {"pids.max", "memory.limit_in_bytes"};
	const char *val[2] = {pids, mem};
	for (size_t i = 0; i < 2; i++) {
		if (!val[i])
			continue;
		cleanup_free char *self = sb_cg_self(ctrl[i]);
		if (!self)
			return -1;
		cleanup_free char *parent = *self ? xasprintf(SB_CG_ROOT "/%s/%s", ctrl[i], self)
						  : xasprintf(SB_CG_ROOT "/%s", ctrl[i]);
		cleanup_free char *name = sb_cg_name();
		char *dir = sb_cg_mkdir(parent, name);
		if (!dir)
			return -1;
		sb_cg_add(cg, dir);
		if (sb_cg_write(dir, file[i], val[i]) < 0)
			return -1;
	}
	return 0;
}

int ib_sb_cgroup_create(ib_sb_cgroup *cg, unsigned long pids_max, unsigned long long memory_max,
			char **warning, ib_error **err)
{
	(void)err;
	memset(cg, 0, sizeof(*cg));
	*warning = NULL;
	char pids[32], mem[32];
	if (pids_max)
		snprintf(pids, sizeof(pids), "%lu", pids_max);
	else
		snprintf(pids, sizeof(pids), "max");
	snprintf(mem, sizeof(mem), "%llu", memory_max);
	struct stat st;
	bool v2 = stat(SB_CG_ROOT "/cgroup.controllers", &st) == 0;
	int r = v2 ? sb_cg_v2(cg, pids, memory_max ? mem : NULL)
		   : sb_cg_v1(cg, pids, memory_max ? mem : NULL);
	if (r == 0)
		return 0;
	int e = errno;
	ib_sb_cgroup_destroy(cg);
	*warning =
	    xasprintf("no writable %s cgroup hierarchy (%s): run steps are not limited "
		      "in processes%s (rootless needs a delegated cgroup, e.g. "
		      "systemd-run --user --scope -p Delegate=yes)",
		      v2 ? "v2" : "v1 pids/memory", strerror(e), memory_max ? " nor memory" : "");
	return 0;
}

int ib_sb_cgroup_enter(const ib_sb_cgroup *cg, pid_t pid)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld", (long)pid);
	for (size_t i = 0; i < cg->n_dirs; i++) {
		int fd = open(cg->procs[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		ssize_t w = write(fd, buf, (size_t)n);
		int e = errno;
		close(fd);
		if (w != n) {
			errno = e;
			return -1;
		}
	}
	return 0;
}

bool ib_sb_cgroup_pids_hit(const ib_sb_cgroup *cg)
{
	for (size_t i = 0; i < cg->n_dirs; i++) {
		cleanup_free char *p = xasprintf("%s/pids.events", cg->dirs[i]);
		cleanup_free char *data = NULL;
		size_t len = 0;
		if (ib_read_file(p, 4096, &data, &len, NULL) < 0)
			continue;
		const char *m = strstr(data, "max ");
		if (m && strtoul(m + 4, NULL, 10) > 0)
			return true;
	}
	return false;
}

/* SIGKILL every process listed; returns how many there were. */
static size_t sb_cg_kill_all(const char *procs)
{
	cleanup_free char *data = NULL;
	size_t len = 0, n = 0;
	if (ib_read_file(procs, 1 << 22, &data, &len, NULL) < 0)
		return 0;
	for (char *p = data; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
			n++;
		p = end;
		while (*p == '\n')
			p++;
	}
	return n;
}

void ib_sb_cgroup_destroy(ib_sb_cgroup *cg)
{
	for (size_t i = 0; i < cg->n_dirs; i++) {
		sb_cg_write(cg->dirs[i], "cgroup.kill", "1"); /* v2, Linux >= 5.14 */
		for (int tries = 0; tries < 2000; tries++) {
			if (rmdir(cg->dirs[i]) == 0 || errno == ENOENT)
				break;
			if (errno != EBUSY)
				break;
			sb_cg_kill_all(cg->procs[i]);
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
		free(cg->dirs[i]);
		free(cg->procs[i]);
	}
	memset(cg, 0, sizeof(*cg));
}
