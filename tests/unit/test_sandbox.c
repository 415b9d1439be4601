/* Unit tests for sandbox.c: run busybox (from Debian's busybox-static) in
 * the sandbox over small layers built in a temp dir, and check what the
 * command sees, what it may not reach, and what lands in the upper dir.
 * Needs root and overlayfs; skips loudly without them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"
#include "userns.h"
#include "sandbox_internal.h"
#include "testutil.h"
#include "util.h"

#define BUSYBOX "/bin/busybox"
#define DOCKER_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static char g_base[] = "/tmp/ib-test-sandbox-XXXXXX";
static char *g_bin_layer; /* bin/busybox + applet links */
static char *g_etc_layer; /* etc/passwd, etc/group, data/file, home/alice */
static const char *g_skip;
static int g_run_seq;

/* ---- helpers ---- */

static char *mkdirs(const char *base, const char *rel)
{
	char *p = ib_path_join(base, rel);
	ib_error *e = NULL;
	assert_int_equal(ib_mkdir_p(p, 0755, &e), 0);
	return p;
}

static void copy_file(const char *src, const char *dst, mode_t mode)
{
	char *data = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	assert_int_equal(ib_read_file(src, 64 << 20, &data, &len, &e), 0);
	int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(ib_write_all(fd, data, len, &e), 0);
	close(fd);
	free(data);
}

static bool exists_in(const char *dir, const char *rel)
{
	char *p = ib_path_join(dir, rel);
	struct stat st;
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

/* overlayfs usable here?  Checked on its own, independent of the code
 * under test, so a sandbox bug fails the tests instead of skipping them. */
static bool overlay_works(void)
{
	char *l = mkdirs(g_base, "probe/l"), *u = mkdirs(g_base, "probe/u");
	char *w = mkdirs(g_base, "probe/w"), *m = mkdirs(g_base, "probe/m");
	char *opt = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", l, u, w);
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(1);
		_exit(mount("overlay", m, "overlay", 0, opt) == 0 ? 0 : 1);
	}
	int st = 1;
	waitpid(pid, &st, 0);
	free(l), free(u), free(w), free(m), free(opt);
	char *probe = ib_path_join(g_base, "probe");
	ib_rm_rf(probe, NULL);
	free(probe);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int group_setup(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		g_skip = "sandbox tests need root";
		return 0;
	}
	if (access(BUSYBOX, X_OK) != 0) {
		g_skip = "sandbox tests need " BUSYBOX " (busybox-static)";
		return 0;
	}
	assert_non_null(mkdtemp(g_base));
	chmod(g_base, 0755); /* the rootless test runs as nobody */
	if (!overlay_works()) {
		g_skip = "sandbox tests need overlayfs";
		return 0;
	}
	g_bin_layer = mkdirs(g_base, "layers/bin");
	char *bin = mkdirs(g_bin_layer, "bin");
	char *bb = ib_path_join(bin, "busybox");
	copy_file(BUSYBOX, bb, 0755);
	static const char *const applets[] = {
	    "sh",    "ls",   "cat",  "echo", "id",	 "sleep", "rm",	   "mkdir",
	    "touch", "grep", "pwd",  "wc",   "readlink", "head",  "mknod", "hostname",
	    "true",  "env",  "stat", "tr",   "printf",	 "sed",	  "seq",
	};
	for (size_t i = 0; i < sizeof(applets) / sizeof(applets[0]); i++) {
		char *link = ib_path_join(bin, applets[i]);
		assert_int_equal(symlink("busybox", link), 0);
		free(link);
	}
	free(bb);
	free(bin);

	g_etc_layer = mkdirs(g_base, "layers/etc");
	char *etc = mkdirs(g_etc_layer, "etc");
	char *p = ib_path_join(etc, "passwd");
	tu_write_text(p, "root:x:0:0:root:/root:/bin/sh\n"
			 "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n");
	free(p);
	p = ib_path_join(etc, "group");
	tu_write_text(p, "root:x:0:\nstaff:x:50:bob,alice\nalice:x:1000:\nother:x:60:bob\n");
	free(p);
	free(etc);
	char *data = mkdirs(g_etc_layer, "data");
	p = ib_path_join(data, "file");
	tu_write_text(p, "lower data\n");
	free(p);
	free(data);
	free(mkdirs(g_etc_layer, "home/alice"));
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (g_bin_layer || g_etc_layer || strchr(g_base, 'X') == NULL)
		ib_rm_rf(g_base, NULL);
	free(g_bin_layer);
	free(g_etc_layer);
	return 0;
}

typedef struct tctx {
	char *dir, *upper, *work;
	char **lines;
	size_t n_lines;
	int status;
	ib_error *err;
} tctx;

static int setup(void **state)
{
	tctx *t = xcalloc(1, sizeof(*t));
	*state = t;
	if (g_skip)
		return 0;
	char *rel = xasprintf("runs/%d", ++g_run_seq);
	t->dir = mkdirs(g_base, rel);
	free(rel);
	t->upper = mkdirs(t->dir, "upper");
	t->work = mkdirs(t->dir, "work");
	return 0;
}

static void clear_result(tctx *t)
{
	ib_strv_free(t->lines);
	t->lines = NULL;
	t->n_lines = 0;
	ib_error_free(&t->err);
}

static int teardown(void **state)
{
	tctx *t = *state;
	clear_result(t);
	if (t->dir)
		ib_rm_rf(t->dir, NULL);
	free(t->dir);
	free(t->upper);
	free(t->work);
	free(t);
	return 0;
}

