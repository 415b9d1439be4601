/* OCI / Docker schema2 documents (src/lib/oci.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "oci.h"
#include "util.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"

#define OCI_CONFIG_DESC "{\"mediaType\":\"" IB_MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":7}"
#define DOCKER_CONFIG_DESC                                                                         \
	"{\"mediaType\":\"" IB_MT_DOCKER_CONFIG "\",\"digest\":\"" D1 "\",\"size\":7}"

/* Canonical form of a two-layer OCI manifest with annotations. */
static const char oci_manifest[] =
    "{\"annotations\":{\"a\":\"1\",\"b\":\"2\"},"
    "\"config\":{\"digest\":\"" D1 "\",\"mediaType\":\"" IB_MT_OCI_CONFIG "\",\"size\":7},"
    "\"layers\":["
    "{\"digest\":\"" D2 "\",\"mediaType\":\"" IB_MT_OCI_LAYER_GZIP "\",\"size\":100},"
    "{\"annotations\":{\"k\":\"v\"},\"digest\":\"" D3 "\",\"mediaType\":\"" IB_MT_OCI_LAYER_ZSTD
    "\",\"size\":0}],"
    "\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"schemaVersion\":2}";

/* The same document, keys in another order and with whitespace. */
static const char oci_manifest_shuffled[] =
    "{ \"schemaVersion\": 2,\n \"mediaType\": \"" IB_MT_OCI_MANIFEST "\",\n"
    " \"layers\": [\n"
    "  {\"size\": 100, \"mediaType\": \"" IB_MT_OCI_LAYER_GZIP "\", \"digest\": \"" D2 "\"},\n"
    "  {\"size\": 0, \"digest\": \"" D3 "\", \"mediaType\": \"" IB_MT_OCI_LAYER_ZSTD "\","
    " \"annotations\": {\"k\": \"v\"}}\n ],\n"
    " \"annotations\": {\"b\": \"2\", \"a\": \"1\"},\n"
    " \"config\": {\"size\": 7, \"digest\": \"" D1 "\", \"mediaType\": \"" IB_MT_OCI_CONFIG "\"}\n"
    "}\n";

