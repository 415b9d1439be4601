#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "gotmpl.h"
#include "util.h"

/* A layer a lazily tagged image left in a cache registry comes from there
 * on first use, with the credentials and TLS settings of the command
 * line; a registry that is gone fails after one retry. */
static int cli_fetch_blob(ib_store *s, const ib_store_remote *rec, void *payload, ib_error **err)
{
	const ib_global *g = payload;
	ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&o, g, NULL);
	o.max_retries = 1;
	return ib_registry_fetch_blob(s, rec->repository, rec->digest, rec->size, &o, err);
}

ib_store *ib_cli_open_store(ib_global *g)
{
	ib_store *s = NULL;
	ib_error *err = NULL;
	if (ib_store_open(&s, g->root, &err) < 0) {
		ib_cli_fail(&err);
		return NULL;
	}
	ib_store_set_blob_fetcher(s, cli_fetch_blob, g);
	return s;
}

int ib_cli_fetch_images(ib_store *s, char *const *refs, size_t n, ib_error **err)
{
	for (size_t i = 0; i < n; i++) {
		ib_image *img = NULL;
		ib_error *e = NULL;
		if (ib_store_image_load(s, refs[i], &img, &e) < 0) {
			ib_error_free(&e); /* the command says what is wrong with it */
			continue;
		}
		int r = ib_store_image_fetch(s, img, NULL, err);
		ib_image_free(img);
		if (r < 0)
			return r;
	}
	return 0;
}

int ib_cli_fail(ib_error **err)
{
	int code = err && *err ? (*err)->code : IB_ERROR;
	ib_error_print(err ? *err : NULL);
	ib_error_free(err);
	return code == IB_EUSAGE ? 2 : 1;
}

int ib_cli_failf(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	ib_error *err = NULL;
	ib_error_setc(&err, code, "%s", m);
	return ib_cli_fail(&err);
}

static int usage_errorv(const char *cmd, const char *fmt, va_list ap)
{
	cleanup_free char *m = xvasprintf(fmt, ap);
	if (cmd)
		return ib_cli_failf(IB_EUSAGE, "%s (see 'imgbuild %s --help')", m, cmd);
	return ib_cli_failf(IB_EUSAGE, "%s (see 'imgbuild --help')", m);
}

int ib_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = usage_errorv(cmd, fmt, ap);
	va_end(ap);
	return r;
}

/* ---- the command line: one getopt_long loop for every command ---- */

enum {
	G_ROOT = IB_CLI_GLOBAL_BASE,
	G_AUTHFILE,
	G_TLS_VERIFY,
	G_DEBUG,
	G_QUIET = 'q',
	G_HELP = 'h',
};

/* The global options: one table for imgbuild itself and every command, and
 * for their --help. */
static const struct global_opt {
	struct option opt;
	const char *shown;
	const char *help;
} global_opts[] = {
    {{"root", required_argument, NULL, G_ROOT}, "--root DIR", "store location (env IMGBUILD_ROOT)"},
    {{"authfile", required_argument, NULL, G_AUTHFILE},
     "--authfile FILE",
     "registry credentials file"},
    {{"tls-verify", optional_argument, NULL, G_TLS_VERIFY},
     "--tls-verify=false",
     "do not verify registry TLS certificates"},
    {{"quiet", no_argument, NULL, G_QUIET}, "-q, --quiet", "less output"},
    {{"debug", no_argument, NULL, G_DEBUG}, "--debug", "more output"},
};
#define N_GLOBAL (sizeof(global_opts) / sizeof(global_opts[0]))

void ib_cli_print_global_help(FILE *f)
{
	fputs("Global options (before or after the command):\n", f);
	for (size_t i = 0; i < N_GLOBAL; i++)
		fprintf(f, "  %-22s %s\n", global_opts[i].shown, global_opts[i].help);
}

void ib_cli_begin(ib_cli_parser *p, const ib_cli_cmd *cmd, int argc, char **argv, ib_global *g)
{
	memset(p, 0, sizeof(*p));
	p->cmd = cmd;
	p->g = g;
	p->argc = argc;
	p->argv = argv;
	p->exit = -1;
	/* '+': stop at the first operand; ':': a missing value is told apart */
	snprintf(p->shorts, sizeof(p->shorts), "%s:hq%s", cmd->in_order ? "+" : "",
		 cmd->shortopts ? cmd->shortopts : "");
	size_t n = 0;
	for (const struct option *o = cmd->longopts; o && o->name; o++) {
		if (n + N_GLOBAL + 2 > sizeof(p->opts) / sizeof(p->opts[0]))
			abort(); /* a programming error: grow opts */
		p->opts[n++] = *o;
	}
	for (size_t i = 0; i < N_GLOBAL; i++)
		p->opts[n++] = global_opts[i].opt;
	p->opts[n++] = (struct option){"help", no_argument, NULL, G_HELP};
	p->opts[n] = (struct option){NULL, 0, NULL, 0};
	optind = 0; /* full re-initialisation: each command parses afresh */
	opterr = 0; /* one error line, ours */
}

