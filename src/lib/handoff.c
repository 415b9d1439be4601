#include "handoff.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image_archive.h"
#include "util.h"

extern char **environ;

#define DOCKER_DEFAULT_SOCKET "/var/run/docker.sock"
#define DOCKER_ANSWER_CAP (1u << 20)

int ib_handoff_engine_parse(const char *s, ib_handoff_engine *out, ib_error **err)
{
	if (!s || !*s || !strcmp(s, "auto"))
		*out = IB_HANDOFF_AUTO;
	else if (!strcmp(s, "docker"))
		*out = IB_HANDOFF_DOCKER;
	else if (!strcmp(s, "podman"))
		*out = IB_HANDOFF_PODMAN;
	else
		return ib_error_setc(err, IB_EINVALID,
				     "unknown engine '%s' (expected docker, podman or auto)", s);
	return 0;
}

const char *ib_handoff_engine_name(ib_handoff_engine e)
{
	return e == IB_HANDOFF_DOCKER ? "docker" : e == IB_HANDOFF_PODMAN ? "podman" : "auto";
}

int ib_handoff_docker_endpoint(const char *docker_host, char **socket_out, char **base_out,
			       ib_error **err)
{
	*socket_out = NULL;
	*base_out = NULL;
	const char *h = docker_host && *docker_host ? docker_host : "unix://" DOCKER_DEFAULT_SOCKET;
	if (!strncmp(h, "unix://", 7)) {
		if (h[7] != '/')
			return ib_error_setc(err, IB_EINVALID,
					     "DOCKER_HOST %s: the socket path must be absolute", h);
		*socket_out = xstrdup(h + 7);
		*base_out = xstrdup("http://localhost");
		return 0;
	}
	if (!strncmp(h, "tcp://", 6)) {
		const char *hp = h + 6;
		size_t n = strcspn(hp, "/");
		if (n == 0)
			return ib_error_setc(err, IB_EINVALID, "DOCKER_HOST %s: no host", h);
		cleanup_free char *host = xstrndup(hp, n);
		*base_out = xasprintf("http://%s", host);
		return 0;
	}
	return ib_error_setc(
	    err, IB_EINVALID,
	    "DOCKER_HOST %s is not supported (use unix:///PATH or tcp://HOST:PORT)", h);
}

int ib_handoff_docker_messages(const char *body, size_t len, FILE *out, ib_error **err)
{
	size_t off = 0;
	while (off < len) {
		while (off < len && (body[off] == '\n' || body[off] == '\r' || body[off] == ' '))
			off++;
		if (off >= len)
			break;
		json_error_t je;
		json_t *m = json_loadb(body + off, len - off, JSON_DISABLE_EOF_CHECK, &je);
		if (!m)
			return ib_error_setc(err, IB_EINVALID,
					     "docker answered something that is not JSON: %s",
					     je.text);
		off += je.position;
		const char *e = json_string_value(json_object_get(m, "error"));
		if (!e)
			e = json_string_value(
			    json_object_get(json_object_get(m, "errorDetail"), "message"));
		if (e) {
			int r = ib_error_setc(err, IB_ERROR, "docker: %s", e);
			json_decref(m);
			return r;
		}
		const char *st = json_string_value(json_object_get(m, "stream"));
		if (st && out)
			fputs(st, out);
		json_decref(m);
	}
	if (out)
		fflush(out);
	return 0;
}

/* ---- docker ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
}

typedef struct docker_api {
	char *socket;
	char *base;
} docker_api;

static void docker_api_clear(docker_api *d)
{
	free(d->socket);
	free(d->base);
}

static int docker_api_init(docker_api *d, ib_error **err)
{
	pthread_once(&curl_once, curl_init_once);
	return ib_handoff_docker_endpoint(getenv("DOCKER_HOST"), &d->socket, &d->base, err);
}

static const char *docker_where(const docker_api *d)
{
	return d->socket ? d->socket : d->base;
}

static size_t collect(char *p, size_t sz, size_t n, void *payload)
{
	ib_buf *b = payload;
	size_t len = sz * n;
	return ib_buf_append(b, p, len) < 0 ? 0 : len;
}

static CURL *docker_handle(const docker_api *d, const char *path, ib_buf *answer, char *errbuf)
{
	CURL *h = curl_easy_init();
	if (!h)
		return NULL;
	cleanup_free char *url = xasprintf("%s%s", d->base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	if (d->socket)
		curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, d->socket);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, answer);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	errbuf[0] = '\0';
	return h;
}

/* True when the engine answers GET /_ping. */
static bool docker_ping(const docker_api *d)
{
	ib_buf answer;
	ib_buf_init(&answer, DOCKER_ANSWER_CAP);
	char errbuf[CURL_ERROR_SIZE];
	CURL *h = docker_handle(d, "/_ping", &answer, errbuf);
	if (!h)
		return false;
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	long code = 0;
	bool ok = curl_easy_perform(h) == CURLE_OK &&
		  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
	curl_easy_cleanup(h);
	ib_buf_free(&answer);
	return ok;
}