static const char docker_manifest[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_DOCKER_MANIFEST "\","
    "\"config\":" DOCKER_CONFIG_DESC ","
    "\"layers\":[{\"mediaType\":\"" IB_MT_DOCKER_LAYER_GZIP "\",\"digest\":\"" D2 "\",\"size\":5},"
    "{\"mediaType\":\"" IB_MT_DOCKER_FOREIGN_LAYER "\",\"digest\":\"" D3 "\",\"size\":9,"
    "\"urls\":[\"https://example.com/a\",\"https://example.com/b\"]}]}";

static const char oci_index[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_INDEX "\","
    "\"manifests\":["
    "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":500,"
    "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
    "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":501,"
    "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}}],"
    "\"annotations\":{\"x\":\"y\"}}";

static const char layout_index[] =
    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\","
    "\"digest\":\"" D1 "\",\"size\":3,\"annotations\":{\"" IB_ANNOT_REF_NAME "\":\"app:1\"}}]}";

static const char docker_list[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_DOCKER_LIST "\",\"manifests\":["
    "{\"mediaType\":\"" IB_MT_DOCKER_MANIFEST "\",\"digest\":\"" D3 "\",\"size\":42,"
    "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}";

static const char config_doc[] =
    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"A=1\"]},"
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D2 "\",\"" D3 "\"]}}";

static ib_manifest *manifest_ok(const char *s)
{
	ib_manifest *m = NULL;
	ib_error *err = NULL;
	if (ib_manifest_parse(&m, s, strlen(s), &err) != 0)
		fail_msg("manifest parse: %s", ib_error_msg(err));
	assert_non_null(m);
	return m;
}

static ib_index *index_ok(const char *s)
{
	ib_index *idx = NULL;
	ib_error *err = NULL;
	if (ib_index_parse(&idx, s, strlen(s), &err) != 0)
		fail_msg("index parse: %s", ib_error_msg(err));
	assert_non_null(idx);
	return idx;
}

static void expect_msg(ib_error *err, int code, const char *want)
{
	assert_non_null(err);
	assert_int_equal(err->code, code);
	if (!strstr(err->msg, want))
		fail_msg("message \"%s\" does not contain \"%s\"", err->msg, want);
}

static void manifest_bad(const char *s, const char *want)
{
	ib_manifest *m = (ib_manifest *)0x1;
	ib_error *err = NULL;
	int r = ib_manifest_parse(&m, s, strlen(s), &err);
	if (r == 0)
		fail_msg("manifest accepted but should not be: %s", s);
	assert_int_equal(r, IB_EINVALID);
	assert_null(m);
	expect_msg(err, IB_EINVALID, want);
	assert_true(strncmp(err->msg, "manifest: ", 10) == 0);
	ib_error_free(&err);
}

static void index_bad(const char *s, const char *want)
{
	ib_index *idx = (ib_index *)0x1;
	ib_error *err = NULL;
	int r = ib_index_parse(&idx, s, strlen(s), &err);
	if (r == 0)
		fail_msg("index accepted but should not be: %s", s);
	assert_int_equal(r, IB_EINVALID);
	assert_null(idx);
	expect_msg(err, IB_EINVALID, want);
	assert_true(strncmp(err->msg, "index: ", 7) == 0);
	ib_error_free(&err);
}

static void config_bad(const char *s, const char *want)
{
	json_t *c = (json_t *)0x1;
	ib_error *err = NULL;
	int r = ib_config_parse(&c, s, strlen(s), &err);
	if (r == 0)
		fail_msg("config accepted but should not be: %s", s);
	assert_int_equal(r, IB_EINVALID);
	assert_null(c);
	expect_msg(err, IB_EINVALID, want);
	assert_true(strncmp(err->msg, "config: ", 8) == 0);
	ib_error_free(&err);
}

/* A manifest whose third layer is `layer` (a JSON object). */
static char *manifest_with_layer(const char *layer)
{
	return xasprintf("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_MANIFEST "\","
			 "\"config\":" OCI_CONFIG_DESC ",\"layers\":["
			 "{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D2 "\",\"size\":1},"
			 "{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D3 "\",\"size\":1},"
			 "%s]}",
			 layer);
}

static void layer_bad(const char *layer, const char *want)
{
	cleanup_free char *s = manifest_with_layer(layer);
	manifest_bad(s, "manifest: layers[2]: ");
	manifest_bad(s, want);
}

/* ---- manifests ---- */

static void test_manifest_parse_oci(void **state)
{
	(void)state;
	ib_manifest *m = manifest_ok(oci_manifest);
	assert_string_equal(m->media_type, IB_MT_OCI_MANIFEST);
	assert_string_equal(m->config.media_type, IB_MT_OCI_CONFIG);
	assert_string_equal(m->config.digest, D1);
	assert_int_equal(m->config.size, 7);
	assert_null(m->config.annotations);
	assert_null(m->config.urls);
	assert_null(m->config.platform.os);
	assert_int_equal(m->n_layers, 2);
	assert_string_equal(m->layers[0].media_type, IB_MT_OCI_LAYER_GZIP);
	assert_string_equal(m->layers[0].digest, D2);
	assert_int_equal(m->layers[0].size, 100);
	assert_string_equal(m->layers[1].digest, D3);
	assert_int_equal(m->layers[1].size, 0);
	assert_string_equal(json_string_value(json_object_get(m->layers[1].annotations, "k")), "v");
	assert_string_equal(json_string_value(json_object_get(m->annotations, "b")), "2");
	ib_manifest_free(m);
}

static void test_manifest_parse_docker(void **state)
{
	(void)state;
	ib_manifest *m = manifest_ok(docker_manifest);
	assert_string_equal(m->media_type, IB_MT_DOCKER_MANIFEST);
	assert_string_equal(m->config.media_type, IB_MT_DOCKER_CONFIG);
	assert_int_equal(m->n_layers, 2);
	assert_string_equal(m->layers[0].media_type, IB_MT_DOCKER_LAYER_GZIP);
	assert_null(m->layers[0].urls);
	assert_int_equal(ib_strv_len(m->layers[1].urls), 2);
	assert_string_equal(m->layers[1].urls[0], "https://example.com/a");
	assert_string_equal(m->layers[1].urls[1], "https://example.com/b");
	assert_null(m->annotations);
	ib_manifest_free(m);
}

static void test_manifest_serialize_is_canonical(void **state)
{
	(void)state;
	ib_manifest *m = manifest_ok(oci_manifest_shuffled);
	size_t len = 0;
	cleanup_free char *out = ib_manifest_serialize(m, &len);
	assert_string_equal(out, oci_manifest);
	assert_int_equal(len, strlen(oci_manifest));
	ib_manifest_free(m);
}

static void test_manifest_equal_inputs_give_equal_bytes(void **state)
{
	(void)state;
	ib_manifest *a = manifest_ok(oci_manifest);
	ib_manifest *b = manifest_ok(oci_manifest_shuffled);
	size_t la, lb;
	cleanup_free char *sa = ib_manifest_serialize(a, &la);
	cleanup_free char *sb = ib_manifest_serialize(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	ib_manifest_free(a);
	ib_manifest_free(b);
}

static void test_manifest_round_trip_docker(void **state)
{
	(void)state;
	ib_manifest *m = manifest_ok(docker_manifest);
	cleanup_free char *s1 = ib_manifest_serialize(m, NULL);
	ib_manifest *m2 = manifest_ok(s1);
	cleanup_free char *s2 = ib_manifest_serialize(m2, NULL);
	assert_string_equal(s1, s2);
	assert_string_equal(m2->media_type, IB_MT_DOCKER_MANIFEST);
	assert_string_equal(m2->layers[1].urls[1], "https://example.com/b");
	/* No annotations in, none out. */
	assert_null(strstr(s1, "annotations"));
	ib_manifest_free(m);
	ib_manifest_free(m2);
}

static void test_manifest_without_media_type_is_oci(void **state)
{
	(void)state;
	ib_manifest *m =
	    manifest_ok("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}");
	assert_string_equal(m->media_type, IB_MT_OCI_MANIFEST);
	assert_int_equal(m->n_layers, 0);
	ib_manifest_free(m);
}

static void test_manifest_empty_layers_allowed(void **state)
{
	(void)state;
	ib_manifest *m = manifest_ok("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_MANIFEST
				     "\",\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}");
	cleanup_free char *s = ib_manifest_serialize(m, NULL);
	assert_string_equal(s,
			    "{\"config\":{\"digest\":\"" D1 "\",\"mediaType\":\"" IB_MT_OCI_CONFIG
			    "\",\"size\":7},\"layers\":[],\"mediaType\":\"" IB_MT_OCI_MANIFEST
			    "\",\"schemaVersion\":2}");
	ib_manifest_free(m);
}

static void test_manifest_rejects_bad_json(void **state)
{
	(void)state;
	manifest_bad("{", "invalid JSON");
	manifest_bad("", "invalid JSON");
	manifest_bad("[]", "not a JSON object");
	manifest_bad("\"x\"", "invalid JSON");
}

static void test_manifest_rejects_duplicate_keys(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC
		     ",\"layers\":[]}",
		     "invalid JSON");
}

static void test_manifest_rejects_schema_version(void **state)
{
	(void)state;
	manifest_bad("{\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}", "missing schemaVersion");
	manifest_bad("{\"schemaVersion\":1,\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}",
		     "schemaVersion must be 2");
	manifest_bad("{\"schemaVersion\":\"2\",\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}",
		     "schemaVersion must be 2");
	manifest_bad("{\"schemaVersion\":2.0,\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}",
		     "schemaVersion must be 2");
}

static void test_manifest_rejects_media_type(void **state)
{
	(void)state;
	manifest_bad(
	    "{\"schemaVersion\":2,\"mediaType\":\"application/json\",\"config\":" OCI_CONFIG_DESC
	    ",\"layers\":[]}",
	    "unsupported media type \"application/json\"");
	manifest_bad("{\"schemaVersion\":2,\"mediaType\":7,\"config\":" OCI_CONFIG_DESC
		     ",\"layers\":[]}",
		     "mediaType must be a string");
	manifest_bad("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_INDEX "\",\"manifests\":[]}",
		     "is an index, not an image manifest");
	manifest_bad("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_DOCKER_LIST
		     "\",\"manifests\":[]}",
		     "is an index, not an image manifest");
}

static void test_manifest_rejects_manifests_field(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC
		     ",\"layers\":[],\"manifests\":[]}",
		     "ambiguous manifest/index");
}

static void test_manifest_rejects_missing_config(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"layers\":[]}", "manifest: missing config");
	manifest_bad("{\"schemaVersion\":2,\"config\":[],\"layers\":[]}",
		     "manifest: config: descriptor must be a JSON object");
	manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" IB_MT_OCI_CONFIG
		     "\",\"digest\":\"sha256:00\",\"size\":1},\"layers\":[]}",
		     "manifest: config: invalid digest");
}

