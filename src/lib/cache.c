#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oci.h"
#include "util.h"

#define IB_CACHE_ENTRY_MAX (1u << 20)
/* explain records list every copied file: a large context makes them big */
#define IB_EXPLAIN_ENTRY_MAX (256u << 20)
#define IB_STAT_CACHE_MAX (256u << 20)
/* blob locations: a few repositories per blob, the recently used blobs */
#define BLOB_RECORDS_MAX (64u << 20)
#define BLOB_RECORD_MAX_DIGESTS 20000
#define BLOB_RECORD_MAX_REPOS 8

/* One stat cache record.  On disk: "SIZE MTIME_NS INO HEX PATH\0" per
 * entry (PATH last and NUL-terminated, so any byte but NUL may appear),
 * optionally followed by "X CTIME_NS HEX\0": the digest of the file's
 * xattrs, valid while its ctime (which any xattr change moves) holds. */
typedef struct stat_entry {
	char *path; /* NULL = empty slot */
	uint64_t size, mtime_ns, ino;
	char digest[IB_DIGEST_BUFLEN];
	uint64_t ctime_ns;
	char xattrs[IB_DIGEST_BUFLEN]; /* "" = not known */
	bool used;		       /* looked up by this process: kept when the file is saved */
} stat_entry;

struct ib_cache {
	char *dir;
	char *steps_dir;
	char *explain_dir;
	char *stat_path;
	/* open-addressing hash table keyed by path; loaded lazily */
	stat_entry *stat;
	size_t stat_cap, stat_n;
	bool stat_loaded, stat_dirty;
	char *stat_buf; /* the loaded file: the paths of loaded entries point into it */
	size_t stat_buf_len;
	char **scopes; /* directories whose unused entries are dropped on save */
	ib_store *store;
	json_t *blob_records; /* registry-blobs.json, loaded by the first lookup */
	bool readonly;	      /* lookups only: nothing is written (build --check) */
};

int ib_cache_open(ib_cache **out, ib_store *store, ib_error **err)
{
	ib_cache *c = xcalloc(1, sizeof(*c));
	c->dir = ib_path_join(ib_store_root(store), "cache");
	c->steps_dir = ib_path_join(c->dir, "steps");
	c->explain_dir = ib_path_join(c->dir, "explain");
	c->stat_path = ib_path_join(c->dir, "stat.bin");
	c->store = store;
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0) {
		ib_cache_free(c);
		return ib_error_wrap(err, "open step cache");
	}
	*out = c;
	return 0;
}

/* A path of an entry read from the file, which is not freed on its own. */
static bool stat_borrowed(const ib_cache *c, const char *path)
{
	return c->stat_buf && path >= c->stat_buf && path < c->stat_buf + c->stat_buf_len;
}

static void stat_table_free(ib_cache *c)
{
	for (size_t i = 0; i < c->stat_cap; i++)
		if (!stat_borrowed(c, c->stat[i].path))
			free(c->stat[i].path);
	free(c->stat);
	c->stat = NULL;
	free(c->stat_buf);
	c->stat_buf = NULL;
	c->stat_buf_len = 0;
	c->stat_cap = c->stat_n = 0;
	c->stat_loaded = c->stat_dirty = false;
}

static bool in_scope(ib_cache *c, const char *path)
{
	for (size_t i = 0; c->scopes && c->scopes[i]; i++) {
		size_t n = strlen(c->scopes[i]);
		if (!strncmp(path, c->scopes[i], n) && path[n] == '/')
			return true;
	}
	return false;
}

/* Entries under a scope that this process did not look up are dropped, so
 * files that left the context do not accumulate; others are kept. */
