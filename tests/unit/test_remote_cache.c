/* The registry step cache (src/lib/remote_cache.c): option syntax, record
 * and index encoding, the index merge, and the requests a lookup makes
 * (against the in-process fake registry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "error.h"
#include "oci.h"
#include "registry_internal.h"
#include "remote_cache.h"
#include "testutil.h"
#include "util.h"

#define LAYER_MT "application/vnd.oci.image.layer.v1.tar+gzip"

/* A digest made of one repeated hex digit. */
static char *fake_digest(char c)
{
	char hex[65];
	memset(hex, c, 64);
	hex[64] = '\0';
	return xasprintf("sha256:%s", hex);
}

static json_t *entry(char k, char layer)
{
	cleanup_free char *key = fake_digest(k);
	cleanup_free char *d = fake_digest(layer);
	cleanup_free char *diff = fake_digest('f');
	return json_pack("{s:s, s:{s:s, s:s, s:i, s:s}, s:s}", "key", key, "layer", "digest", d,
			 "diff_id", diff, "size", 1234, "mediaType", LAYER_MT, "created_by",
			 "RUN make");
}

static void test_spec_parse(void **state)
{
	(void)state;
	char *ref = NULL;
	int mode = 7;
	ib_error *err = NULL;
	assert_int_equal(ib_rcache_spec_parse("localhost:5000/team/cache", &ref, &mode, &err), 0);
	assert_string_equal(ref, "localhost:5000/team/cache:index");
	assert_int_equal(mode, -1);
	free(ref);
	assert_int_equal(ib_rcache_spec_parse("localhost:5000/c:main,mode=max", &ref, &mode, &err),
			 0);
	assert_string_equal(ref, "localhost:5000/c:main");
	assert_int_equal(mode, 1);
	free(ref);
	assert_int_equal(
	    ib_rcache_spec_parse("type=registry,ref=localhost:5000/c,mode=min", &ref, &mode, &err),
	    0);
	assert_string_equal(ref, "localhost:5000/c:index");
	assert_int_equal(mode, 0);
	free(ref);
	const char *bad[] = {"type=local,dest=/tmp/x",
			     "localhost:5000/c,mode=all",
			     "localhost:5000/c,colour=red",
			     "mode=max",
			     "localhost:5000/c@sha256:"
			     "0123456789012345678901234567890123456789012345678901234567890123",
			     "a.io/x,b.io/y"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_true(ib_rcache_spec_parse(bad[i], &ref, &mode, &err) < 0);
		assert_null(ref);
		ib_error_free(&err);
	}
}

static void test_key_tag(void **state)
{
	(void)state;
	cleanup_free char *key = fake_digest('a');
	cleanup_free char *tag = ib_rcache_key_tag(key);
	assert_int_equal(strlen(tag), 71);
	assert_int_equal(strncmp(tag, "sha256-aaaa", 11), 0);
}

static void test_record_roundtrip(void **state)
{
	(void)state;
	json_t *e = entry('1', '2');
	json_object_set_new(e, "inputs", json_pack("{s:s}", "parent", "x"));
	cleanup_free char *cfg = NULL, *man = NULL;
	size_t clen = 0, mlen = 0;
	char cd[IB_DIGEST_BUFLEN], check[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	assert_int_equal(ib_rcache_record_encode(e, &cfg, &clen, cd, &man, &mlen, &err), 0);
	ib_digest_buffer(check, cfg, clen);
	assert_string_equal(cd, check);
	/* the manifest is an OCI artifact: config = the entry, one layer */
	json_t *m = json_loadb(man, mlen, 0, NULL);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "mediaType")), IB_MT_OCI_MANIFEST);
	assert_string_equal(json_string_value(json_object_get(m, "artifactType")),
			    IB_RCACHE_STEP_TYPE);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(m, "config"), "digest")), cd);
	json_decref(m);
	json_t *c = json_loadb(cfg, clen, 0, NULL);
	assert_true(json_equal(json_object_get(c, "inputs"), json_object_get(e, "inputs")));
	json_decref(c);

	json_t *back = NULL;
	const char *key = json_string_value(json_object_get(e, "key"));
	assert_int_equal(ib_rcache_record_decode(man, mlen, key, &back, &err), 0);
	assert_true(json_equal(json_object_get(back, "layer"), json_object_get(e, "layer")));
	assert_string_equal(json_string_value(json_object_get(back, "created_by")), "RUN make");
	json_decref(back);
	/* a record served under another key's tag is refused */
	cleanup_free char *other = fake_digest('9');
	assert_true(ib_rcache_record_decode(man, mlen, other, &back, &err) < 0);
	assert_null(back);
	ib_error_free(&err);
	/* garbage too */
	assert_true(ib_rcache_record_decode("{\"layers\":[]}", 13, key, &back, &err) < 0);
	ib_error_free(&err);
	json_decref(e);
}

