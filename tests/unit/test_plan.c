/* The plan seam (src/lib/plan.c): ib_plan_validate and the shared
 * validators. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "plan.h"
#include "util.h"

/* A valid plan with one stage holding STEP (a JSON object text). */
static json_t *plan_with(const char *step)
{
	cleanup_free char *text = xasprintf(
	    "{\"version\": 1, \"recipe\": \"recipe.lua\", \"args\": {}, \"stages\": [{\"name\": "
	    "\"s\", \"from\": {\"scratch\": true}, \"platform\": null, \"pull\": null, "
	    "\"line\": 1, \"steps\": [%s]}]}",
	    step);
	json_error_t je;
	json_t *p = json_loads(text, 0, &je);
	if (!p)
		fail_msg("bad test JSON: %s: %s", je.text, text);
	return p;
}

#define RUN_FIELDS                                                                                 \
	"\"kind\": \"run\", \"line\": 7, \"argv\": [\"true\"], \"shell_form\": false, "            \
	"\"network\": \"default\", \"env\": {}, \"user\": null, \"workdir\": null, "               \
	"\"cache_mounts\": [], \"secrets\": [], \"cache\": true"
#define COPY_FIELDS                                                                                \
	"\"kind\": \"copy\", \"line\": 8, \"sources\": [\"a\"], \"dest\": \"/a\", \"from\": "      \
	"null, "                                                                                   \
	"\"owner\": null, \"exclude\": []"

/* Validate; NULL when valid, else the message (caller frees). */
static char *check(json_t *plan)
{
	ib_error *err = NULL;
	int r = ib_plan_validate(plan, &err);
	json_decref(plan);
	if (r == 0) {
		assert_null(err);
		return NULL;
	}
	assert_int_equal(err->code, IB_EINVALID);
	char *msg = xstrdup(ib_error_msg(err));
	ib_error_free(&err);
	return msg;
}

static void expect_error(json_t *plan, const char *part)
{
	cleanup_free char *msg = check(plan);
	if (!msg)
		fail_msg("accepted, expected an error with \"%s\"", part);
	if (!strstr(msg, part))
		fail_msg("error \"%s\" lacks \"%s\"", msg, part);
}

static void test_valid_plan_passes(void **state)
{
	(void)state;
	assert_null(check(plan_with("{" RUN_FIELDS ", \"timeout\": 0}")));
	assert_null(check(plan_with("{" COPY_FIELDS ", \"mode\": \"0644\"}")));
	assert_null(check(plan_with("{\"kind\": \"env\", \"line\": 3, \"env\": {\"A\": \"1\"}}")));
}

static void test_version_checked(void **state)
{
	(void)state;
	json_t *p = plan_with("");
	json_object_set_new(p, "version", json_integer(IB_PLAN_VERSION + 1));
	expect_error(p, "version is not supported");
	p = plan_with("");
	json_object_del(p, "version");
	expect_error(p, "version missing");
	p = plan_with("");
	json_object_set_new(p, "version", json_string("1"));
	expect_error(p, "version");
}

static void test_timeout_range(void **state)
{
	(void)state;
	/* was accepted and became a 1-second timeout (unsigned truncation) */
	expect_error(
	    plan_with("{" RUN_FIELDS ", \"timeout\": 4294967297}"),
	    "line 7: run: 'timeout' must be a whole number of seconds from 0 to 4294967295");
	expect_error(plan_with("{" RUN_FIELDS ", \"timeout\": -1}"), "'timeout'");
	expect_error(plan_with("{" RUN_FIELDS ", \"timeout\": 1.5}"), "'timeout'");
	assert_null(check(plan_with("{" RUN_FIELDS ", \"timeout\": 4294967295}")));
}

static void test_mode_range(void **state)
{
	(void)state;
	expect_error(plan_with("{" COPY_FIELDS ", \"mode\": \"10000\"}"),
		     "line 8: copy: 'mode' must be null or 4 octal digits");
	expect_error(plan_with("{" COPY_FIELDS ", \"mode\": \"0948\"}"), "'mode'");
	expect_error(plan_with("{" COPY_FIELDS ", \"mode\": 420}"), "'mode'");
	expect_error(plan_with("{" COPY_FIELDS ", \"mode\": \"644\"}"), "'mode'");
	assert_null(check(plan_with("{" COPY_FIELDS ", \"mode\": null}")));
	assert_int_equal(ib_plan_mode_parse("4755"), 04755);
	assert_int_equal(ib_plan_mode_parse("7777"), 07777);
	assert_int_equal(ib_plan_mode_parse(NULL), -1);
	assert_int_equal(ib_plan_mode_parse("77777"), -1);
}

