/* Image references, following the grammar of distribution/reference:
 *
 *   reference  := name [ ":" tag ] [ "@" digest ]
 *   name       := [ domain "/" ] component ( "/" component )*
 *   domain     := host [ ":" port ]      host: DNS name or "[" IPv6 "]"
 *   component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
 *
 * The first path element is a domain only when it contains '.' or ':' or is
 * "localhost"; otherwise the name lives on docker.io, where a single
 * component gets the "library/" prefix. */
#include "ref.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"
#include "util.h"

#define DEFAULT_DOMAIN "docker.io"
#define LEGACY_DOMAIN "index.docker.io"
#define DEFAULT_REGISTRY_HOST "registry-1.docker.io"
#define OFFICIAL_PREFIX "library/"
#define NAME_MAX_LEN 255
#define TAG_MAX_LEN 128

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || is_digit(c);
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
	return is_alnum(c) || c == '_';
}

static bool is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int ref_error(ib_error **err, const char *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int ref_error(ib_error **err, const char *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *why = xvasprintf(fmt, ap);
	va_end(ap);
	return ib_error_setc(err, IB_EINVALID, "invalid reference \"%s\": %s", s, why);
}

/* One repository path component, s[0..n).  Upper case is checked by the
 * caller first so that it gets its own message. */
static bool component_valid(const char *s, size_t n)
{
	size_t i = 0;

	for (;;) {
		size_t run = 0;
		while (i < n && is_lower_alnum(s[i])) {
			i++;
			run++;
		}
		if (run == 0)
			return false;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
	}
}

/* ":digits" or nothing. */
static bool port_valid(const char *p, size_t n)
{
	if (n == 0)
		return true;
	if (p[0] != ':' || n == 1)
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_digit(p[i]))
			return false;
	return true;
}

/* host[:port], where host is a DNS name (components of letters, digits
 * and inner '-', joined by '.') or a bracketed IPv6 address. */
static bool domain_valid(const char *s, size_t n)
{
	size_t i = 0;

	if (n > 0 && s[0] == '[') {
		i = 1;
		while (i < n && (is_hex(s[i]) || s[i] == ':'))
			i++;
		if (i == 1 || i == n || s[i] != ']')
			return false;
		return port_valid(s + i + 1, n - i - 1);
	}
	for (;;) {
		size_t start = i;
		while (i < n && (is_alnum(s[i]) || s[i] == '-'))
			i++;
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return false;
		if (i < n && s[i] == '.') {
			i++;
			continue;
		}
		break;
	}
	return port_valid(s + i, n - i);
}

static bool looks_like_domain(const char *s, size_t n)
{
	return memchr(s, '.', n) || memchr(s, ':', n) ||
	       (n == strlen("localhost") && memcmp(s, "localhost", n) == 0);
}

