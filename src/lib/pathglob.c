#include "pathglob.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define GLOB_MAX_RESULTS 100000

bool ib_glob_has_meta(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

typedef struct glob_state {
	const char *root;
	char **segs;
	size_t nseg;
	bool dirs_only;
	char **out;
	size_t n, alloc;
} glob_state;

static int glob_add(glob_state *g, const char *rel, bool is_dir, ib_error **err)
{
	if (g->dirs_only && !is_dir)
		return 0;
	if (g->n >= GLOB_MAX_RESULTS)
		return ib_error_setc(err, IB_ETOOLARGE, "more than %d matches", GLOB_MAX_RESULTS);
	if (g->n + 2 > g->alloc) {
		g->alloc = g->alloc ? g->alloc * 2 : 64;
		g->out = xrealloc(g->out, g->alloc * sizeof(char *));
	}
	g->out[g->n++] = xstrdup(rel);
	g->out[g->n] = NULL;
	return 0;
}

static char *rel_join(const char *dir, const char *name)
{
	return *dir ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

/* Entries of a directory (relative to root), sorted; NULL-terminated. */
static int glob_list(glob_state *g, const char *dir, char ***names_out, ib_error **err)
{
	cleanup_free char *full = ib_path_join(g->root, *dir ? dir : ".");
	cleanup_dir DIR *d = opendir(full);
	*names_out = NULL;
	if (!d) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return ib_error_set(err, errno, "open directory %s", *dir ? dir : ".");
	}
	cleanup_strv char **names = xcalloc(1, sizeof(char *));
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		ib_strv_push(&names, de->d_name);
	}
	if (errno)
		return ib_error_set(err, errno, "read directory %s", *dir ? dir : ".");
	*names_out = steal_pointer(&names);
	return 0;
}

static bool rel_is_dir(glob_state *g, const char *rel)
{
	cleanup_free char *full = ib_path_join(g->root, rel);
	struct stat st;
	return lstat(full, &st) == 0 && S_ISDIR(st.st_mode);
}

static int glob_rec(glob_state *g, const char *dir, size_t i, ib_error **err)
{
	const char *seg = g->segs[i];
	bool last = i + 1 == g->nseg;

	if (!ib_glob_has_meta(seg)) {
		cleanup_free char *rel = rel_join(dir, seg);
		cleanup_free char *full = ib_path_join(g->root, rel);
		struct stat st;
		if (lstat(full, &st) < 0)
			return 0;
		if (last)
			return glob_add(g, rel, S_ISDIR(st.st_mode), err);
		if (S_ISDIR(st.st_mode))
			return glob_rec(g, rel, i + 1, err);
		return 0;
	}

	cleanup_strv char **names = NULL;
	if (glob_list(g, dir, &names, err) < 0)
		return IB_ERROR;
	bool starstar = !strcmp(seg, "**");
	if (starstar && !last && glob_rec(g, dir, i + 1, err) < 0)
		return IB_ERROR;
	for (size_t k = 0; names && names[k]; k++) {
		cleanup_free char *rel = rel_join(dir, names[k]);
		bool is_dir = rel_is_dir(g, rel);
		if (starstar) {
			if (last && glob_add(g, rel, is_dir, err) < 0)
				return IB_ERROR;
			if (is_dir && glob_rec(g, rel, i, err) < 0)
				return IB_ERROR;
			continue;
		}
		if (fnmatch(seg, names[k], 0) != 0)
			continue;
		if (last) {
			if (glob_add(g, rel, is_dir, err) < 0)
				return IB_ERROR;
		} else if (is_dir && glob_rec(g, rel, i + 1, err) < 0) {
			return IB_ERROR;
		}
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int ib_glob(const char *root, const char *pattern, char ***out, ib_error **err)
{
	*out = NULL;
	if (!*pattern)
		return ib_error_setc(err, IB_EINVALID, "empty pattern");
	if (pattern[0] == '/')
		return ib_error_setc(err, IB_EINVALID,
				     "'%s' is absolute; build context paths are relative", pattern);
	cleanup_strv char **segs = xcalloc(1, sizeof(char *));
	const char *p = pattern;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && !strncmp(p, "..", 2))
			return ib_error_setc(err, IB_EUNSAFE, "'%s' is outside the build context",
					     pattern);
		if (n && !(n == 1 && p[0] == '.')) {
			cleanup_free char *s = xstrndup(p, n);
			ib_strv_push(&segs, s);
		}
		p += n;
		while (*p == '/')
			p++;
	}
	glob_state g = {root, segs, ib_strv_len(segs), pattern[strlen(pattern) - 1] == '/', NULL,
			0,    0};
	if (g.nseg == 0) {
		*out = xcalloc(1, sizeof(char *));
		return 0;
	}
	if (glob_rec(&g, "", 0, err) < 0) {
		ib_strv_free(g.out);
		return IB_ERROR;
	}
	if (!g.out)
		g.out = xcalloc(1, sizeof(char *));
	qsort(g.out, g.n, sizeof(char *), cmp_str);
	size_t w = 0;
	for (size_t r = 0; r < g.n; r++) {
		if (w && !strcmp(g.out[w - 1], g.out[r])) {
			free(g.out[r]);
			continue;
		}
		g.out[w++] = g.out[r];
	}
	g.out[w] = NULL;
	*out = g.out;
	return 0;
}

