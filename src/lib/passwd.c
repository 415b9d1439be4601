#include "passwd.h"

#include <string.h>

#define MAX_FIELDS 7

/* One line split at ':' into at most MAX_FIELDS fields [start, start+len). */
typedef struct line {
	const char *f[MAX_FIELDS];
	size_t fl[MAX_FIELDS];
	size_t n;
} line;

/* Split the line starting at p (ending at '\n' or end); returns where the
 * next line starts. */
static const char *split_line(const char *p, const char *end, line *l)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	const char *eol = nl ? nl : end;
	l->n = 0;
	for (;;) {
		const char *colon = memchr(p, ':', (size_t)(eol - p));
		l->f[l->n] = p;
		l->fl[l->n++] = (size_t)((colon ? colon : eol) - p);
		if (!colon || l->n == MAX_FIELDS)
			break;
		p = colon + 1;
	}
	return nl ? nl + 1 : end;
}

/* A decimal id below UINT32_MAX ((uid_t)-1 means "no id"). */
static bool parse_id(const char *s, size_t n, uint32_t *out)
{
	uint64_t v = 0;
	if (n == 0 || n > 10)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v >= UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool field_is(const line *l, size_t i, const char *s, size_t n)
{
	return l->fl[i] == n && !memcmp(l->f[i], s, n);
}

/* The first valid passwd line named name (non-NULL) or with uid. */
static bool passwd_lookup(const char *buf, size_t len, const char *name, uint32_t uid,
			  ib_passwd_entry *out)
{
	size_t name_len = name ? strlen(name) : 0;
	const char *end = buf + len;
	for (const char *p = buf; p < end;) {
		line l;
		p = split_line(p, end, &l);
		uint32_t u, g;
		if (l.n < 4 || !parse_id(l.f[2], l.fl[2], &u) || !parse_id(l.f[3], l.fl[3], &g))
			continue;
		if (name ? !field_is(&l, 0, name, name_len) : u != uid)
			continue;
		out->name = l.f[0];
		out->name_len = l.fl[0];
		out->uid = u;
		out->gid = g;
		out->home = l.n > 5 ? l.f[5] : "";
		out->home_len = l.n > 5 ? l.fl[5] : 0;
		return true;
	}
	return false;
}

bool ib_passwd_by_name(const char *buf, size_t len, const char *name, ib_passwd_entry *out)
{
	return passwd_lookup(buf, len, name, 0, out);
}

bool ib_passwd_by_uid(const char *buf, size_t len, uint32_t uid, ib_passwd_entry *out)
{
	return passwd_lookup(buf, len, NULL, uid, out);
}

bool ib_group_by_name(const char *buf, size_t len, const char *name, uint32_t *gid)
{
	size_t name_len = strlen(name);
	const char *end = buf + len;
	for (const char *p = buf; p < end;) {
		line l;
		p = split_line(p, end, &l);
		uint32_t g;
		if (l.n >= 3 && field_is(&l, 0, name, name_len) && parse_id(l.f[2], l.fl[2], &g)) {
			*gid = g;
			return true;
		}
	}
	return false;
}

void ib_group_each_membership(const char *buf, size_t len, const char *user, size_t user_len,
			      void (*fn)(uint32_t gid, void *payload), void *payload)
{
	const char *end = buf + len;
	for (const char *p = buf; p < end;) {
		line l;
		p = split_line(p, end, &l);
		uint32_t g;
		if (l.n < 4 || !parse_id(l.f[2], l.fl[2], &g))
			continue;
		const char *m = l.f[3], *mend = l.f[3] + l.fl[3];
		while (m < mend) {
			const char *comma = memchr(m, ',', (size_t)(mend - m));
			const char *me = comma ? comma : mend;
			if ((size_t)(me - m) == user_len && !memcmp(m, user, user_len))
				fn(g, payload);
			m = comma ? comma + 1 : mend;
		}
	}
}

bool ib_passwd_find(const char *buf, size_t len, const char *name, uint32_t *id, uint32_t *gid)
{
	if (!gid)
		return ib_group_by_name(buf, len, name, id);
	ib_passwd_entry e;
	if (!ib_passwd_by_name(buf, len, name, &e))
		return false;
	*id = e.uid;
	*gid = e.gid;
	return true;
}
