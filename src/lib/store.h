/* The local store at --root:
 *
 *   ROOT/oci/            OCI image layout (oci-layout, index.json, blobs/sha256/)
 *                        readable as-is by skopeo/umoci/podman (oci:ROOT/oci:NAME)
 *   ROOT/layers/HEX/     unpacked layers (HEX = diff_id hex), overlay lower dirs
 *   ROOT/cache/          step cache, stat cache, registry blob locations,
 *                        cache mounts, layer sizes, compressed layer copies
 *                        (owned by cache.c, layout in cache.h)
 *   ROOT/tmp/            in-flight temp files; anything here is garbage
 *   ROOT/remote-blobs.json  layer blobs of tagged images that are not in
 *                        ROOT/oci/blobs but in a registry repository (a
 *                        build whose steps all hit a --cache-from cache tags
 *                        its image without downloading them):
 *                        {"sha256:…": {"repository": "host/path", "size",
 *                        "diff_id"}}; fetched on first use (ib_store_blob_open),
 *                        dropped by prune once fetched or unreferenced
 *   ROOT/remote-blobs.lock  serialises remote-blobs.json updates
 *   ROOT/index.lock      serialises index.json updates
 *   ROOT/gc.lock         shared by every command using blobs, exclusive for prune
 *
 * Blobs are written to ROOT/tmp, hashed while written, fsync'd and renamed
 * into place; a blob path therefore only ever holds complete content.
 * index.json is replaced atomically under index.lock. Tags are stored as
 * manifests[] entries with the annotation org.opencontainers.image.ref.name
 * = the full normalised reference ("docker.io/library/alpine:latest").
 * kill -9 at any point leaves at worst stray files in ROOT/tmp. */
#ifndef IB_STORE_H
#define IB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"
#include "oci.h"

typedef struct ib_store ib_store;

/* Open (creating when needed) the store at root and take a shared gc lock
 * held until ib_store_free. */
int ib_store_open(ib_store **out, const char *root, ib_error **err);
void ib_store_free(ib_store *s);
const char *ib_store_root(const ib_store *s);
/* ROOT/oci — the OCI layout directory. */
const char *ib_store_layout_dir(const ib_store *s);
/* A fresh unique path under ROOT/tmp (not created). Caller frees. */
char *ib_store_tmp_path(ib_store *s, const char *prefix);

/* ---- blobs ---- */
typedef struct ib_blob_writer ib_blob_writer;

int ib_blob_writer_new(ib_blob_writer **out, ib_store *s, ib_error **err);
int ib_blob_writer_write(ib_blob_writer *w, const void *data, size_t len, ib_error **err);
/* Bytes written so far. */
int64_t ib_blob_writer_size(const ib_blob_writer *w);
/* Finish: fsync, and rename to blobs/sha256/HEX.  When expect_digest is
 * non-NULL the content must match it (and expect_size when >= 0), else
 * IB_EDIGEST and nothing is stored.  digest_out/size_out may be NULL.
 * Always frees w, on success and on failure. */
int ib_blob_writer_commit(ib_blob_writer *w, const char *expect_digest, int64_t expect_size,
			  char digest_out[IB_DIGEST_BUFLEN], int64_t *size_out, ib_error **err);
/* Discard: removes the temp file and frees w.  Safe on NULL. */
void ib_blob_writer_abort(ib_blob_writer *w);

/* Store a buffer as a blob. */
int ib_store_blob_put(ib_store *s, const void *data, size_t len, char digest_out[IB_DIGEST_BUFLEN],
		      ib_error **err);
bool ib_store_blob_exists(ib_store *s, const char *digest);
/* Path of a blob (whether or not it exists). Caller frees. */
char *ib_store_blob_path(ib_store *s, const char *digest);
/* Open a blob for streaming; *size_out gets its size.  The caller must
 * verify the digest of what it reads (e.g. ib_digest while streaming).
 * A layer blob that is absent but has a remote record is fetched first
 * (ib_store_blob_fetch). */
int ib_store_blob_open(ib_store *s, const char *digest, int *fd_out, int64_t *size_out,
		       ib_error **err);
/* Read a whole blob of at most max bytes, verifying its digest (IB_EDIGEST
 * on mismatch).  *out is NUL-terminated, caller frees. */
int ib_store_blob_read(ib_store *s, const char *digest, size_t max, char **out, size_t *len_out,
		       ib_error **err);
/* Re-hash one blob: 0 ok, IB_EDIGEST corrupt, IB_ENOTFOUND missing. */
int ib_store_blob_verify(ib_store *s, const char *digest, ib_error **err);

