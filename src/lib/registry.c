/* Registry client, distribution primitives (SPEC §5): sessions (scheme
 * and authentication probed with GET /v2/), blob HEAD / download with
 * resume / upload with mount, manifests, catalog and tags paging, and the
 * login check.  Transport in registry_http.c, tokens in registry_auth.c,
 * pull and push in registry_transfer.c. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ref.h"
#include "registry_internal.h"

#define MAX_LIST_PAGES 10000
#define DEFAULT_MAX_RETRIES 5
#define DEFAULT_CHUNK_SIZE ((int64_t)64 << 20)
#define DEFAULT_PARALLEL 3

static const char manifest_accept[] = "Accept: " IB_MT_OCI_INDEX ", " IB_MT_OCI_MANIFEST
				      ", " IB_MT_DOCKER_LIST ", " IB_MT_DOCKER_MANIFEST;

void ib_registry_debug(const ib_registry_session *s, const char *fmt, ...)
{
	if (!s->o.debug)
		return;
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "imgbuild: debug: %s\n", m);
}

void ib_registry_report_progress(ib_registry_session *s, const char *what, uint64_t done,
				 uint64_t total)
{
	if (!s->o.progress)
		return;
	pthread_mutex_lock(&s->cb_lock);
	s->o.progress(what, done, total, s->o.payload);
	pthread_mutex_unlock(&s->cb_lock);
}

void ib_registry_report_event(ib_registry_session *s, const char *what, const char *state,
			      uint64_t size)
{
	if (!s->o.event)
		return;
	pthread_mutex_lock(&s->cb_lock);
	s->o.event(what, state, size, s->o.payload);
	pthread_mutex_unlock(&s->cb_lock);
}

/* ------------------------------------------------------------------ */
/* session setup                                                       */

static bool looks_like_tls_server(const http_resp *r)
{
	if (r->cc == CURLE_WEIRD_SERVER_REPLY || r->cc == CURLE_GOT_NOTHING ||
	    r->cc == CURLE_RECV_ERROR || r->cc == CURLE_UNSUPPORTED_PROTOCOL)
		return true;
	return r->cc == CURLE_OK && r->status == 400 && r->errbody.data &&
	       strstr(r->errbody.data, "HTTPS server");
}

static const char plain_http_msg[] =
    "registry speaks plain HTTP: add it to insecure registries (registries.conf or daemon.json)"
    " or use --tls-verify=false";

/* An HTTPS attempt failed at the handshake: is a plain HTTP server
 * answering?  From OpenSSL's complaint, else by asking it over HTTP. */
static bool speaks_plain_http(ib_registry_session *s, const http_resp *tls)
{
	if (ib_registry_resp_plain_http(tls))
		return true;
	if (tls->cc != CURLE_SSL_CONNECT_ERROR)
		return false;
	cleanup_free char *url = xasprintf("http://%s/v2/", s->host);
	http_req req = {.method = "GET", .url = url, .no_auth = true, .no_retry = true};
	http_resp resp;
	ib_registry_resp_init(&resp);
	ib_error *e = NULL;
	int r = ib_registry_request(s, s->h, &req, &resp, &e);
	bool plain = r == 0 && resp.status >= 100 && !looks_like_tls_server(&resp);
	ib_error_free(&e);
	ib_registry_resp_free(&resp);
	return plain;
}

/* GET /v2/: choose the scheme and learn the authentication scheme. */
static int ping(ib_registry_session *s, ib_error **err)
{
	const char *schemes[2];
	size_t n = 0;
	if (s->loopback) {
		schemes[n++] = "http";
		schemes[n++] = "https";
	} else if (s->insecure) {
		schemes[n++] = "https";
		schemes[n++] = "http";
	} else {
		schemes[n++] = "https";
	}
	http_resp resp;
	ib_registry_resp_init(&resp);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		free(s->base);
		s->base = xasprintf("%s://%s", schemes[i], s->host);
		http_req req = {.method = "GET", .url = "/v2/", .no_auth = true, .no_retry = true};
		r = ib_registry_request(s, s->h, &req, &resp, err);
		if (r < 0 && !resp.cb_err) {
			bool mismatch = !strcmp(schemes[i], "http")
					    ? looks_like_tls_server(&resp)
					    : resp.cc == CURLE_SSL_CONNECT_ERROR;
			if (i + 1 < n && mismatch) {
				ib_registry_debug(s, "%s does not answer %s; trying %s", s->host,
						  schemes[i], schemes[i + 1]);
				ib_error_free(err);
				continue;
			}
			if (!strcmp(schemes[i], "https") && speaks_plain_http(s, &resp)) {
				ib_error_free(err);
				free(s->base);
				s->base = xasprintf("https://%s", s->host);
				ib_registry_resp_free(&resp);
				return ib_error_setc(err, IB_ENET, "%s: %s", s->host, plain_http_msg);
			}
			if (ib_registry_resp_retryable(&resp)) {
				ib_error_free(err);
				req.no_retry = false;
				r = ib_registry_request(s, s->h, &req, &resp, err);
			}
		} else if (r == 0 && i + 1 < n && !strcmp(schemes[i], "http") &&
			   looks_like_tls_server(&resp)) {
			ib_registry_debug(s, "%s speaks TLS; switching to https", s->host);
			continue;
		} else if (r == 0 && ib_registry_status_retryable(resp.status)) {
			req.no_retry = false;
			r = ib_registry_request(s, s->h, &req, &resp, err);
		}
		break;
	}
	if (r < 0) {
		ib_registry_resp_free(&resp);
		return r;
	}
	if (resp.status == 401) {
		ib_auth_challenge *ch = NULL;
		size_t nc = 0;
		if (resp.www_auth && ib_auth_parse_challenges(resp.www_auth, &ch, &nc, NULL) == 0) {
			for (size_t i = 0; i < nc; i++) {
				if (!strcmp(ch[i].scheme, "bearer")) {
					s->auth = AUTH_BEARER;
					free(s->realm);
					free(s->service);
					s->realm = ch[i].realm ? xstrdup(ch[i].realm) : NULL;
					s->service = ch[i].service ? xstrdup(ch[i].service) : NULL;
					break;
				}
				if (!strcmp(ch[i].scheme, "basic"))
					s->auth = AUTH_BASIC;
			}
			ib_auth_challenges_free(ch, nc);
		}
		ib_registry_debug(s, "%s wants %s authentication", s->host,
				  s->auth == AUTH_BEARER  ? "bearer"
				  : s->auth == AUTH_BASIC ? "basic"
							  : "unknown");
	} else if (resp.status == 404) {
		r = ib_error_setc(err, IB_ENOTFOUND,
				  "%s does not implement the registry API v2 (GET /v2/: 404)",
				  s->host);
	} else if (!ib_registry_status_ok(resp.status)) {
		r = ib_registry_http_error(s, "GET", &resp, err);
	}
	ib_registry_resp_free(&resp);
	return r;
}

