#include "builder.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "imgdiff.h"
#include "layer.h"
#include "pathglob.h"
#include "plan.h"
#include "ref.h"
#include "registry.h"
#include "sandbox.h"
#include "unpack.h"
#include "util.h"

#define LAST_LINES 15

typedef struct layer_ref {
	ib_descriptor desc;
	char diff_id[IB_DIGEST_BUFLEN];
} layer_ref;

typedef struct stage_state {
	json_t *plan; /* borrowed: the plan's stage object */
	const char *name;
	json_t *config; /* image config being built (owned) */
	layer_ref *layers;
	size_t n_layers;
	json_t *annotations; /* manifest annotations (owned) */
	char key[IB_DIGEST_BUFLEN];
	json_t *shell; /* current shell argv (owned) */
	bool built;
	bool cmd_set;	 /* cmd() seen in this stage (entrypoint keeps it) */
	char *view_dir;	 /* ROOT/tmp dir holding the view below */
	char *mount_dir; /* read-only merged view, mounted lazily */
} stage_state;

typedef struct builder {
	ib_store *store;
	ib_cache *cache;
	const ib_build_options *o;
	json_t *plan;
	stage_state *stages;
	size_t n_stages;
	int step_no;
	int steps_run, steps_cached;
	bool chain_missed;    /* an earlier step of this chain ran (for --explain) */
	char *created;	      /* RFC 3339 build timestamp */
	char *context;	      /* absolute, canonical build context */
	uint64_t layer_total; /* expected tar size of the layer being written, 0 = unknown */
	/* ring of the current step's last output lines */
	char *last[LAST_LINES];
	size_t n_last;
	int cur_id;
} builder;

static void step_key(char out[IB_DIGEST_BUFLEN], const char *parent, json_t *step, json_t *extra)
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

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int recipe_error(builder *b, json_t *step, ib_error **err)
{
	json_int_t line = json_integer_value(json_object_get(step, "line"));
	const char *recipe = b->o->recipe_path ? b->o->recipe_path : jstr(b->plan, "recipe");
	return ib_error_wrap(err, "%s:%lld", recipe ? recipe : "recipe", (long long)line);
}

static stage_state *find_stage(builder *b, const char *name)
{
	for (size_t i = 0; i < b->n_stages; i++)
		if (!strcmp(b->stages[i].name, name))
			return &b->stages[i];
	return NULL;
}

/* ---- config helpers ---- */

static json_t *cfg(stage_state *st)
{
	json_t *c = json_object_get(st->config, "config");
	if (!json_is_object(c)) {
		c = json_object();
		json_object_set_new(st->config, "config", c);
	}
	return c;
}

