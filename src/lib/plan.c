/* The plan seam: validators shared with the recipe, and the check the
 * builder runs once on a plan before executing it (plan.h). */
#include "plan.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A user or group: a number, or a name [A-Za-z_][A-Za-z0-9_.-]*[$]. */
bool ib_plan_valid_id_part(const char *s, size_t len)
{
	if (len == 0 || len > IB_PLAN_ID_MAX)
		return false;
	bool digits = true;
	for (size_t i = 0; i < len; i++)
		digits = digits && is_digit(s[i]);
	if (digits)
		return true;
	if (!is_alpha(s[0]) && s[0] != '_')
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = s[i];
		if (is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-')
			continue;
		if (c == '$' && i == len - 1)
			continue;
		return false;
	}
	return true;
}

/* "user", "uid", "user:group", "uid:gid". */
bool ib_plan_valid_owner(const char *s)
{
	const char *colon = strchr(s, ':');
	if (!colon)
		return ib_plan_valid_id_part(s, strlen(s));
	return ib_plan_valid_id_part(s, (size_t)(colon - s)) &&
	       ib_plan_valid_id_part(colon + 1, strlen(colon + 1));
}

bool ib_plan_valid_stage_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > IB_PLAN_STAGE_NAME_MAX || !is_alpha(s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

bool ib_plan_valid_identifier(const char *s)
{
	if (!is_alpha(s[0]) && s[0] != '_')
		return false;
	for (const char *p = s + 1; *p; p++)
		if (!is_alpha(*p) && !is_digit(*p) && *p != '_')
			return false;
	return true;
}

/* "os/arch[/variant]", lower case letters, digits, '_', '.', '-'. */
bool ib_plan_valid_platform(const char *s)
{
	int parts = 1;
	size_t partlen = 0;
	for (const char *p = s; *p; p++) {
		if (*p == '/') {
			if (partlen == 0)
				return false;
			parts++;
			partlen = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || is_digit(*p) || strchr("_.-", *p)))
			return false;
		partlen++;
	}
	return partlen > 0 && parts >= 2 && parts <= 3;
}

/* Parse "N", "N/proto", "N-M[/proto]" into a port range and a lower-case
 * protocol; false when invalid. */
bool ib_plan_port_parse(const char *s, unsigned *lo_out, unsigned *hi_out, const char **proto_out)
{
	uint64_t lo = 0, hi = 0;
	const char *p = s;
	size_t n = strspn(p, "0123456789");
	if (n == 0 || n > 5)
		return false;
	char num[8];
	memcpy(num, p, n);
	num[n] = 0;
	if (ib_parse_u64(num, &lo) < 0 || lo < 1 || lo > IB_PLAN_PORT_MAX)
		return false;
	p += n;
	hi = lo;
	if (*p == '-') {
		p++;
		n = strspn(p, "0123456789");
		if (n == 0 || n > 5)
			return false;
		memcpy(num, p, n);
		num[n] = 0;
		if (ib_parse_u64(num, &hi) < 0 || hi < lo || hi > IB_PLAN_PORT_MAX)
			return false;
		p += n;
	}
	*proto_out = "tcp";
	if (*p == '/') {
		p++;
		if (!strcasecmp(p, "tcp"))
			*proto_out = "tcp";
		else if (!strcasecmp(p, "udp"))
			*proto_out = "udp";
		else if (!strcasecmp(p, "sctp"))
			*proto_out = "sctp";
		else
			return false;
	} else if (*p) {
		return false;
	}
	*lo_out = (unsigned)lo;
	*hi_out = (unsigned)hi;
	return true;
}

/* "SIGTERM", "TERM", "SIGRTMIN+3", "9". */
bool ib_plan_valid_signal(const char *s)
{
	if (!*s)
		return false;
	if (is_digit(s[0])) {
		uint64_t v;
		return ib_parse_u64(s, &v) == 0 && v >= 1 && v <= IB_PLAN_SIGNAL_MAX;
	}
	for (const char *p = s; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || is_digit(*p) || *p == '+' || *p == '-'))
			return false;
	return true;
}

