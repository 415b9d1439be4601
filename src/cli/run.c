/* imgbuild run: a command in an image, in the build sandbox (ib_image_run
 * in lib/build_run.c), so CI can smoke-test an image without an engine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "cli/commands.h"
#include "util.h"

static const char usage[] =
    "Usage: imgbuild run [OPTIONS] IMAGE [--] [COMMAND [ARG...]]\n"
    "\n"
    "Run a command in an image with the sandbox of the build's run steps,\n"
    "as the image's user, in its working directory, with its environment;\n"
    "COMMAND replaces the image's cmd (after its entrypoint).  The command's\n"
    "output (stdout and stderr merged) goes to stdout and its exit status is\n"
    "imgbuild's (125 when it could not be started: no such image, sandbox\n"
    "failure).  Nothing the command changes is kept.\n"
    "\n"
    "Options:\n"
    "  -e, --env K=V          set an environment variable (repeatable; K alone\n"
    "                         takes the value from imgbuild's environment)\n"
    "      --network MODE     default (own namespace, outbound through\n"
    "                         slirp4netns), none or host\n"
    "  -u, --user USER        user[:group] instead of the image's\n"
    "  -w, --workdir DIR      working directory instead of the image's\n"
    "  -h, --help             this help\n";

int ib_cmd_run(int argc, char **argv, ib_global *g)
{
	enum { O_NET = 256 };
	static const struct option opts[] = {
	    {"env", required_argument, NULL, 'e'},
	    {"network", required_argument, NULL, O_NET},
	    {"user", required_argument, NULL, 'u'},
	    {"workdir", required_argument, NULL, 'w'},
	    {NULL, 0, NULL, 0},
	};
	static const ib_cli_cmd cmd = {.name = "run",
				       .help = usage,
				       .shortopts = "e:u:w:",
				       .longopts = opts,
				       .in_order = true};
	ib_image_run_options o = {0};
	cleanup_strv char **env = xcalloc(1, sizeof(char *));
	int r = 0, c;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	while ((c = ib_cli_next(&p)) != -1) {
		switch (c) {
		case 'e':
			if (!*optarg || *optarg == '=') {
				r = ib_cli_bad_value(&p, "--env wants K=V or K");
			} else if (strchr(optarg, '=')) {
				ib_strv_push(&env, optarg);
			} else if (getenv(optarg)) {
				cleanup_free char *kv = xasprintf("%s=%s", optarg, getenv(optarg));
				ib_strv_push(&env, kv);
			}
			break;
		case O_NET:
			if (strcmp(optarg, "default") && strcmp(optarg, "none") &&
			    strcmp(optarg, "host"))
				r = ib_cli_bad_value(&p, "--network must be default, none or host");
			o.network = optarg;
			break;
		case 'u':
			o.user = optarg;
			break;
		case 'w':
			if (optarg[0] != '/')
				r = ib_cli_bad_value(&p, "--workdir must be an absolute path");
			o.workdir = optarg;
			break;
		}
	}
	if (r)
		return r;
	if (p.exit >= 0)
		return p.exit;
	if (optind >= argc)
		return ib_cli_usage_error("run", "missing IMAGE argument");
	const char *ref = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	o.argv = optind < argc ? argv + optind : NULL;
	o.env = env;
	ib_build_prepare_process();
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	int status = 0;
	char *one[] = {(char *)ref, NULL};
	r = ib_cli_fetch_images(s, one, 1, &err);
	if (r == 0)
		r = ib_image_run(s, ref, &o, &status, &err);
	ib_store_free(s);
	if (r < 0) {
		ib_cli_fail(&err);
		return 125; /* as docker run: the command did not run */
	}
	return status;
}
