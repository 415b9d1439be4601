/* Registry client, pull and push (SPEC §5): index resolution to one
 * platform, blob transfers on a small thread pool (one CURL handle per
 * thread, first failure cancels the others), manifest verification and
 * tagging, and the blob locations that let a push mount instead of
 * upload. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "compress.h"
#include "ref.h"
#include "registry_internal.h"

int ib_registry_parse_platform(const char *s, ib_platform *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	const char *a = strchr(s, '/');
	if (!a || a == s || !a[1])
		return ib_error_setc(err, IB_EINVALID,
				     "invalid platform \"%s\" (want os/arch[/variant])", s);
	const char *v = strchr(a + 1, '/');
	if (v && (v == a + 1 || !v[1] || strchr(v + 1, '/')))
		return ib_error_setc(err, IB_EINVALID,
				     "invalid platform \"%s\" (want os/arch[/variant])", s);
	out->os = xstrndup(s, (size_t)(a - s));
	out->architecture = v ? xstrndup(a + 1, (size_t)(v - a - 1)) : xstrdup(a + 1);
	out->variant = v ? xstrdup(v + 1) : NULL;
	return 0;
}

static void platform_clear(ib_platform *p)
{
	free(p->os);
	free(p->architecture);
	free(p->variant);
	memset(p, 0, sizeof(*p));
}
/* ------------------------------------------------------------------ */
/* parallel blob transfers                                             */

typedef struct job {
	const char *digest;
	int64_t size;
	char *mount_from; /* push: repository to mount from, or NULL */
} job;

/* ib_registry_parallel: the tasks, taken in order by every thread */
typedef struct runner {
	ib_registry_session *s;
	ib_registry_task_fn fn;
	void *payload;
	size_t n, next;
	pthread_mutex_t lock;
	ib_error *err;
	int code;
} runner;

static void run_one(runner *rn, CURL *h)
{
	for (;;) {
		pthread_mutex_lock(&rn->lock);
		if (rn->err || rn->next >= rn->n) {
			pthread_mutex_unlock(&rn->lock);
			return;
		}
		size_t i = rn->next++;
		pthread_mutex_unlock(&rn->lock);
		ib_error *e = NULL;
		int r = h ? rn->fn(rn->s, h, i, rn->payload, &e)
			  : ib_error_setc(&e, IB_ERROR, "cannot initialise libcurl");
		if (r < 0) {
			pthread_mutex_lock(&rn->lock);
			if (!rn->err) {
				rn->err = e;
				rn->code = r;
				e = NULL;
				atomic_store(&rn->s->cancel, true);
			}
			pthread_mutex_unlock(&rn->lock);
			ib_error_free(&e);
			return;
		}
	}
}

static void *worker(void *p)
{
	runner *rn = p;
	CURL *h = curl_easy_init();
	run_one(rn, h);
	if (h)
		curl_easy_cleanup(h);
	return NULL;
}

int ib_registry_parallel(ib_registry_session *s, size_t n, size_t parallel,
			 ib_registry_task_fn fn, void *payload, ib_error **err)
{
	if (n == 0)
		return 0;
	runner rn = {.s = s, .fn = fn, .payload = payload, .n = n};
	pthread_mutex_init(&rn.lock, NULL);
	atomic_store(&s->cancel, false);
	size_t nt = parallel && parallel < n ? parallel : n;
	pthread_t *th = xcalloc(nt, sizeof(*th));
	size_t started = 0;
	/* the calling thread works too, with the session's own handle */
	for (size_t i = 1; i < nt; i++) {
		if (pthread_create(&th[started], NULL, worker, &rn) != 0)
			break;
		started++;
	}
	run_one(&rn, s->h);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	pthread_mutex_destroy(&rn.lock);
	atomic_store(&s->cancel, false);
	if (rn.err) {
		if (err && !*err)
			*err = rn.err;
		else
			ib_error_free(&rn.err);
		return rn.code;
	}
	return 0;
}

/* parallel blob transfers: one task a blob */
typedef struct transfer {
	ib_store *store;
	bool push;
	job *jobs;
} transfer;

static int transfer_one(ib_registry_session *s, CURL *h, size_t i, void *payload,
			ib_error **err)
{
	transfer *t = payload;
	job *j = &t->jobs[i];
	return t->push ? ib_registry_blob_upload(s, h, t->store, j->digest, j->size, j->mount_from,
						 err)
		       : ib_registry_blob_download(s, h, t->store, j->digest, j->size, err);
}

static int run_jobs(ib_registry_session *s, ib_store *store, bool push, job *jobs, size_t n,
		    ib_error **err)
{
	transfer t = {store, push, jobs};
	return ib_registry_parallel(s, n, (size_t)s->o.parallel, transfer_one, &t, err);
}