static void stat_cache_save(ib_cache *c)
{
	bool prune = false;
	for (size_t i = 0; i < c->stat_cap && !prune; i++)
		prune = c->stat[i].path && !c->stat[i].used && in_scope(c, c->stat[i].path);
	if ((!c->stat_dirty && !prune) || c->readonly)
		return;
	ib_buf b = IB_BUF_INIT;
	for (size_t i = 0; i < c->stat_cap; i++) {
		stat_entry *e = &c->stat[i];
		if (!e->path || (!e->used && in_scope(c, e->path)))
			continue;
		ib_buf_appendf(&b, "%llu %llu %llu %s ", (unsigned long long)e->size,
			       (unsigned long long)e->mtime_ns, (unsigned long long)e->ino,
			       ib_digest_hex(e->digest));
		ib_buf_append(&b, e->path, strlen(e->path) + 1);
		if (e->xattrs[0]) {
			ib_buf_appendf(&b, "X %llu %s", (unsigned long long)e->ctime_ns,
				       ib_digest_hex(e->xattrs));
			ib_buf_append(&b, "", 1);
		}
	}
	ib_error *err = NULL;
	if (ib_write_file_atomic(c->stat_path, b.data ? b.data : "", b.len, 0600, &err) < 0)
		ib_error_free(&err);
	ib_buf_free(&b);
	c->stat_dirty = false;
}

void ib_cache_free(ib_cache *c)
{
	if (!c)
		return;
	stat_cache_save(c);
	stat_table_free(c);
	ib_strv_free(c->scopes);
	free(c->dir);
	free(c->steps_dir);
	free(c->explain_dir);
	free(c->stat_path);
	json_decref(c->blob_records);
	free(c);
}

/* Keys are digests; the file name is the hex part. */
static char *key_path(const char *dir, const char *key)
{
	if (ib_digest_validate(key, NULL) < 0)
		return NULL;
	return xasprintf("%s/%s.json", dir, ib_digest_hex(key));
}

static json_t *read_json(const char *path, size_t cap)
{
	if (!path)
		return NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	if (ib_read_file(path, cap, &buf, &len, &err) < 0) {
		ib_error_free(&err);
		return NULL;
	}
	json_t *j = json_loadb(buf, len, 0, NULL);
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static int write_json(const char *path, json_t *j, ib_error **err)
{
	size_t len = 0;
	cleanup_free char *s = ib_json_dump_canonical(j, &len);
	return ib_write_file_atomic(path, s, len, 0600, err);
}

json_t *ib_cache_step_get(ib_cache *c, const char *key)
{
	cleanup_free char *p = key_path(c->steps_dir, key);
	json_t *j = read_json(p, IB_CACHE_ENTRY_MAX);
	if (!j)
		return NULL;
	/* An entry must name a valid layer, else it is a miss. */
	json_t *layer = json_object_get(j, "layer");
	if (!json_is_object(layer) ||
	    ib_digest_validate(json_string_value(json_object_get(layer, "digest")), NULL) < 0 ||
	    ib_digest_validate(json_string_value(json_object_get(layer, "diff_id")), NULL) < 0 ||
	    !json_is_integer(json_object_get(layer, "size")) ||
	    !json_is_string(json_object_get(layer, "mediaType"))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

void ib_cache_set_readonly(ib_cache *c)
{
	c->readonly = true;
}

bool ib_cache_is_readonly(const ib_cache *c)
{
	return c->readonly;
}

int ib_cache_step_put(ib_cache *c, const char *key, json_t *entry, ib_error **err)
{
	if (c->readonly)
		return 0;
	cleanup_free char *p = key_path(c->steps_dir, key);
	if (!p)
		return ib_error_setc(err, IB_EINVALID, "invalid cache key %s", key);
	return write_json(p, entry, err);
}

static char *explain_path(ib_cache *c, const char *id)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, id, strlen(id));
	return key_path(c->explain_dir, d);
}

json_t *ib_cache_explain_get(ib_cache *c, const char *id)
{
	cleanup_free char *p = explain_path(c, id);
	return read_json(p, IB_EXPLAIN_ENTRY_MAX);
}

bool ib_cache_explain_exists(ib_cache *c, const char *id)
{
	cleanup_free char *p = explain_path(c, id);
	return p && ib_file_exists(p);
}

int ib_cache_explain_put(ib_cache *c, const char *id, json_t *inputs, ib_error **err)
{
	if (c->readonly)
		return 0;
	cleanup_free char *p = explain_path(c, id);
	return write_json(p, inputs, err);
}

void ib_cache_stat_scope(ib_cache *c, const char *dir)
{
	ib_strv_push(&c->scopes, dir);
}

static uint64_t hash_path(const char *p)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

/* The slot for path: its entry, or the empty slot where it would go. */
static stat_entry *stat_slot(ib_cache *c, const char *path)
{
	size_t mask = c->stat_cap - 1;
	for (size_t i = hash_path(path) & mask;; i = (i + 1) & mask)
		if (!c->stat[i].path || !strcmp(c->stat[i].path, path))
			return &c->stat[i];
}

static void stat_reserve(ib_cache *c, size_t n)
{
	if (n * 2 <= c->stat_cap)
		return;
	stat_entry *old = c->stat;
	size_t old_cap = c->stat_cap;
	size_t cap = old_cap ? old_cap : 1024;
	while (n * 2 > cap)
		cap *= 2;
	c->stat_cap = cap;
	c->stat = xcalloc(c->stat_cap, sizeof(stat_entry));
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].path)
			*stat_slot(c, old[i].path) = old[i];
	free(old);
}

