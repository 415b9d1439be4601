/* The one path cleaner and in-root resolver (see path.h). */
#include "path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util.h"

/* ---- the cleaner ---- */

bool ib_path_ends_as_dir(const char *in)
{
	size_t n = strlen(in);
	if (n == 0)
		return false;
	if (in[n - 1] == '/' || !strcmp(in, ".") || !strcmp(in, ".."))
		return true;
	return (n >= 2 && !strcmp(in + n - 2, "/.")) || (n >= 3 && !strcmp(in + n - 3, "/.."));
}

int ib_path_clean(const char *in, unsigned flags, char **out, ib_error **err)
{
	bool absolute = (flags & IB_PATH_ABSOLUTE) || (!(flags & IB_PATH_RELATIVE) && in[0] == '/');
	bool rooted = absolute || (flags & IB_PATH_RELATIVE);
	size_t n = strlen(in);
	/* built without the leading "/"; "." or a slash may be added */
	cleanup_free char *buf = xmalloc(n + 4);
	size_t len = 0;
	size_t keep = 0; /* leading ".." components that cannot be popped */
	for (const char *s = in; *s;) {
		while (*s == '/')
			s++;
		size_t l = strcspn(s, "/");
		if (l == 0)
			break;
		if (l == 2 && s[0] == '.' && s[1] == '.') {
			if (flags & IB_PATH_REFUSE_DOTDOT)
				return ib_error_setc(err, IB_EUNSAFE, "path '%s' contains '..'",
						     in);
			if (len > keep) {
				while (len > keep && buf[len - 1] != '/')
					len--;
				if (len > keep)
					len--;
			} else if (!rooted) {
				if (len)
					buf[len++] = '/';
				memcpy(buf + len, "..", 2);
				len += 2;
				keep = len;
			}
		} else if (!(l == 1 && s[0] == '.')) {
			if (len)
				buf[len++] = '/';
			memcpy(buf + len, s, l);
			len += l;
		}
		s += l;
	}
	buf[len] = '\0';
	char *r;
	if (absolute)
		r = xasprintf("/%s", buf);
	else if (len == 0 && !rooted)
		r = xstrdup(".");
	else
		r = xstrdup(buf);
	size_t rl = strlen(r);
	if ((flags & IB_PATH_KEEP_SLASH) && rl > 0 && r[rl - 1] != '/' && ib_path_ends_as_dir(in)) {
		char *d = xasprintf("%s/", r);
		free(r);
		r = d;
	}
	*out = r;
	return 0;
}

char *ib_path_join_clean(const char *base, const char *rel, unsigned flags)
{
	cleanup_free char *joined = NULL;
	if (rel[0] == '/' || !base)
		joined = xstrdup(rel);
	else
		joined = xasprintf("%s/%s", base, rel);
	char *out = NULL;
	ib_path_clean(joined, flags & ~(unsigned)(IB_PATH_REFUSE_DOTDOT | IB_PATH_KEEP_SLASH), &out,
		      NULL);
	size_t n = strlen(out);
	if ((flags & IB_PATH_KEEP_SLASH) && n > 0 && out[n - 1] != '/' &&
	    ib_path_ends_as_dir(rel)) {
		char *d = xasprintf("%s/", out);
		free(out);
		out = d;
	}
	return out;
}

/* ---- the resolver ---- */

