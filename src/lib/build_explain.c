/* --explain: each step's inputs are recorded; a miss says which one
 * changed since the last build of the same step. */
#include "builder_internal.h"

#include <string.h>

#include "cache.h"
#include "progress.h"
#include "remote_cache.h"
#include "util.h"

char *build_explain_id(builder *b, stage_state *st, size_t idx)
{
	return xasprintf("%s\n%s\n%s\n%zu", b->context, jstr(b->plan, "recipe"), st->name, idx);
}

char *build_explain_position(builder *b, stage_state *st, size_t idx)
{
	const char *recipe = jstr(b->plan, "recipe");
	if (!recipe)
		recipe = "recipe";
	const char *slash = strrchr(recipe, '/');
	return xasprintf("%s/%s/%zu", slash ? slash + 1 : recipe, st->name, idx);
}

/* The inputs a --cache-from registry recorded for this position (the
 * runner that exported it), or NULL. *from = its repository. */
static json_t *registry_inputs(builder *b, stage_state *st, size_t idx, const char **from)
{
	remote_state *rs = b->remote;
	cleanup_free char *pos = build_explain_position(b, st, idx);
	for (size_t i = 0; rs && i < rs->n_from; i++) {
		json_t *in = NULL;
		ib_error *e = NULL;
		if (!rs->from[i])
			continue;
		if (ib_rcache_inputs(rs->from[i], b->store, pos, &in, &e) < 0)
			ib_error_free(&e);
		if (in) {
			*from = ib_rcache_repository(rs->from[i]);
			return in;
		}
	}
	return NULL;
}

void build_explain_miss(builder *b, stage_state *st, size_t idx, json_t *inputs)
{
	cleanup_free char *id = build_explain_id(b, st, idx);
	json_t *prev = ib_cache_explain_get(b->cache, id);
	const char *from = NULL;
	if (!prev && !b->o->no_cache)
		prev = registry_inputs(b, st, idx, &from);
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
	if (from)
		ib_buf_appendf(&why, " (compared with the build recorded in %s)", from);
	ib_progress_info(b->o->progress, "#%d cache miss: %s", b->step_no, why.data);
	ib_buf_free(&why);
	json_decref(prev);
}

void build_explain_record(builder *b, stage_state *st, size_t idx, json_t *inputs)
{
	cleanup_free char *id = build_explain_id(b, st, idx);
	ib_error *e = NULL;
	if (ib_cache_explain_put(b->cache, id, inputs, &e) < 0)
		ib_error_free(&e);
}
