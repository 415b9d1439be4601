/* The run step's private network: a network namespace of its own, with
 * outbound connectivity through slirp4netns, a userspace network stack
 * started per step and gone with it (it exits when the monitor's end of
 * its exit pipe closes, and is killed when the step ends).
 *
 * Why slirp4netns rather than pasta: per step cost.  Both serve apt, npm
 * and git equally well, but pasta needs 60-80 ms to get a namespace ready
 * on a loaded machine, slirp4netns about 8 ms (see docs/sandbox.md), and a
 * build runs one per run step.  slirp4netns also signals readiness on a
 * pipe (--ready-fd) and sandboxes itself (--enable-sandbox,
 * --enable-seccomp).
 *
 * The rule: the step reaches what any other machine on the network could
 * reach, and nothing that is only on the host's loopback.  The namespace
 * sees 10.0.2.100/24 behind the gateway 10.0.2.2 with
 * --disable-host-loopback (the gateway is not the host's 127.0.0.1), no
 * port is forwarded in either direction, and 10.0.2.3 is slirp's DNS
 * forwarder to the host's resolver.  Abstract unix sockets belong to the
 * network namespace, so the host's are out of reach too. */
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

static char *sb_find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	ib_buf dirs = IB_BUF_INIT;
	ib_buf_appendf(&dirs, "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", path ? path : "");
	char *list = ib_buf_steal(&dirs, NULL);
	char *found = NULL;
	for (char *p = list; p && *p && !found;) {
		char *colon = strchrnul(p, ':');
		bool last = *colon == '\0';
		*colon = '\0';
		if (p[0] == '/') {
			cleanup_free char *cand = xasprintf("%s/%s", p, name);
			if (access(cand, X_OK) == 0)
				found = steal_pointer(&cand);
		}
		p = last ? NULL : colon + 1;
	}
	free(list);
	return found;
}

static bool sb_is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
	       strncmp(addr, "::ffff:127.", 11) == 0;
}

char *ib_sb_net_resolv(const char *host_conf)
{
	ib_buf b = IB_BUF_INIT;
	bool forwarded = false, any = false;
	const char *p = host_conf ? host_conf : "";
	while (*p) {
		size_t n = strcspn(p, "\n");
		cleanup_free char *line = xstrndup(p, n);
		p += n + (p[n] == '\n');
		char addr[128];
		if (sscanf(line, " nameserver %127s", addr) == 1) {
			any = true;
			if (sb_is_loopback(addr)) {
				if (!forwarded)
					ib_buf_appendf(&b, "nameserver %s\n", IB_SB_DNS);
				forwarded = true;
				continue;
			}
		}
		ib_buf_appendf(&b, "%s\n", line);
	}
	if (!any) /* no resolver configured: libc would try the local one */
		ib_buf_appendf(&b, "nameserver %s\n", IB_SB_DNS);
	return ib_buf_steal(&b, NULL);
}

int ib_sb_net_prepare(ib_sb_net *out, bool rootless, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	out->rootless = rootless;
	out->helper = sb_find_in_path("slirp4netns");
	if (!out->helper)
		return ib_error_setc(err, IB_ENOTFOUND,
				     "network: slirp4netns not found: install it (Debian/Ubuntu: "
				     "apt-get install slirp4netns) or run the step with network "
				     "\"none\" or \"host\"");
	cleanup_free char *host = NULL;
	size_t len = 0;
	if (ib_read_file("/etc/resolv.conf", 1 << 20, &host, &len, NULL) < 0)
		host = NULL;
	out->resolv = ib_sb_net_resolv(host);

	/* fds: 3 exit pipe, 4 ready pipe, 5 netns, 6 userns (rootless) */
	char **v = NULL;
	static const char *const args[] = {
	    "slirp4netns",	"--configure",	    "--mtu=65520", "--disable-host-loopback",
	    "--enable-sandbox", "--enable-seccomp", "--exit-fd=3", "--ready-fd=4",
	    "--netns-type=path"};
	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
		ib_strv_push(&v, args[i]);
	if (rootless)
		ib_strv_push(&v, "--userns-path=/proc/self/fd/6");
	ib_strv_push(&v, "/proc/self/fd/5");
	ib_strv_push(&v, "tap0");
	out->argv = v;
	return 0;
}

void ib_sb_net_free(ib_sb_net *n)
{
	free(n->helper);
	free(n->resolv);
	ib_strv_free(n->argv);
	memset(n, 0, sizeof(*n));
}

static void sb_move_fd(int from, int to)
{
	if (from == to)
		fcntl(to, F_SETFD, 0);
	else
		dup2(from, to);
}

