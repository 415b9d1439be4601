/* OCI distribution client (SPEC §5): pull, push, catalog, tags and the
 * login check over libcurl.  The implementation is a family of files around
 * registry_internal.h (transport, authentication, primitives, transfers).
 *
 * Transport: HTTPS with the system CAs, plus SSL_CERT_FILE and the
 * registry's certs.d CAs (regconf.h).  Loopback registries (by name or by
 * resolution) are probed with plain HTTP first and switch to HTTPS when the
 * server turns out to speak TLS; insecure ones (registries.conf,
 * daemon.json, or tls_verify=false for the registry named, not its
 * mirrors) get HTTPS without verification, then plain HTTP.  HTTPS
 * answered by plain HTTP fails at once.  Pulls try the configured mirrors
 * first; blocked registries are refused.
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
	int max_retries;      /* 0 = default (5), < 0 = none */
	int64_t chunk_size;   /* push: single PUT up to this size, chunked PATCH
				 above; 0 = default (64 MiB) */
	int parallel;	      /* concurrent blob transfers, 0 = default (3) */
	const char *platform; /* "os/arch[/variant]" or NULL = host */
	int timeout_sec;      /* connect timeout, and how long a request may stall
				 without a byte; 0 = defaults (30 s, 60 s) */
	ib_transfer_progress_fn progress;
	void *payload; /* for progress and event */
	ib_transfer_event_fn event;
} ib_registry_options;
/* Every field not named is zero, which means its default. */
#define IB_REGISTRY_OPTIONS_INIT                                                                   \
	{                                                                                          \
		.tls_verify = true                                                                 \
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

/* Download one blob of repository ("host/path") into the store, verified
 * against digest and size (size < 0: unknown); e.g. a layer a lazily
 * tagged image left in a cache registry (ib_store_set_blob_fetcher). */
int ib_registry_fetch_blob(ib_store *s, const char *repository, const char *digest, int64_t size,
			   const ib_registry_options *o, ib_error **err);

/* Parse "os/arch[/variant]"; IB_EINVALID on anything else. */
int ib_registry_parse_platform(const char *s, ib_platform *out, ib_error **err);

#endif
