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
    "Usage: imgbuild prune [--all] [--cache-mounts] [--keep-storage SIZE]\n"
    "\n"
    "Delete blobs no tag refers to, unpacked layers no image uses and leftover\n"
    "temporary files, and say what was deleted.  Layers the step cache refers\n"
    "to are kept, so cached builds stay cached; so are cache mounts.  See\n"
    "`imgbuild df` for what the store uses.\n"
    "\n"
    "Options:\n"
    "  -a, --all             also drop the whole step cache (and its layers) and\n"
    "                        the cache mounts, as `docker builder prune --all`\n"
    "      --cache-mounts    also drop the cache mounts (run{cache_mounts=...})\n"
    "  --keep-storage SIZE   keep at most SIZE (e.g. 500MB, 10GB, 1GiB) of\n"
    "                        cache-only layers, the most recently used first;\n"
    "                        older cache entries are dropped\n"
    "  -h, --help            this help\n";

static const char verify_usage[] =
    "Usage: imgbuild verify [--fetch]\n"
    "\n"
    "Re-hash every blob of the store and check that everything a tag refers\n"
    "to is present.  Prints one line per problem and exits 1 if there is any.\n"
    "Layers of images built from a registry cache (--cache-from) that were\n"
    "not downloaded are listed as remote: they are not a problem, and are\n"
    "downloaded when a command needs them.\n"
    "\n"
    "Options:\n"
    "      --fetch  download the remote layers first, so that every image is\n"
    "               whole in the store (for tools reading ROOT/oci directly)\n"
    "  -h, --help   this help\n";

static int do_prune(ib_store *s, bool all, bool mounts, bool have_budget, uint64_t budget,
		    ib_error **err)
{
	size_t dropped = 0;
	/* what --all and --cache-mounts remove, measured first to say so */
	cleanup_free char *steps_dir = ib_cache_steps_path(s);
	cleanup_free char *mounts_dir = ib_cache_mounts_path(s);
	size_t n_steps = all ? ib_dir_entries(steps_dir) : 0;
	size_t n_mounts = all || mounts ? ib_dir_entries(mounts_dir) : 0;
	uint64_t mounts_bytes = n_mounts ? ib_dir_usage(mounts_dir) : 0;
	/* removed under the store's exclusive lock: no build is using them */
	cleanup_strv char **remove = xcalloc(1, sizeof(char *));
	if (all) {
		cleanup_free char *cache_dir = ib_cache_root_path(s);
		ib_strv_push(&remove, cache_dir);
	} else if (mounts) {
		ib_strv_push(&remove, mounts_dir);
	}
	ib_cache *cache = NULL;
	int r = ib_cache_open(&cache, s, err);
	if (r < 0)
		return r;
	if (!all && have_budget && ib_cache_trim(cache, s, budget, &dropped, err) < 0) {
		ib_cache_free(cache);
		return ib_error_wrap(err, "prune the step cache");
	}
	cleanup_strv char **digests = NULL;
	cleanup_strv char **diff_ids = NULL;
	if (!all)
		r = ib_cache_referenced(cache, &digests, &diff_ids, err);
	if (r < 0 || all) {
		/* --all: the whole cache goes, with nothing of it kept */
		ib_cache_free(cache);
		cache = NULL;
		if (r < 0)
			return r;
	}
	ib_prune_options opts = IB_PRUNE_OPTIONS_INIT;
	opts.keep_digests = digests;
	opts.keep_layers = diff_ids;
	opts.remove_dirs = remove;
	ib_prune_stats stats;
	memset(&stats, 0, sizeof(stats));
	r = ib_store_prune(s, &opts, &stats, err);
	/* blob locations of blobs the store no longer has are useless for mounts */
	if (r == 0 && !all)
		r = ib_cache_blob_records_prune(cache, err);
	ib_cache_free(cache);
	if (r < 0)
		return r;
	char freed[32];
	ib_format_size(freed, sizeof(freed), stats.bytes_removed);
	printf("Deleted %" PRIu64 " blobs, freed %s\n", stats.blobs_removed, freed);
	if (stats.layers_removed)
		printf("Deleted %" PRIu64 " unpacked layers\n", stats.layers_removed);
	if (stats.tmp_removed)
		printf("Deleted %" PRIu64 " temporary entries\n", stats.tmp_removed);
	if (n_steps)
		printf("Deleted %zu step cache entries\n", n_steps);
	if (n_mounts) {
		char mb[32];
		ib_format_size(mb, sizeof(mb), mounts_bytes);
		printf("Deleted %zu cache mounts, freed %s\n", n_mounts, mb);
	}
	if (dropped)
		printf("Dropped %zu step cache entries over the storage limit\n", dropped);
	return 0;
}

