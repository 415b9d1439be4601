/* Unit tests for auth.c: auth file lookup order, reading and writing,
 * credential helpers, base64, WWW-Authenticate parsing, scopes and token
 * responses.  No network; everything happens in a temp directory. */
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
#include <jansson.h>

#include "auth.h"
#include "util.h"

static char tmpdir[] = "/tmp/ib-test-auth-XXXXXX";

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *tpath(const char *name)
{
	return ib_path_join(tmpdir, name);
}

static void clear_env(void)
{
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("DOCKER_CONFIG");
	setenv("HOME", tmpdir, 1);
}

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ib_rm_rf(tmpdir, NULL);
	return 0;
}

/* ---- base64 ---- */

static void test_base64_encodes_rfc4648_vectors(void **state)
{
	(void)state;
	static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "user:pass"};
	static const char *out[] = {"",		"Zg==",	    "Zm8=",	"Zm9v",
				    "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "dXNlcjpwYXNz"};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *e = ib_base64_encode(in[i], strlen(in[i]));
		assert_string_equal(e, out[i]);
		free(e);
	}
}

static void test_base64_decode_round_trips_and_accepts_missing_padding(void **state)
{
	(void)state;
	unsigned char *d = NULL;
	size_t n = 0;
	assert_int_equal(ib_base64_decode("Zm9vYmE=", &d, &n, NULL), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(d, "fooba", 5);
	free(d);
	assert_int_equal(ib_base64_decode("Zm9vYmE", &d, &n, NULL), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(d, "fooba", 5);
	free(d);
	unsigned char bin[256];
	for (int i = 0; i < 256; i++)
		bin[i] = (unsigned char)i;
	char *e = ib_base64_encode(bin, sizeof(bin));
	assert_int_equal(ib_base64_decode(e, &d, &n, NULL), 0);
	assert_int_equal(n, 256);
	assert_memory_equal(d, bin, 256);
	free(d);
	free(e);
}

static void test_base64_decode_rejects_junk(void **state)
{
	(void)state;
	unsigned char *d = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_base64_decode("Zm9v!", &d, NULL, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_base64_decode("Z", &d, NULL, &err), IB_EINVALID);
	ib_error_free(&err);
}

/* ---- file locations ---- */

static void test_candidates_follow_spec_order(void **state)
{
	(void)state;
	clear_env();
	setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
	setenv("DOCKER_CONFIG", "/dc", 1);
	char **v = ib_auth_file_candidates(NULL);
	assert_int_equal(ib_strv_len(v), 2);
	assert_string_equal(v[0], "/run/user/7/containers/auth.json");
	assert_string_equal(v[1], "/dc/config.json");
	ib_strv_free(v);

	unsetenv("DOCKER_CONFIG");
	v = ib_auth_file_candidates(NULL);
	assert_int_equal(ib_strv_len(v), 2);
	cleanup_free char *home_cfg = ib_path_join(tmpdir, ".docker/config.json");
	assert_string_equal(v[1], home_cfg);
	ib_strv_free(v);

	unsetenv("XDG_RUNTIME_DIR");
	v = ib_auth_file_candidates(NULL);
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], home_cfg);
	ib_strv_free(v);
	clear_env();
}

static void test_candidates_user_named_file_is_the_only_one(void **state)
{
	(void)state;
	clear_env();
	setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
	setenv("REGISTRY_AUTH_FILE", "/env/auth.json", 1);
	char **v = ib_auth_file_candidates(NULL);
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], "/env/auth.json");
	ib_strv_free(v);
	v = ib_auth_file_candidates("/flag/auth.json");
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], "/flag/auth.json");
	ib_strv_free(v);
	clear_env();
}

