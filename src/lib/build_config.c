/* Config-only steps (env, workdir, user, entrypoint, cmd, expose, volume,
 * label, annotation, stopsignal, healthcheck, shell): one handler per kind
 * changes the image config and gives its history line. */
#include "builder_internal.h"

#include <string.h>

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

void build_add_history(builder *b, stage_state *st, const char *created_by, bool empty)
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

/* Lexically clean an absolute path: no "." or ".." components, no repeated
 * slashes; a trailing slash (meaning "a directory") is kept. */
char *build_clean_path(const char *p)
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
char *build_image_path(stage_state *st, const char *p)
{
	if (p[0] == '/')
		return build_clean_path(p);
	const char *wd = jstr(build_cfg(st), "WorkingDir");
	cleanup_free char *joined = ib_path_join(wd && *wd ? wd : "/", p);
	size_t n = strlen(p);
	if (n && p[n - 1] == '/' && joined[strlen(joined) - 1] != '/') {
		char *with = xasprintf("%s/", joined);
		free(joined);
		joined = with;
	}
	return build_clean_path(joined);
}

/* Config-only steps: one handler per kind.  Each changes the image config
 * (or the stage) and returns the history line, or NULL for none. */
typedef char *(*config_handler)(stage_state *st, json_t *step, json_t *c);

static char *config_env(stage_state *st, json_t *step, json_t *c)
{
	(void)c;
	json_t *arr = build_cfg_env(st), *v;
	const char *k;
	ib_buf hb = IB_BUF_INIT;
	ib_buf_append(&hb, "ENV", 3);
	json_object_foreach (json_object_get(step, "env"), k, v) {
		build_env_set(arr, st->env_index, k, json_string_value(v));
		ib_buf_appendf(&hb, " %s=%s", k, json_string_value(v));
	}
	return ib_buf_steal(&hb, NULL);
}

static char *config_workdir(stage_state *st, json_t *step, json_t *c)
{
	cleanup_free char *p = build_image_path(st, jstr(step, "path"));
	json_object_set_new(c, "WorkingDir", json_string(p));
	return xasprintf("WORKDIR %s", p);
}

static char *config_user(stage_state *st, json_t *step, json_t *c)
{
	(void)st;
	json_object_set_new(c, "User", json_string(jstr(step, "user")));
	return xasprintf("USER %s", jstr(step, "user"));
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

static char *config_entrypoint(stage_state *st, json_t *step, json_t *c)
{
	json_t *argv = json_object_get(step, "argv");
	json_object_set(c, "Entrypoint", argv);
	/* Docker: a new entrypoint drops a CMD inherited from the base. */
	if (!st->cmd_set)
		json_object_del(c, "Cmd");
	cleanup_free char *s = exec_form(argv);
	return xasprintf("ENTRYPOINT %s", s);
}

static char *config_cmd(stage_state *st, json_t *step, json_t *c)
{
	json_t *argv = json_object_get(step, "argv");
	json_object_set(c, "Cmd", argv);
	st->cmd_set = true;
	cleanup_free char *s = exec_form(argv);
	return xasprintf("CMD %s", s);
}

/* expose and volume: names into a set-like object of the config */
static char *add_to_set(json_t *c, const char *field, json_t *list, const char *what, bool ports)
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
		const char *s = json_string_value(v);
		cleanup_free char *p =
		    ports && !strchr(s, '/') ? xasprintf("%s/tcp", s) : xstrdup(s);
		json_object_set_new(set, p, json_object());
		ib_buf_appendf(&hb, " %s", p);
	}
	return ib_buf_steal(&hb, NULL);
}

static char *config_expose(stage_state *st, json_t *step, json_t *c)
{
	(void)st;
	return add_to_set(c, "ExposedPorts", json_object_get(step, "ports"), "EXPOSE", true);
}

static char *config_volume(stage_state *st, json_t *step, json_t *c)
{
	(void)st;
	return add_to_set(c, "Volumes", json_object_get(step, "paths"), "VOLUME", false);
}

static char *config_label(stage_state *st, json_t *step, json_t *c)
{
	(void)st;
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
	return ib_buf_steal(&hb, NULL);
}

static char *config_annotation(stage_state *st, json_t *step, json_t *c)
{
	(void)c;
	json_object_update(st->annotations, json_object_get(step, "annotations"));
	return NULL; /* manifest-only: no history entry */
}

static char *config_stopsignal(stage_state *st, json_t *step, json_t *c)
{
	(void)st;
	json_object_set_new(c, "StopSignal", json_string(jstr(step, "signal")));
	return xasprintf("STOPSIGNAL %s", jstr(step, "signal"));
}

static char *config_healthcheck(stage_state *st, json_t *step, json_t *c)
{
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

static char *config_shell(stage_state *st, json_t *step, json_t *c)
{
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
	cleanup_free char *hist = config_handlers[kind](st, step, build_cfg(st));
	if (hist)
		build_add_history(b, st, hist, true);
	return 0;
}