static void sb_close4(int a, int b, int c, int d)
{
	int e = errno;
	close(a);
	close(b);
	close(c);
	close(d);
	errno = e;
}

int ib_sb_net_spawn(const ib_sb_net *n, ib_sb_net_proc *p)
{
	memset(p, -1, sizeof(*p));
	int go[2] = {-1, -1}, exitp[2] = {-1, -1}, ready[2] = {-1, -1}, errp[2] = {-1, -1};
	if (pipe2(go, O_CLOEXEC) < 0 || pipe2(exitp, O_CLOEXEC) < 0 ||
	    pipe2(ready, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		sb_close4(go[0], go[1], exitp[0], exitp[1]);
		sb_close4(ready[0], ready[1], errp[0], errp[1]);
		return -1;
	}
	pid_t target = getpid();
	pid_t h = fork();
	if (h < 0) {
		sb_close4(go[0], go[1], exitp[0], exitp[1]);
		sb_close4(ready[0], ready[1], errp[0], errp[1]);
		return -1;
	}
	if (h == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		char ch;
		ssize_t r;
		do
			r = read(go[0], &ch, 1);
		while (r < 0 && errno == EINTR);
		if (r != 1)
			_exit(127); /* the monitor gave up */
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/ns/net", (long)target);
		int netns = open(path, O_RDONLY | O_CLOEXEC);
		snprintf(path, sizeof(path), "/proc/%ld/ns/user", (long)target);
		int userns = n->rootless ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		/* move everything above the fds named on the command line
		 * first, so that dup2 cannot clobber one */
		int fx = fcntl(exitp[0], F_DUPFD_CLOEXEC, 20);
		int fr = fcntl(ready[1], F_DUPFD_CLOEXEC, 20);
		int fn = netns >= 0 ? fcntl(netns, F_DUPFD_CLOEXEC, 20) : -1;
		int fu = userns >= 0 ? fcntl(userns, F_DUPFD_CLOEXEC, 20) : -1;
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		sb_move_fd(errp[1], 2);
		if (fx < 0 || fr < 0 || fn < 0 || null < 0 || (n->rootless && fu < 0)) {
			dprintf(2, "open the step's namespaces: %s", strerror(errno));
			_exit(127);
		}
		sb_move_fd(null, 0);
		sb_move_fd(null, 1);
		sb_move_fd(fx, 3);
		sb_move_fd(fr, 4);
		sb_move_fd(fn, 5);
		if (fu >= 0)
			sb_move_fd(fu, 6);
		close_range(7, ~0U, 0);
		execv(n->helper, n->argv);
		dprintf(2, "exec %s: %s", n->helper, strerror(errno));
		_exit(127);
	}
	close(go[0]);
	close(exitp[0]);
	close(ready[1]);
	close(errp[1]);
	p->helper = h;
	p->go = go[1];
	p->exit_w = exitp[1];
	p->ready_r = ready[0];
	p->err_r = errp[0];
	return 0;
}

int ib_sb_net_start(ib_sb_net_proc *p, char *msg, size_t msglen)
{
	msg[0] = '\0';
	ssize_t r;
	do
		r = write(p->go, "g", 1);
	while (r < 0 && errno == EINTR);
	close(p->go);
	p->go = -1;
	char ch = 0;
	do
		r = read(p->ready_r, &ch, 1);
	while (r < 0 && errno == EINTR);
	close(p->ready_r);
	p->ready_r = -1;
	if (r == 1 && ch == '1')
		return 0;
	/* it exited (or misbehaved): its own message explains why */
	kill(p->helper, SIGKILL);
	int st = 0;
	while (waitpid(p->helper, &st, 0) < 0 && errno == EINTR)
		;
	p->helper = -1;
	fcntl(p->err_r, F_SETFL, O_NONBLOCK);
	ssize_t m = read(p->err_r, msg, msglen - 1);
	msg[m > 0 ? m : 0] = '\0';
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = c[1] ? ' ' : '\0';
	if (!msg[0])
		snprintf(msg, msglen, "exited with status %d",
			 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	errno = ECHILD;
	return -1;
}

void ib_sb_net_stop(ib_sb_net_proc *p)
{
	/* not reaped: its exit (the tap device's removal) takes a few ms,
	 * and the caller need not wait for it; the monitor exits right after
	 * and leaves the zombie to init */
	if (p->helper > 0)
		kill(p->helper, SIGKILL);
	int fds[] = {p->go, p->exit_w, p->ready_r, p->err_r};
	for (size_t i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	memset(p, -1, sizeof(*p));
}
