/* Unit tests for builder.c: recipes written into a temporary directory are
 * evaluated (ib_recipe_eval) and built (ib_build_run) into a temporary store
 * with scratch bases and copy/config steps only, so nothing here needs root
 * or the sandbox.  The image config, the manifest and the layer tars
 * (ib_layer_walk) are checked, as are the step cache, --target, tags,
 * reproducibility and the error messages.
 *
 * Layout of one fixture:  T/store (the store), T/w/ctx (build context and
 * recipe.lua), T/w (something outside the context).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder.h"
#include "builder_internal.h"
#include "digest.h"
#include "imgdiff.h"
#include "progress.h"
#include "recipe.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

/* 2001-09-09T01:46:40Z: older than every file the tests create, so every
 * mtime in a layer is clamped to it. */
#define EPOCH 1000000000LL
#define EPOCH_RFC3339 "2001-09-09T01:46:40Z"

typedef struct fx {
	char *tmp;    /* T */
	char *work;   /* T/w */
	char *ctx;    /* T/w/ctx: build context */
	char *recipe; /* T/w/ctx/recipe.lua */
	char *root;   /* T/store */
	ib_store *store;
	char *log;	   /* progress output of the last build */
	char *errmsg;	   /* error of the last failed build */
	int errcode;	   /* its code */
	const void *tcase; /* the table case a test runs, or NULL */
} fx;

/* What a test changes in ib_build_options. */
typedef struct bopts {
	const char *target;
	char *const *tags;
	bool no_cache;
	bool explain;
	int64_t epoch;
	const char *pull;
	bool preserve_modes; /* --context-modes=preserve */
	bool debug;	     /* debug lines in the log */
} bopts;
#define BOPTS_INIT                                                                                 \
	{                                                                                          \
		NULL, NULL, false, false, EPOCH, "never", false, false                             \
	}

/* A layer entry as the tests keep it. */
typedef struct entry {
	char *path;
	mode_t mode;
	int64_t uid, gid, size, mtime;
	char *symlink;
	char content[IB_DIGEST_BUFLEN];
} entry;

typedef struct entries {
	entry *v;
	size_t n;
} entries;

/* ---- fixture ---- */

static fx *fx_new(void)
{
	fx *f = xcalloc(1, sizeof(*f));
	f->tmp = tu_tmpdir();
	f->work = ib_path_join(f->tmp, "w");
	f->ctx = ib_path_join(f->work, "ctx");
	f->recipe = ib_path_join(f->ctx, "recipe.lua");
	f->root = ib_path_join(f->tmp, "store");
	ib_error *err = NULL;
	tu_must(ib_mkdir_p(f->ctx, 0755, &err), &err, f->ctx);
	f->store = tu_store_open(f->root);
	return f;
}

static void fx_free(fx *f)
{
	if (!f)
		return;
	ib_store_free(f->store);
	tu_rm_rf(f->tmp);
	free(f->tmp);
	free(f->work);
	free(f->ctx);
	free(f->recipe);
	free(f->root);
	free(f->log);
	free(f->errmsg);
	free(f);
}

static int setup(void **state)
{
	fx *f = fx_new();
	if (!f)
		return -1;
	*state = f;
	return 0;
}

/* For a table-driven test: the case comes in as the initial state. */
static int setup_case(void **state)
{
	const void *c = *state;
	if (setup(state) < 0)
		return -1;
	((fx *)*state)->tcase = c;
	return 0;
}

static int teardown(void **state)
{
	fx_free(*state);
	return 0;
}

/* ---- context and recipe ---- */

static char *ctx_path(fx *f, const char *rel)
{
	return ib_path_join(f->ctx, rel);
}

/* Write a file under dir (parents created 0755) with mode 0644. */
static void put_in(const char *dir, const char *rel, const char *data)
{
	free(tu_write_under(dir, rel, data));
}

static void put(fx *f, const char *rel, const char *data)
{
	put_in(f->ctx, rel, data);
}

static void put_symlink(fx *f, const char *rel, const char *target)
{
	cleanup_free char *p = ctx_path(f, rel);
	assert_int_equal(symlink(target, p), 0);
}

static void remove_ctx(fx *f, const char *rel)
{
	cleanup_free char *p = ctx_path(f, rel);
	assert_int_equal(unlink(p), 0);
}

static void set_mtime(fx *f, const char *rel, time_t t)
{
	cleanup_free char *p = ctx_path(f, rel);
	tu_set_mtime(p, t, 0);
}

static void write_recipe(fx *f, const char *text)
{
	ib_error *err = NULL;
	if (ib_write_file_atomic(f->recipe, text, strlen(text), 0644, &err) < 0)
		fail_msg("write recipe: %s", ib_error_msg(err));
}

/* ---- building ---- */

static json_t *eval_plan(fx *f)
{
	ib_recipe_options ro = IB_RECIPE_OPTIONS_INIT;
	ro.context_dir = f->ctx;
	json_t *plan = NULL;
	ib_error *err = NULL;
	if (ib_recipe_eval(&plan, f->recipe, &ro, &err) < 0)
		fail_msg("recipe: %s", ib_error_msg(err));
	assert_non_null(plan);
	return plan;
}

/* Build plan; the progress output lands in f->log, a failure's message and
 * code in f->errmsg / f->errcode.  Returns ib_build_run's result. */
static int run_plan(fx *f, json_t *plan, const bopts *bo, ib_build_result *res)
{
	bopts dflt = BOPTS_INIT;
	if (!bo)
		bo = &dflt;
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	assert_non_null(m);
	ib_progress *p = ib_progress_new(IB_PROGRESS_PLAIN, false, m);
	ib_progress_set_debug(p, bo->debug);
	ib_build_options o = IB_BUILD_OPTIONS_INIT;
	o.recipe_path = f->recipe;
	o.context_dir = f->ctx;
	o.target = bo->target;
	o.tags = bo->tags;
	o.no_cache = bo->no_cache;
	o.explain = bo->explain;
	o.source_date_epoch = bo->epoch;
	o.pull = bo->pull;
	o.preserve_context_modes = bo->preserve_modes;
	o.debug = bo->debug;
	o.progress = p;
	ib_error *err = NULL;
	int rc = ib_build_run(f->store, plan, &o, res, &err);
	free(f->errmsg);
	f->errmsg = NULL;
	f->errcode = 0;
	if (rc < 0) {
		f->errmsg = xstrdup(ib_error_msg(err));
		f->errcode = err ? err->code : 0;
		ib_error_free(&err);
	}
	ib_progress_free(p);
	fclose(m);
	free(f->log);
	f->log = buf;
	return rc;
}

static int build(fx *f, const bopts *bo, ib_build_result *res)
{
	json_t *plan = eval_plan(f);
	int rc = run_plan(f, plan, bo, res);
	json_decref(plan);
	return rc;
}

/* Build and fail the test on error; res must be cleared by the caller. */
static void build_ok(fx *f, const bopts *bo, ib_build_result *res)
{
	if (build(f, bo, res) < 0)
		fail_msg("build: %s\n--- output ---\n%s", f->errmsg, f->log);
}

