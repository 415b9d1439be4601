/* Registry configuration (regconf.h): registries.conf and its drop-ins
 * read through toml.c, daemon.json through jansson, certs.d by listing
 * directories.  Nothing here touches the network. */
#include "regconf.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "toml.h"
#include "util.h"

#define CONF_CAP (4u << 20)

static const char sys_conf[] = "/etc/containers/registries.conf";
static const char sys_dropins[] = "/etc/containers/registries.conf.d";
static const char sys_daemon_json[] = "/etc/docker/daemon.json";

static void registry_clear(ib_regconf_registry *r)
{
	free(r->prefix);
	free(r->location);
	for (size_t i = 0; i < r->n_mirrors; i++)
		free(r->mirrors[i].location);
	free(r->mirrors);
	free(r->source);
	memset(r, 0, sizeof(*r));
}

void ib_regconf_free(ib_regconf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_regs; i++)
		registry_clear(&c->regs[i]);
	free(c->regs);
	ib_strv_free(c->search);
	free(c->search_source);
	free(c->daemon_json);
	ib_strv_free(c->insecure_names);
	free(c->cidrs);
	for (size_t i = 0; i < c->n_hub_mirrors; i++)
		free(c->hub_mirrors[i].location);
	free(c->hub_mirrors);
	ib_strv_free(c->files);
	free(c);
}

/* ------------------------------------------------------------------ */
/* registries.conf                                                     */

static int conf_error(ib_error **err, const char *file, const ib_toml *at, const char *what)
{
	return ib_error_setc(err, IB_EINVALID, "%s:%d: %s", file, ib_toml_line(at), what);
}

/* key of table t as a string; NULL when absent. */
static int get_string(const char *file, const ib_toml *t, const char *key, const char **out,
		      ib_error **err)
{
	const ib_toml *v = ib_toml_get(t, key);
	*out = NULL;
	if (!v)
		return 0;
	if (ib_toml_type_of(v) != IB_TOML_STRING) {
		cleanup_free char *m = xasprintf("%s must be a string", key);
		return conf_error(err, file, v, m);
	}
	*out = ib_toml_string(v);
	return 0;
}

static int get_bool(const char *file, const ib_toml *t, const char *key, bool *out, ib_error **err)
{
	const ib_toml *v = ib_toml_get(t, key);
	if (!v)
		return 0;
	if (ib_toml_type_of(v) != IB_TOML_BOOL) {
		cleanup_free char *m = xasprintf("%s must be true or false", key);
		return conf_error(err, file, v, m);
	}
	*out = ib_toml_bool(v);
	return 0;
}

/* An array of strings; *out NULL when absent. */
static int get_strings(const char *file, const ib_toml *t, const char *key, char ***out,
		       ib_error **err)
{
	const ib_toml *v = ib_toml_get(t, key);
	*out = NULL;
	if (!v)
		return 0;
	cleanup_free char *m = xasprintf("%s must be an array of strings", key);
	if (ib_toml_type_of(v) != IB_TOML_ARRAY)
		return conf_error(err, file, v, m);
	char **sv = xcalloc(1, sizeof(char *));
	for (size_t i = 0; i < ib_toml_len(v); i++) {
		const char *s = ib_toml_string(ib_toml_at(v, i, NULL));
		if (!s) {
			ib_strv_free(sv);
			return conf_error(err, file, ib_toml_at(v, i, NULL), m);
		}
		ib_strv_push(&sv, s);
	}
	*out = sv;
	return 0;
}

/* "host[:port][/path]" without a scheme, tag or digest, lower-case host. */
static int check_location(const char *file, const ib_toml *at, const char *what, const char *s,
			  bool allow_wildcard, ib_error **err)
{
	if (!*s || strstr(s, "://") || strchr(s, '@') || s[strlen(s) - 1] == '/' ||
	    strchr(s, ' ')) {
		cleanup_free char *m = xasprintf("invalid %s \"%s\"", what, s);
		return conf_error(err, file, at, m);
	}
	if (s[0] == '*' && (!allow_wildcard || s[1] != '.' || strchr(s, '/') || !s[2])) {
		cleanup_free char *m = xasprintf(
		    "invalid %s \"%s\" (a wildcard is \"*.domain\", without a path)", what, s);
		return conf_error(err, file, at, m);
	}
	return 0;
}

