/* Reproducible OCI layers: a tar stream built from host files or from
 * another tar, compressed and committed to the store as one blob.
 *
 * The tar is a function of the entries' content and metadata only:
 *  - entries are sorted by path, compared bytewise one component at a time,
 *    so "a" < "a/b" < "a-b" and a directory's subtree follows its entry
 *    directly; an opaque marker ".wh..wh..opq" comes first in its directory
 *    (before siblings it must not hide); adding the same path twice keeps
 *    the one added last;
 *  - restricted PAX (a PAX header only where ustar cannot say it); names
 *    are written byte for byte whatever the process locale: valid UTF-8 as
 *    is, anything else with hdrcharset=BINARY on that entry alone;
 *    directories end in '/' as tar wants;
 *  - numeric uid/gid, empty uname/gname, no atime/ctime, mtime =
 *    min(mtime, source_date_epoch) in whole seconds; synthetic entries
 *    (directories, whiteouts) get source_date_epoch;
 *  - xattrs as SCHILY.xattr.NAME, sorted by name; only security.capability
 *    and user.* are kept (never user.overlay.*): overlay bookkeeping,
 *    SELinux labels and the like describe the host, not the image;
 *  - a regular file with several links whose (dev, ino) was already
 *    written is a hardlink entry to the first path in sorted order;
 *  - symlinks keep their target, FIFOs and devices are kept, sockets are
 *    left out (tar cannot hold them); setuid/setgid/sticky bits are kept;
 *  - no trailing padding beyond the two zero records, so an empty layer is
 *    exactly 1024 zero bytes.
 *
 * Memory: entries are kept as small records until finish; file contents are
 * streamed in 256 KiB chunks and the compressor holds a few blocks. */
#ifndef IB_LAYER_H
#define IB_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"
#include "oci.h"
#include "store.h"

typedef struct ib_layer_options {
	ib_compression compression;
	int64_t source_date_epoch; /* every mtime clamped to at most this */
	int threads;		   /* compressor threads, 0 = online cpus */
	int level;		   /* compression level, 0 = the compressor's default */
	/* Called as the tar stream grows (about every MiB, and at the end) with
	 * the uncompressed bytes written so far; may be NULL. */
	void (*progress)(uint64_t tar_bytes, void *payload);
	void *payload;
	/* Deferred compression: the finishing call writes the uncompressed
	 * tar to tar_fd (from its current offset; not closed) instead of a
	 * compressed blob to the store.  The result then has the diff_id and
	 * the entry count, an empty digest and size = the tar's bytes;
	 * ib_layer_compress_fd turns that file into the very blob the direct
	 * path would have stored. */
	bool tar_only;
	int tar_fd;
} ib_layer_options;
#define IB_LAYER_OPTIONS_INIT                                                                      \
	{                                                                                          \
		.compression = IB_COMP_GZIP,                                                       \
	}

typedef struct ib_layer_result {
	char digest[IB_DIGEST_BUFLEN];	/* of the compressed blob */
	int64_t size;			/* compressed size */
	char diff_id[IB_DIGEST_BUFLEN]; /* of the uncompressed tar */
	uint64_t entries;		/* tar entries written */
} ib_layer_result;

/* Ownership / mode override for host entries; -1 keeps the file's value.
 * mode is permission bits including setuid/setgid/sticky (07777). */
typedef struct ib_layer_override {
	int64_t uid, gid;
	int32_t mode;
} ib_layer_override;
#define IB_LAYER_OVERRIDE_INIT                                                                     \
	{                                                                                          \
		.uid = -1, .gid = -1, .mode = -1,                                                  \
	}

/* Whether a layer keeps an xattr of this name: security.capability and
 * user.* (but user.overlay.*); overlay bookkeeping, SELinux labels and the
 * like describe the host, not the image. */
bool ib_layer_keeps_xattr(const char *name);

/* One extended attribute: name and value (size bytes, not terminated). */
typedef struct ib_xattr {
	char *name;
	void *value;
	size_t size;
} ib_xattr;

/* The xattrs a layer keeps (ib_layer_keeps_xattr) of fd, or of path (not
 * followed) when fd < 0, sorted by name, values of any size: the one reader
 * the layer writer, the copy step's cache key and its unpacked copy share.
 * A file system without xattrs gives none.  *out (free with
 * ib_layer_xattrs_free) is NULL and *n_out 0 on failure. */
int ib_layer_xattrs_read(int fd, const char *path, ib_xattr **out, size_t *n_out, ib_error **err);
void ib_layer_xattrs_free(ib_xattr *xs, size_t n);

typedef struct ib_layer_writer ib_layer_writer;

/* The store is borrowed and must outlive the writer. */
int ib_layer_writer_new(ib_layer_writer **out, ib_store *store, const ib_layer_options *opts,
			ib_error **err);