static void test_manifest_rejects_missing_layers(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC "}",
		     "manifest: missing layers");
	manifest_bad("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC ",\"layers\":{}}",
		     "manifest: layers must be an array");
}

static void test_manifest_rejects_docker_with_oci_config(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_DOCKER_MANIFEST
		     "\",\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}",
		     "does not belong in a docker schema2 manifest");
}

static void test_manifest_rejects_bad_annotations(void **state)
{
	(void)state;
	manifest_bad("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC
		     ",\"layers\":[],\"annotations\":[]}",
		     "manifest: annotations must be an object");
	manifest_bad("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC
		     ",\"layers\":[],\"annotations\":{\"a\":1}}",
		     "value of \"a\" must be a string");
}

static void test_manifest_too_large(void **state)
{
	(void)state;
	ib_manifest *m = NULL;
	ib_error *err = NULL;
	size_t len = IB_MAX_MANIFEST_SIZE + 1;
	char *buf = xmalloc(len);
	memset(buf, ' ', len);
	assert_int_equal(ib_manifest_parse(&m, buf, len, &err), IB_ETOOLARGE);
	assert_null(m);
	expect_msg(err, IB_ETOOLARGE, "limit");
	ib_error_free(&err);
	free(buf);
}

/* ---- descriptor rejections, reported with their position ---- */

static void test_layer_error_names_position(void **state)
{
	(void)state;
	ib_manifest *m = NULL;
	ib_error *err = NULL;
	cleanup_free char *s = manifest_with_layer("{\"mediaType\":\"" IB_MT_OCI_LAYER
						   "\",\"digest\":\"sha256:abc\",\"size\":1}");
	assert_int_equal(ib_manifest_parse(&m, s, strlen(s), &err), IB_EINVALID);
	assert_string_equal(err->msg, "manifest: layers[2]: invalid digest \"sha256:abc\": want 64 "
				      "hex digits, got 3");
	ib_error_free(&err);
}

static void test_descriptor_rejects_digest(void **state)
{
	(void)state;
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"size\":1}", "missing digest");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":5,\"size\":1}",
		  "digest must be a string");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"sha512:" D1 "\",\"size\":1}",
		  "invalid digest");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D1 "0\",\"size\":1}",
		  "invalid digest");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"SHA256:" D1 "\",\"size\":1}",
		  "invalid digest");
}

static void test_descriptor_rejects_size(void **state)
{
	(void)state;
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4 "\"}", "missing size");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4 "\",\"size\":-1}",
		  "size must be a non-negative integer");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4 "\",\"size\":1.5}",
		  "size must be a non-negative integer");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4 "\",\"size\":1e3}",
		  "size must be a non-negative integer");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4 "\",\"size\":\"1\"}",
		  "size must be a non-negative integer");
	/* Larger than any int64: jansson refuses the number itself. */
	cleanup_free char *huge =
	    manifest_with_layer("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
				"\",\"size\":99999999999999999999}");
	manifest_bad(huge, "too big integer");
}