/* path is copied unless it is borrowed (points into the loaded file). */
static stat_entry *stat_insert(ib_cache *c, char *path, bool borrowed)
{
	stat_reserve(c, c->stat_n + 1);
	stat_entry *e = stat_slot(c, path);
	if (!e->path) {
		e->path = borrowed ? path : xstrdup(path);
		c->stat_n++;
	}
	return e;
}

/* A decimal number ended by one space; false if there is none. */
static bool parse_u64(char **p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	char *s = *p;
	if (s >= end || *s < '0' || *s > '9')
		return false;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (s >= end || *s != ' ')
		return false;
	*p = s + 1;
	*out = v;
	return true;
}

/* 64 lowercase hex digits into out as "sha256:HEX", then the spaces after. */
static bool parse_hex(char **p, const char *end, char out[IB_DIGEST_BUFLEN])
{
	char *s = *p;
	if (end - s < 64)
		return false;
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	memcpy(out, "sha256:", 7);
	memcpy(out + 7, s, 64);
	out[71] = '\0';
	s += 64;
	while (s < end && (*s == ' ' || *s == '\t' || *s == '\n'))
		s++;
	*p = s;
	return true;
}

static void stat_cache_load(ib_cache *c)
{
	if (c->stat_loaded)
		return;
	c->stat_loaded = true;
	char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	if (ib_read_file(c->stat_path, IB_STAT_CACHE_MAX, &buf, &len, &err) < 0) {
		ib_error_free(&err);
		return;
	}
	c->stat_buf = buf;
	c->stat_buf_len = len;
	/* size the table once: one entry per record that is not an X record */
	size_t records = 0;
	for (char *p = buf, *end = buf + len; p < end; records++) {
		char *nul = memchr(p, '\0', (size_t)(end - p));
		p = nul ? nul + 1 : end;
		if (end - p > 1 && p[0] == 'X' && p[1] == ' ') {
			nul = memchr(p, '\0', (size_t)(end - p));
			p = nul ? nul + 1 : end;
		}
	}
	stat_reserve(c, records);
	/* a malformed record ends the load: what was read before it stays */
	for (char *p = buf, *end = buf + len; p < end;) {
		char *nul = memchr(p, '\0', (size_t)(end - p));
		if (!nul)
			break;
		uint64_t size, mtime, ino;
		char digest[IB_DIGEST_BUFLEN];
		if (!parse_u64(&p, nul, &size) || !parse_u64(&p, nul, &mtime) ||
		    !parse_u64(&p, nul, &ino) || !parse_hex(&p, nul, digest) || p >= nul)
			break;
		stat_entry *e = stat_insert(c, p, true);
		e->size = size;
		e->mtime_ns = mtime;
		e->ino = ino;
		memcpy(e->digest, digest, IB_DIGEST_BUFLEN);
		p = nul + 1;
		/* optional xattr record of the entry just read */
		char *xnul = p < end ? memchr(p, '\0', (size_t)(end - p)) : NULL;
		if (!xnul || p[0] != 'X' || p[1] != ' ')
			continue;
		char *x = p + 2;
		uint64_t ctime;
		if (parse_u64(&x, xnul, &ctime) && parse_hex(&x, xnul, e->xattrs) && x == xnul) {
			e->ctime_ns = ctime;
			p = xnul + 1;
		} else {
			e->xattrs[0] = '\0';
		}
	}
}

