/* Subcommand entry points.  Each takes the arguments after the command name
 * (argv[0] is the command name) and the parsed global options, and returns
 * the process exit status: 0 ok, 1 failure, 2 usage error.  Errors are
 * printed by the command itself with ib_error_print(). */
#ifndef IB_CLI_COMMANDS_H
#define IB_CLI_COMMANDS_H

#include <stdbool.h>

#include "error.h"
#include "store.h"

typedef struct ib_global {
	const char *root;     /* --root / IMGBUILD_ROOT / default */
	const char *authfile; /* --authfile or NULL */
	bool tls_verify;      /* false with --tls-verify=false */
	bool quiet;
	bool debug;
} ib_global;

typedef int (*ib_cmd_fn)(int argc, char **argv, ib_global *g);

int ib_cmd_build(int argc, char **argv, ib_global *g);
int ib_cmd_plan(int argc, char **argv, ib_global *g);
int ib_cmd_images(int argc, char **argv, ib_global *g);
int ib_cmd_inspect(int argc, char **argv, ib_global *g);
int ib_cmd_history(int argc, char **argv, ib_global *g);
int ib_cmd_tag(int argc, char **argv, ib_global *g);
int ib_cmd_rmi(int argc, char **argv, ib_global *g);
int ib_cmd_pull(int argc, char **argv, ib_global *g);
int ib_cmd_push(int argc, char **argv, ib_global *g);
int ib_cmd_login(int argc, char **argv, ib_global *g);
int ib_cmd_logout(int argc, char **argv, ib_global *g);
int ib_cmd_search(int argc, char **argv, ib_global *g);
int ib_cmd_tags(int argc, char **argv, ib_global *g);
int ib_cmd_save(int argc, char **argv, ib_global *g);
int ib_cmd_load(int argc, char **argv, ib_global *g);
int ib_cmd_import(int argc, char **argv, ib_global *g);
int ib_cmd_diff(int argc, char **argv, ib_global *g);
int ib_cmd_prune(int argc, char **argv, ib_global *g);
int ib_cmd_verify(int argc, char **argv, ib_global *g);
int ib_cmd_version(int argc, char **argv, ib_global *g);

/* ---- helpers shared by the commands (cli/common.c) ---- */

/* Open the store at g->root; prints the error and returns NULL on failure. */
ib_store *ib_cli_open_store(ib_global *g);
/* Print "imgbuild: error: ..." for err, free it, return 1 (or 2 for
 * IB_EUSAGE). */
int ib_cli_fail(ib_error **err);
/* Print a usage error ("imgbuild: error: MSG\nSee 'imgbuild CMD --help'.")
 * and return 2. */
int ib_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv contains -h/--help; then the command prints its help. */
bool ib_cli_wants_help(int argc, char **argv);

#endif
