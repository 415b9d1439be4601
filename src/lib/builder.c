/* Executes a plan: a key pass computing every step's cache key (before
 * the cache registries are asked, all at once), then the stages in order,
 * each step's lookup, layers committed to the store, the final image
 * written and tagged.
 * The steps themselves live in build_config.c, build_run.c and
 * build_copy.c. */
#include "builder_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "compress.h"
#include "digest.h"
#include "handoff.h"
#include "imgdiff.h"
#include "layer_jobs.h"
#include "plan.h"
#include "regconf.h"
#include "progress.h"
#include "ref.h"
#include "registry.h"
#include "remote_cache.h"
#include "sandbox.h"
#include "unpack.h"
#include "util.h"

void build_step_key(char out[IB_DIGEST_BUFLEN], const char *parent, json_t *step, json_t *extra)
{
	json_t *clean = json_deep_copy(step);
	json_object_del(clean, "line");
	size_t l1 = 0, l2 = 0;
	cleanup_free char *a = ib_json_dump_canonical(clean, &l1);
	cleanup_free char *b = ib_json_dump_canonical(extra, &l2);
	json_decref(clean);
	ib_digest_ctx *c = ib_digest_new();
	ib_digest_update(c, "imgbuild-step-v1\n", 17);
	ib_digest_update(c, parent, strlen(parent));
	ib_digest_update(c, "\n", 1);
	ib_digest_update(c, a, l1);
	ib_digest_update(c, "\n", 1);
	ib_digest_update(c, b, l2);
	ib_digest_final(c, out);
	ib_digest_free(c);
}

int build_recipe_error(builder *b, json_t *step, ib_error **err)
{
	json_int_t line = json_integer_value(json_object_get(step, "line"));
	const char *recipe = b->o->recipe_path ? b->o->recipe_path : jstr(b->plan, "recipe");
	return ib_error_wrap(err, "%s:%lld", recipe ? recipe : "recipe", (long long)line);
}

stage_state *build_find_stage(builder *b, const char *name)
{
	for (size_t i = 0; i < b->n_stages; i++)
		if (!strcmp(b->stages[i].name, name))
			return &b->stages[i];
	return NULL;
}

/* Make sure the layer is unpacked under ROOT/layers (overlay format). */
int build_unpack_layer(ib_store *s, const char *digest, const char *diff_id, ib_error **err)
{
	if (ib_store_layer_unpacked(s, diff_id))
		return 0;
	cleanup_free char *tmp = ib_store_tmp_path(s, "unpack");
	if (ib_mkdir_p(tmp, 0755, err) < 0)
		return -1;
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(s, digest, &fd, &size, err);
	if (r == 0) {
		ib_unpack_options uo = IB_UNPACK_OPTIONS_INIT;
		uo.whiteouts = IB_WHITEOUT_OVERLAY;
		r = ib_unpack_fd(fd, tmp, &uo, NULL, err);
	}
	if (r == 0)
		r = ib_store_layer_install(s, tmp, diff_id, err);
	ib_error *e2 = NULL;
	ib_rm_rf(tmp, &e2);
	ib_error_free(&e2);
	if (r < 0)
		return ib_error_wrap(err, "unpack layer %.19s", digest);
	return 0;
}

int build_ensure_unpacked(builder *b, layer_ref *l, ib_error **err)
{
	if (ib_store_layer_unpacked(b->store, l->diff_id))
		return 0;
	/* its blob is still being compressed */
	if (!l->desc.digest[0] && build_wait_layers(b, err) < 0)
		return -1;
	/* a layer a cache hit left in the cache registry comes now */
	if (build_fetch_blob(b, l->desc.digest, l->desc.size, err) < 0)
		return ib_error_wrap(err, "unpack layer %.19s", l->desc.digest);
	return build_unpack_layer(b->store, l->desc.digest, l->diff_id, err);
}

int build_ensure_stage_unpacked(builder *b, stage_state *st, ib_error **err)
{
	for (size_t i = 0; i < st->n_layers; i++)
		if (build_ensure_unpacked(b, &st->layers[i], err) < 0)
			return -1;
	return 0;
}

/* The stage's unpacked layer dirs, top-most first, each diff_id once.
 * Overlay refuses a lower dir given twice (ELOOP), and a second, deeper
 * copy of a layer changes nothing: every path it has, whiteouts and opaque
 * dirs included, the upper copy has too and shadows it. */
char **build_lower_dirs_of(ib_store *s, const char *const *diff_ids, size_t n_ids)
{
	char **out = xcalloc(n_ids + 1, sizeof(char *));
	size_t n = 0;
	for (size_t i = n_ids; i > 0; i--) {
		const char *id = diff_ids[i - 1];
		bool seen = false;
		for (size_t k = n_ids; k > i && !seen; k--)
			seen = !strcmp(diff_ids[k - 1], id);
		if (!seen)
			out[n++] = ib_store_layer_dir(s, id);
	}
	return out;
}

char **build_lower_dirs(builder *b, stage_state *st)
{
	const char **ids = xcalloc(st->n_layers + 1, sizeof(char *));
	for (size_t i = 0; i < st->n_layers; i++)
		ids[i] = st->layers[i].diff_id;
	char **out = build_lower_dirs_of(b->store, ids, st->n_layers);
	free(ids);
	return out;
}

/* Add a layer to the stage; the config's diff_ids is the caller's. */
static void push_layer(stage_state *st, const ib_descriptor *d, const char *diff_id)
{
	st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(layer_ref));
	layer_ref *l = &st->layers[st->n_layers++];
	memset(l, 0, sizeof(*l));
	ib_descriptor_copy(&l->desc, d);
	memcpy(l->diff_id, diff_id, IB_DIGEST_BUFLEN);
}

static json_t *layer_entry_json(const ib_layer_result *r, const char *media_type,
				const char *created_by)
{
	return json_pack("{s:{s:s, s:s, s:I, s:s}, s:s}", "layer", "digest", r->digest, "diff_id",
			 r->diff_id, "size", (json_int_t)r->size, "mediaType", media_type,
			 "created_by", created_by);
}