/* Build, keep only the manifest digest. */
static void build_digest(fx *f, const bopts *bo, char out[IB_DIGEST_BUFLEN], int *run, int *cached)
{
	ib_build_result res;
	build_ok(f, bo, &res);
	memcpy(out, res.manifest.digest, IB_DIGEST_BUFLEN);
	if (run)
		*run = res.steps_run;
	if (cached)
		*cached = res.steps_cached;
	ib_build_result_clear(&res);
}

/* ---- inspecting images ---- */

static ib_image *load_image(fx *f, const char *ref);
static void layer_entries(fx *f, const char *digest, size_t idx, entries *out);

/* Build and load the image (ib_image_free it). */
static ib_image *build_image(fx *f, const bopts *bo)
{
	ib_build_result res;
	build_ok(f, bo, &res);
	ib_image *img = load_image(f, res.manifest.digest);
	ib_build_result_clear(&res);
	return img;
}

/* Build and list layer idx of the image (entries_free it). */
static void build_layer(fx *f, const bopts *bo, size_t idx, entries *out)
{
	char digest[IB_DIGEST_BUFLEN];
	build_digest(f, bo, digest, NULL, NULL);
	layer_entries(f, digest, idx, out);
}

static ib_image *load_image(fx *f, const char *ref)
{
	ib_image *img = NULL;
	ib_error *err = NULL;
	if (ib_store_image_load(f->store, ref, &img, &err) < 0)
		fail_msg("load %s: %s", ref, ib_error_msg(err));
	return img;
}

/* The image's "config" object (never NULL). */
static json_t *config_of(ib_image *img)
{
	json_t *c = json_object_get(img->config, "config");
	assert_true(json_is_object(c));
	return c;
}

static int collect_cb(const ib_layer_entry *e, void *payload, ib_error **err)
{
	(void)err;
	entries *l = payload;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(entry));
	entry *x = &l->v[l->n++];
	memset(x, 0, sizeof(*x));
	x->path = xstrdup(e->path);
	x->mode = e->mode;
	x->uid = e->uid;
	x->gid = e->gid;
	x->size = e->size;
	x->mtime = e->mtime;
	x->symlink = e->symlink ? xstrdup(e->symlink) : NULL;
	snprintf(x->content, sizeof(x->content), "%s", e->content ? e->content : "");
	return 0;
}

static void entries_free(entries *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].symlink);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Entries of layer idx of the image with manifest digest `digest`. */
static void layer_entries(fx *f, const char *digest, size_t idx, entries *out)
{
	ib_image *img = load_image(f, digest);
	if (idx >= img->manifest->n_layers)
		fail_msg("image has %zu layers, wanted layer %zu", img->manifest->n_layers, idx);
	memset(out, 0, sizeof(*out));
	ib_error *err = NULL;
	const ib_descriptor *d = &img->manifest->layers[idx];
	if (ib_layer_walk(f->store, d->digest, d->size, collect_cb, out, &err) < 0)
		fail_msg("walk: %s", ib_error_msg(err));
	ib_image_free(img);
}

static const entry *find_entry(const entries *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].path, path))
			return &l->v[i];
	return NULL;
}

static const entry *must_find(const entries *l, const char *path)
{
	const entry *e = find_entry(l, path);
	if (!e) {
		for (size_t i = 0; i < l->n; i++)
			print_message("  entry: %s\n", l->v[i].path);
		fail_msg("no entry \"%s\" in the layer", path);
	}
	return e;
}

static void assert_file_content(const entry *e, const char *data)
{
	char want[IB_DIGEST_BUFLEN];
	ib_digest_buffer(want, data, strlen(data));
	assert_true(S_ISREG(e->mode));
	assert_string_equal(e->content, want);
}

static size_t count_layers(fx *f, const char *digest)
{
	ib_image *img = load_image(f, digest);
	size_t n = img->manifest->n_layers;
	ib_image_free(img);
	return n;
}

/* ==== config steps ==== */

/* A recipe of config steps and the config members it must give: each
 * member of want equals the image's, and a null member means absent, null
 * or an empty array. */
typedef struct config_case {
	const char *name;
	const char *recipe;
	const char *want; /* JSON object */
} config_case;

static const config_case config_cases[] = {
    {"test_env_later_value_overrides_earlier",
     "stage('final', 'scratch')\n"
     "env { A = '1', B = '2' }\n"
     "env { A = '3' }\n",
     /* scratch has docker's default PATH, as with BuildKit */
     "{\"Env\": [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", "
     "\"A=3\", \"B=2\"]}"},
    {"test_workdir_relative_resolves_against_previous",
     "stage('final', 'scratch')\n"
     "workdir '/app'\n"
     "workdir 'sub'\n"
     "workdir '../lib/./x'\n",
     "{\"WorkingDir\": \"/app/lib/x\"}"},
    {"test_user_is_set",
     "stage('final', 'scratch')\n"
     "user 'app'\n"
     "user '1000:1000'\n",
     "{\"User\": \"1000:1000\"}"},
    {"test_entrypoint_drops_cmd_inherited_from_base_stage",
     "local base = stage('base', 'scratch')\n"
     "cmd { '--from-base' }\n"
     "stage('final', base)\n"
     "entrypoint { '/bin/app', '-v' }\n",
     "{\"Entrypoint\": [\"/bin/app\", \"-v\"], \"Cmd\": null}"},
    {"test_entrypoint_keeps_cmd_set_in_same_stage",
     "local base = stage('base', 'scratch')\n"
     "cmd { '--from-base' }\n"
     "stage('final', base)\n"
     "cmd { '--loud' }\n"
     "entrypoint { '/bin/app' }\n",
     "{\"Cmd\": [\"--loud\"], \"Entrypoint\": [\"/bin/app\"]}"},
    {"test_expose_bare_port_becomes_tcp",
     "stage('final', 'scratch')\n"
     "expose('80', '53/udp')\n",
     "{\"ExposedPorts\": {\"80/tcp\": {}, \"53/udp\": {}}}"},
    {"test_volume_paths_are_set",
     "stage('final', 'scratch')\n"
     "volume('/data')\n"
     "volume('/srv/cache')\n",
     "{\"Volumes\": {\"/data\": {}, \"/srv/cache\": {}}}"},
    {"test_label_is_inherited_from_base_stage",
     "local base = stage('base', 'scratch')\n"
     "label { a = '1', b = 'old' }\n"
     "stage('final', base)\n"
     "label { b = 'new', c = '3' }\n",
     "{\"Labels\": {\"a\": \"1\", \"b\": \"new\", \"c\": \"3\"}}"},
    {"test_stopsignal_is_set",
     "stage('final', 'scratch')\n"
     "stopsignal 'SIGQUIT'\n",
     "{\"StopSignal\": \"SIGQUIT\"}"},
    {"test_healthcheck_durations_are_nanoseconds",
     "stage('final', 'scratch')\n"
     "healthcheck { test = { 'CMD', '/bin/check', '-q' }, interval = '30s',\n"
     "              timeout = '1m30s', start_period = '5s', retries = 3 }\n",
     "{\"Healthcheck\": {\"Test\": [\"CMD\", \"/bin/check\", \"-q\"], \"Interval\": 30000000000,"
     " \"Timeout\": 90000000000, \"StartPeriod\": 5000000000, \"Retries\": 3}}"},
};