int ib_path_resolve(const ib_path_fs *fs, void *payload, const char *path, unsigned flags,
		    char **out, struct stat *st_out, ib_error **err)
{
	bool image = flags & IB_PATH_IMAGE;
	bool missing_ok = flags & IB_PATH_MISSING_OK;
	if (path[0] == '/' && !image)
		return ib_error_setc(err, IB_EINVALID, "'%s' is absolute; paths in %s are relative",
				     path, fs->name);
	cleanup_free char *pending = xstrdup(path);
	ib_buf done = IB_BUF_INIT; /* resolved so far, symlink-free, no leading "/" */
	ib_buf_append(&done, "", 0);
	size_t depth = 0;		/* components in done */
	size_t missing_from = SIZE_MAX; /* depth at which done stopped existing */
	size_t pos = 0;
	int links = 0;
	int rc = 0;
	struct stat st;

	for (;;) {
		while (pending[pos] == '/')
			pos++;
		if (!pending[pos])
			break;
		size_t len = strcspn(pending + pos, "/");
		cleanup_free char *comp = xstrndup(pending + pos, len);
		pos += len;
		bool slash_follows = pending[pos] == '/';
		const char *q = pending + pos;
		while (*q == '/')
			q++;
		bool last = !*q;
		if (!strcmp(comp, "."))
			continue;
		if (!strcmp(comp, "..")) {
			if (depth == 0) {
				if (image)
					continue;
				rc = ib_error_setc(err, IB_EUNSAFE, "'%s' is outside %s", path,
						   fs->name);
				goto out;
			}
			char *slash = strrchr(done.data, '/');
			done.len = slash ? (size_t)(slash - done.data) : 0;
			done.data[done.len] = '\0';
			depth--;
			if (depth <= missing_from)
				missing_from = SIZE_MAX;
			continue;
		}
		size_t prev = done.len;
		if (done.len)
			ib_buf_append(&done, "/", 1);
		ib_buf_append(&done, comp, len);
		depth++;
		if (missing_from != SIZE_MAX)
			continue; /* below a missing directory: missing too */
		int r = fs->lstat(payload, done.data, &st, err);
		if (r < 0) {
			rc = ib_error_wrap(err, "'%s'", path);
			goto out;
		}
		if (r == 0) {
			if (!missing_ok) {
				rc = ib_error_setc(err, IB_ENOTFOUND, "'%s' not found in %s", path,
						   fs->name);
				goto out;
			}
			missing_from = depth - 1;
			continue;
		}
		if (S_ISLNK(st.st_mode) &&
		    (!last || slash_follows || (flags & IB_PATH_FOLLOW_LAST))) {
			if (++links > IB_PATH_MAX_SYMLINKS) {
				rc = ib_error_setc(err, IB_EINVALID,
						   "'%s': too many levels of symbolic links", path);
				goto out;
			}
			cleanup_free char *target = NULL;
			if (fs->readlink(payload, done.data, &target, err) < 0) {
				rc = ib_error_wrap(err, "'%s'", path);
				goto out;
			}
			if (target[0] == '/') {
				if (!image) {
					rc = ib_error_setc(err, IB_EUNSAFE,
							   "'%s' is outside %s (symlink %s -> %s)",
							   path, fs->name, done.data, target);
					goto out;
				}
				done.len = 0;
				depth = 0;
			} else {
				done.len = prev;
				depth--;
			}
			done.data[done.len] = '\0';
			char *np = xasprintf("%s/%s", target, pending + pos);
			free(pending);
			pending = np;
			pos = 0;
			continue;
		}
		if (!last && !S_ISDIR(st.st_mode)) {
			if (missing_ok)
				rc = ib_error_setc(err, IB_EINVALID, "'%s': /%s is not a directory",
						   path, done.data);
			else
				rc = ib_error_setc(err, IB_ENOTFOUND,
						   "'%s' not found in %s (%s is not a directory)",
						   path, fs->name, done.data);
			goto out;
		}
	}
	if (missing_from != SIZE_MAX) {
		memset(&st, 0, sizeof(st));
	} else {
		int r = fs->lstat(payload, done.data, &st, err);
		if (r < 0) {
			rc = ib_error_wrap(err, "'%s'", path);
			goto out;
		}
		if (r == 0) {
			/* removed while we looked */
			rc = ib_error_setc(err, IB_ENOTFOUND, "'%s' not found in %s", path,
					   fs->name);
			goto out;
		}
	}
	if (st_out)
		*st_out = st;
	if (out)
		*out = ib_buf_steal(&done, NULL);
out:
	ib_buf_free(&done);
	return rc;
}