static void test_login_files_choice(void **state)
{
	(void)state;
	clear_env();
	char **v = ib_auth_login_files("/flag.json");
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], "/flag.json");
	ib_strv_free(v);
	setenv("REGISTRY_AUTH_FILE", "/env.json", 1);
	v = ib_auth_login_files(NULL);
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], "/env.json");
	ib_strv_free(v);
	unsetenv("REGISTRY_AUTH_FILE");
	/* docker's file always; podman's runtime file only when in use */
	cleanup_free char *xdg = tpath("lf-xdg");
	cleanup_free char *cdir = tpath("lf-xdg/containers");
	cleanup_free char *aj = tpath("lf-xdg/containers/auth.json");
	cleanup_free char *dock = ib_path_join(tmpdir, ".docker/config.json");
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	v = ib_auth_login_files(NULL);
	assert_int_equal(ib_strv_len(v), 1);
	assert_string_equal(v[0], dock);
	ib_strv_free(v);
	assert_int_equal(ib_mkdir_p(cdir, 0700, NULL), 0);
	write_text(aj, "{}");
	v = ib_auth_login_files(NULL);
	assert_int_equal(ib_strv_len(v), 2);
	assert_string_equal(v[0], dock);
	assert_string_equal(v[1], aj);
	ib_strv_free(v);
	setenv("DOCKER_CONFIG", "/dc", 1);
	v = ib_auth_login_files(NULL);
	assert_string_equal(v[0], "/dc/config.json");
	ib_strv_free(v);
	ib_rm_rf(xdg, NULL);
	clear_env();
}

static void test_normalize_host(void **state)
{
	(void)state;
	static const char *in[] = {"https://index.docker.io/v1/", "registry-1.docker.io",
				   "http://LocalHost:5000/", "quay.io", "docker.io"};
	static const char *out[] = {"docker.io", "docker.io", "localhost:5000", "quay.io",
				    "docker.io"};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *h = ib_auth_normalize_host(in[i]);
		assert_string_equal(h, out[i]);
		free(h);
	}
}

/* ---- lookup ---- */

static void test_lookup_first_file_with_the_host_wins(void **state)
{
	(void)state;
	clear_env();
	cleanup_free char *xdg = tpath("xdg");
	cleanup_free char *cdir = tpath("xdg/containers");
	cleanup_free char *dock = tpath("dock");
	assert_int_equal(ib_mkdir_p(cdir, 0700, NULL), 0);
	assert_int_equal(ib_mkdir_p(dock, 0700, NULL), 0);
	cleanup_free char *a = tpath("xdg/containers/auth.json");
	cleanup_free char *b = tpath("dock/config.json");
	/* other host only in the first file; our host in both */
	write_text(a, "{\"auths\":{\"other:1\":{\"auth\":\"eDp5\"},"
		      "\"reg.example:5000\":{\"auth\":\"Zmlyc3Q6cHcx\"}}}");
	write_text(b,
		   "{\"auths\":{\"reg.example:5000\":{\"auth\":\"c2Vjb25kOnB3Mg==\"},"
		   "\"https://index.docker.io/v1/\":{\"username\":\"hub\",\"password\":\"h:p\"}}}");
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	setenv("DOCKER_CONFIG", dock, 1);
	ib_credentials c = {0};
	assert_int_equal(ib_auth_lookup(NULL, "reg.example:5000", &c, NULL), 0);
	assert_string_equal(c.username, "first");
	assert_string_equal(c.password, "pw1");
	ib_credentials_clear(&c);
	/* only the docker config knows docker.io (legacy key, username/password form) */
	assert_int_equal(ib_auth_lookup(NULL, "docker.io", &c, NULL), 0);
	assert_string_equal(c.username, "hub");
	assert_string_equal(c.password, "h:p");
	ib_credentials_clear(&c);
	/* nobody knows this one */
	assert_int_equal(ib_auth_lookup(NULL, "nowhere:1", &c, NULL), 0);
	assert_null(c.username);
	clear_env();
}

static void test_lookup_missing_file_is_no_credentials(void **state)
{
	(void)state;
	clear_env();
	ib_credentials c = {0};
	cleanup_free char *p = tpath("does-not-exist.json");
	assert_int_equal(ib_auth_lookup(p, "x:1", &c, NULL), 0);
	assert_null(c.username);
}