static void test_config_case(void **state)
{
	fx *f = *state;
	const config_case *c = f->tcase;
	write_recipe(f, c->recipe);
	ib_image *img = build_image(f, NULL);
	json_t *want = json_loads(c->want, 0, NULL);
	assert_non_null(want);
	const char *key;
	json_t *w;
	json_object_foreach (want, key, w) {
		json_t *got = json_object_get(config_of(img), key);
		if (json_is_null(w) ? got && !json_is_null(got) && json_array_size(got) > 0
				    : !json_equal(got, w)) {
			cleanup_free char *gs = got ? json_dumps(got, JSON_SORT_KEYS) : NULL;
			fail_msg("config %s is %s", key, gs ? gs : "missing");
		}
	}
	json_decref(want);
	ib_image_free(img);
}

static void test_annotations_end_up_in_the_manifest(void **state)
{
	fx *f = *state;
	write_recipe(f,
		     "stage('final', 'scratch')\n"
		     "annotation { ['org.opencontainers.image.source'] = 'https://x.test/app' }\n"
		     "annotation { ['org.example.team'] = 'blue' }\n");
	char *tags[] = {"localhost/bt/annotated:1", NULL};
	bopts bo = BOPTS_INIT;
	bo.tags = tags;
	ib_build_result res;
	build_ok(f, &bo, &res);
	ib_build_result_clear(&res);
	ib_image *img = load_image(f, "localhost/bt/annotated:1");
	json_t *a = img->manifest->annotations;
	assert_true(json_is_object(a));
	assert_string_equal(
	    json_string_value(json_object_get(a, "org.opencontainers.image.source")),
	    "https://x.test/app");
	assert_string_equal(json_string_value(json_object_get(a, "org.example.team")), "blue");
	/* manifest-only: not a label */
	assert_null(json_object_get(json_object_get(config_of(img), "Labels"), "org.example.team"));
	ib_image_free(img);
}

static void test_history_has_one_entry_per_step(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	put(f, "b.txt", "b\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n"
			"env { K = 'v' }\n"
			"workdir '/w'\n"
			"copy { 'b.txt', 'b.txt' }\n"
			"user '7'\n");
	ib_image *img = build_image(f, NULL);
	json_t *h = json_object_get(img->config, "history");
	assert_int_equal(json_array_size(h), 5);
	static const bool empty[] = {false, true, true, false, true};
	for (size_t i = 0; i < 5; i++) {
		json_t *e = json_array_get(h, i);
		assert_string_equal(json_string_value(json_object_get(e, "created")),
				    EPOCH_RFC3339);
		assert_int_equal(json_is_true(json_object_get(e, "empty_layer")), empty[i]);
		assert_non_null(json_string_value(json_object_get(e, "created_by")));
	}
	assert_non_null(strstr(
	    json_string_value(json_object_get(json_array_get(h, 0), "created_by")), "a.txt"));
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_array_get(h, 1), "created_by")), "K=v"));
	/* one layer per copy, in order, matching the non-empty history entries */
	assert_int_equal(img->manifest->n_layers, 2);
	assert_int_equal(
	    json_array_size(json_object_get(json_object_get(img->config, "rootfs"), "diff_ids")),
	    2);
	ib_image_free(img);
}

static void test_created_is_rfc3339_of_source_date_epoch(void **state)
{
	fx *f = *state;
	write_recipe(f, "stage('final', 'scratch')\n"
			"env { A = '1' }\n");
	ib_image *img = build_image(f, NULL);
	assert_string_equal(json_string_value(json_object_get(img->config, "created")),
			    EPOCH_RFC3339);
	ib_image_free(img);

	bopts bo = BOPTS_INIT;
	bo.epoch = 0;
	img = build_image(f, &bo);
	assert_string_equal(json_string_value(json_object_get(img->config, "created")),
			    "1970-01-01T00:00:00Z");
	ib_image_free(img);
}

/* ==== copy semantics ==== */

/* Files in the context, a recipe whose first layer is one copy, and what
 * that layer must hold. */
#define IS_DIR "<dir>"
typedef struct want_entry {
	const char *path;
	const char *content; /* a regular file with this content, IS_DIR, or NULL: any */
	mode_t perm;	     /* 0: not checked */
	const char *owner;   /* "UID:GID", NULL: not checked */
	int64_t mtime;	     /* 0: not checked */
} want_entry;

typedef struct copy_case {
	const char *name;
	const char *files[6][2]; /* context path, content */
	const char *recipe;
	want_entry want[6];
	const char *absent[4];
	size_t n_entries; /* 0: not checked */
} copy_case;

#define FINAL "stage('final', 'scratch')\n"
#define PARENT_DIR(p)                                                                              \
	{                                                                                          \
		.path = p, .content = IS_DIR, .perm = 0755, .owner = "0:0", .mtime = EPOCH         \
	}

