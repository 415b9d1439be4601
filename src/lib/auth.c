#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

#define AUTH_FILE_CAP (4u << 20)
#define HELPER_OUTPUT_CAP (1u << 20)
#define DOCKER_HUB_KEY "https://index.docker.io/v1/"

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void ib_credentials_clear(ib_credentials *c)
{
	if (!c)
		return;
	wipe_free(c->username);
	wipe_free(c->password);
	c->username = NULL;
	c->password = NULL;
}

/* ---- auth file locations ---- */

static char *home_dir(void)
{
	const char *h = getenv("HOME");
	if (h && *h)
		return xstrdup(h);
	struct passwd *pw = getpwuid(geteuid());
	return xstrdup(pw && pw->pw_dir ? pw->pw_dir : "/");
}

static char *docker_config_file(void)
{
	const char *dc = getenv("DOCKER_CONFIG");
	if (dc && *dc)
		return ib_path_join(dc, "config.json");
	cleanup_free char *home = home_dir();
	return ib_path_join(home, ".docker/config.json");
}

/* --authfile, else $REGISTRY_AUTH_FILE: the one file to use when either is
 * set; NULL otherwise. */
static const char *explicit_auth_file(const char *authfile)
{
	if (authfile && *authfile)
		return authfile;
	const char *env = getenv("REGISTRY_AUTH_FILE");
	return env && *env ? env : NULL;
}

char **ib_auth_file_candidates(const char *authfile)
{
	char **v = xcalloc(1, sizeof(char *));
	const char *only = explicit_auth_file(authfile);
	if (only) {
		ib_strv_push(&v, only);
		return v;
	}
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg && *xdg) {
		cleanup_free char *p = ib_path_join(xdg, "containers/auth.json");
		ib_strv_push(&v, p);
	}
	cleanup_free char *d = docker_config_file();
	ib_strv_push(&v, d);
	return v;
}

char *ib_auth_normalize_host(const char *server)
{
	const char *p = server;
	if (!strncasecmp(p, "https://", 8))
		p += 8;
	else if (!strncasecmp(p, "http://", 7))
		p += 7;
	size_t n = strcspn(p, "/");
	char *h = xstrndup(p, n);
	for (char *c = h; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	if (!strcmp(h, "index.docker.io") || !strcmp(h, "registry-1.docker.io") ||
	    !strcmp(h, "registry.hub.docker.com")) {
		free(h);
		h = xstrdup("docker.io");
	}
	return h;
}

static bool key_matches(const char *key, const char *host)
{
	cleanup_free char *k = ib_auth_normalize_host(key);
	cleanup_free char *h = ib_auth_normalize_host(host);
	return !strcmp(k, h);
}

/* ---- base64 ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ib_base64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = b64chars[v >> 6 & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

static int b64val(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;
	return p ? (int)(p - b64chars) : -1;
}

int ib_base64_decode(const char *s, unsigned char **out, size_t *len_out, ib_error **err)
{
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return ib_error_setc(err, IB_EINVALID, "invalid base64: bad length");
	unsigned char *r = xmalloc(n / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64val(s[i]);
		if (v < 0) {
			free(r);
			return ib_error_setc(err, IB_EINVALID, "invalid base64 character");
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			r[o++] = (unsigned char)(acc >> bits & 0xff);
		}
	}
	r[o] = '\0';
	*out = r;
	if (len_out)
		*len_out = o;
	return 0;
}

/* ---- reading auth files ---- */

static int load_json_file(const char *path, json_t **out, bool *missing, ib_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	*missing = false;
	*out = NULL;
	if (ib_read_file(path, AUTH_FILE_CAP, &buf, &len, &e) < 0) {
		if (e->code == IB_ENOTFOUND) {
			ib_error_free(&e);
			*missing = true;
			return 0;
		}
		int code = e->code;
		if (err && !*err)
			*err = e;
		else
			ib_error_free(&e);
		return code;
	}
	bool blank = true;
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char)buf[i]))
			blank = false;
	if (blank) {
		*out = json_object();
		return 0;
	}
	json_error_t je;
	json_t *j = json_loadb(buf, len, 0, &je);
	if (!j)
		return ib_error_setc(err, IB_EINVALID, "%s: invalid JSON at line %d: %s", path,
				     je.line, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID, "%s: not a JSON object", path);
	}
	*out = j;
	return 0;
}

