#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "util.h"

#define REQUEST_CAP (64u << 20)

struct tu_http {
	int lfd;
	int wake[2];
	char host[32];
	pthread_t thread;
	tu_http_handler handler;
	void *payload;
	pthread_mutex_t lock;
	ib_buf log;
	size_t count;
};

char *tu_http_header(const tu_http_request *r, const char *name)
{
	size_t n = strlen(name);
	for (const char *l = r->headers; l && *l;) {
		const char *end = strstr(l, "\r\n");
		if (!end)
			break;
		if ((size_t)(end - l) > n && !strncasecmp(l, name, n) && l[n] == ':') {
			const char *v = l + n + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			return xstrndup(v, (size_t)(end - v));
		}
		l = end + 2;
	}
	return NULL;
}

void tu_http_add_header(tu_http_response *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *line = xvasprintf(fmt, ap);
	va_end(ap);
	char *all = xasprintf("%s%s\r\n", r->headers ? r->headers : "", line);
	free(line);
	free(r->headers);
	r->headers = all;
}

void tu_http_set_body(tu_http_response *r, const void *data, size_t len)
{
	if (len == (size_t)-1)
		len = strlen(data);
	free(r->body);
	r->body = xmalloc(len + 1);
	memcpy(r->body, data, len);
	r->body[len] = '\0';
	r->body_len = len;
}

static bool send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		c += w;
		n -= (size_t)w;
	}
	return true;
}

/* Append what the peer sent next to b; false on EOF, error or over cap. */
static bool recv_some(int fd, ib_buf *b)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		return n > 0 && ib_buf_append(b, chunk, (size_t)n) == 0;
	}
}

/* Read one request; false on EOF or garbage. */
static bool read_request(int fd, tu_http_request *req)
{
	ib_buf b;
	ib_buf_init(&b, REQUEST_CAP);
	char *end = NULL;
	while (!(end = b.data ? strstr(b.data, "\r\n\r\n") : NULL)) {
		if (!recv_some(fd, &b)) {
			ib_buf_free(&b);
			return false;
		}
	}
	size_t head_len = (size_t)(end - b.data) + 4;
	char *line_end = strstr(b.data, "\r\n");
	if (sscanf(b.data, "%15s %4095s", req->method, req->target) != 2) {
		ib_buf_free(&b);
		return false;
	}
	req->headers = xstrndup(line_end + 2, head_len - (size_t)(line_end + 2 - b.data));
	char *cl = tu_http_header(req, "Content-Length");
	size_t want = cl ? strtoul(cl, NULL, 10) : 0;
	free(cl);
	while (b.len - head_len < want) {
		if (!recv_some(fd, &b)) {
			ib_buf_free(&b);
			return false;
		}
	}
	req->body_len = want;
	req->body = xmalloc(want + 1);
	memcpy(req->body, b.data + head_len, want);
	req->body[want] = '\0';
	ib_buf_free(&b);
	return true;
}

