/* Ignore files (.dockerignore syntax): which paths of the build context a
 * build does not see.  One pattern a line, Go filepath.Match syntax with
 * '**' for any number of directories; '#' starts a comment line; a leading
 * '!' makes an exception; a leading '/' is ignored; the last matching
 * pattern wins, and a pattern matching a directory matches what is in it. */
#ifndef IB_IGNORE_H
#define IB_IGNORE_H

#include <stdbool.h>

#include "error.h"

typedef struct ib_ignore ib_ignore;

/* Rules from text (the contents of an ignore file); never NULL. */
ib_ignore *ib_ignore_parse(const char *text);

/* The ignore file of a build: RECIPE.dockerignore or .imgbuildignore next
 * to the recipe (recipe_path may be NULL), else CONTEXT/.dockerignore; the
 * first that exists is used.  *out is NULL when there is none. */
int ib_ignore_load(const char *context_dir, const char *recipe_path, ib_ignore **out,
		   ib_error **err);

/* Whether relpath (relative to the context root, no leading "/") is
 * excluded.  A NULL ig excludes nothing. */
bool ib_ignore_match(const ib_ignore *ig, const char *relpath);

/* Whether some '!' exception exists: then an excluded directory may still
 * hold included paths, and walks must look inside it. */
bool ib_ignore_has_exceptions(const ib_ignore *ig);

/* The file the rules came from (NULL for parsed text). */
const char *ib_ignore_source(const ib_ignore *ig);

void ib_ignore_free(ib_ignore *ig);

#endif