/* Go-style duration ("1m30s", "500ms", "1.5h") -> ns. */
bool ib_plan_parse_duration(const char *s, int64_t *out)
{
	static const struct {
		const char *unit;
		int64_t ns;
	} units[] = {
	    {"ns", 1},
	    {"us", 1000},
	    {"\xc2\xb5s", 1000},
	    {"\xce\xbcs", 1000},
	    {"ms", 1000000},
	    {"s", 1000000000},
	    {"m", 60LL * 1000000000},
	    {"h", 3600LL * 1000000000},
	};
	if (!strcmp(s, "0")) {
		*out = 0;
		return true;
	}
	if (!*s)
		return false;
	int64_t total = 0;
	const char *p = s;
	while (*p) {
		uint64_t ip = 0, frac = 0, scale = 1;
		bool any = false;
		while (is_digit(*p)) {
			if (ip > (uint64_t)INT64_MAX / 10)
				return false;
			ip = ip * 10 + (uint64_t)(*p++ - '0');
			any = true;
		}
		if (*p == '.') {
			p++;
			while (is_digit(*p)) {
				if (scale < 1000000000000000000ULL) {
					frac = frac * 10 + (uint64_t)(*p - '0');
					scale *= 10;
				}
				p++;
				any = true;
			}
		}
		if (!any)
			return false;
		size_t ulen = 0;
		while (p[ulen] && !is_digit(p[ulen]) && p[ulen] != '.')
			ulen++;
		int64_t mult = 0;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].unit) == ulen && !strncmp(p, units[i].unit, ulen))
				mult = units[i].ns;
		if (!mult)
			return false;
		p += ulen;
		if (ip > (uint64_t)(INT64_MAX / mult))
			return false;
		int64_t v = (int64_t)ip * mult;
		v += (int64_t)((long double)frac * (long double)mult / (long double)scale);
		if (v < 0 || total > INT64_MAX - v)
			return false;
		total += v;
	}
	*out = total;
	return true;
}

int32_t ib_plan_mode_parse(const char *s)
{
	if (!s || strlen(s) != 4 || strspn(s, "01234567") != 4)
		return -1;
	long v = strtol(s, NULL, 8);
	return v <= IB_PLAN_MODE_MAX ? (int32_t)v : -1;
}

/* ---- ib_plan_validate ---- */

static const char *const kind_names[IB_STEP_KIND_COUNT] = {
    [IB_STEP_RUN] = "run",
    [IB_STEP_COPY] = "copy",
    [IB_STEP_ENV] = "env",
    [IB_STEP_WORKDIR] = "workdir",
    [IB_STEP_USER] = "user",
    [IB_STEP_ENTRYPOINT] = "entrypoint",
    [IB_STEP_CMD] = "cmd",
    [IB_STEP_EXPOSE] = "expose",
    [IB_STEP_VOLUME] = "volume",
    [IB_STEP_LABEL] = "label",
    [IB_STEP_ANNOTATION] = "annotation",
    [IB_STEP_STOPSIGNAL] = "stopsignal",
    [IB_STEP_HEALTHCHECK] = "healthcheck",
    [IB_STEP_SHELL] = "shell",
};

int ib_plan_step_kind_of(json_t *step)
{
	const char *k = json_string_value(json_object_get(step, "kind"));
	for (int i = 0; k && i < IB_STEP_KIND_COUNT; i++)
		if (!strcmp(k, kind_names[i]))
			return i;
	return -1;
}

/* Field checks: each returns NULL when the value is fine, else what it
 * must be (for the message). */
typedef const char *(*field_check)(json_t *v);

static const char *is_string(json_t *v)
{
	return json_is_string(v) ? NULL : "a string";
}

static const char *is_string_or_null(json_t *v)
{
	return json_is_string(v) || json_is_null(v) ? NULL : "a string or null";
}

static const char *is_bool(json_t *v)
{
	return json_is_boolean(v) ? NULL : "true or false";
}

static const char *is_strings(json_t *v)
{
	size_t i;
	json_t *e;
	if (!json_is_array(v))
		return "an array of strings";
	json_array_foreach (v, i, e)
		if (!json_is_string(e))
			return "an array of strings";
	return NULL;
}

static const char *is_argv(json_t *v)
{
	return !is_strings(v) && json_array_size(v) ? NULL : "a non-empty array of strings";
}

static const char *is_string_map(json_t *v)
{
	const char *k;
	json_t *e;
	if (!json_is_object(v))
		return "an object of strings";
	json_object_foreach (v, k, e)
		if (!json_is_string(e))
			return "an object of strings";
	return NULL;
}

static const char *is_timeout(json_t *v)
{
	json_int_t t = json_integer_value(v);
	return json_is_integer(v) && t >= 0 && t <= IB_PLAN_MAX_TIMEOUT
		   ? NULL
		   : "a whole number of seconds from 0 to 4294967295";
}

static const char *is_count(json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 0 ? NULL : "an integer >= 0";
}

static const char *is_mode(json_t *v)
{
	return json_is_null(v) || ib_plan_mode_parse(json_string_value(v)) >= 0
		   ? NULL
		   : "null or 4 octal digits, at most 07777";
}