static bool tag_valid(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > TAG_MAX_LEN || !is_word(t[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

/* docker refuses a bare 64-hex name: it would be mistaken for an image ID. */
static bool is_image_id(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!is_digit(s[n]) && !(s[n] >= 'a' && s[n] <= 'f'))
			return false;
	return n == 64;
}

void ib_ref_free(ib_ref *ref)
{
	if (!ref)
		return;
	free(ref->domain);
	free(ref->path);
	free(ref->tag);
	free(ref->digest);
	free(ref);
}

static void ref_freep(ib_ref **ref)
{
	ib_ref_free(*ref);
}

/* default_tag: give "latest" to a reference with neither tag nor digest. */
static int ref_parse(ib_ref **out, const char *s, bool default_tag, ib_error **err)
{
	*out = NULL;
	if (!s || !*s)
		return ref_error(err, s ? s : "", "empty reference");
	if (is_image_id(s))
		return ref_error(err, s,
				 "cannot use a 64-character hexadecimal string as a "
				 "repository name");

	__attribute__((cleanup(ref_freep))) ib_ref *ref = xcalloc(1, sizeof(*ref));

	const char *at = strchr(s, '@');
	size_t head_len = at ? (size_t)(at - s) : strlen(s);
	if (at) {
		ib_error *derr = NULL;
		if (ib_digest_validate(at + 1, &derr) < 0) {
			int r = ref_error(err, s, "%s", ib_error_msg(derr));
			ib_error_free(&derr);
			return r;
		}
		ref->digest = xstrdup(at + 1);
	}

	/* The tag is after the last ':' that follows the last '/'. */
	size_t name_len = head_len;
	const char *slash = memrchr(s, '/', head_len);
	const char *tag_from = slash ? slash + 1 : s;
	const char *colon = memchr(tag_from, ':', head_len - (size_t)(tag_from - s));
	if (colon) {
		name_len = (size_t)(colon - s);
		cleanup_free char *tag = xstrndup(colon + 1, head_len - name_len - 1);
		if (!*tag)
			return ref_error(err, s, "empty tag");
		if (!tag_valid(tag))
			return ref_error(err, s,
					 "invalid tag \"%s\": a tag is at most %d letters, "
					 "digits, '_', '.' or '-' and cannot start with "
					 "'.' or '-'",
					 tag, TAG_MAX_LEN);
		ref->tag = steal_pointer(&tag);
	}
	if (name_len == 0)
		return ref_error(err, s, "missing repository name");

	const char *first_slash = memchr(s, '/', name_len);
	const char *rest = s;
	size_t rest_len = name_len;
	if (first_slash && looks_like_domain(s, (size_t)(first_slash - s))) {
		size_t dlen = (size_t)(first_slash - s);
		if (!domain_valid(s, dlen))
			return ref_error(err, s, "invalid registry domain \"%.*s\"", (int)dlen, s);
		ref->domain = xstrndup(s, dlen);
		rest = first_slash + 1;
		rest_len = name_len - dlen - 1;
	} else {
		ref->domain = xstrdup(DEFAULT_DOMAIN);
	}
	if (strcmp(ref->domain, LEGACY_DOMAIN) == 0) {
		free(ref->domain);
		ref->domain = xstrdup(DEFAULT_DOMAIN);
	}

	for (size_t i = 0; i < rest_len; i++)
		if (rest[i] >= 'A' && rest[i] <= 'Z')
			return ref_error(err, s, "repository name must be lowercase");
	for (size_t i = 0; i <= rest_len;) {
		const char *end = memchr(rest + i, '/', rest_len - i);
		size_t n = end ? (size_t)(end - (rest + i)) : rest_len - i;
		if (n == 0)
			return ref_error(err, s, "empty path component in repository name");
		if (!component_valid(rest + i, n))
			return ref_error(
			    err, s,
			    "invalid repository name component \"%.*s\": use lower-case "
			    "letters and digits, separated by '.', '_', '__' or '-'",
			    (int)n, rest + i);
		i += n + 1;
	}

	if (strcmp(ref->domain, DEFAULT_DOMAIN) == 0 && !memchr(rest, '/', rest_len))
		ref->path = xasprintf(OFFICIAL_PREFIX "%.*s", (int)rest_len, rest);
	else
		ref->path = xstrndup(rest, rest_len);

	if (strlen(ref->domain) + 1 + strlen(ref->path) > NAME_MAX_LEN)
		return ref_error(err, s, "repository name must not be more than %d characters",
				 NAME_MAX_LEN);

	if (default_tag && !ref->tag && !ref->digest)
		ref->tag = xstrdup("latest");
	*out = steal_pointer(&ref);
	return 0;
}

int ib_ref_parse(ib_ref **out, const char *s, ib_error **err)
{
	return ref_parse(out, s, true, err);
}

char *ib_ref_name(const ib_ref *ref)
{
	return xasprintf("%s/%s", ref->domain, ref->path);
}

static char *with_suffixes(const char *name, const ib_ref *ref)
{
	return xasprintf("%s%s%s%s%s", name, ref->tag ? ":" : "", ref->tag ? ref->tag : "",
			 ref->digest ? "@" : "", ref->digest ? ref->digest : "");
}

char *ib_ref_string(const ib_ref *ref)
{
	cleanup_free char *name = ib_ref_name(ref);
	return with_suffixes(name, ref);
}

char *ib_ref_familiar_name(const ib_ref *ref)
{
	if (strcmp(ref->domain, DEFAULT_DOMAIN) != 0)
		return ib_ref_name(ref);
	const char *path = ref->path;
	/* "docker.io/example.com/app" keeps its domain: without it the first
	 * component would be read as a registry host. */
	const char *slash = strchr(path, '/');
	if (slash && looks_like_domain(path, (size_t)(slash - path)))
		return ib_ref_name(ref);
	size_t plen = strlen(OFFICIAL_PREFIX);
	/* "library/x" -> "x", but "library/x/y" stays as it is, like docker. */
	if (strncmp(path, OFFICIAL_PREFIX, plen) == 0 && !strchr(path + plen, '/'))
		path += plen;
	return xstrdup(path);
}

char *ib_ref_familiar(const ib_ref *ref)
{
	cleanup_free char *name = ib_ref_familiar_name(ref);
	return with_suffixes(name, ref);
}

const char *ib_ref_registry_host(const ib_ref *ref)
{
	if (strcmp(ref->domain, DEFAULT_DOMAIN) == 0)
		return DEFAULT_REGISTRY_HOST;
	return ref->domain;
}

bool ib_ref_is_loopback(const char *domain)
{
	if (!domain || !*domain)
		return false;

	cleanup_free char *host = NULL;
	const char *port;
	if (domain[0] == '[') {
		const char *close = strchr(domain, ']');
		if (!close)
			return false;
		host = xstrndup(domain + 1, (size_t)(close - domain - 1));
		port = close + 1;
		if (!port_valid(port, strlen(port)))
			return false;
		struct in6_addr a6;
		if (inet_pton(AF_INET6, host, &a6) != 1)
			return false;
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return true;
		/* ::ffff:127.x.x.x */
		return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
	}

	const char *colon = strchr(domain, ':');
	host = xstrndup(domain, colon ? (size_t)(colon - domain) : strlen(domain));
	port = colon ? colon : "";
	if (!port_valid(port, strlen(port)))
		return false;
	if (strcasecmp(host, "localhost") == 0)
		return true;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) != 1)
		return false;
	return ((const unsigned char *)&a4.s_addr)[0] == 127;
}