static void env_set(json_t *env_arr, const char *k, const char *v)
{
	size_t kl = strlen(k), i;
	json_t *e;
	cleanup_free char *kv = xasprintf("%s=%s", k, v);
	json_array_foreach (env_arr, i, e) {
		const char *s = json_string_value(e);
		if (s && !strncmp(s, k, kl) && s[kl] == '=') {
			json_array_set_new(env_arr, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env_arr, json_string(kv));
}

static json_t *cfg_env(stage_state *st)
{
	json_t *c = cfg(st);
	json_t *env = json_object_get(c, "Env");
	if (!json_is_array(env)) {
		env = json_array();
		json_object_set_new(c, "Env", env);
	}
	return env;
}

static void add_history(builder *b, stage_state *st, const char *created_by, bool empty)
{
	json_t *h = json_object_get(st->config, "history");
	if (!json_is_array(h)) {
		h = json_array();
		json_object_set_new(st->config, "history", h);
	}
	json_t *e = json_pack("{s:s, s:s}", "created", b->created, "created_by", created_by);
	if (empty)
		json_object_set_new(e, "empty_layer", json_true());
	json_array_append_new(h, e);
}

static char *argv_string(json_t *argv)
{
	ib_buf buf = IB_BUF_INIT;
	size_t i;
	json_t *a;
	json_array_foreach (argv, i, a) {
		ib_buf_appendf(&buf, "%s%s", i ? " " : "", json_string_value(a));
	}
	return ib_buf_steal(&buf, NULL);
}

/* Absolute path in the image: relative paths resolve against the workdir. */
/* Lexically clean an absolute path: no "." or ".." components, no repeated
 * slashes; a trailing slash (meaning "a directory") is kept. */
static char *clean_path(const char *p)
{
	size_t n = strlen(p);
	bool trailing = n > 1 && p[n - 1] == '/';
	char *out = xcalloc(1, n + 3);
	size_t o = 0;
	const char *s = p;
	while (*s) {
		while (*s == '/')
			s++;
		size_t len = strcspn(s, "/");
		if (len == 0)
			break;
		if (len == 1 && s[0] == '.') {
			/* skip */
		} else if (len == 2 && s[0] == '.' && s[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			out[o++] = '/';
			memcpy(out + o, s, len);
			o += len;
		}
		s += len;
	}
	if (o == 0)
		out[o++] = '/';
	else if (trailing)
		out[o++] = '/';
	out[o] = '\0';
	return out;
}

/* Absolute path in the image: relative paths resolve against the workdir. */
static char *image_path(stage_state *st, const char *p)
{
	if (p[0] == '/')
		return clean_path(p);
	const char *wd = jstr(cfg(st), "WorkingDir");
	cleanup_free char *joined = ib_path_join(wd && *wd ? wd : "/", p);
	size_t n = strlen(p);
	if (n && p[n - 1] == '/' && joined[strlen(joined) - 1] != '/') {
		char *with = xasprintf("%s/", joined);
		free(joined);
		joined = with;
	}
	return clean_path(joined);
}

/* Apply a config-only step. */
static int apply_config_step(builder *b, stage_state *st, json_t *step, const char *kind,
			     ib_error **err)
{
	json_t *c = cfg(st);
	cleanup_free char *hist = NULL;
	if (!strcmp(kind, "env")) {
		json_t *env = json_object_get(step, "env"), *v;
		const char *k;
		json_t *arr = cfg_env(st);
		ib_buf hb = IB_BUF_INIT;
		ib_buf_append(&hb, "ENV", 3);
		json_object_foreach (env, k, v) {
			env_set(arr, k, json_string_value(v));
			ib_buf_appendf(&hb, " %s=%s", k, json_string_value(v));
		}
		hist = ib_buf_steal(&hb, NULL);
	} else if (!strcmp(kind, "workdir")) {
		cleanup_free char *p = image_path(st, jstr(step, "path"));
		json_object_set_new(c, "WorkingDir", json_string(p));
		hist = xasprintf("WORKDIR %s", p);
	} else if (!strcmp(kind, "user")) {
		json_object_set_new(c, "User", json_string(jstr(step, "user")));
		hist = xasprintf("USER %s", jstr(step, "user"));
	} else if (!strcmp(kind, "entrypoint") || !strcmp(kind, "cmd")) {
		bool ep = !strcmp(kind, "entrypoint");
		json_t *argv = json_object_get(step, "argv");
		json_object_set(c, ep ? "Entrypoint" : "Cmd", argv);
		/* Docker: a new entrypoint drops a CMD inherited from the base. */
		if (ep && !st->cmd_set)
			json_object_del(c, "Cmd");
		if (!ep)
			st->cmd_set = true;
		cleanup_free char *s = argv_string(argv);
		hist = xasprintf("%s %s", ep ? "ENTRYPOINT" : "CMD", s);
	} else if (!strcmp(kind, "expose") || !strcmp(kind, "volume")) {
		bool ex = !strcmp(kind, "expose");
		const char *field = ex ? "ExposedPorts" : "Volumes";
		json_t *set = json_object_get(c, field);
		if (!json_is_object(set)) {
			set = json_object();
			json_object_set_new(c, field, set);
		}
		json_t *list = json_object_get(step, ex ? "ports" : "paths"), *v;
		size_t i;
		ib_buf hb = IB_BUF_INIT;
		ib_buf_append(&hb, ex ? "EXPOSE" : "VOLUME", 6);
		json_array_foreach (list, i, v) {
			const char *s = json_string_value(v);
			cleanup_free char *p =
			    ex && !strchr(s, '/') ? xasprintf("%s/tcp", s) : xstrdup(s);
			json_object_set_new(set, p, json_object());
			ib_buf_appendf(&hb, " %s", p);
		}
		hist = ib_buf_steal(&hb, NULL);
	} else if (!strcmp(kind, "label")) {
		json_t *labels = json_object_get(c, "Labels"), *v;
		if (!json_is_object(labels)) {
			labels = json_object();
			json_object_set_new(c, "Labels", labels);
		}
		const char *k;
		ib_buf hb = IB_BUF_INIT;
		ib_buf_append(&hb, "LABEL", 5);
		json_object_foreach (json_object_get(step, "labels"), k, v) {
			json_object_set(labels, k, v);
			ib_buf_appendf(&hb, " %s=%s", k, json_string_value(v));
		}
		hist = ib_buf_steal(&hb, NULL);
	} else if (!strcmp(kind, "annotation")) {
		json_object_update(st->annotations, json_object_get(step, "annotations"));
		return 0; /* manifest-only: no history entry */
	} else if (!strcmp(kind, "stopsignal")) {
		json_object_set_new(c, "StopSignal", json_string(jstr(step, "signal")));
		hist = xasprintf("STOPSIGNAL %s", jstr(step, "signal"));
	} else if (!strcmp(kind, "healthcheck")) {
		json_t *hc = json_object();
		json_object_set(hc, "Test", json_object_get(step, "test"));
		static const struct {
			const char *plan, *oci;
		} fields[] = {{"interval", "Interval"},
			      {"timeout", "Timeout"},
			      {"start_period", "StartPeriod"},
			      {"retries", "Retries"}};
		for (size_t i = 0; i < 4; i++) {
			json_t *v = json_object_get(step, fields[i].plan);
			if (json_is_integer(v) && json_integer_value(v) > 0)
				json_object_set(hc, fields[i].oci, v);
		}
		json_object_set_new(c, "Healthcheck", hc);
		cleanup_free char *s = argv_string(json_object_get(step, "test"));
		hist = xasprintf("HEALTHCHECK %s", s);
	} else if (!strcmp(kind, "shell")) {
		json_decref(st->shell);
		st->shell = json_deep_copy(json_object_get(step, "argv"));
		cleanup_free char *s = argv_string(st->shell);
		hist = xasprintf("SHELL %s", s);
	} else {
		ib_error_setc(err, IB_EINVALID, "unknown step kind '%s'", kind);
		return recipe_error(b, step, err);
	}
	add_history(b, st, hist, true);
	return 0;
}

/* ---- layers ---- */

/* Make sure the layer is unpacked under ROOT/layers (overlay format). */
static int ensure_unpacked(builder *b, layer_ref *l, ib_error **err)
{
	if (ib_store_layer_unpacked(b->store, l->diff_id))
		return 0;
	cleanup_free char *dest = ib_store_layer_dir(b->store, l->diff_id);
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "unpack");
	if (ib_mkdir_p(tmp, 0755, err) < 0)
		return -1;
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(b->store, l->desc.digest, &fd, &size, err);
	if (r == 0) {
		ib_unpack_options uo = IB_UNPACK_OPTIONS_INIT;
		uo.whiteouts = IB_WHITEOUT_OVERLAY;
		r = ib_unpack_fd(fd, tmp, &uo, NULL, err);
	}
	if (r == 0 && rename(tmp, dest) < 0 && errno != ENOTEMPTY && errno != EEXIST)
		r = ib_error_set(err, errno, "rename %s", dest);
	ib_error *e2 = NULL;
	ib_rm_rf(tmp, &e2);
	ib_error_free(&e2);
	if (r < 0)
		return ib_error_wrap(err, "unpack layer %.19s", l->desc.digest);
	return 0;
}

static int ensure_stage_unpacked(builder *b, stage_state *st, ib_error **err)
{
	for (size_t i = 0; i < st->n_layers; i++)
		if (ensure_unpacked(b, &st->layers[i], err) < 0)
			return -1;
	return 0;
}

static void push_layer(stage_state *st, const ib_descriptor *d, const char *diff_id)
{
	st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(layer_ref));
	layer_ref *l = &st->layers[st->n_layers++];
	memset(l, 0, sizeof(*l));
	ib_descriptor_copy(&l->desc, d);
	memcpy(l->diff_id, diff_id, IB_DIGEST_BUFLEN);
	json_t *rootfs = json_object_get(st->config, "rootfs");
	json_array_append_new(json_object_get(rootfs, "diff_ids"), json_string(diff_id));
}

static json_t *layer_entry_json(const ib_layer_result *r, const char *media_type,
				const char *created_by)
{
	return json_pack("{s:{s:s, s:s, s:I, s:s}, s:s}", "layer", "digest", r->digest, "diff_id",
			 r->diff_id, "size", (json_int_t)r->size, "mediaType", media_type,
			 "created_by", created_by);
}

/* Use a cached layer if its blob is still in the store. */
static bool use_cached(builder *b, stage_state *st, const char *key, const char *created_by)
{
	json_t *e = ib_cache_step_get(b->cache, key);
	if (!e)
		return false;
	json_t *l = json_object_get(e, "layer");
	const char *digest = jstr(l, "digest");
	bool ok = ib_store_blob_exists(b->store, digest);
	if (ok) {
		ib_descriptor d = {0};
		d.media_type = xstrdup(jstr(l, "mediaType"));
		memcpy(d.digest, digest, IB_DIGEST_BUFLEN);
		d.size = json_integer_value(json_object_get(l, "size"));
		push_layer(st, &d, jstr(l, "diff_id"));
		ib_descriptor_clear(&d);
		add_history(b, st, created_by, false);
	}
	json_decref(e);
	return ok;
}

static int commit_layer(builder *b, stage_state *st, const char *key, const ib_layer_result *r,
			const char *created_by, ib_error **err)
{
	const char *mt = ib_layer_media_type(b->o->compression, false);
	ib_descriptor d = {0};
	d.media_type = xstrdup(mt);
	memcpy(d.digest, r->digest, IB_DIGEST_BUFLEN);
	d.size = r->size;
	push_layer(st, &d, r->diff_id);
	ib_descriptor_clear(&d);
	add_history(b, st, created_by, false);
	json_t *e = layer_entry_json(r, mt, created_by);
	json_object_set_new(e, "key", json_string(key));
	int rc = ib_cache_step_put(b->cache, key, e, err);
	json_decref(e);
	return rc;
}

/* ---- explain ---- */

static char *explain_id(builder *b, stage_state *st, size_t idx)
{
	return xasprintf("%s\n%s\n%s\n%zu", b->context, jstr(b->plan, "recipe"), st->name, idx);
}

static void explain_miss(builder *b, stage_state *st, size_t idx, json_t *inputs)
{
	cleanup_free char *id = explain_id(b, st, idx);
	json_t *prev = ib_cache_explain_get(b->cache, id);
	ib_buf why = IB_BUF_INIT;
	if (b->o->no_cache) {
		ib_buf_appendf(&why, "--no-cache");
	} else if (!prev) {
		ib_buf_appendf(&why, "no earlier build of this step");
	} else if (!json_equal(json_object_get(prev, "step"), json_object_get(inputs, "step"))) {
		ib_buf_appendf(&why, "the step's definition changed");
	} else if (!json_equal(json_object_get(prev, "extra"), json_object_get(inputs, "extra")) &&
		   !json_object_get(inputs, "sources")) {
		ib_buf_appendf(&why, "its environment (env, user, workdir, shell or base) changed");
	} else if (json_object_get(inputs, "sources") &&
		   !json_equal(json_object_get(prev, "sources"),
			       json_object_get(inputs, "sources"))) {
		json_t *a = json_object_get(prev, "sources"),
		       *bb = json_object_get(inputs, "sources");
		const char *k;
		json_t *v;
		int n = 0;
		json_object_foreach (bb, k, v) {
			json_t *old = json_object_get(a, k);
			if (!old || !json_equal(old, v)) {
				if (n++ < 5)
					ib_buf_appendf(&why, "%s%s %s", n > 1 ? ", " : "", k,
						       old ? "changed" : "added");
			}
		}
		json_object_foreach (a, k, v) {
			if (!json_object_get(bb, k) && n++ < 5)
				ib_buf_appendf(&why, "%s%s removed", n > 1 ? ", " : "", k);
		}
		if (n > 5)
			ib_buf_appendf(&why, " (+%d more)", n - 5);
		if (n == 0)
			ib_buf_appendf(&why, "copy sources changed");
	} else if (!json_equal(json_object_get(prev, "parent"),
			       json_object_get(inputs, "parent"))) {
		ib_buf_appendf(&why, b->chain_missed ? "an earlier step was rebuilt"
						     : "the base image changed");
	} else {
		ib_buf_appendf(&why,
			       "the cached layer was removed (prune) or the step is cache=false");
	}
	ib_progress_info(b->o->progress, "#%d cache miss: %s", b->step_no, why.data);
	ib_buf_free(&why);
	json_decref(prev);
}

static void explain_record(builder *b, stage_state *st, size_t idx, json_t *inputs)
{
	cleanup_free char *id = explain_id(b, st, idx);
	ib_error *e = NULL;
	if (ib_cache_explain_put(b->cache, id, inputs, &e) < 0)
		ib_error_free(&e);
}

/* ---- run ---- */

static void output_cb(const char *line, size_t len, void *payload)
{
	builder *b = payload;
	ib_progress_output(b->o->progress, b->cur_id, line, len);
	if (b->n_last == LAST_LINES) {
		free(b->last[0]);
		memmove(b->last, b->last + 1, (LAST_LINES - 1) * sizeof(char *));
		b->n_last--;
	}
	b->last[b->n_last++] = xstrndup(line, len);
}

static void layer_progress(uint64_t tar_bytes, void *payload)
{
	builder *b = payload;
	uint64_t total = b->layer_total > tar_bytes ? b->layer_total : 0;
	ib_progress_bytes(b->o->progress, b->cur_id, "layer", tar_bytes, total);
}

static void clear_last(builder *b)
{
	for (size_t i = 0; i < b->n_last; i++)
		free(b->last[i]);
	b->n_last = 0;
}

static bool path_within(const char *root_real, const char *p)
{
	size_t n = strlen(root_real);
	return !strcmp(root_real, "/") ||
	       (!strncmp(p, root_real, n) && (p[n] == '\0' || p[n] == '/'));
}

/* Where a secret's bytes come from: --secret id=ID,src=PATH on the command
 * line (the person running the build decides), else the recipe's src,
 * which must be a file inside the build context: a recipe alone never
 * reads arbitrary host files into a build. */
static int secret_source(builder *b, const char *id, const char *src, char **out, ib_error **err)
{
	size_t idlen = strlen(id);
	for (size_t i = 0; b->o->secrets && b->o->secrets[i]; i++) {
		const char *s = b->o->secrets[i];
		if (!strncmp(s, id, idlen) && s[idlen] == '=') {
			*out = xstrdup(s + idlen + 1);
			return 0;
		}
	}
	cleanup_free char *p = src[0] == '/' ? xstrdup(src) : ib_path_join(b->context, src);
	char real[PATH_MAX];
	if (!realpath(p, real))
		return ib_error_set(err, errno, "run: secret \"%s\": %s", id, src);
	if (!path_within(b->context, real) || !strcmp(real, b->context))
		return ib_error_setc(err, IB_EUNSAFE,
				     "run: secret \"%s\": %s is outside the build context; pass it "
				     "with --secret id=%s,src=PATH",
				     id, src, id);
	*out = xstrdup(real);
	return 0;
}

static char **effective_env(stage_state *st, json_t *step)
{
	json_t *env = json_deep_copy(cfg_env(st));
	const char *k;
	json_t *v;
	json_object_foreach (json_object_get(step, "env"), k, v) {
		env_set(env, k, json_string_value(v));
	}
	char **out = xcalloc(json_array_size(env) + 1, sizeof(char *));
	size_t i;
	json_array_foreach (env, i, v) {
		out[i] = xstrdup(json_string_value(v));
	}
	json_decref(env);
	return out;
}

static char **json_strv(json_t *arr)
{
	char **out = xcalloc(json_array_size(arr) + 1, sizeof(char *));
	size_t i;
	json_t *v;
	json_array_foreach (arr, i, v) {
		out[i] = xstrdup(json_string_value(v));
	}
	return out;
}

static int exec_run(builder *b, stage_state *st, json_t *step, const char *key,
		    const char *created_by, ib_error **err)
{
	if (ensure_stage_unpacked(b, st, err) < 0)
		return -1;
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "run");
	cleanup_free char *upper = ib_path_join(tmp, "upper");
	cleanup_free char *work = ib_path_join(tmp, "work");
	if (ib_mkdir_p(upper, 0755, err) < 0 || ib_mkdir_p(work, 0755, err) < 0)
		return -1;
	char **lowers = xcalloc(st->n_layers + 1, sizeof(char *));
	for (size_t i = 0; i < st->n_layers; i++)
		lowers[i] = ib_store_layer_dir(b->store, st->layers[st->n_layers - 1 - i].diff_id);
	cleanup_strv char **argv = json_strv(json_object_get(step, "argv"));
	cleanup_strv char **env = effective_env(st, step);

	/* cache mounts persist across builds; secrets are bind-mounted read-only */
	json_t *cm = json_object_get(step, "cache_mounts"), *sec = json_object_get(step, "secrets");
	size_t n_mounts = json_array_size(cm) + json_array_size(sec);
	ib_sandbox_mount *mounts = xcalloc(n_mounts + 1, sizeof(*mounts));
	char **mount_src = xcalloc(n_mounts + 1, sizeof(char *));
	size_t m = 0, i;
	json_t *v;
	int rc = 0;
	json_array_foreach (cm, i, v) {
		char d[IB_DIGEST_BUFLEN];
		const char *target = json_string_value(v);
		ib_digest_buffer(d, target, strlen(target));
		cleanup_free char *rel = xasprintf("cache/mounts/%.16s", ib_digest_hex(d));
		mount_src[m] = ib_path_join(ib_store_root(b->store), rel);
		if (rc == 0)
			rc = ib_mkdir_p(mount_src[m], 0755, err);
		mounts[m] = (ib_sandbox_mount){mount_src[m], target, false, false};
		m++;
	}
	json_array_foreach (sec, i, v) {
		if (rc == 0)
			rc = secret_source(b, jstr(v, "id"), jstr(v, "src"), &mount_src[m], err);
		mounts[m] = (ib_sandbox_mount){mount_src[m] ? mount_src[m] : "", jstr(v, "target"),
					       true, true};
		m++;
	}

	const char *user = jstr(step, "user");
	if (!user || !*user)
		user = jstr(cfg(st), "User");
	const char *wd = jstr(step, "workdir");
	cleanup_free char *wdabs = wd ? image_path(st, wd) : NULL;
	if (!wdabs)
		wdabs = xstrdup(jstr(cfg(st), "WorkingDir") && *jstr(cfg(st), "WorkingDir")
				    ? jstr(cfg(st), "WorkingDir")
				    : "/");
	const char *net = jstr(step, "network");
	if (!net || !strcmp(net, "default"))
		net = b->o->network;

	ib_sandbox_options so = IB_SANDBOX_OPTIONS_INIT;
	so.lower_dirs = lowers;
	so.upper_dir = upper;
	so.work_dir = work;
	so.argv = argv;
	so.env = env;
	so.user = user && *user ? user : NULL;
	so.workdir = wdabs;
	so.network = net;
	so.timeout_sec = (unsigned)json_integer_value(json_object_get(step, "timeout"));
	if (!so.timeout_sec)
		so.timeout_sec = b->o->step_timeout;
	so.pids_limit = b->o->pids_limit;
	so.memory_limit = b->o->memory_limit;
	so.seccomp_unconfined = b->o->seccomp_unconfined;
	so.mounts = mounts;
	so.n_mounts = m;
	so.output = output_cb;
	so.payload = b;
	int status = 0;
	cleanup_free char *ldir = NULL;
	clear_last(b);
	if (rc == 0)
		rc = ib_sandbox_run(&so, &status, err);
	ib_strv_free(lowers);
	ib_strv_free(mount_src);
	free(mounts);
	if (rc < 0)
		goto out;
	if (status != 0) {
		for (size_t k = 0; k < b->n_last; k++)
			ib_progress_info(b->o->progress, "  | %s", b->last[k]);
		cleanup_free char *cmd = argv_string(json_object_get(step, "argv"));
		if (so.timeout_sec && status == 137 && b->n_last &&
		    !strncmp(b->last[b->n_last - 1], "timed out", 9))
			rc = ib_error_setc(err, IB_ERROR, "run: %s: %s", b->last[b->n_last - 1],
					   cmd);
		else
			rc = ib_error_setc(err, IB_ERROR, "run: command exited with status %d: %s",
					   status, cmd);
		goto out;
	}
	ib_layer_options lo = {b->o->compression,	b->o->source_date_epoch, 0,
			       b->o->compression_level, layer_progress,		 b};
	ib_layer_result res = {0};
	b->layer_total = 0;
	rc = ib_layer_from_upper(b->store, upper, NULL, &lo, &res, err);
	if (rc < 0)
		goto out;
	/* The upper dir is this layer in overlay format: keep it as the
	 * unpacked copy so the next run step needs no extraction. */
	ldir = ib_store_layer_dir(b->store, res.diff_id);
	if (!ib_file_exists(ldir) && rename(upper, ldir) < 0 && errno != ENOTEMPTY &&
	    errno != EEXIST) {
		rc = ib_error_set(err, errno, "rename %s", ldir);
		goto out;
	}
	rc = commit_layer(b, st, key, &res, created_by, err);
out:;
	ib_error *e2 = NULL;
	ib_rm_rf(tmp, &e2);
	ib_error_free(&e2);
	clear_last(b);
	if (rc < 0)
		return recipe_error(b, step, err);
	return 0;
}

