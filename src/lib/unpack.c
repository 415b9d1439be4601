/* Safe layer extraction: see unpack.h for the contract.
 *
 * Every path from the archive is normalised and checked first, then split into
 * PARENT/BASE.  PARENT is opened with openat2(RESOLVE_IN_ROOT) relative to an
 * fd of the destination, so whatever symlinks the tree holds, the lookup stays
 * below it; BASE is a single component that every operation treats with
 * O_NOFOLLOW / AT_SYMLINK_NOFOLLOW / O_EXCL semantics.  We never use
 * archive_write_disk: its path handling is exactly what a hostile layer
 * attacks. */
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include "compress.h"
#include "layer.h"
#include "path.h"
#include "userns.h"
#include "util.h"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* same number on every architecture */
#endif

/* the opaque-dir marker follows where we run: trusted.overlay.* as root of
 * the initial user namespace, user.overlay.* (userxattr) elsewhere */
#define OVERLAY_OPAQUE_XATTR ib_overlay_opaque_xattr()
/* an unmapped id in rootless mode: say which file gives more */
#define UNMAPPED_HINT (errno == EINVAL ? ib_userns_unmapped_hint() : "")
/* Longest part of an entry name quoted in an error message. */
#define NAME_SHOWN "%.512s"

/* ---- a small string -> index hash map (open addressing, FNV-1a) ---- */

typedef struct strmap {
	char **keys;
	size_t *vals;
	size_t cap; /* power of two, or 0 */
	size_t len;
} strmap;

static uint64_t str_hash(const char *s)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(1099511628211);
	}
	return h;
}

/* Slot holding key, or the empty slot where it would go. */
static size_t strmap_slot(const strmap *m, const char *key)
{
	size_t i = (size_t)str_hash(key) & (m->cap - 1);
	while (m->keys[i] && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static bool strmap_get(const strmap *m, const char *key, size_t *val)
{
	if (m->cap == 0)
		return false;
	size_t i = strmap_slot(m, key);
	if (!m->keys[i])
		return false;
	if (val)
		*val = m->vals[i];
	return true;
}

static void strmap_put(strmap *m, const char *key, size_t val)
{
	if ((m->len + 1) * 2 > m->cap) {
		strmap old = *m;
		m->cap = old.cap ? old.cap * 2 : 64;
		m->keys = xcalloc(m->cap, sizeof(char *));
		m->vals = xcalloc(m->cap, sizeof(size_t));
		for (size_t i = 0; i < old.cap; i++) {
			if (!old.keys[i])
				continue;
			size_t j = strmap_slot(m, old.keys[i]);
			m->keys[j] = old.keys[i];
			m->vals[j] = old.vals[i];
		}
		free(old.keys);
		free(old.vals);
	}
	size_t i = strmap_slot(m, key);
	if (!m->keys[i]) {
		m->keys[i] = xstrdup(key);
		m->len++;
	}
	m->vals[i] = val;
}

static void strmap_free(strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

/* ---- unpacker state ---- */

/* Mode and times of a directory, applied once its contents are in place. */
typedef struct dir_meta {
	char *path; /* normalised, "" for the root */
	mode_t mode;
	struct timespec times[2];
} dir_meta;

typedef struct unpacker {
	struct archive *a;
	int rootfd; /* O_PATH of dest_dir */
	ib_whiteout_mode whiteouts;
	bool same_owner;
	uint64_t max_bytes;
	uint64_t declared; /* sum of regular file sizes seen so far */
	ib_unpack_stats stats;
	strmap created;	  /* APPLY mode: paths this layer created or wrote */
	strmap dir_index; /* path -> index in dirs */
	dir_meta *dirs;
	size_t ndirs, dirs_alloc;
	/* The parent directory of the last regular file, kept for the next
	 * one (files come grouped by directory): only regular files use it,
	 * and every other kind of entry drops it first, since it may replace
	 * a directory on the path. */
	char *pcache_path;
	int pcache_fd;
	struct stat pcache_st;
	uid_t euid;
	gid_t egid;
} unpacker;

static void pcache_drop(unpacker *u)
{
	if (u->pcache_fd >= 0)
		close(u->pcache_fd);
	u->pcache_fd = -1;
	free(u->pcache_path);
	u->pcache_path = NULL;
}

static void unpacker_free(unpacker *u)
{
	if (u->rootfd >= 0)
		close(u->rootfd);
	u->rootfd = -1;
	pcache_drop(u);
	strmap_free(&u->created);
	strmap_free(&u->dir_index);
	for (size_t i = 0; i < u->ndirs; i++)
		free(u->dirs[i].path);
	free(u->dirs);
	u->dirs = NULL;
	u->ndirs = u->dirs_alloc = 0;
}

/* Only an opaque marker in APPLY mode needs to know what this layer made;
 * OVERLAY mode does not pay for the set. */
static void record_created(unpacker *u, const char *path)
{
	if (u->whiteouts == IB_WHITEOUT_APPLY)
		strmap_put(&u->created, path, 0);
}

/* ---- names ---- */

/* Turn a tar name into "a/b/c": leading "./", empty and "." components are
 * dropped; absolute names, ".." and empty names are refused.  *out is "" for
 * the root itself ("." or "./"). */
static int normalize_name(const char *what, const char *name, char **out, ib_error **err)
{
	if (name == NULL || *name == '\0')
		return ib_error_setc(err, IB_EUNSAFE, "unsafe %s in layer: empty name", what);
	if (name[0] == '/')
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe %s in layer: absolute path \"" NAME_SHOWN "\"", what,
				     name);
	ib_error *e = NULL;
	if (ib_path_clean(name, IB_PATH_RELATIVE | IB_PATH_REFUSE_DOTDOT, out, &e) < 0) {
		ib_error_free(&e);
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe %s in layer: \"" NAME_SHOWN "\" contains \"..\"", what,
				     name);
	}
	return 0;
}

int ib_unpack_check_path(const char *path, ib_error **err)
{
	size_t len = strlen(path), longest = 0;
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, "/");
		if (n > longest)
			longest = n;
		p += n;
		if (*p == '/')
			p++;
	}
	if (len + 2 > PATH_MAX)
		return ib_error_setc(err, IB_EINVALID,
				     "layer path \"%.64s...\" is %zu bytes long, over the limit "
				     "of %d",
				     path, len, PATH_MAX - 2);
	if (longest > NAME_MAX)
		return ib_error_setc(err, IB_EINVALID,
				     "layer path \"%.64s...\" has a name of %zu bytes, over the "
				     "limit of %d",
				     path, longest, NAME_MAX);
	return 0;
}

/* Split "a/b/c" into "a/b" and "c" (parent "" for a top-level name). */
static void split_path(const char *path, char **parent, const char **base)
{
	const char *slash = strrchr(path, '/');
	if (slash) {
		*parent = xstrndup(path, (size_t)(slash - path));
		*base = slash + 1;
	} else {
		*parent = xstrdup("");
		*base = path;
	}
}

