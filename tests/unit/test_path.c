/* Unit tests for path.c: the cleaner (a table of inputs x flags), the
 * resolver over a directory and over a stack of layer directories, and
 * the in-root opener. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "path.h"
#include "testutil.h"
#include "util.h"

/* ---- the cleaner ---- */

typedef struct clean_case {
	const char *in;
	unsigned flags;
	const char *want; /* NULL: refused */
} clean_case;

#define A IB_PATH_ABSOLUTE
#define R IB_PATH_RELATIVE
#define D IB_PATH_REFUSE_DOTDOT
#define S IB_PATH_KEEP_SLASH

static const clean_case clean_cases[] = {
    /* kind kept (like Go's path.Clean) */
    {"", 0, "."},
    {".", 0, "."},
    {"/", 0, "/"},
    {"//a//b/", 0, "/a/b"},
    {"a/./b/../c", 0, "a/c"},
    {"/..", 0, "/"},
    {"/a/../../b", 0, "/b"},
    {"..", 0, ".."},
    {"a/../..", 0, ".."},
    {"../../a/..", 0, "../.."},
    {"../a/../b", 0, "../b"},
    {"./a", 0, "a"},
    /* absolute output: rooted, ".." stops at the root */
    {"", A, "/"},
    {"a/b", A, "/a/b"},
    {"../a", A, "/a"},
    {"/a/b/../../..", A, "/"},
    {"/a/", A, "/a"},
    {"/a/", A | S, "/a/"},
    {"/a/.", A | S, "/a/"},
    {"/a/b/..", A | S, "/a/"},
    {"/", A | S, "/"},
    {"/..", A | S, "/"},
    /* relative output */
    {"/", R, ""},
    {"./", R, ""},
    {"./a/b/", R, "a/b"},
    {"/a//./b", R, "a/b"},
    {"../a", R, "a"},
    {"a/..", R | S, ""},
    {"a/b/", R | S, "a/b/"},
    /* ".." refused */
    {"a/../b", R | D, NULL},
    {"..", D, NULL},
    {"/x/..", A | D, NULL},
    {"a/..b/c..", R | D, "a/..b/c.."},
    {"./a/./", A | D, "/a"},
    /* keep the slash for a directory meaning only */
    {".", S, "./"},
    {"..", S, "../"},
    {"a", S, "a"},
    {"a/", S, "a/"},
    {"a/.", S, "a/"},
};

static void test_clean_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(clean_cases) / sizeof(clean_cases[0]); i++) {
		const clean_case *c = &clean_cases[i];
		char *out = NULL;
		ib_error *err = NULL;
		int r = ib_path_clean(c->in, c->flags, &out, &err);
		if (!c->want) {
			if (r != IB_EUNSAFE)
				fail_msg("'%s' flags %#x: want refused, got %d '%s'", c->in,
					 c->flags, r, out ? out : "");
			assert_null(out);
			assert_non_null(strstr(ib_error_msg(err), "'..'"));
			ib_error_free(&err);
			continue;
		}
		if (r != 0 || strcmp(out, c->want))
			fail_msg("'%s' flags %#x: want '%s', got %d '%s' (%s)", c->in, c->flags,
				 c->want, r, out ? out : "", err ? ib_error_msg(err) : "");
		free(out);
	}
}