/* ---- tags (index.json) ---- */
typedef struct ib_store_tag {
	char *name;	    /* full normalised reference */
	ib_descriptor desc; /* the manifest (or index) descriptor */
} ib_store_tag;

int ib_store_tags(ib_store *s, ib_store_tag **out, size_t *n_out, ib_error **err);
void ib_store_tags_free(ib_store_tag *tags, size_t n);
/* Point name at desc (replacing any previous target of name). The
 * manifest blob and everything it references must already be stored. */
int ib_store_tag_set(ib_store *s, const char *name, const ib_descriptor *desc, ib_error **err);
/* IB_ENOTFOUND when name is not tagged. */
int ib_store_tag_remove(ib_store *s, const char *name, ib_error **err);
/* Find a tag by full name; IB_ENOTFOUND when absent. out is filled with
 * copies (free with ib_descriptor_clear). */
int ib_store_tag_get(ib_store *s, const char *name, ib_descriptor *out, ib_error **err);

/* ---- images ---- */
typedef struct ib_image {
	ib_descriptor desc; /* the manifest's descriptor */
	ib_manifest *manifest;
	json_t *config;	    /* parsed config, owned */
	char *manifest_raw; /* exact bytes of the manifest */
	size_t manifest_len;
} ib_image;

/* Resolve a user reference (short or full form, or a digest / unique
 * digest prefix of a stored manifest) to an image: manifest and config are
 * read and verified.  An index tag resolves to the entry for the host
 * platform (linux/amd64 etc.). */
int ib_store_image_load(ib_store *s, const char *ref, ib_image **out, ib_error **err);
/* Load by manifest digest. */
int ib_store_image_load_digest(ib_store *s, const char *digest, ib_image **out, ib_error **err);
void ib_image_free(ib_image *img);

/* Store config + manifest blobs for an image whose layer blobs are already
 * stored (or have a remote record, or URLs); fills *desc_out with the
 * manifest descriptor (OCI media type unless docker is true). */
int ib_store_image_write(ib_store *s, json_t *config, const ib_descriptor *layers, size_t n_layers,
			 json_t *annotations, ib_descriptor *desc_out, ib_error **err);

/* ---- unpacked layers ---- */
/* ROOT/layers/HEX for a diff_id (whether or not it exists). Caller frees. */
char *ib_store_layer_dir(ib_store *s, const char *diff_id);
bool ib_store_layer_unpacked(ib_store *s, const char *diff_id);
/* Move dir, a layer unpacked in overlay format under ROOT/tmp (same file
 * system), into place as ROOT/layers/HEX.  When that layer is already
 * there (another build won) nothing moves and dir is the caller's to
 * remove, as it is on failure. */
int ib_store_layer_install(ib_store *s, const char *dir, const char *diff_id, ib_error **err);

/* ---- maintenance ---- */
typedef struct ib_prune_options {
	/* Extra blob digests to keep (e.g. referenced by the step cache). */
	char **keep_digests;
	/* Extra diff_ids whose unpacked dirs to keep. */
	char **keep_layers;
	bool dry_run;
	/* Directories removed whole while the exclusive gc lock is held, when
	 * no build can be using them (the cache mounts); NULL-terminated. */
	char **remove_dirs;
} ib_prune_options;
#define IB_PRUNE_OPTIONS_INIT                                                                      \
	{                                                                                          \
		.dry_run = false                                                                   \
	}

typedef struct ib_prune_stats {
	uint64_t blobs_removed, bytes_removed, layers_removed, tmp_removed;
} ib_prune_stats;

/* Takes the exclusive gc lock (waits for other users to finish), removes
 * every blob not reachable from a tag or keep_digests, unpacked layers not
 * used by any remaining image or keep_layers, and ROOT/tmp contents; drops
 * the remote records of layers no tag uses or that are stored now. */
int ib_store_prune(ib_store *s, const ib_prune_options *opts, ib_prune_stats *stats,
		   ib_error **err);

/* Re-hash every blob. Calls cb for each corrupt or missing blob (referenced
 * blobs that are absent count as missing, unless a remote record names
 * them: see ib_store_remote_referenced).  Returns the number of
 * problems (>= 0), or a negative error. */
