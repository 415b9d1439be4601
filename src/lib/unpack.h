/* Safe layer extraction (SPEC §6).
 *
 * A layer is a tar stream (gzip, zstd or uncompressed, auto-detected; xz and
 * bzip2 too, for old docker archives) from an untrusted source.  Every
 * filesystem operation is done by this module relative to a directory fd of
 * the destination: the parent of each entry is opened with
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so symlinks already in the
 * tree are resolved as if dest_dir were "/", and the last component is then
 * handled with *at() calls that never follow a symlink.  Nothing is ever written
 * outside dest_dir.  Requires Linux >= 5.6 (openat2); there is no unsafe fallback.
 *
 * Rejected with IB_EUNSAFE and a message naming the entry: absolute names, any
 * ".." component, empty names, a non-directory entry for the root itself,
 * hardlinks whose target is absolute, contains "..", or is a directory,
 * whiteouts naming "." or "..", an opaque marker inside a symlink, device
 * numbers out of range (major > 0xfff, minor > 0xfffff).  A stream that is not
 * a tar archive, or is truncated, is IB_EINVALID ("not a valid tar archive:
 * ...").  More than max_bytes of decompressed data is IB_ETOOLARGE.
 *
 * Symlinks are created with their target text as-is: it may be absolute or
 * contain "..", which is harmless because every later lookup through it is
 * resolved inside dest_dir.  An entry whose path exists with a different type
 * replaces it (a directory replaced by a non-directory loses its whole tree); an
 * existing directory met by a directory entry keeps its contents and gets the
 * new metadata.  Ownership is applied before the mode (chown clears setuid),
 * xattrs (except trusted.overlay.*, which a layer may not forge) between the
 * two; directory modes and mtimes are applied at the end, deepest first.
 * Extended ACLs in the tar are not restored. */
#ifndef IB_UNPACK_H
#define IB_UNPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "error.h"

struct archive;

typedef enum {
	/* Layers applied on top of each other into one tree: ".wh.NAME" deletes
	 * NAME (recursively) from dest, ".wh..wh..opq" deletes the children of
	 * its directory that were not created by this same layer. */
	IB_WHITEOUT_APPLY,
	/* Each layer in its own directory, used as an overlayfs lower dir:
	 * ".wh.NAME" becomes a 0:0 character device NAME and ".wh..wh..opq" sets
	 * the xattr trusted.overlay.opaque="y" on its directory. */
	IB_WHITEOUT_OVERLAY,
} ib_whiteout_mode;

typedef struct ib_unpack_options {
	ib_whiteout_mode whiteouts;
	uint64_t max_bytes; /* cap on total decompressed bytes, 0 = 64 GiB; over it: IB_ETOOLARGE */
	bool same_owner;    /* chown entries to the tar's uid/gid (default true when root) */
} ib_unpack_options;

#define IB_UNPACK_OPTIONS_INIT                                                                     \
	{                                                                                          \
		.whiteouts = IB_WHITEOUT_APPLY, .same_owner = true                                 \
	}
#define IB_UNPACK_DEFAULT_MAX_BYTES (UINT64_C(64) << 30)

typedef struct ib_unpack_stats {
	uint64_t entries; /* tar entries processed (whiteouts included) */
	uint64_t bytes;	  /* decompressed tar bytes read (headers and padding included) */
	/* gzip members decompressed whole by libdeflate (imgbuild's own 1 MiB
	 * members); the rest of a gzip stream goes through zlib */
	uint64_t gzip_members;
} ib_unpack_stats;

/* Read a (gzip/zstd/uncompressed, auto-detected) tar stream from fd and apply
 * it to dest_dir, which must exist.  The fd is not closed, not even on error.
 * Never writes outside dest_dir.  On error dest_dir may hold a partial tree
 * (the caller unpacks into a temp dir and renames on success).  opts may be
 * NULL (defaults; same_owner only when running as root); stats may be NULL and
 * is filled on success and on failure.  An empty stream is an empty layer. */
int ib_unpack_fd(int fd, const char *dest_dir, const ib_unpack_options *opts,
		 ib_unpack_stats *stats, ib_error **err);

/* Same from an already-opened libarchive reader (used when the caller wants to
 * hash the stream itself).  The reader must have tar support enabled; it stays
 * owned by the caller and is not closed.  Reading stops at the tar end-of-
 * archive marker: a caller hashing the raw stream must drain what follows. */
int ib_unpack_archive(struct archive *a, const char *dest_dir, const ib_unpack_options *opts,
		      ib_unpack_stats *stats, ib_error **err);

/* A directory on the way to the files of ib_unpack_from_files, with the
 * metadata the layer gives it. */
typedef struct ib_unpack_dir {
	const char *path; /* in the layer, relative ("usr/bin") */
	uint32_t mode;	  /* permission bits */
	int64_t uid, gid;
} ib_unpack_dir;

/* One entry of ib_unpack_from_files, with the owner and mode the layer's tar
 * gives it. */
typedef struct ib_unpack_file {
	const char *path; /* in the layer, relative ("usr/bin/x") */
	/* The source on the host: contents, symlink target and kept xattrs are
	 * read from it; NULL for a directory made here (0755 file type). */
	const char *host;
	struct stat st; /* lstat of host: type, rdev, mtime, hardlink identity */
	uint32_t mode;	/* permission bits */
	int64_t uid, gid;
	/* NULL, or a regular file of an earlier unpacked layer with the same
	 * contents and metadata: hardlinked instead of copied when it can be. */
	const char *reuse;
} ib_unpack_file;

/* Lay out dest_dir (created; it must not hold anything yet) the way
 * ib_unpack_fd with IB_WHITEOUT_OVERLAY lays out the tar that the layer
 * writer makes of the same entries (SOURCE_DATE_EPOCH epoch): dirs first,
 * shallowest first, then files in order; owners before modes (chown clears
 * setuid), kept xattrs (ib_layer_keeps_xattr) best effort, regular files
 * with several links as hardlinks of the first entry of their inode, mtimes
 * clamped to epoch (dirs and directories without host get epoch), directory
 * mtimes last, deepest first.  Sockets are skipped, as the tar skips them.
 * Entries are written by path: a set where a path comes twice or lies below
 * a non-directory entry is refused (IB_EUNSAFE) before anything is written.
 * On error dest_dir may hold a partial tree (the caller removes it). */
int ib_unpack_from_files(const char *dest_dir, const ib_unpack_dir *dirs, size_t n_dirs,
			 const ib_unpack_file *files, size_t n_files, int64_t epoch,
			 ib_error **err);

/* Refuse (IB_EINVALID, naming the start of the path) a normalised layer
 * path ("a/b/c") that no file system could hold: "/" + path over PATH_MAX
 * or a component over NAME_MAX.  Layers are checked by every reader (import,
 * load, unpack) so that such an image is never tagged. */
int ib_unpack_check_path(const char *path, ib_error **err);

#endif
