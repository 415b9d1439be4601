/* Paths: the one lexical cleaner and the one in-root resolver.
 *
 * Every path that names something inside a root (the build context, an
 * image's filesystem, a layer being unpacked, a sandbox) goes through here,
 * so the rules for "..", symlinks and whiteouts are reviewed in one place.
 * The resolver walks a path component by component over a small backend
 * (lstat and readlink of a path relative to the root), following symlinks
 * with one hop limit and one policy for absolute targets; opening a file
 * inside a root is left to the kernel (openat2). */
#ifndef IB_PATH_H
#define IB_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "error.h"

/* OCI whiteouts: ".wh.NAME" deletes NAME, ".wh..wh..opq" empties its
 * directory; other ".wh..wh." names are reserved. */
#define IB_WH_PREFIX ".wh."
#define IB_WH_META_PREFIX ".wh..wh."
#define IB_WH_OPAQUE ".wh..wh..opq"

/* Whether st is an overlayfs whiteout (a 0:0 character device). */
bool ib_path_is_whiteout(const struct stat *st);

/* Whether the directory at path (not followed if a symlink) is marked
 * opaque the overlayfs way: trusted. or user.overlay.opaque = "y". */
bool ib_path_is_opaque(const char *path);

/* Symlinks followed while resolving one path (Linux's MAXSYMLINKS). */
#define IB_PATH_MAX_SYMLINKS 40

/* ---- the cleaner ---- */

enum {
	/* The path is taken as rooted ("a/b" means "/a/b") and comes out
	 * absolute: "/a/b", "/" for the root; ".." stops at the root. */
	IB_PATH_ABSOLUTE = 1u << 0,
	/* Rooted as above but comes out relative: "a/b", "" for the root. */
	IB_PATH_RELATIVE = 1u << 1,
	/* A ".." component is an error (IB_EUNSAFE) instead of resolved. */
	IB_PATH_REFUSE_DOTDOT = 1u << 2,
	/* Keep a trailing "/" when the input ends as a directory ("d/",
	 * "d/.", "d/..", ".", ".."), as docker does for COPY destinations.
	 * The relative root "" stays "". */
	IB_PATH_KEEP_SLASH = 1u << 3,
};

/* Lexically clean `in`: no "." or empty components, no repeated or
 * trailing slashes.  With neither ABSOLUTE nor RELATIVE the path keeps its
 * kind like Go's path.Clean: "/.." -> "/", "a/../.." -> "..", "" -> ".".
 * *out is owned by the caller; on failure (only with REFUSE_DOTDOT) it is
 * untouched and *err says which path. */
int ib_path_clean(const char *in, unsigned flags, char **out, ib_error **err);

/* Clean rel joined to base (rel alone when it is absolute or base is NULL)
 * with flags (REFUSE_DOTDOT is ignored); KEEP_SLASH looks at rel.  Never
 * fails; caller frees. */
char *ib_path_join_clean(const char *base, const char *rel, unsigned flags);

/* Whether `in` ends as a directory in the KEEP_SLASH sense. */
bool ib_path_ends_as_dir(const char *in);

/* ---- the resolver ---- */

/* A tree to resolve in.  Paths given to the operations are relative to its
 * root ("" is the root) and have no symlink in their parents. */
typedef struct ib_path_fs {
	/* 1 and *st when rel exists, 0 when it does not (missing, deleted by
	 * a whiteout, under a non-directory), -1 with *err on a real error. */
	int (*lstat)(void *payload, const char *rel, struct stat *st, ib_error **err);
	/* The target of the symlink at rel: 0 and *out (caller frees), or -1. */
	int (*readlink)(void *payload, const char *rel, char **out, ib_error **err);
	/* Names the root in messages: "the build context". */
	const char *name;
} ib_path_fs;

enum {
	/* Follow a symlink in the last component too (always done when the
	 * path ends with "/"). */
	IB_PATH_FOLLOW_LAST = 1u << 8,
	/* Image semantics, as in a chroot: absolute symlink targets start
	 * again at the root and ".." stops there.  Without it (a build
	 * context) both are refused as leaving the root (IB_EUNSAFE). */
	IB_PATH_IMAGE = 1u << 9,
	/* Missing components are taken as directories still to be made
	 * (a copy destination).  Without it they are IB_ENOTFOUND. */
	IB_PATH_MISSING_OK = 1u << 10,
};

/* Resolve `path` (relative; leading slashes are taken as the root under
 * IB_PATH_IMAGE, refused with IB_EINVALID otherwise) inside the tree.  *out
 * (may be NULL; caller frees) gets the resolved path relative to the root,
 * symlink-free ("" for the root); *st (may be NULL) the lstat of what it
 * names, or st_mode 0 when it is missing (MISSING_OK).  Errors: IB_ENOTFOUND
 * for a missing component or one under a non-directory, IB_EUNSAFE when
 * leaving the root, IB_EINVALID for too many symlinks. */
int ib_path_resolve(const ib_path_fs *fs, void *payload, const char *path, unsigned flags,
		    char **out, struct stat *st, ib_error **err);

/* Backend: a directory, looked at through an fd (O_PATH is enough; not
 * owned).  Nothing below the root fd is followed through a symlink. */
typedef struct ib_path_dir {
	int rootfd;
} ib_path_dir;
extern const ib_path_fs ib_path_fs_dir;

/* Backend: the union of a stack of layer directories as overlayfs shows
 * it (the builder's view of an image).  The top-most layer holding a path
 * wins; a 0:0 character device deletes it and everything below it in lower
 * layers; an opaque directory (trusted. or user.overlay.opaque = "y")
 * hides the lower layers' contents of that directory. */
typedef struct ib_path_layers {
	size_t n; /* layers, bottom first */
	/* Directory of layer i as an fd (*fd owned by the caller); may do
	 * work on demand (unpack it).  0, or -1 with *err. */
	int (*open_layer)(void *payload, size_t i, int *fd, ib_error **err);
	void *payload;
} ib_path_layers;
extern const ib_path_fs ib_path_fs_layers;

/* Open rel (already resolved: symlink-free) in the top-most layer that
 * holds it, with open(2) flags (O_NOFOLLOW and O_CLOEXEC are added).
 * *fd owned by the caller.  IB_ENOTFOUND when the union has no rel. */
int ib_path_layers_open(const ib_path_layers *l, const char *rel, int flags, int *fd,
			ib_error **err);

/* ---- opening inside a root ---- */

enum {
	/* Symlinks and ".." are resolved as if rootfd were "/" (absolute
	 * targets start again at it); /proc magic links are refused. */
	IB_PATH_OPEN_IN_ROOT = 1,
	/* No symlink at all may be met, nor a ".." above rootfd. */
	IB_PATH_OPEN_BENEATH = 2,
};

/* openat2(rootfd, rel) with one of the modes above; rel "" opens the root
 * itself.  O_CLOEXEC is added.  A concurrent rename's EAGAIN is retried.
 * Returns the fd, or -1 with errno (ENOSYS: kernel older than 5.6). */
int ib_path_open_in_root(int rootfd, const char *rel, int flags, mode_t mode, unsigned how);

#endif
