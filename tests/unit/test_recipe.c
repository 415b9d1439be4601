/* Recipe evaluation: fixture recipes under tests/fixtures/recipes, their
 * plans, the sandbox, and the broken-recipe corpus (the .lua files in broken/, each with
 * a first line "-- expect: [FILE:]LINE: substring"). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "plan.h"
#include "recipe.h"
#include "testutil.h"
#include "util.h"

static const char *source_dir(void)
{
	const char *d = getenv("IB_SOURCE_DIR");
	return d ? d : ".";
}

static char *fixture(const char *rel)
{
	return xasprintf("%s/tests/fixtures/recipes/%s", source_dir(), rel);
}

/* Evaluate a recipe; on failure *msg_out (if given) gets the message. */
static int eval_path(const char *path, const char *ctx_dir, char *const *bargs, json_t **plan,
		     char **msg_out)
{
	ib_recipe_options o = IB_RECIPE_OPTIONS_INIT;
	o.context_dir = ctx_dir;
	o.build_args = bargs;
	ib_error *err = NULL;
	*plan = NULL;
	int rc = ib_recipe_eval(plan, path, &o, &err);
	if (rc < 0) {
		if (msg_out)
			*msg_out = xstrdup(ib_error_msg(err));
		ib_error_free(&err);
	}
	return rc;
}

static json_t *eval_fixture(const char *rel, const char *ctx_rel, char *const *bargs)
{
	cleanup_free char *path = fixture(rel);
	cleanup_free char *ctx = ctx_rel ? fixture(ctx_rel) : NULL;
	cleanup_free char *msg = NULL;
	json_t *plan = NULL;
	if (eval_path(path, ctx, bargs, &plan, &msg) < 0)
		fail_msg("%s: %s", rel, msg);
	assert_non_null(plan);
	return plan;
}

static json_t *stage_at(json_t *plan, size_t i)
{
	json_t *s = json_array_get(json_object_get(plan, "stages"), i);
	assert_non_null(s);
	return s;
}

static json_t *step_at(json_t *plan, size_t stage, size_t i)
{
	json_t *st = json_array_get(json_object_get(stage_at(plan, stage), "steps"), i);
	if (!st)
		fail_msg("no step %zu in stage %zu", i, stage);
	return st;
}

static size_t nsteps(json_t *plan, size_t stage)
{
	return json_array_size(json_object_get(stage_at(plan, stage), "steps"));
}

/* The JSON text of v (sorted keys, compact). */
static char *dump(json_t *v)
{
	char *s = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
	assert_non_null(s);
	return s;
}

static void assert_json(json_t *v, const char *expected)
{
	cleanup_free char *s = dump(v);
	assert_string_equal(s, expected);
}

static const char *label(json_t *plan, size_t stage, size_t step, const char *key)
{
	json_t *labels = json_object_get(step_at(plan, stage, step), "labels");
	assert_non_null(labels);
	return tu_json_str(labels, key);
}

/* ---- temp dirs for recipes written by the tests ---- */

typedef struct tmpdir {
	char path[64];
} tmpdir;

static void tmp_make(tmpdir *t)
{
	snprintf(t->path, sizeof(t->path), "/tmp/ib-test-recipe-XXXXXX");
	assert_non_null(mkdtemp(t->path));
}

static void tmp_remove(tmpdir *t)
{
	ib_error *err = NULL;
	ib_rm_rf(t->path, &err);
	ib_error_free(&err);
}

/* Evaluate `content` as DIR/recipe.lua; returns the error message or NULL
 * and the plan in *plan. */
static char *eval_text(const char *content, json_t **plan)
{
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *path = tu_write_under(t.path, "recipe.lua", content);
	char *msg = NULL;
	eval_path(path, NULL, NULL, plan, &msg);
	if (msg) {
		/* report relative to the recipe for easy comparison */
		size_t n = strlen(t.path);
		if (!strncmp(msg, t.path, n) && msg[n] == '/')
			memmove(msg, msg + n + 1, strlen(msg + n + 1) + 1);
	}
	tmp_remove(&t);
	return msg;
}

/* ---- global form ---- */

static void test_global_form_stages(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("full.lua", "ctx", NULL);
	assert_int_equal(tu_json_int(plan, "version"), IB_PLAN_VERSION);
	assert_string_equal(tu_json_str(plan, "recipe"), "full.lua");
	assert_json(json_object_get(plan, "args"), "{\"VERSION\":\"1.0\"}");
	assert_int_equal(json_array_size(json_object_get(plan, "stages")), 3);

	json_t *build = stage_at(plan, 0);
	assert_string_equal(tu_json_str(build, "name"), "build");
	assert_json(json_object_get(build, "from"),
		    "{\"image\":\"docker.io/library/debian:bookworm\"}");
	assert_int_equal(tu_json_int(build, "line"), 3);
	assert_true(json_is_null(json_object_get(build, "platform")));

	json_t *anon = stage_at(plan, 1);
	assert_string_equal(tu_json_str(anon, "name"), "stage1");
	assert_json(json_object_get(anon, "from"),
		    "{\"image\":\"docker.io/library/alpine:3.19\",\"short\":\"alpine:3.19\"}");
	assert_string_equal(tu_json_str(anon, "platform"), "linux/arm64");
	assert_string_equal(tu_json_str(anon, "pull"), "always");
	assert_int_equal(tu_json_int(anon, "line"), 15);

	json_t *final = stage_at(plan, 2);
	assert_string_equal(tu_json_str(final, "name"), "final");
	assert_json(json_object_get(final, "from"), "{\"scratch\":true}");
	json_decref(plan);
}