int ib_cache_file_digest(ib_cache *c, const char *path, const struct stat *st,
			 char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	stat_cache_load(c);
	uint64_t mtime_ns =
	    (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec;
	stat_entry *e = c->stat_cap ? stat_slot(c, path) : NULL;
	if (e && e->path && e->size == (uint64_t)st->st_size && e->mtime_ns == mtime_ns &&
	    e->ino == (uint64_t)st->st_ino) {
		memcpy(out, e->digest, IB_DIGEST_BUFLEN);
		e->used = true;
		return 0;
	}
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	if (ib_digest_fd(out, fd, NULL, err) < 0)
		return ib_error_wrap(err, "hash %s", path);
	e = stat_insert(c, (char *)path, false);
	e->size = (uint64_t)st->st_size;
	e->mtime_ns = mtime_ns;
	e->ino = (uint64_t)st->st_ino;
	memcpy(e->digest, out, IB_DIGEST_BUFLEN);
	e->xattrs[0] = '\0';
	e->used = true;
	c->stat_dirty = true;
	return 0;
}

void ib_cache_file_xattrs(ib_cache *c, const char *path, const struct stat *st,
			  ib_xattr_digest_fn compute, char out[IB_DIGEST_BUFLEN])
{
	uint64_t ctime_ns =
	    (uint64_t)st->st_ctim.tv_sec * 1000000000ULL + (uint64_t)st->st_ctim.tv_nsec;
	stat_entry *e = c->stat_cap ? stat_slot(c, path) : NULL;
	if (e && e->path && e->xattrs[0] && e->ctime_ns == ctime_ns) {
		memcpy(out, e->xattrs, IB_DIGEST_BUFLEN);
		return;
	}
	compute(path, out);
	if (e && e->path) {
		e->ctime_ns = ctime_ns;
		memcpy(e->xattrs, out, IB_DIGEST_BUFLEN);
		c->stat_dirty = true;
	}
}

int ib_cache_referenced(ib_cache *c, char ***digests_out, char ***diff_ids_out, ib_error **err)
{
	cleanup_dir DIR *d = opendir(c->steps_dir);
	if (!d)
		return ib_error_set(err, errno, "open %s", c->steps_dir);
	char **digests = xcalloc(1, sizeof(char *));
	char **diff_ids = xcalloc(1, sizeof(char *));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		if (n != 64 + 5 || strcmp(de->d_name + 64, ".json") != 0)
			continue;
		cleanup_free char *key = xasprintf("sha256:%.64s", de->d_name);
		json_t *j = ib_cache_step_get(c, key);
		if (!j)
			continue;
		json_t *layer = json_object_get(j, "layer");
		ib_strv_push(&digests, json_string_value(json_object_get(layer, "digest")));
		ib_strv_push(&diff_ids, json_string_value(json_object_get(layer, "diff_id")));
		json_decref(j);
	}
	*digests_out = digests;
	*diff_ids_out = diff_ids;
	return 0;
}

int ib_cache_clear(ib_cache *c, ib_error **err)
{
	stat_table_free(c);
	json_decref(c->blob_records);
	c->blob_records = NULL;
	if (ib_rm_rf(c->dir, err) < 0)
		return ib_error_wrap(err, "clear cache");
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0)
		return ib_error_wrap(err, "clear cache");
	return 0;
}

/* ---- where blobs were seen on registries ---- */

static char *blob_records_path(ib_cache *c)
{
	return ib_path_join(c->dir, "registry-blobs.json");
}