static void test_join_clean(void **state)
{
	(void)state;
	struct {
		const char *base, *rel;
		unsigned flags;
		const char *want;
	} cases[] = {
	    {"/app", "x", A, "/app/x"},	   {"/app", "/etc/../x", A, "/x"},
	    {"/app", "../../..", A, "/"},  {"/app", "d/", A | S, "/app/d/"},
	    {"/app", ".", A | S, "/app/"}, {"/", "", A | S, "/"},
	    {NULL, "a/../b/", S, "b/"},	   {NULL, "a/..", S, "./"},
	    {"/w", "sub/..", 0, "/w"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_free char *out =
		    ib_path_join_clean(cases[i].base, cases[i].rel, cases[i].flags | D);
		if (strcmp(out, cases[i].want))
			fail_msg("'%s' + '%s': want '%s', got '%s'",
				 cases[i].base ? cases[i].base : "(null)", cases[i].rel,
				 cases[i].want, out);
	}
}

/* ---- a tree to resolve in ---- */

static char *tmp;

static void mk(const char *base, const char *rel, char kind, const char *target)
{
	cleanup_free char *p = xasprintf("%s/%s", base, rel);
	cleanup_free char *dir = xstrdup(p);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(ib_mkdir_p(dir, 0755, NULL), 0);
	if (kind == 'd') {
		assert_int_equal(ib_mkdir_p(p, 0755, NULL), 0);
	} else if (kind == 'f') {
		FILE *f = fopen(p, "w");
		assert_non_null(f);
		fputs(target ? target : rel, f);
		fclose(f);
	} else if (kind == 'l') {
		assert_int_equal(symlink(target, p), 0);
	} else if (kind == 'w') {
		if (mknod(p, S_IFCHR | 0600, makedev(0, 0)) < 0)
			skip();
	}
}

static int setup(void **state)
{
	(void)state;
	tmp = tu_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(ib_rm_rf(tmp, NULL), 0);
	free(tmp);
	return 0;
}

typedef struct resolved {
	int rc;
	int code;
	char *path;
	struct stat st;
	char *msg;
} resolved;

static void resolved_free(resolved *r)
{
	free(r->path);
	free(r->msg);
}

static resolved resolve_fs(const ib_path_fs *fs, void *payload, const char *path, unsigned flags)
{
	resolved r = {0};
	ib_error *err = NULL;
	r.rc = ib_path_resolve(fs, payload, path, flags, &r.path, &r.st, &err);
	r.code = err ? err->code : 0;
	r.msg = err ? xstrdup(ib_error_msg(err)) : NULL;
	assert_true((r.rc == 0) == (err == NULL));
	ib_error_free(&err);
	return r;
}

static resolved resolve_dir(const char *root, const char *path, unsigned flags)
{
	cleanup_close int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	ib_path_dir d = {fd};
	ib_path_fs fs = ib_path_fs_dir;
	fs.name = "the build context";
	return resolve_fs(&fs, &d, path, flags);
}

#define expect_path(res, want)                                                                     \
	do {                                                                                       \
		resolved r_ = (res);                                                               \
		if (r_.rc != 0 || strcmp(r_.path, (want)))                                         \
			fail_msg("want '%s', got %d '%s' (%s)", (want), r_.rc,                     \
				 r_.path ? r_.path : "", r_.msg ? r_.msg : "");                    \
		resolved_free(&r_);                                                                \
	} while (0)

#define expect_fail(res, want_code, want_msg)                                                      \
	do {                                                                                       \
		resolved r_ = (res);                                                               \
		if (r_.rc == 0 || r_.code != (want_code) || !strstr(r_.msg, (want_msg)))           \
			fail_msg("want %d '%s', got %d '%s' (%s)", (want_code), (want_msg), r_.rc, \
				 r_.path ? r_.path : "", r_.msg ? r_.msg : "");                    \
		resolved_free(&r_);                                                                \
	} while (0)

static void test_resolve_dir_basics(void **state)
{
	(void)state;
	cleanup_free char *root = xasprintf("%s/basic", tmp);
	mk(root, "a/b/file", 'f', NULL);
	mk(root, "a/rel", 'l', "b");
	mk(root, "a/up", 'l', "../a/b/file");
	mk(root, "abs", 'l', "/etc");
	mk(root, "out", 'l', "../..");

	expect_path(resolve_dir(root, "", 0), "");
	expect_path(resolve_dir(root, ".", 0), "");
	expect_path(resolve_dir(root, "a/./b//file", 0), "a/b/file");
	expect_path(resolve_dir(root, "a/b/../b/file", 0), "a/b/file");
	expect_path(resolve_dir(root, "a/rel/file", 0), "a/b/file");
	/* the last component: followed only when asked or with a trailing slash */
	expect_path(resolve_dir(root, "a/rel", 0), "a/rel");
	expect_path(resolve_dir(root, "a/rel", IB_PATH_FOLLOW_LAST), "a/b");
	expect_path(resolve_dir(root, "a/rel/", 0), "a/b");
	expect_path(resolve_dir(root, "a/up", IB_PATH_FOLLOW_LAST), "a/b/file");
	resolved r = resolve_dir(root, "a/up", IB_PATH_FOLLOW_LAST);
	assert_true(S_ISREG(r.st.st_mode));
	resolved_free(&r);
	r = resolve_dir(root, "a/up", 0);
	assert_true(S_ISLNK(r.st.st_mode));
	resolved_free(&r);
	/* missing components and files used as directories */
	expect_fail(resolve_dir(root, "a/nope", 0), IB_ENOTFOUND,
		    "'a/nope' not found in the build context");
	expect_fail(resolve_dir(root, "a/b/file/x", 0), IB_ENOTFOUND,
		    "(a/b/file is not a directory)");
	expect_fail(resolve_dir(root, "a/nope/x", 0), IB_ENOTFOUND, "not found");
	/* missing allowed: the rest is taken as directories to make */
	r = resolve_dir(root, "a/nope/x/../y", IB_PATH_MISSING_OK);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.path, "a/nope/y");
	assert_int_equal(r.st.st_mode, 0);
	resolved_free(&r);
	expect_path(resolve_dir(root, "a/nope/../b", IB_PATH_MISSING_OK), "a/b");
	expect_fail(resolve_dir(root, "a/b/file/x", IB_PATH_MISSING_OK), IB_EINVALID,
		    "/a/b/file is not a directory");
}

