/* Variable expansion with Dockerfile rules: $VAR, ${VAR}, ${VAR:-word},
 * ${VAR-word}, ${VAR:+word}, ${VAR+word}, ${VAR:?msg}, ${VAR?msg} and \$ for a
 * literal dollar.  Only "\$" is an escape: other backslashes are kept, so a
 * string without '$' comes back unchanged. */
#ifndef IB_EXPAND_H
#define IB_EXPAND_H

#include <jansson.h>

#include "error.h"

/* Value of the variable name[0..len), or NULL when it is not set. */
typedef const char *(*ib_expand_lookup)(void *ctx, const char *name, size_t len);

/* Expand s; returns a new string or NULL with *err set (unterminated ${,
 * a bad name, ${VAR:?msg} with VAR unset). */
char *ib_expand(const char *s, ib_expand_lookup lookup, void *ctx, ib_error **err);

/* Same, against an OCI Env array of "K=V" strings (NULL: nothing set);
 * the first of duplicate names wins, as for a process environment. */
char *ib_expand_env(const char *s, json_t *env, ib_error **err);

#endif