/* ---- copy ---- */

typedef struct copy_item {
	char *dest; /* archive path, relative ("usr/bin/x") */
	char *host; /* absolute host path */
	char *rel;  /* path relative to the source root (for --explain) */
	struct stat st;
	char content[IB_DIGEST_BUFLEN]; /* content digest, link target digest, ... */
} copy_item;

/* A directory on the way to (or at) the destination: written into the
 * layer with the image's own metadata when it exists, 0755 root otherwise. */
typedef struct parent_dir {
	char *path;
	uint32_t mode;
	int64_t uid, gid;
	bool created; /* not in the image */
} parent_dir;

typedef struct copy_list {
	copy_item *items;
	size_t n, alloc;
	parent_dir *parents; /* shallowest first */
	size_t n_parents;
	bool last_is_dest; /* the last parent is the destination directory */
} copy_list;

static void copy_list_add(copy_list *l, const char *dest, const char *host, const char *rel,
			  const struct stat *st)
{
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? l->alloc * 2 : 64;
		l->items = xrealloc(l->items, l->alloc * sizeof(copy_item));
	}
	copy_item *it = &l->items[l->n++];
	it->dest = xstrdup(dest);
	it->host = xstrdup(host);
	it->rel = xstrdup(rel);
	it->st = *st;
}

static void copy_list_free(copy_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].dest);
		free(l->items[i].host);
		free(l->items[i].rel);
	}
	free(l->items);
	for (size_t i = 0; i < l->n_parents; i++)
		free(l->parents[i].path);
	free(l->parents);
}

/* One layer's entry for rel: 1 found (*st, and *target for a symlink), 0 not
 * in this layer, -1 deleted by this layer (an overlay whiteout).  Nothing
 * is resolved through a symlink inside the layer directory. */