static void test_descriptor_rejects_media_type(void **state)
{
	(void)state;
	layer_bad("{\"digest\":\"" D4 "\",\"size\":1}", "missing mediaType");
	layer_bad("{\"mediaType\":\"\",\"digest\":\"" D4 "\",\"size\":1}",
		  "mediaType must be a non-empty string");
	layer_bad("{\"mediaType\":3,\"digest\":\"" D4 "\",\"size\":1}",
		  "mediaType must be a non-empty string");
	layer_bad("{\"mediaType\":\"tar\",\"digest\":\"" D4 "\",\"size\":1}", "invalid mediaType");
	layer_bad("{\"mediaType\":\"a/b c\",\"digest\":\"" D4 "\",\"size\":1}",
		  "invalid mediaType");
	layer_bad("{\"mediaType\":\"/b\",\"digest\":\"" D4 "\",\"size\":1}", "invalid mediaType");
}

static void test_descriptor_rejects_urls_and_annotations(void **state)
{
	(void)state;
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"urls\":\"x\"}",
		  "urls must be an array");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"urls\":[\"a\",1]}",
		  "urls[1] must be a non-empty string");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"annotations\":{\"k\":null}}",
		  "value of \"k\" must be a string");
}

static void test_descriptor_rejects_platform(void **state)
{
	(void)state;
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"platform\":\"linux\"}",
		  "platform must be an object");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"platform\":{\"architecture\":\"amd64\"}}",
		  "platform: missing os");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}",
		  "platform: missing architecture");
	layer_bad("{\"mediaType\":\"" IB_MT_OCI_LAYER "\",\"digest\":\"" D4
		  "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\","
		  "\"variant\":7}}",
		  "platform: variant must be a non-empty string");
}

/* ---- descriptor helpers ---- */

static void test_descriptor_to_json_omits_absent_fields(void **state)
{
	(void)state;
	ib_descriptor d = {0};
	d.media_type = xstrdup(IB_MT_OCI_LAYER);
	memcpy(d.digest, D1, sizeof(D1));
	d.size = 12;
	json_t *j = ib_descriptor_to_json(&d);
	cleanup_free char *s = ib_json_dump_canonical(j, NULL);
	assert_string_equal(s, "{\"digest\":\"" D1 "\",\"mediaType\":\"" IB_MT_OCI_LAYER
			       "\",\"size\":12}");
	json_decref(j);
	ib_descriptor_clear(&d);
}

static void test_descriptor_to_json_full(void **state)
{
	(void)state;
	ib_descriptor d = {0};
	d.media_type = xstrdup(IB_MT_OCI_MANIFEST);
	memcpy(d.digest, D2, sizeof(D2));
	d.size = 3;
	d.platform.os = xstrdup("linux");
	d.platform.architecture = xstrdup("arm64");
	d.platform.variant = xstrdup("v8");
	d.annotations = json_pack("{s:s}", "z", "1");
	ib_strv_push(&d.urls, "https://u");
	json_t *j = ib_descriptor_to_json(&d);
	cleanup_free char *s = ib_json_dump_canonical(j, NULL);
	assert_string_equal(s, "{\"annotations\":{\"z\":\"1\"},\"digest\":\"" D2
			       "\",\"mediaType\":\"" IB_MT_OCI_MANIFEST "\","
			       "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\","
			       "\"variant\":\"v8\"},\"size\":3,\"urls\":[\"https://u\"]}");

	ib_descriptor back;
	ib_error *err = NULL;
	assert_int_equal(ib_descriptor_from_json(&back, j, &err), 0);
	assert_null(err);
	assert_string_equal(back.platform.variant, "v8");
	assert_string_equal(back.urls[0], "https://u");
	assert_null(back.urls[1]);
	assert_true(json_equal(back.annotations, d.annotations));
	/* The annotations are a copy, not shared with the input. */
	assert_ptr_not_equal(back.annotations, json_object_get(j, "annotations"));
	json_decref(j);
	ib_descriptor_clear(&back);
	ib_descriptor_clear(&d);
}

static void test_descriptor_from_json_failure_leaves_it_clear(void **state)
{
	(void)state;
	json_t *j = json_pack("{s:s, s:s, s:i, s:[s,i]}", "mediaType", IB_MT_OCI_LAYER, "digest",
			      D1, "size", 1, "urls", "a", 2);
	ib_descriptor d;
	ib_error *err = NULL;
	assert_int_equal(ib_descriptor_from_json(&d, j, &err), IB_EINVALID);
	expect_msg(err, IB_EINVALID, "urls[1]");
	assert_null(d.media_type);
	assert_null(d.urls);
	assert_int_equal(d.size, 0);
	ib_error_free(&err);
	json_decref(j);
}

static void test_descriptor_copy_is_deep(void **state)
{
	(void)state;
	ib_descriptor src = {0};
	src.media_type = xstrdup(IB_MT_OCI_LAYER_GZIP);
	memcpy(src.digest, D3, sizeof(D3));
	src.size = 77;
	src.platform.os = xstrdup("linux");
	src.platform.architecture = xstrdup("amd64");
	src.annotations = json_pack("{s:s}", "a", "b");
	ib_strv_push(&src.urls, "https://x");

	ib_descriptor dst;
	ib_descriptor_copy(&dst, &src);
	ib_descriptor_clear(&src);
	assert_null(src.media_type);
	assert_null(src.annotations);

	assert_string_equal(dst.media_type, IB_MT_OCI_LAYER_GZIP);
	assert_string_equal(dst.digest, D3);
	assert_int_equal(dst.size, 77);
	assert_string_equal(dst.platform.os, "linux");
	assert_string_equal(dst.platform.architecture, "amd64");
	assert_null(dst.platform.variant);
	assert_string_equal(json_string_value(json_object_get(dst.annotations, "a")), "b");
	assert_string_equal(dst.urls[0], "https://x");
	ib_descriptor_clear(&dst);
}