static char *join_rel(const char *dir, const char *name)
{
	return *dir ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

/* ---- in-root primitives ---- */

/* openat2 below the root: absolute symlinks and ".." are clamped to it, magic
 * /proc links refused.  Returns an fd or -1 with errno. */
static int open_in_root(const unpacker *u, const char *path, int flags)
{
	return ib_path_open_in_root(u->rootfd, path, flags, 0, IB_PATH_OPEN_IN_ROOT);
}

/* chmod of dirfd/name that never follows a symlink at name. */
static int chmod_nofollow(int dirfd, const char *name, mode_t mode)
{
	if (syscall(SYS_fchmodat2, dirfd, name, mode, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	/* Kernels before 6.6, or a seccomp filter that does not know fchmodat2. */
	if (errno != ENOSYS && errno != EPERM)
		return -1;
	cleanup_close int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	if (S_ISLNK(st.st_mode)) {
		errno = EOPNOTSUPP;
		return -1;
	}
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return chmod(proc, mode);
}

/* Remove dirfd/name whatever it is, recursively, never following symlinks.
 * A missing name is not an error. */
static int remove_at(int dirfd, const char *name, const char *shown, ib_error **err);

/* Remove the children of directory fd dfd (path dpath relative to the root).
 * When keep is non-NULL, children whose path is in it survive. */
static int clear_dir(int dfd, const char *dpath, const strmap *keep, ib_error **err)
{
	int dup = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dup < 0)
		return ib_error_set(err, errno, "open directory /" NAME_SHOWN, dpath);
	DIR *d = fdopendir(dup);
	if (!d) {
		int e = errno;
		close(dup);
		return ib_error_set(err, e, "read directory /" NAME_SHOWN, dpath);
	}
	/* Collect first: removing while iterating may skip entries. */
	cleanup_strv char **names = NULL;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ib_strv_push(&names, de->d_name);
	}
	int rerr = errno;
	closedir(d);
	if (rerr != 0)
		return ib_error_set(err, rerr, "read directory /" NAME_SHOWN, dpath);
	for (size_t i = 0; names && names[i]; i++) {
		cleanup_free char *child = join_rel(dpath, names[i]);
		if (keep && strmap_get(keep, child, NULL))
			continue;
		int r = remove_at(dfd, names[i], child, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int remove_at(int dirfd, const char *name, const char *shown, ib_error **err)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return ib_error_set(err, errno, "stat " NAME_SHOWN, shown);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
			return ib_error_set(err, errno, "remove " NAME_SHOWN, shown);
		return 0;
	}
	{
		cleanup_close int dfd =
		    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return ib_error_set(err, errno, "open directory " NAME_SHOWN, shown);
		int r = clear_dir(dfd, shown, NULL, err);
		if (r < 0)
			return r;
	}
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return ib_error_set(err, errno, "remove directory " NAME_SHOWN, shown);
	return 0;
}

/* Open the directory `path` (normalised, "" = root) as O_PATH, resolved in the
 * root.  With create, missing components are made (mode 0755, root-owned as
 * whoever we are) and recorded as created by this layer.  *out owned by the
 * caller.  `entry` names the archive entry for messages. */
static int open_dir(unpacker *u, const char *path, bool create, const char *entry, int *out,
		    ib_error **err)
{
	int fd = open_in_root(u, path, O_PATH | O_DIRECTORY);
	if (fd >= 0) {
		*out = fd;
		return 0;
	}
	if (errno != ENOENT || !create)
		return ib_error_set(err, errno, NAME_SHOWN ": open directory " NAME_SHOWN, entry,
				    path);

	/* Walk down, creating what is missing.  Each prefix is looked up from
	 * the root again so symlinks in it stay confined; a component we make
	 * ourselves is a fresh directory in an in-root parent. */
	cleanup_free char *prefix = xstrdup(path);
	cleanup_close int cur = open_in_root(u, "", O_PATH | O_DIRECTORY);
	if (cur < 0)
		return ib_error_set(err, errno, "open layer root");
	size_t len = strlen(prefix);
	size_t start = 0;
	while (start < len) {
		size_t end = start;
		while (end < len && prefix[end] != '/')
			end++;
		char saved = prefix[end];
		prefix[end] = '\0';
		const char *comp = prefix + start;
		int next = open_in_root(u, prefix, O_PATH | O_DIRECTORY);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(cur, comp, 0700) == 0) {
				if (chmod_nofollow(cur, comp, 0755) < 0)
					return ib_error_set(err, errno, "chmod " NAME_SHOWN,
							    prefix);
				record_created(u, prefix);
			} else if (errno != EEXIST) {
				return ib_error_set(err, errno, NAME_SHOWN ": mkdir " NAME_SHOWN,
						    entry, prefix);
			}
			next = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (next < 0) {
			int e = errno;
			struct stat st;
			if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISLNK(st.st_mode))
				return ib_error_setc(err, IB_ERROR,
						     NAME_SHOWN
						     ": parent " NAME_SHOWN " is a symlink "
						     "whose target does not exist inside the root",
						     entry, prefix);
			return ib_error_set(
			    err, e, NAME_SHOWN ": cannot create parent directory " NAME_SHOWN,
			    entry, prefix);
		}
		close(cur);
		cur = next;
		prefix[end] = saved;
		start = end + 1;
	}
	*out = ib_steal_fd(&cur);
	return 0;
}

/* Make dirfd/name free for a new entry: a non-directory is unlinked, a
 * directory removed with its tree unless keep_dir (then *is_dir is set). */
static int clear_slot(int dirfd, const char *name, const char *path, bool keep_dir, bool *is_dir,
		      ib_error **err)
{
	struct stat st;
	if (is_dir)
		*is_dir = false;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return ib_error_set(err, errno, "stat " NAME_SHOWN, path);
	}
	if (S_ISDIR(st.st_mode)) {
		if (keep_dir) {
			*is_dir = true;
			return 0;
		}
		return remove_at(dirfd, name, path, err);
	}
	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		return ib_error_set(err, errno, "remove " NAME_SHOWN, path);
	return 0;
}

/* ---- metadata ---- */

static int entry_owner(struct archive_entry *e, const char *path, uid_t *uid, gid_t *gid,
		       ib_error **err)
{
	la_int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
	/* (uid_t)-1 means "leave unchanged" to chown: not a real owner. */
	if (u < 0 || u >= (la_int64_t)UINT32_MAX || g < 0 || g >= (la_int64_t)UINT32_MAX)
		return ib_error_setc(err, IB_EINVALID,
				     "invalid owner %lld:%lld of \"" NAME_SHOWN "\" in layer",
				     (long long)u, (long long)g, path);
	*uid = (uid_t)u;
	*gid = (gid_t)g;
	return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = 0;
	ts[1].tv_nsec = UTIME_OMIT;
	if (archive_entry_mtime_is_set(e)) {
		ts[1].tv_sec = archive_entry_mtime(e);
		long ns = archive_entry_mtime_nsec(e);
		ts[1].tv_nsec = ns >= 0 && ns < 1000000000L ? ns : 0;
	}
	ts[0] = ts[1];
	if (archive_entry_atime_is_set(e)) {
		ts[0].tv_sec = archive_entry_atime(e);
		long ns = archive_entry_atime_nsec(e);
		ts[0].tv_nsec = ns >= 0 && ns < 1000000000L ? ns : 0;
	}
}