static int creds_from_entry(const char *path, const char *key, json_t *entry, ib_credentials *out,
			    ib_error **err)
{
	if (!json_is_object(entry))
		return ib_error_setc(err, IB_EINVALID, "%s: auths.\"%s\" is not an object", path,
				     key);
	const char *auth = json_string_value(json_object_get(entry, "auth"));
	if (auth && *auth) {
		unsigned char *raw = NULL;
		size_t n = 0;
		if (ib_base64_decode(auth, &raw, &n, NULL) < 0)
			return ib_error_setc(err, IB_EINVALID,
					     "%s: auths.\"%s\".auth is not valid base64", path,
					     key);
		char *colon = memchr(raw, ':', n);
		if (!colon || memchr(raw, '\0', n)) {
			explicit_bzero(raw, n);
			free(raw);
			return ib_error_setc(err, IB_EINVALID,
					     "%s: auths.\"%s\".auth is not \"user:password\"", path,
					     key);
		}
		out->username = xstrndup((char *)raw, (size_t)(colon - (char *)raw));
		out->password = xstrdup(colon + 1);
		explicit_bzero(raw, n);
		free(raw);
		return 1;
	}
	const char *u = json_string_value(json_object_get(entry, "username"));
	const char *p = json_string_value(json_object_get(entry, "password"));
	if (u && *u && p) {
		out->username = xstrdup(u);
		out->password = xstrdup(p);
		return 1;
	}
	return 0;
}

int ib_auth_lookup_file(const char *path, const char *host, ib_credentials *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	json_t *root = NULL;
	bool missing;
	int r = load_json_file(path, &root, &missing, err);
	if (r < 0 || missing)
		return r;

	const char *key;
	json_t *val;
	json_t *helpers = json_object_get(root, "credHelpers");
	if (json_is_object(helpers)) {
		json_object_foreach (helpers, key, val) {
			if (!json_is_string(val) || !key_matches(key, host))
				continue;
			r = ib_auth_helper_get(json_string_value(val), host, out, err);
			json_decref(root);
			return r < 0 ? ib_error_wrap(err, "%s", path) : 0;
		}
	}
	json_t *auths = json_object_get(root, "auths");
	if (json_is_object(auths)) {
		json_object_foreach (auths, key, val) {
			if (!key_matches(key, host))
				continue;
			r = creds_from_entry(path, key, val, out, err);
			if (r < 0) {
				json_decref(root);
				return r;
			}
			if (r > 0) {
				json_decref(root);
				return 0;
			}
		}
	}
	const char *store = json_string_value(json_object_get(root, "credsStore"));
	if (store && *store) {
		cleanup_free char *s = xstrdup(store);
		json_decref(root);
		r = ib_auth_helper_get(s, host, out, err);
		return r < 0 ? ib_error_wrap(err, "%s", path) : 0;
	}
	json_decref(root);
	return 0;
}

int ib_auth_lookup(const char *authfile, const char *host, ib_credentials *out, ib_error **err)
{
	cleanup_strv char **files = ib_auth_file_candidates(authfile);
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; files[i]; i++) {
		int r = ib_auth_lookup_file(files[i], host, out, err);
		if (r < 0)
			return r;
		if (out->username)
			return 0;
	}
	return 0;
}

/* ---- writing auth files ---- */