/* The next segment of [*s, end) in seg and len, past empty and "."
 * segments; false at the end. */
static bool next_seg(const char **s, const char *end, const char **seg, size_t *len)
{
	for (;;) {
		while (*s < end && **s == '/')
			(*s)++;
		if (*s >= end)
			return false;
		const char *b = *s;
		while (*s < end && **s != '/')
			(*s)++;
		size_t n = (size_t)(*s - b);
		if (n == 1 && b[0] == '.')
			continue;
		*seg = b;
		*len = n;
		return true;
	}
}

/* One pattern segment against one path segment, as fnmatch(3) with no
 * flags; a segment without a special character is compared directly. */
static bool seg_match(const char *p, size_t pn, const char *s, size_t sn)
{
	bool meta = false;
	for (size_t i = 0; i < pn && !meta; i++)
		meta = p[i] == '*' || p[i] == '?' || p[i] == '[' || p[i] == '\\';
	if (!meta)
		return pn == sn && !memcmp(p, s, pn);
	char pbuf[256], sbuf[256];
	cleanup_free char *pheap = pn < sizeof(pbuf) ? NULL : xstrndup(p, pn);
	cleanup_free char *sheap = sn < sizeof(sbuf) ? NULL : xstrndup(s, sn);
	if (!pheap) {
		memcpy(pbuf, p, pn);
		pbuf[pn] = '\0';
	}
	if (!sheap) {
		memcpy(sbuf, s, sn);
		sbuf[sn] = '\0';
	}
	return fnmatch(pheap ? pheap : pbuf, sheap ? sheap : sbuf, 0) == 0;
}

/* Match the path segments of [s, send) against the pattern segments of
 * [p, pend); nothing is allocated for segments of usual length. */
static bool match_from(const char *p, const char *pend, const char *s, const char *send)
{
	const char *ps, *ss;
	size_t pn, sn;
	if (!next_seg(&p, pend, &ps, &pn))
		return !next_seg(&s, send, &ss, &sn);
	if (pn == 2 && ps[0] == '*' && ps[1] == '*') {
		for (;;) {
			if (match_from(p, pend, s, send))
				return true;
			if (!next_seg(&s, send, &ss, &sn))
				return false;
		}
	}
	if (!next_seg(&s, send, &ss, &sn) || !seg_match(ps, pn, ss, sn))
		return false;
	return match_from(p, pend, s, send);
}

bool ib_glob_match_len(const char *pattern, const char *path, size_t len)
{
	return match_from(pattern, pattern + strlen(pattern), path, path + len);
}

bool ib_glob_match(const char *pattern, const char *path)
{
	return ib_glob_match_len(pattern, path, strlen(path));
}