static void test_lookup_malformed_file_is_an_error_naming_it(void **state)
{
	(void)state;
	cleanup_free char *p = tpath("bad.json");
	write_text(p, "{\"auths\": {");
	ib_credentials c = {0};
	ib_error *err = NULL;
	assert_int_equal(ib_auth_lookup(p, "x:1", &c, &err), IB_EINVALID);
	assert_non_null(strstr(ib_error_msg(err), "bad.json"));
	ib_error_free(&err);
	write_text(p, "{\"auths\": {\"x:1\": {\"auth\": \"bm9jb2xvbg==\"}}}");
	assert_true(ib_auth_lookup(p, "x:1", &c, &err) < 0); /* "nocolon" */
	assert_non_null(strstr(ib_error_msg(err), "user:password"));
	ib_error_free(&err);
}

/* ---- save / remove ---- */

static void test_save_writes_0600_and_keeps_other_entries(void **state)
{
	(void)state;
	cleanup_free char *p = tpath("sub/dir/auth.json");
	cleanup_free char *dir = tpath("sub");
	ib_rm_rf(dir, NULL);
	/* new file in a new directory */
	assert_int_equal(ib_auth_save(p, "a.example", "alice", "s3cret", NULL), 0);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* add unrelated content, then save another host and replace the first */
	write_text(p, "{\"auths\":{\"https://a.example/\":{\"auth\":\"b2xkOm9sZA==\"},"
		      "\"b.example\":{\"auth\":\"Ym9iOnB3\"}},\"HttpHeaders\":{\"X\":\"1\"}}");
	chmod(p, 0644);
	assert_int_equal(ib_auth_save(p, "a.example", "alice", "n3w", NULL), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	json_t *j = json_load_file(p, 0, NULL);
	assert_non_null(j);
	json_t *auths = json_object_get(j, "auths");
	assert_int_equal(json_object_size(auths), 2); /* the https:// alias was replaced */
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(auths, "a.example"), "auth")),
	    "YWxpY2U6bjN3");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(auths, "b.example"), "auth")),
	    "Ym9iOnB3");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "HttpHeaders"), "X")), "1");
	json_decref(j);
	ib_credentials c = {0};
	assert_int_equal(ib_auth_lookup(p, "a.example", &c, NULL), 0);
	assert_string_equal(c.username, "alice");
	assert_string_equal(c.password, "n3w");
	ib_credentials_clear(&c);
	/* no temp file left behind */
	cleanup_free char *d2 = tpath("sub/dir");
	DIR *d = opendir(d2);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	assert_int_equal(n, 1);
}

static void test_save_uses_legacy_key_for_docker_hub_in_docker_config(void **state)
{
	(void)state;
	cleanup_free char *p = tpath("hub/config.json");
	assert_int_equal(ib_auth_save(p, "docker.io", "u", "p", NULL), 0);
	json_t *j = json_load_file(p, 0, NULL);
	assert_non_null(
	    json_object_get(json_object_get(j, "auths"), "https://index.docker.io/v1/"));
	json_decref(j);
}

static void test_save_refuses_to_clobber_a_malformed_file(void **state)
{
	(void)state;
	cleanup_free char *p = tpath("clobber.json");
	write_text(p, "not json");
	ib_error *err = NULL;
	assert_int_equal(ib_auth_save(p, "a", "u", "p", &err), IB_EINVALID);
	ib_error_free(&err);
	cleanup_free char *buf = NULL;
	assert_int_equal(ib_read_file(p, 1024, &buf, NULL, NULL), 0);
	assert_string_equal(buf, "not json");
}

static void test_remove_drops_only_that_host(void **state)
{
	(void)state;
	cleanup_free char *p = tpath("rm.json");
	write_text(
	    p, "{\"auths\":{\"a.example\":{\"auth\":\"eDp5\"},\"b.example\":{\"auth\":\"eDp5\"}}}");
	assert_int_equal(ib_auth_remove(p, "https://a.example", NULL), 0);
	json_t *j = json_load_file(p, 0, NULL);
	json_t *auths = json_object_get(j, "auths");
	assert_int_equal(json_object_size(auths), 1);
	assert_non_null(json_object_get(auths, "b.example"));
	json_decref(j);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	ib_error *err = NULL;
	assert_int_equal(ib_auth_remove(p, "a.example", &err), IB_ENOTFOUND);
	assert_non_null(strstr(ib_error_msg(err), "not logged in"));
	ib_error_free(&err);
}

