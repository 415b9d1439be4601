/* The run step's default seccomp filter: a denylist with the coverage of
 * Docker's default profile.  A step runs as root with Docker's capability
 * set, so everything the kernel itself would refuse without CAP_SYS_ADMIN,
 * CAP_SYS_MODULE... is refused here too (defence in depth), and the calls
 * that need no capability but reach outside the step are refused outright:
 * the keyring (the host's user keyring is shared by uid), user namespaces,
 * bpf, perf_event_open, userfaultfd, io_uring, process_vm_*.
 *
 * The filter covers the native architecture and its 32-bit compat ABIs
 * (x86_64: i386 and x32; aarch64: arm), so a 32-bit binary cannot bypass
 * it; any other architecture is killed.  clone3 fails with ENOSYS (its
 * flags live in memory where seccomp cannot look), so libc falls back to
 * clone, whose namespace flags are checked.
 *
 * Unless the caller keeps them (ib_sandbox_options.keep_sync), the calls
 * that only push written data to the disk succeed without doing anything:
 * fsync, fdatasync, sync, syncfs, sync_file_range.  A step's files are read
 * back through the page cache when its layer is made, the store syncs what
 * it keeps, and a crash in the middle of a step loses the build anyway, so
 * dpkg's thousands of fsyncs per install only cost time. */
#include "sandbox_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "util.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* Refused with EPERM whatever their arguments.  Names unknown to an
 * architecture are skipped. */
static const char *const sb_denied[] = {
    /* kernel and system state */
    "acct",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "swapon",
    "swapoff",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    "syslog",
    "_sysctl",
    "sysfs",
    "ustat",
    "uselib",
    "nfsservctl",
    "lookup_dcookie",
    "vhangup",
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
    /* mounts and namespaces */
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "quotactl",
    "quotactl_fd",
    /* keyring */
    "add_key",
    "request_key",
    "keyctl",
    /* tracing, other processes' memory, kernel attack surface */
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kcmp",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "name_to_handle_at",
    "open_by_handle_at",
    "fanotify_init",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    /* NUMA policy (CAP_SYS_NICE in Docker's profile) */
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "move_pages",
    "migrate_pages",
};

/* Succeed (return 0) without running, unless sync calls are kept.  The
 * names of every architecture: sync_file_range2 (arm, ppc) and
 * arm_sync_file_range are the same call with other argument orders. */
static const char *const sb_sync_calls[] = {
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "sync_file_range2",
    "arm_sync_file_range",
};

static const uint64_t sb_ns_flags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
				       CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, CLONE_NEWTIME};

static int sb_add(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
		  const struct scmp_arg_cmp *cmp)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0;
	int r = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	/* -EDOM: a pseudo syscall that none of the filter's architectures
	 * has (vm86 on aarch64...) */
	return r == -EDOM ? 0 : r;
}

static int sb_rules(scmp_filter_ctx ctx, bool keep_sync)
{
	uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
	int r;
	/* SECCOMP_RET_ERRNO with data 0: the call returns 0, never runs */
	for (size_t i = 0; !keep_sync && i < sizeof(sb_sync_calls) / sizeof(sb_sync_calls[0]); i++)
		if ((r = sb_add(ctx, SCMP_ACT_ERRNO(0), sb_sync_calls[i], 0, NULL)) < 0)
			return r;
	for (size_t i = 0; i < sizeof(sb_denied) / sizeof(sb_denied[0]); i++)
		if ((r = sb_add(ctx, eperm, sb_denied[i], 0, NULL)) < 0)
			return r;
	if ((r = sb_add(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL)) < 0)
		return r;
	/* clone and unshare: no new namespace of any kind (flags are the
	 * first argument of both on every architecture we support) */
	for (size_t i = 0; i < sizeof(sb_ns_flags) / sizeof(sb_ns_flags[0]); i++) {
		struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, sb_ns_flags[i], sb_ns_flags[i]);
		if ((r = sb_add(ctx, eperm, "clone", 1, &c)) < 0 ||
		    (r = sb_add(ctx, eperm, "unshare", 1, &c)) < 0)
			return r;
	}
	/* personality: only PER_LINUX, PER_LINUX32 and UNAME26 (Docker also
	 * allows the 0xffffffff query, which a bit mask cannot tell apart) */
	for (unsigned bit = 0; bit < 32; bit++) {
		if (bit == 3 || bit == 17) /* PER_LINUX32 = 0x8, UNAME26 = 0x20000 */
			continue;
		struct scmp_arg_cmp c =
		    SCMP_A0(SCMP_CMP_MASKED_EQ, UINT64_C(1) << bit, UINT64_C(1) << bit);
		if ((r = sb_add(ctx, eperm, "personality", 1, &c)) < 0)
			return r;
	}
	return 0;
}

static int sb_add_compat_arches(scmp_filter_ctx ctx)
{
	static const uint32_t compat[] = {
#if defined(__x86_64__)
		SCMP_ARCH_X86,
		SCMP_ARCH_X32,
#elif defined(__aarch64__)
		SCMP_ARCH_ARM,
#endif
		0
	};
	for (size_t i = 0; compat[i]; i++) {
		int r = seccomp_arch_add(ctx, compat[i]);
		if (r < 0 && r != -EEXIST)
			return r;
	}
	return 0;
}

static int sb_filter_build(ib_sb_filter *out, bool keep_sync, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return ib_error_setc(err, IB_ERROR, "seccomp: cannot create a filter");
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r == 0)
		r = sb_add_compat_arches(ctx);
	if (r == 0)
		r = sb_rules(ctx, keep_sync);
	if (r < 0) {
		seccomp_release(ctx);
		return ib_error_set(err, -r, "seccomp: build the filter");
	}
	cleanup_close int fd = memfd_create("imgbuild-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		seccomp_release(ctx);
		return ib_error_set(err, errno, "seccomp: memfd");
	}
	r = seccomp_export_bpf(ctx, fd);
	seccomp_release(ctx);
	if (r < 0)
		return ib_error_set(err, -r, "seccomp: export the filter");
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0 ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS)
		return ib_error_setc(err, IB_ERROR, "seccomp: filter of unexpected size %lld",
				     (long long)size);
	void *buf = xmalloc((size_t)size);
	if (pread(fd, buf, (size_t)size, 0) != size) {
		int e = errno;
		free(buf);
		return ib_error_set(err, e, "seccomp: read the filter back");
	}
	out->insns = buf;
	out->len = (size_t)size / sizeof(struct sock_filter);
	return 0;
}

/* The two filters (sync calls kept or not) never change within a process:
 * each is compiled once (about a millisecond with libseccomp) and every step
 * gets a copy. */
static pthread_mutex_t sb_filter_lock = PTHREAD_MUTEX_INITIALIZER;
static ib_sb_filter sb_filter_built[2];

int ib_sb_seccomp_prepare(ib_sb_filter *out, bool keep_sync, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&sb_filter_lock);
	ib_sb_filter *built = &sb_filter_built[keep_sync];
	int r = 0;
	if (!built->insns)
		r = sb_filter_build(built, keep_sync, err);
	if (r == 0) {
		size_t bytes = built->len * sizeof(struct sock_filter);
		out->insns = xmalloc(bytes);
		memcpy(out->insns, built->insns, bytes);
		out->len = built->len;
	}
	pthread_mutex_unlock(&sb_filter_lock);
	return r;
}

int ib_sb_seccomp_load(const ib_sb_filter *f)
{
	struct sock_fprog prog = {(unsigned short)f->len, (struct sock_filter *)f->insns};
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}