static void test_descriptor_copy_keeps_absent_fields_absent(void **state)
{
	(void)state;
	ib_descriptor src = {0};
	memcpy(src.digest, D3, sizeof(D3));
	ib_descriptor dst;
	ib_descriptor_copy(&dst, &src);
	assert_null(dst.media_type);
	assert_null(dst.urls);
	assert_null(dst.annotations);
	ib_descriptor_clear(&dst);
}

/* ---- indexes ---- */

static void test_index_parse_oci(void **state)
{
	(void)state;
	ib_index *idx = index_ok(oci_index);
	assert_string_equal(idx->media_type, IB_MT_OCI_INDEX);
	assert_int_equal(idx->n_manifests, 2);
	assert_string_equal(idx->manifests[0].digest, D1);
	assert_int_equal(idx->manifests[0].size, 500);
	assert_string_equal(idx->manifests[0].platform.os, "linux");
	assert_string_equal(idx->manifests[0].platform.architecture, "amd64");
	assert_null(idx->manifests[0].platform.variant);
	assert_string_equal(idx->manifests[1].platform.architecture, "arm");
	assert_string_equal(idx->manifests[1].platform.variant, "v7");
	assert_string_equal(json_string_value(json_object_get(idx->annotations, "x")), "y");
	ib_index_free(idx);
}

static void test_index_parse_docker_list(void **state)
{
	(void)state;
	ib_index *idx = index_ok(docker_list);
	assert_string_equal(idx->media_type, IB_MT_DOCKER_LIST);
	assert_int_equal(idx->n_manifests, 1);
	assert_string_equal(idx->manifests[0].media_type, IB_MT_DOCKER_MANIFEST);
	assert_string_equal(idx->manifests[0].platform.variant, "v8");
	assert_null(idx->annotations);
	ib_index_free(idx);
}

static void test_index_layout_without_media_type(void **state)
{
	(void)state;
	ib_index *idx = index_ok(layout_index);
	assert_null(idx->media_type);
	assert_int_equal(idx->n_manifests, 1);
	assert_string_equal(
	    json_string_value(json_object_get(idx->manifests[0].annotations, IB_ANNOT_REF_NAME)),
	    "app:1");
	cleanup_free char *s = ib_index_serialize(idx, NULL);
	assert_string_equal(s, "{\"manifests\":[{\"annotations\":{\"" IB_ANNOT_REF_NAME
			       "\":\"app:1\"},\"digest\":\"" D1
			       "\",\"mediaType\":\"" IB_MT_OCI_MANIFEST
			       "\",\"size\":3}],\"schemaVersion\":2}");
	ib_index_free(idx);
}

static void test_index_empty_layout(void **state)
{
	(void)state;
	ib_index *idx = index_ok("{\"schemaVersion\":2,\"manifests\":[]}");
	assert_int_equal(idx->n_manifests, 0);
	cleanup_free char *s = ib_index_serialize(idx, NULL);
	assert_string_equal(s, "{\"manifests\":[],\"schemaVersion\":2}");
	ib_index_free(idx);
}

static void test_index_round_trip(void **state)
{
	(void)state;
	const char *docs[] = {oci_index, docker_list, layout_index};
	for (size_t i = 0; i < 3; i++) {
		ib_index *a = index_ok(docs[i]);
		size_t l1, l2;
		cleanup_free char *s1 = ib_index_serialize(a, &l1);
		ib_index *b = index_ok(s1);
		cleanup_free char *s2 = ib_index_serialize(b, &l2);
		assert_int_equal(l1, l2);
		assert_string_equal(s1, s2);
		ib_index_free(a);
		ib_index_free(b);
	}
}

static void test_index_equal_inputs_give_equal_bytes(void **state)
{
	(void)state;
	static const char shuffled[] =
	    "{\"annotations\":{\"x\":\"y\"},\"manifests\":["
	    "{\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"size\":500,"
	    "\"digest\":\"" D1 "\",\"mediaType\":\"" IB_MT_OCI_MANIFEST "\"},"
	    "{\"size\":501,\"digest\":\"" D2 "\",\"platform\":{\"variant\":\"v7\",\"os\":\"linux\","
	    "\"architecture\":\"arm\"},\"mediaType\":\"" IB_MT_OCI_MANIFEST "\"}],"
	    "\"mediaType\":\"" IB_MT_OCI_INDEX "\",\"schemaVersion\":2}";
	ib_index *a = index_ok(oci_index);
	ib_index *b = index_ok(shuffled);
	cleanup_free char *sa = ib_index_serialize(a, NULL);
	cleanup_free char *sb = ib_index_serialize(b, NULL);
	assert_string_equal(sa, sb);
	ib_index_free(a);
	ib_index_free(b);
}

