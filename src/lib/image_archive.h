/* Image archives: the docker-archive format (`docker save` / `docker load`)
 * and OCI archives (a tar of an OCI image layout), written from and loaded
 * into the store.
 *
 * (Named image_archive, not archive: a src/lib/archive.h would shadow
 * libarchive's <archive.h> for every module, since src/lib is on the
 * include path.)
 *
 * Loading is all-or-nothing: the archive is extracted into a private
 * directory under ROOT/tmp, then every document, blob digest, blob size,
 * diff_id and reference is checked and every layer goes through the safe
 * extractor (ib_unpack_fd) into a scratch directory; only when all of that
 * passed are blobs written into the store, and only when all blobs are
 * stored are tags set.  A refused archive leaves the tags untouched. */
#ifndef IB_IMAGE_ARCHIVE_H
#define IB_IMAGE_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"
#include "oci.h"
#include "store.h"

typedef enum { IB_ARCHIVE_DOCKER, IB_ARCHIVE_OCI } ib_archive_format;

/* Caps on what an archive may hold. */
#define IB_ARCHIVE_MAX_MEMBERS 100000
#define IB_ARCHIVE_MAX_NAME 4096
#define IB_ARCHIVE_MAX_LAYOUT_FILE 4096 /* oci-layout */
/* Total bytes of regular members (after decompression of the archive). */
#define IB_ARCHIVE_MAX_BYTES (UINT64_C(64) << 30)

/* Write the images named by refs[0..n_refs) (anything ib_store_image_load
 * accepts) into a new archive at path.  Output goes to PATH.tmp.PID and is
 * renamed over path only when complete; on failure the temp file is
 * removed and path is untouched.  path "-" writes to stdout (not atomic).
 * Every blob is re-hashed while it is copied: a corrupt store blob fails
 * the save with IB_EDIGEST.  A reference that is a tag in the store is
 * recorded in the archive (RepoTags / ref.name); digest references give
 * untagged entries. */
int ib_archive_save(ib_store *s, const char *path, ib_archive_format format, char *const *refs,
		    size_t n_refs, ib_error **err);

/* ib_archive_save into an open file descriptor (a pipe, a socket): the
 * stream is written as it is produced, nothing is buffered whole.  fd is
 * left open. */
int ib_archive_save_fd(ib_store *s, int fd, ib_archive_format format, char *const *refs,
		       size_t n_refs, ib_error **err);

typedef struct ib_archive_loaded {
	char *name; /* full normalised reference now tagged, or NULL (untagged) */
	char digest[IB_DIGEST_BUFLEN]; /* manifest (or index) digest */
} ib_archive_loaded;

/* Load every image of the docker or OCI archive at path ("-" = stdin; any
 * compression libarchive reads) into the store and tag it.  On success
 * *out holds one entry per tag set (or per untagged image), in archive
 * order; free with ib_archive_loaded_free.  On failure nothing is tagged
 * (blobs already written are unreferenced and go with the next prune).
 * Errors: IB_EINVALID (not an archive, malformed document or reference),
 * IB_EDIGEST (a blob or diff_id does not match), IB_EUNSAFE (a hostile
 * member name or layer entry), IB_ETOOLARGE (a cap). */
int ib_archive_load(ib_store *s, const char *path, ib_archive_loaded **out, size_t *n_out,
		    ib_error **err);
void ib_archive_loaded_free(ib_archive_loaded *l, size_t n);

/* ---- the pieces, exposed for the unit tests ---- */

/* A member name we are willing to handle: relative, at most
 * IB_ARCHIVE_MAX_NAME bytes, no "..", "." or empty components (a single
 * leading "./" and a trailing "/" are tolerated by the extractor, which
 * strips them before calling this), no control characters. IB_EUNSAFE
 * otherwise. */
int ib_archive_check_member_name(const char *name, ib_error **err);

/* The regular members of an archive, extracted to files in a directory.
 * Symlinks and hardlinks between members are resolved lexically inside
 * the archive; devices, fifos and links leading outside are refused. */
typedef struct ib_archive_members ib_archive_members;

/* Extract the archive at path ("-" = stdin) into dir (which must exist and
 * should be empty): each regular member becomes a file dir/mN, hashed while
 * written.  Nothing is ever created under a member's own name, so member
 * names cannot influence where data lands.  On failure *out is NULL and the
 * files written so far stay in dir (the caller removes dir).  More than
 * IB_ARCHIVE_MAX_MEMBERS members or IB_ARCHIVE_MAX_BYTES of content is
 * IB_ETOOLARGE. */
int ib_archive_extract(const char *path, const char *dir, ib_archive_members **out, ib_error **err);
void ib_archive_members_free(ib_archive_members *m);
/* Look up a member (following links).  *file_out (borrowed) is the
 * extracted file; size/digest may be NULL.  IB_ENOTFOUND when absent,
 * IB_EINVALID for a link loop or a link to a non-regular member. */
int ib_archive_member(ib_archive_members *m, const char *name, const char **file_out,
		      int64_t *size_out, const char **digest_out, ib_error **err);
/* Read a member of at most cap bytes (IB_ETOOLARGE otherwise); *out is
 * NUL-terminated, caller frees. */
int ib_archive_member_read(ib_archive_members *m, const char *name, size_t cap, char **out,
			   size_t *len_out, ib_error **err);

/* One image of a docker-archive manifest.json. */
typedef struct ib_docker_archive_image {
	char *config;	  /* member name of the config */
	char **repo_tags; /* NULL-terminated, full normalised references (may be empty) */
	char **layers;	  /* member names, n_layers of them */
	size_t n_layers;
} ib_docker_archive_image;

/* Parse manifest.json: a non-empty array of {"Config": NAME, "RepoTags":
 * [REF...] or null, "Layers": [NAME...]}.  Member names are checked with
 * ib_archive_check_member_name; RepoTags must be valid references with a
 * tag (they are returned normalised). */
int ib_docker_manifest_parse(const char *buf, size_t len, ib_docker_archive_image **out,
			     size_t *n_out, ib_error **err);
void ib_docker_manifest_free(ib_docker_archive_image *imgs, size_t n);

/* Check an oci-layout file: {"imageLayoutVersion": "1.0.x"}. */
int ib_oci_layout_check(const char *buf, size_t len, ib_error **err);

/* One entry of an OCI layout's index.json. */
typedef struct ib_oci_archive_entry {
	char *name; /* full normalised reference from the annotations, or NULL */
	ib_descriptor desc;
} ib_oci_archive_entry;

/* Parse index.json of an OCI layout.  Each entry must be a manifest or an
 * index; the name comes from "io.containerd.image.name" when present, else
 * "org.opencontainers.image.ref.name" normalised as a reference (a name
 * that is not a valid reference is IB_EINVALID). */
int ib_oci_archive_index_parse(const char *buf, size_t len, ib_oci_archive_entry **out,
			       size_t *n_out, ib_error **err);
void ib_oci_archive_entries_free(ib_oci_archive_entry *e, size_t n);

#endif
