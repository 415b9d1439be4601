/* OCI image spec and Docker schema2 documents.  Parsers validate strictly
 * (the rest of imgbuild trusts digests, sizes and media types it gets from
 * here) and serialisers emit canonical JSON, so equal structures always
 * give equal bytes and therefore equal digests. */
#include "oci.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define IB_MT_DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar"
#define IB_MT_OCI_ND_LAYER "application/vnd.oci.image.layer.nondistributable.v1.tar"
#define IB_MT_OCI_ND_LAYER_GZIP "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
#define IB_MT_OCI_ND_LAYER_ZSTD "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

/* json_decrefp comes with jansson >= 2.9. */
#define cleanup_json __attribute__((cleanup(json_decrefp)))

/* jansson returns NULL only on OOM or on strings that are not UTF-8; the
 * strings we put in documents come from parsed JSON or from constants, so
 * either case is a bug or an exhausted heap: stop rather than silently emit
 * a document without the field. */
static json_t *must(json_t *j)
{
	if (!j) {
		fputs("imgbuild: error: out of memory or invalid UTF-8 building JSON\n", stderr);
		abort();
	}
	return j;
}

static void set_new(json_t *obj, const char *key, json_t *val)
{
	if (json_object_set_new(obj, key, must(val)) < 0)
		must(NULL);
}

static void append_new(json_t *arr, json_t *val)
{
	if (json_array_append_new(arr, must(val)) < 0)
		must(NULL);
}

char *ib_json_dump_canonical(json_t *j, size_t *len_out)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!s) {
		fputs("imgbuild: error: cannot serialise JSON\n", stderr);
		abort();
	}
	if (len_out)
		*len_out = strlen(s);
	return s;
}

/* Parse buf as a JSON object of at most cap bytes.  Duplicate keys are
 * refused: two parsers must never disagree on what a document says. */
static int load_object(json_t **out, const char *what, const char *buf, size_t len, size_t cap,
		       ib_error **err)
{
	*out = NULL;
	if (len > cap)
		return ib_error_setc(err, IB_ETOOLARGE, "%s: %zu bytes is over the %zu byte limit",
				     what, len, cap);
	if (!buf)
		return ib_error_setc(err, IB_EINVALID, "%s: empty document", what);
	json_error_t jerr;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return ib_error_setc(err, IB_EINVALID, "%s: invalid JSON at line %d column %d: %s",
				     what, jerr.line, jerr.column, jerr.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID, "%s: not a JSON object", what);
	}
	*out = j;
	return 0;
}

static bool mt_char(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return !first && c && strchr("!#$&^_.+-", c);
}

/* RFC 6838 type/subtype, as the OCI descriptor schema restricts it. */
static bool media_type_valid(const char *s)
{
	const char *slash = strchr(s, '/');
	if (!slash)
		return false;
	const char *parts[2] = {s, slash + 1};
	size_t lens[2] = {(size_t)(slash - s), strlen(slash + 1)};
	for (int p = 0; p < 2; p++) {
		if (lens[p] == 0 || lens[p] > 127)
			return false;
		for (size_t i = 0; i < lens[p]; i++)
			if (!mt_char(parts[p][i], i == 0))
				return false;
	}
	return true;
}

static int check_schema_version(json_t *doc, ib_error **err)
{
	json_t *v = json_object_get(doc, "schemaVersion");
	if (!v)
		return ib_error_setc(err, IB_EINVALID, "missing schemaVersion");
	if (!json_is_integer(v) || json_integer_value(v) != 2)
		return ib_error_setc(err, IB_EINVALID, "schemaVersion must be 2");
	return 0;
}

/* An object whose values are all strings; *out gets a deep copy or NULL
 * when the key is absent. */
static int get_annotations(json_t **out, json_t *parent, ib_error **err)
{
	*out = NULL;
	json_t *a = json_object_get(parent, "annotations");
	if (!a)
		return 0;
	if (!json_is_object(a))
		return ib_error_setc(err, IB_EINVALID, "annotations must be an object");
	const char *k;
	json_t *v;
	json_object_foreach (a, k, v) {
		if (!json_is_string(v))
			return ib_error_setc(err, IB_EINVALID,
					     "annotations: value of \"%s\" must be a string", k);
	}
	*out = must(json_deep_copy(a));
	return 0;
}

