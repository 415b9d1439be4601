/* The run step's private network: a network namespace of its own, with
 * outbound connectivity through pasta (package "passt"), a userspace
 * network stack started per step and killed with it.
 *
 * Why pasta rather than slirp4netns: it copies the host's addresses and
 * routes into the namespace (no NAT subnet to document), configures the
 * namespace itself (--config-net, no ip(8) call of ours), forwards DNS to
 * the host's resolver even when that one listens on the host's loopback
 * (--dns-forward) and writes its pid once the namespace is ready, which
 * gives a synchronisation point without polling.
 *
 * The rule: the step reaches what any other machine on the network could
 * reach, and nothing that is only on the host's loopback.  pasta runs with
 * -t/-u/-T/-U none (no port forwarding in either direction) and
 * --no-map-gw (the gateway address is the real gateway, not the host's
 * 127.0.0.1); the only exception is UDP port 53 of IB_SB_DNS_FORWARD, which
 * reaches the host's first resolver.  Abstract unix sockets belong to the
 * network namespace, so the host's are out of reach too. */
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
					ib_buf_appendf(&b, "nameserver %s\n", IB_SB_DNS_FORWARD);
				forwarded = true;
				continue;
			}
		}
		ib_buf_appendf(&b, "%s\n", line);
	}
	if (!any) /* no resolver configured: libc would try the local one */
		ib_buf_appendf(&b, "nameserver %s\n", IB_SB_DNS_FORWARD);
	return ib_buf_steal(&b, NULL);
}

int ib_sb_net_prepare(ib_sb_net *out, bool rootless, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	out->rootless = rootless;
	out->pasta = sb_find_in_path("pasta");
	if (!out->pasta)
		return ib_error_setc(err, IB_ENOTFOUND,
				     "network: pasta not found: install it (Debian/Ubuntu: apt-get "
				     "install passt) or run the step with network \"none\" or \"host\"");
	cleanup_free char *host = NULL;
	size_t len = 0;
	if (ib_read_file("/etc/resolv.conf", 1 << 20, &host, &len, NULL) < 0)
		host = NULL;
	out->resolv = ib_sb_net_resolv(host);

	char **v = NULL;
	ib_strv_push(&v, "pasta");
	ib_strv_push(&v, "--quiet");
	ib_strv_push(&v, "--config-net");
	static const char *const none[] = {"-t", "-u", "-T", "-U"};
	for (size_t i = 0; i < 4; i++) {
		ib_strv_push(&v, none[i]);
		ib_strv_push(&v, "none");
	}
	ib_strv_push(&v, "--no-map-gw");
	ib_strv_push(&v, "--dns-forward");
	ib_strv_push(&v, IB_SB_DNS_FORWARD);
	/* the pid is written once the namespace is configured */
	ib_strv_push(&v, "--pid");
	ib_strv_push(&v, "/proc/self/fd/4");
	if (!rootless) {
		/* as root, pasta would switch to "nobody" and then lack the
		 * right to enter the namespace; it drops every other
		 * capability and sandboxes itself either way */
		ib_strv_push(&v, "--runas");
		ib_strv_push(&v, "0");
	} else {
		ib_strv_push(&v, "--userns");
		ib_strv_push(&v, "/proc/self/fd/6");
	}
	ib_strv_push(&v, "--netns");
	ib_strv_push(&v, "/proc/self/fd/5");
	out->argv = v;
	return 0;
}

void ib_sb_net_free(ib_sb_net *n)
{
	free(n->pasta);
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
	int go[2], pidp[2], errp[2];
	if (pipe2(go, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(pidp, O_CLOEXEC) < 0) {
		sb_close4(go[0], go[1], -1, -1);
		return -1;
	}
	if (pipe2(errp, O_CLOEXEC) < 0) {
		sb_close4(go[0], go[1], pidp[0], pidp[1]);
		return -1;
	}
	pid_t target = getpid();
	pid_t h = fork();
	if (h < 0) {
		sb_close4(go[0], go[1], pidp[0], pidp[1]);
		sb_close4(errp[0], errp[1], -1, -1);
		return -1;
	}
	if (h == 0) {
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
		/* fds 4, 5 and 6 as named on the command line: moved above
		 * that range first so that dup2 cannot clobber one */
		int a = fcntl(pidp[1], F_DUPFD_CLOEXEC, 20);
		int b = netns >= 0 ? fcntl(netns, F_DUPFD_CLOEXEC, 20) : -1;
		int c = userns >= 0 ? fcntl(userns, F_DUPFD_CLOEXEC, 20) : -1;
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		sb_move_fd(errp[1], 2);
		if (a < 0 || b < 0 || null < 0 || (n->rootless && c < 0)) {
			dprintf(2, "open the step's namespaces: %s", strerror(errno));
			_exit(127);
		}
		sb_move_fd(null, 0);
		sb_move_fd(null, 1);
		sb_move_fd(a, 4);
		sb_move_fd(b, 5);
		if (c >= 0)
			sb_move_fd(c, 6);
		close_range(7, ~0U, 0);
		execv(n->pasta, n->argv);
		dprintf(2, "exec %s: %s", n->pasta, strerror(errno));
		_exit(127);
	}
	close(go[0]);
	close(pidp[1]);
	close(errp[1]);
	p->helper = h;
	p->go = go[1];
	p->pid_r = pidp[0];
	p->err_r = errp[0];
	return 0;
}

pid_t ib_sb_net_start(ib_sb_net_proc *p, char *msg, size_t msglen)
{
	msg[0] = '\0';
	ssize_t r;
	do
		r = write(p->go, "g", 1);
	while (r < 0 && errno == EINTR);
	close(p->go);
	int st = 0;
	while (waitpid(p->helper, &st, 0) < 0 && errno == EINTR)
		;
	char buf[32];
	r = 0;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		do
			r = read(p->pid_r, buf, sizeof(buf) - 1);
		while (r < 0 && errno == EINTR);
	}
	close(p->pid_r);
	pid_t pid = 0;
	if (r > 0) {
		buf[r] = '\0';
		pid = (pid_t)strtol(buf, NULL, 10);
	}
	if (pid <= 0) {
		fcntl(p->err_r, F_SETFL, O_NONBLOCK);
		ssize_t m = read(p->err_r, msg, msglen - 1);
		msg[m > 0 ? m : 0] = '\0';
		for (char *c = msg; *c; c++)
			if (*c == '\n')
				*c = c[1] ? ' ' : '\0';
		if (!msg[0])
			snprintf(msg, msglen, "exited with status %d",
				 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		close(p->err_r);
		errno = ECHILD;
		return -1;
	}
	close(p->err_r);
	return pid;
}