typedef void (*ib_verify_cb)(const char *digest, const char *problem, void *payload);
int ib_store_verify(ib_store *s, ib_verify_cb cb, void *payload, ib_error **err);
/* The store root and the directories holding unpacked layers and run
 * steps (layers, tmp, cache) must not be reachable by other users: one cb
 * call per directory whose mode has group/other bits (cb gets its path);
 * returns the number of problems.  ib_store_open fixes them when it can;
 * those it fixed are reported too ("mode was 0755 ...: changed to 0700"). */
int ib_store_check_permissions(ib_store *s, ib_verify_cb cb, void *payload);

/* Host platform in OCI terms ("linux", "amd64", variant or NULL). */
void ib_host_platform(const char **os, const char **arch, const char **variant);

/* ---- additions ---- */

/* Notes on the functions above, as implemented:
 * - ib_store_prune drops this handle's shared gc lock and then waits for the
 *   exclusive one (flock cannot upgrade atomically); it takes the shared
 *   lock back before returning.  A second handle open in the same process
 *   would make it wait forever: prune with the process's only handle.
 *   keep_digests are kept as they are (not followed into manifests).  A
 *   tagged manifest or config that is present but corrupt stops prune with
 *   an error rather than dropping what it references.
 * - ib_store_blob_path / ib_store_layer_dir of an invalid digest give a path
 *   inside the store that never exists, never one built from the input.
 * - ib_store_blob_read with max == 0 reads without a cap.
 * - ib_store_verify does not count absent children of a tagged index as
 *   missing: a pull stores only the host platform's manifest. */

/* As ib_store_image_load / ib_store_image_load_digest, but an index
 * resolves to the entry for os/arch/variant (variant may be NULL) instead of
 * the host platform.  IB_ENOTFOUND when the index has no such entry. */
int ib_store_image_load_platform(ib_store *s, const char *ref, const char *os, const char *arch,
				 const char *variant, ib_image **out, ib_error **err);
int ib_store_image_load_digest_platform(ib_store *s, const char *digest, const char *os,
					const char *arch, const char *variant, ib_image **out,
					ib_error **err);

/* Map a uname(2) machine string to OCI terms: x86_64 -> amd64, aarch64 ->
 * arm64/v8, armv7l -> arm/v7, i686 -> 386 ...; an unknown machine is
 * returned as is (*arch then points at machine). */
void ib_platform_from_machine(const char *machine, const char **arch, const char **variant);

/* Index of the entry of idx that best matches os/arch/variant, or -1.  An
 * exact variant match wins over an entry without variant (arm64 images
 * usually omit "v8"); a different variant never matches. */
int ib_platform_select(const ib_index *idx, const char *os, const char *arch, const char *variant);

/* ---- names ---- */
/* The tags (full names) that the short name short_name, as the user wrote
 * it, names under some registry (ib_ref_short_matches).  *out is
 * NULL-terminated; free with ib_strv_free. */
int ib_store_short_name_matches(ib_store *s, const char *short_name, char ***out, ib_error **err);
/* Up to max tags (familiar form) whose names are a few edits from ref's,
 * closest first, as "a, b"; NULL when there is none (also when the store
 * cannot be read).  Caller frees. */
char *ib_store_similar_names(ib_store *s, const char *ref, size_t max);

/* ---- disk usage (imgbuild df) ---- */
typedef struct ib_store_usage_image {
	char *name;		       /* familiar tag name */
	char digest[IB_DIGEST_BUFLEN]; /* manifest (or index) */
	uint64_t size;		       /* its blobs: manifest, config, layers */
	uint64_t shared, unique;       /* of size: blobs other images use too / only it */
} ib_store_usage_image;

typedef struct ib_store_usage {
	ib_store_usage_image *images; /* one per tag */
	size_t n_images;
	size_t n_distinct_images; /* different manifests */
	uint64_t images_bytes;	  /* blobs reachable from tags, once each */
	/* of those: used by one image / by several (layers, configs) */
	uint64_t unique_blobs, unique_bytes, shared_blobs, shared_bytes;
	uint64_t cache_blobs, cache_bytes;		 /* blobs only the step cache uses */
	uint64_t unreferenced_blobs, unreferenced_bytes; /* blobs nothing uses */
	uint64_t unpacked, unpacked_bytes;		 /* ROOT/layers entries */
	uint64_t unpacked_unused, unpacked_unused_bytes; /* of those: prune removes */
	uint64_t tmp_entries, tmp_bytes;		 /* ROOT/tmp */
	/* layers of tagged images still only in a registry (remote records):
	 * their compressed size, not counted in images_bytes */
	uint64_t remote_layers, remote_bytes;
} ib_store_usage;

