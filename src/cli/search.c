/* imgbuild search / tags: list a registry's repositories and a
 * repository's tags. */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "cli/commands.h"
#include "registry.h"
#include "util.h"

static const char search_usage[] =
    "Usage: imgbuild search HOST[/PREFIX]\n"
    "\n"
    "List the repositories of the registry HOST (GET /v2/_catalog, following\n"
    "pagination), one HOST/REPOSITORY per line; with PREFIX only those whose\n"
    "name starts with it.\n"
    "\n"
    "Options:\n"
    "  -h, --help   this help\n";

static const char tags_usage[] =
    "Usage: imgbuild tags REPO\n"
    "\n"
    "List the tags of the repository REPO (e.g. localhost:5000/team/app), one\n"
    "per line, following pagination.\n"
    "\n"
    "Options:\n"
    "  -h, --help   this help\n";

static int one_arg(int argc, char **argv, ib_global *g, const ib_cli_cmd *cmd, const char *what,
		   const char **out)
{
	*out = NULL;
	int rc = ib_cli_parse_plain(cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return ib_cli_usage_error(cmd->name, "missing %s", what);
	if (optind + 1 < argc)
		return ib_cli_usage_error(cmd->name, "unexpected argument '%s'", argv[optind + 1]);
	*out = argv[optind];
	return -1;
}

int ib_cmd_search(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "search", .help = search_usage};
	const char *arg;
	int rc = one_arg(argc, argv, g, &cmd, "registry host", &arg);
	if (rc >= 0)
		return rc;
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&o, g, NULL);
	ib_error *err = NULL;
	cleanup_strv char **repos = NULL;
	if (ib_registry_catalog(arg, &o, &repos, &err) < 0) {
		ib_error_wrap(&err, "search %s", arg);
		return ib_cli_fail(&err);
	}
	const char *slash = strchr(arg, '/');
	cleanup_free char *hostpart = slash ? xstrndup(arg, (size_t)(slash - arg)) : xstrdup(arg);
	cleanup_free char *host = ib_auth_normalize_host(hostpart);
	for (size_t i = 0; repos[i]; i++)
		printf("%s/%s\n", host, repos[i]);
	return 0;
}

int ib_cmd_tags(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "tags", .help = tags_usage};
	const char *arg;
	int rc = one_arg(argc, argv, g, &cmd, "repository", &arg);
	if (rc >= 0)
		return rc;
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&o, g, NULL);
	ib_error *err = NULL;
	cleanup_strv char **tags = NULL;
	if (ib_registry_tags(arg, &o, &tags, &err) < 0) {
		ib_error_wrap(&err, "tags %s", arg);
		return ib_cli_fail(&err);
	}
	for (size_t i = 0; tags[i]; i++)
		puts(tags[i]);
	return 0;
}
