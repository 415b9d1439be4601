#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

/* One stat cache record, the same in memory and in stat.bin: it vouches
 * for its digests while size, mtime, inode and ctime all hold (ctime moves
 * with any write, chmod, chown or xattr change, and cannot be set back).
 *
 * The file is STAT_MAGIC (which names the format version), STAT_ORDER (the
 * byte order), the record count, the size of the index and a zero (uint32
 * each), then the index, then the records.  The index is the
 * open-addressing hash table of the records: cap slots (a power of two, at
 * least 1.5 times the count) of {path hash, 1 + the record's number in the
 * file, 0 when empty}, so a process looks up the mapped file as it is and
 * builds no table of its own (a cached build of a context of 8,000 files
 * used to hash every path of the file first).  Each record is followed by
 * its path, a NUL and zeros up to 8-byte alignment; they are in the order
 * the last build that saved used them.  A file that does not parse as a
 * whole (every record in bounds, the count right, each record named by one
 * index slot) is ignored: never a wrong hit, at worst the context is
 * hashed again. */
typedef struct stat_rec {
	uint64_t size, mtime_ns, ino, ctime_ns;
	uint8_t digest[32]; /* the content's SHA-256 (STAT_DIGEST) */
	uint8_t xattrs[32]; /* of the xattrs a layer keeps (STAT_XATTRS) */
	uint32_t flags;
	uint32_t path_len; /* bytes of path[], not counting its NUL */
	char path[];
} stat_rec;

typedef struct stat_slot_rec {
	uint32_t hash;
	uint32_t num; /* 1 + the record's number in the file; 0: an empty slot */
} stat_slot_rec;

#define STAT_DIGEST 1u
#define STAT_XATTRS 2u
#define STAT_MAGIC "ibstat\0\3"
#define STAT_ORDER 0x01020304u
/* magic, STAT_ORDER, record count, index slots, zero (the index and the
 * records are 8-aligned) */
#define STAT_HEADER_LEN 24
/* A file changed this soon after its ctime might change again within the
 * same timestamp tick (a second on some filesystems) and keep every stat
 * field: it is hashed each time until it is this old. */
#define STAT_SETTLE_NS (2 * 1000000000LL)

struct ib_cache {
	char *dir;
	char *steps_dir;
	char *explain_dir;
	char *stat_path;
	/* stat.bin, mapped read-only and used in place (map_* below), loaded
	 * lazily; records this process added or changed are in the
	 * open-addressing table stat[] (slot i: a record, its path hash),
	 * which a lookup asks first */
	stat_rec **stat;
	uint32_t *stat_hash;
	size_t stat_cap, stat_n;
	bool stat_loaded, stat_dirty;
	const char *map; /* stat.bin, or NULL */
	size_t map_len;
	const stat_slot_rec *map_index; /* map_cap slots */
	size_t map_cap, map_n;
	/* per record of the file, by number: its offset, its path hash, and
	 * MAP_USED (looked up by this process), MAP_REPLACED (by a record of
	 * stat[], or dropped: not saved again), MAP_SAVED (while saving) */
	uint32_t *map_off, *map_hash;
	uint8_t *map_state;
	size_t map_next; /* the number after the last record found */
	/* the records in the order this process first used them, which is the
	 * order they are saved in: the next build looks them up in about the
	 * same order, through the file front to back instead of at random */
	struct stat_use {
		const stat_rec *r;
		uint32_t hash;
		uint32_t map_num; /* its number in the file; UINT32_MAX: a record of stat[] */
	} * uses;
	size_t uses_n, uses_alloc;
	int64_t stat_now_ns; /* a file's ctime must be well before it to be remembered */
	size_t stat_hashed;  /* files read to hash */
	char **scopes;	     /* directories whose unused entries are dropped on save */
	ib_store *store;
	json_t *blob_records; /* registry-blobs.json, loaded by the first lookup */
	bool readonly;	      /* lookups only: nothing is written (build --check) */
};

#define MAP_USED 1u
#define MAP_REPLACED 2u
#define MAP_SAVED 4u