/* Non-empty string member; *out is NULL when an optional key is absent. */
static int get_string(const char **out, json_t *obj, const char *key, bool required, ib_error **err)
{
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (required)
			return ib_error_setc(err, IB_EINVALID, "missing %s", key);
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0)
		return ib_error_setc(err, IB_EINVALID, "%s must be a non-empty string", key);
	*out = json_string_value(v);
	return 0;
}

static int platform_from_json(ib_platform *p, json_t *j, ib_error **err)
{
	const char *arch, *os, *variant;
	if (!json_is_object(j))
		return ib_error_setc(err, IB_EINVALID, "platform must be an object");
	if (get_string(&arch, j, "architecture", true, err) < 0 ||
	    get_string(&os, j, "os", true, err) < 0 ||
	    get_string(&variant, j, "variant", false, err) < 0)
		return ib_error_wrap(err, "platform");
	p->architecture = xstrdup(arch);
	p->os = xstrdup(os);
	p->variant = variant ? xstrdup(variant) : NULL;
	return 0;
}

void ib_descriptor_clear(ib_descriptor *d)
{
	if (!d)
		return;
	free(d->media_type);
	free(d->platform.os);
	free(d->platform.architecture);
	free(d->platform.variant);
	if (d->annotations)
		json_decref(d->annotations);
	ib_strv_free(d->urls);
	memset(d, 0, sizeof(*d));
}

static int descriptor_parse(ib_descriptor *d, json_t *j, ib_error **err)
{
	int r;
	if (!json_is_object(j))
		return ib_error_setc(err, IB_EINVALID, "descriptor must be a JSON object");

	const char *mt;
	r = get_string(&mt, j, "mediaType", true, err);
	if (r < 0)
		return r;
	if (!media_type_valid(mt))
		return ib_error_setc(err, IB_EINVALID, "invalid mediaType \"%.200s\"", mt);
	d->media_type = xstrdup(mt);

	json_t *dg = json_object_get(j, "digest");
	if (!dg)
		return ib_error_setc(err, IB_EINVALID, "missing digest");
	if (!json_is_string(dg))
		return ib_error_setc(err, IB_EINVALID, "digest must be a string");
	r = ib_digest_validate(json_string_value(dg), err);
	if (r < 0)
		return r;
	memcpy(d->digest, json_string_value(dg), IB_DIGEST_BUFLEN);

	json_t *sz = json_object_get(j, "size");
	if (!sz)
		return ib_error_setc(err, IB_EINVALID, "missing size");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return ib_error_setc(err, IB_EINVALID, "size must be a non-negative integer");
	d->size = (int64_t)json_integer_value(sz);

	json_t *p = json_object_get(j, "platform");
	if (p) {
		r = platform_from_json(&d->platform, p, err);
		if (r < 0)
			return r;
	}

	r = get_annotations(&d->annotations, j, err);
	if (r < 0)
		return r;

	json_t *urls = json_object_get(j, "urls");
	if (urls) {
		if (!json_is_array(urls))
			return ib_error_setc(err, IB_EINVALID, "urls must be an array");
		d->urls = xcalloc(1, sizeof(char *));
		size_t i;
		json_t *u;
		json_array_foreach (urls, i, u) {
			if (!json_is_string(u) || json_string_length(u) == 0)
				return ib_error_setc(err, IB_EINVALID,
						     "urls[%zu] must be a non-empty string", i);
			ib_strv_push(&d->urls, json_string_value(u));
		}
	}
	return 0;
}

int ib_descriptor_from_json(ib_descriptor *out, json_t *j, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	int r = descriptor_parse(out, j, err);
	if (r < 0)
		ib_descriptor_clear(out);
	return r;
}

