#include "passwd.h"

#include <string.h>

#include "util.h"

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

bool ib_passwd_find(const char *buf, size_t len, const char *name, uint32_t *id, uint32_t *gid)
{
	size_t name_len = strlen(name);
	const char *end = buf + len;
	for (const char *line = buf; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *eol = nl ? nl : end;
		/* fields 0..3 as [start, end) */
		const char *f[4];
		size_t fl[4];
		size_t nf = 0;
		for (const char *p = line; nf < 4;) {
			const char *colon = memchr(p, ':', (size_t)(eol - p));
			f[nf] = p;
			fl[nf++] = (size_t)((colon ? colon : eol) - p);
			if (!colon)
				break;
			p = colon + 1;
		}
		uint32_t a, b;
		if (nf >= (gid ? 4u : 3u) && fl[0] == name_len && !memcmp(f[0], name, name_len) &&
		    parse_id(f[2], fl[2], &a) && (!gid || parse_id(f[3], fl[3], &b))) {
			*id = a;
			if (gid)
				*gid = b;
			return true;
		}
		line = eol + 1;
	}
	return false;
}
