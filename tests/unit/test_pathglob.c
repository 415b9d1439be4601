/* Unit tests for pathglob.c: ib_glob over a temporary tree and
 * ib_glob_match on path strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pathglob.h"
#include "testutil.h"
#include "util.h"

static char *root;

static void put(const char *rel)
{
	cleanup_free char *p = ib_path_join(root, rel);
	cleanup_free char *dir = xstrdup(p);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(ib_mkdir_p(dir, 0755, NULL), 0);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fclose(f);
}

static int setup(void **state)
{
	(void)state;
	root = tu_tmpdir();
	put("a.c");
	put(".hidden.c");
	put("s/b.c");
	put("s/x/c.c");
	put("s/x/y/d.c");
	put("s/x/y/e.h");
	cleanup_free char *outside = ib_path_join(root, "s/link");
	assert_int_equal(symlink("/etc", outside), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tu_rm_rf(root);
	free(root);
	return 0;
}

static char *joined(const char *pattern)
{
	char **m = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_glob(root, pattern, &m, &err), 0);
	ib_buf b = IB_BUF_INIT;
	for (size_t i = 0; m[i]; i++)
		ib_buf_appendf(&b, "%s%s", i ? " " : "", m[i]);
	ib_strv_free(m);
	return ib_buf_steal(&b, NULL);
}

static void test_star_matches_dot_files_but_never_dot_or_dotdot(void **state)
{
	(void)state;
	cleanup_free char *all = joined("*.c");
	assert_string_equal(all, ".hidden.c a.c");
	cleanup_free char *dots = joined(".*");
	assert_string_equal(dots, ".hidden.c");
}

static void test_doublestar_spans_any_depth(void **state)
{
	(void)state;
	cleanup_free char *m = joined("s/**/*.c");
	assert_string_equal(m, "s/b.c s/x/c.c s/x/y/d.c");
}

static void test_symlinks_are_matched_not_followed(void **state)
{
	(void)state;
	cleanup_free char *m = joined("s/*");
	assert_string_equal(m, "s/b.c s/link s/x");
	cleanup_free char *through = joined("s/link/*");
	assert_string_equal(through, "");
}

static void test_trailing_slash_matches_directories_only(void **state)
{
	(void)state;
	cleanup_free char *m = joined("s/*/");
	assert_string_equal(m, "s/x");
}

static void test_dotdot_and_absolute_patterns_are_refused(void **state)
{
	(void)state;
	char **m = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_glob(root, "../*", &m, &err), IB_EUNSAFE);
	ib_error_free(&err);
	assert_int_equal(ib_glob(root, "/etc/*", &m, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_null(m);
}

static void test_match_segments_and_doublestar(void **state)
{
	(void)state;
	assert_true(ib_glob_match("*.c", "a.c"));
	assert_false(ib_glob_match("*.c", "s/b.c"));
	assert_true(ib_glob_match("**/*.c", "s/x/c.c"));
	assert_true(ib_glob_match("**/*.c", "a.c"));
	assert_true(ib_glob_match("s/**", "s/x/y/e.h"));
	assert_false(ib_glob_match("s/*/e.h", "s/x/y/e.h"));
	assert_true(ib_glob_match("./s//b.c", "s/b.c"));
	assert_true(ib_glob_match("*", ".hidden.c"));
	assert_true(ib_glob_match("s/**", "s"));
	assert_false(ib_glob_match("s/**/x", "s"));
	assert_true(ib_glob_match("a\\*b", "a*b"));
	assert_false(ib_glob_match("a\\*b", "axb"));
	assert_true(ib_glob_match("[ab]/c", "b/c"));
}

/* a prefix of the path, as the ignore rules match each parent directory;
 * segments longer than any usual name still match */
static void test_match_prefix_and_long_segments(void **state)
{
	(void)state;
	assert_true(ib_glob_match_len("s/x", "s/x/y", 3));
	assert_false(ib_glob_match_len("s/x", "s/x/y", 5));
	assert_false(ib_glob_match_len("s/x/y", "s/x/y", 3));
	char long_name[700];
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	cleanup_free char *path = xasprintf("d/%s", long_name);
	assert_true(ib_glob_match("d/n*", path));
	assert_true(ib_glob_match("d/*n", path));
	assert_false(ib_glob_match("d/*m", path));
	cleanup_free char *pattern = xasprintf("d/%s", long_name);
	assert_true(ib_glob_match(pattern, path));
	pattern[10] = '?';
	assert_true(ib_glob_match(pattern, path));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_star_matches_dot_files_but_never_dot_or_dotdot),
	    cmocka_unit_test(test_doublestar_spans_any_depth),
	    cmocka_unit_test(test_symlinks_are_matched_not_followed),
	    cmocka_unit_test(test_trailing_slash_matches_directories_only),
	    cmocka_unit_test(test_dotdot_and_absolute_patterns_are_refused),
	    cmocka_unit_test(test_match_segments_and_doublestar),
	    cmocka_unit_test(test_match_prefix_and_long_segments),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
