/* The run-step sandbox: see sandbox.h for the contract.
 *
 * Everything that allocates happens in the caller before the first fork; the
 * three processes below it (monitor, init, command) only make system calls
 * and format into buffers prepared for them, so a multi-threaded caller is
 * safe.  They report failures to the caller as fixed-size records on a
 * close-on-exec pipe (fd 3 in each of them); the command's output travels on
 * a second pipe, read here line by line. */
#include "sandbox.h"
#include "sandbox_internal.h"
#include "layer.h"
#include "oci.h"
#include "userns.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/keyctl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "passwd.h"
#include "path.h"
#include "util.h"

#define SB_DEFAULT_HOSTNAME "imgbuild"
#define SB_MAX_LINE (64 * 1024)
#define SB_ERR_FD 3
#define SB_FAIL_STATUS 125
#define SB_MAX_GROUPS 256
#define SB_DEFAULT_PIDS 4096

/* Docker's default capability set (moby oci/caps/defaults.go): 0xa80425fb. */
#define SB_CAP(c) (UINT64_C(1) << (c))
#define SB_DEFAULT_CAPS                                                                            \
	(SB_CAP(CAP_CHOWN) | SB_CAP(CAP_DAC_OVERRIDE) | SB_CAP(CAP_FSETID) | SB_CAP(CAP_FOWNER) |  \
	 SB_CAP(CAP_MKNOD) | SB_CAP(CAP_NET_RAW) | SB_CAP(CAP_SETGID) | SB_CAP(CAP_SETUID) |       \
	 SB_CAP(CAP_SETFCAP) | SB_CAP(CAP_SETPCAP) | SB_CAP(CAP_NET_BIND_SERVICE) |                \
	 SB_CAP(CAP_SYS_CHROOT) | SB_CAP(CAP_KILL) | SB_CAP(CAP_AUDIT_WRITE))

/* Devices bound from the host into the container's /dev. */
static const char *const sb_devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
#define SB_N_DEVICES (sizeof(sb_devices) / sizeof(sb_devices[0]))

/* Docker's masked and read-only paths: host information and host-wide
 * knobs (/proc/sys/kernel/core_pattern would run a host program). */
