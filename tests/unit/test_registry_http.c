/* The registry client against an in-process fake registry (testutil.h):
 * retries (5xx, 429 + Retry-After, connection resets), authentication
 * (Basic, bearer tokens, insufficient_scope renewal), redirects that must
 * not carry credentials, download resume with Range, and the upload and
 * manifest primitives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "registry_internal.h"
#include "testutil.h"
#include "util.h"

#define MANIFEST "{\"schemaVersion\":2}"
#define REPO "lib/app"

/* ---- a scripted server: answers in order, then the last one again ---- */

typedef struct step {
	int status;
	const char *header; /* one extra header line or NULL */
	const char *body;
	long drop_after;
	bool hang_up;
} step;

typedef struct script {
	const step *steps;
	size_t n, next;
} script;

static void scripted(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	script *sc = payload;
	if (!strcmp(req->target, "/v2/")) {
		resp->status = 200;
		return;
	}
	const step *s = &sc->steps[sc->next < sc->n ? sc->next++ : sc->n - 1];
	resp->status = s->status;
	if (s->header)
		tu_http_add_header(resp, "%s", s->header);
	if (s->body)
		tu_http_set_body(resp, s->body, (size_t)-1);
	resp->drop_after = s->drop_after ? s->drop_after : -1;
	resp->hang_up = s->hang_up;
}

static ib_registry_session *open_session(tu_http *srv, const ib_registry_options *o,
					 const ib_credentials *creds, const char *scope)
{
	ib_registry_session *s = NULL;
	ib_error *err = NULL;
	int r =
	    ib_registry_session_open(&s, tu_http_host(srv), REPO,
				     scope ? scope : "repository:" REPO ":pull", creds, o, &err);
	if (r < 0)
		fail_msg("session: %s", ib_error_msg(err));
	return s;
}

static int get_manifest(ib_registry_session *s, ib_error **err)
{
	char *body = NULL;
	size_t len = 0;
	int r = ib_registry_manifest_get(s, "latest", &body, &len, NULL, NULL, err);
	if (r == 0) {
		assert_int_equal(len, strlen(MANIFEST));
		assert_memory_equal(body, MANIFEST, len);
	}
	free(body);
	return r;
}

/* ---- retries ---- */