static void set_registry(ib_regconf *c, ib_regconf_registry *nr)
{
	for (size_t i = 0; i < c->n_regs; i++) {
		if (!strcmp(c->regs[i].prefix, nr->prefix)) {
			registry_clear(&c->regs[i]);
			c->regs[i] = *nr;
			return;
		}
	}
	c->regs = xrealloc(c->regs, (c->n_regs + 1) * sizeof(*c->regs));
	c->regs[c->n_regs++] = *nr;
}

static int parse_registry(ib_regconf *c, const char *file, const ib_toml *t, ib_error **err)
{
	if (ib_toml_type_of(t) != IB_TOML_TABLE)
		return conf_error(err, file, t, "[[registry]] entries must be tables");
	const char *prefix = NULL, *location = NULL;
	ib_regconf_registry nr = {0};
	int r = 0;
	if ((r = get_string(file, t, "prefix", &prefix, err)) < 0 ||
	    (r = get_string(file, t, "location", &location, err)) < 0 ||
	    (r = get_bool(file, t, "insecure", &nr.insecure, err)) < 0 ||
	    (r = get_bool(file, t, "blocked", &nr.blocked, err)) < 0 ||
	    (r = get_bool(file, t, "mirror-by-digest-only", &nr.mirror_by_digest_only, err)) < 0)
		return r;
	if (prefix && !*prefix)
		prefix = NULL;
	if (location && !*location)
		location = NULL;
	if (!prefix && !location)
		return conf_error(err, file, t, "[[registry]] needs a location or a prefix");
	if (prefix && (r = check_location(file, t, "prefix", prefix, true, err)) < 0)
		return r;
	if (location && (r = check_location(file, t, "location", location, false, err)) < 0)
		return r;
	nr.wildcard = prefix && prefix[0] == '*';
	if (nr.wildcard && location)
		return conf_error(err, file, t,
				  "a [[registry]] with a wildcard prefix cannot set a location");
	nr.prefix = xstrdup(prefix ? prefix : location);
	nr.location = location ? xstrdup(location) : nr.wildcard ? NULL : xstrdup(prefix);
	nr.source = xasprintf("%s:%d", file, ib_toml_line(t));
	const ib_toml *mirrors = ib_toml_get(t, "mirror");
	if (mirrors && ib_toml_type_of(mirrors) != IB_TOML_ARRAY)
		r = conf_error(err, file, mirrors, "mirror must be an array of tables");
	for (size_t i = 0; r == 0 && i < ib_toml_len(mirrors); i++) {
		const ib_toml *m = ib_toml_at(mirrors, i, NULL);
		const char *ml = NULL;
		bool insecure = false;
		if (ib_toml_type_of(m) != IB_TOML_TABLE) {
			r = conf_error(err, file, m, "mirror must be an array of tables");
			break;
		}
		if ((r = get_string(file, m, "location", &ml, err)) < 0 ||
		    (r = get_bool(file, m, "insecure", &insecure, err)) < 0)
			break;
		if (!ml) {
			r = conf_error(err, file, m, "a mirror needs a location");
			break;
		}
		if ((r = check_location(file, m, "mirror location", ml, false, err)) < 0)
			break;
		nr.mirrors = xrealloc(nr.mirrors, (nr.n_mirrors + 1) * sizeof(*nr.mirrors));
		nr.mirrors[nr.n_mirrors++] = (ib_regconf_mirror){xstrdup(ml), insecure};
	}
	if (r < 0) {
		registry_clear(&nr);
		return r;
	}
	set_registry(c, &nr);
	return 0;
}

