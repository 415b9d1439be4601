/* The run step: its cache key, secrets and cache mounts, the sandbox,
 * and the upper dir committed as a layer. */
#include "builder_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "cache.h"
#include "path.h"
#include "plan.h"
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

/* An absolute host path as a path relative to the build context: its
 * directory is made canonical (the host's symlinks, such as a symlinked
 * /tmp, are the user's business), then must be the context or below it.
 * NULL when it is outside. */
static char *context_rel(const char *context, const char *src)
{
	const char *slash = strrchr(src, '/');
	cleanup_free char *dir = slash == src ? xstrdup("/") : xstrndup(src, (size_t)(slash - src));
	char real[PATH_MAX];
	if (!realpath(dir, real))
		return NULL;
	size_t n = strlen(context);
	const char *below;
	if (!strcmp(context, "/"))
		below = real + 1;
	else if (!strncmp(real, context, n) && (real[n] == '\0' || real[n] == '/'))
		below = real[n] ? real + n + 1 : real + n;
	else
		return NULL;
	return *below ? xasprintf("%s/%s", below, slash + 1) : xstrdup(slash + 1);
}

/* Where a secret's bytes come from: --secret on the command line (the
 * person running the build decides: "ID=PATH" for a file, "env:ID=NAME"
 * for an environment variable of this process, whose value is written to
 * a private file under tmp, removed with the step), else the recipe's src,
 * which must be a file inside the build context, reached by the context's
 * rules (no absolute symlink, no ".." out of it): a recipe alone never
 * reads arbitrary host files into a build. */
static int secret_source(builder *b, const char *tmp, const char *id, const char *src, char **out,
			 ib_error **err)
{
	size_t idlen = strlen(id);
	for (size_t i = 0; b->o->secrets && b->o->secrets[i]; i++) {
		const char *s = b->o->secrets[i];
		bool env = !strncmp(s, "env:", 4);
		if (env)
			s += 4;
		if (strncmp(s, id, idlen) || s[idlen] != '=')
			continue;
		if (!env) {
			*out = xstrdup(s + idlen + 1);
			return 0;
		}
		const char *val = getenv(s + idlen + 1);
		if (!val)
			return ib_error_setc(
			    err, IB_ENOTFOUND,
			    "run: secret \"%s\": environment variable %s is not set", id,
			    s + idlen + 1);
		cleanup_free char *dir = ib_path_join(tmp, "secrets");
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return ib_error_set(err, errno, "mkdir %s", dir);
		cleanup_free char *path = ib_path_join(dir, id);
		if (ib_write_file_atomic(path, val, strlen(val), 0444, err) < 0)
			return -1;
		*out = xstrdup(path);
		return 0;
	}
	if (!src)
		return ib_error_setc(
		    err, IB_ENOTFOUND,
		    "run: secret \"%s\" has no source: pass --secret id=%s,src=PATH "
		    "or --secret id=%s,env=VARIABLE",
		    id, id, id);
	cleanup_free char *rel = src[0] == '/' ? context_rel(b->context, src) : xstrdup(src);
	cleanup_free char *res = NULL;
	ib_error *e = NULL;
	int r = IB_EUNSAFE;
	if (rel) {
		cleanup_close int fd = open(b->context, O_PATH | O_DIRECTORY | O_CLOEXEC);
		ib_path_dir dir = {fd};
		ib_path_fs fs = ib_path_fs_dir;
		fs.name = "the build context";
		r = fd < 0 ? ib_error_set(&e, errno, "open the build context")
			   : ib_path_resolve(&fs, &dir, rel, IB_PATH_FOLLOW_LAST, &res, NULL, &e);
		if (r == 0 && !*res)
			r = IB_EUNSAFE; /* the context itself */
	}
	if (r == IB_EUNSAFE) {
		ib_error_free(&e);
		return ib_error_setc(err, IB_EUNSAFE,
				     "run: secret \"%s\": %s is outside the build context; pass it "
				     "with --secret id=%s,src=PATH",
				     id, src, id);
	}
	if (r < 0) {
		r = ib_error_setc(err, r, "run: secret \"%s\": %s", id, ib_error_msg(e));
		ib_error_free(&e);
		return r;
	}
	*out = ib_path_join(b->context, res);
	return 0;
}

/* The host directory of cache mount number i (a path, or {target, id,
 * uid, gid, mode, sharing}): ROOT/cache/mounts/X by id.  "locked" holds
 * the id's lock for the step (*lock_fd, else -1); "private" takes it
 * without waiting, and when another step holds it uses a fresh empty
 * directory under tmp, dropped with the step. */