static void warn(builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(builder *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	ib_progress_info(b->o->progress, "warning: %s", m);
}

static ib_registry_options cache_registry_options(const ib_build_options *o)
{
	ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
	ro.tls_verify = o->tls_verify;
	ro.authfile = o->authfile;
	ro.debug = o->debug;
	/* a cache that does not answer must not hold the build up */
	ro.max_retries = 1;
	ro.timeout_sec = 5;
	return ro;
}

/* The cache registry session for repository ("host/path"): one of
 * --cache-from, else one opened now (an entry recorded by an earlier
 * build).  NULL when it cannot be reached. */
static ib_rcache *rc_by_repository(builder *b, const char *repo)
{
	remote_state *rs = b->remote;
	for (size_t i = 0; i < rs->n_from; i++)
		if (rs->from[i] && !strcmp(ib_rcache_repository(rs->from[i]), repo))
			return rs->from[i];
	for (size_t i = 0; i < rs->n_extra; i++)
		if (!strcmp(ib_rcache_repository(rs->extra[i]), repo))
			return rs->extra[i];
	ib_registry_options ro = cache_registry_options(b->o);
	cleanup_free char *ref = xasprintf("%s:index", repo);
	ib_rcache *rc = NULL;
	ib_error *e = NULL;
	if (ib_rcache_open(&rc, ref, false, &ro, &e) < 0) {
		warn(b, "cache %s: %s", repo, ib_error_msg(e));
		ib_error_free(&e);
		return NULL;
	}
	rs->extra = xrealloc(rs->extra, (rs->n_extra + 1) * sizeof(*rs->extra));
	rs->extra[rs->n_extra++] = rc;
	return rc;
}

int build_fetch_blob(builder *b, const char *digest, int64_t size, ib_error **err)
{
	if (ib_store_blob_exists(b->store, digest))
		return 0;
	remote_state *rs = b->remote;
	const char *repo = jstr(rs->blobs, digest);
	if (!repo) /* a layer of a lazily tagged base image */
		return ib_store_blob_fetch(b->store, digest, err);
	ib_rcache *rc = rc_by_repository(b, repo);
	ib_error *e = NULL;
	int r = rc ? ib_rcache_fetch_blob(rc, b->store, digest, size, &e) : IB_ENET;
	/* the blob matches its digest; its content must match the diff_id
	 * the record gave the image config */
	const char *diff_id = jstr(rs->diff_ids, digest);
	if (r == 0 && diff_id && (r = ib_rcache_check_diff_id(b->store, digest, diff_id, &e)) < 0) {
		cleanup_free char *path = ib_store_blob_path(b->store, digest);
		unlink(path);
		r = IB_EDIGEST;
	}
	if (r == 0)
		return 0;
	warn(b, "cache %s: layer %.19s: %s; building its step instead", repo, digest,
	     e ? ib_error_msg(e) : "registry unreachable");
	/* a corrupt blob is one miss; a registry that fails is no cache */
	json_object_set_new(rs->bad, r == IB_EDIGEST ? digest : repo, json_true());
	if (r != IB_EDIGEST)
		for (size_t i = 0; i < rs->n_from; i++)
			if (rs->from[i] && !strcmp(ib_rcache_repository(rs->from[i]), repo)) {
				ib_rcache_free(rs->from[i]);
				rs->from[i] = NULL;
			}
	ib_error_free(&e);
	rs->restart = true;
	return ib_error_setc(err, IB_ENET, "layer %.19s could not be fetched from %s", digest,
			     repo);
}

void build_shared_mounts_import(builder *b, json_t *step)
{
	remote_state *rs = b->remote;
	size_t i;
	json_t *v;
	json_array_foreach (json_object_get(step, "shared_mounts"), i, v) {
		const char *target = json_string_value(v);
		if (!target || json_object_get(rs->mounts, target))
			continue;
		json_object_set_new(rs->mounts, target, json_true());
		cleanup_free char *dir = NULL;
		ib_error *e = NULL;
		if (ib_cache_mount_dir(b->cache, target, &dir, &e) < 0) {
			warn(b, "cache mount %s: %s", target, ib_error_msg(e));
			ib_error_free(&e);
			continue;
		}
		for (size_t k = 0; k < rs->n_from; k++) {
			bool imported = false;
			if (!rs->from[k])
				continue;
			if (ib_rcache_mount_import(rs->from[k], b->store, target, dir, &imported,
						   &e) < 0) {
				warn(b, "cache-from %s: cache mount %s: %s", rs->from_refs[k],
				     target, ib_error_msg(e));
				ib_error_free(&e);
			}
			if (imported) {
				ib_progress_info(b->o->progress, "cache mount %s: imported from %s",
						 target, rs->from_refs[k]);
				break;
			}
		}
	}
}

static void note_export(builder *b, const char *key)
{
	json_array_append_new(b->exports,
			      json_pack("{s:s, s:I, s:I}", "key", key, "stage",
					(json_int_t)b->cur_stage, "idx", (json_int_t)b->cur_idx));
}

/* An entry whose blob is in the store, or in a cache registry (lazy:
 * fetched when a step needs it unpacked or the image is written). */
static bool entry_usable(builder *b, json_t *e)
{
	const char *digest = jstr(json_object_get(e, "layer"), "digest");
	if (!digest)
		return false;
	if (ib_store_blob_exists(b->store, digest))
		return true;
	const char *remote = jstr(e, "remote");
	if (!remote || json_object_get(b->remote->bad, digest) ||
	    ib_store_blob_remote_corrupt(b->store, digest) ||
	    json_object_get(b->remote->bad, remote))
		return false;
	json_object_set_new(b->remote->blobs, digest, json_string(remote));
	json_object_set(b->remote->diff_ids, digest,
			json_object_get(json_object_get(e, "layer"), "diff_id"));
	return true;
}

/* Ask the --cache-from registries for key; a hit is recorded in the
 * local step cache with the repository holding its layer. */
static json_t *remote_lookup(builder *b, const char *key)
{
	remote_state *rs = b->remote;
	for (size_t i = 0; i < rs->n_from; i++) {
		ib_rcache *rc = rs->from[i];
		if (!rc)
			continue;
		json_t *e = NULL;
		ib_error *er = NULL;
		if (ib_rcache_lookup(rc, key, &e, &er) < 0) {
			warn(b, "cache-from %s: %s; building without it", rs->from_refs[i],
			     ib_error_msg(er));
			ib_error_free(&er);
			ib_rcache_free(rc);
			rs->from[i] = NULL;
			continue;
		}
		if (!e)
			continue;
		const char *repo = ib_rcache_repository(rc);
		json_object_del(e, "record");
		json_object_set_new(e, "remote", json_string(repo));
		if (!entry_usable(b, e)) {
			json_decref(e);
			continue;
		}
		if (ib_cache_step_put(b->cache, key, e, &er) < 0)
			ib_error_free(&er);
		char *digests[2] = {(char *)jstr(json_object_get(e, "layer"), "digest"), NULL};
		if (ib_cache_blob_seen(b->cache, repo, digests, &er) < 0)
			ib_error_free(&er);
		return e;
	}
	return NULL;
}

bool build_may_use_cache(builder *b, json_t *step, const char *key)
{
	if (json_object_get(b->fresh, key))
		return true;
	return !b->o->no_cache && !json_is_false(json_object_get(step, "cache"));
}

json_t *build_cache_entry(builder *b, const char *key)
{
	json_t *e = ib_cache_step_get(b->cache, key);
	if (e && !entry_usable(b, e)) {
		json_decref(e);
		e = NULL;
	}
	return e ? e : remote_lookup(b, key);
}

/* Use a cached layer: its blob in the store, or a cache registry's. */
bool build_use_cached(builder *b, stage_state *st, const char *key, const char *created_by)
{
	json_t *e = build_cache_entry(b, key);
	if (!e) {
		ib_progress_debug(b->o->progress, "cache lookup %.19s: miss (%s)", key, created_by);
		return false;
	}
	json_t *l = json_object_get(e, "layer");
	ib_progress_debug(b->o->progress, "cache lookup %.19s: hit, layer %.19s%s (%s)", key,
			  jstr(l, "digest"), json_object_get(e, "remote") ? " in the cache registry" : "",
			  created_by);
	ib_descriptor d = {0};
	d.media_type = xstrdup(jstr(l, "mediaType"));
	memcpy(d.digest, jstr(l, "digest"), IB_DIGEST_BUFLEN);
	d.size = json_integer_value(json_object_get(l, "size"));
	push_layer(st, &d, jstr(l, "diff_id"));
	ib_descriptor_clear(&d);
	build_add_history(b, st, created_by, jstr(l, "diff_id"));
	note_export(b, key);
	json_decref(e);
	return true;
}

/* A layer being compressed in the background: what its step's cache
 * entry and error need. */
typedef struct pending_layer {
	char key[IB_DIGEST_BUFLEN];
	char diff_id[IB_DIGEST_BUFLEN];
	char *created_by;
	size_t stage, idx; /* the step */
} pending_layer;

static void pending_free(void *payload)
{
	pending_layer *pl = payload;
	if (pl)
		free(pl->created_by);
	free(pl);
}

static int put_layer_entry(builder *b, const char *key, const ib_layer_result *r,
			   const char *created_by, ib_error **err)
{
	const char *mt = ib_layer_media_type(b->o->compression, false);
	json_t *e = layer_entry_json(r, mt, created_by);
	json_object_set_new(e, "key", json_string(key));
	int rc = ib_cache_step_put(b->cache, key, e, err);
	json_decref(e);
	return rc;
}

/* A background compression is done: the digest goes into every layer_ref
 * of that diff_id still without one (a stage built on this one copied
 * it), then the step's cache entry is written.  A failure is kept for
 * build_wait_layers, as the step's error. */
static void finish_layer(builder *b, pending_layer *pl, ib_layer_result *r, ib_error *job_err)
{
	json_t *step = json_array_get(json_object_get(b->stages[pl->stage].plan, "steps"), pl->idx);
	ib_error *e = job_err;
	if (!e) {
		memcpy(r->diff_id, pl->diff_id, IB_DIGEST_BUFLEN);
		for (size_t s = 0; s < b->n_stages; s++) {
			stage_state *st = &b->stages[s];
			for (size_t i = 0; i < st->n_layers; i++) {
				layer_ref *l = &st->layers[i];
				if (l->desc.digest[0] || strcmp(l->diff_id, pl->diff_id) != 0)
					continue;
				memcpy(l->desc.digest, r->digest, IB_DIGEST_BUFLEN);
				l->desc.size = r->size;
			}
		}
		ib_progress_debug(b->o->progress, "layer %.19s compressed: %.19s, %lld bytes",
				  pl->diff_id, r->digest, (long long)r->size);
		if (put_layer_entry(b, pl->key, r, pl->created_by, &e) == 0)
			return;
	}
	if (b->jobs_err) {
		ib_error_free(&e);
		return;
	}
	b->jobs_err = e;
	build_recipe_error(b, step, &b->jobs_err);
}

/* Take the finished background compressions (all of them, waiting, when
 * wait is set). */
static void reap_layers(builder *b, bool wait)
{
	void *payload;
	ib_layer_result r;
	ib_error *je = NULL;
	while (b->jobs && ib_layer_jobs_next(b->jobs, wait, &payload, &r, &je) == 1) {
		finish_layer(b, payload, &r, je);
		pending_free(payload);
		je = NULL;
	}
}

int build_wait_layers(builder *b, ib_error **err)
{
	reap_layers(b, true);
	if (!b->jobs_err)
		return 0;
	int code = b->jobs_err->code;
	if (err && *err == NULL)
		*err = b->jobs_err;
	else
		ib_error_free(&b->jobs_err);
	b->jobs_err = NULL;
	return code < 0 ? code : -1;
}

/* Whether a run or copy step comes after the current one (in its stage or
 * a later one up to the target): only then is there a next step for a
 * background compression to overlap with.  The last layer is compressed
 * as it is written, the compressor's threads keeping pace with the tar
 * writer, which is faster than writing the tar first. */
static bool layer_steps_follow(builder *b)
{
	if (!b->last_layer_step) {
		size_t target = b->n_stages - 1;
		stage_state *t = b->o->target ? build_find_stage(b, b->o->target) : NULL;
		if (t)
			target = (size_t)(t - b->stages);
		b->last_layer_step = 1;
		for (size_t s = 0; s <= target; s++) {
			json_t *steps = json_object_get(b->stages[s].plan, "steps");
			for (size_t i = 0; i < json_array_size(steps); i++) {
				int kind = ib_plan_step_kind_of(json_array_get(steps, i));
				if (kind == IB_STEP_RUN || kind == IB_STEP_COPY) {
					b->last_layer_stage = s;
					b->last_layer_step = i + 1;
				}
			}
		}
	}
	return b->cur_stage < b->last_layer_stage ||
	       (b->cur_stage == b->last_layer_stage && b->cur_idx + 1 < b->last_layer_step);
}

int build_layer_tar_fd(builder *b)
{
	if (b->jobs_off || !layer_steps_follow(b))
		return -1;
	ib_error *e = NULL;
	if (!b->jobs) {
		const char *env = getenv("IMGBUILD_COMPRESS_BACKGROUND");
		bool off = env && !strcmp(env, "0");
#ifdef __SANITIZE_ADDRESS__
		/* ASan's runtime is not fork-safe: a sandbox child forked while
		 * the compression threads hold its internal locks spins forever
		 * (seen in the suite); opt in with IMGBUILD_COMPRESS_BACKGROUND=1 */
		off = !env || strcmp(env, "1") != 0;
#endif
		ib_layer_options lo = build_layer_options(b);
		if (off ||
		    ib_layer_jobs_new(&b->jobs, b->store, &lo, &e) < 0) {
			if (e)
				ib_progress_debug(b->o->progress, "%s: compressing layers at once",
						  ib_error_msg(e));
			ib_error_free(&e);
			b->jobs_off = true;
			return -1;
		}
	}
	/* nameless: nothing to remove whatever becomes of the build */
	cleanup_free char *path = ib_store_tmp_path(b->store, "layer");
	char *slash = strrchr(path, '/');
	*slash = '\0';
	int fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	*slash = '/';
	if (fd < 0) { /* a file system without O_TMPFILE */
		fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0)
		ib_progress_debug(b->o->progress, "layer tar file in %s: %s: compressing at once",
				  path, strerror(errno));
	return fd;
}

int build_commit_layer(builder *b, stage_state *st, const char *key, const ib_layer_result *r,
		       int tar_fd, const char *created_by, ib_error **err)
{
	const char *mt = ib_layer_media_type(b->o->compression, false);
	ib_descriptor d = {0};
	d.media_type = xstrdup(mt);
	if (tar_fd < 0) {
		memcpy(d.digest, r->digest, IB_DIGEST_BUFLEN);
		d.size = r->size;
	}
	push_layer(st, &d, r->diff_id);
	ib_descriptor_clear(&d);
	build_add_history(b, st, created_by, r->diff_id);
	if (tar_fd >= 0) {
		/* the entry comes with the digest; write those that are done */
		pending_layer *pl = xcalloc(1, sizeof(*pl));
		memcpy(pl->key, key, IB_DIGEST_BUFLEN);
		memcpy(pl->diff_id, r->diff_id, IB_DIGEST_BUFLEN);
		pl->created_by = xstrdup(created_by);
		pl->stage = (size_t)(st - b->stages);
		pl->idx = b->cur_idx;
		ib_layer_jobs_submit(b->jobs, tar_fd, pl);
		reap_layers(b, false);
		note_export(b, key);
		return 0;
	}
	int rc = put_layer_entry(b, key, r, created_by, err);
	if (rc == 0)
		note_export(b, key);
	return rc;
}

static void layer_progress(uint64_t tar_bytes, void *payload)
{
	builder *b = payload;
	uint64_t total = b->layer_total > tar_bytes ? b->layer_total : 0;
	ib_progress_bytes(b->o->progress, b->cur_id, "layer", tar_bytes, total);
}

ib_layer_options build_layer_options(builder *b)
{
	return (ib_layer_options){.compression = b->o->compression,
				  .source_date_epoch = b->o->source_date_epoch,
				  .level = b->o->compression_level,
				  .progress = layer_progress,
				  .payload = b};
}

/* Unmount and remove a stage's read-only view, if it has one. */
void build_release_view(stage_state *st)
{
	ib_sandbox_view_unmount(st->mount_dir);
	if (st->view_dir) {
		ib_error *e = NULL;
		if (ib_rm_rf(st->view_dir, &e) < 0)
			ib_error_free(&e);
	}
	free(st->mount_dir);
	free(st->view_dir);
	st->mount_dir = st->view_dir = NULL;
}

/* A read-only merged view of a stage's layers. */
int build_mount_stage_view(builder *b, stage_state *src, ib_error **err)
{
	if (src->mount_dir)
		return 0;
	if (build_ensure_stage_unpacked(b, src, err) < 0)
		return -1;
	src->view_dir = ib_store_tmp_path(b->store, "view");
	cleanup_strv char **lowers = build_lower_dirs(b, src);
	if (ib_sandbox_view_mount(lowers, src->view_dir, &src->mount_dir, err) < 0)
		return ib_error_wrap(err, "stage %s", src->name);
	return 0;
}

void ib_build_prepare_process(void)
{
	ib_sandbox_prepare_process();
}

/* A base named without a registry (written) that is not in the store by its
 * normalised name: the one local image of that name under any registry
 * (podman's short-name rule).  IB_ENOTFOUND when there is none. */
static int build_find_local_base(builder *b, const char *written, ib_image **out, ib_error **err)
{
	if (!written)
		return IB_ENOTFOUND;
	cleanup_strv char **m = NULL;
	if (ib_store_short_name_matches(b->store, written, &m, err) < 0)
		return -1;
	size_t n = ib_strv_len(m);
	if (n == 0)
		return IB_ENOTFOUND;
	if (n > 1) {
		return ib_error_setc(err, IB_EINVALID,
				     "short name \"%s\" matches several local images (%s, %s%s); "
				     "write the full name",
				     written, m[0], m[1], n > 2 ? ", ..." : "");
	}
	ib_progress_info(b->o->progress, "%s: using the local %s", written, m[0]);
	return ib_store_image_load(b->store, m[0], out, err);
}

/* The error for a base that is neither in the store nor pulled: why, the
 * similar local names, and where else the image is. */
static int build_base_not_found(builder *b, const char *ref, const char *why, ib_error **err)
{
	cleanup_free char *list = ib_store_similar_names(b->store, ref, 5);
	cleanup_free char *familiar = ib_ref_familiarize(ref);
	const char *engine = ib_handoff_image_holder(ref);
	cleanup_free char *hint =
	    engine ? xasprintf("; %s has it: %s save %s | imgbuild load", engine, engine, familiar)
		   : NULL;
	return ib_error_setc(err, IB_ENOTFOUND, "%s%s%s%s", why, list ? "; similar: " : "",
			     list ? list : "", hint ? hint : "");
}

int build_load_base_image(builder *b, json_t *stage, const char *ref, ib_image **out,
			  ib_error **err)
{
	const char *pull = jstr(stage, "pull");
	if (!pull)
		pull = b->o->pull ? b->o->pull : "missing";
	int r = IB_ENOTFOUND;
	const char *written = jstr(json_object_get(stage, "from"), "short");
	if (strcmp(pull, "always") != 0) {
		r = ib_store_image_load(b->store, ref, out, err);
		if (r == 0 || r != IB_ENOTFOUND)
			return r;
		ib_error_free(err);
		if ((r = build_find_local_base(b, written, out, err)) != IB_ENOTFOUND)
			return r;
		if (!strcmp(pull, "never") || !strncmp(ref, "localhost/", 10))
			return build_base_not_found(b, ref, "not found locally", err);
	}
	ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
	ro.tls_verify = b->o->tls_verify;
	ro.authfile = b->o->authfile;
	ro.platform = jstr(stage, "platform");
	/* the printer of `imgbuild pull` */
	ib_transfer_printer *pr = ib_transfer_printer_for(b->o->progress, "pulling");
	ro.progress = ib_transfer_printer_progress;
	ro.event = ib_transfer_printer_event;
	ro.payload = pr;
	ib_descriptor d = {0};
	/* a name written without a registry is looked for in the configured
	 * unqualified-search-registries (registries.conf), docker.io by default */
	const char *want = written && ib_regconf_unqualified(written) ? written : ref;
	ib_progress_info(b->o->progress, "pulling %s", want);
	r = ib_registry_pull(b->store, want, &ro, &d, err);
	ib_transfer_printer_free(pr);
	if (r < 0 && strcmp(pull, "always") != 0) {
		cleanup_free char *why =
		    xasprintf("not in the store, and pulling it failed: %s", (*err)->msg);
		ib_error_free(err);
		return build_base_not_found(b, ref, why, err);
	}
	if (r < 0)
		return r;
	r = ib_store_image_load_digest(b->store, d.digest, out, err);
	ib_descriptor_clear(&d);
	return r;
}

step_memo *build_memo(builder *b, size_t stage, size_t idx, bool create)
{
	for (size_t i = 0; i < b->n_memo; i++)
		if (b->memo[i].stage == stage && b->memo[i].idx == idx)
			return &b->memo[i];
	if (!create)
		return NULL;
	b->memo = xrealloc(b->memo, (b->n_memo + 1) * sizeof(*b->memo));
	step_memo *m = &b->memo[b->n_memo++];
	memset(m, 0, sizeof(*m));
	m->stage = stage;
	m->idx = idx;
	return m;
}

void build_key_computed(builder *b, stage_state *st, size_t idx, const char *key, bool lookup)
{
	step_memo *m = build_memo(b, (size_t)(st - b->stages), idx, b->keys_only);
	if (b->keys_only) {
		memcpy(m->key, key, IB_DIGEST_BUFLEN);
		if (lookup)
			json_array_append_new(b->lookup_keys, json_string(key));
		return;
	}
	if (m && !strcmp(m->key, key))
		return;
	b->key_mismatches++;
	ib_progress_debug(b->o->progress,
			  "cache key of step %zu of stage %s: %.19s, the key pass computed %.19s",
			  idx + 1, st->name, key, m && *m->key ? m->key : "none");
}

static void memo_free(builder *b)
{
	for (size_t i = 0; i < b->n_memo; i++) {
		ib_image_free(b->memo[i].image);
		build_copy_memo_free(b->memo[i].copy);
	}
	free(b->memo);
	b->memo = NULL;
	b->n_memo = 0;
}

static int init_stage(builder *b, stage_state *st, ib_error **err)
{
	json_t *from = json_object_get(st->plan, "from");
	st->annotations = json_object();
	st->env_index = json_object();
	st->shell = json_pack("[ss]", "/bin/sh", "-c");
	if (json_is_true(json_object_get(from, "scratch"))) {
		const char *os, *arch, *variant;
		ib_host_platform(&os, &arch, &variant);
		st->config = ib_config_new(os, arch, variant, NULL);
		build_default_path(st);
		ib_digest_buffer(st->key, "scratch", 7);
		return 0;
	}
	if (jstr(from, "stage")) {
		stage_state *base = build_find_stage(b, jstr(from, "stage"));
		if (!base || !base->built) {
			ib_error_setc(err, IB_EINVALID,
				      "stage \"%s\" must be defined before it is used",
				      jstr(from, "stage"));
			return build_recipe_error(b, st->plan, err);
		}
		st->config = json_deep_copy(base->config);
		for (size_t i = 0; i < base->n_layers; i++) {
			st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(layer_ref));
			memset(&st->layers[st->n_layers], 0, sizeof(layer_ref));
			ib_descriptor_copy(&st->layers[st->n_layers].desc, &base->layers[i].desc);
			memcpy(st->layers[st->n_layers].diff_id, base->layers[i].diff_id,
			       IB_DIGEST_BUFLEN);
			st->n_layers++;
		}
		memcpy(st->key, base->key, IB_DIGEST_BUFLEN);
		json_decref(st->shell);
		st->shell = json_deep_copy(base->shell);
		return 0;
	}
	const char *ref = jstr(from, "image");
	/* loaded (or pulled) once: by the key pass, for the real pass */
	step_memo *m = build_memo(b, b->cur_stage, BUILD_MEMO_BASE, true);
	ib_image *img = m->image;
	m->image = NULL;
	if (!img && build_load_base_image(b, st->plan, ref, &img, err) < 0) {
		ib_error_wrap(err, "from %s", ref);
		return build_recipe_error(b, st->plan, err);
	}
	st->config = json_deep_copy(img->config);
	json_t *rootfs = json_object_get(st->config, "rootfs");
	if (!json_is_array(json_object_get(st->config, "history")))
		json_object_set_new(st->config, "history", json_array());
	json_t *diff_ids = json_array();
	json_object_set_new(rootfs, "diff_ids", diff_ids);
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const char *id = ib_config_diff_id(img->config, i);
		push_layer(st, &img->manifest->layers[i], id);
		json_array_append_new(diff_ids, json_string(id));
	}
	memcpy(st->key, img->desc.digest, IB_DIGEST_BUFLEN);
	if (b->keys_only)
		m->image = img;
	else
		ib_image_free(img);
	build_default_path(st);
	return 0;
}

