/* imgbuild save / load: docker-archive and OCI archive files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "image_archive.h"
#include "ref.h"
#include "util.h"

static const char save_usage[] =
    "Usage: imgbuild save -o FILE [--format docker|oci] REF...\n"
    "\n"
    "Write images to a tar archive: 'docker' (default) is loadable by\n"
    "'docker load' and 'podman load'; 'oci' is a tarred OCI image layout\n"
    "(skopeo's oci-archive:FILE).  The file appears only when complete.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE        the archive to write ('-' = standard output)\n"
    "  --format docker|oci      archive format (default docker)\n"
    "  -h, --help               this help\n";

static const char load_usage[] =
    "Usage: imgbuild load -i FILE\n"
    "\n"
    "Load the images of a docker or OCI archive (plain or compressed) into the\n"
    "store and tag them.  Every blob, digest and layer is checked before\n"
    "anything is tagged: a damaged or hostile archive loads nothing.\n"
    "\n"
    "Options:\n"
    "  -i, --input FILE   the archive to read ('-' = standard input, also the\n"
    "                     default when standard input is not a terminal)\n"
    "  -h, --help         this help\n";

int ib_cmd_save(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(save_usage, stdout);
		return 0;
	}
	const char *output = NULL, *format = NULL;
	cleanup_strv char **refs = NULL;
	bool dashdash = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		int m;
		if (!dashdash && !strcmp(a, "--")) {
			dashdash = true;
		} else if (!dashdash &&
			   (m = ib_cli_option_value(argc, argv, &i, "-o", "--output", &v))) {
			if (m < 0)
				return ib_cli_usage_error("save", "%s needs a file name", a);
			output = v;
		} else if (!dashdash &&
			   (m = ib_cli_option_value(argc, argv, &i, NULL, "--format", &v))) {
			if (m < 0)
				return ib_cli_usage_error("save", "--format needs a value");
			format = v;
		} else if (!dashdash && a[0] == '-' && a[1]) {
			return ib_cli_usage_error("save", "unknown option '%s'", a);
		} else {
			ib_strv_push(&refs, a);
		}
	}
	ib_archive_format fmt = IB_ARCHIVE_DOCKER;
	if (format && !strcmp(format, "oci"))
		fmt = IB_ARCHIVE_OCI;
	else if (format && strcmp(format, "docker") != 0 && strcmp(format, "docker-archive") != 0 &&
		 strcmp(format, "oci-archive") != 0)
		return ib_cli_usage_error("save", "--format must be docker or oci, not '%s'",
					  format);
	else if (format && !strcmp(format, "oci-archive"))
		fmt = IB_ARCHIVE_OCI;
	if (!output)
		return ib_cli_usage_error("save", "missing -o FILE");
	if (!*output)
		return ib_cli_usage_error("save", "empty output file name");
	if (!refs || !refs[0])
		return ib_cli_usage_error("save", "missing image reference");
	if (!strcmp(output, "-") && isatty(STDOUT_FILENO)) {
		ib_error *err = NULL;
		ib_error_setc(&err, IB_EINVALID, "refusing to write an archive to a terminal");
		return ib_cli_fail(&err);
	}
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	int r = ib_archive_save(s, output, fmt, refs, ib_strv_len(refs), &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	return 0;
}

int ib_cmd_load(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(load_usage, stdout);
		return 0;
	}
	const char *input = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		int m = ib_cli_option_value(argc, argv, &i, "-i", "--input", &v);
		if (m < 0)
			return ib_cli_usage_error("load", "%s needs a file name", a);
		if (m > 0)
			input = v;
		else if (a[0] == '-' && a[1])
			return ib_cli_usage_error("load", "unknown option '%s'", a);
		else
			return ib_cli_usage_error("load", "unexpected argument '%s' (use -i FILE)",
						  a);
	}
	if (!input) {
		if (isatty(STDIN_FILENO))
			return ib_cli_usage_error("load", "missing -i FILE");
		input = "-";
	}
	if (!*input)
		return ib_cli_usage_error("load", "empty input file name");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_archive_loaded *loaded = NULL;
	size_t n = 0;
	int r = ib_archive_load(s, input, &loaded, &n, &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	for (size_t i = 0; i < n; i++) {
		if (loaded[i].name) {
			cleanup_free char *fam = ib_ref_familiarize(loaded[i].name);
			printf("Loaded image: %s\n", fam);
		} else {
			printf("Loaded image ID: %s\n", loaded[i].digest);
		}
	}
	ib_archive_loaded_free(loaded, n);
	return 0;
}