static json_t *with_record(json_t *e, char r)
{
	cleanup_free char *d = fake_digest(r);
	json_object_set_new(e, "record", json_pack("{s:s, s:i}", "digest", d, "size", 700));
	return e;
}

static void test_index_roundtrip(void **state)
{
	(void)state;
	json_t *entries = json_object();
	json_t *e1 = with_record(entry('1', '2'), '3');
	json_t *e2 = with_record(entry('4', '5'), '6');
	cleanup_free char *cfg = fake_digest('c');
	json_object_set_new(e2, "position", json_string("app.lua/final/3"));
	json_object_set_new(e2, "config", json_string(cfg));
	json_object_set_new(entries, json_string_value(json_object_get(e2, "key")), e2);
	json_object_set_new(entries, json_string_value(json_object_get(e1, "key")), e1);
	size_t len = 0;
	cleanup_free char *body = ib_rcache_index_encode(entries, &len);
	json_t *ix = json_loadb(body, len, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(ix, "mediaType")), IB_MT_OCI_INDEX);
	assert_int_equal(json_array_size(json_object_get(ix, "manifests")), 2);
	json_decref(ix);
	json_t *back = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_rcache_index_decode(body, len, &back, &err), 0);
	assert_true(json_equal(back, entries));
	/* order kept: newest first */
	void *it = json_object_iter(back);
	assert_string_equal(json_object_iter_key(it),
			    json_string_value(json_object_get(e2, "key")));
	json_decref(back);
	json_decref(entries);
	/* entries that are not ours are skipped, a non-index refused */
	const char *foreign = "{\"manifests\":[{\"digest\":\"sha256:x\",\"annotations\":{}}]}";
	assert_int_equal(ib_rcache_index_decode(foreign, strlen(foreign), &back, &err), 0);
	assert_int_equal(json_object_size(back), 0);
	json_decref(back);
	assert_true(ib_rcache_index_decode("{}", 2, &back, &err) < 0);
	ib_error_free(&err);
}

static void test_index_merge(void **state)
{
	(void)state;
	json_t *a = json_object(), *b = json_object();
	json_t *e1 = with_record(entry('1', '2'), '3');
	json_t *e2 = with_record(entry('4', '5'), '6');
	json_t *e3 = with_record(entry('7', '8'), '9');
	const char *k1 = json_string_value(json_object_get(e1, "key"));
	const char *k2 = json_string_value(json_object_get(e2, "key"));
	const char *k3 = json_string_value(json_object_get(e3, "key"));
	json_object_set(a, k1, e1);
	json_object_set(a, k2, e2);
	json_object_set(b, k2, e2);
	json_object_set(b, k3, e3);
	json_t *m = ib_rcache_index_merge(a, b);
	assert_int_equal(json_object_size(m), 3);
	void *it = json_object_iter(m);
	assert_string_equal(json_object_iter_key(it), k1);
	assert_non_null(json_object_get(m, k3));
	json_decref(m);
	/* capped, newest kept */
	json_t *big = json_object();
	for (int i = 0; i < IB_RCACHE_INDEX_MAX + 10; i++) {
		cleanup_free char *k = xasprintf("sha256:%064x", i);
		json_object_set(big, k, e3);
	}
	m = ib_rcache_index_merge(a, big);
	assert_int_equal(json_object_size(m), IB_RCACHE_INDEX_MAX);
	assert_non_null(json_object_get(m, k1));
	json_decref(m);
	json_decref(big);
	json_decref(a);
	json_decref(b);
	json_decref(e1);
	json_decref(e2);
	json_decref(e3);
}

/* ---- requests, against the fake registry ---- */