static char default_ca[4096];
static pthread_once_t default_ca_once = PTHREAD_ONCE_INIT;

/* libcurl's built-in CA bundle, asked once per process. */
static void default_ca_init(void)
{
	ib_registry_curl_init();
	CURL *h = curl_easy_init();
	char *p = NULL;
#if LIBCURL_VERSION_NUM >= 0x075400
	if (h && curl_easy_getinfo(h, CURLINFO_CAINFO, &p) == CURLE_OK && p)
		snprintf(default_ca, sizeof(default_ca), "%s", p);
#endif
	if (h)
		curl_easy_cleanup(h);
}

static const char *default_ca_file(void)
{
	pthread_once(&default_ca_once, default_ca_init);
	return default_ca[0] ? default_ca : "/etc/ssl/certs/ca-certificates.crt";
}

int ib_registry_tls_trust(const char *domain, char **pem_out, size_t *len_out, char **cert_out,
			  char **key_out, ib_error **err)
{
	*pem_out = *cert_out = *key_out = NULL;
	*len_out = 0;
	cleanup_strv char **cas = NULL;
	int r = ib_regconf_certs(domain, &cas, cert_out, key_out, err);
	if (r < 0)
		return r;
	const char *sys = default_ca_file();
	const char *extra = getenv("SSL_CERT_FILE");
	if (extra && *extra) {
		/* naming the system bundle itself adds nothing */
		cleanup_free char *a = realpath(extra, NULL);
		cleanup_free char *b = realpath(sys, NULL);
		if (a && b && !strcmp(a, b))
			extra = NULL;
	} else {
		extra = NULL;
	}
	if (!cas[0] && !extra)
		return 0;
	ib_buf b;
	ib_buf_init(&b, 0);
	/* libcurl's CAINFO (and CAINFO_BLOB) replace the system bundle: put
	 * it first so that the additions add */
	cleanup_free char *text = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	if (ib_read_file(sys, 16u << 20, &text, &len, &e) == 0) {
		ib_buf_append(&b, text, len);
		ib_buf_append(&b, "\n", 1);
	}
	ib_error_free(&e);
	for (size_t i = 0; r == 0 && (i == 0 || cas[i - 1]); i++) {
		const char *f = i == 0 ? extra : cas[i - 1];
		if (!f)
			continue;
		free(text);
		text = NULL;
		r = ib_read_file(f, 16u << 20, &text, &len, err);
		if (r < 0) {
			ib_error_wrap(err, "%s", i == 0 ? "SSL_CERT_FILE" : "certs.d");
			break;
		}
		ib_buf_append(&b, text, len);
		ib_buf_append(&b, "\n", 1);
	}
	if (r < 0) {
		ib_buf_free(&b);
		free(*cert_out);
		free(*key_out);
		*cert_out = *key_out = NULL;
		return r;
	}
	*pem_out = ib_buf_steal(&b, len_out);
	return 0;
}

/* True when host (no port) resolves into 127.0.0.0/8 or to ::1, like
 * docker; *cidr_insecure when an address is in daemon.json's insecure
 * CIDRs. */
static bool resolves_to_loopback(const ib_registry_session *s, const char *hostport,
				 bool *cidr_insecure)
{
	*cidr_insecure = false;
	cleanup_free char *host = NULL;
	if (hostport[0] == '[') {
		size_t n = strcspn(hostport + 1, "]");
		host = xstrndup(hostport + 1, n);
	} else {
		host = xstrndup(hostport, strcspn(hostport, ":"));
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false; /* curl will say what is wrong */
	bool loop = false;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		if (a->ai_family == AF_INET) {
			const struct sockaddr_in *in = (const void *)a->ai_addr;
			if ((ntohl(in->sin_addr.s_addr) >> 24) == 127)
				loop = true;
		} else if (a->ai_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const void *)a->ai_addr;
			if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
				loop = true;
		}
		if (ib_regconf_insecure_addr(s->conf, a->ai_addr))
			*cidr_insecure = true;
	}
	freeaddrinfo(res);
	return loop;
}

static void forget_auth(ib_registry_session *s)
{
	for (size_t i = 0; i < s->n_tokens; i++) {
		free(s->tokens[i].scope);
		explicit_bzero(s->tokens[i].token, strlen(s->tokens[i].token));
		free(s->tokens[i].token);
	}
	free(s->tokens);
	s->tokens = NULL;
	s->n_tokens = 0;
	free(s->realm);
	free(s->service);
	s->realm = s->service = NULL;
	s->auth = AUTH_NONE;
	if (!s->explicit_creds) {
		ib_credentials_clear(&s->creds);
		s->creds_loaded = false;
	}
}