static json_t *blob_records_read(ib_cache *c)
{
	cleanup_free char *p = blob_records_path(c);
	json_t *j = read_json(p, BLOB_RECORDS_MAX);
	return j ? j : json_object();
}

/* Replace the records under the lock the caller holds; the in-memory copy
 * follows. */
static int blob_records_write(ib_cache *c, json_t *j, ib_error **err)
{
	cleanup_free char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return ib_error_setc(err, IB_ERROR, "encode blob locations");
	cleanup_free char *p = blob_records_path(c);
	int r = ib_write_file_atomic(p, text, strlen(text), 0644, err);
	if (r < 0)
		return r;
	json_decref(c->blob_records);
	c->blob_records = json_incref(j);
	return 0;
}

static int blob_records_lock(ib_cache *c, ib_error **err)
{
	cleanup_free char *lp = ib_path_join(c->dir, "registry-blobs.lock");
	return ib_lock_file(lp, LOCK_EX, err);
}

int ib_cache_blob_seen(ib_cache *c, const char *repository, char *const *digests, ib_error **err)
{
	if (c->readonly)
		return 0;
	cleanup_close int lfd = blob_records_lock(c, err);
	if (lfd < 0)
		return lfd;
	json_t *j = blob_records_read(c);
	for (size_t i = 0; digests[i]; i++) {
		json_t *a = json_object_get(j, digests[i]);
		if (!json_is_array(a)) {
			a = json_array();
			json_object_set_new(j, digests[i], a);
		}
		size_t k;
		json_t *e;
		json_array_foreach (a, k, e) {
			if (json_is_string(e) && !strcmp(json_string_value(e), repository)) {
				json_array_remove(a, k);
				break;
			}
		}
		json_array_insert_new(a, 0, json_string(repository));
		while (json_array_size(a) > BLOB_RECORD_MAX_REPOS)
			json_array_remove(a, json_array_size(a) - 1);
		/* keep the most recently used digests at the end */
		json_incref(a);
		json_object_del(j, digests[i]);
		json_object_set_new(j, digests[i], a);
	}
	while (json_object_size(j) > BLOB_RECORD_MAX_DIGESTS)
		json_object_del(j, json_object_iter_key(json_object_iter(j)));
	int r = blob_records_write(c, j, err);
	json_decref(j);
	return r < 0 ? ib_error_wrap(err, "record blob locations") : 0;
}

char *ib_cache_blob_where(ib_cache *c, const char *digest, const char *domain,
			  const char *except_repository)
{
	if (!c->blob_records)
		c->blob_records = blob_records_read(c);
	json_t *a = json_object_get(c->blob_records, digest);
	size_t dl = strlen(domain);
	size_t i;
	json_t *e;
	json_array_foreach (a, i, e) {
		const char *r = json_string_value(e);
		if (r && !strncmp(r, domain, dl) && r[dl] == '/' &&
		    (!except_repository || strcmp(r, except_repository) != 0))
			return xstrdup(r + dl + 1);
	}
	return NULL;
}

int ib_cache_blob_records_prune(ib_cache *c, ib_error **err)
{
	/* where the records lived before they moved under the cache */
	const char *legacy[] = {"registry-blobs.json", "registry-blobs.lock",
				"compressed-layers.json"};
	for (size_t i = 0; i < sizeof(legacy) / sizeof(legacy[0]); i++) {
		cleanup_free char *p = ib_path_join(ib_store_root(c->store), legacy[i]);
		if (unlink(p) < 0 && errno != ENOENT)
			return ib_error_set(err, errno, "remove %s", p);
	}
	cleanup_close int lfd = blob_records_lock(c, err);
	if (lfd < 0)
		return lfd;
	json_t *j = blob_records_read(c);
	size_t before = json_object_size(j);
	const char *digest;
	json_t *v, *tmp;
	json_object_foreach_safe (j, tmp, digest, v) {
		if (!json_is_array(v) || !ib_store_blob_exists(c->store, digest))
			json_object_del(j, digest);
	}
	int r = json_object_size(j) == before ? 0 : blob_records_write(c, j, err);
	json_decref(j);
	return r < 0 ? ib_error_wrap(err, "prune blob locations") : 0;
}

