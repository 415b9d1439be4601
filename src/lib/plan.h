/* The plan: pure data between the recipe and the builder.
 *
 * ib_recipe_eval() turns a recipe into a jansson object; `imgbuild plan`
 * prints it, the builder executes it and the step cache hashes each step's
 * canonical JSON.  Nothing in a plan depends on the machine (no absolute
 * context path, no time), so the same recipe gives the same plan anywhere.
 *
 * {
 *   "version": 1,
 *   "recipe": "recipe.lua",             -- file name as given (for messages)
 *   "args": {"VERSION": "1.0"},         -- every arg() read, with its value
 *   "stages": [ STAGE... ],             -- in recipe order; the last is the result
 * }
 * STAGE = {
 *   "name": "build",                    -- stage("build", ...) or "stage0", "stage1"...
 *   "from": FROM,
 *   "platform": "linux/amd64" | null,   -- from{ref, platform=}
 *   "pull": "missing"|"always"|"never" | null,
 *   "line": N,                          -- recipe line of from()/stage()
 *   "steps": [ STEP... ]
 * }
 * FROM = {"scratch": true} | {"image": "docker.io/library/debian:bookworm"}
 *      | {"stage": "build"}
 * Every STEP has "kind" and "line" (recipe line), plus:
 *   run:        "argv": [..] (string form already expanded with the current
 *               shell, e.g. ["/bin/sh","-c","cmd"]), "shell_form": bool,
 *               "network": "default"|"none"|"host", "env": {K:V},
 *               "user": s|null, "workdir": s|null, "cache_mounts": [paths],
 *               "secrets": [{"id": s, "src": s, "target": s}], "timeout": seconds (0 = none),
 *               "cache": bool
 *   copy:       "sources": [paths or globs, relative to the context or the
 *               from-stage/image root], "dest": s, "from": FROM | null,
 *               "owner": "uid:gid" | null, "mode": "0644" | null, "exclude": [globs]
 *   env:        "env": {K: V}
 *   workdir:    "path": s
 *   user:       "user": s
 *   entrypoint: "argv": [..]  (a string is expanded with the current shell)
 *   cmd:        "argv": [..]
 *   expose:     "ports": ["8080/tcp", ...]
 *   volume:     "paths": [..]
 *   label:      "labels": {K: V}
 *   annotation: "annotations": {K: V}
 *   stopsignal: "signal": s
 *   healthcheck:"test": [..] | ["NONE"], "interval": ns, "timeout": ns,
 *               "start_period": ns, "retries": n    (durations in nanoseconds)
 *   shell:      "argv": [..]
 * Object keys are always emitted sorted (canonical JSON).
 */
#ifndef IB_PLAN_H
#define IB_PLAN_H

#include <jansson.h>

#define IB_PLAN_VERSION 1

#endif
