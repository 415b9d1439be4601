/* The local store: an OCI image layout under ROOT/oci plus unpacked layers,
 * temp space and two lock files.  See store.h for the layout and the
 * crash-safety rules; the short version is that every file outside ROOT/tmp
 * only ever appears complete (written in ROOT/tmp, fsync'd, renamed). */
#include "store.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "ref.h"
#include "util.h"

#define DIR_MODE 0755
#define FILE_MODE 0644
/* index.json grows with the tags (a few hundred bytes each); ib_index_parse
 * caps it like any index. */
#define INDEX_MAX_SIZE IB_MAX_MANIFEST_SIZE
#define WRITER_BUF_SIZE (128u << 10)
/* Nested indexes are legal; real images use one level. */
#define MAX_INDEX_DEPTH 4
#define OCI_LAYOUT_JSON "{\"imageLayoutVersion\":\"1.0.0\"}"
/* remote-blobs.json: one small record per layer of lazily tagged images */
#define REMOTE_RECORDS_MAX (64u << 20)

struct ib_store {
	char *root;
	char *layout;	  /* ROOT/oci */
	char *blobs;	  /* ROOT/oci/blobs/sha256 */
	char *index_path; /* ROOT/oci/index.json */
	char *layers;	  /* ROOT/layers */
	char *tmp;	  /* ROOT/tmp */
	char *index_lock; /* ROOT/index.lock */
	char *remote_path; /* ROOT/remote-blobs.json */
	int gc_fd;	  /* ROOT/gc.lock, flock(LOCK_SH) while open */
	ib_store_fetch_fn fetch; /* downloads a remote layer, or NULL */
	void *fetch_payload;
	mode_t fixed_modes[4]; /* modes found (and tightened) at open, 0 = fine */
};

struct ib_blob_writer {
	ib_store *store;
	char *tmp_path;
	int fd;
	ib_digest_ctx *hash;
	int64_t size;
	char *buf;
	size_t buf_len;
};

/* ---------------------------------------------------------------- helpers */

static bool is_hex_string(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

static bool valid_blob_name(const char *name)
{
	return strlen(name) == 64 && is_hex_string(name, 64);
}

/* "sha256:" + a name that passed valid_blob_name. */
static void digest_from_name(char out[IB_DIGEST_BUFLEN], const char *name)
{
	memcpy(out, "sha256:", 7);
	memcpy(out + 7, name, 64);
	out[IB_DIGEST_STRLEN] = '\0';
}

static bool valid_digest(const char *digest)
{
	return digest && ib_digest_validate(digest, NULL) == 0;
}

static const char *desc_ref_name(const ib_descriptor *d)
{
	if (!d->annotations)
		return NULL;
	json_t *v = json_object_get(d->annotations, IB_ANNOT_REF_NAME);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool media_type_is_index(const char *mt)
{
	return mt && (!strcmp(mt, IB_MT_OCI_INDEX) || !strcmp(mt, IB_MT_DOCKER_LIST));
}

static int not_found_image(ib_error **err, const char *name)
{
	cleanup_free char *familiar = ib_ref_familiarize(name);
	return ib_error_setc(err, IB_ENOTFOUND, "image \"%s\" not found in the store", familiar);
}

/* Write buf to a fresh file in ROOT/tmp and rename it over path, so path
 * holds either the old or the new content.  The temp lives in ROOT/tmp (not
 * next to path) so that a kill -9 leaves garbage only there; ROOT/tmp and
 * ROOT/oci are on one filesystem unless somebody mounted them apart, in
 * which case rename gives EXDEV and we fall back to a fixed temp name next
 * to path (callers hold a lock that serialises writers of path). */
static int replace_file(ib_store *s, const char *path, const void *buf, size_t len, ib_error **err)
{
	cleanup_free char *tmp = ib_store_tmp_path(s, "replace");
	cleanup_free char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	const char *base = slash ? slash + 1 : path;
	for (int attempt = 0; attempt < 2; attempt++) {
		cleanup_close int fd =
		    open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
		if (fd < 0)
			return ib_error_set(err, errno, "create %s", tmp);
		if (ib_write_all(fd, buf, len, err) < 0) {
			unlink(tmp);
			return ib_error_wrap(err, "write %s", tmp);
		}
		if (fchmod(fd, FILE_MODE) < 0 || fsync(fd) < 0) {
			int e = errno;
			unlink(tmp);
			return ib_error_set(err, e, "fsync %s", tmp);
		}
		if (rename(tmp, path) == 0)
			return ib_fsync_dir(dir, err);
		int e = errno;
		unlink(tmp);
		if (e != EXDEV || attempt > 0)
			return ib_error_set(err, e, "rename %s to %s", tmp, path);
		free(tmp);
		tmp = xasprintf("%s/.%s.tmp", dir, base);
	}
	return ib_error_setc(err, IB_ERROR, "replace %s", path);
}

/* ------------------------------------------------------------ open / free */

static int store_ensure_layout(ib_store *s, ib_error **err);

/* Unpacked layers keep their setuid bits and run steps their files: the
 * directories that hold them are private to the store's owner (0700, as
 * containers' storage), and so is the root when it is ours to change: a
 * world-traversable store would let any local user run a setuid-root
 * binary of any pulled image.  The OCI layout below stays readable by
 * root's tools (skopeo, umoci, podman).  A store made by an earlier version
 * is fixed here, on first use. */
#define PRIVATE_MODE 0700

/* Never a shared directory such as /tmp, nor someone else's. */
static bool store_root_is_ours(const struct stat *sb)
{
	return S_ISDIR(sb->st_mode) && sb->st_uid == geteuid() && !(sb->st_mode & S_ISVTX);
}

/* sb: path's stat.  Returns the mode found when it was tightened, else 0. */
static mode_t store_make_private(const char *path, const struct stat *sb, bool is_root)
{
	if (!(sb->st_mode & 077))
		return 0;
	if (is_root && !store_root_is_ours(sb))
		return 0;
	if (sb->st_uid != geteuid() || chmod(path, sb->st_mode & 07700 & ~(mode_t)S_ISVTX) < 0)
		return 0;
	return sb->st_mode & 07777;
}

static const char *const store_private_dirs[] = {"", "layers", "tmp", "cache"};

int ib_store_check_permissions(ib_store *s, ib_verify_cb cb, void *payload)
{
	int problems = 0;
	for (size_t i = 0; i < sizeof(store_private_dirs) / sizeof(store_private_dirs[0]); i++) {
		cleanup_free char *p = ib_path_join(s->root, store_private_dirs[i]);
		struct stat sb;
		if (s->fixed_modes[i]) {
			problems++;
			if (cb) {
				cleanup_free char *msg = xasprintf(
				    "mode was %04o (other users could reach unpacked layers, "
				    "setuid binaries included): changed to 0700",
				    (unsigned)s->fixed_modes[i]);
				cb(p, msg, payload);
			}
			continue;
		}
		if (stat(p, &sb) < 0 || !(sb.st_mode & 077))
			continue;
		problems++;
		if (cb) {
			cleanup_free char *msg = xasprintf(
			    "mode %04o lets other users reach unpacked layers (setuid "
			    "binaries included): should be 0700",
			    (unsigned)(sb.st_mode & 07777));
			cb(p, msg, payload);
		}
	}
	return problems;
}

int ib_store_open(ib_store **out, const char *root, ib_error **err)
{
	*out = NULL;
	if (!root || !*root)
		return ib_error_setc(err, IB_EINVALID, "empty store root");
	ib_store *s = xcalloc(1, sizeof(*s));
	s->gc_fd = -1;
	s->root = xstrdup(root);
	s->layout = ib_path_join(root, "oci");
	s->blobs = ib_path_join(s->layout, "blobs/sha256");
	s->index_path = ib_path_join(s->layout, "index.json");
	s->layers = ib_path_join(root, "layers");
	s->tmp = ib_path_join(root, "tmp");
	s->index_lock = ib_path_join(root, "index.lock");
	s->remote_path = ib_path_join(root, "remote-blobs.json");

	struct stat rootst;
	bool new_root = stat(root, &rootst) < 0 && errno == ENOENT;
	if (new_root && ib_mkdir_p(root, PRIVATE_MODE, NULL) == 0)
		chmod(root, PRIVATE_MODE); /* whatever the umask */
	for (size_t i = 0; i < sizeof(store_private_dirs) / sizeof(store_private_dirs[0]); i++) {
		cleanup_free char *p = ib_path_join(root, store_private_dirs[i]);
		/* made only when missing: a cached build tries no write */
		struct stat sb;
		int got = stat(p, &sb);
		if (got < 0 && errno == ENOENT && i > 0 && mkdir(p, PRIVATE_MODE) == 0)
			got = stat(p, &sb);
		if (got == 0)
			s->fixed_modes[i] = store_make_private(p, &sb, i == 0);
	}

	const char *dirs[] = {s->root, s->blobs, s->layers, s->tmp};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		int code = ib_mkdir_p(dirs[i], DIR_MODE, err);
		if (code < 0) {
			ib_error_wrap(err, "open store %s", root);
			ib_store_free(s);
			return code;
		}
	}

	cleanup_free char *gc_path = ib_path_join(root, "gc.lock");
	s->gc_fd = open(gc_path, O_RDWR | O_CREAT | O_CLOEXEC, FILE_MODE);
	if (s->gc_fd < 0 && (errno == EACCES || errno == EROFS))
		s->gc_fd = open(gc_path, O_RDONLY | O_CLOEXEC);
	if (s->gc_fd < 0) {
		int r = ib_error_set(err, errno, "open %s", gc_path);
		ib_store_free(s);
		return r;
	}
	if (ib_flock(s->gc_fd, LOCK_SH) < 0) {
		int r = ib_error_set(err, errno, "lock %s", gc_path);
		ib_store_free(s);
		return r;
	}

	int r = store_ensure_layout(s, err);
	if (r < 0) {
		ib_error_wrap(err, "open store %s", root);
		ib_store_free(s);
		return r;
	}
	*out = s;
	return 0;
}

void ib_store_free(ib_store *s)
{
	if (!s)
		return;
	if (s->gc_fd >= 0)
		close(s->gc_fd);
	free(s->root);
	free(s->layout);
	free(s->blobs);
	free(s->index_path);
	free(s->layers);
	free(s->tmp);
	free(s->index_lock);
	free(s->remote_path);
	free(s);
}

const char *ib_store_root(const ib_store *s)
{
	return s->root;
}

const char *ib_store_layout_dir(const ib_store *s)
{
	return s->layout;
}

char *ib_store_tmp_path(ib_store *s, const char *prefix)
{
	static unsigned long counter;
	unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint32_t)(uintptr_t)&rnd ^ (uint32_t)n;
	return xasprintf("%s/%s-%d-%lu-%08x", s->tmp, prefix && *prefix ? prefix : "tmp",
			 (int)getpid(), n, rnd);
}