typedef struct fake {
	char *index;
	size_t index_len;
	const char *tags;   /* the tag listing's body, NULL: only "index" */
	const char *record; /* "/v2/c/manifests/sha256-..." served with the body below */
	char *record_body;
	size_t record_len;
} fake;

static void handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	fake *f = payload;
	if (!strcmp(req->target, "/v2/")) {
		resp->status = 200;
	} else if (!strcmp(req->target, "/v2/c/manifests/index")) {
		tu_http_add_header(resp, "Content-Type: %s", IB_MT_OCI_INDEX);
		tu_http_set_body(resp, f->index, f->index_len);
	} else if (!strncmp(req->target, "/v2/c/tags/list", 15)) {
		tu_http_set_body(resp, f->tags ? f->tags : "{\"name\":\"c\",\"tags\":[\"index\"]}",
				 (size_t)-1);
	} else if (f && f->record && !strcmp(req->target, f->record)) {
		tu_http_add_header(resp, "Content-Type: %s", IB_MT_OCI_MANIFEST);
		tu_http_set_body(resp, f->record_body, f->record_len);
	} else {
		resp->status = 404;
	}
}

static size_t count_of(const char *log, const char *what)
{
	size_t n = 0;
	for (const char *p = log; (p = strstr(p, what)); p++)
		n++;
	return n;
}

static void test_lookup_round_trips(void **state)
{
	(void)state;
	json_t *entries = json_object();
	json_t *e1 = with_record(entry('1', '2'), '3');
	const char *k1 = json_string_value(json_object_get(e1, "key"));
	json_object_set(entries, k1, e1);
	fake f = {0};
	f.index = ib_rcache_index_encode(entries, &f.index_len);
	tu_http *h = tu_http_start(handler, &f);
	cleanup_free char *ref = xasprintf("%s/c:index", tu_http_host(h));
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_rcache *rc = NULL;
	ib_error *err = NULL;
	int r = ib_rcache_open(&rc, ref, false, &o, &err);
	if (r < 0)
		fprintf(stderr, "%s\n", ib_error_msg(err));
	assert_int_equal(r, 0);
	size_t after_open = tu_http_count(h);
	json_t *got = NULL;
	/* an indexed key: no request */
	assert_int_equal(ib_rcache_lookup(rc, k1, &got, &err), 0);
	assert_non_null(got);
	assert_true(json_equal(json_object_get(got, "layer"), json_object_get(e1, "layer")));
	json_decref(got);
	assert_int_equal(tu_http_count(h), after_open);
	/* keys the index lacks: one tag listing answers for all of them */
	for (char c = '5'; c <= '8'; c++) {
		cleanup_free char *k = fake_digest(c);
		assert_int_equal(ib_rcache_lookup(rc, k, &got, &err), 0);
		assert_null(got);
	}
	cleanup_free char *log = tu_http_log(h);
	assert_int_equal(count_of(log, "GET /v2/c/tags/list"), 1);
	assert_int_equal(count_of(log, "GET /v2/c/manifests/index"), 1);
	assert_int_equal(count_of(log, "/manifests/sha256-"), 0);
	ib_rcache_free(rc);
	tu_http_stop(h);
	free(f.index);
	json_decref(e1);
	json_decref(entries);
}

/* The key pass's prefetch: every key decided at once (the index, one tag
 * listing, the record the index lacks), then lookups make no request. */
