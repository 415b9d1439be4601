#include "registry.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ref.h"
#include "util.h"

#define ERROR_BODY_CAP (64u << 10)
#define TOKEN_BODY_CAP (1u << 20)
#define LIST_BODY_CAP (4u << 20)
#define MAX_REDIRECTS 10
#define RETRY_AFTER_CAP 30
#define BACKOFF_BASE_MS 250
#define MAX_LIST_PAGES 10000
#define BLOB_RECORD_MAX_DIGESTS 20000
#define BLOB_RECORD_MAX_REPOS 8

static const char manifest_accept[] = "Accept: " IB_MT_OCI_INDEX ", " IB_MT_OCI_MANIFEST
				      ", " IB_MT_DOCKER_LIST ", " IB_MT_DOCKER_MANIFEST;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
}

/* ------------------------------------------------------------------ */
/* session                                                             */

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
	char *tag, *digest;
	char *scope;   /* scope of ordinary requests */
	char *base;    /* "https://host" */
	bool insecure; /* loopback or tls_verify=false */
	bool loopback;
	char *cainfo, *capath;

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

static void dbg(const ib_registry_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void dbg(const ib_registry_session *s, const char *fmt, ...)
{
	if (!s->o.debug)
		return;
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "imgbuild: debug: %s\n", m);
}

static void report_progress(ib_registry_session *s, const char *what, uint64_t done, uint64_t total)
{
	if (!s->o.progress)
		return;
	pthread_mutex_lock(&s->cb_lock);
	s->o.progress(what, done, total, s->o.payload);
	pthread_mutex_unlock(&s->cb_lock);
}

static void report_event(ib_registry_session *s, const char *what, const char *state, uint64_t size)
{
	if (!s->o.event)
		return;
	pthread_mutex_lock(&s->cb_lock);
	s->o.event(what, state, size, s->o.payload);
	pthread_mutex_unlock(&s->cb_lock);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ */
/* pure helpers                                                        */

bool ib_registry_same_origin(const char *a, const char *b)
{
	pthread_once(&curl_once, curl_init_once);
	CURLU *ua = curl_url(), *ub = curl_url();
	bool same = false;
	char *sa = NULL, *sb = NULL, *ha = NULL, *hb = NULL, *pa = NULL, *pb = NULL;
	if (curl_url_set(ua, CURLUPART_URL, a, 0) || curl_url_set(ub, CURLUPART_URL, b, 0))
		goto out;
	if (curl_url_get(ua, CURLUPART_SCHEME, &sa, 0) ||
	    curl_url_get(ub, CURLUPART_SCHEME, &sb, 0) ||
	    curl_url_get(ua, CURLUPART_HOST, &ha, 0) || curl_url_get(ub, CURLUPART_HOST, &hb, 0) ||
	    curl_url_get(ua, CURLUPART_PORT, &pa, CURLU_DEFAULT_PORT) ||
	    curl_url_get(ub, CURLUPART_PORT, &pb, CURLU_DEFAULT_PORT))
		goto out;
	same = !strcasecmp(sa, sb) && !strcasecmp(ha, hb) && !strcmp(pa, pb);
out:
	curl_free(sa);
	curl_free(sb);
	curl_free(ha);
	curl_free(hb);
	curl_free(pa);
	curl_free(pb);
	curl_url_cleanup(ua);
	curl_url_cleanup(ub);
	return same;
}

char *ib_registry_resolve_url(const char *base, const char *rel)
{
	pthread_once(&curl_once, curl_init_once);
	CURLU *u = curl_url();
	char *out = NULL, *r = NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, rel, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_URL, &out, 0) == CURLUE_OK) {
		r = xstrdup(out);
		curl_free(out);
	}
	curl_url_cleanup(u);
	return r;
}

static bool url_scheme_is(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);
	return !strncasecmp(url, scheme, n) && !strncmp(url + n, "://", 3);
}

int ib_registry_parse_link_next(const char *value, char **url_out, ib_error **err)
{
	*url_out = NULL;
	const char *p = value ? value : "";
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		if (*p != '<')
			return ib_error_setc(err, IB_EINVALID, "malformed Link header");
		const char *end = strchr(p, '>');
		if (!end)
			return ib_error_setc(err, IB_EINVALID, "malformed Link header");
		cleanup_free char *target = xstrndup(p + 1, (size_t)(end - p - 1));
		p = end + 1;
		bool next = false;
		/* parameters up to the next link */
		for (;;) {
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p != ';')
				break;
			p++;
			while (*p == ' ' || *p == '\t')
				p++;
			const char *ns = p;
			while (*p && *p != '=' && *p != ';' && *p != ',')
				p++;
			size_t nlen = (size_t)(p - ns);
			while (nlen && (ns[nlen - 1] == ' ' || ns[nlen - 1] == '\t'))
				nlen--;
			cleanup_free char *val = NULL;
			if (*p == '=') {
				p++;
				while (*p == ' ' || *p == '\t')
					p++;
				if (*p == '"') {
					const char *vs = ++p;
					while (*p && *p != '"')
						p++;
					val = xstrndup(vs, (size_t)(p - vs));
					if (*p == '"')
						p++;
				} else {
					const char *vs = p;
					while (*p && *p != ';' && *p != ',' && *p != ' ')
						p++;
					val = xstrndup(vs, (size_t)(p - vs));
				}
			}
			if (val && nlen == 3 && !strncasecmp(ns, "rel", 3)) {
				/* rel may hold several space-separated relation types */
				for (char *t = val; *t;) {
					size_t l = strcspn(t, " ");
					if (l == 4 && !strncasecmp(t, "next", 4))
						next = true;
					t += l;
					while (*t == ' ')
						t++;
				}
			}
		}
		if (next) {
			*url_out = steal_pointer(&target);
			return 0;
		}
		while (*p && *p != ',')
			p++;
	}
	return 0;
}

int64_t ib_registry_parse_retry_after(const char *value, time_t now)
{
	if (!value)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	size_t n = strlen(value);
	while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	if (!n)
		return -1;
	cleanup_free char *v = xstrndup(value, n);
	uint64_t secs;
	if (ib_parse_u64(v, &secs) == 0)
		return secs > INT64_MAX ? INT64_MAX : (int64_t)secs;
	pthread_once(&curl_once, curl_init_once);
	time_t t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return -1;
	return t > now ? (int64_t)(t - now) : 0;
}

int ib_registry_parse_platform(const char *s, ib_platform *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	const char *a = strchr(s, '/');
	if (!a || a == s || !a[1])
		return ib_error_setc(err, IB_EINVALID,
				     "invalid platform \"%s\" (want os/arch[/variant])", s);
	const char *v = strchr(a + 1, '/');
	if (v && (v == a + 1 || !v[1] || strchr(v + 1, '/')))
		return ib_error_setc(err, IB_EINVALID,
				     "invalid platform \"%s\" (want os/arch[/variant])", s);
	out->os = xstrndup(s, (size_t)(a - s));
	out->architecture = v ? xstrndup(a + 1, (size_t)(v - a - 1)) : xstrdup(a + 1);
	out->variant = v ? xstrdup(v + 1) : NULL;
	return 0;
}

static void platform_clear(ib_platform *p)
{
	free(p->os);
	free(p->architecture);
	free(p->variant);
	memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------------ */
/* HTTP requests                                                       */

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
	int64_t range_from;
	bool no_retry; /* the caller retries (uploads) */
	bool no_auth;
	const char *auth_header; /* explicit Authorization (token realm) */
	const char *auth_origin; /* where auth_header may go */
};

static void resp_init(http_resp *r)
{
	memset(r, 0, sizeof(*r));
	ib_buf_init(&r->errbody, ERROR_BODY_CAP);
}

static void resp_clear_headers(http_resp *r)
{
	free(r->location);
	free(r->content_type);
	free(r->digest);
	free(r->www_auth);
	free(r->retry_after);
	free(r->link);
	free(r->content_range);
	r->location = r->content_type = r->digest = r->www_auth = NULL;
	r->retry_after = r->link = r->content_range = NULL;
	r->status = 0;
	r->reason[0] = '\0';
	ib_buf_reset(&r->errbody);
}

static void resp_reset(http_resp *r)
{
	resp_clear_headers(r);
	r->cc = CURLE_OK;
	r->curl_err[0] = '\0';
	r->too_large = false;
	ib_error_free(&r->cb_err);
}

static void resp_free(http_resp *r)
{
	resp_reset(r);
	ib_buf_free(&r->errbody);
	free(r->url);
	r->url = NULL;
}

typedef struct xfer {
	ib_registry_session *s;
	http_req *req;
	http_resp *resp;
	bool began;
} xfer;

static void set_header(char **slot, const char *v, size_t n, bool join)
{
	if (*slot && join) {
		char *j = xasprintf("%s, %.*s", *slot, (int)n, v);
		free(*slot);
		*slot = j;
		return;
	}
	free(*slot);
	*slot = xstrndup(v, n);
}

