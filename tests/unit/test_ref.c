/* Image reference parsing and normalisation (src/lib/ref.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "ref.h"
#include "util.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIGEST "sha256:" HEX64

static ib_ref *parse_ok(const char *s)
{
	ib_ref *ref = NULL;
	ib_error *err = NULL;
	int r = ib_ref_parse(&ref, s, &err);
	if (r != 0)
		fail_msg("parse \"%s\": %s", s, ib_error_msg(err));
	assert_null(err);
	assert_non_null(ref);
	return ref;
}

static void check_ref(const char *s, const char *domain, const char *path, const char *tag,
		      const char *digest)
{
	ib_ref *ref = parse_ok(s);
	assert_string_equal(ref->domain, domain);
	assert_string_equal(ref->path, path);
	if (tag)
		assert_string_equal(ref->tag, tag);
	else
		assert_null(ref->tag);
	if (digest)
		assert_string_equal(ref->digest, digest);
	else
		assert_null(ref->digest);
	ib_ref_free(ref);
}

/* Parse must fail with IB_EINVALID and a message containing both the input
 * and `why`. */
static void check_bad(const char *s, const char *why)
{
	ib_ref *ref = (ib_ref *)0x1;
	ib_error *err = NULL;
	int r = ib_ref_parse(&ref, s, &err);
	if (r == 0)
		fail_msg("\"%s\" parsed but should not have", s);
	assert_int_equal(r, IB_EINVALID);
	assert_null(ref);
	assert_non_null(err);
	assert_int_equal(err->code, IB_EINVALID);
	cleanup_free char *prefix = xasprintf("invalid reference \"%s\": ", s);
	if (strncmp(err->msg, prefix, strlen(prefix)) != 0)
		fail_msg("message \"%s\" does not start with \"%s\"", err->msg, prefix);
	if (!strstr(err->msg, why))
		fail_msg("message \"%s\" does not mention \"%s\"", err->msg, why);
	ib_error_free(&err);
}

static char *string_of(const char *s)
{
	ib_ref *ref = parse_ok(s);
	char *r = ib_ref_string(ref);
	ib_ref_free(ref);
	return r;
}

static char *familiar_of(const char *s)
{
	ib_ref *ref = parse_ok(s);
	char *r = ib_ref_familiar(ref);
	ib_ref_free(ref);
	return r;
}

static void test_bare_name_gets_library_and_latest(void **state)
{
	(void)state;
	check_ref("alpine", "docker.io", "library/alpine", "latest", NULL);
}

static void test_name_with_tag(void **state)
{
	(void)state;
	check_ref("alpine:3.20", "docker.io", "library/alpine", "3.20", NULL);
}

static void test_explicit_library_prefix(void **state)
{
	(void)state;
	check_ref("library/alpine", "docker.io", "library/alpine", "latest", NULL);
}

static void test_explicit_docker_io(void **state)
{
	(void)state;
	check_ref("docker.io/alpine", "docker.io", "library/alpine", "latest", NULL);
	check_ref("docker.io/team/app:1.4", "docker.io", "team/app", "1.4", NULL);
}

static void test_index_docker_io_is_docker_io(void **state)
{
	(void)state;
	check_ref("index.docker.io/alpine:3", "docker.io", "library/alpine", "3", NULL);
}

static void test_user_repo_on_docker_hub(void **state)
{
	(void)state;
	check_ref("team/app", "docker.io", "team/app", "latest", NULL);
	check_ref("a/b/c", "docker.io", "a/b/c", "latest", NULL);
}

static void test_localhost_with_port_and_tag(void **state)
{
	(void)state;
	check_ref("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", NULL);
	check_ref("localhost/x", "localhost", "x", "latest", NULL);
	check_ref("localhost:5000/a/b", "localhost:5000", "a/b", "latest", NULL);
}

