/* Registry credentials (SPEC §5) and the pieces of the registry
 * authentication protocol that need no network: auth file lookup and
 * writing, credential helpers, WWW-Authenticate parsing, token responses
 * and scope strings.  registry_auth.c drives the protocol with these.
 *
 * Auth files are docker-compatible JSON:
 *   {"auths": {"HOST": {"auth": base64("user:pass")} | {"username":..,"password":..}},
 *    "credsStore": "NAME", "credHelpers": {"HOST": "NAME"}}
 * A helper NAME is the host program `docker-credential-NAME` speaking
 * docker's credential helper protocol (get / store / erase).
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

/* The files `login` writes and `logout` edits (see ib_auth_login_store):
 * [authfile] when given, else [$REGISTRY_AUTH_FILE] when set, else docker's
 * config ($DOCKER_CONFIG/config.json or ~/.docker/config.json) followed by
 * podman's $XDG_RUNTIME_DIR/containers/auth.json when that file exists.
 * NULL-terminated, caller frees with ib_strv_free. */
char **ib_auth_login_files(const char *authfile);

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

/* Remove host's entry from auths in the file at path; IB_ENOTFOUND when
 * there was none.  Other entries are kept, credHelpers mappings included
 * (they are the user's configuration, not a login). */
int ib_auth_remove(const char *path, const char *host, ib_error **err);

/* The docker-credential-* protocol with the program `docker-credential-NAME`
 * (found in $PATH).  The server URL sent is the registry domain, or
 * "https://index.docker.io/v1/" for Docker Hub, as the docker CLI sends.
 *
 * get: the URL on stdin, {"Username","Secret"} on stdout.  A helper that
 * reports "credentials not found" gives 0 with out->username NULL. */
int ib_auth_helper_get(const char *helper, const char *host, ib_credentials *out, ib_error **err);
/* store: {"ServerURL","Username","Secret"} on stdin. */
int ib_auth_helper_store(const char *helper, const char *host, const char *user, const char *pass,
			 ib_error **err);
/* erase: the URL on stdin; IB_ENOTFOUND when the helper held nothing. */
int ib_auth_helper_erase(const char *helper, const char *host, ib_error **err);

/* ---- login / logout ---- */

/* Where credentials went (or were removed from). */
typedef struct ib_auth_stored {
	char **plain_files; /* auth files holding (held) the secret in plain text */
	char **helpers;	    /* "docker-credential-NAME" programs holding (held) it */
	char **warnings;    /* logout: helpers that failed to erase, as messages */
} ib_auth_stored;
void ib_auth_stored_clear(ib_auth_stored *s);

/* Store user/pass for host in every file of ib_auth_login_files: when the
 * file configures a helper for host (credHelpers[host], else credsStore)
 * the helper stores the secret (each helper once) and any plain entry for
 * host is dropped from the file; otherwise the file gets a plain entry
 * (ib_auth_save).  The caller warns about out->plain_files. */
int ib_auth_login_store(const char *authfile, const char *host, const char *user, const char *pass,
			ib_auth_stored *out, ib_error **err);

/* Undo ib_auth_login_store over the same files: erase from each helper
 * configured for host (a helper that fails is reported in out->warnings, as
 * docker does, and the files are cleaned anyway), drop host's plain
 * entries; credHelpers mappings are kept.  IB_ENOTFOUND (naming the files) when nothing held
 * credentials for host. */
int ib_auth_logout(const char *authfile, const char *host, ib_auth_stored *out, ib_error **err);

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
