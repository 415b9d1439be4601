/* imgbuild df: what the store uses (ib_store_usage_get), like
 * `docker system df`. */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cli/commands.h"
#include "util.h"

static const char usage[] =
    "Usage: imgbuild df [-v] [--json]\n"
    "\n"
    "Show what the store uses, one row per kind, with what `imgbuild prune`\n"
    "would free (RECLAIMABLE; step cache: `prune --all`; cache mounts:\n"
    "`prune --cache-mounts` or `prune --all`):\n"
    "  Images            tags; the blobs of their images, each counted once\n"
    "    unique blobs    layers and configs only one image uses\n"
    "    shared blobs    layers and configs several images use\n"
    "  Step cache        blobs only the step cache uses (entries counted)\n"
    "  Unreferenced      blobs nothing uses\n"
    "  Unpacked layers   layers unpacked for builds (ROOT/layers)\n"
    "  Cache mounts      run{cache_mounts=...} directories (ROOT/cache/mounts)\n"
    "  Temporary         ROOT/tmp\n"
    "  Remote layers     layers of images tagged from a --cache-from cache and\n"
    "                    still only in its registry (fetched on first use; not\n"
    "                    on disk, their compressed size)\n"
    "Sizes are apparent file sizes (compressed, for blobs).\n"
    "\n"
    "Options:\n"
    "  -v, --verbose  also list every image (size, shared, unique) and cache mount\n"
    "      --json     print the numbers as one JSON object (bytes)\n"
    "  -h, --help     this help\n";

static char *size_str(uint64_t b)
{
	char buf[32];
	ib_format_size(buf, sizeof(buf), b);
	return xstrdup(buf);
}

static char *reclaim_str(uint64_t b, uint64_t total)
{
	char buf[32];
	ib_format_size(buf, sizeof(buf), b);
	if (!total)
		return xstrdup(buf);
	return xasprintf("%s (%d%%)", buf, (int)(b * 100 / total));
}

typedef struct mount_use {
	char *id;
	uint64_t bytes;
} mount_use;

