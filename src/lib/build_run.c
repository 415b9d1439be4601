/* The run step: its cache key, secrets and cache mounts, the sandbox,
 * and the upper dir committed as a layer. */
#include "builder_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "progress.h"
#include "sandbox.h"
#include "util.h"

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

void build_clear_last(builder *b)
{
	for (size_t i = 0; i < b->n_last; i++)
		free(b->last[i]);
	b->n_last = 0;
}

bool build_path_within(const char *root_real, const char *p)
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
	if (!build_path_within(b->context, real) || !strcmp(real, b->context))
		return ib_error_setc(err, IB_EUNSAFE,
				     "run: secret \"%s\": %s is outside the build context; pass it "
				     "with --secret id=%s,src=PATH",
				     id, src, id);
	*out = xstrdup(real);
	return 0;
}

static char **effective_env(stage_state *st, json_t *step)
{
	json_t *env = json_deep_copy(build_cfg_env(st));
	const char *k;
	json_t *v;
	json_object_foreach (json_object_get(step, "env"), k, v) {
		build_env_set(env, NULL, k, json_string_value(v));
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
	if (build_ensure_stage_unpacked(b, st, err) < 0)
		return -1;
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "run");
	cleanup_free char *upper = ib_path_join(tmp, "upper");
	cleanup_free char *work = ib_path_join(tmp, "work");
	if (ib_mkdir_p(upper, 0755, err) < 0 || ib_mkdir_p(work, 0755, err) < 0)
		return -1;
	char **lowers = build_lower_dirs(b, st);
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
		const char *target = json_string_value(v);
		if (rc == 0)
			rc = ib_cache_mount_dir(b->cache, target, &mount_src[m], err);
		mounts[m] = (ib_sandbox_mount){.source = mount_src[m], .target = target};
		m++;
	}
	json_array_foreach (sec, i, v) {
		if (rc == 0)
			rc = secret_source(b, jstr(v, "id"), jstr(v, "src"), &mount_src[m], err);
		mounts[m] = (ib_sandbox_mount){.source = mount_src[m] ? mount_src[m] : "",
					       .target = jstr(v, "target"),
					       .readonly = true,
					       .is_file = true};
		m++;
	}

	const char *user = jstr(step, "user");
	if (!user || !*user)
		user = jstr(build_cfg(st), "User");
	const char *wd = jstr(step, "workdir");
	cleanup_free char *wdabs = wd ? build_image_path(st, wd) : NULL;
	if (!wdabs)
		wdabs =
		    xstrdup(jstr(build_cfg(st), "WorkingDir") && *jstr(build_cfg(st), "WorkingDir")
				? jstr(build_cfg(st), "WorkingDir")
				: "/");
	const char *net = jstr(step, "network");
	if (!net || !strcmp(net, "default"))
		net = b->o->network ? b->o->network : "default";

	ib_sandbox_options so = IB_SANDBOX_OPTIONS_INIT;
	so.lower_dirs = lowers;
	so.upper_dir = upper;
	so.work_dir = work;
	so.argv = argv;
	so.env = env;
	so.user = user && *user ? user : NULL;
	so.workdir = wdabs;
	so.network = net;
	/* at most IB_PLAN_MAX_TIMEOUT (ib_plan_validate): the unsigned holds it */
	so.timeout_sec = (unsigned)json_integer_value(json_object_get(step, "timeout"));
	if (!so.timeout_sec)
		so.timeout_sec = b->o->step_timeout;
	so.pids_limit = b->o->pids_limit;
	so.memory_limit = b->o->memory_limit;
	so.seccomp_unconfined = b->o->seccomp_unconfined;
	so.isolation = ib_sandbox_resolve_isolation(b->o->isolation, work);
	static bool said;
	if (b->o->debug && !said)
		fprintf(stderr, "imgbuild: debug: run steps use %s isolation\n",
			ib_sandbox_isolation_name(so.isolation));
	said = true;
	so.mounts = mounts;
	so.n_mounts = m;
	so.output = output_cb;
	so.payload = b;
	int status = 0;
	build_clear_last(b);
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
		cleanup_free char *cmd = build_argv_string(json_object_get(step, "argv"));
		if (so.timeout_sec && status == 137 && b->n_last &&
		    !strncmp(b->last[b->n_last - 1], "timed out", 9))
			rc = ib_error_setc(err, IB_ERROR, "run: %s: %s", b->last[b->n_last - 1],
					   cmd);
		else
			rc = ib_error_setc(err, IB_ERROR, "run: command exited with status %d: %s",
					   status, cmd);
		goto out;
	}
	ib_layer_options lo = build_layer_options(b);
	ib_layer_result res = {0};
	b->layer_total = 0;
	rc = ib_layer_from_upper(b->store, upper, NULL, &lo, &res, err);
	if (rc < 0)
		goto out;
	/* The upper dir is this layer in overlay format: keep it as the
	 * unpacked copy so the next run step needs no extraction. */
	rc = ib_store_layer_install(b->store, upper, res.diff_id, err);
	if (rc == 0)
		rc = build_commit_layer(b, st, key, &res, created_by, err);
out:;
	ib_error *e2 = NULL;
	ib_rm_rf(tmp, &e2);
	ib_error_free(&e2);
	build_clear_last(b);
	if (rc < 0)
		return build_recipe_error(b, step, err);
	return 0;
}

/* A run step: its key (the step, plus the env, user, workdir and shell it
 * runs with), then the cache or the sandbox. */
int build_run_step(builder *b, stage_state *st, json_t *step, size_t idx, const char *parent,
		   json_t *extra, const char *label, char key_out[IB_DIGEST_BUFLEN], bool *cached,
		   ib_error **err)
{
	cleanup_strv char **env = effective_env(st, step);
	json_t *envj = json_array();
	for (size_t k = 0; env[k]; k++)
		json_array_append_new(envj, json_string(env[k]));
	json_object_set_new(extra, "env", envj);
	json_object_set(extra, "user", json_object_get(build_cfg(st), "User"));
	json_object_set(extra, "workdir", json_object_get(build_cfg(st), "WorkingDir"));
	json_object_set(extra, "shell", st->shell);
	build_step_key(key_out, parent, step, extra);
	cleanup_free char *cmdline = build_argv_string(json_object_get(step, "argv"));
	cleanup_free char *created_by = xasprintf("RUN %s", cmdline);
	bool can_cache = !b->o->no_cache && !json_is_false(json_object_get(step, "cache"));
	json_t *inputs = NULL;
	int rc = 0;
	*cached = false;
	if (can_cache && build_use_cached(b, st, key_out, created_by)) {
		*cached = true;
		/* a hit keeps the existing record; write one only where none is */
		cleanup_free char *id = build_explain_id(b, st, idx);
		if (!ib_cache_explain_exists(b->cache, id))
			inputs = json_pack("{s:s, s:O, s:O}", "parent", parent, "step", step,
					   "extra", extra);
	} else {
		inputs =
		    json_pack("{s:s, s:O, s:O}", "parent", parent, "step", step, "extra", extra);
		if (b->o->explain)
			build_explain_miss(b, st, idx, inputs);
		ib_progress_step_start(b->o->progress, b->step_no, label);
		rc = exec_run(b, st, step, key_out, created_by, err);
	}
	if (rc == 0 && inputs)
		build_explain_record(b, st, idx, inputs);
	json_decref(inputs);
	return rc;
}