json_t *ib_descriptor_to_json(const ib_descriptor *d)
{
	json_t *o = must(json_object());
	if (d->media_type)
		set_new(o, "mediaType", json_string(d->media_type));
	set_new(o, "digest", json_string(d->digest));
	set_new(o, "size", json_integer(d->size));
	if (d->platform.os || d->platform.architecture || d->platform.variant) {
		json_t *p = must(json_object());
		if (d->platform.architecture)
			set_new(p, "architecture", json_string(d->platform.architecture));
		if (d->platform.os)
			set_new(p, "os", json_string(d->platform.os));
		if (d->platform.variant)
			set_new(p, "variant", json_string(d->platform.variant));
		set_new(o, "platform", p);
	}
	if (d->annotations)
		set_new(o, "annotations", json_deep_copy(d->annotations));
	if (d->urls) {
		json_t *a = must(json_array());
		for (size_t i = 0; d->urls[i]; i++)
			append_new(a, json_string(d->urls[i]));
		set_new(o, "urls", a);
	}
	return o;
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void ib_descriptor_copy(ib_descriptor *dst, const ib_descriptor *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->media_type = dup_or_null(src->media_type);
	memcpy(dst->digest, src->digest, sizeof(dst->digest));
	dst->size = src->size;
	dst->platform.os = dup_or_null(src->platform.os);
	dst->platform.architecture = dup_or_null(src->platform.architecture);
	dst->platform.variant = dup_or_null(src->platform.variant);
	dst->annotations = src->annotations ? must(json_deep_copy(src->annotations)) : NULL;
	dst->urls = src->urls ? ib_strv_dup(src->urls) : NULL;
}

/* ---- manifests ---- */

void ib_manifest_free(ib_manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	ib_descriptor_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		ib_descriptor_clear(&m->layers[i]);
	free(m->layers);
	if (m->annotations)
		json_decref(m->annotations);
	free(m);
}

static void manifest_freep(ib_manifest **m)
{
	ib_manifest_free(*m);
}

static int manifest_fill(ib_manifest *m, json_t *doc, ib_error **err)
{
	int r = check_schema_version(doc, err);
	if (r < 0)
		return r;

	json_t *mt = json_object_get(doc, "mediaType");
	if (mt && !json_is_string(mt))
		return ib_error_setc(err, IB_EINVALID, "mediaType must be a string");
	/* An OCI manifest may omit mediaType (image-spec before 1.0.2); docker
	 * schema2 always carries it. */
	const char *mts = mt ? json_string_value(mt) : IB_MT_OCI_MANIFEST;
	if (strcmp(mts, IB_MT_OCI_INDEX) == 0 || strcmp(mts, IB_MT_DOCKER_LIST) == 0)
		return ib_error_setc(err, IB_EINVALID,
				     "media type %s is an index, not an image manifest", mts);
	if (strcmp(mts, IB_MT_OCI_MANIFEST) != 0 && strcmp(mts, IB_MT_DOCKER_MANIFEST) != 0)
		return ib_error_setc(err, IB_EINVALID, "unsupported media type \"%.200s\"", mts);
	m->media_type = xstrdup(mts);
	bool docker = strcmp(mts, IB_MT_DOCKER_MANIFEST) == 0;

	if (json_object_get(doc, "manifests"))
		return ib_error_setc(err, IB_EINVALID,
				     "has a \"manifests\" field: ambiguous manifest/index");

	json_t *config = json_object_get(doc, "config");
	if (!config)
		return ib_error_setc(err, IB_EINVALID, "missing config");
	r = ib_descriptor_from_json(&m->config, config, err);
	if (r < 0)
		return ib_error_wrap(err, "config");
	if (docker && strcmp(m->config.media_type, IB_MT_DOCKER_CONFIG) != 0)
		return ib_error_setc(
		    err, IB_EINVALID,
		    "config: media type %.200s does not belong in a docker schema2 "
		    "manifest (want %s)",
		    m->config.media_type, IB_MT_DOCKER_CONFIG);

	json_t *layers = json_object_get(doc, "layers");
	if (!layers)
		return ib_error_setc(err, IB_EINVALID, "missing layers");
	if (!json_is_array(layers))
		return ib_error_setc(err, IB_EINVALID, "layers must be an array");
	size_t n = json_array_size(layers);
	m->layers = xcalloc(n, sizeof(ib_descriptor));
	for (size_t i = 0; i < n; i++) {
		r = ib_descriptor_from_json(&m->layers[i], json_array_get(layers, i), err);
		if (r < 0)
			return ib_error_wrap(err, "layers[%zu]", i);
		m->n_layers = i + 1;
	}

	r = get_annotations(&m->annotations, doc, err);
	if (r < 0)
		return r;
	return 0;
}

int ib_manifest_parse(ib_manifest **out, const char *buf, size_t len, ib_error **err)
{
	*out = NULL;
	cleanup_json json_t *doc = NULL;
	int r = load_object(&doc, "manifest", buf, len, IB_MAX_MANIFEST_SIZE, err);
	if (r < 0)
		return r;
	__attribute__((cleanup(manifest_freep))) ib_manifest *m = xcalloc(1, sizeof(*m));
	r = manifest_fill(m, doc, err);
	if (r < 0)
		return ib_error_wrap(err, "manifest");
	*out = steal_pointer(&m);
	return 0;
}

char *ib_manifest_serialize(const ib_manifest *m, size_t *len_out)
{
	cleanup_json json_t *o = must(json_object());
	set_new(o, "schemaVersion", json_integer(2));
	if (m->media_type)
		set_new(o, "mediaType", json_string(m->media_type));
	set_new(o, "config", ib_descriptor_to_json(&m->config));
	json_t *layers = must(json_array());
	for (size_t i = 0; i < m->n_layers; i++)
		append_new(layers, ib_descriptor_to_json(&m->layers[i]));
	set_new(o, "layers", layers);
	if (m->annotations)
		set_new(o, "annotations", json_deep_copy(m->annotations));
	return ib_json_dump_canonical(o, len_out);
}

/* ---- indexes ---- */

void ib_index_free(ib_index *idx)
{
	if (!idx)
		return;
	free(idx->media_type);
	for (size_t i = 0; i < idx->n_manifests; i++)
		ib_descriptor_clear(&idx->manifests[i]);
	free(idx->manifests);
	if (idx->annotations)
		json_decref(idx->annotations);
	free(idx);
}

static void index_freep(ib_index **idx)
{
	ib_index_free(*idx);
}

static int index_fill(ib_index *idx, json_t *doc, ib_error **err)
{
	int r = check_schema_version(doc, err);
	if (r < 0)
		return r;

	/* index.json of an OCI layout may omit mediaType; keep it absent so
	 * that serialising gives the same document back. */
	json_t *mt = json_object_get(doc, "mediaType");
	if (mt) {
		if (!json_is_string(mt))
			return ib_error_setc(err, IB_EINVALID, "mediaType must be a string");
		const char *mts = json_string_value(mt);
		if (strcmp(mts, IB_MT_OCI_MANIFEST) == 0 || strcmp(mts, IB_MT_DOCKER_MANIFEST) == 0)
			return ib_error_setc(err, IB_EINVALID,
					     "media type %s is an image manifest, not an index",
					     mts);
		if (strcmp(mts, IB_MT_OCI_INDEX) != 0 && strcmp(mts, IB_MT_DOCKER_LIST) != 0)
			return ib_error_setc(err, IB_EINVALID, "unsupported media type \"%.200s\"",
					     mts);
		idx->media_type = xstrdup(mts);
	}

	if (json_object_get(doc, "config") || json_object_get(doc, "layers"))
		return ib_error_setc(
		    err, IB_EINVALID,
		    "has a \"config\" or \"layers\" field: ambiguous manifest/index");

	json_t *ms = json_object_get(doc, "manifests");
	if (!ms)
		return ib_error_setc(err, IB_EINVALID, "missing manifests");
	if (!json_is_array(ms))
		return ib_error_setc(err, IB_EINVALID, "manifests must be an array");
	size_t n = json_array_size(ms);
	idx->manifests = xcalloc(n, sizeof(ib_descriptor));
	for (size_t i = 0; i < n; i++) {
		r = ib_descriptor_from_json(&idx->manifests[i], json_array_get(ms, i), err);
		if (r < 0)
			return ib_error_wrap(err, "manifests[%zu]", i);
		idx->n_manifests = i + 1;
	}

	r = get_annotations(&idx->annotations, doc, err);
	if (r < 0)
		return r;
	return 0;
}

int ib_index_parse(ib_index **out, const char *buf, size_t len, ib_error **err)
{
	*out = NULL;
	cleanup_json json_t *doc = NULL;
	int r = load_object(&doc, "index", buf, len, IB_MAX_MANIFEST_SIZE, err);
	if (r < 0)
		return r;
	__attribute__((cleanup(index_freep))) ib_index *idx = xcalloc(1, sizeof(*idx));
	r = index_fill(idx, doc, err);
	if (r < 0)
		return ib_error_wrap(err, "index");
	*out = steal_pointer(&idx);
	return 0;
}

char *ib_index_serialize(const ib_index *idx, size_t *len_out)
{
	cleanup_json json_t *o = must(json_object());
	set_new(o, "schemaVersion", json_integer(2));
	if (idx->media_type)
		set_new(o, "mediaType", json_string(idx->media_type));
	json_t *ms = must(json_array());
	for (size_t i = 0; i < idx->n_manifests; i++)
		append_new(ms, ib_descriptor_to_json(&idx->manifests[i]));
	set_new(o, "manifests", ms);
	if (idx->annotations)
		set_new(o, "annotations", json_deep_copy(idx->annotations));
	return ib_json_dump_canonical(o, len_out);
}

int ib_oci_is_index(const char *buf, size_t len, bool *is_index, ib_error **err)
{
	cleanup_json json_t *doc = NULL;
	int r = load_object(&doc, "manifest", buf, len, IB_MAX_MANIFEST_SIZE, err);
	if (r < 0)
		return r;
	json_t *mt = json_object_get(doc, "mediaType");
	if (mt) {
		if (!json_is_string(mt))
			return ib_error_setc(err, IB_EINVALID,
					     "manifest: mediaType must be a string");
		const char *s = json_string_value(mt);
		if (strcmp(s, IB_MT_OCI_INDEX) == 0 || strcmp(s, IB_MT_DOCKER_LIST) == 0) {
			*is_index = true;
			return 0;
		}
		if (strcmp(s, IB_MT_OCI_MANIFEST) == 0 || strcmp(s, IB_MT_DOCKER_MANIFEST) == 0) {
			*is_index = false;
			return 0;
		}
		return ib_error_setc(err, IB_EINVALID,
				     "manifest: unsupported media type \"%.200s\"", s);
	}
	*is_index = json_object_get(doc, "manifests") != NULL;
	return 0;
}

/* ---- layers ---- */

const char *ib_layer_media_type(ib_compression c, bool docker)
{
	switch (c) {
	case IB_COMP_NONE:
		return docker ? IB_MT_DOCKER_LAYER : IB_MT_OCI_LAYER;
	case IB_COMP_GZIP:
		return docker ? IB_MT_DOCKER_LAYER_GZIP : IB_MT_OCI_LAYER_GZIP;
	case IB_COMP_ZSTD:
		/* Docker schema2 has no zstd layer type. */
		return IB_MT_OCI_LAYER_ZSTD;
	}
	return IB_MT_OCI_LAYER;
}

int ib_layer_compression(const char *media_type, ib_compression *out, ib_error **err)
{
	static const struct {
		const char *mt;
		ib_compression c;
	} known[] = {
	    {IB_MT_OCI_LAYER, IB_COMP_NONE},
	    {IB_MT_OCI_LAYER_GZIP, IB_COMP_GZIP},
	    {IB_MT_OCI_LAYER_ZSTD, IB_COMP_ZSTD},
	    {IB_MT_OCI_ND_LAYER, IB_COMP_NONE},
	    {IB_MT_OCI_ND_LAYER_GZIP, IB_COMP_GZIP},
	    {IB_MT_OCI_ND_LAYER_ZSTD, IB_COMP_ZSTD},
	    {IB_MT_DOCKER_LAYER, IB_COMP_NONE},
	    {IB_MT_DOCKER_LAYER_GZIP, IB_COMP_GZIP},
	    {IB_MT_DOCKER_FOREIGN_LAYER, IB_COMP_GZIP},
	};
	for (size_t i = 0; media_type && i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(media_type, known[i].mt) == 0) {
			*out = known[i].c;
			return 0;
		}
	}
	return ib_error_setc(err, IB_EINVALID, "unsupported layer media type \"%.200s\"",
			     media_type ? media_type : "");
}

