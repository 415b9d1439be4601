/* imgbuild import: a rootfs tarball becomes a one-layer image. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "layer.h"
#include "ref.h"
#include "util.h"

static const char usage[] =
    "Usage: imgbuild import [OPTIONS] ROOTFS.tar[.gz|.zst|.xz] REF\n"
    "\n"
    "Create a one-layer image from a root filesystem tarball (any compression;\n"
    "'-' reads standard input), like 'docker import', and tag it REF.  The\n"
    "layer is normalised (sorted PAX entries, numeric owners, mtimes clamped)\n"
    "so the same tarball gives the same image digest.  Prints the digest.\n"
    "\n"
    "Options:\n"
    "  --compression gzip|zstd   layer compression (default gzip)\n"
    "  --source-date-epoch N     timestamp for the config and the mtime clamp\n"
    "                            (default $SOURCE_DATE_EPOCH, else 0)\n"
    "  -h, --help                this help\n";

static int parse_epoch(const char *s, const char *what, int64_t *out, ib_error **err)
{
	uint64_t v;
	if (ib_parse_u64(s, &v) < 0 || v > (uint64_t)INT64_MAX / 2)
		return ib_error_setc(err, IB_EINVALID, "%s: '%s' is not a number of seconds", what,
				     s);
	*out = (int64_t)v;
	return 0;
}

static json_t *import_config(int64_t epoch, const char *diff_id)
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	char created[64];
	time_t t = (time_t)epoch;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);

	json_t *c = json_object();
	json_object_set_new(c, "architecture", json_string(arch));
	json_object_set_new(c, "os", json_string(os));
	if (variant)
		json_object_set_new(c, "variant", json_string(variant));
	json_object_set_new(c, "created", json_string(created));
	json_object_set_new(c, "config", json_object());
	json_t *rootfs = json_object();
	json_object_set_new(rootfs, "type", json_string("layers"));
	json_t *ids = json_array();
	json_array_append_new(ids, json_string(diff_id));
	json_object_set_new(rootfs, "diff_ids", ids);
	json_object_set_new(c, "rootfs", rootfs);
	json_t *h = json_object();
	json_object_set_new(h, "created", json_string(created));
	json_object_set_new(h, "created_by", json_string("imgbuild import"));
	json_t *history = json_array();
	json_array_append_new(history, h);
	json_object_set_new(c, "history", history);
	return c;
}

static int do_import(ib_store *s, int fd, const char *src, const char *full,
		     const ib_layer_options *opts, ib_error **err)
{
	ib_layer_result res;
	memset(&res, 0, sizeof(res));
	int r = ib_layer_import(s, fd, opts, &res, err);
	if (r < 0)
		return ib_error_wrap(err, "import %s", src);
	json_t *config = import_config(opts->source_date_epoch, res.diff_id);
	ib_descriptor layer = {0};
	layer.media_type = xstrdup(ib_layer_media_type(opts->compression, false));
	memcpy(layer.digest, res.digest, IB_DIGEST_BUFLEN);
	layer.size = res.size;
	ib_descriptor desc = {0};
	r = ib_store_image_write(s, config, &layer, 1, NULL, &desc, err);
	json_decref(config);
	ib_descriptor_clear(&layer);
	if (r == 0)
		r = ib_store_tag_set(s, full, &desc, err);
	if (r == 0)
		printf("%s\n", desc.digest);
	ib_descriptor_clear(&desc);
	return r;
}

int ib_cmd_import(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	ib_layer_options opts = IB_LAYER_OPTIONS_INIT;
	const char *epoch_arg = NULL, *comp = NULL;
	const char *pos[2] = {NULL, NULL};
	int npos = 0;
	bool dashdash = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = NULL;
		int m;
		if (!dashdash && !strcmp(a, "--")) {
			dashdash = true;
			continue;
		}
		if (!dashdash &&
		    (m = ib_cli_option_value(argc, argv, &i, NULL, "--compression", &v)) != 0) {
			if (m < 0)
				return ib_cli_usage_error("import", "--compression needs a value");
			comp = v;
		} else if (!dashdash && (m = ib_cli_option_value(argc, argv, &i, NULL,
								 "--source-date-epoch", &v)) != 0) {
			if (m < 0)
				return ib_cli_usage_error("import",
							  "--source-date-epoch needs a value");
			epoch_arg = v;
		} else if (!dashdash && a[0] == '-' && a[1]) {
			return ib_cli_usage_error("import", "unknown option '%s'", a);
		} else if (npos < 2) {
			pos[npos++] = a;
		} else {
			return ib_cli_usage_error("import", "unexpected argument '%s'", a);
		}
	}
	if (npos != 2)
		return ib_cli_usage_error("import", "expected ROOTFS and REF");
	if (comp && !strcmp(comp, "gzip"))
		opts.compression = IB_COMP_GZIP;
	else if (comp && !strcmp(comp, "zstd"))
		opts.compression = IB_COMP_ZSTD;
	else if (comp)
		return ib_cli_usage_error("import", "--compression must be gzip or zstd, not '%s'",
					  comp);
	ib_error *err = NULL;
	opts.source_date_epoch = 0;
	const char *env = getenv("SOURCE_DATE_EPOCH");
	if (epoch_arg) {
		if (parse_epoch(epoch_arg, "--source-date-epoch", &opts.source_date_epoch, &err) <
		    0)
			return ib_cli_fail(&err);
	} else if (env && *env) {
		if (parse_epoch(env, "SOURCE_DATE_EPOCH", &opts.source_date_epoch, &err) < 0)
			return ib_cli_fail(&err);
	}

	ib_ref *ref = NULL;
	if (ib_ref_parse(&ref, pos[1], &err) < 0)
		return ib_cli_fail(&err);
	if (ref->digest || !ref->tag) {
		ib_ref_free(ref);
		ib_error_setc(&err, IB_EINVALID, "\"%s\" must be NAME[:TAG], not a digest", pos[1]);
		return ib_cli_fail(&err);
	}
	cleanup_free char *full = ib_ref_string(ref);
	ib_ref_free(ref);

	const char *src = pos[0];
	cleanup_close int fd = -1;
	if (!strcmp(src, "-")) {
		src = "standard input";
		fd = dup(STDIN_FILENO);
		if (fd < 0) {
			ib_error_set(&err, errno, "standard input");
			return ib_cli_fail(&err);
		}
	} else {
		fd = open(src, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0) {
			ib_error_set(&err, errno, "open %s", src);
			return ib_cli_fail(&err);
		}
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
			ib_error_setc(&err, IB_EINVALID, "%s is a directory, not a tarball", src);
			return ib_cli_fail(&err);
		}
	}
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	int r = do_import(s, fd, src, full, &opts, &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	return 0;
}