static void test_prefetch_decides_every_key(void **state)
{
	(void)state;
	json_t *entries = json_object();
	json_t *e1 = with_record(entry('1', '2'), '3');
	const char *k1 = json_string_value(json_object_get(e1, "key"));
	json_object_set(entries, k1, e1);
	fake f = {0};
	f.index = ib_rcache_index_encode(entries, &f.index_len);
	/* key 4: a record tagged but not indexed (a writer lost the race) */
	json_t *e4 = entry('4', '5');
	const char *k4 = json_string_value(json_object_get(e4, "key"));
	cleanup_free char *cfg = NULL;
	size_t cfg_len = 0;
	char cfg_digest[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	assert_int_equal(ib_rcache_record_encode(e4, &cfg, &cfg_len, cfg_digest, &f.record_body,
						 &f.record_len, &err),
			 0);
	cleanup_free char *tag4 = ib_rcache_key_tag(k4);
	cleanup_free char *path4 = xasprintf("/v2/c/manifests/%s", tag4);
	cleanup_free char *tags = xasprintf("{\"name\":\"c\",\"tags\":[\"index\",\"%s\"]}", tag4);
	f.record = path4;
	f.tags = tags;
	tu_http *h = tu_http_start(handler, &f);
	cleanup_free char *ref = xasprintf("%s/c:index", tu_http_host(h));
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_rcache *rc = NULL;
	assert_int_equal(ib_rcache_open(&rc, ref, false, &o, &err), 0);
	assert_int_equal(ib_rcache_requests(rc), 1); /* the index */
	cleanup_free char *k6 = fake_digest('6');
	cleanup_free char *k7 = fake_digest('7');
	json_t *keys = json_pack("[s, s, s, s]", k1, k6, k4, k7);
	json_t *missing = NULL;
	assert_int_equal(ib_rcache_prefetch(rc, keys, &missing, &err), 0);
	json_t *want_missing = json_pack("[s, s]", k6, k7);
	assert_true(json_equal(missing, want_missing));
	/* the index, one tag listing, the one record the index lacks */
	assert_int_equal(ib_rcache_requests(rc), 3);
	size_t after = tu_http_count(h);
	size_t i;
	json_t *k;
	json_array_foreach (keys, i, k) {
		json_t *got = NULL;
		assert_int_equal(ib_rcache_lookup(rc, json_string_value(k), &got, &err), 0);
		if (i == 0 || i == 2)
			assert_non_null(got);
		else
			assert_null(got);
		json_decref(got);
	}
	assert_int_equal(tu_http_count(h), after);
	cleanup_free char *log = tu_http_log(h);
	assert_int_equal(count_of(log, "GET /v2/c/tags/list"), 1);
	assert_int_equal(count_of(log, "/manifests/sha256-"), 1);
	ib_rcache_free(rc);
	tu_http_stop(h);
	free(f.index);
	free(f.record_body);
	json_decref(keys);
	json_decref(missing);
	json_decref(want_missing);
	json_decref(e1);
	json_decref(e4);
	json_decref(entries);
}

static void test_open_unreachable(void **state)
{
	(void)state;
	/* a port nobody listens on: an error, quickly, not a hang */
	tu_http *h = tu_http_start(handler, NULL);
	cleanup_free char *ref = xasprintf("%s/c:index", tu_http_host(h));
	tu_http_stop(h);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_rcache *rc = NULL;
	ib_error *err = NULL;
	assert_true(ib_rcache_open(&rc, ref, false, &o, &err) < 0);
	assert_null(rc);
	assert_non_null(err);
	ib_error_free(&err);
}

/* mount: 201 = mounted, 202 = refused (an upload session instead) */
/* No index (a first writer that lost its index, or none yet): the keys
 * the tag listing names are fetched side by side. */
typedef struct unindexed_fake {
	tu_http *h;
	char *paths[3];
	char *bodies[3];
	size_t lens[3];
	char *tags;
	bool side_by_side;
} unindexed_fake;

static void unindexed_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	unindexed_fake *f = payload;
	if (!strcmp(req->target, "/v2/")) {
		resp->status = 200;
		return;
	}
	if (!strncmp(req->target, "/v2/c/tags/list", 15)) {
		tu_http_set_body(resp, f->tags, (size_t)-1);
		return;
	}
	for (int i = 0; i < 3; i++) {
		if (!strcmp(req->target, f->paths[i])) {
			/* another record request is already on its way */
			if (tu_http_waiting(f->h, 2000))
				f->side_by_side = true;
			tu_http_add_header(resp, "Content-Type: %s", IB_MT_OCI_MANIFEST);
			tu_http_set_body(resp, f->bodies[i], f->lens[i]);
			return;
		}
	}
	resp->status = 404;
}

