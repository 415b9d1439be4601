/* The plan: pure data between the recipe and the builder.
 *
 * ib_recipe_eval() turns a recipe into a jansson object; `imgbuild plan`
 * prints it, the builder executes it and the step cache hashes each step's
 * canonical JSON.  Nothing in a plan depends on the machine (no absolute
 * context path, no time), so the same recipe gives the same plan anywhere.
 * Every field below is always present (null where marked).
 *
 * {
 *   "version": 1,
 *   "recipe": "recipe.lua",             -- the recipe's file name (basename)
 *   "args": {"VERSION": "1.0"},         -- every arg() read, with its value;
 *                                          null when neither given nor defaulted
 *   "stages": [ STAGE... ],             -- in recipe order; the last is the result
 * }
 * STAGE = {
 *   "name": "build",                    -- stage("build", ...); an unnamed stage
 *                                          (from() with no current baseless
 *                                          stage) is "stage<N>", N = its index
 *   "from": FROM,
 *   "platform": "linux/amd64" | null,   -- from{ref, platform=}
 *   "pull": "missing"|"always"|"never" | null,
 *   "line": N,                          -- recipe line of stage() (or of from()
 *                                          for an unnamed stage)
 *   "steps": [ STEP... ]
 * }
 * FROM = {"scratch": true}
 *      | {"image": "docker.io/library/debian:bookworm"}  -- normalised (ref.h)
 *        (+ "short": "debian:bookworm" when written without a registry)
 *      | {"stage": "build"}             -- an earlier stage, by stage object or
 *                                          by a string equal to its name
 * A stage used as the base of another gets no further steps (the recipe
 * fails), so {"stage": X} always means X's final state.  A stage built on a
 * stage inherits its shell and workdir.
 *
 * Paths: "workdir" paths, run "workdir" and copy "dest" are resolved the way
 * docker resolves WORKDIR: against the stage's current workdir.  They are
 * absolute whenever the recipe can tell (a scratch base starts at "/", an
 * absolute workdir() sets it, a stage built on a stage inherits it); while
 * the workdir still comes from a base image's config, a relative value is
 * emitted (cleaned), meaning relative to the WorkingDir in effect when the
 * step runs ("/" when empty).  A trailing "/" on a copy dest (also kept
 * for "." and "..", e.g. "./") means "a directory".
 *
 * Every STEP has "kind" and "line" (the recipe line of the call; for a call
 * made inside a required module, the line in the recipe that led to it),
 * plus:
 *   run:        "argv": [..] (string form already expanded with the current
 *               shell, e.g. ["/bin/sh","-c","cmd"]), "shell_form": bool,
 *               "network": "default"|"none"|"host", "env": {K:V} (this step
 *               only), "user": s|null, "workdir": s|null (this step only),
 *               "cache_mounts": [absolute path | {"target": s, "id": s,
 *               "uid": n, "gid": n, "mode": "0755", "sharing":
 *               "shared"|"private"|"locked"}] (a bare path: id = target,
 *               0:0 0755 shared),
 *               "secrets": [{"id": s, "src": s, "target": s}] (src: a host
 *               file, as written, absent when --secret must give it; target
 *               defaults to "/run/secrets/<id>"),
 *               "timeout": seconds (0 = none), "cache": bool
 *   copy:       "sources": [..], "dest": s, "from": FROM | null,
 *               "owner": "uid[:gid]"|"user[:group]" | null,
 *               "mode": "0644" (always 4 octal digits) | null,
 *               "exclude": [globs]
 *               With "from": null the sources are cleaned paths relative to
 *               the build context: no leading "/", no "..", "." for the
 *               context itself, a trailing "/" kept; they may contain glob
 *               characters (* ? [..] per segment, ** for any depth) and each
 *               existed / matched at evaluation time.  With "from" set they are
 *               paths in that stage or image, as written.
 *   env:        "env": {K: V}
 *   workdir:    "path": s
 *   user:       "user": s
 *   entrypoint: "argv": [..]  (a string is expanded with the current shell;
 *                              [] clears it)
 *   cmd:        "argv": [..]
 *   expose:     "ports": ["8080/tcp", "53/udp", ...] (always "N/proto"; a
 *                        range N-M in the recipe is expanded)
 *   volume:     "paths": [absolute paths]
 *   label:      "labels": {K: V}
 *   annotation: "annotations": {K: V}
 *   stopsignal: "signal": s   ("SIGTERM", "TERM" or a number as a string)
 *   healthcheck:"test": ["CMD", ..] | ["CMD-SHELL", s] | ["NONE"] (a string
 *               test is CMD-SHELL; healthcheck(false) is NONE),
 *               "interval": ns, "timeout": ns, "start_period": ns,
 *               "retries": n    (durations in nanoseconds; 0 = not set)
 *   shell:      "argv": [..]   (used by later string forms in this stage)
 * Object keys are always emitted sorted (canonical JSON).
 */
