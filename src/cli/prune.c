/* imgbuild prune / verify: store maintenance. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "cli/commands.h"
#include "util.h"

static const char prune_usage[] =
    "Usage: imgbuild prune [--all] [--keep-storage SIZE]\n"
    "\n"
    "Delete blobs no tag refers to, unpacked layers no image uses and leftover\n"
    "temporary files.  Layers the step cache refers to are kept, so cached\n"
    "builds stay cached.\n"
    "\n"
    "Options:\n"
    "  --all                 also drop the whole step cache (and its layers)\n"
    "  --keep-storage SIZE   keep at most SIZE (e.g. 500MB, 10GB, 1GiB) of\n"
    "                        cache-only layers, the most recently used first;\n"
    "                        older cache entries are dropped\n"
    "  -h, --help            this help\n";

static const char verify_usage[] =
    "Usage: imgbuild verify\n"
    "\n"
    "Re-hash every blob of the store and check that everything a tag refers\n"
    "to is present.  Prints one line per problem and exits 1 if there is any.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

/* "123", "10k", "500MB", "1.5GB", "2GiB" -> bytes (kB/MB/GB powers of
 * 1000 as docker prints them, KiB/MiB/GiB powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)s[0]))
		return -1;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	static const struct {
		const char *suffix;
		double mult;
	} units[] = {
	    {"", 1},
	    {"b", 1},
	    {"k", 1e3},
	    {"kb", 1e3},
	    {"m", 1e6},
	    {"mb", 1e6},
	    {"g", 1e9},
	    {"gb", 1e9},
	    {"t", 1e12},
	    {"tb", 1e12},
	    {"ki", 1024.0},
	    {"kib", 1024.0},
	    {"mi", 1048576.0},
	    {"mib", 1048576.0},
	    {"gi", 1073741824.0},
	    {"gib", 1073741824.0},
	    {"ti", 1099511627776.0},
	    {"tib", 1099511627776.0},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].suffix) != 0)
			continue;
		double b = v * units[i].mult;
		if (!isfinite(b) || b >= 1.8e19)
			return -1;
		*out = (uint64_t)b;
		return 0;
	}
	return -1;
}

typedef struct cache_entry {
	char *path;
	time_t mtime;
	uint64_t size;
} cache_entry;

static int entry_newer_first(const void *a, const void *b)
{
	const cache_entry *x = a, *y = b;
	if (x->mtime != y->mtime)
		return x->mtime > y->mtime ? -1 : 1;
	return strcmp(x->path, y->path);
}

/* The bytes a step cache entry costs: its layer blob's size in the store
 * (0 when it names no layer or the blob is gone). */
static uint64_t entry_cost(ib_store *s, const char *file)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (ib_read_file(file, 1 << 20, &buf, &len, NULL) < 0)
		return 0;
	json_auto_t *j = json_loadb(buf, len, 0, NULL);
	const char *digest =
	    json_string_value(json_object_get(json_object_get(j, "layer"), "digest"));
	if (!digest || ib_digest_validate(digest, NULL) < 0)
		return 0;
	cleanup_free char *path = ib_store_blob_path(s, digest);
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* --keep-storage: walk ROOT/cache/steps (layout in cache.h) newest first and
 * drop the entries beyond the budget; a missing entry is a cache miss. */
static int trim_cache(ib_store *s, uint64_t budget, size_t *dropped, ib_error **err)
{
	*dropped = 0;
	cleanup_free char *dir = xasprintf("%s/cache/steps", ib_store_root(s));
	cleanup_dir DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return ib_error_set(err, errno, "open %s", dir);
	}
	cache_entry *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		char *path = ib_path_join(dir, de->d_name);
		struct stat st;
		if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		v = xrealloc(v, (n + 1) * sizeof(*v));
		v[n].path = path;
		v[n].mtime = st.st_mtime;
		v[n].size = entry_cost(s, path);
		n++;
	}
	if (n > 0)
		qsort(v, n, sizeof(*v), entry_newer_first);
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

