#include "layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "compress.h"
#include "path.h"
#include "unpack.h"
#include "util.h"

#define COPY_CHUNK (256u << 10)
#define WH_OPAQUE_LEN (sizeof(IB_WH_OPAQUE) - 1)

/* ---- paths ---- */

/* Layer paths are relative, slash-separated, without "." components or
 * empty ones; ".." is refused outright rather than resolved: a layer never
 * needs it. */
#define LAYER_PATH (IB_PATH_RELATIVE | IB_PATH_REFUSE_DOTDOT)

static int norm_nonempty(const char *in, char **out, ib_error **err)
{
	int r = ib_path_clean(in, LAYER_PATH, out, err);
	if (r == 0 && (*out)[0] == '\0') {
		free(*out);
		*out = NULL;
		return ib_error_setc(err, IB_EINVALID, "empty layer path '%s'", in);
	}
	return r;
}

static char *join_rel(const char *dir, const char *name)
{
	return dir[0] ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

static bool is_opaque_component(const char *s, size_t n)
{
	return n == WH_OPAQUE_LEN && memcmp(s, IB_WH_OPAQUE, WH_OPAQUE_LEN) == 0;
}

/* Component-wise bytewise order (a path's end and '/' sort lowest, so a
 * directory's subtree directly follows it), with the opaque marker first
 * among its siblings. */
static int path_cmp(const char *a, const char *b)
{
	size_t i = 0;
	while (a[i] != '\0' && a[i] == b[i])
		i++;
	if (a[i] == b[i])
		return 0;
	size_t s = i;
	while (s > 0 && a[s - 1] != '/')
		s--;
	bool oa = is_opaque_component(a + s, strcspn(a + s, "/"));
	bool ob = is_opaque_component(b + s, strcspn(b + s, "/"));
	if (oa != ob)
		return oa ? -1 : 1;
	unsigned char ca = (unsigned char)a[i], cb = (unsigned char)b[i];
	if (ca == '\0' || (ca == '/' && cb != '\0'))
		return -1;
	if (cb == '\0' || cb == '/')
		return 1;
	return ca < cb ? -1 : 1;
}

/* ---- xattrs ---- */

bool ib_layer_keeps_xattr(const char *name)
{
	if (strcmp(name, "security.capability") == 0)
		return true;
	return strncmp(name, "user.", 5) == 0 && strncmp(name, "user.overlay.", 13) != 0;
}

static int xattr_cmp(const void *a, const void *b)
{
	return strcmp(((const ib_xattr *)a)->name, ((const ib_xattr *)b)->name);
}

void ib_layer_xattrs_free(ib_xattr *xs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(xs[i].name);
		free(xs[i].value);
	}
	free(xs);
}

static ssize_t do_listxattr(int fd, const char *path, char *buf, size_t size)
{
	return fd >= 0 ? flistxattr(fd, buf, size) : llistxattr(path, buf, size);
}

static ssize_t do_getxattr(int fd, const char *path, const char *name, void *buf, size_t size)
{
	return fd >= 0 ? fgetxattr(fd, name, buf, size) : lgetxattr(path, name, buf, size);
}

static bool xattr_unsupported(int e)
{
	return e == ENOTSUP || e == ENOSYS;
}

int ib_layer_xattrs_read(int fd, const char *path, ib_xattr **out, size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	cleanup_free char *list = NULL;
	ssize_t n;
	/* most files have no xattr or a short list (overlayfs' origin): one
	 * call into a small buffer; a longer list is sized first */
	char small[256];
	n = do_listxattr(fd, path, small, sizeof(small));
	if (n < 0 && xattr_unsupported(errno))
		return 0;
	if (n == 0)
		return 0;
	if (n > 0) {
		list = xmalloc((size_t)n);
		memcpy(list, small, (size_t)n);
	} else if (errno != ERANGE) {
		return ib_error_set(err, errno, "list xattrs of %s", path);
	}
	/* sizes are asked first, never guessed: a list or value may be large */
	while (n < 0) {
		n = do_listxattr(fd, path, NULL, 0);
		if (n < 0 && xattr_unsupported(errno))
			return 0;
		if (n < 0)
			return ib_error_set(err, errno, "list xattrs of %s", path);
		if (n == 0)
			return 0;
		free(list);
		list = xmalloc((size_t)n);
		n = do_listxattr(fd, path, list, (size_t)n);
		if (n < 0 && errno != ERANGE) /* ERANGE: the list grew meanwhile */
			return ib_error_set(err, errno, "list xattrs of %s", path);
	}

	ib_xattr *xs = NULL;
	size_t nx = 0;
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(list + off) + 1) {
		const char *name = list + off;
		if (!ib_layer_keeps_xattr(name))
			continue;
		void *val = NULL;
		ssize_t vn;
		for (;;) {
			vn = do_getxattr(fd, path, name, NULL, 0);
			if (vn < 0)
				break;
			free(val);
			val = xmalloc(vn > 0 ? (size_t)vn : 1);
			vn = do_getxattr(fd, path, name, val, (size_t)vn);
			if (vn >= 0 || errno != ERANGE)
				break;
		}
		if (vn < 0) {
			int e = errno;
			free(val);
			if (e == ENODATA) /* removed meanwhile */
				continue;
			ib_layer_xattrs_free(xs, nx);
			return ib_error_set(err, e, "read xattr %s of %s", name, path);
		}
		xs = xrealloc(xs, (nx + 1) * sizeof(*xs));
		xs[nx++] = (ib_xattr){xstrdup(name), val, (size_t)vn};
	}
	if (nx > 1)
		qsort(xs, nx, sizeof(*xs), xattr_cmp);
	*out = xs;
	*n_out = nx;
	return 0;
}

/* Read the kept xattrs of fd (when >= 0) or of path (not followed) into
 * the entry.  libarchive prepends each xattr to its list and writes the
 * list in order, so adding them in descending order writes them ascending. */
static int host_xattrs(int fd, const char *path, struct archive_entry *ae, ib_error **err)
{
	ib_xattr *xs = NULL;
	size_t nx = 0;
	if (ib_layer_xattrs_read(fd, path, &xs, &nx, err) < 0)
		return -1;
	for (size_t i = nx; i > 0; i--)
		archive_entry_xattr_add_entry(ae, xs[i - 1].name, xs[i - 1].value, xs[i - 1].size);
	ib_layer_xattrs_free(xs, nx);
	return 0;
}

/* ---- locales ----
 *
 * libarchive converts names between the locale's charset and the UTF-8 of
 * PAX headers, so the bytes would depend on the process locale.  We pin it
 * per thread (uselocale) around libarchive calls:
 *  - writing under C.UTF-8: a name that is valid UTF-8 goes out as is (no
 *    normalisation) and needs no "hdrcharset"; only a name that is not
 *    valid UTF-8 is written raw with hdrcharset=BINARY, as POSIX wants
 *    (GNU tar warns about every hdrcharset, so we avoid it where we can);
 *  - reading under C: conversion fails and libarchive hands back the raw
 *    bytes; under a UTF-8 locale it would NFC-normalise them.
 * Without a C.UTF-8 locale every header is written hdrcharset=BINARY. */
static pthread_once_t locales_once = PTHREAD_ONCE_INIT;
static locale_t loc_c, loc_utf8;