/* Restore the entry's xattrs on a non-symlink: through realfd when >= 0, else
 * through the /proc path of the O_PATH fd pathfd (devices and FIFOs, which we
 * must not open).  trusted.overlay.* and user.overlay.* are never taken from
 * a layer: they would let a layer forge overlayfs whiteouts, opaque dirs or
 * redirects. */
static int restore_xattrs(struct archive_entry *e, int realfd, int pathfd, const char *path,
			  ib_error **err)
{
	const char *name;
	const void *value;
	size_t size;
	char proc[64] = "";
	if (archive_entry_xattr_reset(e) == 0)
		return 0;
	while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
		if (!name || !*name || strncmp(name, "trusted.overlay.", 16) == 0 ||
		    strncmp(name, "user.overlay.", 13) == 0)
			continue;
		int r;
		if (realfd >= 0) {
			r = fsetxattr(realfd, name, value, size, 0);
		} else {
			if (!*proc)
				snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
			r = setxattr(proc, name, value, size, 0);
		}
		/* Filesystems without xattr support, or a namespace we may not
		 * write (trusted.* unprivileged): skipped, like docker does. */
		if (r < 0 && errno != ENOTSUP && errno != EOPNOTSUPP && errno != EPERM)
			return ib_error_set(err, errno, "set xattr %s on " NAME_SHOWN, name, path);
	}
	return 0;
}

static void defer_dir_meta(unpacker *u, const char *path, mode_t mode, const struct timespec ts[2])
{
	size_t i;
	if (!strmap_get(&u->dir_index, path, &i)) {
		if (u->ndirs == u->dirs_alloc) {
			u->dirs_alloc = u->dirs_alloc ? u->dirs_alloc * 2 : 64;
			u->dirs = xrealloc(u->dirs, u->dirs_alloc * sizeof(*u->dirs));
		}
		i = u->ndirs++;
		u->dirs[i].path = xstrdup(path);
		strmap_put(&u->dir_index, path, i);
	}
	u->dirs[i].mode = mode;
	u->dirs[i].times[0] = ts[0];
	u->dirs[i].times[1] = ts[1];
}

static size_t path_depth(const char *p)
{
	if (!*p)
		return 0;
	size_t n = 1;
	for (; *p; p++)
		n += *p == '/';
	return n;
}

static int cmp_depth_desc(const void *a, const void *b)
{
	size_t da = path_depth(((const dir_meta *)a)->path);
	size_t db = path_depth(((const dir_meta *)b)->path);
	return da < db ? 1 : da > db ? -1 : 0;
}

/* Directory modes and mtimes last, deepest first, so creating children does
 * not bump them and a read-only directory does not block its own contents.
 * A directory later replaced or whited out by the layer is skipped. */