static const copy_case copy_cases[] = {
    {.name = "test_copy_file_to_file",
     .files = {{"app.conf", "key = value\n"}},
     .recipe = FINAL "copy { 'app.conf', '/etc/myapp.conf' }\n",
     .want = {{.path = "etc/myapp.conf", .content = "key = value\n", .perm = 0644}},
     .absent = {"etc/myapp.conf/app.conf", "etc/app.conf"}},
    {.name = "test_copy_file_into_dir_with_trailing_slash",
     .files = {{"app.conf", "conf\n"}},
     .recipe = FINAL "copy { 'app.conf', '/etc/myapp/' }\n",
     .want = {{.path = "etc/myapp/app.conf", .content = "conf\n"},
	      {.path = "etc/myapp", .content = IS_DIR}}},
    {.name = "test_copy_directory_copies_its_contents",
     .files = {{"src/main.c", "int main;\n"}, {"src/lib/util.c", "int util;\n"}},
     .recipe = FINAL "copy { 'src/', '/app/' }\n",
     .want = {{.path = "app", .content = IS_DIR},
	      {.path = "app/main.c", .content = "int main;\n"},
	      {.path = "app/lib", .content = IS_DIR},
	      {.path = "app/lib/util.c", .content = "int util;\n"}},
     .absent = {"app/src", "app/src/main.c"}},
    {.name = "test_copy_glob_selects_matching_files",
     .files = {{"a.txt", "a\n"}, {"b.txt", "b\n"}, {"c.md", "c\n"}},
     .recipe = FINAL "copy { '*.txt', '/g/' }\n",
     .want = {{.path = "g/a.txt", .content = "a\n"}, {.path = "g/b.txt", .content = "b\n"}},
     .absent = {"g/c.md", "g/recipe.lua"}},
    {.name = "test_copy_exclude_star_pattern_matches_at_any_depth",
     .files = {{"src/main.c", "c\n"},
	       {"src/main.o", "o\n"},
	       {"src/deep/er/x.o", "o\n"},
	       {"src/deep/er/x.c", "c\n"}},
     .recipe = FINAL "copy { 'src/', '/app/', exclude = { '*.o' } }\n",
     .want = {{.path = "app/main.c"}, {.path = "app/deep/er/x.c"}},
     .absent = {"app/main.o", "app/deep/er/x.o"}},
    {.name = "test_copy_exclude_directory_drops_everything_below_it",
     .files = {{"src/keep.c", "c\n"},
	       {"src/gen/out.c", "generated\n"},
	       {"src/gen/more/x.c", "generated\n"}},
     .recipe = FINAL "copy { 'src/', '/app/', exclude = { 'src/gen' } }\n",
     .want = {{.path = "app/keep.c"}},
     .absent = {"app/gen", "app/gen/out.c", "app/gen/more/x.c"}},
    {.name = "test_copy_owner_numeric_override",
     .files = {{"d/a.txt", "a\n"}, {"d/sub/b.txt", "b\n"}},
     .recipe = FINAL "copy { 'd/', '/opt/app/', owner = '1000:1001' }\n",
     .want = {{.path = "opt/app", .owner = "1000:1001"},
	      {.path = "opt/app/a.txt", .owner = "1000:1001"},
	      {.path = "opt/app/sub", .owner = "1000:1001"},
	      {.path = "opt/app/sub/b.txt", .owner = "1000:1001"},
	      /* a parent the copy created is not the copy's: it stays root's */
	      {.path = "opt", .owner = "0:0"}}},
    {.name = "test_copy_owner_uid_alone_sets_gid_too",
     .files = {{"a.txt", "a\n"}},
     .recipe = FINAL "copy { 'a.txt', '/a.txt', owner = '4242' }\n",
     .want = {{.path = "a.txt", .owner = "4242:4242"}}},
    {.name = "test_copy_mode_override",
     .files = {{"bin/tool", "#!/bin/sh\n"}, {"bin/other", "#!/bin/sh\n"}},
     .recipe = FINAL "copy { 'bin/', '/usr/local/bin/', mode = '0750' }\n",
     .want = {{.path = "usr/local/bin/tool", .content = "#!/bin/sh\n", .perm = 0750},
	      {.path = "usr/local/bin/other", .content = "#!/bin/sh\n", .perm = 0750},
	      /* the parents the copy created keep 0755 */
	      {.path = "usr/local", .content = IS_DIR, .perm = 0755}}},
    {.name = "test_copy_creates_parent_dirs_as_0755_root",
     .files = {{"a.txt", "a\n"}},
     .recipe = FINAL "copy { 'a.txt', '/x/y/z/a.txt', owner = '5:6', mode = '0600' }\n",
     .want = {PARENT_DIR("x"),
	      PARENT_DIR("x/y"),
	      PARENT_DIR("x/y/z"),
	      {.path = "x/y/z/a.txt", .content = "a\n", .perm = 0600, .owner = "5:6"}},
     .n_entries = 4},
    {.name = "test_copy_glob_doublestar_matches_any_depth",
     .files = {{"s/a.c", "a\n"}, {"s/x/b.c", "b\n"}, {"s/x/y/c.c", "c\n"}},
     .recipe = FINAL "copy { 's/**/*.c', '/out/' }\n",
     .want = {{.path = "out/a.c", .content = "a\n"},
	      {.path = "out/b.c", .content = "b\n"},
	      {.path = "out/c.c", .content = "c\n"}}},
    {.name = "test_copy_glob_star_matches_dot_files",
     .files = {{"d/.env", "SECRET=0\n"}, {"d/a.txt", "a\n"}},
     .recipe = FINAL "copy { 'd/*', '/all/' }\n",
     .want = {{.path = "all/a.txt", .content = "a\n"},
	      {.path = "all/.env", .content = "SECRET=0\n"}}},
};

static void test_copy_case(void **state)
{
	fx *f = *state;
	const copy_case *c = f->tcase;
	for (size_t i = 0; i < 6 && c->files[i][0]; i++)
		put(f, c->files[i][0], c->files[i][1]);
	write_recipe(f, c->recipe);
	entries l;
	build_layer(f, NULL, 0, &l);
	for (size_t i = 0; i < 6 && c->want[i].path; i++) {
		const want_entry *w = &c->want[i];
		const entry *e = must_find(&l, w->path);
		if (w->content && !strcmp(w->content, IS_DIR))
			assert_true(S_ISDIR(e->mode));
		else if (w->content)
			assert_file_content(e, w->content);
		if (w->perm)
			assert_int_equal(e->mode & 07777, w->perm);
		if (w->owner) {
			cleanup_free char *owner =
			    xasprintf("%lld:%lld", (long long)e->uid, (long long)e->gid);
			assert_string_equal(owner, w->owner);
		}
		if (w->mtime)
			assert_int_equal(e->mtime, w->mtime);
	}
	for (size_t i = 0; i < 4 && c->absent[i]; i++)
		if (find_entry(&l, c->absent[i]))
			fail_msg("\"%s\" is in the layer", c->absent[i]);
	if (c->n_entries)
		assert_int_equal(l.n, c->n_entries);
	entries_free(&l);
}

static void test_copy_context_files_become_root_owned(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	cleanup_free char *p = ctx_path(f, "a.txt");
	/* as root, give the file a foreign owner; otherwise it is ours (!= 0) */
	if (geteuid() == 0)
		assert_int_equal(lchown(p, 4321, 4322), 0);
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	assert_int_not_equal(st.st_uid, 0);
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n");
	entries l;
	build_layer(f, NULL, 0, &l);
	const entry *e = must_find(&l, "a.txt");
	assert_int_equal(e->uid, 0);
	assert_int_equal(e->gid, 0);
	entries_free(&l);
}

static void test_copy_symlink_is_copied_as_symlink(void **state)
{
	fx *f = *state;
	put(f, "d/target.txt", "t\n");
	put_symlink(f, "d/link", "target.txt");
	put_symlink(f, "top", "d/target.txt");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'd/', '/app/' }\n"
			"copy { 'top', '/top' }\n");
	char digest[IB_DIGEST_BUFLEN];
	build_digest(f, NULL, digest, NULL, NULL);
	entries l;
	layer_entries(f, digest, 0, &l);
	const entry *e = must_find(&l, "app/link");
	assert_true(S_ISLNK(e->mode));
	assert_string_equal(e->symlink, "target.txt");
	entries_free(&l);
	layer_entries(f, digest, 1, &l);
	e = must_find(&l, "top");
	assert_true(S_ISLNK(e->mode));
	assert_string_equal(e->symlink, "d/target.txt");
	assert_int_equal(e->size, 0);
	entries_free(&l);
}

/* ---- copy: the walk of a context directory ---- */

#define WALK_DIRS 12
#define WALK_FILES 24

/* src/dK/<200 chars>-F: paths long enough that each walking thread fills
 * several chunks of items */
static char *walk_name(int d, int k)
{
	return xasprintf("src/d%d/%0200d-%d", d, 0, k);
}

static void walk_context(fx *f)
{
	for (int d = 0; d < WALK_DIRS; d++)
		for (int k = 0; k < WALK_FILES; k++) {
			cleanup_free char *p = walk_name(d, k);
			cleanup_free char *data = xasprintf("%d %d\n", d, k);
			put(f, p, data);
		}
	put(f, "src/d3/sub/deeper/x.o", "o\n");
	put(f, "src/d3/sub/deeper/y", "y\n");
	put(f, "src/ign/keep/k", "k\n");
	put(f, "src/ign/drop", "d\n");
	put(f, "src/ign2/gone", "g\n");
	put(f, "src/top", "top\n");
	put(f, ".dockerignore", "src/ign\n!src/ign/keep\nsrc/ign2\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'src/', '/s/', exclude = { '*.o' } }\n");
}

/* The entries below prefix ("s/d3/") are consecutive, their directory
 * first: as one walk in directory order gives them. */
