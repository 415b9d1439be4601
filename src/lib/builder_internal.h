/* Private to the builder family: builder.c (orchestration, cache policy,
 * stages), build_config.c (config-only steps), build_run.c (run steps),
 * build_copy.c (copy steps) and build_explain.c (--explain).  Functions
 * that fail return 0 or a negative IB_E* with *err set; steps report
 * errors with their recipe line (build_recipe_error). */
#ifndef IB_BUILDER_INTERNAL_H
#define IB_BUILDER_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder.h"
#include "cache.h"
#include "ignore.h"
#include "layer.h"
#include "store.h"

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
	json_t *shell;	   /* current shell argv (owned) */
	json_t *env_index; /* Env name -> position in config.Env (owned) */
	bool built;
	bool cmd_set;	 /* cmd() seen in this stage (entrypoint keeps it) */
	char *view_dir;	 /* ROOT/tmp dir holding the view below */
	char *mount_dir; /* read-only merged view, mounted lazily */
} stage_state;

/* What the key pass found for a step (or, idx BUILD_MEMO_BASE, for a
 * stage's base image), reused by the real pass so that nothing is loaded,
 * pulled or hashed twice. */
#define BUILD_MEMO_BASE ((size_t)-1)
typedef struct step_memo {
	size_t stage, idx;
	char key[IB_DIGEST_BUFLEN];	/* the step key ("" for a base) */
	ib_image *image;		/* base image, copy from=image source, or NULL */
	struct copy_list *copy;		/* a context copy's sources, or NULL */
	char content[IB_DIGEST_BUFLEN]; /* with copy: its content digest */
} step_memo;

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
	ib_ignore *ignore;    /* the context's ignore file, or NULL */
	uint64_t layer_total; /* expected tar size of the layer being written, 0 = unknown */
	/* ring of the current step's last output lines */
	char *last[LAST_LINES];
	size_t n_last;
	int cur_id;
	/* registry step caches (--cache-from); they outlive a restart */
	struct remote_state *remote;
	size_t cur_stage; /* index of the stage being built */
	size_t cur_idx;	  /* index of the step being built in its stage */
	json_t *exports;  /* [{"key", "stage", "idx"}] of this build's layer steps */
	/* the key pass (build_keys): every step key computed before the
	 * cache registries are contacted; nothing is run, fetched or written */
	bool keys_only;
	step_memo *memo;
	size_t n_memo;
	json_t *lookup_keys; /* keys the real pass will look up, in order */
	int key_mismatches;  /* real-pass keys that differ from the key pass */
	/* layers compressed in the background (NULL until the first one) */
	struct ib_layer_jobs *jobs;
	bool jobs_off;	    /* IMGBUILD_COMPRESS_BACKGROUND=0, or the queue failed */
	ib_error *jobs_err; /* the first failed background compression */
	/* the last run or copy step up to the target: stage, index + 1 (0 =
	 * not looked up yet) */
	size_t last_layer_stage, last_layer_step;
	/* stages built side by side (build_workers.c) */
	bool silent;	 /* cache hits are not shown or counted (built by a worker) */
	json_t *fresh;	 /* keys of the steps workers built: hits even under --no-cache */
	json_t *keys_out; /* in a worker: the keys of its stage's steps */
	int *first_step; /* a stage's first step number in the sequential pass */
	bool *by_worker; /* stages a worker built */
} builder;

/* What survives a restart of the build: the cache registries and the
 * layers that could not be fetched from them. */
typedef struct remote_state {
	struct ib_rcache **from; /* --cache-from, NULL where disabled */
	char **from_refs;
	size_t n_from;
	struct ib_rcache **extra; /* opened to fetch entries recorded earlier */
	size_t n_extra;
	json_t *blobs;	/* layer digest -> repository holding it ("host/path") */
	json_t *bad;	/* digests (corrupt) and repositories (failing) of lazy layers
			   that could not be fetched: misses from now on */
	json_t *mounts; /* targets of shared cache mounts used: imported once */
	json_t *diff_ids; /* lazy layer digest -> the diff_id its record gives */
	bool restart;	/* a lazy layer failed: build again without it */
	bool connected; /* from[] opened (after the first key pass) */
	int attempt;	/* 0, then the number of restarts */
} remote_state;

