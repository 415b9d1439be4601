/* The step cache shared through a registry: records, the index, and the
 * requests that read and write them (see remote_cache.h). */
#include "remote_cache.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "layer.h"
#include "oci.h"
#include "ref.h"
#include "registry_internal.h"
#include "unpack.h"
#include "util.h"

#define ANN_KEY "org.imgbuild.cache.key"
#define ANN_CREATED_BY "org.imgbuild.cache.created_by"
#define ANN_DIFF_ID "org.imgbuild.cache.diff_id"
#define ANN_LAYER_DIGEST "org.imgbuild.cache.layer.digest"
#define ANN_LAYER_SIZE "org.imgbuild.cache.layer.size"
#define ANN_LAYER_TYPE "org.imgbuild.cache.layer.mediaType"
#define ANN_POSITION "org.imgbuild.cache.position"
#define ANN_CONFIG "org.imgbuild.cache.config"
#define ANN_MOUNT "org.imgbuild.cache.mount"
#define CONFIG_MAX ((size_t)4 << 20)

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* ------------------------------------------------------------------ */
/* option syntax                                                       */

static int normalise_ref(const char *s, char **out, ib_error **err)
{
	ib_ref *ref = NULL;
	if (ib_ref_parse(&ref, s, err) < 0)
		return -1;
	if (ref->digest) {
		ib_ref_free(ref);
		return ib_error_setc(err, IB_EINVALID,
				     "cache reference %s: a digest is not allowed", s);
	}
	const char *slash = strrchr(s, '/');
	bool tagged = strchr(slash ? slash : s, ':') != NULL;
	*out = xasprintf("%s/%s:%s", ref->domain, ref->path, tagged ? ref->tag : "index");
	ib_ref_free(ref);
	return 0;
}

int ib_rcache_spec_parse(const char *s, char **ref_out, int *mode_out, ib_error **err)
{
	*ref_out = NULL;
	*mode_out = -1;
	cleanup_free char *dup = xstrdup(s);
	const char *ref = NULL;
	for (char *tok = dup, *next; tok; tok = next) {
		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		if (!*tok)
			continue;
		char *eq = strchr(tok, '=');
		if (!eq) {
			if (ref)
				return ib_error_setc(err, IB_EINVALID, "%s: two references", s);
			ref = tok;
			continue;
		}
		*eq = '\0';
		const char *v = eq + 1;
		if (!strcmp(tok, "type")) {
			if (strcmp(v, "registry") != 0)
				return ib_error_setc(err, IB_EINVALID,
						     "%s: only type=registry is supported", s);
		} else if (!strcmp(tok, "ref")) {
			if (ref)
				return ib_error_setc(err, IB_EINVALID, "%s: two references", s);
			ref = v;
		} else if (!strcmp(tok, "mode")) {
			if (!strcmp(v, "min"))
				*mode_out = 0;
			else if (!strcmp(v, "max"))
				*mode_out = 1;
			else
				return ib_error_setc(err, IB_EINVALID,
						     "%s: mode must be min or max", s);
		} else if (strcmp(tok, "oci-mediatypes") && strcmp(tok, "image-manifest") &&
			   strcmp(tok, "ignore-error") && strcmp(tok, "compression")) {
			return ib_error_setc(err, IB_EINVALID, "%s: unknown field \"%s\"", s, tok);
		}
	}
	if (!ref || !*ref)
		return ib_error_setc(err, IB_EINVALID, "%s: no cache reference", s);
	return normalise_ref(ref, ref_out, err);
}

char *ib_rcache_key_tag(const char *key)
{
	const char *colon = strchr(key, ':');
	if (!colon)
		return xstrdup(key);
	/* "sha256-" + 64 hex: well under the 128-character tag limit */
	return xasprintf("%.*s-%.120s", (int)(colon - key), key, colon + 1);
}

/* ------------------------------------------------------------------ */
/* records                                                             */

static bool valid_digest(const char *d)
{
	ib_error *e = NULL;
	if (!d || ib_digest_validate(d, &e) < 0) {
		ib_error_free(&e);
		return false;
	}
	return true;
}