static size_t on_header(char *data, size_t size, size_t nitems, void *p)
{
	xfer *x = p;
	http_resp *r = x->resp;
	size_t n = size * nitems;
	size_t len = n;
	while (len && (data[len - 1] == '\r' || data[len - 1] == '\n'))
		len--;
	if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
		/* a new response (after 100 Continue, for instance) */
		resp_clear_headers(r);
		const char *sp = memchr(data, ' ', len);
		if (sp) {
			r->status = strtol(sp + 1, NULL, 10);
			const char *rs = memchr(sp + 1, ' ', len - (size_t)(sp + 1 - data));
			if (rs) {
				size_t rl = len - (size_t)(rs + 1 - data);
				if (rl >= sizeof(r->reason))
					rl = sizeof(r->reason) - 1;
				memcpy(r->reason, rs + 1, rl);
				r->reason[rl] = '\0';
			}
		}
		return n;
	}
	const char *colon = memchr(data, ':', len);
	if (!colon)
		return n;
	size_t nlen = (size_t)(colon - data);
	const char *v = colon + 1;
	while (v < data + len && (*v == ' ' || *v == '\t'))
		v++;
	size_t vlen = len - (size_t)(v - data);
#define HDR(name) (nlen == sizeof(name) - 1 && !strncasecmp(data, name, nlen))
	if (HDR("location"))
		set_header(&r->location, v, vlen, false);
	else if (HDR("content-type"))
		set_header(&r->content_type, v, vlen, false);
	else if (HDR("docker-content-digest"))
		set_header(&r->digest, v, vlen, false);
	else if (HDR("www-authenticate"))
		set_header(&r->www_auth, v, vlen, true);
	else if (HDR("retry-after"))
		set_header(&r->retry_after, v, vlen, false);
	else if (HDR("link"))
		set_header(&r->link, v, vlen, true);
	else if (HDR("content-range"))
		set_header(&r->content_range, v, vlen, false);
#undef HDR
	return n;
}

static bool status_ok(long st)
{
	return st >= 200 && st < 300;
}

static size_t on_write(char *data, size_t size, size_t nitems, void *p)
{
	xfer *x = p;
	http_resp *r = x->resp;
	size_t n = size * nitems;
	if (!status_ok(r->status)) {
		size_t room = r->errbody.cap - r->errbody.len;
		ib_buf_append(&r->errbody, data, n < room ? n : room);
		return n;
	}
	sink *sk = x->req->sink;
	if (sk) {
		if (!x->began) {
			x->began = true;
			if (sk->begin && sk->begin(sk->payload, r, &r->cb_err) < 0)
				return 0;
		}
		if (sk->write(sk->payload, data, n, &r->cb_err) < 0)
			return 0;
		return n;
	}
	if (x->req->out && ib_buf_append(x->req->out, data, n) < 0) {
		r->too_large = true;
		return 0;
	}
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *p)
{
	body_src *b = p;
	size_t n = size * nitems;
	int64_t left = b->len - b->pos;
	if ((int64_t)n > left)
		n = (size_t)left;
	if (n == 0)
		return 0;
	int64_t abs = b->off + b->pos;
	if (b->mem) {
		memcpy(buf, b->mem + abs, n);
	} else {
		ssize_t got;
		do
			got = pread(b->fd, buf, n, (off_t)abs);
		while (got < 0 && errno == EINTR);
		if (got <= 0) {
			if (!b->err)
				ib_error_set(&b->err, got < 0 ? errno : EIO, "read local blob");
			return CURL_READFUNC_ABORT;
		}
		n = (size_t)got;
	}
	if (b->hash && abs + (int64_t)n > b->hashed) {
		int64_t skip = b->hashed - abs;
		ib_digest_update(b->hash, buf + skip, n - (size_t)skip);
		b->hashed = abs + (int64_t)n;
		if (b->hashed == b->total) {
			char got[IB_DIGEST_BUFLEN];
			ib_digest_final(b->hash, got);
			if (strcmp(got, b->expect) != 0) {
				if (!b->err)
					ib_error_setc(
					    &b->err, IB_EDIGEST,
					    "local blob %s is corrupt (content hashes to %s);"
					    " run 'imgbuild verify'",
					    b->expect, got);
				return CURL_READFUNC_ABORT;
			}
		}
	}
	b->pos += (int64_t)n;
	if (b->what && b->s)
		report_progress(b->s, b->what, (uint64_t)(abs + (int64_t)n), (uint64_t)b->total);
	return n;
}

static int on_seek(void *p, curl_off_t offset, int origin)
{
	body_src *b = p;
	if (origin != SEEK_SET || offset < 0 || offset > b->len)
		return CURL_SEEKFUNC_FAIL;
	b->pos = offset;
	return CURL_SEEKFUNC_OK;
}

static int on_xferinfo(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	ib_registry_session *s = p;
	return atomic_load(&s->cancel) ? 1 : 0;
}

/* A URL for messages: the path when it is on the registry, without the
 * query (upload URLs carry long state). */
static char *display_url(const ib_registry_session *s, const char *url)
{
	size_t q = strcspn(url, "?#");
	if (ib_registry_same_origin(url, s->base)) {
		const char *p = strstr(url, "://");
		p = p ? strchr(p + 3, '/') : NULL;
		if (p && (size_t)(p - url) < q)
			return xstrndup(p, q - (size_t)(p - url));
	}
	return xstrndup(url, q);
}

static char *absolute_url(const ib_registry_session *s, const char *url)
{
	if (url_scheme_is(url, "http") || url_scheme_is(url, "https"))
		return xstrdup(url);
	return xasprintf("%s%s", s->base, url);
}

static void wipe_slist(struct curl_slist *l)
{
	for (struct curl_slist *i = l; i; i = i->next)
		if (i->data)
			explicit_bzero(i->data, strlen(i->data));
	curl_slist_free_all(l);
}

static const char *reason_for(long st);

static void perform_once(ib_registry_session *s, CURL *h, http_req *req, const char *method,
			 const char *url, const char *auth, bool with_body, http_resp *resp)
{
	curl_easy_reset(h);
	xfer x = {s, req, resp, false};
	body_src empty = {.fd = -1};
	struct curl_slist *hl = NULL;
	if (auth) {
		cleanup_free char *line = xasprintf("Authorization: %s", auth);
		hl = curl_slist_append(hl, line);
		explicit_bzero(line, strlen(line));
	}
	if (req->accept)
		hl = curl_slist_append(hl, req->accept);
	if (req->extra_header)
		hl = curl_slist_append(hl, req->extra_header);
	if (req->content_type) {
		cleanup_free char *ct = xasprintf("Content-Type: %s", req->content_type);
		hl = curl_slist_append(hl, ct);
	}
	if (req->range_from > 0) {
		cleanup_free char *rg = xasprintf("Range: bytes=%" PRId64 "-", req->range_from);
		hl = curl_slist_append(hl, rg);
	}
	hl = curl_slist_append(hl, "Expect:");

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "imgbuild/" IB_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, resp->curl_err);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
	if (!s->o.tls_verify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (s->loopback)
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* a proxy cannot reach our loopback */
	if (s->cainfo)
		curl_easy_setopt(h, CURLOPT_CAINFO, s->cainfo);
	if (s->capath)
		curl_easy_setopt(h, CURLOPT_CAPATH, s->capath);

	if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(method, "GET")) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(method, "POST") && !(with_body && req->body)) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	} else if (!strcmp(method, "PUT") || !strcmp(method, "PATCH") || !strcmp(method, "POST")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		if (with_body && req->body) {
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, req->body);
			curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
			curl_easy_setopt(h, CURLOPT_SEEKDATA, req->body);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body->len);
		} else {
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, &empty);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)0);
		}
		if (strcmp(method, "PUT") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	} else {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}

	dbg(s, "> %s %s", method, url);
	resp->cc = curl_easy_perform(h);
	if (resp->cc == CURLE_OK && status_ok(resp->status) && req->sink && !x.began) {
		x.began = true;
		if (req->sink->begin &&
		    req->sink->begin(req->sink->payload, resp, &resp->cb_err) < 0)
			resp->cc = CURLE_WRITE_ERROR;
	}
	if (resp->cc != CURLE_OK)
		dbg(s, "< %s: %s", curl_easy_strerror(resp->cc),
		    resp->curl_err[0] ? resp->curl_err : "");
	else
		dbg(s, "< %ld %s", resp->status,
		    resp->reason[0] ? resp->reason : reason_for(resp->status));
	wipe_slist(hl);
}