static int finish_dirs(unpacker *u, ib_error **err)
{
	if (u->ndirs > 1)
		qsort(u->dirs, u->ndirs, sizeof(*u->dirs), cmp_depth_desc);
	for (size_t i = 0; i < u->ndirs; i++) {
		const dir_meta *d = &u->dirs[i];
		cleanup_close int fd =
		    open_in_root(u, d->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
		if (fd < 0) {
			if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
				continue;
			return ib_error_set(err, errno, "open directory /" NAME_SHOWN, d->path);
		}
		if (fchmod(fd, d->mode) < 0)
			return ib_error_set(err, errno, "chmod /" NAME_SHOWN, d->path);
		if (futimens(fd, d->times) < 0)
			return ib_error_set(err, errno, "set times of /" NAME_SHOWN, d->path);
	}
	return 0;
}

/* ---- archive errors and the size cap ---- */

static int archive_fail(struct archive *a, ib_error **err)
{
	const char *msg = archive_error_string(a);
	int e = archive_errno(a);
	if (!msg)
		msg = "truncated or corrupt stream";
	/* An I/O failure of the underlying stream is not the archive's fault. */
	if (e == EIO || e == EBADF || e == ENOMEM || e == ENOSPC || e == EINTR)
		return ib_error_setc(err, IB_ERROR, "read layer: %s", msg);
	return ib_error_setc(err, IB_EINVALID, "not a valid tar archive: %s", msg);
}

static int check_cap(unpacker *u, ib_error **err)
{
	la_int64_t n = archive_filter_bytes(u->a, 0);
	if (n > 0)
		u->stats.bytes = (uint64_t)n;
	if (u->stats.bytes > u->max_bytes || u->declared > u->max_bytes)
		return ib_error_setc(err, IB_ETOOLARGE,
				     "layer exceeds the cap of %llu decompressed bytes",
				     (unsigned long long)u->max_bytes);
	return 0;
}

/* ---- entry kinds ---- */

static int write_data(unpacker *u, int fd, const char *path, int64_t *end, ib_error **err)
{
	*end = 0;
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(u->a, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return archive_fail(u->a, err);
		if (check_cap(u, err) < 0)
			return IB_ETOOLARGE;
		if (off < 0)
			return ib_error_setc(err, IB_EINVALID,
					     "not a valid tar archive: bad data "
					     "offset in \"" NAME_SHOWN "\"",
					     path);
		const char *p = buf;
		while (size > 0) {
			ssize_t n = pwrite(fd, p, size, (off_t)off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return ib_error_set(err, errno, "write " NAME_SHOWN, path);
			}
			p += n;
			size -= (size_t)n;
			off += n;
		}
		if (off > *end)
			*end = off;
	}
}

static int do_file(unpacker *u, struct archive_entry *e, int pfd, const struct stat *pst,
		   const char *base, const char *path, ib_error **err)
{
	uid_t uid;
	gid_t gid;
	if (entry_owner(e, path, &uid, &gid, err) < 0)
		return IB_EINVALID;
	la_int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
	if (size < 0)
		return ib_error_setc(err, IB_EINVALID,
				     "not a valid tar archive: negative size of \"" NAME_SHOWN "\"",
				     path);
	/* Sparse files count with their full size: they become that big once
	 * repacked. */
	u->declared += (uint64_t)size;
	if (check_cap(u, err) < 0)
		return IB_ETOOLARGE;
	/* O_EXCL + O_NOFOLLOW: whatever appeared at base, we never write
	 * through it.  Mostly nothing is there: what is gets cleared only
	 * when the creation says so. */
	const int oflags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	cleanup_close int fd = openat(pfd, base, oflags, 0600);
	int r;
	if (fd < 0 && errno == EEXIST) {
		r = clear_slot(pfd, base, path, false, NULL, err);
		if (r < 0)
			return r;
		fd = openat(pfd, base, oflags, 0600);
	}
	if (fd < 0)
		return ib_error_set(err, errno, "create " NAME_SHOWN, path);
	record_created(u, path);
	int64_t end;
	r = write_data(u, fd, path, &end, err);
	if (r < 0)
		return r;
	/* a sparse file's last hole, or data past the declared size */
	if (end != size && ftruncate(fd, (off_t)size) < 0)
		return ib_error_set(err, errno, "truncate " NAME_SHOWN, path);
	/* Data, then owner, xattrs, mode: writes and chown clear setuid and
	 * file capabilities.  A new file belongs to us and to our group, or
	 * to the parent's group when it is setgid: no chown when that is
	 * already right. */
	gid_t born_gid = pst && (pst->st_mode & S_ISGID) ? pst->st_gid : u->egid;
	bool owned = pst && uid == u->euid && gid == born_gid;
	if (u->same_owner && !owned && fchown(fd, uid, gid) < 0)
		return ib_error_set(err, errno, "chown " NAME_SHOWN "%s", path, UNMAPPED_HINT);
	r = restore_xattrs(e, fd, -1, path, err);
	if (r < 0)
		return r;
	if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
		return ib_error_set(err, errno, "chmod " NAME_SHOWN, path);
	struct timespec ts[2];
	entry_times(e, ts);
	if (futimens(fd, ts) < 0)
		return ib_error_set(err, errno, "set times of " NAME_SHOWN, path);
	return 0;
}

/* Owner and xattrs now, mode and times at the end. */
static int dir_meta_now(unpacker *u, struct archive_entry *e, int dfd, const char *path,
			ib_error **err)
{
	uid_t uid;
	gid_t gid;
	if (entry_owner(e, path, &uid, &gid, err) < 0)
		return IB_EINVALID;
	if (u->same_owner && fchown(dfd, uid, gid) < 0)
		return ib_error_set(err, errno, "chown " NAME_SHOWN "%s", *path ? path : "/",
				    UNMAPPED_HINT);
	int r = restore_xattrs(e, dfd, -1, *path ? path : "/", err);
	if (r < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	defer_dir_meta(u, path, archive_entry_perm(e) & 07777, ts);
	return 0;
}

static int do_dir(unpacker *u, struct archive_entry *e, int pfd, const char *base, const char *path,
		  ib_error **err)
{
	bool exists = false;
	int r = clear_slot(pfd, base, path, true, &exists, err);
	if (r < 0)
		return r;
	if (!exists && mkdirat(pfd, base, 0700) < 0)
		return ib_error_set(err, errno, "mkdir " NAME_SHOWN, path);
	record_created(u, path);
	cleanup_close int dfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return ib_error_set(err, errno, "open directory " NAME_SHOWN, path);
	return dir_meta_now(u, e, dfd, path, err);
}

static int do_root(unpacker *u, struct archive_entry *e, const char *raw, ib_error **err)
{
	if (archive_entry_hardlink(e) || archive_entry_filetype(e) != AE_IFDIR)
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe entry in layer: \"" NAME_SHOWN
				     "\" is the root of the layer but not a directory",
				     raw);
	cleanup_close int dfd = open_in_root(u, "", O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		return ib_error_set(err, errno, "open layer root");
	return dir_meta_now(u, e, dfd, "", err);
}

static int do_symlink(unpacker *u, struct archive_entry *e, int pfd, const char *base,
		      const char *path, ib_error **err)
{
	const char *target = archive_entry_symlink(e);
	uid_t uid;
	gid_t gid;
	if (!target || !*target)
		return ib_error_setc(err, IB_EINVALID,
				     "not a valid tar archive: symlink \"" NAME_SHOWN
				     "\" has an empty target",
				     path);
	if (entry_owner(e, path, &uid, &gid, err) < 0)
		return IB_EINVALID;
	int r = clear_slot(pfd, base, path, false, NULL, err);
	if (r < 0)
		return r;
	/* The target text is stored, never resolved by us: later lookups
	 * through it happen in-root. */
	if (symlinkat(target, pfd, base) < 0)
		return ib_error_set(err, errno, "symlink " NAME_SHOWN, path);
	record_created(u, path);
	if (u->same_owner && fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "chown " NAME_SHOWN "%s", path, UNMAPPED_HINT);
	/* xattrs are not restored on symlinks: setting them needs a path that
	 * names the link itself, and user.* is not allowed there anyway. */
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "set times of " NAME_SHOWN, path);
	return 0;
}

static int do_node(unpacker *u, struct archive_entry *e, int pfd, const char *base,
		   const char *path, ib_error **err)
{
	mode_t type = archive_entry_filetype(e);
	dev_t dev = 0;
	uid_t uid;
	gid_t gid;
	if (type == AE_IFCHR || type == AE_IFBLK) {
		unsigned long maj = (unsigned long)archive_entry_rdevmajor(e);
		unsigned long min = (unsigned long)archive_entry_rdevminor(e);
		/* Linux's dev_t holds 12 bits of major and 20 of minor. */
		if (maj > 0xfff || min > 0xfffff)
			return ib_error_setc(err, IB_EUNSAFE,
					     "unsafe entry in layer: device \"" NAME_SHOWN
					     "\" has out-of-range number %lu:%lu",
					     path, maj, min);
		dev = makedev(maj, min);
	}
	if (entry_owner(e, path, &uid, &gid, err) < 0)
		return IB_EINVALID;
	int r = clear_slot(pfd, base, path, false, NULL, err);
	if (r < 0)
		return r;
	if (mknodat(pfd, base, type | 0600, dev) < 0) {
		if (errno == EPERM && type != AE_IFIFO)
			return ib_error_set(err, errno,
					    "create device " NAME_SHOWN " (needs CAP_MKNOD)", path);
		return ib_error_set(err, errno, "create " NAME_SHOWN, path);
	}
	record_created(u, path);
	if (u->same_owner && fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "chown " NAME_SHOWN "%s", path, UNMAPPED_HINT);
	{
		/* Never opened for I/O: a device open can have side effects. */
		cleanup_close int fd = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0)
			return ib_error_set(err, errno, "open " NAME_SHOWN, path);
		if ((st.st_mode & S_IFMT) != type)
			return ib_error_setc(err, IB_ERROR, NAME_SHOWN " changed under us", path);
		r = restore_xattrs(e, -1, fd, path, err);
		if (r < 0)
			return r;
	}
	if (chmod_nofollow(pfd, base, archive_entry_perm(e) & 07777) < 0)
		return ib_error_set(err, errno, "chmod " NAME_SHOWN, path);
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "set times of " NAME_SHOWN, path);
	return 0;
}