static void locales_init(void)
{
	loc_c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	loc_utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0);
	if (loc_utf8 == (locale_t)0)
		loc_utf8 = newlocale(LC_ALL_MASK, "C.utf8", (locale_t)0);
}

/* Switch this thread to l (when available); returns what to restore. */
static locale_t locale_enter(bool utf8)
{
	pthread_once(&locales_once, locales_init);
	locale_t l = utf8 ? loc_utf8 : loc_c;
	return l != (locale_t)0 ? uselocale(l) : (locale_t)0;
}

static void locale_leave(locale_t prev)
{
	if (prev != (locale_t)0)
		uselocale(prev);
}

/* ---- output pipeline: tar -> diff_id hash + compressor -> blob ----
 * (or, with tar_only, tar -> diff_id hash + the caller's file) */

#define TAR_OUT_BUF (1u << 20)

struct pipe {
	ib_blob_writer *blob;
	ib_compressor *comp;
	int tar_fd;		/* >= 0: the uncompressed tar goes here */
	unsigned char *tar_buf; /* TAR_OUT_BUF bytes of it, buffered */
	size_t tar_len;
	ib_digest_ctx *diff;
	struct archive *ar;
	ib_error *cb_err; /* first failure inside a callback */
	bool dead;	  /* refuse further output (abort path) */
	uint64_t entries;
	int64_t sde;
	unsigned char *buf;
	uint64_t tar_bytes, reported;
	void (*progress)(uint64_t tar_bytes, void *payload);
	void *payload;
};

static int pipe_sink(const void *data, size_t len, void *payload)
{
	struct pipe *p = payload;
	return ib_blob_writer_write(p->blob, data, len, p->cb_err ? NULL : &p->cb_err);
}

/* tar_only: hand the buffered tar bytes to the caller's file. */
static int pipe_tar_flush(struct pipe *p, ib_error **err)
{
	if (p->tar_len == 0)
		return 0;
	int r = ib_write_all(p->tar_fd, p->tar_buf, p->tar_len, err);
	p->tar_len = 0;
	if (r < 0)
		return ib_error_wrap(err, "write uncompressed layer");
	return 0;
}

static int pipe_tar_out(struct pipe *p, const unsigned char *buf, size_t len, ib_error **err)
{
	if (p->comp)
		return ib_compressor_write(p->comp, buf, len, err);
	while (len > 0) {
		if (p->tar_len == TAR_OUT_BUF && pipe_tar_flush(p, err) < 0)
			return -1;
		size_t n = TAR_OUT_BUF - p->tar_len;
		if (n > len)
			n = len;
		memcpy(p->tar_buf + p->tar_len, buf, n);
		p->tar_len += n;
		buf += n;
		len -= n;
	}
	return 0;
}

static la_ssize_t pipe_tar_write(struct archive *a, void *payload, const void *buf, size_t len)
{
	struct pipe *p = payload;
	if (p->dead) {
		archive_set_error(a, ECANCELED, "layer output closed");
		return -1;
	}
	ib_digest_update(p->diff, buf, len);
	p->tar_bytes += len;
	if (p->progress && p->tar_bytes - p->reported >= (1u << 20)) {
		p->reported = p->tar_bytes;
		p->progress(p->tar_bytes, p->payload);
	}
	ib_error *e = NULL;
	if (pipe_tar_out(p, buf, len, &e) < 0) {
		if (p->cb_err == NULL)
			p->cb_err = e;
		else
			ib_error_free(&e);
		archive_set_error(a, EIO, "layer output failed");
		return -1;
	}
	return (la_ssize_t)len;
}

/* Report a failure of the pipeline.  A callback's own record (the blob
 * writer's error, say) explains it better than the generic `local` error
 * of the layer above it or libarchive's message, so it wins. */
static int pipe_fail(struct pipe *p, ib_error **err, ib_error *local, const char *what)
{
	ib_error *e = p->cb_err ? p->cb_err : local;
	p->cb_err = NULL;
	if (e != local)
		ib_error_free(&local);
	if (e == NULL) {
		const char *msg = p->ar ? archive_error_string(p->ar) : NULL;
		return ib_error_setc(err, IB_ERROR, "%s: %s", what,
				     msg ? msg : "tar writer failed");
	}
	int code = e->code;
	if (err && *err == NULL) {
		*err = e;
		ib_error_wrap(err, "%s", what);
	} else {
		ib_error_free(&e);
	}
	return code;
}

static int pipe_error(struct pipe *p, ib_error **err, const char *what)
{
	return pipe_fail(p, err, NULL, what);
}

static void pipe_free(struct pipe *p)
{
	p->dead = true;
	if (p->ar)
		archive_write_free(p->ar);
	p->ar = NULL;
	ib_compressor_free(p->comp);
	p->comp = NULL;
	ib_blob_writer_abort(p->blob);
	p->blob = NULL;
	ib_digest_free(p->diff);
	p->diff = NULL;
	free(p->buf);
	p->buf = NULL;
	free(p->tar_buf);
	p->tar_buf = NULL;
	ib_error_free(&p->cb_err);
}

static int pipe_open(struct pipe *p, ib_store *store, const ib_layer_options *opts, ib_error **err)
{
	memset(p, 0, sizeof(*p));
	p->sde = opts->source_date_epoch;
	p->progress = opts->progress;
	p->payload = opts->payload;
	p->tar_fd = -1;
	int r = 0;
	if (opts->tar_only) {
		if (opts->tar_fd < 0)
			return ib_error_setc(err, IB_EINVALID, "tar_only without a file");
		p->tar_fd = opts->tar_fd;
		p->tar_buf = xmalloc(TAR_OUT_BUF);
	} else if ((r = ib_blob_writer_new(&p->blob, store, err)) < 0) {
		return r;
	}
	p->diff = ib_digest_new();
	p->buf = xmalloc(COPY_CHUNK);
	if (!opts->tar_only) {
		r = ib_compressor_new(&p->comp, opts->compression, opts->threads, opts->level,
				      pipe_sink, p, err);
		if (r < 0)
			goto fail;
	}
	p->ar = archive_write_new();
	if (p->ar == NULL) {
		r = ib_error_setc(err, IB_ERROR, "archive_write_new failed");
		goto fail;
	}
	/* xattrs only as SCHILY.xattr (what Go's archive/tar, i.e. containerd
	 * and docker, reads); names: see the locale notes above. */
	pthread_once(&locales_once, locales_init);
	const char *options =
	    loc_utf8 != (locale_t)0 ? "xattrheader=SCHILY" : "xattrheader=SCHILY,hdrcharset=BINARY";
	if (archive_write_set_format_pax_restricted(p->ar) != ARCHIVE_OK ||
	    archive_write_set_options(p->ar, options) != ARCHIVE_OK ||
	    archive_write_add_filter_none(p->ar) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(p->ar, 1) != ARCHIVE_OK ||
	    archive_write_open(p->ar, p, NULL, pipe_tar_write, NULL) != ARCHIVE_OK) {
		r = pipe_error(p, err, "set up tar writer");
		goto fail;
	}
	return 0;
fail:
	pipe_free(p);
	return r;
}