/* The archive writer running beside curl. */
typedef struct save_job {
	ib_store *s;
	char *const *refs;
	size_t n_refs;
	int fd; /* write end of the pipe, closed by the job */
	ib_error *err;
	int rc;
} save_job;

static void *save_thread(void *payload)
{
	save_job *j = payload;
	/* A reader that went away is an EPIPE error here, not a signal:
	 * blocked signals aimed at this thread die with it. */
	sigset_t old;
	ib_sigpipe_block(&old);
	j->rc = ib_archive_save_fd(j->s, j->fd, IB_ARCHIVE_DOCKER, j->refs, j->n_refs, &j->err);
	close(j->fd);
	j->fd = -1;
	return NULL;
}

static size_t read_pipe(char *buf, size_t sz, size_t n, void *payload)
{
	int fd = *(int *)payload;
	for (;;) {
		ssize_t r = read(fd, buf, sz * n);
		if (r >= 0)
			return (size_t)r;
		if (errno != EINTR)
			return CURL_READFUNC_ABORT;
	}
}

static int docker_load(const docker_api *d, ib_store *s, char *const *refs, size_t n_refs,
		       FILE *out, ib_error **err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return ib_error_set(err, errno, "pipe");
	save_job job = {.s = s, .refs = refs, .n_refs = n_refs, .fd = p[1]};
	pthread_t th;
	int e = pthread_create(&th, NULL, save_thread, &job);
	if (e != 0) {
		close(p[0]);
		close(p[1]);
		return ib_error_set(err, e, "start the archive writer");
	}
	ib_buf answer;
	ib_buf_init(&answer, DOCKER_ANSWER_CAP);
	char errbuf[CURL_ERROR_SIZE];
	CURL *h = docker_handle(d, "/images/load?quiet=1", &answer, errbuf);
	CURLcode cc = CURLE_FAILED_INIT;
	long code = 0;
	if (h) {
		struct curl_slist *hdr = NULL;
		hdr = curl_slist_append(hdr, "Content-Type: application/x-tar");
		hdr = curl_slist_append(hdr, "Transfer-Encoding: chunked");
		hdr = curl_slist_append(hdr, "Expect:");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, read_pipe);
		curl_easy_setopt(h, CURLOPT_READDATA, &p[0]);
		cc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_cleanup(h);
		curl_slist_free_all(hdr);
	}
	/* Unblock a writer stuck on a full pipe before waiting for it. */
	close(p[0]);
	pthread_join(th, NULL);
	int r = 0;
	if (job.rc < 0) {
		/* The archive could not be produced: that is the cause. */
		r = job.rc;
		if (err && !*err)
			*err = steal_pointer(&job.err);
		ib_error_wrap(err, "write the archive for docker");
	} else if (cc != CURLE_OK) {
		r = ib_error_setc(err, IB_ERROR, "docker at %s: %s", docker_where(d),
				  errbuf[0] ? errbuf : curl_easy_strerror(cc));
	} else if (code != 200) {
		cleanup_free char *text = ib_buf_steal(&answer, NULL);
		json_t *j = text ? json_loads(text, 0, NULL) : NULL;
		const char *msg = json_string_value(json_object_get(j, "message"));
		r = ib_error_setc(err, IB_ERROR,
				  "docker at %s refused the images (HTTP %ld)%s%.300s",
				  docker_where(d), code, msg || text ? ": " : "",
				  msg	 ? msg
				  : text ? text
					 : "");
		json_decref(j);
	} else {
		r = ib_handoff_docker_messages(answer.data ? answer.data : "", answer.len, out,
					       err);
	}
	ib_error_free(&job.err);
	ib_buf_free(&answer);
	return r;
}

