/* OCI distribution client (SPEC §5): pull, push, catalog and tags over
 * libcurl, plus a small session API for single blobs and manifests (the
 * builder's remote cache uses it).
 *
 * Transport: HTTPS with the system CAs (SSL_CERT_FILE / SSL_CERT_DIR
 * honoured).  Loopback registries are probed with plain HTTP first and
 * switch to HTTPS when the server turns out to speak TLS; with
 * tls_verify=false HTTPS is tried without verification, then plain HTTP.
 * Requests are retried on 408/429/5xx, connection resets and timeouts
 * with exponential backoff, honouring Retry-After (capped at 30 s), at
 * most max_retries times.  Redirects are followed by hand: Authorization
 * is only ever sent to the registry's own origin (or the token realm's).
 *
 * Errors name the request and the registry's answer, e.g.
 *   "PUT /v2/a/manifests/t: 400 Bad Request: MANIFEST_INVALID: manifest invalid"
 * with IB_EAUTH for 401/403, IB_ENOTFOUND for 404, IB_EDIGEST for content
 * that does not match its digest, IB_ETOOLARGE for bodies over a cap and
 * IB_ENET for transport failures after the retries.  Nothing logged or
 * returned ever contains a credential or a token. */
#ifndef IB_REGISTRY_H
#define IB_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "auth.h"
#include "digest.h"
#include "error.h"
#include "oci.h"
#include "store.h"

/* Byte progress of one transfer.  what = the blob digest.  Calls are
 * serialised by the registry code (never concurrent), possibly from a
 * worker thread. */
typedef void (*ib_transfer_progress_fn)(const char *what, uint64_t done, uint64_t total,
					void *payload);
/* State changes of one blob: "exists" (already at the destination),
 * "mounted" (cross-repo mount), "skipped" (foreign layer not pushed),
 * "done" (transferred and verified).  Serialised like progress. */
typedef void (*ib_transfer_event_fn)(const char *what, const char *state, uint64_t size,
				     void *payload);

typedef struct ib_registry_options {
	bool tls_verify;      /* false = don't verify TLS and allow plain http */
	const char *authfile; /* NULL = SPEC §5 lookup order */
	bool debug;	      /* log requests to stderr (never credentials or tokens) */
	int max_retries;      /* default 5 */
	int64_t chunk_size;   /* push: single PUT up to this size, chunked PATCH above */
	int parallel;	      /* concurrent blob transfers, default 3 */
	const char *platform; /* "os/arch[/variant]" or NULL = host */
	ib_transfer_progress_fn progress;
	void *payload; /* for progress and event */
	ib_transfer_event_fn event;
} ib_registry_options;
#define IB_REGISTRY_OPTIONS_INIT                                                                   \
	{                                                                                          \
		true, NULL, false, 5, 64 << 20, 3, NULL, NULL, NULL, NULL                          \
	}

/* Pull ref into the store and tag it (tag = the full normalised ref).  An
 * index / manifest list resolves to the entry for o->platform (default:
 * the host).  Every blob is verified against its digest and size before
 * the tag is written; on any failure nothing is tagged.  desc_out (may be
 * NULL) receives the stored platform-specific manifest descriptor (free
 * with ib_descriptor_clear). */
int ib_registry_pull(ib_store *s, const char *ref, const ib_registry_options *o,
		     ib_descriptor *desc_out, ib_error **err);

/* Push the local image src_ref to dest_ref (NULL = same reference).
 * Blobs the registry has are skipped, blobs known in another repository
 * of the same registry are mounted, foreign layers are not pushed.  The
 * manifest bytes are pushed exactly as stored.  digest_out = the manifest
 * digest the registry holds. */
int ib_registry_push(ib_store *s, const char *src_ref, const char *dest_ref,
		     const ib_registry_options *o, char digest_out[IB_DIGEST_BUFLEN],
		     ib_error **err);