static const char *is_owner(json_t *v)
{
	return json_is_null(v) || (json_is_string(v) && ib_plan_valid_owner(json_string_value(v)))
		   ? NULL
		   : "null or \"uid[:gid]\" / \"user[:group]\"";
}

static const char *is_network(json_t *v)
{
	const char *s = json_string_value(v);
	return s && (!strcmp(s, "default") || !strcmp(s, "none") || !strcmp(s, "host"))
		   ? NULL
		   : "\"default\", \"none\" or \"host\"";
}

static const char *is_ports(json_t *v)
{
	size_t i;
	json_t *e;
	unsigned lo, hi;
	const char *proto;
	if (!json_is_array(v))
		return "an array of \"N/proto\"";
	json_array_foreach (v, i, e) {
		const char *s = json_string_value(e);
		/* "$VAR" forms are expanded and checked at build time */
		if (!s || (!strchr(s, '$') && !ib_plan_port_parse(s, &lo, &hi, &proto)))
			return "an array of \"N/proto\"";
	}
	return NULL;
}

static const char *is_signal(json_t *v)
{
	const char *s = json_string_value(v);
	return s && (strchr(s, '$') || ib_plan_valid_signal(s)) ? NULL : "a signal name or number";
}

static const char *is_from_or_null(json_t *v);

static const char *is_cache_mounts(json_t *v)
{
	static const char want[] = "an array of paths or {target, id, uid?, gid?, mode?, sharing}";
	size_t i;
	json_t *e;
	if (!json_is_array(v))
		return want;
	json_array_foreach (v, i, e) {
		if (json_is_string(e))
			continue;
		const char *t = json_string_value(json_object_get(e, "target"));
		const char *id = json_string_value(json_object_get(e, "id"));
		const char *sh = json_string_value(json_object_get(e, "sharing"));
		json_t *mode = json_object_get(e, "mode");
		if (!t || t[0] != '/' || !id || !*id || !sh ||
		    (strcmp(sh, "shared") && strcmp(sh, "private") && strcmp(sh, "locked")) ||
		    (mode && ib_plan_mode_parse(json_string_value(mode)) < 0))
			return want;
		static const char *const ids[] = {"uid", "gid"};
		for (size_t k = 0; k < 2; k++) {
			json_t *n = json_object_get(e, ids[k]);
			if (n && (!json_is_integer(n) || json_integer_value(n) < 0 ||
				  json_integer_value(n) > 4294967294LL))
				return want;
		}
	}
	return NULL;
}

static const char *is_secrets(json_t *v)
{
	size_t i;
	json_t *e;
	if (!json_is_array(v))
		return "an array of {id, target, src?}";
	json_array_foreach (v, i, e) {
		json_t *src = json_object_get(e, "src"); /* optional: --secret gives it */
		if (!json_is_string(json_object_get(e, "id")) || (src && !json_is_string(src)) ||
		    !json_is_string(json_object_get(e, "target")))
			return "an array of {id, target, src?}";
	}
	return NULL;
}

typedef struct field_rule {
	const char *name;
	field_check check;
} field_rule;

#define MAX_FIELDS 12
static const field_rule rules[IB_STEP_KIND_COUNT][MAX_FIELDS] = {
    [IB_STEP_RUN] = {{"argv", is_argv},
		     {"env", is_string_map},
		     {"network", is_network},
		     {"user", is_string_or_null},
		     {"workdir", is_string_or_null},
		     {"cache_mounts", is_cache_mounts},
		     {"secrets", is_secrets},
		     {"timeout", is_timeout},
		     {"cache", is_bool}},
    [IB_STEP_COPY] = {{"sources", is_argv},
		      {"dest", is_string},
		      {"from", is_from_or_null},
		      {"owner", is_owner},
		      {"mode", is_mode},
		      {"exclude", is_strings}},
    [IB_STEP_ENV] = {{"env", is_string_map}},
    [IB_STEP_WORKDIR] = {{"path", is_string}},
    [IB_STEP_USER] = {{"user", is_string}},
    [IB_STEP_ENTRYPOINT] = {{"argv", is_strings}},
    [IB_STEP_CMD] = {{"argv", is_strings}},
    [IB_STEP_EXPOSE] = {{"ports", is_ports}},
    [IB_STEP_VOLUME] = {{"paths", is_strings}},
    [IB_STEP_LABEL] = {{"labels", is_string_map}},
    [IB_STEP_ANNOTATION] = {{"annotations", is_string_map}},
    [IB_STEP_STOPSIGNAL] = {{"signal", is_signal}},
    [IB_STEP_HEALTHCHECK] = {{"test", is_argv},
			     {"interval", is_count},
			     {"timeout", is_count},
			     {"start_period", is_count},
			     {"retries", is_count}},
    [IB_STEP_SHELL] = {{"argv", is_argv}},
};

