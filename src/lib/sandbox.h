/* The run-step sandbox (SPEC §4 "run").
 *
 * A command runs in new mount, PID, IPC and UTS namespaces (plus a network
 * namespace holding only an "up" loopback for network = "none"), on an
 * overlayfs whose lower dirs are the unpacked parent layers and whose upper
 * dir becomes the step's layer.  The process tree is:
 *
 *   caller ── monitor (host PID ns: enforces the timeout)
 *                └── init, PID 1 (sets up the mounts, pivot_root, reaps)
 *                      └── the command (capabilities dropped, user set, exec)
 *
 * Inside: pivot_root into the merged root with the host root detached, a new
 * /proc (with Docker's masked and read-only paths), a tmpfs /dev holding only
 * null zero full random urandom tty, pts, shm and the fd/stdin/stdout/stderr
 * links, a read-only /sys, the host /etc/hosts and /etc/resolv.conf bound
 * read-only (with the default network, a resolv.conf generated for it), the extra bind mounts,
 * Docker's default capability set, every inherited fd closed and stdin = /dev/null.  The command
 * joins a new session keyring and runs under a seccomp filter with the coverage of Docker's default
 * profile, in a cgroup of its own (pids, memory) when the host lets us create one (see
 * docs/sandbox.md).  The rootfs and /dev are nodev, so a device node the command creates
 * (CAP_MKNOD) cannot be opened.
 *
 * Mount points that the image lacks are provided by an extra, bottom-most
 * lower dir on a private tmpfs, so they never show up in upper_dir: after
 * ib_sandbox_run, upper_dir holds only what the command changed, plus the
 * workdir if it had to be created (as Docker does).  In the rare case where
 * an image layer hides such a mount point (opaque dir, whiteout), it is
 * created in the merged root and removed again after the command.
 *
 * Without root, a user namespace maps the caller to uid 0 (rootless); the
 * overlay then uses "userxattr" (user.overlay.* instead of trusted.overlay.*)
 * and only uid/gid 0 exist inside, so `user` must resolve to 0.
 *
 * Kernel: the mount API of Linux >= 5.12 (open_tree, fsmount, move_mount,
 * mount_setattr); a stack too long for one mount(2) option page (about 200
 * lower dirs) needs overlayfs "lowerdir+" (Linux >= 6.8). */
#ifndef IB_SANDBOX_H
#define IB_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* An extra bind mount: cache mounts (directories, read-write) and secrets
 * (files, read-only).  target is absolute inside the container and may not
 * contain ".." components.  The bound path is never part of the layer. */
typedef struct ib_sandbox_mount {
	const char *source; /* host path */
	const char *target; /* container path */
	bool readonly;
	bool is_file;
} ib_sandbox_mount;

/* One line of the command's merged stdout+stderr, without its newline.
 * "\r\n" ends a line like "\n"; a lone "\r" restarts the line (as a
 * terminal shows progress bars); a line longer than 64 KiB is split. */
typedef void (*ib_output_fn)(const char *line, size_t len, void *payload);

/* How a step is isolated.  OCI: namespaces and an overlay root (above).
 * CHROOT: no new namespace beyond those permitted, a copied root under
 * work_dir, chroot(2); the changes are written to upper_dir in overlay
 * format afterwards (docs/sandbox.md says what it does not isolate).
 * AUTO: OCI where it works (probed once), else CHROOT. */
typedef enum {
	IB_ISOLATION_AUTO = 0,
	IB_ISOLATION_OCI,
	IB_ISOLATION_CHROOT,
} ib_sandbox_isolation;

