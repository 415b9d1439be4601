/* Argument parsing of the global options and dispatch only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
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
    {"import", ib_cmd_import, "Create a one-layer image from a rootfs tarball"},
    {"diff", ib_cmd_diff, "Show file differences between two images"},
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
	fputs("\nGlobal options:\n"
	      "  --root DIR             store location (env IMGBUILD_ROOT)\n"
	      "  --authfile FILE        registry credentials file\n"
	      "  --tls-verify=false     do not verify registry TLS certificates\n"
	      "  -q, --quiet            less output\n"
	      "  --debug                more output\n"
	      "  -h, --help             this help; 'imgbuild COMMAND --help' for a command\n",
	      f);
}

int ib_cmd_version(int argc, char **argv, ib_global *g)
{
	(void)g;
	if (ib_cli_wants_help(argc, argv)) {
		puts("Usage: imgbuild version\n\nPrint the version of imgbuild.");
		return 0;
	}
	if (argc > 1)
		return ib_cli_usage_error("version", "unexpected argument '%s'", argv[1]);
	printf("imgbuild version %s\n", IB_VERSION);
	return 0;
}

static const char *default_root(void)
{
	const char *env = getenv("IMGBUILD_ROOT");
	if (env && *env)
		return env;
	if (geteuid() == 0)
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
	ib_global g = {.root = default_root(), .tls_verify = true};
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--root") || !strcmp(a, "--authfile")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "imgbuild: error: %s needs a value\n", a);
				return 2;
			}
			if (!strcmp(a, "--root"))
				g.root = argv[++i];
			else
				g.authfile = argv[++i];
		} else if (!strncmp(a, "--root=", 7)) {
			g.root = a + 7;
		} else if (!strncmp(a, "--authfile=", 11)) {
			g.authfile = a + 11;
		} else if (!strcmp(a, "--tls-verify=false")) {
			g.tls_verify = false;
		} else if (!strcmp(a, "--tls-verify") || !strcmp(a, "--tls-verify=true")) {
			g.tls_verify = true;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			g.quiet = true;
		} else if (!strcmp(a, "--debug")) {
			g.debug = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("imgbuild version %s\n", IB_VERSION);
			return 0;
		} else if (a[0] == '-') {
			fprintf(
			    stderr,
			    "imgbuild: error: unknown global option '%s' (see 'imgbuild --help')\n",
			    a);
			return 2;
		} else {
			break;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[i];
	/* `imgbuild recipe.lua ...` is short for `imgbuild build recipe.lua ...` */
	if (has_suffix(name, ".lua"))
		return ib_cmd_build(argc - i + 1, argv + i - 1, &g);
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(commands[k].name, name) == 0)
			return commands[k].fn(argc - i, argv + i, &g);
	}
	fprintf(stderr, "imgbuild: error: unknown command '%s' (see 'imgbuild --help')\n", name);
	return 2;
}