/* ---- image configs ---- */

static int config_check(json_t *doc, ib_error **err)
{
	json_t *rootfs = json_object_get(doc, "rootfs");
	if (!rootfs)
		return ib_error_setc(err, IB_EINVALID, "missing rootfs");
	if (!json_is_object(rootfs))
		return ib_error_setc(err, IB_EINVALID, "rootfs must be an object");
	json_t *type = json_object_get(rootfs, "type");
	if (!json_is_string(type) || strcmp(json_string_value(type), "layers") != 0)
		return ib_error_setc(err, IB_EINVALID, "rootfs.type must be \"layers\"");
	json_t *ids = json_object_get(rootfs, "diff_ids");
	if (!ids)
		return ib_error_setc(err, IB_EINVALID, "missing rootfs.diff_ids");
	if (!json_is_array(ids))
		return ib_error_setc(err, IB_EINVALID, "rootfs.diff_ids must be an array");
	size_t i;
	json_t *id;
	json_array_foreach (ids, i, id) {
		int r = json_is_string(id)
			    ? ib_digest_validate(json_string_value(id), err)
			    : ib_error_setc(err, IB_EINVALID, "diff_id must be a string");
		if (r < 0)
			return ib_error_wrap(err, "rootfs.diff_ids[%zu]", i);
	}
	return 0;
}