/* What the store holds, for `df`: the step cache's blobs and diff_ids come
 * from the caller (ib_cache_referenced; may be NULL).  Sizes are apparent
 * sizes of regular files and symlinks. */
int ib_store_usage_get(ib_store *s, char **cache_digests, char **cache_diff_ids, ib_store_usage *u,
		       ib_error **err);
void ib_store_usage_free(ib_store_usage *u);
/* Apparent size of the regular files and symlinks under path (0 when it
 * does not exist). */
uint64_t ib_dir_usage(const char *path);
/* Number of entries in the directory path (0 when it does not exist). */
size_t ib_dir_entries(const char *path);

/* Remove the entries of ROOT/tmp this process made (ib_store_tmp_path
 * names carry the pid), for an interrupted build; returns how many. */
int ib_store_tmp_remove_own(ib_store *s);

/* *out = the uncompressed size of the layers' content (what docker and
 * podman show as an image's size), from ROOT/cache/layer-sizes.json, a
 * blob not recorded there being decompressed once and recorded.  A layer
 * that is not downloaded (remote record) is never fetched for this: its
 * compressed size is counted and the return value says how many such
 * layers there were (0: the size is exact). */
int ib_store_content_sizes(ib_store *s, const ib_descriptor *layers, size_t n, uint64_t *out,
			   ib_error **err);

/* ---- remote layers (lazily tagged images) ----
 * A layer blob of a tagged image may be absent from ROOT/oci/blobs when a
 * remote record says which registry repository holds it.  The store does
 * not talk to registries: whoever opens it installs a fetcher (the CLI
 * does, with the registry options of the command line). */
typedef struct ib_store_remote {
	char digest[IB_DIGEST_BUFLEN];
	char *repository;		/* "host/path" */
	int64_t size;			/* of the blob, as its descriptor says */
	char diff_id[IB_DIGEST_BUFLEN]; /* of its content, "" when not known */
	bool corrupt; /* a fetch got other bytes: builds must not reuse it */
} ib_store_remote;

void ib_store_remote_clear(ib_store_remote *r);
/* Record that each of recs[0..n) is held by its repository (replacing an
 * older record of the same digest), under ROOT/remote-blobs.lock. */
int ib_store_remote_add(ib_store *s, const ib_store_remote *recs, size_t n, ib_error **err);
/* The record of digest: 0 with *out filled (free with
 * ib_store_remote_clear), IB_ENOTFOUND when there is none. */
int ib_store_remote_get(ib_store *s, const char *digest, ib_store_remote *out);
/* A blob that is absent and has a remote record. */
bool ib_store_blob_is_remote(ib_store *s, const char *digest);
/* A blob that is absent and whose registry copy was found corrupt by a
 * fetch (wrong digest or content): a build treats its step as a miss. */
bool ib_store_blob_remote_corrupt(ib_store *s, const char *digest);

/* Download rec->digest from rec->repository into the store (through
 * ib_blob_writer_commit with rec->digest and rec->size, so only verified
 * content is ever stored). */
typedef int (*ib_store_fetch_fn)(ib_store *s, const ib_store_remote *rec, void *payload,
				 ib_error **err);
/* Install (fn NULL: remove) the fetcher; payload must outlive the handle. */
void ib_store_set_blob_fetcher(ib_store *s, ib_store_fetch_fn fn, void *payload);
/* Make sure a blob is stored: 0 when it is; else, when a remote record
 * names it, fetch it with the fetcher and check its content against the
 * record's diff_id (a mismatch removes it again: IB_EDIGEST).  Errors are
 * one line naming the layer, an image using it and the registry; nothing
 * but a complete, verified blob is ever left in the store. */
int ib_store_blob_fetch(ib_store *s, const char *digest, ib_error **err);
/* The digest of the decompressed content (the diff_id) of the stored layer
 * blob digest, never fetching it; IB_EINVALID when it does not
 * decompress. */
int ib_store_layer_content_digest(ib_store *s, const char *digest, char out[IB_DIGEST_BUFLEN],
				  ib_error **err);
/* Fetch every layer of img that is only remote; *n_fetched (may be NULL)
 * counts them. */
int ib_store_image_fetch(ib_store *s, const ib_image *img, size_t *n_fetched, ib_error **err);
/* The remote records of layers tagged images use and the store lacks
 * (what verify reports as "remote"), sorted by digest; free each with
 * ib_store_remote_clear and the array with free. */
int ib_store_remote_referenced(ib_store *s, ib_store_remote **out, size_t *n_out, ib_error **err);

#endif