static int parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) {
		*out = true;
		return 0;
	}
	if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) {
		*out = false;
		return 0;
	}
	return -1;
}

int ib_cli_bad_value(const ib_cli_parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = usage_errorv(p->cmd->name, fmt, ap);
	va_end(ap);
	return r;
}

int ib_cli_parse_plain(const ib_cli_cmd *cmd, int argc, char **argv, ib_global *g)
{
	ib_cli_parser p;
	ib_cli_begin(&p, cmd, argc, argv, g);
	while (ib_cli_next(&p) != -1)
		;
	return p.exit;
}

int ib_cli_next(ib_cli_parser *p)
{
	for (;;) {
		int c = getopt_long(p->argc, p->argv, p->shorts, p->opts, NULL);
		switch (c) {
		case -1:
			return -1;
		case G_ROOT:
			p->g->root = optarg;
			break;
		case G_AUTHFILE:
			p->g->authfile = optarg;
			break;
		case G_TLS_VERIFY:
			if (!optarg)
				p->g->tls_verify = true;
			else if (parse_bool(optarg, &p->g->tls_verify) < 0) {
				p->exit = ib_cli_bad_value(p, "--tls-verify must be true or false");
				return -1;
			}
			break;
		case G_QUIET:
			p->g->quiet = true;
			break;
		case G_DEBUG:
			p->g->debug = true;
			break;
		case G_HELP:
			if (!p->cmd->help)
				return c;
			fputs(p->cmd->help, stdout);
			putchar('\n');
			ib_cli_print_global_help(stdout);
			p->exit = 0;
			return -1;
		case ':':
			p->exit = ib_cli_bad_value(p, "%s needs a value", p->argv[optind - 1]);
			return -1;
		case '?': {
			const char *a = p->argv[optind - 1];
			if (optopt > 0 && optopt < 128 && strncmp(a, "--", 2) != 0)
				p->exit = ib_cli_bad_value(p, "unknown option or missing value: -%c",
							   optopt);
			else
				p->exit = ib_cli_bad_value(p, "unknown option or missing value: %s", a);
			return -1;
		}
		default:
			return c;
		}
	}
}

int ib_cli_parse_rfc3339(const char *s, time_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -1;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int h = (p[1] - '0') * 10 + (p[2] - '0');
		int m = (p[4] - '0') * 10 + (p[5] - '0');
		off = (h * 3600L + m * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	*out = timegm(&tm) - off;
	return 0;
}

bool ib_cli_age(const char *created, long long *secs, char *out, size_t len)
{
	time_t t;
	if (!created || ib_cli_parse_rfc3339(created, &t) < 0) {
		snprintf(out, len, "N/A");
		return false;
	}
	double d = difftime(time(NULL), t);
	if (d < 0) {
		snprintf(out, len, "in the future");
		return false;
	}
	*secs = (long long)d;
	return true;
}

void ib_cli_print_table(const char *const *head, size_t ncol, char **cells, size_t nrows)
{
	size_t *w = xcalloc(ncol ? ncol : 1, sizeof(size_t));
	for (size_t c = 0; c < ncol; c++) {
		w[c] = strlen(head[c]);
		for (size_t i = 0; i < nrows; i++)
			if (strlen(cells[i * ncol + c]) > w[c])
				w[c] = strlen(cells[i * ncol + c]);
	}
	for (size_t c = 0; c < ncol; c++)
		if (c < ncol - 1)
			printf("%-*s   ", (int)w[c], head[c]);
		else
			printf("%s\n", head[c]);
	for (size_t i = 0; i < nrows; i++) {
		for (size_t c = 0; c < ncol; c++) {
			char *cell = cells[i * ncol + c];
			if (c < ncol - 1)
				printf("%-*s   ", (int)w[c], cell);
			else
				printf("%s\n", cell);
			free(cell);
		}
	}
	free(cells);
	free(w);
}

void ib_cli_registry_options(ib_registry_options *o, const ib_global *g, ib_transfer_printer *pr)
{
	o->tls_verify = g->tls_verify;
	o->authfile = g->authfile;
	o->debug = g->debug;
	if (pr) {
		o->progress = ib_transfer_printer_progress;
		o->event = ib_transfer_printer_event;
		o->payload = pr;
	}
}

int ib_cli_print_template(const char *tmpl, json_t *data)
{
	char *line = NULL;
	ib_error *err = NULL;
	if (ib_gotmpl_render(tmpl, data, &line, &err) < 0)
		return ib_cli_fail(&err);
	puts(line);
	free(line);
	return 0;
}