/* Version 1: [registries.search] / .insecure / .block, each "registries". */
static int parse_v1(ib_regconf *c, const char *file, const ib_toml *v1, ib_error **err)
{
	static const char *const kinds[] = {"search", "insecure", "block"};
	for (size_t k = 0; k < 3; k++) {
		const ib_toml *t = ib_toml_get(v1, kinds[k]);
		if (!t)
			continue;
		cleanup_strv char **names = NULL;
		int r = get_strings(file, t, "registries", &names, err);
		if (r < 0)
			return r;
		if (!names)
			continue;
		if (k == 0) {
			ib_strv_free(c->search);
			c->search = steal_pointer(&names);
			free(c->search_source);
			c->search_source = xasprintf("%s:%d", file, ib_toml_line(t));
			continue;
		}
		for (size_t i = 0; names[i]; i++) {
			if ((r = check_location(file, t, "registry", names[i], true, err)) < 0)
				return r;
			ib_regconf_registry nr = {0};
			nr.prefix = xstrdup(names[i]);
			nr.wildcard = names[i][0] == '*';
			nr.location = nr.wildcard ? NULL : xstrdup(names[i]);
			nr.insecure = k == 1;
			nr.blocked = k == 2;
			nr.source = xasprintf("%s:%d", file, ib_toml_line(t));
			/* both lists may name a registry: keep both flags */
			for (size_t j = 0; j < c->n_regs; j++) {
				if (!strcmp(c->regs[j].prefix, nr.prefix)) {
					nr.insecure |= c->regs[j].insecure;
					nr.blocked |= c->regs[j].blocked;
				}
			}
			set_registry(c, &nr);
		}
	}
	return 0;
}

/* Read one registries.conf; a missing file is fine. */
static int read_conf(ib_regconf *c, const char *file, ib_error **err)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	int r = ib_read_file(file, CONF_CAP, &text, &len, &e);
	if (r == IB_ENOTFOUND) {
		ib_error_free(&e);
		return 0;
	}
	if (r < 0) {
		if (err && !*err)
			*err = e;
		else
			ib_error_free(&e);
		return r;
	}
	ib_strv_push(&c->files, file);
	ib_toml *t = NULL;
	r = ib_toml_parse(&t, text, len, file, err);
	if (r < 0)
		return r;
	cleanup_strv char **search = NULL;
	r = get_strings(file, t, "unqualified-search-registries", &search, err);
	if (r == 0 && search) {
		ib_strv_free(c->search);
		c->search = steal_pointer(&search);
		free(c->search_source);
		c->search_source = xasprintf(
		    "%s:%d", file, ib_toml_line(ib_toml_get(t, "unqualified-search-registries")));
		for (size_t i = 0; r == 0 && c->search[i]; i++)
			r = check_location(file, ib_toml_get(t, "unqualified-search-registries"),
					   "search registry", c->search[i], false, err);
	}
	const ib_toml *regs = ib_toml_get(t, "registry");
	if (r == 0 && regs && ib_toml_type_of(regs) != IB_TOML_ARRAY)
		r = conf_error(err, file, regs,
			       "registry must be an array of tables ([[registry]])");
	for (size_t i = 0; r == 0 && i < ib_toml_len(regs); i++)
		r = parse_registry(c, file, ib_toml_at(regs, i, NULL), err);
	const ib_toml *v1 = ib_toml_get(t, "registries");
	if (r == 0 && v1 && ib_toml_type_of(v1) == IB_TOML_TABLE)
		r = parse_v1(c, file, v1, err);
	ib_toml_free(t);
	return r;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files in dir whose names end with suffix, sorted.  A
 * missing directory gives an empty list. */
