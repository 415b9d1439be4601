/* Registry client, authentication over the network: Basic credentials
 * from the auth files, bearer tokens fetched from the realm a 401 names
 * and cached per scope, renewal on insufficient_scope.  auth.c parses
 * what is exchanged here and never touches the network. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "registry_internal.h"

static int ensure_creds(ib_registry_session *s, ib_error **err)
{
	if (s->creds_loaded)
		return 0;
	int r = ib_auth_lookup(s->authfile, s->domain, &s->creds, err);
	if (r < 0)
		return ib_error_wrap(err, "credentials for %s", s->domain);
	s->creds_loaded = true;
	if (s->creds.username)
		ib_registry_debug(s, "using stored credentials for %s", s->domain);
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

char *ib_registry_url_escape(const char *s)
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
	if (!ib_registry_url_scheme_is(s->realm, "https") &&
	    !(ib_registry_url_scheme_is(s->realm, "http") && s->insecure))
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
		cleanup_free char *e = ib_registry_url_escape(s->service);
		ib_buf_appendf(&q, "service=%s", e);
		first = false;
	}
	for (const char *p = scope ? scope : ""; *p;) {
		size_t n = strcspn(p, " ");
		if (n) {
			cleanup_free char *one = xstrndup(p, n);
			cleanup_free char *e = ib_registry_url_escape(one);
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
	ib_buf_init(&body, IB_REGISTRY_TOKEN_BODY_CAP);
	http_req req = {.method = "GET",
			.url = url,
			.out = &body,
			.accept = "Accept: application/json",
			.no_auth = true,
			.auth_header = auth,
			.auth_origin = url};
	http_resp resp;
	ib_registry_resp_init(&resp);
	ib_registry_debug(s, "requesting a token for scope \"%s\"%s", scope ? scope : "",
			  auth ? " with credentials" : " anonymously");
	r = ib_registry_request(s, h, &req, &resp, err);
	if (auth)
		explicit_bzero(auth, strlen(auth));
	if (r < 0) {
		ib_buf_free(&body);
		ib_registry_resp_free(&resp);
		return ib_error_wrap(err, "token request");
	}
	if (resp.status == 401 || resp.status == 403) {
		cleanup_free char *t = ib_registry_http_error_text(s, "GET", &resp);
		if (s->creds.username)
			r = ib_error_setc(err, IB_EAUTH,
					  "invalid username or password for %s: token request %s",
					  s->domain, t);
		else
			r = auth_required_error(s, t, err);
	} else if (resp.status != 200) {
		r = ib_registry_http_error(s, "GET", &resp, err);
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
	ib_registry_resp_free(&resp);
	return r;
}

/* The Authorization value for a request with scope, fetching a token when
 * needed; *out NULL when the registry wants none. */
int ib_registry_auth_value(ib_registry_session *s, CURL *h, const char *scope, char **out,
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
int ib_registry_auth_challenged(ib_registry_session *s, CURL *h, const char *method,
				http_resp *resp, bool sent_auth, char **scope_io, char **fetched,
				ib_error **err)
{
	cleanup_free char *t = ib_registry_http_error_text(s, method, resp);
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