int ib_cache_open(ib_cache **out, ib_store *store, ib_error **err)
{
	ib_cache *c = xcalloc(1, sizeof(*c));
	c->dir = ib_path_join(ib_store_root(store), "cache");
	c->steps_dir = ib_path_join(c->dir, "steps");
	c->explain_dir = ib_path_join(c->dir, "explain");
	c->stat_path = ib_path_join(c->dir, "stat.bin");
	c->store = store;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	c->stat_now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0) {
		ib_cache_free(c);
		return ib_error_wrap(err, "open step cache");
	}
	*out = c;
	return 0;
}

static void stat_map_drop(ib_cache *c)
{
	if (c->map)
		munmap((void *)c->map, c->map_len);
	free(c->map_state);
	free(c->map_off);
	free(c->map_hash);
	c->map_off = c->map_hash = NULL;
	c->map = NULL;
	c->map_len = 0;
	c->map_index = NULL;
	c->map_cap = c->map_n = c->map_next = 0;
	c->map_state = NULL;
}

static void stat_table_free(ib_cache *c)
{
	for (size_t i = 0; i < c->stat_cap; i++)
		free(c->stat[i]);
	free(c->stat);
	free(c->stat_hash);
	free(c->uses);
	c->uses = NULL;
	c->uses_n = c->uses_alloc = 0;
	c->stat = NULL;
	c->stat_hash = NULL;
	c->stat_cap = c->stat_n = 0;
	stat_map_drop(c);
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

static size_t stat_rec_len(uint32_t path_len)
{
	return sizeof(stat_rec) + (((size_t)path_len + 1 + 7) & ~(size_t)7);
}

static const stat_rec *map_rec(const ib_cache *c, size_t num)
{
	return (const stat_rec *)(c->map + c->map_off[num]);
}

static size_t index_cap(size_t n)
{
	size_t cap = 1024;
	while (n * 3 > cap * 2)
		cap *= 2;
	return cap;
}

static void stat_use(ib_cache *c, const stat_rec *r, uint32_t hash, size_t map_num)
{
	if (c->uses_n == c->uses_alloc) {
		c->uses_alloc = c->uses_alloc ? c->uses_alloc * 2 : 256;
		c->uses = xrealloc(c->uses, c->uses_alloc * sizeof(*c->uses));
	}
	c->uses[c->uses_n++] = (struct stat_use){r, hash, (uint32_t)map_num};
}

/* Appends r to the file being written in b, and to its index. */
static void save_rec(ib_buf *b, stat_slot_rec *index, size_t cap, uint32_t *num, const stat_rec *r,
		     uint32_t h)
{
	size_t k = h & (cap - 1);
	while (index[k].num)
		k = (k + 1) & (cap - 1);
	index[k].hash = h;
	index[k].num = ++*num;
	ib_buf_append(b, r, stat_rec_len(r->path_len));
}

/* The mapped records this process did not look up and that are under a
 * scope are dropped, so files that left the context do not accumulate;
 * others are kept.  Written only if something changed. */
static void stat_cache_save(ib_cache *c)
{
	if (c->readonly)
		return;
	bool prune = false;
	size_t kept = 0;
	for (size_t i = 0; i < c->map_n; i++) { /* front to back */
		if (c->map_state[i] & MAP_REPLACED)
			continue;
		if (!(c->map_state[i] & MAP_USED) && c->scopes &&
		    in_scope(c, map_rec(c, i)->path)) {
			prune = true;
			c->map_state[i] |= MAP_REPLACED; /* dropped */
			continue;
		}
		kept++;
	}
	if (!c->stat_dirty && !prune)
		return;
	size_t n = kept + c->stat_n;
	if (n > UINT32_MAX / 4)
		return;
	size_t cap = index_cap(n);
	ib_buf b = IB_BUF_INIT;
	uint32_t header[4] = {STAT_ORDER, (uint32_t)n, (uint32_t)cap, 0};
	ib_buf_append(&b, STAT_MAGIC, 8);
	ib_buf_append(&b, header, sizeof(header));
	size_t index_off = b.len;
	stat_slot_rec *index = xcalloc(cap, sizeof(*index));
	ib_buf_append(&b, index, cap * sizeof(*index));
	/* first what this process used (every record of stat[] is there),
	 * in that order, then the rest */
	uint32_t num = 0;
	for (size_t i = 0; i < c->uses_n; i++) {
		const struct stat_use *u = &c->uses[i];
		if (u->map_num != UINT32_MAX) {
			if (c->map_state[u->map_num] & (MAP_REPLACED | MAP_SAVED))
				continue;
			c->map_state[u->map_num] |= MAP_SAVED;
		}
		save_rec(&b, index, cap, &num, u->r, u->hash);
	}
	/* in the order of the file: the records another context's build did
	 * not use keep the order their own build gave them */
	for (size_t i = 0; i < c->map_n; i++)
		if (!(c->map_state[i] & (MAP_REPLACED | MAP_SAVED)))
			save_rec(&b, index, cap, &num, map_rec(c, i), c->map_hash[i]);
	memcpy(b.data + index_off, index, cap * sizeof(*index));
	ib_error *err = NULL;
	if (b.len <= IB_STAT_CACHE_MAX && /* else it would not be loaded */
	    ib_write_file_atomic(c->stat_path, b.data, b.len, 0600, &err) < 0)
		ib_error_free(&err);
	free(index);
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

/* Eight bytes at a time: the paths of a context are long and alike.  The
 * index of stat.bin holds these values: a change here needs a new
 * STAT_MAGIC. */
static uint32_t hash_path(const char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p + i, n - i);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 29;
	return (uint32_t)(h ^ (h >> 32));
}

/* The slot of stat[] for path: its record, or the empty slot where it
 * would go. */
static size_t stat_slot(const ib_cache *c, const char *path, size_t len, uint32_t h)
{
	size_t mask = c->stat_cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask)
		if (!c->stat[i] || (c->stat_hash[i] == h && c->stat[i]->path_len == len &&
				    !memcmp(c->stat[i]->path, path, len)))
			return i;
}

