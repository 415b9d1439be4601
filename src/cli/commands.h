/* Subcommand entry points.  Each takes the arguments after the command name
 * (argv[0] is the command name) and the parsed global options, and returns
 * the process exit status: 0 ok, 1 failure, 2 usage error.  Errors are
 * printed by the command itself with ib_error_print(). */
#ifndef IB_CLI_COMMANDS_H
#define IB_CLI_COMMANDS_H

#include <stdbool.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
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
int ib_cmd_load_into(int argc, char **argv, ib_global *g);
int ib_cmd_import(int argc, char **argv, ib_global *g);
int ib_cmd_diff(int argc, char **argv, ib_global *g);
int ib_cmd_run(int argc, char **argv, ib_global *g);
int ib_cmd_prune(int argc, char **argv, ib_global *g);
int ib_cmd_df(int argc, char **argv, ib_global *g);
int ib_cmd_verify(int argc, char **argv, ib_global *g);
int ib_cmd_version(int argc, char **argv, ib_global *g);

/* ---- helpers shared by the commands (cli/common.c) ---- */

/* Option values (getopt_long `val`) below this are free for the commands;
 * the global options use values from here up. */
#define IB_CLI_GLOBAL_BASE 0x1000

/* One command's command line: its help text (printed for -h/--help, then
 * the global options), its own short options in getopt syntax ("t:") and
 * its own long options ({0}-terminated, may be NULL).  The global options
 * (--root, --authfile, --tls-verify, -q/--quiet, --debug) and -h/--help are
 * merged in by the parser, so every command accepts them after its name. */
typedef struct ib_cli_cmd {
	const char *name; /* "build"; NULL for imgbuild itself */
	const char *help; /* NULL: -h/--help is returned as 'h' */
	const char *shortopts;
	const struct option *longopts;
	bool in_order; /* stop at the first operand (else operands and options mix) */
} ib_cli_cmd;

typedef struct ib_cli_parser {
	const ib_cli_cmd *cmd;
	ib_global *g;
	int argc;
	char **argv;
	int exit; /* after the last ib_cli_next: -1 parse on, else the exit status */
	struct option opts[64];
	char shorts[64];
} ib_cli_parser;

/* Start parsing argv (argv[0] is the command name).  Then call ib_cli_next
 * until it returns -1; if p->exit >= 0 afterwards (help printed, or a usage
 * error printed) return it, else the operands are argv[optind..argc). */
void ib_cli_begin(ib_cli_parser *p, const ib_cli_cmd *cmd, int argc, char **argv, ib_global *g);
/* The next option of the command itself (its `val`, optarg set), or -1. */
int ib_cli_next(ib_cli_parser *p);
/* ib_cli_begin and ib_cli_next for a command with no options of its own:
 * -1 with the operands in argv[optind..argc), else the exit status. */
int ib_cli_parse_plain(const ib_cli_cmd *cmd, int argc, char **argv, ib_global *g);
/* The usage error for an option value of the command: prints it, returns 2. */
/* Render a --format template (Go-template style, gotmpl.h) over data and
 * print it as one line; 1 after printing the error when it fails. */
int ib_cli_print_template(const char *tmpl, json_t *data);

int ib_cli_bad_value(const ib_cli_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Print the global options section of the help. */
void ib_cli_print_global_help(FILE *f);

/* Open the store at g->root; prints the error and returns NULL on failure.
 * Layers of lazily tagged images are fetched from their registry when a
 * command opens them (ib_store_set_blob_fetcher), with g's registry
 * options. */
ib_store *ib_cli_open_store(ib_global *g);
/* Fetch the layers that images refs[0..n) (resolved as ib_store_image_load
 * does; a ref that does not load is skipped) still have in a registry,
 * before a command that needs them whole starts writing anything. */
int ib_cli_fetch_images(ib_store *s, char *const *refs, size_t n, ib_error **err);
/* Print "imgbuild: error: ..." for err, free it, return 1 (or 2 for
 * IB_EUSAGE). */
int ib_cli_fail(ib_error **err);
/* Print "imgbuild: error: MSG" (a new error with code, IB_E*) and return
 * what ib_cli_fail returns for it: 2 for IB_EUSAGE, else 1. */
int ib_cli_failf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print a usage error ("imgbuild: error: MSG (see 'imgbuild CMD --help')",
 * cmd may be NULL) and return 2. */
int ib_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

/* Hand the images refs[0..n_refs) to the engine named by engine ("docker",
 * "podman", "auto" or NULL = auto), reporting on stderr (cli/handoff.c).
 * Returns the exit status. */
int ib_cli_handoff(ib_store *s, const char *engine, char *const *refs, size_t n_refs,
		   const ib_global *g);
/* 0 when engine names one, else prints the usage error of cmd and returns 2. */
int ib_cli_handoff_check(const char *cmd, const char *engine);

#endif