/* Point the session at endpoint i and probe it. */
static int use_endpoint(ib_registry_session *s, size_t i, ib_error **err)
{
	const ib_regconf_endpoint *e = &s->eps[i];
	s->ep = i;
	forget_auth(s);
	free(s->domain);
	free(s->host);
	free(s->repository);
	free(s->scope);
	s->domain = xstrdup(e->domain);
	s->host = xstrdup(!strcmp(e->domain, "docker.io") ? "registry-1.docker.io" : e->domain);
	free(s->name);
	s->name = NULL;
	const char *scope = s->req_scope;
	if (s->req_name) {
		/* the token scope names the repository as it is on this registry */
		size_t ol = strlen(s->req_name);
		if (scope && !strncmp(scope, "repository:", 11) &&
		    !strncmp(scope + 11, s->req_name, ol) && scope[11 + ol] == ':')
			s->scope = xasprintf("repository:%s%s", e->path, scope + 11 + ol);
		else
			s->scope = scope ? xstrdup(scope) : NULL;
		s->name = xstrdup(e->path);
		s->repository = xasprintf("%s/%s", s->domain, s->name);
	} else {
		s->scope = scope ? xstrdup(scope) : NULL;
		s->repository = xstrdup(s->domain);
	}
	bool cidr = false;
	s->loopback = ib_ref_is_loopback(s->domain) || resolves_to_loopback(s, s->host, &cidr);
	bool named_off = !s->o.tls_verify && !e->mirror;
	s->tls_noverify = e->insecure || cidr || named_off;
	s->insecure = s->loopback || s->tls_noverify;
	free(s->cablob);
	free(s->sslcert);
	free(s->sslkey);
	s->cablob = s->sslcert = s->sslkey = NULL;
	int r = ib_registry_tls_trust(s->domain, &s->cablob, &s->cablob_len, &s->sslcert,
				      &s->sslkey, err);
	if (r < 0)
		return r;
	ib_registry_debug(s, "%s%s: %s%s%s%s", e->mirror ? "mirror " : "", s->repository,
			  s->loopback	   ? "loopback"
			  : s->insecure	   ? "insecure"
					   : "TLS",
			  s->tls_noverify ? ", TLS not verified" : "",
			  s->cablob ? ", extra CAs" : "", s->sslcert ? ", client certificate" : "");
	return ping(s, err);
}

/* The first endpoint from start on that answers; the last failure
 * otherwise. */
static int connect_from(ib_registry_session *s, size_t start, ib_error **err)
{
	int r = IB_ERROR;
	for (size_t i = start; i < s->n_eps; i++) {
		ib_error *e = NULL;
		r = use_endpoint(s, i, &e);
		if (r == 0)
			return 0;
		if (i + 1 < s->n_eps) {
			ib_registry_debug(s, "%s unavailable (%s); trying the next", s->eps[i].domain,
					  ib_error_msg(e));
			ib_error_free(&e);
			continue;
		}
		if (err && !*err)
			*err = e;
		else
			ib_error_free(&e);
	}
	return r;
}

/* After a failure on a mirror (or a tag asked of a digest-only mirror):
 * move on to the next endpoint that answers.  IB_ENOTFOUND (no error set)
 * when the session is not on a mirror or none is left. */
static int next_endpoint(ib_registry_session *s, const char *why, bool skip_digest_only,
			 ib_error **err)
{
	size_t i = s->ep + 1;
	if (i >= s->n_eps || !s->eps[s->ep].mirror)
		return IB_ENOTFOUND;
	while (skip_digest_only && i + 1 < s->n_eps && s->eps[i].digest_only)
		i++;
	ib_registry_debug(s, "mirror %s: %s; trying %s", s->domain, why, s->eps[i].domain);
	return connect_from(s, i, err);
}

static int session_open(ib_registry_session **out, const char *domain, const char *name,
			const char *scope, const ib_credentials *creds,
			const ib_registry_options *o, bool mirrors, ib_error **err)
{
	ib_registry_curl_init();
	ib_regconf *conf = NULL;
	int r = ib_regconf_load(&conf, err);
	if (r < 0)
		return r;
	ib_regconf_endpoint *eps = NULL;
	size_t n_eps = 0;
	if (name) {
		r = ib_regconf_endpoints(conf, domain, name, mirrors, true, &eps, &n_eps, err);
	} else {
		r = ib_regconf_check_blocked(conf, domain, err);
		if (r == 0) {
			eps = xcalloc(1, sizeof(*eps));
			eps[0].domain = xstrdup(domain);
			eps[0].path = xstrdup("");
			eps[0].insecure = ib_regconf_insecure_name(conf, domain);
			n_eps = 1;
		}
	}
	if (r < 0) {
		ib_regconf_free(conf);
		return r;
	}
	ib_registry_session *s = xcalloc(1, sizeof(*s));
	s->conf = conf;
	s->eps = eps;
	s->n_eps = n_eps;
	ib_registry_options defaults = IB_REGISTRY_OPTIONS_INIT;
	s->o = o ? *o : defaults;
	/* zero means default; from here on the fields hold what is used */
	if (s->o.max_retries == 0)
		s->o.max_retries = DEFAULT_MAX_RETRIES;
	else if (s->o.max_retries < 0)
		s->o.max_retries = 0;
	if (s->o.chunk_size <= 0)
		s->o.chunk_size = DEFAULT_CHUNK_SIZE;
	if (s->o.parallel <= 0)
		s->o.parallel = DEFAULT_PARALLEL;
	s->authfile = s->o.authfile ? xstrdup(s->o.authfile) : NULL;
	s->o.authfile = s->authfile;
	s->platform = s->o.platform ? xstrdup(s->o.platform) : NULL;
	s->o.platform = s->platform;
	s->req_name = name ? xstrdup(name) : NULL;
	s->req_scope = scope ? xstrdup(scope) : NULL;
	const char *cd = getenv("SSL_CERT_DIR");
	s->capath = cd && *cd ? xstrdup(cd) : NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->cb_lock, NULL);
	atomic_init(&s->cancel, false);
	if (creds && creds->username) {
		s->creds.username = xstrdup(creds->username);
		s->creds.password = xstrdup(creds->password ? creds->password : "");
		s->creds_loaded = true;
		s->explicit_creds = true;
	} else if (creds) {
		s->creds_loaded = true; /* explicitly none */
		s->explicit_creds = true;
	}
	s->h = curl_easy_init();
	if (!s->h) {
		ib_registry_session_free(s);
		return ib_error_setc(err, IB_ERROR, "cannot initialise libcurl");
	}
	if (s->o.debug && conf->files[0]) {
		ib_buf b;
		ib_buf_init(&b, 0);
		for (size_t i = 0; conf->files[i]; i++)
			ib_buf_appendf(&b, "%s%s", i ? ", " : "", conf->files[i]);
		ib_registry_debug(s, "registry configuration: %s", b.data);
		ib_buf_free(&b);
	}
	r = connect_from(s, 0, err);
	if (r < 0) {
		ib_registry_session_free(s);
		return r;
	}
	*out = s;
	return 0;
}