/* ------------------------------------------------------------------ blobs */

int ib_blob_writer_new(ib_blob_writer **out, ib_store *s, ib_error **err)
{
	*out = NULL;
	/* the pid marks it as ours for ib_store_tmp_remove_own */
	cleanup_free char *path = xasprintf("%s/blob-%d-XXXXXX", s->tmp, (int)getpid());
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "create temp file in %s", s->tmp);
	ib_blob_writer *w = xcalloc(1, sizeof(*w));
	w->store = s;
	w->fd = fd;
	w->tmp_path = steal_pointer(&path);
	w->hash = ib_digest_new();
	w->buf = xmalloc(WRITER_BUF_SIZE);
	*out = w;
	return 0;
}

static int writer_flush(ib_blob_writer *w, ib_error **err)
{
	if (w->buf_len == 0)
		return 0;
	int r = ib_write_all(w->fd, w->buf, w->buf_len, err);
	if (r < 0)
		return ib_error_wrap(err, "write %s", w->tmp_path);
	w->buf_len = 0;
	return 0;
}

int ib_blob_writer_write(ib_blob_writer *w, const void *data, size_t len, ib_error **err)
{
	if (len == 0)
		return 0;
	ib_digest_update(w->hash, data, len);
	w->size += (int64_t)len;
	if (w->buf_len + len <= WRITER_BUF_SIZE) {
		memcpy(w->buf + w->buf_len, data, len);
		w->buf_len += len;
		return 0;
	}
	int r = writer_flush(w, err);
	if (r < 0)
		return r;
	if (len >= WRITER_BUF_SIZE) {
		r = ib_write_all(w->fd, data, len, err);
		if (r < 0)
			return ib_error_wrap(err, "write %s", w->tmp_path);
		return 0;
	}
	memcpy(w->buf, data, len);
	w->buf_len = len;
	return 0;
}

int64_t ib_blob_writer_size(const ib_blob_writer *w)
{
	return w->size;
}

void ib_blob_writer_abort(ib_blob_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp_path)
		unlink(w->tmp_path);
	ib_digest_free(w->hash);
	free(w->tmp_path);
	free(w->buf);
	free(w);
}

int ib_blob_writer_commit(ib_blob_writer *w, const char *expect_digest, int64_t expect_size,
			  char digest_out[IB_DIGEST_BUFLEN], int64_t *size_out, ib_error **err)
{
	int r;
	if (expect_digest && (r = ib_digest_validate(expect_digest, err)) < 0) {
		ib_blob_writer_abort(w);
		return r;
	}
	if ((r = writer_flush(w, err)) < 0) {
		ib_blob_writer_abort(w);
		return r;
	}
	char digest[IB_DIGEST_BUFLEN];
	ib_digest_final(w->hash, digest);
	if (expect_digest && strcmp(expect_digest, digest) != 0) {
		r = ib_error_setc(err, IB_EDIGEST, "digest mismatch: expected %s, got %s",
				  expect_digest, digest);
		ib_blob_writer_abort(w);
		return r;
	}
	if (expect_digest && expect_size >= 0 && expect_size != w->size) {
		r = ib_error_setc(err, IB_EDIGEST,
				  "size mismatch for %s: expected %lld bytes, got %lld",
				  expect_digest, (long long)expect_size, (long long)w->size);
		ib_blob_writer_abort(w);
		return r;
	}
	if (fchmod(w->fd, FILE_MODE) < 0 || fsync(w->fd) < 0) {
		r = ib_error_set(err, errno, "fsync %s", w->tmp_path);
		ib_blob_writer_abort(w);
		return r;
	}
	ib_store *s = w->store;
	cleanup_free char *dst = ib_store_blob_path(s, digest);
	struct stat st;
	/* Content-addressed: an existing blob of the right size already holds
	 * these bytes (it was renamed into place complete).  A wrong size can
	 * only be damage, which the new copy repairs. */
	if (lstat(dst, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == w->size) {
		ib_blob_writer_abort(w);
	} else {
		if (rename(w->tmp_path, dst) < 0) {
			r = ib_error_set(err, errno, "rename %s to %s", w->tmp_path, dst);
			ib_blob_writer_abort(w);
			return r;
		}
		free(w->tmp_path);
		w->tmp_path = NULL;
		int64_t size = w->size;
		ib_blob_writer_abort(w);
		w = NULL;
		if ((r = ib_fsync_dir(s->blobs, err)) < 0)
			return r;
		st.st_size = size;
	}
	if (digest_out)
		memcpy(digest_out, digest, IB_DIGEST_BUFLEN);
	if (size_out)
		*size_out = (int64_t)st.st_size;
	return 0;
}

int ib_store_blob_put(ib_store *s, const void *data, size_t len, char digest_out[IB_DIGEST_BUFLEN],
		      ib_error **err)
{
	/* small blobs (configs, manifests) are often stored already */
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, data, len);
	cleanup_free char *path = ib_store_blob_path(s, d);
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len) {
		if (digest_out)
			memcpy(digest_out, d, IB_DIGEST_BUFLEN);
		return 0;
	}
	ib_blob_writer *w;
	int r = ib_blob_writer_new(&w, s, err);
	if (r < 0)
		return r;
	if ((r = ib_blob_writer_write(w, data, len, err)) < 0) {
		ib_blob_writer_abort(w);
		return r;
	}
	return ib_blob_writer_commit(w, NULL, -1, digest_out, NULL, err);
}

char *ib_store_blob_path(ib_store *s, const char *digest)
{
	/* Never build a path from an invalid digest ("../x"): give a name that
	 * no blob can have, so opening it fails with ENOENT. */
	if (!valid_digest(digest))
		return ib_path_join(s->blobs, ".invalid-digest");
	return ib_path_join(s->blobs, ib_digest_hex(digest));
}