static int pipe_close(struct pipe *p, ib_layer_result *out, ib_error **err)
{
	if (archive_write_close(p->ar) != ARCHIVE_OK)
		return pipe_error(p, err, "finish tar stream");
	if (p->progress)
		p->progress(p->tar_bytes, p->payload);
	ib_layer_result res;
	memset(&res, 0, sizeof(res));
	if (!p->comp) { /* tar_only */
		if (pipe_tar_flush(p, err) < 0)
			return -1;
		ib_digest_final(p->diff, res.diff_id);
		res.entries = p->entries;
		res.size = (int64_t)p->tar_bytes;
		*out = res;
		return 0;
	}
	ib_error *ce = NULL;
	int r = ib_compressor_finish(p->comp, &ce);
	if (r < 0)
		return pipe_fail(p, err, ce, "compress layer");
	ib_digest_final(p->diff, res.diff_id);
	res.entries = p->entries;
	ib_blob_writer *b = p->blob;
	p->blob = NULL;
	r = ib_blob_writer_commit(b, NULL, -1, res.digest, &res.size, err);
	if (r < 0)
		return ib_error_wrap(err, "store layer blob");
	*out = res;
	return 0;
}

static int pipe_header(struct pipe *p, struct archive_entry *ae, ib_error **err)
{
	int r = archive_write_header(p->ar, ae);
	if (r < ARCHIVE_WARN)
		return pipe_error(p, err, archive_entry_pathname(ae));
	p->entries++;
	return 0;
}

static int pipe_data(struct pipe *p, const void *buf, size_t len, const char *path, ib_error **err)
{
	la_ssize_t n = archive_write_data(p->ar, buf, len);
	if (n < 0 || (size_t)n != len)
		return pipe_error(p, err, path);
	return 0;
}

static int pipe_finish_entry(struct pipe *p, const char *path, ib_error **err)
{
	if (archive_write_finish_entry(p->ar) < ARCHIVE_WARN)
		return pipe_error(p, err, path);
	return 0;
}

static int64_t clamp_mtime(const struct pipe *p, int64_t t)
{
	return t > p->sde ? p->sde : t;
}

/* ---- the writer ---- */

enum entry_kind {
	E_HOST,	 /* an object on the host, read at finish */
	E_DIR,	 /* synthetic directory */
	E_EMPTY, /* synthetic empty file: whiteouts and opaque markers */
};

/* Where host entries come from: the archive path minus its first `skip`
 * bytes (and a '/') is the path below host_base. */
struct src {
	char *host_base;
	size_t skip;
	ib_layer_override ov;
	struct src *next;
};

struct entry {
	struct src *src;	  /* E_HOST */
	const struct entry *link; /* hardlink target, decided at finish */
	size_t seq;		  /* order of addition: the last duplicate wins */
	uint64_t dev, ino;	  /* E_HOST, at add time */
	int64_t uid, gid;	  /* E_DIR */
	uint32_t mode;		  /* E_HOST: st_mode at add time; E_DIR: perms */
	uint32_t nlink;
	uint8_t kind;
	char path[];
};

struct ib_layer_writer {
	ib_store *store;
	ib_layer_options opts;
	struct entry **v;
	size_t n, alloc;
	struct src *srcs;
	size_t seq;
};

int ib_layer_writer_new(ib_layer_writer **out, ib_store *store, const ib_layer_options *opts,
			ib_error **err)
{
	(void)err;
	ib_layer_writer *w = xcalloc(1, sizeof(*w));
	w->store = store;
	if (opts)
		w->opts = *opts;
	else
		w->opts = (ib_layer_options)IB_LAYER_OPTIONS_INIT;
	*out = w;
	return 0;
}

void ib_layer_writer_free(ib_layer_writer *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i]);
	free(w->v);
	while (w->srcs) {
		struct src *s = w->srcs;
		w->srcs = s->next;
		free(s->host_base);
		free(s);
	}
	free(w);
}

static struct entry *push_entry(ib_layer_writer *w, const char *path, enum entry_kind kind)
{
	size_t len = strlen(path);
	struct entry *e = xcalloc(1, sizeof(*e) + len + 1);
	memcpy(e->path, path, len + 1);
	e->kind = (uint8_t)kind;
	e->seq = w->seq++;
	if (w->n == w->alloc) {
		w->alloc = w->alloc ? 2 * w->alloc : 256;
		w->v = xrealloc(w->v, w->alloc * sizeof(*w->v));
	}
	w->v[w->n++] = e;
	return e;
}

static struct src *new_src(ib_layer_writer *w, const char *host_base, size_t skip,
			   const ib_layer_override *ov)
{
	struct src *s = xcalloc(1, sizeof(*s));
	s->host_base = xstrdup(host_base);
	s->skip = skip;
	s->ov = ov ? *ov : (ib_layer_override)IB_LAYER_OVERRIDE_INIT;
	s->next = w->srcs;
	w->srcs = s;
	return s;
}

static void push_host(ib_layer_writer *w, struct src *s, const char *path, const struct stat *st)
{
	struct entry *e = push_entry(w, path, E_HOST);
	e->src = s;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->mode = st->st_mode;
	e->nlink = (uint32_t)st->st_nlink;
}

static char *entry_host_path(const struct entry *e)
{
	const char *rel = e->path + e->src->skip;
	if (*rel == '/')
		rel++;
	return *rel ? ib_path_join(e->src->host_base, rel) : xstrdup(e->src->host_base);
}

int ib_layer_writer_add_path(ib_layer_writer *w, const char *path, const char *host_path,
			     const ib_layer_override *ov, ib_error **err)
{
	cleanup_free char *p = NULL;
	int r = norm_nonempty(path, &p, err);
	if (r < 0)
		return r;
	struct stat st;
	if (lstat(host_path, &st) < 0)
		return ib_error_set(err, errno, "lstat %s", host_path);
	if (S_ISSOCK(st.st_mode))
		return 0;
	push_host(w, new_src(w, host_path, strlen(p), ov), p, &st);
	return 0;
}

struct walk {
	ib_layer_writer *w;
	struct src *src;
	bool upper;	   /* interpret overlayfs whiteouts and opaque dirs */
	char *const *skip; /* normalised archive paths to leave out */
};

static bool walk_skipped(const struct walk *wk, const char *path)
{
	for (size_t i = 0; wk->skip && wk->skip[i]; i++)
		if (strcmp(wk->skip[i], path) == 0)
			return true;
	return false;
}

/* Add the children of host_dir as entries below arch_dir.  Subdirectories
 * are walked after the directory stream is closed, so depth costs no fds. */
