/* The step cache, the stat cache, the registry blob locations and the other
 * caches of a store, under ROOT/cache:
 *
 *   steps/KEYHEX.json   one per cached step: {"key", "layer": {"digest",
 *                       "diff_id", "size", "mediaType"}, "created_by"}
 *   explain/IDHEX.json  per recipe position: the inputs of the last run of a
 *                       step, so a miss can say which input changed
 *   stat.bin            path -> size, mtime, inode, ctime and the digests of
 *                       the content and xattrs of context files, so unchanged
 *                       files are not read again (binary, versioned)
 *   registry-blobs.json {"sha256:...": ["host/repo", ...]}: repositories of
 *                       registries known to hold a blob (from pulls,
 *                       pushes and cache hits), most recent first; push
 *                       mounts from them.  A hint only: the layers of
 *                       lazily tagged images, which the store lacks, are
 *                       recorded by the store itself (ROOT/remote-blobs.json,
 *                       store.h), outside the cache that prune --all drops
 *   registry-blobs.lock serialises registry-blobs.json updates
 *   mounts/             run steps' cache mounts, by id
 *   layer-sizes.json    uncompressed size of each layer blob (images, df)
 *   compressed-layers.json  the gzip copy push made of an uncompressed layer
 *
 * Entries are written atomically; a torn or unreadable entry is a miss. */
#ifndef IB_CACHE_H
#define IB_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "digest.h"
#include "error.h"
#include "store.h"

typedef struct ib_cache ib_cache;

int ib_cache_open(ib_cache **out, ib_store *store, ib_error **err);
/* Saves the stat cache if it changed (errors are ignored: it is only a
 * cache) and frees. Safe on NULL. */
void ib_cache_free(ib_cache *c);

/* Look a step up by key ("sha256:..."). Returns a new reference or NULL on
 * a miss. */
json_t *ib_cache_step_get(ib_cache *c, const char *key);
int ib_cache_step_put(ib_cache *c, const char *key, json_t *entry, ib_error **err);

/* Per-position record of a step's inputs (for --explain). id is any
 * string identifying the position (recipe path + stage + index). */
json_t *ib_cache_explain_get(ib_cache *c, const char *id);
int ib_cache_explain_put(ib_cache *c, const char *id, json_t *inputs, ib_error **err);
/* Whether a record exists for id (a stat, no parsing). */
bool ib_cache_explain_exists(ib_cache *c, const char *id);

/* Content digest of the regular file at path (st from lstat), using the
 * stat cache when size, mtime, inode and ctime are unchanged.  A file is
 * remembered only once its ctime is a few seconds older than the cache
 * handle: an edit within the same timestamp tick could keep every field. */
int ib_cache_file_digest(ib_cache *c, const char *path, const struct stat *st,
			 char out[IB_DIGEST_BUFLEN], ib_error **err);

/* Declare a directory (absolute) whose files this process hashes: on
 * free, stat cache entries below it that were not looked up are dropped. */
void ib_cache_stat_scope(ib_cache *c, const char *dir);

/* Digest of the xattrs a layer keeps for the file (of any type) at path,
 * remembered in its stat cache entry under the same rule (an xattr change
 * moves ctime); compute(path, out) is called on a miss. */
typedef void (*ib_xattr_digest_fn)(const char *path, char out[IB_DIGEST_BUFLEN]);
void ib_cache_file_xattrs(ib_cache *c, const char *path, const struct stat *st,
			  ib_xattr_digest_fn compute, char out[IB_DIGEST_BUFLEN]);
/* Both at once, with one lookup when the stat cache knows them:
 * ib_cache_file_digest into content (NULL for a file that is not regular)
 * and ib_cache_file_xattrs into xattrs. */
int ib_cache_file_digests(ib_cache *c, const char *path, const struct stat *st,
			  char content[IB_DIGEST_BUFLEN], ib_xattr_digest_fn compute,
			  char xattrs[IB_DIGEST_BUFLEN], ib_error **err);
/* How many files this handle read to hash (the stat cache's misses). */
size_t ib_cache_stat_hashed(const ib_cache *c);
/* The time (ns since the epoch) a file's ctime is judged against, instead
 * of the clock when the handle was opened (tests). */
void ib_cache_stat_set_now(ib_cache *c, int64_t now_ns);

/* Every blob digest and diff_id referenced by the step cache (for prune).
 * NULL-terminated vectors, caller frees with ib_strv_free. */
int ib_cache_referenced(ib_cache *c, char ***digests_out, char ***diff_ids_out, ib_error **err);
/* Keep the step cache entries whose layers (blob sizes in store) fit in
 * budget bytes, the most recently used first, and delete the others (a
 * deleted entry is a cache miss).  *dropped: how many were deleted. */
int ib_cache_trim(ib_cache *c, ib_store *store, uint64_t budget, size_t *dropped, ib_error **err);
/* Remove the whole step cache (prune --all). */
int ib_cache_clear(ib_cache *c, ib_error **err);

/* ---- blob locations (registry-blobs.json) ----
 * At most 8 repositories per blob and 20000 blobs, the least recently
 * seen dropped first.  Losing them only costs cross-repository mounts. */

/* Record that repository ("host/path") holds each of digests
 * (NULL-terminated), under registry-blobs.lock. */
int ib_cache_blob_seen(ib_cache *c, const char *repository, char *const *digests, ib_error **err);
/* The path (without the host) of a repository on domain other than
 * except_repository ("host/path", may be NULL) known to hold digest, or
 * NULL.  The records are read once per handle.  Caller frees. */
char *ib_cache_blob_where(ib_cache *c, const char *digest, const char *domain,
			  const char *except_repository);
/* Drop the records of blobs the store no longer has (call after
 * ib_store_prune) and the files older versions kept in ROOT. */
int ib_cache_blob_records_prune(ib_cache *c, ib_error **err);

/* From now on the cache is only read: step, explain, blob and file-digest
 * records are not written (build --check's rebuild leaves it as it was). */
void ib_cache_set_readonly(ib_cache *c);
bool ib_cache_is_readonly(const ib_cache *c);

/* ROOT/cache/mounts/X for a run step's cache mount with this id (by
 * default its target, an absolute path in the image), created if missing:
 * the same id shares one directory across builds and is removed with the
 * cache.  *out is the caller's. */
int ib_cache_mount_dir(ib_cache *c, const char *id, char **out, ib_error **err);

/* ROOT/cache/steps and ROOT/cache/mounts of a store (caller frees), for
 * what `df` and `prune` count without opening the cache. */
char *ib_cache_steps_path(ib_store *s);
/* ROOT/cache itself (caller frees): what `prune --all` removes. */
char *ib_cache_root_path(ib_store *s);
char *ib_cache_mounts_path(ib_store *s);
/* ROOT/cache/compressed-layers.json: the gzip copy push made of each
 * uncompressed layer ({"LAYER": {"digest", "size"}}); gone with the cache
 * (prune --all), an entry whose blob was pruned is made again. */
char *ib_cache_compressed_layers_path(ib_store *s);

/* Lock the cache mount with this id (flock on a file beside its
 * directory) for a step: wait for it, or with nowait return 1 when
 * another holder has it.  0 with *fd_out the lock to close afterwards. */
int ib_cache_mount_lock(ib_cache *c, const char *id, bool nowait, int *fd_out, ib_error **err);

#endif
