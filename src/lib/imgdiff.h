/* Image filesystems read straight from the layer blobs in the store, with
 * libarchive; nothing is extracted.
 *
 *  - ib_layer_walk: every entry of one layer tar, with a digest of its
 *    data, the blob's own digest checked while it is streamed;
 *  - ib_image_diff: two images flattened (layers in order, whiteouts and
 *    opaque directories applied) and compared path by path.
 *
 * Used by `imgbuild diff` and by the builder's --check. */
#ifndef IB_IMGDIFF_H
#define IB_IMGDIFF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "store.h"

/* One tar entry as ib_layer_walk reports it.  Every pointer is borrowed and
 * valid only during the callback. */
typedef struct ib_layer_entry {
	/* Normalised name: leading "./" and "/" and trailing "/" dropped, so
	 * "./usr/bin/" is "usr/bin"; "" for the root entry ("./"). */
	const char *path;
	const char *raw_path; /* the name exactly as in the tar ("" if it has none) */
	mode_t mode;	      /* file type and permission bits, S_IFREG | 0644 ... */
	int64_t uid, gid;
	int64_t size;  /* the header's size field */
	int64_t mtime; /* seconds */
	dev_t rdev;    /* character and block devices */
	/* A symlink's target, else NULL. */
	const char *symlink;
	/* A hardlink's target as written in the tar (not normalised), else
	 * NULL; the entry's mode then says what the tar says, usually S_IFREG. */
	const char *hardlink;
	/* "sha256:..." of the entry's data in the tar: a regular file's
	 * content; the digest of nothing for directories, symlinks, devices
	 * and (in the tars layer.c writes) hardlinks. */
	const char *content;
	/* "sha256:..." of the entry's extended attributes (name, NUL, value,
	 * in tar order), or "" when it has none. */
	const char *xattrs;
} ib_layer_entry;

/* Called for each entry, in tar order.  Return 0 to go on; a negative IB_E*
 * code (with *err set) stops the walk, which then returns that code. */
typedef int (*ib_layer_walk_fn)(const ib_layer_entry *e, void *payload, ib_error **err);

/* Read the layer blob blob_digest (compressed or not) from the store and
 * call cb for each entry.  The blob is hashed while it is read, to its last
 * byte; expect_size >= 0 is checked against the bytes read too.
 *
 * The entries reach cb before the blob is known to be intact: a caller that
 * keeps them must drop them when this fails.  Errors, all prefixed with
 * "layer DIGEST: ": IB_ENOTFOUND the blob is missing, IB_EDIGEST its
 * content or size does not match (also when it made the tar unreadable),
 * IB_EINVALID an intact blob that is not a tar, or whatever cb returned. */
int ib_layer_walk(ib_store *s, const char *blob_digest, int64_t expect_size, ib_layer_walk_fn cb,
		  void *payload, ib_error **err);

/* One difference between two image filesystems. */
typedef struct ib_diff_entry {
	/* 'A' only in the second image (added), 'D' only in the first
	 * (deleted), 'C' in both but type, content, link target, mode or owner
	 * differ.  Modification times are not compared. */
	char kind;
	char *path; /* normalised, relative: "etc/motd" (owned by the array) */
} ib_diff_entry;

/* Flatten the images ref1 and ref2 (any reference ib_store_image_load
 * takes) and compare them.  A hardlink counts as its target's content and
 * metadata.  *out gets the differences sorted bytewise by path (NULL when
 * there are none), *n_out their number; free with ib_diff_entries_free.  On
 * failure *out is NULL, *n_out 0, and the error names the reference and
 * layer. */
int ib_image_diff(ib_store *s, const char *ref1, const char *ref2, ib_diff_entry **out,
		  size_t *n_out, ib_error **err);
/* The same for ref1 in store s1 and ref2 in store s2. */
int ib_image_diff_stores(ib_store *s1, const char *ref1, ib_store *s2, const char *ref2,
			 ib_diff_entry **out, size_t *n_out, ib_error **err);
/* Free the array and its paths.  Safe on NULL. */
void ib_diff_entries_free(ib_diff_entry *v, size_t n);

/* Every difference between two stored images, layer by layer, tar entry
 * by tar entry (build --check): one line per differing path, e.g.
 * "layer 2: usr/bin/tool: content, mtime (1700000000 vs 1700000042)", or
 * "layer 3: tmp/x: only in the second build"; layer count and config
 * differences get a line of their own.  At most limit lines go to *lines
 * (NULL-terminated, caller frees with ib_strv_free; NULL when identical),
 * *n_total counts them all. */
int ib_image_differences(ib_store *s, const char *digest_a, const char *digest_b, size_t limit,
			 char ***lines, size_t *n_total, ib_error **err);

#endif