static int layer_entry(const char *layer_dir, const char *rel, struct stat *st, char *target,
		       size_t tlen)
{
	cleanup_close int root = open(layer_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return 0;
	cleanup_free char *parent = xstrdup(rel);
	char *slash = strrchr(parent, '/');
	const char *base = slash ? rel + (slash - parent) + 1 : rel;
	cleanup_close int pfd = -1;
	if (slash) {
		*slash = '\0';
		struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
		pfd = (int)syscall(SYS_openat2, root, parent, &how, sizeof(how));
		if (pfd < 0)
			return 0;
	}
	int dfd = slash ? pfd : root;
	if (fstatat(dfd, base, st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (S_ISCHR(st->st_mode) && st->st_rdev == 0)
		return -1;
	if (S_ISLNK(st->st_mode)) {
		ssize_t n = readlinkat(dfd, base, target, tlen - 1);
		if (n < 0)
			return 0;
		target[n] = '\0';
	}
	return 1;
}

/* What the stage's filesystem holds at rel (top-most layer wins). */
static int image_entry(builder *b, stage_state *st, const char *rel, struct stat *out, char *target,
		       size_t tlen, ib_error **err)
{
	for (size_t i = st->n_layers; i > 0; i--) {
		layer_ref *l = &st->layers[i - 1];
		if (ensure_unpacked(b, l, err) < 0)
			return -1;
		cleanup_free char *dir = ib_store_layer_dir(b->store, l->diff_id);
		int r = layer_entry(dir, rel, out, target, tlen);
		if (r != 0)
			return r > 0 ? 1 : 0;
	}
	return 0;
}

/* Metadata of parent i: a destination directory the copy creates gets the
 * copy's owner and mode overrides, like the files in it. */
static void parent_meta(const copy_list *l, size_t i, const ib_layer_override *ov, uint32_t *mode,
			int64_t *uid, int64_t *gid)
{
	const parent_dir *pd = &l->parents[i];
	bool own = l->last_is_dest && i + 1 == l->n_parents && pd->created;
	*mode = own && ov->mode >= 0 ? (uint32_t)ov->mode : pd->mode;
	*uid = own && ov->uid >= 0 ? ov->uid : pd->uid;
	*gid = own && ov->gid >= 0 ? ov->gid : pd->gid;
}

static void add_parent(copy_list *l, const char *path, const struct stat *st)
{
	l->parents = xrealloc(l->parents, (l->n_parents + 1) * sizeof(parent_dir));
	parent_dir *p = &l->parents[l->n_parents++];
	p->path = xstrdup(path);
	p->created = st == NULL;
	p->mode = st ? (uint32_t)(st->st_mode & 07777) : 0755;
	p->uid = st ? (int64_t)st->st_uid : 0;
	p->gid = st ? (int64_t)st->st_gid : 0;
}

/* Resolve the destination in the stage's filesystem the way docker does:
 * symlinks on the way are followed inside the image (usrmerge's /bin ->
 * usr/bin stays a symlink), existing directories keep their metadata (a
 * 1777 /tmp stays 1777).  With whole, the last component is resolved too
 * (a directory destination).  *out is the resolved relative path; every
 * directory on the way (and the destination itself with whole) is recorded
 * in l->parents. */
static int resolve_dest(builder *b, stage_state *st, const char *dest, bool whole, copy_list *l,
			char **out, ib_error **err)
{
	cleanup_free char *path = xstrdup(dest);
	for (int hops = 0;; hops++) {
		if (hops > 40)
			return ib_error_setc(err, IB_EINVALID,
					     "copy: destination /%s: too many symlinks", dest);
		for (size_t i = 0; i < l->n_parents; i++)
			free(l->parents[i].path);
		l->n_parents = 0;
		cleanup_free char *cur = xstrdup("");
		char *jump = NULL;
		const char *p = path;
		while (*p) {
			size_t n = strcspn(p, "/");
			const char *rest = p + n + (p[n] == '/');
			bool last = *rest == '\0';
			if (last && !whole)
				break;
			cleanup_free char *cand =
			    *cur ? xasprintf("%s/%.*s", cur, (int)n, p) : xstrndup(p, n);
			struct stat sb;
			char target[PATH_MAX];
			int r = image_entry(b, st, cand, &sb, target, sizeof(target), err);
			if (r < 0)
				return -1;
			if (r == 1 && S_ISLNK(sb.st_mode)) {
				cleanup_free char *joined =
				    target[0] == '/' ? xasprintf("%s/%s", target, rest)
						     : xasprintf("/%s/%s/%s", cur, target, rest);
				jump = clean_path(joined);
				break;
			}
			if (r == 1 && !S_ISDIR(sb.st_mode))
				return ib_error_setc(
				    err, IB_EINVALID,
				    "copy: destination /%s: /%s is not a directory", dest, cand);
			add_parent(l, cand, r == 1 ? &sb : NULL);
			free(cur);
			cur = steal_pointer(&cand);
			p = rest;
		}
		if (jump) {
			free(path);
			path = xstrdup(jump[0] == '/' ? jump + 1 : jump);
			free(jump);
			continue;
		}
		*out = whole || !*p ? steal_pointer(&cur)
				    : (*cur ? xasprintf("%s/%s", cur, p) : xstrdup(p));
		return 0;
	}
}

/* exclude= globs are relative to the source root, like the sources; a
 * pattern without '/' also matches a base name at any depth ("*.o"), and a
 * pattern that matches a directory excludes everything below it. */
static bool excluded(json_t *exclude, const char *rel)
{
	size_t i;
	json_t *v;
	json_array_foreach (exclude, i, v) {
		const char *pat = json_string_value(v);
		cleanup_free char *any_depth = strchr(pat, '/') ? NULL : xasprintf("**/%s", pat);
		cleanup_free char *tmp = xstrdup(rel);
		/* rel itself, then each of its parent directories */
		for (size_t k = strlen(tmp);;) {
			if (ib_glob_match(pat, tmp) || (any_depth && ib_glob_match(any_depth, tmp)))
				return true;
			while (k > 0 && tmp[k - 1] != '/')
				k--;
			if (k == 0)
				break;
			tmp[--k] = '\0';
		}
	}
	return false;
}

static int walk_tree(copy_list *l, const char *host, const char *dest, const char *rel,
		     json_t *exclude, ib_error **err)
{
	cleanup_dir DIR *d = opendir(host);
	if (!d)
		return ib_error_set(err, errno, "open %s", rel);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *h = ib_path_join(host, de->d_name);
		cleanup_free char *dd =
		    *dest ? ib_path_join(dest, de->d_name) : xstrdup(de->d_name);
		cleanup_free char *rr = *rel ? ib_path_join(rel, de->d_name) : xstrdup(de->d_name);
		if (excluded(exclude, rr))
			continue;
		struct stat st;
		if (lstat(h, &st) < 0)
			return ib_error_set(err, errno, "stat %s", rr);
		copy_list_add(l, dd, h, rr, &st);
		if (S_ISDIR(st.st_mode) && walk_tree(l, h, dd, rr, exclude, err) < 0)
			return -1;
	}
	return 0;
}

/* Expand a copy source into (rel path) matches under root. */
static int expand_source(const char *root, const char *src, char ***out, ib_error **err)
{
	cleanup_free char *clean = xstrdup(src);
	/* strip leading "/" and "./" (sources are relative to the root) */
	char *s = clean;
	while (*s == '/' || (s[0] == '.' && s[1] == '/'))
		s += (*s == '/') ? 1 : 2;
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return ib_error_setc(err, IB_EUNSAFE, "copy: source \"%s\" leaves its root",
					     src);
		p += len;
		while (*p == '/')
			p++;
	}
	char **res = NULL;
	if (*s == '\0' || !strcmp(s, ".")) {
		res = xcalloc(1, sizeof(char *));
		ib_strv_push(&res, "");
	} else if (ib_glob_has_meta(s)) {
		/* the same matcher the recipe used when it checked the source */
		if (ib_glob(root, s, &res, err) < 0)
			return ib_error_wrap(err, "copy: \"%s\"", src);
	} else {
		res = xcalloc(1, sizeof(char *));
		ib_strv_push(&res, s);
	}
	if (ib_strv_len(res) == 0) {
		ib_strv_free(res);
		return ib_error_setc(err, IB_ENOTFOUND, "copy: no source matches \"%s\"", src);
	}
	*out = res;
	return 0;
}

/* Collect what a copy step adds: items with archive paths. */
static int copy_collect(builder *b, stage_state *st, json_t *step, const char *root,
			bool from_context, copy_list *l, ib_error **err)
{
	json_t *sources = json_object_get(step, "sources");
	json_t *exclude = json_object_get(step, "exclude");
	const char *dest_in = jstr(step, "dest");
	cleanup_free char *dest_abs = image_path(st, dest_in);
	bool dest_is_dir = dest_in[strlen(dest_in) - 1] == '/';
	char rootreal[PATH_MAX];
	if (!realpath(root, rootreal))
		return ib_error_set(err, errno, "context %s", root);

	char **all = xcalloc(1, sizeof(char *));
	size_t i;
	json_t *v;
	json_array_foreach (sources, i, v) {
		char **m = NULL;
		if (expand_source(root, json_string_value(v), &m, err) < 0) {
			ib_strv_free(all);
			return -1;
		}
		for (size_t k = 0; m[k]; k++)
			ib_strv_push(&all, m[k]);
		ib_strv_free(m);
	}
	if (ib_strv_len(all) > 1)
		dest_is_dir = true;
	/* a single directory source also puts its contents into dest */
	bool whole = dest_is_dir;
	if (!whole && all[0]) {
		cleanup_free char *h = *all[0] ? ib_path_join(root, all[0]) : xstrdup(root);
		struct stat sb;
		whole = lstat(h, &sb) == 0 && S_ISDIR(sb.st_mode);
	}
	cleanup_free char *dest_resolved = NULL;
	l->last_is_dest = whole;
	if (*(dest_abs + 1) &&
	    resolve_dest(b, st, dest_abs + 1, whole, l, &dest_resolved, err) < 0) {
		ib_strv_free(all);
		return -1;
	}
	const char *dest_rel = dest_resolved ? dest_resolved : "";
	int rc = 0;
	for (size_t k = 0; all[k] && rc == 0; k++) {
		const char *rel = all[k];
		if (*rel && excluded(exclude, rel))
			continue;
		cleanup_free char *host = *rel ? ib_path_join(root, rel) : xstrdup(root);
		/* the parent of a source must resolve inside the root: a symlink
		 * in the context, or an absolute one in a stage, must not lead the
		 * copy to host files */
		if (*rel) {
			cleanup_free char *parent = xstrdup(host);
			*strrchr(parent, '/') = '\0';
			char pr[PATH_MAX];
			if (!realpath(parent, pr) || !path_within(rootreal, pr)) {
				rc = ib_error_setc(err, IB_EUNSAFE,
						   "copy: source \"%s\" is outside the %s", rel,
						   from_context ? "build context" : "source image");
				break;
			}
		}
		struct stat sst;
		if (lstat(host, &sst) < 0) {
			rc = ib_error_set(err, errno, "copy: source \"%s\"", *rel ? rel : ".");
			break;
		}
		if (S_ISDIR(sst.st_mode)) {
			/* directory: its contents go into dest (recorded in l->parents) */
			rc = walk_tree(l, host, dest_rel, rel, exclude, err);
		} else {
			cleanup_free char *d = NULL;
			const char *base = strrchr(rel, '/');
			base = base ? base + 1 : rel;
			d = dest_is_dir ? (*dest_rel ? ib_path_join(dest_rel, base) : xstrdup(base))
					: xstrdup(dest_rel);
			if (!*d) {
				rc = ib_error_setc(err, IB_EINVALID,
						   "copy: cannot copy a file to /");
				break;
			}
			copy_list_add(l, d, host, rel, &sst);
		}
	}
	ib_strv_free(all);
	return rc;
}

/* Find NAME in the stage's /etc/passwd (field 3 = uid, 4 = gid) or
 * /etc/group (field 3 = gid), reading the top-most layer that has the file. */
static int lookup_id(builder *b, stage_state *st, const char *file, const char *name, int64_t *id,
		     int64_t *gid, ib_error **err)
{
	for (size_t i = st->n_layers; i > 0; i--) {
		layer_ref *l = &st->layers[i - 1];
		if (ensure_unpacked(b, l, err) < 0)
			return -1;
		cleanup_free char *dir = ib_store_layer_dir(b->store, l->diff_id);
		/* read the file inside the layer only: a symlinked /etc in an
		 * image must not lead to the host's passwd */
		cleanup_close int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		struct stat sb;
		if (dfd < 0 || fstatat(dfd, file, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISREG(sb.st_mode))
			break; /* a whiteout or something odd hides lower copies */
		struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
		int fd = (int)syscall(SYS_openat2, dfd, file, &how, sizeof(how));
		if (fd < 0)
			break;
		cleanup_fclose FILE *f = fdopen(fd, "re");
		if (!f)
			close(fd);
		char line[1024];
		while (f && fgets(line, sizeof(line), f)) {
			char *fields[4] = {NULL};
			char *p = line;
			for (int k = 0; k < 4 && p; k++) {
				fields[k] = p;
				p = strchr(p, ':');
				if (p)
					*p++ = '\0';
			}
			uint64_t v;
			if (!fields[0] || strcmp(fields[0], name) != 0 || !fields[2] ||
			    ib_parse_u64(fields[2], &v) < 0)
				continue;
			*id = (int64_t)v;
			if (gid && fields[3]) {
				fields[3][strcspn(fields[3], ":\n")] = '\0';
				if (ib_parse_u64(fields[3], &v) == 0)
					*gid = (int64_t)v;
			}
			return 0;
		}
		break;
	}
	return ib_error_setc(err, IB_ENOTFOUND, "copy: no %s \"%s\" in the image's /%s",
			     gid ? "user" : "group", name, file);
}

/* owner= "uid[:gid]" or "user[:group]" (names resolved in the image). */
static int parse_owner(builder *b, stage_state *st, const char *s, int64_t *uid, int64_t *gid,
		       ib_error **err)
{
	*uid = *gid = -1;
	if (!s)
		return 0;
	uint64_t v;
	cleanup_free char *tmp = xstrdup(s);
	char *colon = strchr(tmp, ':');
	if (colon)
		*colon++ = '\0';
	if (ib_parse_u64(tmp, &v) == 0 && v <= UINT32_MAX) {
		*uid = *gid = (int64_t)v;
	} else if (lookup_id(b, st, "etc/passwd", tmp, uid, gid, err) < 0) {
		return -1;
	}
	if (colon) {
		if (ib_parse_u64(colon, &v) == 0 && v <= UINT32_MAX)
			*gid = (int64_t)v;
		else if (lookup_id(b, st, "etc/group", colon, gid, NULL, err) < 0)
			return -1;
	}
	return 0;
}

/* Hash the collected items (content, modes, owners, link targets). */
static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The xattrs a layer keeps (ib_layer_keeps_xattr),
 * as "name=value" lines in name order, hashed. */
static void xattrs_digest(const char *path, char out[IB_DIGEST_BUFLEN])
{
	ib_digest_ctx *c = ib_digest_new();
	char names[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));
	if (n <= 0) {
		ib_digest_final(c, out);
		ib_digest_free(c);
		return;
	}
	char **kept = xcalloc(1, sizeof(char *));
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) {
		const char *name = names + i;
		if (ib_layer_keeps_xattr(name))
			ib_strv_push(&kept, name);
	}
	qsort(kept, ib_strv_len(kept), sizeof(char *), cmp_cstr);
	for (size_t k = 0; kept[k]; k++) {
		char val[4096];
		ssize_t v = lgetxattr(path, kept[k], val, sizeof(val));
		ib_digest_update(c, kept[k], strlen(kept[k]) + 1);
		if (v > 0)
			ib_digest_update(c, val, (size_t)v);
		ib_digest_update(c, "\n", 1);
	}
	ib_strv_free(kept);
	ib_digest_final(c, out);
	ib_digest_free(c);
}