static int do_hardlink(unpacker *u, struct archive_entry *e, int pfd, const char *base,
		       const char *path, ib_error **err)
{
	cleanup_free char *target = NULL;
	int r = normalize_name("hardlink target", archive_entry_hardlink(e), &target, err);
	if (r < 0)
		return ib_error_wrap(err, "hardlink \"" NAME_SHOWN "\"", path);
	if (!*target)
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe hardlink in layer: \"" NAME_SHOWN
				     "\" links to the root directory",
				     path);
	cleanup_free char *tparent = NULL;
	const char *tbase;
	split_path(target, &tparent, &tbase);
	/* The target's parent is resolved in-root like any other path, and
	 * linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what
	 * it points to. */
	cleanup_close int tpfd = open_in_root(u, tparent, O_PATH | O_DIRECTORY);
	if (tpfd < 0)
		return ib_error_set(err, errno,
				    "hardlink \"" NAME_SHOWN "\" to \"" NAME_SHOWN
				    "\": open directory " NAME_SHOWN,
				    path, target, tparent);
	struct stat tst, st;
	if (fstatat(tpfd, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "hardlink \"" NAME_SHOWN "\" to \"" NAME_SHOWN "\"",
				    path, target);
	if (S_ISDIR(tst.st_mode))
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe hardlink in layer: \"" NAME_SHOWN
				     "\" links to directory \"" NAME_SHOWN "\"",
				     path, target);
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
	    st.st_ino == tst.st_ino) {
		record_created(u, path);
		return 0; /* already that file (e.g. a link to itself) */
	}
	r = clear_slot(pfd, base, path, false, NULL, err);
	if (r < 0)
		return r;
	if (linkat(tpfd, tbase, pfd, base, 0) < 0)
		return ib_error_set(err, errno, "hardlink \"" NAME_SHOWN "\" to \"" NAME_SHOWN "\"",
				    path, target);
	record_created(u, path);
	return 0;
}

/* The directory `dpath` for an opaque marker: must be a real directory, never
 * a symlink (a layer's diff cannot hold a marker inside a symlink).  With
 * create, it and its parents are made when missing.  *out is a real fd, or -1
 * when it does not exist and create is false. */
static int open_opaque_dir(unpacker *u, const char *dpath, const char *raw, bool create, int *out,
			   ib_error **err)
{
	*out = -1;
	if (!*dpath) {
		*out = open_in_root(u, "", O_RDONLY | O_DIRECTORY);
		return *out < 0 ? ib_error_set(err, errno, "open layer root") : 0;
	}
	cleanup_free char *pp = NULL;
	const char *pb;
	split_path(dpath, &pp, &pb);
	cleanup_close int ppfd = -1;
	if (create) {
		int r = open_dir(u, pp, true, raw, &ppfd, err);
		if (r < 0)
			return r;
	} else {
		ppfd = open_in_root(u, pp, O_PATH | O_DIRECTORY);
		if (ppfd < 0) {
			/* Nothing to hide below a directory that is not there. */
			if (errno == ENOENT || errno == ENOTDIR)
				return 0;
			return ib_error_set(err, errno, NAME_SHOWN ": open directory " NAME_SHOWN,
					    raw, pp);
		}
	}
	struct stat st;
	if (fstatat(ppfd, pb, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			return ib_error_set(err, errno, "stat " NAME_SHOWN, dpath);
		if (!create)
			return 0;
		if (mkdirat(ppfd, pb, 0700) < 0 || chmod_nofollow(ppfd, pb, 0755) < 0)
			return ib_error_set(err, errno, "mkdir " NAME_SHOWN, dpath);
		record_created(u, dpath);
	} else if (!S_ISDIR(st.st_mode)) {
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe whiteout in layer: \"" NAME_SHOWN
				     "\" marks \"" NAME_SHOWN
				     "\" opaque, which is not a directory%s",
				     raw, dpath, S_ISLNK(st.st_mode) ? " but a symlink" : "");
	}
	*out = openat(ppfd, pb, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*out < 0)
		return ib_error_set(err, errno, "open directory " NAME_SHOWN, dpath);
	return 0;
}

static int do_opaque(unpacker *u, const char *dpath, const char *raw, ib_error **err)
{
	bool overlay = u->whiteouts == IB_WHITEOUT_OVERLAY;
	cleanup_close int dfd = -1;
	int r = open_opaque_dir(u, dpath, raw, overlay, &dfd, err);
	if (r < 0 || dfd < 0)
		return r;
	if (overlay) {
		if (fsetxattr(dfd, OVERLAY_OPAQUE_XATTR, "y", 1, 0) < 0)
			return ib_error_set(err, errno, "set %s on /" NAME_SHOWN,
					    OVERLAY_OPAQUE_XATTR, dpath);
		return 0;
	}
	/* Whatever this layer already put there stays; the rest came from
	 * lower layers and is hidden by the marker. */
	return clear_dir(dfd, dpath, &u->created, err);
}

static int do_whiteout(unpacker *u, const char *raw, const char *parent, const char *base,
		       ib_error **err)
{
	if (strcmp(base, IB_WH_OPAQUE) == 0)
		return do_opaque(u, parent, raw, err);
	/* Other ".wh..wh." names are aufs bookkeeping (.wh..wh.plnk ...). */
	if (strncmp(base, IB_WH_META_PREFIX, strlen(IB_WH_META_PREFIX)) == 0)
		return 0;
	const char *victim = base + strlen(IB_WH_PREFIX);
	if (!*victim || strcmp(victim, ".") == 0 || strcmp(victim, "..") == 0)
		return ib_error_setc(err, IB_EUNSAFE,
				     "unsafe whiteout in layer: \"" NAME_SHOWN
				     "\" does not name a file in its directory",
				     raw);
	cleanup_free char *vpath = join_rel(parent, victim);
	bool overlay = u->whiteouts == IB_WHITEOUT_OVERLAY;
	cleanup_close int pfd = -1;
	if (!overlay) {
		/* Resolved in-root like any parent, so it can only delete inside;
		 * nothing to delete below a directory that is not there. */
		pfd = open_in_root(u, parent, O_PATH | O_DIRECTORY);
		if (pfd < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				return 0;
			return ib_error_set(err, errno, NAME_SHOWN ": open directory " NAME_SHOWN,
					    raw, parent);
		}
		return remove_at(pfd, victim, vpath, err);
	}
	int r = open_dir(u, parent, true, raw, &pfd, err);
	if (r < 0)
		return r;
	r = clear_slot(pfd, victim, vpath, false, NULL, err);
	if (r < 0)
		return r;
	if (mknodat(pfd, victim, S_IFCHR | 0, makedev(0, 0)) < 0)
		return ib_error_set(err, errno, "create whiteout " NAME_SHOWN, vpath);
	record_created(u, vpath);
	if (u->same_owner && fchownat(pfd, victim, 0, 0, AT_SYMLINK_NOFOLLOW) < 0)
		return ib_error_set(err, errno, "chown whiteout " NAME_SHOWN, vpath);
	return 0;
}