static void test_global_form_run(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("full.lua", "ctx", NULL);
	json_t *s = step_at(plan, 0, 0);
	assert_json(s, "{\"argv\":[\"/bin/sh\",\"-c\",\"make all\"],\"cache\":true,"
		       "\"cache_mounts\":[],\"env\":{},\"kind\":\"run\",\"line\":4,"
		       "\"network\":\"default\",\"secrets\":[],\"shell_form\":true,\"timeout\":0,"
		       "\"user\":null,\"workdir\":null}");
	s = step_at(plan, 0, 1);
	assert_json(
	    s, "{\"argv\":[\"gcc\",\"-O2\",\"-o\",\"/out/hello\",\"hello.c\"],"
	       "\"cache\":false,\"cache_mounts\":[\"/root/.cache\"],"
	       "\"env\":{\"CC\":\"gcc\",\"JOBS\":\"4\"},\"kind\":\"run\",\"line\":5,"
	       "\"network\":\"none\",\"secrets\":["
	       "{\"id\":\"npmrc\",\"src\":\"/home/me/.npmrc\",\"target\":\"/run/secrets/npmrc\"},"
	       "{\"id\":\"token\",\"src\":\"/tmp/token\",\"target\":\"/run/secrets/token\"}],"
	       "\"shell_form\":false,\"timeout\":600,\"user\":\"1000:1000\","
	       "\"workdir\":\"/src\"}");
	/* run after shell{} uses the new shell */
	s = step_at(plan, 0, 8);
	assert_string_equal(tu_json_str(s, "kind"), "run");
	assert_json(json_object_get(s, "argv"), "[\"/bin/bash\",\"-eu\",\"-c\",\"echo $SHELL\"]");
	assert_int_equal(tu_json_int(s, "line"), 14);
	s = step_at(plan, 0, 7);
	assert_string_equal(tu_json_str(s, "kind"), "shell");
	assert_json(json_object_get(s, "argv"), "[\"/bin/bash\",\"-eu\",\"-c\"]");
	/* a new stage starts with the default shell */
	s = step_at(plan, 1, 0);
	assert_json(json_object_get(s, "argv"), "[\"true\"]");
	json_decref(plan);
}

static void test_global_form_copy(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("full.lua", "ctx", NULL);
	assert_json(step_at(plan, 0, 2),
		    "{\"dest\":\"/src/\",\"exclude\":[],\"from\":null,\"kind\":\"copy\",\"line\":8,"
		    "\"mode\":null,\"owner\":null,\"sources\":[\"src/\",\"hello.c\"]}");
	/* relative dest with an unknown base workdir stays relative */
	assert_json(
	    step_at(plan, 0, 3),
	    "{\"dest\":\"out/\",\"exclude\":[\"*.o\"],\"from\":null,\"kind\":\"copy\","
	    "\"line\":9,\"mode\":\"0755\",\"owner\":\"1000:1000\",\"sources\":[\"src/*.c\"]}");
	/* "." after workdir "/app" + "sub" */
	assert_string_equal(tu_json_str(step_at(plan, 0, 6), "dest"), "/app/sub/");
	json_t *s = step_at(plan, 2, 0);
	assert_json(json_object_get(s, "from"), "{\"stage\":\"build\"}");
	assert_json(json_object_get(s, "sources"), "[\"/out/hello\"]");
	assert_string_equal(tu_json_str(s, "dest"), "/usr/local/bin/hello");
	s = step_at(plan, 2, 1);
	assert_json(json_object_get(s, "from"),
		    "{\"image\":\"docker.io/library/busybox:1.36\",\"short\":\"busybox:1.36\"}");
	/* a string naming an existing stage refers to the stage */
	s = step_at(plan, 2, 12);
	assert_json(json_object_get(s, "from"), "{\"stage\":\"stage1\"}");
	assert_int_equal(tu_json_int(s, "line"), 31);
	json_decref(plan);
}

static void test_global_form_config(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("full.lua", "ctx", NULL);
	assert_json(step_at(plan, 0, 4), "{\"kind\":\"workdir\",\"line\":10,\"path\":\"/app\"}");
	assert_json(step_at(plan, 0, 5),
		    "{\"kind\":\"workdir\",\"line\":11,\"path\":\"/app/sub\"}");
	assert_json(step_at(plan, 2, 2), "{\"env\":{\"GREETING\":\"hi\",\"VERSION\":\"1.0\"},"
					 "\"kind\":\"env\",\"line\":20}");
	assert_json(step_at(plan, 2, 3), "{\"kind\":\"user\",\"line\":21,\"user\":\"1000:1000\"}");
	assert_json(step_at(plan, 2, 4),
		    "{\"kind\":\"label\",\"labels\":{\"maintainer\":\"me\","
		    "\"org.opencontainers.image.version\":\"1.0\"},\"line\":22}");
	assert_json(step_at(plan, 2, 5),
		    "{\"annotations\":{\"org.opencontainers.image.source\":"
		    "\"https://example.com/app\"},\"kind\":\"annotation\",\"line\":23}");
	assert_json(step_at(plan, 2, 6), "{\"kind\":\"expose\",\"line\":24,"
					 "\"ports\":[\"8080/tcp\",\"53/tcp\",\"53/udp\","
					 "\"7000/udp\",\"7001/udp\",\"7002/udp\"]}");
	assert_json(step_at(plan, 2, 7),
		    "{\"kind\":\"volume\",\"line\":25,\"paths\":[\"/data\",\"/var/log\"]}");
	assert_json(step_at(plan, 2, 8),
		    "{\"kind\":\"stopsignal\",\"line\":26,\"signal\":\"SIGTERM\"}");
	assert_json(step_at(plan, 2, 9),
		    "{\"interval\":30000000000,\"kind\":\"healthcheck\",\"line\":27,\"retries\":3,"
		    "\"start_period\":5000000000,\"test\":[\"CMD-SHELL\","
		    "\"curl -f http://localhost/\"],\"timeout\":90000000000}");
	assert_json(step_at(plan, 2, 10), "{\"argv\":[\"/usr/local/bin/hello\"],"
					  "\"kind\":\"entrypoint\",\"line\":29}");
	assert_json(step_at(plan, 2, 11), "{\"argv\":[\"--loud\"],\"kind\":\"cmd\",\"line\":30}");
	assert_int_equal(nsteps(plan, 2), 13);
	json_decref(plan);
}

