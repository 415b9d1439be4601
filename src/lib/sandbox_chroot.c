/* Which isolation a step gets: the probe behind IB_ISOLATION_AUTO. */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "userns.h"
#include "util.h"

/* In a child: the namespaces and the overlay mount a step needs, with the
 * upper dir below dir.  Exit status 0 when all of it works. */
static void probe_child(const char *dir)
{
	if (geteuid() != 0) { /* as the sandbox does: a user namespace of one id */
		uid_t uid = geteuid();
		gid_t gid = getegid();
		char map[64];
		if (unshare(CLONE_NEWUSER) < 0)
			_exit(5);
		int fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
		if (fd >= 0 && write(fd, "deny", 4) < 0)
			_exit(5);
		if (fd >= 0)
			close(fd);
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
		fd = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			_exit(5);
		close(fd);
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
		fd = open("/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			_exit(5);
		close(fd);
	}
	if (unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
		_exit(1);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		_exit(2);
	char opt[4096];
	int n = snprintf(opt, sizeof(opt), "lowerdir=%s/l1:%s/l2,upperdir=%s/u,workdir=%s/w%s", dir,
			 dir, dir, dir, ib_overlay_userxattr() ? ",userxattr" : "");
	if (n < 0 || (size_t)n >= sizeof(opt))
		_exit(3);
	char mnt[4096];
	snprintf(mnt, sizeof(mnt), "%s/m", dir);
	if (mount("overlay", mnt, "overlay", 0, opt) < 0)
		_exit(4);
	_exit(0);
}

static bool probe_oci(const char *work_dir)
{
	if (!work_dir)
		return true;
	cleanup_free char *dir = xasprintf("%s/isolation-probe", work_dir);
	static const char *const sub[] = {"l1", "l2", "u", "w", "m"};
	bool ok = mkdir(dir, 0700) == 0;
	for (size_t i = 0; ok && i < sizeof(sub) / sizeof(sub[0]); i++) {
		cleanup_free char *p = ib_path_join(dir, sub[i]);
		ok = mkdir(p, 0700) == 0;
	}
	if (ok) {
		fflush(NULL);
		pid_t pid = fork();
		if (pid == 0)
			probe_child(dir);
		int st = 0;
		ok =
		    pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	ib_error *e = NULL;
	ib_rm_rf(dir, &e);
	ib_error_free(&e);
	return ok;
}

ib_sandbox_isolation ib_sandbox_resolve_isolation(ib_sandbox_isolation iso, const char *work_parent)
{
	static int probed = -1;
	if (iso != IB_ISOLATION_AUTO)
		return iso;
	if (probed < 0)
		probed = probe_oci(work_parent) ? IB_ISOLATION_OCI : IB_ISOLATION_CHROOT;
	return (ib_sandbox_isolation)probed;
}

const char *ib_sandbox_isolation_name(ib_sandbox_isolation iso)
{
	switch (iso) {
	case IB_ISOLATION_OCI:
		return "oci";
	case IB_ISOLATION_CHROOT:
		return "chroot";
	default:
		return "auto";
	}
}
