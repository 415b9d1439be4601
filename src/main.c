/* Argument parsing of the global options and dispatch only. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "userns.h"
#include "util.h"

static const struct {
	const char *name;
	ib_cmd_fn fn;
	const char *summary;
} commands[] = {
    {"build", ib_cmd_build, "Build an image from a Lua recipe"},
    {"plan", ib_cmd_plan, "Evaluate a recipe and print its plan as JSON"},
    {"images", ib_cmd_images, "List tagged images"},
    {"inspect", ib_cmd_inspect, "Show an image's manifest, config and digests"},
    {"history", ib_cmd_history, "Show the layers of an image"},
    {"tag", ib_cmd_tag, "Add a tag to an image"},
    {"rmi", ib_cmd_rmi, "Remove tags"},
    {"pull", ib_cmd_pull, "Pull an image from a registry"},
    {"push", ib_cmd_push, "Push an image to a registry"},
    {"login", ib_cmd_login, "Store credentials for a registry"},
    {"logout", ib_cmd_logout, "Remove credentials for a registry"},
    {"search", ib_cmd_search, "List a registry's repositories"},
    {"tags", ib_cmd_tags, "List a repository's tags"},
    {"save", ib_cmd_save, "Write images to a docker or OCI archive"},
    {"load", ib_cmd_load, "Load images from a docker or OCI archive"},
    {"load-into", ib_cmd_load_into, "Hand images to docker or podman"},
    {"import", ib_cmd_import, "Create a one-layer image from a rootfs tarball"},
    {"run", ib_cmd_run, "Run a command in an image (build sandbox, nothing kept)"},
    {"diff", ib_cmd_diff, "Show file differences between two images"},
    {"df", ib_cmd_df, "Show what the store uses and what prune would free"},
    {"prune", ib_cmd_prune, "Delete unreferenced blobs, layers and cache"},
    {"verify", ib_cmd_verify, "Re-hash every blob in the store"},
    {"version", ib_cmd_version, "Show the version"},
};

static void usage(FILE *f)
{
	fputs(
	    "Usage: imgbuild [GLOBAL OPTIONS] COMMAND [ARGS]\n"
	    "       imgbuild RECIPE.lua [BUILD OPTIONS]   (same as 'imgbuild build RECIPE.lua')\n\n"
	    "Commands:\n",
	    f);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fputc('\n', f);
	ib_cli_print_global_help(f);
	fputs("  -h, --help             this help; 'imgbuild COMMAND --help' for a command\n"
	      "  --version              the version\n",
	      f);
}

int ib_cmd_version(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {
	    .name = "version",
	    .help = "Usage: imgbuild version\n\nPrint the version of imgbuild.\n",
	};
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	while (ib_cli_next(&p) != -1)
		;
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("version", "unexpected argument '%s'", argv[optind]);
	printf("imgbuild version %s\n", IB_VERSION);
	return 0;
}

static const char *default_root(void)
{
	const char *env = getenv("IMGBUILD_ROOT");
	if (env && *env)
		return env;
	/* root of a user namespace (podman unshare) is still a plain user */
	if (geteuid() == 0 && ib_userns_is_initial())
		return "/var/lib/imgbuild";
	static char buf[4096];
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");
	if (xdg && *xdg)
		snprintf(buf, sizeof(buf), "%s/imgbuild", xdg);
	else
		snprintf(buf, sizeof(buf), "%s/.local/share/imgbuild", home ? home : "/tmp");
	return buf;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);
	return ls >= lx && !strcmp(s + ls - lx, suffix);
}

int main(int argc, char **argv)
{
	enum { O_VERSION = 1 };
	static const struct option opts[] = {{"version", no_argument, NULL, O_VERSION},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd top = {.longopts = opts, .in_order = true};
	ib_global g = {.root = default_root(), .tls_verify = true};
	ib_cli_parser p;
	ib_cli_begin(&p, &top, argc, argv, &g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (c == O_VERSION) {
			printf("imgbuild version %s\n", IB_VERSION);
			return 0;
		}
	}
	if (p.exit >= 0)
		return p.exit;
	int i = optind;
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[i];
	/* rootless: work in a user namespace of our own before the store is
	 * touched (commands that only talk to registries or engines stay out) */
	static const char *const outside[] = {"plan",	"login",     "logout", "search",
					      "tags",	"load-into", "version"};
	bool enter = true;
	for (size_t k = 0; k < sizeof(outside) / sizeof(outside[0]); k++)
		enter = enter && strcmp(name, outside[k]) != 0;
	ib_error *err = NULL;
	if (enter && ib_userns_enter(&err) < 0)
		return ib_cli_fail(&err);
	/* `imgbuild recipe.lua ...` is short for `imgbuild build recipe.lua ...` */
	if (has_suffix(name, ".lua"))
		return ib_cmd_build(argc - i + 1, argv + i - 1, &g);
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(commands[k].name, name) == 0)
			return commands[k].fn(argc - i, argv + i, &g);
	}
	return ib_cli_usage_error(NULL, "unknown command '%s'", name);
}