static void test_retries_5xx_then_succeeds(void **state)
{
	(void)state;
	const step steps[] = {{503, "Retry-After: 0", NULL, 0, false},
			      {502, "Retry-After: 0", NULL, 0, false},
			      {200, NULL, MANIFEST, 0, false}};
	script sc = {steps, 3, 0};
	tu_http *srv = tu_http_start(scripted, &sc);
	ib_registry_session *s = open_session(srv, NULL, NULL, NULL);
	ib_error *err = NULL;
	assert_int_equal(get_manifest(s, &err), 0);
	assert_int_equal(sc.next, 3);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_retry_after_is_honoured_on_429(void **state)
{
	(void)state;
	const step steps[] = {{429, "Retry-After: 1", NULL, 0, false},
			      {200, NULL, MANIFEST, 0, false}};
	script sc = {steps, 2, 0};
	tu_http *srv = tu_http_start(scripted, &sc);
	ib_registry_session *s = open_session(srv, NULL, NULL, NULL);
	ib_error *err = NULL;
	double t0 = tu_now();
	assert_int_equal(get_manifest(s, &err), 0);
	assert_true(tu_now() - t0 >= 0.95);
	assert_int_equal(sc.next, 2);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_gives_up_after_max_retries_with_the_status(void **state)
{
	(void)state;
	const step steps[] = {
	    {503, "Retry-After: 0", "{\"errors\":[{\"code\":\"UNAVAILABLE\"}]}", 0, false}};
	script sc = {steps, 1, 0};
	tu_http *srv = tu_http_start(scripted, &sc);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = 2;
	ib_registry_session *s = open_session(srv, &o, NULL, NULL);
	size_t before = tu_http_count(srv);
	ib_error *err = NULL;
	assert_true(get_manifest(s, &err) < 0);
	assert_int_equal(tu_http_count(srv) - before, 3);
	assert_non_null(strstr(ib_error_msg(err), "GET /v2/" REPO "/manifests/latest: 503"));
	assert_non_null(strstr(ib_error_msg(err), "UNAVAILABLE"));
	ib_error_free(&err);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_no_retries_when_max_retries_is_negative(void **state)
{
	(void)state;
	const step steps[] = {{503, "Retry-After: 0", NULL, 0, false}};
	script sc = {steps, 1, 0};
	tu_http *srv = tu_http_start(scripted, &sc);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_registry_session *s = open_session(srv, &o, NULL, NULL);
	size_t before = tu_http_count(srv);
	ib_error *err = NULL;
	assert_true(get_manifest(s, &err) < 0);
	assert_int_equal(tu_http_count(srv) - before, 1);
	ib_error_free(&err);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_connection_reset_is_retried(void **state)
{
	(void)state;
	const step steps[] = {{200, NULL, NULL, 0, true},
			      {200, NULL, MANIFEST, 5, false},
			      {200, NULL, MANIFEST, 0, false}};
	script sc = {steps, 3, 0};
	tu_http *srv = tu_http_start(scripted, &sc);
	ib_registry_session *s = open_session(srv, NULL, NULL, NULL);
	ib_error *err = NULL;
	assert_int_equal(get_manifest(s, &err), 0);
	assert_int_equal(sc.next, 3);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

/* ---- authentication ---- */

typedef struct authreg {
	const char *basic;    /* expected "Basic ..." value, or NULL for bearer */
	char realm[128];      /* token realm URL */
	int token_requests;   /* how many tokens were handed out */
	char last_scope[256]; /* scope of the last token request */
	bool token_had_basic; /* the token request carried credentials */
} authreg;

static bool has_scope(const char *query, const char *want)
{
	/* the client percent-encodes scope values */
	cleanup_free char *esc = NULL;
	ib_buf b;
	ib_buf_init(&b, 0);
	for (const char *p = want; *p; p++) {
		if (*p == ':')
			ib_buf_appendf(&b, "%%3A");
		else if (*p == ',')
			ib_buf_appendf(&b, "%%2C");
		else if (*p == '/')
			ib_buf_appendf(&b, "%%2F");
		else
			ib_buf_appendf(&b, "%c", *p);
	}
	esc = ib_buf_steal(&b, NULL);
	return strstr(query, esc) != NULL;
}

static void auth_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	authreg *a = payload;
	cleanup_free char *auth = tu_http_header(req, "Authorization");
	if (!strncmp(req->target, "/token?", 7)) {
		a->token_requests++;
		a->token_had_basic = auth && !strncmp(auth, "Basic ", 6);
		snprintf(a->last_scope, sizeof(a->last_scope), "%s", req->target + 7);
		bool push = has_scope(req->target, "repository:" REPO ":pull,push");
		cleanup_free char *body = xasprintf("{\"token\":\"%s\",\"expires_in\":300}",
						    push ? "tok-push" : "tok-pull");
		tu_http_set_body(resp, body, (size_t)-1);
		return;
	}
	if (a->basic) {
		if (!auth || strcmp(auth, a->basic) != 0) {
			resp->status = 401;
			tu_http_add_header(resp, "WWW-Authenticate: Basic realm=\"fake\"");
			return;
		}
	} else {
		bool is_put = !strcmp(req->method, "PUT");
		bool ok = auth && (!strcmp(auth, "Bearer tok-push") ||
				   (!is_put && !strcmp(auth, "Bearer tok-pull")));
		if (!ok) {
			resp->status = 401;
			tu_http_add_header(
			    resp, "WWW-Authenticate: Bearer realm=\"%s\",service=\"fake\"%s",
			    a->realm,
			    is_put && auth ? ",scope=\"repository:" REPO
					     ":pull,push\",error=\"insufficient_scope\""
					   : "");
			return;
		}
	}
	if (!strcmp(req->target, "/v2/"))
		return;
	if (!strcmp(req->method, "PUT")) {
		resp->status = 201;
		char d[IB_DIGEST_BUFLEN];
		ib_digest_buffer(d, req->body, req->body_len);
		tu_http_add_header(resp, "Docker-Content-Digest: %s", d);
		return;
	}
	tu_http_set_body(resp, MANIFEST, (size_t)-1);
}

static void test_basic_auth_after_401(void **state)
{
	(void)state;
	authreg a = {0};
	cleanup_free char *b64 = ib_base64_encode("alice:wonderland", 16);
	cleanup_free char *expect = xasprintf("Basic %s", b64);
	a.basic = expect;
	tu_http *srv = tu_http_start(auth_handler, &a);
	ib_credentials creds = {.username = "alice", .password = "wonderland"};
	ib_registry_session *s = open_session(srv, NULL, &creds, NULL);
	ib_error *err = NULL;
	assert_int_equal(get_manifest(s, &err), 0);
	ib_registry_session_free(s);

	/* a wrong password is refused with IB_EAUTH, never retried forever */
	ib_credentials bad = {.username = "alice", .password = "nope"};
	s = open_session(srv, NULL, &bad, NULL);
	assert_int_equal(get_manifest(s, &err), IB_EAUTH);
	assert_non_null(strstr(ib_error_msg(err), "invalid username or password"));
	assert_null(strstr(ib_error_msg(err), "nope"));
	ib_error_free(&err);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_bearer_token_is_fetched_with_the_scope(void **state)
{
	(void)state;
	authreg a = {0};
	tu_http *srv = tu_http_start(auth_handler, &a);
	snprintf(a.realm, sizeof(a.realm), "http://%s/token", tu_http_host(srv));
	ib_credentials creds = {.username = "alice", .password = "pw"};
	ib_registry_session *s = open_session(srv, NULL, &creds, NULL);
	ib_error *err = NULL;
	assert_int_equal(get_manifest(s, &err), 0);
	assert_int_equal(a.token_requests, 1);
	assert_true(a.token_had_basic);
	assert_non_null(strstr(a.last_scope, "service=fake"));
	assert_true(has_scope(a.last_scope, "repository:" REPO ":pull"));
	/* the token is cached for the next request */
	assert_int_equal(get_manifest(s, &err), 0);
	assert_int_equal(a.token_requests, 1);
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

static void test_insufficient_scope_renews_the_token(void **state)
{
	(void)state;
	authreg a = {0};
	tu_http *srv = tu_http_start(auth_handler, &a);
	snprintf(a.realm, sizeof(a.realm), "http://%s/token", tu_http_host(srv));
	ib_credentials none = {0};
	ib_registry_session *s = open_session(srv, NULL, &none, NULL);
	ib_error *err = NULL;
	assert_int_equal(get_manifest(s, &err), 0);
	assert_int_equal(a.token_requests, 1);
	assert_false(a.token_had_basic);
	char d[IB_DIGEST_BUFLEN];
	int r = ib_registry_manifest_put(s, "v1", IB_MT_OCI_MANIFEST, MANIFEST, strlen(MANIFEST), d,
					 &err);
	if (r < 0)
		fail_msg("put: %s", ib_error_msg(err));
	assert_int_equal(a.token_requests, 2);
	assert_true(has_scope(a.last_scope, "repository:" REPO ":pull,push"));
	ib_registry_session_free(s);
	tu_http_stop(srv);
}

/* ---- redirects ---- */

typedef struct cdn {
	const char *blob;
	bool saw_auth;
	int hits;
} cdn;

static void cdn_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	cdn *c = payload;
	cleanup_free char *auth = tu_http_header(req, "Authorization");
	c->saw_auth |= auth != NULL;
	c->hits++;
	tu_http_set_body(resp, c->blob, (size_t)-1);
}

typedef struct redirector {
	const char *basic;
	char location[256];
	bool blob_had_auth;
} redirector;

static void redirect_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	redirector *rd = payload;
	cleanup_free char *auth = tu_http_header(req, "Authorization");
	if (!auth || strcmp(auth, rd->basic) != 0) {
		resp->status = 401;
		tu_http_add_header(resp, "WWW-Authenticate: Basic realm=\"fake\"");
		return;
	}
	if (strstr(req->target, "/blobs/")) {
		rd->blob_had_auth = true;
		resp->status = 307;
		tu_http_add_header(resp, "Location: %s", rd->location);
	}
}

static void test_redirect_to_another_host_carries_no_credentials(void **state)
{
	(void)state;
	const char *blob = "layer bytes served by a CDN";
	char digest[IB_DIGEST_BUFLEN];
	ib_digest_buffer(digest, blob, strlen(blob));
	cdn c = {blob, false, 0};
	tu_http *other = tu_http_start(cdn_handler, &c);
	cleanup_free char *b64 = ib_base64_encode("alice:secret", 12);
	cleanup_free char *basic = xasprintf("Basic %s", b64);
	redirector rd = {.basic = basic};
	snprintf(rd.location, sizeof(rd.location), "http://%s/cdn/blob?sig=1", tu_http_host(other));
	tu_http *srv = tu_http_start(redirect_handler, &rd);

	cleanup_free char *root = tu_tmpdir();
	ib_store *st = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_open(&st, root, &err), 0);
	ib_credentials creds = {.username = "alice", .password = "secret"};
	ib_registry_session *s = open_session(srv, NULL, &creds, NULL);
	int r = ib_registry_blob_download(s, s->h, st, digest, (int64_t)strlen(blob), &err);
	if (r < 0)
		fail_msg("download: %s", ib_error_msg(err));
	assert_true(rd.blob_had_auth);
	assert_int_equal(c.hits, 1);
	assert_false(c.saw_auth);
	assert_true(ib_store_blob_exists(st, digest));
	ib_registry_session_free(s);
	ib_store_free(st);
	ib_rm_rf(root, NULL);
	tu_http_stop(srv);
	tu_http_stop(other);
}

/* ---- resume ---- */

typedef struct blobsrv {
	char *blob;
	size_t len;
	int gets;
	long drop_first_after;
	bool ranges;
	char ranges_seen[256];
} blobsrv;

static void blob_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	blobsrv *b = payload;
	if (!strcmp(req->target, "/v2/"))
		return;
	cleanup_free char *range = tu_http_header(req, "Range");
	size_t l = strlen(b->ranges_seen);
	snprintf(b->ranges_seen + l, sizeof(b->ranges_seen) - l, "%s;", range ? range : "-");
	tu_http_set_body(resp, b->blob, b->len);
	resp->ranges = b->ranges;
	if (b->gets++ == 0)
		resp->drop_after = b->drop_first_after;
}

static void download_with_a_drop(bool ranges, const char *expect_ranges)
{
	blobsrv b = {.len = 300000, .drop_first_after = 100000, .ranges = ranges};
	b.blob = xmalloc(b.len);
	for (size_t i = 0; i < b.len; i++)
		b.blob[i] = (char)(i * 7 + i / 251);
	char digest[IB_DIGEST_BUFLEN];
	ib_digest_buffer(digest, b.blob, b.len);
	tu_http *srv = tu_http_start(blob_handler, &b);
	cleanup_free char *root = tu_tmpdir();
	ib_store *st = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_open(&st, root, &err), 0);
	ib_registry_session *s = open_session(srv, NULL, NULL, NULL);
	int r = ib_registry_blob_download(s, s->h, st, digest, (int64_t)b.len, &err);
	if (r < 0)
		fail_msg("download: %s", ib_error_msg(err));
	assert_int_equal(b.gets, 2);
	assert_string_equal(b.ranges_seen, expect_ranges);
	cleanup_free char *log = tu_http_log(srv);
	assert_true((strstr(log, " 206\n") != NULL) == ranges);
	cleanup_free char *got = NULL;
	size_t glen = 0;
	assert_int_equal(ib_store_blob_read(st, digest, b.len, &got, &glen, &err), 0);
	assert_int_equal(glen, b.len);
	ib_registry_session_free(s);
	ib_store_free(st);
	ib_rm_rf(root, NULL);
	tu_http_stop(srv);
	free(b.blob);
}

static void test_download_resumes_with_range_after_a_drop(void **state)
{
	(void)state;
	download_with_a_drop(true, "-;bytes=100000-;");
}

static void test_download_restarts_when_range_is_ignored(void **state)
{
	(void)state;
	download_with_a_drop(false, "-;bytes=100000-;");
}

/* ---- upload ---- */

typedef struct uploadsrv {
	ib_buf got;
	bool mount_ok;
	char log[512];
} uploadsrv;

static void upload_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	uploadsrv *u = payload;
	if (!strcmp(req->target, "/v2/"))
		return;
	size_t l = strlen(u->log);
	snprintf(u->log + l, sizeof(u->log) - l, "%s;", req->method);
	if (!strcmp(req->method, "HEAD")) {
		resp->status = 404;
	} else if (!strcmp(req->method, "POST")) {
		if (strstr(req->target, "mount=") && u->mount_ok) {
			resp->status = 201;
			return;
		}
		resp->status = 202;
		tu_http_add_header(resp, "Location: /v2/" REPO "/blobs/uploads/u1?state=x");
	} else if (!strcmp(req->method, "PATCH")) {
		ib_buf_append(&u->got, req->body, req->body_len);
		resp->status = 202;
		tu_http_add_header(resp, "Location: /v2/" REPO "/blobs/uploads/u1?state=y");
	} else if (!strcmp(req->method, "PUT")) {
		ib_buf_append(&u->got, req->body, req->body_len);
		resp->status = 201;
	}
}