/* Remember that the session's repository holds the jobs' blobs, for
 * cross-repository mounts by later pushes.  Best effort: a failure costs
 * a mount, never the transfer.  cache NULL = open one for this. */
static void record_blobs(ib_registry_session *s, ib_store *st, ib_cache *cache, const job *jobs,
			 size_t nj)
{
	ib_cache *own = NULL;
	ib_error *e = NULL;
	if (!cache && ib_cache_open(&own, st, &e) == 0)
		cache = own;
	char **digests = xcalloc(nj + 1, sizeof(char *));
	for (size_t i = 0; i < nj; i++)
		digests[i] = (char *)jobs[i].digest;
	if (cache)
		ib_cache_blob_seen(cache, s->repository, digests, &e);
	if (e)
		ib_registry_debug(s, "cannot record blob locations: %s", ib_error_msg(e));
	ib_error_free(&e);
	free(digests);
	ib_cache_free(own);
}

/* ------------------------------------------------------------------ */
/* pull                                                                */

static bool is_foreign(const ib_descriptor *d)
{
	return (d->urls && d->urls[0]) ||
	       (d->media_type &&
		(strstr(d->media_type, "foreign") || strstr(d->media_type, "nondistributable")));
}

static int choose_platform(ib_registry_session *s, const ib_index *idx, const char *reference,
			   const ib_descriptor **out, ib_error **err)
{
	ib_platform want = {0};
	if (s->o.platform) {
		int r = ib_registry_parse_platform(s->o.platform, &want, err);
		if (r < 0)
			return r;
	} else {
		const char *os, *arch, *variant;
		ib_host_platform(&os, &arch, &variant);
		want.os = xstrdup(os);
		want.architecture = xstrdup(arch);
		want.variant = variant ? xstrdup(variant) : NULL;
	}
	int i = ib_platform_select(idx, want.os, want.architecture, want.variant);
	const ib_descriptor *m = i >= 0 ? &idx->manifests[i] : NULL;
	int r = 0;
	if (m && m->media_type &&
	    (!strcmp(m->media_type, IB_MT_OCI_INDEX) ||
	     !strcmp(m->media_type, IB_MT_DOCKER_LIST))) {
		r = ib_error_setc(err, IB_EINVALID, "%s:%s: nested index %s is not supported",
				  s->repository, reference, m->digest);
	} else if (!m) {
		ib_buf avail;
		ib_buf_init(&avail, 4096);
		for (size_t k = 0; k < idx->n_manifests; k++) {
			const ib_platform *p = &idx->manifests[k].platform;
			if (p->os && p->architecture && strcmp(p->os, "unknown") != 0)
				ib_buf_appendf(&avail, "%s%s/%s%s%s", avail.len ? ", " : "", p->os,
					       p->architecture, p->variant ? "/" : "",
					       p->variant ? p->variant : "");
		}
		r = ib_error_setc(
		    err, IB_ENOTFOUND, "%s:%s has no image for platform %s/%s%s%s (available: %s)",
		    s->repository, reference, want.os, want.architecture, want.variant ? "/" : "",
		    want.variant ? want.variant : "", avail.len ? avail.data : "none");
		ib_buf_free(&avail);
	} else {
		*out = m;
	}
	platform_clear(&want);
	return r;
}

static bool config_media_type_ok(const char *mt)
{
	return !mt || !strcmp(mt, IB_MT_OCI_CONFIG) || !strcmp(mt, IB_MT_DOCKER_CONFIG);
}

/* GET reference and, when it is an index, the manifest it lists for the
 * wanted platform.  *body_out, *ctype_out: the image manifest (caller
 * frees); *desc: its descriptor (caller clears, also on failure). */