/* ---- credential helpers ---- */

static char *saved_path;

static void install_helper(void)
{
	cleanup_free char *bin = tpath("bin");
	ib_mkdir_p(bin, 0755, NULL);
	cleanup_free char *script = tpath("bin/docker-credential-test");
	/* Echo the host it was asked about in the secret; refuse "unknown.example". */
	write_text(script,
		   "#!/bin/sh\n"
		   "[ \"$1\" = get ] || exit 3\n"
		   "read host\n"
		   "if [ \"$host\" = unknown.example ]; then\n"
		   "  echo 'credentials not found in native keychain'; exit 1\n"
		   "fi\n"
		   "if [ \"$host\" = broken.example ]; then echo 'helper exploded'; exit 2; fi\n"
		   "printf '{\"ServerURL\":\"%s\",\"Username\":\"helper-user\","
		   "\"Secret\":\"secret-for-%s\"}\\n' \"$host\" \"$host\"\n");
	chmod(script, 0755);
	const char *old = getenv("PATH");
	saved_path = xstrdup(old ? old : "/usr/bin:/bin");
	cleanup_free char *np = xasprintf("%s:%s", bin, saved_path);
	setenv("PATH", np, 1);
}

static void remove_helper(void)
{
	setenv("PATH", saved_path, 1);
	free(saved_path);
	saved_path = NULL;
}

static void test_helper_gets_host_on_stdin(void **state)
{
	(void)state;
	install_helper();
	ib_credentials c = {0};
	assert_int_equal(ib_auth_helper_get("test", "reg.example:5000", &c, NULL), 0);
	assert_string_equal(c.username, "helper-user");
	assert_string_equal(c.password, "secret-for-reg.example:5000");
	ib_credentials_clear(&c);
	assert_int_equal(ib_auth_helper_get("test", "unknown.example", &c, NULL), 0);
	assert_null(c.username);
	ib_error *err = NULL;
	assert_true(ib_auth_helper_get("test", "broken.example", &c, &err) < 0);
	assert_non_null(strstr(ib_error_msg(err), "helper exploded"));
	ib_error_free(&err);
	assert_true(ib_auth_helper_get("does-not-exist-xyz", "a", &c, &err) < 0);
	ib_error_free(&err);
	assert_int_equal(ib_auth_helper_get("../evil", "a", &c, &err), IB_EINVALID);
	ib_error_free(&err);
	remove_helper();
}

static void test_cred_helpers_beat_auths_and_creds_store_is_the_fallback(void **state)
{
	(void)state;
	install_helper();
	cleanup_free char *p = tpath("helpers.json");
	write_text(p, "{\"auths\":{\"h.example\":{\"auth\":\"ZmlsZTpwdw==\"},"
		      "\"f.example\":{\"auth\":\"ZmlsZTpwdw==\"}},"
		      "\"credHelpers\":{\"h.example\":\"test\"},\"credsStore\":\"test\"}");
	ib_credentials c = {0};
	assert_int_equal(ib_auth_lookup(p, "h.example", &c, NULL), 0);
	assert_string_equal(c.password, "secret-for-h.example");
	ib_credentials_clear(&c);
	assert_int_equal(ib_auth_lookup(p, "f.example", &c, NULL), 0);
	assert_string_equal(c.username, "file");
	ib_credentials_clear(&c);
	assert_int_equal(ib_auth_lookup(p, "s.example", &c, NULL), 0);
	assert_string_equal(c.password, "secret-for-s.example");
	ib_credentials_clear(&c);
	remove_helper();
}

/* A helper that keeps what it is given in files under $IB_TEST_CRED_DIR,
 * one per server URL, and logs each verb and URL to $IB_TEST_CRED_DIR/log. */