static void test_upload_in_chunks_and_by_mount(void **state)
{
	(void)state;
	uploadsrv u = {0};
	ib_buf_init(&u.got, 0);
	tu_http *srv = tu_http_start(upload_handler, &u);
	cleanup_free char *root = tu_tmpdir();
	ib_store *st = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_open(&st, root, &err), 0);
	const char *blob = "0123456789abcdefghij";
	char digest[IB_DIGEST_BUFLEN];
	assert_int_equal(ib_store_blob_put(st, blob, strlen(blob), digest, &err), 0);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.chunk_size = 8;
	ib_registry_session *s = open_session(srv, &o, NULL, "repository:" REPO ":pull,push");
	int r = ib_registry_blob_upload(s, s->h, st, digest, (int64_t)strlen(blob), NULL, &err);
	if (r < 0)
		fail_msg("upload: %s", ib_error_msg(err));
	assert_string_equal(u.log, "HEAD;POST;PATCH;PATCH;PATCH;PUT;");
	assert_int_equal(u.got.len, strlen(blob));
	assert_memory_equal(u.got.data, blob, strlen(blob));

	u.log[0] = '\0';
	u.mount_ok = true;
	r = ib_registry_blob_upload(s, s->h, st, digest, (int64_t)strlen(blob), "other/repo", &err);
	assert_int_equal(r, 0);
	assert_string_equal(u.log, "HEAD;POST;");
	ib_registry_session_free(s);
	ib_store_free(st);
	ib_rm_rf(root, NULL);
	ib_buf_free(&u.got);
	tu_http_stop(srv);
}