#define SKIP_IF_NEEDED()                                                                           \
	do {                                                                                       \
		if (g_skip) {                                                                      \
			print_message("[  SKIPPED ] %s\n", g_skip);                                \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

static void collect(const char *line, size_t len, void *payload)
{
	tctx *t = payload;
	char *s = xstrndup(line, len);
	ib_strv_push(&t->lines, s);
	free(s);
	t->n_lines++;
}

static void base_opts(tctx *t, ib_sandbox_options *o, char *const *argv)
{
	static char *lowers[3];
	lowers[0] = g_etc_layer;
	lowers[1] = g_bin_layer;
	lowers[2] = NULL;
	memset(o, 0, sizeof(*o));
	o->lower_dirs = lowers;
	o->upper_dir = t->upper;
	o->work_dir = t->work;
	o->argv = argv;
	o->output = collect;
	o->payload = t;
}

static int run_opts(tctx *t, const ib_sandbox_options *o)
{
	clear_result(t);
	t->status = -1;
	return ib_sandbox_run(o, &t->status, &t->err);
}

/* Run a shell script with the default layers; options tweaked by the caller
 * through o (may be NULL). */
static int run_sh(tctx *t, const char *script, const ib_sandbox_options *tweak)
{
	char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	ib_sandbox_options o;
	if (tweak) {
		o = *tweak;
		o.argv = argv;
		o.output = collect;
		o.payload = t;
		if (!o.upper_dir)
			o.upper_dir = t->upper;
		if (!o.work_dir)
			o.work_dir = t->work;
	} else {
		base_opts(t, &o, argv);
	}
	int rc = run_opts(t, &o);
	if (rc < 0)
		print_message("sandbox error: %s\n", ib_error_msg(t->err));
	return rc;
}

static void tweak_init(tctx *t, ib_sandbox_options *o)
{
	base_opts(t, o, NULL);
}

static bool has_line(const tctx *t, const char *s)
{
	for (size_t i = 0; i < t->n_lines; i++)
		if (strcmp(t->lines[i], s) == 0)
			return true;
	return false;
}

static bool any_line_contains(const tctx *t, const char *s)
{
	for (size_t i = 0; i < t->n_lines; i++)
		if (strstr(t->lines[i], s))
			return true;
	return false;
}

static void dump_lines(const tctx *t)
{
	for (size_t i = 0; i < t->n_lines; i++)
		print_message("  | %s\n", t->lines[i]);
}

/* ---- output and status ---- */

static void test_output_lines_and_exit_status(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "echo hello; echo oops >&2; printf partial; exit 3", NULL), 0);
	assert_int_equal(t->status, 3);
	assert_int_equal(t->n_lines, 3);
	assert_string_equal(t->lines[0], "hello");
	assert_string_equal(t->lines[1], "oops");
	assert_string_equal(t->lines[2], "partial");
}

static void test_output_handles_cr_and_long_lines(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	/* "a\r\n" is a line; "10%\r50%\rdone\n" shows what a terminal would */
	assert_int_equal(run_sh(t,
				"printf 'a\\r\\n10%%\\r50%%\\rdone\\n\\n'; "
				"head -c 100000 /dev/zero | tr '\\0' x; echo",
				NULL),
			 0);
	assert_int_equal(t->status, 0);
	assert_int_equal(t->n_lines, 5);
	assert_string_equal(t->lines[0], "a");
	assert_string_equal(t->lines[1], "done");
	assert_string_equal(t->lines[2], "");
	assert_int_equal(strlen(t->lines[3]), 65536);
	assert_int_equal(strlen(t->lines[4]), 100000 - 65536);
}

static void test_signal_death_is_128_plus_signal(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "kill -TERM $$; sleep 5", NULL), 0);
	assert_int_equal(t->status, 128 + 15);
}

/* ---- the layer ---- */

static void test_written_file_lands_in_upper(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "mkdir -p /out && echo data > /out/file", NULL), 0);
	assert_int_equal(t->status, 0);
	char *p = ib_path_join(t->upper, "out/file");
	char *s = tu_read_file(p);
	assert_non_null(s);
	assert_string_equal(s, "data\n");
	free(s);
	free(p);
	/* the lower layer is untouched */
	assert_false(exists_in(g_etc_layer, "out"));
}

static void test_deleted_lower_file_becomes_whiteout(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "rm /data/file && cat /data/file", NULL), 0);
	assert_int_not_equal(t->status, 0);
	char *p = ib_path_join(t->upper, "data/file");
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(major(st.st_rdev), 0);
	assert_int_equal(minor(st.st_rdev), 0);
	free(p);
	assert_true(exists_in(g_etc_layer, "data/file"));
}

static void test_upper_has_only_command_changes(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	/* /etc exists in the lower, /run does not: neither the bound host
	 * files nor the mount points /proc /sys /dev may leave a trace */
	assert_int_equal(
	    run_sh(t, "cat /etc/hosts >/dev/null && ls /proc /sys /dev >/dev/null", NULL), 0);
	assert_int_equal(t->status, 0);
	cleanup_dir DIR *d = opendir(t->upper);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			fail_msg("unexpected %s in upper dir", de->d_name);
}

static void test_scratch_stack_gets_mount_points_without_trace(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	/* only busybox: no /etc at all in the image */
	char *lowers[] = {g_bin_layer, NULL};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = lowers;
	char *hosts = tu_read_file("/etc/hosts");
	assert_non_null(hosts);
	char first[256];
	snprintf(first, sizeof(first), "%.*s", (int)strcspn(hosts, "\n"), hosts);
	free(hosts);
	assert_int_equal(
	    run_sh(t, "head -n 1 /etc/hosts; echo x > /etc/hosts || echo ro; ls /", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, first));
	assert_true(has_line(t, "ro"));
	assert_false(exists_in(t->upper, "etc"));
	assert_false(exists_in(t->upper, "proc"));
	assert_false(exists_in(t->upper, "dev"));
}

