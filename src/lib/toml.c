/* TOML reader (toml.h).  A recursive-descent parser over a byte range
 * that builds a tree of tables, arrays and scalars.  It follows the TOML
 * 1.0 rules that matter for reading configuration safely: a key is
 * defined once, a table header names a table once, inline tables and
 * static arrays are closed, and arrays of tables extend only arrays of
 * tables.  Nesting of arrays and inline tables, and the number of parts
 * in a key, are bounded so that hostile input cannot exhaust the stack. */
#include "toml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_DEPTH 64
#define MAX_KEY_PARTS 64

enum {
	T_HEADER = 1u << 0,   /* table named by a [header] */
	T_IMPLICIT = 1u << 1, /* table created as the parent of a header */
	T_DOTTED = 1u << 2,   /* table created by a dotted key */
	T_FIXED = 1u << 3,    /* inline table or static array: closed */
	T_AOT = 1u << 4,      /* array created by [[header]] */
};

struct ib_toml {
	ib_toml_type type;
	unsigned flags;
	int line;
	char *str;
	int64_t i;
	double f;
	bool b;
	/* tables: keys[i] -> vals[i]; arrays: vals[i] */
	char **keys;
	ib_toml **vals;
	size_t n, cap;
};

typedef struct parser {
	const char *p, *end;
	const char *file;
	int line;
	int depth;
	ib_error **err;
} parser;

static int perr(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(parser *ps, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	return ib_error_setc(ps->err, IB_EINVALID, "%s:%d: %s", ps->file, ps->line, m);
}

/* ------------------------------------------------------------------ */
/* tree                                                                */

static ib_toml *node_new(ib_toml_type type, int line)
{
	ib_toml *t = xcalloc(1, sizeof(*t));
	t->type = type;
	t->line = line;
	return t;
}

void ib_toml_free(ib_toml *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		if (t->keys)
			free(t->keys[i]);
		ib_toml_free(t->vals[i]);
	}
	free(t->keys);
	free(t->vals);
	free(t->str);
	free(t);
}

static void node_push(ib_toml *t, char *key, ib_toml *v)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4;
		t->vals = xrealloc(t->vals, t->cap * sizeof(*t->vals));
		if (t->type == IB_TOML_TABLE)
			t->keys = xrealloc(t->keys, t->cap * sizeof(*t->keys));
	}
	if (t->type == IB_TOML_TABLE)
		t->keys[t->n] = key;
	t->vals[t->n++] = v;
}

static ib_toml *lookup(const ib_toml *t, const char *key)
{
	if (!t || t->type != IB_TOML_TABLE)
		return NULL;
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->keys[i], key))
			return t->vals[i];
	return NULL;
}

static void mark_fixed(ib_toml *t)
{
	t->flags |= T_FIXED;
	if (t->type == IB_TOML_TABLE)
		for (size_t i = 0; i < t->n; i++)
			if (t->vals[i]->type == IB_TOML_TABLE)
				mark_fixed(t->vals[i]);
}

/* ------------------------------------------------------------------ */
/* lexing                                                              */

static bool at_end(const parser *ps)
{
	return ps->p >= ps->end;
}

static int peek(const parser *ps, size_t ahead)
{
	return ps->p + ahead < ps->end ? (unsigned char)ps->p[ahead] : -1;
}