/* ---- backend: a directory ---- */

/* The parent of rel opened beneath the root (never through a symlink), and
 * rel's last component.  1, 0 when the parent is missing, -1 with *err. */
static int dir_parent(int rootfd, const char *rel, int *pfd, const char **base, ib_error **err)
{
	const char *slash = strrchr(rel, '/');
	if (!slash) {
		*pfd = -1;
		*base = rel;
		return 1;
	}
	cleanup_free char *parent = xstrndup(rel, (size_t)(slash - rel));
	*base = slash + 1;
	*pfd = ib_path_open_in_root(rootfd, parent, O_PATH | O_DIRECTORY, 0, IB_PATH_OPEN_BENEATH);
	if (*pfd >= 0)
		return 1;
	if (errno == ENOENT || errno == ENOTDIR)
		return 0;
	return ib_error_set(err, errno, "open %s", parent);
}

static int dir_lstat(void *payload, const char *rel, struct stat *st, ib_error **err)
{
	const ib_path_dir *d = payload;
	if (!*rel) {
		if (fstat(d->rootfd, st) < 0)
			return ib_error_set(err, errno, "stat the root");
		return 1;
	}
	cleanup_close int pfd = -1;
	const char *base;
	int r = dir_parent(d->rootfd, rel, &pfd, &base, err);
	if (r <= 0)
		return r;
	if (fstatat(pfd >= 0 ? pfd : d->rootfd, base, st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return ib_error_set(err, errno, "stat %s", rel);
	}
	return 1;
}

static int read_link_at(int dfd, const char *base, const char *rel, char **out, ib_error **err)
{
	char target[PATH_MAX];
	ssize_t n = readlinkat(dfd, base, target, sizeof(target) - 1);
	if (n < 0)
		return ib_error_set(err, errno, "readlink %s", rel);
	*out = xstrndup(target, (size_t)n);
	return 0;
}

static int dir_readlink(void *payload, const char *rel, char **out, ib_error **err)
{
	const ib_path_dir *d = payload;
	cleanup_close int pfd = -1;
	const char *base;
	int r = dir_parent(d->rootfd, rel, &pfd, &base, err);
	if (r < 0)
		return r;
	if (r == 0)
		return ib_error_set(err, ENOENT, "readlink %s", rel);
	return read_link_at(pfd >= 0 ? pfd : d->rootfd, base, rel, out, err);
}

const ib_path_fs ib_path_fs_dir = {dir_lstat, dir_readlink, "the directory"};

/* ---- backend: a stack of layer directories ---- */

bool ib_path_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static bool opaque_xattr(const char *path, bool follow)
{
	static const char *const names[] = {"trusted.overlay.opaque", "user.overlay.opaque"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char v[2];
		ssize_t n = follow ? getxattr(path, names[i], v, sizeof(v))
				   : lgetxattr(path, names[i], v, sizeof(v));
		if (n == 1 && v[0] == 'y')
			return true;
	}
	return false;
}

bool ib_path_is_opaque(const char *path)
{
	return opaque_xattr(path, false);
}

static bool is_opaque(int dirfd)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dirfd);
	return opaque_xattr(proc, true);
}

enum { IN_LAYER = 1, NOT_IN_LAYER = 0, HIDDEN = -1, FAILED = -2 };

/* Look for rel in one layer whose directory is root.  IN_LAYER with *pfd
 * (the parent, or -1 for root itself) and *st; NOT_IN_LAYER to look lower;
 * HIDDEN when this layer deletes rel from the lower ones. */
