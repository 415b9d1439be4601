/* Private header of the registry client family:
 *
 *   registry_http.c      HTTP transport: one request with redirects followed
 *                        by hand, retries with backoff, error texts
 *   registry_auth.c      the network half of authentication: Basic
 *                        credentials, bearer tokens, 401 challenges
 *   registry.c           sessions and the distribution primitives (ping,
 *                        blobs, manifests, catalog/tags paging, login check)
 *   registry_transfer.c  pull and push: parallel blob jobs, index resolution
 *
 * auth.c is the network-free half of authentication.  Nothing outside the
 * family includes this header except the unit tests. */
#ifndef IB_REGISTRY_INTERNAL_H
#define IB_REGISTRY_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "regconf.h"
#include "registry.h"
#include "util.h"

/* Caps on bodies read from the network. */
#define IB_REGISTRY_ERROR_BODY_CAP (64u << 10)
#define IB_REGISTRY_TOKEN_BODY_CAP (1u << 20)
#define IB_REGISTRY_LIST_BODY_CAP (4u << 20)

/* ---- sessions: one repository (or a whole registry) of one registry ---- */

typedef struct token_entry {
	char *scope;
	char *token;
	time_t expires;
} token_entry;

enum auth_kind { AUTH_NONE, AUTH_BASIC, AUTH_BEARER };

struct ib_registry_session {
	ib_registry_options o;
	char *authfile;
	char *platform;
	char *domain;	  /* "docker.io", "localhost:5000" */
	char *host;	  /* host[:port] to connect to */
	char *name;	  /* repository path, NULL for registry-wide sessions */
	char *repository; /* "domain/name" */
	char *scope;	  /* scope of ordinary requests */
	char *base;	  /* "https://host" */
	bool insecure;	  /* plain HTTP allowed: loopback, configured insecure, or
			     tls_verify=false for the registry the command named */
	bool loopback;	  /* a loopback name, or a name that resolves to loopback */
	bool tls_noverify; /* TLS certificates are not verified */
	char *capath;
	char *cablob;	 /* PEM: system CAs + SSL_CERT_FILE + certs.d; NULL = defaults */
	size_t cablob_len;
	char *sslcert, *sslkey; /* client certificate from certs.d */

	/* Where the repository is fetched from: mirrors (pulls), then the
	 * location (registries.conf, daemon.json); ep = the one in use. */
	ib_regconf *conf;
	ib_regconf_endpoint *eps;
	size_t n_eps, ep;
	char *req_name, *req_scope; /* the repository and scope asked for */
	bool explicit_creds;

	pthread_mutex_t lock; /* auth state below */
	ib_credentials creds;
	bool creds_loaded;
	enum auth_kind auth;
	char *realm, *service;
	token_entry *tokens;
	size_t n_tokens;

	CURL *h; /* the calling thread's handle */
	atomic_bool cancel;
	pthread_mutex_t cb_lock; /* serialises progress and event callbacks */
};
typedef struct ib_registry_session ib_registry_session;

/* Connect to domain ("docker.io", "localhost:5000"), probing the scheme
 * and the authentication it wants (GET /v2/).  name = the repository path
 * or NULL for registry-wide requests; scope = the token scope of ordinary
 * requests; creds = use these instead of the auth files (a zeroed struct:
 * explicitly none), NULL = look them up.  o is copied (NULL = defaults).
 * A session is used by one thread at a time, except for the blob
 * primitives, which take the calling thread's CURL handle. */
int ib_registry_session_open(ib_registry_session **out, const char *domain, const char *name,
			     const char *scope, const ib_credentials *creds,
			     const ib_registry_options *o, ib_error **err);
/* Safe on NULL; wipes credentials and tokens. */
void ib_registry_session_free(ib_registry_session *s);

/* The TLS trust for a registry domain ("host[:port]"): *pem_out = the
 * system CA bundle followed by $SSL_CERT_FILE and the certs.d CAs of the
 * domain, or NULL when there is nothing to add (libcurl's defaults);
 * *cert_out / *key_out = a certs.d client pair or NULL.  Caller frees. */
int ib_registry_tls_trust(const char *domain, char **pem_out, size_t *len_out, char **cert_out,
			  char **key_out, ib_error **err);

