/* Go-template-style --format strings (src/lib/gotmpl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "gotmpl.h"

static const char *data_json =
    "{\"Id\":\"sha256:abc\",\"Size\":1234,\"Config\":{\"Env\":[\"A=1\",\"PATH=/bin\"],"
    "\"Cmd\":[\"/bin/sh\",\"-c\",\"echo hi\"],\"Labels\":{\"k\":\"v\",\"a.b\":\"c\"},"
    "\"User\":\"app\"},\"ok\":true,\"none\":null}";

static char *render(const char *tmpl)
{
	json_t *data = json_loads(data_json, 0, NULL);
	assert_non_null(data);
	char *out = NULL;
	ib_error *err = NULL;
	int r = ib_gotmpl_render(tmpl, data, &out, &err);
	json_decref(data);
	if (r < 0) {
		assert_int_equal(r, IB_EUSAGE);
		assert_null(out);
		ib_error_free(&err);
		return NULL;
	}
	assert_null(err);
	return out;
}

static void check(const char *tmpl, const char *want)
{
	char *got = render(tmpl);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_fields(void **state)
{
	(void)state;
	check("{{.Id}}", "sha256:abc");
	check("id={{ .Id }} size={{.Size}}", "id=sha256:abc size=1234");
	check("{{.Config.User}}", "app");
	check("{{.config.user}}", "app"); /* case-insensitive as a fallback */
	check("{{.Config.Env}}", "[A=1 PATH=/bin]");
	check("{{.Config.Labels}}", "map[a.b:c k:v]");
	check("{{.ok}} {{.none}}", "true <nil>");
	check("{{.Missing}}|{{.Config.Missing.Deeper}}", "<no value>|<no value>");
	check("plain text", "plain text");
	check("a\\tb\\n", "a\tb\n");
}

static void test_functions(void **state)
{
	(void)state;
	check("{{json .Config.Env}}", "[\"A=1\",\"PATH=/bin\"]");
	check("{{json .Config.Labels}}", "{\"k\":\"v\",\"a.b\":\"c\"}");
	check("{{json .Id}}", "\"sha256:abc\"");
	check("{{index .Config.Labels \"a.b\"}}", "c");
	check("{{index .Config.Cmd 2}}", "echo hi");
	check("{{index .Config.Labels \"nope\"}}", "<no value>");
	check("{{join .Config.Cmd \" \"}}", "/bin/sh -c echo hi");
	check("{{join .Config.Env \",\"}}", "A=1,PATH=/bin");
	check("{{.Config.Env | json}}", "[\"A=1\",\"PATH=/bin\"]");
	check("{{.Config.User | upper}}", "APP");
	check("{{len .Config.Env}}", "2");
	check("{{\"}}\"}}", "}}");
}

static void test_errors(void **state)
{
	(void)state;
	assert_null(render("{{.Id"));
	assert_null(render("{{}}"));
	assert_null(render("{{nosuch .Id}}"));
	assert_null(render("{{json}}"));
	assert_null(render("{{join .Config.Cmd}}"));
	assert_null(render("{{\"abc}}"));
	assert_null(render("{{.Id .Size}}"));
	assert_null(render("{{.Id | .Size}}"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_functions),
	    cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