/* The number of path's record in the mapped file, or SIZE_MAX. */
static size_t map_find(const ib_cache *c, const char *path, size_t len, uint32_t h)
{
	if (!c->map_cap)
		return SIZE_MAX;
	size_t mask = c->map_cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const stat_slot_rec *s = &c->map_index[i];
		if (!s->num)
			return SIZE_MAX;
		if (s->hash == h) {
			const stat_rec *r = map_rec(c, s->num - 1);
			if (r->path_len == len && !memcmp(r->path, path, len))
				return s->num - 1;
		}
	}
}

static void stat_reserve(ib_cache *c, size_t n)
{
	if (n * 2 <= c->stat_cap)
		return;
	stat_rec **old = c->stat;
	uint32_t *old_hash = c->stat_hash;
	size_t old_cap = c->stat_cap;
	size_t cap = old_cap ? old_cap : 64;
	while (n * 2 > cap)
		cap *= 2;
	c->stat_cap = cap;
	c->stat = xcalloc(cap, sizeof(*c->stat));
	c->stat_hash = xcalloc(cap, sizeof(*c->stat_hash));
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i])
			continue;
		size_t k = old_hash[i] & (cap - 1);
		while (c->stat[k])
			k = (k + 1) & (cap - 1);
		c->stat[k] = old[i];
		c->stat_hash[k] = old_hash[i];
	}
	free(old);
	free(old_hash);
}

/* The file must parse as a whole, or none of it is used: the records in
 * bounds and well formed, as many as the header says, and each slot of the
 * index naming one of them, as many slots as records.  Nothing is hashed:
 * a slot with a wrong hash only makes its record a miss. */