bool ib_store_blob_exists(ib_store *s, const char *digest)
{
	if (!valid_digest(digest))
		return false;
	cleanup_free char *path = ib_store_blob_path(s, digest);
	struct stat st;
	return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Open a stored blob, never fetching it. */
static int blob_open_local(ib_store *s, const char *digest, int *fd_out, int64_t *size_out,
			   ib_error **err)
{
	*fd_out = -1;
	int r = ib_digest_validate(digest, err);
	if (r < 0)
		return r;
	cleanup_free char *path = ib_store_blob_path(s, digest);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return ib_error_setc(err, IB_ENOTFOUND, "blob %s not found in the store",
					     digest);
		return ib_error_set(err, errno, "open %s", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return ib_error_set(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return ib_error_setc(err, IB_EINVALID, "%s is not a regular file", path);
	if (size_out)
		*size_out = (int64_t)st.st_size;
	*fd_out = ib_steal_fd(&fd);
	return 0;
}

int ib_store_blob_open(ib_store *s, const char *digest, int *fd_out, int64_t *size_out,
		       ib_error **err)
{
	ib_error *e = NULL;
	int r = blob_open_local(s, digest, fd_out, size_out, &e);
	if (r != IB_ENOTFOUND || !ib_store_blob_is_remote(s, digest)) {
		if (r < 0 && err && !*err)
			*err = e;
		else
			ib_error_free(&e);
		return r;
	}
	ib_error_free(&e);
	if ((r = ib_store_blob_fetch(s, digest, err)) < 0)
		return r;
	return blob_open_local(s, digest, fd_out, size_out, err);
}

int ib_store_blob_read(ib_store *s, const char *digest, size_t max, char **out, size_t *len_out,
		       ib_error **err)
{
	*out = NULL;
	cleanup_close int fd = -1;
	int64_t size;
	int r = ib_store_blob_open(s, digest, &fd, &size, err);
	if (r < 0)
		return r;
	if (max && (uint64_t)size > max)
		return ib_error_setc(err, IB_ETOOLARGE,
				     "blob %s is %lld bytes, over the limit of %zu", digest,
				     (long long)size, max);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	r = ib_read_fd(fd, max, &buf, &len, err);
	if (r < 0) {
		ib_error_wrap(err, "read blob %s", digest);
		return r;
	}
	char got[IB_DIGEST_BUFLEN];
	ib_digest_buffer(got, buf, len);
	if (strcmp(got, digest) != 0)
		return ib_error_setc(
		    err, IB_EDIGEST,
		    "corrupt blob in the store: digest mismatch: expected %s, got %s", digest, got);
	*out = steal_pointer(&buf);
	if (len_out)
		*len_out = len;
	return 0;
}

int ib_store_blob_verify(ib_store *s, const char *digest, ib_error **err)
{
	cleanup_close int fd = -1;
	int64_t size;
	int r = ib_store_blob_open(s, digest, &fd, &size, err);
	if (r < 0)
		return r;
	char got[IB_DIGEST_BUFLEN];
	r = ib_digest_fd(got, fd, NULL, err);
	if (r < 0) {
		ib_error_wrap(err, "read blob %s", digest);
		return r;
	}
	if (strcmp(got, digest) != 0)
		return ib_error_setc(
		    err, IB_EDIGEST,
		    "corrupt blob in the store: digest mismatch: expected %s, got %s", digest, got);
	return 0;
}

/* ------------------------------------------------------------ index.json */

static int read_index(ib_store *s, ib_index **out, ib_error **err)
{
	*out = NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	cleanup_close int fd = open(s->index_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		ib_index *idx = xcalloc(1, sizeof(*idx));
		idx->media_type = xstrdup(IB_MT_OCI_INDEX);
		*out = idx;
		return 0;
	}
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", s->index_path);
	int r = ib_read_fd(fd, INDEX_MAX_SIZE, &buf, &len, err);
	if (r < 0) {
		ib_error_wrap(err, "read %s", s->index_path);
		return r;
	}
	r = ib_index_parse(out, buf, len, err);
	if (r < 0) {
		ib_error_wrap(err, "%s", s->index_path);
		return r;
	}
	return 0;
}

static int cmp_index_entries(const void *a, const void *b)
{
	const ib_descriptor *x = a, *y = b;
	const char *nx = desc_ref_name(x), *ny = desc_ref_name(y);
	if (!nx != !ny)
		return nx ? 1 : -1;
	if (nx) {
		int c = strcmp(nx, ny);
		if (c)
			return c;
	}
	return strcmp(x->digest, y->digest);
}

static int write_index(ib_store *s, ib_index *idx, ib_error **err)
{
	/* Sorted by name so the bytes depend on the set of tags only, not on
	 * the order in which concurrent writers got the lock. */
	if (idx->n_manifests > 1)
		qsort(idx->manifests, idx->n_manifests, sizeof(ib_descriptor), cmp_index_entries);
	if (!idx->media_type)
		idx->media_type = xstrdup(IB_MT_OCI_INDEX);
	size_t len = 0;
	cleanup_free char *buf = ib_index_serialize(idx, &len);
	int r = replace_file(s, s->index_path, buf, len, err);
	if (r < 0) {
		ib_error_wrap(err, "update %s", s->index_path);
		return r;
	}
	return 0;
}

/* Read-modify-write of index.json under an exclusive index.lock. */
typedef int (*index_edit_fn)(ib_index *idx, void *payload, ib_error **err);

static int index_update(ib_store *s, index_edit_fn fn, void *payload, ib_error **err)
{
	cleanup_close int lock = open(s->index_lock, O_RDWR | O_CREAT | O_CLOEXEC, FILE_MODE);
	if (lock < 0)
		return ib_error_set(err, errno, "open %s", s->index_lock);
	if (ib_flock(lock, LOCK_EX) < 0)
		return ib_error_set(err, errno, "lock %s", s->index_lock);
	ib_index *idx = NULL;
	int r = read_index(s, &idx, err);
	if (r < 0)
		return r;
	r = fn(idx, payload, err);
	if (r > 0) /* nothing changed */
		r = 0;
	else if (r == 0)
		r = write_index(s, idx, err);
	ib_index_free(idx);
	return r;
	/* the lock is released when `lock` is closed */
}

static int edit_create_if_missing(ib_index *idx, void *payload, ib_error **err)
{
	(void)idx;
	(void)err;
	ib_store *s = payload;
	return ib_file_exists(s->index_path) ? 1 : 0;
}

static int store_ensure_layout(ib_store *s, ib_error **err)
{
	cleanup_free char *layout_file = ib_path_join(s->layout, "oci-layout");
	cleanup_free char *cur = NULL;
	size_t len = 0;
	bool ok = ib_read_file(layout_file, 4096, &cur, &len, NULL) == 0;
	if (!ok) {
		int r = replace_file(s, layout_file, OCI_LAYOUT_JSON, strlen(OCI_LAYOUT_JSON), err);
		if (r < 0)
			return r;
	}
	if (ib_file_exists(s->index_path))
		return 0;
	return index_update(s, edit_create_if_missing, s, err);
}

/* ------------------------------------------------------------------- tags */

static void remove_index_entry(ib_index *idx, size_t i)
{
	ib_descriptor_clear(&idx->manifests[i]);
	memmove(&idx->manifests[i], &idx->manifests[i + 1],
		(idx->n_manifests - i - 1) * sizeof(ib_descriptor));
	idx->n_manifests--;
}

/* Remove every entry named name; returns how many went. */
static size_t remove_named(ib_index *idx, const char *name)
{
	size_t removed = 0;
	for (size_t i = 0; i < idx->n_manifests;) {
		const char *n = desc_ref_name(&idx->manifests[i]);
		if (n && !strcmp(n, name)) {
			remove_index_entry(idx, i);
			removed++;
		} else {
			i++;
		}
	}
	return removed;
}

struct tag_set_args {
	const char *name;
	const ib_descriptor *desc;
};

static int edit_tag_set(ib_index *idx, void *payload, ib_error **err)
{
	(void)err;
	struct tag_set_args *a = payload;
	/* re-tagging with the same target leaves index.json untouched */
	size_t same = 0, named = 0;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const ib_descriptor *d = &idx->manifests[i];
		const char *n = desc_ref_name(d);
		if (!n || strcmp(n, a->name) != 0)
			continue;
		named++;
		if (!strcmp(d->digest, a->desc->digest) && d->size == a->desc->size &&
		    d->media_type && !strcmp(d->media_type, a->desc->media_type))
			same++;
	}
	if (named == 1 && same == 1)
		return 1;
	remove_named(idx, a->name);
	idx->manifests = xrealloc(idx->manifests, (idx->n_manifests + 1) * sizeof(ib_descriptor));
	ib_descriptor *d = &idx->manifests[idx->n_manifests++];
	memset(d, 0, sizeof(*d));
	ib_descriptor_copy(d, a->desc);
	if (!json_is_object(d->annotations)) {
		json_decref(d->annotations);
		d->annotations = json_object();
	}
	json_object_set_new(d->annotations, IB_ANNOT_REF_NAME, json_string(a->name));
	return 0;
}

int ib_store_tag_set(ib_store *s, const char *name, const ib_descriptor *desc, ib_error **err)
{
	if (!name || !*name)
		return ib_error_setc(err, IB_EINVALID, "empty tag name");
	json_t *utf8_check = json_string(name);
	if (!utf8_check)
		return ib_error_setc(err, IB_EINVALID, "tag name is not valid UTF-8");
	json_decref(utf8_check);
	int r = ib_digest_validate(desc->digest, err);
	if (r < 0)
		return r;
	if (!desc->media_type || desc->size < 0)
		return ib_error_setc(err, IB_EINVALID,
				     "tag %s: descriptor lacks media type or size", name);
	if (!ib_store_blob_exists(s, desc->digest))
		return ib_error_setc(err, IB_ENOTFOUND, "tag %s: manifest %s is not in the store",
				     name, desc->digest);
	struct tag_set_args a = {name, desc};
	r = index_update(s, edit_tag_set, &a, err);
	if (r < 0) {
		ib_error_wrap(err, "tag %s", name);
		return r;
	}
	return 0;
}

static int edit_tag_remove(ib_index *idx, void *payload, ib_error **err)
{
	const char *name = payload;
	if (remove_named(idx, name) == 0)
		return not_found_image(err, name);
	return 0;
}

int ib_store_tag_remove(ib_store *s, const char *name, ib_error **err)
{
	if (!name || !*name)
		return ib_error_setc(err, IB_EINVALID, "empty tag name");
	return index_update(s, edit_tag_remove, (void *)name, err);
}

int ib_store_tag_get(ib_store *s, const char *name, ib_descriptor *out, ib_error **err)
{
	memset(out, 0, sizeof(*out));
	ib_index *idx = NULL;
	int r = read_index(s, &idx, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const char *n = desc_ref_name(&idx->manifests[i]);
		if (n && !strcmp(n, name)) {
			ib_descriptor_copy(out, &idx->manifests[i]);
			ib_index_free(idx);
			return 0;
		}
	}
	ib_index_free(idx);
	return not_found_image(err, name);
}

static int cmp_tags(const void *a, const void *b)
{
	const ib_store_tag *x = a, *y = b;
	return strcmp(x->name, y->name);
}

int ib_store_tags(ib_store *s, ib_store_tag **out, size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	ib_index *idx = NULL;
	int r = read_index(s, &idx, err);
	if (r < 0)
		return r;
	ib_store_tag *tags = xcalloc(idx->n_manifests + 1, sizeof(*tags));
	size_t n = 0;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const char *name = desc_ref_name(&idx->manifests[i]);
		if (!name)
			continue;
		tags[n].name = xstrdup(name);
		ib_descriptor_copy(&tags[n].desc, &idx->manifests[i]);
		n++;
	}
	ib_index_free(idx);
	if (n > 1)
		qsort(tags, n, sizeof(*tags), cmp_tags);
	*out = tags;
	*n_out = n;
	return 0;
}

void ib_store_tags_free(ib_store_tag *tags, size_t n)
{
	if (!tags)
		return;
	for (size_t i = 0; i < n; i++) {
		free(tags[i].name);
		ib_descriptor_clear(&tags[i].desc);
	}
	free(tags);
}

/* -------------------------------------------------------------- platforms */

void ib_platform_from_machine(const char *machine, const char **arch, const char **variant)
{
	static const struct {
		const char *machine, *arch, *variant;
	} map[] = {
	    {"x86_64", "amd64", NULL},
	    {"amd64", "amd64", NULL},
	    {"i386", "386", NULL},
	    {"i486", "386", NULL},
	    {"i586", "386", NULL},
	    {"i686", "386", NULL},
	    {"aarch64", "arm64", "v8"},
	    {"arm64", "arm64", "v8"},
	    {"aarch64_be", "arm64", "v8"},
	    {"armv8l", "arm", "v7"},
	    {"armv7l", "arm", "v7"},
	    {"armv7", "arm", "v7"},
	    {"armv7hl", "arm", "v7"},
	    {"armv6l", "arm", "v6"},
	    {"armv6", "arm", "v6"},
	    {"armv5tel", "arm", "v5"},
	    {"armv5l", "arm", "v5"},
	    {"armv5tejl", "arm", "v5"},
	    {"ppc64le", "ppc64le", NULL},
	    {"ppc64", "ppc64", NULL},
	    {"s390x", "s390x", NULL},
	    {"riscv64", "riscv64", NULL},
	    {"mips", "mips", NULL},
	    {"mipsel", "mipsle", NULL},
	    {"mips64", "mips64", NULL},
	    {"mips64el", "mips64le", NULL},
	    {"loongarch64", "loong64", NULL},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (!strcmp(machine, map[i].machine)) {
			*arch = map[i].arch;
			*variant = map[i].variant;
			return;
		}
	}
	*arch = machine;
	*variant = NULL;
}

static struct {
	pthread_once_t once;
	char machine[sizeof(((struct utsname *)0)->machine)];
	const char *arch, *variant;
} host_platform = {PTHREAD_ONCE_INIT, "", NULL, NULL};

static void host_platform_init(void)
{
	struct utsname u;
	if (uname(&u) == 0)
		snprintf(host_platform.machine, sizeof(host_platform.machine), "%s", u.machine);
	ib_platform_from_machine(host_platform.machine, &host_platform.arch,
				 &host_platform.variant);
}

void ib_host_platform(const char **os, const char **arch, const char **variant)
{
	pthread_once(&host_platform.once, host_platform_init);
	if (os)
		*os = "linux";
	if (arch)
		*arch = host_platform.arch;
	if (variant)
		*variant = host_platform.variant;
}

int ib_platform_select(const ib_index *idx, const char *os, const char *arch, const char *variant)
{
	int best = -1, best_score = 0;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const ib_platform *p = &idx->manifests[i].platform;
		if (!p->os || !p->architecture || strcmp(p->os, os) ||
		    strcmp(p->architecture, arch))
			continue;
		int score;
		if (variant && p->variant)
			score = strcmp(variant, p->variant) ? 0 : 3;
		else if (!variant && !p->variant)
			score = 3;
		else if (!p->variant)
			score = 2; /* e.g. arm64 without "v8" */
		else
			score = 1;
		if (score > best_score) {
			best = (int)i;
			best_score = score;
		}
	}
	return best;
}

