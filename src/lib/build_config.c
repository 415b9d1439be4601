/* Config-only steps (env, workdir, user, entrypoint, cmd, expose, volume,
 * label, annotation, stopsignal, healthcheck, shell): one handler per kind
 * changes the image config and gives its history line. */
#include "builder_internal.h"

#include <stdio.h>
#include <string.h>

#include "path.h"
#include "expand.h"
#include "plan.h"
#include "util.h"

json_t *build_cfg(stage_state *st)
{
	json_t *c = json_object_get(st->config, "config");
	if (!json_is_object(c)) {
		c = json_object();
		json_object_set_new(st->config, "config", c);
	}
	return c;
}

/* Set K=V in an Env array.  index, when given, maps each name in env_arr
 * to its position (built on first use), so a stage with many env steps
 * stays linear instead of scanning the whole array for every name. */
void build_env_set(json_t *env_arr, json_t *index, const char *k, const char *v)
{
	size_t kl = strlen(k), i;
	json_t *e;
	cleanup_free char *kv = xasprintf("%s=%s", k, v);
	if (index) {
		if (json_object_size(index) == 0) {
			json_array_foreach (env_arr, i, e) {
				const char *s = json_string_value(e);
				const char *eq = s ? strchr(s, '=') : NULL;
				/* the first of duplicate names wins, as in the scan */
				if (eq && !json_object_getn(index, s, (size_t)(eq - s)))
					json_object_setn_new(index, s, (size_t)(eq - s),
							     json_integer((json_int_t)i));
			}
		}
		json_t *pos = json_object_get(index, k);
		if (pos) {
			json_array_set_new(env_arr, (size_t)json_integer_value(pos),
					   json_string(kv));
			return;
		}
		json_object_set_new(index, k, json_integer((json_int_t)json_array_size(env_arr)));
		json_array_append_new(env_arr, json_string(kv));
		return;
	}
	json_array_foreach (env_arr, i, e) {
		const char *s = json_string_value(e);
		if (s && !strncmp(s, k, kl) && s[kl] == '=') {
			json_array_set_new(env_arr, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env_arr, json_string(kv));
}

json_t *build_cfg_env(stage_state *st)
{
	json_t *c = build_cfg(st);
	json_t *env = json_object_get(c, "Env");
	if (!json_is_array(env)) {
		env = json_array();
		json_object_set_new(c, "Env", env);
	}
	return env;
}

void build_add_history(builder *b, stage_state *st, const char *created_by, const char *diff_id)
{
	ib_config_add_history(st->config, diff_id, b->created, created_by);
}

char *build_argv_string(json_t *argv)
{
	ib_buf buf = IB_BUF_INIT;
	size_t i;
	json_t *a;
	json_array_foreach (argv, i, a) {
		ib_buf_appendf(&buf, "%s%s", i ? " " : "", json_string_value(a));
	}
	return ib_buf_steal(&buf, NULL);
}

/* Absolute path in the image: relative paths resolve against the workdir;
 * a directory-meaning trailing "/" is kept (a COPY destination). */
char *build_image_path(stage_state *st, const char *p)
{
	const char *wd = jstr(build_cfg(st), "WorkingDir");
	return ib_path_join_clean(wd && *wd ? wd : "/", p, IB_PATH_ABSOLUTE | IB_PATH_KEEP_SLASH);
}

/* Docker's default PATH (oci.h) goes in the config of every image whose
 * base does not set one, as BuildKit does. */
void build_default_path(stage_state *st)
{
	json_t *env = json_object_get(build_cfg(st), "Env"), *e;
	size_t i;
	json_array_foreach (env, i, e) {
		const char *s = json_string_value(e);
		if (s && !strncmp(s, "PATH=", 5))
			return;
	}
	build_env_set(build_cfg_env(st), st->env_index, "PATH", IB_DEFAULT_PATH);
}

/* Expand $VAR references in s (Dockerfile rules) against the stage's Env as
 * it is now: base image, earlier env steps.  NULL with *err set. */
char *build_expand(stage_state *st, const char *s, ib_error **err)
{
	return ib_expand_env(s, json_object_get(build_cfg(st), "Env"), err);
}

/* Config-only steps: one handler per kind.  Each changes the image config
 * (or the stage) and returns the history line, or NULL for none; on error
 * it sets *err (the return value is then ignored). */
typedef char *(*config_handler)(stage_state *st, json_t *step, json_t *c, ib_error **err);

static char *config_env(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)c;
	json_t *v;
	const char *k;
	/* Docker: every value of one step sees the environment before it */
	json_t *vals = json_object();
	json_object_foreach (json_object_get(step, "env"), k, v) {
		char *x = build_expand(st, json_string_value(v), err);
		if (!x) {
			json_decref(vals);
			ib_error_wrap(err, "env %s", k);
			return NULL;
		}
		json_object_set_new(vals, k, json_string(x));
		free(x);
	}
	json_t *arr = build_cfg_env(st);
	ib_buf hb = IB_BUF_INIT;
	ib_buf_append(&hb, "ENV", 3);
	json_object_foreach (vals, k, v) {
		build_env_set(arr, st->env_index, k, json_string_value(v));
		ib_buf_appendf(&hb, " %s=%s", k, json_string_value(v));
	}
	json_decref(vals);
	return ib_buf_steal(&hb, NULL);
}

static char *config_workdir(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	cleanup_free char *x = build_expand(st, jstr(step, "path"), err);
	if (x && !*x)
		ib_error_setc(err, IB_EINVALID, "the path expands to nothing");
	if (!x || !*x) {
		ib_error_wrap(err, "workdir %s", jstr(step, "path"));
		return NULL;
	}
	cleanup_free char *p = build_image_path(st, x);
	json_object_set_new(c, "WorkingDir", json_string(p));
	return xasprintf("WORKDIR %s", p);
}

static char *config_user(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	cleanup_free char *u = build_expand(st, jstr(step, "user"), err);
	if (u && !ib_plan_valid_owner(u))
		ib_error_setc(err, IB_EINVALID,
			      "expected \"user[:group]\" or \"uid[:gid]\", got '%s'", u);
	if (!u || !ib_plan_valid_owner(u)) {
		ib_error_wrap(err, "user %s", jstr(step, "user"));
		return NULL;
	}
	json_object_set_new(c, "User", json_string(u));
	return xasprintf("USER %s", u);
}

/* An exec form as docker's history shows it: ["/bin/sh" "-c" "x"]. */
static char *exec_form(json_t *argv)
{
	char *out = xstrdup("[");
	size_t i;
	json_t *v;
	json_array_foreach (argv, i, v) {
		char *q = json_dumps(v, JSON_ENCODE_ANY);
		char *t = xasprintf("%s%s%s", out, i ? " " : "", q ? q : "\"\"");
		free(q);
		free(out);
		out = t;
	}
	char *t = xasprintf("%s]", out);
	free(out);
	return t;
}

static char *config_entrypoint(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)err;
	json_t *argv = json_object_get(step, "argv");
	json_object_set(c, "Entrypoint", argv);
	/* Docker: a new entrypoint drops a CMD inherited from the base. */
	if (!st->cmd_set)
		json_object_del(c, "Cmd");
	cleanup_free char *s = exec_form(argv);
	return xasprintf("ENTRYPOINT %s", s);
}

