#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <strings.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void ib_cleanup_freep(void *p)
{
	free(*(void **)p);
}

void ib_cleanup_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

void ib_cleanup_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

void ib_cleanup_closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

void ib_cleanup_strvp(char ***v)
{
	ib_strv_free(*v);
}

static void oom(void)
{
	fputs("imgbuild: error: out of memory\n", stderr);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		oom();
	return p;
}

char *xstrdup(const char *s)
{
	char *r = strdup(s ? s : "");
	if (!r)
		oom();
	return r;
}

char *xstrndup(const char *s, size_t n)
{
	char *r = strndup(s, n);
	if (!r)
		oom();
	return r;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	char *r = NULL;
	if (vasprintf(&r, fmt, ap) < 0)
		oom();
	return r;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *r = xvasprintf(fmt, ap);
	va_end(ap);
	return r;
}

size_t ib_strv_len(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

void ib_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

char **ib_strv_dup(char *const *v)
{
	size_t n = ib_strv_len(v);
	char **r = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

void ib_strv_push(char ***v, const char *s)
{
	size_t n = ib_strv_len(*v);
	*v = xrealloc(*v, (n + 2) * sizeof(char *));
	(*v)[n] = xstrdup(s);
	(*v)[n + 1] = NULL;
}

void ib_buf_init(ib_buf *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
}

int ib_buf_append(ib_buf *b, const void *data, size_t len)
{
	if (b->cap && (len > b->cap || b->len > b->cap - len))
		return IB_ETOOLARGE;
	if (b->len + len + 1 > b->alloc) {
		size_t n = b->alloc ? b->alloc : 256;
		while (n < b->len + len + 1)
			n *= 2;
		b->data = xrealloc(b->data, n);
		b->alloc = n;
	}
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int ib_buf_appendf(ib_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *s = xvasprintf(fmt, ap);
	va_end(ap);
	return ib_buf_append(b, s, strlen(s));
}

void ib_buf_reset(ib_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void ib_buf_free(ib_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

char *ib_buf_steal(ib_buf *b, size_t *len_out)
{
	if (!b->data)
		ib_buf_append(b, "", 0);
	char *r = b->data;
	if (len_out)
		*len_out = b->len;
	b->data = NULL;
	b->len = b->alloc = 0;
	return r;
}

int ib_read_fd(int fd, size_t cap, char **out, size_t *len_out, ib_error **err)
{
	ib_buf b;
	ib_buf_init(&b, cap);
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ib_buf_free(&b);
			return ib_error_set(err, errno, "read");
		}
		if (n == 0)
			break;
		if (ib_buf_append(&b, chunk, (size_t)n) < 0) {
			ib_buf_free(&b);
			return ib_error_setc(err, IB_ETOOLARGE, "content exceeds %zu bytes", cap);
		}
	}
	*out = ib_buf_steal(&b, len_out);
	return 0;
}

int ib_read_file(const char *path, size_t cap, char **out, size_t *len_out, ib_error **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	int r = ib_read_fd(fd, cap, out, len_out, err);
	if (r < 0)
		return ib_error_wrap(err, "%s", path);
	return 0;
}

int ib_write_all(int fd, const void *buf, size_t len, ib_error **err)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ib_error_set(err, errno, "write");
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ib_fsync_dir(const char *dir, ib_error **err)
{
	cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", dir);
	if (fsync(fd) < 0 && errno != EINVAL)
		return ib_error_set(err, errno, "fsync %s", dir);
	return 0;
}

int ib_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode, ib_error **err)
{
	cleanup_free char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return ib_error_set(err, errno, "create %s", tmp);
	if (ib_write_all(fd, buf, len, err) < 0 || fsync(fd) < 0) {
		if (err && !*err)
			ib_error_set(err, errno, "fsync %s", tmp);
		unlink(tmp);
		return ib_error_wrap(err, "write %s", path);
	}
	if (fchmod(fd, mode) < 0) {
		unlink(tmp);
		return ib_error_set(err, errno, "chmod %s", tmp);
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return ib_error_set(err, e, "rename %s", path);
	}
	cleanup_free char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		return ib_fsync_dir(*dir ? dir : "/", err);
	}
	return ib_fsync_dir(".", err);
}

int ib_mkdir_p(const char *path, mode_t mode, ib_error **err)
{
	struct stat st;
	/* most calls find the directory there: one stat, not a mkdir for
	 * every component */
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	cleanup_free char *p = xstrdup(path);
	size_t len = strlen(p);
	for (size_t i = 1; i <= len; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char saved = p[i];
		p[i] = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return ib_error_set(err, errno, "mkdir %s", p);
		p[i] = saved;
	}
	if (stat(path, &st) < 0)
		return ib_error_set(err, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode))
		return ib_error_setc(err, IB_EEXISTS, "%s exists and is not a directory", path);
	return 0;
}

static int rm_rf_at(int parent, const char *name, ib_error **err)
{
	if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return ib_error_set(err, errno, "unlink %s", name);
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", name);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return ib_error_set(err, errno, "opendir %s", name);
	}
	cleanup_dir DIR *dd = d;
	struct dirent *de;
	while ((de = readdir(dd)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (rm_rf_at(dirfd(dd), de->d_name, err) < 0)
			return ib_error_wrap(err, "%s", name);
	}
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return ib_error_set(err, errno, "rmdir %s", name);
	return 0;
}

int ib_rm_rf(const char *path, ib_error **err)
{
	return rm_rf_at(AT_FDCWD, path, err);
}