static const char *reason(int st)
{
	switch (st) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 206:
		return "Partial Content";
	case 307:
		return "Temporary Redirect";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 429:
		return "Too Many Requests";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

static void serve(tu_http *h, int fd)
{
	tu_http_request req = {0};
	if (!read_request(fd, &req))
		return;
	tu_http_response resp = {.drop_after = -1};
	h->handler(&req, &resp, h->payload);
	if (!resp.status)
		resp.status = 200;
	const char *body = resp.body ? resp.body : "";
	size_t len = resp.body_len;
	int status = resp.status;
	cleanup_free char *crange = NULL;
	char *range = tu_http_header(&req, "Range");
	uint64_t from = 0;
	if (resp.ranges && status == 200 && range &&
	    sscanf(range, "bytes=%" SCNu64 "-", &from) == 1 && from < len) {
		status = 206;
		crange =
		    xasprintf("Content-Range: bytes %" PRIu64 "-%zu/%zu\r\n", from, len - 1, len);
		body += from;
		len -= (size_t)from;
	}
	free(range);
	pthread_mutex_lock(&h->lock);
	ib_buf_appendf(&h->log, "%s %s %d\n", req.method, req.target, resp.hang_up ? 0 : status);
	h->count++;
	pthread_mutex_unlock(&h->lock);
	if (!resp.hang_up) {
		bool head = !strcmp(req.method, "HEAD");
		cleanup_free char *hdr = xasprintf(
		    "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s%s\r\n",
		    status, reason(status), len, crange ? crange : "",
		    resp.headers ? resp.headers : "");
		size_t send_len = head ? 0 : len;
		if (resp.drop_after >= 0 && (size_t)resp.drop_after < send_len)
			send_len = (size_t)resp.drop_after;
		if (send_all(fd, hdr, strlen(hdr)))
			send_all(fd, body, send_len);
	}
	free(req.headers);
	free(req.body);
	free(resp.headers);
	free(resp.body);
}

static void *accept_loop(void *p)
{
	tu_http *h = p;
	for (;;) {
		struct pollfd pf[2] = {{h->lfd, POLLIN, 0}, {h->wake[0], POLLIN, 0}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (pf[1].revents)
			return NULL;
		int fd = accept4(h->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(h, fd);
		/* let the client see the end of the answer, then close */
		shutdown(fd, SHUT_WR);
		close(fd);
	}
}

tu_http *tu_http_start(tu_http_handler handler, void *payload)
{
	tu_http *h = xcalloc(1, sizeof(*h));
	h->handler = handler;
	h->payload = payload;
	pthread_mutex_init(&h->lock, NULL);
	ib_buf_init(&h->log, 0);
	h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof(a);
	if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(h->lfd, 64) < 0 || getsockname(h->lfd, (struct sockaddr *)&a, &al) < 0 ||
	    pipe2(h->wake, O_CLOEXEC) < 0) {
		perror("tu_http_start");
		abort();
	}
	snprintf(h->host, sizeof(h->host), "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
	if (pthread_create(&h->thread, NULL, accept_loop, h) != 0)
		abort();
	return h;
}

const char *tu_http_host(const tu_http *h)
{
	return h->host;
}

char *tu_http_log(tu_http *h)
{
	pthread_mutex_lock(&h->lock);
	char *r = xstrdup(h->log.data ? h->log.data : "");
	pthread_mutex_unlock(&h->lock);
	return r;
}

size_t tu_http_count(tu_http *h)
{
	pthread_mutex_lock(&h->lock);
	size_t n = h->count;
	pthread_mutex_unlock(&h->lock);
	return n;
}

bool tu_http_waiting(tu_http *h, int timeout_ms)
{
	struct pollfd pf = {h->lfd, POLLIN, 0};
	return poll(&pf, 1, timeout_ms) > 0 && (pf.revents & POLLIN);
}

void tu_http_stop(tu_http *h)
{
	if (!h)
		return;
	if (write(h->wake[1], "x", 1) < 0)
		abort();
	pthread_join(h->thread, NULL);
	close(h->lfd);
	close(h->wake[0]);
	close(h->wake[1]);
	ib_buf_free(&h->log);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

char *tu_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *t = xasprintf("%s/ib-unit-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(t)) {
		perror("mkdtemp");
		abort();
	}
	return t;
}

void tu_rm_rf(const char *path)
{
	ib_error *err = NULL;
	if (ib_rm_rf(path, &err) < 0)
		fail_msg("remove %s: %s", path, ib_error_msg(err));
}

ib_store *tu_store_open(const char *root)
{
	ib_store *s = NULL;
	ib_error *err = NULL;
	tu_must(ib_store_open(&s, root, &err), &err, root);
	return s;
}

void tu_must(int r, ib_error **err, const char *what)
{
	if (r < 0)
		fail_msg("%s: %s", what, ib_error_msg(*err));
	assert_null(*err);
}

void tu_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail_msg("open %s: %s", path, strerror(errno));
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

void tu_write_text(const char *path, const char *text)
{
	tu_write_file(path, text, strlen(text));
}

char *tu_write_under(const char *dir, const char *rel, const char *text)
{
	char *p = ib_path_join(dir, rel);
	cleanup_free char *parent = xstrdup(p);
	*strrchr(parent, '/') = '\0';
	ib_error *err = NULL;
	tu_must(ib_mkdir_p(parent, 0755, &err), &err, parent);
	tu_must(ib_write_file_atomic(p, text, strlen(text), 0644, &err), &err, p);
	if (chmod(p, 0644) < 0)
		fail_msg("chmod %s: %s", p, strerror(errno));
	return p;
}

char *tu_read_file(const char *path)
{
	char *data = NULL;
	ib_error *err = NULL;
	if (ib_read_file(path, 1 << 20, &data, NULL, &err) < 0)
		fail_msg("read %s: %s", path, ib_error_msg(err));
	return data;
}

size_t tu_count_entries(const char *dir)
{
	cleanup_dir DIR *d = opendir(dir);
	if (!d)
		fail_msg("opendir %s: %s", dir, strerror(errno));
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

void tu_set_mtime(const char *path, time_t sec, long nsec)
{
	struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		fail_msg("utimensat %s: %s", path, strerror(errno));
}

double tu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A gzip stream of one or more members, the way gzip and Go's reader read
 * it; zlib checks each member's CRC and length. */
const char *tu_json_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		fail_msg("field %s missing or not a string", key);
	return json_string_value(v);
}

json_int_t tu_json_int(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v))
		fail_msg("field %s missing or not an integer", key);
	return json_integer_value(v);
}

/* A gzip stream of one or more members, the way gzip and Go's reader read
 * it; zlib checks each member's CRC and length. */
static size_t inflate_gzip(const unsigned char *in, size_t n, unsigned char **out, size_t alloc)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
	zs.next_in = (unsigned char *)in;
	zs.avail_in = (uInt)n;
	size_t len = 0;
	int r;
	do {
		if (len == alloc) {
			alloc *= 2;
			*out = xrealloc(*out, alloc);
		}
		zs.next_out = *out + len;
		zs.avail_out = (uInt)(alloc - len);
		r = inflate(&zs, Z_NO_FLUSH);
		len = alloc - zs.avail_out;
		assert_true(r == Z_OK || r == Z_STREAM_END || (r == Z_BUF_ERROR && len == alloc));
		if (r == Z_STREAM_END && zs.avail_in > 0) { /* the next member */
			assert_int_equal(inflateReset(&zs), Z_OK);
			r = Z_OK;
		}
	} while (r != Z_STREAM_END);
	assert_int_equal(zs.avail_in, 0); /* nothing after the last trailer */
	inflateEnd(&zs);
	return len;
}

