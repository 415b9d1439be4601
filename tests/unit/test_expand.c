/* Unit tests for expand.c: Dockerfile variable expansion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "expand.h"
#include "util.h"

static json_t *env;

static int setup(void **state)
{
	(void)state;
	env = json_pack("[ssss]", "PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "HOME=/shadowed");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	json_decref(env);
	return 0;
}

static void check(const char *in, const char *want)
{
	ib_error *err = NULL;
	cleanup_free char *got = ib_expand_env(in, env, &err);
	if (!got)
		fail_msg("expand \"%s\": %s", in, ib_error_msg(err));
	assert_string_equal(got, want);
	assert_null(err);
}

static void check_error(const char *in, const char *msg_part)
{
	ib_error *err = NULL;
	char *got = ib_expand_env(in, env, &err);
	assert_null(got);
	assert_non_null(err);
	if (!strstr(ib_error_msg(err), msg_part))
		fail_msg("expand \"%s\": got error \"%s\"", in, ib_error_msg(err));
	ib_error_free(&err);
}

static void test_plain_and_braced_names(void **state)
{
	(void)state;
	check("/opt/bin:$PATH", "/opt/bin:/usr/bin:/bin");
	check("${HOME}/bin", "/root/bin");
	check("$HOME/bin", "/root/bin");
	check("$HOMEX", "");
	check("a${UNSET}b", "ab");
	check("$HOME$HOME", "/root/root");
}

static void test_defaults_and_alternates(void **state)
{
	(void)state;
	check("${UNSET:-/usr/local}", "/usr/local");
	check("${EMPTY:-dflt}", "dflt");
	check("${EMPTY-dflt}", "");
	check("${UNSET-dflt}", "dflt");
	check("${HOME:-dflt}", "/root");
	check("${HOME:+set}", "set");
	check("${EMPTY:+set}", "");
	check("${EMPTY+set}", "set");
	check("${UNSET:+set}", "");
	/* words are expanded themselves, nested braces included */
	check("${UNSET:-$HOME/x}", "/root/x");
	check("${UNSET:-${HOME:+in}}", "in");
	check("${HOME:?}", "/root");
}

static void test_escapes_and_literals(void **state)
{
	(void)state;
	check("\\$HOME", "$HOME");
	check("cost: 5$", "cost: 5$");
	check("$1 $-", "$1 $-");
	/* only \$ is an escape: a string without '$' is unchanged */
	check("C:\\dir\\n", "C:\\dir\\n");
	check("a\\b$HOME", "a\\b/root");
	check("", "");
}

static void test_errors(void **state)
{
	(void)state;
	check_error("${HOME", "missing");
	check_error("${HOME:-x", "missing");
	check_error("${}", "bad substitution");
	check_error("${HOME:=x}", "bad substitution");
	check_error("${UNSET:?must be given}", "UNSET: must be given");
	check_error("${EMPTY:?}", "EMPTY: is not set");
}

static void test_no_env(void **state)
{
	(void)state;
	ib_error *err = NULL;
	cleanup_free char *got = ib_expand_env("x${A:-y}$B", NULL, &err);
	assert_string_equal(got, "xy");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_and_braced_names),
	    cmocka_unit_test(test_defaults_and_alternates),
	    cmocka_unit_test(test_escapes_and_literals),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_no_env),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