static mount_use *cache_mounts(const char *dir, size_t *n_out, uint64_t *total)
{
	cleanup_dir DIR *d = opendir(dir);
	mount_use *m = NULL;
	size_t n = 0;
	struct dirent *de;
	*total = 0;
	while (d && (de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *p = ib_path_join(dir, de->d_name);
		m = xrealloc(m, (n + 1) * sizeof(*m));
		m[n].id = xstrdup(de->d_name);
		m[n].bytes = ib_dir_usage(p);
		*total += m[n].bytes;
		n++;
	}
	*n_out = n;
	return m;
}

int ib_cmd_df(int argc, char **argv, ib_global *g)
{
	enum { O_JSON = 256 };
	static const struct option opts[] = {{"verbose", no_argument, NULL, 'v'},
					     {"json", no_argument, NULL, O_JSON},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {
	    .name = "df", .help = usage, .shortopts = "v", .longopts = opts};
	bool verbose = false, as_json = false;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == 'v')
			verbose = true;
		else if (c == O_JSON)
			as_json = true;
	}
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("df", "unexpected argument '%s'", argv[optind]);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_cache *cache = NULL;
	cleanup_strv char **digests = NULL, **diff_ids = NULL;
	ib_store_usage u;
	int r = ib_cache_open(&cache, s, &err);
	if (r == 0)
		r = ib_cache_referenced(cache, &digests, &diff_ids, &err);
	ib_cache_free(cache);
	if (r == 0)
		r = ib_store_usage_get(s, digests, diff_ids, &u, &err);
	if (r < 0) {
		ib_store_free(s);
		return ib_cli_fail(&err);
	}
	cleanup_free char *steps = ib_cache_steps_path(s);
	cleanup_free char *mdir = ib_cache_mounts_path(s);
	size_t n_steps = ib_dir_entries(steps), n_mounts = 0;
	uint64_t mounts_bytes = 0;
	mount_use *mounts = cache_mounts(mdir, &n_mounts, &mounts_bytes);
	ib_store_free(s);

	if (as_json) {
		json_t *imgs = json_array();
		for (size_t i = 0; i < u.n_images; i++)
			json_array_append_new(
			    imgs, json_pack("{s:s, s:s, s:I, s:I, s:I}", "name", u.images[i].name,
					    "digest", u.images[i].digest, "size",
					    (json_int_t)u.images[i].size, "shared",
					    (json_int_t)u.images[i].shared, "unique",
					    (json_int_t)u.images[i].unique));
		json_t *ms = json_array();
		for (size_t i = 0; i < n_mounts; i++)
			json_array_append_new(ms, json_pack("{s:s, s:I}", "id", mounts[i].id,
							    "size", (json_int_t)mounts[i].bytes));
		json_t *o = json_pack(
		    "{s:{s:I, s:I, s:I, s:I, s:I, s:o}, s:{s:I, s:I, s:I}, s:{s:I, s:I}, "
		    "s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:o}, s:{s:I, s:I}}",
		    "images", "count", (json_int_t)u.n_images, "distinct",
		    (json_int_t)u.n_distinct_images, "size", (json_int_t)u.images_bytes, "unique",
		    (json_int_t)u.unique_bytes, "shared", (json_int_t)u.shared_bytes, "list", imgs,
		    "step_cache", "entries", (json_int_t)n_steps, "blobs",
		    (json_int_t)u.cache_blobs, "size", (json_int_t)u.cache_bytes, "unreferenced",
		    "blobs", (json_int_t)u.unreferenced_blobs, "size",
		    (json_int_t)u.unreferenced_bytes, "unpacked_layers", "count",
		    (json_int_t)u.unpacked, "size", (json_int_t)u.unpacked_bytes,
		    "reclaimable_count", (json_int_t)u.unpacked_unused, "reclaimable",
		    (json_int_t)u.unpacked_unused_bytes, "cache_mounts", "count",
		    (json_int_t)n_mounts, "size", (json_int_t)mounts_bytes, "list", ms, "temporary",
		    "entries", (json_int_t)u.tmp_entries, "size", (json_int_t)u.tmp_bytes);
		/* layers of lazily tagged images, in a registry: not on disk */
		json_object_set_new(o, "remote_layers",
				    json_pack("{s:I, s:I}", "count", (json_int_t)u.remote_layers,
					      "size", (json_int_t)u.remote_bytes));
		char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
		json_decref(o);
	} else {
		static const char *const head[] = {"TYPE", "TOTAL", "SIZE", "RECLAIMABLE"};
		enum { NCOL = 4, NROW = 9 };
		char **cells = xcalloc(NCOL * NROW + 1, sizeof(char *));
		size_t k = 0;
#define ROW(type, total, size, reclaim)                                                            \
	do {                                                                                       \
		cells[k++] = xstrdup(type);                                                        \
		cells[k++] = xasprintf("%" PRIu64, (uint64_t)(total));                             \
		cells[k++] = size_str(size);                                                       \
		cells[k++] = reclaim;                                                              \
	} while (0)
		ROW("Images", u.n_images, u.images_bytes, size_str(0));
		ROW("  unique blobs", u.unique_blobs, u.unique_bytes, size_str(0));
		ROW("  shared blobs", u.shared_blobs, u.shared_bytes, size_str(0));
		ROW("Step cache", n_steps, u.cache_bytes,
		    reclaim_str(u.cache_bytes, u.cache_bytes));
		ROW("Unreferenced", u.unreferenced_blobs, u.unreferenced_bytes,
		    reclaim_str(u.unreferenced_bytes, u.unreferenced_bytes));
		ROW("Unpacked layers", u.unpacked, u.unpacked_bytes,
		    reclaim_str(u.unpacked_unused_bytes, u.unpacked_bytes));
		ROW("Cache mounts", n_mounts, mounts_bytes,
		    reclaim_str(mounts_bytes, mounts_bytes));
		ROW("Temporary", u.tmp_entries, u.tmp_bytes, reclaim_str(u.tmp_bytes, u.tmp_bytes));
		/* not on disk: fetched from their registry on first use */
		ROW("Remote layers", u.remote_layers, u.remote_bytes, size_str(0));
#undef ROW
		ib_cli_print_table(head, NCOL, cells, NROW);
		if (verbose) {
			static const char *const ih[] = {"IMAGE", "ID", "SIZE", "SHARED SIZE",
							 "UNIQUE SIZE"};
			char **ic = xcalloc(u.n_images * 5 + 1, sizeof(char *));
			for (size_t i = 0; i < u.n_images; i++) {
				ic[i * 5] = xstrdup(u.images[i].name);
				ic[i * 5 + 1] =
				    xasprintf("%.12s", ib_digest_hex(u.images[i].digest));
				ic[i * 5 + 2] = size_str(u.images[i].size);
				ic[i * 5 + 3] = size_str(u.images[i].shared);
				ic[i * 5 + 4] = size_str(u.images[i].unique);
			}
			printf("\nImages:\n");
			ib_cli_print_table(ih, 5, ic, u.n_images);
			static const char *const mh[] = {"CACHE MOUNT", "SIZE"};
			char **mc = xcalloc(n_mounts * 2 + 1, sizeof(char *));
			for (size_t i = 0; i < n_mounts; i++) {
				mc[i * 2] = xstrdup(mounts[i].id);
				mc[i * 2 + 1] = size_str(mounts[i].bytes);
			}
			printf("\nCache mounts:\n");
			ib_cli_print_table(mh, 2, mc, n_mounts);
		}
	}
	for (size_t i = 0; i < n_mounts; i++)
		free(mounts[i].id);
	free(mounts);
	ib_store_usage_free(&u);
	return 0;
}