static void install_store_helper(const char *dir)
{
	cleanup_free char *bin = tpath("bin");
	ib_mkdir_p(bin, 0755, NULL);
	ib_mkdir_p(dir, 0700, NULL);
	cleanup_free char *script = tpath("bin/docker-credential-filetest");
	write_text(
	    script,
	    "#!/bin/sh\n"
	    "d=$IB_TEST_CRED_DIR\n"
	    "key() { printf %s \"$1\" | od -An -tx1 | tr -d ' \\n'; }\n"
	    "case \"$1\" in\n"
	    "store) cat >\"$d/in\"\n"
	    "  url=$(sed -n 's/.*\"ServerURL\":\"\\([^\"]*\\)\".*/\\1/p' \"$d/in\")\n"
	    "  echo \"store $url\" >>\"$d/log\"; mv \"$d/in\" \"$d/$(key \"$url\")\" ;;\n"
	    "get|erase) read -r url; echo \"$1 $url\" >>\"$d/log\"; f=$d/$(key \"$url\")\n"
	    "  [ -f \"$f\" ] || { echo 'credentials not found in native keychain'; exit 1; }\n"
	    "  if [ \"$1\" = get ]; then cat \"$f\"; else rm \"$f\"; fi ;;\n"
	    "*) exit 3 ;;\n"
	    "esac\n");
	chmod(script, 0755);
	setenv("IB_TEST_CRED_DIR", dir, 1);
	const char *old = getenv("PATH");
	saved_path = xstrdup(old ? old : "/usr/bin:/bin");
	cleanup_free char *np = xasprintf("%s:%s", bin, saved_path);
	setenv("PATH", np, 1);
}

static void test_helper_store_get_erase_round_trip(void **state)
{
	(void)state;
	cleanup_free char *dir = tpath("credstore");
	install_store_helper(dir);
	ib_credentials c = {0};
	assert_int_equal(ib_auth_helper_store("filetest", "reg.example:5000", "bob", "p\"w", NULL),
			 0);
	assert_int_equal(ib_auth_helper_get("filetest", "reg.example:5000", &c, NULL), 0);
	assert_string_equal(c.username, "bob");
	assert_string_equal(c.password, "p\"w");
	ib_credentials_clear(&c);
	/* Docker Hub goes by docker's legacy URL */
	assert_int_equal(ib_auth_helper_store("filetest", "docker.io", "hub", "x", NULL), 0);
	cleanup_free char *logf = ib_path_join(dir, "log");
	cleanup_free char *log = NULL;
	assert_int_equal(ib_read_file(logf, 4096, &log, NULL, NULL), 0);
	assert_non_null(strstr(log, "store https://index.docker.io/v1/\n"));
	assert_int_equal(ib_auth_helper_erase("filetest", "reg.example:5000", NULL), 0);
	assert_int_equal(ib_auth_helper_get("filetest", "reg.example:5000", &c, NULL), 0);
	assert_null(c.username);
	ib_error *err = NULL;
	assert_int_equal(ib_auth_helper_erase("filetest", "reg.example:5000", &err), IB_ENOTFOUND);
	ib_error_free(&err);
	remove_helper();
	ib_rm_rf(dir, NULL);
}