static bool is_redirect(long st)
{
	return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

/* Perform with redirects followed by hand.  auth goes only to the origin
 * it belongs to (the registry, or the token realm). */
static void perform_hops(ib_registry_session *s, CURL *h, http_req *req, const char *auth,
			 http_resp *resp)
{
	cleanup_free char *url = absolute_url(s, req->url);
	cleanup_free char *origin = xstrdup(req->auth_origin ? req->auth_origin : s->base);
	const char *method = req->method;
	bool with_body = true;
	for (int hop = 0;; hop++) {
		bool send = auth && ib_registry_same_origin(url, origin);
		perform_once(s, h, req, method, url, send ? auth : NULL, with_body, resp);
		free(resp->url);
		resp->url = xstrdup(url);
		if (resp->cc != CURLE_OK || !is_redirect(resp->status) || !resp->location)
			return;
		if (req->body && with_body && resp->status != 303)
			return; /* a body is never re-sent elsewhere: the caller sees the 3xx */
		if (hop >= MAX_REDIRECTS) {
			resp->cc = CURLE_TOO_MANY_REDIRECTS;
			snprintf(resp->curl_err, sizeof(resp->curl_err), "more than %d redirects",
				 MAX_REDIRECTS);
			return;
		}
		char *next = ib_registry_resolve_url(url, resp->location);
		if (!next || !(url_scheme_is(next, "https") || url_scheme_is(next, "http")) ||
		    (url_scheme_is(url, "https") && url_scheme_is(next, "http") && !s->insecure)) {
			free(next);
			resp->cc = CURLE_UNSUPPORTED_PROTOCOL;
			snprintf(resp->curl_err, sizeof(resp->curl_err),
				 "refusing redirect to an unsupported or insecure location");
			return;
		}
		if (!ib_registry_same_origin(next, url))
			dbg(s, "redirected to another host; not sending credentials there");
		free(url);
		url = next;
		if (resp->status == 303) {
			method = "GET";
			with_body = false;
		}
	}
}

static bool curl_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

static bool status_retryable(long st)
{
	return st == 408 || st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
}

/* How often a download that made progress may renew its retry budget. */
#define RETRY_RENEWALS 64

/* Wait before retry number attempt (0-based). */
static void backoff(ib_registry_session *s, int attempt, const char *retry_after)
{
	int64_t ms = (int64_t)BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);
	int64_t ra = ib_registry_parse_retry_after(retry_after, time(NULL));
	if (ra >= 0)
		ms = ra * 1000;
	if (ms > RETRY_AFTER_CAP * 1000)
		ms = RETRY_AFTER_CAP * 1000;
	dbg(s, "retrying in %" PRId64 " ms", ms);
	sleep_ms(ms);
}

