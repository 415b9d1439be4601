/* imgbuild load-into: hand stored images to the local docker engine or to
 * podman's containers-storage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "handoff.h"
#include "util.h"

static const char load_into_usage[] =
    "Usage: imgbuild load-into docker|podman|auto REF...\n"
    "\n"
    "Deliver the local images REF... (with their tags) to a container engine,\n"
    "so that 'docker run REF' or 'podman run REF' finds them:\n"
    "  docker   the docker engine's API socket ($DOCKER_HOST, unix:// or tcp://,\n"
    "           default unix:///var/run/docker.sock), POST /images/load\n"
    "  podman   'podman load' (containers-storage, podman's own configuration)\n"
    "  auto     docker when its socket answers, else podman when installed\n"
    "The images travel as one docker-archive stream, never held whole in\n"
    "memory.  Neither engine can be asked for only the layers it lacks: every\n"
    "layer is sent, and the engine keeps the copy it already had.\n"
    "'imgbuild build --load' does the same right after a build.\n"
    "\n"
    "Options:\n"
    "  -h, --help   this help\n";

int ib_cli_handoff_check(const char *cmd, const char *engine)
{
	ib_handoff_engine e;
	if (ib_handoff_engine_parse(engine, &e, NULL) < 0)
		return ib_cli_usage_error(cmd, "unknown engine '%s' (docker, podman or auto)",
					  engine);
	return 0;
}

int ib_cli_handoff(ib_store *s, const char *engine, char *const *refs, size_t n_refs,
		   const ib_global *g)
{
	ib_handoff_options o = IB_HANDOFF_OPTIONS_INIT;
	ib_error *err = NULL;
	if (ib_handoff_engine_parse(engine, &o.engine, &err) < 0) {
		ib_error_set_code(&err, IB_EUSAGE);
		return ib_cli_fail(&err);
	}
	o.out = g->quiet ? NULL : stderr;
	/* layers still in a cache registry come before the engine starts */
	if (ib_cli_fetch_images(s, refs, n_refs, &err) < 0)
		return ib_cli_fail(&err);
	ib_handoff_engine used;
	if (ib_handoff_load(s, refs, n_refs, &o, &used, &err) < 0) {
		ib_error_wrap(&err, "load into %s", ib_handoff_engine_name(o.engine));
		return ib_cli_fail(&err);
	}
	if (!g->quiet)
		fprintf(stderr, "loaded into %s\n", ib_handoff_engine_name(used));
	return 0;
}

int ib_cmd_load_into(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "load-into", .help = load_into_usage};
	int rc = ib_cli_parse_plain(&cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return ib_cli_usage_error("load-into", "missing engine (docker, podman or auto)");
	const char *engine = argv[optind];
	if ((rc = ib_cli_handoff_check("load-into", engine)) != 0)
		return rc;
	if (optind + 1 >= argc)
		return ib_cli_usage_error("load-into", "missing image reference");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	rc = ib_cli_handoff(s, engine, argv + optind + 1, (size_t)(argc - optind - 1), g);
	ib_store_free(s);
	return rc;
}