static int cache_mount_source(builder *b, const char *tmp, json_t *v, size_t i, char **out,
			      int *lock_fd, ib_error **err)
{
	*lock_fd = -1;
	if (ib_cache_is_readonly(b->cache)) {
		/* build --check: fresh empty caches, the kept ones untouched */
		cleanup_free char *rel = xasprintf("cache-scratch-%zu", i);
		*out = ib_path_join(tmp, rel);
		if (ib_mkdir_p(*out, 0755, err) < 0)
			return -1;
	} else if (json_is_string(v)) {
		return ib_cache_mount_dir(b->cache, json_string_value(v), out, err);
	}
	if (json_is_string(v))
		return 0;
	const char *id = jstr(v, "id"), *sharing = jstr(v, "sharing");
	int r = 0;
	if (*out) {
		/* a scratch directory above: no lock, no shared directory */
	} else if (!strcmp(sharing, "locked"))
		r = ib_cache_mount_lock(b->cache, id, false, lock_fd, err);
	else if (!strcmp(sharing, "private"))
		r = ib_cache_mount_lock(b->cache, id, true, lock_fd, err);
	if (r < 0)
		return -1;
	if (*out) {
		/* uid, gid and mode below still apply */
	} else if (r == 1) {
		cleanup_free char *rel = xasprintf("cache-private-%zu", i);
		*out = ib_path_join(tmp, rel);
		r = ib_mkdir_p(*out, 0755, err);
	} else {
		r = ib_cache_mount_dir(b->cache, id, out, err);
	}
	if (r < 0)
		return -1;
	/* Docker: the mount's root belongs to uid:gid (default 0:0) with mode
	 * (default 0755); applied on every use so a changed recipe takes effect */
	json_t *uid = json_object_get(v, "uid"), *gid = json_object_get(v, "gid");
	if ((uid || gid) &&
	    chown(*out, (uid_t)json_integer_value(uid), (gid_t)json_integer_value(gid)) < 0)
		return ib_error_set(err, errno, "run: cache mount %s: chown %s", jstr(v, "target"),
				    *out);
	int32_t mode = jstr(v, "mode") ? ib_plan_mode_parse(jstr(v, "mode")) : -1;
	if (mode >= 0 && chmod(*out, (mode_t)mode) < 0)
		return ib_error_set(err, errno, "run: cache mount %s: chmod %s", jstr(v, "target"),
				    *out);
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

/* A run's throwaway dirs: ROOT/tmp/run-X holding the overlay upper and
 * work dirs.  The caller removes *tmp (also after a failure here). */
static int run_scratch(ib_store *s, char **tmp, char **upper, char **work, ib_error **err)
{
	*tmp = ib_store_tmp_path(s, "run");
	*upper = ib_path_join(*tmp, "upper");
	*work = ib_path_join(*tmp, "work");
	if (ib_mkdir_p(*upper, 0755, err) < 0 || ib_mkdir_p(*work, 0755, err) < 0)
		return -1;
	return 0;
}

static int exec_run(builder *b, stage_state *st, json_t *step, const char *key,
		    const char *created_by, ib_error **err)
{
	if (build_ensure_stage_unpacked(b, st, err) < 0)
		return -1;
	cleanup_free char *tmp = NULL, *upper = NULL, *work = NULL;
	if (run_scratch(b->store, &tmp, &upper, &work, err) < 0)
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
	build_shared_mounts_import(b, step);
	int *locks = xcalloc(json_array_size(cm) + 1, sizeof(int));
	json_array_foreach (cm, i, v) {
		const char *target = json_is_string(v) ? json_string_value(v) : jstr(v, "target");
		locks[i] = -1;
		if (rc == 0)
			rc = cache_mount_source(b, tmp, v, i, &mount_src[m], &locks[i], err);
		mounts[m] = (ib_sandbox_mount){.source = mount_src[m] ? mount_src[m] : "",
					       .target = target};
		m++;
	}
	json_array_foreach (sec, i, v) {
		if (rc == 0)
			rc = secret_source(b, tmp, jstr(v, "id"), jstr(v, "src"), &mount_src[m],
					   err);
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
	so.keep_sync = b->o->sync_steps;
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
	ib_progress_debug(b->o->progress,
			  "sandbox: %zu lower dirs, upper %s, user %s, workdir %s, network %s, "
			  "%zu mounts, timeout %us, pids %ld, memory %llu, seccomp %s",
			  ib_strv_len(lowers), upper, so.user ? so.user : "root", so.workdir, net,
			  m, so.timeout_sec, so.pids_limit, so.memory_limit,
			  so.seccomp_unconfined ? "off" : "on");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (rc == 0)
		rc = ib_sandbox_run(&so, &status, err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ib_progress_debug(
	    b->o->progress, "sandbox: %s %d after %.3fs", rc < 0 ? "failed, status" : "exit status",
	    status, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	for (size_t k = 0; k < json_array_size(cm); k++)
		if (locks[k] >= 0)
			close(locks[k]);
	free(locks);
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
	/* the tar now, its compression in the background (when on) */
	int tar_fd = build_layer_tar_fd(b);
	lo.tar_only = tar_fd >= 0;
	lo.tar_fd = tar_fd;
	rc = ib_layer_from_upper(b->store, upper, NULL, &lo, &res, err);
	/* The upper dir is this layer in overlay format: keep it as the
	 * unpacked copy so the next run step needs no extraction. */
	if (rc == 0)
		rc = ib_store_layer_install(b->store, upper, res.diff_id, err);
	if (rc == 0) {
		rc = build_commit_layer(b, st, key, &res, tar_fd, created_by, err);
		tar_fd = -1;
	}
	if (tar_fd >= 0)
		close(tar_fd);
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
	bool can_cache = build_may_use_cache(b, step, key_out);
	build_key_computed(b, st, idx, key_out, can_cache);
	if (b->keys_only)
		return 0;
	cleanup_free char *cmdline = build_argv_string(json_object_get(step, "argv"));
	cleanup_free char *created_by = xasprintf("RUN %s", cmdline);
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

/* ---- imgbuild run ---- */

static void run_output(const char *line, size_t len, void *payload)
{
	(void)payload;
	fwrite(line, 1, len, stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

/* env with "K=V" set: an entry "K=..." replaced, else appended. */
static void env_put(json_t *env, const char *kv)
{
	size_t klen = strcspn(kv, "=");
	size_t i;
	json_t *v;
	json_array_foreach (env, i, v) {
		const char *e = json_string_value(v);
		if (e && !strncmp(e, kv, klen) && (e[klen] == '=' || e[klen] == '\0')) {
			json_array_set_new(env, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
}

int ib_image_run(ib_store *s, const char *ref, const ib_image_run_options *o, int *exit_status,
		 ib_error **err)
{
	ib_image *img = NULL;
	int rc = ib_store_image_load(s, ref, &img, err);
	if (rc < 0)
		return rc;
	json_t *cfg = json_object_get(img->config, "config");
	json_t *diff_ids = json_object_get(json_object_get(img->config, "rootfs"), "diff_ids");
	size_t n = img->manifest->n_layers;
	if (json_array_size(diff_ids) != n) {
		ib_image_free(img);
		return ib_error_setc(err, IB_EINVALID, "%s: %zu layers but %zu diff_ids", ref, n,
				     json_array_size(diff_ids));
	}
	const char **ids = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		ids[i] = json_string_value(json_array_get(diff_ids, i));
		if (!ids[i] && rc == 0)
			rc = ib_error_setc(err, IB_EINVALID, "%s: diff_id %zu is not a string", ref, i);
	}
	/* unpacked once each (an unpacked layer is not unpacked again) */
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = build_unpack_layer(s, img->manifest->layers[i].digest, ids[i], err);
	char **lowers = rc == 0 ? build_lower_dirs_of(s, ids, n) : xcalloc(1, sizeof(char *));
	free(ids);
	/* argv: the entrypoint, then the given command or the config's Cmd */
	json_t *args = json_array();
	json_array_extend(args, json_object_get(cfg, "Entrypoint"));
	if (o->argv && o->argv[0])
		for (size_t i = 0; o->argv[i]; i++)
			json_array_append_new(args, json_string(o->argv[i]));
	else
		json_array_extend(args, json_object_get(cfg, "Cmd"));
	json_t *envj = json_deep_copy(json_object_get(cfg, "Env"));
	if (!json_is_array(envj)) {
		json_decref(envj);
		envj = json_array();
	}
	for (size_t i = 0; o->env && o->env[i]; i++)
		env_put(envj, o->env[i]);
	cleanup_strv char **argv = json_strv(args);
	cleanup_strv char **env = json_strv(envj);
	json_decref(args);
	json_decref(envj);
	if (rc == 0 && !argv[0])
		rc = ib_error_setc(err, IB_EUSAGE, "%s has no entrypoint or cmd: give a command",
				   ref);
	cleanup_free char *tmp = NULL, *upper = NULL, *work = NULL;
	if (rc == 0)
		rc = run_scratch(s, &tmp, &upper, &work, err);
	if (rc == 0) {
		const char *user = o->user ? o->user : jstr(cfg, "User");
		const char *wd = o->workdir ? o->workdir : jstr(cfg, "WorkingDir");
		ib_sandbox_options so = IB_SANDBOX_OPTIONS_INIT;
		so.lower_dirs = lowers;
		so.upper_dir = upper;
		so.work_dir = work;
		so.argv = argv;
		so.env = env;
		so.user = user && *user ? user : NULL;
		so.workdir = wd && *wd ? wd : "/";
		so.network = o->network ? o->network : "default";
		so.output = run_output;
		rc = ib_sandbox_run(&so, exit_status, err);
	}
	if (tmp) {
		ib_error *e2 = NULL;
		ib_rm_rf(tmp, &e2);
		ib_error_free(&e2);
	}
	ib_strv_free(lowers);
	ib_image_free(img);
	if (rc < 0)
		return ib_error_wrap(err, "run %s", ref);
	return 0;
}