/* "CODE: message" from a registry error body, or its first line. */
static char *registry_error_text(const http_resp *r)
{
	if (!r->errbody.len)
		return NULL;
	json_error_t je;
	json_t *j = json_loadb(r->errbody.data, r->errbody.len, 0, &je);
	json_t *errs = json_object_get(j, "errors");
	if (json_is_array(errs) && json_array_size(errs) > 0) {
		ib_buf b;
		ib_buf_init(&b, 0);
		size_t i;
		json_t *e;
		json_array_foreach (errs, i, e) {
			if (i >= 3)
				break;
			const char *code = json_string_value(json_object_get(e, "code"));
			const char *msg = json_string_value(json_object_get(e, "message"));
			ib_buf_appendf(&b, "%s%s%s%s", i ? "; " : "", code ? code : "",
				       code && msg ? ": " : "", msg ? msg : "");
		}
		json_decref(j);
		return ib_buf_steal(&b, NULL);
	}
	json_decref(j);
	/* plain text: first line, printable only */
	size_t n = strcspn(r->errbody.data, "\r\n");
	if (n > 200)
		n = 200;
	char *t = xstrndup(r->errbody.data, n);
	for (char *c = t; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			*c = '?';
	if (!*t || t[0] == '<') { /* HTML error pages say nothing useful */
		free(t);
		return NULL;
	}
	return t;
}

static const char *reason_for(long st)
{
	switch (st) {
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 416:
		return "Range Not Satisfiable";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "";
	}
}

/* "METHOD URL: STATUS Reason: CODE: message" */
static char *http_error_text(const ib_registry_session *s, const char *method, const http_resp *r)
{
	cleanup_free char *u = display_url(s, r->url ? r->url : "");
	cleanup_free char *reg = registry_error_text(r);
	const char *reason = r->reason[0] ? r->reason : reason_for(r->status);
	return xasprintf("%s %s: %ld%s%s%s%s", method, u, r->status, *reason ? " " : "", reason,
			 reg ? ": " : "", reg ? reg : "");
}

static int http_error(const ib_registry_session *s, const char *method, const http_resp *r,
		      ib_error **err)
{
	int code = IB_ERROR;
	if (r->status == 401 || r->status == 403)
		code = IB_EAUTH;
	else if (r->status == 404)
		code = IB_ENOTFOUND;
	cleanup_free char *t = http_error_text(s, method, r);
	return ib_error_setc(err, code, "%s", t);
}

static int net_error(const ib_registry_session *s, const char *method, const http_resp *r,
		     ib_error **err)
{
	cleanup_free char *u = display_url(s, r->url ? r->url : s->base);
	const char *detail = r->curl_err[0] ? r->curl_err : curl_easy_strerror(r->cc);
	const char *hint = "";
	if (r->cc == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (trust its CA via SSL_CERT_FILE, or use --tls-verify=false)";
	return ib_error_setc(err, IB_ENET, "%s %s (%s): %s%s", method, u, s->host, detail, hint);
}

static int do_request(ib_registry_session *s, CURL *h, http_req *req, http_resp *resp,
		      ib_error **err);

/* ------------------------------------------------------------------ */
/* authentication                                                      */

static int ensure_creds(ib_registry_session *s, ib_error **err)
{
	if (s->creds_loaded)
		return 0;
	int r = ib_auth_lookup(s->authfile, s->domain, &s->creds, err);
	if (r < 0)
		return ib_error_wrap(err, "credentials for %s", s->domain);
	s->creds_loaded = true;
	if (s->creds.username)
		dbg(s, "using stored credentials for %s", s->domain);
	return 0;
}

static char *basic_value(const ib_credentials *c)
{
	cleanup_free char *pair = xasprintf("%s:%s", c->username, c->password ? c->password : "");
	char *b64 = ib_base64_encode(pair, strlen(pair));
	explicit_bzero(pair, strlen(pair));
	char *v = xasprintf("Basic %s", b64);
	explicit_bzero(b64, strlen(b64));
	free(b64);
	return v;
}

static char *url_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *r = xstrdup(e ? e : "");
	curl_free(e);
	return r;
}

static int auth_required_error(ib_registry_session *s, const char *what, ib_error **err)
{
	return ib_error_setc(err, IB_EAUTH,
			     "authentication required: %s (no credentials for %s; run "
			     "'imgbuild login %s')",
			     what, s->domain, s->domain);
}

/* Fetch a bearer token for scope and cache it.  Called with s->lock held. */
static int fetch_token(ib_registry_session *s, CURL *h, const char *scope, ib_error **err)
{
	if (!s->realm)
		return ib_error_setc(err, IB_EAUTH, "%s asked for a bearer token without a realm",
				     s->host);
	if (!url_scheme_is(s->realm, "https") && !(url_scheme_is(s->realm, "http") && s->insecure))
		return ib_error_setc(err, IB_EAUTH,
				     "token realm %s of %s is not https; refusing to send it "
				     "credentials (use --tls-verify=false for a test registry)",
				     s->realm, s->host);
	int r = ensure_creds(s, err);
	if (r < 0)
		return r;
	ib_buf q;
	ib_buf_init(&q, 0);
	ib_buf_appendf(&q, "%s%c", s->realm, strchr(s->realm, '?') ? '&' : '?');
	bool first = true;
	if (s->service) {
		cleanup_free char *e = url_escape(s->service);
		ib_buf_appendf(&q, "service=%s", e);
		first = false;
	}
	for (const char *p = scope ? scope : ""; *p;) {
		size_t n = strcspn(p, " ");
		if (n) {
			cleanup_free char *one = xstrndup(p, n);
			cleanup_free char *e = url_escape(one);
			ib_buf_appendf(&q, "%sscope=%s", first ? "" : "&", e);
			first = false;
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	cleanup_free char *url = ib_buf_steal(&q, NULL);
	cleanup_free char *auth = s->creds.username ? basic_value(&s->creds) : NULL;
	ib_buf body;
	ib_buf_init(&body, TOKEN_BODY_CAP);
	http_req req = {.method = "GET",
			.url = url,
			.out = &body,
			.accept = "Accept: application/json",
			.no_auth = true,
			.auth_header = auth,
			.auth_origin = url,
			.range_from = -1};
	http_resp resp;
	resp_init(&resp);
	dbg(s, "requesting a token for scope \"%s\"%s", scope ? scope : "",
	    auth ? " with credentials" : " anonymously");
	r = do_request(s, h, &req, &resp, err);
	if (auth)
		explicit_bzero(auth, strlen(auth));
	if (r < 0) {
		ib_buf_free(&body);
		resp_free(&resp);
		return ib_error_wrap(err, "token request");
	}
	if (resp.status == 401 || resp.status == 403) {
		cleanup_free char *t = http_error_text(s, "GET", &resp);
		if (s->creds.username)
			r = ib_error_setc(err, IB_EAUTH,
					  "invalid username or password for %s: token request %s",
					  s->domain, t);
		else
			r = auth_required_error(s, t, err);
	} else if (resp.status != 200) {
		r = http_error(s, "GET", &resp, err);
		ib_error_wrap(err, "token request");
	} else {
		char *token = NULL;
		int64_t exp = 60;
		r = ib_auth_parse_token_response(body.data ? body.data : "", body.len, &token, &exp,
						 err);
		if (r < 0) {
			ib_error_wrap(err, "token from %s", s->realm);
		} else {
			token_entry *e = NULL;
			for (size_t i = 0; i < s->n_tokens; i++)
				if (!strcmp(s->tokens[i].scope, scope ? scope : ""))
					e = &s->tokens[i];
			if (!e) {
				s->tokens = xrealloc(s->tokens, (s->n_tokens + 1) * sizeof(*e));
				e = &s->tokens[s->n_tokens++];
				e->scope = xstrdup(scope ? scope : "");
			} else {
				explicit_bzero(e->token, strlen(e->token));
				free(e->token);
			}
			e->token = token;
			/* renew a little early so a token never expires in flight */
			int64_t margin = exp > 20 ? 10 : exp / 2;
			e->expires = time(NULL) + (time_t)(exp - margin);
		}
	}
	explicit_bzero(body.data ? body.data : (char *)"", body.len);
	ib_buf_free(&body);
	resp_free(&resp);
	return r;
}

/* The Authorization value for a request with scope, fetching a token when
 * needed; *out NULL when the registry wants none. */
static int auth_value(ib_registry_session *s, CURL *h, const char *scope, char **out,
		      ib_error **err)
{
	*out = NULL;
	int r = 0;
	pthread_mutex_lock(&s->lock);
	if (s->auth == AUTH_BASIC) {
		r = ensure_creds(s, err);
		if (r == 0 && s->creds.username)
			*out = basic_value(&s->creds);
	} else if (s->auth == AUTH_BEARER) {
		time_t now = time(NULL);
		token_entry *e = NULL;
		for (size_t i = 0; i < s->n_tokens; i++)
			if (s->tokens[i].expires > now &&
			    ib_auth_scope_covers(s->tokens[i].scope, scope ? scope : ""))
				e = &s->tokens[i];
		if (!e) {
			r = fetch_token(s, h, scope, err);
			for (size_t i = 0; r == 0 && i < s->n_tokens; i++)
				if (!strcmp(s->tokens[i].scope, scope ? scope : ""))
					e = &s->tokens[i];
		}
		if (r == 0 && e)
			*out = xasprintf("Bearer %s", e->token);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Learn what a 401 asks for.  *scope_io may be widened (insufficient
 * scope).  Returns 0 when the request is worth retrying. */
static int handle_401(ib_registry_session *s, CURL *h, const char *method, http_resp *resp,
		      bool sent_auth, char **scope_io, char **fetched, ib_error **err)
{
	cleanup_free char *t = http_error_text(s, method, resp);
	ib_auth_challenge *ch = NULL;
	size_t n = 0;
	if (!resp->www_auth || ib_auth_parse_challenges(resp->www_auth, &ch, &n, NULL) < 0)
		return ib_error_setc(err, IB_EAUTH, "%s (no usable WWW-Authenticate challenge)", t);
	ib_auth_challenge *bearer = NULL, *basic = NULL;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(ch[i].scheme, "bearer") && !bearer)
			bearer = &ch[i];
		else if (!strcmp(ch[i].scheme, "basic") && !basic)
			basic = &ch[i];
	}
	int r = 0;
	pthread_mutex_lock(&s->lock);
	if (bearer) {
		if (bearer->realm && (!s->realm || strcmp(s->realm, bearer->realm))) {
			free(s->realm);
			s->realm = xstrdup(bearer->realm);
		}
		if (bearer->service && (!s->service || strcmp(s->service, bearer->service))) {
			free(s->service);
			s->service = xstrdup(bearer->service);
		}
		enum auth_kind old = s->auth;
		s->auth = AUTH_BEARER;
		char *need = ib_auth_scope_merge(*scope_io, bearer->scope);
		if (sent_auth && old == AUTH_BEARER && *fetched && !strcmp(*fetched, need)) {
			/* a fresh token for exactly this scope was refused */
			free(need);
			r = ensure_creds(s, err);
			if (r == 0) {
				if (!s->creds.username)
					r = auth_required_error(s, t, err);
				else
					r = ib_error_setc(err, IB_EAUTH, "access denied to %s: %s",
							  s->domain, t);
			}
		} else {
			r = fetch_token(s, h, need, err);
			free(*fetched);
			*fetched = xstrdup(need);
			free(*scope_io);
			*scope_io = need;
		}
	} else if (basic) {
		enum auth_kind old = s->auth;
		s->auth = AUTH_BASIC;
		r = ensure_creds(s, err);
		if (r == 0 && !s->creds.username)
			r = auth_required_error(s, t, err);
		else if (r == 0 && sent_auth && old == AUTH_BASIC)
			r = ib_error_setc(err, IB_EAUTH, "invalid username or password for %s: %s",
					  s->domain, t);
	} else {
		r = ib_error_setc(err, IB_EAUTH, "%s (unsupported authentication scheme %s)", t,
				  ch[0].scheme);
	}
	pthread_mutex_unlock(&s->lock);
	ib_auth_challenges_free(ch, n);
	return r;
}

/* Perform req with authentication, retries and redirects.  Returns 0 when
 * an HTTP answer arrived (the caller judges resp->status), else an error.
 * resp is reset first. */
static int do_request(ib_registry_session *s, CURL *h, http_req *req, http_resp *resp,
		      ib_error **err)
{
	int attempt = 0, auth_rounds = 0, renewals = 0;
	cleanup_free char *scope = xstrdup(req->scope ? req->scope : s->scope ? s->scope : "");
	cleanup_free char *fetched = NULL;
	for (;;) {
		if (atomic_load(&s->cancel))
			return ib_error_setc(err, IB_ERROR, "cancelled");
		cleanup_free char *auth = NULL;
		if (req->auth_header) {
			auth = xstrdup(req->auth_header);
		} else if (!req->no_auth) {
			int r = auth_value(s, h, scope, &auth, err);
			if (r < 0)
				return r;
		}
		if (req->sink && req->sink->prepare)
			req->sink->prepare(req->sink->payload, req);
		if (req->body)
			req->body->pos = 0;
		if (req->out)
			ib_buf_reset(req->out);
		resp_reset(resp);
		perform_hops(s, h, req, auth, resp);
		if (auth)
			explicit_bzero(auth, strlen(auth));
		if (resp->cb_err) {
			int code = resp->cb_err->code;
			if (err && !*err)
				*err = steal_pointer(&resp->cb_err);
			return code;
		}
		if (req->body && req->body->err) {
			int code = req->body->err->code;
			if (err && !*err)
				*err = steal_pointer(&req->body->err);
			return code;
		}
		if (resp->too_large) {
			cleanup_free char *u = display_url(s, resp->url);
			return ib_error_setc(err, IB_ETOOLARGE, "%s %s: response exceeds %zu bytes",
					     req->method, u, req->out ? req->out->cap : (size_t)0);
		}
		if (resp->cc != CURLE_OK) {
			if (resp->cc == CURLE_ABORTED_BY_CALLBACK && atomic_load(&s->cancel))
				return ib_error_setc(err, IB_ERROR, "cancelled");
			/* A download that got further before the connection broke
			 * renews its retry budget (bounded: RETRY_RENEWALS times),
			 * so a link that keeps dropping still finishes a large blob. */
			if (req->sink && req->sink->prepare && renewals < RETRY_RENEWALS) {
				int64_t before = req->range_from;
				req->sink->prepare(req->sink->payload, req);
				if (req->range_from > 0 && req->range_from > before) {
					attempt = 0;
					renewals++;
				}
			}
			if (curl_retryable(resp->cc) && !req->no_retry &&
			    attempt < s->o.max_retries) {
				dbg(s, "%s %s failed: %s", req->method, resp->url,
				    curl_easy_strerror(resp->cc));
				backoff(s, attempt++, NULL);
				continue;
			}
			return net_error(s, req->method, resp, err);
		}
		if (resp->status == 401 && !req->no_auth && !req->auth_header) {
			if (auth_rounds++ >= 3) {
				cleanup_free char *t = http_error_text(s, req->method, resp);
				return ib_error_setc(err, IB_EAUTH, "%s", t);
			}
			int r = handle_401(s, h, req->method, resp, auth != NULL, &scope, &fetched,
					   err);
			if (r < 0)
				return r;
			continue;
		}
		if (status_retryable(resp->status) && !req->no_retry &&
		    attempt < s->o.max_retries) {
			dbg(s, "%s %s: %ld, will retry", req->method, resp->url, resp->status);
			backoff(s, attempt++, resp->retry_after);
			continue;
		}
		return 0;
	}
}

static bool resp_retryable(const http_resp *r)
{
	return r->cc != CURLE_OK ? curl_retryable(r->cc) : status_retryable(r->status);
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
	resp_init(&resp);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		free(s->base);
		s->base = xasprintf("%s://%s", schemes[i], s->host);
		http_req req = {.method = "GET",
				.url = "/v2/",
				.no_auth = true,
				.no_retry = true,
				.range_from = -1};
		r = do_request(s, s->h, &req, &resp, err);
		if (r < 0 && !resp.cb_err) {
			bool mismatch = !strcmp(schemes[i], "http")
					    ? looks_like_tls_server(&resp)
					    : resp.cc == CURLE_SSL_CONNECT_ERROR;
			if (i + 1 < n && mismatch) {
				dbg(s, "%s does not answer %s; trying %s", s->host, schemes[i],
				    schemes[i + 1]);
				ib_error_free(err);
				continue;
			}
			if (resp_retryable(&resp)) {
				ib_error_free(err);
				req.no_retry = false;
				r = do_request(s, s->h, &req, &resp, err);
			}
		} else if (r == 0 && i + 1 < n && !strcmp(schemes[i], "http") &&
			   looks_like_tls_server(&resp)) {
			dbg(s, "%s speaks TLS; switching to https", s->host);
			continue;
		} else if (r == 0 && status_retryable(resp.status)) {
			req.no_retry = false;
			r = do_request(s, s->h, &req, &resp, err);
		}
		break;
	}
	if (r < 0) {
		resp_free(&resp);
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
		dbg(s, "%s wants %s authentication", s->host,
		    s->auth == AUTH_BEARER  ? "bearer"
		    : s->auth == AUTH_BASIC ? "basic"
					    : "unknown");
	} else if (resp.status == 404) {
		r = ib_error_setc(err, IB_ENOTFOUND,
				  "%s does not implement the registry API v2 (GET /v2/: 404)",
				  s->host);
	} else if (!status_ok(resp.status)) {
		r = http_error(s, "GET", &resp, err);
	}
	resp_free(&resp);
	return r;
}

static int session_open(ib_registry_session **out, const char *domain, const char *name,
			const char *scope, const ib_credentials *creds,
			const ib_registry_options *o, ib_error **err)
{
	pthread_once(&curl_once, curl_init_once);
	ib_registry_session *s = xcalloc(1, sizeof(*s));
	ib_registry_options defaults = IB_REGISTRY_OPTIONS_INIT;
	s->o = o ? *o : defaults;
	if (s->o.max_retries < 0)
		s->o.max_retries = 0;
	if (s->o.chunk_size <= 0)
		s->o.chunk_size = defaults.chunk_size;
	if (s->o.parallel <= 0)
		s->o.parallel = defaults.parallel;
	s->authfile = s->o.authfile ? xstrdup(s->o.authfile) : NULL;
	s->o.authfile = s->authfile;
	s->platform = s->o.platform ? xstrdup(s->o.platform) : NULL;
	s->o.platform = s->platform;
	s->domain = xstrdup(domain);
	s->host = xstrdup(!strcmp(domain, "docker.io") ? "registry-1.docker.io" : domain);
	s->name = name ? xstrdup(name) : NULL;
	s->repository = name ? xasprintf("%s/%s", domain, name) : xstrdup(domain);
	s->scope = scope ? xstrdup(scope) : NULL;
	s->loopback = ib_ref_is_loopback(domain);
	s->insecure = s->loopback || !s->o.tls_verify;
	const char *cf = getenv("SSL_CERT_FILE");
	const char *cd = getenv("SSL_CERT_DIR");
	s->cainfo = cf && *cf ? xstrdup(cf) : NULL;
	s->capath = cd && *cd ? xstrdup(cd) : NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->cb_lock, NULL);
	atomic_init(&s->cancel, false);
	if (creds && creds->username) {
		s->creds.username = xstrdup(creds->username);
		s->creds.password = xstrdup(creds->password ? creds->password : "");
		s->creds_loaded = true;
	} else if (creds) {
		s->creds_loaded = true; /* explicitly none */
	}
	s->h = curl_easy_init();
	if (!s->h) {
		ib_registry_session_free(s);
		return ib_error_setc(err, IB_ERROR, "cannot initialise libcurl");
	}
	int r = ping(s, err);
	if (r < 0) {
		ib_registry_session_free(s);
		return r;
	}
	*out = s;
	return 0;
}

int ib_registry_session_new(ib_registry_session **out, const char *refstr, bool push,
			    const ib_registry_options *o, ib_error **err)
{
	ib_ref *ref = NULL;
	int r = ib_ref_parse(&ref, refstr, err);
	if (r < 0)
		return r;
	cleanup_free char *scope = ib_auth_scope_repository(ref->path, push);
	r = session_open(out, ref->domain, ref->path, scope, NULL, o, err);
	if (r == 0) {
		(*out)->tag = ref->tag ? xstrdup(ref->tag) : NULL;
		(*out)->digest = ref->digest ? xstrdup(ref->digest) : NULL;
	}
	ib_ref_free(ref);
	return r;
}

void ib_registry_session_free(ib_registry_session *s)
{
	if (!s)
		return;
	if (s->h)
		curl_easy_cleanup(s->h);
	ib_credentials_clear(&s->creds);
	for (size_t i = 0; i < s->n_tokens; i++) {
		free(s->tokens[i].scope);
		explicit_bzero(s->tokens[i].token, strlen(s->tokens[i].token));
		free(s->tokens[i].token);
	}
	free(s->tokens);
	free(s->realm);
	free(s->service);
	free(s->authfile);
	free(s->platform);
	free(s->domain);
	free(s->host);
	free(s->name);
	free(s->repository);
	free(s->tag);
	free(s->digest);
	free(s->scope);
	free(s->base);
	free(s->cainfo);
	free(s->capath);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->cb_lock);
	free(s);
}