/* Repositories of a registry (GET /v2/_catalog, following Link
 * pagination), limited to names starting with PREFIX when host_prefix is
 * "HOST/PREFIX".  *repos_out: NULL-terminated, names without the host;
 * free with ib_strv_free. */
int ib_registry_catalog(const char *host_prefix, const ib_registry_options *o, char ***repos_out,
			ib_error **err);

/* Tags of a repository ("host/name", a tag or digest in it is ignored). */
int ib_registry_tags(const char *repo_ref, const ib_registry_options *o, char ***tags_out,
		     ib_error **err);

/* Check creds against host (a registry domain such as "localhost:5000" or
 * "docker.io"): GET /v2/ with Basic auth, or a token request for a Bearer
 * registry.  IB_EAUTH when the registry refuses them. */
int ib_registry_login_check(const char *host, const ib_credentials *creds,
			    const ib_registry_options *o, ib_error **err);

/* ---- sessions: one repository of one registry ---- */
typedef struct ib_registry_session ib_registry_session;

/* Connect to the registry of ref (its tag/digest is ignored), probing the
 * scheme and the authentication it wants.  push = ask for push access.
 * o is copied.  A session is used by one thread at a time. */
int ib_registry_session_new(ib_registry_session **out, const char *ref, bool push,
			    const ib_registry_options *o, ib_error **err);
void ib_registry_session_free(ib_registry_session *s);
/* "host/name" of the session's repository (borrowed). */
const char *ib_registry_session_repository(const ib_registry_session *s);

/* 0 when the registry has the blob (*size_out, may be NULL, gets its
 * size), IB_ENOTFOUND when not, another negative code on failure. */
int ib_registry_blob_exists(ib_registry_session *s, const char *digest, int64_t *size_out,
			    ib_error **err);
/* Download a blob into the store, verified (digest, and size when >= 0).
 * A blob already in the store is not fetched. */
int ib_registry_blob_get(ib_registry_session *s, ib_store *store, const char *digest, int64_t size,
			 ib_error **err);
/* Upload a stored blob unless the registry has it (then nothing is sent). */
int ib_registry_blob_put(ib_registry_session *s, ib_store *store, const char *digest,
			 ib_error **err);
/* GET a manifest or index by tag or digest (NULL = the session ref's
 * digest, else tag).  Bodies over IB_MAX_MANIFEST_SIZE are refused; by
 * digest the bytes are verified.  All outputs are optional (NULL); *body_out
 * and *media_type_out are owned by the caller. */
int ib_registry_manifest_get(ib_registry_session *s, const char *reference, char **body_out,
			     size_t *len_out, char **media_type_out,
			     char digest_out[IB_DIGEST_BUFLEN], ib_error **err);
/* PUT body as a manifest (reference = tag or digest; NULL = the session
 * ref's tag, else the body's digest) with the given media type, and check
 * the registry's Docker-Content-Digest.  digest_out may be NULL. */
int ib_registry_manifest_put(ib_registry_session *s, const char *reference, const char *media_type,
			     const void *body, size_t len, char digest_out[IB_DIGEST_BUFLEN],
			     ib_error **err);

/* ---- helpers (exposed for tests) ---- */
/* Target of the rel="next" link in a Link header value; *url_out NULL when
 * there is none.  Caller frees. */
int ib_registry_parse_link_next(const char *value, char **url_out, ib_error **err);
/* Retry-After as seconds from now: delta-seconds or an HTTP date; -1 when
 * unparsable; past dates give 0. */
int64_t ib_registry_parse_retry_after(const char *value, time_t now);
/* True when both absolute URLs have the same scheme, host and port
 * (default ports made explicit; host compared case-insensitively). */
bool ib_registry_same_origin(const char *a, const char *b);
/* Resolve a (possibly relative) URL against base. NULL when invalid. */
char *ib_registry_resolve_url(const char *base, const char *rel);
/* Parse "os/arch[/variant]"; IB_EINVALID on anything else. */
int ib_registry_parse_platform(const char *s, ib_platform *out, ib_error **err);

#endif