static bool stat_map_check(ib_cache *c, const char *m, size_t len)
{
	uint32_t header[4];
	if (len < STAT_HEADER_LEN || memcmp(m, STAT_MAGIC, 8) != 0)
		return false;
	memcpy(header, m + 8, sizeof(header));
	size_t count = header[1], cap = header[2];
	if (header[0] != STAT_ORDER || header[3] != 0 || cap < 1024 || (cap & (cap - 1)) ||
	    count * 3 > cap * 2 || cap > (len - STAT_HEADER_LEN) / sizeof(stat_slot_rec))
		return false;
	size_t start = STAT_HEADER_LEN + cap * sizeof(stat_slot_rec);
	c->map_off = xmalloc((count + 1) * sizeof(*c->map_off));
	c->map_hash = xmalloc((count + 1) * sizeof(*c->map_hash));
	size_t off = start, n = 0;
	while (off < len) {
		const stat_rec *r = (const stat_rec *)(m + off);
		if (n == count || len - off < sizeof(stat_rec) || r->path_len == 0 ||
		    r->path_len > len - off - sizeof(stat_rec) - 1 ||
		    stat_rec_len(r->path_len) > len - off || r->path[r->path_len] != '\0' ||
		    (r->flags & ~(STAT_DIGEST | STAT_XATTRS)))
			return false;
		c->map_off[n] = (uint32_t)off;
		off += stat_rec_len(r->path_len);
		n++;
	}
	if (n != count)
		return false;
	/* each record named by one slot */
	const stat_slot_rec *index = (const stat_slot_rec *)(m + STAT_HEADER_LEN);
	cleanup_free uint8_t *named = xcalloc(count / 8 + 1, 1);
	size_t used = 0;
	for (size_t i = 0; i < cap; i++) {
		size_t k = index[i].num;
		if (!k)
			continue;
		k--;
		if (k >= count || (named[k / 8] & (1u << (k % 8))))
			return false;
		named[k / 8] |= (uint8_t)(1u << (k % 8));
		c->map_hash[k] = index[i].hash;
		used++;
	}
	if (used != count)
		return false;
	c->map_index = index;
	c->map_cap = cap;
	c->map_n = count;
	return true;
}

static void stat_cache_load(ib_cache *c)
{
	if (c->stat_loaded)
		return;
	c->stat_loaded = true;
	cleanup_close int fd = open(c->stat_path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < STAT_HEADER_LEN ||
	    (uint64_t)st.st_size > IB_STAT_CACHE_MAX)
		return;
	/* mapped, not read: a cached rebuild touches every record once */
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (m == MAP_FAILED)
		return;
	c->map = m;
	c->map_len = (size_t)st.st_size;
	if (!stat_map_check(c, m, c->map_len)) {
		stat_map_drop(c);
		return;
	}
	c->map_state = xcalloc(c->map_n + 1, 1);
}

