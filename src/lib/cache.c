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
#define IB_STAT_CACHE_MAX (256u << 20)

struct ib_cache {
	char *dir;
	char *steps_dir;
	char *explain_dir;
	char *stat_path;
	json_t *stat; /* path -> [size, mtime_ns, ino, digest]; loaded lazily */
	bool stat_dirty;
};

int ib_cache_open(ib_cache **out, ib_store *store, ib_error **err)
{
	ib_cache *c = xcalloc(1, sizeof(*c));
	c->dir = ib_path_join(ib_store_root(store), "cache");
	c->steps_dir = ib_path_join(c->dir, "steps");
	c->explain_dir = ib_path_join(c->dir, "explain");
	c->stat_path = ib_path_join(c->dir, "stat.json");
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0) {
		ib_cache_free(c);
		return ib_error_wrap(err, "open step cache");
	}
	*out = c;
	return 0;
}

static void stat_cache_save(ib_cache *c)
{
	if (!c->stat || !c->stat_dirty)
		return;
	size_t len = 0;
	cleanup_free char *s = ib_json_dump_canonical(c->stat, &len);
	ib_error *err = NULL;
	if (ib_write_file_atomic(c->stat_path, s, len, 0600, &err) < 0)
		ib_error_free(&err);
	c->stat_dirty = false;
}

void ib_cache_free(ib_cache *c)
{
	if (!c)
		return;
	stat_cache_save(c);
	json_decref(c->stat);
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

static json_t *read_json(const char *path)
{
	if (!path)
		return NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	if (ib_read_file(path, IB_CACHE_ENTRY_MAX, &buf, &len, &err) < 0) {
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
	json_t *j = read_json(p);
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
	return read_json(p);
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

static void stat_cache_load(ib_cache *c)
{
	if (c->stat)
		return;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	if (ib_read_file(c->stat_path, IB_STAT_CACHE_MAX, &buf, &len, &err) == 0)
		c->stat = json_loadb(buf, len, 0, NULL);
	ib_error_free(&err);
	if (!json_is_object(c->stat)) {
		json_decref(c->stat);
		c->stat = json_object();
	}
}

int ib_cache_file_digest(ib_cache *c, const char *path, const struct stat *st,
			 char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	stat_cache_load(c);
	json_int_t mtime_ns = (json_int_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	json_t *e = json_object_get(c->stat, path);
	if (json_is_array(e) && json_array_size(e) == 4 &&
	    json_integer_value(json_array_get(e, 0)) == (json_int_t)st->st_size &&
	    json_integer_value(json_array_get(e, 1)) == mtime_ns &&
	    json_integer_value(json_array_get(e, 2)) == (json_int_t)st->st_ino) {
		const char *d = json_string_value(json_array_get(e, 3));
		if (ib_digest_validate(d, NULL) == 0) {
			memcpy(out, d, IB_DIGEST_BUFLEN);
			return 0;
		}
	}
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", path);
	if (ib_digest_fd(out, fd, NULL, err) < 0)
		return ib_error_wrap(err, "hash %s", path);
	json_object_set_new(c->stat, path,
			    json_pack("[IIIs]", (json_int_t)st->st_size, mtime_ns,
				      (json_int_t)st->st_ino, out));
	c->stat_dirty = true;
	return 0;
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
	json_decref(c->stat);
	c->stat = NULL;
	c->stat_dirty = false;
	if (ib_rm_rf(c->dir, err) < 0)
		return ib_error_wrap(err, "clear cache");
	if (ib_mkdir_p(c->steps_dir, 0700, err) < 0 || ib_mkdir_p(c->explain_dir, 0700, err) < 0)
		return ib_error_wrap(err, "clear cache");
	return 0;
}