static void test_prefetch_without_index_fetches_records_side_by_side(void **state)
{
	(void)state;
	unindexed_fake f = {0};
	ib_buf tags;
	ib_buf_init(&tags, 0);
	ib_buf_appendf(&tags, "{\"name\":\"c\",\"tags\":[");
	json_t *keys = json_array();
	ib_error *err = NULL;
	for (int i = 0; i < 3; i++) {
		json_t *e = entry((char)('a' + i), (char)('1' + i));
		const char *k = json_string_value(json_object_get(e, "key"));
		json_array_append_new(keys, json_string(k));
		cleanup_free char *cfg = NULL;
		size_t cfg_len = 0;
		char cfg_digest[IB_DIGEST_BUFLEN];
		assert_int_equal(ib_rcache_record_encode(e, &cfg, &cfg_len, cfg_digest,
							 &f.bodies[i], &f.lens[i], &err),
				 0);
		cleanup_free char *tag = ib_rcache_key_tag(k);
		f.paths[i] = xasprintf("/v2/c/manifests/%s", tag);
		ib_buf_appendf(&tags, "%s\"%s\"", i ? "," : "", tag);
		json_decref(e);
	}
	ib_buf_appendf(&tags, "]}");
	f.tags = ib_buf_steal(&tags, NULL);
	cleanup_free char *missing_key = fake_digest('9');
	json_array_append_new(keys, json_string(missing_key));
	f.h = tu_http_start(unindexed_handler, &f);
	cleanup_free char *ref = xasprintf("%s/c:index", tu_http_host(f.h));
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_rcache *rc = NULL;
	assert_int_equal(ib_rcache_open(&rc, ref, false, &o, &err), 0);
	json_t *missing = NULL;
	assert_int_equal(ib_rcache_prefetch(rc, keys, &missing, &err), 0);
	assert_int_equal(json_array_size(missing), 1);
	assert_string_equal(json_string_value(json_array_get(missing, 0)), missing_key);
	/* the index (absent), one listing, the three records at once */
	assert_int_equal(ib_rcache_requests(rc), 5);
	assert_true(f.side_by_side);
	size_t after = tu_http_count(f.h);
	for (int i = 0; i < 3; i++) {
		json_t *got = NULL;
		assert_int_equal(ib_rcache_lookup(rc, json_string_value(json_array_get(keys, i)),
						  &got, &err),
				 0);
		assert_non_null(got);
		json_decref(got);
	}
	assert_int_equal(tu_http_count(f.h), after);
	ib_rcache_free(rc);
	tu_http_stop(f.h);
	for (int i = 0; i < 3; i++) {
		free(f.paths[i]);
		free(f.bodies[i]);
	}
	free(f.tags);
	json_decref(missing);
	json_decref(keys);
}

static void mount_handler(const tu_http_request *req, tu_http_response *resp, void *payload)
{
	(void)payload;
	if (!strcmp(req->target, "/v2/")) {
		resp->status = 200;
	} else if (strstr(req->target, "/blobs/uploads/?mount=sha256:aaaa")) {
		resp->status = 201;
	} else if (strstr(req->target, "/blobs/uploads/?mount=")) {
		resp->status = 202;
		tu_http_add_header(resp, "Location: /v2/app/blobs/uploads/u1");
	} else {
		resp->status = 404;
	}
}

static void test_blob_mount(void **state)
{
	(void)state;
	tu_http *h = tu_http_start(mount_handler, NULL);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	o.max_retries = -1;
	ib_registry_session *s = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_registry_session_open(&s, tu_http_host(h), "app",
						  "repository:app:pull,push", NULL, &o, &err),
			 0);
	cleanup_free char *a = fake_digest('a');
	cleanup_free char *b = fake_digest('b');
	assert_int_equal(ib_registry_blob_mount(s, s->h, a, "ci/cache", &err), 0);
	assert_int_equal(ib_registry_blob_mount(s, s->h, b, "ci/cache", &err), IB_ENOTFOUND);
	assert_null(err);
	cleanup_free char *log = tu_http_log(h);
	assert_non_null(strstr(log, "POST /v2/app/blobs/uploads/?mount=sha256:aaaa"));
	assert_non_null(strstr(log, "&from=ci%2Fcache 201"));
	ib_registry_session_free(s);
	tu_http_stop(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_parse),
	    cmocka_unit_test(test_key_tag),
	    cmocka_unit_test(test_record_roundtrip),
	    cmocka_unit_test(test_index_roundtrip),
	    cmocka_unit_test(test_index_merge),
	    cmocka_unit_test(test_lookup_round_trips),
	    cmocka_unit_test(test_prefetch_decides_every_key),
	    cmocka_unit_test(test_prefetch_without_index_fetches_records_side_by_side),
	    cmocka_unit_test(test_open_unreachable),
	    cmocka_unit_test(test_blob_mount),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