/* ---- pull through the whole stack ---- */

typedef struct content {
	char path[256];
	char *body;
	const char *type;
} content;

typedef struct contentsrv {
	content items[16];
	size_t n;
} contentsrv;

static void content_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	contentsrv *c = payload;
	if (!strcmp(req->target, "/v2/"))
		return;
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(req->target, c->items[i].path) != 0)
			continue;
		tu_http_set_body(resp, c->items[i].body, (size_t)-1);
		if (c->items[i].type)
			tu_http_add_header(resp, "Content-Type: %s", c->items[i].type);
		return;
	}
	resp->status = 404;
	tu_http_set_body(resp, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}", (size_t)-1);
}

/* Serve body at /v2/REPO/KIND/DIGEST (and at /v2/REPO/KIND/alias when
 * given); out gets the digest. */
static void serve(contentsrv *c, const char *kind, const char *alias, const char *type, char *body,
		  char out[IB_DIGEST_BUFLEN])
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, body, strlen(body));
	if (out)
		memcpy(out, d, IB_DIGEST_BUFLEN);
	for (int k = 0; k < (alias ? 2 : 1); k++) {
		content *it = &c->items[c->n++];
		snprintf(it->path, sizeof(it->path), "/v2/" REPO "/%s/%s", kind, k ? alias : d);
		it->body = k ? xstrdup(body) : body;
		it->type = type;
	}
}

