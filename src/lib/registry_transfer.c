/* Registry client, pull and push (SPEC §5): index resolution to one
 * platform, blob transfers on a small thread pool (one CURL handle per
 * thread, first failure cancels the others), manifest verification and
 * tagging, and the blob locations that let a push mount instead of
 * upload. */
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
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

typedef struct runner {
	ib_registry_session *s;
	ib_store *store;
	bool push;
	job *jobs;
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
		job *j = &rn->jobs[rn->next++];
		pthread_mutex_unlock(&rn->lock);
		ib_error *e = NULL;
		int r = rn->push ? ib_registry_blob_upload(rn->s, h, rn->store, j->digest, j->size,
							   j->mount_from, &e)
				 : ib_registry_blob_download(rn->s, h, rn->store, j->digest,
							     j->size, &e);
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
	if (!h) {
		pthread_mutex_lock(&rn->lock);
		if (!rn->err) {
			ib_error_setc(&rn->err, IB_ERROR, "cannot initialise libcurl");
			rn->code = IB_ERROR;
			atomic_store(&rn->s->cancel, true);
		}
		pthread_mutex_unlock(&rn->lock);
		return NULL;
	}
	run_one(rn, h);
	curl_easy_cleanup(h);
	return NULL;
}

static int run_jobs(ib_registry_session *s, ib_store *store, bool push, job *jobs, size_t n,
		    ib_error **err)
{
	if (n == 0)
		return 0;
	runner rn = {.s = s, .store = store, .push = push, .jobs = jobs, .n = n};
	pthread_mutex_init(&rn.lock, NULL);
	atomic_store(&s->cancel, false);
	size_t nt = (size_t)s->o.parallel < n ? (size_t)s->o.parallel : n;
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

int ib_registry_push(ib_store *st, const char *src_ref, const char *dest_ref,
		     const ib_registry_options *o, char digest_out[IB_DIGEST_BUFLEN],
		     ib_error **err)
{
	ib_image *img = NULL;
	int r = ib_store_image_load(st, src_ref, &img, err);
	if (r < 0)
		return r;
	ib_ref *dref = NULL, *sref = NULL;
	r = ib_ref_parse(&dref, dest_ref ? dest_ref : src_ref, err);
	if (r < 0) {
		ib_image_free(img);
		return r;
	}
	if (ib_ref_parse(&sref, src_ref, NULL) < 0)
		sref = NULL;
	ib_registry_session *s = NULL;
	job *jobs = NULL;
	ib_cache *cache = NULL;
	size_t nj = 0;
	if (dref->digest && strcmp(dref->digest, img->desc.digest) != 0) {
		r = ib_error_setc(err, IB_EDIGEST, "%s is %s, not %s", src_ref, img->desc.digest,
				  dref->digest);
		goto out;
	}
	{
		cleanup_free char *scope = ib_auth_scope_repository(dref->path, true);
		r = ib_registry_session_open(&s, dref->domain, dref->path, scope, NULL, o, err);
		if (r < 0)
			goto out;
	}
	ib_manifest *m = img->manifest;
	jobs = xcalloc(m->n_layers + 1, sizeof(job));
	if (ib_cache_open(&cache, st, NULL) < 0)
		cache = NULL; /* then no mounts from what earlier runs saw */
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
		j->mount_from =
		    cache ? ib_cache_blob_where(cache, d->digest, dref->domain, s->repository)
			  : NULL;
		if (!j->mount_from && sref && !strcmp(sref->domain, dref->domain) &&
		    strcmp(sref->path, dref->path) != 0)
			j->mount_from = xstrdup(sref->path);
	}
	r = run_jobs(s, st, true, jobs, nj, err);
	if (r < 0)
		goto out;
	{
		const char *mt = img->desc.media_type ? img->desc.media_type
				 : m->media_type      ? m->media_type
						      : IB_MT_OCI_MANIFEST;
		const char *reference = dref->tag ? dref->tag : img->desc.digest;
		char d[IB_DIGEST_BUFLEN];
		r = ib_registry_manifest_put(s, reference, mt, img->manifest_raw, img->manifest_len,
					     d, err);
		if (r < 0)
			goto out;
		if (strcmp(d, img->desc.digest) != 0) {
			r = ib_error_setc(
			    err, IB_EDIGEST,
			    "local manifest bytes hash to %s, not %s; run 'imgbuild verify'", d,
			    img->desc.digest);
			goto out;
		}
		if (digest_out)
			memcpy(digest_out, d, IB_DIGEST_BUFLEN);
	}
	record_blobs(s, st, cache, jobs, nj);
out:
	for (size_t i = 0; jobs && i < nj; i++)
		free(jobs[i].mount_from);
	free(jobs);
	ib_cache_free(cache);
	ib_registry_session_free(s);
	ib_ref_free(dref);
	ib_ref_free(sref);
	ib_image_free(img);
	return r;
}