static void test_domain_with_dot(void **state)
{
	(void)state;
	check_ref("registry.example.com/team/app:v1", "registry.example.com", "team/app", "v1",
		  NULL);
	check_ref("quay.io/x", "quay.io", "x", "latest", NULL);
	check_ref("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", NULL);
	check_ref("my-host.example:443/x", "my-host.example:443", "x", "latest", NULL);
}

static void test_first_component_without_dot_is_a_path(void **state)
{
	(void)state;
	/* "myhost" has no '.', no ':' and is not localhost: a docker hub user. */
	check_ref("myhost/x", "docker.io", "myhost/x", "latest", NULL);
}

static void test_digest_only_has_no_tag(void **state)
{
	(void)state;
	check_ref("x@" DIGEST, "docker.io", "library/x", NULL, DIGEST);
}

static void test_tag_and_digest_both_kept(void **state)
{
	(void)state;
	check_ref("host.io/x:t@" DIGEST, "host.io", "x", "t", DIGEST);
}

static void test_ipv6_domain(void **state)
{
	(void)state;
	check_ref("[::1]:5000/x", "[::1]:5000", "x", "latest", NULL);
	check_ref("[fe80::1]/x:t", "[fe80::1]", "x", "t", NULL);
}

static void test_path_separators(void **state)
{
	(void)state;
	check_ref("a.b_c__d-e---f", "docker.io", "library/a.b_c__d-e---f", "latest", NULL);
	check_ref("my_app/x-y.z", "docker.io", "my_app/x-y.z", "latest", NULL);
}

static void test_tag_charset(void **state)
{
	(void)state;
	check_ref("x:V1.2_rc-3", "docker.io", "library/x", "V1.2_rc-3", NULL);
	check_ref("x:_x", "docker.io", "library/x", "_x", NULL);
	char tag[129];
	memset(tag, 'a', 128);
	tag[128] = '\0';
	cleanup_free char *s = xasprintf("x:%s", tag);
	check_ref(s, "docker.io", "library/x", tag, NULL);
}

static void test_rejects_empty(void **state)
{
	(void)state;
	check_bad("", "empty reference");
	ib_ref *ref = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_ref_parse(&ref, NULL, &err), IB_EINVALID);
	assert_null(ref);
	ib_error_free(&err);
}

static void test_rejects_upper_case(void **state)
{
	(void)state;
	check_bad("UPPER", "repository name must be lowercase");
	check_bad("Foo/Bar", "repository name must be lowercase");
	check_bad("quay.io/Team/app", "repository name must be lowercase");
}

static void test_upper_case_error_message_is_exact(void **state)
{
	(void)state;
	ib_ref *ref = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_ref_parse(&ref, "Foo/Bar", &err), IB_EINVALID);
	assert_string_equal(err->msg, "invalid reference \"Foo/Bar\": repository name must be "
				      "lowercase");
	ib_error_free(&err);
}

static void test_upper_case_domain_is_allowed(void **state)
{
	(void)state;
	check_ref("Registry.Example.com/x", "Registry.Example.com", "x", "latest", NULL);
}

static void test_rejects_empty_component(void **state)
{
	(void)state;
	check_bad("a//b", "empty path component");
	check_bad("a/", "empty path component");
	check_bad("/a", "empty path component");
	check_bad("localhost:5000/", "empty path component");
}

static void test_rejects_empty_tag(void **state)
{
	(void)state;
	check_bad("a:", "empty tag");
}

static void test_rejects_missing_name(void **state)
{
	(void)state;
	check_bad(":t", "missing repository name");
	check_bad("@" DIGEST, "missing repository name");
}

static void test_rejects_bad_digest(void **state)
{
	(void)state;
	check_bad("a@sha256:abc", "invalid digest");
	check_bad("a@md5:" HEX64, "only sha256");
	check_bad("a@", "invalid digest");
	check_bad("a@sha256:" HEX64 "00", "64 hex digits");
}