#ifndef IB_PLAN_H
#define IB_PLAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define IB_PLAN_VERSION 1

/* Limits both sides of the seam use: the recipe refuses what the builder
 * could not honour. */
#define IB_PLAN_MAX_TIMEOUT 4294967295LL /* run timeout, s: the sandbox's unsigned */
#define IB_PLAN_MODE_MAX 07777		 /* copy mode: permission bits */
#define IB_PLAN_PORT_MAX 65535
#define IB_PLAN_SIGNAL_MAX 64 /* a stop signal given as a number */
#define IB_PLAN_STAGE_NAME_MAX 128
#define IB_PLAN_ID_MAX 256 /* a user or group name or number */

typedef enum ib_plan_step_kind {
	IB_STEP_RUN,
	IB_STEP_COPY,
	IB_STEP_ENV,
	IB_STEP_WORKDIR,
	IB_STEP_USER,
	IB_STEP_ENTRYPOINT,
	IB_STEP_CMD,
	IB_STEP_EXPOSE,
	IB_STEP_VOLUME,
	IB_STEP_LABEL,
	IB_STEP_ANNOTATION,
	IB_STEP_STOPSIGNAL,
	IB_STEP_HEALTHCHECK,
	IB_STEP_SHELL,
	IB_STEP_KIND_COUNT
} ib_plan_step_kind;

/* A step's kind from its "kind" string (NULL allowed); -1 when unknown. */
int ib_plan_step_kind_of(json_t *step);

/* Check a plan once, before anything runs: its version, its stages and
 * every step's fields (types, and the ranges above).  After a 0 return
 * the builder may read every field this header documents without checking
 * it again.  On failure *err says which stage, step (with its recipe line)
 * and field is wrong. */
int ib_plan_validate(json_t *plan, ib_error **err);

/* A copy mode: exactly 4 octal digits, at most IB_PLAN_MODE_MAX; -1 when
 * invalid. */
int32_t ib_plan_mode_parse(const char *s);

/* Pure validators shared by the recipe (which reports errors with the Lua
 * context) and ib_plan_validate. */
/* A user or group: a number, or a name [A-Za-z_][A-Za-z0-9_.-]*[$]. */
bool ib_plan_valid_id_part(const char *s, size_t len);
/* "user", "uid", "user:group", "uid:gid". */
bool ib_plan_valid_owner(const char *s);
/* A letter, then letters, digits, '_', '.', '-'; at most
 * IB_PLAN_STAGE_NAME_MAX bytes. */
bool ib_plan_valid_stage_name(const char *s);
/* A C identifier (build args). */
bool ib_plan_valid_identifier(const char *s);
/* "os/arch[/variant]", lower case letters, digits, '_', '.', '-'. */
bool ib_plan_valid_platform(const char *s);
/* "N", "N/proto", "N-M[/proto]" -> a port range and "tcp", "udp" or
 * "sctp" (*proto_out is static); false when invalid. */
bool ib_plan_port_parse(const char *s, unsigned *lo_out, unsigned *hi_out, const char **proto_out);
/* "SIGTERM", "TERM", "SIGRTMIN+3", "9". */
bool ib_plan_valid_signal(const char *s);
/* Go-style duration ("1m30s", "500ms", "1.5h") -> ns; false when invalid
 * or beyond INT64_MAX ns. */
bool ib_plan_parse_duration(const char *s, int64_t *out);

#endif