static int fetch_image_manifest(ib_registry_session *s, const char *reference, char **body_out,
				size_t *len_out, char **ctype_out, ib_descriptor *desc,
				ib_error **err)
{
	cleanup_free char *body = NULL;
	cleanup_free char *ctype = NULL;
	size_t len = 0;
	char digest[IB_DIGEST_BUFLEN];
	int r = ib_registry_manifest_get(s, reference, &body, &len, &ctype, digest, err);
	if (r < 0)
		return r;
	bool is_index = false;
	r = ib_oci_is_index(body, len, &is_index, err);
	if (r < 0)
		return ib_error_wrap(err, "manifest %s", digest);
	if (!is_index) {
		memcpy(desc->digest, digest, IB_DIGEST_BUFLEN);
		desc->size = (int64_t)len;
		*body_out = steal_pointer(&body);
		*len_out = len;
		*ctype_out = steal_pointer(&ctype);
		return 0;
	}
	ib_index *idx = NULL;
	r = ib_index_parse(&idx, body, len, err);
	if (r < 0)
		return ib_error_wrap(err, "index %s", digest);
	const ib_descriptor *m = NULL;
	r = choose_platform(s, idx, reference, &m, err);
	if (r == 0) {
		ib_descriptor_copy(desc, m);
		ib_registry_debug(s, "index %s: using %s for %s/%s", digest, desc->digest,
				  desc->platform.os, desc->platform.architecture);
	}
	ib_index_free(idx);
	if (r < 0)
		return r;
	free(body);
	free(ctype);
	body = NULL;
	ctype = NULL;
	char d2[IB_DIGEST_BUFLEN];
	r = ib_registry_manifest_get(s, desc->digest, &body, &len, &ctype, d2, err);
	if (r < 0)
		return r;
	if (desc->size >= 0 && (int64_t)len != desc->size)
		return ib_error_setc(err, IB_EDIGEST,
				     "manifest %s has %zu bytes, the index says %" PRId64,
				     desc->digest, len, desc->size);
	r = ib_oci_is_index(body, len, &is_index, err);
	if (r == 0 && is_index)
		r = ib_error_setc(err, IB_EINVALID, "nested index %s is not supported",
				  desc->digest);
	if (r < 0)
		return r;
	*body_out = steal_pointer(&body);
	*len_out = len;
	*ctype_out = steal_pointer(&ctype);
	return 0;
}

/* The blobs to download for manifest m (config first, no duplicates).
 * jobs has room for every layer and the config. */
static int pull_jobs(ib_registry_session *s, ib_store *st, const ib_manifest *m,
		     const char *manifest_digest, job *jobs, size_t *nj_out, ib_error **err)
{
	size_t nj = 0;
	if (!config_media_type_ok(m->config.media_type))
		return ib_error_setc(err, IB_EINVALID,
				     "%s is not a container image (config media type %s)",
				     manifest_digest, m->config.media_type);
	if (m->config.size < 0 || m->config.size > (int64_t)IB_MAX_CONFIG_SIZE)
		return ib_error_setc(err, IB_ETOOLARGE, "config %s: %" PRId64 " bytes exceeds %u",
				     m->config.digest, m->config.size, IB_MAX_CONFIG_SIZE);
	jobs[nj++] = (job){m->config.digest, m->config.size, NULL};
	for (size_t i = 0; i < m->n_layers; i++) {
		const ib_descriptor *l = &m->layers[i];
		bool dup = false;
		for (size_t k = 0; k < nj; k++)
			if (!strcmp(jobs[k].digest, l->digest))
				dup = true;
		if (dup)
			continue;
		/* a foreign layer only from the registry itself, never from its URLs */
		if (is_foreign(l) && !ib_store_blob_exists(st, l->digest) &&
		    ib_registry_blob_head(s, s->h, l->digest, NULL, NULL) != 0)
			return ib_error_setc(err, IB_ENOTFOUND,
					     "foreign layer %s is not available from %s; "
					     "imgbuild does not fetch layers from external URLs",
					     l->digest, s->host);
		jobs[nj++] = (job){l->digest, l->size, NULL};
	}
	*nj_out = nj;
	return 0;
}

/* The downloaded config must be an image config matching the layers; it
 * gives desc its platform when the index did not. */
static int check_config(ib_store *st, const ib_manifest *m, ib_descriptor *desc, ib_error **err)
{
	cleanup_free char *cbuf = NULL;
	size_t clen = 0;
	json_t *cfg = NULL;
	int r = ib_store_blob_read(st, m->config.digest, IB_MAX_CONFIG_SIZE, &cbuf, &clen, err);
	if (r == 0)
		r = ib_config_parse(&cfg, cbuf, clen, err);
	if (r == 0 && ib_config_n_diff_ids(cfg) != m->n_layers)
		r = ib_error_setc(err, IB_EINVALID, "config %s lists %zu layers, the manifest %zu",
				  m->config.digest, ib_config_n_diff_ids(cfg), m->n_layers);
	if (r == 0 && !desc->platform.os) {
		const char *os = json_string_value(json_object_get(cfg, "os"));
		const char *arch = json_string_value(json_object_get(cfg, "architecture"));
		const char *var = json_string_value(json_object_get(cfg, "variant"));
		desc->platform.os = os ? xstrdup(os) : NULL;
		desc->platform.architecture = arch ? xstrdup(arch) : NULL;
		desc->platform.variant = var ? xstrdup(var) : NULL;
	}
	json_decref(cfg);
	return r < 0 ? ib_error_wrap(err, "config") : 0;
}