/* ----------------------------------------------------------------- images */

void ib_image_free(ib_image *img)
{
	if (!img)
		return;
	ib_descriptor_clear(&img->desc);
	ib_manifest_free(img->manifest);
	json_decref(img->config);
	free(img->manifest_raw);
	free(img);
}

static void set_platform_from_config(ib_platform *p, json_t *config)
{
	const char *os = json_string_value(json_object_get(config, "os"));
	const char *arch = json_string_value(json_object_get(config, "architecture"));
	const char *variant = json_string_value(json_object_get(config, "variant"));
	if (!p->os && os)
		p->os = xstrdup(os);
	if (!p->architecture && arch)
		p->architecture = xstrdup(arch);
	if (!p->variant && variant && p->architecture && arch && !strcmp(p->architecture, arch))
		p->variant = xstrdup(variant);
}

struct want_platform {
	const char *os, *arch, *variant;
};

static int load_manifest_blob(ib_store *s, const char *digest, const ib_descriptor *from,
			      const struct want_platform *want, int depth, ib_image **out,
			      ib_error **err)
{
	cleanup_free char *raw = NULL;
	size_t len = 0;
	int r = ib_store_blob_read(s, digest, IB_MAX_MANIFEST_SIZE, &raw, &len, err);
	if (r < 0)
		return r;
	if (from && from->size >= 0 && (uint64_t)from->size != len)
		return ib_error_setc(err, IB_EDIGEST, "manifest %s: expected %lld bytes, got %zu",
				     digest, (long long)from->size, len);
	bool is_index = false;
	if ((r = ib_oci_is_index(raw, len, &is_index, err)) < 0) {
		ib_error_wrap(err, "manifest %s", digest);
		return r;
	}
	if (is_index) {
		if (depth >= MAX_INDEX_DEPTH)
			return ib_error_setc(err, IB_EINVALID, "index %s: nested too deeply",
					     digest);
		ib_index *idx = NULL;
		if ((r = ib_index_parse(&idx, raw, len, err)) < 0) {
			ib_error_wrap(err, "index %s", digest);
			return r;
		}
		int i = ib_platform_select(idx, want->os, want->arch, want->variant);
		if (i < 0) {
			r = ib_error_setc(err, IB_ENOTFOUND, "index %s has no image for %s/%s%s%s",
					  digest, want->os, want->arch, want->variant ? "/" : "",
					  want->variant ? want->variant : "");
			ib_index_free(idx);
			return r;
		}
		r = load_manifest_blob(s, idx->manifests[i].digest, &idx->manifests[i], want,
				       depth + 1, out, err);
		ib_index_free(idx);
		return r;
	}

	ib_image *img = xcalloc(1, sizeof(*img));
	if ((r = ib_manifest_parse(&img->manifest, raw, len, err)) < 0) {
		ib_error_wrap(err, "manifest %s", digest);
		ib_image_free(img);
		return r;
	}
	const ib_descriptor *cd = &img->manifest->config;
	cleanup_free char *cfg = NULL;
	size_t cfg_len = 0;
	r = ib_store_blob_read(s, cd->digest, IB_MAX_CONFIG_SIZE, &cfg, &cfg_len, err);
	if (r == 0 && cd->size >= 0 && (uint64_t)cd->size != cfg_len)
		r = ib_error_setc(err, IB_EDIGEST, "config %s: expected %lld bytes, got %zu",
				  cd->digest, (long long)cd->size, cfg_len);
	if (r == 0)
		r = ib_config_parse(&img->config, cfg, cfg_len, err);
	if (r < 0) {
		ib_error_wrap(err, "image config of %s", digest);
		ib_image_free(img);
		return r;
	}
	size_t n_diff = ib_config_n_diff_ids(img->config);
	if (n_diff != img->manifest->n_layers) {
		r = ib_error_setc(
		    err, IB_EINVALID,
		    "image %s: config lists %zu diff_ids but the manifest has %zu layers", digest,
		    n_diff, img->manifest->n_layers);
		ib_image_free(img);
		return r;
	}

	if (from) {
		ib_descriptor_copy(&img->desc, from);
		if (img->desc.annotations) {
			json_object_del(img->desc.annotations, IB_ANNOT_REF_NAME);
			if (json_object_size(img->desc.annotations) == 0) {
				json_decref(img->desc.annotations);
				img->desc.annotations = NULL;
			}
		}
	} else {
		memcpy(img->desc.digest, digest, IB_DIGEST_BUFLEN);
		img->desc.size = (int64_t)len;
	}
	if (!img->desc.media_type)
		img->desc.media_type = xstrdup(img->manifest->media_type ? img->manifest->media_type
									 : IB_MT_OCI_MANIFEST);
	set_platform_from_config(&img->desc.platform, img->config);
	img->manifest_raw = steal_pointer(&raw);
	img->manifest_len = len;
	*out = img;
	return 0;
}

int ib_store_image_load_digest(ib_store *s, const char *digest, ib_image **out, ib_error **err)
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	return ib_store_image_load_digest_platform(s, digest, os, arch, variant, out, err);
}

int ib_store_image_load_digest_platform(ib_store *s, const char *digest, const char *os,
					const char *arch, const char *variant, ib_image **out,
					ib_error **err)
{
	*out = NULL;
	int r = ib_digest_validate(digest, err);
	if (r < 0)
		return r;
	if (!ib_store_blob_exists(s, digest))
		return ib_error_setc(err, IB_ENOTFOUND, "image \"%s\" not found in the store",
				     digest);
	struct want_platform want = {os, arch, variant};
	return load_manifest_blob(s, digest, NULL, &want, 0, out, err);
}

/* Candidates for a digest prefix: tagged descriptors and the children of
 * tagged indexes (those present), then, when none match, any stored blob
 * that parses as a manifest or index.  Matches go into the JSON object
 * `found` (digest -> true) so duplicates collapse. */
static void prefix_add(json_t *found, const char *digest, const char *hex_prefix)
{
	if (!strncmp(ib_digest_hex(digest), hex_prefix, strlen(hex_prefix)))
		json_object_set_new(found, digest, json_true());
}

static bool blob_is_manifest(ib_store *s, const char *digest, bool *is_index)
{
	cleanup_close int fd = -1;
	int64_t size;
	if (ib_store_blob_open(s, digest, &fd, &size, NULL) < 0 || size > IB_MAX_MANIFEST_SIZE)
		return false;
	cleanup_free char *raw = NULL;
	size_t len;
	if (ib_read_fd(fd, IB_MAX_MANIFEST_SIZE, &raw, &len, NULL) < 0)
		return false;
	bool idx = false;
	if (ib_oci_is_index(raw, len, &idx, NULL) < 0)
		return false;
	if (is_index)
		*is_index = idx;
	if (idx) {
		ib_index *i = NULL;
		if (ib_index_parse(&i, raw, len, NULL) < 0)
			return false;
		ib_index_free(i);
		return true;
	}
	ib_manifest *m = NULL;
	if (ib_manifest_parse(&m, raw, len, NULL) < 0)
		return false;
	ib_manifest_free(m);
	return true;
}

static int find_by_prefix(ib_store *s, const char *hex_prefix, char out[IB_DIGEST_BUFLEN],
			  const char *user_ref, ib_error **err)
{
	json_t *found = json_object();
	ib_store_tag *tags = NULL;
	size_t n = 0;
	int r = ib_store_tags(s, &tags, &n, err);
	if (r < 0) {
		json_decref(found);
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		prefix_add(found, tags[i].desc.digest, hex_prefix);
		if (!media_type_is_index(tags[i].desc.media_type))
			continue;
		cleanup_free char *raw = NULL;
		size_t len;
		ib_index *idx = NULL;
		if (ib_store_blob_read(s, tags[i].desc.digest, IB_MAX_MANIFEST_SIZE, &raw, &len,
				       NULL) < 0 ||
		    ib_index_parse(&idx, raw, len, NULL) < 0)
			continue;
		for (size_t j = 0; j < idx->n_manifests; j++)
			if (ib_store_blob_exists(s, idx->manifests[j].digest))
				prefix_add(found, idx->manifests[j].digest, hex_prefix);
		ib_index_free(idx);
	}
	ib_store_tags_free(tags, n);

	if (json_object_size(found) == 0) {
		cleanup_dir DIR *d = opendir(s->blobs);
		struct dirent *de;
		while (d && (de = readdir(d)) != NULL) {
			if (!valid_blob_name(de->d_name) ||
			    strncmp(de->d_name, hex_prefix, strlen(hex_prefix)) != 0)
				continue;
			char digest[IB_DIGEST_BUFLEN];
			digest_from_name(digest, de->d_name);
			if (blob_is_manifest(s, digest, NULL))
				json_object_set_new(found, digest, json_true());
		}
	}

	size_t count = json_object_size(found);
	if (count == 0) {
		json_decref(found);
		return ib_error_setc(err, IB_ENOTFOUND, "image \"%s\" not found in the store",
				     user_ref);
	}
	if (count > 1) {
		ib_buf b = IB_BUF_INIT;
		const char *key;
		json_t *v;
		size_t k = 0;
		json_object_foreach (found, key, v) {
			if (k++ == 3) {
				ib_buf_appendf(&b, ", ...");
				break;
			}
			ib_buf_appendf(&b, "%s%s", k > 1 ? ", " : "", key);
		}
		r = ib_error_setc(err, IB_EINVALID, "digest prefix \"%s\" is ambiguous: matches %s",
				  user_ref, b.data);
		ib_buf_free(&b);
		json_decref(found);
		return r;
	}
	void *it = json_object_iter(found);
	snprintf(out, IB_DIGEST_BUFLEN, "%s", json_object_iter_key(it));
	json_decref(found);
	return 0;
}