static int list_dir(const char *dir, const char *suffix, char ***out, ib_error **err)
{
	char **v = xcalloc(1, sizeof(char *));
	cleanup_dir DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT || errno == ENOTDIR) {
			*out = v;
			return 0;
		}
		ib_strv_free(v);
		return ib_error_set(err, errno, "open %s", dir);
	}
	struct dirent *de;
	size_t sl = strlen(suffix);
	while ((de = readdir(d))) {
		size_t nl = strlen(de->d_name);
		if (de->d_name[0] == '.' || nl <= sl || strcmp(de->d_name + nl - sl, suffix) != 0)
			continue;
		cleanup_free char *p = ib_path_join(dir, de->d_name);
		struct stat st;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
			ib_strv_push(&v, p);
	}
	qsort(v, ib_strv_len(v), sizeof(char *), name_cmp);
	*out = v;
	return 0;
}

/* ------------------------------------------------------------------ */
/* daemon.json                                                         */

static bool parse_cidr(const char *s, ib_regconf_cidr *out)
{
	const char *slash = strchr(s, '/');
	if (!slash)
		return false;
	cleanup_free char *a = xstrndup(s, (size_t)(slash - s));
	uint64_t bits;
	if (ib_parse_u64(slash + 1, &bits) < 0)
		return false;
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, a, out->addr) == 1) {
		out->family = AF_INET;
		if (bits > 32)
			return false;
	} else if (inet_pton(AF_INET6, a, out->addr) == 1) {
		out->family = AF_INET6;
		if (bits > 128)
			return false;
	} else {
		return false;
	}
	out->bits = (int)bits;
	return true;
}

static int read_daemon_json(ib_regconf *c, const char *file, ib_error **err)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	int r = ib_read_file(file, CONF_CAP, &text, &len, &e);
	if (r == IB_ENOTFOUND) {
		ib_error_free(&e);
		return 0;
	}
	if (r < 0) {
		if (err && !*err)
			*err = e;
		else
			ib_error_free(&e);
		return r;
	}
	ib_strv_push(&c->files, file);
	c->daemon_json = xstrdup(file);
	json_error_t je;
	json_t *j = json_loadb(text, len, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID, "%s:%d: %s", file, j ? 1 : je.line,
				     j ? "not a JSON object" : je.text);
	}
	c->insecure_names = xcalloc(1, sizeof(char *));
	json_t *ins = json_object_get(j, "insecure-registries");
	json_t *mir = json_object_get(j, "registry-mirrors");
	if ((ins && !json_is_array(ins)) || (mir && !json_is_array(mir))) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID,
				     "%s: insecure-registries and registry-mirrors must be arrays",
				     file);
	}
	size_t i;
	json_t *v;
	json_array_foreach (ins, i, v) {
		const char *s = json_string_value(v);
		if (!s || !*s) {
			json_decref(j);
			return ib_error_setc(err, IB_EINVALID,
					     "%s: insecure-registries must hold strings", file);
		}
		/* docker accepts a scheme here and ignores it */
		const char *p = strstr(s, "://");
		p = p ? p + 3 : s;
		cleanup_free char *name = xstrdup(p);
		ib_regconf_cidr cidr;
		if (strchr(name, '/') && parse_cidr(name, &cidr)) {
			c->cidrs = xrealloc(c->cidrs, (c->n_cidrs + 1) * sizeof(*c->cidrs));
			c->cidrs[c->n_cidrs++] = cidr;
		} else {
			size_t n = strlen(name);
			while (n && name[n - 1] == '/')
				name[--n] = '\0';
			ib_strv_push(&c->insecure_names, name);
		}
	}
	json_array_foreach (mir, i, v) {
		const char *s = json_string_value(v);
		if (!s || !*s) {
			json_decref(j);
			return ib_error_setc(err, IB_EINVALID,
					     "%s: registry-mirrors must hold URLs", file);
		}
		bool http = !strncasecmp(s, "http://", 7);
		const char *p = strstr(s, "://");
		p = p ? p + 3 : s;
		size_t n = strlen(p);
		while (n && p[n - 1] == '/')
			n--;
		c->hub_mirrors =
		    xrealloc(c->hub_mirrors, (c->n_hub_mirrors + 1) * sizeof(*c->hub_mirrors));
		c->hub_mirrors[c->n_hub_mirrors++] = (ib_regconf_mirror){xstrndup(p, n), http};
	}
	json_decref(j);
	return 0;
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