static void test_empty_lower_list_runs_on_scratch(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = NULL;
	char *argv[] = {"/bin/sh", NULL};
	o.argv = argv;
	assert_int_equal(run_opts(t, &o), 0);
	assert_int_equal(t->status, 127);
	assert_true(has_line(t, "exec /bin/sh: No such file or directory"));
}

static void test_hidden_mount_point_is_created_and_removed(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	/* a layer whose whiteout hides /etc/hosts (and so the skeleton's) */
	char *wh = mkdirs(t->dir, "whiteout-layer/etc");
	char *node = ib_path_join(wh, "hosts");
	assert_int_equal(mknod(node, S_IFCHR | 0, makedev(0, 0)), 0);
	char *layer = ib_path_join(t->dir, "whiteout-layer");
	char *lowers[] = {layer, g_etc_layer, g_bin_layer, NULL};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = lowers;
	assert_int_equal(run_sh(t, "grep -c localhost /etc/hosts", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_false(exists_in(t->upper, "etc/hosts"));
	free(wh);
	free(node);
	free(layer);
}

static void test_long_lower_stack(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	/* 300 layers: too long for one mount(2) option page */
	enum { N = 300 };
	char **lowers = xcalloc(N + 2, sizeof(char *));
	for (int i = 0; i < N; i++) {
		char *rel = xasprintf("stack/L%03d/layers", i);
		char *d = mkdirs(t->dir, rel);
		char *f = xasprintf("%s/f%03d", d, i);
		tu_write_text(f, "x");
		free(f);
		free(d);
		free(rel);
		char *top = xasprintf("%s/stack/L%03d", t->dir, i);
		lowers[N - 1 - i] = top;
	}
	lowers[N] = xstrdup(g_bin_layer);
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = lowers;
	assert_int_equal(run_sh(t, "ls /layers | wc -l; ls /layers | head -n 1", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, "300"));
	assert_true(has_line(t, "f000"));
	ib_strv_free(lowers);
}

/* ---- environment, user, workdir, hostname, network ---- */

static void test_env_and_default_path_and_home(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *env[] = {"FOO=bar baz", NULL};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.env = env;
	assert_int_equal(run_sh(t, "echo \"$FOO\"; echo \"$PATH\"; echo \"$HOME\"", &o), 0);
	assert_int_equal(t->n_lines, 3);
	assert_string_equal(t->lines[0], "bar baz");
	assert_string_equal(t->lines[1], DOCKER_PATH);
	assert_string_equal(t->lines[2], "/root");

	char *env2[] = {"PATH=/nowhere", "HOME=/custom", NULL};
	o.env = env2;
	char *argv[] = {"sh", "-c", "echo hi", NULL};
	o.argv = argv;
	assert_int_equal(run_opts(t, &o), 0);
	/* argv[0] is looked up in the container's PATH */
	assert_int_equal(t->status, 127);
	assert_true(has_line(t, "exec sh: No such file or directory"));
	char *env3[] = {"PATH=/nowhere:/bin", "HOME=/custom", NULL};
	o.env = env3;
	char *argv2[] = {"sh", "-c", "echo $HOME", NULL};
	o.argv = argv2;
	assert_int_equal(run_opts(t, &o), 0);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, "/custom"));
}

