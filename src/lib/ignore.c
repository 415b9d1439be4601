/* Ignore files: .dockerignore rules (see ignore.h). */
#include "ignore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pathglob.h"
#include "util.h"

#define IGNORE_FILE_MAX ((size_t)4 << 20)

typedef struct {
	char *pattern; /* cleaned: no leading "/" or "./", no trailing "/" */
	size_t len;
	bool exception;
	bool literal; /* no glob character: compared, not matched */
} ignore_rule;

struct ib_ignore {
	ignore_rule *rules;
	size_t n;
	bool exceptions;
	char *source;
};

/* Lexically clean a pattern like Go's filepath.Clean, relative to the
 * root: "/a//b/./c/" -> "a/b/c"; ".." segments are dropped with their
 * parent.  Returns "" for the root itself. */
static char *clean_pattern(const char *p)
{
	size_t n = strlen(p);
	char *out = xcalloc(1, n + 1);
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
			if (o)
				out[o++] = '/';
			memcpy(out + o, s, len);
			o += len;
		}
		s += len;
	}
	out[o] = '\0';
	return out;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

ib_ignore *ib_ignore_parse(const char *text)
{
	ib_ignore *ig = xcalloc(1, sizeof(*ig));
	cleanup_free char *dup = xstrdup(text);
	char *save = dup;
	while (save) {
		char *line = save;
		char *nl = strchr(save, '\n');
		if (nl)
			*nl = '\0';
		save = nl ? nl + 1 : NULL;
		if (line[0] == '#') /* docker: a comment only at the start of a line */
			continue;
		line = trim(line);
		bool exception = false;
		if (line[0] == '!') {
			exception = true;
			line = trim(line + 1);
		}
		if (!*line)
			continue;
		char *pat = clean_pattern(line);
		if (!*pat) { /* "." or "/": the whole context */
			free(pat);
			pat = xstrdup("**");
		}
		ig->rules = xrealloc(ig->rules, (ig->n + 1) * sizeof(ignore_rule));
		ig->rules[ig->n++] = (ignore_rule){.pattern = pat,
						   .len = strlen(pat),
						   .exception = exception,
						   .literal = !strpbrk(pat, "*?[\\")};
		ig->exceptions |= exception;
	}
	return ig;
}

int ib_ignore_load(const char *context_dir, const char *recipe_path, ib_ignore **out,
		   ib_error **err)
{
	*out = NULL;
	char *cand[3] = {NULL, NULL, NULL};
	size_t nc = 0;
	if (recipe_path) {
		cand[nc++] = xasprintf("%s.dockerignore", recipe_path);
		cleanup_free char *dir = xstrdup(recipe_path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		cand[nc++] = slash ? ib_path_join(*dir ? dir : "/", ".imgbuildignore")
				   : xstrdup(".imgbuildignore");
	}
	cand[nc++] = ib_path_join(context_dir, ".dockerignore");
	int rc = 0;
	for (size_t i = 0; i < nc && rc == 0 && !*out; i++) {
		struct stat st;
		if (stat(cand[i], &st) < 0) {
			if (errno != ENOENT && errno != ENOTDIR)
				rc = ib_error_set(err, errno, "ignore file %s", cand[i]);
			continue;
		}
		cleanup_free char *text = NULL;
		if (ib_read_file(cand[i], IGNORE_FILE_MAX, &text, NULL, err) < 0) {
			rc = ib_error_wrap(err, "ignore file");
			break;
		}
		*out = ib_ignore_parse(text);
		(*out)->source = xstrdup(cand[i]);
	}
	for (size_t i = 0; i < nc; i++)
		free(cand[i]);
	return rc;
}

/* The pattern matches path or one of its parent directories. */
static bool rule_matches(const char *pattern, const char *path)
{
	for (size_t k = strlen(path);;) {
		if (ib_glob_match_len(pattern, path, k))
			return true;
		while (k > 0 && path[k - 1] != '/')
			k--;
		if (k == 0)
			return false;
		k--;
	}
}

/* No empty or "." segment, which the glob matcher skips: a literal pattern
 * then matches exactly the path that starts with it, up to a '/' or the end. */
static bool path_is_clean(const char *p)
{
	for (const char *s = p;;) {
		const char *e = strchrnul(s, '/');
		if (e == s || (e - s == 1 && *s == '.'))
			return false;
		if (!*e)
			return true;
		s = e + 1;
	}
}

bool ib_ignore_match(const ib_ignore *ig, const char *relpath)
{
	if (!ig || !*relpath)
		return false;
	bool excluded = false;
	int clean = -1; /* not known yet */
	for (size_t i = 0; i < ig->n; i++) {
		const ignore_rule *r = &ig->rules[i];
		/* only a rule that could change the answer needs a match */
		if (r->exception != excluded)
			continue;
		bool m;
		if (r->literal && (clean < 0 ? (clean = path_is_clean(relpath)) : clean))
			m = !strncmp(relpath, r->pattern, r->len) &&
			    (relpath[r->len] == '\0' || relpath[r->len] == '/');
		else
			m = rule_matches(r->pattern, relpath);
		if (m)
			excluded = !r->exception;
	}
	return excluded;
}

bool ib_ignore_has_exceptions(const ib_ignore *ig)
{
	return ig && ig->exceptions;
}

const char *ib_ignore_source(const ib_ignore *ig)
{
	return ig ? ig->source : NULL;
}

void ib_ignore_free(ib_ignore *ig)
{
	if (!ig)
		return;
	for (size_t i = 0; i < ig->n; i++)
		free(ig->rules[i].pattern);
	free(ig->rules);
	free(ig->source);
	free(ig);
}
