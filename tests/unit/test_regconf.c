/* Registry configuration (src/lib/regconf.c) and its use by the registry
 * sessions: prefix matching, wildcards, drop-in order, daemon.json names
 * and CIDRs, mirrors and location rewriting, blocked registries, certs.d,
 * and the CA bundle SSL_CERT_FILE adds to. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "digest.h"
#include "error.h"
#include "regconf.h"
#include "registry_internal.h"
#include "testutil.h"
#include "util.h"

static char *tmp;

static int setup(void **state)
{
	(void)state;
	tmp = tu_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ib_rm_rf(tmp, NULL);
	free(tmp);
	tmp = NULL;
	return 0;
}

static char *write_tmp(const char *name, const char *text)
{
	char *p = ib_path_join(tmp, name);
	cleanup_free char *dir = xstrdup(p);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(ib_mkdir_p(dir, 0755, NULL), 0);
	assert_int_equal(ib_write_file_atomic(p, text, strlen(text), 0644, NULL), 0);
	return p;
}

static ib_regconf *load_ok(const char *conf, const char *dropins, const char *daemon)
{
	ib_regconf *c = NULL;
	ib_error *err = NULL;
	const char *dirs[] = {dropins, NULL};
	if (ib_regconf_load_from(&c, conf, dirs, daemon, &err) < 0)
		fail_msg("load: %s", ib_error_msg(err));
	return c;
}

static void test_prefix_matching(void **state)
{
	(void)state;
	cleanup_free char *conf = write_tmp(
	    "registries.conf", "unqualified-search-registries = ['quay.io', \"docker.io\"]\n"
			       "short-name-mode = 'enforcing'\n"
			       "[[registry]]\n"
			       "location = 'example.com'\n"
			       "insecure = true\n"
			       "[[registry]]\n"
			       "prefix = 'example.com/foo'\n"
			       "location = 'internal:5000/bar'\n"
			       "[[registry.mirror]]\n"
			       "location = 'mirror.local/m'\n"
			       "insecure = true\n"
			       "[[registry]]\n"
			       "prefix = '*.wild.test'\n"
			       "blocked = true\n"
			       "[[registry]]\n"
			       "location = 'exact.wild.test'\n");
	ib_regconf *c = load_ok(conf, NULL, NULL);
	assert_int_equal(ib_strv_len(c->search), 2);
	assert_string_equal(c->search[0], "quay.io");
	const ib_regconf_registry *r = ib_regconf_find(c, "example.com/foo/app");
	assert_non_null(r);
	assert_string_equal(r->prefix, "example.com/foo");
	r = ib_regconf_find(c, "example.com/foobar/app"); /* not at a separator */
	assert_string_equal(r->prefix, "example.com");
	assert_true(r->insecure);
	assert_string_equal(ib_regconf_find(c, "example.com/foo:tag")->prefix, "example.com/foo");
	assert_null(ib_regconf_find(c, "example.community/x"));
	assert_null(ib_regconf_find(c, "other.org/x"));
	/* wildcards match sub-domains only; an exact host beats them */
	r = ib_regconf_find(c, "a.b.wild.test:5000/x");
	assert_non_null(r);
	assert_true(r->wildcard && r->blocked);
	assert_null(ib_regconf_find(c, "wild.test/x"));
	assert_string_equal(ib_regconf_find(c, "exact.wild.test/x")->prefix, "exact.wild.test");
	assert_true(ib_regconf_insecure_name(c, "example.com"));
	assert_true(ib_regconf_insecure_name(c, "mirror.local"));
	assert_false(ib_regconf_insecure_name(c, "internal:5000"));
	ib_error *err = NULL;
	assert_int_equal(ib_regconf_check_blocked(c, "x.wild.test/app", &err), IB_ERROR);
	assert_non_null(strstr(ib_error_msg(err), "registries.conf:12"));
	ib_error_free(&err);
	assert_int_equal(ib_regconf_check_blocked(c, "exact.wild.test/app", NULL), 0);
	ib_regconf_free(c);
}