/* Hardlinks, as the tar writes them: for a regular file with several links,
 * the earlier item of the same inode, or NULL (then it is recorded in
 * linked, which holds at most one item per inode). */
static const copy_item *first_link(const copy_item **linked, size_t *n_linked, const copy_item *it)
{
	if (!*it->host || !S_ISREG(it->st.st_mode) || it->st.st_nlink < 2)
		return NULL;
	for (size_t k = 0; k < *n_linked; k++)
		if (linked[k]->st.st_dev == it->st.st_dev && linked[k]->st.st_ino == it->st.st_ino)
			return linked[k];
	linked[(*n_linked)++] = it;
	return NULL;
}

static int copy_digest(builder *b, copy_list *l, char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	ib_digest_ctx *c = ib_digest_new();
	/* hardlinks: a later name of an inode is hashed as a link to the first */
	const copy_item **linked = xcalloc(l->n + 1, sizeof(*linked));
	size_t n_linked = 0;
	int rc = 0;
	for (size_t i = 0; i < l->n && rc == 0; i++) {
		copy_item *it = &l->items[i];
		const copy_item *orig = first_link(linked, &n_linked, it);
		const char *link_to = orig ? orig->dest : "";
		char *content = it->content;
		content[0] = '\0';
		/* the layer stores min(mtime, epoch): only an mtime below the
		 * build timestamp can change it, so only that one is an input */
		int64_t epoch = b->o->source_date_epoch;
		int64_t clamped = it->st.st_mtime < epoch ? (int64_t)it->st.st_mtime : epoch;
		if (!*it->host) {
			snprintf(content, IB_DIGEST_BUFLEN, "dir");
		} else if (S_ISREG(it->st.st_mode)) {
			rc = ib_cache_file_digest(b->cache, it->host, &it->st, content, err);
		} else if (S_ISLNK(it->st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(it->host, target, sizeof(target) - 1);
			if (n < 0) {
				rc = ib_error_set(err, errno, "readlink %s", it->rel);
				break;
			}
			target[n] = '\0';
			ib_digest_buffer(content, target, (size_t)n);
		} else if (S_ISCHR(it->st.st_mode) || S_ISBLK(it->st.st_mode)) {
			snprintf(content, IB_DIGEST_BUFLEN, "dev:%llu",
				 (unsigned long long)it->st.st_rdev);
		}
		cleanup_free char *line = xasprintf(
		    "%s\t%o\t%u\t%u\t%lld\t%lld\t%s\t%s\n", it->dest, it->st.st_mode, it->st.st_uid,
		    it->st.st_gid, S_ISREG(it->st.st_mode) ? (long long)it->st.st_size : 0LL,
		    (long long)clamped, content, link_to);
		ib_digest_update(c, line, strlen(line));
		if (*it->host) {
			char xd[IB_DIGEST_BUFLEN];
			if (S_ISREG(it->st.st_mode))
				ib_cache_file_xattrs(b->cache, it->host, &it->st, xattrs_digest,
						     xd);
			else
				xattrs_digest(it->host, xd);
			ib_digest_update(c, xd, strlen(xd));
		}
	}
	free(linked);
	ib_digest_final(c, out);
	ib_digest_free(c);
	return rc;
}

/* rel path -> "DIGEST MODE UID:GID" of every non-directory source: what
 * --explain compares, and what tells materialize_copy a file is unchanged */
static json_t *copy_sources_json(const copy_list *l)
{
	json_t *j = json_object();
	for (size_t i = 0; i < l->n; i++) {
		const copy_item *it = &l->items[i];
		if (!*it->rel || S_ISDIR(it->st.st_mode))
			continue;
		cleanup_free char *v = xasprintf("%s %o %u:%u", it->content, it->st.st_mode,
						 it->st.st_uid, it->st.st_gid);
		json_object_set_new(j, it->rel, json_string(v));
	}
	return j;
}

static int mount_stage_view(builder *b, stage_state *src, ib_error **err);
static void release_view(stage_state *st);
static int load_base_image(builder *b, json_t *stage, const char *ref, ib_image **out,
			   ib_error **err);

/* Copy a regular file's bytes (in the kernel where possible). */
static int copy_file_data(int in, int out)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return -1;
		break;
	}
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		if (ib_write_all(out, buf, (size_t)n, NULL) < 0)
			return -1;
	}
}

/* The xattrs a layer keeps (ib_layer_keeps_xattr). */
static void copy_xattrs(const char *src, const char *dst)
{
	char names[4096];
	ssize_t n = llistxattr(src, names, sizeof(names));
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) {
		const char *name = names + i;
		if (!ib_layer_keeps_xattr(name))
			continue;
		char val[4096];
		ssize_t v = lgetxattr(src, name, val, sizeof(val));
		if (v >= 0)
			lsetxattr(dst, name, val, (size_t)v, 0);
	}
}

typedef struct dest_ent {
	const char *path;
	bool is_dir;
} dest_ent;

static int cmp_dest(const void *a, const void *b)
{
	return strcmp(((const dest_ent *)a)->path, ((const dest_ent *)b)->path);
}

/* True when every destination is written once and no destination lies
 * below another one that is not a directory.  Anything else (a symlink
 * "x" and a directory "x/" from two sources, say) is left to the tar's
 * last-entry-wins rules and the safe unpacker: writing it by path here
 * could follow the symlink out of the store. */
static bool dests_are_a_tree(const copy_list *l)
{
	dest_ent *v = xcalloc(l->n + 1, sizeof(*v));
	for (size_t i = 0; i < l->n; i++)
		v[i] = (dest_ent){l->items[i].dest,
				  !*l->items[i].host || S_ISDIR(l->items[i].st.st_mode)};
	qsort(v, l->n, sizeof(*v), cmp_dest);
	bool ok = true;
	for (size_t i = 1; i < l->n && ok; i++)
		ok = strcmp(v[i - 1].path, v[i].path) != 0;
	for (size_t i = 0; i < l->n && ok; i++) {
		cleanup_free char *anc = xstrdup(v[i].path);
		for (char *sl = strrchr(anc, '/'); sl && ok; sl = strrchr(anc, '/')) {
			*sl = '\0';
			dest_ent key = {anc, false};
			dest_ent *hit = bsearch(&key, v, l->n, sizeof(*v), cmp_dest);
			ok = !hit || hit->is_dir;
		}
	}
	free(v);
	return ok;
}

/* The previous layer's copy of dest, when it is a regular file reached
 * without any symlink: only then may it be hardlinked into the new layer. */