/* FROM: exactly one of {"scratch": true}, {"image": s}, {"stage": s};
 * "image" may come with "short": what the user wrote for it. */
static const char *is_from(json_t *v)
{
	static const char *want = "{\"scratch\": true}, {\"image\": s[, \"short\": s]} or "
				  "{\"stage\": s}";
	if (json_is_object(v) && json_object_size(v) == 2 &&
	    json_is_string(json_object_get(v, "image")) &&
	    json_is_string(json_object_get(v, "short")))
		return NULL;
	if (!json_is_object(v) || json_object_size(v) != 1)
		return want;
	if (json_is_true(json_object_get(v, "scratch")) ||
	    json_is_string(json_object_get(v, "image")))
		return NULL;
	const char *st = json_string_value(json_object_get(v, "stage"));
	return st && ib_plan_valid_stage_name(st) ? NULL : want;
}

static const char *is_from_or_null(json_t *v)
{
	return json_is_null(v) ? NULL : is_from(v);
}

static const char *is_platform_or_null(json_t *v)
{
	const char *s = json_string_value(v);
	return json_is_null(v) || (s && ib_plan_valid_platform(s)) ? NULL : "null or \"os/arch\"";
}

static const char *is_pull_or_null(json_t *v)
{
	const char *s = json_string_value(v);
	return json_is_null(v) ||
		       (s && (!strcmp(s, "missing") || !strcmp(s, "always") || !strcmp(s, "never")))
		   ? NULL
		   : "null, \"missing\", \"always\" or \"never\"";
}

static const char *is_array(json_t *v)
{
	return json_is_array(v) ? NULL : "an array";
}

static int check_step(json_t *step, size_t si, size_t i, ib_error **err)
{
	json_t *line = json_object_get(step, "line");
	if (!json_is_object(step) || !json_is_integer(line))
		return ib_error_setc(err, IB_EINVALID,
				     "plan: stage %zu, step %zu: not an object with a line", si + 1,
				     i + 1);
	int kind = ib_plan_step_kind_of(step);
	const char *kname = json_string_value(json_object_get(step, "kind"));
	if (kind < 0)
		return ib_error_setc(err, IB_EINVALID, "plan: line %lld: unknown step kind '%s'",
				     (long long)json_integer_value(line), kname ? kname : "(none)");
	for (size_t f = 0; f < MAX_FIELDS && rules[kind][f].name; f++) {
		const char *want = rules[kind][f].check(json_object_get(step, rules[kind][f].name));
		if (want)
			return ib_error_setc(
			    err, IB_EINVALID, "plan: line %lld: %s: '%s' must be %s",
			    (long long)json_integer_value(line), kname, rules[kind][f].name, want);
	}
	return 0;
}

int ib_plan_validate(json_t *plan, ib_error **err)
{
	json_t *version = json_object_get(plan, "version");
	if (!json_is_integer(version) || json_integer_value(version) != IB_PLAN_VERSION)
		return ib_error_setc(
		    err, IB_EINVALID, "plan: version %s, this imgbuild reads version %d",
		    json_is_integer(version) ? "is not supported" : "missing", IB_PLAN_VERSION);
	json_t *stages = json_object_get(plan, "stages");
	if (!json_is_array(stages))
		return ib_error_setc(err, IB_EINVALID, "plan: 'stages' must be an array");
	size_t si;
	json_t *st;
	json_array_foreach (stages, si, st) {
		const char *name = json_string_value(json_object_get(st, "name"));
		if (!name || !ib_plan_valid_stage_name(name))
			return ib_error_setc(err, IB_EINVALID,
					     "plan: stage %zu: 'name' must be a stage name",
					     si + 1);
		static const field_rule stage_rules[] = {{"from", is_from},
							 {"platform", is_platform_or_null},
							 {"pull", is_pull_or_null},
							 {"steps", is_array}};
		for (size_t f = 0; f < sizeof(stage_rules) / sizeof(stage_rules[0]); f++) {
			json_t *v = json_object_get(st, stage_rules[f].name);
			const char *want = stage_rules[f].check(v);
			if (want)
				return ib_error_setc(err, IB_EINVALID,
						     "plan: stage \"%s\": '%s' must be %s", name,
						     stage_rules[f].name, want);
		}
		size_t i;
		json_t *step;
		json_array_foreach (json_object_get(st, "steps"), i, step) {
			if (check_step(step, si, i, err) < 0)
				return -1;
		}
	}
	return 0;
}