static void assert_walked_together(const entries *l, const char *dir)
{
	size_t n = strlen(dir), first = SIZE_MAX, last = 0, count = 0;
	for (size_t i = 0; i < l->n; i++)
		if (!strncmp(l->v[i].path, dir, n) &&
		    (!l->v[i].path[n] || l->v[i].path[n] == '/')) {
			if (first == SIZE_MAX)
				first = i;
			last = i;
			count++;
		}
	assert_true(count > 0);
	assert_string_equal(l->v[first].path, dir);
	assert_int_equal(last - first + 1, count);
}

static void test_copy_walk_by_threads_equals_walk_by_one(void **state)
{
	fx *f = *state;
	walk_context(f);
	bopts bo = BOPTS_INIT;
	bo.no_cache = true;
	char many[IB_DIGEST_BUFLEN], one[IB_DIGEST_BUFLEN];
	build_digest(f, &bo, many, NULL, NULL);
	entries l;
	layer_entries(f, many, 0, &l);
	/* s/, dK/ and its files, d3's sub dirs and y, ign, ign/keep, k, top */
	assert_int_equal(l.n, 1 + WALK_DIRS * (1 + WALK_FILES) + 3 + 3 + 1);
	for (int d = 0; d < WALK_DIRS; d++) {
		cleanup_free char *dir = xasprintf("s/d%d", d);
		assert_walked_together(&l, dir);
		for (int k = 0; k < WALK_FILES; k++) {
			cleanup_free char *p = walk_name(d, k);
			cleanup_free char *data = xasprintf("%d %d\n", d, k);
			p[0] = 's'; /* "src/..." -> "s/..." */
			memmove(p + 1, p + 3, strlen(p + 3) + 1);
			assert_file_content(must_find(&l, p), data);
		}
	}
	assert_file_content(must_find(&l, "s/d3/sub/deeper/y"), "y\n");
	assert_null(find_entry(&l, "s/d3/sub/deeper/x.o"));
	assert_file_content(must_find(&l, "s/ign/keep/k"), "k\n");
	assert_null(find_entry(&l, "s/ign/drop"));
	assert_null(find_entry(&l, "s/ign2"));
	assert_file_content(must_find(&l, "s/top"), "top\n");
	entries_free(&l);

	/* one thread walks it all: the same layer, and the same key */
	cpu_set_t all, cpu0;
	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	CPU_ZERO(&cpu0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all)) {
			CPU_SET(c, &cpu0);
			break;
		}
	assert_int_equal(sched_setaffinity(0, sizeof(cpu0), &cpu0), 0);
	int run = -1, cached = -1;
	build_digest(f, NULL, one, &run, &cached); /* the key the threads stored */
	char again[IB_DIGEST_BUFLEN];
	build_digest(f, &bo, again, NULL, NULL);
	assert_int_equal(sched_setaffinity(0, sizeof(all), &all), 0);
	assert_int_equal(run, 0);
	assert_int_equal(cached, 1);
	assert_string_equal(one, many);
	assert_string_equal(again, many);
}

/* A file whose host path is longer than PATH_MAX is walked (by name,
 * relative to its directory) but cannot be opened to be hashed: the error
 * of the hashing, done while the other threads walk, is the step's. */
