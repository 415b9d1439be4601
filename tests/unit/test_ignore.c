/* Unit tests for ignore.c: .dockerignore rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ignore.h"
#include "util.h"

static void test_patterns_comments_and_parents(void **state)
{
	(void)state;
	ib_ignore *ig = ib_ignore_parse("# comment\n"
					"\n"
					"  .git  \n"
					"/node_modules/\n"
					"*.md\n"
					"**/*.log\n"
					"build/./tmp\n"
					"docs/*/draft?\n");
	assert_true(ib_ignore_match(ig, ".git"));
	assert_true(ib_ignore_match(ig, ".git/objects/ab/cdef"));
	assert_false(ib_ignore_match(ig, "src/.git"));
	assert_true(ib_ignore_match(ig, "node_modules/x/y.js"));
	assert_true(ib_ignore_match(ig, "README.md"));
	assert_false(ib_ignore_match(ig, "docs/README.md")); /* '*' stays in one segment */
	assert_true(ib_ignore_match(ig, "a.log"));
	assert_true(ib_ignore_match(ig, "x/y/z.log"));
	assert_true(ib_ignore_match(ig, "build/tmp/obj.o"));
	assert_false(ib_ignore_match(ig, "build/out"));
	assert_true(ib_ignore_match(ig, "docs/a/draft1"));
	assert_false(ib_ignore_match(ig, "docs/a/draft12"));
	assert_false(ib_ignore_match(ig, "# comment"));
	assert_false(ib_ignore_match(ig, "src/main.c"));
	assert_false(ib_ignore_has_exceptions(ig));
	ib_ignore_free(ig);
}

/* Patterns without a glob character are compared, not matched: the same
 * answers as the matcher, for the path itself, below it, and for paths
 * with the empty or "." segments the matcher skips. */
static void test_literal_patterns_match_like_globs(void **state)
{
	(void)state;
	ib_ignore *ig = ib_ignore_parse("recipe.lua\nsrc/gen\n!src/gen/keep\n");
	assert_true(ib_ignore_match(ig, "recipe.lua"));
	assert_true(ib_ignore_match(ig, "recipe.lua/x"));
	assert_false(ib_ignore_match(ig, "recipe.luax"));
	assert_false(ib_ignore_match(ig, "recipe.lu"));
	assert_false(ib_ignore_match(ig, "a/recipe.lua"));
	assert_true(ib_ignore_match(ig, "src/gen"));
	assert_true(ib_ignore_match(ig, "src/gen/a/b.c"));
	assert_false(ib_ignore_match(ig, "src/generated"));
	assert_false(ib_ignore_match(ig, "src"));
	assert_false(ib_ignore_match(ig, "src/gen/keep"));
	assert_false(ib_ignore_match(ig, "src/gen/keep/deeper"));
	assert_true(ib_ignore_match(ig, "src/gen/keeper"));
	/* segments the glob matcher skips */
	assert_true(ib_ignore_match(ig, "./recipe.lua"));
	assert_true(ib_ignore_match(ig, "src//gen"));
	assert_true(ib_ignore_match(ig, "src/./gen/x"));
	assert_true(ib_ignore_match(ig, "recipe.lua/"));
	assert_false(ib_ignore_match(ig, "src/gen/./keep"));
	ib_ignore_free(ig);
}

static void test_exceptions_last_match_wins(void **state)
{
	(void)state;
	ib_ignore *ig = ib_ignore_parse("*.md\n!README*.md\nREADME-secret.md\n.git\n! .git/HEAD\n");
	assert_true(ib_ignore_has_exceptions(ig));
	assert_true(ib_ignore_match(ig, "CHANGES.md"));
	assert_false(ib_ignore_match(ig, "README.md"));
	assert_true(ib_ignore_match(ig, "README-secret.md"));
	assert_true(ib_ignore_match(ig, ".git/config"));
	assert_false(ib_ignore_match(ig, ".git/HEAD"));
	ib_ignore_free(ig);
	/* an exception before the rule it would undo does nothing */
	ig = ib_ignore_parse("!keep.txt\n*.txt\n");
	assert_true(ib_ignore_match(ig, "keep.txt"));
	ib_ignore_free(ig);
	assert_false(ib_ignore_match(NULL, "anything"));
}

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_load_precedence(void **state)
{
	(void)state;
	char tmpl[] = "/tmp/ib-ignore.XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	cleanup_free char *ctx = ib_path_join(tmpl, "ctx");
	cleanup_free char *rdir = ib_path_join(tmpl, "r");
	assert_int_equal(ib_mkdir_p(ctx, 0755, NULL), 0);
	assert_int_equal(ib_mkdir_p(rdir, 0755, NULL), 0);
	cleanup_free char *recipe = ib_path_join(rdir, "app.lua");
	ib_ignore *ig = NULL;
	assert_int_equal(ib_ignore_load(ctx, recipe, &ig, NULL), 0);
	assert_null(ig);

	cleanup_free char *di = ib_path_join(ctx, ".dockerignore");
	put(di, "from-context\n");
	assert_int_equal(ib_ignore_load(ctx, recipe, &ig, NULL), 0);
	assert_true(ib_ignore_match(ig, "from-context"));
	assert_string_equal(ib_ignore_source(ig), di);
	ib_ignore_free(ig);

	cleanup_free char *ii = ib_path_join(rdir, ".imgbuildignore");
	put(ii, "from-imgbuildignore\n");
	assert_int_equal(ib_ignore_load(ctx, recipe, &ig, NULL), 0);
	assert_true(ib_ignore_match(ig, "from-imgbuildignore"));
	assert_false(ib_ignore_match(ig, "from-context"));
	ib_ignore_free(ig);

	cleanup_free char *ri = xasprintf("%s.dockerignore", recipe);
	put(ri, "from-recipe\n");
	assert_int_equal(ib_ignore_load(ctx, recipe, &ig, NULL), 0);
	assert_true(ib_ignore_match(ig, "from-recipe"));
	assert_false(ib_ignore_match(ig, "from-imgbuildignore"));
	ib_ignore_free(ig);
	assert_int_equal(ib_rm_rf(tmpl, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_patterns_comments_and_parents),
	    cmocka_unit_test(test_literal_patterns_match_like_globs),
	    cmocka_unit_test(test_exceptions_last_match_wins),
	    cmocka_unit_test(test_load_precedence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