int ib_registry_session_open(ib_registry_session **out, const char *domain, const char *name,
			     const char *scope, const ib_credentials *creds,
			     const ib_registry_options *o, ib_error **err)
{
	/* mirrors serve pulls only */
	bool pull = name && scope && !strstr(scope, "push");
	return session_open(out, domain, name, scope, creds, o, pull, err);
}

void ib_registry_session_free(ib_registry_session *s)
{
	if (!s)
		return;
	if (s->h)
		curl_easy_cleanup(s->h);
	forget_auth(s);
	ib_credentials_clear(&s->creds);
	free(s->authfile);
	free(s->platform);
	free(s->domain);
	free(s->host);
	free(s->name);
	free(s->repository);
	free(s->scope);
	free(s->req_name);
	free(s->req_scope);
	free(s->base);
	free(s->capath);
	free(s->cablob);
	free(s->sslcert);
	free(s->sslkey);
	ib_regconf_endpoints_free(s->eps, s->n_eps);
	ib_regconf_free(s->conf);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->cb_lock);
	free(s);
}

/* ------------------------------------------------------------------ */
/* blobs                                                               */

int ib_registry_blob_head(ib_registry_session *s, CURL *h, const char *digest, int64_t *size_out,
			  ib_error **err)
{
	cleanup_free char *url = xasprintf("/v2/%s/blobs/%s", s->name, digest);
	http_req req = {.method = "HEAD", .url = url};
	http_resp resp;
	ib_registry_resp_init(&resp);
	int r = ib_registry_request(s, h, &req, &resp, err);
	if (r == 0) {
		if (resp.status == 200) {
			if (size_out) {
				curl_off_t cl = -1;
				curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
				*size_out = (int64_t)cl;
			}
		} else if (resp.status == 404) {
			r = IB_ENOTFOUND;
		} else {
			r = ib_registry_http_error(s, "HEAD", &resp, err);
		}
	}
	ib_registry_resp_free(&resp);
	return r;
}

typedef struct download {
	ib_registry_session *s;
	ib_store *store;
	ib_blob_writer *w;
	const char *digest;
	int64_t size;
	int64_t written;
} download;

static int dl_reopen(download *d, ib_error **err)
{
	ib_blob_writer_abort(d->w);
	d->w = NULL;
	d->written = 0;
	int r = ib_blob_writer_new(&d->w, d->store, err);
	return r;
}

static int dl_begin(void *p, const http_resp *r, ib_error **err)
{
	download *d = p;
	if (r->status == 206) {
		int64_t start = -1;
		if (r->content_range)
			sscanf(r->content_range, "bytes %" SCNd64 "-", &start);
		if (start != d->written)
			return ib_error_setc(err, IB_ERROR,
					     "blob %s: registry resumed at byte %" PRId64
					     " instead of %" PRId64,
					     d->digest, start, d->written);
		ib_registry_debug(d->s, "resuming %s at byte %" PRId64, d->digest, d->written);
		return 0;
	}
	if (d->written > 0) {
		ib_registry_debug(d->s, "registry ignored the range; restarting %s", d->digest);
		return dl_reopen(d, err);
	}
	return 0;
}

static int dl_write(void *p, const char *data, size_t len, ib_error **err)
{
	download *d = p;
	if (d->size >= 0 && d->written + (int64_t)len > d->size)
		return ib_error_setc(err, IB_EDIGEST,
				     "blob %s: registry sent more than the expected %" PRId64
				     " bytes",
				     d->digest, d->size);
	int r = ib_blob_writer_write(d->w, data, len, err);
	if (r < 0)
		return r;
	d->written += (int64_t)len;
	ib_registry_report_progress(d->s, d->digest, (uint64_t)d->written,
				    d->size >= 0 ? (uint64_t)d->size : 0);
	return 0;
}

static void dl_prepare(void *p, http_req *req)
{
	download *d = p;
	req->range_from = d->written;
}