static void test_rejects_bad_tag(void **state)
{
	(void)state;
	check_bad("a:tag with space", "invalid tag");
	check_bad("a:.x", "invalid tag");
	check_bad("a:-x", "invalid tag");
	char tag[130];
	memset(tag, 'a', 129);
	tag[129] = '\0';
	cleanup_free char *s = xasprintf("x:%s", tag);
	check_bad(s, "invalid tag");
}

static void test_rejects_long_name(void **state)
{
	(void)state;
	char name[257];
	memset(name, 'a', 256);
	name[256] = '\0';
	check_bad(name, "must not be more than 255 characters");

	/* The limit counts the normalised name, domain included: exactly 255
	 * passes, 256 fails. */
	char path[256];
	size_t n = 255 - strlen("quay.io/");
	memset(path, 'b', n);
	path[n] = '\0';
	cleanup_free char *ok = xasprintf("quay.io/%s", path);
	check_ref(ok, "quay.io", path, "latest", NULL);
	cleanup_free char *bad = xasprintf("quay.io/%sb", path);
	check_bad(bad, "must not be more than 255 characters");
}

static void test_rejects_bad_components(void **state)
{
	(void)state;
	check_bad("-a", "invalid repository name component \"-a\"");
	check_bad("a/-b", "invalid repository name component \"-b\"");
	check_bad("a-", "invalid repository name component");
	check_bad("a..b", "invalid repository name component");
	check_bad("a___b", "invalid repository name component");
	check_bad("a.", "invalid repository name component");
	check_bad("_a", "invalid repository name component");
	check_bad("a$b", "invalid repository name component");
}

static void test_rejects_bad_domain(void **state)
{
	(void)state;
	check_bad("-bad.com/x", "invalid registry domain");
	check_bad("bad-.com/x", "invalid registry domain");
	check_bad("a..com/x", "invalid registry domain");
	check_bad("host:port/x", "invalid registry domain");
	check_bad("host:/x", "invalid registry domain");
	check_bad("[::1/x", "invalid registry domain");
	check_bad("[]/x", "invalid repository name component");
	check_bad("[zz::1]:5000/x", "invalid registry domain");
}

static void test_rejects_image_id(void **state)
{
	(void)state;
	check_bad(HEX64, "hexadecimal");
}

static void test_string_is_full_form(void **state)
{
	(void)state;
	cleanup_free char *a = string_of("alpine");
	assert_string_equal(a, "docker.io/library/alpine:latest");
	cleanup_free char *b = string_of("host.io/x:t@" DIGEST);
	assert_string_equal(b, "host.io/x:t@" DIGEST);
	cleanup_free char *c = string_of("x@" DIGEST);
	assert_string_equal(c, "docker.io/library/x@" DIGEST);
}

static void test_name_has_no_tag_or_digest(void **state)
{
	(void)state;
	ib_ref *ref = parse_ok("localhost:5000/a/b:t@" DIGEST);
	cleanup_free char *name = ib_ref_name(ref);
	assert_string_equal(name, "localhost:5000/a/b");
	ib_ref_free(ref);
}

static void test_familiar_forms(void **state)
{
	(void)state;
	static const char *cases[][2] = {
	    {"alpine", "alpine:latest"},
	    {"docker.io/library/alpine:3.20", "alpine:3.20"},
	    {"team/app:1.4", "team/app:1.4"},
	    {"library/x/y", "library/x/y:latest"},
	    {"x@" DIGEST, "x@" DIGEST},
	    {"localhost:5000/a/b:t", "localhost:5000/a/b:t"},
	    {"quay.io/library/x", "quay.io/library/x:latest"},
	    /* the first component would name a registry: the domain stays */
	    {"docker.io/example.com/app:1", "docker.io/example.com/app:1"},
	    {"docker.io/localhost/app", "docker.io/localhost/app:latest"},
	    {"docker.io/a.b", "a.b:latest"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_free char *f = familiar_of(cases[i][0]);
		assert_string_equal(f, cases[i][1]);
	}
}

static void test_round_trips(void **state)
{
	(void)state;
	static const char *inputs[] = {
	    "alpine",	    "alpine:3.20",	   "team/app:1.4", "localhost:5000/a/b:t",
	    "[::1]:5000/x", "host.io/x:t@" DIGEST, "x@" DIGEST,	   "library/x/y",
	    "docker.io/example.com/app:1", "docker.io/localhost/app", "docker.io/library/a.b",
	};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		cleanup_free char *full = string_of(inputs[i]);
		cleanup_free char *full2 = string_of(full);
		assert_string_equal(full, full2);
		cleanup_free char *fam = familiar_of(full);
		cleanup_free char *full3 = string_of(fam);
		assert_string_equal(full, full3);
	}
}