const char *ib_registry_session_repository(const ib_registry_session *s)
{
	return s->repository;
}

/* ------------------------------------------------------------------ */
/* blobs                                                               */

static int blob_head(ib_registry_session *s, CURL *h, const char *digest, int64_t *size_out,
		     ib_error **err)
{
	cleanup_free char *url = xasprintf("/v2/%s/blobs/%s", s->name, digest);
	http_req req = {.method = "HEAD", .url = url, .range_from = -1};
	http_resp resp;
	resp_init(&resp);
	int r = do_request(s, h, &req, &resp, err);
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
			r = http_error(s, "HEAD", &resp, err);
		}
	}
	resp_free(&resp);
	return r;
}

int ib_registry_blob_exists(ib_registry_session *s, const char *digest, int64_t *size_out,
			    ib_error **err)
{
	int r = ib_digest_validate(digest, err);
	if (r < 0)
		return r;
	r = blob_head(s, s->h, digest, size_out, err);
	if (r == IB_ENOTFOUND && err && !*err)
		ib_error_setc(err, IB_ENOTFOUND, "blob %s not found in %s", digest, s->repository);
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
		dbg(d->s, "resuming %s at byte %" PRId64, d->digest, d->written);
		return 0;
	}
	if (d->written > 0) {
		dbg(d->s, "registry ignored the range; restarting %s", d->digest);
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
	report_progress(d->s, d->digest, (uint64_t)d->written,
			d->size >= 0 ? (uint64_t)d->size : 0);
	return 0;
}

static void dl_prepare(void *p, http_req *req)
{
	download *d = p;
	req->range_from = d->written > 0 ? d->written : -1;
}

static int blob_download(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
			 int64_t size, ib_error **err)
{
	bool have = ib_store_blob_exists(store, digest);
	if (have) {
		report_event(s, digest, "exists", size >= 0 ? (uint64_t)size : 0);
		return 0;
	}
	download d = {s, store, NULL, digest, size, 0};
	int r = ib_blob_writer_new(&d.w, store, err);
	if (r < 0)
		return r;
	cleanup_free char *url = xasprintf("/v2/%s/blobs/%s", s->name, digest);
	sink sk = {dl_begin, dl_write, dl_prepare, &d};
	http_req req = {.method = "GET", .url = url, .sink = &sk, .range_from = -1};
	http_resp resp;
	resp_init(&resp);
	for (int short_reads = 0;;) {
		r = do_request(s, h, &req, &resp, err);
		if (r < 0)
			break;
		if (resp.status == 416 && size >= 0 && d.written == size)
			break; /* everything was there already */
		if (!status_ok(resp.status)) {
			r = http_error(s, "GET", &resp, err);
			if (r == IB_ENOTFOUND)
				ib_error_wrap(err, "blob %s", digest);
			break;
		}
		if (size >= 0 && d.written < size && short_reads < s->o.max_retries) {
			/* the body ended early without a transport error */
			dbg(s, "%s: short body (%" PRId64 " of %" PRId64 " bytes)", digest,
			    d.written, size);
			backoff(s, short_reads++, NULL);
			continue;
		}
		break;
	}
	resp_free(&resp);
	if (r < 0) {
		ib_blob_writer_abort(d.w);
		return r;
	}
	r = ib_blob_writer_commit(d.w, digest, size, NULL, NULL, err);
	if (r < 0)
		return ib_error_wrap(err, "blob from %s", s->repository);
	report_event(s, digest, "done", (uint64_t)d.written);
	return 0;
}

int ib_registry_blob_get(ib_registry_session *s, ib_store *store, const char *digest, int64_t size,
			 ib_error **err)
{
	int r = ib_digest_validate(digest, err);
	if (r < 0)
		return r;
	return blob_download(s, s->h, store, digest, size, err);
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
	resp_init(&resp);
	cleanup_free char *uploads = xasprintf("/v2/%s/blobs/uploads/", s->name);
	int r;
	if (mount_from) {
		cleanup_free char *from = url_escape(mount_from);
		cleanup_free char *url = xasprintf("%s?mount=%s&from=%s", uploads, digest, from);
		cleanup_free char *from_scope = ib_auth_scope_repository(mount_from, false);
		cleanup_free char *scope = ib_auth_scope_merge(s->scope, from_scope);
		http_req req = {.method = "POST",
				.url = url,
				.scope = scope,
				.no_retry = true,
				.range_from = -1};
		r = do_request(s, h, &req, &resp, err);
		if (r == 0 && resp.status == 201) {
			resp_free(&resp);
			return 0;
		}
		if (r == 0 && resp.status == 202 && resp.location) {
			*location = ib_registry_resolve_url(resp.url, resp.location);
			dbg(s, "mount from %s refused; uploading", mount_from);
		} else if (r == 0) {
			r = http_error(s, "POST", &resp, err);
		}
	} else {
		http_req req = {
		    .method = "POST", .url = uploads, .no_retry = true, .range_from = -1};
		r = do_request(s, h, &req, &resp, err);
		if (r == 0 && (resp.status != 202 || !resp.location))
			r = http_error(s, "POST", &resp, err);
		else if (r == 0)
			*location = ib_registry_resolve_url(resp.url, resp.location);
	}
	if (r == 0 && !*location)
		r = ib_error_setc(err, IB_ERROR, "POST %s: invalid upload location", uploads);
	if (r < 0)
		*retryable = resp_retryable(&resp);
	resp_free(&resp);
	return r;
}