static void test_numeric_user_and_group(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.user = "1234:5678";
	assert_int_equal(
	    run_sh(t, "id -u; id -g; id -G; echo $HOME; grep CapEff /proc/self/status", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "1234");
	assert_string_equal(t->lines[1], "5678");
	assert_string_equal(t->lines[2], "5678");
	assert_string_equal(t->lines[3], "/");
	assert_string_equal(t->lines[4], "CapEff:\t0000000000000000");
}

static void test_named_user_from_container_passwd(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.user = "alice";
	assert_int_equal(run_sh(t, "id -u; id -g; id -G; echo $HOME", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "1000");
	assert_string_equal(t->lines[1], "1000");
	assert_string_equal(t->lines[2], "1000 50");
	assert_string_equal(t->lines[3], "/home/alice");

	o.user = "alice:other";
	assert_int_equal(run_sh(t, "id -u; id -G", &o), 0);
	assert_string_equal(t->lines[0], "1000");
	assert_string_equal(t->lines[1], "60");
}

/* /etc/passwd read by the parser the builder uses (passwd.h): a line longer
 * than any line buffer, a line with only four fields.  The ids come from
 * /proc: busybox's id would refuse the four-field line. */
static void test_user_lines_read_by_the_shared_parser(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *etc = mkdirs(t->dir, "pw-layer/etc");
	char *p = ib_path_join(etc, "passwd");
	ib_buf pw = IB_BUF_INIT;
	ib_buf_appendf(&pw, "root:x:0:0:root:/root:/bin/sh\nbob:x:1200:1201:");
	for (int i = 0; i < 10000; i++)
		ib_buf_append(&pw, "b", 1);
	ib_buf_appendf(&pw, ":/home/bob:/bin/sh\nshort:x:1300:1301\n");
	tu_write_text(p, pw.data);
	ib_buf_free(&pw);
	free(p);
	char *layer = ib_path_join(t->dir, "pw-layer");
	char *lowers[] = {layer, g_etc_layer, g_bin_layer, NULL};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = lowers;
	const char *ids = "grep -E '^(Uid|Gid|Groups):' /proc/self/status | tr -s '\\t ' ' '; "
			  "echo $HOME";
	o.user = "bob";
	assert_int_equal(run_sh(t, ids, &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "Uid: 1200 1200 1200 1200");
	assert_string_equal(t->lines[1], "Gid: 1201 1201 1201 1201");
	assert_string_equal(t->lines[2], "Groups: 50 60 1201 "); /* staff and other list bob */
	assert_string_equal(t->lines[3], "/home/bob");
	o.user = "short";
	assert_int_equal(run_sh(t, ids, &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "Uid: 1300 1300 1300 1300");
	assert_string_equal(t->lines[1], "Gid: 1301 1301 1301 1301");
	assert_string_equal(t->lines[3], "/"); /* no home field */
	free(layer);
	free(etc);
}

/* A uid found in passwd brings its group, memberships and home. */
static void test_numeric_user_known_to_passwd(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.user = "1000";
	assert_int_equal(run_sh(t, "id -u; id -G; echo $HOME", &o), 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "1000");
	assert_string_equal(t->lines[1], "1000 50");
	assert_string_equal(t->lines[2], "/home/alice");
}

static void test_unknown_user_or_group_fails_the_sandbox(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.user = "mallory";
	int rc = run_sh(t, "true", &o);
	assert_int_equal(rc, IB_ENOTFOUND);
	assert_non_null(strstr(ib_error_msg(t->err), "unable to find user mallory"));
	o.user = "alice:nogroup";
	rc = run_sh(t, "true", &o);
	assert_int_equal(rc, IB_ENOTFOUND);
	assert_non_null(strstr(ib_error_msg(t->err), "unable to find group nogroup"));
}

static void test_workdir_is_created_and_entered(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.workdir = "/srv/app";
	assert_int_equal(run_sh(t, "pwd; touch here", &o), 0);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, "/srv/app"));
	assert_true(exists_in(t->upper, "srv/app/here"));
}

static void test_workdir_not_enterable_by_user_fails(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *d = mkdirs(t->dir, "private-layer/secret");
	chmod(d, 0700);
	char *layer = ib_path_join(t->dir, "private-layer");
	char *lowers[] = {layer, g_etc_layer, g_bin_layer, NULL};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.lower_dirs = lowers;
	o.user = "alice";
	o.workdir = "/secret";
	int rc = run_sh(t, "true", &o);
	assert_true(rc < 0);
	assert_non_null(strstr(ib_error_msg(t->err), "chdir /secret: Permission denied"));
	free(d);
	free(layer);
}

static void test_hostname_default_and_custom(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "hostname", NULL), 0);
	assert_true(has_line(t, "imgbuild"));
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.hostname = "buildbox";
	assert_int_equal(run_sh(t, "hostname", &o), 0);
	assert_true(has_line(t, "buildbox"));
	char host[256] = "";
	gethostname(host, sizeof(host));
	assert_string_not_equal(host, "buildbox");
}

static void test_network_none_has_only_loopback_up(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.network = "none";
	assert_int_equal(run_sh(t,
				"cat /proc/net/dev | grep : | wc -l; grep -c lo: /proc/net/dev; "
				"ls /sys/class/net; cat /sys/class/net/lo/flags",
				&o),
			 0);
	dump_lines(t);
	assert_int_equal(t->status, 0);
	assert_string_equal(t->lines[0], "1");
	assert_string_equal(t->lines[1], "1");
	assert_string_equal(t->lines[2], "lo");
	assert_string_equal(t->lines[3], "0x9"); /* IFF_UP | IFF_LOOPBACK */
}

static void test_network_default_shares_host(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *dev = tu_read_file("/proc/net/dev");
	assert_non_null(dev);
	int host_ifaces = 0;
	for (char *p = dev; (p = strchr(p, ':')); p++)
		host_ifaces++;
	free(dev);
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.network = "host";
	assert_int_equal(run_sh(t, "grep : /proc/net/dev | wc -l", &o), 0);
	char want[16];
	snprintf(want, sizeof(want), "%d", host_ifaces);
	assert_true(has_line(t, want));
	o.network = "bridge";
	assert_int_equal(run_sh(t, "true", &o), IB_EINVALID);
}

/* ---- timeout and processes ---- */

static void test_timeout_kills_the_namespace(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.timeout_sec = 1;
	double t0 = tu_now();
	assert_int_equal(run_sh(t, "sleep 100 & echo started; sleep 100", &o), 0);
	double took = tu_now() - t0;
	assert_true(took < 5.0);
	assert_true(took >= 0.9);
	assert_int_equal(t->status, 137);
	assert_true(has_line(t, "started"));
	assert_string_equal(t->lines[t->n_lines - 1], "timed out after 1 s");
}

static void test_background_process_does_not_hang(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	double t0 = tu_now();
	/* the background sleep keeps the output pipe open */
	assert_int_equal(run_sh(t, "sleep 100 & echo started", NULL), 0);
	assert_true(tu_now() - t0 < 5.0);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, "started"));
}

static void test_missing_binary_is_status_127(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	char *argv[] = {"/bin/nope", "arg", NULL};
	o.argv = argv;
	assert_int_equal(run_opts(t, &o), 0);
	assert_int_equal(t->status, 127);
	assert_true(has_line(t, "exec /bin/nope: No such file or directory"));
	char *argv2[] = {"nope", NULL};
	o.argv = argv2;
	assert_int_equal(run_opts(t, &o), 0);
	assert_int_equal(t->status, 127);
	assert_true(has_line(t, "exec nope: No such file or directory"));
	char *argv3[] = {"/data", NULL};
	o.argv = argv3;
	assert_int_equal(run_opts(t, &o), 0);
	assert_int_equal(t->status, 126);
	assert_true(has_line(t, "exec /data: Permission denied"));
}