/* "sha256:HEX", "sha256:PREFIX" or a bare hex prefix of >= 4 digits: the hex
 * part, else NULL. */
static const char *digest_like(const char *ref)
{
	const char *hex = strncmp(ref, "sha256:", 7) == 0 ? ref + 7 : ref;
	size_t n = strlen(hex);
	if (n < 4 || n > 64 || !is_hex_string(hex, n))
		return NULL;
	return hex;
}

int ib_store_image_load(ib_store *s, const char *ref, ib_image **out, ib_error **err)
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	return ib_store_image_load_platform(s, ref, os, arch, variant, out, err);
}

int ib_store_image_load_platform(ib_store *s, const char *ref, const char *os, const char *arch,
				 const char *variant, ib_image **out, ib_error **err)
{
	*out = NULL;
	if (!ref || !*ref)
		return ib_error_setc(err, IB_EINVALID, "empty image reference");
	struct want_platform want = {os, arch, variant};
	ib_ref *parsed = NULL;
	ib_error *perr = NULL;
	int r;
	if (ib_ref_parse(&parsed, ref, &perr) == 0) {
		ib_error_free(&perr);
		if (parsed->digest) {
			/* NAME@sha256:... names content; the name is only a hint. */
			char digest[IB_DIGEST_BUFLEN];
			snprintf(digest, sizeof(digest), "%s", parsed->digest);
			cleanup_free char *familiar = ib_ref_familiar(parsed);
			ib_ref_free(parsed);
			if (!ib_store_blob_exists(s, digest))
				return ib_error_setc(err, IB_ENOTFOUND,
						     "image \"%s\" not found in the store",
						     familiar);
			r = load_manifest_blob(s, digest, NULL, &want, 0, out, err);
			if (r < 0)
				ib_error_wrap(err, "image \"%s\"", familiar);
			return r;
		}
		cleanup_free char *full = ib_ref_string(parsed);
		cleanup_free char *familiar = ib_ref_familiar(parsed);
		ib_ref_free(parsed);
		ib_descriptor d;
		ib_error *terr = NULL;
		r = ib_store_tag_get(s, full, &d, &terr);
		if (r == 0) {
			r = load_manifest_blob(s, d.digest, &d, &want, 0, out, err);
			ib_descriptor_clear(&d);
			if (r < 0)
				ib_error_wrap(err, "image \"%s\"", familiar);
			return r;
		}
		if (r != IB_ENOTFOUND) {
			if (err && !*err)
				*err = terr;
			else
				ib_error_free(&terr);
			return r;
		}
		ib_error_free(&terr);
		if (!digest_like(ref))
			return ib_error_setc(err, IB_ENOTFOUND,
					     "image \"%s\" not found in the store", familiar);
	} else if (!digest_like(ref)) {
		r = perr ? perr->code : IB_EINVALID;
		if (err && !*err)
			*err = perr;
		else
			ib_error_free(&perr);
		return r;
	} else {
		ib_error_free(&perr);
	}

	const char *hex = digest_like(ref);
	char digest[IB_DIGEST_BUFLEN];
	if (strlen(hex) == 64) {
		snprintf(digest, sizeof(digest), "sha256:%s", hex);
		if (!ib_store_blob_exists(s, digest))
			return ib_error_setc(err, IB_ENOTFOUND,
					     "image \"%s\" not found in the store", ref);
	} else if ((r = find_by_prefix(s, hex, digest, ref, err)) < 0) {
		return r;
	}
	r = load_manifest_blob(s, digest, NULL, &want, 0, out, err);
	if (r < 0)
		ib_error_wrap(err, "image \"%s\"", ref);
	return r;
}

int ib_store_image_write(ib_store *s, json_t *config, const ib_descriptor *layers, size_t n_layers,
			 json_t *annotations, ib_descriptor *desc_out, ib_error **err)
{
	memset(desc_out, 0, sizeof(*desc_out));
	if (!json_is_object(config))
		return ib_error_setc(err, IB_EINVALID, "image config is not a JSON object");
	size_t n_diff = ib_config_n_diff_ids(config);
	if (n_diff != n_layers)
		return ib_error_setc(err, IB_EINVALID,
				     "image config lists %zu diff_ids but %zu layers were given",
				     n_diff, n_layers);
	for (size_t i = 0; i < n_layers; i++) {
		int r = ib_digest_validate(layers[i].digest, err);
		if (r < 0) {
			ib_error_wrap(err, "layer %zu", i);
			return r;
		}
		if (!layers[i].urls && !ib_store_blob_exists(s, layers[i].digest) &&
		    !ib_store_blob_is_remote(s, layers[i].digest))
			return ib_error_setc(err, IB_ENOTFOUND, "layer %s is not in the store",
					     layers[i].digest);
	}

	size_t cfg_len = 0;
	cleanup_free char *cfg = ib_config_serialize(config, &cfg_len);
	ib_manifest m;
	memset(&m, 0, sizeof(m));
	int r = ib_store_blob_put(s, cfg, cfg_len, m.config.digest, err);
	if (r < 0) {
		ib_error_wrap(err, "store image config");
		return r;
	}
	m.media_type = IB_MT_OCI_MANIFEST;
	m.config.media_type = IB_MT_OCI_CONFIG;
	m.config.size = (int64_t)cfg_len;
	/* The manifest only borrows: the descriptors and annotations stay the
	 * caller's, so m is not freed with ib_manifest_free. */
	m.layers = (ib_descriptor *)layers;
	m.n_layers = n_layers;
	m.annotations =
	    json_is_object(annotations) && json_object_size(annotations) ? annotations : NULL;
	size_t man_len = 0;
	cleanup_free char *man = ib_manifest_serialize(&m, &man_len);
	char digest[IB_DIGEST_BUFLEN];
	if ((r = ib_store_blob_put(s, man, man_len, digest, err)) < 0) {
		ib_error_wrap(err, "store image manifest");
		return r;
	}

	desc_out->media_type = xstrdup(IB_MT_OCI_MANIFEST);
	memcpy(desc_out->digest, digest, IB_DIGEST_BUFLEN);
	desc_out->size = (int64_t)man_len;
	set_platform_from_config(&desc_out->platform, config);
	return 0;
}

/* ---------------------------------------------------------- unpacked layers */

char *ib_store_layer_dir(ib_store *s, const char *diff_id)
{
	if (!valid_digest(diff_id))
		return ib_path_join(s->layers, ".invalid-digest");
	return ib_path_join(s->layers, ib_digest_hex(diff_id));
}

bool ib_store_layer_unpacked(ib_store *s, const char *diff_id)
{
	if (!valid_digest(diff_id))
		return false;
	cleanup_free char *dir = ib_store_layer_dir(s, diff_id);
	struct stat st;
	return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

int ib_store_layer_install(ib_store *s, const char *dir, const char *diff_id, ib_error **err)
{
	cleanup_free char *dest = ib_store_layer_dir(s, diff_id);
	if (ib_store_layer_unpacked(s, diff_id))
		return 0;
	if (rename(dir, dest) < 0 && errno != ENOTEMPTY && errno != EEXIST)
		return ib_error_set(err, errno, "rename %s", dest);
	return 0;
}

/* ------------------------------------------------------ reachability walk */

static json_t *remote_read(ib_store *s);
static int remote_write(ib_store *s, json_t *j, ib_error **err);
static int remote_lock(ib_store *s, ib_error **err);

/* Everything reachable from index.json: manifests, indexes and their
 * children, configs and layers, plus the diff_ids of every image.  Blobs
 * that are referenced but absent go to `missing` (digest -> who refers to
 * it), except index children: a pull stores only the host platform's
 * manifest of a multi-platform index, so absent siblings are normal. */
struct walk {
	ib_store *s;
	json_t *reachable; /* digest -> true */
	json_t *diff_ids;  /* diff_id -> true */
	json_t *missing;   /* digest -> referrer name */
	json_t *records;   /* remote-blobs.json */
	json_t *remote_used; /* absent layers with a remote record -> true */
	bool strict;	   /* fail on a present but unreadable manifest/config */
};

static void walk_missing(struct walk *w, const char *digest, const char *who)
{
	if (!json_object_get(w->missing, digest))
		json_object_set_new(w->missing, digest, json_string(who));
}

/* A present but unreadable manifest or config: in strict mode (prune) the
 * walk stops, since deleting what that image references would lose data;
 * otherwise (verify) it goes on, as verify reports the blob by re-hashing. */
static int walk_bad(struct walk *w, int r, ib_error **e, const char *who, ib_error **err)
{
	if (!w->strict) {
		ib_error_free(e);
		return 0;
	}
	if (err && !*err) {
		*err = *e;
		*e = NULL;
		ib_error_wrap(err, "image \"%s\" is damaged (remove it with rmi or pull it again)",
			      who);
	} else {
		ib_error_free(e);
	}
	return r;
}

static int walk_config(struct walk *w, const char *digest, const char *who, ib_error **err)
{
	if (!ib_store_blob_exists(w->s, digest)) {
		walk_missing(w, digest, who);
		return 0;
	}
	cleanup_free char *cfg = NULL;
	size_t cfg_len = 0;
	json_t *config = NULL;
	ib_error *e = NULL;
	int r = ib_store_blob_read(w->s, digest, IB_MAX_CONFIG_SIZE, &cfg, &cfg_len, &e);
	if (r == 0)
		r = ib_config_parse(&config, cfg, cfg_len, &e);
	if (r < 0)
		return walk_bad(w, r, &e, who, err);
	for (size_t i = 0; i < ib_config_n_diff_ids(config); i++)
		json_object_set_new(w->diff_ids, ib_config_diff_id(config, i), json_true());
	json_decref(config);
	return 0;
}

static int walk_manifest(struct walk *w, const char *digest, const char *who, bool index_child,
			 int depth, ib_error **err)
{
	if (!valid_digest(digest) || json_object_get(w->reachable, digest))
		return 0;
	json_object_set_new(w->reachable, digest, json_true());
	if (!ib_store_blob_exists(w->s, digest)) {
		if (!index_child)
			walk_missing(w, digest, who);
		return 0;
	}
	cleanup_free char *raw = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	bool is_index = false;
	int r = ib_store_blob_read(w->s, digest, IB_MAX_MANIFEST_SIZE, &raw, &len, &e);
	if (r == 0)
		r = ib_oci_is_index(raw, len, &is_index, &e);
	if (r < 0)
		return walk_bad(w, r, &e, who, err);
	if (is_index) {
		if (depth >= MAX_INDEX_DEPTH) {
			r = ib_error_setc(&e, IB_EINVALID, "index %s nested too deeply", digest);
			return walk_bad(w, r, &e, who, err);
		}
		ib_index *idx = NULL;
		if ((r = ib_index_parse(&idx, raw, len, &e)) < 0)
			return walk_bad(w, r, &e, who, err);
		for (size_t i = 0; i < idx->n_manifests && r == 0; i++)
			r = walk_manifest(w, idx->manifests[i].digest, who, true, depth + 1, err);
		ib_index_free(idx);
		return r;
	}
	ib_manifest *m = NULL;
	if ((r = ib_manifest_parse(&m, raw, len, &e)) < 0)
		return walk_bad(w, r, &e, who, err);
	json_object_set_new(w->reachable, m->config.digest, json_true());
	for (size_t i = 0; i < m->n_layers; i++) {
		const ib_descriptor *l = &m->layers[i];
		json_object_set_new(w->reachable, l->digest, json_true());
		if (l->urls || ib_store_blob_exists(w->s, l->digest))
			continue;
		if (json_object_get(w->records, l->digest))
			json_object_set_new(w->remote_used, l->digest, json_true());
		else
			walk_missing(w, l->digest, who);
	}
	r = walk_config(w, m->config.digest, who, err);
	ib_manifest_free(m);
	return r;
}

static int walk_store(struct walk *w, ib_error **err)
{
	ib_index *idx = NULL;
	int r = read_index(w->s, &idx, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < idx->n_manifests && r == 0; i++) {
		const ib_descriptor *d = &idx->manifests[i];
		const char *name = desc_ref_name(d);
		cleanup_free char *who = name ? ib_ref_familiarize(name) : xstrdup(d->digest);
		r = walk_manifest(w, d->digest, who, false, 0, err);
	}
	ib_index_free(idx);
	return r;
}

static void walk_init(struct walk *w, ib_store *s, bool strict)
{
	w->s = s;
	w->reachable = json_object();
	w->diff_ids = json_object();
	w->missing = json_object();
	w->records = remote_read(s);
	w->remote_used = json_object();
	w->strict = strict;
}

static void walk_free(struct walk *w)
{
	json_decref(w->reachable);
	json_decref(w->diff_ids);
	json_decref(w->missing);
	json_decref(w->records);
	json_decref(w->remote_used);
}

/* ------------------------------------------------------------ maintenance */

static bool strv_contains_digest(char **v, const char *hex)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(ib_digest_hex(v[i]), hex))
			return true;
	return false;
}