static bool stat_matches(const stat_rec *r, const struct stat *st)
{
	return r->size == (uint64_t)st->st_size && r->ino == (uint64_t)st->st_ino &&
	       r->mtime_ns ==
		   (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec &&
	       r->ctime_ns ==
		   (uint64_t)st->st_ctim.tv_sec * 1000000000ULL + (uint64_t)st->st_ctim.tv_nsec;
}

/* The record vouching for path as st describes it with all of flags, or NULL. */
static const stat_rec *stat_lookup(ib_cache *c, const char *path, const struct stat *st,
				   uint32_t flags)
{
	stat_cache_load(c);
	size_t len = strlen(path);
	const stat_rec *r = NULL;
	if (c->stat_cap)
		r = c->stat[stat_slot(c, path, len, hash_path(path, len))];
	if (!r) {
		/* the file holds the records in the order of the last build's
		 * lookups: the record after the last one found is most often the
		 * one asked for, and then neither the hash nor the index is
		 * needed */
		size_t i = SIZE_MAX;
		if (c->map_next < c->map_n) {
			const stat_rec *q = map_rec(c, c->map_next);
			if (q->path_len == len && !memcmp(q->path, path, len))
				i = c->map_next;
		}
		if (i == SIZE_MAX)
			i = map_find(c, path, len, hash_path(path, len));
		if (i == SIZE_MAX || (c->map_state[i] & MAP_REPLACED))
			return NULL;
		c->map_next = i + 1;
		r = map_rec(c, i);
		if ((r->flags & flags) != flags || !stat_matches(r, st))
			return NULL;
		if (!(c->map_state[i] & MAP_USED)) {
			c->map_state[i] |= MAP_USED;
			stat_use(c, r, c->map_hash[i], i);
		}
		return r;
	}
	if ((r->flags & flags) != flags || !stat_matches(r, st))
		return NULL;
	return r;
}

/* A writable record for path as st describes it (its digests dropped if the
 * stat differs), or NULL while the file is too fresh to be remembered. */
static stat_rec *stat_update(ib_cache *c, const char *path, const struct stat *st)
{
	int64_t ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
	size_t len = strlen(path);
	if (ctime_ns > c->stat_now_ns - STAT_SETTLE_NS || len == 0 || len > UINT32_MAX - 8)
		return NULL;
	stat_cache_load(c);
	stat_reserve(c, c->stat_n + 1);
	uint32_t h = hash_path(path, len);
	size_t i = stat_slot(c, path, len, h);
	stat_rec *r = c->stat[i];
	if (!r) {
		size_t k = map_find(c, path, len, h);
		if (k != SIZE_MAX && !(c->map_state[k] & MAP_REPLACED)) {
			/* the mapping is read-only: a copy replaces the record */
			const stat_rec *old = map_rec(c, k);
			r = xmalloc(stat_rec_len(old->path_len));
			memcpy(r, old, stat_rec_len(old->path_len));
			c->map_state[k] |= MAP_REPLACED;
		} else {
			r = xcalloc(1, stat_rec_len((uint32_t)len));
			r->path_len = (uint32_t)len;
			memcpy(r->path, path, len);
		}
		c->stat[i] = r;
		c->stat_hash[i] = h;
		c->stat_n++;
		stat_use(c, r, h, UINT32_MAX);
	}
	if (!stat_matches(r, st)) {
		r->size = (uint64_t)st->st_size;
		r->ino = (uint64_t)st->st_ino;
		r->mtime_ns =
		    (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec;
		r->ctime_ns = (uint64_t)ctime_ns;
		r->flags = 0;
	}
	c->stat_dirty = true;
	return r;
}

/* Two hex digits per byte from one table (a cached build formats two
 * digests for every file of the context). */
static void raw_to_digest(const uint8_t raw[32], char out[IB_DIGEST_BUFLEN])
{
	static const char pairs[513] =
	    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++)
		memcpy(out + 7 + 2 * i, pairs + 2 * raw[i], 2);
	out[IB_DIGEST_STRLEN] = '\0';
}

static int hex_value(char ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static bool digest_to_raw(const char *d, uint8_t raw[32])
{
	if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != IB_DIGEST_STRLEN)
		return false;
	for (int i = 0; i < 32; i++) {
		int hi = hex_value(d[7 + 2 * i]), lo = hex_value(d[8 + 2 * i]);
		if (hi < 0 || lo < 0)
			return false;
		raw[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

int ib_cache_file_digest(ib_cache *c, const char *path, const struct stat *st,
			 char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	const stat_rec *hit = stat_lookup(c, path, st, STAT_DIGEST);
	if (hit) {
		raw_to_digest(hit->digest, out);
		return 0;
	}
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	if (ib_digest_fd(out, fd, NULL, err) < 0)
		return ib_error_wrap(err, "hash %s", path);
	c->stat_hashed++;
	stat_rec *r = stat_update(c, path, st);
	if (r && digest_to_raw(out, r->digest))
		r->flags |= STAT_DIGEST;
	return 0;
}

void ib_cache_file_xattrs(ib_cache *c, const char *path, const struct stat *st,
			  ib_xattr_digest_fn compute, char out[IB_DIGEST_BUFLEN])
{
	const stat_rec *hit = stat_lookup(c, path, st, STAT_XATTRS);
	if (hit) {
		raw_to_digest(hit->xattrs, out);
		return;
	}
	compute(path, out);
	stat_rec *r = stat_update(c, path, st);
	if (r && digest_to_raw(out, r->xattrs))
		r->flags |= STAT_XATTRS;
}

int ib_cache_file_digests(ib_cache *c, const char *path, const struct stat *st,
			  char content[IB_DIGEST_BUFLEN], ib_xattr_digest_fn compute,
			  char xattrs[IB_DIGEST_BUFLEN], ib_error **err)
{
	const stat_rec *r = stat_lookup(c, path, st, (content ? STAT_DIGEST : 0) | STAT_XATTRS);
	if (r) {
		if (content)
			raw_to_digest(r->digest, content);
		raw_to_digest(r->xattrs, xattrs);
		return 0;
	}
	if (content && ib_cache_file_digest(c, path, st, content, err) < 0)
		return -1;
	ib_cache_file_xattrs(c, path, st, compute, xattrs);
	return 0;
}

size_t ib_cache_stat_hashed(const ib_cache *c)
{
	return c->stat_hashed;
}

void ib_cache_stat_set_now(ib_cache *c, int64_t now_ns)
{
	c->stat_now_ns = now_ns;
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
