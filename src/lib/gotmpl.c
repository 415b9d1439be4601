/* Go-template-style --format strings; see gotmpl.h. */
#include "gotmpl.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define MAX_ARGS 8

static int key_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Go's %v of a value (NULL: a missing field). */
static void print_value(ib_buf *b, json_t *v)
{
	if (!v) {
		ib_buf_appendf(b, "<no value>");
	} else if (json_is_string(v)) {
		ib_buf_append(b, json_string_value(v), json_string_length(v));
	} else if (json_is_integer(v)) {
		ib_buf_appendf(b, "%lld", (long long)json_integer_value(v));
	} else if (json_is_real(v)) {
		ib_buf_appendf(b, "%g", json_real_value(v));
	} else if (json_is_boolean(v)) {
		ib_buf_appendf(b, "%s", json_is_true(v) ? "true" : "false");
	} else if (json_is_null(v)) {
		ib_buf_appendf(b, "<nil>");
	} else if (json_is_array(v)) {
		ib_buf_appendf(b, "[");
		size_t i;
		json_t *e;
		json_array_foreach (v, i, e) {
			if (i)
				ib_buf_appendf(b, " ");
			print_value(b, e);
		}
		ib_buf_appendf(b, "]");
	} else {
		/* map[k:v ...], keys sorted as Go prints maps */
		size_t n = json_object_size(v), k = 0;
		const char **keys = xcalloc(n + 1, sizeof(char *));
		const char *key;
		json_t *e;
		json_object_foreach (v, key, e) {
			keys[k++] = key;
		}
		qsort(keys, n, sizeof(char *), key_cmp);
		ib_buf_appendf(b, "map[");
		for (size_t i = 0; i < n; i++) {
			ib_buf_appendf(b, "%s%s:", i ? " " : "", keys[i]);
			print_value(b, json_object_get(v, keys[i]));
		}
		ib_buf_appendf(b, "]");
		free(keys);
	}
}

/* A key of an object: exact, else the only one equal ignoring case. */
static json_t *field(json_t *obj, const char *name, size_t len)
{
	if (!json_is_object(obj))
		return NULL;
	cleanup_free char *k = xstrndup(name, len);
	json_t *v = json_object_get(obj, k);
	if (v)
		return v;
	const char *key;
	json_t *e, *found = NULL;
	json_object_foreach (obj, key, e) {
		if (!strcasecmp(key, k)) {
			if (found)
				return NULL;
			found = e;
		}
	}
	return found;
}

typedef struct parser {
	const char *p, *end; /* the action's text */
	json_t *data;
	ib_error **err;
	const char *action; /* for messages */
	size_t action_len;
} parser;

static int fail(parser *ps, const char *what)
{
	return ib_error_setc(ps->err, IB_EUSAGE, "--format: %s in {{%.*s}}", what,
			     (int)ps->action_len, ps->action);
}

static void skip_space(parser *ps)
{
	while (ps->p < ps->end && isspace((unsigned char)*ps->p))
		ps->p++;
}

/* One operand: a field path, a string or an integer literal.  *out gets a
 * new reference or NULL (missing field). */
static int operand(parser *ps, json_t **out)
{
	*out = NULL;
	const char *p = ps->p;
	if (*p == '.') {
		json_t *v = ps->data;
		p++;
		while (p < ps->end && !isspace((unsigned char)*p) && *p != '|' && *p != ')') {
			size_t n = 0;
			while (p + n < ps->end && (isalnum((unsigned char)p[n]) || p[n] == '_'))
				n++;
			if (n == 0)
				return fail(ps, "bad field path");
			v = field(v, p, n);
			p += n;
			if (p < ps->end && *p == '.')
				p++;
			else
				break;
		}
		ps->p = p;
		*out = json_incref(v);
		return 0;
	}
	if (*p == '"') {
		ib_buf b = IB_BUF_INIT;
		for (p++; p < ps->end && *p != '"'; p++) {
			char c = *p;
			if (c == '\\' && p + 1 < ps->end) {
				p++;
				c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
			}
			ib_buf_append(&b, &c, 1);
		}
		if (p >= ps->end) {
			ib_buf_free(&b);
			return fail(ps, "unterminated string");
		}
		ps->p = p + 1;
		size_t len = 0;
		char *s = ib_buf_steal(&b, &len);
		*out = json_stringn(s, len);
		free(s);
		return 0;
	}
	if (isdigit((unsigned char)*p) || *p == '-') {
		char *end;
		long long v = strtoll(p, &end, 10);
		if (end == p)
			return fail(ps, "bad number");
		ps->p = end;
		*out = json_integer(v);
		return 0;
	}
	return fail(ps, "expected a field, a string or a number");
}

static void free_args(json_t **args, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(args[i]);
}

