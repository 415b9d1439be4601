/* imgbuild push: upload a stored image to a registry. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "registry.h"
#include "util.h"

static const char push_usage[] =
    "Usage: imgbuild push REF [DEST]\n"
    "\n"
    "Upload the local image REF to the registry named in DEST (default: REF\n"
    "itself, e.g. localhost:5000/team/app:1.4).  Blobs the registry already has\n"
    "are skipped, blobs it holds in another repository are mounted, and the\n"
    "manifest is pushed byte for byte as stored.  The manifest digest the\n"
    "registry holds is printed last on stdout.\n"
    "\n"
    "Options:\n"
    "  -h, --help   this help\n"
    "\n"
    "Environment: IMGBUILD_PUSH_CHUNK_SIZE=BYTES uploads blobs larger than BYTES\n"
    "in chunks of that size (default 64 MiB).\n";

int ib_cmd_push(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "push", .help = push_usage};
	int rc = ib_cli_parse_plain(&cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
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