int ib_registry_blob_download(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
			      int64_t size, ib_error **err)
{
	bool have = ib_store_blob_exists(store, digest);
	if (have) {
		ib_registry_report_event(s, digest, "exists", size >= 0 ? (uint64_t)size : 0);
		return 0;
	}
	download d = {s, store, NULL, digest, size, 0};
	int r = ib_blob_writer_new(&d.w, store, err);
	if (r < 0)
		return r;
	cleanup_free char *url = xasprintf("/v2/%s/blobs/%s", s->name, digest);
	sink sk = {dl_begin, dl_write, dl_prepare, &d};
	http_req req = {.method = "GET", .url = url, .sink = &sk};
	http_resp resp;
	ib_registry_resp_init(&resp);
	for (int short_reads = 0;;) {
		r = ib_registry_request(s, h, &req, &resp, err);
		if (r < 0)
			break;
		if (resp.status == 416 && size >= 0 && d.written == size)
			break; /* everything was there already */
		if (!ib_registry_status_ok(resp.status)) {
			r = ib_registry_http_error(s, "GET", &resp, err);
			if (r == IB_ENOTFOUND)
				ib_error_wrap(err, "blob %s", digest);
			break;
		}
		if (size >= 0 && d.written < size && short_reads < s->o.max_retries) {
			/* the body ended early without a transport error */
			ib_registry_debug(s, "%s: short body (%" PRId64 " of %" PRId64 " bytes)",
					  digest, d.written, size);
			ib_registry_backoff(s, short_reads++, NULL);
			continue;
		}
		break;
	}
	ib_registry_resp_free(&resp);
	if (r < 0) {
		ib_blob_writer_abort(d.w);
		return r;
	}
	r = ib_blob_writer_commit(d.w, digest, size, NULL, NULL, err);
	if (r < 0)
		return ib_error_wrap(err, "blob from %s", s->repository);
	ib_registry_report_event(s, digest, "done", (uint64_t)d.written);
	return 0;
}

static char *with_query(const char *url, const char *kv)
{
	return xasprintf("%s%c%s", url, strchr(url, '?') ? '&' : '?', kv);
}

/* Start an upload session, or mount the blob from mount_from.  On success
 * *location is the upload URL, or NULL when the blob was mounted. */
static int start_upload(ib_registry_session *s, CURL *h, const char *digest, const char *mount_from,
			char **location, bool *retryable, ib_error **err)
{
	*location = NULL;
	http_resp resp;
	ib_registry_resp_init(&resp);
	cleanup_free char *uploads = xasprintf("/v2/%s/blobs/uploads/", s->name);
	int r;
	if (mount_from) {
		cleanup_free char *from = ib_registry_url_escape(mount_from);
		cleanup_free char *url = xasprintf("%s?mount=%s&from=%s", uploads, digest, from);
		cleanup_free char *from_scope = ib_auth_scope_repository(mount_from, false);
		cleanup_free char *scope = ib_auth_scope_merge(s->scope, from_scope);
		http_req req = {.method = "POST", .url = url, .scope = scope, .no_retry = true};
		r = ib_registry_request(s, h, &req, &resp, err);
		if (r == 0 && resp.status == 201) {
			ib_registry_resp_free(&resp);
			return 0;
		}
		if (r == 0 && resp.status == 202 && resp.location) {
			*location = ib_registry_resolve_url(resp.url, resp.location);
			ib_registry_debug(s, "mount from %s refused; uploading", mount_from);
		} else if (r == 0) {
			r = ib_registry_http_error(s, "POST", &resp, err);
		}
	} else {
		http_req req = {.method = "POST", .url = uploads, .no_retry = true};
		r = ib_registry_request(s, h, &req, &resp, err);
		if (r == 0 && (resp.status != 202 || !resp.location))
			r = ib_registry_http_error(s, "POST", &resp, err);
		else if (r == 0)
			*location = ib_registry_resolve_url(resp.url, resp.location);
	}
	if (r == 0 && !*location)
		r = ib_error_setc(err, IB_ERROR, "POST %s: invalid upload location", uploads);
	if (r < 0)
		*retryable = ib_registry_resp_retryable(&resp);
	ib_registry_resp_free(&resp);
	return r;
}

int ib_registry_blob_mount(ib_registry_session *s, CURL *h, const char *digest,
			   const char *mount_from, ib_error **err)
{
	cleanup_free char *location = NULL;
	bool retryable = false;
	int r = start_upload(s, h, digest, mount_from, &location, &retryable, err);
	if (r == 0 && location)
		return IB_ENOTFOUND; /* refused: an upload session was opened instead */
	if (r == 0)
		ib_registry_report_event(s, digest, "mounted", 0);
	return r;
}

/* Send the blob's bytes to an upload session: one PUT, or PATCH chunks and
 * a closing PUT. */