static int walk_dir(struct walk *wk, const char *host_dir, const char *arch_dir, ib_error **err)
{
	cleanup_strv char **subdirs = NULL;
	{
		cleanup_dir DIR *d = opendir(host_dir);
		if (d == NULL)
			return ib_error_set(err, errno, "open directory %s", host_dir);
		for (;;) {
			errno = 0;
			struct dirent *de = readdir(d);
			if (de == NULL) {
				if (errno != 0)
					return ib_error_set(err, errno, "read directory %s",
							    host_dir);
				break;
			}
			const char *name = de->d_name;
			if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
				continue;
			cleanup_free char *arch = join_rel(arch_dir, name);
			if (walk_skipped(wk, arch))
				continue;
			struct stat st;
			if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				return ib_error_set(err, errno, "lstat %s/%s", host_dir, name);
			if (S_ISSOCK(st.st_mode))
				continue;
			if (wk->upper && ib_path_is_whiteout(&st)) {
				cleanup_free char *wn = xasprintf(IB_WH_PREFIX "%s", name);
				cleanup_free char *wh = join_rel(arch_dir, wn);
				push_entry(wk->w, wh, E_EMPTY);
				continue;
			}
			push_host(wk->w, wk->src, arch, &st);
			if (S_ISDIR(st.st_mode)) {
				cleanup_free char *host = ib_path_join(host_dir, name);
				if (wk->upper && ib_path_is_opaque(host)) {
					cleanup_free char *op = join_rel(arch, IB_WH_OPAQUE);
					push_entry(wk->w, op, E_EMPTY);
				}
				ib_strv_push(&subdirs, name);
			}
		}
	}
	for (size_t i = 0; subdirs && subdirs[i]; i++) {
		cleanup_free char *host = ib_path_join(host_dir, subdirs[i]);
		cleanup_free char *arch = join_rel(arch_dir, subdirs[i]);
		int r = walk_dir(wk, host, arch, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int add_tree(ib_layer_writer *w, const char *prefix, const char *host_dir,
		    const ib_layer_override *ov, bool upper, char *const *skip, ib_error **err)
{
	cleanup_free char *p = NULL;
	int r = ib_path_clean(prefix, LAYER_PATH, &p, err);
	if (r < 0)
		return r;
	struct stat st;
	if (stat(host_dir, &st) < 0)
		return ib_error_set(err, errno, "stat %s", host_dir);
	if (!S_ISDIR(st.st_mode))
		return ib_error_setc(err, IB_EINVALID, "%s is not a directory", host_dir);
	struct walk wk = {w, new_src(w, host_dir, strlen(p), ov), upper, skip};
	return walk_dir(&wk, host_dir, p, err);
}

int ib_layer_writer_add_tree(ib_layer_writer *w, const char *prefix, const char *host_dir,
			     const ib_layer_override *ov, ib_error **err)
{
	return add_tree(w, prefix, host_dir, ov, false, NULL, err);
}

int ib_layer_writer_add_dir(ib_layer_writer *w, const char *path, uint32_t mode, int64_t uid,
			    int64_t gid, ib_error **err)
{
	cleanup_free char *p = NULL;
	int r = norm_nonempty(path, &p, err);
	if (r < 0)
		return r;
	if (uid < 0 || gid < 0)
		return ib_error_setc(err, IB_EINVALID, "directory %s: negative owner", p);
	struct entry *e = push_entry(w, p, E_DIR);
	e->mode = mode & 07777;
	e->uid = uid;
	e->gid = gid;
	return 0;
}

int ib_layer_writer_add_whiteout(ib_layer_writer *w, const char *path, ib_error **err)
{
	cleanup_free char *p = NULL;
	int r = norm_nonempty(path, &p, err);
	if (r < 0)
		return r;
	char *slash = strrchr(p, '/');
	cleanup_free char *wh = NULL;
	if (slash) {
		*slash = '\0';
		wh = xasprintf("%s/" IB_WH_PREFIX "%s", p, slash + 1);
	} else {
		wh = xasprintf(IB_WH_PREFIX "%s", p);
	}
	push_entry(w, wh, E_EMPTY);
	return 0;
}

int ib_layer_writer_add_opaque(ib_layer_writer *w, const char *dir, ib_error **err)
{
	cleanup_free char *p = NULL;
	int r = ib_path_clean(dir, LAYER_PATH, &p, err);
	if (r < 0)
		return r;
	cleanup_free char *op = join_rel(p, IB_WH_OPAQUE);
	push_entry(w, op, E_EMPTY);
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a;
	const struct entry *y = *(const struct entry *const *)b;
	int c = path_cmp(x->path, y->path);
	if (c != 0)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct inode_ref {
	uint64_t dev, ino;
	size_t idx;
};

static int inode_cmp(const void *a, const void *b)
{
	const struct inode_ref *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Sort, drop earlier duplicates, and point later links of a multiply linked
 * file at the first one in sorted order. */
static void prepare_entries(ib_layer_writer *w)
{
	if (w->n > 1)
		qsort(w->v, w->n, sizeof(*w->v), entry_cmp);
	size_t k = 0;
	for (size_t i = 0; i < w->n; i++) {
		if (i + 1 < w->n && strcmp(w->v[i]->path, w->v[i + 1]->path) == 0) {
			free(w->v[i]);
			continue;
		}
		w->v[k++] = w->v[i];
	}
	w->n = k;

	struct inode_ref *refs = NULL;
	size_t nr = 0;
	for (size_t i = 0; i < w->n; i++) {
		const struct entry *e = w->v[i];
		if (e->kind == E_HOST && S_ISREG(e->mode) && e->nlink > 1) {
			refs = xrealloc(refs, (nr + 1) * sizeof(*refs));
			refs[nr++] = (struct inode_ref){e->dev, e->ino, i};
		}
	}
	if (nr > 1)
		qsort(refs, nr, sizeof(*refs), inode_cmp);
	for (size_t i = 0; i < nr;) {
		size_t j = i + 1;
		while (j < nr && refs[j].dev == refs[i].dev && refs[j].ino == refs[i].ino) {
			w->v[refs[j].idx]->link = w->v[refs[i].idx];
			j++;
		}
		i = j;
	}
	free(refs);
}

static int copy_fd(struct pipe *p, int fd, int64_t size, const char *host, ib_error **err)
{
	int64_t left = size;
	while (left > 0) {
		size_t want = left > (int64_t)COPY_CHUNK ? COPY_CHUNK : (size_t)left;
		ssize_t n = read(fd, p->buf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ib_error_set(err, errno, "read %s", host);
		}
		if (n == 0)
			return ib_error_setc(err, IB_ERROR, "%s shrank while the layer was written",
					     host);
		int r = pipe_data(p, p->buf, (size_t)n, host, err);
		if (r < 0)
			return r;
		left -= n;
	}
	return 0;
}

static int read_symlink(const char *host, size_t hint, char **out, ib_error **err)
{
	size_t size = hint > 0 ? hint + 1 : 256;
	for (;;) {
		char *buf = xmalloc(size);
		ssize_t n = readlink(host, buf, size);
		if (n < 0) {
			int e = errno;
			free(buf);
			return ib_error_set(err, e, "readlink %s", host);
		}
		if ((size_t)n < size) {
			buf[n] = '\0';
			*out = buf;
			return 0;
		}
		free(buf);
		size *= 2;
	}
}

static int write_host_entry(struct pipe *p, const struct entry *e, ib_error **err)
{
	cleanup_free char *host = entry_host_path(e);
	cleanup_close int fd = -1;
	struct stat st;
	bool data = S_ISREG(e->mode) && e->link == NULL;
	if (data) {
		/* O_NONBLOCK: should the file have become a FIFO, don't hang. */
		fd = open(host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0)
			return ib_error_set(err, errno, "open %s", host);
		if (fstat(fd, &st) < 0)
			return ib_error_set(err, errno, "stat %s", host);
		/* the default readahead covers a small file anyway */
		if (st.st_size > (off_t)COPY_CHUNK)
			posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	} else if (lstat(host, &st) < 0) {
		return ib_error_set(err, errno, "lstat %s", host);
	}
	if ((st.st_mode & S_IFMT) != (e->mode & S_IFMT))
		return ib_error_setc(err, IB_ERROR, "%s changed type while the layer was written",
				     host);

	const ib_layer_override *ov = &e->src->ov;
	struct archive_entry *ae = archive_entry_new();
	if (ae == NULL)
		return ib_error_setc(err, IB_ERROR, "out of memory");
	archive_entry_copy_pathname(ae, e->path);
	archive_entry_set_filetype(ae, st.st_mode & S_IFMT);
	uint32_t perm = st.st_mode & 07777;
	if (ov->mode >= 0 && !S_ISLNK(st.st_mode))
		perm = (uint32_t)ov->mode & 07777;
	archive_entry_set_perm(ae, perm);
	archive_entry_set_uid(ae, ov->uid >= 0 ? ov->uid : (int64_t)st.st_uid);
	archive_entry_set_gid(ae, ov->gid >= 0 ? ov->gid : (int64_t)st.st_gid);
	archive_entry_set_mtime(ae, clamp_mtime(p, st.st_mtim.tv_sec), 0);

	int r = 0;
	if (e->link) {
		archive_entry_copy_hardlink(ae, e->link->path);
		archive_entry_set_size(ae, 0);
	} else if (S_ISREG(st.st_mode)) {
		archive_entry_set_size(ae, st.st_size);
	} else if (S_ISLNK(st.st_mode)) {
		cleanup_free char *target = NULL;
		r = read_symlink(host, (size_t)st.st_size, &target, err);
		if (r == 0)
			archive_entry_copy_symlink(ae, target);
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
		archive_entry_set_rdevmajor(ae, major(st.st_rdev));
		archive_entry_set_rdevminor(ae, minor(st.st_rdev));
	}
	if (r == 0)
		r = host_xattrs(fd, host, ae, err);
	if (r == 0)
		r = pipe_header(p, ae, err);
	archive_entry_free(ae);
	if (r == 0 && data)
		r = copy_fd(p, fd, st.st_size, host, err);
	if (r == 0)
		r = pipe_finish_entry(p, e->path, err);
	return r;
}

static int write_synthetic_entry(struct pipe *p, const struct entry *e, ib_error **err)
{
	struct archive_entry *ae = archive_entry_new();
	if (ae == NULL)
		return ib_error_setc(err, IB_ERROR, "out of memory");
	archive_entry_copy_pathname(ae, e->path);
	if (e->kind == E_DIR) {
		archive_entry_set_filetype(ae, AE_IFDIR);
		archive_entry_set_perm(ae, e->mode);
		archive_entry_set_uid(ae, e->uid);
		archive_entry_set_gid(ae, e->gid);
	} else {
		archive_entry_set_filetype(ae, AE_IFREG);
		archive_entry_set_perm(ae, 0644);
		archive_entry_set_uid(ae, 0);
		archive_entry_set_gid(ae, 0);
		archive_entry_set_size(ae, 0);
	}
	archive_entry_set_mtime(ae, p->sde, 0);
	int r = pipe_header(p, ae, err);
	archive_entry_free(ae);
	if (r == 0)
		r = pipe_finish_entry(p, e->path, err);
	return r;
}

int ib_layer_writer_finish(ib_layer_writer *w, ib_layer_result *out, ib_error **err)
{
	prepare_entries(w);
	locale_t prev = locale_enter(true);
	struct pipe p;
	int r = pipe_open(&p, w->store, &w->opts, err);
	if (r < 0) {
		locale_leave(prev);
		ib_layer_writer_free(w);
		return r;
	}
	for (size_t i = 0; i < w->n && r == 0; i++) {
		const struct entry *e = w->v[i];
		r = e->kind == E_HOST ? write_host_entry(&p, e, err)
				      : write_synthetic_entry(&p, e, err);
	}
	if (r == 0)
		r = pipe_close(&p, out, err);
	pipe_free(&p);
	locale_leave(prev);
	ib_layer_writer_free(w);
	if (r < 0)
		return ib_error_wrap(err, "write layer");
	return 0;
}

int ib_layer_from_upper(ib_store *store, const char *upper_dir, char *const *skip,
			const ib_layer_options *opts, ib_layer_result *out, ib_error **err)
{
	cleanup_strv char **nskip = NULL;
	for (size_t i = 0; skip && skip[i]; i++) {
		cleanup_free char *s = NULL;
		int r = ib_path_clean(skip[i], LAYER_PATH, &s, err);
		if (r < 0)
			return r;
		if (s[0] != '\0')
			ib_strv_push(&nskip, s);
	}
	ib_layer_writer *w = NULL;
	int r = ib_layer_writer_new(&w, store, opts, err);
	if (r < 0)
		return r;
	r = add_tree(w, "", upper_dir, NULL, true, nskip, err);
	if (r < 0) {
		ib_layer_writer_free(w);
		return ib_error_wrap(err, "upper dir %s", upper_dir);
	}
	return ib_layer_writer_finish(w, out, err);
}

/* ---- deferred compression ---- */

int ib_layer_compress_fd(ib_store *store, int tar_fd, const ib_layer_options *opts,
			 ib_layer_result *out, ib_error **err)
{
	ib_layer_options o = opts ? *opts : (ib_layer_options)IB_LAYER_OPTIONS_INIT;
	struct pipe p;
	memset(&p, 0, sizeof(p));
	int r = ib_blob_writer_new(&p.blob, store, err);
	if (r < 0)
		return r;
	p.buf = xmalloc(TAR_OUT_BUF);
	r = ib_compressor_new(&p.comp, o.compression, o.threads, o.level, pipe_sink, &p, err);
	int64_t off = 0;
	while (r == 0) {
		ssize_t n = pread(tar_fd, p.buf, TAR_OUT_BUF, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = ib_error_set(err, errno, "read uncompressed layer");
			break;
		}
		if (n == 0)
			break;
		off += n;
		ib_error *e = NULL;
		r = ib_compressor_write(p.comp, p.buf, (size_t)n, &e);
		if (r < 0)
			r = pipe_fail(&p, err, e, "compress layer");
	}
	if (r == 0) {
		ib_error *ce = NULL;
		r = ib_compressor_finish(p.comp, &ce);
		if (r < 0)
			r = pipe_fail(&p, err, ce, "compress layer");
	}
	if (r == 0) {
		ib_blob_writer *b = p.blob;
		p.blob = NULL;
		memset(out, 0, sizeof(*out));
		r = ib_blob_writer_commit(b, NULL, -1, out->digest, &out->size, err);
		if (r < 0)
			ib_error_wrap(err, "store layer blob");
	}
	pipe_free(&p);
	return r;
}

/* ---- import ---- */

static void import_xattrs(struct archive_entry *in, struct archive_entry *ae)
{
	ib_xattr *xs = NULL;
	size_t nx = 0;
	archive_entry_xattr_reset(in);
	const char *name;
	const void *value;
	size_t size;
	while (archive_entry_xattr_next(in, &name, &value, &size) == ARCHIVE_OK) {
		if (name == NULL || !ib_layer_keeps_xattr(name))
			continue;
		void *v = xmalloc(size ? size : 1);
		if (size)
			memcpy(v, value, size);
		xs = xrealloc(xs, (nx + 1) * sizeof(*xs));
		xs[nx++] = (ib_xattr){xstrdup(name), v, size};
	}
	/* sorted, then added in descending order: written ascending */
	if (nx > 1)
		qsort(xs, nx, sizeof(*xs), xattr_cmp);
	for (size_t i = nx; i > 0; i--)
		archive_entry_xattr_add_entry(ae, xs[i - 1].name, xs[i - 1].value, xs[i - 1].size);
	ib_layer_xattrs_free(xs, nx);
}

/* Raw name bytes of an entry read from the input: only under the C locale
 * does libarchive leave them alone. */
static void import_names(struct archive_entry *ie, char **path, char **hardlink, char **symlink)
{
	locale_t prev = locale_enter(false);
	const char *s = archive_entry_pathname(ie);
	*path = s ? xstrdup(s) : NULL;
	s = archive_entry_hardlink(ie);
	*hardlink = s ? xstrdup(s) : NULL;
	s = archive_entry_symlink(ie);
	*symlink = s ? xstrdup(s) : NULL;
	locale_leave(prev);
}

static int import_entry(struct pipe *p, struct archive *in, struct archive_entry *ie,
			ib_error **err)
{
	cleanup_free char *raw = NULL, *raw_link = NULL, *target = NULL;
	import_names(ie, &raw, &raw_link, &target);
	if (raw == NULL)
		return ib_error_setc(err, IB_EINVALID, "tar entry without a name");
	cleanup_free char *path = NULL;
	int r = ib_path_clean(raw, LAYER_PATH, &path, err);
	if (r == 0)
		r = ib_unpack_check_path(path, err);
	if (r < 0)
		return r;
	if (path[0] == '\0')
		return 0; /* the root itself ("./"): not an entry of a layer */

	cleanup_free char *link = NULL;
	if (raw_link) {
		r = norm_nonempty(raw_link, &link, err);
		if (r < 0)
			return ib_error_wrap(err, "hardlink %s", path);
	}
	mode_t type = archive_entry_filetype(ie);
	if (!link && type == AE_IFSOCK)
		return 0;
	if (!link && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFCHR &&
	    type != AE_IFBLK && type != AE_IFIFO)
		return ib_error_setc(err, IB_EINVALID, "%s: unsupported tar entry type 0%o", path,
				     (unsigned)type);

	struct archive_entry *ae = archive_entry_new();
	if (ae == NULL)
		return ib_error_setc(err, IB_ERROR, "out of memory");
	archive_entry_copy_pathname(ae, path);
	archive_entry_set_filetype(ae, link ? AE_IFREG : type);
	archive_entry_set_perm(ae, archive_entry_perm(ie) & 07777);
	archive_entry_set_uid(ae, archive_entry_uid(ie));
	archive_entry_set_gid(ae, archive_entry_gid(ie));
	int64_t mtime = archive_entry_mtime_is_set(ie) ? (int64_t)archive_entry_mtime(ie) : 0;
	archive_entry_set_mtime(ae, clamp_mtime(p, mtime), 0);
	int64_t size = 0;
	if (link) {
		archive_entry_copy_hardlink(ae, link);
		archive_entry_set_size(ae, 0);
	} else if (type == AE_IFREG) {
		size = archive_entry_size(ie);
		if (size < 0)
			r = ib_error_setc(err, IB_EINVALID, "%s: bad size", path);
		archive_entry_set_size(ae, size);
	} else if (type == AE_IFLNK) {
		if (target == NULL)
			r = ib_error_setc(err, IB_EINVALID, "%s: symlink without target", path);
		else
			archive_entry_copy_symlink(ae, target);
	} else if (type == AE_IFCHR || type == AE_IFBLK) {
		archive_entry_set_rdevmajor(ae, archive_entry_rdevmajor(ie));
		archive_entry_set_rdevminor(ae, archive_entry_rdevminor(ie));
	}
	if (r == 0) {
		import_xattrs(ie, ae);
		r = pipe_header(p, ae, err);
	}
	archive_entry_free(ae);
	if (r < 0)
		return r;

	int64_t got = 0;
	while (size > 0 && got < size) {
		la_ssize_t n = archive_read_data(in, p->buf, COPY_CHUNK);
		if (n < 0)
			return ib_error_setc(err, IB_EINVALID, "read %s: %s", path,
					     archive_error_string(in));
		if (n == 0)
			break;
		if ((int64_t)n > size - got)
			n = (la_ssize_t)(size - got);
		r = pipe_data(p, p->buf, (size_t)n, path, err);
		if (r < 0)
			return r;
		got += n;
	}
	if (got != size)
		return ib_error_setc(err, IB_EINVALID, "%s: truncated (%lld of %lld bytes)", path,
				     (long long)got, (long long)size);
	return pipe_finish_entry(p, path, err);
}

int ib_layer_import(ib_store *store, int in_fd, const ib_layer_options *opts, ib_layer_result *out,
		    ib_error **err)
{
	ib_layer_options o = opts ? *opts : (ib_layer_options)IB_LAYER_OPTIONS_INIT;
	struct archive *in = archive_read_new();
	if (in == NULL)
		return ib_error_setc(err, IB_ERROR, "archive_read_new failed");
	int r = 0;
	if (archive_read_support_filter_all(in) < ARCHIVE_WARN ||
	    archive_read_support_format_tar(in) != ARCHIVE_OK ||
	    archive_read_support_format_empty(in) != ARCHIVE_OK ||
	    archive_read_open_fd(in, in_fd, 64 << 10) != ARCHIVE_OK) {
		r = ib_error_setc(err, IB_EINVALID, "read tar: %s", archive_error_string(in));
		archive_read_free(in);
		return r;
	}
	locale_t prev = locale_enter(true);
	struct pipe p;
	r = pipe_open(&p, store, &o, err);
	if (r < 0) {
		locale_leave(prev);
		archive_read_free(in);
		return r;
	}
	for (;;) {
		struct archive_entry *ie = NULL;
		locale_t w = locale_enter(false);
		int ar = archive_read_next_header(in, &ie);
		locale_leave(w);
		if (ar == ARCHIVE_EOF)
			break;
		/* ARCHIVE_WARN: typically a name not in the locale's charset;
		 * the raw bytes are what we want anyway. */
		if (ar < ARCHIVE_WARN) {
			r = ib_error_setc(err, IB_EINVALID, "read tar: %s",
					  archive_error_string(in));
			break;
		}
		r = import_entry(&p, in, ie, err);
		if (r < 0)
			break;
	}
	if (r == 0)
		r = pipe_close(&p, out, err);
	pipe_free(&p);
	locale_leave(prev);
	archive_read_free(in);
	if (r < 0)
		return ib_error_wrap(err, "import layer");
	return 0;
}

/* ---------------------------------------------------------------------- */
/* trees for chroot isolation: a copied root, its snapshot and its diff     */

static bool tree_overlay_xattr(const char *name)
{
	return strncmp(name, "trusted.overlay.", 16) == 0 ||
	       strncmp(name, "user.overlay.", 13) == 0;
}

/* Copy the xattrs of src (an O_PATH-free path) to dst, overlay's aside;
 * namespaces we may not write are skipped, as unpack does. */
static int tree_copy_xattrs(const char *src, const char *dst, ib_error **err)
{
	char names[8192];
	ssize_t n = llistxattr(src, names, sizeof(names));
	if (n <= 0)
		return 0;
	char val[8192];
	for (char *p = names; p < names + n; p += strlen(p) + 1) {
		if (tree_overlay_xattr(p))
			continue;
		ssize_t v = lgetxattr(src, p, val, sizeof(val));
		if (v < 0)
			continue;
		if (lsetxattr(dst, p, val, (size_t)v, 0) < 0 && errno != ENOTSUP &&
		    errno != EOPNOTSUPP && errno != EPERM)
			return ib_error_set(err, errno, "set xattr %s on %s", p, dst);
	}
	return 0;
}

static bool tree_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static bool tree_is_opaque(const char *path)
{
	char v[4];
	static const char *const names[] = {"trusted.overlay.opaque", "user.overlay.opaque"};
	for (size_t i = 0; i < 2; i++) {
		ssize_t n = lgetxattr(path, names[i], v, sizeof(v));
		if (n == 1 && v[0] == 'y')
			return true;
	}
	return false;
}

/* Owner, mode, xattrs and times of src onto the new dst (not dirs' times:
 * those are set after their contents). */
static int tree_copy_meta(const char *src, const struct stat *st, const char *dst, bool times,
			  ib_error **err)
{
	if (lchown(dst, st->st_uid, st->st_gid) < 0)
		return ib_error_set(err, errno, "chown %s", dst);
	if (tree_copy_xattrs(src, dst, err) < 0)
		return -1;
	if (!S_ISLNK(st->st_mode) && chmod(dst, st->st_mode & 07777) < 0)
		return ib_error_set(err, errno, "chmod %s", dst);
	if (times) {
		struct timespec ts[2] = {st->st_atim, st->st_mtim};
		if (utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return ib_error_set(err, errno, "set times of %s", dst);
	}
	return 0;
}

/* A copy of the non-directory src at dst (which does not exist). */
static int tree_copy_node(const char *src, const struct stat *st, const char *dst, ib_error **err)
{
	if (S_ISREG(st->st_mode)) {
		cleanup_close int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (in < 0)
			return ib_error_set(err, errno, "open %s", src);
		cleanup_close int out =
		    open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			return ib_error_set(err, errno, "create %s", dst);
		off_t left = st->st_size;
		while (left > 0) {
			ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
			if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
				      errno == EOPNOTSUPP)) {
				char buf[65536];
				n = read(in, buf, sizeof(buf));
				if (n > 0 && write(out, buf, (size_t)n) != n)
					return ib_error_set(err, errno ? errno : EIO, "write %s",
							    dst);
			}
			if (n < 0)
				return ib_error_set(err, errno, "copy %s", src);
			if (n == 0)
				break;
			left -= n;
		}
	} else if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(src, target, sizeof(target) - 1);
		if (n < 0)
			return ib_error_set(err, errno, "readlink %s", src);
		target[n] = '\0';
		if (symlink(target, dst) < 0)
			return ib_error_set(err, errno, "symlink %s", dst);
	} else if (mknod(dst, st->st_mode & (S_IFMT | 07777), st->st_rdev) < 0) {
		return ib_error_set(err, errno, "create %s", dst);
	}
	return tree_copy_meta(src, st, dst, true, err);
}

static int tree_remove(const char *path, ib_error **err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : ib_error_set(err, errno, "stat %s", path);
	if (S_ISDIR(st.st_mode))
		return ib_rm_rf(path, err);
	if (unlink(path) < 0)
		return ib_error_set(err, errno, "remove %s", path);
	return 0;
}

typedef struct tree_dirtime {
	char *path;
	struct timespec ts[2];
} tree_dirtime;

typedef struct tree_times {
	tree_dirtime *v;
	size_t n, cap;
} tree_times;

static void tree_times_add(tree_times *t, const char *path, const struct stat *st)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 64;
		t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
	}
	t->v[t->n++] = (tree_dirtime){xstrdup(path), {st->st_atim, st->st_mtim}};
}

static void tree_times_apply(tree_times *t)
{
	for (size_t i = t->n; i-- > 0;) {
		utimensat(AT_FDCWD, t->v[i].path, t->v[i].ts, AT_SYMLINK_NOFOLLOW);
		free(t->v[i].path);
	}
	free(t->v);
	memset(t, 0, sizeof(*t));
}

/* Apply one overlay-format layer dir (src) onto the tree dst. */
static int tree_apply(const char *src, const char *dst, tree_times *times, ib_error **err)
{
	cleanup_dir DIR *d = opendir(src);
	if (!d)
		return ib_error_set(err, errno, "open %s", src);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *s = ib_path_join(src, de->d_name);
		cleanup_free char *t = ib_path_join(dst, de->d_name);
		struct stat st, tst;
		if (lstat(s, &st) < 0)
			return ib_error_set(err, errno, "stat %s", s);
		if (tree_is_whiteout(&st)) {
			if (tree_remove(t, err) < 0)
				return -1;
			continue;
		}
		bool exists = lstat(t, &tst) == 0;
		if (S_ISDIR(st.st_mode)) {
			if (exists && (!S_ISDIR(tst.st_mode) || tree_is_opaque(s))) {
				if (tree_remove(t, err) < 0)
					return -1;
				exists = false;
			}
			if (!exists && mkdir(t, 0700) < 0)
				return ib_error_set(err, errno, "mkdir %s", t);
			if (tree_copy_meta(s, &st, t, false, err) < 0)
				return -1;
			tree_times_add(times, t, &st);
			if (tree_apply(s, t, times, err) < 0)
				return -1;
			continue;
		}
		if (exists && tree_remove(t, err) < 0)
			return -1;
		if (tree_copy_node(s, &st, t, err) < 0)
			return -1;
	}
	return 0;
}