static char *prev_file(const char *prev_real, const char *dest)
{
	char *old = ib_path_join(prev_real, dest);
	char real[PATH_MAX];
	struct stat st;
	if (realpath(old, real) && !strcmp(real, old) && lstat(old, &st) == 0 &&
	    S_ISREG(st.st_mode))
		return old;
	free(old);
	return NULL;
}

/* Write a copy step's entries straight into the unpacked layer directory,
 * as ib_unpack would lay out its tar (same owners, modes, clamped mtimes),
 * so the next run step finds its lower dir without decompressing and
 * parsing the blob again.  Any failure just leaves the layer to be
 * unpacked from its blob on demand. */
static void materialize_copy(builder *b, const copy_list *l, const char *diff_id,
			     const ib_layer_override *ov, bool owner_root, json_t *sources,
			     json_t *prev)
{
	/* The previous run of this same step (same definition, same epoch) left
	 * an unpacked layer: its files whose source is unchanged are hardlinked
	 * instead of copied.  Unpacked layers are never modified (overlay only
	 * reads lower dirs), so sharing inodes between them is safe. */
	char prev_real[PATH_MAX];
	const char *prev_dir = NULL;
	json_t *prev_sources = json_object_get(prev, "sources");
	const char *prev_diff = json_string_value(json_object_get(prev, "diff_id"));
	if (prev_diff && ib_store_layer_unpacked(b->store, prev_diff)) {
		cleanup_free char *d = ib_store_layer_dir(b->store, prev_diff);
		if (realpath(d, prev_real))
			prev_dir = prev_real;
	}
	if (ib_store_layer_unpacked(b->store, diff_id) || l->n == 0 || !dests_are_a_tree(l))
		return;
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "copy");
	ib_error *e = NULL;
	bool ok = ib_mkdir_p(tmp, 0755, &e) == 0;
	int64_t epoch = b->o->source_date_epoch;
	/* directories on the way, with the metadata the layer gives them */
	for (size_t i = 0; i < l->n_parents && ok; i++) {
		cleanup_free char *d = ib_path_join(tmp, l->parents[i].path);
		uint32_t m;
		int64_t u, g;
		parent_meta(l, i, ov, &m, &u, &g);
		struct stat ds;
		ok = (mkdir(d, 0700) == 0 || errno == EEXIST) && lstat(d, &ds) == 0 &&
		     S_ISDIR(ds.st_mode) && lchown(d, (uid_t)u, (gid_t)g) == 0 &&
		     chmod(d, (mode_t)m) == 0;
	}
	/* files with several links become hardlinks, as in the tar */
	const copy_item **linked = xcalloc(l->n + 1, sizeof(*linked));
	size_t n_linked = 0;
	for (size_t i = 0; i < l->n && ok; i++) {
		const copy_item *it = &l->items[i];
		cleanup_free char *dst = ib_path_join(tmp, it->dest);
		struct stat st = it->st;
		if (prev_dir && *it->host && S_ISREG(st.st_mode)) {
			json_t *was = json_object_get(prev_sources, it->rel);
			json_t *now = json_object_get(sources, it->rel);
			cleanup_free char *old = was && now && json_equal(was, now)
						     ? prev_file(prev_dir, it->dest)
						     : NULL;
			if (old && link(old, dst) == 0)
				continue;
		}
		const copy_item *orig = first_link(linked, &n_linked, it);
		if (orig) {
			cleanup_free char *target = ib_path_join(tmp, orig->dest);
			ok = link(target, dst) == 0;
			continue;
		}
		if (!*it->host)
			st.st_mode = S_IFDIR | 0755;
		uid_t uid = ov->uid >= 0 ? (uid_t)ov->uid : owner_root ? 0 : st.st_uid;
		gid_t gid = ov->gid >= 0 ? (gid_t)ov->gid : owner_root ? 0 : st.st_gid;
		mode_t perm = ov->mode >= 0 ? (mode_t)ov->mode : (st.st_mode & 07777);
		int r = 0;
		if (S_ISDIR(st.st_mode)) {
			struct stat dstat;
			r = mkdir(dst, 0700) < 0 && errno != EEXIST ? -1 : 0;
			if (r == 0 && (lstat(dst, &dstat) < 0 || !S_ISDIR(dstat.st_mode)))
				r = -1; /* never chmod/chown through something else */
		} else if (S_ISREG(st.st_mode)) {
			cleanup_close int in = open(it->host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			cleanup_close int out =
			    open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
			r = in < 0 || out < 0 ? -1 : copy_file_data(in, out);
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(it->host, target, sizeof(target) - 1);
			if (n >= 0)
				target[n] = '\0';
			r = n < 0 ? -1 : symlink(target, dst);
		} else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
			r = mknod(dst, st.st_mode & S_IFMT, st.st_rdev);
		} else {
			continue; /* sockets are not in layers */
		}
		if (r == 0)
			r = lchown(dst, uid, gid);
		if (r == 0 && !S_ISLNK(st.st_mode))
			r = chmod(dst, perm); /* after chown, which clears setuid */
		if (r == 0 && *it->host)
			copy_xattrs(it->host, dst);
		if (r == 0 && !S_ISDIR(st.st_mode)) {
			struct timespec ts[2] = {{0, UTIME_OMIT},
						 {st.st_mtime < epoch ? st.st_mtime : epoch, 0}};
			r = utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
		}
		ok = r == 0;
	}
	free(linked);
	/* directories on the way carry the build timestamp, deepest first */
	for (size_t i = l->n_parents; i > 0 && ok; i--) {
		cleanup_free char *d = ib_path_join(tmp, l->parents[i - 1].path);
		struct timespec ts[2] = {{0, UTIME_OMIT}, {epoch, 0}};
		utimensat(AT_FDCWD, d, ts, AT_SYMLINK_NOFOLLOW);
	}
	/* directory mtimes last, children first */
	for (size_t i = l->n; i > 0 && ok; i--) {
		const copy_item *it = &l->items[i - 1];
		if (*it->host && !S_ISDIR(it->st.st_mode))
			continue;
		cleanup_free char *dst = ib_path_join(tmp, it->dest);
		time_t m = *it->host && it->st.st_mtime < epoch ? it->st.st_mtime : epoch;
		struct timespec ts[2] = {{0, UTIME_OMIT}, {m, 0}};
		utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
	}
	cleanup_free char *dest = ib_store_layer_dir(b->store, diff_id);
	if (ok && rename(tmp, dest) == 0)
		return;
	ib_error_free(&e);
	if (ib_rm_rf(tmp, &e) < 0)
		ib_error_free(&e);
}

static int exec_copy(builder *b, stage_state *st, json_t *step, size_t idx, const char *parent,
		     json_t *extra, const char *label, char key_out[IB_DIGEST_BUFLEN], bool *cached,
		     ib_error **err)
{
	json_t *from = json_object_get(step, "from");
	cleanup_free char *root = NULL;
	bool from_context = !json_is_object(from);
	stage_state *src = NULL;
	stage_state tmpstage = {0};
	cleanup_free char *srcs = NULL, *created_by = NULL;
	int rc = 0;
	if (from_context) {
		root = xstrdup(b->context);
	} else if (jstr(from, "stage")) {
		src = find_stage(b, jstr(from, "stage"));
		if (!src || !src->built) {
			ib_error_setc(err, IB_EINVALID,
				      "copy: stage \"%s\" is not built before this step",
				      jstr(from, "stage"));
			return recipe_error(b, step, err);
		}
		json_object_set_new(extra, "from_key", json_string(src->key));
	} else if (jstr(from, "image")) {
		/* copy from an image: load (pulling if needed) into a temp stage */
		ib_image *img = NULL;
		if (load_base_image(b, step, jstr(from, "image"), &img, err) < 0) {
			ib_error_wrap(err, "copy from %s", jstr(from, "image"));
			return recipe_error(b, step, err);
		}
		tmpstage.name = "copy-source";
		tmpstage.n_layers = img->manifest->n_layers;
		tmpstage.layers = xcalloc(tmpstage.n_layers + 1, sizeof(layer_ref));
		for (size_t i = 0; i < tmpstage.n_layers; i++) {
			ib_descriptor_copy(&tmpstage.layers[i].desc, &img->manifest->layers[i]);
			memcpy(tmpstage.layers[i].diff_id, ib_config_diff_id(img->config, i),
			       IB_DIGEST_BUFLEN);
		}
		json_object_set_new(extra, "from_key", json_string(img->desc.digest));
		ib_image_free(img);
		src = &tmpstage;
	}
	if (src) {
		rc = mount_stage_view(b, src, err);
		if (rc < 0)
			goto done;
		root = xstrdup(src->mount_dir);
	}

	copy_list l = {0};
	rc = copy_collect(b, st, step, root, from_context, &l, err);
	/* content from a stage or image is fixed by its key (from_key) */
	char cdigest[IB_DIGEST_BUFLEN] = "from";
	if (rc == 0 && from_context)
		rc = copy_digest(b, &l, cdigest, err);
	if (rc < 0) {
		copy_list_free(&l);
		goto done;
	}
	json_object_set_new(extra, "content", json_string(cdigest));
	step_key(key_out, parent, step, extra);
	srcs = argv_string(json_object_get(step, "sources"));
	created_by =
	    xasprintf("COPY %s%s %s", from_context ? "" : "--from ", srcs, jstr(step, "dest"));
	json_t *inputs = NULL;
	if (!b->o->no_cache && use_cached(b, st, key_out, created_by)) {
		*cached = true;
		/* a hit keeps the existing record; write one only where none is */
		cleanup_free char *id = explain_id(b, st, idx);
		if (!ib_cache_explain_exists(b->cache, id))
			inputs = json_pack("{s:s, s:O, s:O, s:o}", "parent", parent, "step", step,
					   "extra", extra, "sources", copy_sources_json(&l));
	} else {
		inputs = json_pack("{s:s, s:O, s:O, s:o}", "parent", parent, "step", step, "extra",
				   extra, "sources", copy_sources_json(&l));
		if (b->o->explain)
			explain_miss(b, st, idx, inputs);
		ib_progress_step_start(b->o->progress, b->step_no, label);
		int64_t uid, gid;
		rc = parse_owner(b, st, jstr(step, "owner"), &uid, &gid, err);
		int32_t mode = -1;
		if (jstr(step, "mode"))
			mode = (int32_t)strtol(jstr(step, "mode"), NULL, 8);
		ib_layer_options lo = {b->o->compression,	b->o->source_date_epoch, 0,
				       b->o->compression_level, layer_progress,		 b};
		/* tar size: a header per entry, contents padded to 512 bytes */
		b->layer_total = 1024;
		for (size_t i = 0; i < l.n; i++) {
			uint64_t sz =
			    S_ISREG(l.items[i].st.st_mode) ? (uint64_t)l.items[i].st.st_size : 0;
			b->layer_total += 512 + (sz + 511) / 512 * 512;
		}
		ib_layer_writer *w = NULL;
		if (rc == 0)
			rc = ib_layer_writer_new(&w, b->store, &lo, err);
		/* directories on the way: the image's metadata, or new ones */
		ib_layer_override pov = {uid, gid, mode};
		for (size_t i = 0; rc == 0 && i < l.n_parents; i++) {
			uint32_t m;
			int64_t u, g;
			parent_meta(&l, i, &pov, &m, &u, &g);
			rc = ib_layer_writer_add_dir(w, l.parents[i].path, m, u, g, err);
		}
		for (size_t i = 0; i < l.n && rc == 0; i++) {
			copy_item *it = &l.items[i];
			/* context files belong to root unless owner= says otherwise;
			 * files from a stage keep their owner (docker semantics) */
			ib_layer_override ov = {uid, gid, mode};
			if (from_context && uid < 0)
				ov.uid = ov.gid = 0;
			if (!*it->host)
				rc = ib_layer_writer_add_dir(
				    w, it->dest, mode >= 0 ? (uint32_t)mode : 0755,
				    ov.uid >= 0 ? ov.uid : 0, ov.gid >= 0 ? ov.gid : 0, err);
			else
				rc = ib_layer_writer_add_path(w, it->dest, it->host, &ov, err);
		}
		ib_layer_result res = {0};
		if (rc == 0) {
			rc = ib_layer_writer_finish(w, &res, err);
			w = NULL;
		}
		ib_layer_writer_free(w);
		if (rc == 0)
			rc = commit_layer(b, st, key_out, &res, created_by, err);
		if (rc == 0) {
			ib_layer_override ov = {uid, gid, mode};
			cleanup_free char *id = explain_id(b, st, idx);
			json_t *prev = ib_cache_explain_get(b->cache, id);
			if (prev &&
			    (!json_equal(json_object_get(prev, "step"), step) ||
			     !json_equal(json_object_get(json_object_get(prev, "extra"), "epoch"),
					 json_object_get(extra, "epoch"))))
				json_object_clear(prev);
			materialize_copy(b, &l, res.diff_id, &ov, from_context,
					 json_object_get(inputs, "sources"), prev);
			json_decref(prev);
			json_object_set_new(inputs, "diff_id", json_string(res.diff_id));
		}
		*cached = false;
	}
	if (rc == 0 && inputs)
		explain_record(b, st, idx, inputs);
	json_decref(inputs);
	copy_list_free(&l);
done:
	if (src == &tmpstage) {
		release_view(&tmpstage);
		for (size_t i = 0; i < tmpstage.n_layers; i++)
			ib_descriptor_clear(&tmpstage.layers[i].desc);
		free(tmpstage.layers);
	}
	if (rc < 0)
		return recipe_error(b, step, err);
	return 0;
}