/* Archive paths are relative ("usr/bin/x"); a leading "/", "." components
 * and repeated or trailing slashes are dropped, ".." anywhere is
 * IB_EUNSAFE, an empty path IB_EINVALID.  Nothing is written before
 * ib_layer_writer_finish, but host objects are lstat'ed when added. */

/* Add the object at host_path (lstat, never followed) as `path`.  ov may be
 * NULL.  A directory is added by itself, not recursed.  A socket is
 * silently ignored. */
int ib_layer_writer_add_path(ib_layer_writer *w, const char *path, const char *host_path,
			     const ib_layer_override *ov, ib_error **err);
/* Add everything below host_dir (not host_dir itself) under prefix ("" =
 * the layer root).  host_dir is resolved; below it symlinks are never
 * followed.  ov applies to every entry. */
int ib_layer_writer_add_tree(ib_layer_writer *w, const char *prefix, const char *host_dir,
			     const ib_layer_override *ov, ib_error **err);
/* Synthetic entries: a directory; a whiteout "a/b" -> "a/.wh.b"; an opaque
 * marker "a" -> "a/.wh..wh..opq" ("" for the root). */
int ib_layer_writer_add_dir(ib_layer_writer *w, const char *path, uint32_t mode, int64_t uid,
			    int64_t gid, ib_error **err);
int ib_layer_writer_add_whiteout(ib_layer_writer *w, const char *path, ib_error **err);
int ib_layer_writer_add_opaque(ib_layer_writer *w, const char *dir, ib_error **err);

/* Sort, write, compress, hash and commit the blob.  Frees w, on success
 * and on failure; on failure nothing is left in the store. */
int ib_layer_writer_finish(ib_layer_writer *w, ib_layer_result *out, ib_error **err);
/* Drop a writer without writing anything.  Safe on NULL. */
void ib_layer_writer_free(ib_layer_writer *w);

/* An overlayfs upper dir -> layer.  A 0:0 character device becomes the
 * whiteout ".wh.NAME"; a directory whose trusted.overlay.opaque (or, for
 * userxattr mounts, user.overlay.opaque) is "y" becomes its entry plus
 * ".wh..wh..opq"; overlay xattrs are dropped.  skip is a NULL-terminated
 * list of relative paths left out with everything below them (mount points
 * the sandbox made); it may be NULL.  Assumes the overlay was mounted
 * without redirect_dir and metacopy. */
int ib_layer_from_upper(ib_store *store, const char *upper_dir, char *const *skip,
			const ib_layer_options *opts, ib_layer_result *out, ib_error **err);

/* Compress the tar a tar_only finish wrote (tar_fd, read from offset 0 to
 * its end with pread, not closed) into a store blob with opts'
 * compression, level and threads: the same bytes, digest and size as the
 * direct path gives for the same tar.  out gets digest and size only.  On
 * failure nothing is left in the store. */
int ib_layer_compress_fd(ib_store *store, int tar_fd, const ib_layer_options *opts,
			 ib_layer_result *out, ib_error **err);

/* Copy any tar libarchive reads (compressed or not) into a normalised layer,
 * in the input's order: PAX with numeric ids, empty uname/gname, names (and
 * hardlink targets) with leading "/" and "./" stripped and ".." rejected
 * with IB_EUNSAFE, the root entry ("./") dropped, mtimes clamped, xattrs
 * filtered as above, ACLs/flags/sparse maps dropped.  in_fd is read to EOF
 * and not closed. */
int ib_layer_import(ib_store *store, int in_fd, const ib_layer_options *opts, ib_layer_result *out,
		    ib_error **err);

/* ---- trees for chroot isolation ---- */

/* Copy overlay-format layer dirs (top-most first, NULL-terminated) into the
 * existing directory root, bottom-most first, applying their whiteouts and
 * opaque dirs: a root a step may change without touching the store. */
int ib_tree_copy_layers(char *const *lowers, const char *root, ib_error **err);

/* What a tree holds (paths, inodes, owners, modes, times). */
typedef struct ib_tree_snapshot ib_tree_snapshot;
int ib_tree_snapshot_take(const char *root, ib_tree_snapshot **out, ib_error **err);
void ib_tree_snapshot_free(ib_tree_snapshot *s);

/* The changes of root since `before`, written into the empty dir upper
 * as an overlay upper dir would hold them: changed and new entries (files
 * hard-linked from root where possible) with their parent dirs, 0:0
 * character devices for deletions, opaque_xattr="y" on directories that
 * were replaced.  Entries on other filesystems (mounts) are ignored. */
int ib_tree_diff_to_upper(const char *root, const ib_tree_snapshot *before, const char *upper,
			  const char *opaque_xattr, ib_error **err);

#endif