static int prune_blobs(ib_store *s, struct walk *w, const ib_prune_options *opts,
		       ib_prune_stats *st, ib_error **err)
{
	cleanup_dir DIR *d = opendir(s->blobs);
	if (!d)
		return ib_error_set(err, errno, "open %s", s->blobs);
	struct dirent *de;
	bool removed = false;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (valid_blob_name(de->d_name)) {
			char digest[IB_DIGEST_BUFLEN];
			digest_from_name(digest, de->d_name);
			if (json_object_get(w->reachable, digest) ||
			    strv_contains_digest(opts->keep_digests, de->d_name))
				continue;
		}
		struct stat sb;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!opts->dry_run) {
			if (S_ISDIR(sb.st_mode)) {
				cleanup_free char *p = ib_path_join(s->blobs, de->d_name);
				if (ib_rm_rf(p, err) < 0)
					return ib_error_wrap(err, "prune");
			} else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
				return ib_error_set(err, errno, "remove %s/%s", s->blobs,
						    de->d_name);
			}
			removed = true;
		}
		st->blobs_removed++;
		if (S_ISREG(sb.st_mode))
			st->bytes_removed += (uint64_t)sb.st_size;
	}
	if (removed)
		return ib_fsync_dir(s->blobs, err);
	return 0;
}

static int prune_dir_entries(const char *dir, struct walk *w, char **keep, bool dry_run,
			     uint64_t *count, ib_error **err)
{
	cleanup_dir DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return ib_error_set(err, errno, "open %s", dir);
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (w && valid_blob_name(de->d_name)) {
			char digest[IB_DIGEST_BUFLEN];
			digest_from_name(digest, de->d_name);
			if (json_object_get(w->diff_ids, digest) ||
			    strv_contains_digest(keep, de->d_name))
				continue;
		}
		if (!dry_run) {
			cleanup_free char *p = ib_path_join(dir, de->d_name);
			if (ib_rm_rf(p, err) < 0)
				return ib_error_wrap(err, "prune");
		}
		(*count)++;
	}
	return 0;
}

/* Remote records are only needed for layers tagged images use and the
 * store lacks. */
static int prune_remote_records(ib_store *s, struct walk *w, ib_error **err)
{
	if (json_object_size(w->records) == json_object_size(w->remote_used))
		return 0;
	cleanup_close int lfd = remote_lock(s, err);
	if (lfd < 0)
		return lfd;
	json_t *j = remote_read(s);
	const char *k;
	json_t *v, *tmp;
	json_object_foreach_safe (j, tmp, k, v)
		if (!json_object_get(w->remote_used, k))
			json_object_del(j, k);
	int r = remote_write(s, j, err);
	json_decref(j);
	return r;
}

int ib_store_prune(ib_store *s, const ib_prune_options *opts, ib_prune_stats *stats, ib_error **err)
{
	ib_prune_options defaults = IB_PRUNE_OPTIONS_INIT;
	if (!opts)
		opts = &defaults;
	ib_prune_stats st;
	memset(&st, 0, sizeof(st));
	if (stats)
		*stats = st;

	/* flock cannot upgrade atomically: drop our shared lock, then wait for
	 * every other store user to close theirs.  Nothing of ours is in
	 * flight in between.  Another handle open in this same process would
	 * deadlock us, so callers prune with their only handle. */
	if (ib_flock(s->gc_fd, LOCK_UN) < 0 || ib_flock(s->gc_fd, LOCK_EX) < 0)
		return ib_error_set(err, errno, "lock %s/gc.lock", s->root);

	struct walk w;
	walk_init(&w, s, true);
	int r = walk_store(&w, err);
	if (r == 0)
		r = prune_blobs(s, &w, opts, &st, err);
	if (r == 0)
		r = prune_dir_entries(s->layers, &w, opts->keep_layers, opts->dry_run,
				      &st.layers_removed, err);
	if (r == 0)
		r = prune_dir_entries(s->tmp, NULL, NULL, opts->dry_run, &st.tmp_removed, err);
	for (size_t i = 0; r == 0 && !opts->dry_run && opts->remove_dirs && opts->remove_dirs[i]; i++)
		r = ib_rm_rf(opts->remove_dirs[i], err);
	if (r == 0 && !opts->dry_run)
		r = prune_remote_records(s, &w, err);
	walk_free(&w);

	if (ib_flock(s->gc_fd, LOCK_SH) < 0 && r == 0)
		r = ib_error_set(err, errno, "lock %s/gc.lock", s->root);
	if (stats)
		*stats = st;
	return r;
}

int ib_store_verify(ib_store *s, ib_verify_cb cb, void *payload, ib_error **err)
{
	int problems = 0;
	cleanup_dir DIR *d = opendir(s->blobs);
	if (!d)
		return ib_error_set(err, errno, "open %s", s->blobs);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!valid_blob_name(de->d_name)) {
			problems++;
			if (cb)
				cb(de->d_name, "not a sha256 blob name", payload);
			continue;
		}
		char digest[IB_DIGEST_BUFLEN];
		digest_from_name(digest, de->d_name);
		cleanup_close int fd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		struct stat sb;
		if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
			problems++;
			if (cb)
				cb(digest, "not a readable regular file", payload);
			continue;
		}
		char got[IB_DIGEST_BUFLEN];
		ib_error *e = NULL;
		if (ib_digest_fd(got, fd, NULL, &e) < 0) {
			cleanup_free char *msg = xasprintf("unreadable: %s", ib_error_msg(e));
			ib_error_free(&e);
			problems++;
			if (cb)
				cb(digest, msg, payload);
			continue;
		}
		if (strcmp(got, digest) != 0) {
			cleanup_free char *msg = xasprintf("corrupt: content hashes to %s", got);
			problems++;
			if (cb)
				cb(digest, msg, payload);
		}
	}

	struct walk w;
	walk_init(&w, s, false);
	int r = walk_store(&w, err);
	if (r == 0) {
		const char *key;
		json_t *v;
		json_object_foreach (w.missing, key, v) {
			cleanup_free char *msg =
			    xasprintf("missing (referenced by %s)", json_string_value(v));
			problems++;
			if (cb)
				cb(key, msg, payload);
		}
	}
	walk_free(&w);
	return r < 0 ? r : problems;
}

/* ---- names ---- */

int ib_store_short_name_matches(ib_store *s, const char *short_name, char ***out, ib_error **err)
{
	*out = xcalloc(1, sizeof(char *));
	ib_store_tag *tags = NULL;
	size_t n = 0;
	if (ib_store_tags(s, &tags, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (ib_ref_short_matches(short_name, tags[i].name))
			ib_strv_push(out, tags[i].name);
	ib_store_tags_free(tags, n);
	return 0;
}

typedef struct similar {
	size_t dist;
	char *name;
} similar;

static int similar_cmp(const void *a, const void *b)
{
	const similar *x = a, *y = b;
	if (x->dist != y->dist)
		return x->dist < y->dist ? -1 : 1;
	return strcmp(x->name, y->name);
}

char *ib_store_similar_names(ib_store *s, const char *ref, size_t max)
{
	char *out = NULL;
	ib_store_tag *tags = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	if (ib_store_tags(s, &tags, &n, &e) < 0) {
		ib_error_free(&e);
		return NULL;
	}
	cleanup_free char *want = ib_ref_familiarize(ref);
	similar *c = xcalloc(n + 1, sizeof(*c));
	size_t nc = 0;
	for (size_t i = 0; i < n; i++) {
		char *name = ib_ref_familiarize(tags[i].name);
		/* a typo or two, a registry prefix more or less */
		size_t d = ib_ref_edit_distance(want, name);
		size_t limit = strlen(want) / 4 > 2 ? strlen(want) / 4 : 2;
		const char *slash = strchr(name, '/');
		if (d > limit && slash && ib_ref_edit_distance(want, slash + 1) <= limit)
			d = limit;
		if (d <= limit && strcmp(name, want) != 0)
			c[nc++] = (similar){d, name};
		else
			free(name);
	}
	ib_store_tags_free(tags, n);
	qsort(c, nc, sizeof(*c), similar_cmp);
	for (size_t i = 0; i < nc; i++) {
		if (i < max) {
			char *t = xasprintf("%s%s%s", out ? out : "", out ? ", " : "", c[i].name);
			free(out);
			out = t;
		}
		free(c[i].name);
	}
	free(c);
	return out;
}

/* ------------------------------------------------------------ disk usage */

static __thread uint64_t du_bytes, du_files;

static int du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)flag;
	(void)ftw;
	if (S_ISREG(sb->st_mode) || S_ISLNK(sb->st_mode)) {
		du_bytes += (uint64_t)sb->st_size;
		du_files++;
	}
	return 0;
}