int ib_regconf_load_from(ib_regconf **out, const char *conf, const char *const *dropin_dirs,
			 const char *daemon_json, ib_error **err)
{
	ib_regconf *c = xcalloc(1, sizeof(*c));
	c->files = xcalloc(1, sizeof(char *));
	int r = conf ? read_conf(c, conf, err) : 0;
	for (size_t d = 0; r == 0 && dropin_dirs && dropin_dirs[d]; d++) {
		cleanup_strv char **files = NULL;
		r = list_dir(dropin_dirs[d], ".conf", &files, err);
		for (size_t i = 0; r == 0 && files[i]; i++)
			r = read_conf(c, files[i], err);
	}
	if (r == 0 && daemon_json)
		r = read_daemon_json(c, daemon_json, err);
	if (r < 0) {
		ib_regconf_free(c);
		return r;
	}
	*out = c;
	return 0;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

int ib_regconf_load(ib_regconf **out, ib_error **err)
{
	const char *home = env("HOME");
	cleanup_free char *user_conf =
	    home ? ib_path_join(home, ".config/containers/registries.conf") : NULL;
	cleanup_free char *user_dir =
	    home ? ib_path_join(home, ".config/containers/registries.conf.d") : NULL;
	const char *conf = env("IMGBUILD_REGISTRIES_CONF");
	if (!conf)
		conf = env("CONTAINERS_REGISTRIES_CONF");
	if (!conf)
		conf = user_conf && ib_file_exists(user_conf) ? user_conf : sys_conf;
	const char *sysdir = getenv("IMGBUILD_REGISTRIES_CONF_DIR");
	const char *dirs[3] = {NULL, NULL, NULL};
	size_t nd = 0;
	if (!sysdir)
		dirs[nd++] = sys_dropins;
	else if (*sysdir)
		dirs[nd++] = sysdir;
	if (user_dir)
		dirs[nd++] = user_dir;
	const char *dj = getenv("IMGBUILD_DOCKER_DAEMON_JSON");
	if (!dj)
		dj = sys_daemon_json;
	return ib_regconf_load_from(out, conf, dirs, *dj ? dj : NULL, err);
}

/* ------------------------------------------------------------------ */
/* queries                                                             */

/* The host[:port] of a name: up to the first '/'. */
static size_t domain_len(const char *name)
{
	return strcspn(name, "/");
}

/* Matched length of prefix against name, or 0. */
static size_t prefix_match(const ib_regconf_registry *r, const char *name)
{
	if (r->wildcard) {
		/* "*.example.com" matches hosts ending in ".example.com" */
		size_t dl = domain_len(name);
		cleanup_free char *host = xstrndup(name, dl);
		char *colon = strrchr(host, ':');
		if (colon)
			*colon = '\0';
		size_t hl = strlen(host), sl = strlen(r->prefix + 1);
		if (hl > sl && !strcasecmp(host + hl - sl, r->prefix + 1))
			return strlen(r->prefix);
		return 0;
	}
	size_t pl = strlen(r->prefix);
	if (strncmp(name, r->prefix, pl) != 0)
		return 0;
	char next = name[pl];
	if (next == '\0' || next == '/' || next == ':' || next == '@')
		return pl;
	return 0;
}

const ib_regconf_registry *ib_regconf_find(const ib_regconf *c, const char *name)
{
	const ib_regconf_registry *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; c && i < c->n_regs; i++) {
		size_t l = prefix_match(&c->regs[i], name);
		if (!l)
			continue;
		if (l > best_len ||
		    (l == best_len && best && best->wildcard && !c->regs[i].wildcard)) {
			best = &c->regs[i];
			best_len = l;
		}
	}
	return best;
}