/* Store the manifest bytes and tag them. */
static int store_manifest(ib_store *st, const char *tagname, const char *body, size_t len,
			  ib_descriptor *desc, ib_error **err)
{
	char stored[IB_DIGEST_BUFLEN];
	int r = ib_store_blob_put(st, body, len, stored, err);
	if (r < 0)
		return r;
	if (strcmp(stored, desc->digest) != 0)
		return ib_error_setc(err, IB_EDIGEST, "stored manifest as %s, expected %s", stored,
				     desc->digest);
	/* drop fields the tag descriptor should not carry over from the index */
	json_decref(desc->annotations);
	desc->annotations = NULL;
	ib_strv_free(desc->urls);
	desc->urls = NULL;
	return tagname ? ib_store_tag_set(st, tagname, desc, err) : 0;
}

static int pull_with_session(ib_registry_session *s, ib_store *st, const char *tagname,
			     const char *reference, ib_descriptor *desc_out, ib_error **err)
{
	cleanup_free char *body = NULL;
	cleanup_free char *ctype = NULL;
	size_t len = 0;
	ib_descriptor desc = {0};
	ib_manifest *m = NULL;
	job *jobs = NULL;
	size_t nj = 0;
	int r = fetch_image_manifest(s, reference, &body, &len, &ctype, &desc, err);
	if (r < 0)
		goto out;
	r = ib_manifest_parse(&m, body, len, err);
	if (r < 0) {
		ib_error_wrap(err, "manifest %s", desc.digest);
		goto out;
	}
	free(desc.media_type);
	desc.media_type = xstrdup(m->media_type ? m->media_type
				  : ctype	? ctype
						: IB_MT_OCI_MANIFEST);
	jobs = xcalloc(m->n_layers + 1, sizeof(job));
	r = pull_jobs(s, st, m, desc.digest, jobs, &nj, err);
	if (r == 0)
		r = run_jobs(s, st, false, jobs, nj, err);
	if (r == 0)
		r = check_config(st, m, &desc, err);
	if (r == 0)
		r = store_manifest(st, tagname, body, len, &desc, err);
	if (r < 0)
		goto out;
	record_blobs(s, st, NULL, jobs, nj);
	if (desc_out)
		ib_descriptor_copy(desc_out, &desc);
out:
	free(jobs);
	ib_manifest_free(m);
	ib_descriptor_clear(&desc);
	return r;
}

int ib_registry_pull(ib_store *st, const char *refstr, const ib_registry_options *o,
		     ib_descriptor *desc_out, ib_error **err)
{
	int r = ib_registry_pull_search(st, refstr, o, desc_out, err);
	if (r != 1)
		return r;
	ib_ref *ref = NULL;
	r = ib_ref_parse(&ref, refstr, err);
	if (r < 0)
		return r;
	cleanup_free char *full = ib_ref_string(ref);
	ib_registry_session *s = NULL;
	cleanup_free char *scope = ib_auth_scope_repository(ref->path, false);
	r = ib_registry_session_open(&s, ref->domain, ref->path, scope, NULL, o, err);
	if (r == 0) {
		const char *reference = ref->digest ? ref->digest : ref->tag ? ref->tag : "latest";
		r = pull_with_session(s, st, full, reference, desc_out, err);
	}
	ib_registry_session_free(s);
	ib_ref_free(ref);
	return r;
}

/* ------------------------------------------------------------------ */
/* push                                                                */

/* Uncompressed layers (a docker archive's layer.tar) are pushed as gzip
 * blobs.  The compressed copy is stored, and the store remembers which
 * copy belongs to which layer in ROOT/cache/compressed-layers.json ({"LAYER": {"digest",
 * "size"}}) so the next push of the same layer neither compresses nor
 * uploads again.  An entry whose blob is gone (pruned) is made again. */
#define COMPRESSED_MAP_CAP (16u << 20)
#define COPY_BUF (1u << 20)

static json_t *compressed_map_load(const char *path)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	json_t *j = NULL;
	if (ib_read_file(path, COMPRESSED_MAP_CAP, &buf, &len, NULL) == 0)
		j = json_loadb(buf, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = json_object();
	}
	return j;
}

static bool layer_is_uncompressed(const ib_descriptor *d)
{
	ib_compression c;
	return d->media_type && ib_layer_compression(d->media_type, &c, NULL) == 0 &&
	       c == IB_COMP_NONE;
}

typedef struct blob_sink {
	ib_blob_writer *w;
	ib_error *err;
} blob_sink;

static int sink_to_blob(const void *data, size_t len, void *payload)
{
	blob_sink *b = payload;
	return b->err ? -1 : ib_blob_writer_write(b->w, data, len, &b->err);
}