static char *config_cmd(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)err;
	json_t *argv = json_object_get(step, "argv");
	json_object_set(c, "Cmd", argv);
	st->cmd_set = true;
	cleanup_free char *s = exec_form(argv);
	return xasprintf("CMD %s", s);
}

/* expose and volume: names into a set-like object of the config */
static char *add_to_set(stage_state *st, json_t *c, const char *field, json_t *list,
			const char *what, bool ports, ib_error **err)
{
	json_t *set = json_object_get(c, field), *v;
	if (!json_is_object(set)) {
		set = json_object();
		json_object_set_new(c, field, set);
	}
	size_t i;
	ib_buf hb = IB_BUF_INIT;
	ib_buf_appendf(&hb, "%s", what);
	json_array_foreach (list, i, v) {
		cleanup_free char *s = build_expand(st, json_string_value(v), err);
		if (!s) {
			ib_buf_free(&hb);
			ib_error_wrap(err, "%s %s", ports ? "expose" : "volume",
				      json_string_value(v));
			return NULL;
		}
		if (ports) {
			unsigned lo, hi;
			const char *proto;
			if (!ib_plan_port_parse(s, &lo, &hi, &proto)) {
				ib_buf_free(&hb);
				ib_error_setc(err, IB_EINVALID,
					      "expose: invalid port '%s' (from '%s')", s,
					      json_string_value(v));
				return NULL;
			}
			/* OCI ExposedPorts keys are single ports: ranges are expanded */
			for (unsigned port = lo; port <= hi; port++) {
				char key[32];
				snprintf(key, sizeof(key), "%u/%s", port, proto);
				json_object_set_new(set, key, json_object());
				ib_buf_appendf(&hb, " %s", key);
			}
			continue;
		}
		if (s[0] != '/') {
			ib_buf_free(&hb);
			ib_error_setc(err, IB_EINVALID,
				      "volume: path '%s' must be absolute (from '%s')", s,
				      json_string_value(v));
			return NULL;
		}
		cleanup_free char *p = NULL;
		if (ib_path_clean(s, IB_PATH_ABSOLUTE | IB_PATH_KEEP_SLASH, &p, err) < 0) {
			ib_buf_free(&hb);
			return NULL;
		}
		json_object_set_new(set, p, json_object());
		ib_buf_appendf(&hb, " %s", p);
	}
	return ib_buf_steal(&hb, NULL);
}