static void skip_ws(parser *ps)
{
	while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static bool is_newline(const parser *ps)
{
	return peek(ps, 0) == '\n' || (peek(ps, 0) == '\r' && peek(ps, 1) == '\n');
}

static void eat_newline(parser *ps)
{
	ps->p += *ps->p == '\r' ? 2 : 1;
	ps->line++;
}

static bool is_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

/* '#' to the end of the line (the newline stays). */
static int skip_comment(parser *ps)
{
	if (peek(ps, 0) != '#')
		return 0;
	while (!at_end(ps) && !is_newline(ps)) {
		if (is_control((unsigned char)*ps->p))
			return perr(ps, "control character in comment");
		ps->p++;
	}
	return 0;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_blank(parser *ps)
{
	for (;;) {
		skip_ws(ps);
		if (skip_comment(ps) < 0)
			return IB_EINVALID;
		if (is_newline(ps))
			eat_newline(ps);
		else
			return 0;
	}
}

/* After a key/value pair or a header: nothing but a comment on the line. */
static int end_of_line(parser *ps)
{
	skip_ws(ps);
	if (skip_comment(ps) < 0)
		return IB_EINVALID;
	if (at_end(ps))
		return 0;
	if (!is_newline(ps))
		return perr(ps, "expected the end of the line");
	eat_newline(ps);
	return 0;
}

static bool is_bare(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* ------------------------------------------------------------------ */
/* strings                                                             */

static void put_utf8(ib_buf *b, uint32_t cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	ib_buf_append(b, u, n);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int escape(parser *ps, ib_buf *b)
{
	ps->p++; /* the backslash */
	int c = peek(ps, 0);
	const char *simple = NULL;
	switch (c) {
	case 'b':
		simple = "\b";
		break;
	case 't':
		simple = "\t";
		break;
	case 'n':
		simple = "\n";
		break;
	case 'f':
		simple = "\f";
		break;
	case 'r':
		simple = "\r";
		break;
	case '"':
		simple = "\"";
		break;
	case '\\':
		simple = "\\";
		break;
	case 'u':
	case 'U': {
		int nd = c == 'u' ? 4 : 8;
		uint32_t cp = 0;
		for (int i = 1; i <= nd; i++) {
			int h = hexval(peek(ps, (size_t)i));
			if (h < 0)
				return perr(ps, "invalid \\%c escape", c);
			cp = cp << 4 | (uint32_t)h;
		}
		if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return perr(ps, "escape \\%c names an invalid character", c);
		put_utf8(b, cp);
		ps->p += 1 + nd;
		return 0;
	}
	default:
		return perr(ps, "invalid escape in string");
	}
	ib_buf_append(b, simple, 1);
	ps->p++;
	return 0;
}

/* A string starting at ps->p (a quote).  Keys pass multiline = false. */
static int parse_string(parser *ps, bool allow_multiline, char **out)
{
	char q = *ps->p;
	bool literal = q == '\'';
	bool multi = peek(ps, 1) == q && peek(ps, 2) == q;
	if (multi && !allow_multiline)
		return perr(ps, "multi-line string not allowed here");
	ib_buf b;
	ib_buf_init(&b, 0);
	int r = 0;
	int start = ps->line;
	if (!multi) {
		ps->p++;
		for (;;) {
			int c = peek(ps, 0);
			if (c < 0 || c == '\n' || c == '\r') {
				r = perr(ps, "unterminated string");
				break;
			}
			if (c == q) {
				ps->p++;
				break;
			}
			if (c == '\\' && !literal) {
				if ((r = escape(ps, &b)) < 0)
					break;
				continue;
			}
			if (is_control(c)) {
				r = perr(ps, "control character in string");
				break;
			}
			ib_buf_append(&b, ps->p++, 1);
		}
	} else {
		ps->p += 3;
		if (is_newline(ps))
			eat_newline(ps); /* a newline right after the quotes is trimmed */
		for (;;) {
			int c = peek(ps, 0);
			if (c < 0) {
				ps->line = start;
				r = perr(ps, "unterminated multi-line string");
				break;
			}
			if (c == q && peek(ps, 1) == q && peek(ps, 2) == q) {
				/* up to two more quotes belong to the content */
				size_t extra = 0;
				while (extra < 2 && peek(ps, 3 + extra) == q)
					extra++;
				ib_buf_append(&b, ps->p, extra);
				ps->p += 3 + extra;
				break;
			}
			if (is_newline(ps)) {
				ib_buf_append(&b, "\n", 1);
				eat_newline(ps);
				continue;
			}
			if (c == '\\' && !literal) {
				/* line-ending backslash: drop the whitespace that follows */
				const char *save = ps->p;
				ps->p++;
				skip_ws(ps);
				if (is_newline(ps)) {
					while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t' ||
							       is_newline(ps))) {
						if (is_newline(ps))
							eat_newline(ps);
						else
							ps->p++;
					}
					continue;
				}
				ps->p = save;
				if ((r = escape(ps, &b)) < 0)
					break;
				continue;
			}
			if (is_control(c)) {
				r = perr(ps, "control character in string");
				break;
			}
			ib_buf_append(&b, ps->p++, 1);
		}
	}
	if (r < 0) {
		ib_buf_free(&b);
		return r;
	}
	*out = ib_buf_steal(&b, NULL);
	return 0;
}

/* key := simple ( "." simple )*, whitespace allowed around the dots. */
static int parse_key(parser *ps, char ***parts_out)
{
	char **parts = xcalloc(1, sizeof(char *));
	size_t n = 0;
	for (;;) {
		skip_ws(ps);
		int c = peek(ps, 0);
		char *part = NULL;
		if (c == '"' || c == '\'') {
			if (parse_string(ps, false, &part) < 0) {
				ib_strv_free(parts);
				return IB_EINVALID;
			}
		} else if (is_bare(c)) {
			const char *s = ps->p;
			while (!at_end(ps) && is_bare((unsigned char)*ps->p))
				ps->p++;
			part = xstrndup(s, (size_t)(ps->p - s));
		} else {
			ib_strv_free(parts);
			return perr(ps, "expected a key");
		}
		if (++n > MAX_KEY_PARTS) {
			free(part);
			ib_strv_free(parts);
			return perr(ps, "key has too many parts");
		}
		parts = xrealloc(parts, (n + 1) * sizeof(char *));
		parts[n - 1] = part;
		parts[n] = NULL;
		skip_ws(ps);
		if (peek(ps, 0) != '.')
			break;
		ps->p++;
	}
	*parts_out = parts;
	return 0;
}

/* ------------------------------------------------------------------ */
/* values                                                              */

static int parse_value(parser *ps, ib_toml **out);

static bool digits_ok(const char *s, size_t n, int base)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '_') {
			if (i == 0 || i + 1 == n || s[i + 1] == '_')
				return false;
			continue;
		}
		int h = hexval((unsigned char)s[i]);
		if (h < 0 || h >= base)
			return false;
	}
	return true;
}