static void test_login_store_uses_the_configured_helper_and_logout_keeps_mappings(void **state)
{
	(void)state;
	clear_env();
	cleanup_free char *dir = tpath("credstore2");
	install_store_helper(dir);
	cleanup_free char *dock = tpath("dc-helper");
	ib_mkdir_p(dock, 0700, NULL);
	setenv("DOCKER_CONFIG", dock, 1);
	cleanup_free char *cfg = tpath("dc-helper/config.json");
	/* a stale plain entry for the host, another host's entry, a mapping */
	write_text(cfg, "{\"auths\":{\"h.example\":{\"auth\":\"b2xkOm9sZA==\"},"
			"\"o.example\":{\"auth\":\"eDp5\"}},"
			"\"credHelpers\":{\"h.example\":\"filetest\"}}");
	ib_auth_stored st;
	assert_int_equal(ib_auth_login_store(NULL, "h.example", "u", "s3", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.plain_files), 0);
	assert_int_equal(ib_strv_len(st.helpers), 1);
	assert_string_equal(st.helpers[0], "docker-credential-filetest");
	ib_auth_stored_clear(&st);
	cleanup_free char *text = NULL;
	assert_int_equal(ib_read_file(cfg, 4096, &text, NULL, NULL), 0);
	assert_null(strstr(text, "b2xkOm9sZA=="));
	assert_null(strstr(text, "s3"));
	ib_credentials c = {0};
	assert_int_equal(ib_auth_lookup(NULL, "h.example", &c, NULL), 0);
	assert_string_equal(c.username, "u");
	assert_string_equal(c.password, "s3");
	ib_credentials_clear(&c);
	/* another host has no helper: plain text, reported for the warning */
	assert_int_equal(ib_auth_login_store(NULL, "p.example", "u", "pl", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.plain_files), 1);
	assert_string_equal(st.plain_files[0], cfg);
	ib_auth_stored_clear(&st);

	assert_int_equal(ib_auth_logout(NULL, "h.example", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.helpers), 1);
	ib_auth_stored_clear(&st);
	assert_int_equal(ib_auth_lookup(NULL, "h.example", &c, NULL), 0);
	assert_null(c.username);
	json_t *j = json_load_file(cfg, 0, NULL);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "credHelpers"), "h.example")),
	    "filetest");
	assert_non_null(json_object_get(json_object_get(j, "auths"), "o.example"));
	assert_non_null(json_object_get(json_object_get(j, "auths"), "p.example"));
	json_decref(j);
	ib_error *err = NULL;
	assert_int_equal(ib_auth_logout(NULL, "h.example", &st, &err), IB_ENOTFOUND);
	ib_auth_stored_clear(&st);
	assert_non_null(strstr(ib_error_msg(err), "not logged in"));
	ib_error_free(&err);
	remove_helper();
	ib_rm_rf(dir, NULL);
	clear_env();
}

static void test_login_store_writes_docker_and_podman_files(void **state)
{
	(void)state;
	clear_env();
	cleanup_free char *xdg = tpath("both-xdg");
	cleanup_free char *cdir = tpath("both-xdg/containers");
	cleanup_free char *aj = tpath("both-xdg/containers/auth.json");
	cleanup_free char *dock = tpath("both-dc");
	cleanup_free char *cfg = tpath("both-dc/config.json");
	ib_mkdir_p(cdir, 0700, NULL);
	write_text(aj, "{\"auths\":{}}");
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	setenv("DOCKER_CONFIG", dock, 1);
	ib_auth_stored st;
	assert_int_equal(ib_auth_login_store(NULL, "r.example:1", "al", "pw", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.plain_files), 2);
	ib_auth_stored_clear(&st);
	ib_credentials c = {0};
	assert_int_equal(ib_auth_lookup_file(cfg, "r.example:1", &c, NULL), 0);
	assert_string_equal(c.password, "pw");
	ib_credentials_clear(&c);
	assert_int_equal(ib_auth_lookup_file(aj, "r.example:1", &c, NULL), 0);
	assert_string_equal(c.password, "pw");
	ib_credentials_clear(&c);
	assert_int_equal(ib_auth_logout(NULL, "r.example:1", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.plain_files), 2);
	ib_auth_stored_clear(&st);
	assert_int_equal(ib_auth_lookup(NULL, "r.example:1", &c, NULL), 0);
	assert_null(c.username);
	/* --authfile wins: only that file */
	cleanup_free char *flag = tpath("both-flag.json");
	assert_int_equal(ib_auth_login_store(flag, "r.example:1", "al", "pw", &st, NULL), 0);
	assert_int_equal(ib_strv_len(st.plain_files), 1);
	assert_string_equal(st.plain_files[0], flag);
	ib_auth_stored_clear(&st);
	assert_int_equal(ib_auth_lookup_file(cfg, "r.example:1", &c, NULL), 0);
	assert_null(c.username);
	ib_rm_rf(xdg, NULL);
	ib_rm_rf(dock, NULL);
	clear_env();
}

/* ---- WWW-Authenticate ---- */

