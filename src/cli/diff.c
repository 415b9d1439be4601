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
	static const ib_cli_cmd cmd = {.name = "diff", .help = usage};
	int rc = ib_cli_parse_plain(&cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	if (argc - optind > 2)
		return ib_cli_usage_error("diff", "unexpected argument '%s'", argv[optind + 2]);
	if (argc - optind != 2)
		return ib_cli_usage_error("diff", "expected two image references");
	const char *refs[2] = {argv[optind], argv[optind + 1]};
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