static void test_sandbox_failure_is_an_error(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	char *missing = ib_path_join(t->dir, "missing");
	o.upper_dir = missing;
	int rc = run_sh(t, "true", &o);
	assert_int_equal(rc, IB_ENOTFOUND);
	assert_non_null(strstr(ib_error_msg(t->err), "sandbox: upper dir"));
	free(missing);

	tweak_init(t, &o);
	char *nolower[] = {"/nonexistent-layer", NULL};
	o.lower_dirs = nolower;
	assert_true(run_sh(t, "true", &o) < 0);
	assert_non_null(strstr(ib_error_msg(t->err), "lower dir /nonexistent-layer"));

	tweak_init(t, &o);
	ib_sandbox_mount bad = {"/tmp", "../escape", false, false};
	o.mounts = &bad;
	o.n_mounts = 1;
	assert_int_equal(run_sh(t, "true", &o), IB_EINVALID);
	/* nor the root, nor a ".." even when it stays below / */
	static const char *const bad_targets[] = {"/", "//./", "/var/../etc"};
	for (size_t i = 0; i < 3; i++) {
		tweak_init(t, &o);
		bad.target = bad_targets[i];
		o.mounts = &bad;
		o.n_mounts = 1;
		assert_int_equal(run_sh(t, "true", &o), IB_EINVALID);
	}
}

/* ---- isolation from the host ---- */

static void test_host_paths_unreachable(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t,
				"ls /proc/1/root >/dev/null 2>&1 && echo OPEN-root;"
				"readlink /proc/1/exe >/dev/null 2>&1 && echo OPEN-exe;"
				"cat /proc/1/environ >/dev/null 2>&1 && echo OPEN-environ;"
				"readlink /proc/1/cwd >/dev/null 2>&1 && echo OPEN-cwd;"
				"echo fds=$(ls /proc/1/fd | wc -l);"
				"echo; cat /proc/1/cmdline; echo;"
				"echo ---; ls /proc/self/root/; echo ---; ls /../..;"
				"echo ---; for f in /proc/*/fd/* /proc/*/cwd /proc/*/root; do "
				"readlink $f; done",
				NULL),
			 0);
	dump_lines(t);
	assert_false(any_line_contains(t, "OPEN-"));
	assert_true(has_line(t, "fds=0")); /* init keeps nothing open */
	/* PID 1 is ours, with its host command line blanked */
	assert_true(has_line(t, "imgbuild-init"));
	assert_false(any_line_contains(t, "test_sandbox"));
	/* the root is the image: the lower's files, not the host's */
	size_t i = 0;
	while (i < t->n_lines && strcmp(t->lines[i], "---") != 0)
		i++;
	size_t sep1 = i++;
	while (i < t->n_lines && strcmp(t->lines[i], "---") != 0)
		i++;
	size_t sep2 = i++;
	while (i < t->n_lines && strcmp(t->lines[i], "---") != 0)
		i++;
	size_t sep3 = i;
	assert_true(sep3 < t->n_lines);
	assert_int_equal(sep2 - sep1, sep3 - sep2); /* "/../.." is "/" */
	bool saw_data = false;
	for (i = sep1 + 1; i < sep2; i++) {
		saw_data |= strcmp(t->lines[i], "data") == 0;
		assert_string_not_equal(t->lines[i], "usr"); /* host has /usr, image not */
		assert_string_not_equal(t->lines[i], "tmp");
	}
	assert_true(saw_data);
	/* every fd and cwd of every process leads into the container */
	for (i = sep3 + 1; i < t->n_lines; i++) {
		assert_null(strstr(t->lines[i], g_base));
		assert_true(t->lines[i][0] == '/' || strncmp(t->lines[i], "pipe:", 5) == 0);
	}
}

static void test_inherited_fds_are_closed(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	int leak = open(g_base, O_RDONLY | O_DIRECTORY); /* deliberately not CLOEXEC */
	assert_true(leak >= 3);
	int rc = run_sh(t, "ls /proc/self/fd; readlink /proc/self/fd/0", NULL);
	close(leak);
	assert_int_equal(rc, 0);
	dump_lines(t);
	/* 0 1 2 and the directory ls itself opened */
	assert_int_equal(t->n_lines, 5);
	assert_string_equal(t->lines[0], "0");
	assert_string_equal(t->lines[1], "1");
	assert_string_equal(t->lines[2], "2");
	assert_string_equal(t->lines[3], "3");
	assert_string_equal(t->lines[4], "/dev/null");
}

static void test_capability_bounding_set_is_dockers(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "grep -E 'Cap(Bnd|Eff|Inh|Amb)' /proc/self/status", NULL), 0);
	dump_lines(t);
	assert_true(has_line(t, "CapBnd:\t00000000a80425fb"));
	assert_true(has_line(t, "CapEff:\t00000000a80425fb"));
	assert_true(has_line(t, "CapInh:\t0000000000000000"));
	assert_true(has_line(t, "CapAmb:\t0000000000000000"));
}

/* Inside a container whose bounding set lacks some of Docker's set (podman
 * drops CAP_MKNOD, CAP_AUDIT_WRITE...): the step gets the intersection
 * instead of capset failing. */