static int unpack_entry(unpacker *u, struct archive_entry *e, ib_error **err)
{
	const char *raw = archive_entry_pathname(e);
	cleanup_free char *path = NULL;
	int r = normalize_name("path", raw, &path, err);
	if (r == 0)
		r = ib_unpack_check_path(path, err);
	if (r < 0)
		return r;
	if (!*path) {
		pcache_drop(u);
		return do_root(u, e, raw, err);
	}

	cleanup_free char *parent = NULL;
	const char *base;
	split_path(path, &parent, &base);
	if (strncmp(base, IB_WH_PREFIX, strlen(IB_WH_PREFIX)) == 0) {
		pcache_drop(u);
		return do_whiteout(u, raw, parent, base, err);
	}

	mode_t type = archive_entry_filetype(e);
	bool hardlink = archive_entry_hardlink(e) != NULL;
	if (!hardlink && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK &&
	    type != AE_IFIFO && type != AE_IFCHR && type != AE_IFBLK)
		return ib_error_setc(err, IB_EINVALID,
				     "not a valid tar archive: \"" NAME_SHOWN
				     "\" has unsupported type 0%o",
				     path, (unsigned)type);

	if (type == AE_IFREG && !hardlink) {
		if (!u->pcache_path || strcmp(u->pcache_path, parent) != 0) {
			pcache_drop(u);
			int fd;
			r = open_dir(u, parent, true, path, &fd, err);
			if (r < 0)
				return r;
			u->pcache_fd = fd;
			u->pcache_path = xstrdup(parent);
			if (fstat(fd, &u->pcache_st) < 0)
				return ib_error_set(err, errno, "stat " NAME_SHOWN, parent);
		}
		return do_file(u, e, u->pcache_fd, &u->pcache_st, base, path, err);
	}
	pcache_drop(u);
	cleanup_close int pfd = -1;
	r = open_dir(u, parent, true, path, &pfd, err);
	if (r < 0)
		return r;
	if (hardlink)
		return do_hardlink(u, e, pfd, base, path, err);
	switch (type) {
	case AE_IFREG: /* not reached: above */
		return do_file(u, e, pfd, NULL, base, path, err);
	case AE_IFDIR:
		return do_dir(u, e, pfd, base, path, err);
	case AE_IFLNK:
		return do_symlink(u, e, pfd, base, path, err);
	default:
		return do_node(u, e, pfd, base, path, err);
	}
}

int ib_unpack_archive(struct archive *a, const char *dest_dir, const ib_unpack_options *opts,
		      ib_unpack_stats *stats, ib_error **err)
{
	unpacker u = {.a = a, .rootfd = -1, .pcache_fd = -1, .euid = geteuid(), .egid = getegid()};
	if (opts) {
		u.whiteouts = opts->whiteouts;
		u.same_owner = opts->same_owner;
		u.max_bytes = opts->max_bytes;
	} else {
		u.whiteouts = IB_WHITEOUT_APPLY;
		u.same_owner = geteuid() == 0;
	}
	if (u.max_bytes == 0)
		u.max_bytes = IB_UNPACK_DEFAULT_MAX_BYTES;

	/* Names are taken as the bytes in the archive: in the C locale
	 * libarchive hands pax UTF-8 names over unconverted (with a warning),
	 * where a process locale such as ISO-8859-1 would transcode them. */
	locale_t c_locale = newlocale(LC_CTYPE_MASK, "C", (locale_t)0);
	locale_t prev_locale = c_locale ? uselocale(c_locale) : (locale_t)0;

	int r = 0;
	u.rootfd = open(dest_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (u.rootfd < 0) {
		r = ib_error_set(err, errno, "open %s", dest_dir);
		goto out;
	}
	/* Fail early and clearly where openat2 is missing: there is no safe
	 * fallback. */
	{
		int probe = open_in_root(&u, "", O_PATH | O_DIRECTORY);
		if (probe < 0) {
			r = ib_error_set(err, errno, "openat2 %s (Linux >= 5.6 required)",
					 dest_dir);
			goto out;
		}
		close(probe);
	}
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		/* WARN: e.g. a UTF-8 name not convertible to the C locale; the
		 * raw bytes are still there and are what we want. */
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			r = archive_fail(a, err);
			goto out;
		}
		u.stats.entries++;
		r = check_cap(&u, err);
		if (r < 0)
			goto out;
		r = unpack_entry(&u, e, err);
		if (r < 0)
			goto out;
	}
	r = check_cap(&u, err);
	if (r < 0)
		goto out;
	r = finish_dirs(&u, err);
out:
	if (c_locale) {
		uselocale(prev_locale);
		freelocale(c_locale);
	}
	if (stats)
		*stats = u.stats;
	unpacker_free(&u);
	return r;
}

/* ---- reading the blob: gzip by libdeflate ----
 *
 * Our own gzip blobs (compress.c) are members of at most 1 MiB each, which
 * libdeflate decompresses whole, 2-3x faster than zlib's streaming inflate
 * (40% of the time of unpacking a Debian base with zlib).  libdeflate needs
 * a member's input and output in memory at once: the reader keeps a window
 * of GZR_IN bytes of the blob and decompresses one member into a GZR_OUT
 * buffer.  A member that does not fit (any gzip writer but ours: one member
 * for the whole layer) switches the rest of the stream to zlib, from that
 * member's first byte.  After the last member, bytes that do not start
 * another member are ignored, as libarchive's gzip reader does.  Anything
 * else (zstd, xz, bzip2, plain tar) passes through to libarchive's own
 * filters. */

#define GZR_OUT IB_COMPRESS_GZIP_BLOCK
/* a member of GZR_OUT bytes compresses to at most GZR_OUT + ~0.1%, and
 * at least half a window is there when a member starts */
#define GZR_IN (4u << 20)

typedef enum { GZR_RAW, GZR_LIBDEFLATE, GZR_ZLIB } gzr_mode;

typedef struct gz_reader {
	int fd;
	gzr_mode mode;
	unsigned char *in;
	size_t start, end; /* unconsumed input: in[start..end) */
	bool eof;
	unsigned char *out;
	struct libdeflate_decompressor *ld;
	z_stream z;
	bool z_init;
	bool z_done;	  /* zlib: the last member ended */
	bool done;	  /* libdeflate: no further member */
	uint64_t members; /* decompressed by libdeflate */
	/* the reader's failure, kept: libarchive takes a read error while it
	 * probes the format for the end of an empty stream */
	int fail_errno;
	char fail_msg[128];
} gz_reader;

static la_ssize_t gzr_fail(struct archive *a, gz_reader *g, int e, const char *msg)
{
	if (!g->fail_errno) {
		g->fail_errno = e;
		snprintf(g->fail_msg, sizeof(g->fail_msg), "%s", msg);
	}
	archive_set_error(a, e, "%s", msg);
	return -1;
}

/* Fill the window (moving what is left to its start); -1 with errno. */
static int gzr_fill(gz_reader *g)
{
	if (g->start > 0) {
		memmove(g->in, g->in + g->start, g->end - g->start);
		g->end -= g->start;
		g->start = 0;
	}
	while (!g->eof && g->end < GZR_IN) {
		ssize_t n = read(g->fd, g->in + g->end, GZR_IN - g->end);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			g->eof = true;
		g->end += (size_t)n;
	}
	return 0;
}