int ib_tree_copy_layers(char *const *lowers, const char *root, ib_error **err)
{
	size_t n = 0;
	while (lowers && lowers[n])
		n++;
	tree_times times = {0};
	int rc = 0;
	for (size_t i = n; i-- > 0 && rc == 0;)
		rc = tree_apply(lowers[i], root, &times, err);
	tree_times_apply(&times);
	return rc;
}

/* ---- snapshot ---- */

typedef struct ib_tree_entry {
	char *path; /* relative, no leading '/' */
	dev_t dev;
	ino_t ino;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec mtime, ctime;
	struct timespec btime; /* birth: tells a re-made directory from a reused inode */
} ib_tree_entry;

struct ib_tree_snapshot {
	ib_tree_entry *v;
	size_t n, cap;
	dev_t root_dev;
};

static int tree_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const ib_tree_entry *)a)->path, ((const ib_tree_entry *)b)->path);
}

static int tree_walk(ib_tree_snapshot *s, const char *root, const char *rel, ib_error **err)
{
	cleanup_free char *dir = *rel ? ib_path_join(root, rel) : xstrdup(root);
	cleanup_dir DIR *d = opendir(dir);
	if (!d)
		return ib_error_set(err, errno, "open %s", dir);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char *r = *rel ? ib_path_join(rel, de->d_name) : xstrdup(de->d_name);
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			int e = errno;
			free(r);
			if (e == ENOENT)
				continue;
			return ib_error_set(err, e, "stat %s/%s", dir, de->d_name);
		}
		if (st.st_dev != s->root_dev) { /* a mount */
			free(r);
			continue;
		}
		if (s->n == s->cap) {
			s->cap = s->cap ? 2 * s->cap : 256;
			s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
		}
		struct timespec btime = {0, 0};
		struct statx sx;
		if (statx(dirfd(d), de->d_name, AT_SYMLINK_NOFOLLOW, STATX_BTIME, &sx) == 0 &&
		    (sx.stx_mask & STATX_BTIME))
			btime = (struct timespec){sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec};
		s->v[s->n++] =
		    (ib_tree_entry){r,	       st.st_dev,  st.st_ino,  st.st_mode, st.st_uid,
				    st.st_gid, st.st_mtim, st.st_ctim, btime};
		if (S_ISDIR(st.st_mode) && tree_walk(s, root, r, err) < 0)
			return -1;
	}
	return 0;
}