static const char *const sb_masked[] = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
};
static const char *const sb_readonly[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

/* Mount points the image may lack: they come from the bottom-most lower dir
 * (the "skeleton") instead of being created in the upper dir. */
static const char *const sb_base_dirs[] = {"/proc", "/sys", "/dev"};

enum { SB_MSG_ERROR = 1, SB_MSG_TIMEOUT = 2 };

typedef struct sb_msg {
	int32_t kind;
	int32_t code;	   /* IB_E* for SB_MSG_ERROR */
	int32_t sys_errno; /* 0 = none */
	char text[1012];
} sb_msg;

typedef struct sb_bind {
	const char *source;
	char *target; /* normalised absolute container path, owned */
	bool readonly;
	bool is_file;
	bool optional;	     /* host /etc files: skipped when unavailable */
	int fd;		     /* detached clone of the source (init only) */
	const char *content; /* generated file (source unused) */
} sb_bind;

typedef struct sb_created {
	char path[PATH_MAX];
	bool is_dir;
} sb_created;

/* Prepared by the caller; the children get a copy with the fork. */
typedef struct sb_ctx {
	const ib_sandbox_options *o;
	char *const *lowers;
	size_t n_lowers;
	int *lower_fds;
	sb_bind *binds;
	size_t n_binds;
	char **envp; /* room for one more entry (HOME) */
	size_t n_env;
	bool has_home;
	const char *path_env;
	const char *workdir;
	const char *hostname;
	char *user_part;  /* NULL = root */
	char *group_part; /* NULL = from passwd */
	bool rootless;	  /* not root of the initial user namespace: userxattr */
	bool own_userns;  /* not root at all: a user namespace per step */
	bool setgroups_denied;
	bool userxattr;		/* ib_overlay_userxattr(), decided by the caller */
	bool chroot;		/* chroot isolation (ib_sandbox_isolation) */
	const char *chroot_dir; /* its copied root */
	bool pidns;		/* set by the monitor: a PID namespace of our own */
	bool uts;		/* set by init: a UTS namespace of our own */
	int null_fd;		/* chroot isolation: /dev/null opened before chroot */
	bool netns;		/* a network namespace of its own */
	bool slirp;		/* ... connected by slirp4netns */
	bool host_net;		/* the host's: no CAP_NET_RAW */
	bool seccomp;
	ib_sb_filter filter;
	ib_sb_net net;
	ib_sb_cgroup cg;
	unsigned long pids_max; /* 0 = none */
	uid_t host_uid;
	gid_t host_gid;
	pid_t caller_pid;
	char *optbuf; /* overlay mount(2) options, one page */
	size_t optbuf_len;
	sb_created *created; /* mount points made in the merged root */
	size_t n_created;
	size_t cap_created;
	/* resolved by init */
	uid_t uid;
	gid_t gid;
	gid_t groups[SB_MAX_GROUPS];
	size_t n_groups;
	char home[PATH_MAX + 8];
} sb_ctx;

/* ---------------------------------------------------------------------- */
/* child side: reporting                                                   */

/* The error pipe of the current child process (only ever set after fork). */
static int sb_err_fd = -1;

static void sb_vreport(int kind, int code, int errnum, const char *fmt, va_list ap)
{
	sb_msg m;
	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.code = code;
	m.sys_errno = errnum;
	vsnprintf(m.text, sizeof(m.text), fmt, ap);
	ssize_t r;
	do
		r = write(sb_err_fd, &m, sizeof(m));
	while (r < 0 && errno == EINTR);
}

static void sb_report(int kind, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void sb_report(int kind, int code, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sb_vreport(kind, code, errnum, fmt, ap);
	va_end(ap);
}

/* Report "WHAT: strerror(errnum)" as a sandbox failure and exit. */
static void sb_fail(int errnum, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void sb_fail(int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sb_vreport(SB_MSG_ERROR, errnum == ENOENT ? IB_ENOTFOUND : IB_ERROR, errnum, fmt, ap);
	va_end(ap);
	_exit(SB_FAIL_STATUS);
}

static void sb_failc(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void sb_failc(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sb_vreport(SB_MSG_ERROR, code, 0, fmt, ap);
	va_end(ap);
	_exit(SB_FAIL_STATUS);
}

/* ---------------------------------------------------------------------- */
/* child side: small helpers                                               */

/* Whether the network namespace this process is in has no interface but
 * lo (read with plain syscalls: this runs between fork and exec). */
static bool sb_only_loopback(void)
{
	int fd = open("/proc/self/net/dev", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || n == (ssize_t)sizeof(buf) - 1)
		return false;
	buf[n] = '\0';
	/* two header lines, then "  NAME: counters..." */
	char *line = buf;
	for (int k = 0; k < 2 && line; k++) {
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	while (line && *line) {
		char *colon = strchr(line, ':');
		char *eol = strchr(line, '\n');
		if (!colon || (eol && colon > eol))
			return false;
		char *name = line;
		while (*name == ' ')
			name++;
		if ((size_t)(colon - name) != 2 || strncmp(name, "lo", 2) != 0)
			return false;
		line = eol ? eol + 1 : NULL;
	}
	return true;
}

static void sb_close_from(int lowfd)
{
	if (close_range((unsigned)lowfd, ~0U, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 1 << 20)
		max = 1 << 20;
	for (long fd = lowfd; fd < max; fd++)
		close((int)fd);
}

static void sb_reset_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &sa, NULL); /* glibc-reserved signals fail: fine */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static void sb_write_proc(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		sb_fail(errno, "open %s", path);
	size_t len = strlen(data);
	if (write(fd, data, len) != (ssize_t)len)
		sb_fail(errno, "write %s", path);
	close(fd);
}

static int sb_setattr(int dfd, const char *path, unsigned flags, uint64_t set)
{
	struct mount_attr a;
	memset(&a, 0, sizeof(a));
	a.attr_set = set;
	return mount_setattr(dfd, path, flags, &a, sizeof(a));
}

/* Attach a detached mount at a path of the (pivoted) container root; the
 * target's symlinks resolve inside the container. */
static int sb_attach(int mfd, const char *target)
{
	return move_mount(mfd, "", AT_FDCWD, target,
			  MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS);
}

/* A step on the filesystem context fs failed: log gets the filesystem's
 * own explanation (may be ""), fs is closed, errno is kept; returns -1. */
static int sb_fsfail(int fs, char *log, size_t loglen)
{
	int saved = errno;
	ssize_t n = read(fs, log, loglen - 1);
	log[n > 0 ? n : 0] = '\0';
	if (n > 0 && log[n - 1] == '\n')
		log[n - 1] = '\0';
	close(fs);
	errno = saved;
	return -1;
}

/* Create the superblock of the configured context fs and return it as a
 * detached mount; fs is closed.  On failure as sb_fsfail. */
static int sb_fscreate(int fs, unsigned attrs, char *log, size_t loglen)
{
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return sb_fsfail(fs, log, loglen);
	int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
	if (m < 0)
		return sb_fsfail(fs, log, loglen);
	close(fs);
	return m;
}

/* A new detached superblock mount through the mount API.  On failure,
 * errno is kept and log gets the filesystem's own explanation (may be ""). */
static int sb_fsmount(const char *fstype, const char *const *kv, unsigned attrs, char *log,
		      size_t loglen)
{
	log[0] = '\0';
	int fs = fsopen(fstype, FSOPEN_CLOEXEC);
	if (fs < 0)
		return -1;
	for (size_t i = 0; kv && kv[i]; i += 2)
		if (fsconfig(fs, FSCONFIG_SET_STRING, kv[i], kv[i + 1], 0) < 0)
			return sb_fsfail(fs, log, loglen);
	return sb_fscreate(fs, attrs, log, loglen);
}

static void sb_record(sb_ctx *c, const char *path, bool is_dir)
{
	if (c->n_created == c->cap_created)
		return; /* cannot happen: sized for every component of every target */
	sb_created *e = &c->created[c->n_created++];
	snprintf(e->path, sizeof(e->path), "%s", path);
	e->is_dir = is_dir;
}

/* mkdir -p relative to dfd (or absolute with AT_FDCWD); the last component
 * becomes an empty file when is_file.  Created entries are recorded when
 * record is set so that init can remove them after the command. */
static int sb_mkpath(sb_ctx *c, int dfd, const char *path, bool is_file, bool record)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf)) {
		errno = n ? ENAMETOOLONG : EINVAL;
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		bool last = saved == '\0';
		*p = '\0';
		int r;
		if (last && is_file) {
			r = openat(dfd, buf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				   0644);
			if (r >= 0)
				close(r);
		} else {
			r = mkdirat(dfd, buf, 0755);
		}
		if (r >= 0 && record)
			sb_record(c, buf, !(last && is_file));
		else if (r < 0 && errno != EEXIST)
			return -1;
		if (last)
			return 0;
		*p = saved;
	}
}

/* Make sure a mount target exists in the merged root.  The skeleton lower
 * normally provides it; an image layer can hide it (opaque dir, whiteout),
 * and then it is created here and removed after the command. */
static int sb_ensure(sb_ctx *c, const char *target, bool is_file)
{
	struct stat st;
	if (stat(target, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	return sb_mkpath(c, AT_FDCWD, target, is_file, true);
}

/* ---------------------------------------------------------------------- */
/* init: the root filesystem                                               */

typedef struct sb_fds {
	int upper, work, skel, staging, rootdir;
	int proc, sys;
	int dev[SB_N_DEVICES];
} sb_fds;

static int sb_append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sb_append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
	if (*pos >= len)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len - *pos) {
		*pos = len;
		return -1;
	}
	*pos += (size_t)n;
	return 0;
}

/* The classic mount(2) form, for stacks whose options fit in one page.
 * Layers are named /proc/self/fd/N: short, and immune to the staging tmpfs
 * that covers the work dir.  Returns 0, -1 with errno, or 1 when the
 * options do not fit. */
static int sb_overlay_legacy(sb_ctx *c, const sb_fds *f, bool extras)
{
	size_t pos = 0, len = c->optbuf_len;
	char *b = c->optbuf;
	sb_append(b, len, &pos, "lowerdir=");
	for (size_t i = 0; i < c->n_lowers; i++)
		sb_append(b, len, &pos, "/proc/self/fd/%d:", c->lower_fds[i]);
	sb_append(b, len, &pos,
		  "/proc/self/fd/%d,upperdir=/proc/self/fd/%d,"
		  "workdir=/proc/self/fd/%d",
		  f->skel, f->upper, f->work);
	if (extras)
		sb_append(b, len, &pos, ",index=off,xino=off,redirect_dir=off,metacopy=off");
	if (c->userxattr)
		sb_append(b, len, &pos, ",userxattr");
	if (pos >= len)
		return 1;
	char target[64];
	snprintf(target, sizeof(target), "/proc/self/fd/%d", f->rootdir);
	return mount("overlay", target, "overlay", MS_NODEV, b);
}

/* The mount API form: one "lowerdir+" per layer (Linux >= 6.8), no length
 * limit.  Returns a detached mount or -1 with errno and log. */
static int sb_overlay_fsmount(sb_ctx *c, const sb_fds *f, char *log, size_t loglen)
{
	log[0] = '\0';
	int fs = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fs < 0)
		return -1;
	char p[64];
	for (size_t i = 0; i <= c->n_lowers; i++) {
		snprintf(p, sizeof(p), "/proc/self/fd/%d",
			 i < c->n_lowers ? c->lower_fds[i] : f->skel);
		if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", p, 0) < 0)
			return sb_fsfail(fs, log, loglen);
	}
	snprintf(p, sizeof(p), "/proc/self/fd/%d", f->upper);
	if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", p, 0) < 0)
		return sb_fsfail(fs, log, loglen);
	snprintf(p, sizeof(p), "/proc/self/fd/%d", f->work);
	if (fsconfig(fs, FSCONFIG_SET_STRING, "workdir", p, 0) < 0)
		return sb_fsfail(fs, log, loglen);
	/* best effort, as with mount(2): kernels without an option keep the
	 * behaviour we ask for anyway */
	static const char *const extras[] = {"index",	     "off", "xino",	"off",
					     "redirect_dir", "off", "metacopy", "off"};
	for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i += 2)
		fsconfig(fs, FSCONFIG_SET_STRING, extras[i], extras[i + 1], 0);
	if (c->userxattr && fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
		return sb_fsfail(fs, log, loglen);
	return sb_fscreate(fs, MOUNT_ATTR_NODEV, log, loglen);
}

static void sb_mount_overlay(sb_ctx *c, const sb_fds *f)
{
	int r = sb_overlay_legacy(c, f, true);
	if (r < 0 && errno == EINVAL)
		r = sb_overlay_legacy(c, f, false);
	if (r == 0)
		return;
	struct statfs sfs;
	if (r < 0 && errno == EINVAL && statfs(c->o->upper_dir, &sfs) == 0 &&
	    sfs.f_type == OVERLAYFS_SUPER_MAGIC)
		sb_failc(IB_ERROR,
			 "mount overlay: the store is on overlayfs (a container's root?), where an "
			 "upper dir cannot be: put --root on a volume, or use --isolation chroot");
	if (r < 0 && errno == EINVAL && c->userxattr)
		sb_failc(IB_ERROR,
			 "mount overlay: Invalid argument (rootless overlay needs the userxattr "
			 "option, Linux >= 5.11): upgrade the kernel or use --isolation chroot");
	if (r < 0)
		sb_fail(errno, "mount overlay on %s (%zu lower dirs)", c->o->work_dir, c->n_lowers);
	char log[512];
	int m = sb_overlay_fsmount(c, f, log, sizeof(log));
	if (m < 0) {
		int e = errno;
		sb_fail(e, "mount overlay (%zu lower dirs%s%s%s)", c->n_lowers, log[0] ? ": " : "",
			log, e == EINVAL ? "; a stack this long needs Linux >= 6.8" : "");
	}
	if (move_mount(m, "", f->rootdir, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) <
	    0)
		sb_fail(errno, "attach overlay");
	close(m);
}

/* Open everything needed from the host while it is still reachable; after
 * pivot_root only these fds lead back to it. */
static void sb_collect(sb_ctx *c, sb_fds *f)
{
	char log[512];
	for (size_t i = 0; i < c->n_lowers; i++) {
		c->lower_fds[i] = open(c->lowers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (c->lower_fds[i] < 0)
			sb_fail(errno, "lower dir %s", c->lowers[i]);
	}
	f->upper = open(c->o->upper_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (f->upper < 0)
		sb_fail(errno, "upper dir %s", c->o->upper_dir);
	f->work = open(c->o->work_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (f->work < 0)
		sb_fail(errno, "work dir %s", c->o->work_dir);

	/* A new procfs for the new PID namespace.  Created now, while the
	 * host's /proc is visible: a user namespace may only mount procfs
	 * when an unobstructed one is (mount_too_revealing). */
	f->proc = sb_fsmount("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
			     log, sizeof(log));
	/* chroot isolation: the host's /proc where a fresh one is refused */
	if (f->proc < 0 && c->chroot)
		f->proc = open_tree(AT_FDCWD, "/proc",
				    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (f->proc < 0)
		sb_fail(errno, "mount proc%s%s", log[0] ? ": " : "", log);
	/* sysfs needs the network namespace to be ours; otherwise (rootless
	 * sharing the host network) bind the host's, read-only. */
	f->sys =
	    sb_fsmount("sysfs", NULL,
		       MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
		       log, sizeof(log));
	if (f->sys < 0) {
		f->sys =
		    open_tree(AT_FDCWD, "/sys", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
		if (f->sys < 0)
			sb_fail(errno, "bind /sys");
		if (sb_setattr(f->sys, "", AT_EMPTY_PATH | AT_RECURSIVE,
			       MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
				   MOUNT_ATTR_NOEXEC) < 0)
			sb_fail(errno, "make /sys read-only");
	}
	for (size_t i = 0; i < SB_N_DEVICES; i++) {
		char p[32];
		snprintf(p, sizeof(p), "/dev/%s", sb_devices[i]);
		f->dev[i] = open_tree(AT_FDCWD, p, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (f->dev[i] < 0 && errno != ENOENT)
			sb_fail(errno, "bind %s", p);
	}
	for (size_t i = 0; i < c->n_binds; i++) {
		sb_bind *b = &c->binds[i];
		if (b->content)
			continue; /* written on the staging tmpfs by sb_generated */
		b->fd = open_tree(AT_FDCWD, b->source,
				  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
				      (b->is_file ? 0 : AT_RECURSIVE));
		struct stat st;
		if (b->fd >= 0 && fstat(b->fd, &st) < 0)
			sb_fail(errno, "stat %s", b->source);
		if (b->fd >= 0 && (b->is_file ? !S_ISREG(st.st_mode) : !S_ISDIR(st.st_mode))) {
			if (b->optional) {
				close(b->fd);
				b->fd = -1;
				continue;
			}
			sb_failc(IB_EINVALID, "mount source %s is not a %s", b->source,
				 b->is_file ? "regular file" : "directory");
		}
		if (b->fd < 0) {
			if (b->optional && errno == ENOENT)
				continue;
			sb_fail(errno, "mount source %s", b->source);
		}
		uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
		if (b->readonly)
			attrs |= MOUNT_ATTR_RDONLY;
		if (b->is_file)
			attrs |= MOUNT_ATTR_NOEXEC;
		if (sb_setattr(b->fd, "", AT_EMPTY_PATH | (b->is_file ? 0 : AT_RECURSIVE), attrs) <
		    0)
			sb_fail(errno, "mount attributes for %s", b->source);
	}
}

/* The staging tmpfs, private to this mount namespace, covers the work dir
 * (we hold fds to everything we need under it): "skel" is the bottom-most
 * lower dir holding the mount points, "root" the merged mount point. */
static void sb_stage(sb_ctx *c, sb_fds *f)
{
	char log[512];
	static const char *const opts[] = {"mode", "0700", "size", "16m", NULL};
	f->staging =
	    sb_fsmount("tmpfs", opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, log, sizeof(log));
	if (f->staging < 0)
		sb_fail(errno, "mount staging tmpfs%s%s", log[0] ? ": " : "", log);
	if (move_mount(f->staging, "", f->work, "",
		       MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		sb_fail(errno, "attach staging tmpfs on %s", c->o->work_dir);
	if (mkdirat(f->staging, "skel", 0755) < 0 || mkdirat(f->staging, "root", 0755) < 0)
		sb_fail(errno, "staging dirs");
	f->skel = openat(f->staging, "skel", O_PATH | O_DIRECTORY | O_CLOEXEC);
	f->rootdir = openat(f->staging, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (f->skel < 0 || f->rootdir < 0)
		sb_fail(errno, "open staging dirs");
	int skel = openat(f->staging, "skel", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (skel < 0)
		sb_fail(errno, "open skeleton");
	for (size_t i = 0; i < sizeof(sb_base_dirs) / sizeof(sb_base_dirs[0]); i++)
		if (sb_mkpath(c, skel, sb_base_dirs[i] + 1, false, false) < 0)
			sb_fail(errno, "skeleton %s", sb_base_dirs[i]);
	for (size_t i = 0; i < c->n_binds; i++)
		if (sb_mkpath(c, skel, c->binds[i].target + 1, c->binds[i].is_file, false) < 0)
			sb_fail(errno, "skeleton %s", c->binds[i].target);
	close(skel);
}

/* Generated files (resolv.conf) live on the staging tmpfs: never in the
 * layer, gone with the mount namespace. */
static void sb_generated(sb_ctx *c, sb_fds *f)
{
	for (size_t i = 0; i < c->n_binds; i++) {
		sb_bind *b = &c->binds[i];
		if (!b->content)
			continue;
		char name[32];
		snprintf(name, sizeof(name), "gen%zu", i);
		int fd = openat(f->staging, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			sb_fail(errno, "create %s", b->target);
		size_t len = strlen(b->content);
		if (write(fd, b->content, len) != (ssize_t)len)
			sb_fail(errno, "write %s", b->target);
		close(fd);
		b->fd = open_tree(f->staging, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (b->fd < 0)
			sb_fail(errno, "bind %s", b->target);
		if (sb_setattr(b->fd, "", AT_EMPTY_PATH,
			       MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
				   MOUNT_ATTR_NOEXEC) < 0)
			sb_fail(errno, "mount attributes for %s", b->target);
	}
}

static void sb_pivot(sb_fds *f)
{
	int merged = openat(f->staging, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (merged < 0 || fchdir(merged) < 0)
		sb_fail(errno, "enter merged root");
	close(merged);
	/* pivot_root(".", "."): the old root ends up stacked on the new one
	 * and is detached right away, with everything mounted below it. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		sb_fail(errno, "pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		sb_fail(errno, "detach old root");
	if (chdir("/") < 0)
		sb_fail(errno, "chdir /");
}

static void sb_setup_dev(sb_ctx *c, sb_fds *f)
{
	if (sb_ensure(c, "/dev", false) < 0)
		sb_fail(errno, "mount point /dev");
	if (mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_STRICTATIME,
		  "mode=755,size=65536k") < 0)
		sb_fail(errno, "mount tmpfs on /dev");
	for (size_t i = 0; i < SB_N_DEVICES; i++) {
		if (f->dev[i] < 0)
			continue;
		char p[32];
		snprintf(p, sizeof(p), "/dev/%s", sb_devices[i]);
		int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0)
			sb_fail(errno, "create %s", p);
		close(fd);
		if (sb_attach(f->dev[i], p) < 0)
			sb_fail(errno, "bind %s", p);
		close(f->dev[i]);
		f->dev[i] = -1;
	}
	if (mkdir("/dev/pts", 0755) < 0 || mkdir("/dev/shm", 01777) < 0)
		sb_fail(errno, "mkdir /dev/pts, /dev/shm");
	/* gid 5 ("tty") exists only when the host ids are ours */
	int r = -1;
	if (!c->rootless)
		r = mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
			  "newinstance,ptmxmode=0666,mode=0620,gid=5");
	if (r < 0 && mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
			   "newinstance,ptmxmode=0666,mode=0620") < 0)
		sb_fail(errno, "mount devpts on /dev/pts");
	if (mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "mode=1777,size=65536k") < 0)
		sb_fail(errno, "mount tmpfs on /dev/shm");
	static const char *const links[][2] = {
	    {"/dev/fd", "/proc/self/fd"},	{"/dev/stdin", "/proc/self/fd/0"},
	    {"/dev/stdout", "/proc/self/fd/1"}, {"/dev/stderr", "/proc/self/fd/2"},
	    {"/dev/ptmx", "pts/ptmx"},		{"/dev/core", "/proc/kcore"},
	};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][1], links[i][0]) < 0)
			sb_fail(errno, "symlink %s", links[i][0]);
}

static void sb_mask_paths(void)
{
	for (size_t i = 0; i < sizeof(sb_masked) / sizeof(sb_masked[0]); i++) {
		const char *p = sb_masked[i];
		struct stat st;
		if (lstat(p, &st) < 0) {
			if (errno == ENOENT)
				continue;
			sb_fail(errno, "stat %s", p);
		}
		int r;
		if (S_ISDIR(st.st_mode))
			r = mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
				  "size=0,mode=0555");
		else
			r = mount("/dev/null", p, NULL, MS_BIND, NULL);
		if (r < 0)
			sb_fail(errno, "mask %s", p);
	}
	for (size_t i = 0; i < sizeof(sb_readonly) / sizeof(sb_readonly[0]); i++) {
		const char *p = sb_readonly[i];
		if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			sb_fail(errno, "bind %s", p);
		}
		if (sb_setattr(AT_FDCWD, p, AT_RECURSIVE, MOUNT_ATTR_RDONLY) < 0)
			sb_fail(errno, "make %s read-only", p);
	}
}

static void sb_setup_mounts(sb_ctx *c, sb_fds *f)
{
	if (sb_ensure(c, "/proc", false) < 0)
		sb_fail(errno, "mount point /proc");
	if (sb_attach(f->proc, "/proc") < 0)
		sb_fail(errno, "mount proc on /proc");
	close(f->proc);
	sb_setup_dev(c, f);
	if (sb_ensure(c, "/sys", false) < 0)
		sb_fail(errno, "mount point /sys");
	if (sb_attach(f->sys, "/sys") < 0)
		sb_fail(errno, "mount sysfs on /sys");
	close(f->sys);
	sb_mask_paths();
	for (size_t i = 0; i < c->n_binds; i++) {
		sb_bind *b = &c->binds[i];
		if (b->fd < 0)
			continue;
		if (sb_ensure(c, b->target, b->is_file) < 0 || sb_attach(b->fd, b->target) < 0) {
			if (!b->optional)
				sb_fail(errno, "mount %s on %s", b->source, b->target);
		}
		close(b->fd);
		b->fd = -1;
	}
}

static void sb_loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		sb_fail(errno, "socket");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		sb_fail(errno, "get flags of lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	/* a container without CAP_NET_ADMIN: the step's loopback stays down */
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 && errno != EPERM)
		sb_fail(errno, "bring lo up");
	close(s);
}

/* ---------------------------------------------------------------------- */
/* init: the user, from the container's own /etc/passwd and /etc/group     */

/* The container's passwd or group file, mapped read-only (no allocation
 * after fork).  A missing, empty or non-regular file has no entries; *len
 * is 0 and there is nothing to unmap. */
#define SB_ETC_FILE_MAX ((off_t)16 << 20)

static void sb_map_etc(const char *path, const char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			return;
		sb_fail(errno, "read %s", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		sb_fail(errno, "read %s", path);
	if (S_ISREG(st.st_mode) && st.st_size > SB_ETC_FILE_MAX)
		sb_failc(IB_ETOOLARGE, "%s is larger than 16 MiB", path);
	if (S_ISREG(st.st_mode) && st.st_size > 0) {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED)
			sb_fail(errno, "read %s", path);
		*buf = m;
		*len = (size_t)st.st_size;
	}
	close(fd);
}

static void sb_unmap_etc(const char *buf, size_t len)
{
	if (len)
		munmap((void *)buf, len);
}

/* A user or group given as a number. */
static bool sb_parse_id(const char *s, uint32_t *out)
{
	uint64_t v;
	if (!*s || ib_parse_u64(s, &v) < 0 || v >= UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static void sb_add_group(uint32_t gid, void *payload)
{
	sb_ctx *c = payload;
	for (size_t i = 0; i < c->n_groups; i++)
		if (c->groups[i] == gid)
			return;
	if (c->n_groups < SB_MAX_GROUPS)
		c->groups[c->n_groups++] = gid;
}

/* Docker's rules: a name must exist in passwd; a numeric uid need not (then
 * gid 0, HOME "/"); without an explicit group the primary group comes from
 * passwd and the supplementary ones from the group memberships.  The files
 * are read by the parser the builder uses (passwd.h). */
static void sb_resolve_user(sb_ctx *c)
{
	const char *u = c->user_part ? c->user_part : "0";
	const char *pw, *gr;
	size_t pw_len, gr_len;
	sb_map_etc("/etc/passwd", &pw, &pw_len);
	sb_map_etc("/etc/group", &gr, &gr_len);
	uint32_t id = 0;
	bool numeric = sb_parse_id(u, &id);
	ib_passwd_entry pe;
	bool found =
	    numeric ? ib_passwd_by_uid(pw, pw_len, id, &pe) : ib_passwd_by_name(pw, pw_len, u, &pe);
	if (!found && !numeric)
		sb_failc(IB_ENOTFOUND, "unable to find user %s: no matching entries in passwd file",
			 u);
	c->uid = numeric ? id : pe.uid;
	c->gid = found ? pe.gid : 0;
	c->n_groups = 0;
	if (c->group_part) {
		if (sb_parse_id(c->group_part, &id)) {
			c->gid = id;
		} else {
			if (!ib_group_by_name(gr, gr_len, c->group_part, &id))
				sb_failc(
				    IB_ENOTFOUND,
				    "unable to find group %s: no matching entries in group file",
				    c->group_part);
			c->gid = id;
		}
		sb_add_group(c->gid, c);
	} else {
		sb_add_group(c->gid, c);
		if (found)
			ib_group_each_membership(gr, gr_len, pe.name, pe.name_len, sb_add_group, c);
	}
	if (!c->has_home) {
		if (found && pe.home_len)
			snprintf(c->home, sizeof(c->home), "HOME=%.*s", (int)pe.home_len, pe.home);
		else
			snprintf(c->home, sizeof(c->home), "HOME=/");
		c->envp[c->n_env++] = c->home;
		c->envp[c->n_env] = NULL;
	}
	sb_unmap_etc(pw, pw_len);
	sb_unmap_etc(gr, gr_len);
}

/* ---------------------------------------------------------------------- */
/* the command                                                             */

/* The capabilities this process holds (permitted set). */
static uint64_t sb_permitted_caps(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return ~(uint64_t)0;
	return (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
}

static void sb_drop_caps(const sb_ctx *c)
{
	/* on the host's network, raw sockets would see the host's traffic */
	uint64_t caps = SB_DEFAULT_CAPS;
	if (c->host_net)
		caps &= ~(SB_CAP(CAP_NET_RAW) | SB_CAP(CAP_NET_ADMIN));
	/* inside a container, only what we were given (its bounding set):
	 * asking for more is refused by capset */
	caps &= sb_permitted_caps();
	for (int cap = 0;; cap++) {
		int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (r < 0)
			break; /* past the last capability the kernel knows */
		if (r == 1 && (cap >= 64 || !(caps & SB_CAP(cap))) &&
		    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			sb_fail(errno, "drop capability %d", cap);
	}
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = (uint32_t)caps;
	data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		sb_fail(errno, "capset");
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static void sb_exec(sb_ctx *c) __attribute__((noreturn));
static void sb_exec(sb_ctx *c)
{
	char *const *argv = c->o->argv;
	const char *file = argv[0];
	int err;
	if (strchr(file, '/')) {
		execve(file, argv, c->envp);
		err = errno;
	} else {
		bool eacces = false;
		err = 0;
		size_t flen = strlen(file);
		for (const char *p = c->path_env;; p++) {
			const char *e = strchrnul(p, ':');
			size_t dl = (size_t)(e - p);
			char buf[PATH_MAX];
			if (dl + flen + 2 <= sizeof(buf)) {
				/* an empty entry is the current directory */
				if (dl)
					memcpy(buf, p, dl);
				buf[dl] = '/';
				memcpy(buf + dl + 1, file, flen + 1);
				execve(dl ? buf : buf + 1, argv, c->envp);
				switch (errno) {
				case EACCES:
					eacces = true;
					break;
				case ENOENT:
				case ENOTDIR:
				case ELOOP:
				case ENAMETOOLONG:
				case ESTALE:
				case ENODEV:
				case ETIMEDOUT:
					break;
				default:
					err = errno;
					break;
				}
			}
			if (err || !*e)
				break;
			p = e;
		}
		if (!err)
			err = eacces ? EACCES : ENOENT;
	}
	dprintf(STDERR_FILENO, "exec %s: %s\n", file, strerror(err));
	_exit(err == ENOENT ? 127 : 126);
}

static void sb_command(sb_ctx *c) __attribute__((noreturn));
static void sb_command(sb_ctx *c)
{
	/* a session keyring of its own (the user keyring stays shared by
	 * uid: keyctl is refused by the seccomp filter) */
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS)
		sb_fail(errno, "join a new session keyring");
	/* while CAP_SYS_ADMIN is still there: no no_new_privs needed, so
	 * setuid programs (su, sudo) keep working */
	/* without CAP_SYS_ADMIN (chroot isolation in a container) the
	 * filter needs no_new_privs */
	if (c->seccomp && !(sb_permitted_caps() & SB_CAP(CAP_SYS_ADMIN)))
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (c->seccomp && ib_sb_seccomp_load(&c->filter) < 0)
		sb_fail(errno, "load the seccomp filter");
	sb_drop_caps(c);
	/* setgroups is denied in a user namespace of one id (and only our
	 * own gid exists there anyway) */
	if (!c->own_userns && !c->setgroups_denied && setgroups(c->n_groups, c->groups) < 0)
		sb_fail(errno, "setgroups%s", errno == EINVAL ? ib_userns_unmapped_hint() : "");
	const char *hint = c->own_userns ? " (rootless: only id 0 exists)" : "";
	if (setgid(c->gid) < 0)
		sb_fail(errno, "setgid %u%s", (unsigned)c->gid,
			errno == EINVAL && !*hint ? ib_userns_unmapped_hint() : hint);
	if (setuid(c->uid) < 0)
		sb_fail(errno, "setuid %u%s", (unsigned)c->uid,
			errno == EINVAL && !*hint ? ib_userns_unmapped_hint() : hint);
	if (chdir(c->workdir) < 0)
		sb_fail(errno, "chdir %s", c->workdir);
	umask(022);
	sb_close_from(3);
	sb_exec(c);
}

/* ---------------------------------------------------------------------- */
/* init (PID 1 of the new PID namespace)                                   */

/* /proc/1/cmdline is readable by everyone and would show the caller's
 * command line (build arguments...) inside the container: blank it. */
static void sb_scrub_cmdline(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (!p)
		return;
	/* fields 48 and 49 are arg_start and arg_end; p + 2 is field 3 */
	unsigned long long start = 0, end = 0;
	int field = 3;
	for (p += 2; *p && field < 49; field++) {
		if (field == 48 && sscanf(p, "%llu %llu", &start, &end) != 2)
			return;
		p = strchr(p, ' ');
		if (!p)
			return;
		p++;
	}
	if (start == 0 || end <= start || end - start > (1u << 20))
		return;
	volatile char *a = (volatile char *)(uintptr_t)start;
	static const char title[] = "imgbuild-init";
	for (size_t i = 0; i < end - start; i++)
		a[i] = i < sizeof(title) ? title[i] : '\0';
}

static void sb_chroot_root(sb_ctx *c);
static void sb_oci_root(sb_ctx *c);
static void sb_init_run(sb_ctx *c) __attribute__((noreturn));

static void sb_init(sb_ctx *c) __attribute__((noreturn));
static void sb_init(sb_ctx *c)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* nothing of the monitor's (the network helper's pipes) stays open */
	sb_close_from(SB_ERR_FD + 1);
	setsid();
	umask(0);
	if (c->chroot)
		sb_chroot_root(c);
	else
		sb_oci_root(c);
	if ((!c->chroot || c->uts) && sethostname(c->hostname, strlen(c->hostname)) < 0)
		sb_fail(errno, "sethostname %s", c->hostname);
	if (c->netns)
		sb_loopback_up();
	if (strcmp(c->workdir, "/") != 0 && sb_mkpath(c, AT_FDCWD, c->workdir, false, false) < 0)
		sb_fail(errno, "create workdir %s", c->workdir);
	sb_resolve_user(c);
	sb_init_run(c);
}

/* Chroot isolation: whatever namespaces we may make, the copied root,
 * and the mounts a mount namespace of our own allows. */
static void sb_chroot_root(sb_ctx *c)
{
	bool mntns =
	    unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) == 0;
	c->uts = unshare(CLONE_NEWUTS) == 0;
	if (unshare(CLONE_NEWIPC) < 0 || unshare(CLONE_NEWCGROUP) < 0) {
		/* not permitted here: the container's own stay */
	}
	sb_fds f;
	memset(&f, -1, sizeof(f));
	if (mntns)
		sb_collect(c, &f);
	else if (c->n_binds)
		sb_failc(IB_EINVALID, "chroot isolation without a mount namespace (no "
				      "CAP_SYS_ADMIN): cache mounts and secrets are not available");
	c->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (c->null_fd < 0)
		sb_fail(errno, "open /dev/null");
	if (chroot(c->chroot_dir) < 0 || chdir("/") < 0)
		sb_fail(errno, "chroot %s", c->chroot_dir);
	if (f.upper >= 0)
		close(f.upper);
	if (f.work >= 0)
		close(f.work);
	if (mntns)
		sb_setup_mounts(c, &f);
}

static void sb_oci_root(sb_ctx *c)
{
	/* the network namespace is the monitor's (its network helper needs it early) */
	int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
	if (unshare(flags) < 0)
		sb_fail(errno, "unshare namespaces");
	/* Nothing we mount may reach the host; the host's later unmounts
	 * still propagate in. */
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		sb_fail(errno, "make / a slave mount");

	sb_fds f;
	memset(&f, -1, sizeof(f));
	sb_collect(c, &f);
	sb_stage(c, &f);
	sb_generated(c, &f);
	sb_mount_overlay(c, &f);
	for (size_t i = 0; i < c->n_lowers; i++)
		close(c->lower_fds[i]);
	close(f.upper);
	close(f.work);
	close(f.skel);
	close(f.rootdir);
	sb_pivot(&f);
	close(f.staging);

	sb_setup_mounts(c, &f);
}

static void sb_init_run(sb_ctx *c) __attribute__((noreturn));
static void sb_init_run(sb_ctx *c)
{
	/* without a PID namespace, orphans of the step still come to us */
	if (!c->pidns)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	/* chroot isolation opened it before entering a root that may have no /dev */
	int null = c->null_fd > 0 ? c->null_fd : open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0)
		sb_fail(errno, "open /dev/null");
	close(null);
	/* The command must not reach into this process: /proc/1/exe is the
	 * host binary, and /proc/1/{root,fd,environ} need ptrace access. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	prctl(PR_SET_NAME, "imgbuild-init", 0, 0, 0);

	/* The command may need the very argv strings that get blanked (a
	 * caller can pass its own argv): it waits until init has its own
	 * copy scrubbed. */
	int sync[2];
	if (pipe2(sync, O_CLOEXEC) < 0)
		sb_fail(errno, "pipe");
	pid_t cmd = fork();
	if (cmd < 0)
		sb_fail(errno, "fork");
	if (cmd == 0) {
		char ch;
		close(sync[1]);
		while (read(sync[0], &ch, 1) < 0 && errno == EINTR)
			;
		close(sync[0]);
		if (!c->pidns)
			setpgid(0, 0);
		sb_command(c);
	}
	close(sync[0]);
	sb_scrub_cmdline();
	close(sync[1]);
	close(STDIN_FILENO);
	close(STDOUT_FILENO);
	close(STDERR_FILENO);
	close(SB_ERR_FD);

	int status = SB_FAIL_STATUS;
	for (;;) {
		int st;
		pid_t r = waitpid(-1, &st, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (r == cmd) {
			status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
	}
	/* Background processes die with the command, before the cleanup
	 * (without a PID namespace: those of its process group). */
	if (c->pidns)
		kill(-1, SIGKILL);
	else
		kill(-cmd, SIGKILL);
	for (;;) {
		pid_t r = waitpid(-1, NULL, 0);
		if (r < 0 && errno != EINTR)
			break;
	}
	for (size_t i = c->n_created; i-- > 0;) {
		sb_created *e = &c->created[i];
		umount2(e->path, MNT_DETACH);
		if (e->is_dir)
			rmdir(e->path); /* kept when the command put something in it */
		else
			unlink(e->path);
	}
	_exit(status);
}

/* ---------------------------------------------------------------------- */
/* monitor (host PID namespace)                                            */

static void sb_monitor(sb_ctx *c, int out_w, int err_w) __attribute__((noreturn));
static void sb_monitor(sb_ctx *c, int out_w, int err_w)
{
	sb_err_fd = err_w;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int o = fcntl(out_w, F_DUPFD_CLOEXEC, 10);
	int e = fcntl(err_w, F_DUPFD_CLOEXEC, 10);
	if (null < 0 || o < 0 || e < 0)
		sb_fail(errno, "set up fds");
	if (dup2(null, STDIN_FILENO) < 0 || dup2(o, STDOUT_FILENO) < 0 ||
	    dup2(o, STDERR_FILENO) < 0 || dup3(e, SB_ERR_FD, O_CLOEXEC) < 0)
		sb_fail(errno, "set up fds");
	sb_err_fd = SB_ERR_FD;
	sb_close_from(SB_ERR_FD + 1);
	sb_reset_signals();
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != c->caller_pid)
		_exit(SB_FAIL_STATUS);

	/* The network helper must live in the host's namespaces.  It stays
	 * out of the step's cgroup: the cgroup's removal would otherwise wait
	 * for the tap device's teardown (tens of ms). */
	ib_sb_net_proc np;
	memset(&np, -1, sizeof(np));
	if (c->slirp && ib_sb_net_spawn(&c->net, &np) < 0)
		sb_fail(errno, "network: fork slirp4netns");
	/* every process of the step is counted */
	if (c->cg.n_dirs && ib_sb_cgroup_enter(&c->cg, getpid()) < 0)
		sb_fail(errno, "join the step's cgroup");

	if (c->own_userns) {
		if (unshare(CLONE_NEWUSER) < 0)
			sb_fail(errno, "unshare user namespace (rootless)");
		/* /proc/self/uid_map belongs to root while we are not dumpable */
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
		char map[64];
		sb_write_proc("/proc/self/setgroups", "deny");
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)c->host_uid);
		sb_write_proc("/proc/self/uid_map", map);
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)c->host_gid);
		sb_write_proc("/proc/self/gid_map", map);
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	}
	if (c->netns && unshare(CLONE_NEWNET) < 0) {
		/* chroot isolation may lack the capability; network "none" is
		 * then only kept where the namespace we are in has nothing but
		 * loopback (a container run with --network none), never
		 * silently widened to a real network */
		if (!c->chroot || !sb_only_loopback())
			sb_fail(errno, "network none: cannot make a network namespace%s",
				c->chroot ? " and this one has more than loopback (use network "
					    "= \"host\" to run with it)"
					  : "");
		c->netns = false;
	}
	if (c->netns) {
		char msg[512];
		if (c->slirp && ib_sb_net_start(&np, msg, sizeof(msg)) < 0)
			sb_failc(IB_ERROR, "network: slirp4netns failed: %s", msg);
	}
	c->pidns = unshare(CLONE_NEWPID) == 0;
	if (!c->pidns && !c->chroot)
		sb_fail(errno, "unshare PID namespace");

	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	pid_t init = fork();
	if (init < 0)
		sb_fail(errno, "fork");
	if (init == 0)
		sb_init(c);
	close(STDIN_FILENO);
	close(STDOUT_FILENO);
	close(STDERR_FILENO);

	unsigned timeout = c->o->timeout_sec;
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += (time_t)timeout;
	bool timed_out = false;
	int st = 0;
	for (;;) {
		pid_t r = waitpid(init, &st, timeout && !timed_out ? WNOHANG : 0);
		if (r == init)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			sb_fail(errno, "wait for init");
		}
		struct timespec now, left;
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = deadline.tv_sec - now.tv_sec;
		left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_nsec += 1000000000L;
			left.tv_sec--;
		}
		if (left.tv_sec < 0) {
			/* SIGKILL to PID 1 takes the whole namespace down */
			kill(init, SIGKILL);
			sb_report(SB_MSG_TIMEOUT, 0, 0, "timed out after %u s", timeout);
			timed_out = true;
			continue;
		}
		sigtimedwait(&chld, NULL, &left);
	}
	ib_sb_net_stop(&np);
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* ---------------------------------------------------------------------- */
/* caller side                                                             */

/* "/a//b/./c/" -> "/a/b/c"; NULL for relative paths, ".." or the root. */
static char *sb_normalize_target(const char *t)
{
	char *out = NULL;
	if (!t || t[0] != '/' ||
	    ib_path_clean(t, IB_PATH_ABSOLUTE | IB_PATH_REFUSE_DOTDOT, &out, NULL) < 0)
		return NULL;
	if (!strcmp(out, "/") || strlen(out) >= PATH_MAX) {
		free(out);
		return NULL;
	}
	return out;
}

static int sb_bind_cmp(const void *a, const void *b)
{
	return strcmp(((const sb_bind *)a)->target, ((const sb_bind *)b)->target);
}

static size_t sb_components(const char *path)
{
	size_t n = 0;
	for (const char *p = path; *p; p++)
		n += *p == '/';
	return n;
}

static void sb_ctx_free(sb_ctx *c)
{
	free(c->filter.insns);
	ib_sb_net_free(&c->net);
	ib_sb_cgroup_destroy(&c->cg);
	for (size_t i = 0; i < c->n_binds; i++)
		free(c->binds[i].target);
	free(c->binds);
	free(c->lower_fds);
	free(c->envp);
	free(c->user_part);
	free(c->optbuf);
	free(c->created);
}

static int sb_ctx_init(sb_ctx *c, const ib_sandbox_options *o, ib_error **err)
{
	memset(c, 0, sizeof(*c));
	c->o = o;
	if (!o->upper_dir || !o->work_dir)
		return ib_error_setc(err, IB_EINVALID, "sandbox: upper and work dirs are required");
	if (!o->argv || !o->argv[0] || !o->argv[0][0])
		return ib_error_setc(err, IB_EINVALID, "sandbox: empty command");
	const char *net = o->network ? o->network : "default";
	c->chroot = ib_sandbox_resolve_isolation(o->isolation, o->work_dir) == IB_ISOLATION_CHROOT;
	if (c->chroot && (!strcmp(net, "default") || !strcmp(net, "private")))
		net = "host"; /* chroot isolation: the network of the host (or container) */
	if (strcmp(net, "none") == 0) {
		c->netns = true;
	} else if (strcmp(net, "default") == 0 || strcmp(net, "private") == 0) {
		c->netns = c->slirp = true;
	} else if (strcmp(net, "host") == 0) {
		c->host_net = true;
	} else {
		return ib_error_setc(err, IB_EINVALID,
				     "sandbox: unknown network mode \"%s\" (default, host, none)",
				     net);
	}
	c->hostname = o->hostname && *o->hostname ? o->hostname : SB_DEFAULT_HOSTNAME;
	if (strlen(c->hostname) > 64)
		return ib_error_setc(err, IB_EINVALID, "sandbox: hostname too long: %s",
				     c->hostname);
	c->workdir = o->workdir && *o->workdir ? o->workdir : "/";
	if (c->workdir[0] != '/')
		return ib_error_setc(err, IB_EINVALID, "sandbox: workdir %s is not absolute",
				     c->workdir);

	c->lowers = o->lower_dirs;
	c->n_lowers = ib_strv_len(o->lower_dirs);
	c->lower_fds = xcalloc(c->n_lowers + 1, sizeof(int));

	/* host /etc files first, then the caller's mounts sorted so that a
	 * parent is mounted before anything inside it */
	c->binds = xcalloc(o->n_mounts + 2, sizeof(sb_bind));
	static const char *const etc[] = {"/etc/hosts", "/etc/resolv.conf"};
	/* chroot isolation keeps the root's own /etc files */
	for (size_t i = 0; i < 2 && !c->chroot; i++)
		c->binds[c->n_binds++] =
		    (sb_bind){etc[i], xstrdup(etc[i]), true, true, true, -1, NULL};
	for (size_t i = 0; i < o->n_mounts; i++) {
		const ib_sandbox_mount *m = &o->mounts[i];
		char *t = sb_normalize_target(m->target);
		if (!t)
			return ib_error_setc(
			    err, IB_EINVALID,
			    "sandbox: mount target \"%s\" must be an absolute path "
			    "below / without \"..\"",
			    m->target ? m->target : "");
		if (!m->source || !*m->source) {
			free(t);
			return ib_error_setc(err, IB_EINVALID, "sandbox: mount %s has no source",
					     m->target);
		}
		c->binds[c->n_binds++] =
		    (sb_bind){m->source, t, m->readonly, m->is_file, false, -1, NULL};
	}
	size_t n_etc = c->chroot ? 0 : 2;
	qsort(c->binds + n_etc, c->n_binds - n_etc, sizeof(sb_bind), sb_bind_cmp);

	size_t cap = 8;
	for (size_t i = 0; i < sizeof(sb_base_dirs) / sizeof(sb_base_dirs[0]); i++)
		cap += sb_components(sb_base_dirs[i]);
	for (size_t i = 0; i < c->n_binds; i++)
		cap += sb_components(c->binds[i].target);
	c->cap_created = cap;
	c->created = xcalloc(cap, sizeof(sb_created));

	size_t n = ib_strv_len(o->env);
	c->envp = xcalloc(n + 3, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		if (strncmp(o->env[i], "PATH=", 5) == 0)
			c->path_env = o->env[i] + 5;
		else if (strncmp(o->env[i], "HOME=", 5) == 0)
			c->has_home = true;
		c->envp[c->n_env++] = o->env[i];
	}
	if (!c->path_env) {
		c->envp[c->n_env++] = (char *)"PATH=" IB_DEFAULT_PATH;
		c->path_env = IB_DEFAULT_PATH;
	}

	if (o->user && *o->user) {
		c->user_part = xstrdup(o->user);
		char *colon = strchr(c->user_part, ':');
		if (colon) {
			*colon = '\0';
			c->group_part = colon + 1;
		}
		if (!c->user_part[0] || (c->group_part && !c->group_part[0]))
			return ib_error_setc(err, IB_EINVALID, "sandbox: invalid user \"%s\"",
					     o->user);
	}

	long page = sysconf(_SC_PAGESIZE);
	c->optbuf_len = page > 0 ? (size_t)page : 4096;
	c->optbuf = xmalloc(c->optbuf_len);
	c->host_uid = geteuid();
	c->host_gid = getegid();
	c->rootless = ib_userns_rootless();
	c->own_userns = c->host_uid != 0;
	c->userxattr = ib_overlay_userxattr();
	c->setgroups_denied = ib_userns_setgroups_denied();
	c->caller_pid = getpid();

	c->seccomp = !o->seccomp_unconfined;
	if (c->seccomp) {
		int rc = ib_sb_seccomp_prepare(&c->filter, o->keep_sync, err);
		if (rc < 0)
			return ib_error_wrap(err, "sandbox");
	}
	if (c->slirp) {
		int rc = ib_sb_net_prepare(&c->net, c->own_userns, err);
		if (rc < 0)
			return ib_error_wrap(err, "sandbox");
		c->binds[1].content = c->net.resolv; /* /etc/resolv.conf */
	}
	c->pids_max = o->pids_limit == 0  ? SB_DEFAULT_PIDS
		      : o->pids_limit < 0 ? 0
					  : (unsigned long)o->pids_limit;
	if (c->pids_max || o->memory_limit) {
		char *warning = NULL;
		ib_sb_cgroup_create(&c->cg, c->pids_max, o->memory_limit, &warning, NULL);
		/* once per process, through the step's output (a line of the
		 * build's progress, so --progress json stays JSON) */
		static bool warned;
		if (warning && !warned) {
			cleanup_free char *line = xasprintf("warning: %s", warning);
			if (o->output)
				o->output(line, strlen(line), o->payload);
			else
				fprintf(stderr, "%s\n", line);
		}
		warned = warned || warning;
		free(warning);
	}
	return 0;
}

typedef struct sb_lines {
	const ib_sandbox_options *o;
	char *buf;
	size_t len;
	bool cr;
} sb_lines;

static void sb_emit(sb_lines *l)
{
	if (l->o->output) {
		l->o->output(l->buf, l->len, l->o->payload);
	} else {
		fwrite(l->buf, 1, l->len, stderr);
		fputc('\n', stderr);
	}
	l->len = 0;
}

static void sb_feed(sb_lines *l, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (l->cr) {
			l->cr = false;
			if (ch == '\n') {
				sb_emit(l);
				continue;
			}
			l->len = 0; /* a lone CR redraws the line */
		}
		if (ch == '\n') {
			sb_emit(l);
			continue;
		}
		if (ch == '\r') {
			l->cr = true;
			continue;
		}
		if (l->len == SB_MAX_LINE)
			sb_emit(l);
		l->buf[l->len++] = ch;
	}
}