static void test_resolve_dir_leaving_the_root(void **state)
{
	(void)state;
	cleanup_free char *root = xasprintf("%s/ctx", tmp);
	mk(root, "etc/passwd", 'f', "in the root");
	mk(root, "d/abs", 'l', "/etc");
	mk(root, "d/out", 'l', "../..");
	mk(root, "d/in", 'l', "../etc");

	/* a build context: ".." above the root and absolute targets refused */
	expect_fail(resolve_dir(root, "..", 0), IB_EUNSAFE, "'..' is outside the build context");
	expect_fail(resolve_dir(root, "d/../../x", 0), IB_EUNSAFE, "is outside");
	expect_fail(resolve_dir(root, "d/abs/passwd", 0), IB_EUNSAFE, "(symlink d/abs -> /etc)");
	expect_fail(resolve_dir(root, "d/abs", IB_PATH_FOLLOW_LAST), IB_EUNSAFE, "outside");
	expect_path(resolve_dir(root, "d/abs", 0), "d/abs");
	expect_fail(resolve_dir(root, "d/out/x", 0), IB_EUNSAFE, "outside");
	expect_fail(resolve_dir(root, "/etc/passwd", 0), IB_EINVALID, "is absolute");
	expect_path(resolve_dir(root, "d/in/passwd", 0), "etc/passwd");
	/* an image: both start again at the root */
	expect_path(resolve_dir(root, "..", IB_PATH_IMAGE), "");
	expect_path(resolve_dir(root, "d/abs/passwd", IB_PATH_IMAGE), "etc/passwd");
	expect_path(resolve_dir(root, "d/out/etc", IB_PATH_IMAGE), "etc");
	expect_path(resolve_dir(root, "/etc/../../etc/passwd", IB_PATH_IMAGE), "etc/passwd");
}