size_t ib_dir_entries(const char *path)
{
	cleanup_dir DIR *d = opendir(path);
	size_t n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

uint64_t ib_dir_usage(const char *path)
{
	du_bytes = 0;
	du_files = 0;
	if (nftw(path, du_cb, 16, FTW_PHYS) < 0)
		return 0;
	return du_bytes;
}

/* Entries of dir with their sizes; which are kept by keep (diff_id -> x). */
static void usage_dir(const char *dir, json_t *keep1, char **keep2, uint64_t *n, uint64_t *bytes,
		      uint64_t *n_free, uint64_t *bytes_free)
{
	cleanup_dir DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *p = ib_path_join(dir, de->d_name);
		uint64_t b = ib_dir_usage(p);
		(*n)++;
		*bytes += b;
		bool kept = false;
		if (keep1 && valid_blob_name(de->d_name)) {
			char digest[IB_DIGEST_BUFLEN];
			digest_from_name(digest, de->d_name);
			kept = json_object_get(keep1, digest) ||
			       strv_contains_digest(keep2, de->d_name);
		}
		if (!kept) {
			(*n_free)++;
			*bytes_free += b;
		}
	}
}

static uint64_t blob_size(ib_store *s, const char *digest)
{
	cleanup_free char *p = ib_store_blob_path(s, digest);
	struct stat sb;
	return p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
}

int ib_store_usage_get(ib_store *s, char **cache_digests, char **cache_diff_ids, ib_store_usage *u,
		       ib_error **err)
{
	memset(u, 0, sizeof(*u));
	ib_index *idx = NULL;
	int r = read_index(s, &idx, err);
	if (r < 0)
		return r;
	/* per image (manifest digest, once): its blobs; per layer: how many
	 * images use it */
	json_t *images = json_object(), *layer_users = json_object();
	u->images = xcalloc(idx->n_manifests + 1, sizeof(*u->images));
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const ib_descriptor *d = &idx->manifests[i];
		const char *name = desc_ref_name(d);
		ib_store_usage_image *im = &u->images[u->n_images++];
		im->name = name ? ib_ref_familiarize(name) : xstrdup("<none>");
		memcpy(im->digest, d->digest, IB_DIGEST_BUFLEN);
		if (json_object_get(images, d->digest))
			continue;
		struct walk w;
		walk_init(&w, s, false);
		ib_error *e = NULL;
		walk_manifest(&w, d->digest, im->name, false, 0, &e);
		ib_error_free(&e);
		json_object_set_new(images, d->digest, json_incref(w.reachable));
		const char *k;
		json_t *v;
		json_object_foreach (w.reachable, k, v) {
			json_t *c = json_object_get(layer_users, k);
			json_object_set_new(layer_users, k,
					    json_integer(c ? json_integer_value(c) + 1 : 1));
		}
		walk_free(&w);
	}
	ib_index_free(idx);
	for (size_t i = 0; i < u->n_images; i++) {
		ib_store_usage_image *im = &u->images[i];
		const char *k;
		json_t *v;
		json_object_foreach (json_object_get(images, im->digest), k, v) {
			uint64_t b = blob_size(s, k);
			im->size += b;
			if (json_integer_value(json_object_get(layer_users, k)) > 1)
				im->shared += b;
			else
				im->unique += b;
		}
	}
	{
		const char *k;
		json_t *v;
		json_object_foreach (layer_users, k, v) {
			uint64_t b = blob_size(s, k);
			u->images_bytes += b;
			if (json_integer_value(v) > 1) {
				u->shared_blobs++;
				u->shared_bytes += b;
			} else {
				u->unique_blobs++;
				u->unique_bytes += b;
			}
		}
	}
	u->n_distinct_images = json_object_size(images);
	/* blobs neither image uses: the step cache's, or nobody's */
	cleanup_dir DIR *d = opendir(s->blobs);
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		if (!valid_blob_name(de->d_name))
			continue;
		char digest[IB_DIGEST_BUFLEN];
		digest_from_name(digest, de->d_name);
		if (json_object_get(layer_users, digest))
			continue;
		uint64_t b = blob_size(s, digest);
		if (strv_contains_digest(cache_digests, de->d_name)) {
			u->cache_blobs++;
			u->cache_bytes += b;
		} else {
			u->unreferenced_blobs++;
			u->unreferenced_bytes += b;
		}
	}
	/* unpacked layers: kept by prune when an image or the cache uses them */
	struct walk w;
	walk_init(&w, s, false);
	ib_error *e = NULL;
	walk_store(&w, &e);
	ib_error_free(&e);
	usage_dir(s->layers, w.diff_ids, cache_diff_ids, &u->unpacked, &u->unpacked_bytes,
		  &u->unpacked_unused, &u->unpacked_unused_bytes);
	{
		const char *k;
		json_t *v;
		json_object_foreach (w.remote_used, k, v) {
			json_t *size = json_object_get(json_object_get(w.records, k), "size");
			u->remote_layers++;
			if (json_integer_value(size) > 0)
				u->remote_bytes += (uint64_t)json_integer_value(size);
		}
	}
	walk_free(&w);
	uint64_t dummy_n = 0, dummy_b = 0;
	usage_dir(s->tmp, NULL, NULL, &u->tmp_entries, &u->tmp_bytes, &dummy_n, &dummy_b);
	json_decref(images);
	json_decref(layer_users);
	return 0;
}

void ib_store_usage_free(ib_store_usage *u)
{
	for (size_t i = 0; i < u->n_images; i++)
		free(u->images[i].name);
	free(u->images);
	memset(u, 0, sizeof(*u));
}

int ib_store_tmp_remove_own(ib_store *s)
{
	char mark[32];
	snprintf(mark, sizeof(mark), "-%d-", (int)getpid());
	cleanup_dir DIR *d = opendir(s->tmp);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)) != NULL) {
		if (!strstr(de->d_name, mark))
			continue;
		cleanup_free char *p = ib_path_join(s->tmp, de->d_name);
		ib_error *e = NULL;
		if (ib_rm_rf(p, &e) == 0)
			n++;
		ib_error_free(&e);
	}
	return n;
}

/* ------------------------------------------------- uncompressed layer sizes */

/* ROOT/cache/layer-sizes.json: blob digest -> bytes of its uncompressed
 * content, filled on first use (decompressing the blob once). */
#define LAYER_SIZES_MAX (16u << 20)

static uint64_t count_uncompressed(ib_store *s, const char *digest, bool *ok)
{
	*ok = false;
	cleanup_close int fd = -1;
	int64_t size = 0;
	ib_error *e = NULL;
	if (blob_open_local(s, digest, &fd, &size, &e) < 0) {
		ib_error_free(&e);
		return 0;
	}
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	uint64_t total = 0;
	struct archive_entry *ent;
	if (archive_read_open_fd(a, fd, 65536) == ARCHIVE_OK &&
	    archive_read_next_header(a, &ent) == ARCHIVE_OK) {
		char *buf = xmalloc(65536);
		la_ssize_t n;
		while ((n = archive_read_data(a, buf, 65536)) > 0)
			total += (uint64_t)n;
		free(buf);
		*ok = n == 0;
	} else if (size == 0) {
		*ok = true;
	}
	archive_read_free(a);
	return total;
}

int ib_store_content_sizes(ib_store *s, const ib_descriptor *layers, size_t n, uint64_t *out,
			   ib_error **err)
{
	(void)err;
	cleanup_free char *path = ib_path_join(s->root, "cache/layer-sizes.json");
	cleanup_free char *text = NULL;
	size_t len = 0;
	ib_error *e = NULL;
	json_t *map = NULL;
	if (ib_read_file(path, LAYER_SIZES_MAX, &text, &len, &e) == 0)
		map = json_loadb(text, len, 0, NULL);
	ib_error_free(&e);
	if (!json_is_object(map)) {
		json_decref(map);
		map = json_object();
	}
	bool changed = false;
	int unknown = 0;
	*out = 0;
	for (size_t i = 0; i < n; i++) {
		const ib_descriptor *d = &layers[i];
		json_t *v = json_object_get(map, d->digest);
		if (json_is_integer(v)) {
			*out += (uint64_t)json_integer_value(v);
			continue;
		}
		/* never downloaded just to be measured */
		if (!ib_store_blob_exists(s, d->digest)) {
			*out += d->size > 0 ? (uint64_t)d->size : 0;
			unknown++;
			continue;
		}
		bool ok = false;
		uint64_t sz = count_uncompressed(s, d->digest, &ok);
		if (!ok) /* unreadable: the compressed size is the best there is */
			sz = (uint64_t)d->size;
		*out += sz;
		if (ok) {
			json_object_set_new(map, d->digest, json_integer((json_int_t)sz));
			changed = true;
		}
	}
	if (changed) {
		char *t = json_dumps(map, JSON_COMPACT | JSON_SORT_KEYS);
		cleanup_free char *dir = ib_path_join(s->root, "cache");
		if (t && ib_mkdir_p(dir, 0700, &e) == 0)
			ib_write_file_atomic(path, t, strlen(t), 0600, &e);
		ib_error_free(&e);
		free(t);
	}
	json_decref(map);
	return unknown;
}

/* ------------------------------------------------------------ remote layers */

