/* Subcommand entry points.  Each takes the arguments after the command name
 * (argv[0] is the command name) and the parsed global options, and returns
 * the process exit status: 0 ok, 1 failure, 2 usage error.  Errors are
 * printed by the command itself with ib_error_print(). */
#ifndef IB_CLI_COMMANDS_H
#define IB_CLI_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "error.h"
#include "progress.h"
#include "registry.h"
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
/* Match argv[*i] against an option with a value: "-s VALUE" (shrt may be
 * NULL), "--long VALUE" or "--long=VALUE".  1 with *out set (and *i moved
 * past a separate value), 0 no match, -1 the value is missing. */
int ib_cli_option_value(int argc, char **argv, int *i, const char *shrt, const char *lng,
			const char **out);

/* RFC 3339 ("2024-05-01T12:00:00.123Z", "...+02:00") to seconds since the
 * epoch; -1 (and *out untouched) when s is not one. */
int ib_cli_parse_rfc3339(const char *s, time_t *out);
/* Whole seconds from the RFC 3339 time created (may be NULL) until now, for
 * "N ago" columns.  When there is nothing to count, writes the text to show
 * instead into out ("N/A": NULL or unparsable; "in the future") and returns
 * false. */
bool ib_cli_age(const char *created, long long *secs, char *out, size_t len);

/* Print a table to stdout: the head row, then nrows rows of ncol cells
 * (cells[i * ncol + c]); each column is as wide as its widest cell, columns
 * are separated by three spaces and the last one is not padded.  Takes
 * ownership of cells: frees every cell and the array. */
void ib_cli_print_table(const char *const *head, size_t ncol, char **cells, size_t nrows);

/* Registry options from the global flags (--tls-verify, --authfile,
 * --debug) on top of what *o holds; with a printer (may be NULL), transfers
 * are reported through it. */
void ib_cli_registry_options(ib_registry_options *o, const ib_global *g, ib_transfer_printer *pr);

#endif