static int do_prune(ib_store *s, bool all, bool have_budget, uint64_t budget, ib_error **err)
{
	size_t dropped = 0;
	if (!all && have_budget && trim_cache(s, budget, &dropped, err) < 0)
		return ib_error_wrap(err, "prune the step cache");
	ib_cache *cache = NULL;
	int r = ib_cache_open(&cache, s, err);
	if (r < 0)
		return r;
	cleanup_strv char **digests = NULL;
	cleanup_strv char **diff_ids = NULL;
	if (all)
		r = ib_cache_clear(cache, err);
	else
		r = ib_cache_referenced(cache, &digests, &diff_ids, err);
	ib_cache_free(cache);
	if (r < 0)
		return r;
	ib_prune_options opts = IB_PRUNE_OPTIONS_INIT;
	opts.keep_digests = digests;
	opts.keep_layers = diff_ids;
	ib_prune_stats stats;
	memset(&stats, 0, sizeof(stats));
	r = ib_store_prune(s, &opts, &stats, err);
	if (r < 0)
		return r;
	char freed[32];
	ib_format_size(freed, sizeof(freed), stats.bytes_removed);
	printf("Deleted %" PRIu64 " blobs, freed %s\n", stats.blobs_removed, freed);
	if (stats.layers_removed)
		printf("Deleted %" PRIu64 " unpacked layers\n", stats.layers_removed);
	if (dropped)
		printf("Dropped %zu step cache entries over the storage limit\n", dropped);
	return 0;
}

int ib_cmd_prune(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(prune_usage, stdout);
		return 0;
	}
	bool all = false, have_budget = false;
	uint64_t budget = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (!strcmp(a, "--all") || !strcmp(a, "-a")) {
			all = true;
			continue;
		}
		if (!strncmp(a, "--keep-storage=", 15)) {
			v = a + 15;
		} else if (!strcmp(a, "--keep-storage")) {
			if (i + 1 >= argc)
				return ib_cli_usage_error("prune", "--keep-storage needs a size");
			v = argv[++i];
		} else if (a[0] == '-') {
			return ib_cli_usage_error("prune", "unknown option '%s'", a);
		} else {
			return ib_cli_usage_error("prune", "unexpected argument '%s'", a);
		}
		if (parse_size(v, &budget) < 0)
			return ib_cli_usage_error("prune", "invalid size '%s' (e.g. 500MB, 10GB)",
						  v);
		have_budget = true;
	}
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	int r = do_prune(s, all, have_budget, budget, &err);
	ib_store_free(s);
	return r < 0 ? ib_cli_fail(&err) : 0;
}

static void report_problem(const char *digest, const char *problem, void *payload)
{
	(void)payload;
	if (!strncmp(problem, "corrupt: ", 9))
		problem += 9;
	printf("corrupt: %s (%s)\n", digest, problem);
	fflush(stdout);
}

/* Blob files in the layout (what verify re-hashed). */
static size_t count_blobs(ib_store *s)
{
	cleanup_free char *dir = xasprintf("%s/blobs/sha256", ib_store_layout_dir(s));
	cleanup_dir DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	return n;
}

static void report_permissions(const char *path, const char *problem, void *payload)
{
	(void)payload;
	fprintf(stderr, "warning: %s: %s\n", path, problem);
}

int ib_cmd_verify(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(verify_usage, stdout);
		return 0;
	}
	if (argc > 1)
		return ib_cli_usage_error("verify", "unexpected argument '%s'", argv[1]);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_store_check_permissions(s, report_permissions, NULL);
	ib_error *err = NULL;
	int r = ib_store_verify(s, report_problem, NULL, &err);
	size_t n = count_blobs(s);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	if (r > 0) {
		ib_error_setc(&err, IB_EDIGEST, "store verification failed: %d problem%s", r,
			      r == 1 ? "" : "s");
		return ib_cli_fail(&err);
	}
	printf("store OK: %zu blobs verified\n", n);
	return 0;
}