static void test_capabilities_intersect_the_bounding_set(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int drop[] = {CAP_MKNOD, CAP_AUDIT_WRITE};
		for (size_t i = 0; i < 2; i++)
			if (prctl(PR_CAPBSET_DROP, drop[i], 0, 0, 0) < 0)
				_exit(10);
		struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct data[2];
		if (syscall(SYS_capget, &hdr, data) < 0)
			_exit(11);
		for (size_t i = 0; i < 2; i++) {
			data[0].permitted &= ~(1u << drop[i]);
			data[0].effective &= ~(1u << drop[i]);
			data[0].inheritable &= ~(1u << drop[i]);
		}
		if (syscall(SYS_capset, &hdr, data) < 0)
			_exit(12);
		if (run_sh(t, "grep -E 'Cap(Bnd|Eff)' /proc/self/status", NULL) != 0)
			_exit(13);
		/* 0xa80425fb without bits 27 and 29 */
		if (!has_line(t, "CapBnd:\t00000000800425fb") ||
		    !has_line(t, "CapEff:\t00000000800425fb"))
			_exit(14);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- hostile steps (docs/sandbox.md) ---- */

static void test_host_network_drops_net_raw(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.network = "host";
	assert_int_equal(run_sh(t, "grep -E 'Cap(Bnd|Eff)' /proc/self/status", &o), 0);
	/* 0xa80425fb without CAP_NET_RAW (13) */
	assert_true(has_line(t, "CapBnd:\t00000000a80405fb"));
	assert_true(has_line(t, "CapEff:\t00000000a80405fb"));
}

static void test_default_network_is_private(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	if (access("/usr/bin/slirp4netns", X_OK) != 0) {
		print_message("[  SKIPPED ] needs slirp4netns\n");
		skip();
	}
	ib_sandbox_options o;
	tweak_init(t, &o);
	assert_int_equal(
	    run_sh(t,
		   "grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,;"
		   "echo; grep -c nameserver /etc/resolv.conf",
		   &o),
	    0);
	dump_lines(t);
	assert_true(has_line(t, "lo,tap0,"));
	assert_int_equal(t->status, 0);
}

static void test_seccomp_filter_on_by_default(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(run_sh(t, "grep Seccomp: /proc/self/status", NULL), 0);
	assert_true(has_line(t, "Seccomp:\t2"));
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.seccomp_unconfined = true;
	assert_int_equal(run_sh(t, "grep Seccomp: /proc/self/status", &o), 0);
	assert_true(has_line(t, "Seccomp:\t0"));
}

/* fsync and fdatasync of /dev/null fail with EINVAL in the kernel: a step
 * sees them succeed unless sync calls are kept or the filter is off */
static void test_sync_calls_in_a_step(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	const char *script = "/bin/busybox sync /dev/null && echo fsync-ok;"
			     "/bin/busybox sync -d /dev/null && echo fdatasync-ok;"
			     "/bin/busybox sync -f /bin/sh && echo syncfs-ok;"
			     "echo data > /synced && /bin/busybox sync /synced && cat /synced";
	assert_int_equal(run_sh(t, script, NULL), 0);
	dump_lines(t);
	assert_true(has_line(t, "fsync-ok"));
	assert_true(has_line(t, "fdatasync-ok"));
	assert_true(has_line(t, "syncfs-ok"));
	assert_true(has_line(t, "data"));
	ib_sandbox_options o;
	for (int i = 0; i < 2; i++) {
		tweak_init(t, &o);
		if (i == 0)
			o.keep_sync = true;
		else
			o.seccomp_unconfined = true;
		assert_int_equal(run_sh(t, script, &o), 0);
		dump_lines(t);
		assert_false(has_line(t, "fsync-ok"));
		assert_false(has_line(t, "fdatasync-ok"));
		assert_true(has_line(t, "sync: /dev/null: Invalid argument"));
		assert_true(has_line(t, "syncfs-ok"));
		assert_true(has_line(t, "data"));
	}
}

static void test_pids_limit_stops_a_fork_loop(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	if (geteuid() != 0) {
		print_message("[  SKIPPED ] needs a writable cgroup (root)\n");
		skip();
	}
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.pids_limit = 20;
	assert_int_equal(run_sh(t,
				"i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done;"
				"echo never",
				&o),
			 0);
	dump_lines(t);
	assert_int_not_equal(t->status, 0);
	assert_false(has_line(t, "never"));
	assert_string_equal(t->lines[t->n_lines - 1], "pids limit of 20 reached");
}

static void test_resolv_conf_for_a_private_network(void **state)
{
	(void)state;
	char *r = ib_sb_net_resolv("# comment\nnameserver 127.0.0.53\nnameserver ::1\n"
				   "nameserver 192.0.2.53\nsearch example.org\noptions edns0\n");
	assert_string_equal(r, "# comment\nnameserver " IB_SB_DNS "\nnameserver 192.0.2.53\n"
			       "search example.org\noptions edns0\n");
	free(r);
	r = ib_sb_net_resolv("");
	assert_string_equal(r, "nameserver " IB_SB_DNS "\n");
	free(r);
	r = ib_sb_net_resolv(NULL);
	assert_string_equal(r, "nameserver " IB_SB_DNS "\n");
	free(r);
}

static void test_seccomp_filter_compiles(void **state)
{
	(void)state;
	ib_sb_filter f;
	ib_error *e = NULL;
	assert_int_equal(ib_sb_seccomp_prepare(&f, false, &e), 0);
	assert_non_null(f.insns);
	assert_true(f.len > 50 && f.len < 4096);
	ib_sb_filter k;
	assert_int_equal(ib_sb_seccomp_prepare(&k, true, &e), 0);
	/* keeping the sync calls drops their rules */
	assert_true(k.len < f.len);
	free(k.insns);
	free(f.insns);
}

/* In a child under the filter: bit i of the exit status set when sync call
 * i on a bad fd did not fail with EBADF (the filter answered 0); bit 6 when
 * keyctl was not refused with EPERM (the rest of the filter is there). */
static int sync_calls_under_filter(bool keep_sync)
{
	ib_sb_filter f;
	ib_error *e = NULL;
	assert_int_equal(ib_sb_seccomp_prepare(&f, keep_sync, &e), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || ib_sb_seccomp_load(&f) < 0)
			_exit(255);
		int bits = 0;
		long r[] = {
		    syscall(SYS_fsync, -1),
		    syscall(SYS_fdatasync, -1),
		    syscall(SYS_syncfs, -1),
		    syscall(SYS_sync_file_range, -1, 0L, 0L, 2L /* SYNC_FILE_RANGE_WRITE */),
		};
		for (int i = 0; i < 4; i++)
			if (r[i] != -1)
				bits |= 1 << i;
		errno = 0;
		if (!(syscall(SYS_keyctl, 0L /* KEYCTL_GET_KEYRING_ID */, -3L, 0L) == -1 &&
		      errno == EPERM))
			bits |= 1 << 6;
		_exit(bits);
	}
	free(f.insns);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_seccomp_sync_calls_return_at_once(void **state)
{
	(void)state;
	/* the four calls answered 0 without reaching the kernel (which would
	 * say EBADF), keyctl still refused */
	assert_int_equal(sync_calls_under_filter(false), 0x0f);
	/* kept: they reach the kernel */
	assert_int_equal(sync_calls_under_filter(true), 0);
}

static void test_dev_is_minimal_and_devices_unusable(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(
	    run_sh(t,
		   "ls /dev | tr '\\n' ' '; echo;"
		   "echo x > /dev/null && echo null-ok;"
		   "head -c 4 /dev/urandom | wc -c;"
		   "mknod /mem c 1 1 && (head -c 1 /mem >/dev/null 2>&1 || echo nodev)",
		   NULL),
	    0);
	dump_lines(t);
	assert_true(has_line(t, "core fd full null ptmx pts random shm stderr stdin stdout tty "
				"urandom zero "));
	assert_true(has_line(t, "null-ok"));
	assert_true(has_line(t, "4"));
	assert_true(has_line(t, "nodev"));
}

static void test_sys_and_proc_sys_are_read_only(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	assert_int_equal(
	    run_sh(t,
		   "grep -E ' /(sys|proc/sys) ' /proc/self/mountinfo | "
		   "sed 's/^[^ ]* [^ ]* [^ ]* [^ ]* \\([^ ]*\\) \\([^,]*\\).*/\\1 \\2/';"
		   "echo x > /proc/sys/kernel/domainname || echo denied",
		   NULL),
	    0);
	dump_lines(t);
	assert_true(has_line(t, "/sys ro"));
	assert_true(has_line(t, "/proc/sys ro"));
	assert_true(has_line(t, "denied"));
}

/* ---- extra mounts ---- */

static void test_cache_mount_is_shared_and_not_captured(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *cache = mkdirs(t->dir, "cache");
	char *old = ib_path_join(cache, "old");
	tu_write_text(old, "from before\n");
	ib_sandbox_mount m = {cache, "/var/cache/thing/", false, false};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.mounts = &m;
	o.n_mounts = 1;
	assert_int_equal(run_sh(t, "cat /var/cache/thing/old; echo new > /var/cache/thing/new", &o),
			 0);
	assert_int_equal(t->status, 0);
	assert_true(has_line(t, "from before"));
	assert_true(exists_in(cache, "new"));
	assert_false(exists_in(t->upper, "var"));
	free(cache);
	free(old);
}

static void test_secret_is_readable_read_only_and_not_captured(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	char *secret = ib_path_join(t->dir, "secret");
	tu_write_text(secret, "s3cret\n");
	ib_sandbox_mount m = {secret, "/run/secrets/token", true, true};
	ib_sandbox_options o;
	tweak_init(t, &o);
	o.mounts = &m;
	o.n_mounts = 1;
	assert_int_equal(
	    run_sh(t, "cat /run/secrets/token; echo x > /run/secrets/token || echo ro", &o), 0);
	assert_true(has_line(t, "s3cret"));
	assert_true(has_line(t, "ro"));
	assert_false(exists_in(t->upper, "run"));
	char *s = tu_read_file(secret);
	assert_string_equal(s, "s3cret\n");
	free(s);
	free(secret);
}

/* ---- rootless ---- */

static void test_rootless_maps_caller_to_root(void **state)
{
	SKIP_IF_NEEDED();
	tctx *t = *state;
	const uid_t nobody = 65534;
	char *lower = mkdirs(t->dir, "rl/lower");
	char *bin = mkdirs(lower, "bin");
	char *bb = ib_path_join(bin, "busybox");
	copy_file(BUSYBOX, bb, 0755);
	char *sh = ib_path_join(bin, "sh");
	assert_int_equal(symlink("busybox", sh), 0);
	char *upper = mkdirs(t->dir, "rl/upper"), *work = mkdirs(t->dir, "rl/work");
	char *rl = ib_path_join(t->dir, "rl");
	assert_int_equal(chown(rl, nobody, nobody), 0);
	assert_int_equal(chown(upper, nobody, nobody), 0);
	assert_int_equal(chown(work, nobody, nobody), 0);
	chmod(t->dir, 0755);
	char *runs = ib_path_join(g_base, "runs");
	chmod(runs, 0755);

	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		if (setgroups(0, NULL) < 0 || setresgid(nobody, nobody, nobody) < 0 ||
		    setresuid(nobody, nobody, nobody) < 0)
			_exit(2);
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
		char *lowers[] = {lower, NULL};
		char *argv[] = {"/bin/busybox", "sh", "-c",
				"/bin/busybox id -u; /bin/busybox cat /proc/self/uid_map; "
				"/bin/busybox grep CapBnd /proc/self/status; echo hi > /made; "
				"/bin/busybox sync /made /dev/null && echo fsync-noop",
				NULL};
		ib_sandbox_options o;
		memset(&o, 0, sizeof(o));
		o.lower_dirs = lowers;
		o.upper_dir = upper;
		o.work_dir = work;
		o.argv = argv;
		/* slirp4netns needs /dev/net/tun, which some hosts keep 0600 */
		o.network = "none";
		o.output = collect;
		tctx r;
		memset(&r, 0, sizeof(r));
		o.payload = &r;
		ib_error *e = NULL;
		int st = -1;
		if (ib_sandbox_run(&o, &st, &e) < 0) {
			dprintf(pfd[1], "ERROR %s\n", ib_error_msg(e));
			_exit(3);
		}
		dprintf(pfd[1], "status %d\n", st);
		for (size_t i = 0; i < r.n_lines; i++)
			dprintf(pfd[1], "%s\n", r.lines[i]);
		_exit(0);
	}
	close(pfd[1]);
	char *out = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	assert_int_equal(ib_read_fd(pfd[0], 1 << 20, &out, &len, &e), 0);
	close(pfd[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	print_message("%s", out);
	if (strstr(out, "ERROR sandbox: unshare user namespace")) {
		print_message("[  SKIPPED ] unprivileged user namespaces are disabled\n");
	} else {
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		const char *first = strstr(out, "status 0\n");
		assert_non_null(first);
		first += strlen("status 0\n");
		/* a user without a delegated cgroup is warned once, first */
		if (!strncmp(first, "warning: ", 9))
			first = strchr(first, '\n') + 1;
		assert_true(!strncmp(first, "0\n", 2));
		assert_non_null(strstr(out, "65534"));
		assert_non_null(strstr(out, "CapBnd:\t00000000a80425fb"));
		/* the filter's sync rules hold rootless too */
		assert_non_null(strstr(out, "fsync-noop"));
		char *made = ib_path_join(upper, "made");
		struct stat sb;
		assert_int_equal(stat(made, &sb), 0);
		assert_int_equal(sb.st_uid, nobody);
		free(made);
	}
	free(out);
	free(lower), free(bin), free(bb), free(sh), free(upper), free(work), free(rl), free(runs);
}

/* /etc/subuid entries: by name or by numeric id, several ranges, comments,
 * malformed and empty lines and other users' ranges ignored */
static void test_subid_parse(void **state)
{
	(void)state;
	const char *text = "# comment\n"
			   "alice:100000:65536\n"
			   "bob:165536:65536\n"
			   "alice:300000:10\r\n"
			   "1001:400000:5\n"
			   "alice:x:5\n"
			   "alice:500000:0\n"
			   "alice:600000\n"
			   "\n";
	ib_subid_range r[4];
	size_t n = ib_subid_parse(text, "alice", 1001, r, 4);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].start, 100000);
	assert_int_equal(r[0].count, 65536);
	assert_int_equal(r[1].start, 300000);
	assert_int_equal(r[1].count, 10);
	assert_int_equal(r[2].start, 400000);
	assert_int_equal(r[2].count, 5);
	assert_int_equal(ib_subid_parse(text, "carol", 7, r, 4), 0);
	assert_int_equal(ib_subid_parse(text, NULL, 1001, r, 4), 1);
	assert_int_equal(ib_subid_parse(text, "alice", 1001, r, 2), 2);
	assert_int_equal(ib_subid_parse("", "alice", 1, r, 4), 0);
}

