/* Registry client, HTTP transport: one request on a CURL handle with
 * redirects followed by hand (credentials only to their own origin),
 * retries with backoff on 408/429/5xx and broken connections, capped
 * bodies, and the error texts that name the request and the answer.
 * Authentication is asked of registry_auth.c. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "registry_internal.h"

#define MAX_REDIRECTS 10
#define RETRY_AFTER_CAP 30
#define BACKOFF_BASE_MS 250
/* How often a download that made progress may renew its retry budget. */
#define RETRY_RENEWALS 64

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
}

void ib_registry_curl_init(void)
{
	pthread_once(&curl_once, curl_init_once);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
bool ib_registry_same_origin(const char *a, const char *b)
{
	ib_registry_curl_init();
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
	ib_registry_curl_init();
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

bool ib_registry_url_scheme_is(const char *url, const char *scheme)
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
	ib_registry_curl_init();
	time_t t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return -1;
	return t > now ? (int64_t)(t - now) : 0;
}
void ib_registry_resp_init(http_resp *r)
{
	memset(r, 0, sizeof(*r));
	ib_buf_init(&r->errbody, IB_REGISTRY_ERROR_BODY_CAP);
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

void ib_registry_resp_free(http_resp *r)
{
	resp_reset(r);
	ib_buf_free(&r->errbody);
	free(r->url);
	r->url = NULL;
}

typedef struct xfer {
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

bool ib_registry_status_ok(long st)
{
	return st >= 200 && st < 300;
}

static size_t on_write(char *data, size_t size, size_t nitems, void *p)
{
	xfer *x = p;
	http_resp *r = x->resp;
	size_t n = size * nitems;
	if (!ib_registry_status_ok(r->status)) {
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
		ib_registry_report_progress(b->s, b->what, (uint64_t)(abs + (int64_t)n),
					    (uint64_t)b->total);
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
char *ib_registry_display_url(const ib_registry_session *s, const char *url)
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
	if (ib_registry_url_scheme_is(url, "http") || ib_registry_url_scheme_is(url, "https"))
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
	xfer x = {req, resp, false};
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
	long tmo = s->o.timeout_sec > 0 ? (long)s->o.timeout_sec : 0;
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, tmo ? tmo : 30L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, tmo ? tmo : 60L);
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
	if (s->tls_noverify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (s->loopback)
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* a proxy cannot reach our loopback */
	if (s->cablob) {
		/* the session outlives every request made with it */
		struct curl_blob blob = {s->cablob, s->cablob_len, CURL_BLOB_NOCOPY};
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (s->capath)
		curl_easy_setopt(h, CURLOPT_CAPATH, s->capath);
	if (s->sslcert) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, s->sslcert);
		curl_easy_setopt(h, CURLOPT_SSLKEY, s->sslkey);
	}

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

	ib_registry_debug(s, "> %s %s", method, url);
	resp->cc = curl_easy_perform(h);
	if (resp->cc == CURLE_OK && ib_registry_status_ok(resp->status) && req->sink && !x.began) {
		x.began = true;
		if (req->sink->begin &&
		    req->sink->begin(req->sink->payload, resp, &resp->cb_err) < 0)
			resp->cc = CURLE_WRITE_ERROR;
	}
	if (resp->cc != CURLE_OK)
		ib_registry_debug(s, "< %s: %s", curl_easy_strerror(resp->cc),
				  resp->curl_err[0] ? resp->curl_err : "");
	else
		ib_registry_debug(s, "< %ld %s", resp->status,
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
		if (!next ||
		    !(ib_registry_url_scheme_is(next, "https") ||
		      ib_registry_url_scheme_is(next, "http")) ||
		    (ib_registry_url_scheme_is(url, "https") &&
		     ib_registry_url_scheme_is(next, "http") && !s->insecure)) {
			free(next);
			resp->cc = CURLE_UNSUPPORTED_PROTOCOL;
			snprintf(resp->curl_err, sizeof(resp->curl_err),
				 "refusing redirect to an unsupported or insecure location");
			return;
		}
		if (!ib_registry_same_origin(next, url))
			ib_registry_debug(
			    s, "redirected to another host; not sending credentials there");
		free(url);
		url = next;
		if (resp->status == 303) {
			method = "GET";
			with_body = false;
		}
	}
}

bool ib_registry_curl_retryable(CURLcode cc)
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

bool ib_registry_resp_plain_http(const http_resp *r)
{
	if (r->cc != CURLE_SSL_CONNECT_ERROR)
		return false;
	return strstr(r->curl_err, "wrong version number") ||
	       strstr(r->curl_err, "packet length too long") ||
	       strstr(r->curl_err, "http request");
}

bool ib_registry_status_retryable(long st)
{
	return st == 408 || st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
}

/* Wait before retry number attempt (0-based). */
void ib_registry_backoff(ib_registry_session *s, int attempt, const char *retry_after)
{
	int64_t ms = (int64_t)BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);
	int64_t ra = ib_registry_parse_retry_after(retry_after, time(NULL));
	if (ra >= 0)
		ms = ra * 1000;
	if (ms > RETRY_AFTER_CAP * 1000)
		ms = RETRY_AFTER_CAP * 1000;
	ib_registry_debug(s, "retrying in %" PRId64 " ms", ms);
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
char *ib_registry_http_error_text(const ib_registry_session *s, const char *method,
				  const http_resp *r)
{
	cleanup_free char *u = ib_registry_display_url(s, r->url ? r->url : "");
	cleanup_free char *reg = registry_error_text(r);
	const char *reason = r->reason[0] ? r->reason : reason_for(r->status);
	return xasprintf("%s %s: %ld%s%s%s%s", method, u, r->status, *reason ? " " : "", reason,
			 reg ? ": " : "", reg ? reg : "");
}

int ib_registry_http_error(const ib_registry_session *s, const char *method, const http_resp *r,
			   ib_error **err)
{
	int code = IB_ERROR;
	if (r->status == 401 || r->status == 403)
		code = IB_EAUTH;
	else if (r->status == 404)
		code = IB_ENOTFOUND;
	cleanup_free char *t = ib_registry_http_error_text(s, method, r);
	return ib_error_setc(err, code, "%s", t);
}

static int net_error(const ib_registry_session *s, const char *method, const http_resp *r,
		     ib_error **err)
{
	cleanup_free char *u = ib_registry_display_url(s, r->url ? r->url : s->base);
	const char *detail = r->curl_err[0] ? r->curl_err : curl_easy_strerror(r->cc);
	const char *hint = "";
	if (r->cc == CURLE_PEER_FAILED_VERIFICATION)
		hint = " (trust its CA in certs.d or via SSL_CERT_FILE, or use --tls-verify=false)";
	else if (ib_registry_resp_plain_http(r))
		hint = " (the registry speaks plain HTTP: add it to insecure registries"
		       " (registries.conf or daemon.json) or use --tls-verify=false)";
	return ib_error_setc(err, IB_ENET, "%s %s (%s): %s%s", method, u, s->host, detail, hint);
}

/* Authentication, retries and redirects around perform_hops. */
int ib_registry_request(ib_registry_session *s, CURL *h, http_req *req, http_resp *resp,
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
			int r = ib_registry_auth_value(s, h, scope, &auth, err);
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
			cleanup_free char *u = ib_registry_display_url(s, resp->url);
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
			if (ib_registry_curl_retryable(resp->cc) && !ib_registry_resp_plain_http(resp) &&
			    !req->no_retry &&
			    attempt < s->o.max_retries) {
				ib_registry_debug(s, "%s %s failed: %s", req->method, resp->url,
						  curl_easy_strerror(resp->cc));
				ib_registry_backoff(s, attempt++, NULL);
				continue;
			}
			return net_error(s, req->method, resp, err);
		}
		if (resp->status == 401 && !req->no_auth && !req->auth_header) {
			if (auth_rounds++ >= 3) {
				cleanup_free char *t =
				    ib_registry_http_error_text(s, req->method, resp);
				return ib_error_setc(err, IB_EAUTH, "%s", t);
			}
			int r = ib_registry_auth_challenged(s, h, req->method, resp, auth != NULL,
							    &scope, &fetched, err);
			if (r < 0)
				return r;
			continue;
		}
		if (ib_registry_status_retryable(resp->status) && !req->no_retry &&
		    attempt < s->o.max_retries) {
			ib_registry_debug(s, "%s %s: %ld, will retry", req->method, resp->url,
					  resp->status);
			ib_registry_backoff(s, attempt++, resp->retry_after);
			continue;
		}
		return 0;
	}
}

bool ib_registry_resp_retryable(const http_resp *r)
{
	return r->cc != CURLE_OK ? ib_registry_curl_retryable(r->cc) && !ib_registry_resp_plain_http(r)
				 : ib_registry_status_retryable(r->status);
}