int ib_regconf_check_blocked(const ib_regconf *c, const char *name, ib_error **err)
{
	const ib_regconf_registry *r = ib_regconf_find(c, name);
	if (r && r->blocked)
		return ib_error_setc(err, IB_ERROR,
				     "%s is blocked by the registry configuration (%s)", name,
				     r->source);
	return 0;
}

static bool name_listed(char *const *v, const char *domain)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcasecmp(v[i], domain))
			return true;
	return false;
}

bool ib_regconf_insecure_name(const ib_regconf *c, const char *domain)
{
	if (!c)
		return false;
	if (name_listed(c->insecure_names, domain))
		return true;
	const ib_regconf_registry *r = ib_regconf_find(c, domain);
	if (r && r->insecure)
		return true;
	size_t dl = strlen(domain);
	for (size_t i = 0; i < c->n_regs; i++) {
		const ib_regconf_registry *g = &c->regs[i];
		for (size_t m = 0; m < g->n_mirrors; m++) {
			const char *l = g->mirrors[m].location;
			if (g->mirrors[m].insecure && !strncasecmp(l, domain, dl) &&
			    (l[dl] == '\0' || l[dl] == '/'))
				return true;
		}
	}
	for (size_t m = 0; m < c->n_hub_mirrors; m++) {
		const char *l = c->hub_mirrors[m].location;
		if (c->hub_mirrors[m].insecure && !strncasecmp(l, domain, dl) &&
		    (l[dl] == '\0' || l[dl] == '/'))
			return true;
	}
	return false;
}

bool ib_regconf_insecure_addr(const ib_regconf *c, const struct sockaddr *sa)
{
	const unsigned char *a;
	int fam = sa->sa_family;
	unsigned char v4[4];
	if (fam == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		a = v4;
	} else if (fam == AF_INET6) {
		a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
	} else {
		return false;
	}
	for (size_t i = 0; c && i < c->n_cidrs; i++) {
		const ib_regconf_cidr *k = &c->cidrs[i];
		if (k->family != fam)
			continue;
		int bits = k->bits;
		size_t full = (size_t)bits / 8;
		if (memcmp(a, k->addr, full) != 0)
			continue;
		int rest = bits % 8;
		if (rest) {
			unsigned char mask = (unsigned char)(0xff << (8 - rest));
			if ((a[full] & mask) != (k->addr[full] & mask))
				continue;
		}
		return true;
	}
	return false;
}

static void push_endpoint(ib_regconf_endpoint **v, size_t *n, const char *loc, const char *rest,
			  bool insecure, bool mirror)
{
	size_t dl = domain_len(loc);
	ib_regconf_endpoint e = {0};
	e.domain = xstrndup(loc, dl);
	const char *lpath = loc[dl] == '/' ? loc + dl + 1 : "";
	while (*rest == '/')
		rest++;
	e.path = *lpath && *rest ? xasprintf("%s/%s", lpath, rest) : xstrdup(*lpath ? lpath : rest);
	e.insecure = insecure;
	e.mirror = mirror;
	if (!*e.path) { /* a mirror location naming a repository of its own */
		free(e.domain);
		free(e.path);
		return;
	}
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = e;
}

