/* Private interface of the sandbox family (sandbox.c, sandbox_seccomp.c,
 * sandbox_net.c, sandbox_cgroup.c).  The *_prepare functions run in the
 * caller before the first fork and may allocate; the rest run in the
 * sandbox's children and only make system calls. */
#ifndef IB_SANDBOX_INTERNAL_H
#define IB_SANDBOX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* ---- seccomp (sandbox_seccomp.c) ---- */

/* The default filter, compiled to classic BPF for the native architecture
 * and its 32-bit compat ABIs; unless keep_sync, the sync calls (fsync,
 * fdatasync, sync, syncfs, sync_file_range) return 0 without running.
 * Free insns with free(). */
typedef struct ib_sb_filter {
	void *insns; /* struct sock_filter[] */
	size_t len;  /* number of instructions */
} ib_sb_filter;

int ib_sb_seccomp_prepare(ib_sb_filter *out, bool keep_sync, ib_error **err);
/* Install the filter on the calling thread (needs CAP_SYS_ADMIN or
 * no_new_privs); -1 with errno. */
int ib_sb_seccomp_load(const ib_sb_filter *f);

/* ---- network (sandbox_net.c) ---- */

/* slirp4netns's DNS forwarder, as seen from the namespace. */
#define IB_SB_DNS "10.0.2.3"

typedef struct ib_sb_net {
	char *helper; /* absolute path of slirp4netns */
	char *resolv; /* generated resolv.conf */
	char **argv;  /* its command line (fds 3-6: exit, ready, netns, userns) */
	bool rootless;
} ib_sb_net;

/* Find slirp4netns and prepare its command line and the resolv.conf seen
 * by the step.  IB_ENOTFOUND with an install hint when it is missing. */
int ib_sb_net_prepare(ib_sb_net *out, bool rootless, ib_error **err);
void ib_sb_net_free(ib_sb_net *n);
/* The resolv.conf of a private network from the host's: the nameservers
 * become slirp's forwarder, search and options lines are kept. */
char *ib_sb_net_resolv(const char *host_conf);

/* The network helper process, forked while the caller still is in the
 * host's user and network namespaces; it waits until told to start. */
typedef struct ib_sb_net_proc {
	pid_t helper;
	int go, exit_w, ready_r, err_r;
} ib_sb_net_proc;

/* Child side.  spawn: fork the helper (-1 with errno).  start: once the
 * caller is in the step's network namespace, let it configure that
 * namespace; 0 when ready, or -1 with the helper's own message in msg.
 * stop: kill it (the monitor exits right after). */
int ib_sb_net_spawn(const ib_sb_net *n, ib_sb_net_proc *p);
int ib_sb_net_start(ib_sb_net_proc *p, char *msg, size_t msglen);
void ib_sb_net_stop(ib_sb_net_proc *p);

/* ---- cgroups (sandbox_cgroup.c) ---- */

typedef struct ib_sb_cgroup {
	char *dirs[2]; /* created cgroup dirs (v2: one; v1: pids, memory) */
	size_t n_dirs;
	char *procs[2]; /* their cgroup.procs files */
} ib_sb_cgroup;

/* Create the step's cgroup(s) with the limits (0 = none).  When no
 * hierarchy is writable, *warning gets a message and 0 is returned. */
int ib_sb_cgroup_create(ib_sb_cgroup *cg, unsigned long pids_max, unsigned long long memory_max,
			char **warning, ib_error **err);
/* Move pid into the cgroup(s) (child side); -1 with errno. */
int ib_sb_cgroup_enter(const ib_sb_cgroup *cg, pid_t pid);
/* Kill what is left and remove the cgroup(s). */
void ib_sb_cgroup_destroy(ib_sb_cgroup *cg);
/* true when the pids limit was hit during the step. */
bool ib_sb_cgroup_pids_hit(const ib_sb_cgroup *cg);

#endif
