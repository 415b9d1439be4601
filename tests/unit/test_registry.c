/* Unit tests for the registry client's helpers that need no network
 * (registry_http.c, registry_transfer.c): Link pagination, Retry-After,
 * the origin check that keeps credentials from other hosts, URL
 * resolution for Location headers and platform strings.  Requests against
 * a fake registry are in test_registry_http.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "registry_internal.h"
#include "util.h"

/* ---- Link ---- */

static void test_link_next_relative_url(void **state)
{
	(void)state;
	char *u = NULL;
	assert_int_equal(
	    ib_registry_parse_link_next("</v2/_catalog?last=b&n=2>; rel=\"next\"", &u, NULL), 0);
	assert_string_equal(u, "/v2/_catalog?last=b&n=2");
	free(u);
}

static void test_link_next_among_several_links_and_unquoted_rel(void **state)
{
	(void)state;
	char *u = NULL;
	assert_int_equal(ib_registry_parse_link_next("<https://r/v2/x?p=1>; rel=\"prev\", "
						     "<https://r/v2/x?p=3>;rel=next",
						     &u, NULL),
			 0);
	assert_string_equal(u, "https://r/v2/x?p=3");
	free(u);
	assert_int_equal(
	    ib_registry_parse_link_next("<a>; title=\"x, y\"; rel=\"first next\"", &u, NULL), 0);
	assert_string_equal(u, "a");
	free(u);
}

static void test_link_without_next_gives_null(void **state)
{
	(void)state;
	char *u = (char *)"sentinel";
	assert_int_equal(ib_registry_parse_link_next("</v2/x>; rel=\"prev\"", &u, NULL), 0);
	assert_null(u);
	assert_int_equal(ib_registry_parse_link_next("", &u, NULL), 0);
	assert_null(u);
	assert_int_equal(ib_registry_parse_link_next(NULL, &u, NULL), 0);
	assert_null(u);
}

static void test_link_malformed_is_rejected(void **state)
{
	(void)state;
	char *u = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_registry_parse_link_next("/v2/x; rel=next", &u, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_registry_parse_link_next("</v2/x; rel=next", &u, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_null(u);
}

/* ---- Retry-After ---- */

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(ib_registry_parse_retry_after("1", 1000), 1);
	assert_int_equal(ib_registry_parse_retry_after(" 120 ", 1000), 120);
	assert_int_equal(ib_registry_parse_retry_after("0", 1000), 0);
}

static void test_retry_after_http_date(void **state)
{
	(void)state;
	/* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
	assert_int_equal(ib_registry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770),
			 7);
	/* a date in the past means "now" */
	assert_int_equal(ib_registry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111800),
			 0);
}

static void test_retry_after_garbage(void **state)
{
	(void)state;
	assert_int_equal(ib_registry_parse_retry_after("soon", 0), -1);
	assert_int_equal(ib_registry_parse_retry_after("-5", 0), -1);
	assert_int_equal(ib_registry_parse_retry_after("", 0), -1);
	assert_int_equal(ib_registry_parse_retry_after(NULL, 0), -1);
}

/* ---- origins (credentials never leave their host) ---- */

static void test_same_origin_accepts_same_host_and_port(void **state)
{
	(void)state;
	assert_true(ib_registry_same_origin("https://reg.example/v2/", "https://reg.example/x?y"));
	assert_true(ib_registry_same_origin("https://REG.example:443/a", "https://reg.example/b"));
	assert_true(ib_registry_same_origin("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000"));
}

static void test_same_origin_rejects_other_host_port_or_scheme(void **state)
{
	(void)state;
	assert_false(ib_registry_same_origin("https://reg.example/v2/", "https://s3.example/blob"));
	assert_false(ib_registry_same_origin("https://reg.example/", "https://reg.example:8443/"));
	assert_false(ib_registry_same_origin("https://reg.example/", "http://reg.example/"));
	assert_false(
	    ib_registry_same_origin("https://reg.example/", "https://reg.example.evil.com/"));
	assert_false(ib_registry_same_origin("https://reg.example/", "https://user@evil.com/"));
	assert_false(ib_registry_same_origin("not a url", "https://reg.example/"));
}

static void test_resolve_url_relative_and_absolute(void **state)
{
	(void)state;
	char *u = ib_registry_resolve_url("http://127.0.0.1:5000/v2/a/blobs/uploads/",
					  "/v2/a/blobs/uploads/uuid?_state=x");
	assert_string_equal(u, "http://127.0.0.1:5000/v2/a/blobs/uploads/uuid?_state=x");
	free(u);
	u = ib_registry_resolve_url("https://reg.example/v2/a/blobs/sha256:1",
				    "https://cdn.example/b?sig=1");
	assert_string_equal(u, "https://cdn.example/b?sig=1");
	free(u);
}

/* ---- platforms ---- */

static void test_parse_platform(void **state)
{
	(void)state;
	ib_platform p;
	assert_int_equal(ib_registry_parse_platform("linux/arm64/v8", &p, NULL), 0);
	assert_string_equal(p.os, "linux");
	assert_string_equal(p.architecture, "arm64");
	assert_string_equal(p.variant, "v8");
	free(p.os);
	free(p.architecture);
	free(p.variant);
	assert_int_equal(ib_registry_parse_platform("linux/amd64", &p, NULL), 0);
	assert_string_equal(p.architecture, "amd64");
	assert_null(p.variant);
	free(p.os);
	free(p.architecture);
	static const char *bad[] = {"linux", "linux/", "/amd64", "linux/arm/v7/x", "linux//v7"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_error *err = NULL;
		assert_int_equal(ib_registry_parse_platform(bad[i], &p, &err), IB_EINVALID);
		assert_non_null(strstr(ib_error_msg(err), bad[i]));
		ib_error_free(&err);
	}
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_link_next_relative_url),
	    cmocka_unit_test(test_link_next_among_several_links_and_unquoted_rel),
	    cmocka_unit_test(test_link_without_next_gives_null),
	    cmocka_unit_test(test_link_malformed_is_rejected),
	    cmocka_unit_test(test_retry_after_seconds),
	    cmocka_unit_test(test_retry_after_http_date),
	    cmocka_unit_test(test_retry_after_garbage),
	    cmocka_unit_test(test_same_origin_accepts_same_host_and_port),
	    cmocka_unit_test(test_same_origin_rejects_other_host_port_or_scheme),
	    cmocka_unit_test(test_resolve_url_relative_and_absolute),
	    cmocka_unit_test(test_parse_platform),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