static char *entry_key(const char *path, const char *host)
{
	cleanup_free char *h = ib_auth_normalize_host(host);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	/* The docker CLI only looks Docker Hub up under its legacy key. */
	if (!strcmp(h, "docker.io") && !strcmp(base, "config.json"))
		return xstrdup(DOCKER_HUB_KEY);
	return steal_pointer(&h);
}

/* Remove every key of obj that names host; returns how many. */
static int remove_host_keys(json_t *obj, const char *host)
{
	int n = 0;
	if (!json_is_object(obj))
		return 0;
	const char *key;
	json_t *val;
	void *tmp;
	json_object_foreach_safe (obj, tmp, key, val) {
		(void)val;
		if (key_matches(key, host)) {
			json_object_del(obj, key);
			n++;
		}
	}
	return n;
}

static int write_json_0600(const char *path, json_t *root, ib_error **err)
{
	cleanup_free char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (ib_mkdir_p(dir, 0700, err) < 0)
			return ib_error_wrap(err, "create directory for %s", path);
	}
	char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	if (!text)
		return ib_error_setc(err, IB_ERROR, "serialise %s", path);
	size_t len = strlen(text);
	cleanup_free char *buf = xasprintf("%s\n", text);
	explicit_bzero(text, len);
	free(text);
	int r = ib_write_file_atomic(path, buf, len + 1, 0600, err);
	explicit_bzero(buf, len + 1);
	return r;
}

int ib_auth_save(const char *path, const char *host, const char *user, const char *pass,
		 ib_error **err)
{
	if (!user || !*user || strchr(user, ':'))
		return ib_error_setc(err, IB_EINVALID, "invalid user name for %s", host);
	json_t *root = NULL;
	bool missing;
	int r = load_json_file(path, &root, &missing, err);
	if (r < 0)
		return r;
	if (missing)
		root = json_object();
	json_t *auths = json_object_get(root, "auths");
	if (!auths) {
		auths = json_object();
		json_object_set_new(root, "auths", auths);
	} else if (!json_is_object(auths)) {
		json_decref(root);
		return ib_error_setc(err, IB_EINVALID, "%s: \"auths\" is not an object", path);
	}
	remove_host_keys(auths, host);
	cleanup_free char *key = entry_key(path, host);
	cleanup_free char *pair = xasprintf("%s:%s", user, pass ? pass : "");
	char *b64 = ib_base64_encode(pair, strlen(pair));
	explicit_bzero(pair, strlen(pair));
	json_object_set_new(auths, key, json_pack("{s:s}", "auth", b64));
	explicit_bzero(b64, strlen(b64));
	free(b64);
	r = write_json_0600(path, root, err);
	json_decref(root);
	return r;
}

int ib_auth_remove(const char *path, const char *host, ib_error **err)
{
	json_t *root = NULL;
	bool missing;
	int r = load_json_file(path, &root, &missing, err);
	if (r < 0)
		return r;
	if (missing)
		return ib_error_setc(err, IB_ENOTFOUND, "not logged in to %s (%s does not exist)",
				     host, path);
	/* credHelpers mappings are the user's configuration: kept. */
	int n = remove_host_keys(json_object_get(root, "auths"), host);
	if (n == 0) {
		json_decref(root);
		return ib_error_setc(err, IB_ENOTFOUND, "not logged in to %s (no entry in %s)",
				     host, path);
	}
	r = write_json_0600(path, root, err);
	json_decref(root);
	return r;
}

/* ---- credential helpers ---- */