/* The layer object of an entry, checked. */
static json_t *entry_layer(json_t *entry)
{
	json_t *l = json_object_get(entry, "layer");
	if (!valid_digest(jstr(l, "digest")) || !valid_digest(jstr(l, "diff_id")) ||
	    !jstr(l, "mediaType") || !json_is_integer(json_object_get(l, "size")) ||
	    json_integer_value(json_object_get(l, "size")) < 0)
		return NULL;
	return l;
}

int ib_rcache_record_encode(json_t *entry, char **config_out, size_t *config_len,
			    char config_digest[IB_DIGEST_BUFLEN], char **manifest_out,
			    size_t *manifest_len, ib_error **err)
{
	json_t *l = entry_layer(entry);
	const char *key = jstr(entry, "key");
	if (!l || !valid_digest(key))
		return ib_error_setc(err, IB_EINVALID, "cache entry without a key or a layer");
	json_t *cfg = json_pack("{s:s, s:O}", "key", key, "layer", l);
	if (jstr(entry, "created_by"))
		json_object_set(cfg, "created_by", json_object_get(entry, "created_by"));
	if (json_is_object(json_object_get(entry, "inputs")))
		json_object_set(cfg, "inputs", json_object_get(entry, "inputs"));
	if (jstr(entry, "position"))
		json_object_set(cfg, "position", json_object_get(entry, "position"));
	*config_out = ib_json_dump_canonical(cfg, config_len);
	json_decref(cfg);
	ib_digest_buffer(config_digest, *config_out, *config_len);
	json_t *ann = json_pack("{s:s}", ANN_KEY, key);
	if (jstr(entry, "created_by"))
		json_object_set(ann, ANN_CREATED_BY, json_object_get(entry, "created_by"));
	if (jstr(entry, "position"))
		json_object_set(ann, ANN_POSITION, json_object_get(entry, "position"));
	json_t *m =
	    json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:I}, s:[{s:O, s:O, s:O, s:{s:O}}], s:o}",
		      "schemaVersion", 2, "mediaType", IB_MT_OCI_MANIFEST, "artifactType",
		      IB_RCACHE_STEP_TYPE, "config", "mediaType", IB_RCACHE_STEP_TYPE, "digest",
		      config_digest, "size", (json_int_t)*config_len, "layers", "mediaType",
		      json_object_get(l, "mediaType"), "digest", json_object_get(l, "digest"),
		      "size", json_object_get(l, "size"), "annotations", ANN_DIFF_ID,
		      json_object_get(l, "diff_id"), "annotations", ann);
	*manifest_out = ib_json_dump_canonical(m, manifest_len);
	json_decref(m);
	return 0;
}