int ib_config_parse(json_t **out, const char *buf, size_t len, ib_error **err)
{
	*out = NULL;
	cleanup_json json_t *doc = NULL;
	int r = load_object(&doc, "config", buf, len, IB_MAX_CONFIG_SIZE, err);
	if (r < 0)
		return r;
	r = config_check(doc, err);
	if (r < 0)
		return ib_error_wrap(err, "config");
	*out = steal_pointer(&doc);
	return 0;
}

char *ib_config_serialize(json_t *config, size_t *len_out)
{
	return ib_json_dump_canonical(config, len_out);
}

static json_t *config_diff_ids(json_t *config)
{
	json_t *ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
	return json_is_array(ids) ? ids : NULL;
}

size_t ib_config_n_diff_ids(json_t *config)
{
	return json_array_size(config_diff_ids(config));
}

const char *ib_config_diff_id(json_t *config, size_t i)
{
	return json_string_value(json_array_get(config_diff_ids(config), i));
}

json_t *ib_config_new(const char *os, const char *arch, const char *variant, const char *created)
{
	json_t *c = json_pack("{s:s, s:s, s:{}, s:{s:s, s:[]}, s:[]}", "architecture", arch, "os",
			      os, "config", "rootfs", "type", "layers", "diff_ids", "history");
	if (variant)
		json_object_set_new(c, "variant", json_string(variant));
	if (created)
		json_object_set_new(c, "created", json_string(created));
	return c;
}

void ib_config_add_history(json_t *config, const char *diff_id, const char *created,
			   const char *created_by)
{
	json_t *h = json_object();
	if (created)
		json_object_set_new(h, "created", json_string(created));
	if (created_by)
		json_object_set_new(h, "created_by", json_string(created_by));
	if (diff_id) {
		json_t *rootfs = json_object_get(config, "rootfs");
		json_array_append_new(json_object_get(rootfs, "diff_ids"), json_string(diff_id));
	} else {
		json_object_set_new(h, "empty_layer", json_true());
	}
	json_t *history = json_object_get(config, "history");
	if (!json_is_array(history)) {
		history = json_array();
		json_object_set_new(config, "history", history);
	}
	json_array_append_new(history, h);
}