static void write_ignoring_sigpipe(int fd, const char *s)
{
	sigset_t old;
	ib_sigpipe_block(&old);
	size_t len = strlen(s);
	while (len > 0) {
		ssize_t n = write(fd, s, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		s += n;
		len -= (size_t)n;
	}
	ib_sigpipe_restore(&old);
}

/* The key docker's helpers use for host: Docker Hub's legacy URL, else the
 * registry domain. */
static char *helper_server_url(const char *host)
{
	cleanup_free char *h = ib_auth_normalize_host(host);
	if (!strcmp(h, "docker.io"))
		return xstrdup(DOCKER_HUB_KEY);
	return steal_pointer(&h);
}

/* Run `docker-credential-NAME verb` with input on stdin; *out gets what it
 * printed (NUL-terminated, caller wipes and frees), *ok whether it exited 0. */
static int run_helper(const char *helper, const char *verb, const char *input, char **out,
		      size_t *len_out, bool *ok, ib_error **err)
{
	*out = NULL;
	*len_out = 0;
	*ok = false;
	if (!*helper || strchr(helper, '/'))
		return ib_error_setc(err, IB_EINVALID, "invalid credential helper name \"%s\"",
				     helper);
	cleanup_free char *prog = xasprintf("docker-credential-%s", helper);
	int in[2] = {-1, -1}, outp[2] = {-1, -1};
	if (pipe2(in, O_CLOEXEC) < 0)
		return ib_error_set(err, errno, "pipe");
	if (pipe2(outp, O_CLOEXEC) < 0) {
		int e = errno;
		close(in[0]);
		close(in[1]);
		return ib_error_set(err, e, "pipe");
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	char *argv[] = {prog, (char *)verb, NULL};
	pid_t pid;
	int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(outp[1]);
	if (rc != 0) {
		close(in[1]);
		close(outp[0]);
		return ib_error_set(err, rc, "run credential helper %s", prog);
	}
	write_ignoring_sigpipe(in[1], input);
	close(in[1]);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *rerr = NULL;
	int rr = ib_read_fd(outp[0], HELPER_OUTPUT_CAP, &buf, &len, &rerr);
	close(outp[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rr < 0) {
		ib_error_free(&rerr);
		return ib_error_setc(err, IB_ERROR,
				     "credential helper %s: output unreadable or too large", prog);
	}
	*ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	*out = steal_pointer(&buf);
	*len_out = len;
	return 0;
}

/* "credentials not found" is the protocol's answer; docker-credential-pass
 * says that its store lacks the entry in its own words on erase. */
static bool helper_not_found(const char *out)
{
	return out && (strstr(out, "credentials not found") ||
		       strstr(out, "is not in the password store"));
}

/* The error for a helper that failed: its complaint, first line only. */
static int helper_failed(const char *helper, const char *verb, const char *host, char *out,
			 size_t len, ib_error **err)
{
	size_t n = out ? strcspn(out, "\r\n") : 0;
	if (n > 200)
		n = 200;
	int code = ib_error_setc(err, IB_ERROR,
				 "credential helper docker-credential-%s %s failed for %s%s%.*s",
				 helper, verb, host, n ? ": " : "", (int)n, out ? out : "");
	if (out)
		explicit_bzero(out, len);
	return code;
}

/* `get` and `erase` take the server URL of host as their input line. */
static int run_helper_on_host(const char *helper, const char *verb, const char *host,
			      char **buf, size_t *len, bool *ok, ib_error **err)
{
	cleanup_free char *server = helper_server_url(host);
	cleanup_free char *line = xasprintf("%s\n", server);
	return run_helper(helper, verb, line, buf, len, ok, err);
}

int ib_auth_helper_get(const char *helper, const char *host, ib_credentials *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_free char *buf = NULL;
	size_t len = 0;
	bool ok;
	int r = run_helper_on_host(helper, "get", host, &buf, &len, &ok, err);
	if (r < 0)
		return r;
	if (!ok) {
		if (helper_not_found(buf)) {
			explicit_bzero(buf, len);
			return 0;
		}
		return helper_failed(helper, "get", host, buf, len, err);
	}
	json_error_t je;
	json_t *j = json_loadb(buf, len, 0, &je);
	explicit_bzero(buf, len);
	if (!json_is_object(j)) {
		json_decref(j);
		return ib_error_setc(
		    err, IB_EINVALID,
		    "credential helper docker-credential-%s: answer is not a JSON object", helper);
	}
	const char *u = json_string_value(json_object_get(j, "Username"));
	const char *sec = json_string_value(json_object_get(j, "Secret"));
	if (u && *u && sec) {
		out->username = xstrdup(u);
		out->password = xstrdup(sec);
	}
	json_decref(j);
	return 0;
}

int ib_auth_helper_store(const char *helper, const char *host, const char *user, const char *pass,
			 ib_error **err)
{
	cleanup_free char *server = helper_server_url(host);
	json_t *j = json_pack("{s:s,s:s,s:s}", "ServerURL", server, "Username", user, "Secret",
			      pass ? pass : "");
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return ib_error_setc(err, IB_ERROR, "serialise credentials for %s", host);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	bool ok;
	int r = run_helper(helper, "store", text, &buf, &len, &ok, err);
	explicit_bzero(text, strlen(text));
	free(text);
	if (r < 0)
		return r;
	if (!ok)
		return helper_failed(helper, "store", host, buf, len, err);
	explicit_bzero(buf, len);
	return 0;
}

int ib_auth_helper_erase(const char *helper, const char *host, ib_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	bool ok;
	int r = run_helper_on_host(helper, "erase", host, &buf, &len, &ok, err);
	if (r < 0)
		return r;
	if (!ok) {
		if (helper_not_found(buf))
			return ib_error_setc(err, IB_ENOTFOUND,
					     "docker-credential-%s holds no credentials for %s",
					     helper, host);
		return helper_failed(helper, "erase", host, buf, len, err);
	}
	return 0;
}

/* ---- login and logout across docker's and podman's files ---- */

void ib_auth_stored_clear(ib_auth_stored *s)
{
	ib_strv_free(s->plain_files);
	ib_strv_free(s->helpers);
	ib_strv_free(s->warnings);
	s->plain_files = NULL;
	s->helpers = NULL;
	s->warnings = NULL;
}

char **ib_auth_login_files(const char *authfile)
{
	char **v = xcalloc(1, sizeof(char *));
	const char *only = explicit_auth_file(authfile);
	if (only) {
		ib_strv_push(&v, only);
		return v;
	}
	cleanup_free char *d = docker_config_file();
	ib_strv_push(&v, d);
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg && *xdg) {
		cleanup_free char *p = ib_path_join(xdg, "containers/auth.json");
		if (access(p, F_OK) == 0)
			ib_strv_push(&v, p);
	}
	return v;
}

/* The helper root configures for host: credHelpers[host], else credsStore;
 * NULL when none (borrowed from root). */
static const char *helper_for(json_t *root, const char *host)
{
	json_t *helpers = json_object_get(root, "credHelpers");
	const char *key;
	json_t *val;
	if (json_is_object(helpers)) {
		json_object_foreach (helpers, key, val) {
			if (json_is_string(val) && *json_string_value(val) &&
			    key_matches(key, host))
				return json_string_value(val);
		}
	}
	const char *store = json_string_value(json_object_get(root, "credsStore"));
	return store && *store ? store : NULL;
}

static bool strv_has(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

int ib_auth_login_store(const char *authfile, const char *host, const char *user, const char *pass,
			ib_auth_stored *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!user || !*user || strchr(user, ':'))
		return ib_error_setc(err, IB_EINVALID, "invalid user name for %s", host);
	cleanup_strv char **files = ib_auth_login_files(authfile);
	out->plain_files = xcalloc(1, sizeof(char *));
	out->helpers = xcalloc(1, sizeof(char *));
	for (size_t i = 0; files[i]; i++) {
		json_t *root = NULL;
		bool missing;
		int r = load_json_file(files[i], &root, &missing, err);
		if (r < 0)
			return r;
		const char *h = root ? helper_for(root, host) : NULL;
		if (!h) {
			json_decref(root);
			r = ib_auth_save(files[i], host, user, pass, err);
			if (r < 0)
				return r;
			ib_strv_push(&out->plain_files, files[i]);
			continue;
		}
		cleanup_free char *helper = xstrdup(h);
		cleanup_free char *prog = xasprintf("docker-credential-%s", helper);
		if (!strv_has(out->helpers, prog)) {
			r = ib_auth_helper_store(helper, host, user, pass, err);
			if (r < 0) {
				json_decref(root);
				return ib_error_wrap(err, "%s", files[i]);
			}
			ib_strv_push(&out->helpers, prog);
		}
		/* A plain copy left from before would shadow the helper. */
		if (remove_host_keys(json_object_get(root, "auths"), host) > 0)
			r = write_json_0600(files[i], root, err);
		json_decref(root);
		if (r < 0)
			return r;
	}
	return 0;
}

int ib_auth_logout(const char *authfile, const char *host, ib_auth_stored *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_strv char **files = ib_auth_login_files(authfile);
	out->plain_files = xcalloc(1, sizeof(char *));
	out->helpers = xcalloc(1, sizeof(char *));
	out->warnings = xcalloc(1, sizeof(char *));
	for (size_t i = 0; files[i]; i++) {
		json_t *root = NULL;
		bool missing;
		int r = load_json_file(files[i], &root, &missing, err);
		if (r < 0)
			return r;
		if (missing)
			continue;
		const char *h = helper_for(root, host);
		if (h) {
			cleanup_free char *prog = xasprintf("docker-credential-%s", h);
			if (!strv_has(out->helpers, prog)) {
				ib_error *e = NULL;
				r = ib_auth_helper_erase(h, host, &e);
				if (r == 0) {
					ib_strv_push(&out->helpers, prog);
				} else {
					/* Like docker: a helper that cannot erase is a
					 * warning; the files are still cleaned. */
					if (r != IB_ENOTFOUND)
						ib_strv_push(&out->warnings, ib_error_msg(e));
					ib_error_free(&e);
				}
			}
		}
		/* credHelpers mappings are the user's configuration: kept. */
		r = 0;
		if (remove_host_keys(json_object_get(root, "auths"), host) > 0) {
			r = write_json_0600(files[i], root, err);
			if (r == 0)
				ib_strv_push(&out->plain_files, files[i]);
		}
		json_decref(root);
		if (r < 0)
			return r;
	}
	if (!out->plain_files[0] && !out->helpers[0]) {
		cleanup_free char *list = NULL;
		for (size_t i = 0; files[i]; i++) {
			char *l = xasprintf("%s%s%s", list ? list : "", list ? ", " : "", files[i]);
			free(list);
			list = l;
		}
		return ib_error_setc(err, IB_ENOTFOUND, "not logged in to %s (no entry in %s)",
				     host, list);
	}
	return 0;
}

/* ---- WWW-Authenticate ---- */

static bool is_tchar(char c)
{
	return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static void set_param(ib_auth_challenge *c, const char *name, size_t nlen, char *value)
{
	char **slot = NULL;
	if (nlen == 5 && !strncasecmp(name, "realm", 5))
		slot = &c->realm;
	else if (nlen == 7 && !strncasecmp(name, "service", 7))
		slot = &c->service;
	else if (nlen == 5 && !strncasecmp(name, "scope", 5))
		slot = &c->scope;
	else if (nlen == 5 && !strncasecmp(name, "error", 5))
		slot = &c->error;
	if (!slot) {
		free(value);
		return;
	}
	if (*slot && slot == &c->scope) {
		char *j = xasprintf("%s %s", *slot, value);
		free(*slot);
		free(value);
		*slot = j;
		return;
	}
	free(*slot);
	*slot = value;
}

int ib_auth_parse_challenges(const char *value, ib_auth_challenge **out, size_t *n_out,
			     ib_error **err)
{
	ib_auth_challenge *v = NULL;
	size_t n = 0;
	const char *p = value ? value : "";
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		const char *s = p;
		while (is_tchar(*p))
			p++;
		if (p == s) {
			ib_auth_challenges_free(v, n);
			return ib_error_setc(err, IB_EINVALID,
					     "malformed WWW-Authenticate header: unexpected '%c'",
					     *p);
		}
		v = xrealloc(v, (n + 1) * sizeof(*v));
		ib_auth_challenge *c = &v[n++];
		memset(c, 0, sizeof(*c));
		c->scheme = xstrndup(s, (size_t)(p - s));
		for (char *q = c->scheme; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		/* auth-params until the next scheme */
		for (;;) {
			p = skip_ws(p);
			const char *ns = p;
			while (is_tchar(*p))
				p++;
			size_t nlen = (size_t)(p - ns);
			if (nlen == 0) {
				if (*p == ',') {
					p++;
					continue;
				}
				if (*p == '=') { /* token68 padding */
					while (*p == '=')
						p++;
					continue;
				}
				break;
			}
			const char *q = skip_ws(p);
			if (*q != '=') {
				/* a bare token: the next challenge's scheme (or a token68) */
				p = ns;
				break;
			}
			q = skip_ws(q + 1);
			char *val;
			if (*q == '"') {
				ib_buf b;
				ib_buf_init(&b, 0);
				q++;
				while (*q && *q != '"') {
					if (*q == '\\' && q[1])
						q++;
					ib_buf_append(&b, q, 1);
					q++;
				}
				if (*q != '"') {
					ib_buf_free(&b);
					ib_auth_challenges_free(v, n);
					return ib_error_setc(err, IB_EINVALID,
							     "malformed WWW-Authenticate header: "
							     "unterminated quoted string");
				}
				q++;
				val = ib_buf_steal(&b, NULL);
			} else {
				const char *vs = q;
				while (is_tchar(*q) || *q == '/' || *q == ':' || *q == '=')
					q++;
				val = xstrndup(vs, (size_t)(q - vs));
			}
			set_param(c, ns, nlen, val);
			p = skip_ws(q);
			if (*p == ',')
				p++;
			else if (*p && !is_tchar(*p)) {
				ib_auth_challenges_free(v, n);
				return ib_error_setc(err, IB_EINVALID,
						     "malformed WWW-Authenticate header: "
						     "unexpected '%c'",
						     *p);
			}
		}
	}
	if (n == 0)
		return ib_error_setc(err, IB_EINVALID, "empty WWW-Authenticate header");
	*out = v;
	*n_out = n;
	return 0;
}

void ib_auth_challenges_free(ib_auth_challenge *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++) {
		free(c[i].scheme);
		free(c[i].realm);
		free(c[i].service);
		free(c[i].scope);
		free(c[i].error);
	}
	free(c);
}

/* ---- scopes ---- */

char *ib_auth_scope_repository(const char *name, bool push)
{
	return xasprintf("repository:%s:%s", name, push ? "pull,push" : "pull");
}

typedef struct scope_entry {
	char *resource; /* "type:name" */
	char **actions;
} scope_entry;

static void scope_add(scope_entry **v, size_t *n, const char *scope)
{
	const char *last = strrchr(scope, ':');
	const char *first = strchr(scope, ':');
	if (!last || last == first)
		return; /* not type:name:actions */
	cleanup_free char *res = xstrndup(scope, (size_t)(last - scope));
	scope_entry *e = NULL;
	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*v)[i].resource, res))
			e = &(*v)[i];
	if (!e) {
		*v = xrealloc(*v, (*n + 1) * sizeof(**v));
		e = &(*v)[(*n)++];
		e->resource = steal_pointer(&res);
		e->actions = xcalloc(1, sizeof(char *));
	}
	const char *a = last + 1;
	while (*a) {
		size_t len = strcspn(a, ",");
		if (len > 0) {
			bool have = false;
			for (size_t i = 0; e->actions[i]; i++)
				if (strlen(e->actions[i]) == len && !strncmp(e->actions[i], a, len))
					have = true;
			if (!have) {
				cleanup_free char *act = xstrndup(a, len);
				ib_strv_push(&e->actions, act);
			}
		}
		a += len;
		if (*a == ',')
			a++;
	}
}

