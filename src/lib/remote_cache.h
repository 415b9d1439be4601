/* The step cache shared through a registry (--cache-from / --cache-to);
 * the format is described in docs/remote-cache.md.
 *
 *   record  one immutable OCI manifest per step key, tagged
 *           "sha256-<key hex>": config = the step's cache entry (JSON,
 *           IB_RCACHE_STEP_TYPE), layers = the step's layer blob with its
 *           diff_id in an annotation
 *   index   one OCI image index per cache reference (its tag, "index" when
 *           the reference names none) listing the records, each with the
 *           key and the layer descriptor in annotations, so one GET of
 *           the index decides every hit; writers merge and rewrite it
 *
 * Entries are the step cache's JSON: {"key", "layer": {"digest",
 * "diff_id", "size", "mediaType"}, "created_by"[, "position", "inputs"]}:
 * position = "RECIPE-NAME/STAGE/INDEX", inputs = the --explain record. */
#ifndef IB_REMOTE_CACHE_H
#define IB_REMOTE_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "digest.h"
#include "error.h"
#include "registry.h"
#include "store.h"

#define IB_RCACHE_STEP_TYPE "application/vnd.imgbuild.cache.step.v1+json"
#define IB_RCACHE_INDEX_TYPE "application/vnd.imgbuild.cache.index.v1+json"
#define IB_RCACHE_MOUNT_TYPE "application/vnd.imgbuild.cache.mount.v1+json"
/* Index entries kept (newest first); older records stay reachable by tag. */
#define IB_RCACHE_INDEX_MAX 2000

/* Parse a --cache-from/--cache-to value: "REF", "REF,mode=max" or
 * BuildKit's "type=registry,ref=REF[,mode=min|max]".  *ref_out is the
 * normalised "host/path:tag" (tag "index" when REF has none; caller
 * frees); *mode_out is 0 (min), 1 (max) or -1 (not given). */
int ib_rcache_spec_parse(const char *s, char **ref_out, int *mode_out, ib_error **err);

/* The record tag of a step key: "sha256-<hex>" (caller frees). */
char *ib_rcache_key_tag(const char *key);

/* Encode a record: the config blob (*config_out, JSON) and the manifest
 * referring to it (config_digest its digest).  Both are the caller's. */
int ib_rcache_record_encode(json_t *entry, char **config_out, size_t *config_len,
			    char config_digest[IB_DIGEST_BUFLEN], char **manifest_out,
			    size_t *manifest_len, ib_error **err);
/* The entry described by a record manifest (layer from the manifest,
 * created_by from its annotations); the manifest must name key. */
int ib_rcache_record_decode(const char *body, size_t len, const char *key, json_t **entry_out,
			    ib_error **err);

/* Index entries: an object key -> entry plus "record": {"digest",
 * "size"} (the record manifest).  Order of the object = newest first. */
int ib_rcache_index_decode(const char *body, size_t len, json_t **entries_out, ib_error **err);
char *ib_rcache_index_encode(json_t *entries, size_t *len_out);
/* Entries of newer first, then those of older not in newer, at most
 * IB_RCACHE_INDEX_MAX (new reference). */
json_t *ib_rcache_index_merge(json_t *newer, json_t *older);

/* ---- a cache reference on a registry ---- */

typedef struct ib_rcache ib_rcache;

/* Connect (credentials and TLS as pulls) and fetch the index: one
 * request after authentication; a missing index is an empty one.  push:
 * ask for push access (--cache-to). */
int ib_rcache_open(ib_rcache **out, const char *ref, bool push, const ib_registry_options *o,
		   ib_error **err);
void ib_rcache_free(ib_rcache *rc);
/* "host/path" of the cache repository. */
const char *ib_rcache_repository(const ib_rcache *rc);
/* The entry for key: from the index, else its record tag (one GET).
 * 0 with *entry_out NULL on a miss; < 0 when the registry failed. */
int ib_rcache_lookup(ib_rcache *rc, const char *key, json_t **entry_out, ib_error **err);
/* Decide every key of keys (an array of strings) at once, before the
 * build asks for them one by one: the index (fetched by ib_rcache_open)
 * answers the keys it lists; the others cost one tag listing of the
 * repository, plus one GET per listed record the index lacks.  Later
 * ib_rcache_lookup calls for these keys make no request.  *missing_out
 * (caller's) = the keys without an entry here. */
int ib_rcache_prefetch(ib_rcache *rc, json_t *keys, json_t **missing_out, ib_error **err);
/* Requests made so far for the index, tag listings and records (the
 * session's ping and authentication not counted). */
int ib_rcache_requests(const ib_rcache *rc);
/* Download a layer blob of the cache repository into the store (digest
 * and size verified). */
int ib_rcache_fetch_blob(ib_rcache *rc, ib_store *store, const char *digest, int64_t size,
			 ib_error **err);
/* The recorded inputs (for --explain) of the newest indexed entry made at
 * position (an entry's "position": recipe name, stage, step index), one
 * blob download; *inputs_out NULL when there is none. */
int ib_rcache_inputs(ib_rcache *rc, ib_store *store, const char *position, json_t **inputs_out,
		     ib_error **err);
/* Write records for entries (an array) the registry lacks and merge them
 * into the index.  Blobs the registry has are not uploaded; nothing is
 * written when every key is indexed already.  need_blob(digest) fetches
 * a layer the store lacks (may be NULL).  *written: records written. */
typedef int (*ib_rcache_need_blob_fn)(void *payload, const char *digest, int64_t size,
				      ib_error **err);
int ib_rcache_export(ib_rcache *rc, ib_store *store, json_t *entries,
		     ib_rcache_need_blob_fn need_blob, void *payload, size_t *written,
		     ib_error **err);

/* Check that the stored layer blob digest decompresses to diff_id (what a
 * record claims): IB_EDIGEST when not. */
int ib_rcache_check_diff_id(ib_store *store, const char *digest, const char *diff_id,
			    ib_error **err);

/* Shared cache mounts (run{cache_mounts={{PATH, share="registry"}}}): the
 * directory's content as one tar layer, tagged "mount-<sha256 hex of
 * PATH>".  Import fills an empty dir (*imported); export writes the
 * artifact when its content changed (*written). */
int ib_rcache_mount_import(ib_rcache *rc, ib_store *store, const char *target, const char *dir,
			   bool *imported, ib_error **err);
int ib_rcache_mount_export(ib_rcache *rc, ib_store *store, const char *target, const char *dir,
			   bool *written, ib_error **err);

#endif