static void test_copy_walk_hash_error_is_the_steps_error(void **state)
{
	fx *f = *state;
	for (int d = 0; d < WALK_DIRS; d++) {
		cleanup_free char *p = xasprintf("src/d%d/f", d);
		put(f, p, "f\n");
	}
	cleanup_free char *top = ctx_path(f, "src/d5");
	int fd = open(top, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	char name[201];
	memset(name, 'n', 200);
	name[200] = '\0';
	for (int i = 0; i < PATH_MAX / 200 + 1; i++) {
		assert_int_equal(mkdirat(fd, name, 0755), 0);
		int sub = openat(fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = sub;
		assert_true(fd >= 0);
	}
	int file = openat(fd, "deep", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(file >= 0);
	close(file);
	close(fd);
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'src/', '/s/' }\n");
	bopts bo = BOPTS_INIT;
	bo.no_cache = true;
	ib_build_result res;
	assert_int_equal(build(f, &bo, &res), -1);
	assert_non_null(strstr(f->errmsg, "/deep: File name too long"));
	/* the tree is left for teardown, which removes it by name */
}

/* ---- copy: modes of context files ---- */

static void test_context_mode_is_what_git_records(void **state)
{
	(void)state;
	static const struct {
		mode_t in, out;
	} cases[] = {
	    {S_IFREG | 0644, S_IFREG | 0644},  {S_IFREG | 0600, S_IFREG | 0644},
	    {S_IFREG | 0666, S_IFREG | 0644},  {S_IFREG | 0400, S_IFREG | 0644},
	    {S_IFREG | 0755, S_IFREG | 0755},  {S_IFREG | 0700, S_IFREG | 0755},
	    {S_IFREG | 0777, S_IFREG | 0755},  {S_IFREG | 0100, S_IFREG | 0755},
	    {S_IFREG | 0011, S_IFREG | 0644},  {S_IFREG | 04755, S_IFREG | 0755},
	    {S_IFREG | 02644, S_IFREG | 0644}, {S_IFDIR | 0700, S_IFDIR | 0755},
	    {S_IFDIR | 0777, S_IFDIR | 0755},  {S_IFDIR | 01777, S_IFDIR | 0755},
	    {S_IFDIR | 02750, S_IFDIR | 0755}, {S_IFLNK | 0777, S_IFLNK | 0777},
	    {S_IFIFO | 01666, S_IFIFO | 0666},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (build_context_mode(cases[i].in) != cases[i].out)
			fail_msg("mode 0%o: 0%o, want 0%o", (unsigned)cases[i].in,
				 (unsigned)build_context_mode(cases[i].in), (unsigned)cases[i].out);
}

static void chmod_ctx(fx *f, const char *rel, mode_t m)
{
	cleanup_free char *p = ctx_path(f, rel);
	assert_int_equal(chmod(p, m), 0);
}

static void assert_perm(const entries *l, const char *path, mode_t perm)
{
	const entry *e = must_find(l, path);
	if ((e->mode & 07777) != perm)
		fail_msg("%s: mode 0%o, want 0%o", path, (unsigned)(e->mode & 07777),
			 (unsigned)perm);
}

/* Checkouts under different umasks give the same layer (and hit the same
 * cache entry); --context-modes=preserve keeps the checkout's modes. */
static void test_copy_context_modes_are_normalised_unless_preserved(void **state)
{
	fx *f = *state;
	put(f, "d/a.txt", "a\n");
	put(f, "d/run.sh", "#!/bin/sh\n");
	put(f, "d/sub/b.txt", "b\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'd/', '/app/' }\n"
			"copy { 'd/a.txt', '/fixed.txt', mode = '0600' }\n");
	/* umask 077 */
	chmod_ctx(f, "d/a.txt", 0600);
	chmod_ctx(f, "d/run.sh", 0700);
	chmod_ctx(f, "d/sub/b.txt", 0600);
	chmod_ctx(f, "d/sub", 0700);
	char d077[IB_DIGEST_BUFLEN], d000[IB_DIGEST_BUFLEN], dpre[IB_DIGEST_BUFLEN];
	int run = 0, cached = 0;
	build_digest(f, NULL, d077, &run, &cached);
	assert_int_equal(run, 2);
	entries l;
	layer_entries(f, d077, 0, &l);
	assert_perm(&l, "app/a.txt", 0644);
	assert_perm(&l, "app/run.sh", 0755);
	assert_perm(&l, "app/sub", 0755);
	assert_perm(&l, "app/sub/b.txt", 0644);
	entries_free(&l);
	layer_entries(f, d077, 1, &l);
	assert_perm(&l, "fixed.txt", 0600); /* mode= wins */
	entries_free(&l);
	/* umask 000, plus setuid: the same image, from the cache */
	chmod_ctx(f, "d/a.txt", 0666);
	chmod_ctx(f, "d/run.sh", 04777);
	chmod_ctx(f, "d/sub/b.txt", 0666);
	chmod_ctx(f, "d/sub", 0777);
	build_digest(f, NULL, d000, &run, &cached);
	assert_string_equal(d000, d077);
	assert_int_equal(run, 0);
	assert_int_equal(cached, 2);
	/* preserve: the checkout's modes, another key */
	bopts bo = BOPTS_INIT;
	bo.preserve_modes = true;
	chmod_ctx(f, "d/run.sh", 0700);
	chmod_ctx(f, "d/a.txt", 0600);
	build_digest(f, &bo, dpre, &run, &cached);
	assert_string_not_equal(dpre, d077);
	assert_int_equal(run, 2);
	layer_entries(f, dpre, 0, &l);
	assert_perm(&l, "app/a.txt", 0600);
	assert_perm(&l, "app/run.sh", 0700);
	assert_perm(&l, "app/sub", 0777);
	assert_perm(&l, "app/sub/b.txt", 0666);
	entries_free(&l);
}

/* The key pass computes the keys the real pass arrives at, copy from a
 * stage included, before the cache is looked at. */
static void test_key_pass_computes_every_key_first(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	put(f, "b.txt", "b\n");
	write_recipe(f, "stage('one', 'scratch')\n"
			"env { D = '/data' }\n"
			"workdir '/w'\n"
			"copy { 'a.txt', '$D/a.txt' }\n"
			"copy { 'b.txt', 'b.txt' }\n"
			"stage('two', 'scratch')\n"
			"copy { '/data/a.txt', '/a.txt', from = 'one' }\n"
			"copy { 'a.txt', '/again.txt' }\n");
	bopts bo = BOPTS_INIT;
	bo.debug = true;
	for (int pass = 0; pass < 2; pass++) {
		ib_build_result res;
		build_ok(f, &bo, &res);
		assert_int_equal(res.steps_run + res.steps_cached, 4);
		assert_int_equal(res.steps_cached, pass ? 4 : 0);
		ib_build_result_clear(&res);
		const char *line = strstr(f->log, "cache keys: 4 computed before contacting");
		if (!line)
			fail_msg("no key pass line in:\n%s", f->log);
		/* before the first lookup */
		const char *lookup = strstr(f->log, "cache lookup");
		assert_non_null(lookup);
		assert_true(line < lookup);
		assert_null(strstr(f->log, "differ from the key pass"));
		assert_null(strstr(f->log, "the key pass computed"));
	}
}

/* ---- copy: known bugs ---- */

static void test_copy_glob_dot_star_stays_inside_context(void **state)
{
	fx *f = *state;
	put(f, ".env", "A=1\n");
	put_in(f->work, "outside-secret.txt", "do not ship me\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { '.*', '/dots/' }\n");
	ib_build_result res;
	int rc = build(f, NULL, &res);
	if (rc < 0) {
		/* refusing is acceptable; leaking is not */
		print_message("build refused: %s\n", f->errmsg);
		return;
	}
	entries l;
	layer_entries(f, res.manifest.digest, 0, &l);
	ib_build_result_clear(&res);
	char secret[IB_DIGEST_BUFLEN];
	ib_digest_buffer(secret, "do not ship me\n", 15);
	for (size_t i = 0; i < l.n; i++) {
		if (strstr(l.v[i].path, "outside-secret") || !strcmp(l.v[i].content, secret))
			fail_msg("file from outside the context in the layer: %s", l.v[i].path);
	}
	must_find(&l, "dots/.env");
	assert_null(find_entry(&l, "dots/recipe.lua"));
	entries_free(&l);
}

static void test_copy_glob_in_context_whose_path_has_glob_characters(void **state)
{
	fx *f = *state;
	/* a context directory named "ctx[1]" */
	cleanup_free char *ctx = ib_path_join(f->work, "ctx[1]");
	free(f->recipe);
	f->recipe = ib_path_join(ctx, "recipe.lua");
	free(f->ctx);
	f->ctx = steal_pointer(&ctx);
	put(f, "a.txt", "a\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { '*.txt', '/g/' }\n");
	entries l;
	build_layer(f, NULL, 0, &l);
	assert_file_content(must_find(&l, "g/a.txt"), "a\n");
	entries_free(&l);
}

/* ==== cache ==== */

#define THREE_COPIES                                                                               \
	"stage('final', 'scratch')\n"                                                              \
	"copy { 'a.txt', '/a.txt' }\n"                                                             \
	"env { X = '1' }\n"                                                                        \
	"copy { 'b.txt', '/b.txt' }\n"                                                             \
	"copy { 'c.txt', '/c.txt' }\n"

static void three_copies(fx *f)
{
	put(f, "a.txt", "a\n");
	put(f, "b.txt", "b\n");
	put(f, "c.txt", "c\n");
	write_recipe(f, THREE_COPIES);
}

/* Two builds of THREE_COPIES: the first one as it is, the second one with
 * bo (NULL: the defaults) after change (NULL: none) altered the context. */
typedef struct two_builds {
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	int run1, cached1; /* steps of the first build */
	int run, cached;   /* and of the second */
} two_builds;

static void build_twice(fx *f, void (*change)(fx *f), const bopts *bo, two_builds *t)
{
	three_copies(f);
	build_digest(f, NULL, t->d1, &t->run1, &t->cached1);
	if (change)
		change(f);
	build_digest(f, bo, t->d2, &t->run, &t->cached);
}

static void assert_second_build(const two_builds *t, int run, int cached, bool same_digest)
{
	assert_int_equal(t->run, run);
	assert_int_equal(t->cached, cached);
	if (same_digest)
		assert_string_equal(t->d1, t->d2);
	else
		assert_string_not_equal(t->d1, t->d2);
}

static void test_cache_second_identical_build_runs_nothing(void **state)
{
	fx *f = *state;
	two_builds t;
	build_twice(f, NULL, NULL, &t);
	assert_int_equal(t.run1, 3);
	assert_int_equal(t.cached1, 0);
	assert_second_build(&t, 0, 3, true);
	assert_non_null(strstr(f->log, "CACHED"));
	assert_null(strstr(f->log, "DONE"));
}

static void change_b(fx *f)
{
	put(f, "b.txt", "B changed\n");
}

static void test_cache_changed_file_reruns_its_copy_and_later_ones(void **state)
{
	fx *f = *state;
	two_builds t;
	build_twice(f, change_b, NULL, &t);
	assert_second_build(&t, 2, 1, false);
	/* the first copy is the cached one */
	assert_non_null(strstr(f->log, "#1 [final 1/4] COPY a.txt /a.txt CACHED"));
	assert_null(strstr(f->log, "COPY b.txt /b.txt CACHED"));
	assert_null(strstr(f->log, "COPY c.txt /c.txt CACHED"));
	ib_image *a = load_image(f, t.d1), *b = load_image(f, t.d2);
	assert_string_equal(a->manifest->layers[0].digest, b->manifest->layers[0].digest);
	assert_string_not_equal(a->manifest->layers[1].digest, b->manifest->layers[1].digest);
	ib_image_free(a);
	ib_image_free(b);
}

/* newer and different: after EPOCH, so the layer clamps it anyway */
static void touch_after_epoch(fx *f)
{
	set_mtime(f, "b.txt", (time_t)EPOCH + 123456);
	set_mtime(f, "c.txt", time(NULL) + 3600);
}

static void test_cache_mtime_change_keeps_hit(void **state)
{
	fx *f = *state;
	two_builds t;
	build_twice(f, touch_after_epoch, NULL, &t);
	assert_second_build(&t, 0, 3, true);
}

static void test_cache_hit_matches_fresh_build_when_mtime_predates_epoch(void **state)
{
	fx *f = *state;
	three_copies(f);
	set_mtime(f, "b.txt", (time_t)EPOCH - 1000);
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN], d3[IB_DIGEST_BUFLEN];
	build_digest(f, NULL, d1, NULL, NULL);
	set_mtime(f, "b.txt", (time_t)EPOCH - 2000);
	build_digest(f, NULL, d2, NULL, NULL);
	bopts bo = BOPTS_INIT;
	bo.no_cache = true;
	build_digest(f, &bo, d3, NULL, NULL);
	/* whether or not the touch is a hit, cached and fresh must agree */
	assert_string_equal(d2, d3);
}

static void test_cache_different_epoch_misses_every_step(void **state)
{
	fx *f = *state;
	bopts bo = BOPTS_INIT;
	bo.epoch = EPOCH + 1;
	two_builds t;
	build_twice(f, NULL, &bo, &t);
	assert_second_build(&t, 3, 0, false);
}

static void test_cache_no_cache_runs_all_with_same_digest(void **state)
{
	fx *f = *state;
	bopts bo = BOPTS_INIT;
	bo.no_cache = true;
	two_builds t;
	build_twice(f, NULL, &bo, &t);
	assert_second_build(&t, 3, 0, true);
	assert_null(strstr(f->log, "CACHED"));
}

static void test_cache_explain_names_the_changed_file(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	put(f, "src/one.txt", "1\n");
	put(f, "src/two.txt", "2\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n"
			"copy { 'src/', '/src/' }\n");
	bopts bo = BOPTS_INIT;
	bo.explain = true;
	char d[IB_DIGEST_BUFLEN];
	build_digest(f, &bo, d, NULL, NULL);
	put(f, "src/two.txt", "two\n");
	int run = -1;
	build_digest(f, &bo, d, &run, NULL);
	assert_int_equal(run, 1);
	const char *m = strstr(f->log, "cache miss:");
	if (!m)
		fail_msg("no 'cache miss:' line in:\n%s", f->log);
	const char *eol = strchr(m, '\n');
	cleanup_free char *line = xstrndup(m, eol ? (size_t)(eol - m) : strlen(m));
	assert_non_null(strstr(line, "src/two.txt changed"));
	assert_null(strstr(line, "one.txt"));
	assert_null(strstr(f->log, "a.txt changed"));
}

/* ==== --target ==== */

static void test_target_builds_and_tags_only_up_to_that_stage(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	put(f, "later.txt", "l\n");
	write_recipe(f, "stage('first', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n"
			"label { stage = 'first' }\n"
			"stage('second', 'scratch')\n"
			"copy { 'later.txt', '/later.txt' }\n");
	json_t *plan = eval_plan(f);
	/* building the later stage would now fail */
	remove_ctx(f, "later.txt");
	char *tags[] = {"localhost/bt/target:1", NULL};
	bopts bo = BOPTS_INIT;
	bo.target = "first";
	bo.tags = tags;
	ib_build_result res;
	int rc = run_plan(f, plan, &bo, &res);
	json_decref(plan);
	if (rc < 0)
		fail_msg("build: %s", f->errmsg);
	assert_int_equal(res.steps_run, 1);
	assert_null(strstr(f->log, "[second"));
	ib_descriptor d = {0};
	ib_error *err = NULL;
	if (ib_store_tag_get(f->store, "localhost/bt/target:1", &d, &err) < 0)
		fail_msg("tag: %s", ib_error_msg(err));
	assert_string_equal(d.digest, res.manifest.digest);
	ib_descriptor_clear(&d);
	ib_image *img = load_image(f, "localhost/bt/target:1");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(config_of(img), "Labels"), "stage")),
	    "first");
	ib_image_free(img);
	entries l;
	layer_entries(f, res.manifest.digest, 0, &l);
	must_find(&l, "a.txt");
	assert_null(find_entry(&l, "later.txt"));
	entries_free(&l);
	assert_int_equal(count_layers(f, res.manifest.digest), 1);
	ib_build_result_clear(&res);
}