int ib_tree_snapshot_take(const char *root, ib_tree_snapshot **out, ib_error **err)
{
	*out = NULL;
	struct stat st;
	if (lstat(root, &st) < 0)
		return ib_error_set(err, errno, "stat %s", root);
	ib_tree_snapshot *s = xcalloc(1, sizeof(*s));
	s->root_dev = st.st_dev;
	if (tree_walk(s, root, "", err) < 0) {
		ib_tree_snapshot_free(s);
		return -1;
	}
	qsort(s->v, s->n, sizeof(*s->v), tree_entry_cmp);
	/* Timestamps come from a coarse clock: a change made in the same tick
	 * as the copy would keep its ctime.  Wait until the clock has moved
	 * past every time recorded (a few ms at most). */
	struct timespec latest = {0, 0};
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].ctime.tv_sec > latest.tv_sec ||
		    (s->v[i].ctime.tv_sec == latest.tv_sec &&
		     s->v[i].ctime.tv_nsec > latest.tv_nsec))
			latest = s->v[i].ctime;
	for (int tries = 0; tries < 1000; tries++) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > latest.tv_sec ||
		    (now.tv_sec == latest.tv_sec && now.tv_nsec > latest.tv_nsec))
			break;
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	*out = s;
	return 0;
}

void ib_tree_snapshot_free(ib_tree_snapshot *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].path);
	free(s->v);
	free(s);
}