static int layer_find(int root, const char *rel, int *pfd, struct stat *st, ib_error **err)
{
	*pfd = -1;
	if (!*rel) {
		if (fstat(root, st) < 0) {
			ib_error_set(err, errno, "stat a layer's root");
			return FAILED;
		}
		return IN_LAYER;
	}
	cleanup_close int held = -1;
	int dfd = root;
	bool opaque = is_opaque(root);
	const char *p = rel;
	for (;;) {
		size_t n = strcspn(p, "/");
		cleanup_free char *comp = xstrndup(p, n);
		bool last = p[n] == '\0';
		if (fstatat(dfd, comp, st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) {
				ib_error_set(err, errno, "stat %s in a layer", rel);
				return FAILED;
			}
			return opaque ? HIDDEN : NOT_IN_LAYER;
		}
		if (ib_path_is_whiteout(st))
			return HIDDEN;
		if (last) {
			*pfd = held;
			held = -1;
			return IN_LAYER;
		}
		if (!S_ISDIR(st->st_mode))
			return HIDDEN; /* a non-directory here replaces the lower tree */
		int nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			ib_error_set(err, errno, "open %s in a layer", rel);
			return FAILED;
		}
		if (held >= 0)
			close(held);
		held = dfd = nfd;
		/* an opaque directory hides lower layers below it too */
		opaque = opaque || is_opaque(dfd);
		p += n + 1;
	}
}

/* The top-most layer entry for rel: 1 with *root (the layer), *pfd (its
 * parent or -1) and *st; 0 when the union has no rel; -1 with *err. */
static int layers_find(const ib_path_layers *l, const char *rel, int *root, int *pfd,
		       struct stat *st, ib_error **err)
{
	for (size_t i = l->n; i > 0; i--) {
		cleanup_close int fd = -1;
		if (l->open_layer(l->payload, i - 1, &fd, err) < 0)
			return -1;
		int r = layer_find(fd, rel, pfd, st, err);
		if (r == FAILED)
			return -1;
		if (r == HIDDEN)
			return 0;
		if (r == IN_LAYER) {
			*root = fd;
			fd = -1;
			return 1;
		}
	}
	return 0;
}

static int layers_lstat(void *payload, const char *rel, struct stat *st, ib_error **err)
{
	cleanup_close int root = -1, pfd = -1;
	return layers_find(payload, rel, &root, &pfd, st, err);
}

static const char *base_of(const char *rel)
{
	const char *slash = strrchr(rel, '/');
	return slash ? slash + 1 : rel;
}

static int layers_readlink(void *payload, const char *rel, char **out, ib_error **err)
{
	cleanup_close int root = -1, pfd = -1;
	struct stat st;
	int r = layers_find(payload, rel, &root, &pfd, &st, err);
	if (r < 0)
		return r;
	if (r == 0)
		return ib_error_set(err, ENOENT, "readlink %s", rel);
	return read_link_at(pfd >= 0 ? pfd : root, base_of(rel), rel, out, err);
}

const ib_path_fs ib_path_fs_layers = {layers_lstat, layers_readlink, "the image"};

int ib_path_layers_open(const ib_path_layers *l, const char *rel, int flags, int *fd,
			ib_error **err)
{
	cleanup_close int root = -1, pfd = -1;
	struct stat st;
	int r = layers_find(l, rel, &root, &pfd, &st, err);
	if (r < 0)
		return r;
	if (r == 0)
		return ib_error_setc(err, IB_ENOTFOUND, "/%s not found in the image", rel);
	int f = openat(pfd >= 0 ? pfd : root, *rel ? base_of(rel) : ".",
		       flags | O_NOFOLLOW | O_CLOEXEC);
	if (f < 0)
		return ib_error_set(err, errno, "open /%s in the image", rel);
	*fd = f;
	return 0;
}

/* ---- opening inside a root ---- */

int ib_path_open_in_root(int rootfd, const char *rel, int flags, mode_t mode, unsigned how)
{
	struct open_how oh = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0,
	    .resolve = how == IB_PATH_OPEN_IN_ROOT ? RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
						   : RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	for (int tries = 0; tries < 32; tries++) {
		long fd = syscall(SYS_openat2, rootfd, *rel ? rel : ".", &oh, sizeof(oh));
		if (fd >= 0)
			return (int)fd;
		/* EAGAIN: a concurrent rename made the kernel give up; retry. */
		if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
	return -1;
}