/* Unmount and remove a stage's read-only view, if it has one. */
static void release_view(stage_state *st)
{
	if (st->mount_dir)
		umount2(st->mount_dir, MNT_DETACH);
	if (st->view_dir) {
		ib_error *e = NULL;
		if (ib_rm_rf(st->view_dir, &e) < 0)
			ib_error_free(&e);
	}
	free(st->mount_dir);
	free(st->view_dir);
	st->mount_dir = st->view_dir = NULL;
}

/* A read-only merged view of a stage's layers (overlay, lower dirs only). */
static int mount_stage_view(builder *b, stage_state *src, ib_error **err)
{
	if (src->mount_dir)
		return 0;
	if (ensure_stage_unpacked(b, src, err) < 0)
		return -1;
	char *dir = ib_store_tmp_path(b->store, "view");
	src->view_dir = dir;
	cleanup_free char *empty = ib_path_join(dir, "empty");
	cleanup_free char *mnt = ib_path_join(dir, "root");
	if (ib_mkdir_p(empty, 0755, err) < 0 || ib_mkdir_p(mnt, 0755, err) < 0)
		return -1;
	/* overlay needs two lower dirs when there is no upper dir */
	ib_buf opt = IB_BUF_INIT;
	ib_buf_append(&opt, "lowerdir=", 9);
	for (size_t i = src->n_layers; i > 0; i--) {
		cleanup_free char *l = ib_store_layer_dir(b->store, src->layers[i - 1].diff_id);
		ib_buf_appendf(&opt, "%s:", l);
	}
	ib_buf_appendf(&opt, "%s", empty);
	if (src->n_layers == 0) {
		src->mount_dir = xstrdup(empty);
	} else {
		if (mount("overlay", mnt, "overlay", MS_RDONLY, opt.data) < 0) {
			int e = errno;
			ib_buf_free(&opt);
			return ib_error_set(err, e, "mount read-only view of stage %s", src->name);
		}
		src->mount_dir = xstrdup(mnt);
	}
	ib_buf_free(&opt);
	return 0;
}

void ib_build_prepare_process(void)
{
	if (geteuid() != 0)
		return;
	if (unshare(CLONE_NEWNS) == 0)
		mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

/* ---- stages ---- */

static json_t *empty_config(void)
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	json_t *c = json_pack("{s:s, s:s, s:{}, s:{s:s, s:[]}, s:[]}", "architecture", arch, "os",
			      os, "config", "rootfs", "type", "layers", "diff_ids", "history");
	if (variant)
		json_object_set_new(c, "variant", json_string(variant));
	return c;
}

static int load_base_image(builder *b, json_t *stage, const char *ref, ib_image **out,
			   ib_error **err)
{
	const char *pull = jstr(stage, "pull");
	if (!pull)
		pull = b->o->pull ? b->o->pull : "missing";
	int r = IB_ENOTFOUND;
	if (strcmp(pull, "always") != 0) {
		r = ib_store_image_load(b->store, ref, out, err);
		if (r == 0 || r != IB_ENOTFOUND || !strcmp(pull, "never"))
			return r;
		ib_error_free(err);
	}
	ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
	ro.tls_verify = b->o->tls_verify;
	ro.authfile = b->o->authfile;
	ro.platform = jstr(stage, "platform");
	ro.progress = ib_progress_transfer_cb;
	ro.payload = b->o->progress;
	ib_descriptor d = {0};
	ib_progress_info(b->o->progress, "pulling %s", ref);
	r = ib_registry_pull(b->store, ref, &ro, &d, err);
	if (r < 0)
		return strcmp(pull, "always")
			   ? ib_error_wrap(err, "not in the store, and pulling it failed")
			   : r;
	r = ib_store_image_load_digest(b->store, d.digest, out, err);
	ib_descriptor_clear(&d);
	return r;
}