static int send_upload(ib_registry_session *s, CURL *h, int fd, const char *digest, int64_t size,
		       char *location, bool *retryable, ib_error **err)
{
	http_resp resp;
	ib_registry_resp_init(&resp);
	ib_digest_ctx *hash = ib_digest_new();
	body_src body = {
	    .fd = fd, .hash = hash, .total = size, .expect = digest, .s = s, .what = digest};
	cleanup_free char *dq = xasprintf("digest=%s", digest);
	cleanup_free char *loc = xstrdup(location);
	const char *method = "PUT";
	int r = 0;
	if (size <= s->o.chunk_size) {
		cleanup_free char *url = with_query(loc, dq);
		body.len = size;
		http_req req = {.method = "PUT",
				.url = url,
				.body = &body,
				.content_type = "application/octet-stream",
				.no_retry = true};
		r = ib_registry_request(s, h, &req, &resp, err);
	} else {
		for (int64_t off = 0; off < size;) {
			int64_t n = size - off < s->o.chunk_size ? size - off : s->o.chunk_size;
			body.off = off;
			body.len = n;
			cleanup_free char *crange =
			    xasprintf("Content-Range: %" PRId64 "-%" PRId64, off, off + n - 1);
			http_req req = {.method = "PATCH",
					.url = loc,
					.body = &body,
					.content_type = "application/octet-stream",
					.extra_header = crange,
					.no_retry = true};
			r = ib_registry_request(s, h, &req, &resp, err);
			if (r < 0)
				break;
			if (resp.status != 202 || !resp.location) {
				method = "PATCH";
				break;
			}
			char *next = ib_registry_resolve_url(resp.url, resp.location);
			if (!next) {
				r = ib_error_setc(err, IB_ERROR, "PATCH: invalid upload location");
				break;
			}
			free(loc);
			loc = next;
			off += n;
		}
		if (r == 0 && !strcmp(method, "PUT")) {
			cleanup_free char *url = with_query(loc, dq);
			http_req req = {.method = "PUT", .url = url, .no_retry = true};
			r = ib_registry_request(s, h, &req, &resp, err);
		}
	}
	ib_digest_free(hash);
	ib_error_free(&body.err);
	if (r == 0 && resp.status != 201 && resp.status != 204 && resp.status != 200)
		r = ib_registry_http_error(s, method, &resp, err);
	else if (r == 0 && resp.digest && strcmp(resp.digest, digest) != 0)
		r = ib_error_setc(err, IB_EDIGEST, "registry stored blob %s as %s", digest,
				  resp.digest);
	else if (r < 0 || !ib_registry_status_ok(resp.status))
		*retryable = ib_registry_resp_retryable(&resp);
	if (r < 0 && resp.cc != CURLE_OK)
		*retryable = ib_registry_curl_retryable(resp.cc);
	ib_registry_resp_free(&resp);
	return r;
}

/* One try at uploading (or mounting) a blob.  *retryable tells whether a
 * failure is worth starting over. */
static int upload_once(ib_registry_session *s, CURL *h, int fd, const char *digest, int64_t size,
		       const char *mount_from, bool *mounted, bool *retryable, ib_error **err)
{
	*retryable = false;
	*mounted = false;
	cleanup_free char *location = NULL;
	int r = start_upload(s, h, digest, mount_from, &location, retryable, err);
	if (r < 0)
		return r;
	if (!location) {
		*mounted = true;
		return 0;
	}
	return send_upload(s, h, fd, digest, size, location, retryable, err);
}

int ib_registry_blob_upload(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
			    int64_t size, const char *mount_from, ib_error **err)
{
	int r = ib_registry_blob_head(s, h, digest, NULL, err);
	if (r == 0) {
		ib_registry_report_event(s, digest, "exists", size >= 0 ? (uint64_t)size : 0);
		return 0;
	}
	if (r != IB_ENOTFOUND)
		return r;
	if (mount_from && !ib_store_blob_exists(store, digest)) {
		/* a layer the store only has a remote record of: mount it
		 * rather than fetch it to upload it (a refused mount's upload
		 * session is left for the registry to expire) */
		ib_error *e = NULL;
		if (ib_registry_blob_mount(s, h, digest, mount_from, &e) == 0)
			return 0;
		ib_error_free(&e);
		mount_from = NULL;
	}
	cleanup_close int fd = -1;
	int64_t fsize = 0;
	r = ib_store_blob_open(store, digest, &fd, &fsize, err);
	if (r < 0)
		return r;
	if (size >= 0 && fsize != size)
		return ib_error_setc(err, IB_EDIGEST,
				     "local blob %s has %" PRId64
				     " bytes, its descriptor says %" PRId64,
				     digest, fsize, size);
	for (int attempt = 0;; attempt++) {
		bool mounted = false, retryable = false;
		ib_error *e = NULL;
		r = upload_once(s, h, fd, digest, fsize, attempt == 0 ? mount_from : NULL, &mounted,
				&retryable, &e);
		if (r == 0) {
			ib_registry_report_event(s, digest, mounted ? "mounted" : "done",
						 (uint64_t)fsize);
			return 0;
		}
		if (!retryable || attempt >= s->o.max_retries || atomic_load(&s->cancel)) {
			if (err && !*err)
				*err = e;
			else
				ib_error_free(&e);
			return r;
		}
		ib_registry_debug(s, "upload of %s failed (%s); starting over", digest,
				  ib_error_msg(e));
		ib_error_free(&e);
		ib_registry_backoff(s, attempt, NULL);
	}
}

/* ------------------------------------------------------------------ */
/* manifests                                                           */

static char *media_type_of(const char *content_type)
{
	if (!content_type)
		return NULL;
	size_t n = strcspn(content_type, "; ");
	return n ? xstrndup(content_type, n) : NULL;
}

static int manifest_get_once(ib_registry_session *s, CURL *h, const char *reference,
			     char **body_out, size_t *len_out, char **media_type_out,
			     char digest_out[IB_DIGEST_BUFLEN], ib_error **err)
{
	bool by_digest = !strncmp(reference, "sha256:", 7);
	if (by_digest && ib_digest_validate(reference, err) < 0)
		return IB_EINVALID;
	cleanup_free char *url = xasprintf("/v2/%s/manifests/%s", s->name, reference);
	ib_buf body;
	ib_buf_init(&body, IB_MAX_MANIFEST_SIZE);
	http_req req = {.method = "GET", .url = url, .accept = manifest_accept, .out = &body};
	http_resp resp;
	ib_registry_resp_init(&resp);
	int r = ib_registry_request(s, h, &req, &resp, err);
	if (r == IB_ETOOLARGE)
		ib_error_wrap(err, "manifest %s", reference);
	if (r == 0 && resp.status != 200) {
		r = ib_registry_http_error(s, "GET", &resp, err);
		if (r == IB_ENOTFOUND)
			ib_error_wrap(err, "manifest %s:%s not found", s->repository, reference);
	}
	if (r == 0) {
		char d[IB_DIGEST_BUFLEN];
		ib_digest_buffer(d, body.data ? body.data : "", body.len);
		if (by_digest && strcmp(d, reference) != 0)
			r = ib_error_setc(err, IB_EDIGEST, "manifest %s from %s hashes to %s",
					  reference, s->repository, d);
		else if (!by_digest && resp.digest && ib_digest_validate(resp.digest, NULL) == 0 &&
			 strcmp(resp.digest, d) != 0)
			r = ib_error_setc(err, IB_EDIGEST,
					  "manifest %s:%s hashes to %s but the registry says %s",
					  s->repository, reference, d, resp.digest);
		if (r == 0) {
			if (digest_out)
				memcpy(digest_out, d, IB_DIGEST_BUFLEN);
			if (media_type_out)
				*media_type_out = media_type_of(resp.content_type);
			size_t blen = 0;
			char *b = ib_buf_steal(&body, &blen);
			if (len_out)
				*len_out = blen;
			if (body_out)
				*body_out = b;
			else
				free(b);
		}
	}
	ib_buf_free(&body);
	ib_registry_resp_free(&resp);
	return r;
}