/* Log to stderr when o.debug (never credentials or tokens). */
void ib_registry_debug(const ib_registry_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The caller's progress / event callbacks, serialised. */
void ib_registry_report_progress(ib_registry_session *s, const char *what, uint64_t done,
				 uint64_t total);
void ib_registry_report_event(ib_registry_session *s, const char *what, const char *state,
			      uint64_t size);

/* ---- HTTP transport (registry_http.c) ---- */

typedef struct http_resp {
	long status;
	char reason[64];
	char *location, *content_type, *digest, *www_auth, *retry_after, *link, *content_range;
	ib_buf errbody; /* non-2xx bodies, capped */
	CURLcode cc;
	char curl_err[CURL_ERROR_SIZE];
	bool too_large;
	ib_error *cb_err; /* failure raised inside a callback (sink, body) */
	char *url;	  /* last URL requested (after redirects) */
} http_resp;

typedef struct body_src {
	const char *mem;
	int fd;
	int64_t off; /* where this request's bytes start in mem/fd */
	int64_t len; /* bytes this request sends */
	int64_t pos;
	/* whole-blob verification while streaming from the store */
	ib_digest_ctx *hash;
	int64_t hashed, total;
	const char *expect;
	ib_registry_session *s;
	const char *what; /* for progress; NULL = none */
	ib_error *err;
} body_src;

typedef struct http_req http_req;
typedef struct sink {
	/* A 2xx response starts (once per attempt). */
	int (*begin)(void *payload, const http_resp *r, ib_error **err);
	int (*write)(void *payload, const char *data, size_t len, ib_error **err);
	/* Before each attempt: may set req->range_from. */
	void (*prepare)(void *payload, http_req *req);
	void *payload;
} sink;

struct http_req {
	const char *method;
	const char *url;	  /* absolute, or a path relative to the session base */
	const char *scope;	  /* NULL = session scope */
	const char *accept;	  /* whole header line */
	const char *extra_header; /* whole header line */
	const char *content_type;
	body_src *body;
	ib_buf *out; /* 2xx body (NULL = discard) */
	sink *sink;
	int64_t range_from; /* > 0: ask for the bytes from here on (Range) */
	bool no_retry;	    /* the caller retries (uploads) */
	bool no_auth;
	const char *auth_header; /* explicit Authorization (token realm) */
	const char *auth_origin; /* where auth_header may go */
};

void ib_registry_resp_init(http_resp *r);
void ib_registry_resp_free(http_resp *r);
bool ib_registry_status_ok(long status);
/* 408, 429 and 5xx gateway answers. */
bool ib_registry_status_retryable(long status);
/* Timeouts, resets, empty replies. */
bool ib_registry_curl_retryable(CURLcode cc);
/* A TLS handshake answered by plain HTTP (OpenSSL's "wrong version
 * number"): never worth retrying. */
bool ib_registry_resp_plain_http(const http_resp *r);
bool ib_registry_resp_retryable(const http_resp *r);
/* Sleep before retry number attempt (0-based): exponential from 250 ms,
 * or Retry-After when given; capped at 30 s. */
void ib_registry_backoff(ib_registry_session *s, int attempt, const char *retry_after);

/* Perform req on handle h with authentication, retries and redirects.
 * Returns 0 when an HTTP answer arrived (the caller judges resp->status),
 * else an error (IB_ENET after the retries, IB_ETOOLARGE over req->out's
 * cap, or what a sink or body callback raised).  resp is reset first. */
int ib_registry_request(ib_registry_session *s, CURL *h, http_req *req, http_resp *resp,
			ib_error **err);

/* "METHOD URL: STATUS Reason: CODE: message" (caller frees) and the same as
 * an error: IB_EAUTH for 401/403, IB_ENOTFOUND for 404, else IB_ERROR. */
char *ib_registry_http_error_text(const ib_registry_session *s, const char *method,
				  const http_resp *r);
int ib_registry_http_error(const ib_registry_session *s, const char *method, const http_resp *r,
			   ib_error **err);
/* A URL for messages: the path when it is on the registry, no query. */
char *ib_registry_display_url(const ib_registry_session *s, const char *url);
bool ib_registry_url_scheme_is(const char *url, const char *scheme);
/* curl_global_init, once per process. */
void ib_registry_curl_init(void);

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

/* ---- authentication (registry_auth.c) ---- */

/* The Authorization value for a request with scope, fetching a bearer
 * token when needed; *out NULL when the registry wants none.  Caller wipes
 * and frees *out. */
int ib_registry_auth_value(ib_registry_session *s, CURL *h, const char *scope, char **out,
			   ib_error **err);
/* Learn what a 401 answer asks for.  *scope_io may be widened (insufficient
 * scope); *fetched remembers the scope of the last token fetched for this
 * request.  0 when the request is worth retrying, else IB_EAUTH. */
int ib_registry_auth_challenged(ib_registry_session *s, CURL *h, const char *method,
				http_resp *resp, bool sent_auth, char **scope_io, char **fetched,
				ib_error **err);
/* Percent-encode s for a query string.  Caller frees. */
char *ib_registry_url_escape(const char *s);

/* ---- distribution primitives (registry.c) ---- */

/* unqualified-search-registries: when refstr names no registry and
 * registries.conf lists search registries, pull from the first of them
 * that has the image (tagged with the full name found there).  Returns 1
 * when this does not apply: the caller pulls refstr as it is. */
int ib_registry_pull_search(ib_store *st, const char *refstr, const ib_registry_options *o,
			    ib_descriptor *desc_out, ib_error **err);

/* HEAD a blob of the session's repository: 0 when present (*size_out, may
 * be NULL, gets its length), IB_ENOTFOUND (no error set) when absent. */
int ib_registry_blob_head(ib_registry_session *s, CURL *h, const char *digest, int64_t *size_out,
			  ib_error **err);
/* Download a blob into store, verified against digest (and size when
 * >= 0), resuming with Range after a drop.  A blob the store has is not
 * fetched (event "exists"). */
int ib_registry_blob_download(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
			      int64_t size, ib_error **err);
/* Upload a stored blob unless the registry has it ("exists"): mounted from
 * repository mount_from (a path on the same registry) when it can be, else
 * one PUT or PATCH chunks of o.chunk_size; the whole upload starts over on
 * retryable failures.  size < 0 = don't check the local size. */
int ib_registry_blob_upload(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
			    int64_t size, const char *mount_from, ib_error **err);
/* Mount a blob from repository mount_from (a path on the same registry)
 * without sending it: 0 when mounted, IB_ENOTFOUND (no error set) when the
 * registry refused the mount. */
int ib_registry_blob_mount(ib_registry_session *s, CURL *h, const char *digest,
			   const char *mount_from, ib_error **err);
/* GET a manifest or index by tag or digest.  Bodies over
 * IB_MAX_MANIFEST_SIZE are refused; by digest the bytes are verified, by
 * tag they are checked against Docker-Content-Digest when sent.  All
 * outputs are optional (NULL); *body_out and *media_type_out are owned by
 * the caller. */
int ib_registry_manifest_get(ib_registry_session *s, const char *reference, char **body_out,
			     size_t *len_out, char **media_type_out,
			     char digest_out[IB_DIGEST_BUFLEN], ib_error **err);
/* A task of ib_registry_parallel: the i-th request, through handle h. */
typedef int (*ib_registry_task_fn)(ib_registry_session *s, CURL *h, size_t i, void *payload,
				   ib_error **err);
/* fn for every i in [0, n), side by side on up to `parallel` threads (0:
 * n), each with a curl handle of its own (the calling thread with the
 * session's); the first failure cancels the session's other requests and
 * is returned. */
int ib_registry_parallel(ib_registry_session *s, size_t n, size_t parallel,
			 ib_registry_task_fn fn, void *payload, ib_error **err);
/* One GET of a manifest on the session's current endpoint through handle
 * h (no mirror fallback): for requests made side by side, each thread
 * with a handle of its own. */
int ib_registry_manifest_get_with(ib_registry_session *s, CURL *h, const char *reference,
				  char **body_out, size_t *len_out,
				  char digest_out[IB_DIGEST_BUFLEN], ib_error **err);
/* PUT body as a manifest (reference = tag or digest; NULL = the body's
 * digest) with the given media type, and check the registry's
 * Docker-Content-Digest.  digest_out may be NULL. */
int ib_registry_manifest_put(ib_registry_session *s, const char *reference, const char *media_type,
			     const void *body, size_t len, char digest_out[IB_DIGEST_BUFLEN],
			     ib_error **err);

#endif