/* Send the blob's bytes to an upload session: one PUT, or PATCH chunks and
 * a closing PUT. */
static int send_upload(ib_registry_session *s, CURL *h, int fd, const char *digest, int64_t size,
		       char *location, bool *retryable, ib_error **err)
{
	http_resp resp;
	resp_init(&resp);
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
				.no_retry = true,
				.range_from = -1};
		r = do_request(s, h, &req, &resp, err);
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
					.no_retry = true,
					.range_from = -1};
			r = do_request(s, h, &req, &resp, err);
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
			http_req req = {
			    .method = "PUT", .url = url, .no_retry = true, .range_from = -1};
			r = do_request(s, h, &req, &resp, err);
		}
	}
	ib_digest_free(hash);
	ib_error_free(&body.err);
	if (r == 0 && resp.status != 201 && resp.status != 204 && resp.status != 200)
		r = http_error(s, method, &resp, err);
	else if (r == 0 && resp.digest && strcmp(resp.digest, digest) != 0)
		r = ib_error_setc(err, IB_EDIGEST, "registry stored blob %s as %s", digest,
				  resp.digest);
	else if (r < 0 || !status_ok(resp.status))
		*retryable = resp_retryable(&resp);
	if (r < 0 && resp.cc != CURLE_OK)
		*retryable = curl_retryable(resp.cc);
	resp_free(&resp);
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

static int blob_upload(ib_registry_session *s, CURL *h, ib_store *store, const char *digest,
		       int64_t size, const char *mount_from, ib_error **err)
{
	int r = blob_head(s, h, digest, NULL, err);
	if (r == 0) {
		report_event(s, digest, "exists", size >= 0 ? (uint64_t)size : 0);
		return 0;
	}
	if (r != IB_ENOTFOUND)
		return r;
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
			report_event(s, digest, mounted ? "mounted" : "done", (uint64_t)fsize);
			return 0;
		}
		if (!retryable || attempt >= s->o.max_retries || atomic_load(&s->cancel)) {
			if (err && !*err)
				*err = e;
			else
				ib_error_free(&e);
			return r;
		}
		dbg(s, "upload of %s failed (%s); starting over", digest, ib_error_msg(e));
		ib_error_free(&e);
		backoff(s, attempt, NULL);
	}
}

int ib_registry_blob_put(ib_registry_session *s, ib_store *store, const char *digest,
			 ib_error **err)
{
	int r = ib_digest_validate(digest, err);
	if (r < 0)
		return r;
	return blob_upload(s, s->h, store, digest, -1, NULL, err);
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

int ib_registry_manifest_get(ib_registry_session *s, const char *reference, char **body_out,
			     size_t *len_out, char **media_type_out,
			     char digest_out[IB_DIGEST_BUFLEN], ib_error **err)
{
	if (!reference)
		reference = s->digest ? s->digest : s->tag ? s->tag : "latest";
	bool by_digest = !strncmp(reference, "sha256:", 7);
	if (by_digest && ib_digest_validate(reference, err) < 0)
		return IB_EINVALID;
	cleanup_free char *url = xasprintf("/v2/%s/manifests/%s", s->name, reference);
	ib_buf body;
	ib_buf_init(&body, IB_MAX_MANIFEST_SIZE);
	http_req req = {
	    .method = "GET", .url = url, .accept = manifest_accept, .out = &body, .range_from = -1};
	http_resp resp;
	resp_init(&resp);
	int r = do_request(s, s->h, &req, &resp, err);
	if (r == IB_ETOOLARGE)
		ib_error_wrap(err, "manifest %s", reference);
	if (r == 0 && resp.status != 200) {
		r = http_error(s, "GET", &resp, err);
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
	resp_free(&resp);
	return r;
}

int ib_registry_manifest_put(ib_registry_session *s, const char *reference, const char *media_type,
			     const void *body, size_t len, char digest_out[IB_DIGEST_BUFLEN],
			     ib_error **err)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, body, len);
	if (!reference)
		reference = s->tag ? s->tag : d;
	cleanup_free char *url = xasprintf("/v2/%s/manifests/%s", s->name, reference);
	body_src b = {.mem = body, .fd = -1, .len = (int64_t)len};
	http_req req = {
	    .method = "PUT", .url = url, .body = &b, .content_type = media_type, .range_from = -1};
	http_resp resp;
	resp_init(&resp);
	int r = do_request(s, s->h, &req, &resp, err);
	if (r == 0 && resp.status != 201 && resp.status != 200 && resp.status != 204)
		r = http_error(s, "PUT", &resp, err);
	if (r == 0 && resp.digest && strcmp(resp.digest, d) != 0)
		r = ib_error_setc(
		    err, IB_EDIGEST,
		    "registry stored manifest %s as %s (it must keep the bytes as sent)", d,
		    resp.digest);
	if (r == 0 && digest_out)
		memcpy(digest_out, d, IB_DIGEST_BUFLEN);
	ib_error_free(&b.err);
	resp_free(&resp);
	return r;
}

/* ------------------------------------------------------------------ */
/* where we have seen blobs: ROOT/registry-blobs.json                  */
/* {"sha256:...": ["host/repo", ...]} — candidates for cross-repo mounts */

static int blob_record_lock(ib_store *st)
{
	cleanup_free char *lp = ib_path_join(ib_store_root(st), "registry-blobs.lock");
	int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

static json_t *blob_record_load(ib_store *st)
{
	cleanup_free char *p = ib_path_join(ib_store_root(st), "registry-blobs.json");
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (ib_read_file(p, 64u << 20, &buf, &len, NULL) < 0)
		return json_object();
	json_t *j = json_loadb(buf, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return json_object();
	}
	return j;
}

/* First repository on domain, other than repository, known to hold digest
 * (in record, as loaded by blob_record_load), or NULL.  Caller frees. */
static char *blob_record_candidate(json_t *record, const char *domain, const char *repository,
				   const char *digest)
{
	json_t *a = json_object_get(record, digest);
	size_t dl = strlen(domain);
	size_t i;
	json_t *e;
	json_array_foreach (a, i, e) {
		const char *r = json_string_value(e);
		if (r && !strncmp(r, domain, dl) && r[dl] == '/' && strcmp(r, repository) != 0)
			return xstrdup(r + dl + 1);
	}
	return NULL;
}

static void blob_record_add(ib_registry_session *s, ib_store *st, char **digests)
{
	cleanup_close int lfd = blob_record_lock(st);
	if (lfd < 0)
		return;
	json_t *j = blob_record_load(st);
	for (size_t i = 0; digests[i]; i++) {
		json_t *a = json_object_get(j, digests[i]);
		if (!json_is_array(a)) {
			a = json_array();
			json_object_set_new(j, digests[i], a);
		}
		size_t k;
		json_t *e;
		json_array_foreach (a, k, e) {
			if (json_is_string(e) && !strcmp(json_string_value(e), s->repository)) {
				json_array_remove(a, k);
				break;
			}
		}
		json_array_insert_new(a, 0, json_string(s->repository));
		while (json_array_size(a) > BLOB_RECORD_MAX_REPOS)
			json_array_remove(a, json_array_size(a) - 1);
		/* keep the most recently used digests at the end */
		json_incref(a);
		json_object_del(j, digests[i]);
		json_object_set_new(j, digests[i], a);
	}
	while (json_object_size(j) > BLOB_RECORD_MAX_DIGESTS) {
		void *it = json_object_iter(j);
		json_object_del(j, json_object_iter_key(it));
	}
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!text)
		return;
	cleanup_free char *p = ib_path_join(ib_store_root(st), "registry-blobs.json");
	ib_error *e = NULL;
	if (ib_write_file_atomic(p, text, strlen(text), 0644, &e) < 0) {
		dbg(s, "cannot record blob locations: %s", ib_error_msg(e));
		ib_error_free(&e);
	}
	free(text);
}

/* ------------------------------------------------------------------ */
/* parallel blob transfers                                             */

typedef struct job {
	const char *digest;
	int64_t size;
	char *mount_from; /* push: repository to mount from, or NULL */
} job;

typedef struct runner {
	ib_registry_session *s;
	ib_store *store;
	bool push;
	job *jobs;
	size_t n, next;
	pthread_mutex_t lock;
	ib_error *err;
	int code;
} runner;