static size_t inflate_zstd(const unsigned char *in, size_t n, unsigned char **out, size_t alloc)
{
	ZSTD_DStream *ds = ZSTD_createDStream();
	assert_non_null(ds);
	ZSTD_inBuffer ib = {in, n, 0};
	size_t len = 0, r;
	do {
		if (len == alloc) {
			alloc *= 2;
			*out = xrealloc(*out, alloc);
		}
		ZSTD_outBuffer ob = {*out + len, alloc - len, 0};
		r = ZSTD_decompressStream(ds, &ob, &ib);
		assert_false(ZSTD_isError(r));
		len += ob.pos;
	} while (r != 0 || ib.pos < ib.size);
	ZSTD_freeDStream(ds);
	return len;
}

unsigned char *tu_decompress(ib_compression c, const unsigned char *in, size_t n, size_t *out_len)
{
	size_t alloc = 1 << 16;
	unsigned char *out = xmalloc(alloc);
	if (c == IB_COMP_NONE) {
		out = xrealloc(out, n ? n : 1);
		memcpy(out, in, n);
		*out_len = n;
	} else if (c == IB_COMP_GZIP) {
		*out_len = inflate_gzip(in, n, &out, alloc);
	} else {
		*out_len = inflate_zstd(in, n, &out, alloc);
	}
	return out;
}