static void test_wrong_types(void **state)
{
	(void)state;
	expect_error(plan_with("{\"kind\": \"env\", \"line\": 3, \"env\": {\"A\": 1}}"),
		     "line 3: env: 'env' must be an object of strings");
	expect_error(plan_with("{\"kind\": \"run\", \"line\": 4, \"argv\": \"true\"}"),
		     "line 4: run: 'argv' must be a non-empty array of strings");
	expect_error(plan_with("{" RUN_FIELDS ", \"timeout\": \"10\"}"), "'timeout'");
	expect_error(plan_with("{\"kind\": \"expose\", \"line\": 5, \"ports\": [\"70000/tcp\"]}"),
		     "'ports'");
	expect_error(plan_with("{\"kind\": \"stopsignal\", \"line\": 5, \"signal\": 9}"),
		     "'signal'");
	expect_error(plan_with("{\"kind\": \"frobnicate\", \"line\": 6}"),
		     "line 6: unknown step kind 'frobnicate'");
	expect_error(plan_with("{\"kind\": \"env\", \"env\": {}}"), "step 1");
	expect_error(plan_with("{" COPY_FIELDS ", \"mode\": null, \"owner\": \"a:b:c\"}"),
		     "'owner'");
	json_t *p = plan_with("");
	json_object_set_new(json_array_get(json_object_get(p, "stages"), 0), "from",
			    json_pack("{s:s, s:s}", "image", "x", "stage", "y"));
	expect_error(p, "stage \"s\": 'from' must be");
	p = plan_with("");
	json_object_set_new(p, "stages", json_object());
	expect_error(p, "'stages' must be an array");
}

static void test_step_kinds(void **state)
{
	(void)state;
	json_t *s = json_pack("{s:s}", "kind", "healthcheck");
	assert_int_equal(ib_plan_step_kind_of(s), IB_STEP_HEALTHCHECK);
	json_object_set_new(s, "kind", json_string("RUN"));
	assert_int_equal(ib_plan_step_kind_of(s), -1);
	json_decref(s);
	assert_int_equal(ib_plan_step_kind_of(NULL), -1);
}

static void test_shared_validators(void **state)
{
	(void)state;
	unsigned lo, hi;
	const char *proto;
	assert_true(ib_plan_port_parse("53-54/UDP", &lo, &hi, &proto));
	assert_int_equal(lo, 53);
	assert_int_equal(hi, 54);
	assert_string_equal(proto, "udp");
	assert_false(ib_plan_port_parse("0", &lo, &hi, &proto));
	assert_true(ib_plan_valid_owner("www-data:1000"));
	assert_false(ib_plan_valid_owner("a b"));
	assert_true(ib_plan_valid_signal("SIGRTMIN+3"));
	assert_false(ib_plan_valid_signal("65"));
	int64_t ns;
	assert_true(ib_plan_parse_duration("1m30s", &ns));
	assert_int_equal(ns, 90LL * 1000000000);
	assert_false(ib_plan_parse_duration("10", &ns));
	assert_true(ib_plan_valid_platform("linux/arm64/v8"));
	assert_false(ib_plan_valid_platform("linux"));
	assert_true(ib_plan_valid_stage_name("build-1.x"));
	assert_false(ib_plan_valid_stage_name("1build"));
	assert_true(ib_plan_valid_identifier("_A1"));
	assert_false(ib_plan_valid_identifier("A-1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_plan_passes), cmocka_unit_test(test_version_checked),
	    cmocka_unit_test(test_timeout_range),     cmocka_unit_test(test_mode_range),
	    cmocka_unit_test(test_wrong_types),	      cmocka_unit_test(test_step_kinds),
	    cmocka_unit_test(test_shared_validators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