static void test_endpoints(void **state)
{
	(void)state;
	cleanup_free char *conf = write_tmp("r.conf", "[[registry]]\n"
						      "prefix = 'example.com/foo'\n"
						      "location = 'internal:5000/bar'\n"
						      "[[registry.mirror]]\n"
						      "location = 'm0.local/mirror-for-foo'\n"
						      "[[registry.mirror]]\n"
						      "location = 'm1.local:8080'\n"
						      "insecure = true\n"
						      "[[registry]]\n"
						      "location = 'digest.test'\n"
						      "mirror-by-digest-only = true\n"
						      "[[registry.mirror]]\n"
						      "location = 'dmirror.test'\n");
	cleanup_free char *dj =
	    write_tmp("daemon.json",
		      "{\"registry-mirrors\": [\"http://10.1.2.3:5000/\", \"https://hub.mirror\"],"
		      " \"insecure-registries\": [\"lan.host:5000\", \"10.0.0.0/8\", \"fd00::/8\"],"
		      " \"debug\": true}");
	ib_regconf *c = load_ok(conf, NULL, dj);
	ib_regconf_endpoint *e = NULL;
	size_t n = 0;
	assert_int_equal(
	    ib_regconf_endpoints(c, "example.com", "foo/img", true, false, &e, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].domain, "m0.local");
	assert_string_equal(e[0].path, "mirror-for-foo/img");
	assert_true(e[0].mirror && !e[0].insecure);
	assert_string_equal(e[1].domain, "m1.local:8080");
	assert_string_equal(e[1].path, "img");
	assert_true(e[1].insecure);
	assert_string_equal(e[2].domain, "internal:5000");
	assert_string_equal(e[2].path, "bar/img");
	assert_false(e[2].mirror);
	ib_regconf_endpoints_free(e, n);
	/* pushes go to the location only */
	assert_int_equal(
	    ib_regconf_endpoints(c, "example.com", "foo/a/b", false, false, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].path, "bar/a/b");
	ib_regconf_endpoints_free(e, n);
	/* mirror-by-digest-only */
	assert_int_equal(ib_regconf_endpoints(c, "digest.test", "x", true, false, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	ib_regconf_endpoints_free(e, n);
	assert_int_equal(ib_regconf_endpoints(c, "digest.test", "x", true, true, &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(e[0].digest_only);
	ib_regconf_endpoints_free(e, n);
	/* daemon.json mirrors serve docker.io; http:// ones are insecure */
	assert_int_equal(
	    ib_regconf_endpoints(c, "docker.io", "library/alpine", true, false, &e, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].domain, "10.1.2.3:5000");
	assert_string_equal(e[0].path, "library/alpine");
	assert_true(e[0].insecure);
	assert_string_equal(e[1].domain, "hub.mirror");
	assert_false(e[1].insecure);
	assert_string_equal(e[2].domain, "docker.io");
	ib_regconf_endpoints_free(e, n);
	/* unconfigured: the name itself */
	assert_int_equal(ib_regconf_endpoints(c, "lan.host:5000", "t/a", true, false, &e, &n, NULL),
			 0);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].domain, "lan.host:5000");
	assert_true(e[0].insecure); /* daemon.json name */
	ib_regconf_endpoints_free(e, n);
	/* CIDRs */
	struct sockaddr_in in = {.sin_family = AF_INET};
	inet_pton(AF_INET, "10.200.3.4", &in.sin_addr);
	assert_true(ib_regconf_insecure_addr(c, (struct sockaddr *)&in));
	inet_pton(AF_INET, "11.0.0.1", &in.sin_addr);
	assert_false(ib_regconf_insecure_addr(c, (struct sockaddr *)&in));
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "fd12::1", &in6.sin6_addr);
	assert_true(ib_regconf_insecure_addr(c, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
	assert_false(ib_regconf_insecure_addr(c, (struct sockaddr *)&in6));
	assert_false(ib_regconf_insecure_name(c, "lan.host"));
	ib_regconf_free(c);
}

static void test_dropins(void **state)
{
	(void)state;
	cleanup_free char *conf =
	    write_tmp("main.conf", "unqualified-search-registries = ['a.io']\n"
				   "[[registry]]\n"
				   "location = 'one.test'\n"
				   "insecure = true\n"
				   "[[registry]]\n"
				   "location = 'two.test'\n");
	cleanup_free char *d2 = write_tmp("d/20-second.conf", "[[registry]]\n"
							      "location = 'one.test'\n"
							      "blocked = true\n");
	cleanup_free char *d1 =
	    write_tmp("d/10-first.conf", "unqualified-search-registries = ['b.io', 'c.io']\n"
					 "[[registry]]\n"
					 "location = 'one.test'\n"
					 "insecure = false\n");
	cleanup_free char *ignored = write_tmp("d/30-not-conf.txt", "this is not TOML [[[");
	cleanup_free char *dir = ib_path_join(tmp, "d");
	ib_regconf *c = load_ok(conf, dir, NULL);
	assert_int_equal(ib_strv_len(c->files), 3);
	assert_string_equal(c->files[1], d1);
	assert_string_equal(c->files[2], d2);
	/* the last drop-in's table replaces the whole earlier one */
	const ib_regconf_registry *r = ib_regconf_find(c, "one.test/x");
	assert_true(r->blocked);
	assert_false(r->insecure);
	assert_non_null(strstr(r->source, "20-second.conf:1"));
	assert_non_null(ib_regconf_find(c, "two.test/x"));
	assert_int_equal(ib_strv_len(c->search), 2);
	assert_string_equal(c->search[1], "c.io");
	ib_regconf_free(c);
}

static void check_conf_error(const char *text, const char *want)
{
	cleanup_free char *conf = write_tmp("bad.conf", text);
	ib_regconf *c = NULL;
	ib_error *err = NULL;
	int r = ib_regconf_load_from(&c, conf, NULL, NULL, &err);
	if (r == 0)
		fail_msg("loaded but should not have:\n%s", text);
	assert_null(c);
	cleanup_free char *full = xasprintf("%s%s", conf, want);
	if (strcmp(ib_error_msg(err), full) != 0)
		fail_msg("want \"%s\", got \"%s\"", full, ib_error_msg(err));
	ib_error_free(&err);
}

static void test_bad_config(void **state)
{
	(void)state;
	check_conf_error("[[registry]]\nlocation = 'x'\ninsecure = 'yes'\n",
			 ":3: insecure must be true or false");
	check_conf_error("\n[[registry]]\ninsecure = true\n",
			 ":2: [[registry]] needs a location or a prefix");
	check_conf_error("[[registry]]\nlocation = 'https://x.test'\n",
			 ":1: invalid location \"https://x.test\"");
	check_conf_error("[[registry]]\nprefix = '*.x.test'\nlocation = 'y.test'\n",
			 ":1: a [[registry]] with a wildcard prefix cannot set a location");
	check_conf_error("unqualified-search-registries = 'docker.io'\n",
			 ":1: unqualified-search-registries must be an array of strings");
	check_conf_error("[registry]\nlocation = 'x'\n",
			 ":1: registry must be an array of tables ([[registry]])");
	check_conf_error("[[registry]]\nlocation = 'x'\n[[registry.mirror]]\ninsecure = true\n",
			 ":3: a mirror needs a location");
	check_conf_error("a = 1\n[[registry]\n", ":2: expected ']]' after the table name");
	cleanup_free char *dj = write_tmp("daemon.json", "{\"insecure-registries\": [1]}");
	ib_regconf *c = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_regconf_load_from(&c, NULL, NULL, dj, &err), IB_EINVALID);
	assert_non_null(strstr(ib_error_msg(err), "daemon.json"));
	ib_error_free(&err);
	cleanup_free char *dj2 = write_tmp("daemon2.json", "{\n\"debug\": tru }");
	assert_int_equal(ib_regconf_load_from(&c, NULL, NULL, dj2, &err), IB_EINVALID);
	cleanup_free char *want = xasprintf("%s:2: ", dj2);
	assert_non_null(strstr(ib_error_msg(err), want));
	ib_error_free(&err);
	/* missing files are no configuration */
	cleanup_free char *none = ib_path_join(tmp, "missing.conf");
	const char *dirs[] = {none, NULL};
	assert_int_equal(ib_regconf_load_from(&c, none, dirs, none, NULL), 0);
	assert_int_equal(c->n_regs, 0);
	assert_null(c->search);
	ib_regconf_free(c);
}

static void test_v1_and_system_files(void **state)
{
	(void)state;
	cleanup_free char *conf = write_tmp("v1.conf", "[registries.search]\n"
						       "registries = ['r1.test', 'r2.test']\n"
						       "[registries.insecure]\n"
						       "registries = ['r3.test']\n"
						       "[registries.block]\n"
						       "registries = ['bad.test', 'r3.test']\n");
	ib_regconf *c = load_ok(conf, NULL, NULL);
	assert_int_equal(ib_strv_len(c->search), 2);
	assert_true(ib_regconf_find(c, "r3.test/x")->insecure);
	assert_true(ib_regconf_find(c, "r3.test/x")->blocked);
	assert_true(ib_regconf_find(c, "bad.test")->blocked);
	ib_regconf_free(c);
	/* the files this machine ships, when there are any, must load */
	const char *dirs[] = {"/etc/containers/registries.conf.d", NULL};
	ib_error *err = NULL;
	if (ib_regconf_load_from(&c, "/etc/containers/registries.conf", dirs,
				 "/etc/docker/daemon.json", &err) < 0)
		fail_msg("system configuration: %s", ib_error_msg(err));
	ib_regconf_free(c);
}

static void test_load_env(void **state)
{
	(void)state;
	cleanup_free char *a = write_tmp("a.conf", "unqualified-search-registries = ['a.test']\n");
	cleanup_free char *b = write_tmp("b.conf", "unqualified-search-registries = ['b.test']\n");
	cleanup_free char *u = write_tmp("home/.config/containers/registries.conf",
					 "unqualified-search-registries = ['user.test']\n");
	cleanup_free char *ud = write_tmp("home/.config/containers/registries.conf.d/1.conf",
					  "[[registry]]\nlocation = 'user-dropin.test'\n");
	cleanup_free char *home = ib_path_join(tmp, "home");
	cleanup_free char *old_home = getenv("HOME") ? xstrdup(getenv("HOME")) : NULL;
	setenv("HOME", home, 1);
	setenv("IMGBUILD_REGISTRIES_CONF_DIR", "", 1);
	setenv("IMGBUILD_DOCKER_DAEMON_JSON", "", 1);
	ib_regconf *c = NULL;
	/* the user's file replaces the system one */
	assert_int_equal(ib_regconf_load(&c, NULL), 0);
	assert_string_equal(c->search[0], "user.test");
	assert_non_null(ib_regconf_find(c, "user-dropin.test/x"));
	ib_regconf_free(c);
	setenv("CONTAINERS_REGISTRIES_CONF", b, 1);
	assert_int_equal(ib_regconf_load(&c, NULL), 0);
	assert_string_equal(c->search[0], "b.test");
	ib_regconf_free(c);
	setenv("IMGBUILD_REGISTRIES_CONF", a, 1);
	assert_int_equal(ib_regconf_load(&c, NULL), 0);
	assert_string_equal(c->search[0], "a.test");
	ib_regconf_free(c);
	unsetenv("IMGBUILD_REGISTRIES_CONF");
	unsetenv("CONTAINERS_REGISTRIES_CONF");
	unsetenv("IMGBUILD_REGISTRIES_CONF_DIR");
	unsetenv("IMGBUILD_DOCKER_DAEMON_JSON");
	if (old_home)
		setenv("HOME", old_home, 1);
	assert_true(ib_regconf_unqualified("app:1"));
	assert_true(ib_regconf_unqualified("team/app"));
	assert_false(ib_regconf_unqualified("localhost/app"));
	assert_false(ib_regconf_unqualified("host:5000/app"));
	assert_false(ib_regconf_unqualified("quay.io/app"));
}

static void test_certs_d(void **state)
{
	(void)state;
	cleanup_free char *c1 = write_tmp("c1/reg.test:5000/b.crt", "TEST-CA-B\n");
	cleanup_free char *c2 = write_tmp("c1/reg.test:5000/a.crt", "TEST-CA-A\n");
	cleanup_free char *c3 = write_tmp("c2/reg.test:5000/c.crt", "TEST-CA-C\n");
	cleanup_free char *k1 = write_tmp("c2/reg.test:5000/client.cert", "CERT\n");
	cleanup_free char *k2 = write_tmp("c2/reg.test:5000/client.key", "KEY\n");
	cleanup_free char *k3 = write_tmp("c2/reg.test:5000/lonely.cert", "CERT\n");
	cleanup_free char *other = write_tmp("c1/reg.test/x.crt", "TEST-CA-X\n");
	cleanup_free char *dirs = xasprintf("%s/c1:%s/c2", tmp, tmp);
	setenv("IMGBUILD_CERTS_D", dirs, 1);
	char **cas = NULL, *cert = NULL, *key = NULL;
	assert_int_equal(ib_regconf_certs("reg.test:5000", &cas, &cert, &key, NULL), 0);
	assert_int_equal(ib_strv_len(cas), 3);
	assert_string_equal(cas[0], c2);
	assert_string_equal(cas[1], c1);
	assert_string_equal(cas[2], c3);
	assert_string_equal(cert, k1);
	assert_string_equal(key, k2);
	ib_strv_free(cas);
	free(cert);
	free(key);
	assert_int_equal(ib_regconf_certs("none.test", &cas, &cert, &key, NULL), 0);
	assert_null(cas[0]);
	assert_null(cert);
	ib_strv_free(cas);

	/* the trust of a session: system CAs + SSL_CERT_FILE + certs.d */
	char *pem = NULL;
	size_t len = 0;
	unsetenv("SSL_CERT_FILE");
	assert_int_equal(ib_registry_tls_trust("none.test", &pem, &len, &cert, &key, NULL), 0);
	assert_null(pem); /* libcurl's defaults */
	assert_int_equal(ib_registry_tls_trust("reg.test:5000", &pem, &len, &cert, &key, NULL), 0);
	assert_non_null(pem);
	assert_non_null(strstr(pem, "TEST-CA-A\n"));
	assert_non_null(strstr(pem, "TEST-CA-C\n"));
	assert_null(strstr(pem, "TEST-CA-X\n"));
	assert_string_equal(key, k2);
	free(pem);
	free(cert);
	free(key);
	cleanup_free char *extra = write_tmp("extra.pem", "EXTRA-CA\n");
	setenv("SSL_CERT_FILE", extra, 1);
	assert_int_equal(ib_registry_tls_trust("none.test", &pem, &len, &cert, &key, NULL), 0);
	assert_non_null(pem);
	assert_non_null(strstr(pem, "EXTRA-CA\n"));
	/* the system bundle is still there, first */
	cleanup_free char *sys = NULL;
	size_t sl = 0;
	if (ib_read_file("/etc/ssl/certs/ca-certificates.crt", 16u << 20, &sys, &sl, NULL) == 0) {
		assert_true(sl > 1000);
		assert_true(len > sl);
		assert_memory_equal(pem, sys, sl);
	}
	free(pem);
	/* SSL_CERT_FILE naming the system bundle adds nothing */
	setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt", 1);
	if (sys) {
		assert_int_equal(ib_registry_tls_trust("none.test", &pem, &len, &cert, &key, NULL),
				 0);
		assert_null(pem);
	}
	cleanup_free char *missing = ib_path_join(tmp, "missing.pem");
	setenv("SSL_CERT_FILE", missing, 1);
	ib_error *err = NULL;
	assert_int_not_equal(ib_registry_tls_trust("none.test", &pem, &len, &cert, &key, &err), 0);
	assert_non_null(strstr(ib_error_msg(err), "SSL_CERT_FILE"));
	ib_error_free(&err);
	unsetenv("SSL_CERT_FILE");
	unsetenv("IMGBUILD_CERTS_D");
	(void)k3;
}

/* ---- sessions against small servers ---- */

#define MANIFEST "{\"schemaVersion\":2}"

typedef struct srv_state {
	bool has_manifest;
} srv_state;

static void handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	srv_state *st = payload;
	if (!strcmp(req->target, "/v2/")) {
		tu_http_set_body(resp, "{}", (size_t)-1);
		return;
	}
	if (strstr(req->target, "/manifests/") && st->has_manifest) {
		tu_http_add_header(resp,
				   "Content-Type: application/vnd.oci.image.manifest.v1+json");
		tu_http_set_body(resp, MANIFEST, (size_t)-1);
		return;
	}
	resp->status = 404;
	tu_http_set_body(resp, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}", (size_t)-1);
}

static void use_conf(const char *text)
{
	cleanup_free char *conf = write_tmp("session.conf", text);
	setenv("IMGBUILD_REGISTRIES_CONF", conf, 1);
	setenv("IMGBUILD_REGISTRIES_CONF_DIR", "", 1);
	setenv("IMGBUILD_DOCKER_DAEMON_JSON", "", 1);
	setenv("HOME", tmp, 1);
}

static void test_session_mirrors(void **state)
{
	(void)state;
	srv_state ms = {false}, ls = {true};
	tu_http *mirror = tu_http_start(handler, &ms);
	tu_http *loc = tu_http_start(handler, &ls);
	cleanup_free char *text = xasprintf("[[registry]]\n"
					    "prefix = 'registry.example.test/team'\n"
					    "location = '%s/real'\n"
					    "[[registry.mirror]]\n"
					    "location = '%s/mirror'\n",
					    tu_http_host(loc), tu_http_host(mirror));
	use_conf(text);
	ib_registry_session *s = NULL;
	ib_error *err = NULL;
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	if (ib_registry_session_open(&s, "registry.example.test", "team/app",
				     "repository:team/app:pull", NULL, &o, &err) < 0)
		fail_msg("open: %s", ib_error_msg(err));
	assert_string_equal(s->domain, tu_http_host(mirror));
	assert_string_equal(s->name, "mirror/app");
	assert_string_equal(s->scope, "repository:mirror/app:pull");
	char *body = NULL;
	if (ib_registry_manifest_get(s, "1", &body, NULL, NULL, NULL, &err) < 0)
		fail_msg("manifest: %s", ib_error_msg(err));
	assert_string_equal(body, MANIFEST);
	free(body);
	/* the mirror was asked first, then the location */
	assert_string_equal(s->domain, tu_http_host(loc));
	assert_string_equal(s->repository + strlen(s->domain), "/real/app");
	cleanup_free char *mlog = tu_http_log(mirror);
	cleanup_free char *llog = tu_http_log(loc);
	assert_non_null(strstr(mlog, "GET /v2/mirror/app/manifests/1 404"));
	assert_non_null(strstr(llog, "GET /v2/real/app/manifests/1 200"));
	ib_registry_session_free(s);

	/* when the mirror has it, the location is not asked */
	ms.has_manifest = true;
	size_t before = tu_http_count(loc);
	assert_int_equal(ib_registry_session_open(&s, "registry.example.test", "team/app",
						  "repository:team/app:pull", NULL, &o, NULL),
			 0);
	assert_int_equal(ib_registry_manifest_get(s, "1", NULL, NULL, NULL, NULL, NULL), 0);
	assert_string_equal(s->domain, tu_http_host(mirror));
	assert_int_equal(tu_http_count(loc), before);
	ib_registry_session_free(s);

	/* pushes never go to mirrors */
	assert_int_equal(ib_registry_session_open(&s, "registry.example.test", "team/app",
						  "repository:team/app:pull,push", NULL, &o, NULL),
			 0);
	assert_string_equal(s->domain, tu_http_host(loc));
	assert_string_equal(s->scope, "repository:real/app:pull,push");
	ib_registry_session_free(s);
	tu_http_stop(mirror);
	tu_http_stop(loc);
	unsetenv("IMGBUILD_REGISTRIES_CONF");
}

static void test_session_blocked(void **state)
{
	(void)state;
	use_conf("[[registry]]\nprefix = 'blocked.test/secret'\nblocked = true\n");
	ib_registry_session *s = NULL;
	ib_error *err = NULL;
	int r = ib_registry_session_open(&s, "blocked.test", "secret/app",
					 "repository:secret/app:pull", NULL, NULL, &err);
	assert_int_equal(r, IB_ERROR);
	assert_null(s);
	cleanup_free char *want = xasprintf(
	    "blocked.test/secret/app is blocked by the registry configuration (%s/session.conf:1)",
	    tmp);
	assert_string_equal(ib_error_msg(err), want);
	ib_error_free(&err);
	/* a malformed configuration stops every registry command */
	use_conf("[[registry]]\nlocation = 'x'\nblocked = maybe\n");
	r = ib_registry_session_open(&s, "other.test", "a", "repository:a:pull", NULL, NULL, &err);
	assert_int_equal(r, IB_EINVALID);
	cleanup_free char *want2 = xasprintf("%s/session.conf:3: ", tmp);
	assert_non_null(strstr(ib_error_msg(err), want2));
	ib_error_free(&err);
	unsetenv("IMGBUILD_REGISTRIES_CONF");
}

static void test_plain_http_text(void **state)
{
	(void)state;
	http_resp r;
	ib_registry_resp_init(&r);
	r.cc = CURLE_SSL_CONNECT_ERROR;
	snprintf(r.curl_err, sizeof(r.curl_err),
		 "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number");
	assert_true(ib_registry_resp_plain_http(&r));
	assert_false(ib_registry_resp_retryable(&r));
	snprintf(r.curl_err, sizeof(r.curl_err), "OpenSSL SSL_connect: Connection reset by peer");
	assert_false(ib_registry_resp_plain_http(&r));
	assert_true(ib_registry_resp_retryable(&r));
	ib_registry_resp_free(&r);
}

/* Mutated registries.conf files load or fail with FILE:LINE, never worse. */
static void test_fuzz_conf(void **state)
{
	(void)state;
	static const char seed[] = "unqualified-search-registries = ['a.io', \"b.io:5000\"]\n"
				   "[[registry]]\n"
				   "prefix = '*.w.test'\n"
				   "blocked = true\n"
				   "[[registry]]\n"
				   "prefix = 'example.com/foo'\n"
				   "location = 'internal:5000/bar'\n"
				   "mirror-by-digest-only = false\n"
				   "[[registry.mirror]]\n"
				   "location = 'm.local/x'\n"
				   "insecure = true\n"
				   "[registries.insecure]\n"
				   "registries = ['old.test']\n";
	static const char dict[] = "[]{}=\"'.,#\n*/:_-0123456789abcdeftruefalse";
	uint64_t x = 0x2545f4914f6cdd1dull;
	cleanup_free char *path = ib_path_join(tmp, "fuzz.conf");
	cleanup_free char *prefix = xasprintf("%s:", path);
	char buf[sizeof(seed) + 64];
	for (int iter = 0; iter < 3000; iter++) {
		size_t len = sizeof(seed) - 1;
		memcpy(buf, seed, len);
		int nmut = 1 + (int)(iter % 4);
		for (int m = 0; m < nmut; m++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t pos = x % len;
			char c = dict[(x >> 32) % (sizeof(dict) - 1)];
			if ((x >> 20) % 3 == 0 && len + 1 < sizeof(buf)) {
				memmove(buf + pos + 1, buf + pos, len - pos);
				buf[pos] = c;
				len++;
			} else if ((x >> 20) % 3 == 1 && len > 1) {
				memmove(buf + pos, buf + pos + 1, len - pos - 1);
				len--;
			} else {
				buf[pos] = c;
			}
		}
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(ib_write_all(fd, buf, len, NULL), 0);
		close(fd);
		ib_regconf *c = NULL;
		ib_error *err = NULL;
		int r = ib_regconf_load_from(&c, path, NULL, NULL, &err);
		if (r == 0) {
			ib_regconf_endpoint *e = NULL;
			size_t n = 0;
			if (ib_regconf_endpoints(c, "example.com", "foo/app", true, true, &e, &n,
						 NULL) == 0)
				ib_regconf_endpoints_free(e, n);
			(void)ib_regconf_find(c, "x.w.test/a");
			(void)ib_regconf_insecure_name(c, "m.local");
			ib_regconf_free(c);
			continue;
		}
		assert_int_equal(r, IB_EINVALID);
		if (strncmp(ib_error_msg(err), prefix, strlen(prefix)) != 0)
			fail_msg("error without FILE:LINE: %s", ib_error_msg(err));
		ib_error_free(&err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_prefix_matching, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_endpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dropins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v1_and_system_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_env, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_certs_d, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_mirrors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_blocked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_plain_http_text, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fuzz_conf, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