void ib_store_remote_clear(ib_store_remote *r)
{
	if (!r)
		return;
	free(r->repository);
	memset(r, 0, sizeof(*r));
}

/* ROOT/remote-blobs.json as an object (empty when missing or unreadable:
 * then no absent layer is remote, and verify says so). */
static json_t *remote_read(ib_store *s)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	json_t *j = NULL;
	if (ib_read_file(s->remote_path, REMOTE_RECORDS_MAX, &text, &len, NULL) == 0)
		j = json_loadb(text, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = json_object();
	}
	return j;
}

static int remote_write(ib_store *s, json_t *j, ib_error **err)
{
	size_t len = 0;
	cleanup_free char *text = ib_json_dump_canonical(j, &len);
	int r = replace_file(s, s->remote_path, text, len, err);
	return r < 0 ? ib_error_wrap(err, "record remote layers") : 0;
}

static int remote_lock(ib_store *s, ib_error **err)
{
	cleanup_free char *p = ib_path_join(s->root, "remote-blobs.lock");
	return ib_lock_file(p, LOCK_EX, err);
}

/* A record as stored: a valid repository "host/path" and size. */
static bool remote_from_json(json_t *v, const char *digest, ib_store_remote *out)
{
	memset(out, 0, sizeof(*out));
	const char *repo = json_string_value(json_object_get(v, "repository"));
	json_t *size = json_object_get(v, "size");
	const char *diff_id = json_string_value(json_object_get(v, "diff_id"));
	if (!valid_digest(digest) || !repo || !strchr(repo, '/') || !json_is_integer(size))
		return false;
	memcpy(out->digest, digest, IB_DIGEST_BUFLEN);
	out->repository = xstrdup(repo);
	out->size = (int64_t)json_integer_value(size);
	if (valid_digest(diff_id))
		memcpy(out->diff_id, diff_id, IB_DIGEST_BUFLEN);
	out->corrupt = json_is_true(json_object_get(v, "corrupt"));
	return true;
}

/* Mark the record of digest corrupt, so that the next build runs the
 * step that made it instead of reusing the registry's copy. */
static int remote_mark_corrupt(ib_store *s, const char *digest, ib_error **err)
{
	cleanup_close int lfd = remote_lock(s, err);
	if (lfd < 0)
		return lfd;
	json_t *j = remote_read(s);
	json_t *v = json_object_get(j, digest);
	int r = 0;
	if (json_is_object(v)) {
		json_object_set_new(v, "corrupt", json_true());
		r = remote_write(s, j, err);
	}
	json_decref(j);
	return r;
}

int ib_store_remote_add(ib_store *s, const ib_store_remote *recs, size_t n, ib_error **err)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!valid_digest(recs[i].digest) || !recs[i].repository ||
		    !strchr(recs[i].repository, '/'))
			return ib_error_setc(err, IB_EINVALID, "invalid remote layer record %s",
					     recs[i].digest);
	cleanup_close int lfd = remote_lock(s, err);
	if (lfd < 0)
		return lfd;
	json_t *j = remote_read(s);
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_pack("{s:s, s:I}", "repository", recs[i].repository, "size",
				      (json_int_t)recs[i].size);
		if (recs[i].diff_id[0])
			json_object_set_new(v, "diff_id", json_string(recs[i].diff_id));
		json_object_set_new(j, recs[i].digest, v);
	}
	int r = remote_write(s, j, err);
	json_decref(j);
	return r;
}

int ib_store_remote_get(ib_store *s, const char *digest, ib_store_remote *out)
{
	memset(out, 0, sizeof(*out));
	if (!valid_digest(digest))
		return IB_ENOTFOUND;
	json_t *j = remote_read(s);
	bool ok = remote_from_json(json_object_get(j, digest), digest, out);
	json_decref(j);
	return ok ? 0 : IB_ENOTFOUND;
}

/* digest is absent and has a remote record; *corrupt: the record says a
 * fetch found it corrupt. */
static bool blob_remote(ib_store *s, const char *digest, bool *corrupt)
{
	*corrupt = false;
	if (!valid_digest(digest) || ib_store_blob_exists(s, digest))
		return false;
	ib_store_remote rec;
	bool ok = ib_store_remote_get(s, digest, &rec) == 0;
	*corrupt = ok && rec.corrupt;
	ib_store_remote_clear(&rec);
	return ok;
}

bool ib_store_blob_remote_corrupt(ib_store *s, const char *digest)
{
	bool corrupt;
	return blob_remote(s, digest, &corrupt) && corrupt;
}

bool ib_store_blob_is_remote(ib_store *s, const char *digest)
{
	bool corrupt;
	return blob_remote(s, digest, &corrupt);
}

void ib_store_set_blob_fetcher(ib_store *s, ib_store_fetch_fn fn, void *payload)
{
	s->fetch = fn;
	s->fetch_payload = fn ? payload : NULL;
}

/* The familiar name of a tag whose image has layer digest, for messages;
 * NULL when none has. */
static char *image_using(ib_store *s, const char *digest)
{
	ib_index *idx = NULL;
	if (read_index(s, &idx, NULL) < 0)
		return NULL;
	char *found = NULL;
	for (size_t i = 0; i < idx->n_manifests && !found; i++) {
		const ib_descriptor *d = &idx->manifests[i];
		cleanup_free char *raw = NULL;
		size_t len = 0;
		ib_manifest *m = NULL;
		bool is_index = true;
		if (blob_is_manifest(s, d->digest, &is_index) && !is_index &&
		    ib_store_blob_read(s, d->digest, IB_MAX_MANIFEST_SIZE, &raw, &len, NULL) == 0 &&
		    ib_manifest_parse(&m, raw, len, NULL) == 0) {
			for (size_t k = 0; k < m->n_layers && !found; k++)
				if (!strcmp(m->layers[k].digest, digest))
					found = desc_ref_name(d)
						    ? ib_ref_familiarize(desc_ref_name(d))
						    : xstrdup(d->digest);
		}
		ib_manifest_free(m);
	}
	ib_index_free(idx);
	return found;
}

int ib_store_layer_content_digest(ib_store *s, const char *digest, char out[IB_DIGEST_BUFLEN],
				  ib_error **err)
{
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = blob_open_local(s, digest, &fd, &size, err);
	if (r < 0)
		return r;
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	ib_digest_ctx *ctx = ib_digest_new();
	struct archive_entry *ent;
	int h = archive_read_open_fd(a, fd, 65536);
	if (h == ARCHIVE_OK)
		h = archive_read_next_header(a, &ent);
	if (h == ARCHIVE_OK || h == ARCHIVE_WARN) {
		cleanup_free char *buf = xmalloc(65536);
		la_ssize_t n;
		while ((n = archive_read_data(a, buf, 65536)) > 0)
			ib_digest_update(ctx, buf, (size_t)n);
		if (n < 0)
			r = ib_error_setc(err, IB_EINVALID, "layer %s: %s", digest,
					  archive_error_string(a));
	} else if (h != ARCHIVE_EOF) {
		r = ib_error_setc(err, IB_EINVALID, "layer %s: %s", digest,
				  archive_error_string(a));
	}
	ib_digest_final(ctx, out);
	ib_digest_free(ctx);
	archive_read_free(a);
	return r;
}

int ib_store_blob_fetch(ib_store *s, const char *digest, ib_error **err)
{
	if (ib_store_blob_exists(s, digest))
		return 0;
	ib_store_remote rec;
	if (ib_store_remote_get(s, digest, &rec) < 0)
		return ib_error_setc(err, IB_ENOTFOUND, "blob %s not found in the store", digest);
	ib_error *e = NULL;
	int r = s->fetch ? s->fetch(s, &rec, s->fetch_payload, &e)
			 : ib_error_setc(&e, IB_ENOTFOUND, "no registry access here");
	if (r == 0 && !ib_store_blob_exists(s, digest))
		r = ib_error_setc(&e, IB_ENOTFOUND, "the download stored nothing");
	char got[IB_DIGEST_BUFLEN];
	if (r == 0 && rec.diff_id[0] &&
	    (r = ib_store_layer_content_digest(s, digest, got, &e)) == 0 &&
	    strcmp(got, rec.diff_id) != 0)
		r = ib_error_setc(&e, IB_EDIGEST, "its content is %s, the image says %s", got,
				  rec.diff_id);
	if (r < 0) {
		/* a blob that does not match its record goes again */
		bool corrupt = r == IB_EDIGEST || r == IB_EINVALID;
		if (corrupt) {
			cleanup_free char *path = ib_store_blob_path(s, digest);
			unlink(path);
			ib_error *me = NULL;
			if (remote_mark_corrupt(s, digest, &me) < 0)
				ib_error_free(&me);
		}
		cleanup_free char *who = image_using(s, digest);
		r = ib_error_setc(err, r,
				  "layer %s of %s is in the cache registry %s and could not be "
				  "fetched: %s%s",
				  digest, who ? who : "an image", rec.repository,
				  e ? ib_error_msg(e) : "unknown error",
				  corrupt ? " (build it again: the step that made it will run)" : "");
	}
	ib_error_free(&e);
	ib_store_remote_clear(&rec);
	return r;
}

int ib_store_image_fetch(ib_store *s, const ib_image *img, size_t *n_fetched, ib_error **err)
{
	if (n_fetched)
		*n_fetched = 0;
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const ib_descriptor *l = &img->manifest->layers[i];
		if (l->urls || !ib_store_blob_is_remote(s, l->digest))
			continue;
		int r = ib_store_blob_fetch(s, l->digest, err);
		if (r < 0)
			return r;
		if (n_fetched)
			(*n_fetched)++;
	}
	return 0;
}

static int cmp_remote(const void *a, const void *b)
{
	return strcmp(((const ib_store_remote *)a)->digest, ((const ib_store_remote *)b)->digest);
}

int ib_store_remote_referenced(ib_store *s, ib_store_remote **out, size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	struct walk w;
	walk_init(&w, s, false);
	int r = walk_store(&w, err);
	if (r == 0) {
		ib_store_remote *v = xcalloc(json_object_size(w.remote_used) + 1, sizeof(*v));
		size_t n = 0;
		const char *k;
		json_t *x;
		json_object_foreach (w.remote_used, k, x)
			if (remote_from_json(json_object_get(w.records, k), k, &v[n]))
				n++;
		qsort(v, n, sizeof(*v), cmp_remote);
		*out = v;
		*n_out = n;
	}
	walk_free(&w);
	return r;
}