static bool gzr_at_member(const gz_reader *g)
{
	return g->end - g->start >= 3 && g->in[g->start] == 0x1f && g->in[g->start + 1] == 0x8b &&
	       g->in[g->start + 2] == 8;
}

static la_ssize_t gzr_zlib(struct archive *a, gz_reader *g, const void **buf)
{
	if (!g->z_init) {
		memset(&g->z, 0, sizeof(g->z));
		if (inflateInit2(&g->z, 16 + MAX_WBITS) != Z_OK) {
			return gzr_fail(a, g, ENOMEM, "gzip: cannot start zlib");
		}
		g->z_init = true;
	}
	while (!g->z_done) {
		if (g->start == g->end) {
			if (g->eof) {
				return gzr_fail(a, g, EINVAL, "gzip: truncated input");
			}
			if (gzr_fill(g) < 0) {
				return gzr_fail(a, g, errno, strerror(errno));
			}
			continue;
		}
		g->z.next_in = g->in + g->start;
		g->z.avail_in = (uInt)(g->end - g->start);
		g->z.next_out = g->out;
		g->z.avail_out = GZR_OUT;
		int zr = inflate(&g->z, Z_NO_FLUSH);
		g->start = g->end - g->z.avail_in;
		size_t produced = GZR_OUT - g->z.avail_out;
		if (zr == Z_STREAM_END) {
			/* another member follows, or the stream ends */
			if (g->start == g->end && !g->eof && gzr_fill(g) < 0) {
				return gzr_fail(a, g, errno, strerror(errno));
			}
			if (gzr_at_member(g))
				inflateReset(&g->z);
			else
				g->z_done = true;
		} else if (zr != Z_OK && !(zr == Z_BUF_ERROR && produced > 0)) {
			return gzr_fail(a, g, EINVAL,
					g->z.msg ? g->z.msg : "gzip: invalid compressed data");
		}
		if (produced > 0) {
			*buf = g->out;
			return (la_ssize_t)produced;
		}
	}
	return 0;
}

static la_ssize_t gzr_read(struct archive *a, void *payload, const void **buf)
{
	gz_reader *g = payload;
	if (g->mode == GZR_RAW) {
		if (g->start == g->end) {
			if (g->eof)
				return 0;
			g->start = g->end = 0;
			ssize_t n;
			do
				n = read(g->fd, g->in, GZR_IN);
			while (n < 0 && errno == EINTR);
			if (n < 0) {
				return gzr_fail(a, g, errno, strerror(errno));
			}
			if (n == 0)
				g->eof = true;
			g->end = (size_t)n;
		}
		*buf = g->in + g->start;
		size_t n = g->end - g->start;
		g->start = g->end;
		return (la_ssize_t)n;
	}
	while (g->mode == GZR_LIBDEFLATE) {
		if (g->done)
			return 0;
		/* refill at half a window: a member always fits then, and the
		 * window moves every few members rather than each time */
		if (g->end - g->start < GZR_IN / 2 && !g->eof && gzr_fill(g) < 0) {
			return gzr_fail(a, g, errno, strerror(errno));
		}
		if (!gzr_at_member(g)) {
			g->done = true;
			return 0;
		}
		size_t used = 0, made = 0;
		enum libdeflate_result lr = libdeflate_gzip_decompress_ex(
		    g->ld, g->in + g->start, g->end - g->start, g->out, GZR_OUT, &used, &made);
		if (lr != LIBDEFLATE_SUCCESS) {
			/* too big for the buffers, or bad: zlib says which */
			g->mode = GZR_ZLIB;
			break;
		}
		g->start += used;
		g->members++;
		if (made > 0) {
			*buf = g->out;
			return (la_ssize_t)made;
		}
	}
	return gzr_zlib(a, g, buf);
}

int ib_unpack_fd(int fd, const char *dest_dir, const ib_unpack_options *opts,
		 ib_unpack_stats *stats, ib_error **err)
{
	gz_reader g = {.fd = fd, .mode = GZR_RAW};
	g.in = xmalloc(GZR_IN);
	g.out = xmalloc(GZR_OUT);
	int r = 0;
	bool unpacked = false;
	if (gzr_fill(&g) < 0)
		r = ib_error_set(err, errno, "read layer");
	else if (gzr_at_member(&g) && (g.ld = libdeflate_alloc_decompressor()) != NULL)
		g.mode = GZR_LIBDEFLATE;
	struct archive *a = r == 0 ? archive_read_new() : NULL;
	if (r == 0 && !a)
		r = ib_error_setc(err, IB_ERROR, "out of memory");
	if (r == 0) {
		/* Explicit filters rather than _all: _all also registers lrzip,
		 * grzip and friends, which run an external program on the
		 * untrusted input.  (After libdeflate they see plain tar.) */
		archive_read_support_filter_gzip(a);
		archive_read_support_filter_zstd(a);
		archive_read_support_filter_xz(a);
		archive_read_support_filter_bzip2(a);
		archive_read_support_format_tar(a); /* ustar, pax, gnu, v7 */
		archive_read_support_format_empty(a);
		if (archive_read_open(a, &g, NULL, gzr_read, NULL) != ARCHIVE_OK)
			r = archive_fail(a, err);
		else {
			r = ib_unpack_archive(a, dest_dir, opts, stats, err);
			unpacked = true;
		}
	}
	if (!unpacked && stats)
		memset(stats, 0, sizeof(*stats));
	if (stats)
		stats->gzip_members = g.members;
	if (g.fail_errno && r == 0) {
		/* as archive_fail: the stream's I/O or its content */
		if (g.fail_errno == EINVAL)
			r = ib_error_setc(err, IB_EINVALID, "not a valid tar archive: %s",
					  g.fail_msg);
		else
			r = ib_error_set(err, g.fail_errno, "read layer");
	}
	if (a)
		archive_read_free(a);
	if (g.z_init)
		inflateEnd(&g.z);
	libdeflate_free_decompressor(g.ld);
	free(g.in);
	free(g.out);
	return r;
}

/* ---- an unpacked layer written from host files ---- */

/* Copy a regular file's bytes (in the kernel where possible). */
static int copy_file_data(int in, int out)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return -1;
		break;
	}
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		if (ib_write_all(out, buf, (size_t)n, NULL) < 0)
			return -1;
	}
}

/* The xattrs a layer keeps (ib_layer_keeps_xattr), best effort. */
static void copy_xattrs(const char *src, const char *dst)
{
	ib_xattr *xs = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	if (ib_layer_xattrs_read(-1, src, &xs, &n, &e) < 0)
		ib_error_free(&e);
	for (size_t k = 0; k < n; k++)
		lsetxattr(dst, xs[k].name, xs[k].value, xs[k].size, 0);
	ib_layer_xattrs_free(xs, n);
}

typedef struct dest_ent {
	const char *path;
	bool is_dir;
} dest_ent;

static int cmp_dest(const void *a, const void *b)
{
	return strcmp(((const dest_ent *)a)->path, ((const dest_ent *)b)->path);
}