static char *strip_underscores(const char *s, size_t n)
{
	char *o = xmalloc(n + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] != '_')
			o[k++] = s[i];
	o[k] = '\0';
	return o;
}

static int parse_number(parser *ps, ib_toml **out)
{
	int line = ps->line;
	const char *s = ps->p;
	while (!at_end(ps) &&
	       (is_bare((unsigned char)*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
		ps->p++;
	size_t n = (size_t)(ps->p - s);
	if (n == 0)
		return perr(ps, "expected a value");
	if (memchr(s, ':', n) || (n >= 5 && s[4] == '-' && digits_ok(s, 4, 10)))
		return perr(ps, "dates and times are not supported");
	const char *d = s;
	size_t dn = n;
	bool neg = false;
	if (*d == '+' || *d == '-') {
		neg = *d == '-';
		d++;
		dn--;
	}
	if (dn == 3 && (!strncmp(d, "inf", 3) || !strncmp(d, "nan", 3))) {
		ib_toml *t = node_new(IB_TOML_FLOAT, line);
		t->f = d[0] == 'i' ? (neg ? -INFINITY : INFINITY) : NAN;
		*out = t;
		return 0;
	}
	if (dn > 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'o' || d[1] == 'b')) {
		int base = d[1] == 'x' ? 16 : d[1] == 'o' ? 8 : 2;
		if (d != s || !digits_ok(d + 2, dn - 2, base))
			return perr(ps, "invalid integer");
		cleanup_free char *c = strip_underscores(d + 2, dn - 2);
		errno = 0;
		char *e;
		unsigned long long v = strtoull(c, &e, base);
		if (errno || *e || v > INT64_MAX)
			return perr(ps, "integer out of range");
		ib_toml *t = node_new(IB_TOML_INTEGER, line);
		t->i = (int64_t)v;
		*out = t;
		return 0;
	}
	/* decimal: int [ "." digits ] [ ("e"|"E") [sign] digits ] */
	size_t ip = 0;
	while (ip < dn && ((d[ip] >= '0' && d[ip] <= '9') || d[ip] == '_'))
		ip++;
	if (!digits_ok(d, ip, 10) || (ip > 1 && d[0] == '0'))
		return perr(ps, "invalid number");
	size_t k = ip;
	bool is_float = false;
	if (k < dn && d[k] == '.') {
		size_t fs = ++k;
		while (k < dn && ((d[k] >= '0' && d[k] <= '9') || d[k] == '_'))
			k++;
		if (!digits_ok(d + fs, k - fs, 10))
			return perr(ps, "invalid number");
		is_float = true;
	}
	if (k < dn && (d[k] == 'e' || d[k] == 'E')) {
		k++;
		if (k < dn && (d[k] == '+' || d[k] == '-'))
			k++;
		size_t es = k;
		while (k < dn && ((d[k] >= '0' && d[k] <= '9') || d[k] == '_'))
			k++;
		if (!digits_ok(d + es, k - es, 10))
			return perr(ps, "invalid number");
		is_float = true;
	}
	if (k != dn)
		return perr(ps, "invalid value");
	cleanup_free char *c = strip_underscores(s, n);
	errno = 0;
	char *e;
	ib_toml *t;
	if (is_float) {
		double v = strtod(c, &e);
		if (*e)
			return perr(ps, "invalid number");
		t = node_new(IB_TOML_FLOAT, line);
		t->f = v;
	} else {
		long long v = strtoll(c, &e, 10);
		if (errno || *e)
			return perr(ps, "integer out of range");
		t = node_new(IB_TOML_INTEGER, line);
		t->i = v;
	}
	*out = t;
	return 0;
}

static int parse_array(parser *ps, ib_toml **out)
{
	ib_toml *a = node_new(IB_TOML_ARRAY, ps->line);
	a->flags |= T_FIXED;
	int start = ps->line;
	ps->p++;
	for (;;) {
		if (skip_blank(ps) < 0)
			goto fail;
		if (peek(ps, 0) == ']') {
			ps->p++;
			break;
		}
		ib_toml *v = NULL;
		if (parse_value(ps, &v) < 0)
			goto fail;
		node_push(a, NULL, v);
		if (skip_blank(ps) < 0)
			goto fail;
		if (peek(ps, 0) == ',') {
			ps->p++;
			continue;
		}
		if (peek(ps, 0) == ']') {
			ps->p++;
			break;
		}
		if (at_end(ps)) {
			ps->line = start;
			perr(ps, "unterminated array");
		} else {
			perr(ps, "expected ',' or ']' in array");
		}
		goto fail;
	}
	*out = a;
	return 0;
fail:
	ib_toml_free(a);
	return IB_EINVALID;
}

static int set_keyval(parser *ps, ib_toml *table, char **parts, ib_toml *v);

static int parse_inline_table(parser *ps, ib_toml **out)
{
	ib_toml *t = node_new(IB_TOML_TABLE, ps->line);
	ps->p++;
	skip_ws(ps);
	if (peek(ps, 0) == '}') {
		ps->p++;
		goto done;
	}
	for (;;) {
		char **parts = NULL;
		if (parse_key(ps, &parts) < 0)
			goto fail;
		skip_ws(ps);
		if (peek(ps, 0) != '=') {
			ib_strv_free(parts);
			perr(ps, "expected '=' after a key");
			goto fail;
		}
		ps->p++;
		skip_ws(ps);
		ib_toml *v = NULL;
		if (parse_value(ps, &v) < 0 || set_keyval(ps, t, parts, v) < 0) {
			ib_strv_free(parts);
			goto fail;
		}
		ib_strv_free(parts);
		skip_ws(ps);
		if (peek(ps, 0) == ',') {
			ps->p++;
			continue;
		}
		if (peek(ps, 0) == '}') {
			ps->p++;
			break;
		}
		perr(ps, "expected ',' or '}' in inline table");
		goto fail;
	}
done:
	mark_fixed(t);
	*out = t;
	return 0;
fail:
	ib_toml_free(t);
	return IB_EINVALID;
}

static bool word_at(const parser *ps, const char *w)
{
	size_t n = strlen(w);
	return (size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, w, n) && !is_bare(peek(ps, n));
}

static int parse_value(parser *ps, ib_toml **out)
{
	if (ps->depth >= MAX_DEPTH)
		return perr(ps, "values nested too deeply");
	int c = peek(ps, 0);
	int r;
	ps->depth++;
	if (c == '"' || c == '\'') {
		char *s = NULL;
		int line = ps->line;
		r = parse_string(ps, true, &s);
		if (r == 0) {
			*out = node_new(IB_TOML_STRING, line);
			(*out)->str = s;
		}
	} else if (c == '[') {
		r = parse_array(ps, out);
	} else if (c == '{') {
		r = parse_inline_table(ps, out);
	} else if (word_at(ps, "true") || word_at(ps, "false")) {
		*out = node_new(IB_TOML_BOOL, ps->line);
		(*out)->b = c == 't';
		ps->p += c == 't' ? 4 : 5;
		r = 0;
	} else if (c < 0 || c == '\n' || c == '\r' || c == '#') {
		r = perr(ps, "expected a value");
	} else {
		r = parse_number(ps, out);
	}
	ps->depth--;
	return r;
}

/* ------------------------------------------------------------------ */
/* tables                                                              */

static char *key_text(char **parts, size_t upto)
{
	ib_buf b;
	ib_buf_init(&b, 0);
	for (size_t i = 0; i < upto && parts[i]; i++)
		ib_buf_appendf(&b, "%s%s", i ? "." : "", parts[i]);
	return ib_buf_steal(&b, NULL);
}

/* Define parts = v in table (dotted parts create sub-tables).  Takes v
 * (freed on failure). */
static int set_keyval(parser *ps, ib_toml *table, char **parts, ib_toml *v)
{
	size_t n = ib_strv_len(parts);
	ib_toml *t = table;
	for (size_t i = 0; i + 1 < n; i++) {
		ib_toml *next = lookup(t, parts[i]);
		if (!next) {
			next = node_new(IB_TOML_TABLE, ps->line);
			next->flags |= T_DOTTED;
			node_push(t, xstrdup(parts[i]), next);
		} else if (next->type != IB_TOML_TABLE || !(next->flags & T_DOTTED) ||
			   (next->flags & T_FIXED)) {
			cleanup_free char *k = key_text(parts, i + 1);
			ib_toml_free(v);
			return perr(ps, "cannot add keys to \"%s\" here", k);
		}
		t = next;
	}
	if (lookup(t, parts[n - 1])) {
		cleanup_free char *k = key_text(parts, n);
		ib_toml_free(v);
		return perr(ps, "key \"%s\" defined twice", k);
	}
	node_push(t, xstrdup(parts[n - 1]), v);
	return 0;
}

/* [header] or [[header]] at ps->p; *current = the table that follows. */
static int parse_header(parser *ps, ib_toml *root, ib_toml **current)
{
	bool aot = peek(ps, 1) == '[';
	ps->p += aot ? 2 : 1;
	char **parts = NULL;
	if (parse_key(ps, &parts) < 0)
		return IB_EINVALID;
	cleanup_strv char **pv = parts;
	skip_ws(ps);
	if (peek(ps, 0) != ']' || (aot && peek(ps, 1) != ']'))
		return perr(ps, aot ? "expected ']]' after the table name"
				    : "expected ']' after the table name");
	ps->p += aot ? 2 : 1;
	size_t n = ib_strv_len(parts);
	ib_toml *t = root;
	for (size_t i = 0; i + 1 < n; i++) {
		ib_toml *next = lookup(t, parts[i]);
		if (!next) {
			next = node_new(IB_TOML_TABLE, ps->line);
			next->flags |= T_IMPLICIT;
			node_push(t, xstrdup(parts[i]), next);
		} else if (next->type == IB_TOML_ARRAY && (next->flags & T_AOT)) {
			next = next->vals[next->n - 1];
		} else if (next->type != IB_TOML_TABLE || (next->flags & T_FIXED)) {
			cleanup_free char *k = key_text(parts, i + 1);
			return perr(ps, "\"%s\" is not a table", k);
		}
		t = next;
	}
	const char *last = parts[n - 1];
	ib_toml *cur = lookup(t, last);
	cleanup_free char *k = key_text(parts, n);
	if (aot) {
		if (!cur) {
			cur = node_new(IB_TOML_ARRAY, ps->line);
			cur->flags |= T_AOT;
			node_push(t, xstrdup(last), cur);
		} else if (cur->type != IB_TOML_ARRAY || !(cur->flags & T_AOT)) {
			return perr(ps, "\"%s\" is not an array of tables", k);
		}
		ib_toml *e = node_new(IB_TOML_TABLE, ps->line);
		e->flags |= T_HEADER;
		node_push(cur, NULL, e);
		*current = e;
		return 0;
	}
	if (!cur) {
		cur = node_new(IB_TOML_TABLE, ps->line);
		node_push(t, xstrdup(last), cur);
	} else if (cur->type != IB_TOML_TABLE || !(cur->flags & T_IMPLICIT)) {
		return perr(ps, "table \"%s\" defined twice", k);
	}
	cur->flags = (cur->flags & ~(unsigned)T_IMPLICIT) | T_HEADER;
	cur->line = ps->line;
	*current = cur;
	return 0;
}

int ib_toml_parse(ib_toml **out, const char *text, size_t len, const char *file, ib_error **err)
{
	parser ps = {text, text + len, file ? file : "<input>", 1, 0, err};
	ib_toml *root = node_new(IB_TOML_TABLE, 1);
	ib_toml *current = root;
	/* a UTF-8 byte order mark is allowed */
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		ps.p += 3;
	while (!at_end(&ps)) {
		skip_ws(&ps);
		if (skip_comment(&ps) < 0)
			goto fail;
		if (at_end(&ps))
			break;
		if (is_newline(&ps)) {
			eat_newline(&ps);
			continue;
		}
		if (*ps.p == '[') {
			if (parse_header(&ps, root, &current) < 0)
				goto fail;
		} else {
			char **parts = NULL;
			if (parse_key(&ps, &parts) < 0)
				goto fail;
			skip_ws(&ps);
			if (peek(&ps, 0) != '=') {
				ib_strv_free(parts);
				perr(&ps, "expected '=' after a key");
				goto fail;
			}
			ps.p++;
			skip_ws(&ps);
			ib_toml *v = NULL;
			if (parse_value(&ps, &v) < 0 || set_keyval(&ps, current, parts, v) < 0) {
				ib_strv_free(parts);
				goto fail;
			}
			ib_strv_free(parts);
		}
		if (end_of_line(&ps) < 0)
			goto fail;
	}
	*out = root;
	return 0;
fail:
	ib_toml_free(root);
	return IB_EINVALID;
}

/* ------------------------------------------------------------------ */
/* queries                                                             */

ib_toml_type ib_toml_type_of(const ib_toml *t)
{
	return t->type;
}

int ib_toml_line(const ib_toml *t)
{
	return t ? t->line : 0;
}

const ib_toml *ib_toml_get(const ib_toml *t, const char *key)
{
	return lookup(t, key);
}

size_t ib_toml_len(const ib_toml *t)
{
	return t && (t->type == IB_TOML_TABLE || t->type == IB_TOML_ARRAY) ? t->n : 0;
}

const ib_toml *ib_toml_at(const ib_toml *t, size_t i, const char **key_out)
{
	if (i >= ib_toml_len(t))
		return NULL;
	if (key_out)
		*key_out = t->type == IB_TOML_TABLE ? t->keys[i] : NULL;
	return t->vals[i];
}

const char *ib_toml_string(const ib_toml *t)
{
	return t && t->type == IB_TOML_STRING ? t->str : NULL;
}

bool ib_toml_bool(const ib_toml *t)
{
	return t && t->type == IB_TOML_BOOL ? t->b : false;
}

int64_t ib_toml_int(const ib_toml *t)
{
	return t && t->type == IB_TOML_INTEGER ? t->i : 0;
}