/* ==== tags ==== */

static void test_tags_sets_every_tag(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n");
	char *tags[] = {"localhost/bt/app:1.0", "localhost/bt/app:latest",
			"registry.example.com/team/app:1", NULL};
	bopts bo = BOPTS_INIT;
	bo.tags = tags;
	ib_build_result res;
	build_ok(f, &bo, &res);
	for (size_t i = 0; tags[i]; i++) {
		ib_descriptor d = {0};
		ib_error *err = NULL;
		if (ib_store_tag_get(f->store, tags[i], &d, &err) < 0)
			fail_msg("tag %s: %s", tags[i], ib_error_msg(err));
		assert_string_equal(d.digest, res.manifest.digest);
		assert_int_equal(d.size, res.manifest.size);
		ib_descriptor_clear(&d);
	}
	ib_build_result_clear(&res);
}

static char *read_index(fx *f)
{
	cleanup_free char *p = ib_path_join(ib_store_layout_dir(f->store), "index.json");
	char *data = NULL;
	ib_error *err = NULL;
	if (ib_read_file(p, 1 << 20, &data, NULL, &err) < 0)
		fail_msg("read index: %s", ib_error_msg(err));
	return data;
}

static void test_retagging_same_image_leaves_index_unchanged(void **state)
{
	fx *f = *state;
	put(f, "a.txt", "a\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'a.txt', '/a.txt' }\n");
	char *tags[] = {"localhost/bt/same:1", "localhost/bt/same:2", NULL};
	bopts bo = BOPTS_INIT;
	bo.tags = tags;
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	build_digest(f, &bo, d1, NULL, NULL);
	cleanup_free char *before = read_index(f);
	build_digest(f, &bo, d2, NULL, NULL);
	cleanup_free char *after = read_index(f);
	assert_string_equal(d1, d2);
	assert_string_equal(before, after);
	assert_non_null(strstr(after, d1));
}

/* ==== reproducibility ==== */