static void test_familiar_name(void **state)
{
	(void)state;
	static const char *cases[][2] = {
	    {"alpine:3", "alpine"},
	    {"team/app:1", "team/app"},
	    {"docker.io/example.com/app:1", "docker.io/example.com/app"},
	    {"localhost:5000/a/b@" DIGEST, "localhost:5000/a/b"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ib_ref *ref = parse_ok(cases[i][0]);
		cleanup_free char *n = ib_ref_familiar_name(ref);
		ib_ref_free(ref);
		assert_string_equal(n, cases[i][1]);
	}
}

static void test_familiarize(void **state)
{
	(void)state;
	cleanup_free char *a = ib_ref_familiarize("docker.io/library/x:t");
	assert_string_equal(a, "x:t");
	cleanup_free char *b = ib_ref_familiarize("docker.io/library/x");
	assert_string_equal(b, "x");
	cleanup_free char *c = ib_ref_familiarize("quay.io/a/b:1");
	assert_string_equal(c, "quay.io/a/b:1");
	cleanup_free char *d = ib_ref_familiarize("Not A Ref");
	assert_string_equal(d, "Not A Ref");
}

static void test_registry_host(void **state)
{
	(void)state;
	ib_ref *a = parse_ok("alpine");
	assert_string_equal(ib_ref_registry_host(a), "registry-1.docker.io");
	ib_ref_free(a);
	ib_ref *b = parse_ok("localhost:5000/x");
	assert_string_equal(ib_ref_registry_host(b), "localhost:5000");
	ib_ref_free(b);
}

static void test_loopback(void **state)
{
	(void)state;
	assert_true(ib_ref_is_loopback("localhost"));
	assert_true(ib_ref_is_loopback("localhost:5000"));
	assert_true(ib_ref_is_loopback("127.0.0.1"));
	assert_true(ib_ref_is_loopback("127.1.2.3:80"));
	assert_true(ib_ref_is_loopback("[::1]"));
	assert_true(ib_ref_is_loopback("[::1]:5000"));

	assert_false(ib_ref_is_loopback(NULL));
	assert_false(ib_ref_is_loopback(""));
	assert_false(ib_ref_is_loopback("docker.io"));
	assert_false(ib_ref_is_loopback("128.0.0.1"));
	assert_false(ib_ref_is_loopback("127.0.0"));
	assert_false(ib_ref_is_loopback("127.0.0.1.example.com"));
	assert_false(ib_ref_is_loopback("localhost.example.com"));
	assert_false(ib_ref_is_loopback("localhost:abc"));
	assert_false(ib_ref_is_loopback("[::2]:5000"));
	assert_false(ib_ref_is_loopback("[::1"));
}

static void test_is_short(void **state)
{
	(void)state;
	assert_true(ib_ref_is_short("debian"));
	assert_true(ib_ref_is_short("debian:bookworm"));
	assert_true(ib_ref_is_short("team/app:1"));
	assert_true(ib_ref_is_short("x@sha256:0123"));
	assert_false(ib_ref_is_short("localhost/debian:bookworm"));
	assert_false(ib_ref_is_short("docker.io/library/debian"));
	assert_false(ib_ref_is_short("host:5000/app"));
	assert_false(ib_ref_is_short("Host/app"));
}

static void test_short_matches(void **state)
{
	(void)state;
	assert_true(ib_ref_short_matches("debian:bookworm", "localhost/debian:bookworm"));
	assert_true(ib_ref_short_matches("debian:bookworm", "docker.io/library/debian:bookworm"));
	assert_true(ib_ref_short_matches("debian", "quay.io/debian:latest"));
	assert_true(ib_ref_short_matches("team/app:1", "localhost:5000/team/app:1"));
	assert_false(ib_ref_short_matches("debian:bookworm", "localhost/debian:trixie"));
	assert_false(ib_ref_short_matches("debian:bookworm", "localhost/x/debian:bookworm"));
	assert_false(ib_ref_short_matches("team/app:1", "localhost/app:1"));
	assert_false(ib_ref_short_matches("library/debian", "localhost/debian:latest"));
}

static void test_edit_distance(void **state)
{
	(void)state;
	assert_int_equal(ib_ref_edit_distance("", ""), 0);
	assert_int_equal(ib_ref_edit_distance("abc", ""), 3);
	assert_int_equal(ib_ref_edit_distance("", "ab"), 2);
	assert_int_equal(ib_ref_edit_distance("debian", "debian"), 0);
	assert_int_equal(ib_ref_edit_distance("debain", "debian"), 1); /* swap */
	assert_int_equal(ib_ref_edit_distance("debian", "debia"), 1);
	assert_int_equal(ib_ref_edit_distance("debian", "xebiann"), 2);
	assert_int_equal(ib_ref_edit_distance("kitten", "sitting"), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bare_name_gets_library_and_latest),
	    cmocka_unit_test(test_name_with_tag),
	    cmocka_unit_test(test_explicit_library_prefix),
	    cmocka_unit_test(test_explicit_docker_io),
	    cmocka_unit_test(test_index_docker_io_is_docker_io),
	    cmocka_unit_test(test_user_repo_on_docker_hub),
	    cmocka_unit_test(test_localhost_with_port_and_tag),
	    cmocka_unit_test(test_domain_with_dot),
	    cmocka_unit_test(test_first_component_without_dot_is_a_path),
	    cmocka_unit_test(test_digest_only_has_no_tag),
	    cmocka_unit_test(test_tag_and_digest_both_kept),
	    cmocka_unit_test(test_ipv6_domain),
	    cmocka_unit_test(test_path_separators),
	    cmocka_unit_test(test_tag_charset),
	    cmocka_unit_test(test_rejects_empty),
	    cmocka_unit_test(test_rejects_upper_case),
	    cmocka_unit_test(test_upper_case_error_message_is_exact),
	    cmocka_unit_test(test_upper_case_domain_is_allowed),
	    cmocka_unit_test(test_rejects_empty_component),
	    cmocka_unit_test(test_rejects_empty_tag),
	    cmocka_unit_test(test_rejects_missing_name),
	    cmocka_unit_test(test_rejects_bad_digest),
	    cmocka_unit_test(test_rejects_bad_tag),
	    cmocka_unit_test(test_rejects_long_name),
	    cmocka_unit_test(test_rejects_bad_components),
	    cmocka_unit_test(test_rejects_bad_domain),
	    cmocka_unit_test(test_rejects_image_id),
	    cmocka_unit_test(test_string_is_full_form),
	    cmocka_unit_test(test_name_has_no_tag_or_digest),
	    cmocka_unit_test(test_familiar_forms),
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_familiar_name),
	    cmocka_unit_test(test_familiarize),
	    cmocka_unit_test(test_registry_host),
	    cmocka_unit_test(test_loopback),
	    cmocka_unit_test(test_is_short),
	    cmocka_unit_test(test_short_matches),
	    cmocka_unit_test(test_edit_distance),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