static inline const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* ---- builder.c ---- */

/* A step's cache key: the parent key, the step (without its line) and the
 * inputs in extra, canonical JSON. */
void build_step_key(char out[IB_DIGEST_BUFLEN], const char *parent, json_t *step, json_t *extra);
/* Wrap *err with "RECIPE:LINE" of step (or stage); returns the code. */
int build_recipe_error(builder *b, json_t *step, ib_error **err);
/* The stage named name, or NULL. */
stage_state *build_find_stage(builder *b, const char *name);
/* Unpack a layer (or every layer of a stage) under ROOT/layers when it
 * is not there yet. */
int build_ensure_unpacked(builder *b, layer_ref *l, ib_error **err);
int build_unpack_layer(ib_store *s, const char *digest, const char *diff_id, ib_error **err);
int build_ensure_stage_unpacked(builder *b, stage_state *st, ib_error **err);
/* The stage's layer dirs, top-most first, each diff_id once
 * (NULL-terminated, caller frees with ib_strv_free). */
char **build_lower_dirs(builder *b, stage_state *st);
/* The same for the layers diff_ids[0..n) of an image, bottom-most first. */
char **build_lower_dirs_of(ib_store *s, const char *const *diff_ids, size_t n);
/* The step cache's entry for key whose layer is usable (stored, or in a
 * cache registry: then recorded for a lazy fetch), or NULL. */
json_t *build_cache_entry(builder *b, const char *key);
/* On a cache hit whose blob is still stored, push its layer and history
 * entry onto the stage and return true. */
bool build_use_cached(builder *b, stage_state *st, const char *key, const char *created_by);
/* Push a written layer onto the stage and record it in the step cache.
 * tar_fd < 0: r is complete (compressed blob stored).  tar_fd >= 0 (from
 * build_layer_tar_fd, taken over): r has the diff_id only and tar_fd the
 * uncompressed tar, which is compressed in the background; the layer's
 * descriptor gets its digest and the step its cache entry when that is
 * done (build_wait_layers, or a later commit), so a step whose layer never
 * got compressed leaves no entry. */
int build_commit_layer(builder *b, stage_state *st, const char *key, const ib_layer_result *r,
		       int tar_fd, const char *created_by, ib_error **err);
/* A file for a layer's uncompressed tar (layer options tar_only/tar_fd),
 * nameless in ROOT/tmp, or -1: compress while writing (background
 * compression off: IMGBUILD_COMPRESS_BACKGROUND=0). */
int build_layer_tar_fd(builder *b);
/* Finish every background compression: descriptors and cache entries
 * complete.  Before anything needs a layer's compressed digest (writing,
 * pushing or exporting the image, unpacking a layer from its blob).  A
 * failed compression is its step's error. */
int build_wait_layers(builder *b, ib_error **err);
/* Make sure the store has a layer blob, downloading it from the cache
 * registry that announced it (a lazy hit).  A failure marks the blob bad
 * and asks for a restart.  A layer of a lazily tagged base image comes
 * through the store's fetcher (ib_store_blob_fetch); its failure fails. */
int build_fetch_blob(builder *b, const char *digest, int64_t size, ib_error **err);
/* Before a run step executes: fill its empty shared cache mounts
 * (share = "registry") from --cache-from, once per build; failures are
 * warnings. */
void build_shared_mounts_import(builder *b, json_t *step);
/* Layer writer options of this build (compression, epoch, progress). */
ib_layer_options build_layer_options(builder *b);
/* A stage's read-only merged view for copy{from=}: mounted once, on
 * first use; released (unmounted, removed) with the builder. */
void build_release_view(stage_state *st);
int build_mount_stage_view(builder *b, stage_state *src, ib_error **err);
/* Load ref from the store, pulling it as the stage's pull policy says;
 * *out is the caller's (ib_image_free). */
int build_load_base_image(builder *b, json_t *stage, const char *ref, ib_image **out,
			  ib_error **err);

/* Build a stage: the real pass (or with b->keys_only the key pass). */
int build_stage(builder *b, stage_state *st, ib_error **err);
/* Mark stage idx and the stages it needs, transitively (from = stage,
 * copy from = stage), in needed[]. */