static void scope_parse(scope_entry **v, size_t *n, const char *list)
{
	if (!list)
		return;
	const char *p = list;
	while (*p) {
		while (*p == ' ')
			p++;
		size_t len = strcspn(p, " ");
		if (len) {
			cleanup_free char *one = xstrndup(p, len);
			scope_add(v, n, one);
		}
		p += len;
	}
}

static void scope_entries_free(scope_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].resource);
		ib_strv_free(v[i].actions);
	}
	free(v);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const scope_entry *)a)->resource, ((const scope_entry *)b)->resource);
}

char *ib_auth_scope_merge(const char *a, const char *b)
{
	scope_entry *v = NULL;
	size_t n = 0;
	scope_parse(&v, &n, a);
	scope_parse(&v, &n, b);
	if (n)
		qsort(v, n, sizeof(*v), cmp_entry);
	ib_buf out;
	ib_buf_init(&out, 0);
	for (size_t i = 0; i < n; i++) {
		size_t na = ib_strv_len(v[i].actions);
		qsort(v[i].actions, na, sizeof(char *), cmp_str);
		ib_buf_appendf(&out, "%s%s:", i ? " " : "", v[i].resource);
		for (size_t k = 0; k < na; k++)
			ib_buf_appendf(&out, "%s%s", k ? "," : "", v[i].actions[k]);
	}
	scope_entries_free(v, n);
	return ib_buf_steal(&out, NULL);
}