static char *step_label(stage_state *st, size_t idx, size_t n, json_t *step)
{
	const char *kind = jstr(step, "kind");
	cleanup_free char *what = NULL;
	if (!strcmp(kind, "run"))
		what = build_argv_string(json_object_get(step, "argv"));
	else if (!strcmp(kind, "copy")) {
		cleanup_free char *s = build_argv_string(json_object_get(step, "sources"));
		what = xasprintf("%s %s", s, jstr(step, "dest"));
	} else
		what = xstrdup("");
	cleanup_free char *upper = xstrdup(kind);
	for (char *p = upper; *p; p++)
		*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	/* one line: a multi-line script shows its first line */
	size_t keep = strcspn(what, "\n");
	if (keep > 97)
		keep = 97;
	if (what[keep] != '\0') {
		char *shorter = xasprintf("%.*s...", (int)keep, what);
		free(what);
		what = shorter;
	}
	return xasprintf("[%s %zu/%zu] %s %s", st->name, idx + 1, n, upper, what);
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int build_stage(builder *b, stage_state *st, ib_error **err)
{
	b->cur_stage = (size_t)(st - b->stages);
	if (init_stage(b, st, err) < 0)
		return -1;
	json_t *steps = json_object_get(st->plan, "steps");
	size_t n = json_array_size(steps);
	b->chain_missed = false;
	for (size_t i = 0; i < n; i++) {
		json_t *step = json_array_get(steps, i);
		b->cur_idx = i;
		int kind = ib_plan_step_kind_of(step); /* known: ib_plan_validate */
		char parent[IB_DIGEST_BUFLEN];
		memcpy(parent, st->key, IB_DIGEST_BUFLEN);
		/* the build timestamp clamps mtimes in layers: part of every key */
		json_t *extra =
		    json_pack("{s:s, s:i, s:I}", "compression",
			      ib_compress_cache_tag(b->o->compression), "compression_level",
			      ib_compress_level(b->o->compression, b->o->compression_level),
			      "epoch", (json_int_t)b->o->source_date_epoch);
		int rc = 0;
		if ((kind == IB_STEP_RUN || kind == IB_STEP_COPY) && b->keys_only) {
			/* the key pass: the steps return with their key */
			bool cached = false;
			char key[IB_DIGEST_BUFLEN];
			if (kind == IB_STEP_RUN)
				rc = build_run_step(b, st, step, i, parent, extra, "", key, &cached,
						    err);
			else
				rc = build_copy_step(b, st, step, i, parent, extra, "", key,
						     &cached, err);
			json_decref(extra);
			if (rc < 0)
				return -1;
			memcpy(st->key, key, IB_DIGEST_BUFLEN);
			continue;
		}
		if (kind == IB_STEP_RUN || kind == IB_STEP_COPY) {
			b->step_no++;
			cleanup_free char *label = step_label(st, i, n, step);
			double t0 = mono_now();
			bool cached = false;
			char key[IB_DIGEST_BUFLEN];
			b->cur_id = b->step_no;
			if (kind == IB_STEP_RUN)
				rc = build_run_step(b, st, step, i, parent, extra, label, key,
						    &cached, err);
			else
				rc = build_copy_step(b, st, step, i, parent, extra, label, key,
						     &cached, err);
			double dt = mono_now() - t0;
			if (rc < 0) {
				ib_progress_step_failed(b->o->progress, b->step_no, dt);
				json_decref(extra);
				return -1;
			}
			if (b->keys_out)
				json_array_append_new(b->keys_out, json_string(key));
			if (cached && b->silent) {
				/* built by a worker, which showed and counted it */
			} else if (cached) {
				b->steps_cached++;
				ib_progress_step_cached(b->o->progress, b->step_no, label);
			} else {
				b->steps_run++;
				b->chain_missed = true;
				ib_progress_step_done(b->o->progress, b->step_no, dt);
			}
			memcpy(st->key, key, IB_DIGEST_BUFLEN);
		} else {
			rc = build_config_step(b, st, step, kind, err);
			if (rc < 0) {
				json_decref(extra);
				return -1;
			}
			build_step_key(st->key, parent, step, extra);
		}
		json_decref(extra);
	}
	st->built = true;
	return 0;
}

void build_mark_needed(builder *b, size_t idx, bool *needed)
{
	if (needed[idx])
		return;
	needed[idx] = true;
	stage_state *st = &b->stages[idx];
	json_t *from = json_object_get(st->plan, "from");
	const char *dep = jstr(from, "stage");
	if (dep) {
		stage_state *d = build_find_stage(b, dep);
		if (d)
			build_mark_needed(b, (size_t)(d - b->stages), needed);
	}
	size_t i;
	json_t *step;
	json_array_foreach (json_object_get(st->plan, "steps"), i, step) {
		const char *s = jstr(json_object_get(step, "from"), "stage");
		stage_state *d = s ? build_find_stage(b, s) : NULL;
		if (d)
			build_mark_needed(b, (size_t)(d - b->stages), needed);
	}
}

/* Free what building the stage gave it: back to its state before
 * init_stage. */
static void stage_reset(stage_state *st)
{
	build_release_view(st);
	for (size_t k = 0; k < st->n_layers; k++)
		ib_descriptor_clear(&st->layers[k].desc);
	free(st->layers);
	json_decref(st->config);
	json_decref(st->annotations);
	json_decref(st->env_index);
	json_decref(st->shell);
	*st = (stage_state){.plan = st->plan, .name = st->name};
}

static void builder_free(builder *b)
{
	/* a failed build still records the steps whose layers are done */
	ib_error *e = NULL;
	build_wait_layers(b, &e);
	ib_error_free(&e);
	ib_layer_jobs_free(b->jobs, pending_free);
	for (size_t i = 0; i < b->n_stages; i++)
		stage_reset(&b->stages[i]);
	memo_free(b);
	json_decref(b->lookup_keys);
	free(b->stages);
	free(b->created);
	free(b->context);
	ib_ignore_free(b->ignore);
	build_clear_last(b);
	json_decref(b->exports);
	json_decref(b->fresh);
	json_decref(b->keys_out);
	free(b->first_step);
	free(b->by_worker);
	ib_cache_free(b->cache);
}

/* --cache-to: records for the exported steps the registries lack.  A
 * failure is a warning: the image is built. */
static int export_need_blob(void *payload, const char *digest, int64_t size, ib_error **err)
{
	return build_fetch_blob(payload, digest, size, err);
}

static void export_cache(builder *b, size_t target)
{
	const ib_build_options *o = b->o;
	json_t *entries = json_array();
	size_t i;
	json_t *x;
	json_array_foreach (b->exports, i, x) {
		if (!o->cache_max &&
		    (size_t)json_integer_value(json_object_get(x, "stage")) != target)
			continue;
		json_t *e = ib_cache_step_get(b->cache, jstr(x, "key"));
		if (!e)
			continue;
		/* where the step is and its inputs: --explain on other runners */
		stage_state *st = &b->stages[json_integer_value(json_object_get(x, "stage"))];
		size_t idx = (size_t)json_integer_value(json_object_get(x, "idx"));
		cleanup_free char *id = build_explain_id(b, st, idx);
		cleanup_free char *pos = build_explain_position(b, st, idx);
		json_object_set_new(e, "position", json_string(pos));
		json_t *inputs = ib_cache_explain_get(b->cache, id);
		if (inputs)
			json_object_set_new(e, "inputs", inputs);
		json_array_append_new(entries, e);
	}
	ib_registry_options ro = cache_registry_options(o);
	for (size_t k = 0; o->cache_to[k]; k++) {
		ib_rcache *rc = NULL;
		ib_error *e = NULL;
		size_t written = 0;
		if (ib_rcache_open(&rc, o->cache_to[k], true, &ro, &e) == 0)
			ib_rcache_export(rc, b->store, entries, export_need_blob, b, &written, &e);
		if (e)
			warn(b, "cache-to %s: %s", o->cache_to[k], ib_error_msg(e));
		else
			ib_progress_info(o->progress, "cache-to %s: %zu of %zu steps written",
					 o->cache_to[k], written, json_array_size(entries));
		ib_error_free(&e);
		const char *mtarget;
		json_t *v;
		json_object_foreach (b->remote->mounts, mtarget, v) {
			cleanup_free char *dir = NULL;
			bool done = false;
			if (!rc)
				break;
			if (ib_cache_mount_dir(b->cache, mtarget, &dir, &e) < 0 ||
			    ib_rcache_mount_export(rc, b->store, mtarget, dir, &done, &e) < 0) {
				warn(b, "cache-to %s: cache mount %s: %s", o->cache_to[k], mtarget,
				     ib_error_msg(e));
				ib_error_free(&e);
			} else if (done) {
				ib_progress_info(o->progress, "cache-to %s: cache mount %s written",
						 o->cache_to[k], mtarget);
			}
		}
		ib_rcache_free(rc);
	}
	json_decref(entries);
}

/* The layers of the image that cache hits left in a cache registry are
 * not downloaded: the store records where they are (remote-blobs.json)
 * and fetches each on first use, so a fully cached build downloads no
 * layer byte and a push to that registry mounts them. */
static int record_lazy_layers(builder *b, stage_state *st, ib_error **err)
{
	ib_store_remote *recs = xcalloc(st->n_layers + 1, sizeof(*recs));
	size_t n = 0;
	for (size_t i = 0; i < st->n_layers; i++) {
		const layer_ref *l = &st->layers[i];
		const char *repo = jstr(b->remote->blobs, l->desc.digest);
		if (l->desc.urls || !repo || ib_store_blob_exists(b->store, l->desc.digest))
			continue;
		memcpy(recs[n].digest, l->desc.digest, IB_DIGEST_BUFLEN);
		recs[n].repository = (char *)repo; /* borrowed */
		recs[n].size = l->desc.size;
		memcpy(recs[n].diff_id, l->diff_id, IB_DIGEST_BUFLEN);
		n++;
	}
	int r = ib_store_remote_add(b->store, recs, n, err);
	free(recs);
	if (r == 0 && n)
		ib_progress_info(b->o->progress,
				 "%zu layer%s left in the cache registry, downloaded on first use "
				 "('imgbuild verify --fetch' downloads them now)",
				 n, n == 1 ? "" : "s");
	return r;
}

/* The key pass: the needed stages walked as the build will walk them,
 * each run and copy step returning once its key is known (nothing run,
 * fetched or written); what it loaded and hashed is kept in b->memo for
 * the real pass, and the stages are reset.  An error stops it there: the
 * real pass runs the steps before and reports it at its step. */
static void build_keys(builder *b, size_t target, const bool *needed)
{
	b->keys_only = true;
	json_decref(b->lookup_keys);
	b->lookup_keys = json_array();
	ib_error *e = NULL;
	int rc = 0;
	for (size_t i = 0; i <= target && rc == 0; i++)
		if (needed[i])
			rc = build_stage(b, &b->stages[i], &e);
	for (size_t i = 0; i < b->n_stages; i++)
		stage_reset(&b->stages[i]);
	b->keys_only = false;
	if (rc < 0)
		ib_progress_debug(b->o->progress, "cache keys: the key pass stopped: %s",
				  ib_error_msg(e));
	ib_error_free(&e);
	ib_progress_debug(b->o->progress,
			  "cache keys: %zu computed before contacting the cache registry",
			  json_array_size(b->lookup_keys));
}

/* Open the --cache-from registries (once per build: they outlive a
 * restart) and decide every key of the key pass at once, so that the
 * lookups of the real pass make no request.  A registry that fails is a
 * warning and no cache. */
static void remote_prefetch(builder *b)
{
	remote_state *rs = b->remote;
	const ib_build_options *o = b->o;
	if (!rs->connected) {
		ib_registry_options ro = cache_registry_options(o);
		for (size_t i = 0; i < rs->n_from; i++) {
			ib_error *e = NULL;
			if (ib_rcache_open(&rs->from[i], o->cache_from[i], false, &ro, &e) < 0) {
				warn(b, "cache-from %s: %s; building without it", o->cache_from[i],
				     ib_error_msg(e));
				ib_error_free(&e);
			}
		}
		rs->connected = true;
	}
	/* the first registry that has a key wins: the next are asked the rest */
	json_t *keys = json_incref(b->lookup_keys);
	for (size_t i = 0; i < rs->n_from; i++) {
		ib_rcache *rc = rs->from[i];
		json_t *missing = NULL;
		ib_error *e = NULL;
		if (!rc)
			continue;
		if (ib_rcache_prefetch(rc, keys, &missing, &e) < 0) {
			warn(b, "cache-from %s: %s; building without it", rs->from_refs[i],
			     ib_error_msg(e));
			ib_error_free(&e);
			ib_rcache_free(rc);
			rs->from[i] = NULL;
			continue;
		}
		ib_progress_debug(
		    o->progress, "cache-from %s: %zu of %zu keys found; requests after auth: %d",
		    rs->from_refs[i], json_array_size(keys) - json_array_size(missing),
		    json_array_size(keys), ib_rcache_requests(rc));
		json_decref(keys);
		keys = missing;
	}
	json_decref(keys);
}

static int build_once(ib_store *s, json_t *plan, const ib_build_options *o, remote_state *rs,
		      ib_build_result *result, ib_error **err)
{
	builder b = {0};
	b.store = s;
	b.o = o;
	b.plan = plan;
	b.remote = rs;
	b.exports = json_array();
	b.fresh = json_object();
	memset(result, 0, sizeof(*result));
	char created[64];
	ib_format_rfc3339(created, sizeof(created), o->source_date_epoch);
	b.created = xstrdup(created);
	char ctx[PATH_MAX];
	if (!realpath(o->context_dir ? o->context_dir : ".", ctx)) {
		int e = errno;
		free(b.created);
		json_decref(b.exports);
		return ib_error_set(err, e, "build context %s", o->context_dir);
	}
	b.context = xstrdup(ctx);
	if (ib_cache_open(&b.cache, s, err) < 0) {
		builder_free(&b);
		return -1;
	}
	ib_cache_stat_scope(b.cache, b.context);
	if (o->cache_readonly)
		ib_cache_set_readonly(b.cache);
	if (ib_ignore_load(b.context, o->recipe_path, &b.ignore, err) < 0) {
		builder_free(&b);
		return -1;
	}
	json_t *stages = json_object_get(plan, "stages");
	b.n_stages = json_array_size(stages);
	if (b.n_stages == 0) {
		builder_free(&b);
		return ib_error_setc(err, IB_EINVALID, "%s: recipe defines no stage",
				     jstr(plan, "recipe"));
	}
	b.stages = xcalloc(b.n_stages, sizeof(stage_state));
	for (size_t i = 0; i < b.n_stages; i++) {
		b.stages[i].plan = json_array_get(stages, i);
		b.stages[i].name = jstr(b.stages[i].plan, "name");
	}
	size_t target = b.n_stages - 1;
	if (o->target) {
		stage_state *t = build_find_stage(&b, o->target);
		if (!t) {
			builder_free(&b);
			return ib_error_setc(err, IB_EINVALID, "--target: no stage named \"%s\"",
					     o->target);
		}
		target = (size_t)(t - b.stages);
	}
	bool *needed = xcalloc(b.n_stages, sizeof(bool));
	build_mark_needed(&b, target, needed);
	build_keys(&b, target, needed);
	remote_prefetch(&b);
	int rc = build_stages_parallel(&b, target, needed, err);
	for (size_t i = 0; i <= target && rc == 0; i++) {
		b.silent = b.by_worker && b.by_worker[i];
		if (needed[i])
			rc = build_stage(&b, &b.stages[i], err);
	}
	b.silent = false;
	free(needed);
	if (b.key_mismatches)
		ib_progress_debug(o->progress, "cache keys: %d differ from the key pass",
				  b.key_mismatches);
	if (rc == 0) /* layers compressed in the background: digests complete */
		rc = build_wait_layers(&b, err);
	if (rc < 0) {
		builder_free(&b);
		return -1;
	}

	stage_state *st = &b.stages[target];
	json_object_set_new(st->config, "created", json_string(b.created));
	if (record_lazy_layers(&b, st, err) < 0) {
		builder_free(&b);
		return -1;
	}
	ib_descriptor *layers = xcalloc(st->n_layers + 1, sizeof(ib_descriptor));
	for (size_t i = 0; i < st->n_layers; i++)
		layers[i] = st->layers[i].desc; /* shallow: borrowed */
	rc = ib_store_image_write(s, st->config, layers, st->n_layers,
				  json_object_size(st->annotations) ? st->annotations : NULL,
				  &result->manifest, err);
	free(layers);
	if (rc == 0) {
		size_t clen = 0;
		cleanup_free char *cj = ib_config_serialize(st->config, &clen);
		ib_digest_buffer(result->config_digest, cj, clen);
	}
	for (size_t i = 0; rc == 0 && o->tags && o->tags[i]; i++)
		rc = ib_store_tag_set(s, o->tags[i], &result->manifest, err);
	result->steps_run = b.steps_run;
	result->steps_cached = b.steps_cached;
	if (rc == 0 && o->cache_to && o->cache_to[0])
		export_cache(&b, target);
	builder_free(&b);
	return rc;
}

static void remote_open(remote_state *rs, const ib_build_options *o)
{
	rs->blobs = json_object();
	rs->bad = json_object();
	rs->mounts = json_object();
	rs->diff_ids = json_object();
	rs->n_from = o->cache_from ? ib_strv_len(o->cache_from) : 0;
	rs->from = xcalloc(rs->n_from + 1, sizeof(*rs->from));
	rs->from_refs = (char **)o->cache_from;
	/* connected after the key pass of the first build_once */
}

static void remote_close(remote_state *rs)
{
	for (size_t i = 0; i < rs->n_from; i++)
		ib_rcache_free(rs->from[i]);
	for (size_t i = 0; i < rs->n_extra; i++)
		ib_rcache_free(rs->extra[i]);
	free(rs->from);
	free(rs->extra);
	json_decref(rs->blobs);
	json_decref(rs->bad);
	json_decref(rs->mounts);
	json_decref(rs->diff_ids);
}

int ib_build_run(ib_store *s, json_t *plan, const ib_build_options *o, ib_build_result *result,
		 ib_error **err)
{
	memset(result, 0, sizeof(*result));
	if (ib_plan_validate(plan, err) < 0)
		return ib_error_wrap(err, "%s", o->recipe_path ? o->recipe_path : "plan");
	remote_state rs = {0};
	remote_open(&rs, o);
	int rc;
	for (int attempt = 0;; attempt++) {
		rs.restart = false;
		rs.attempt = attempt;
		rc = build_once(s, plan, o, &rs, result, err);
		/* a cached layer that could not be fetched: its steps run instead */
		if (rc == 0 || !rs.restart || attempt >= 5)
			break;
		ib_error_free(err);
		ib_build_result_clear(result);
		memset(result, 0, sizeof(*result));
		ib_progress_info(o->progress, "building again without the layers that failed");
	}
	remote_close(&rs);
	return rc;
}


void ib_build_result_clear(ib_build_result *r)
{
	ib_descriptor_clear(&r->manifest);
}