static int sb_run(const ib_sandbox_options *opts, const char *chroot_dir, int *exit_status,
		  ib_error **err)
{
	*exit_status = 0;
	sb_ctx c;
	int rc = sb_ctx_init(&c, opts, err);
	if (rc < 0) {
		sb_ctx_free(&c);
		return rc;
	}
	if (c.chroot) {
		c.chroot_dir = chroot_dir;
		c.n_lowers = 0; /* copied into chroot_dir */
	}
	int outp[2], errp[2];
	if (pipe2(outp, O_CLOEXEC) < 0) {
		rc = ib_error_set(err, errno, "sandbox: pipe");
		sb_ctx_free(&c);
		return rc;
	}
	if (pipe2(errp, O_CLOEXEC) < 0) {
		rc = ib_error_set(err, errno, "sandbox: pipe");
		close(outp[0]);
		close(outp[1]);
		sb_ctx_free(&c);
		return rc;
	}
	pid_t pid = fork();
	if (pid == 0)
		sb_monitor(&c, outp[1], errp[1]);
	int fork_errno = errno;
	close(outp[1]);
	close(errp[1]);
	cleanup_close int out_r = outp[0];
	cleanup_close int err_r = errp[0];
	if (pid < 0) {
		sb_ctx_free(&c);
		return ib_error_set(err, fork_errno, "sandbox: fork");
	}

	sb_lines lines = {opts, xmalloc(SB_MAX_LINE), 0, false};
	char *chunk = xmalloc(65536);
	for (;;) {
		ssize_t n = read(out_r, chunk, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		sb_feed(&lines, chunk, (size_t)n);
	}
	if (lines.len > 0)
		sb_emit(&lines);
	free(chunk);

	sb_msg m, first_error;
	bool have_error = false, timed_out = false;
	for (;;) {
		ssize_t n = read(err_r, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(m))
			break;
		m.text[sizeof(m.text) - 1] = '\0';
		if (m.kind == SB_MSG_TIMEOUT)
			timed_out = true;
		else if (m.kind == SB_MSG_ERROR && !have_error) {
			first_error = m;
			have_error = true;
		}
	}
	int st = 0;
	pid_t w;
	do
		w = waitpid(pid, &st, 0);
	while (w < 0 && errno == EINTR);
	int wait_errno = errno;
	unsigned timeout = opts->timeout_sec;
	unsigned long pids_max = c.pids_max;
	bool pids_hit = c.cg.n_dirs && ib_sb_cgroup_pids_hit(&c.cg);
	sb_ctx_free(&c);

	if (have_error) {
		free(lines.buf);
		if (first_error.sys_errno)
			return ib_error_set(err, first_error.sys_errno, "sandbox: %s",
					    first_error.text);
		return ib_error_setc(err, first_error.code, "sandbox: %s", first_error.text);
	}
	if (w < 0) {
		free(lines.buf);
		return ib_error_set(err, wait_errno, "sandbox: wait for the monitor process");
	}
	if (!WIFEXITED(st)) {
		free(lines.buf);
		return ib_error_setc(err, IB_ERROR, "sandbox: monitor process killed by signal %d",
				     WTERMSIG(st));
	}
	*exit_status = WEXITSTATUS(st);
	if (timed_out) {
		int len = snprintf(lines.buf, SB_MAX_LINE, "timed out after %u s", timeout);
		lines.len = (size_t)len;
		sb_emit(&lines);
	}
	if (pids_hit) {
		int len = snprintf(lines.buf, SB_MAX_LINE, "pids limit of %lu reached", pids_max);
		lines.len = (size_t)len;
		sb_emit(&lines);
	}
	free(lines.buf);
	return 0;
}

int ib_sandbox_run(const ib_sandbox_options *opts, int *exit_status, ib_error **err)
{
	*exit_status = 0;
	if (!opts->work_dir || !opts->upper_dir ||
	    ib_sandbox_resolve_isolation(opts->isolation, opts->work_dir) != IB_ISOLATION_CHROOT)
		return sb_run(opts, NULL, exit_status, err);
	/* chroot isolation: a copy of the lower layers, and afterwards its
	 * difference from before the step in overlay format */
	cleanup_free char *root = ib_path_join(opts->work_dir, "chroot");
	if (mkdir(root, 0755) < 0)
		return ib_error_set(err, errno, "sandbox: chroot: mkdir %s", root);
	ib_tree_snapshot *before = NULL;
	int rc = ib_tree_copy_layers(opts->lower_dirs, root, err);
	if (rc == 0)
		rc = ib_tree_snapshot_take(root, &before, err);
	if (rc < 0) {
		ib_error_wrap(err, "sandbox: chroot");
	} else {
		rc = sb_run(opts, root, exit_status, err);
		if (rc == 0 && *exit_status == 0 &&
		    ib_tree_diff_to_upper(root, before, opts->upper_dir, ib_overlay_opaque_xattr(),
					  err) < 0)
			rc = ib_error_wrap(err, "sandbox: chroot: the step's changes");
	}
	ib_tree_snapshot_free(before);
	ib_error *e2 = NULL;
	ib_rm_rf(root, &e2);
	ib_error_free(&e2);
	return rc;
}