int ib_registry_manifest_get(ib_registry_session *s, const char *reference, char **body_out,
			     size_t *len_out, char **media_type_out,
			     char digest_out[IB_DIGEST_BUFLEN], ib_error **err)
{
	bool by_digest = !strncmp(reference, "sha256:", 7);
	for (;;) {
		int r;
		if (!by_digest && s->eps[s->ep].digest_only) {
			r = next_endpoint(s, "used for pulls by digest only", true, err);
			if (r < 0)
				return r == IB_ENOTFOUND ? ib_error_setc(err, IB_ENOTFOUND,
									 "no registry for %s",
									 s->repository)
							 : r;
			continue;
		}
		ib_error *e = NULL;
		r = manifest_get_once(s, s->h, reference, body_out, len_out, media_type_out,
				      digest_out, &e);
		if (r == 0)
			return 0;
		/* a mirror that lacks it or fails: the next one, then the location */
		int n = next_endpoint(s, ib_error_msg(e), false, err);
		if (n == 0) {
			ib_error_free(&e);
			continue;
		}
		if (n != IB_ENOTFOUND) {
			ib_error_free(&e);
			return n;
		}
		if (err && !*err)
			*err = e;
		else
			ib_error_free(&e);
		return r;
	}
}

int ib_registry_manifest_get_with(ib_registry_session *s, CURL *h, const char *reference,
				  char **body_out, size_t *len_out,
				  char digest_out[IB_DIGEST_BUFLEN], ib_error **err)
{
	return manifest_get_once(s, h, reference, body_out, len_out, NULL, digest_out, err);
}

int ib_registry_manifest_put(ib_registry_session *s, const char *reference, const char *media_type,
			     const void *body, size_t len, char digest_out[IB_DIGEST_BUFLEN],
			     ib_error **err)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, body, len);
	if (!reference)
		reference = d;
	cleanup_free char *url = xasprintf("/v2/%s/manifests/%s", s->name, reference);
	body_src b = {.mem = body, .fd = -1, .len = (int64_t)len};
	http_req req = {.method = "PUT", .url = url, .body = &b, .content_type = media_type};
	http_resp resp;
	ib_registry_resp_init(&resp);
	int r = ib_registry_request(s, s->h, &req, &resp, err);
	if (r == 0 && resp.status != 201 && resp.status != 200 && resp.status != 204)
		r = ib_registry_http_error(s, "PUT", &resp, err);
	if (r == 0 && resp.digest && strcmp(resp.digest, d) != 0)
		r = ib_error_setc(
		    err, IB_EDIGEST,
		    "registry stored manifest %s as %s (it must keep the bytes as sent)", d,
		    resp.digest);
	if (r == 0 && digest_out)
		memcpy(digest_out, d, IB_DIGEST_BUFLEN);
	ib_error_free(&b.err);
	ib_registry_resp_free(&resp);
	return r;
}

/* ------------------------------------------------------------------ */
/* catalog and tags                                                    */

/* GET url and every rel="next" page after it; call each with the body. */
static int get_pages(ib_registry_session *s, const char *first, const char *field, char ***out,
		     ib_error **err)
{
	cleanup_free char *url = xstrdup(first);
	char **v = xcalloc(1, sizeof(char *));
	int r = 0;
	for (int page = 0; url && page < MAX_LIST_PAGES; page++) {
		ib_buf body;
		ib_buf_init(&body, IB_REGISTRY_LIST_BODY_CAP);
		http_req req = {.method = "GET",
				.url = url,
				.out = &body,
				.accept = "Accept: application/json"};
		http_resp resp;
		ib_registry_resp_init(&resp);
		r = ib_registry_request(s, s->h, &req, &resp, err);
		if (r == 0 && page == 0 && resp.status == 400 && resp.errbody.data &&
		    strstr(resp.errbody.data, "PAGINATION_NUMBER_INVALID") && strchr(url, '?')) {
			/* the registry caps the page size below ours: let it choose */
			ib_registry_debug(s, "page size refused; using the registry's default");
			*strchr(url, '?') = '\0';
			ib_buf_free(&body);
			ib_registry_resp_free(&resp);
			page = -1;
			continue;
		}
		if (r == 0 && resp.status != 200)
			r = ib_registry_http_error(s, "GET", &resp, err);
		json_t *j = NULL;
		if (r == 0) {
			j = json_loadb(body.data ? body.data : "", body.len, 0, NULL);
			json_t *a = json_object_get(j, field);
			if (!json_is_object(j) || !(json_is_array(a) || json_is_null(a) || !a)) {
				cleanup_free char *u = ib_registry_display_url(s, resp.url);
				r = ib_error_setc(err, IB_EINVALID, "GET %s: malformed answer", u);
			} else {
				size_t i;
				json_t *e;
				json_array_foreach (a, i, e)
					if (json_is_string(e))
						ib_strv_push(&v, json_string_value(e));
			}
		}
		json_decref(j);
		char *next = NULL;
		if (r == 0 && resp.link &&
		    ib_registry_parse_link_next(resp.link, &next, err) == 0 && next) {
			char *abs = ib_registry_resolve_url(resp.url, next);
			free(next);
			next = abs;
			if (next && !ib_registry_same_origin(next, s->base)) {
				r = ib_error_setc(err, IB_EINVALID,
						  "pagination link leaves the registry");
				free(next);
				next = NULL;
			}
		}
		ib_buf_free(&body);
		ib_registry_resp_free(&resp);
		free(url);
		url = next;
		if (r < 0)
			break;
	}
	if (r < 0) {
		ib_strv_free(v);
		return r;
	}
	*out = v;
	return 0;
}

