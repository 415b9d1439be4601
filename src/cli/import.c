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
#include "compress.h"
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
    "  --compression-level N     gzip 1-9 (default 1), zstd 1-19 (default 3)\n"
    "  --source-date-epoch N     timestamp for the config and the mtime clamp\n"
    "                            (default $SOURCE_DATE_EPOCH, else 0)\n"
    "  -h, --help                this help\n";

static json_t *import_config(int64_t epoch, const char *diff_id)
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	char created[64];
	ib_format_rfc3339(created, sizeof(created), epoch);
	json_t *c = ib_config_new(os, arch, variant, created);
	ib_config_add_history(c, diff_id, created, "imgbuild import");
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

/* A library parse error of an option value as a usage error (exit 2). */
static int usage_fail(const char *opt, ib_error **err)
{
	ib_error_wrap(err, "%s", opt);
	ib_error_set_code(err, IB_EUSAGE);
	return ib_cli_fail(err);
}

int ib_cmd_import(int argc, char **argv, ib_global *g)
{
	enum { O_COMP = 256, O_LEVEL, O_SDE };
	static const struct option opts[] = {
	    {"compression", required_argument, NULL, O_COMP},
	    {"compression-level", required_argument, NULL, O_LEVEL},
	    {"source-date-epoch", required_argument, NULL, O_SDE},
	    {NULL, 0, NULL, 0},
	};
	static const ib_cli_cmd cmd = {.name = "import", .help = usage, .longopts = opts};
	ib_layer_options opts_l = IB_LAYER_OPTIONS_INIT;
	const char *epoch_arg = NULL, *comp = NULL, *level = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == O_COMP)
			comp = optarg;
		else if (c == O_LEVEL)
			level = optarg;
		else if (c == O_SDE)
			epoch_arg = optarg;
	}
	if (p.exit >= 0)
		return p.exit;
	if (argc - optind > 2)
		return ib_cli_usage_error("import", "unexpected argument '%s'", argv[optind + 2]);
	if (argc - optind != 2)
		return ib_cli_usage_error("import", "expected ROOTFS and REF");
	const char *pos[2] = {argv[optind], argv[optind + 1]};
	ib_error *err = NULL;
	if (ib_compression_parse(comp, level, &opts_l.compression, &opts_l.level, &err) < 0)
		return usage_fail(level ? "--compression-level" : "--compression", &err);
	if (ib_parse_source_date_epoch(epoch_arg, &opts_l.source_date_epoch, &err) < 0)
		return epoch_arg ? usage_fail("--source-date-epoch", &err) : ib_cli_fail(&err);

	ib_ref *ref = NULL;
	if (ib_ref_parse(&ref, pos[1], &err) < 0)
		return ib_cli_fail(&err);
	if (ref->digest || !ref->tag) {
		ib_ref_free(ref);
		return ib_cli_failf(IB_EINVALID, "\"%s\" must be NAME[:TAG], not a digest", pos[1]);
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
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
			return ib_cli_failf(IB_EINVALID, "%s is a directory, not a tarball", src);
	}
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	int r = do_import(s, fd, src, full, &opts_l, &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	return 0;
}