/* Apply function name to args; *out gets a new reference (or NULL). */
static int call(parser *ps, const char *name, json_t **args, size_t n, json_t **out)
{
	*out = NULL;
	if (!strcmp(name, "json")) {
		if (n != 1)
			return fail(ps, "json takes one argument");
		char *s = args[0] ? json_dumps(args[0], JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		*out = json_string(s ? s : "null");
		free(s);
		return 0;
	}
	if (!strcmp(name, "index")) {
		if (n < 2)
			return fail(ps, "index takes a value and keys");
		json_t *v = args[0];
		for (size_t i = 1; i < n && v; i++) {
			if (json_is_object(v) && json_is_string(args[i]))
				v = json_object_get(v, json_string_value(args[i]));
			else if (json_is_array(v) && json_is_integer(args[i]))
				v = json_array_get(v, (size_t)json_integer_value(args[i]));
			else
				v = NULL;
		}
		*out = json_incref(v);
		return 0;
	}
	if (!strcmp(name, "join")) {
		if (n != 2 || !json_is_string(args[1]))
			return fail(ps, "join takes an array and a separator string");
		ib_buf b = IB_BUF_INIT;
		size_t i;
		json_t *e;
		json_array_foreach (args[0], i, e) {
			if (i)
				ib_buf_append(&b, json_string_value(args[1]),
					      json_string_length(args[1]));
			print_value(&b, e);
		}
		size_t len = 0;
		char *s = ib_buf_steal(&b, &len);
		*out = json_stringn(s, len);
		free(s);
		return 0;
	}
	if (!strcmp(name, "upper") || !strcmp(name, "lower")) {
		if (n != 1)
			return fail(ps, "upper and lower take one argument");
		ib_buf b = IB_BUF_INIT;
		print_value(&b, args[0]);
		size_t len = 0;
		char *s = ib_buf_steal(&b, &len);
		for (size_t i = 0; i < len; i++)
			s[i] = (char)(name[0] == 'u' ? toupper((unsigned char)s[i])
						     : tolower((unsigned char)s[i]));
		*out = json_stringn(s, len);
		free(s);
		return 0;
	}
	if (!strcmp(name, "len")) {
		if (n != 1)
			return fail(ps, "len takes one argument");
		size_t l = json_is_array(args[0])    ? json_array_size(args[0])
			   : json_is_object(args[0]) ? json_object_size(args[0])
			   : json_is_string(args[0]) ? json_string_length(args[0])
						     : 0;
		*out = json_integer((json_int_t)l);
		return 0;
	}
	cleanup_free char *msg = xasprintf("unknown function \"%s\"", name);
	return fail(ps, msg);
}

/* One command of a pipeline; prev (may be NULL, consumed) is the value of
 * the previous command, passed as the last argument. */
static int command(parser *ps, json_t *prev, bool has_prev, json_t **out)
{
	skip_space(ps);
	*out = NULL;
	int r = 0;
	if (ps->p < ps->end && isalpha((unsigned char)*ps->p)) {
		const char *s = ps->p;
		while (ps->p < ps->end && isalnum((unsigned char)*ps->p))
			ps->p++;
		cleanup_free char *name = xstrndup(s, (size_t)(ps->p - s));
		json_t *args[MAX_ARGS + 1];
		size_t n = 0;
		for (;;) {
			skip_space(ps);
			if (ps->p >= ps->end || *ps->p == '|')
				break;
			if (n == MAX_ARGS) {
				r = fail(ps, "too many arguments");
				break;
			}
			if ((r = operand(ps, &args[n])) < 0)
				break;
			n++;
		}
		if (r == 0 && has_prev)
			args[n++] = json_incref(prev);
		if (r == 0)
			r = call(ps, name, args, n, out);
		free_args(args, n);
	} else {
		if (has_prev)
			r = fail(ps, "a pipeline can only end in functions");
		else
			r = operand(ps, out);
		skip_space(ps);
		if (r == 0 && ps->p < ps->end && *ps->p != '|')
			r = fail(ps, "unexpected text after the value");
	}
	json_decref(prev);
	if (r < 0) {
		json_decref(*out);
		*out = NULL;
	}
	return r;
}

static int action(parser *ps, ib_buf *b)
{
	json_t *v = NULL;
	bool first = true;
	for (;;) {
		json_t *next = NULL;
		int r = command(ps, v, !first, &next);
		if (r < 0)
			return r;
		v = next;
		first = false;
		skip_space(ps);
		if (ps->p >= ps->end)
			break;
		ps->p++; /* '|' */
	}
	print_value(b, v);
	json_decref(v);
	return 0;
}

int ib_gotmpl_render(const char *tmpl, json_t *data, char **out, ib_error **err)
{
	*out = NULL;
	ib_buf b = IB_BUF_INIT;
	const char *p = tmpl;
	while (*p) {
		if (p[0] == '{' && p[1] == '{') {
			const char *s = p + 2, *e = s;
			bool in_str = false;
			while (*e && (in_str || !(e[0] == '}' && e[1] == '}'))) {
				if (*e == '\\' && in_str && e[1])
					e++;
				else if (*e == '"')
					in_str = !in_str;
				e++;
			}
			if (!*e) {
				ib_buf_free(&b);
				return ib_error_setc(err, IB_EUSAGE, "--format: unclosed \"{{\"");
			}
			parser ps = {s, e, data, err, s, (size_t)(e - s)};
			skip_space(&ps);
			if (ps.p == ps.end) {
				ib_buf_free(&b);
				return ib_error_setc(err, IB_EUSAGE, "--format: empty {{}}");
			}
			if (action(&ps, &b) < 0) {
				ib_buf_free(&b);
				return IB_EUSAGE;
			}
			p = e + 2;
		} else if (p[0] == '\\' && (p[1] == 'n' || p[1] == 't')) {
			ib_buf_append(&b, p[1] == 'n' ? "\n" : "\t", 1);
			p += 2;
		} else {
			ib_buf_append(&b, p, 1);
			p++;
		}
	}
	size_t len = 0;
	*out = ib_buf_steal(&b, &len);
	return 0;
}