static const ib_tree_entry *tree_find(const ib_tree_snapshot *s, const char *path)
{
	ib_tree_entry key = {.path = (char *)path};
	return bsearch(&key, s->v, s->n, sizeof(*s->v), tree_entry_cmp);
}

static bool ts_eq(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* ---- diff ---- */

typedef struct tree_diff {
	const char *root, *upper;
	const char *opaque_xattr;
	tree_times times;
	char **made; /* dirs made in upper (sorted insertion not needed) */
} tree_diff;

static bool tree_made(tree_diff *d, const char *rel)
{
	for (size_t i = 0; d->made && d->made[i]; i++)
		if (!strcmp(d->made[i], rel))
			return true;
	return false;
}

/* The dir rel (and its parents) in upper, with root's metadata. */
static int tree_upper_dir(tree_diff *d, const char *rel, ib_error **err)
{
	if (!*rel || tree_made(d, rel))
		return 0;
	cleanup_free char *parent = xstrdup(rel);
	char *slash = strrchr(parent, '/');
	if (slash) {
		*slash = '\0';
		if (tree_upper_dir(d, parent, err) < 0)
			return -1;
	}
	cleanup_free char *src = ib_path_join(d->root, rel);
	cleanup_free char *dst = ib_path_join(d->upper, rel);
	struct stat st;
	if (lstat(src, &st) < 0)
		return ib_error_set(err, errno, "stat %s", src);
	if (mkdir(dst, 0700) < 0 && errno != EEXIST)
		return ib_error_set(err, errno, "mkdir %s", dst);
	if (tree_copy_meta(src, &st, dst, false, err) < 0)
		return -1;
	tree_times_add(&d->times, dst, &st);
	ib_strv_push(&d->made, rel);
	return 0;
}

static int tree_upper_parent(tree_diff *d, const char *rel, ib_error **err)
{
	cleanup_free char *parent = xstrdup(rel);
	char *slash = strrchr(parent, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	return tree_upper_dir(d, parent, err);
}

static int tree_emit_node(tree_diff *d, const char *rel, ib_error **err)
{
	if (tree_upper_parent(d, rel, err) < 0)
		return -1;
	cleanup_free char *src = ib_path_join(d->root, rel);
	cleanup_free char *dst = ib_path_join(d->upper, rel);
	if (link(src, dst) == 0)
		return 0;
	struct stat st;
	if (lstat(src, &st) < 0)
		return ib_error_set(err, errno, "stat %s", src);
	return tree_copy_node(src, &st, dst, err);
}

static int tree_emit_whiteout(tree_diff *d, const char *rel, ib_error **err)
{
	if (tree_upper_parent(d, rel, err) < 0)
		return -1;
	cleanup_free char *dst = ib_path_join(d->upper, rel);
	if (mknod(dst, S_IFCHR | 0, makedev(0, 0)) < 0)
		return ib_error_set(err, errno, "create whiteout %s (needs CAP_MKNOD)", dst);
	return 0;
}

static bool tree_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && path[n] == '/';
}

int ib_tree_diff_to_upper(const char *root, const ib_tree_snapshot *before, const char *upper,
			  const char *opaque_xattr, ib_error **err)
{
	ib_tree_snapshot *after = NULL;
	if (ib_tree_snapshot_take(root, &after, err) < 0)
		return -1;
	tree_diff d = {.root = root, .upper = upper, .opaque_xattr = opaque_xattr};
	int rc = 0;
	const char *fresh = NULL; /* a dir replaced or new: everything below is new */
	for (size_t i = 0; i < after->n && rc == 0; i++) {
		const ib_tree_entry *a = &after->v[i];
		if (fresh && !tree_under(a->path, fresh))
			fresh = NULL;
		const ib_tree_entry *b = fresh ? NULL : tree_find(before, a->path);
		bool adir = S_ISDIR(a->mode);
		if (adir) {
			bool same =
			    b && S_ISDIR(b->mode) && b->ino == a->ino && ts_eq(b->btime, a->btime);
			if (same) {
				if (b->mode != a->mode || b->uid != a->uid || b->gid != a->gid ||
				    !ts_eq(b->mtime, a->mtime))
					rc = tree_upper_dir(&d, a->path, err);
				continue;
			}
			rc = tree_upper_dir(&d, a->path, err);
			if (rc == 0 && b && !fresh) {
				/* replaced: what the lower layers had there is hidden */
				cleanup_free char *dst = ib_path_join(upper, a->path);
				if (setxattr(dst, opaque_xattr, "y", 1, 0) < 0)
					rc = ib_error_set(err, errno, "set %s on %s", opaque_xattr,
							  dst);
			}
			if (!fresh)
				fresh = a->path;
			continue;
		}
		if (b && b->ino == a->ino && (b->mode & S_IFMT) == (a->mode & S_IFMT) &&
		    ts_eq(b->ctime, a->ctime) && ts_eq(b->btime, a->btime))
			continue;
		rc = tree_emit_node(&d, a->path, err);
	}
	/* deletions: the top-most of each deleted subtree, where its parent
	 * is still the same directory */
	const char *gone = NULL;
	for (size_t i = 0; i < before->n && rc == 0; i++) {
		const ib_tree_entry *b = &before->v[i];
		if (gone && tree_under(b->path, gone))
			continue;
		gone = NULL;
		const ib_tree_entry *a = tree_find(after, b->path);
		if (a) {
			if (S_ISDIR(b->mode) &&
			    (!S_ISDIR(a->mode) || a->ino != b->ino || !ts_eq(a->btime, b->btime)))
				gone = b->path; /* replaced: covered above */
			continue;
		}
		gone = b->path;
		rc = tree_emit_whiteout(&d, b->path, err);
	}
	tree_times_apply(&d.times);
	ib_strv_free(d.made);
	ib_tree_snapshot_free(after);
	return rc;
}
