/* imgbuild pull: fetch an image from a registry into the store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "registry.h"
#include "util.h"

static const char pull_usage[] =
    "Usage: imgbuild pull [--platform OS/ARCH[/VARIANT]] REF\n"
    "\n"
    "Download REF (e.g. alpine, localhost:5000/team/app:1.4, name@sha256:...)\n"
    "into the store and tag it with its full name.  For a multi-platform image\n"
    "the entry for the host platform (or --platform) is pulled.  Every blob is\n"
    "verified; the manifest digest is printed last on stdout.\n"
    "\n"
    "Options:\n"
    "  --platform P   os/arch[/variant], e.g. linux/arm64 (default: the host)\n"
    "  -h, --help     this help\n";

int ib_cmd_pull(int argc, char **argv, ib_global *g)
{
	enum { O_PLATFORM = 256 };
	static const struct option opts[] = {{"platform", required_argument, NULL, O_PLATFORM},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {.name = "pull", .help = pull_usage, .longopts = opts};
	const char *platform = NULL;
	ib_cli_parser cp;
	ib_cli_begin(&cp, &cmd, argc, argv, g);
	while (ib_cli_next(&cp) == O_PLATFORM)
		platform = optarg;
	if (cp.exit >= 0)
		return cp.exit;
	if (optind >= argc)
		return ib_cli_usage_error("pull", "missing image reference");
	if (optind + 1 < argc)
		return ib_cli_usage_error("pull", "unexpected argument '%s'", argv[optind + 1]);
	const char *ref = argv[optind];
	ib_error *err = NULL;
	if (platform) {
		ib_platform p;
		if (ib_registry_parse_platform(platform, &p, &err) < 0) {
			int rc = ib_cli_usage_error("pull", "%s", ib_error_msg(err));
			ib_error_free(&err);
			return rc;
		}
		free(p.os);
		free(p.architecture);
		free(p.variant);
	}
	ib_store *store = ib_cli_open_store(g);
	if (!store)
		return 1;
	ib_transfer_printer *pr = ib_transfer_printer_new(stderr, "pulling", g->quiet);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&o, g, pr);
	o.platform = platform;
	ib_descriptor desc = {0};
	int r = ib_registry_pull(store, ref, &o, &desc, &err);
	ib_transfer_printer_free(pr);
	ib_store_free(store);
	if (r < 0) {
		ib_error_wrap(&err, "pull %s", ref);
		return ib_cli_fail(&err);
	}
	if (!g->quiet)
		fprintf(stderr, "pulled %s\n", ref);
	printf("%s\n", desc.digest);
	ib_descriptor_clear(&desc);
	return 0;
}