int ib_rcache_record_decode(const char *body, size_t len, const char *key, json_t **entry_out,
			    ib_error **err)
{
	*entry_out = NULL;
	json_error_t je;
	json_t *m = json_loadb(body, len, 0, &je);
	if (!m)
		return ib_error_setc(err, IB_EINVALID, "cache record: %s", je.text);
	int rc = 0;
	json_t *ann = json_object_get(m, "annotations");
	json_t *layers = json_object_get(m, "layers");
	json_t *l = json_array_get(layers, 0);
	const char *k = jstr(ann, ANN_KEY);
	if (!k || strcmp(k, key) != 0) {
		rc = ib_error_setc(err, IB_EINVALID, "cache record for %.19s names another key",
				   key);
		goto out;
	}
	if (json_array_size(layers) != 1) {
		rc = ib_error_setc(err, IB_EINVALID, "cache record for %.19s: not one layer", key);
		goto out;
	}
	json_t *e =
	    json_pack("{s:s, s:{s:O, s:O, s:O, s:O}}", "key", key, "layer", "digest",
		      json_object_get(l, "digest"), "diff_id",
		      json_object_get(json_object_get(l, "annotations"), ANN_DIFF_ID), "size",
		      json_object_get(l, "size"), "mediaType", json_object_get(l, "mediaType"));
	if (!e || !entry_layer(e)) {
		json_decref(e);
		rc = ib_error_setc(err, IB_EINVALID, "cache record for %.19s: bad layer", key);
		goto out;
	}
	if (jstr(ann, ANN_CREATED_BY))
		json_object_set(e, "created_by", json_object_get(ann, ANN_CREATED_BY));
	*entry_out = e;
out:
	json_decref(m);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the index                                                           */

int ib_rcache_index_decode(const char *body, size_t len, json_t **entries_out, ib_error **err)
{
	*entries_out = NULL;
	json_error_t je;
	json_t *ix = json_loadb(body, len, 0, &je);
	if (!ix)
		return ib_error_setc(err, IB_EINVALID, "cache index: %s", je.text);
	json_t *manifests = json_object_get(ix, "manifests");
	if (!json_is_array(manifests)) {
		json_decref(ix);
		return ib_error_setc(err, IB_EINVALID, "cache index: no manifests");
	}
	json_t *out = json_object();
	size_t i;
	json_t *d;
	json_array_foreach (manifests, i, d) {
		json_t *ann = json_object_get(d, "annotations");
		const char *key = jstr(ann, ANN_KEY);
		const char *size = jstr(ann, ANN_LAYER_SIZE);
		char *end = NULL;
		long long sz = size ? strtoll(size, &end, 10) : -1;
		if (!valid_digest(key) || !valid_digest(jstr(d, "digest")) || !end || *end ||
		    sz < 0 || !json_is_integer(json_object_get(d, "size")) ||
		    json_object_get(out, key))
			continue; /* someone else's entry: skip it */
		json_t *e =
		    json_pack("{s:s, s:{s:O, s:O, s:I, s:O}, s:{s:O, s:O}}", "key", key, "layer",
			      "digest", json_object_get(ann, ANN_LAYER_DIGEST), "diff_id",
			      json_object_get(ann, ANN_DIFF_ID), "size", (json_int_t)sz,
			      "mediaType", json_object_get(ann, ANN_LAYER_TYPE), "record", "digest",
			      json_object_get(d, "digest"), "size", json_object_get(d, "size"));
		if (!e || !entry_layer(e)) {
			json_decref(e);
			continue;
		}
		if (jstr(ann, ANN_CREATED_BY))
			json_object_set(e, "created_by", json_object_get(ann, ANN_CREATED_BY));
		if (jstr(ann, ANN_POSITION))
			json_object_set(e, "position", json_object_get(ann, ANN_POSITION));
		if (valid_digest(jstr(ann, ANN_CONFIG)))
			json_object_set(e, "config", json_object_get(ann, ANN_CONFIG));
		json_object_set_new(out, key, e);
	}
	json_decref(ix);
	*entries_out = out;
	return 0;
}

char *ib_rcache_index_encode(json_t *entries, size_t *len_out)
{
	json_t *manifests = json_array();
	const char *key;
	json_t *e;
	json_object_foreach (entries, key, e) {
		json_t *l = json_object_get(e, "layer");
		json_t *r = json_object_get(e, "record");
		cleanup_free char *size = xasprintf("%" JSON_INTEGER_FORMAT,
						    json_integer_value(json_object_get(l, "size")));
		json_t *ann = json_pack("{s:s, s:O, s:O, s:s, s:O}", ANN_KEY, key, ANN_LAYER_DIGEST,
					json_object_get(l, "digest"), ANN_DIFF_ID,
					json_object_get(l, "diff_id"), ANN_LAYER_SIZE, size,
					ANN_LAYER_TYPE, json_object_get(l, "mediaType"));
		if (!ann || !jstr(r, "digest"))
			continue;
		if (jstr(e, "created_by"))
			json_object_set(ann, ANN_CREATED_BY, json_object_get(e, "created_by"));
		if (jstr(e, "position"))
			json_object_set(ann, ANN_POSITION, json_object_get(e, "position"));
		if (jstr(e, "config"))
			json_object_set(ann, ANN_CONFIG, json_object_get(e, "config"));
		json_array_append_new(
		    manifests, json_pack("{s:s, s:O, s:O, s:s, s:o}", "mediaType",
					 IB_MT_OCI_MANIFEST, "digest", json_object_get(r, "digest"),
					 "size", json_object_get(r, "size"), "artifactType",
					 IB_RCACHE_STEP_TYPE, "annotations", ann));
	}
	json_t *ix =
	    json_pack("{s:i, s:s, s:s, s:o}", "schemaVersion", 2, "mediaType", IB_MT_OCI_INDEX,
		      "artifactType", IB_RCACHE_INDEX_TYPE, "manifests", manifests);
	char *s = json_dumps(ix, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(ix);
	*len_out = strlen(s);
	return s;
}

json_t *ib_rcache_index_merge(json_t *newer, json_t *older)
{
	json_t *out = json_object();
	json_t *srcs[2] = {newer, older};
	for (int i = 0; i < 2; i++) {
		const char *key;
		json_t *e;
		json_object_foreach (srcs[i], key, e) {
			if (json_object_size(out) >= IB_RCACHE_INDEX_MAX)
				return out;
			if (!json_object_get(out, key) && json_object_get(e, "record"))
				json_object_set(out, key, e);
		}
	}
	return out;
}

/* ------------------------------------------------------------------ */
/* requests                                                            */

struct ib_rcache {
	ib_registry_session *s;
	char *repository;  /* host/path */
	char *tag;	   /* of the index */
	json_t *index;	   /* key -> entry: indexed, or found by tag */
	json_t *unindexed; /* keys found by tag only */
	char *ref;	   /* host/path:tag */
	ib_registry_options o;
	json_t *tags; /* record tags of the repository (listed on the first
			 key the index lacks), NULL = not listed */
	int requests; /* made for the index, tag listings and records */
};

static int fetch_index(ib_rcache *rc, json_t **out, ib_error **err)
{
	cleanup_free char *body = NULL;
	size_t len = 0;
	rc->requests++;
	int r = ib_registry_manifest_get(rc->s, rc->tag, &body, &len, NULL, NULL, err);
	if (r == IB_ENOTFOUND) {
		ib_error_free(err);
		*out = json_object();
		return 0;
	}
	if (r < 0)
		return r;
	return ib_rcache_index_decode(body, len, out, err);
}

int ib_rcache_open(ib_rcache **out, const char *ref, bool push, const ib_registry_options *o,
		   ib_error **err)
{
	*out = NULL;
	ib_ref *pr = NULL;
	if (ib_ref_parse(&pr, ref, err) < 0)
		return -1;
	ib_rcache *rc = xcalloc(1, sizeof(*rc));
	rc->repository = xasprintf("%s/%s", pr->domain, pr->path);
	rc->tag = xstrdup(pr->tag ? pr->tag : "index");
	rc->unindexed = json_object();
	rc->ref = xstrdup(ref);
	rc->o = o ? *o : (ib_registry_options)IB_REGISTRY_OPTIONS_INIT;
	cleanup_free char *scope = ib_auth_scope_repository(pr->path, push);
	int r = ib_registry_session_open(&rc->s, pr->domain, pr->path, scope, NULL, o, err);
	ib_ref_free(pr);
	if (r == 0)
		r = fetch_index(rc, &rc->index, err);
	if (r < 0) {
		ib_rcache_free(rc);
		return r;
	}
	*out = rc;
	return 0;
}

void ib_rcache_free(ib_rcache *rc)
{
	if (!rc)
		return;
	ib_registry_session_free(rc->s);
	free(rc->repository);
	free(rc->tag);
	json_decref(rc->index);
	json_decref(rc->unindexed);
	json_decref(rc->tags);
	free(rc->ref);
	free(rc);
}

const char *ib_rcache_repository(const ib_rcache *rc)
{
	return rc->repository;
}

/* The repository's record tags, listed once: one listing answers for
 * every key the index lacks. */
static int list_tags(ib_rcache *rc, ib_error **err)
{
	if (rc->tags)
		return 0;
	char **tags = NULL;
	rc->requests++;
	if (ib_registry_tags(rc->ref, &rc->o, &tags, err) < 0)
		return -1;
	rc->tags = json_object();
	for (size_t i = 0; tags[i]; i++)
		json_object_set_new(rc->tags, tags[i], json_true());
	ib_strv_free(tags);
	return 0;
}

/* The answer to GET <tag of key>: r < 0 an error, IB_ENOTFOUND listed but
 * gone (a miss from now on, without a request), else the record, kept as
 * an unindexed entry of rc->index.  *entry_out borrowed or NULL. */
static int take_record(ib_rcache *rc, const char *key, int r, const char *body, size_t len,
		       const char *digest, json_t **entry_out, ib_error **err)
{
	*entry_out = NULL;
	if (r == IB_ENOTFOUND) {
		cleanup_free char *tag = ib_rcache_key_tag(key);
		json_object_del(rc->tags, tag);
		ib_error_free(err);
		return 0;
	}
	if (r < 0)
		return r;
	json_t *e = NULL;
	if (ib_rcache_record_decode(body, len, key, &e, err) < 0)
		return -1;
	json_object_set_new(e, "record",
			    json_pack("{s:s, s:I}", "digest", digest, "size", (json_int_t)len));
	json_object_set_new(rc->index, key, e);
	json_object_set_new(rc->unindexed, key, json_true());
	*entry_out = e;
	return 0;
}

int ib_rcache_lookup(ib_rcache *rc, const char *key, json_t **entry_out, ib_error **err)
{
	*entry_out = NULL;
	json_t *e = json_object_get(rc->index, key);
	if (e) {
		*entry_out = json_deep_copy(e);
		return 0;
	}
	cleanup_free char *tag = ib_rcache_key_tag(key);
	if (list_tags(rc, err) < 0)
		return -1;
	if (!json_object_get(rc->tags, tag))
		return 0;
	cleanup_free char *body = NULL;
	size_t len = 0;
	char digest[IB_DIGEST_BUFLEN];
	rc->requests++;
	int r = ib_registry_manifest_get(rc->s, tag, &body, &len, NULL, digest, err);
	if (take_record(rc, key, r, body, len, digest, &e, err) < 0)
		return -1;
	*entry_out = e ? json_deep_copy(e) : NULL;
	return 0;
}

/* A record fetched side by side with the others (ib_registry_parallel). */
typedef struct record_job {
	const char *key;
	char *tag;
	char *body;
	size_t len;
	char digest[IB_DIGEST_BUFLEN];
	int r; /* 0, or IB_ENOTFOUND: listed but gone */
} record_job;

static int fetch_record(ib_registry_session *s, CURL *h, size_t i, void *payload,
			ib_error **err)
{
	record_job *j = &((record_job *)payload)[i];
	j->r = ib_registry_manifest_get_with(s, h, j->tag, &j->body, &j->len, j->digest, err);
	if (j->r == IB_ENOTFOUND) {
		ib_error_free(err);
		return 0;
	}
	return j->r;
}

#define RCACHE_PARALLEL 8

static int fetch_records(ib_rcache *rc, record_job *jobs, size_t n, ib_error **err)
{
	rc->requests += (int)n;
	if (ib_registry_parallel(rc->s, n, RCACHE_PARALLEL, fetch_record, jobs, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		json_t *e = NULL;
		if (take_record(rc, jobs[i].key, jobs[i].r, jobs[i].body, jobs[i].len,
				jobs[i].digest, &e, err) < 0)
			return -1;
	}
	return 0;
}

int ib_rcache_prefetch(ib_rcache *rc, json_t *keys, json_t **missing_out, ib_error **err)
{
	*missing_out = NULL;
	size_t n = json_array_size(keys), n_jobs = 0;
	record_job *jobs = xcalloc(n + 1, sizeof(*jobs));
	int r = 0;
	size_t i;
	json_t *k;
	json_array_foreach (keys, i, k) {
		const char *key = json_string_value(k);
		if (json_object_get(rc->index, key))
			continue;
		if ((r = list_tags(rc, err)) < 0)
			break;
		char *tag = ib_rcache_key_tag(key);
		if (!json_object_get(rc->tags, tag)) {
			free(tag);
			continue;
		}
		jobs[n_jobs++] = (record_job){.key = key, .tag = tag};
	}
	if (r == 0 && n_jobs)
		r = fetch_records(rc, jobs, n_jobs, err);
	for (size_t j = 0; j < n_jobs; j++) {
		free(jobs[j].tag);
		free(jobs[j].body);
	}
	free(jobs);
	if (r < 0)
		return -1;
	*missing_out = json_array();
	json_array_foreach (keys, i, k)
		if (!json_object_get(rc->index, json_string_value(k)))
			json_array_append(*missing_out, k);
	return 0;
}

int ib_rcache_requests(const ib_rcache *rc)
{
	return rc->requests;
}

int ib_rcache_fetch_blob(ib_rcache *rc, ib_store *store, const char *digest, int64_t size,
			 ib_error **err)
{
	return ib_registry_blob_download(rc->s, rc->s->h, store, digest, size, err);
}

/* Upload a blob unless the registry has it. */
static int ensure_blob(ib_rcache *rc, ib_store *store, const char *digest, int64_t size,
		       ib_rcache_need_blob_fn need_blob, void *payload, ib_error **err)
{
	int r = ib_registry_blob_head(rc->s, rc->s->h, digest, NULL, err);
	if (r != IB_ENOTFOUND)
		return r;
	if (!ib_store_blob_exists(store, digest)) {
		if (!need_blob)
			return ib_error_setc(err, IB_ENOTFOUND, "blob %.19s is not in the store",
					     digest);
		if (need_blob(payload, digest, size, err) < 0)
			return -1;
	}
	return ib_registry_blob_upload(rc->s, rc->s->h, store, digest, size, NULL, err);
}

static int write_record(ib_rcache *rc, ib_store *store, json_t *entry,
			ib_rcache_need_blob_fn need_blob, void *payload, json_t **indexed,
			ib_error **err)
{
	json_t *l = json_object_get(entry, "layer");
	cleanup_free char *cfg = NULL, *man = NULL;
	size_t clen = 0, mlen = 0;
	char cdigest[IB_DIGEST_BUFLEN], mdigest[IB_DIGEST_BUFLEN], stored[IB_DIGEST_BUFLEN];
	if (ib_rcache_record_encode(entry, &cfg, &clen, cdigest, &man, &mlen, err) < 0)
		return -1;
	if (ensure_blob(rc, store, jstr(l, "digest"),
			json_integer_value(json_object_get(l, "size")), need_blob, payload,
			err) < 0)
		return -1;
	if (ib_store_blob_put(store, cfg, clen, stored, err) < 0 ||
	    ensure_blob(rc, store, cdigest, (int64_t)clen, NULL, NULL, err) < 0)
		return -1;
	cleanup_free char *tag = ib_rcache_key_tag(jstr(entry, "key"));
	if (ib_registry_manifest_put(rc->s, tag, IB_MT_OCI_MANIFEST, man, mlen, mdigest, err) < 0)
		return -1;
	json_t *e = json_pack("{s:O, s:O}", "key", json_object_get(entry, "key"), "layer", l);
	if (jstr(entry, "created_by"))
		json_object_set(e, "created_by", json_object_get(entry, "created_by"));
	if (jstr(entry, "position"))
		json_object_set(e, "position", json_object_get(entry, "position"));
	json_object_set_new(e, "config", json_string(cdigest));
	json_object_set_new(e, "record",
			    json_pack("{s:s, s:I}", "digest", mdigest, "size", (json_int_t)mlen));
	*indexed = e;
	return 0;
}

int ib_rcache_export(ib_rcache *rc, ib_store *store, json_t *entries,
		     ib_rcache_need_blob_fn need_blob, void *payload, size_t *written,
		     ib_error **err)
{
	*written = 0;
	json_t *fresh = json_object();
	size_t i;
	json_t *entry;
	int r = 0;
	json_array_foreach (entries, i, entry) {
		const char *key = jstr(entry, "key");
		if (!key || json_object_get(fresh, key))
			continue;
		json_t *known = json_object_get(rc->index, key);
		if (known) {
			/* the record is there; only the index may lack it */
			if (json_object_get(rc->unindexed, key))
				json_object_set(fresh, key, known);
			continue;
		}
		json_t *e = NULL;
		r = write_record(rc, store, entry, need_blob, payload, &e, err);
		if (r < 0)
			break;
		json_object_set_new(fresh, key, e);
		json_object_set(rc->index, key, e);
		(*written)++;
	}
	/* read, union, write; then check that a concurrent writer did not
	 * drop ours (it cannot drop the records, only index entries) */
	for (int attempt = 0; r == 0 && json_object_size(fresh) && attempt < 4; attempt++) {
		json_t *cur = NULL;
		r = fetch_index(rc, &cur, err);
		if (r < 0)
			break;
		bool missing = false;
		const char *key;
		json_t *e;
		json_object_foreach (fresh, key, e) {
			missing = missing || !json_object_get(cur, key);
		}
		if (!missing) {
			json_decref(cur);
			break;
		}
		json_t *merged = ib_rcache_index_merge(fresh, cur);
		json_decref(cur);
		size_t len = 0;
		cleanup_free char *body = ib_rcache_index_encode(merged, &len);
		json_decref(merged);
		r = ib_registry_manifest_put(rc->s, rc->tag, IB_MT_OCI_INDEX, body, len, NULL, err);
	}
	json_object_clear(rc->unindexed);
	json_decref(fresh);
	return r;
}

int ib_rcache_inputs(ib_rcache *rc, ib_store *store, const char *position, json_t **inputs_out,
		     ib_error **err)
{
	*inputs_out = NULL;
	const char *key;
	json_t *e;
	json_object_foreach (rc->index, key, e) {
		const char *pos = jstr(e, "position");
		const char *cfg = jstr(e, "config");
		if (!pos || !cfg || strcmp(pos, position) != 0)
			continue;
		if (ib_registry_blob_download(rc->s, rc->s->h, store, cfg, -1, err) < 0)
			return -1;
		cleanup_free char *body = NULL;
		size_t len = 0;
		if (ib_store_blob_read(store, cfg, CONFIG_MAX, &body, &len, err) < 0)
			return -1;
		json_t *c = json_loadb(body, len, 0, NULL);
		json_t *in = json_object_get(c, "inputs");
		if (json_is_object(in))
			*inputs_out = json_incref(in);
		json_decref(c);
		return 0;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* shared cache mounts                                                 */

static char *mount_tag(const char *target)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, target, strlen(target));
	return xasprintf("mount-%s", ib_digest_hex(d));
}

static bool dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return true;
	struct dirent *e;
	bool empty = true;
	while (empty && (e = readdir(d)))
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}

/* The layer of the mount artifact at tag, or IB_ENOTFOUND (no error). */
static int mount_layer(ib_rcache *rc, const char *target, char digest[IB_DIGEST_BUFLEN],
		       int64_t *size, ib_error **err)
{
	cleanup_free char *tag = mount_tag(target);
	cleanup_free char *body = NULL;
	size_t len = 0;
	int r = ib_registry_manifest_get(rc->s, tag, &body, &len, NULL, NULL, err);
	if (r == IB_ENOTFOUND) {
		ib_error_free(err);
		return IB_ENOTFOUND;
	}
	if (r < 0)
		return r;
	json_t *m = json_loadb(body, len, 0, NULL);
	json_t *l = json_array_get(json_object_get(m, "layers"), 0);
	const char *t = jstr(json_object_get(m, "annotations"), ANN_MOUNT);
	const char *d = jstr(l, "digest");
	r = 0;
	if (!t || strcmp(t, target) != 0 || !valid_digest(d) ||
	    !json_is_integer(json_object_get(l, "size")))
		r = ib_error_setc(err, IB_EINVALID, "cache mount %s: not a mount artifact", target);
	else {
		memcpy(digest, d, IB_DIGEST_BUFLEN);
		*size = json_integer_value(json_object_get(l, "size"));
	}
	json_decref(m);
	return r;
}

int ib_rcache_mount_import(ib_rcache *rc, ib_store *store, const char *target, const char *dir,
			   bool *imported, ib_error **err)
{
	*imported = false;
	if (!dir_is_empty(dir))
		return 0; /* this runner's own content is warmer */
	char digest[IB_DIGEST_BUFLEN];
	int64_t size = 0;
	int r = mount_layer(rc, target, digest, &size, err);
	if (r == IB_ENOTFOUND)
		return 0;
	if (r < 0 || ib_registry_blob_download(rc->s, rc->s->h, store, digest, size, err) < 0)
		return -1;
	cleanup_close int fd = -1;
	int64_t got = 0;
	if (ib_store_blob_open(store, digest, &fd, &got, err) < 0)
		return -1;
	ib_unpack_options uo = IB_UNPACK_OPTIONS_INIT;
	if (ib_unpack_fd(fd, dir, &uo, NULL, err) < 0)
		return ib_error_wrap(err, "cache mount %s", target);
	*imported = true;
	return 0;
}

int ib_rcache_mount_export(ib_rcache *rc, ib_store *store, const char *target, const char *dir,
			   bool *written, ib_error **err)
{
	*written = false;
	ib_layer_options lo = {.compression = IB_COMP_GZIP};
	ib_layer_result res = {0};
	if (ib_layer_from_upper(store, dir, NULL, &lo, &res, err) < 0)
		return ib_error_wrap(err, "cache mount %s", target);
	char have[IB_DIGEST_BUFLEN];
	int64_t size = 0;
	int r = mount_layer(rc, target, have, &size, err);
	if (r == 0 && !strcmp(have, res.digest))
		return 0; /* unchanged */
	if (r < 0 && r != IB_ENOTFOUND)
		return r;
	cleanup_free char *cfg = NULL;
	json_t *c = json_pack("{s:s, s:s}", "target", target, "diff_id", res.diff_id);
	size_t clen = 0;
	cfg = ib_json_dump_canonical(c, &clen);
	json_decref(c);
	char cdigest[IB_DIGEST_BUFLEN];
	if (ib_store_blob_put(store, cfg, clen, cdigest, err) < 0 ||
	    ensure_blob(rc, store, res.digest, res.size, NULL, NULL, err) < 0 ||
	    ensure_blob(rc, store, cdigest, (int64_t)clen, NULL, NULL, err) < 0)
		return -1;
	json_t *m = json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:I}, s:[{s:s, s:s, s:I}], s:{s:s}}",
			      "schemaVersion", 2, "mediaType", IB_MT_OCI_MANIFEST, "artifactType",
			      IB_RCACHE_MOUNT_TYPE, "config", "mediaType", IB_RCACHE_MOUNT_TYPE,
			      "digest", cdigest, "size", (json_int_t)clen, "layers", "mediaType",
			      IB_MT_OCI_LAYER_GZIP, "digest", res.digest, "size",
			      (json_int_t)res.size, "annotations", ANN_MOUNT, target);
	size_t mlen = 0;
	cleanup_free char *man = ib_json_dump_canonical(m, &mlen);
	json_decref(m);
	cleanup_free char *tag = mount_tag(target);
	if (ib_registry_manifest_put(rc->s, tag, IB_MT_OCI_MANIFEST, man, mlen, NULL, err) < 0)
		return -1;
	*written = true;
	return 0;
}

int ib_rcache_check_diff_id(ib_store *store, const char *digest, const char *diff_id,
			    ib_error **err)
{
	char got[IB_DIGEST_BUFLEN];
	int rc = ib_store_layer_content_digest(store, digest, got, err);
	if (rc == 0 && strcmp(got, diff_id) != 0)
		rc = ib_error_setc(err, IB_EDIGEST,
				   "layer %.19s: its content is %.19s, the record says %.19s",
				   digest, got, diff_id);
	return rc;
}