int ib_cmd_prune(int argc, char **argv, ib_global *g)
{
	enum { O_KEEP = 256, O_MOUNTS };
	static const struct option opts[] = {{"all", no_argument, NULL, 'a'},
					     {"cache-mounts", no_argument, NULL, O_MOUNTS},
					     {"keep-storage", required_argument, NULL, O_KEEP},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {
	    .name = "prune", .help = prune_usage, .shortopts = "a", .longopts = opts};
	bool all = false, mounts = false, have_budget = false;
	uint64_t budget = 0;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == 'a') {
			all = true;
		} else if (c == O_MOUNTS) {
			mounts = true;
		} else if (c == O_KEEP) {
			if (ib_parse_size(optarg, false, &budget) < 0)
				return ib_cli_bad_value(&p, "invalid size '%s' (e.g. 500MB, 10GB)",
							optarg);
			have_budget = true;
		}
	}
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("prune", "unexpected argument '%s'", argv[optind]);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	int r = do_prune(s, all, mounts, have_budget, budget, &err);
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

/* verify --fetch: download every remote layer; then the remote ones left
 * (all of them without --fetch) are listed.  *n_remote: how many. */
static int verify_remote(ib_store *s, bool fetch, size_t *n_remote, ib_error **err)
{
	ib_store_remote *recs = NULL;
	size_t n = 0;
	*n_remote = 0;
	int r = ib_store_remote_referenced(s, &recs, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (fetch) {
			r = ib_store_blob_fetch(s, recs[i].digest, err);
			continue;
		}
		printf("remote: %s (not downloaded; in %s)\n", recs[i].digest, recs[i].repository);
		(*n_remote)++;
	}
	for (size_t i = 0; i < n; i++)
		ib_store_remote_clear(&recs[i]);
	free(recs);
	return r;
}

int ib_cmd_verify(int argc, char **argv, ib_global *g)
{
	enum { O_FETCH = 256 };
	static const struct option opts[] = {{"fetch", no_argument, NULL, O_FETCH},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {.name = "verify", .help = verify_usage, .longopts = opts};
	bool fetch = false;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1)
		if (c == O_FETCH)
			fetch = true;
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("verify", "unexpected argument '%s'", argv[optind]);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_store_check_permissions(s, report_permissions, NULL);
	ib_error *err = NULL;
	size_t n_remote = 0;
	if (fetch && verify_remote(s, true, &n_remote, &err) < 0) {
		ib_store_free(s);
		return ib_cli_fail(&err);
	}
	int r = ib_store_verify(s, report_problem, NULL, &err);
	if (r >= 0 && verify_remote(s, false, &n_remote, &err) < 0)
		r = -1;
	size_t n = count_blobs(s);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	if (r > 0)
		return ib_cli_failf(IB_EDIGEST, "store verification failed: %d problem%s", r,
				    r == 1 ? "" : "s");
	if (n_remote)
		printf("store OK: %zu blobs verified, %zu layer%s remote (not downloaded)\n", n,
		       n_remote, n_remote == 1 ? "" : "s");
	else
		printf("store OK: %zu blobs verified\n", n);
	return 0;
}