static void test_index_rejections(void **state)
{
	(void)state;
	index_bad("{\"manifests\":[]}", "index: missing schemaVersion");
	index_bad("{\"schemaVersion\":3,\"manifests\":[]}", "schemaVersion must be 2");
	index_bad("{\"schemaVersion\":2}", "index: missing manifests");
	index_bad("{\"schemaVersion\":2,\"manifests\":{}}", "manifests must be an array");
	index_bad("{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"manifests\":[]}",
		  "unsupported media type \"text/plain\"");
	index_bad("{\"schemaVersion\":2,\"mediaType\":[],\"manifests\":[]}",
		  "mediaType must be a string");
	index_bad("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"manifests\":[]}",
		  "is an image manifest, not an index");
	index_bad("{\"schemaVersion\":2,\"mediaType\":\"" IB_MT_DOCKER_MANIFEST
		  "\",\"config\":" DOCKER_CONFIG_DESC ",\"layers\":[]}",
		  "is an image manifest, not an index");
	index_bad("{\"schemaVersion\":2,\"manifests\":[],\"layers\":[]}", "ambiguous");
	index_bad("{\"schemaVersion\":2,\"manifests\":[],\"config\":{}}", "ambiguous");
	index_bad("{\"schemaVersion\":2,\"manifests\":[],\"annotations\":{\"a\":false}}",
		  "index: annotations: value of \"a\" must be a string");
	index_bad("[1]", "not a JSON object");
	index_bad("nope", "invalid JSON");
}

static void test_index_entry_error_names_position(void **state)
{
	(void)state;
	index_bad("{\"schemaVersion\":2,\"manifests\":["
		  "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":1},"
		  "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":-5}]}",
		  "index: manifests[1]: size must be a non-negative integer");
	index_bad("{\"schemaVersion\":2,\"manifests\":[7]}",
		  "index: manifests[0]: descriptor must be a JSON object");
}

static void test_index_too_large(void **state)
{
	(void)state;
	ib_index *idx = NULL;
	ib_error *err = NULL;
	size_t len = IB_MAX_MANIFEST_SIZE + 1;
	char *buf = xmalloc(len);
	memset(buf, ' ', len);
	assert_int_equal(ib_index_parse(&idx, buf, len, &err), IB_ETOOLARGE);
	assert_null(idx);
	ib_error_free(&err);
	free(buf);
}

/* ---- is_index ---- */

static bool is_index_of(const char *s)
{
	bool r = false;
	ib_error *err = NULL;
	if (ib_oci_is_index(s, strlen(s), &r, &err) != 0)
		fail_msg("is_index: %s", ib_error_msg(err));
	return r;
}

static void test_is_index_by_media_type(void **state)
{
	(void)state;
	assert_true(is_index_of(oci_index));
	assert_true(is_index_of(docker_list));
	assert_false(is_index_of(oci_manifest));
	assert_false(is_index_of(docker_manifest));
	/* mediaType wins over structure. */
	assert_false(is_index_of("{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"manifests\":[]}"));
}

static void test_is_index_by_structure(void **state)
{
	(void)state;
	assert_true(is_index_of(layout_index));
	assert_false(
	    is_index_of("{\"schemaVersion\":2,\"config\":" OCI_CONFIG_DESC ",\"layers\":[]}"));
}

static void test_is_index_rejects(void **state)
{
	(void)state;
	const char *bad[] = {"{", "[]",
			     "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v1+"
			     "prettyjws\"}",
			     "{\"mediaType\":1}"};
	for (size_t i = 0; i < 4; i++) {
		bool r = false;
		ib_error *err = NULL;
		assert_int_equal(ib_oci_is_index(bad[i], strlen(bad[i]), &r, &err), IB_EINVALID);
		assert_non_null(err);
		ib_error_free(&err);
	}
}

/* ---- layer media types ---- */

static void test_layer_media_type_oci(void **state)
{
	(void)state;
	assert_string_equal(ib_layer_media_type(IB_COMP_NONE, false), IB_MT_OCI_LAYER);
	assert_string_equal(ib_layer_media_type(IB_COMP_GZIP, false), IB_MT_OCI_LAYER_GZIP);
	assert_string_equal(ib_layer_media_type(IB_COMP_ZSTD, false), IB_MT_OCI_LAYER_ZSTD);
}

static void test_layer_media_type_docker(void **state)
{
	(void)state;
	assert_string_equal(ib_layer_media_type(IB_COMP_NONE, true),
			    "application/vnd.docker.image.rootfs.diff.tar");
	assert_string_equal(ib_layer_media_type(IB_COMP_GZIP, true), IB_MT_DOCKER_LAYER_GZIP);
	/* schema2 has no zstd type. */
	assert_string_equal(ib_layer_media_type(IB_COMP_ZSTD, true), IB_MT_OCI_LAYER_ZSTD);
}

static void test_layer_compression_known(void **state)
{
	(void)state;
	static const struct {
		const char *mt;
		ib_compression c;
	} cases[] = {
	    {IB_MT_OCI_LAYER, IB_COMP_NONE},
	    {IB_MT_OCI_LAYER_GZIP, IB_COMP_GZIP},
	    {IB_MT_OCI_LAYER_ZSTD, IB_COMP_ZSTD},
	    {IB_MT_DOCKER_LAYER_GZIP, IB_COMP_GZIP},
	    {IB_MT_DOCKER_FOREIGN_LAYER, IB_COMP_GZIP},
	    {"application/vnd.docker.image.rootfs.diff.tar", IB_COMP_NONE},
	    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", IB_COMP_GZIP},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ib_compression c = (ib_compression)99;
		ib_error *err = NULL;
		assert_int_equal(ib_layer_compression(cases[i].mt, &c, &err), 0);
		assert_null(err);
		assert_int_equal(c, cases[i].c);
	}
}