/* gzip the stored blob d into a new store blob (source re-hashed). */
static int compress_blob(ib_store *st, const ib_descriptor *d, char digest_out[IB_DIGEST_BUFLEN],
			 int64_t *size_out, ib_error **err)
{
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(st, d->digest, &fd, &size, err);
	if (r < 0)
		return r;
	blob_sink bs = {0};
	if ((r = ib_blob_writer_new(&bs.w, st, err)) < 0)
		return r;
	ib_compressor *c = NULL;
	r = ib_compressor_new(&c, IB_COMP_GZIP, 0, 0, sink_to_blob, &bs, err);
	ib_digest_ctx *ctx = ib_digest_new();
	cleanup_free char *buf = xmalloc(COPY_BUF);
	while (r == 0) {
		ssize_t n = read(fd, buf, COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = ib_error_set(err, errno, "read blob %s", d->digest);
		if (n <= 0)
			break;
		ib_digest_update(ctx, buf, (size_t)n);
		r = ib_compressor_write(c, buf, (size_t)n, err);
	}
	if (r == 0)
		r = ib_compressor_finish(c, err);
	ib_compressor_free(c);
	char got[IB_DIGEST_BUFLEN];
	ib_digest_final(ctx, got);
	ib_digest_free(ctx);
	/* The sink's own error says more than "the sink failed". */
	if (r < 0 && bs.err && err) {
		ib_error_free(err);
		*err = steal_pointer(&bs.err);
	}
	ib_error_free(&bs.err);
	if (r == 0 && strcmp(got, d->digest) != 0)
		r = ib_error_setc(err, IB_EDIGEST,
				  "blob %s in the store is corrupt (content is %s)", d->digest,
				  got);
	if (r < 0) {
		ib_blob_writer_abort(bs.w);
		return r;
	}
	return ib_blob_writer_commit(bs.w, NULL, -1, digest_out, size_out, err);
}

/* The gzip copy of the uncompressed layer d: remembered, or made now. */
static int compressed_layer(ib_store *st, const ib_descriptor *d, bool docker, ib_descriptor *out,
			    ib_error **err)
{
	cleanup_free char *path = ib_cache_compressed_layers_path(st);
	memset(out, 0, sizeof(*out));
	{
		json_t *map = compressed_map_load(path);
		json_t *e = json_object_get(map, d->digest);
		const char *cd = json_string_value(json_object_get(e, "digest"));
		json_t *sz = json_object_get(e, "size");
		if (cd && json_is_integer(sz) && ib_digest_validate(cd, NULL) == 0 &&
		    ib_store_blob_exists(st, cd)) {
			memcpy(out->digest, cd, IB_DIGEST_BUFLEN);
			out->size = (int64_t)json_integer_value(sz);
		}
		json_decref(map);
	}
	if (!out->digest[0]) {
		int r = compress_blob(st, d, out->digest, &out->size, err);
		if (r < 0)
			return ib_error_wrap(err, "compress layer %s", d->digest);
		/* Reload before writing: another push may have added entries. */
		json_t *map = compressed_map_load(path);
		json_object_set_new(
		    map, d->digest,
		    json_pack("{s:s,s:I}", "digest", out->digest, "size", (json_int_t)out->size));
		char *text = json_dumps(map, JSON_COMPACT | JSON_SORT_KEYS);
		json_decref(map);
		ib_error *e = NULL;
		cleanup_free char *dir = ib_path_join(ib_store_root(st), "cache");
		if (!text || ib_mkdir_p(dir, 0700, &e) < 0 ||
		    ib_write_file_atomic(path, text, strlen(text), 0644, &e) < 0)
			ib_error_free(&e); /* only costs a compression next time */
		free(text);
	}
	out->media_type = xstrdup(ib_layer_media_type(IB_COMP_GZIP, docker));
	if (d->annotations)
		out->annotations = json_deep_copy(d->annotations);
	return 0;
}

/* What goes to the registry for one image manifest. */
typedef struct push_plan {
	ib_manifest m; /* layers and config owned here */
	char *bytes;
	size_t len;
	const char *media_type; /* borrowed from the image */
	char digest[IB_DIGEST_BUFLEN];
} push_plan;

static void push_plan_clear(push_plan *p)
{
	for (size_t i = 0; i < p->m.n_layers; i++)
		ib_descriptor_clear(&p->m.layers[i]);
	free(p->m.layers);
	ib_descriptor_clear(&p->m.config);
	free(p->bytes);
	memset(p, 0, sizeof(*p));
}

/* The image's manifest bytes as stored, or a copy over gzip layers when it
 * has uncompressed ones (stored too, so the store holds what was pushed). */
static int plan_push(ib_store *st, const ib_image *img, push_plan *p, ib_error **err)
{
	const ib_manifest *m = img->manifest;
	memset(p, 0, sizeof(*p));
	p->media_type = img->desc.media_type ? img->desc.media_type
			: m->media_type	     ? m->media_type
					     : IB_MT_OCI_MANIFEST;
	bool docker = !strcmp(p->media_type, IB_MT_DOCKER_MANIFEST);
	bool convert = false;
	p->m.layers = xcalloc(m->n_layers ? m->n_layers : 1, sizeof(ib_descriptor));
	for (size_t i = 0; i < m->n_layers; i++) {
		int r = 0;
		if (layer_is_uncompressed(&m->layers[i]) && !is_foreign(&m->layers[i])) {
			r = compressed_layer(st, &m->layers[i], docker, &p->m.layers[i], err);
			convert = true;
		} else {
			ib_descriptor_copy(&p->m.layers[i], &m->layers[i]);
		}
		p->m.n_layers = i + 1;
		if (r < 0)
			return r;
	}
	ib_descriptor_copy(&p->m.config, &m->config);
	if (!convert) {
		p->bytes = xmalloc(img->manifest_len + 1);
		memcpy(p->bytes, img->manifest_raw, img->manifest_len);
		p->len = img->manifest_len;
		memcpy(p->digest, img->desc.digest, IB_DIGEST_BUFLEN);
		return 0;
	}
	p->m.media_type = m->media_type;
	p->m.annotations = m->annotations;
	p->bytes = ib_manifest_serialize(&p->m, &p->len);
	p->m.media_type = NULL;
	p->m.annotations = NULL;
	return ib_store_blob_put(st, p->bytes, p->len, p->digest, err);
}

/* A layer the store lacks (a lazily tagged image's) whose remote record
 * names a repository on domain other than the destination: mount it from
 * there, so it is neither downloaded nor uploaded.  Else NULL: the upload
 * fetches it first (ib_store_blob_open). */
static char *remote_mount_from(ib_store *st, const char *digest, const char *domain,
			       const char *dest_repository)
{
	ib_store_remote rec;
	if (ib_store_blob_exists(st, digest) || ib_store_remote_get(st, digest, &rec) < 0)
		return NULL;
	char *from = NULL;
	size_t dl = strlen(domain);
	if (!strncmp(rec.repository, domain, dl) && rec.repository[dl] == '/' &&
	    strcmp(rec.repository, dest_repository) != 0)
		from = xstrdup(rec.repository + dl + 1);
	ib_store_remote_clear(&rec);
	return from;
}

/* Push the blobs of p, then its manifest under reference (tag or digest);
 * digest_out = what the registry holds. */
static int push_manifest(ib_registry_session *s, ib_store *st, ib_cache *cache, const ib_ref *sref,
			 const ib_ref *dref, const push_plan *p, const char *reference,
			 char digest_out[IB_DIGEST_BUFLEN], ib_error **err)
{
	const ib_manifest *m = &p->m;
	job *jobs = xcalloc(m->n_layers + 1, sizeof(job));
	size_t nj = 0;
	for (size_t i = 0; i <= m->n_layers; i++) {
		const ib_descriptor *d = i < m->n_layers ? &m->layers[i] : &m->config;
		bool dup = false;
		for (size_t k = 0; k < nj; k++)
			if (!strcmp(jobs[k].digest, d->digest))
				dup = true;
		if (dup)
			continue;
		if (i < m->n_layers && is_foreign(d)) {
			ib_registry_report_event(s, d->digest, "skipped",
						 (uint64_t)(d->size > 0 ? d->size : 0));
			continue;
		}
		job *j = &jobs[nj++];
		j->digest = d->digest;
		j->size = d->size;
		j->mount_from = remote_mount_from(st, d->digest, dref->domain, s->repository);
		if (!j->mount_from && cache)
			j->mount_from =
			    ib_cache_blob_where(cache, d->digest, dref->domain, s->repository);
		if (!j->mount_from && sref && !strcmp(sref->domain, dref->domain) &&
		    strcmp(sref->path, dref->path) != 0)
			j->mount_from = xstrdup(sref->path);
	}
	int r = run_jobs(s, st, true, jobs, nj, err);
	if (r == 0)
		r = ib_registry_manifest_put(s, reference ? reference : p->digest, p->media_type,
					     p->bytes, p->len, digest_out, err);
	if (r == 0 && strcmp(digest_out, p->digest) != 0)
		r = ib_error_setc(err, IB_EDIGEST,
				  "local manifest bytes hash to %s, not %s; run 'imgbuild verify'",
				  digest_out, p->digest);
	if (r == 0)
		record_blobs(s, st, cache, jobs, nj);
	for (size_t i = 0; i < nj; i++)
		free(jobs[i].mount_from);
	free(jobs);
	return r;
}

static char *platform_name(const ib_platform *p)
{
	return xasprintf("%s/%s%s%s", p->os ? p->os : "?", p->architecture ? p->architecture : "?",
			 p->variant ? "/" : "", p->variant ? p->variant : "");
}

/* The index a tag of the store names, or NULL (not a tag, not an index). */
static ib_index *tagged_index(ib_store *st, const char *src_ref, ib_descriptor *desc_out,
			      char **raw_out, size_t *len_out)
{
	ib_ref *r = NULL;
	if (ib_ref_parse(&r, src_ref, NULL) < 0)
		return NULL;
	ib_index *idx = NULL;
	if (r->tag && !r->digest) {
		cleanup_free char *full = ib_ref_string(r);
		cleanup_free char *raw = NULL;
		size_t len = 0;
		bool is_index = false;
		if (ib_store_tag_get(st, full, desc_out, NULL) == 0 &&
		    ib_store_blob_read(st, desc_out->digest, IB_MAX_MANIFEST_SIZE, &raw, &len,
				       NULL) == 0 &&
		    ib_oci_is_index(raw, len, &is_index, NULL) == 0 && is_index &&
		    ib_index_parse(&idx, raw, len, NULL) == 0) {
			*raw_out = steal_pointer(&raw);
			*len_out = len;
		}
	}
	ib_ref_free(r);
	return idx;
}

/* Every platform of the index (all present in the store, checked before
 * anything is sent), each by digest, then the index under the tag. */
static int push_index(ib_registry_session *s, ib_store *st, ib_cache *cache, const char *src_ref,
		      const ib_ref *sref, const ib_ref *dref, ib_index *idx, const char *raw,
		      size_t raw_len, const char *index_mt, char digest_out[IB_DIGEST_BUFLEN],
		      ib_error **err)
{
	size_t n = idx->n_manifests;
	ib_image **imgs = xcalloc(n ? n : 1, sizeof(*imgs));
	int r = 0;
	for (size_t i = 0; r == 0 && i < n; i++) {
		ib_descriptor *d = &idx->manifests[i];
		cleanup_free char *pf = platform_name(&d->platform);
		bool nested = d->media_type && (!strcmp(d->media_type, IB_MT_OCI_INDEX) ||
						!strcmp(d->media_type, IB_MT_DOCKER_LIST));
		if (nested) {
			r = ib_error_setc(err, IB_EINVALID,
					  "%s: nested image indexes cannot be pushed", src_ref);
			break;
		}
		if (!ib_store_blob_exists(st, d->digest) ||
		    ib_store_image_load_digest(st, d->digest, &imgs[i], NULL) < 0) {
			r = ib_error_setc(err, IB_ENOTFOUND,
					  "%s: platform %s (%s) is not in the store; pull it, or "
					  "push one platform with --platform OS/ARCH",
					  src_ref, pf, d->digest);
			break;
		}
		const ib_manifest *m = imgs[i]->manifest;
		for (size_t k = 0; r == 0 && k < m->n_layers; k++)
			if (!is_foreign(&m->layers[k]) &&
			    !ib_store_blob_exists(st, m->layers[k].digest) &&
			    !ib_store_blob_is_remote(st, m->layers[k].digest))
				r = ib_error_setc(err, IB_ENOTFOUND,
						  "%s: platform %s lacks layer %s in the store",
						  src_ref, pf, m->layers[k].digest);
	}
	bool changed = false;
	for (size_t i = 0; r == 0 && i < n; i++) {
		push_plan p;
		r = plan_push(st, imgs[i], &p, err);
		char got[IB_DIGEST_BUFLEN];
		if (r == 0)
			r = push_manifest(s, st, cache, sref, dref, &p, NULL, got, err);
		if (r == 0 && strcmp(got, idx->manifests[i].digest) != 0) {
			memcpy(idx->manifests[i].digest, got, IB_DIGEST_BUFLEN);
			idx->manifests[i].size = (int64_t)p.len;
			changed = true;
		}
		push_plan_clear(&p);
	}
	for (size_t i = 0; i < n; i++)
		ib_image_free(imgs[i]);
	free(imgs);
	if (r < 0)
		return r;
	push_plan ip = {0};
	ip.media_type = index_mt;
	if (changed) {
		ip.bytes = ib_index_serialize(idx, &ip.len);
		ib_digest_buffer(ip.digest, ip.bytes, ip.len);
	} else {
		ip.bytes = xmalloc(raw_len + 1);
		memcpy(ip.bytes, raw, raw_len);
		ip.len = raw_len;
		ib_digest_buffer(ip.digest, raw, raw_len);
	}
	r = ib_registry_manifest_put(s, dref->tag ? dref->tag : ip.digest, index_mt, ip.bytes,
				     ip.len, digest_out, err);
	if (r == 0 && strcmp(digest_out, ip.digest) != 0)
		r = ib_error_setc(err, IB_EDIGEST, "index bytes hash to %s, not %s", digest_out,
				  ip.digest);
	free(ip.bytes);
	return r;
}

int ib_registry_push(ib_store *st, const char *src_ref, const char *dest_ref,
		     const ib_registry_options *o, char digest_out[IB_DIGEST_BUFLEN],
		     ib_error **err)
{
	ib_descriptor top = {0};
	cleanup_free char *raw = NULL;
	size_t raw_len = 0;
	ib_index *idx = o->platform ? NULL : tagged_index(st, src_ref, &top, &raw, &raw_len);
	ib_image *img = NULL;
	int r = 0;
	if (!idx && o->platform) {
		ib_platform pf = {0};
		r = ib_registry_parse_platform(o->platform, &pf, err);
		if (r == 0)
			r = ib_store_image_load_platform(st, src_ref, pf.os, pf.architecture,
							 pf.variant, &img, err);
		platform_clear(&pf);
	} else if (!idx) {
		r = ib_store_image_load(st, src_ref, &img, err);
	}
	if (r < 0) {
		ib_descriptor_clear(&top);
		return r;
	}
	ib_ref *dref = NULL, *sref = NULL;
	ib_registry_session *s = NULL;
	ib_cache *cache = NULL;
	push_plan p = {0};
	/* Compress what needs it before the registry session opens. */
	if (img && (r = plan_push(st, img, &p, err)) < 0)
		goto out;
	r = ib_ref_parse(&dref, dest_ref ? dest_ref : src_ref, err);
	if (r < 0)
		goto out;
	if (ib_ref_parse(&sref, src_ref, NULL) < 0)
		sref = NULL;
	{
		const char *local = idx ? top.digest : img->desc.digest;
		if (dref->digest && strcmp(dref->digest, local) != 0) {
			r = ib_error_setc(err, IB_EDIGEST, "%s is %s, not %s", src_ref, local,
					  dref->digest);
			goto out;
		}
	}
	{
		cleanup_free char *scope = ib_auth_scope_repository(dref->path, true);
		r = ib_registry_session_open(&s, dref->domain, dref->path, scope, NULL, o, err);
		if (r < 0)
			goto out;
	}
	if (ib_cache_open(&cache, st, NULL) < 0)
		cache = NULL; /* then no mounts from what earlier runs saw */
	if (idx) {
		const char *mt = idx->media_type  ? idx->media_type
				 : top.media_type ? top.media_type
						  : IB_MT_OCI_INDEX;
		r = push_index(s, st, cache, src_ref, sref, dref, idx, raw, raw_len, mt, digest_out,
			       err);
		goto out;
	}
	{
		char d[IB_DIGEST_BUFLEN];
		r = push_manifest(s, st, cache, sref, dref, &p, dref->tag, d, err);
		if (r == 0 && digest_out)
			memcpy(digest_out, d, IB_DIGEST_BUFLEN);
	}
out:
	push_plan_clear(&p);
	ib_cache_free(cache);
	ib_registry_session_free(s);
	ib_ref_free(dref);
	ib_ref_free(sref);
	ib_image_free(img);
	ib_index_free(idx);
	ib_descriptor_clear(&top);
	return r;
}

int ib_registry_fetch_blob(ib_store *st, const char *repository, const char *digest, int64_t size,
			   const ib_registry_options *o, ib_error **err)
{
	const char *slash = strchr(repository, '/');
	if (!slash || slash == repository || !slash[1])
		return ib_error_setc(err, IB_EINVALID, "invalid repository \"%s\"", repository);
	cleanup_free char *domain = xstrndup(repository, (size_t)(slash - repository));
	cleanup_free char *scope = ib_auth_scope_repository(slash + 1, false);
	ib_registry_session *s = NULL;
	int r = ib_registry_session_open(&s, domain, slash + 1, scope, NULL, o, err);
	if (r == 0)
		r = ib_registry_blob_download(s, s->h, st, digest, size, err);
	if (r == 0) {
		job j = {digest, size, NULL};
		record_blobs(s, st, NULL, &j, 1);
	}
	ib_registry_session_free(s);
	return r;
}