/* the overlay markers follow the user namespace: trusted.* for root of the
 * initial one (where the unit tests run as root), user.* elsewhere (the
 * rootless integration suite covers that side) */
static void test_overlay_xattr_namespace(void **state)
{
	(void)state;
	if (geteuid() != 0 || !ib_userns_is_initial()) {
		assert_string_equal(ib_overlay_opaque_xattr(), "user.overlay.opaque");
		return;
	}
	assert_string_equal(ib_overlay_xattr_prefix(), "trusted.overlay.");
	assert_string_equal(ib_overlay_opaque_xattr(), "trusted.overlay.opaque");
	assert_string_equal(ib_userns_unmapped_hint(), "");
	assert_false(ib_userns_rootless());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_output_lines_and_exit_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_output_handles_cr_and_long_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_signal_death_is_128_plus_signal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_written_file_lands_in_upper, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deleted_lower_file_becomes_whiteout, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_upper_has_only_command_changes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scratch_stack_gets_mount_points_without_trace,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_lower_list_runs_on_scratch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hidden_mount_point_is_created_and_removed, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_long_lower_stack, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_env_and_default_path_and_home, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_numeric_user_and_group, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_named_user_from_container_passwd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_lines_read_by_the_shared_parser, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_numeric_user_known_to_passwd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_user_or_group_fails_the_sandbox, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_workdir_is_created_and_entered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_workdir_not_enterable_by_user_fails, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_hostname_default_and_custom, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_network_none_has_only_loopback_up, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_network_default_shares_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_kills_the_namespace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_background_process_does_not_hang, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_binary_is_status_127, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sandbox_failure_is_an_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_paths_unreachable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_inherited_fds_are_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capabilities_intersect_the_bounding_set, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_capability_bounding_set_is_dockers, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_host_network_drops_net_raw, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_default_network_is_private, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seccomp_filter_on_by_default, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pids_limit_stops_a_fork_loop, setup, teardown),
	    cmocka_unit_test(test_resolv_conf_for_a_private_network),
	    cmocka_unit_test(test_seccomp_filter_compiles),
	    cmocka_unit_test(test_seccomp_sync_calls_return_at_once),
	    cmocka_unit_test_setup_teardown(test_sync_calls_in_a_step, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dev_is_minimal_and_devices_unusable, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_sys_and_proc_sys_are_read_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_mount_is_shared_and_not_captured, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_secret_is_readable_read_only_and_not_captured,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rootless_maps_caller_to_root, setup, teardown),
	    cmocka_unit_test(test_subid_parse),
	    cmocka_unit_test(test_overlay_xattr_namespace),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