static void run_one(runner *rn, CURL *h)
{
	for (;;) {
		pthread_mutex_lock(&rn->lock);
		if (rn->err || rn->next >= rn->n) {
			pthread_mutex_unlock(&rn->lock);
			return;
		}
		job *j = &rn->jobs[rn->next++];
		pthread_mutex_unlock(&rn->lock);
		ib_error *e = NULL;
		int r = rn->push ? blob_upload(rn->s, h, rn->store, j->digest, j->size,
					       j->mount_from, &e)
				 : blob_download(rn->s, h, rn->store, j->digest, j->size, &e);
		if (r < 0) {
			pthread_mutex_lock(&rn->lock);
			if (!rn->err) {
				rn->err = e;
				rn->code = r;
				e = NULL;
				atomic_store(&rn->s->cancel, true);
			}
			pthread_mutex_unlock(&rn->lock);
			ib_error_free(&e);
			return;
		}
	}
}

static void *worker(void *p)
{
	runner *rn = p;
	CURL *h = curl_easy_init();
	if (!h) {
		pthread_mutex_lock(&rn->lock);
		if (!rn->err) {
			ib_error_setc(&rn->err, IB_ERROR, "cannot initialise libcurl");
			rn->code = IB_ERROR;
			atomic_store(&rn->s->cancel, true);
		}
		pthread_mutex_unlock(&rn->lock);
		return NULL;
	}
	run_one(rn, h);
	curl_easy_cleanup(h);
	return NULL;
}