/* ---- podman ---- */

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		cleanup_free char *dir = n ? xstrndup(path, n) : xstrdup(".");
		cleanup_free char *f = ib_path_join(dir, prog);
		if (access(f, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

static int podman_load(ib_store *s, char *const *refs, size_t n_refs, FILE *out, ib_error **err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return ib_error_set(err, errno, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	if (out) {
		fflush(out);
		posix_spawn_file_actions_adddup2(&fa, fileno(out), 1);
	} else {
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	}
	char *argv[] = {(char *)"podman", (char *)"load", NULL};
	pid_t pid;
	int rc = posix_spawnp(&pid, "podman", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (rc != 0) {
		close(p[1]);
		return ib_error_set(err, rc, "run podman load");
	}
	sigset_t old;
	ib_sigpipe_block(&old);
	ib_error *werr = NULL;
	int wr = ib_archive_save_fd(s, p[1], IB_ARCHIVE_DOCKER, refs, n_refs, &werr);
	close(p[1]);
	ib_sigpipe_restore(&old);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!ok) {
		ib_error_free(&werr);
		if (WIFEXITED(status))
			return ib_error_setc(err, IB_ERROR, "podman load failed (exit status %d)",
					     WEXITSTATUS(status));
		return ib_error_setc(err, IB_ERROR, "podman load was killed by signal %d",
				     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	}
	if (wr < 0) {
		if (err && !*err)
			*err = werr;
		else
			ib_error_free(&werr);
		return ib_error_wrap(err, "write the archive for podman");
	}
	return 0;
}

int ib_handoff_load(ib_store *s, char *const *refs, size_t n_refs, const ib_handoff_options *o,
		    ib_handoff_engine *used, ib_error **err)
{
	ib_handoff_engine e = o ? o->engine : IB_HANDOFF_AUTO;
	FILE *out = o ? o->out : NULL;
	if (n_refs == 0)
		return ib_error_setc(err, IB_EINVALID, "no image to load");
	docker_api d = {0};
	int r = 0;
	if (e != IB_HANDOFF_PODMAN) {
		r = docker_api_init(&d, err);
		if (r < 0) {
			docker_api_clear(&d);
			return r;
		}
	}
	if (e == IB_HANDOFF_AUTO) {
		if (docker_ping(&d))
			e = IB_HANDOFF_DOCKER;
		else if (in_path("podman"))
			e = IB_HANDOFF_PODMAN;
		else
			r = ib_error_setc(err, IB_ENOTFOUND,
					  "no engine to load into: docker does not answer at %s "
					  "and podman is not installed",
					  docker_where(&d));
	}
	if (r == 0 && e == IB_HANDOFF_DOCKER)
		r = docker_load(&d, s, refs, n_refs, out, err);
	else if (r == 0 && e == IB_HANDOFF_PODMAN)
		r = podman_load(s, refs, n_refs, out, err);
	docker_api_clear(&d);
	if (r == 0 && used)
		*used = e;
	return r;
}

/* ---- where else an image is ---- */

static bool docker_has(const char *name)
{
	docker_api d = {0};
	ib_error *e = NULL;
	if (docker_api_init(&d, &e) < 0) {
		ib_error_free(&e);
		docker_api_clear(&d);
		return false;
	}
	ib_buf answer;
	ib_buf_init(&answer, DOCKER_ANSWER_CAP);
	char errbuf[CURL_ERROR_SIZE];
	cleanup_free char *path = xasprintf("/images/%s/json", name);
	CURL *h = docker_handle(&d, path, &answer, errbuf);
	bool ok = false;
	if (h) {
		long code = 0;
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
		ok = curl_easy_perform(h) == CURLE_OK &&
		     curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
		curl_easy_cleanup(h);
	}
	ib_buf_free(&answer);
	docker_api_clear(&d);
	return ok;
}

static bool podman_has(const char *name)
{
	if (!in_path("podman"))
		return false;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	char *argv[] = {(char *)"podman", (char *)"image", (char *)"exists", (char *)name, NULL};
	pid_t pid;
	int rc = posix_spawnp(&pid, "podman", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return false;
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

const char *ib_handoff_image_holder(const char *ref)
{
	if (docker_has(ref))
		return "docker";
	if (podman_has(ref))
		return "podman";
	return NULL;
}
