#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oci.h"
#include "util.h"

#define IB_CACHE_ENTRY_MAX (1u << 20)
/* explain records list every copied file: a large context makes them big */
#define IB_EXPLAIN_ENTRY_MAX (256u << 20)
#define IB_STAT_CACHE_MAX (256u << 20)

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
	char **scopes; /* directories whose unused entries are dropped on save */
};

int ib_cache_open(ib_cache **out, ib_store *store, ib_error **err)
{
	ib_cache *c = xcalloc(1, sizeof(*c));
	c->dir = ib_path_join(ib_store_root(store), "cache");
	c->steps_dir = ib_path_join(c->dir, "steps");
	c->explain_dir = ib_path_join(c->dir, "explain");
	c->stat_path = ib_path_join(c->dir, "stat.bin");
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0) {
		ib_cache_free(c);
		return ib_error_wrap(err, "open step cache");
	}
	*out = c;
	return 0;
}

static void stat_table_free(ib_cache *c)
{
	for (size_t i = 0; i < c->stat_cap; i++)
		free(c->stat[i].path);
	free(c->stat);
	c->stat = NULL;
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
	if (!c->stat_dirty && !prune)
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

int ib_cache_step_put(ib_cache *c, const char *key, json_t *entry, ib_error **err)
{
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

static stat_entry *stat_insert(ib_cache *c, const char *path)
{
	if ((c->stat_n + 1) * 2 > c->stat_cap) {
		stat_entry *old = c->stat;
		size_t old_cap = c->stat_cap;
		c->stat_cap = old_cap ? old_cap * 2 : 1024;
		c->stat = xcalloc(c->stat_cap, sizeof(stat_entry));
		for (size_t i = 0; i < old_cap; i++)
			if (old[i].path)
				*stat_slot(c, old[i].path) = old[i];
		free(old);
	}
	stat_entry *e = stat_slot(c, path);
	if (!e->path) {
		e->path = xstrdup(path);
		c->stat_n++;
	}
	return e;
}

static void stat_cache_load(ib_cache *c)
{
	if (c->stat_loaded)
		return;
	c->stat_loaded = true;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	if (ib_read_file(c->stat_path, IB_STAT_CACHE_MAX, &buf, &len, &err) < 0) {
		ib_error_free(&err);
		return;
	}
	/* a malformed record ends the load: what was read before it stays */
	for (char *p = buf, *end = buf + len; p < end;) {
		char *nul = memchr(p, '\0', (size_t)(end - p));
		if (!nul)
			break;
		unsigned long long size, mtime, ino;
		char hex[65];
		int off = 0;
		if (sscanf(p, "%llu %llu %llu %64[0-9a-f] %n", &size, &mtime, &ino, hex, &off) !=
			4 ||
		    off == 0 || strlen(hex) != 64 || p + off >= nul)
			break;
		stat_entry *e = stat_insert(c, p + off);
		e->size = size;
		e->mtime_ns = mtime;
		e->ino = ino;
		snprintf(e->digest, sizeof(e->digest), "sha256:%s", hex);
		p = nul + 1;
		/* optional xattr record of the entry just read */
		unsigned long long ctime;
		char *xnul = p < end ? memchr(p, '\0', (size_t)(end - p)) : NULL;
		if (xnul && p[0] == 'X' && p[1] == ' ' &&
		    sscanf(p, "X %llu %64[0-9a-f]", &ctime, hex) == 2 && strlen(hex) == 64) {
			e->ctime_ns = ctime;
			snprintf(e->xattrs, sizeof(e->xattrs), "sha256:%s", hex);
			p = xnul + 1;
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
	e = stat_insert(c, path);
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
	if (ib_rm_rf(c->dir, err) < 0)
		return ib_error_wrap(err, "clear cache");
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0)
		return ib_error_wrap(err, "clear cache");
	return 0;
}

int ib_cache_mount_dir(ib_cache *c, const char *target, char **out, ib_error **err)
{
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, target, strlen(target));
	cleanup_free char *rel = xasprintf("mounts/%.16s", ib_digest_hex(d));
	cleanup_free char *dir = ib_path_join(c->dir, rel);
	if (ib_mkdir_p(dir, 0755, err) < 0)
		return -1;
	*out = steal_pointer(&dir);
	return 0;
}