static void repro_context(fx *f)
{
	put(f, "src/main.c", "int main(void) { return 0; }\n");
	put(f, "src/lib/a.h", "#define A 1\n");
	put_symlink(f, "src/lib/alias.h", "a.h");
	put(f, "conf/app.conf", "x = 1\n");
	write_recipe(f, "stage('final', 'scratch')\n"
			"copy { 'src/', '/usr/src/app/' }\n"
			"copy { 'conf/app.conf', '/etc/app.conf', mode = '0600' }\n"
			"env { A = '1' }\n"
			"entrypoint { '/app' }\n");
}

static void test_same_recipe_elsewhere_gives_same_digest(void **state)
{
	fx *f = *state;
	repro_context(f);
	fx *g = fx_new();
	assert_non_null(g);
	/* created at another time, in another order */
	put(g, "conf/app.conf", "x = 1\n");
	put(g, "src/lib/a.h", "#define A 1\n");
	sleep(1);
	repro_context(g);
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	build_digest(f, NULL, d1, NULL, NULL);
	build_digest(g, NULL, d2, NULL, NULL);
	assert_string_not_equal(f->ctx, g->ctx);
	assert_string_equal(d1, d2);
	fx_free(g);
}



/* ==== errors ==== */

static char *failed_tags[] = {"localhost/bt/failed:1", NULL};

/* The plan of recipe (which copies a.txt and gone.txt), made before
 * gone.txt is removed from the context. */
static json_t *plan_then_lose_source(fx *f, const char *recipe)
{
	put(f, "a.txt", "a\n");
	put(f, "gone.txt", "g\n");
	write_recipe(f, recipe);
	json_t *plan = eval_plan(f);
	remove_ctx(f, "gone.txt");
	return plan;
}

/* The last build failed with an error naming the recipe's line. */
static void assert_error_at_line(fx *f, int line)
{
	cleanup_free char *prefix = xasprintf("%s:%d:", f->recipe, line);
	if (!f->errmsg || strncmp(f->errmsg, prefix, strlen(prefix)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", f->errmsg ? f->errmsg : "",
			 prefix);
}

static void test_copy_source_vanished_fails_with_recipe_line(void **state)
{
	fx *f = *state;
	json_t *plan = plan_then_lose_source(f, "stage('final', 'scratch')\n"
						"copy { 'a.txt', '/a.txt' }\n"
						"\n"
						"copy { 'gone.txt', '/gone.txt' }\n");
	bopts bo = BOPTS_INIT;
	bo.tags = failed_tags;
	ib_build_result res;
	assert_true(run_plan(f, plan, &bo, &res) < 0);
	json_decref(plan);
	assert_error_at_line(f, 4);
	assert_non_null(strstr(f->errmsg, "gone.txt"));
	assert_non_null(strstr(f->log, "ERROR"));
}

static void test_failed_build_tags_nothing_and_keeps_earlier_steps(void **state)
{
	fx *f = *state;
	json_t *plan = plan_then_lose_source(f, "stage('final', 'scratch')\n"
						"copy { 'a.txt', '/a.txt' }\n"
						"copy { 'gone.txt', '/gone.txt' }\n");
	bopts bo = BOPTS_INIT;
	bo.tags = failed_tags;
	ib_build_result res;
	assert_true(run_plan(f, plan, &bo, &res) < 0);
	ib_descriptor d = {0};
	ib_error *err = NULL;
	assert_int_equal(ib_store_tag_get(f->store, "localhost/bt/failed:1", &d, &err),
			 IB_ENOTFOUND);
	ib_error_free(&err);
	/* the source is back: the first step comes from the cache */
	put(f, "gone.txt", "g\n");
	assert_int_equal(run_plan(f, plan, &bo, &res), 0);
	json_decref(plan);
	assert_int_equal(res.steps_cached, 1);
	assert_int_equal(res.steps_run, 1);
	ib_build_result_clear(&res);
}

static void test_missing_base_image_with_pull_never_is_not_found(void **state)
{
	fx *f = *state;
	write_recipe(f, "-- a base that is not in the store\n"
			"stage('final', 'localhost/bt/no-such-image:1')\n"
			"env { A = '1' }\n");
	ib_build_result res;
	bopts bo = BOPTS_INIT;
	bo.pull = "never";
	assert_true(build(f, &bo, &res) < 0);
	assert_int_equal(f->errcode, IB_ENOTFOUND);
	assert_error_at_line(f, 2);
	assert_non_null(strstr(f->errmsg, "localhost/bt/no-such-image:1"));
}

static void test_unknown_target_is_refused(void **state)
{
	fx *f = *state;
	write_recipe(f, "stage('final', 'scratch')\n"
			"env { A = '1' }\n");
	bopts bo = BOPTS_INIT;
	bo.target = "nope";
	ib_build_result res;
	assert_true(build(f, &bo, &res) < 0);
	assert_non_null(strstr(f->errmsg, "nope"));
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(test_annotations_end_up_in_the_manifest),
	    T(test_history_has_one_entry_per_step),
	    T(test_created_is_rfc3339_of_source_date_epoch),
	    T(test_copy_context_files_become_root_owned),
	    T(test_copy_symlink_is_copied_as_symlink),
	    T(test_copy_walk_by_threads_equals_walk_by_one),
	    T(test_copy_walk_hash_error_is_the_steps_error),
	    T(test_context_mode_is_what_git_records),
	    T(test_copy_context_modes_are_normalised_unless_preserved),
	    T(test_key_pass_computes_every_key_first),
	    T(test_copy_glob_dot_star_stays_inside_context),
	    T(test_copy_glob_in_context_whose_path_has_glob_characters),
	    T(test_cache_second_identical_build_runs_nothing),
	    T(test_cache_changed_file_reruns_its_copy_and_later_ones),
	    T(test_cache_mtime_change_keeps_hit),
	    T(test_cache_hit_matches_fresh_build_when_mtime_predates_epoch),
	    T(test_cache_different_epoch_misses_every_step),
	    T(test_cache_no_cache_runs_all_with_same_digest),
	    T(test_cache_explain_names_the_changed_file),
	    T(test_target_builds_and_tags_only_up_to_that_stage),
	    T(test_tags_sets_every_tag),
	    T(test_retagging_same_image_leaves_index_unchanged),
	    T(test_same_recipe_elsewhere_gives_same_digest),
	    T(test_copy_source_vanished_fails_with_recipe_line),
	    T(test_failed_build_tags_nothing_and_keeps_earlier_steps),
	    T(test_missing_base_image_with_pull_never_is_not_found),
	    T(test_unknown_target_is_refused),
#undef T
	};
	size_t n_config = sizeof(config_cases) / sizeof(config_cases[0]);
	size_t n_copy = sizeof(copy_cases) / sizeof(copy_cases[0]);
	size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
	struct CMUnitTest *tests = xcalloc(n_config + n_copy + n_fixed, sizeof(*tests));
	size_t n = 0;
	for (size_t i = 0; i < n_config; i++)
		tests[n++] = (struct CMUnitTest){config_cases[i].name, test_config_case, setup_case,
						 teardown, (void *)&config_cases[i]};
	for (size_t i = 0; i < n_copy; i++)
		tests[n++] = (struct CMUnitTest){copy_cases[i].name, test_copy_case, setup_case,
						 teardown, (void *)&copy_cases[i]};
	for (size_t i = 0; i < n_fixed; i++)
		tests[n++] = fixed[i];
	int rc = _cmocka_run_group_tests("tests", tests, n, NULL, NULL);
	free(tests);
	return rc;
}