bool ib_auth_scope_covers(const char *have, const char *need)
{
	scope_entry *h = NULL, *w = NULL;
	size_t nh = 0, nw = 0;
	scope_parse(&h, &nh, have);
	scope_parse(&w, &nw, need);
	bool ok = true;
	for (size_t i = 0; ok && i < nw; i++) {
		scope_entry *e = NULL;
		for (size_t k = 0; k < nh; k++)
			if (!strcmp(h[k].resource, w[i].resource))
				e = &h[k];
		if (!e) {
			ok = false;
			break;
		}
		bool star = false;
		for (size_t k = 0; e->actions[k]; k++)
			if (!strcmp(e->actions[k], "*"))
				star = true;
		for (size_t a = 0; !star && ok && w[i].actions[a]; a++) {
			bool found = false;
			for (size_t k = 0; e->actions[k]; k++)
				if (!strcmp(e->actions[k], w[i].actions[a]))
					found = true;
			ok = found;
		}
	}
	scope_entries_free(h, nh);
	scope_entries_free(w, nw);
	return ok;
}

/* ---- token responses ---- */

int ib_auth_parse_token_response(const char *body, size_t len, char **token_out,
				 int64_t *expires_in_out, ib_error **err)
{
	json_error_t je;
	json_t *j = json_loadb(body, len, 0, &je);
	if (!json_is_object(j)) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID, "token response is not a JSON object");
	}
	const char *t = json_string_value(json_object_get(j, "token"));
	if (!t || !*t)
		t = json_string_value(json_object_get(j, "access_token"));
	if (!t || !*t) {
		json_decref(j);
		return ib_error_setc(err, IB_EINVALID, "token response has no token");
	}
	json_t *exp = json_object_get(j, "expires_in");
	int64_t e = json_is_integer(exp) ? (int64_t)json_integer_value(exp)
		    : json_is_real(exp)	 ? (int64_t)json_real_value(exp)
					 : 0;
	*expires_in_out = e >= 1 ? e : 60;
	*token_out = xstrdup(t);
	json_decref(j);
	return 0;
}
