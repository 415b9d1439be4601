/* imgbuild diff: file-level differences between two images.  The engine
 * (layers read from the store, flattened and compared) is ib_image_diff in
 * lib/imgdiff.c. */
#include <stdio.h>

#include "cli/commands.h"
#include "imgdiff.h"

static const char usage[] =
    "Usage: imgbuild diff REF1 REF2\n"
    "\n"
    "Show the files that differ between the filesystems of two images, one\n"
    "line each, sorted by path:\n"
    "  A /path   only in REF2 (added)\n"
    "  D /path   only in REF1 (deleted)\n"
    "  C /path   in both, but type, content, link target, mode or owner differ\n"
    "Modification times are not compared.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

int ib_cmd_diff(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	const char *refs[2];
	int n = 0;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1])
			return ib_cli_usage_error("diff", "unknown option '%s'", argv[i]);
		if (n == 2)
			return ib_cli_usage_error("diff", "unexpected argument '%s'", argv[i]);
		refs[n++] = argv[i];
	}
	if (n != 2)
		return ib_cli_usage_error("diff", "expected two image references");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_diff_entry *changes = NULL;
	size_t n_changes = 0;
	int r = ib_image_diff(s, refs[0], refs[1], &changes, &n_changes, &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	for (size_t i = 0; i < n_changes; i++)
		printf("%c /%s\n", changes[i].kind, changes[i].path);
	ib_diff_entries_free(changes, n_changes);
	return 0;
}