/* An image for arch whose config lists n_diff_ids layers (1 is right). */
static void serve_image(contentsrv *c, const char *arch, int n_diff_ids,
			char manifest[IB_DIGEST_BUFLEN], size_t *manifest_len)
{
	char layer[IB_DIGEST_BUFLEN], config[IB_DIGEST_BUFLEN];
	char *lbody = xasprintf("layer for %s", arch);
	serve(c, "blobs", NULL, NULL, lbody, layer);
	char *cbody = xasprintf("{\"architecture\":\"%s\",\"os\":\"linux\",\"rootfs\":{\"type\":"
				"\"layers\",\"diff_ids\":[\"%s\"%s%s%s]}}",
				arch, layer, n_diff_ids > 1 ? ",\"" : "",
				n_diff_ids > 1 ? layer : "", n_diff_ids > 1 ? "\"" : "");
	serve(c, "blobs", NULL, NULL, cbody, config);
	char *mbody =
	    xasprintf("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_MANIFEST
		      "\",\"config\":{\"mediaType\":\"" IB_MT_OCI_CONFIG
		      "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"application/"
		      "vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":%zu}]}",
		      config, strlen(cbody), layer, strlen(lbody));
	*manifest_len = strlen(mbody);
	serve(c, "manifests", NULL, IB_MT_OCI_MANIFEST, mbody, manifest);
}