static int init_stage(builder *b, stage_state *st, ib_error **err)
{
	json_t *from = json_object_get(st->plan, "from");
	st->annotations = json_object();
	st->shell = json_pack("[ss]", "/bin/sh", "-c");
	if (json_is_true(json_object_get(from, "scratch"))) {
		st->config = empty_config();
		ib_digest_buffer(st->key, "scratch", 7);
		return 0;
	}
	if (jstr(from, "stage")) {
		stage_state *base = find_stage(b, jstr(from, "stage"));
		if (!base || !base->built) {
			ib_error_setc(err, IB_EINVALID,
				      "stage \"%s\" must be defined before it is used",
				      jstr(from, "stage"));
			return recipe_error(b, st->plan, err);
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
	ib_image *img = NULL;
	if (load_base_image(b, st->plan, ref, &img, err) < 0) {
		ib_error_wrap(err, "from %s", ref);
		return recipe_error(b, st->plan, err);
	}
	st->config = json_deep_copy(img->config);
	json_t *rootfs = json_object_get(st->config, "rootfs");
	if (!json_is_array(json_object_get(st->config, "history")))
		json_object_set_new(st->config, "history", json_array());
	json_object_set_new(rootfs, "diff_ids", json_array());
	for (size_t i = 0; i < img->manifest->n_layers; i++)
		push_layer(st, &img->manifest->layers[i], ib_config_diff_id(img->config, i));
	memcpy(st->key, img->desc.digest, IB_DIGEST_BUFLEN);
	ib_image_free(img);
	return 0;
}

static char *step_label(stage_state *st, size_t idx, size_t n, json_t *step)
{
	const char *kind = jstr(step, "kind");
	cleanup_free char *what = NULL;
	if (!strcmp(kind, "run"))
		what = argv_string(json_object_get(step, "argv"));
	else if (!strcmp(kind, "copy")) {
		cleanup_free char *s = argv_string(json_object_get(step, "sources"));
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

static int build_stage(builder *b, stage_state *st, ib_error **err)
{
	if (init_stage(b, st, err) < 0)
		return -1;
	json_t *steps = json_object_get(st->plan, "steps");
	size_t n = json_array_size(steps);
	b->chain_missed = false;
	for (size_t i = 0; i < n; i++) {
		json_t *step = json_array_get(steps, i);
		const char *kind = jstr(step, "kind");
		char parent[IB_DIGEST_BUFLEN];
		memcpy(parent, st->key, IB_DIGEST_BUFLEN);
		/* the build timestamp clamps mtimes in layers: part of every key */
		json_t *extra = json_pack("{s:s, s:i, s:I}", "compression",
					  b->o->compression == IB_COMP_ZSTD ? "zstd" : "gzip",
					  "compression_level", b->o->compression_level, "epoch",
					  (json_int_t)b->o->source_date_epoch);
		int rc = 0;
		if (!strcmp(kind, "run") || !strcmp(kind, "copy")) {
			b->step_no++;
			cleanup_free char *label = step_label(st, i, n, step);
			double t0 = mono_now();
			bool cached = false;
			char key[IB_DIGEST_BUFLEN];
			b->cur_id = b->step_no;
			if (!strcmp(kind, "run")) {
				/* env, user, workdir and shell are part of the run's input */
				cleanup_strv char **env = effective_env(st, step);
				json_t *envj = json_array();
				for (size_t k = 0; env[k]; k++)
					json_array_append_new(envj, json_string(env[k]));
				json_object_set_new(extra, "env", envj);
				json_object_set(extra, "user", json_object_get(cfg(st), "User"));
				json_object_set(extra, "workdir",
						json_object_get(cfg(st), "WorkingDir"));
				json_object_set(extra, "shell", st->shell);
				step_key(key, parent, step, extra);
				cleanup_free char *cmdline =
				    argv_string(json_object_get(step, "argv"));
				cleanup_free char *created_by = xasprintf("RUN %s", cmdline);
				bool can_cache = !b->o->no_cache &&
						 !json_is_false(json_object_get(step, "cache"));
				if (can_cache && use_cached(b, st, key, created_by)) {
					cached = true;
					cleanup_free char *id = explain_id(b, st, i);
					if (!ib_cache_explain_exists(b->cache, id)) {
						json_t *inputs =
						    json_pack("{s:s, s:O, s:O}", "parent", parent,
							      "step", step, "extra", extra);
						explain_record(b, st, i, inputs);
						json_decref(inputs);
					}
				} else {
					json_t *inputs =
					    json_pack("{s:s, s:O, s:O}", "parent", parent, "step",
						      step, "extra", extra);
					if (b->o->explain)
						explain_miss(b, st, i, inputs);
					ib_progress_step_start(b->o->progress, b->step_no, label);
					rc = exec_run(b, st, step, key, created_by, err);
					if (rc == 0)
						explain_record(b, st, i, inputs);
					json_decref(inputs);
				}
			} else {
				rc = exec_copy(b, st, step, i, parent, extra, label, key, &cached,
					       err);
			}
			double dt = mono_now() - t0;
			if (rc < 0) {
				ib_progress_step_failed(b->o->progress, b->step_no, dt);
				json_decref(extra);
				return -1;
			}
			if (cached) {
				b->steps_cached++;
				ib_progress_step_cached(b->o->progress, b->step_no, label);
			} else {
				b->steps_run++;
				b->chain_missed = true;
				ib_progress_step_done(b->o->progress, b->step_no, dt);
			}
			memcpy(st->key, key, IB_DIGEST_BUFLEN);
		} else {
			rc = apply_config_step(b, st, step, kind, err);
			if (rc < 0) {
				json_decref(extra);
				return -1;
			}
			step_key(st->key, parent, step, extra);
		}
		json_decref(extra);
	}
	st->built = true;
	return 0;
}

/* Stages the target needs, transitively (from = stage, copy from = stage). */
static void mark_needed(builder *b, size_t idx, bool *needed)
{
	if (needed[idx])
		return;
	needed[idx] = true;
	stage_state *st = &b->stages[idx];
	json_t *from = json_object_get(st->plan, "from");
	const char *dep = jstr(from, "stage");
	if (dep) {
		stage_state *d = find_stage(b, dep);
		if (d)
			mark_needed(b, (size_t)(d - b->stages), needed);
	}
	size_t i;
	json_t *step;
	json_array_foreach (json_object_get(st->plan, "steps"), i, step) {
		const char *s = jstr(json_object_get(step, "from"), "stage");
		stage_state *d = s ? find_stage(b, s) : NULL;
		if (d)
			mark_needed(b, (size_t)(d - b->stages), needed);
	}
}

static void format_created(char *out, size_t n, int64_t epoch)
{
	time_t t = (time_t)epoch;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void builder_free(builder *b)
{
	for (size_t i = 0; i < b->n_stages; i++) {
		stage_state *st = &b->stages[i];
		release_view(st);
		for (size_t k = 0; k < st->n_layers; k++)
			ib_descriptor_clear(&st->layers[k].desc);
		free(st->layers);
		json_decref(st->config);
		json_decref(st->annotations);
		json_decref(st->shell);
	}
	free(b->stages);
	free(b->created);
	free(b->context);
	clear_last(b);
	ib_cache_free(b->cache);
}

int ib_build_run(ib_store *s, json_t *plan, const ib_build_options *o, ib_build_result *result,
		 ib_error **err)
{
	builder b = {0};
	b.store = s;
	b.o = o;
	b.plan = plan;
	memset(result, 0, sizeof(*result));
	char created[64];
	format_created(created, sizeof(created), o->source_date_epoch);
	b.created = xstrdup(created);
	char ctx[PATH_MAX];
	if (!realpath(o->context_dir ? o->context_dir : ".", ctx)) {
		int e = errno;
		free(b.created);
		return ib_error_set(err, e, "build context %s", o->context_dir);
	}
	b.context = xstrdup(ctx);
	if (ib_cache_open(&b.cache, s, err) < 0) {
		builder_free(&b);
		return -1;
	}
	ib_cache_stat_scope(b.cache, b.context);
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
		stage_state *t = find_stage(&b, o->target);
		if (!t) {
			builder_free(&b);
			return ib_error_setc(err, IB_EINVALID, "--target: no stage named \"%s\"",
					     o->target);
		}
		target = (size_t)(t - b.stages);
	}
	bool *needed = xcalloc(b.n_stages, sizeof(bool));
	mark_needed(&b, target, needed);
	int rc = 0;
	for (size_t i = 0; i <= target && rc == 0; i++)
		if (needed[i])
			rc = build_stage(&b, &b.stages[i], err);
	free(needed);
	if (rc < 0) {
		builder_free(&b);
		return -1;
	}

	stage_state *st = &b.stages[target];
	json_object_set_new(st->config, "created", json_string(b.created));
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
	builder_free(&b);
	return rc;
}

void ib_build_result_clear(ib_build_result *r)
{
	ib_descriptor_clear(&r->manifest);
}

/* ---- --check ---- */

typedef struct tar_entry_sum {
	char *path; /* as written in the tar */
	char *meta; /* type, mode, owner, size, link target, content digest */
} tar_entry_sum;

typedef struct sum_list {
	tar_entry_sum *v;
	size_t n;
} sum_list;

static void free_sums(tar_entry_sum *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].path);
		free(v[i].meta);
	}
	free(v);
}

static int sum_entry(const ib_layer_entry *e, void *payload, ib_error **err)
{
	(void)err;
	sum_list *l = payload;
	const char *link = e->symlink ? e->symlink : e->hardlink;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n].path = xstrdup(e->raw_path);
	l->v[l->n].meta =
	    xasprintf("mode %o, owner %lld:%lld, size %lld, mtime %lld, link \"%s\", "
		      "content %.19s",
		      (unsigned)e->mode, (long long)e->uid, (long long)e->gid, (long long)e->size,
		      (long long)e->mtime, link ? link : "", e->content);
	l->n++;
	return 0;
}

/* Every entry of one layer, in tar order. */
static int list_layer(ib_store *s, const ib_descriptor *layer, tar_entry_sum **out, size_t *n_out,
		      ib_error **err)
{
	sum_list l = {NULL, 0};
	int r = ib_layer_walk(s, layer->digest, layer->size, sum_entry, &l, err);
	if (r < 0) {
		free_sums(l.v, l.n);
		return r;
	}
	*out = l.v;
	*n_out = l.n;
	return 0;
}

int ib_build_compare(ib_store *s, const char *digest_a, const char *digest_b, char **report,
		     ib_error **err)
{
	*report = NULL;
	if (!strcmp(digest_a, digest_b))
		return 0;
	ib_image *a = NULL, *bimg = NULL;
	int rc = ib_store_image_load_digest(s, digest_a, &a, err);
	if (rc == 0)
		rc = ib_store_image_load_digest(s, digest_b, &bimg, err);
	if (rc < 0) {
		ib_image_free(a);
		return rc;
	}
	size_t na = a->manifest->n_layers, nb = bimg->manifest->n_layers;
	for (size_t i = 0; i < na && i < nb && !*report; i++) {
		const char *la = a->manifest->layers[i].digest,
			   *lb = bimg->manifest->layers[i].digest;
		if (!strcmp(la, lb))
			continue;
		tar_entry_sum *ea = NULL, *eb = NULL;
		size_t ca = 0, cb = 0;
		rc = list_layer(s, &a->manifest->layers[i], &ea, &ca, err);
		if (rc == 0)
			rc = list_layer(s, &bimg->manifest->layers[i], &eb, &cb, err);
		if (rc < 0) {
			free_sums(ea, ca);
			break;
		}
		size_t k = 0;
		for (; k < ca && k < cb; k++) {
			if (strcmp(ea[k].path, eb[k].path) != 0) {
				*report = xasprintf("layer %zu differs: entry %zu is \"%s\" in one "
						    "build and \"%s\" in the other",
						    i + 1, k + 1, ea[k].path, eb[k].path);
				break;
			}
			if (strcmp(ea[k].meta, eb[k].meta) != 0) {
				*report = xasprintf("layer %zu differs at file \"%s\": %s vs %s",
						    i + 1, ea[k].path, ea[k].meta, eb[k].meta);
				break;
			}
		}
		if (!*report && ca != cb)
			*report =
			    xasprintf("layer %zu differs: %zu vs %zu entries (first extra: \"%s\")",
				      i + 1, ca, cb, k < ca ? ea[k].path : eb[k].path);
		if (!*report)
			*report =
			    xasprintf("layer %zu differs in its compressed bytes only (%s vs %s)",
				      i + 1, la, lb);
		free_sums(ea, ca);
		free_sums(eb, cb);
	}
	if (rc == 0 && !*report) {
		if (na != nb)
			*report = xasprintf("the builds have %zu and %zu layers", na, nb);
		else
			*report =
			    xasprintf("the image configs differ (%s vs %s)",
				      a->manifest->config.digest, bimg->manifest->config.digest);
	}
	ib_image_free(a);
	ib_image_free(bimg);
	return rc;
}
