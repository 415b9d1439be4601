/* Dockerfile-style variable expansion (see expand.h). */
#include "expand.h"

#include <stdbool.h>
#include <string.h>

#include "util.h"

static bool name_start(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool name_char(char c)
{
	return name_start(c) || (c >= '0' && c <= '9');
}

/* Expand s[0..n) into out.  Returns 0, or -1 with *err set. */
static int expand_into(ib_buf *out, const char *s, size_t n, ib_expand_lookup lookup, void *ctx,
		       ib_error **err);

/* The end of a ${...} word starting at s (index of the matching '}'),
 * honouring nested ${...} and \$; n when unterminated. */
static size_t word_end(const char *s, size_t n)
{
	int depth = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n && s[i + 1] == '$') {
			i++;
		} else if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
			depth++;
			i++;
		} else if (s[i] == '}') {
			if (depth == 0)
				return i;
			depth--;
		}
	}
	return n;
}

static int expand_braced(ib_buf *out, const char *s, size_t n, size_t *used,
			 ib_expand_lookup lookup, void *ctx, ib_error **err)
{
	/* s points after "${" */
	size_t i = 0;
	if (i >= n || !name_start(s[i]))
		return ib_error_setc(err, IB_EINVALID, "bad substitution in \"${%.*s\"",
				     (int)(n > 40 ? 40 : n), s);
	while (i < n && name_char(s[i]))
		i++;
	size_t name_len = i;
	if (i >= n)
		return ib_error_setc(err, IB_EINVALID, "missing '}' in \"${%.*s\"",
				     (int)(n > 40 ? 40 : n), s);
	const char *val = lookup(ctx, s, name_len);
	if (i < n && s[i] == '}') {
		if (val)
			ib_buf_append(out, val, strlen(val));
		*used = i + 1;
		return 0;
	}
	bool colon = false;
	if (i < n && s[i] == ':') {
		colon = true;
		i++;
	}
	char op = i < n ? s[i] : '\0';
	if (op != '-' && op != '+' && op != '?')
		return ib_error_setc(err, IB_EINVALID, "bad substitution in \"${%.*s\"",
				     (int)(n > 40 ? 40 : n), s);
	i++;
	size_t wl = word_end(s + i, n - i);
	if (wl == n - i)
		return ib_error_setc(err, IB_EINVALID, "missing '}' in \"${%.*s\"",
				     (int)(n > 40 ? 40 : n), s);
	const char *word = s + i;
	*used = i + wl + 1;
	/* with ':' an empty value counts as unset */
	bool set = val && (!colon || *val);
	switch (op) {
	case '-':
		if (set) {
			ib_buf_append(out, val, strlen(val));
			return 0;
		}
		return expand_into(out, word, wl, lookup, ctx, err);
	case '+':
		return set ? expand_into(out, word, wl, lookup, ctx, err) : 0;
	default: /* '?' */
		if (set) {
			ib_buf_append(out, val, strlen(val));
			return 0;
		}
		ib_buf msg = IB_BUF_INIT;
		int rc = expand_into(&msg, word, wl, lookup, ctx, err);
		cleanup_free char *m = ib_buf_steal(&msg, NULL);
		if (rc < 0)
			return rc;
		return ib_error_setc(err, IB_EINVALID, "%.*s: %s", (int)name_len, s,
				     *m ? m : "is not set");
	}
}

static int expand_into(ib_buf *out, const char *s, size_t n, ib_expand_lookup lookup, void *ctx,
		       ib_error **err)
{
	size_t i = 0;
	while (i < n) {
		size_t lit = i;
		while (i < n && s[i] != '$' && !(s[i] == '\\' && i + 1 < n && s[i + 1] == '$'))
			i++;
		if (i > lit)
			ib_buf_append(out, s + lit, i - lit);
		if (i >= n)
			break;
		if (s[i] == '\\') { /* \$ */
			ib_buf_append(out, "$", 1);
			i += 2;
			continue;
		}
		/* s[i] == '$' */
		if (i + 1 < n && s[i + 1] == '{') {
			size_t used = 0;
			if (expand_braced(out, s + i + 2, n - i - 2, &used, lookup, ctx, err) < 0)
				return -1;
			i += 2 + used;
		} else if (i + 1 < n && name_start(s[i + 1])) {
			size_t b = i + 1, e = b;
			while (e < n && name_char(s[e]))
				e++;
			const char *val = lookup(ctx, s + b, e - b);
			if (val)
				ib_buf_append(out, val, strlen(val));
			i = e;
		} else { /* a lone '$' stays */
			ib_buf_append(out, "$", 1);
			i++;
		}
	}
	return 0;
}

char *ib_expand(const char *s, ib_expand_lookup lookup, void *ctx, ib_error **err)
{
	if (!strchr(s, '$'))
		return xstrdup(s);
	ib_buf out = IB_BUF_INIT;
	ib_buf_append(&out, "", 0);
	if (expand_into(&out, s, strlen(s), lookup, ctx, err) < 0) {
		ib_buf_free(&out);
		return NULL;
	}
	char *r = ib_buf_steal(&out, NULL);
	return r ? r : xstrdup("");
}

static const char *env_lookup(void *ctx, const char *name, size_t len)
{
	json_t *env = ctx, *e;
	size_t i;
	json_array_foreach (env, i, e) {
		const char *kv = json_string_value(e);
		if (kv && !strncmp(kv, name, len) && kv[len] == '=')
			return kv + len + 1;
	}
	return NULL;
}

char *ib_expand_env(const char *s, json_t *env, ib_error **err)
{
	json_t *empty = NULL;
	if (!json_is_array(env))
		env = empty = json_array();
	char *r = ib_expand(s, env_lookup, env, err);
	json_decref(empty);
	return r;
}
