/* Globbing inside a directory tree, the same way for recipe evaluation
 * (context.glob, copy source checks) and for the builder (copy sources in
 * the context or in a stage's root). */
#ifndef IB_PATHGLOB_H
#define IB_PATHGLOB_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* True when s has a glob character ('*', '?' or '['). */
bool ib_glob_has_meta(const char *s);

/* Paths (relative to root) matching pattern, sorted, without duplicates,
 * NULL-terminated in *out (caller frees with ib_strv_free).  '*', '?' and
 * '[..]' match inside one segment (dot files too, never "." or ".."), '**'
 * any number of directories; a trailing '/' matches directories only.
 * Symlinks are matched as entries but never descended into.  An absolute
 * pattern is IB_EINVALID, one with a ".." segment IB_EUNSAFE; more than
 * 100000 matches IB_ETOOLARGE. */
int ib_glob(const char *root, const char *pattern, char ***out, ib_error **err);

/* Whether the relative path matches pattern, with the segment rules of
 * ib_glob ('**' spans any number of segments, including none). */
bool ib_glob_match(const char *pattern, const char *path);

/* ib_glob_match on the first len bytes of path. */
bool ib_glob_match_len(const char *pattern, const char *path, size_t len);

#endif