typedef struct ib_sandbox_options {
	/* Overlay lower dirs, TOP-most first; NULL or empty = scratch. */
	char *const *lower_dirs;
	/* Existing directory (empty or not) that receives the changes. */
	const char *upper_dir;
	/* Existing overlay work dir on the same filesystem as upper_dir. */
	const char *work_dir;
	/* Exec form.  argv[0] without '/' is looked up in the container's PATH. */
	char *const *argv;
	/* Full "K=V" environment.  PATH defaults to Docker's default PATH and
	 * HOME to the user's passwd home (else "/") when absent. */
	char *const *env;
	/* "uid", "uid:gid", "name", "name:group" (names from the container's
	 * /etc/passwd and /etc/group); NULL = root.  Without an explicit group,
	 * the supplementary groups are those listing the user in /etc/group. */
	const char *user;
	/* Working directory, created (mode 0755, in the layer) if missing;
	 * NULL = "/". */
	const char *workdir;
	/* NULL or "default": a network namespace of its own, outbound
	 * connectivity through slirp4netns (nothing on the host's loopback is
	 * reachable), a generated resolv.conf; "none": only loopback; "host":
	 * the host's network, without CAP_NET_RAW and CAP_NET_ADMIN. */
	const char *network;
	/* UTS hostname; NULL = "imgbuild". */
	const char *hostname;
	/* 0 = none.  On expiry the whole PID namespace is killed, the line
	 * "timed out after N s" is sent to `output` and the status is 137. */
	unsigned timeout_sec;
	/* Processes of the step (pids cgroup): 0 = 4096, < 0 = no limit.
	 * When hit, the line "pids limit of N reached" is sent to `output`
	 * after the command's own output. */
	long pids_limit;
	/* Memory of the step in bytes (memory cgroup); 0 = no limit. */
	unsigned long long memory_limit;
	/* No seccomp filter (the default one refuses keyctl, user namespaces,
	 * mount, bpf, ... as Docker's default profile does). */
	bool seccomp_unconfined;
	/* Let fsync, fdatasync, sync, syncfs and sync_file_range reach the
	 * kernel.  By default the seccomp filter makes them succeed without
	 * doing anything (they only cost time: the layer is read back through
	 * the page cache and the store syncs what it keeps).  Without the
	 * filter (seccomp_unconfined) they always reach the kernel. */
	bool keep_sync;
	const ib_sandbox_mount *mounts;
	size_t n_mounts;
	/* NULL = write each line to stderr. */
	ib_output_fn output;
	void *payload;
	ib_sandbox_isolation isolation;
} ib_sandbox_options;

#define IB_SANDBOX_OPTIONS_INIT                                                                    \
	{                                                                                          \
		0                                                                                  \
	}

/* Run opts->argv in the sandbox and wait for it.  Output is delivered
 * line by line while the command runs.  *exit_status gets the command's exit
 * status, or 128+signal when it was killed; a command that cannot be
 * executed is reported through `output` ("exec ARGV0: No such file or
 * directory") with status 127 (126 for other exec errors).  When the command
 * exits, every process it left behind is killed.
 *
 * Returns 0, or a negative IB_E* code when the sandbox itself failed (bad
 * options, a mount, an unknown user, a workdir the user cannot enter); the
 * message reads "sandbox: WHAT: strerror".  Nothing the caller passed is
 * retained or freed; upper_dir is left in place either way. */
int ib_sandbox_run(const ib_sandbox_options *opts, int *exit_status, ib_error **err);

/* ---- chroot isolation (sandbox_chroot.c) ---- */

/* AUTO -> OCI when this process can make mount and PID namespaces and
 * mount an overlay whose upper dir lies in work_parent (not on overlayfs),
 * else CHROOT; the probe runs once per process.  Others are returned as
 * they are. */
ib_sandbox_isolation ib_sandbox_resolve_isolation(ib_sandbox_isolation iso,
						  const char *work_parent);
const char *ib_sandbox_isolation_name(ib_sandbox_isolation iso);

/* ---- read-only views (sandbox_view.c) ---- */

/* Mount a read-only overlay of lowers (top-most first, NULL-terminated;
 * none is fine) under dir, which the caller owns and removes after
 * ib_sandbox_view_unmount.  *mount_out (caller frees) is the merged root. */
int ib_sandbox_view_mount(char *const *lowers, const char *dir, char **mount_out, ib_error **err);
/* Detach a view's mount; NULL or a path that is not a mount is a no-op. */
void ib_sandbox_view_unmount(const char *mount_dir);
/* A private mount namespace for the calling process, so views never show
 * on the host.  Call before any thread starts; non-fatal when unavailable
 * (not root). */
void ib_sandbox_prepare_process(void);

#endif