static void test_resolve_symlink_loops_and_hop_limit(void **state)
{
	(void)state;
	cleanup_free char *root = xasprintf("%s/loops", tmp);
	mk(root, "self", 'l', "self");
	mk(root, "a", 'l', "b");
	mk(root, "b", 'l', "a");
	mk(root, "end/file", 'f', NULL);
	/* a chain of exactly the limit resolves, one more does not */
	for (int i = 0; i <= IB_PATH_MAX_SYMLINKS; i++) {
		cleanup_free char *name = xasprintf("c%d", i);
		cleanup_free char *target = i ? xasprintf("c%d", i - 1) : xstrdup("end");
		mk(root, name, 'l', target);
	}
	expect_fail(resolve_dir(root, "self/x", 0), IB_EINVALID,
		    "too many levels of symbolic links");
	expect_fail(resolve_dir(root, "a", IB_PATH_FOLLOW_LAST), IB_EINVALID, "too many");
	expect_fail(resolve_dir(root, "a/", IB_PATH_IMAGE), IB_EINVALID, "too many");
	expect_path(resolve_dir(root, "c39/file", 0), "end/file");
	expect_fail(resolve_dir(root, "c40/file", 0), IB_EINVALID, "too many");
}

/* ---- a stack of layers ---- */

typedef struct stack {
	char *dirs[4];
	size_t n;
	size_t opened;
} stack;

static int open_layer(void *payload, size_t i, int *fd, ib_error **err)
{
	stack *s = payload;
	s->opened++;
	*fd = open(s->dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0)
		return ib_error_set(err, errno, "open %s", s->dirs[i]);
	return 0;
}

static resolved resolve_layers(stack *s, const char *path, unsigned flags)
{
	ib_path_layers l = {s->n, open_layer, s};
	return resolve_fs(&ib_path_fs_layers, &l, path, flags | IB_PATH_IMAGE);
}

static char *read_in_layers(stack *s, const char *rel)
{
	ib_path_layers l = {s->n, open_layer, s};
	cleanup_close int fd = -1;
	ib_error *err = NULL;
	if (ib_path_layers_open(&l, rel, O_RDONLY, &fd, &err) < 0) {
		ib_error_free(&err);
		return NULL;
	}
	char *data = NULL;
	size_t len;
	assert_int_equal(ib_read_fd(fd, 4096, &data, &len, NULL), 0);
	return data;
}

static void test_resolve_layer_stack(void **state)
{
	(void)state;
	stack s = {.n = 3};
	for (size_t i = 0; i < s.n; i++)
		s.dirs[i] = xasprintf("%s/layers/%zu", tmp, i);
	/* bottom: a usrmerge-like tree */
	mk(s.dirs[0], "usr/bin/sh", 'f', "sh0");
	mk(s.dirs[0], "bin", 'l', "usr/bin");
	mk(s.dirs[0], "etc/passwd", 'f', "passwd0");
	mk(s.dirs[0], "etc/group", 'f', "group0");
	mk(s.dirs[0], "gone/inside", 'f', NULL);
	mk(s.dirs[0], "var/run", 'l', "/run");
	mk(s.dirs[0], "opq/old", 'f', NULL);
	mk(s.dirs[0], "opq/kept/deep", 'f', NULL);
	/* middle: replaces a file, deletes a directory */
	mk(s.dirs[1], "etc/passwd", 'f', "passwd1");
	mk(s.dirs[1], "gone", 'w', NULL);
	mk(s.dirs[1], "opq/new", 'f', NULL);
	/* top: a new directory where the bottom had a symlink */
	mk(s.dirs[2], "run/x", 'f', "x2");
	mk(s.dirs[2], "etc/group", 'w', NULL);

	expect_path(resolve_layers(&s, "bin/sh", 0), "usr/bin/sh");
	expect_path(resolve_layers(&s, "/bin/", 0), "usr/bin");
	expect_path(resolve_layers(&s, "var/run/x", 0), "run/x");
	expect_path(resolve_layers(&s, "bin", 0), "bin");
	/* whiteouts: the entry itself, and everything below a deleted dir */
	expect_fail(resolve_layers(&s, "etc/group", 0), IB_ENOTFOUND, "not found in the image");
	expect_fail(resolve_layers(&s, "gone", 0), IB_ENOTFOUND, "not found");
	expect_fail(resolve_layers(&s, "gone/inside", 0), IB_ENOTFOUND, "not found");
	resolved r = resolve_layers(&s, "gone/inside/new", IB_PATH_MISSING_OK);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.path, "gone/inside/new");
	assert_int_equal(r.st.st_mode, 0);
	resolved_free(&r);
	/* the top-most layer wins when opening */
	cleanup_free char *pw = read_in_layers(&s, "etc/passwd");
	assert_string_equal(pw, "passwd1");
	cleanup_free char *x = read_in_layers(&s, "run/x");
	assert_string_equal(x, "x2");
	assert_null(read_in_layers(&s, "etc/group"));
	assert_null(read_in_layers(&s, "gone/inside"));

	/* an opaque directory hides the lower layers' entries below it */
	cleanup_free char *opq = xasprintf("%s/opq", s.dirs[1]);
	if (setxattr(opq, "user.overlay.opaque", "y", 1, 0) == 0 ||
	    setxattr(opq, "trusted.overlay.opaque", "y", 1, 0) == 0) {
		expect_path(resolve_layers(&s, "opq/new", 0), "opq/new");
		expect_fail(resolve_layers(&s, "opq/old", 0), IB_ENOTFOUND, "not found");
		expect_fail(resolve_layers(&s, "opq/kept/deep", 0), IB_ENOTFOUND, "not found");
	} else {
		expect_path(resolve_layers(&s, "opq/old", 0), "opq/old");
	}
	for (size_t i = 0; i < s.n; i++)
		free(s.dirs[i]);
}