static void test_workdir_resolution(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text("stage('img', 'alpine')\n"
					   "workdir 'rel/./x/..'\n" /* base WorkingDir unknown */
					   "copy { 'recipe.lua', '.' }\n"
					   "run { 'true', workdir = 'sub' }\n"
					   "workdir '/abs'\n"
					   "workdir '../other'\n"
					   "copy { 'recipe.lua', 'file' }\n"
					   "stage('derived', 'img')\n"
					   "workdir 'more'\n"
					   "stage('s', 'scratch')\n"
					   "copy { 'recipe.lua', '.' }\n",
					   &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_string_equal(tu_json_str(step_at(plan, 0, 0), "path"), "rel");
	assert_string_equal(tu_json_str(step_at(plan, 0, 1), "dest"), "./");
	assert_string_equal(tu_json_str(step_at(plan, 0, 2), "workdir"), "sub");
	assert_string_equal(tu_json_str(step_at(plan, 0, 3), "path"), "/abs");
	assert_string_equal(tu_json_str(step_at(plan, 0, 4), "path"), "/other");
	assert_string_equal(tu_json_str(step_at(plan, 0, 5), "dest"), "/other/file");
	/* a stage built on a stage inherits its workdir */
	assert_string_equal(tu_json_str(step_at(plan, 1, 0), "path"), "/other/more");
	/* scratch starts at / */
	assert_string_equal(tu_json_str(step_at(plan, 2, 0), "dest"), "/");
	json_decref(plan);
}

/* ---- method form ---- */

static void test_method_form_appends_to_receiver(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("methods.lua", "ctx", NULL);
	assert_int_equal(json_array_size(json_object_get(plan, "stages")), 3);
	assert_int_equal(nsteps(plan, 0), 15);
	assert_int_equal(nsteps(plan, 1), 2);
	const char *kinds[] = {"run",	     "workdir",	   "copy",	  "env",    "user",
			       "entrypoint", "cmd",	   "expose",	  "volume", "label",
			       "annotation", "stopsignal", "healthcheck", "shell",  "run"};
	for (size_t i = 0; i < 15; i++)
		assert_string_equal(tu_json_str(step_at(plan, 0, i), "kind"), kinds[i]);
	assert_string_equal(tu_json_str(step_at(plan, 0, 2), "dest"), "/opt/");
	assert_json(json_object_get(step_at(plan, 0, 5), "argv"),
		    "[\"/bin/sh\",\"-c\",\"exec curl\"]");
	assert_json(json_object_get(step_at(plan, 0, 7), "ports"), "[\"80/tcp\"]");
	assert_string_equal(tu_json_str(step_at(plan, 0, 11), "signal"), "9");
	assert_json(json_object_get(step_at(plan, 0, 12), "test"), "[\"NONE\"]");
	assert_json(json_object_get(step_at(plan, 0, 14), "argv"),
		    "[\"/bin/ash\",\"-c\",\"echo hi\"]");
	/* the app stage got the copy (method) and the global run */
	json_t *c = step_at(plan, 1, 0);
	assert_json(json_object_get(c, "from"), "{\"stage\":\"tools\"}");
	assert_int_equal(tu_json_int(c, "line"), 7);
	assert_int_equal(tu_json_int(step_at(plan, 1, 1), "line"), 20);
	/* stage("late") then late:from(): base set, stage() line kept */
	json_t *late = stage_at(plan, 2);
	assert_json(json_object_get(late, "from"),
		    "{\"image\":\"docker.io/library/busybox:latest\",\"short\":\"busybox\"}");
	assert_int_equal(tu_json_int(late, "line"), 21);
	assert_string_equal(label(plan, 2, 0, "stage"), "late");
	assert_string_equal(label(plan, 2, 0, "shown"), "stage(app)");
	json_decref(plan);
}

/* ---- determinism ---- */

static void test_sorted_keys_give_identical_plans(void **state)
{
	(void)state;
	json_t *a = eval_fixture("sorted_a.lua", NULL, NULL);
	json_t *b = eval_fixture("sorted_b.lua", NULL, NULL);
	cleanup_free char *da = dump(json_object_get(a, "stages"));
	cleanup_free char *db = dump(json_object_get(b, "stages"));
	assert_string_equal(da, db);
	/* pairs() walks keys in sorted order: numbers, then strings */
	const char *expect[] = {"echo 1=one",  "echo 2=two", "echo alpha=2",
				"echo beta=4", "echo mid=3", "echo zeta=1"};
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(json_string_value(json_array_get(
					json_object_get(step_at(a, 0, 3 + i), "argv"), 2)),
				    expect[i]);
	json_decref(a);
	json_decref(b);
}

static void test_plan_is_repeatable_and_has_no_absolute_paths(void **state)
{
	(void)state;
	json_t *a = eval_fixture("full.lua", "ctx", NULL);
	json_t *b = eval_fixture("full.lua", "ctx", NULL);
	cleanup_free char *da = dump(a);
	cleanup_free char *db = dump(b);
	assert_string_equal(da, db);
	assert_null(strstr(da, source_dir()));
	assert_null(strstr(da, "fixtures"));
	json_decref(a);
	json_decref(b);
}

static void test_unknown_options_reported_in_sorted_order(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text(
	    "stage('s', 'scratch')\nrun { 'x', zz = 1, mm = 2, bb = 3, cache = 1 }\n", &plan);
	assert_non_null(msg);
	assert_string_equal(msg, "recipe.lua:2: run: unknown option 'bb'");
}

/* ---- build args ---- */

static void test_args_defaults(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("args.lua", NULL, NULL);
	assert_json(json_object_get(plan, "args"),
		    "{\"NAME\":null,\"NUM\":\"3\",\"VERSION\":\"1.0\"}");
	assert_string_equal(label(plan, 0, 0, "version"), "1.0");
	assert_string_equal(label(plan, 0, 0, "name"), "none");
	assert_string_equal(label(plan, 0, 0, "num"), "3");
	json_decref(plan);
}

static void test_build_args_override_defaults(void **state)
{
	(void)state;
	char *args[] = {"VERSION=2.0", "NAME=x=y", "UNUSED=1", "VERSION=2.1", NULL};
	json_t *plan = eval_fixture("args.lua", NULL, args);
	/* the last --build-arg wins; an unused one is not recorded */
	assert_json(json_object_get(plan, "args"),
		    "{\"NAME\":\"x=y\",\"NUM\":\"3\",\"VERSION\":\"2.1\"}");
	assert_string_equal(label(plan, 0, 0, "version"), "2.1");
	assert_string_equal(label(plan, 0, 0, "again"), "2.1");
	assert_string_equal(label(plan, 0, 0, "name"), "x=y");
	json_decref(plan);
}

static void test_build_arg_bad_name_is_rejected(void **state)
{
	(void)state;
	char *args[] = {"=x", NULL};
	cleanup_free char *path = fixture("args.lua");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	assert_true(eval_path(path, NULL, args, &plan, &msg) < 0);
	assert_null(plan);
	assert_non_null(strstr(msg, "--build-arg"));
}

static void test_arg_conflicting_defaults_fail(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg =
	    eval_text("local a = arg('X', '1')\nlocal b = arg('X', '2')\nfrom 'scratch'\n", &plan);
	assert_non_null(msg);
	assert_string_equal(msg, "recipe.lua:2: arg: 'X' was already read with default '1'");
}

/* ---- require ---- */

static void test_require_module_next_to_recipe(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("require_local.lua", NULL, NULL);
	json_t *s = step_at(plan, 0, 0);
	assert_json(json_object_get(s, "argv"), "[\"/bin/sh\",\"-c\",\"apk add --no-cache curl\"]");
	/* a step made inside a module function carries the recipe's line */
	assert_int_equal(tu_json_int(s, "line"), 3);
	assert_string_equal(label(plan, 0, 1, "greeting"), "hello from helpers");
	assert_string_equal(label(plan, 0, 1, "same"), "true");
	json_decref(plan);
}

static void test_require_embedded_module(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("require_embedded.lua", NULL, NULL);
	assert_json(json_object_get(step_at(plan, 0, 0), "argv"),
		    "[\"/bin/sh\",\"-c\",\"echo 'it'\\\\''s here'\"]");
	assert_string_equal(label(plan, 0, 1, "base"), "tool");
	assert_string_equal(label(plan, 0, 1, "same"), "true");
	assert_string_equal(label(plan, 0, 1, "joined"), "'a b' c");
	assert_string_equal(label(plan, 0, 1, "dir"), "/usr/local/bin");
	json_decref(plan);
}

static void test_require_local_module_shadows_embedded(void **state)
{
	(void)state;
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *mod = tu_write_under(t.path, "sh.lua", "return { local_sh = true }\n");
	cleanup_free char *path = tu_write_under(
	    t.path, "recipe.lua",
	    "local sh = require 'sh'\nfrom 'scratch'\nlabel { v = tostring(sh.local_sh) }\n");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	assert_int_equal(eval_path(path, NULL, NULL, &plan, &msg), 0);
	assert_string_equal(label(plan, 0, 0, "v"), "true");
	json_decref(plan);
	tmp_remove(&t);
}

static void test_require_cycle_is_an_error(void **state)
{
	(void)state;
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *a = tu_write_under(t.path, "a.lua", "return require 'b'\n");
	cleanup_free char *b = tu_write_under(t.path, "b.lua", "-- b\nreturn require 'a'\n");
	cleanup_free char *path =
	    tu_write_under(t.path, "recipe.lua", "require 'a'\nfrom 'scratch'\n");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	assert_true(eval_path(path, NULL, NULL, &plan, &msg) < 0);
	cleanup_free char *expect =
	    xasprintf("%s/b.lua:2: require: module 'a' requires itself", t.path);
	assert_true(!strncmp(msg, expect, strlen(expect)));
	tmp_remove(&t);
}

/* ---- sandbox ---- */

static void test_sandbox_hides_unsafe_functions(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("sandbox.lua", NULL, NULL);
	const char *nil_keys[] = {"os",		"io",	      "package",	"debug",
				  "dofile",	"loadfile",   "collectgarbage", "random",
				  "randomseed", "load_binary"};
	for (size_t i = 0; i < sizeof(nil_keys) / sizeof(nil_keys[0]); i++)
		if (strcmp(label(plan, 0, 0, nil_keys[i]), "nil"))
			fail_msg("%s is reachable: %s", nil_keys[i],
				 label(plan, 0, 0, nil_keys[i]));
	const char *failing[] = {"loadlib", "execute", "popen",		"format_p",
				 "gc",	    "weak",    "require_escape"};
	for (size_t i = 0; i < sizeof(failing) / sizeof(failing[0]); i++)
		if (strcmp(label(plan, 0, 0, failing[i]), "false"))
			fail_msg("%s did not fail", failing[i]);
	assert_string_equal(label(plan, 0, 0, "string"), "table");
	assert_string_equal(label(plan, 0, 0, "table"), "table");
	assert_string_equal(label(plan, 0, 0, "utf8"), "table");
	assert_string_equal(label(plan, 0, 0, "floor"), "function");
	assert_string_equal(label(plan, 0, 0, "load_text"), "2");
	/* no addresses: tostring of a table is deterministic */
	assert_string_equal(label(plan, 0, 0, "tostring_table"), "table: #1");
	assert_string_equal(label(plan, 0, 0, "globals_env"), "function");
	json_decref(plan);
}

static void test_sandbox_memory_is_capped(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg =
	    eval_text("from 'scratch'\nlocal s = string.rep('x', (1 << 30) + 1)\n", &plan);
	assert_non_null(msg);
	assert_null(plan);
	/* a failed allocation leaves no stack to point at: FILE only */
	assert_string_equal(msg, "recipe.lua: recipe evaluation ran out of memory (limit 512 MiB)");
}

static void test_pcall_caught_error_leaves_no_partial_step(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text("from 'scratch'\n"
					   "local ok, e = pcall(run, { 'x', bogus = 1 })\n"
					   "label { ok = tostring(ok), e = e }\n"
					   "run 'echo after'\n",
					   &plan);
	assert_null(msg);
	assert_int_equal(nsteps(plan, 0), 2);
	assert_string_equal(label(plan, 0, 0, "ok"), "false");
	const char *e = label(plan, 0, 0, "e");
	const char *want = "/recipe.lua:2: run: unknown option 'bogus'";
	assert_true(strlen(e) > strlen(want) && !strcmp(e + strlen(e) - strlen(want), want));
	json_decref(plan);
}

static void test_hashbang_line_is_skipped(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg =
	    eval_text("#!/usr/bin/env imgbuild\nfrom 'scratch'\nrun 'x'\n", &plan);
	assert_null(msg);
	assert_int_equal(tu_json_int(step_at(plan, 0, 0), "line"), 3);
	json_decref(plan);
}

/* ---- the build context ---- */

static void test_context_read_glob_exists(void **state)
{
	(void)state;
	json_t *plan = eval_fixture("context.lua", "ctx", NULL);
	assert_string_equal(label(plan, 0, 0, "read"), "hello from the context\n");
	assert_string_equal(label(plan, 0, 0, "glob"), "src/main.c,src/util.c");
	assert_string_equal(label(plan, 0, 0, "deep"), "docs/api/index.md,docs/guide.md");
	assert_string_equal(label(plan, 0, 0, "all"),
			    ".hidden,data.txt,docs,docs/api,docs/api/index.md,docs/guide.md,"
			    "hello.c,src,src/main.c,src/util.c,src/util.h");
	assert_string_equal(label(plan, 0, 0, "dirs"), "docs,src");
	assert_string_equal(label(plan, 0, 0, "class"), "src/main.c");
	assert_string_equal(label(plan, 0, 0, "exists"), "true");
	assert_string_equal(label(plan, 0, 0, "missing"), "false");
	assert_string_equal(label(plan, 0, 0, "escape"), "false");
	assert_string_equal(label(plan, 0, 0, "absolute"), "false");
	json_decref(plan);
}

static void test_context_symlinks_stay_inside(void **state)
{
	(void)state;
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *secret = tu_write_under(t.path, "outside/secret.txt", "secret\n");
	cleanup_free char *inside = tu_write_under(t.path, "ctx/dir/file.txt", "inside\n");
	cleanup_free char *abs_link = ib_path_join(t.path, "ctx/abs");
	cleanup_free char *rel_link = ib_path_join(t.path, "ctx/up");
	cleanup_free char *ok_link = ib_path_join(t.path, "ctx/alias");
	assert_int_equal(symlink("/etc", abs_link), 0);
	assert_int_equal(symlink("../outside", rel_link), 0);
	assert_int_equal(symlink("dir", ok_link), 0);
	cleanup_free char *ctx = ib_path_join(t.path, "ctx");
	cleanup_free char *path = tu_write_under(
	    t.path, "recipe.lua",
	    "from 'scratch'\n"
	    "label { via_alias = context.read('alias/file.txt'),\n"
	    "        up = tostring((pcall(context.read, 'up/secret.txt'))),\n"
	    "        abs = tostring((pcall(context.exists, 'abs/passwd'))),\n"
	    "        dotdot = tostring((pcall(context.read, 'dir/../../outside/secret.txt'))) }\n"
	    "copy { 'up', '/link' }\n" /* the link itself is copied, not followed */
	    "copy { 'alias/file.txt', '/f' }\n");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	if (eval_path(path, ctx, NULL, &plan, &msg) < 0)
		fail_msg("%s", msg);
	assert_string_equal(label(plan, 0, 0, "via_alias"), "inside\n");
	assert_string_equal(label(plan, 0, 0, "up"), "false");
	assert_string_equal(label(plan, 0, 0, "abs"), "false");
	assert_string_equal(label(plan, 0, 0, "dotdot"), "false");
	assert_int_equal(nsteps(plan, 0), 3);
	json_decref(plan);

	cleanup_free char *bad =
	    tu_write_under(t.path, "bad.lua", "from 'scratch'\ncopy { 'up/secret.txt', '/s' }\n");
	free(msg);
	msg = NULL;
	assert_true(eval_path(bad, ctx, NULL, &plan, &msg) < 0);
	cleanup_free char *expect = xasprintf("%s:2: copy: 'up/secret.txt' is outside the build "
					      "context",
					      bad);
	assert_true(!strncmp(msg, expect, strlen(expect)));
	tmp_remove(&t);
}

static void test_long_recipe_path_is_not_truncated(void **state)
{
	(void)state;
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *path = tu_write_under(
	    t.path, "a-very-long-directory-name-that-lua-would-shorten/and-another-one/recipe.lua",
	    "from 'scratch'\n\nlocal t = nil\nrun(t.x)\n");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	assert_true(eval_path(path, NULL, NULL, &plan, &msg) < 0);
	cleanup_free char *expect = xasprintf("%s:4: attempt to index a nil value", path);
	if (strncmp(msg, expect, strlen(expect)))
		fail_msg("got '%s', want prefix '%s'", msg, expect);
	tmp_remove(&t);
}

/* ---- limits: nothing a recipe does stalls or crashes the evaluation ---- */

/* Evaluate `content`; it must fail with a message that starts with
 * "recipe.lua:LINE: " and contains `sub`, within `seconds`. */
static void expect_failure(const char *content, int line, const char *sub, double seconds)
{
	json_t *plan = NULL;
	double t0 = tu_now();
	cleanup_free char *msg = eval_text(content, &plan);
	double took = tu_now() - t0;
	if (!msg)
		fail_msg("evaluated without error: %s", content);
	cleanup_free char *where = xasprintf("recipe.lua:%d: ", line);
	if (strncmp(msg, where, strlen(where)) || !strstr(msg, sub))
		fail_msg("got '%s', want '%s...%s'", msg, where, sub);
	if (took > seconds)
		fail_msg("took %.1f s (at most %.0f): %s", took, seconds, content);
	assert_null(plan);
}

static void test_instruction_cap_cannot_be_caught(void **state)
{
	(void)state;
	static const char cap[] = "recipe evaluation exceeded 200 million instructions";
	expect_failure("from 'scratch'\n"
		       "while true do pcall(function() while true do end end) end\n",
		       2, cap, 60);
	/* a message handler that loops, or that would swallow the error */
	expect_failure("from 'scratch'\n"
		       "local function spin() while true do end end\n"
		       "while true do xpcall(function() while true do end end, spin) end\n",
		       3, cap, 60);
	expect_failure("from 'scratch'\n"
		       "local ok, e = xpcall(function() while true do end end,\n"
		       "                     function(m) return 'swallowed' end)\n"
		       "label { e = tostring(e) }\n",
		       2, cap, 60);
	/* nested pcalls, a to-be-closed variable, pcall as a __close method */
	expect_failure(
	    "from 'scratch'\n"
	    "local function inner()\n"
	    "  local x <close> = setmetatable({}, { __close = function() while true do end "
	    "end })\n"
	    "  while true do end\n"
	    "end\n"
	    "for i = 1, 1000 do pcall(pcall, pcall, inner) end\n"
	    "label { done = 'yes' }\n",
	    4, cap, 60);
	expect_failure(
	    "from 'scratch'\n"
	    "local spin = setmetatable({}, { __call = function() while true do end end })\n"
	    "for i = 1, 1000 do\n"
	    "  local x <close> = setmetatable({}, { __close = pcall })\n"
	    "  pcall(spin)\n"
	    "end\n",
	    2, cap, 60);
}

static void test_pcall_and_xpcall_keep_their_results(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg =
	    eval_text("from 'scratch'\n"
		      "local a, b, c = pcall(function(x, y) return x, y end, 1, 2)\n"
		      "local d, e = pcall(error, { code = 7 })\n"
		      "local f, g = xpcall(function() error('boom') end,\n"
		      "                    function(m) return 'handled: ' .. m:sub(-18) end)\n"
		      "local h, i, j = xpcall(function(x) return x, 5 end, print, 4)\n"
		      "local k, l = pcall(string.rep)\n"
		      "label { r = table.concat({ tostring(a), b, c, tostring(d), e.code,\n"
		      "        tostring(f), g, tostring(h), i, j, tostring(k) }, ' '),\n"
		      "        l = l }\n",
		      &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_string_equal(label(plan, 0, 0, "r"),
			    "true 1 2 false 7 false handled: recipe.lua:4: boom true 4 5 false");
	assert_non_null(strstr(label(plan, 0, 0, "l"), "bad argument #1 to"));
	json_decref(plan);
}

static void test_pattern_matching_is_bounded(void **state)
{
	(void)state;
	expect_failure("from 'scratch'\n"
		       "local s = string.rep('a', 30000)\n"
		       "local r = s:find(string.rep('a*', 6) .. 'b')\n",
		       3, "string.find: pattern too expensive for a subject of 30000 bytes", 10);
	expect_failure("from 'scratch'\n"
		       "for w in string.rep('x', 1000000):gmatch('([^\\n]*)\\n') do end\n",
		       2, "string.gmatch: pattern too expensive", 10);
	expect_failure("from 'scratch'\n"
		       "local s = string.rep(' ', 100000) .. 'x'\n"
		       "local t = s:gsub('%s+$', '')\n",
		       3, "string.gsub: pattern too expensive", 10);
	expect_failure("from 'scratch'\n"
		       "local s = string.rep('a', 1 << 20)\n"
		       "local r = s:find(string.rep('a', 1 << 18) .. 'b', 1, true)\n",
		       3, "string.find: pattern too expensive", 10);
	expect_failure("from 'scratch'\n"
		       "local s = string.rep('a', 3000)\n"
		       "local r = s:match('^(a-)(a-)(a-)%1b')\n",
		       3, "string.match: pattern too expensive", 10);

	/* ordinary patterns keep working, also on large subjects */
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text(
	    "from 'scratch'\n"
	    "local function trim(s) return (s:match('^%s*(.-)%s*$')) end\n"
	    "local text = string.rep('line of text here\\n', 50000)\n"
	    "local n = 0\n"
	    "for l in text:gmatch('[^\\n]+') do n = n + 1 end\n"
	    "local words = string.rep('word ', 200000)\n"
	    "local t = {\n"
	    "  trim('   hello world   '), n, select(2, words:gsub('word', 'w')),\n"
	    "  table.concat({ ('key=value'):match('^(%w+)=(%w*)$') }, ','),\n"
	    "  ('a.b.c'):find('.', 1, true), (('x,y,z'):gsub(',', ';')),\n"
	    "  ('f(a(b)c)'):find('%b()'), ('THE (quick) fox'):find('%f[%a]%a+', 5),\n"
	    "  table.concat({ ('hello'):match('()ll()') }, ','),\n"
	    "  trim(string.rep(' ', 5000) .. 'x' .. string.rep(' ', 5000)),\n"
	    "  #(words:gsub('%s+', ' ')), #(text:gsub('\\n$', '')),\n"
	    "  string.format('%q', 'a\\nb'):len(), ('x'):rep(3, ','),\n"
	    "}\n"
	    "label { r = table.concat(t, '|') }\n"
	    "local sh, path = require 'sh', require 'path'\n"
	    "label { q = sh.quote(\"it's\"), j = sh.join { 'a b', 'c' },\n"
	    "        b = path.basename('/usr/lib/x.so/'), d = path.dirname('/usr/lib/x.so'),\n"
	    "        e = path.ext('a/b.tar.gz'), p = path.join('/a/', 'b', 'c') }\n",
	    &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_string_equal(label(plan, 0, 0, "r"), "hello world|50000|200000|key,value|2|x;y;z|2|"
						    "6|3,5|x|1000000|899999|6|x,x,x");
	assert_string_equal(label(plan, 0, 1, "q"), "'it'\\''s'");
	assert_string_equal(label(plan, 0, 1, "j"), "'a b' c");
	assert_string_equal(label(plan, 0, 1, "b"), "x.so");
	assert_string_equal(label(plan, 0, 1, "d"), "/usr/lib");
	assert_string_equal(label(plan, 0, 1, "e"), ".gz");
	assert_string_equal(label(plan, 0, 1, "p"), "/a/b/c");
	json_decref(plan);

	/* the example recipes still evaluate */
	static const char *const examples[] = {"hello", "website"};
	for (size_t i = 0; i < 2; i++) {
		cleanup_free char *p =
		    xasprintf("%s/examples/%s/recipe.lua", source_dir(), examples[i]);
		cleanup_free char *m = NULL;
		if (eval_path(p, NULL, NULL, &plan, &m) < 0)
			fail_msg("%s: %s", p, m);
		json_decref(plan);
	}
}

static void test_plan_counts_against_the_memory_limit(void **state)
{
	(void)state;
	static const char over[] = "the plan and the Lua heap exceed the memory limit (512 MiB)";
	/* 30 labels of 100 MB */
	expect_failure("from 'scratch'\n"
		       "local big = string.rep('x', 100 * 1024 * 1024)\n"
		       "for i = 1, 30 do\n"
		       "  label { ['l' .. i] = big }\n"
		       "end\n",
		       4, over, 60);
	/* a large shell copied into every run */
	expect_failure("from 'scratch'\n"
		       "shell { string.rep('s', 10 * 1024 * 1024), '-c' }\n"
		       "for i = 1, 100 do\n"
		       "  run 'true'\n"
		       "end\n",
		       4, over, 60);
	/* many small steps */
	expect_failure("from 'scratch'\n"
		       "for i = 1, 10000000 do\n"
		       "  run { 'true' }\n"
		       "end\n",
		       3, over, 60);
	/* a step whose strings fail is not charged: pcall in a loop is fine */
	json_t *plan = NULL;
	cleanup_free char *msg =
	    eval_text("from 'scratch'\n"
		      "local big = string.rep('x', 100 * 1024 * 1024)\n"
		      "for i = 1, 30 do pcall(run, { big, bogus = true }) end\n"
		      "label { ok = 'yes' }\n",
		      &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_string_equal(label(plan, 0, 0, "ok"), "yes");
	json_decref(plan);
}

static void test_invalid_utf8_is_an_error(void **state)
{
	(void)state;
	static const struct {
		const char *code;
		const char *want;
	} cases[] = {
	    {"run { '/bin/sh', '-c', 'rm -rf /data/caf\\233/x' }", "run: argv entry 3"},
	    {"run 'echo caf\\233'", "run: command"},
	    {"healthcheck { test = '\\255' }", "healthcheck: option 'test'"},
	    {"healthcheck { test = { 'CMD', '\\255' } }", "healthcheck: option 'test': entry 2"},
	    {"label { ['caf\\233'] = 'x' }", "label: name"},
	    {"label { k = 'caf\\233' }", "label: value of 'k'"},
	    {"annotation { k = '\\192\\128' }", "annotation: value of 'k'"},
	    {"env { K = '\\237\\160\\128' }", "env: value of 'K'"},
	    {"workdir '/caf\\233'", "workdir: path"},
	    {"volume('/caf\\233')", "volume: path"},
	    {"cmd { 'caf\\233' }", "cmd: argv entry 1"},
	    {"entrypoint 'caf\\233'", "entrypoint: command"},
	    {"shell { '/bin/caf\\233' }", "shell: entry 1"},
	    {"run { 'x', workdir = '/caf\\233' }", "run: option 'workdir'"},
	    {"run { 'x', cache_mounts = { '/caf\\233' } }", "run: cache mount"},
	    {"run { 'x', env = { K = '\\255' } }", "run: option 'env': value of 'K'"},
	    {"run { 'x', secrets = { { id = 'a', src = '/caf\\233' } } }",
	     "run: secret: option 'src'"},
	    {"copy { from = 'localhost/img', '/caf\\233', '/' }", "copy: source 1"},
	    {"copy { from = 'localhost/img', '/a', '/caf\\233' }", "copy: destination"},
	    {"copy { from = 'localhost/img', '/a', '/', exclude = '\\255' }",
	     "copy: option 'exclude'"},
	    {"local v = arg('V', '\\255')", "arg: value of 'V'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_free char *code = xasprintf("from 'scratch'\n%s\n", cases[i].code);
		cleanup_free char *want = xasprintf("%s: invalid UTF-8", cases[i].want);
		expect_failure(code, 2, want, 30);
	}
	/* valid UTF-8 passes unchanged */
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text(
	    "from 'scratch'\nrun { 'echo', 'caf\\195\\169 \\240\\159\\144\\179' }\n", &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_json(json_object_get(step_at(plan, 0, 0), "argv"),
		    "[\"echo\",\"caf\xc3\xa9 \xf0\x9f\x90\xb3\"]");
	json_decref(plan);

	/* the plan records the recipe's file name: it must be UTF-8 too */
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *path = tu_write_under(t.path, "caf\xe9.lua", "from 'scratch'\n");
	free(msg);
	msg = NULL;
	assert_true(eval_path(path, NULL, NULL, &plan, &msg) < 0);
	cleanup_free char *want = xasprintf("%s: the recipe's file name is not valid UTF-8", path);
	assert_string_equal(msg, want);
	tmp_remove(&t);
}

static void test_cache_mounts_and_secrets_options(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text(
	    "from 'scratch'\n"
	    "run { 'x', cache_mounts = { '/a/./b/', { target = '/home/app/.cache', uid = 1000,"
	    " gid = 1000, mode = '750', sharing = 'locked' }, { target = '/c', id = 'shared' } },"
	    " secrets = { 'ca', { id = 'tok' }, { id = 'k', src = 'key', target = '/k' } } }\n",
	    &plan);
	if (msg)
		fail_msg("%s", msg);
	json_t *step = step_at(plan, 0, 0);
	assert_json(json_object_get(step, "cache_mounts"),
		    "[\"/a/b\",{\"gid\":1000,\"id\":\"/home/app/.cache\",\"mode\":\"0750\","
		    "\"sharing\":\"locked\",\"target\":\"/home/app/.cache\",\"uid\":1000},"
		    "{\"id\":\"shared\",\"sharing\":\"shared\",\"target\":\"/c\"}]");
	assert_json(json_object_get(step, "secrets"),
		    "[{\"id\":\"ca\",\"src\":\"ca\",\"target\":\"/run/secrets/ca\"},"
		    "{\"id\":\"tok\",\"target\":\"/run/secrets/tok\"},"
		    "{\"id\":\"k\",\"src\":\"key\",\"target\":\"/k\"}]");
	assert_int_equal(ib_plan_validate(plan, NULL), 0);
	/* the validator at build start refuses what the recipe API would */
	json_object_set_new(json_array_get(json_object_get(step, "cache_mounts"), 1), "sharing",
			    json_string("sometimes"));
	assert_true(ib_plan_validate(plan, NULL) < 0);
	json_decref(plan);

	expect_failure("from 'scratch'\nrun { 'x', cache_mounts = { { id = 'x' } } }\n", 2,
		       "option 'target' is required", 30);
	expect_failure("from 'scratch'\nrun { 'x', cache_mounts = { { target = 'rel' } } }\n", 2,
		       "must be an absolute path", 30);
	expect_failure(
	    "from 'scratch'\nrun { 'x', cache_mounts = { { target = '/c', uid = -1 } } }\n", 2,
	    "option 'uid' must be a number >= 0", 30);
	expect_failure(
	    "from 'scratch'\nrun { 'x', cache_mounts = { { target = '/c', mode = 493 } } }\n", 2,
	    "option 'mode' must be an octal string", 30);
	expect_failure(
	    "from 'scratch'\nrun { 'x', cache_mounts = { { target = '/c', size = 1 } } }\n", 2,
	    "size", 30);
}

static void test_dollar_forms_are_checked_at_build_time(void **state)
{
	(void)state;
	json_t *plan = NULL;
	cleanup_free char *msg = eval_text("from 'scratch'\n"
					   "expose('${PORT:-80}')\n"
					   "volume('$DATA')\n"
					   "user('${U}')\n"
					   "stopsignal('$SIG')\n",
					   &plan);
	if (msg)
		fail_msg("%s", msg);
	assert_json(json_object_get(step_at(plan, 0, 0), "ports"), "[\"${PORT:-80}\"]");
	assert_json(json_object_get(step_at(plan, 0, 1), "paths"), "[\"$DATA\"]");
	assert_int_equal(ib_plan_validate(plan, NULL), 0);
	json_decref(plan);
	/* without '$' the recipe still checks them */
	expect_failure("from 'scratch'\nexpose('http')\n", 2, "invalid port", 30);
	expect_failure("from 'scratch'\nuser('a:b:c')\n", 2, "user", 30);
}

static void test_require_refuses_symlinks_leaving_the_recipe_dir(void **state)
{
	(void)state;
	tmpdir t;
	tmp_make(&t);
	cleanup_free char *outside =
	    tu_write_under(t.path, "outside/secret.lua", "return 'secret'\n");
	cleanup_free char *inside = tu_write_under(t.path, "r/lib/real.lua", "return 'inside'\n");
	cleanup_free char *abs_link = ib_path_join(t.path, "r/lib/etc.lua");
	cleanup_free char *rel_link = ib_path_join(t.path, "r/lib/up.lua");
	cleanup_free char *dir_link = ib_path_join(t.path, "r/far");
	cleanup_free char *ok_link = ib_path_join(t.path, "r/lib/alias.lua");
	assert_int_equal(symlink("/etc/os-release", abs_link), 0);
	assert_int_equal(symlink("../../outside/secret.lua", rel_link), 0);
	assert_int_equal(symlink("../outside", dir_link), 0);
	assert_int_equal(symlink("real.lua", ok_link), 0);
	cleanup_free char *path =
	    tu_write_under(t.path, "r/recipe.lua",
			   "from 'scratch'\n"
			   "label { alias = require 'lib.alias',\n"
			   "        etc = tostring((pcall(require, 'lib.etc'))),\n"
			   "        up = tostring((pcall(require, 'lib.up'))),\n"
			   "        far = tostring((pcall(require, 'far.secret'))) }\n"
			   "require 'lib.etc'\n");
	json_t *plan = NULL;
	cleanup_free char *msg = NULL;
	assert_true(eval_path(path, NULL, NULL, &plan, &msg) < 0);
	cleanup_free char *expect =
	    xasprintf("%s/r/recipe.lua:6: require: module 'lib.etc': %s/r/lib/etc.lua "
		      "leads outside the recipe's directory",
		      t.path, t.path);
	if (strncmp(msg, expect, strlen(expect)))
		fail_msg("got '%s', want '%s'", msg, expect);

	/* without the last line: the caught errors, the alias works */
	cleanup_free char *path2 =
	    tu_write_under(t.path, "r/recipe2.lua",
			   "from 'scratch'\n"
			   "label { alias = require 'lib.alias',\n"
			   "        etc = tostring((pcall(require, 'lib.etc'))),\n"
			   "        up = tostring((pcall(require, 'lib.up'))),\n"
			   "        far = tostring((pcall(require, 'far.secret'))) }\n");
	free(msg);
	msg = NULL;
	if (eval_path(path2, NULL, NULL, &plan, &msg) < 0)
		fail_msg("%s", msg);
	assert_string_equal(label(plan, 0, 0, "alias"), "inside");
	assert_string_equal(label(plan, 0, 0, "etc"), "false");
	assert_string_equal(label(plan, 0, 0, "up"), "false");
	assert_string_equal(label(plan, 0, 0, "far"), "false");
	json_decref(plan);
	tmp_remove(&t);
}

/* ---- broken recipes ---- */

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_broken_recipes_report_file_and_line(void **state)
{
	(void)state;
	cleanup_free char *dir = fixture("broken");
	cleanup_dir DIR *d = opendir(dir);
	assert_non_null(d);
	cleanup_strv char **names = xcalloc(1, sizeof(char *));
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n > 4 && !strcmp(de->d_name + n - 4, ".lua"))
			ib_strv_push(&names, de->d_name);
	}
	size_t count = ib_strv_len(names);
	qsort(names, count, sizeof(char *), cmp_names);
	assert_true(count >= 15);

	int failures = 0;
	for (size_t i = 0; i < count; i++) {
		cleanup_free char *path = ib_path_join(dir, names[i]);
		cleanup_free char *text = NULL;
		ib_error *err = NULL;
		assert_int_equal(ib_read_file(path, 1 << 20, &text, NULL, &err), 0);
		const char *tag = "-- expect: ";
		if (strncmp(text, tag, strlen(tag)))
			fail_msg("%s: first line must be '-- expect: [FILE:]LINE: text'", names[i]);
		char *line = text + strlen(tag);
		*strchrnul(line, '\n') = 0;
		/* "LINE: text" (the recipe) or "FILE:LINE: text" (relative to it) */
		cleanup_free char *where = NULL;
		const char *rest;
		char *colon = strchr(line, ':');
		assert_non_null(colon);
		if (line[0] >= '0' && line[0] <= '9') {
			where = xasprintf("%s:%.*s:", path, (int)(colon - line), line);
			rest = colon + 1;
		} else {
			char *colon2 = strchr(colon + 1, ':');
			assert_non_null(colon2);
			where = xasprintf("%s/%.*s:", dir, (int)(colon2 - line), line);
			rest = colon2 + 1;
		}
		while (*rest == ' ')
			rest++;

		json_t *plan = NULL;
		cleanup_free char *msg = NULL;
		int rc = eval_path(path, NULL, NULL, &plan, &msg);
		if (rc >= 0) {
			print_error("%s: evaluated without error\n", names[i]);
			json_decref(plan);
			failures++;
			continue;
		}
		if (strncmp(msg, where, strlen(where)) || !strstr(msg + strlen(where), rest)) {
			print_error("%s:\n  got  %s\n  want %s ... %s\n", names[i], msg, where,
				    rest);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_global_form_stages),
	    cmocka_unit_test(test_global_form_run),
	    cmocka_unit_test(test_global_form_copy),
	    cmocka_unit_test(test_global_form_config),
	    cmocka_unit_test(test_workdir_resolution),
	    cmocka_unit_test(test_method_form_appends_to_receiver),
	    cmocka_unit_test(test_sorted_keys_give_identical_plans),
	    cmocka_unit_test(test_plan_is_repeatable_and_has_no_absolute_paths),
	    cmocka_unit_test(test_unknown_options_reported_in_sorted_order),
	    cmocka_unit_test(test_args_defaults),
	    cmocka_unit_test(test_build_args_override_defaults),
	    cmocka_unit_test(test_build_arg_bad_name_is_rejected),
	    cmocka_unit_test(test_arg_conflicting_defaults_fail),
	    cmocka_unit_test(test_require_module_next_to_recipe),
	    cmocka_unit_test(test_require_embedded_module),
	    cmocka_unit_test(test_require_local_module_shadows_embedded),
	    cmocka_unit_test(test_require_cycle_is_an_error),
	    cmocka_unit_test(test_sandbox_hides_unsafe_functions),
	    cmocka_unit_test(test_sandbox_memory_is_capped),
	    cmocka_unit_test(test_pcall_caught_error_leaves_no_partial_step),
	    cmocka_unit_test(test_hashbang_line_is_skipped),
	    cmocka_unit_test(test_context_read_glob_exists),
	    cmocka_unit_test(test_context_symlinks_stay_inside),
	    cmocka_unit_test(test_long_recipe_path_is_not_truncated),
	    cmocka_unit_test(test_instruction_cap_cannot_be_caught),
	    cmocka_unit_test(test_pcall_and_xpcall_keep_their_results),
	    cmocka_unit_test(test_pattern_matching_is_bounded),
	    cmocka_unit_test(test_plan_counts_against_the_memory_limit),
	    cmocka_unit_test(test_invalid_utf8_is_an_error),
	    cmocka_unit_test(test_cache_mounts_and_secrets_options),
	    cmocka_unit_test(test_dollar_forms_are_checked_at_build_time),
	    cmocka_unit_test(test_require_refuses_symlinks_leaving_the_recipe_dir),
	    cmocka_unit_test(test_broken_recipes_report_file_and_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