typedef struct trim_entry {
	char *path;
	time_t mtime;
	uint64_t size;
} trim_entry;

static int trim_newer_first(const void *a, const void *b)
{
	const trim_entry *x = a, *y = b;
	if (x->mtime != y->mtime)
		return x->mtime > y->mtime ? -1 : 1;
	return strcmp(x->path, y->path);
}

/* The bytes a step entry costs: its layer blob's size in the store (0 when
 * it names no layer or the blob is gone). */
static uint64_t trim_cost(ib_store *s, const char *file)
{
	json_auto_t *j = read_json(file, IB_CACHE_ENTRY_MAX);
	const char *digest =
	    json_string_value(json_object_get(json_object_get(j, "layer"), "digest"));
	if (!digest || ib_digest_validate(digest, NULL) < 0)
		return 0;
	cleanup_free char *path = ib_store_blob_path(s, digest);
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int ib_cache_trim(ib_cache *c, ib_store *store, uint64_t budget, size_t *dropped, ib_error **err)
{
	*dropped = 0;
	cleanup_dir DIR *d = opendir(c->steps_dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return ib_error_set(err, errno, "open %s", c->steps_dir);
	}
	trim_entry *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		char *path = ib_path_join(c->steps_dir, de->d_name);
		struct stat st;
		if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		v = xrealloc(v, (n + 1) * sizeof(*v));
		v[n].path = path;
		v[n].mtime = st.st_mtime;
		v[n].size = trim_cost(store, path);
		n++;
	}
	if (n > 0)
		qsort(v, n, sizeof(*v), trim_newer_first);
	uint64_t used = 0;
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		if (r == 0 && used + v[i].size > budget) {
			if (unlink(v[i].path) < 0 && errno != ENOENT)
				r = ib_error_set(err, errno, "remove %s", v[i].path);
			else
				(*dropped)++;
		} else {
			used += v[i].size;
		}
		free(v[i].path);
	}
	free(v);
	return r;
}

static char *mount_rel(const char *id, const char *suffix)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, id, strlen(id));
	return xasprintf("mounts/%.16s%s", ib_digest_hex(d), suffix);
}

int ib_cache_mount_dir(ib_cache *c, const char *id, char **out, ib_error **err)
{
	cleanup_free char *rel = mount_rel(id, "");
	cleanup_free char *dir = ib_path_join(c->dir, rel);
	if (ib_mkdir_p(dir, 0755, err) < 0)
		return -1;
	*out = steal_pointer(&dir);
	return 0;
}

int ib_cache_mount_lock(ib_cache *c, const char *id, bool nowait, int *fd_out, ib_error **err)
{
	cleanup_free char *rel = mount_rel(id, ".lock");
	cleanup_free char *path = ib_path_join(c->dir, rel);
	cleanup_free char *dir = ib_path_join(c->dir, "mounts");
	if (ib_mkdir_p(dir, 0755, err) < 0)
		return -1;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	while (flock(fd, LOCK_EX | (nowait ? LOCK_NB : 0)) < 0) {
		if (errno == EINTR)
			continue;
		int e = errno;
		close(fd);
		if (nowait && e == EWOULDBLOCK)
			return 1;
		return ib_error_set(err, e, "lock %s", path);
	}
	*fd_out = fd;
	return 0;
}

char *ib_cache_root_path(ib_store *s)
{
	return ib_path_join(ib_store_root(s), "cache");
}

char *ib_cache_steps_path(ib_store *s)
{
	return ib_path_join(ib_store_root(s), "cache/steps");
}

char *ib_cache_mounts_path(ib_store *s)
{
	return ib_path_join(ib_store_root(s), "cache/mounts");
}

char *ib_cache_compressed_layers_path(ib_store *s)
{
	return ib_path_join(ib_store_root(s), "cache/compressed-layers.json");
}