/* True when every path is written once and no path lies below another one
 * that is not a directory.  Anything else (a symlink "x" and a directory
 * "x/" from two sources, say) is left to the tar's last-entry-wins rules
 * and ib_unpack_fd: writing it by path here could follow the symlink out
 * of dest_dir. */
static bool files_are_a_tree(const ib_unpack_file *files, size_t n)
{
	dest_ent *v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = (dest_ent){files[i].path, !files[i].host || S_ISDIR(files[i].st.st_mode)};
	qsort(v, n, sizeof(*v), cmp_dest);
	bool ok = true;
	for (size_t i = 1; i < n && ok; i++)
		ok = strcmp(v[i - 1].path, v[i].path) != 0;
	for (size_t i = 0; i < n && ok; i++) {
		cleanup_free char *anc = xstrdup(v[i].path);
		for (char *sl = strrchr(anc, '/'); sl && ok; sl = strrchr(anc, '/')) {
			*sl = '\0';
			dest_ent key = {anc, false};
			dest_ent *hit = bsearch(&key, v, n, sizeof(*v), cmp_dest);
			ok = !hit || hit->is_dir;
		}
	}
	free(v);
	return ok;
}

/* Hardlinks, as the tar writes them: for a regular file with several links,
 * the earlier entry of the same inode, or NULL (then it is recorded in
 * linked, which holds at most one entry per inode). */
static const ib_unpack_file *first_link(const ib_unpack_file **linked, size_t *n_linked,
					const ib_unpack_file *f)
{
	if (!f->host || !S_ISREG(f->st.st_mode) || f->st.st_nlink < 2)
		return NULL;
	for (size_t k = 0; k < *n_linked; k++)
		if (linked[k]->st.st_dev == f->st.st_dev && linked[k]->st.st_ino == f->st.st_ino)
			return linked[k];
	linked[(*n_linked)++] = f;
	return NULL;
}

/* Write one entry at dst (not there yet); -1 with errno on failure. */
static int write_file(const ib_unpack_file *f, const char *dst, int64_t epoch)
{
	mode_t type = f->host ? f->st.st_mode & S_IFMT : S_IFDIR;
	int r = 0;
	if (S_ISDIR(type)) {
		struct stat dstat;
		r = mkdir(dst, 0700) < 0 && errno != EEXIST ? -1 : 0;
		if (r == 0 && lstat(dst, &dstat) < 0)
			r = -1;
		if (r == 0 && !S_ISDIR(dstat.st_mode)) {
			errno = ENOTDIR; /* never chmod/chown through something else */
			r = -1;
		}
	} else if (S_ISREG(type)) {
		cleanup_close int in = open(f->host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		cleanup_close int out =
		    open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		r = in < 0 || out < 0 ? -1 : copy_file_data(in, out);
	} else if (S_ISLNK(type)) {
		char target[PATH_MAX];
		ssize_t n = readlink(f->host, target, sizeof(target) - 1);
		if (n >= 0)
			target[n] = '\0';
		r = n < 0 ? -1 : symlink(target, dst);
	} else if (S_ISFIFO(type) || S_ISCHR(type) || S_ISBLK(type)) {
		r = mknod(dst, type, f->st.st_rdev);
	} else {
		return 0; /* sockets are not in layers */
	}
	if (r == 0)
		r = lchown(dst, (uid_t)f->uid, (gid_t)f->gid);
	if (r == 0 && !S_ISLNK(type))
		r = chmod(dst, (mode_t)(f->mode & 07777)); /* after chown, which clears setuid */
	if (r == 0 && f->host)
		copy_xattrs(f->host, dst);
	if (r == 0 && !S_ISDIR(type)) {
		struct timespec ts[2] = {{0, UTIME_OMIT},
					 {f->st.st_mtime < epoch ? f->st.st_mtime : epoch, 0}};
		r = utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
	}
	return r;
}

int ib_unpack_from_files(const char *dest_dir, const ib_unpack_dir *dirs, size_t n_dirs,
			 const ib_unpack_file *files, size_t n_files, int64_t epoch, ib_error **err)
{
	if (!files_are_a_tree(files, n_files))
		return ib_error_setc(err, IB_EUNSAFE,
				     "%s: a path is written twice or below a non-directory",
				     dest_dir);
	if (ib_mkdir_p(dest_dir, 0755, err) < 0)
		return -1;
	/* directories on the way, with the metadata the layer gives them */
	for (size_t i = 0; i < n_dirs; i++) {
		cleanup_free char *d = ib_path_join(dest_dir, dirs[i].path);
		struct stat ds;
		if ((mkdir(d, 0700) < 0 && errno != EEXIST) || lstat(d, &ds) < 0)
			return ib_error_set(err, errno, "mkdir %s", d);
		if (!S_ISDIR(ds.st_mode))
			return ib_error_set(err, ENOTDIR, "mkdir %s", d);
		if (lchown(d, (uid_t)dirs[i].uid, (gid_t)dirs[i].gid) < 0 ||
		    chmod(d, (mode_t)(dirs[i].mode & 07777)) < 0)
			return ib_error_set(err, errno, "chown/chmod %s", d);
	}
	/* files with several links become hardlinks, as in the tar */
	const ib_unpack_file **linked = xcalloc(n_files + 1, sizeof(*linked));
	size_t n_linked = 0;
	for (size_t i = 0; i < n_files; i++) {
		const ib_unpack_file *f = &files[i];
		cleanup_free char *dst = ib_path_join(dest_dir, f->path);
		if (f->reuse && f->host && S_ISREG(f->st.st_mode) && link(f->reuse, dst) == 0)
			continue;
		const ib_unpack_file *orig = first_link(linked, &n_linked, f);
		int r;
		if (orig) {
			cleanup_free char *target = ib_path_join(dest_dir, orig->path);
			r = link(target, dst);
		} else {
			r = write_file(f, dst, epoch);
		}
		if (r < 0) {
			free(linked);
			return ib_error_set(err, errno, "%s", dst);
		}
	}
	free(linked);
	/* directories on the way carry the build timestamp, deepest first */
	for (size_t i = n_dirs; i > 0; i--) {
		cleanup_free char *d = ib_path_join(dest_dir, dirs[i - 1].path);
		struct timespec ts[2] = {{0, UTIME_OMIT}, {epoch, 0}};
		utimensat(AT_FDCWD, d, ts, AT_SYMLINK_NOFOLLOW);
	}
	/* directory mtimes last, children first */
	for (size_t i = n_files; i > 0; i--) {
		const ib_unpack_file *f = &files[i - 1];
		if (f->host && !S_ISDIR(f->st.st_mode))
			continue;
		cleanup_free char *dst = ib_path_join(dest_dir, f->path);
		time_t m = f->host && f->st.st_mtime < epoch ? f->st.st_mtime : epoch;
		struct timespec ts[2] = {{0, UTIME_OMIT}, {m, 0}};
		utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
	}
	return 0;
}