int ib_regconf_endpoints(const ib_regconf *c, const char *domain, const char *path, bool pull,
			 bool by_digest, ib_regconf_endpoint **out, size_t *n_out, ib_error **err)
{
	cleanup_free char *name = xasprintf("%s/%s", domain, path);
	const ib_regconf_registry *r = ib_regconf_find(c, name);
	if (r && r->blocked)
		return ib_error_setc(err, IB_ERROR,
				     "%s is blocked by the registry configuration (%s)", name,
				     r->source);
	ib_regconf_endpoint *v = NULL;
	size_t n = 0;
	const char *rest = path;
	const char *location = NULL;
	char *built = NULL;
	if (r && !r->wildcard) {
		rest = name + strlen(r->prefix);
		location = r->location;
	} else {
		location = built = xstrdup(domain);
		rest = path;
	}
	bool use_mirrors = pull && r && (!r->mirror_by_digest_only || by_digest);
	for (size_t i = 0; use_mirrors && i < r->n_mirrors; i++) {
		size_t had = n;
		push_endpoint(&v, &n, r->mirrors[i].location, rest, r->mirrors[i].insecure, true);
		if (n > had)
			v[had].digest_only = r->mirror_by_digest_only;
	}
	if (pull && !strcmp(domain, "docker.io"))
		for (size_t i = 0; c && i < c->n_hub_mirrors; i++)
			push_endpoint(&v, &n, c->hub_mirrors[i].location, path,
				      c->hub_mirrors[i].insecure, true);
	size_t before = n;
	push_endpoint(&v, &n, location, rest, r && r->insecure, false);
	free(built);
	if (n == before) {
		ib_regconf_endpoints_free(v, n);
		return ib_error_setc(err, IB_EINVALID, "%s maps to no repository (%s)", name,
				     r ? r->source : "?");
	}
	for (size_t i = 0; i < n; i++)
		v[i].insecure = v[i].insecure || ib_regconf_insecure_name(c, v[i].domain);
	*out = v;
	*n_out = n;
	return 0;
}

void ib_regconf_endpoints_free(ib_regconf_endpoint *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(e[i].domain);
		free(e[i].path);
	}
	free(e);
}

/* ------------------------------------------------------------------ */
/* certs.d                                                             */

int ib_regconf_certs(const char *domain, char ***ca_files, char **cert, char **key, ib_error **err)
{
	*ca_files = xcalloc(1, sizeof(char *));
	*cert = *key = NULL;
	cleanup_strv char **dirs = xcalloc(1, sizeof(char *));
	const char *over = getenv("IMGBUILD_CERTS_D");
	if (over) {
		for (const char *p = over; *p;) {
			size_t n = strcspn(p, ":");
			if (n) {
				cleanup_free char *d = xstrndup(p, n);
				ib_strv_push(&dirs, d);
			}
			p += n;
			if (*p == ':')
				p++;
		}
	} else {
		ib_strv_push(&dirs, "/etc/containers/certs.d");
		ib_strv_push(&dirs, "/etc/docker/certs.d");
		const char *home = env("HOME");
		if (home) {
			cleanup_free char *d = ib_path_join(home, ".config/containers/certs.d");
			ib_strv_push(&dirs, d);
		}
	}
	if (!*domain || strchr(domain, '/') || !strcmp(domain, ".") || !strcmp(domain, ".."))
		return 0;
	for (size_t i = 0; dirs[i]; i++) {
		cleanup_free char *dir = ib_path_join(dirs[i], domain);
		cleanup_strv char **crts = NULL, **certs = NULL;
		int r = list_dir(dir, ".crt", &crts, err);
		if (r == 0)
			r = list_dir(dir, ".cert", &certs, err);
		if (r < 0) {
			ib_strv_free(*ca_files);
			*ca_files = NULL;
			free(*cert);
			*cert = NULL;
			free(*key);
			*key = NULL;
			return r;
		}
		for (size_t k = 0; crts[k]; k++)
			ib_strv_push(ca_files, crts[k]);
		for (size_t k = 0; certs[k] && !*cert; k++) {
			size_t l = strlen(certs[k]);
			cleanup_free char *kp = xasprintf("%.*s.key", (int)(l - 5), certs[k]);
			if (ib_file_exists(kp)) {
				*cert = xstrdup(certs[k]);
				*key = steal_pointer(&kp);
			}
		}
	}
	return 0;
}

bool ib_regconf_unqualified(const char *s)
{
	size_t n = strcspn(s, "/");
	if (!s[n])
		return true; /* a single component: no domain */
	if (n == 9 && !strncmp(s, "localhost", 9))
		return false;
	return !memchr(s, '.', n) && !memchr(s, ':', n);
}