static void test_layer_compression_round_trips_media_type(void **state)
{
	(void)state;
	ib_compression all[] = {IB_COMP_NONE, IB_COMP_GZIP, IB_COMP_ZSTD};
	for (size_t i = 0; i < 3; i++) {
		for (int docker = 0; docker < 2; docker++) {
			ib_compression c;
			assert_int_equal(
			    ib_layer_compression(ib_layer_media_type(all[i], docker), &c, NULL), 0);
			assert_int_equal(c, all[i]);
		}
	}
}

static void test_layer_compression_unknown(void **state)
{
	(void)state;
	const char *bad[] = {"application/vnd.in-toto+json", IB_MT_OCI_CONFIG, "", NULL};
	for (size_t i = 0; i < 4; i++) {
		ib_compression c;
		ib_error *err = NULL;
		assert_int_equal(ib_layer_compression(bad[i], &c, &err), IB_EINVALID);
		expect_msg(err, IB_EINVALID, "unsupported layer media type");
		ib_error_free(&err);
	}
}

/* ---- configs ---- */

static void test_config_parse_valid(void **state)
{
	(void)state;
	json_t *c = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_config_parse(&c, config_doc, strlen(config_doc), &err), 0);
	assert_null(err);
	assert_int_equal(ib_config_n_diff_ids(c), 2);
	assert_string_equal(ib_config_diff_id(c, 0), D2);
	assert_string_equal(ib_config_diff_id(c, 1), D3);
	assert_null(ib_config_diff_id(c, 2));
	assert_string_equal(json_string_value(json_object_get(c, "os")), "linux");
	json_decref(c);
}

static void test_config_empty_diff_ids(void **state)
{
	(void)state;
	static const char doc[] = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	json_t *c = NULL;
	assert_int_equal(ib_config_parse(&c, doc, strlen(doc), NULL), 0);
	assert_int_equal(ib_config_n_diff_ids(c), 0);
	assert_null(ib_config_diff_id(c, 0));
	json_decref(c);
}

static void test_config_accessors_tolerate_bad_shapes(void **state)
{
	(void)state;
	json_t *c = json_pack("{s:{s:s}}", "rootfs", "diff_ids", "x");
	assert_int_equal(ib_config_n_diff_ids(c), 0);
	assert_null(ib_config_diff_id(c, 0));
	json_decref(c);
	assert_int_equal(ib_config_n_diff_ids(NULL), 0);
}

static void test_config_rejections(void **state)
{
	(void)state;
	config_bad("[]", "not a JSON object");
	config_bad("{", "invalid JSON");
	config_bad("{\"os\":\"linux\"}", "config: missing rootfs");
	config_bad("{\"rootfs\":[]}", "rootfs must be an object");
	config_bad("{\"rootfs\":{\"diff_ids\":[]}}", "rootfs.type must be \"layers\"");
	config_bad("{\"rootfs\":{\"type\":\"snapshot\",\"diff_ids\":[]}}",
		   "rootfs.type must be \"layers\"");
	config_bad("{\"rootfs\":{\"type\":\"layers\"}}", "missing rootfs.diff_ids");
	config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":{}}}",
		   "rootfs.diff_ids must be an array");
	config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"sha256:xyz\"]}}",
		   "config: rootfs.diff_ids[1]: invalid digest \"sha256:xyz\"");
	config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[1]}}",
		   "config: rootfs.diff_ids[0]: diff_id must be a string");
}

static void test_config_too_large(void **state)
{
	(void)state;
	json_t *c = NULL;
	ib_error *err = NULL;
	size_t len = IB_MAX_CONFIG_SIZE + 1;
	char *buf = xmalloc(len);
	memset(buf, ' ', len);
	assert_int_equal(ib_config_parse(&c, buf, len, &err), IB_ETOOLARGE);
	assert_null(c);
	ib_error_free(&err);
	free(buf);
}

static void test_config_serialize_deterministic(void **state)
{
	(void)state;
	static const char shuffled[] =
	    "{\"rootfs\": {\"diff_ids\": [\"" D2 "\", \"" D3 "\"], \"type\": \"layers\"},\n"
	    " \"config\": {\"Env\": [\"A=1\"]}, \"os\": \"linux\", \"architecture\": \"amd64\"}";
	json_t *a = NULL, *b = NULL;
	assert_int_equal(ib_config_parse(&a, config_doc, strlen(config_doc), NULL), 0);
	assert_int_equal(ib_config_parse(&b, shuffled, strlen(shuffled), NULL), 0);
	size_t la, lb;
	cleanup_free char *sa = ib_config_serialize(a, &la);
	cleanup_free char *sb = ib_config_serialize(b, &lb);
	assert_string_equal(sa, "{\"architecture\":\"amd64\",\"config\":{\"Env\":[\"A=1\"]},"
				"\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[\"" D2 "\",\"" D3
				"\"],\"type\":\"layers\"}}");
	assert_int_equal(la, lb);
	assert_memory_equal(sa, sb, la);
	json_decref(a);
	json_decref(b);
}