int ib_registry_catalog(const char *host_prefix, const ib_registry_options *o, char ***repos_out,
			ib_error **err)
{
	const char *slash = strchr(host_prefix, '/');
	cleanup_free char *host =
	    slash ? xstrndup(host_prefix, (size_t)(slash - host_prefix)) : xstrdup(host_prefix);
	const char *prefix = slash ? slash + 1 : "";
	if (!*host)
		return ib_error_setc(err, IB_EINVALID, "no registry host in \"%s\"", host_prefix);
	cleanup_free char *domain = ib_auth_normalize_host(host);
	ib_registry_session *s = NULL;
	int r = ib_registry_session_open(&s, domain, NULL, "registry:catalog:*", NULL, o, err);
	if (r < 0)
		return r;
	char **all = NULL;
	r = get_pages(s, "/v2/_catalog?n=100", "repositories", &all, err);
	ib_registry_session_free(s);
	if (r < 0)
		return r;
	char **v = xcalloc(1, sizeof(char *));
	size_t pl = strlen(prefix);
	for (size_t i = 0; all[i]; i++)
		if (!strncmp(all[i], prefix, pl))
			ib_strv_push(&v, all[i]);
	ib_strv_free(all);
	*repos_out = v;
	return 0;
}

int ib_registry_tags(const char *repo_ref, const ib_registry_options *o, char ***tags_out,
		     ib_error **err)
{
	ib_ref *ref = NULL;
	int r = ib_ref_parse(&ref, repo_ref, err);
	if (r < 0)
		return r;
	cleanup_free char *scope = ib_auth_scope_repository(ref->path, false);
	ib_registry_session *s = NULL;
	/* the tags of the registry itself, not of a mirror */
	r = session_open(&s, ref->domain, ref->path, scope, NULL, o, false, err);
	if (r == 0) {
		cleanup_free char *url = xasprintf("/v2/%s/tags/list?n=100", s->name);
		r = get_pages(s, url, "tags", tags_out, err);
	}
	ib_registry_session_free(s);
	ib_ref_free(ref);
	return r;
}

int ib_registry_pull_search(ib_store *st, const char *refstr, const ib_registry_options *o,
			    ib_descriptor *desc_out, ib_error **err)
{
	if (!ib_regconf_unqualified(refstr))
		return 1;
	ib_regconf *c = NULL;
	int r = ib_regconf_load(&c, err);
	if (r < 0)
		return r;
	if (!c->search) {
		ib_regconf_free(c); /* not configured: docker.io, as always */
		return 1;
	}
	if (!c->search[0]) {
		r = ib_error_setc(err, IB_ENOTFOUND,
				  "%s names no registry and unqualified-search-registries is empty"
				  " (%s)",
				  refstr, c->search_source);
		ib_regconf_free(c);
		return r;
	}
	ib_buf tried;
	ib_buf_init(&tried, 0);
	r = IB_ENOTFOUND;
	for (size_t i = 0; c->search[i]; i++) {
		cleanup_free char *cand = xasprintf("%s/%s", c->search[i], refstr);
		ib_error *e = NULL;
		if (ib_regconf_unqualified(cand)) {
			ib_error_setc(&e, IB_EINVALID, "not a registry name (%s)", c->search_source);
			r = IB_EINVALID;
		} else {
			r = ib_registry_pull(st, cand, o, desc_out, &e);
		}
		if (r == 0) {
			ib_error_free(&e);
			break;
		}
		ib_buf_appendf(&tried, "%s%s: %s", tried.len ? "; " : "", c->search[i],
			       ib_error_msg(e));
		ib_error_free(&e);
	}
	if (r < 0)
		ib_error_setc(err, r == IB_EAUTH || r == IB_ENET ? r : IB_ENOTFOUND,
			      "%s is in none of the unqualified-search-registries (%s): %s", refstr,
			      c->search_source, tried.data);
	ib_buf_free(&tried);
	ib_regconf_free(c);
	return r;
}

int ib_registry_login_check(const char *host, const ib_credentials *creds,
			    const ib_registry_options *o, ib_error **err)
{
	cleanup_free char *domain = ib_auth_normalize_host(host);
	ib_credentials none = {0};
	ib_registry_session *s = NULL;
	int r = ib_registry_session_open(&s, domain, NULL, "", creds ? creds : &none, o, err);
	if (r < 0)
		return r;
	if (s->auth == AUTH_NONE) {
		ib_registry_debug(s, "%s does not ask for authentication", s->host);
		ib_registry_session_free(s);
		return 0;
	}
	http_req req = {.method = "GET", .url = "/v2/"};
	http_resp resp;
	ib_registry_resp_init(&resp);
	r = ib_registry_request(s, s->h, &req, &resp, err);
	if (r == 0 && !ib_registry_status_ok(resp.status))
		r = ib_registry_http_error(s, "GET", &resp, err);
	ib_registry_resp_free(&resp);
	ib_registry_session_free(s);
	return r;
}