void build_mark_needed(builder *b, size_t idx, bool *needed);
/* Whether a step may be answered by the step cache: not with --no-cache
 * or cache = false, unless a worker of this build made the entry. */
bool build_may_use_cache(builder *b, json_t *step, const char *key);

/* The memo of a step (idx BUILD_MEMO_BASE: the stage's base), created
 * when create, else NULL when there is none. */
step_memo *build_memo(builder *b, size_t stage, size_t idx, bool create);
/* Called by run and copy steps once their key is known: the key pass
 * records it (lookup: the real pass will ask the cache for it), the real
 * pass compares it with the recorded one. */
void build_key_computed(builder *b, stage_state *st, size_t idx, const char *key, bool lookup);

/* ---- build_workers.c ---- */

/* Build the stages the target needs that do not depend on each other at
 * the same time, each in a worker process, before the sequential pass
 * (which then finds their steps cached).  Nothing happens unless two
 * stages with work could run side by side.  0, or -1 with *err (the
 * first worker's failure). */
int build_stages_parallel(builder *b, size_t target, const bool *needed, ib_error **err);

/* ---- build_config.c ---- */

/* The stage's image config "config" object (created when missing). */
json_t *build_cfg(stage_state *st);
/* Set K=V in an Env array; index (may be NULL) maps names to positions. */
void build_env_set(json_t *env_arr, json_t *index, const char *k, const char *v);
/* config.Env (created when missing). */
json_t *build_cfg_env(stage_state *st);
/* Append a history entry; diff_id is the step's layer (also appended to
 * rootfs.diff_ids), NULL for a step without one (marked "empty_layer"). */
void build_add_history(builder *b, stage_state *st, const char *created_by, const char *diff_id);
/* The strings of argv joined by spaces; caller frees. */
char *build_argv_string(json_t *argv);
/* Absolute path in the image: relative paths resolve against the
 * workdir; caller frees. */
char *build_image_path(stage_state *st, const char *p);
/* $VAR expansion (Dockerfile rules) against the stage's current Env. */
char *build_expand(stage_state *st, const char *s, ib_error **err);
/* Give the stage docker's default PATH when its config has none. */
void build_default_path(stage_state *st);
/* Apply a config-only step of the given kind (ib_plan_step_kind). */
int build_config_step(builder *b, stage_state *st, json_t *step, int kind, ib_error **err);

/* ---- build_run.c ---- */

/* Forget the ring of the current step's last output lines. */
void build_clear_last(builder *b);
/* Run and copy steps: the key into key_out, then a cache hit (*cached)
 * or the step executed and committed.  extra holds the build-wide key
 * inputs and gets the step's own. */
int build_run_step(builder *b, stage_state *st, json_t *step, size_t idx, const char *parent,
		   json_t *extra, const char *label, char key_out[IB_DIGEST_BUFLEN], bool *cached,
		   ib_error **err);

/* ---- build_copy.c ---- */

int build_copy_step(builder *b, stage_state *st, json_t *step, size_t idx, const char *parent,
		    json_t *extra, const char *label, char key_out[IB_DIGEST_BUFLEN], bool *cached,
		    ib_error **err);

/* The mode a file from the build context gets in a layer by default
 * (--context-modes=normalize), the permissions git records: a regular
 * file 0755 when its owner may execute it, else 0644; a directory 0755; a
 * symlink unchanged; anything else without setuid, setgid and sticky. */
mode_t build_context_mode(mode_t m);
/* Free a memoised copy list. */
void build_copy_memo_free(struct copy_list *l);

/* ---- build_explain.c ---- */

/* Where a step's --explain record is kept (caller frees); say why a step
 * missed the cache; record its inputs for the next build. */
char *build_explain_id(builder *b, stage_state *st, size_t idx);
/* The step's position as registry cache records name it, independent of
 * paths: "RECIPE-FILE-NAME/STAGE/INDEX" (caller frees). */
char *build_explain_position(builder *b, stage_state *st, size_t idx);
void build_explain_miss(builder *b, stage_state *st, size_t idx, json_t *inputs);
void build_explain_record(builder *b, stage_state *st, size_t idx, json_t *inputs);

#endif
