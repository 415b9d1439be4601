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

/* Match path segments [p..] against pattern segments [q..]. */
static bool match_segs(char **pat, size_t np, char **path, size_t nq)
{
	if (np == 0)
		return nq == 0;
	if (!strcmp(pat[0], "**")) {
		for (size_t k = 0; k <= nq; k++)
			if (match_segs(pat + 1, np - 1, path + k, nq - k))
				return true;
		return false;
	}
	if (nq == 0 || fnmatch(pat[0], path[0], 0) != 0)
		return false;
	return match_segs(pat + 1, np - 1, path + 1, nq - 1);
}

static char **split_segs(const char *s)
{
	char **v = xcalloc(1, sizeof(char *));
	while (*s) {
		size_t n = strcspn(s, "/");
		if (n && !(n == 1 && s[0] == '.')) {
			cleanup_free char *seg = xstrndup(s, n);
			ib_strv_push(&v, seg);
		}
		s += n;
		while (*s == '/')
			s++;
	}
	return v;
}

bool ib_glob_match(const char *pattern, const char *path)
{
	cleanup_strv char **pat = split_segs(pattern);
	cleanup_strv char **segs = split_segs(path);
	return match_segs(pat, ib_strv_len(pat), segs, ib_strv_len(segs));
}