char *ib_ref_familiarize(const char *normalized)
{
	ib_ref *ref = NULL;
	/* No default tag: "docker.io/library/x" shortens to "x", not "x:latest". */
	if (ref_parse(&ref, normalized, false, NULL) < 0)
		return xstrdup(normalized);
	char *r = ib_ref_familiar(ref);
	ib_ref_free(ref);
	return r;
}

bool ib_ref_is_short(const char *s)
{
	const char *slash = strchr(s, '/');
	if (!slash)
		return true;
	size_t n = (size_t)(slash - s);
	if (n == 9 && !strncmp(s, "localhost", 9))
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '.' || s[i] == ':' || (s[i] >= 'A' && s[i] <= 'Z'))
			return false;
	return true;
}

bool ib_ref_short_matches(const char *short_name, const char *full)
{
	ib_ref *a = NULL, *b = NULL;
	bool match = false;
	if (ib_ref_parse(&a, short_name, NULL) == 0 && ib_ref_parse(&b, full, NULL) == 0) {
		/* "debian" is docker.io/library/debian: its path is "library/debian" */
		const char *pa = a->path;
		bool lib = !strchr(short_name, '/') && !strncmp(pa, "library/", 8);
		match = (!strcmp(pa, b->path) || (lib && !strcmp(pa + 8, b->path))) &&
			((!a->tag && !b->tag) || (a->tag && b->tag && !strcmp(a->tag, b->tag))) &&
			((!a->digest && !b->digest) ||
			 (a->digest && b->digest && !strcmp(a->digest, b->digest)));
	}
	ib_ref_free(a);
	ib_ref_free(b);
	return match;
}

size_t ib_ref_edit_distance(const char *a, const char *b)
{
	/* optimal string alignment: insert, delete, substitute, swap two
	 * neighbours; three rows of the table */
	size_t la = strlen(a), lb = strlen(b);
	size_t *rows = xcalloc(3 * (lb + 1), sizeof(size_t));
	size_t *pp = rows, *p = rows + lb + 1, *c = rows + 2 * (lb + 1);
	for (size_t j = 0; j <= lb; j++)
		p[j] = j;
	for (size_t i = 1; i <= la; i++) {
		c[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t v = p[j - 1] + cost;
			if (p[j] + 1 < v)
				v = p[j] + 1;
			if (c[j - 1] + 1 < v)
				v = c[j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    pp[j - 2] + 1 < v)
				v = pp[j - 2] + 1;
			c[j] = v;
		}
		size_t *t = pp;
		pp = p;
		p = c;
		c = t;
	}
	size_t d = p[lb];
	free(rows);
	return d;
}