static int run_jobs(ib_registry_session *s, ib_store *store, bool push, job *jobs, size_t n,
		    ib_error **err)
{
	if (n == 0)
		return 0;
	runner rn = {.s = s, .store = store, .push = push, .jobs = jobs, .n = n};
	pthread_mutex_init(&rn.lock, NULL);
	atomic_store(&s->cancel, false);
	size_t nt = (size_t)s->o.parallel < n ? (size_t)s->o.parallel : n;
	pthread_t *th = xcalloc(nt, sizeof(*th));
	size_t started = 0;
	/* the calling thread works too, with the session's own handle */
	for (size_t i = 1; i < nt; i++) {
		if (pthread_create(&th[started], NULL, worker, &rn) != 0)
			break;
		started++;
	}
	run_one(&rn, s->h);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	pthread_mutex_destroy(&rn.lock);
	atomic_store(&s->cancel, false);
	if (rn.err) {
		if (err && !*err)
			*err = rn.err;
		else
			ib_error_free(&rn.err);
		return rn.code;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* pull                                                                */

static bool is_foreign(const ib_descriptor *d)
{
	return (d->urls && d->urls[0]) ||
	       (d->media_type &&
		(strstr(d->media_type, "foreign") || strstr(d->media_type, "nondistributable")));
}

static int choose_platform(ib_registry_session *s, const ib_index *idx, const char *reference,
			   const ib_descriptor **out, ib_error **err)
{
	ib_platform want = {0};
	if (s->o.platform) {
		int r = ib_registry_parse_platform(s->o.platform, &want, err);
		if (r < 0)
			return r;
	} else {
		const char *os, *arch, *variant;
		ib_host_platform(&os, &arch, &variant);
		want.os = xstrdup(os);
		want.architecture = xstrdup(arch);
		want.variant = variant ? xstrdup(variant) : NULL;
	}
	int i = ib_platform_select(idx, want.os, want.architecture, want.variant);
	const ib_descriptor *m = i >= 0 ? &idx->manifests[i] : NULL;
	int r = 0;
	if (m && m->media_type &&
	    (!strcmp(m->media_type, IB_MT_OCI_INDEX) ||
	     !strcmp(m->media_type, IB_MT_DOCKER_LIST))) {
		r = ib_error_setc(err, IB_EINVALID, "%s:%s: nested index %s is not supported",
				  s->repository, reference, m->digest);
	} else if (!m) {
		ib_buf avail;
		ib_buf_init(&avail, 4096);
		for (size_t k = 0; k < idx->n_manifests; k++) {
			const ib_platform *p = &idx->manifests[k].platform;
			if (p->os && p->architecture && strcmp(p->os, "unknown") != 0)
				ib_buf_appendf(&avail, "%s%s/%s%s%s", avail.len ? ", " : "", p->os,
					       p->architecture, p->variant ? "/" : "",
					       p->variant ? p->variant : "");
		}
		r = ib_error_setc(
		    err, IB_ENOTFOUND, "%s:%s has no image for platform %s/%s%s%s (available: %s)",
		    s->repository, reference, want.os, want.architecture, want.variant ? "/" : "",
		    want.variant ? want.variant : "", avail.len ? avail.data : "none");
		ib_buf_free(&avail);
	} else {
		*out = m;
	}
	platform_clear(&want);
	return r;
}

static bool config_media_type_ok(const char *mt)
{
	return !mt || !strcmp(mt, IB_MT_OCI_CONFIG) || !strcmp(mt, IB_MT_DOCKER_CONFIG);
}

static int pull_with_session(ib_registry_session *s, ib_store *st, const char *tagname,
			     const char *reference, ib_descriptor *desc_out, ib_error **err)
{
	cleanup_free char *body = NULL;
	cleanup_free char *ctype = NULL;
	size_t len = 0;
	char digest[IB_DIGEST_BUFLEN];
	int r = ib_registry_manifest_get(s, reference, &body, &len, &ctype, digest, err);
	if (r < 0)
		return r;
	bool is_index = false;
	r = ib_oci_is_index(body, len, &is_index, err);
	if (r < 0)
		return ib_error_wrap(err, "manifest %s", digest);
	ib_descriptor desc = {0};
	if (is_index) {
		ib_index *idx = NULL;
		r = ib_index_parse(&idx, body, len, err);
		if (r < 0)
			return ib_error_wrap(err, "index %s", digest);
		const ib_descriptor *m = NULL;
		r = choose_platform(s, idx, reference, &m, err);
		if (r == 0) {
			ib_descriptor_copy(&desc, m);
			dbg(s, "index %s: using %s for %s/%s", digest, desc.digest,
			    desc.platform.os, desc.platform.architecture);
		}
		ib_index_free(idx);
		if (r < 0)
			return r;
		free(body);
		free(ctype);
		body = NULL;
		ctype = NULL;
		char d2[IB_DIGEST_BUFLEN];
		r = ib_registry_manifest_get(s, desc.digest, &body, &len, &ctype, d2, err);
		if (r == 0 && desc.size >= 0 && (int64_t)len != desc.size)
			r = ib_error_setc(err, IB_EDIGEST,
					  "manifest %s has %zu bytes, the index says %" PRId64,
					  desc.digest, len, desc.size);
		if (r == 0) {
			r = ib_oci_is_index(body, len, &is_index, err);
			if (r == 0 && is_index)
				r = ib_error_setc(err, IB_EINVALID,
						  "nested index %s is not supported", desc.digest);
		}
		if (r < 0) {
			ib_descriptor_clear(&desc);
			return r;
		}
	} else {
		memcpy(desc.digest, digest, IB_DIGEST_BUFLEN);
		desc.size = (int64_t)len;
	}
	ib_manifest *m = NULL;
	r = ib_manifest_parse(&m, body, len, err);
	if (r < 0) {
		ib_error_wrap(err, "manifest %s", desc.digest);
		ib_descriptor_clear(&desc);
		return r;
	}
	free(desc.media_type);
	desc.media_type = xstrdup(m->media_type ? m->media_type
				  : ctype	? ctype
						: IB_MT_OCI_MANIFEST);
	job *jobs = xcalloc(m->n_layers + 1, sizeof(job));
	size_t nj = 0;
	if (!config_media_type_ok(m->config.media_type)) {
		r = ib_error_setc(err, IB_EINVALID,
				  "%s is not a container image (config media type %s)", desc.digest,
				  m->config.media_type);
		goto out;
	}
	if (m->config.size < 0 || m->config.size > (int64_t)IB_MAX_CONFIG_SIZE) {
		r = ib_error_setc(err, IB_ETOOLARGE, "config %s: %" PRId64 " bytes exceeds %u",
				  m->config.digest, m->config.size, IB_MAX_CONFIG_SIZE);
		goto out;
	}
	jobs[nj++] = (job){m->config.digest, m->config.size, NULL};
	for (size_t i = 0; i < m->n_layers; i++) {
		const ib_descriptor *l = &m->layers[i];
		bool dup = false;
		for (size_t k = 0; k < nj; k++)
			if (!strcmp(jobs[k].digest, l->digest))
				dup = true;
		if (dup)
			continue;
		if (is_foreign(l)) {
			/* only from the registry itself, never from the listed URLs */
			bool have = ib_store_blob_exists(st, l->digest);
			if (!have && blob_head(s, s->h, l->digest, NULL, NULL) != 0) {
				r = ib_error_setc(
				    err, IB_ENOTFOUND,
				    "foreign layer %s is not available from %s; "
				    "imgbuild does not fetch layers from external URLs",
				    l->digest, s->host);
				goto out;
			}
		}
		jobs[nj++] = (job){l->digest, l->size, NULL};
	}
	r = run_jobs(s, st, false, jobs, nj, err);
	if (r < 0)
		goto out;
	{
		/* the config must be an image config matching the layers */
		cleanup_free char *cbuf = NULL;
		size_t clen = 0;
		json_t *cfg = NULL;
		r = ib_store_blob_read(st, m->config.digest, IB_MAX_CONFIG_SIZE, &cbuf, &clen, err);
		if (r == 0)
			r = ib_config_parse(&cfg, cbuf, clen, err);
		if (r == 0 && ib_config_n_diff_ids(cfg) != m->n_layers)
			r = ib_error_setc(err, IB_EINVALID,
					  "config %s lists %zu layers, the manifest %zu",
					  m->config.digest, ib_config_n_diff_ids(cfg), m->n_layers);
		if (r == 0 && !desc.platform.os) {
			const char *os = json_string_value(json_object_get(cfg, "os"));
			const char *arch = json_string_value(json_object_get(cfg, "architecture"));
			const char *var = json_string_value(json_object_get(cfg, "variant"));
			desc.platform.os = os ? xstrdup(os) : NULL;
			desc.platform.architecture = arch ? xstrdup(arch) : NULL;
			desc.platform.variant = var ? xstrdup(var) : NULL;
		}
		json_decref(cfg);
		if (r < 0) {
			ib_error_wrap(err, "config");
			goto out;
		}
	}
	{
		char stored[IB_DIGEST_BUFLEN];
		r = ib_store_blob_put(st, body, len, stored, err);
		if (r == 0 && strcmp(stored, desc.digest) != 0)
			r = ib_error_setc(err, IB_EDIGEST, "stored manifest as %s, expected %s",
					  stored, desc.digest);
		if (r < 0)
			goto out;
	}
	/* drop fields the tag descriptor should not carry over from the index */
	json_decref(desc.annotations);
	desc.annotations = NULL;
	ib_strv_free(desc.urls);
	desc.urls = NULL;
	if (tagname) {
		r = ib_store_tag_set(st, tagname, &desc, err);
		if (r < 0)
			goto out;
	}
	{
		char **digests = xcalloc(nj + 2, sizeof(char *));
		for (size_t i = 0; i < nj; i++)
			digests[i] = xstrdup(jobs[i].digest);
		blob_record_add(s, st, digests);
		ib_strv_free(digests);
	}
	if (desc_out) {
		ib_descriptor_copy(desc_out, &desc);
	}
out:
	free(jobs);
	ib_manifest_free(m);
	ib_descriptor_clear(&desc);
	return r;
}

int ib_registry_pull(ib_store *st, const char *refstr, const ib_registry_options *o,
		     ib_descriptor *desc_out, ib_error **err)
{
	ib_ref *ref = NULL;
	int r = ib_ref_parse(&ref, refstr, err);
	if (r < 0)
		return r;
	cleanup_free char *full = ib_ref_string(ref);
	ib_registry_session *s = NULL;
	cleanup_free char *scope = ib_auth_scope_repository(ref->path, false);
	r = session_open(&s, ref->domain, ref->path, scope, NULL, o, err);
	if (r == 0) {
		const char *reference = ref->digest ? ref->digest : ref->tag ? ref->tag : "latest";
		r = pull_with_session(s, st, full, reference, desc_out, err);
	}
	ib_registry_session_free(s);
	ib_ref_free(ref);
	return r;
}

/* ------------------------------------------------------------------ */
/* push                                                                */

int ib_registry_push(ib_store *st, const char *src_ref, const char *dest_ref,
		     const ib_registry_options *o, char digest_out[IB_DIGEST_BUFLEN],
		     ib_error **err)
{
	ib_image *img = NULL;
	int r = ib_store_image_load(st, src_ref, &img, err);
	if (r < 0)
		return r;
	ib_ref *dref = NULL, *sref = NULL;
	r = ib_ref_parse(&dref, dest_ref ? dest_ref : src_ref, err);
	if (r < 0) {
		ib_image_free(img);
		return r;
	}
	if (ib_ref_parse(&sref, src_ref, NULL) < 0)
		sref = NULL;
	ib_registry_session *s = NULL;
	job *jobs = NULL;
	json_t *record = NULL;
	size_t nj = 0;
	if (dref->digest && strcmp(dref->digest, img->desc.digest) != 0) {
		r = ib_error_setc(err, IB_EDIGEST, "%s is %s, not %s", src_ref, img->desc.digest,
				  dref->digest);
		goto out;
	}
	{
		cleanup_free char *scope = ib_auth_scope_repository(dref->path, true);
		r = session_open(&s, dref->domain, dref->path, scope, NULL, o, err);
		if (r < 0)
			goto out;
	}
	ib_manifest *m = img->manifest;
	jobs = xcalloc(m->n_layers + 1, sizeof(job));
	record = blob_record_load(st);
	for (size_t i = 0; i <= m->n_layers; i++) {
		const ib_descriptor *d = i < m->n_layers ? &m->layers[i] : &m->config;
		bool dup = false;
		for (size_t k = 0; k < nj; k++)
			if (!strcmp(jobs[k].digest, d->digest))
				dup = true;
		if (dup)
			continue;
		if (i < m->n_layers && is_foreign(d)) {
			report_event(s, d->digest, "skipped",
				     (uint64_t)(d->size > 0 ? d->size : 0));
			continue;
		}
		job *j = &jobs[nj++];
		j->digest = d->digest;
		j->size = d->size;
		j->mount_from =
		    blob_record_candidate(record, dref->domain, s->repository, d->digest);
		if (!j->mount_from && sref && !strcmp(sref->domain, dref->domain) &&
		    strcmp(sref->path, dref->path) != 0)
			j->mount_from = xstrdup(sref->path);
	}
	r = run_jobs(s, st, true, jobs, nj, err);
	if (r < 0)
		goto out;
	{
		const char *mt = img->desc.media_type ? img->desc.media_type
				 : m->media_type      ? m->media_type
						      : IB_MT_OCI_MANIFEST;
		const char *reference = dref->tag ? dref->tag : img->desc.digest;
		char d[IB_DIGEST_BUFLEN];
		r = ib_registry_manifest_put(s, reference, mt, img->manifest_raw, img->manifest_len,
					     d, err);
		if (r < 0)
			goto out;
		if (strcmp(d, img->desc.digest) != 0) {
			r = ib_error_setc(
			    err, IB_EDIGEST,
			    "local manifest bytes hash to %s, not %s; run 'imgbuild verify'", d,
			    img->desc.digest);
			goto out;
		}
		if (digest_out)
			memcpy(digest_out, d, IB_DIGEST_BUFLEN);
	}
	{
		char **digests = xcalloc(nj + 1, sizeof(char *));
		for (size_t i = 0; i < nj; i++)
			digests[i] = xstrdup(jobs[i].digest);
		blob_record_add(s, st, digests);
		ib_strv_free(digests);
	}
out:
	for (size_t i = 0; jobs && i < nj; i++)
		free(jobs[i].mount_from);
	free(jobs);
	json_decref(record);
	ib_registry_session_free(s);
	ib_ref_free(dref);
	ib_ref_free(sref);
	ib_image_free(img);
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
		ib_buf_init(&body, LIST_BODY_CAP);
		http_req req = {.method = "GET",
				.url = url,
				.out = &body,
				.accept = "Accept: application/json",
				.range_from = -1};
		http_resp resp;
		resp_init(&resp);
		r = do_request(s, s->h, &req, &resp, err);
		if (r == 0 && page == 0 && resp.status == 400 && resp.errbody.data &&
		    strstr(resp.errbody.data, "PAGINATION_NUMBER_INVALID") && strchr(url, '?')) {
			/* the registry caps the page size below ours: let it choose */
			dbg(s, "page size refused; using the registry's default");
			*strchr(url, '?') = '\0';
			ib_buf_free(&body);
			resp_free(&resp);
			page = -1;
			continue;
		}
		if (r == 0 && resp.status != 200)
			r = http_error(s, "GET", &resp, err);
		json_t *j = NULL;
		if (r == 0) {
			j = json_loadb(body.data ? body.data : "", body.len, 0, NULL);
			json_t *a = json_object_get(j, field);
			if (!json_is_object(j) || !(json_is_array(a) || json_is_null(a) || !a)) {
				cleanup_free char *u = display_url(s, resp.url);
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
		resp_free(&resp);
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
	int r = session_open(&s, domain, NULL, "registry:catalog:*", NULL, o, err);
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
	r = session_open(&s, ref->domain, ref->path, scope, NULL, o, err);
	if (r == 0) {
		cleanup_free char *url = xasprintf("/v2/%s/tags/list?n=100", ref->path);
		r = get_pages(s, url, "tags", tags_out, err);
	}
	ib_registry_session_free(s);
	ib_ref_free(ref);
	return r;
}

int ib_registry_login_check(const char *host, const ib_credentials *creds,
			    const ib_registry_options *o, ib_error **err)
{
	cleanup_free char *domain = ib_auth_normalize_host(host);
	ib_credentials none = {0};
	ib_registry_session *s = NULL;
	int r = session_open(&s, domain, NULL, "", creds ? creds : &none, o, err);
	if (r < 0)
		return r;
	if (s->auth == AUTH_NONE) {
		dbg(s, "%s does not ask for authentication", s->host);
		ib_registry_session_free(s);
		return 0;
	}
	http_req req = {.method = "GET", .url = "/v2/", .range_from = -1};
	http_resp resp;
	resp_init(&resp);
	r = do_request(s, s->h, &req, &resp, err);
	if (r == 0 && !status_ok(resp.status))
		r = http_error(s, "GET", &resp, err);
	resp_free(&resp);
	ib_registry_session_free(s);
	return r;
}
