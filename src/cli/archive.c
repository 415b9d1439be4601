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
    "Usage: imgbuild save [-o FILE] [--format docker|oci] REF...\n"
    "\n"
    "Write images to a tar archive: 'docker' (default) is loadable by\n"
    "'docker load' and 'podman load'; 'oci' is a tarred OCI image layout\n"
    "(skopeo's oci-archive:FILE).  The file appears only when complete.\n"
    "Without -o the archive goes to standard output, which must not be a\n"
    "terminal ('imgbuild save app | docker load').\n"
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
	enum { O_FORMAT = 256 };
	static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
					     {"format", required_argument, NULL, O_FORMAT},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {
	    .name = "save", .help = save_usage, .shortopts = "o:", .longopts = opts};
	const char *output = NULL, *format = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == 'o')
			output = optarg;
		else if (c == O_FORMAT)
			format = optarg;
	}
	if (p.exit >= 0)
		return p.exit;
	cleanup_strv char **refs = NULL;
	for (int i = optind; i < argc; i++)
		ib_strv_push(&refs, argv[i]);
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
		output = "-";
	if (!*output)
		return ib_cli_usage_error("save", "empty output file name");
	if (!refs || !refs[0])
		return ib_cli_usage_error("save", "missing image reference");
	if (!strcmp(output, "-") && isatty(STDOUT_FILENO))
		return ib_cli_failf(IB_EINVALID, "cowardly refusing to save to a terminal. "
						 "Use the -o flag or redirect");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	int r = ib_cli_fetch_images(s, refs, ib_strv_len(refs), &err);
	if (r == 0)
		r = ib_archive_save(s, output, fmt, refs, ib_strv_len(refs), &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	return 0;
}

int ib_cmd_load(int argc, char **argv, ib_global *g)
{
	static const struct option opts[] = {{"input", required_argument, NULL, 'i'},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {
	    .name = "load", .help = load_usage, .shortopts = "i:", .longopts = opts};
	const char *input = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	while (ib_cli_next(&p) == 'i')
		input = optarg;
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("load", "unexpected argument '%s' (use -i FILE)",
					  argv[optind]);
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