char *ib_path_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	while (la > 1 && a[la - 1] == '/')
		la--;
	while (*b == '/')
		b++;
	if (*b == '\0')
		return xstrndup(a, la);
	if (la == 1 && a[0] == '/')
		la = 0;
	size_t lb = strlen(b);
	char *out = xmalloc(la + 1 + lb + 1);
	memcpy(out, a, la);
	out[la] = '/';
	memcpy(out + la + 1, b, lb + 1);
	return out;
}

bool ib_file_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

int ib_flock(int fd, int op)
{
	int r;
	do
		r = flock(fd, op);
	while (r < 0 && errno == EINTR);
	return r;
}

int ib_lock_file(const char *path, int op, ib_error **err)
{
	cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	if (ib_flock(fd, op) < 0)
		return ib_error_set(err, errno, "lock %s", path);
	return ib_steal_fd(&fd);
}

void ib_hex_encode(char *out, const unsigned char *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void ib_format_size(char *out, size_t outlen, uint64_t bytes)
{
	static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1000.0 && u < 4) {
		v /= 1000.0;
		u++;
	}
	/* "%.3g" turns 999.5 and up into "1e+03": carry into the next unit */
	if (u > 0 && u < 4 && v >= 999.5) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(out, outlen, "%" PRIu64 "B", bytes);
	else if (v >= 999.5)
		snprintf(out, outlen, "%.0f%s", v, units[u]);
	else
		snprintf(out, outlen, "%.3g%s", v, units[u]);
}

int ib_parse_u64(const char *s, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return IB_EINVALID;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return IB_EINVALID;
	*out = v;
	return 0;
}

int ib_parse_source_date_epoch(const char *s, int64_t *out, ib_error **err)
{
	const char *what = "source date epoch";
	if (!s) {
		s = getenv("SOURCE_DATE_EPOCH");
		what = "SOURCE_DATE_EPOCH";
	}
	if (!s || !*s) {
		*out = 0;
		return 0;
	}
	uint64_t v;
	if (ib_parse_u64(s, &v) < 0 || v > (uint64_t)INT64_MAX / 2)
		return ib_error_setc(err, IB_EINVALID, "invalid %s \"%s\": not a number of seconds",
				     what, s);
	*out = (int64_t)v;
	return 0;
}

void ib_format_rfc3339(char *out, size_t len, int64_t epoch)
{
	time_t t = (time_t)epoch;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int ib_parse_size(const char *s, bool binary, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)s[0]))
		return -1;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	/* decimal: docker's printed sizes; binary: docker's --memory ("512m"
	 * is 512 MiB).  The "i" forms are powers of 1024 either way. */
	static const struct {
		const char *suffix;
		double decimal, binary;
	} units[] = {
	    {"", 1, 1},
	    {"b", 1, 1},
	    {"k", 1e3, 1024.0},
	    {"kb", 1e3, 1024.0},
	    {"m", 1e6, 1048576.0},
	    {"mb", 1e6, 1048576.0},
	    {"g", 1e9, 1073741824.0},
	    {"gb", 1e9, 1073741824.0},
	    {"t", 1e12, 1099511627776.0},
	    {"tb", 1e12, 1099511627776.0},
	    {"ki", 1024.0, 1024.0},
	    {"kib", 1024.0, 1024.0},
	    {"mi", 1048576.0, 1048576.0},
	    {"mib", 1048576.0, 1048576.0},
	    {"gi", 1073741824.0, 1073741824.0},
	    {"gib", 1073741824.0, 1073741824.0},
	    {"ti", 1099511627776.0, 1099511627776.0},
	    {"tib", 1099511627776.0, 1099511627776.0},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix) != 0)
			continue;
		double b = v * (binary ? units[i].binary : units[i].decimal);
		if (!isfinite(b) || b >= 1.8e19)
			return -1;
		*out = (uint64_t)b;
		return 0;
	}
	return -1;
}

void ib_sigpipe_block(sigset_t *old)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, old);
}

void ib_sigpipe_restore(const sigset_t *old)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	/* a write to a closed pipe left a SIGPIPE pending for this thread:
	 * consume it before the mask comes back */
	sigpending(&pending);
	if (sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

typedef struct thread_start {
	void *(*fn)(void *);
	void *arg;
	int ready; /* write end of a pipe the creator reads */
} thread_start;

static void *thread_started(void *payload)
{
	thread_start *ts = payload;
	void *(*fn)(void *) = ts->fn;
	void *arg = ts->arg;
	char c = 1;
	/* ts lives on the creator's stack: not used after this */
	if (write(ts->ready, &c, 1) < 0)
		abort();
	return fn(arg);
}

int ib_thread_start_detached(void *(*fn)(void *), void *arg)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return errno;
	thread_start ts = {.fn = fn, .arg = arg, .ready = p[1]};
	pthread_t t;
	int r = pthread_create(&t, NULL, thread_started, &ts);
	if (r == 0) {
		pthread_detach(t);
		char c;
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
	}
	close(p[0]);
	close(p[1]);
	return r;
}

void ib_kill_children(int sig, bool (*skip)(pid_t pid))
{
	cleanup_dir DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		cleanup_free char *p = xasprintf("/proc/self/task/%s/children", de->d_name);
		cleanup_free char *text = NULL;
		size_t len = 0;
		ib_error *e = NULL;
		if (ib_read_file(p, 65536, &text, &len, &e) < 0) {
			ib_error_free(&e);
			continue;
		}
		for (char *q = text; q && *q;) {
			char *end;
			long pid = strtol(q, &end, 10);
			if (end == q)
				break;
			if (pid > 1 && !(skip && skip((pid_t)pid)))
				kill((pid_t)pid, sig);
			q = end;
		}
	}
}