static char *config_expose(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	return add_to_set(st, c, "ExposedPorts", json_object_get(step, "ports"), "EXPOSE", true,
			  err);
}

static char *config_volume(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	return add_to_set(st, c, "Volumes", json_object_get(step, "paths"), "VOLUME", false, err);
}

static char *config_label(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	json_t *labels = json_object_get(c, "Labels"), *v;
	if (!json_is_object(labels)) {
		labels = json_object();
		json_object_set_new(c, "Labels", labels);
	}
	const char *k;
	ib_buf hb = IB_BUF_INIT;
	ib_buf_append(&hb, "LABEL", 5);
	json_object_foreach (json_object_get(step, "labels"), k, v) {
		cleanup_free char *xk = build_expand(st, k, err);
		cleanup_free char *xv = xk ? build_expand(st, json_string_value(v), err) : NULL;
		if (!xv) {
			ib_buf_free(&hb);
			ib_error_wrap(err, "label %s", k);
			return NULL;
		}
		json_object_set_new(labels, xk, json_string(xv));
		ib_buf_appendf(&hb, " %s=%s", xk, xv);
	}
	return ib_buf_steal(&hb, NULL);
}

static char *config_annotation(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)err;
	(void)c;
	json_object_update(st->annotations, json_object_get(step, "annotations"));
	return NULL; /* manifest-only: no history entry */
}

static char *config_stopsignal(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	cleanup_free char *sig = build_expand(st, jstr(step, "signal"), err);
	if (sig && !ib_plan_valid_signal(sig))
		ib_error_setc(err, IB_EINVALID, "invalid signal '%s'", sig);
	if (!sig || !*sig) {
		ib_error_wrap(err, "stopsignal %s", jstr(step, "signal"));
		return NULL;
	}
	json_object_set_new(c, "StopSignal", json_string(sig));
	return xasprintf("STOPSIGNAL %s", sig);
}

static char *config_healthcheck(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)err;
	(void)st;
	json_t *hc = json_object();
	json_object_set(hc, "Test", json_object_get(step, "test"));
	static const struct {
		const char *plan, *oci;
	} fields[] = {{"interval", "Interval"},
		      {"timeout", "Timeout"},
		      {"start_period", "StartPeriod"},
		      {"retries", "Retries"}};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_t *v = json_object_get(step, fields[i].plan);
		if (json_is_integer(v) && json_integer_value(v) > 0)
			json_object_set(hc, fields[i].oci, v);
	}
	json_object_set_new(c, "Healthcheck", hc);
	cleanup_free char *s = build_argv_string(json_object_get(step, "test"));
	return xasprintf("HEALTHCHECK %s", s);
}

static char *config_shell(stage_state *st, json_t *step, json_t *c, ib_error **err)
{
	(void)err;
	(void)c;
	json_decref(st->shell);
	st->shell = json_deep_copy(json_object_get(step, "argv"));
	cleanup_free char *s = build_argv_string(st->shell);
	return xasprintf("SHELL %s", s);
}

static const config_handler config_handlers[IB_STEP_KIND_COUNT] = {
    [IB_STEP_ENV] = config_env,
    [IB_STEP_WORKDIR] = config_workdir,
    [IB_STEP_USER] = config_user,
    [IB_STEP_ENTRYPOINT] = config_entrypoint,
    [IB_STEP_CMD] = config_cmd,
    [IB_STEP_EXPOSE] = config_expose,
    [IB_STEP_VOLUME] = config_volume,
    [IB_STEP_LABEL] = config_label,
    [IB_STEP_ANNOTATION] = config_annotation,
    [IB_STEP_STOPSIGNAL] = config_stopsignal,
    [IB_STEP_HEALTHCHECK] = config_healthcheck,
    [IB_STEP_SHELL] = config_shell,
};

/* Apply a config-only step (kind from ib_plan_step_kind_of). */
int build_config_step(builder *b, stage_state *st, json_t *step, int kind, ib_error **err)
{
	if (kind < 0 || kind >= IB_STEP_KIND_COUNT || !config_handlers[kind]) {
		ib_error_setc(err, IB_EINVALID, "unknown step kind '%s'", jstr(step, "kind"));
		return build_recipe_error(b, step, err);
	}
	ib_error *e = NULL;
	cleanup_free char *hist = config_handlers[kind](st, step, build_cfg(st), &e);
	if (e) {
		ib_error_setc(err, e->code, "%s", e->msg);
		ib_error_free(&e);
		return build_recipe_error(b, step, err);
	}
	if (hist)
		build_add_history(b, st, hist, NULL);
	return 0;
}