static void pull_index(int arm_diff_ids, contentsrv *c, char amd[IB_DIGEST_BUFLEN],
		       char arm[IB_DIGEST_BUFLEN], tu_http **srv_out)
{
	size_t amd_len, arm_len;
	serve_image(c, "amd64", 1, amd, &amd_len);
	serve_image(c, "arm64", arm_diff_ids, arm, &arm_len);
	char *index =
	    xasprintf("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_INDEX "\",\"manifests\":["
		      "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
		      "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
		      "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
		      "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}}]}",
		      amd, amd_len, arm, arm_len);
	serve(c, "manifests", "latest", IB_MT_OCI_INDEX, index, NULL);
	*srv_out = tu_http_start(content_handler, c);
}

static void content_free(contentsrv *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->items[i].body);
}

static void test_pull_resolves_the_index_to_the_platform_and_tags(void **state)
{
	(void)state;
	cleanup_free char *root = tu_tmpdir();
	ib_store *st = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_open(&st, root, &err), 0);
	contentsrv c = {0};
	char amd[IB_DIGEST_BUFLEN], arm[IB_DIGEST_BUFLEN];
	tu_http *srv = NULL;
	pull_index(1, &c, amd, arm, &srv);
	cleanup_free char *ref = xasprintf("%s/" REPO, tu_http_host(srv));
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.platform = "linux/arm64";
	ib_descriptor d = {0};
	int r = ib_registry_pull(st, ref, &o, &d, &err);
	if (r < 0)
		fail_msg("pull: %s", ib_error_msg(err));
	assert_string_equal(d.digest, arm);
	assert_string_equal(d.platform.architecture, "arm64");
	ib_descriptor_clear(&d);
	ib_store_tag *tags = NULL;
	size_t n = 0;
	assert_int_equal(ib_store_tags(st, &tags, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(tags[0].desc.digest, arm);
	ib_store_tags_free(tags, n);
	/* the amd64 image was not fetched */
	cleanup_free char *log = tu_http_log(srv);
	assert_null(strstr(log, amd));
	ib_store_free(st);
	ib_rm_rf(root, NULL);
	tu_http_stop(srv);
	content_free(&c);
}

static void test_pull_of_an_inconsistent_image_tags_nothing(void **state)
{
	(void)state;
	cleanup_free char *root = tu_tmpdir();
	ib_store *st = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_open(&st, root, &err), 0);
	contentsrv c = {0};
	char amd[IB_DIGEST_BUFLEN], arm[IB_DIGEST_BUFLEN];
	tu_http *srv = NULL;
	pull_index(2, &c, amd, arm, &srv);
	cleanup_free char *ref = xasprintf("%s/" REPO, tu_http_host(srv));
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.platform = "linux/arm64";
	assert_int_equal(ib_registry_pull(st, ref, &o, NULL, &err), IB_EINVALID);
	assert_non_null(strstr(ib_error_msg(err), "lists 2 layers, the manifest 1"));
	ib_error_free(&err);
	ib_store_tag *tags = NULL;
	size_t n = 0;
	assert_int_equal(ib_store_tags(st, &tags, &n, &err), 0);
	assert_int_equal(n, 0);
	ib_store_tags_free(tags, n);
	/* a platform the index lacks names those it has */
	o.platform = "linux/s390x";
	assert_int_equal(ib_registry_pull(st, ref, &o, NULL, &err), IB_ENOTFOUND);
	assert_non_null(strstr(ib_error_msg(err), "available: linux/amd64, linux/arm64"));
	ib_error_free(&err);
	ib_store_free(st);
	ib_rm_rf(root, NULL);
	tu_http_stop(srv);
	content_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_retries_5xx_then_succeeds),
	    cmocka_unit_test(test_retry_after_is_honoured_on_429),
	    cmocka_unit_test(test_gives_up_after_max_retries_with_the_status),
	    cmocka_unit_test(test_no_retries_when_max_retries_is_negative),
	    cmocka_unit_test(test_connection_reset_is_retried),
	    cmocka_unit_test(test_basic_auth_after_401),
	    cmocka_unit_test(test_bearer_token_is_fetched_with_the_scope),
	    cmocka_unit_test(test_insufficient_scope_renews_the_token),
	    cmocka_unit_test(test_redirect_to_another_host_carries_no_credentials),
	    cmocka_unit_test(test_download_resumes_with_range_after_a_drop),
	    cmocka_unit_test(test_download_restarts_when_range_is_ignored),
	    cmocka_unit_test(test_upload_in_chunks_and_by_mount),
	    cmocka_unit_test(test_pull_resolves_the_index_to_the_platform_and_tags),
	    cmocka_unit_test(test_pull_of_an_inconsistent_image_tags_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