static void test_challenge_bearer_with_realm_service_scope(void **state)
{
	(void)state;
	ib_auth_challenge *c = NULL;
	size_t n = 0;
	assert_int_equal(ib_auth_parse_challenges("Bearer realm=\"https://auth.docker.io/token\","
						  "service=\"registry.docker.io\","
						  "scope=\"repository:library/alpine:pull\"",
						  &c, &n, NULL),
			 0);
	assert_int_equal(n, 1);
	assert_string_equal(c[0].scheme, "bearer");
	assert_string_equal(c[0].realm, "https://auth.docker.io/token");
	assert_string_equal(c[0].service, "registry.docker.io");
	assert_string_equal(c[0].scope, "repository:library/alpine:pull");
	assert_null(c[0].error);
	ib_auth_challenges_free(c, n);
}

static void test_challenge_basic_and_case_insensitive_names(void **state)
{
	(void)state;
	ib_auth_challenge *c = NULL;
	size_t n = 0;
	assert_int_equal(ib_auth_parse_challenges("BASIC Realm = \"Registry Realm\"", &c, &n, NULL),
			 0);
	assert_int_equal(n, 1);
	assert_string_equal(c[0].scheme, "basic");
	assert_string_equal(c[0].realm, "Registry Realm");
	ib_auth_challenges_free(c, n);
}

static void test_challenge_several_in_one_header(void **state)
{
	(void)state;
	ib_auth_challenge *c = NULL;
	size_t n = 0;
	assert_int_equal(
	    ib_auth_parse_challenges("Basic realm=\"r1\", Bearer realm=\"https://t/x\","
				     "service=svc,error=\"insufficient_scope\", "
				     "Negotiate",
				     &c, &n, NULL),
	    0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0].scheme, "basic");
	assert_string_equal(c[0].realm, "r1");
	assert_string_equal(c[1].scheme, "bearer");
	assert_string_equal(c[1].realm, "https://t/x");
	assert_string_equal(c[1].service, "svc");
	assert_string_equal(c[1].error, "insufficient_scope");
	assert_string_equal(c[2].scheme, "negotiate");
	ib_auth_challenges_free(c, n);
}

static void test_challenge_quoted_string_escapes(void **state)
{
	(void)state;
	ib_auth_challenge *c = NULL;
	size_t n = 0;
	assert_int_equal(
	    ib_auth_parse_challenges("Bearer realm=\"a\\\"b\\\\c, d\",scope=\"x y\"", &c, &n, NULL),
	    0);
	assert_int_equal(n, 1);
	assert_string_equal(c[0].realm, "a\"b\\c, d");
	assert_string_equal(c[0].scope, "x y");
	ib_auth_challenges_free(c, n);
}

static void test_challenge_malformed_is_rejected(void **state)
{
	(void)state;
	ib_auth_challenge *c = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_auth_parse_challenges("Bearer realm=\"unterminated", &c, &n, &err),
			 IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_auth_parse_challenges("", &c, &n, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_auth_parse_challenges("\"quoted\"", &c, &n, &err), IB_EINVALID);
	ib_error_free(&err);
}

/* ---- scopes ---- */

static void test_scope_repository(void **state)
{
	(void)state;
	char *s = ib_auth_scope_repository("team/app", false);
	assert_string_equal(s, "repository:team/app:pull");
	free(s);
	s = ib_auth_scope_repository("team/app", true);
	assert_string_equal(s, "repository:team/app:pull,push");
	free(s);
}

static void test_scope_merge_combines_actions_and_sorts(void **state)
{
	(void)state;
	char *s = ib_auth_scope_merge("repository:b:push", "repository:b:pull repository:a:pull");
	assert_string_equal(s, "repository:a:pull repository:b:pull,push");
	free(s);
	s = ib_auth_scope_merge(NULL, "repository:x:pull");
	assert_string_equal(s, "repository:x:pull");
	free(s);
	s = ib_auth_scope_merge("", NULL);
	assert_string_equal(s, "");
	free(s);
	s = ib_auth_scope_merge("registry:catalog:*", "registry:catalog:*");
	assert_string_equal(s, "registry:catalog:*");
	free(s);
}