/* ---- opening inside a root ---- */

static void test_open_in_root(void **state)
{
	(void)state;
	cleanup_free char *root = xasprintf("%s/openroot", tmp);
	mk(root, "etc/passwd", 'f', "inside");
	mk(root, "abs", 'l', "/etc");
	mk(root, "up", 'l', "../../../etc");
	cleanup_close int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(rfd >= 0);

	/* in the root: absolute and escaping targets are clamped to it */
	const char *inside[] = {"etc/passwd", "abs/passwd", "up/passwd", "../etc/passwd"};
	for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		cleanup_close int fd =
		    ib_path_open_in_root(rfd, inside[i], O_RDONLY, 0, IB_PATH_OPEN_IN_ROOT);
		assert_true(fd >= 0);
		cleanup_free char *data = NULL;
		size_t len;
		assert_int_equal(ib_read_fd(fd, 64, &data, &len, NULL), 0);
		assert_string_equal(data, "inside");
	}
	/* beneath: no symlink at all, no ".." above the root */
	cleanup_close int ok =
	    ib_path_open_in_root(rfd, "etc/passwd", O_RDONLY, 0, IB_PATH_OPEN_BENEATH);
	assert_true(ok >= 0);
	assert_int_equal(ib_path_open_in_root(rfd, "abs/passwd", O_RDONLY, 0, IB_PATH_OPEN_BENEATH),
			 -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(
	    ib_path_open_in_root(rfd, "../etc/passwd", O_RDONLY, 0, IB_PATH_OPEN_BENEATH), -1);
	assert_int_equal(errno, EXDEV);
	/* "" is the root; O_CREAT takes the mode */
	cleanup_close int self =
	    ib_path_open_in_root(rfd, "", O_PATH | O_DIRECTORY, 0, IB_PATH_OPEN_BENEATH);
	assert_true(self >= 0);
	cleanup_close int made = ib_path_open_in_root(rfd, "new", O_WRONLY | O_CREAT | O_EXCL, 0640,
						      IB_PATH_OPEN_IN_ROOT);
	assert_true(made >= 0);
	struct stat st;
	assert_int_equal(fstat(made, &st), 0);
	assert_int_equal(st.st_mode & 0777 & ~0640u, 0);
	assert_true(st.st_mode & 0400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clean_table),
	    cmocka_unit_test(test_join_clean),
	    cmocka_unit_test_setup_teardown(test_resolve_dir_basics, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_dir_leaving_the_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_symlink_loops_and_hop_limit, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_resolve_layer_stack, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_in_root, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
