/* imgbuild push: upload a stored image to a registry. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "registry.h"
#include "util.h"

static const char push_usage[] =
    "Usage: imgbuild push [--platform OS/ARCH[/VARIANT]] REF [DEST]\n"
    "\n"
    "Upload the local image REF to the registry named in DEST (default: REF\n"
    "itself, e.g. localhost:5000/team/app:1.4).  Blobs the registry already has\n"
    "are skipped, blobs it holds in another repository are mounted, and the\n"
    "manifest is pushed byte for byte as stored.  Uncompressed layers (loaded\n"
    "from a docker archive) are pushed gzip-compressed instead, under a manifest\n"
    "that then differs from the local one; the compressed copies are kept so\n"
    "the next push reuses them.  A multi-platform REF (an image index) pushes\n"
    "every platform's manifest and blobs, then the index; a platform missing\n"
    "from the store is an error unless --platform picks the one to push (its\n"
    "manifest alone goes under the tag).  The manifest digest the registry\n"
    "holds is printed last on stdout.\n"
    "\n"
    "Options:\n"
    "  --platform OS/ARCH   push only this platform of an image index\n"
    "  -h, --help           this help\n"
    "\n"
    "Environment: IMGBUILD_PUSH_CHUNK_SIZE=BYTES uploads blobs larger than BYTES\n"
    "in chunks of that size (default 64 MiB).\n";

int ib_cmd_push(int argc, char **argv, ib_global *g)
{
	enum { O_PLATFORM = 256 };
	static const struct option opts[] = {{"platform", required_argument, NULL, O_PLATFORM},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {.name = "push", .help = push_usage, .longopts = opts};
	const char *platform = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	while (ib_cli_next(&p) == O_PLATFORM)
		platform = optarg;
	if (p.exit >= 0)
		return p.exit;
	if (platform) {
		ib_platform pf = {0};
		ib_error *perr = NULL;
		int pr = ib_registry_parse_platform(platform, &pf, &perr);
		free(pf.os);
		free(pf.architecture);
		free(pf.variant);
		if (pr < 0) {
			ib_error_free(&perr);
			return ib_cli_bad_value(
			    &p, "--platform must be OS/ARCH[/VARIANT], not '%s'", platform);
		}
	}
	if (optind >= argc)
		return ib_cli_usage_error("push", "missing image reference");
	if (argc - optind > 2)
		return ib_cli_usage_error("push", "unexpected argument '%s'", argv[optind + 2]);
	const char *src = argv[optind], *dest = argc - optind == 2 ? argv[optind + 1] : NULL;
	ib_store *store = ib_cli_open_store(g);
	if (!store)
		return 1;
	ib_transfer_printer *pr = ib_transfer_printer_new(stderr, "pushing", g->quiet);
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&o, g, pr);
	o.platform = platform;
	const char *cs = getenv("IMGBUILD_PUSH_CHUNK_SIZE");
	uint64_t chunk;
	if (cs && *cs) {
		if (ib_parse_u64(cs, &chunk) < 0 || chunk == 0 || chunk > INT64_MAX) {
			ib_transfer_printer_free(pr);
			ib_store_free(store);
			return ib_cli_failf(IB_EUSAGE, "invalid IMGBUILD_PUSH_CHUNK_SIZE '%s'", cs);
		}
		o.chunk_size = (int64_t)chunk;
	}
	char digest[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	int r = ib_registry_push(store, src, dest, &o, digest, &err);
	ib_transfer_printer_free(pr);
	ib_store_free(store);
	if (r < 0) {
		ib_error_wrap(&err, "push %s", dest ? dest : src);
		return ib_cli_fail(&err);
	}
	if (!g->quiet)
		fprintf(stderr, "pushed %s\n", dest ? dest : src);
	printf("%s\n", digest);
	return 0;
}