static void test_scope_covers(void **state)
{
	(void)state;
	assert_true(ib_auth_scope_covers("repository:a:pull,push", "repository:a:pull"));
	assert_false(ib_auth_scope_covers("repository:a:pull", "repository:a:pull,push"));
	assert_false(ib_auth_scope_covers("repository:a:pull", "repository:b:pull"));
	assert_true(ib_auth_scope_covers("registry:catalog:*", "registry:catalog:*"));
	assert_true(ib_auth_scope_covers("repository:a:*", "repository:a:push"));
	assert_true(ib_auth_scope_covers("repository:a:pull", ""));
}

/* ---- token responses ---- */

static void test_token_response_forms(void **state)
{
	(void)state;
	char *t = NULL;
	int64_t exp = 0;
	const char *a = "{\"token\":\"T1\",\"expires_in\":300}";
	assert_int_equal(ib_auth_parse_token_response(a, strlen(a), &t, &exp, NULL), 0);
	assert_string_equal(t, "T1");
	assert_int_equal(exp, 300);
	free(t);
	const char *b = "{\"access_token\":\"T2\"}";
	assert_int_equal(ib_auth_parse_token_response(b, strlen(b), &t, &exp, NULL), 0);
	assert_string_equal(t, "T2");
	assert_int_equal(exp, 60);
	free(t);
	const char *c = "{\"token\":\"T3\",\"access_token\":\"T4\",\"expires_in\":0}";
	assert_int_equal(ib_auth_parse_token_response(c, strlen(c), &t, &exp, NULL), 0);
	assert_string_equal(t, "T3");
	assert_int_equal(exp, 60);
	free(t);
	ib_error *err = NULL;
	const char *d = "{\"expires_in\":10}";
	assert_int_equal(ib_auth_parse_token_response(d, strlen(d), &t, &exp, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_auth_parse_token_response("[]", 2, &t, &exp, &err), IB_EINVALID);
	ib_error_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64_encodes_rfc4648_vectors),
	    cmocka_unit_test(test_base64_decode_round_trips_and_accepts_missing_padding),
	    cmocka_unit_test(test_base64_decode_rejects_junk),
	    cmocka_unit_test(test_candidates_follow_spec_order),
	    cmocka_unit_test(test_candidates_user_named_file_is_the_only_one),
	    cmocka_unit_test(test_login_files_choice),
	    cmocka_unit_test(test_normalize_host),
	    cmocka_unit_test(test_lookup_first_file_with_the_host_wins),
	    cmocka_unit_test(test_lookup_missing_file_is_no_credentials),
	    cmocka_unit_test(test_lookup_malformed_file_is_an_error_naming_it),
	    cmocka_unit_test(test_save_writes_0600_and_keeps_other_entries),
	    cmocka_unit_test(test_save_uses_legacy_key_for_docker_hub_in_docker_config),
	    cmocka_unit_test(test_save_refuses_to_clobber_a_malformed_file),
	    cmocka_unit_test(test_remove_drops_only_that_host),
	    cmocka_unit_test(test_helper_gets_host_on_stdin),
	    cmocka_unit_test(test_cred_helpers_beat_auths_and_creds_store_is_the_fallback),
	    cmocka_unit_test(test_helper_store_get_erase_round_trip),
	    cmocka_unit_test(test_login_store_uses_the_configured_helper_and_logout_keeps_mappings),
	    cmocka_unit_test(test_login_store_writes_docker_and_podman_files),
	    cmocka_unit_test(test_challenge_bearer_with_realm_service_scope),
	    cmocka_unit_test(test_challenge_basic_and_case_insensitive_names),
	    cmocka_unit_test(test_challenge_several_in_one_header),
	    cmocka_unit_test(test_challenge_quoted_string_escapes),
	    cmocka_unit_test(test_challenge_malformed_is_rejected),
	    cmocka_unit_test(test_scope_repository),
	    cmocka_unit_test(test_scope_merge_combines_actions_and_sorts),
	    cmocka_unit_test(test_scope_covers),
	    cmocka_unit_test(test_token_response_forms),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
