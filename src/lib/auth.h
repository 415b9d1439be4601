/* Registry credentials (SPEC §5) and the pieces of the registry
 * authentication protocol that need no network: auth file lookup and
 * writing, credential helpers, WWW-Authenticate parsing, token responses
 * and scope strings.  registry_auth.c drives the protocol with these.
 *
 * Auth files are docker-compatible JSON:
 *   {"auths": {"HOST": {"auth": base64("user:pass")} | {"username":..,"password":..}},
 *    "credsStore": "NAME", "credHelpers": {"HOST": "NAME"}}
 * A helper NAME is the host program `docker-credential-NAME`, run as
 * `docker-credential-NAME get` with the host on stdin.
 *
 * Nothing here ever prints a secret; error messages name files and hosts
 * only. */
#ifndef IB_AUTH_H
#define IB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct ib_credentials {
	char *username; /* NULL when no credentials were found */
	char *password;
} ib_credentials;

/* Free the strings (the password is wiped first) and zero c. Safe on a
 * zeroed struct. */
void ib_credentials_clear(ib_credentials *c);

/* ---- auth files ---- */

/* The auth files consulted for credentials, in lookup order.  A file the
 * user named (authfile, else $REGISTRY_AUTH_FILE) is the only one consulted,
 * as podman does; otherwise $XDG_RUNTIME_DIR/containers/auth.json,
 * $DOCKER_CONFIG/config.json, ~/.docker/config.json (those whose variables
 * are set).  NULL-terminated, caller frees with ib_strv_free. */
char **ib_auth_file_candidates(const char *authfile);

/* The file `login` writes and `logout` edits: authfile, else
 * $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json when
 * XDG_RUNTIME_DIR is set, else ~/.docker/config.json.  Caller frees. */
char *ib_auth_login_file(const char *authfile);

/* Normalise a server name as users write it ("https://index.docker.io/v1/",
 * "registry-1.docker.io", "http://host:5000/") to the registry domain used
 * as key ("docker.io", "host:5000").  Caller frees. */
char *ib_auth_normalize_host(const char *server);

/* Credentials for host (a registry domain such as "docker.io" or
 * "localhost:5000"): the first candidate file that knows the host wins; in
 * a file, credHelpers[host] comes first, then auths (keys are compared
 * after ib_auth_normalize_host), then credsStore.  Missing files are
 * skipped.  On success returns 0 and fills *out (out->username NULL when
 * nothing was found).  A malformed file or a failing helper is an error
 * naming the file or helper. */
int ib_auth_lookup(const char *authfile, const char *host, ib_credentials *out, ib_error **err);

/* Same as ib_auth_lookup, over one file only (no fallback). */
int ib_auth_lookup_file(const char *path, const char *host, ib_credentials *out, ib_error **err);

/* Store user/pass for host in the auth file at path (created with its
 * parent directories when missing), keeping every other entry.  The file
 * is replaced atomically and has mode 0600. */
int ib_auth_save(const char *path, const char *host, const char *user, const char *pass,
		 ib_error **err);

/* Remove host's entry from auths (and credHelpers) in the file at path;
 * IB_ENOTFOUND when there was none.  Other entries are kept. */
int ib_auth_remove(const char *path, const char *host, ib_error **err);

/* Run `docker-credential-NAME get` (found in $PATH) with host on stdin and
 * parse its {"Username","Secret"} answer.  A helper that reports
 * "credentials not found" gives 0 with out->username NULL. */
int ib_auth_helper_get(const char *helper, const char *host, ib_credentials *out, ib_error **err);

/* ---- base64 (RFC 4648, with padding) ---- */
char *ib_base64_encode(const void *data, size_t len);
/* Accepts missing padding; rejects other junk.  *out is NUL-terminated. */
int ib_base64_decode(const char *s, unsigned char **out, size_t *len_out, ib_error **err);

/* ---- WWW-Authenticate ---- */
typedef struct ib_auth_challenge {
	char *scheme; /* lower case: "basic", "bearer", ... */
	char *realm;  /* NULL when absent */
	char *service;
	char *scope;
	char *error; /* e.g. "insufficient_scope" */
} ib_auth_challenge;

/* Parse a WWW-Authenticate value (several headers may be joined with
 * ", "): any number of challenges, each `scheme [param=value, ...]` with
 * values as tokens or quoted strings with backslash escapes; parameter
 * names are case-insensitive.  IB_EINVALID for a value with no challenge
 * or an unterminated quoted string. */
int ib_auth_parse_challenges(const char *value, ib_auth_challenge **out, size_t *n_out,
			     ib_error **err);
void ib_auth_challenges_free(ib_auth_challenge *c, size_t n);

/* ---- scopes ---- */
/* "repository:NAME:pull" or "repository:NAME:pull,push". Caller frees. */
char *ib_auth_scope_repository(const char *name, bool push);
/* Union of two space-separated scope lists, merging the actions of the
 * same resource ("repository:a:pull" + "repository:a:push" ->
 * "repository:a:pull,push").  Either may be NULL or empty.  Output is
 * sorted, so equal sets give equal strings (usable as cache keys). */
char *ib_auth_scope_merge(const char *a, const char *b);
/* True when every action of every resource in need is in have. */
bool ib_auth_scope_covers(const char *have, const char *need);

/* ---- token endpoint ---- */
/* Parse a token response body: "token" or "access_token" (the former
 * wins), "expires_in" in seconds (default 60 when absent or < 1). */
int ib_auth_parse_token_response(const char *body, size_t len, char **token_out,
				 int64_t *expires_in_out, ib_error **err);

#endif