static void test_json_dump_canonical(void **state)
{
	(void)state;
	json_t *j = json_pack("{s:i,s:[i,{s:s,s:s}],s:n}", "b", 1, "a", 2, "z", "1", "y", "2", "c");
	size_t len = 0;
	cleanup_free char *s = ib_json_dump_canonical(j, &len);
	assert_string_equal(s, "{\"a\":[2,{\"y\":\"2\",\"z\":\"1\"}],\"b\":1,\"c\":null}");
	assert_int_equal(len, strlen(s));
	json_decref(j);
}

static void test_config_new_and_history(void **state)
{
	(void)state;
	json_t *c = ib_config_new("linux", "arm64", "v8", "1970-01-01T00:00:00Z");
	ib_config_add_history(c, "sha256:" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			      "1970-01-01T00:00:00Z", "imgbuild import");
	ib_config_add_history(c, NULL, NULL, "label");
	char *s = ib_config_serialize(c, NULL);
	assert_string_equal(
	    s, "{\"architecture\":\"arm64\",\"config\":{},\"created\":\"1970-01-01T00:00:00Z\","
	       "\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"imgbuild "
	       "import\"},{\"created_by\":\"label\",\"empty_layer\":true}],\"os\":\"linux\","
	       "\"rootfs\":{\"diff_ids\":[\"sha256:"
	       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"],\"type\":"
	       "\"layers\"},\"variant\":\"v8\"}");
	/* what it builds is a valid config */
	json_t *back = NULL;
	assert_int_equal(ib_config_parse(&back, s, strlen(s), NULL), 0);
	assert_int_equal(ib_config_n_diff_ids(back), 1);
	json_decref(back);
	free(s);
	json_decref(c);
	/* no variant, no created */
	c = ib_config_new("linux", "amd64", NULL, NULL);
	assert_null(json_object_get(c, "variant"));
	assert_null(json_object_get(c, "created"));
	assert_int_equal(ib_config_n_diff_ids(c), 0);
	json_decref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_manifest_parse_oci),
	    cmocka_unit_test(test_manifest_parse_docker),
	    cmocka_unit_test(test_manifest_serialize_is_canonical),
	    cmocka_unit_test(test_manifest_equal_inputs_give_equal_bytes),
	    cmocka_unit_test(test_manifest_round_trip_docker),
	    cmocka_unit_test(test_manifest_without_media_type_is_oci),
	    cmocka_unit_test(test_manifest_empty_layers_allowed),
	    cmocka_unit_test(test_manifest_rejects_bad_json),
	    cmocka_unit_test(test_manifest_rejects_duplicate_keys),
	    cmocka_unit_test(test_manifest_rejects_schema_version),
	    cmocka_unit_test(test_manifest_rejects_media_type),
	    cmocka_unit_test(test_manifest_rejects_manifests_field),
	    cmocka_unit_test(test_manifest_rejects_missing_config),
	    cmocka_unit_test(test_manifest_rejects_missing_layers),
	    cmocka_unit_test(test_manifest_rejects_docker_with_oci_config),
	    cmocka_unit_test(test_manifest_rejects_bad_annotations),
	    cmocka_unit_test(test_manifest_too_large),
	    cmocka_unit_test(test_layer_error_names_position),
	    cmocka_unit_test(test_descriptor_rejects_digest),
	    cmocka_unit_test(test_descriptor_rejects_size),
	    cmocka_unit_test(test_descriptor_rejects_media_type),
	    cmocka_unit_test(test_descriptor_rejects_urls_and_annotations),
	    cmocka_unit_test(test_descriptor_rejects_platform),
	    cmocka_unit_test(test_descriptor_to_json_omits_absent_fields),
	    cmocka_unit_test(test_descriptor_to_json_full),
	    cmocka_unit_test(test_descriptor_from_json_failure_leaves_it_clear),
	    cmocka_unit_test(test_descriptor_copy_is_deep),
	    cmocka_unit_test(test_descriptor_copy_keeps_absent_fields_absent),
	    cmocka_unit_test(test_index_parse_oci),
	    cmocka_unit_test(test_index_parse_docker_list),
	    cmocka_unit_test(test_index_layout_without_media_type),
	    cmocka_unit_test(test_index_empty_layout),
	    cmocka_unit_test(test_index_round_trip),
	    cmocka_unit_test(test_index_equal_inputs_give_equal_bytes),
	    cmocka_unit_test(test_index_rejections),
	    cmocka_unit_test(test_index_entry_error_names_position),
	    cmocka_unit_test(test_index_too_large),
	    cmocka_unit_test(test_is_index_by_media_type),
	    cmocka_unit_test(test_is_index_by_structure),
	    cmocka_unit_test(test_is_index_rejects),
	    cmocka_unit_test(test_layer_media_type_oci),
	    cmocka_unit_test(test_layer_media_type_docker),
	    cmocka_unit_test(test_layer_compression_known),
	    cmocka_unit_test(test_layer_compression_round_trips_media_type),
	    cmocka_unit_test(test_layer_compression_unknown),
	    cmocka_unit_test(test_config_parse_valid),
	    cmocka_unit_test(test_config_empty_diff_ids),
	    cmocka_unit_test(test_config_accessors_tolerate_bad_shapes),
	    cmocka_unit_test(test_config_rejections),
	    cmocka_unit_test(test_config_too_large),
	    cmocka_unit_test(test_config_serialize_deterministic),
	    cmocka_unit_test(test_json_dump_canonical),
	    cmocka_unit_test(test_config_new_and_history),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
