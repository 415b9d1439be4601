/* Recipe evaluation: a Lua 5.4 chunk, run in a sandboxed environment, turned
 * into a plan (see plan.h).  Evaluation is deterministic: no os/io, no clock,
 * no random source; require() only finds modules next to the recipe and the
 * embedded lua/ library. */
#ifndef IB_RECIPE_H
#define IB_RECIPE_H

#include <jansson.h>

#include "error.h"
#include "plan.h"

typedef struct ib_recipe_options {
	/* Directory for context.read/glob/exists and copy source checks;
	 * NULL = the recipe's directory. */
	const char *context_dir;
	/* "K=V" strings from --build-arg, NULL-terminated, may be NULL.  The
	 * last one of a name wins; a bare "K" takes $K from the environment
	 * (docker), or leaves K unset when $K is unset. */
	char *const *build_args;
} ib_recipe_options;
#define IB_RECIPE_OPTIONS_INIT                                                                     \
	{                                                                                          \
		.context_dir = NULL                                                                \
	}

/* Evaluate recipe_path into *plan_out (a new reference, caller decrefs;
 * NULL on failure).  Any recipe error (syntax, wrong type, unknown option,
 * missing copy source, no from, a Lua runtime error, no stage at all) is
 * IB_EINVALID with a one-line message that starts with "FILE:LINE: ", FILE
 * being recipe_path as given or the path of the required module the error
 * is in; the instruction cap, an oversized plan, a too expensive pattern
 * and invalid UTF-8 in the plan are such errors too.  Exception: running
 * out of the Lua heap (512 MiB shared with the plan) gives "FILE: ...".
 * An unreadable recipe gives the read error; a build arg with an invalid
 * name IB_EUSAGE; a missing context directory the stat error.
 * print() in a recipe writes to stderr, never stdout. */
int ib_recipe_eval(json_t **plan_out, const char *recipe_path, const ib_recipe_options *opts,
		   ib_error **err);

#endif
