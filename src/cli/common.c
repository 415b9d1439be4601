#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "util.h"

ib_store *ib_cli_open_store(ib_global *g)
{
	ib_store *s = NULL;
	ib_error *err = NULL;
	if (ib_store_open(&s, g->root, &err) < 0) {
		ib_cli_fail(&err);
		return NULL;
	}
	return s;
}

int ib_cli_fail(ib_error **err)
{
	int code = err && *err ? (*err)->code : IB_ERROR;
	ib_error_print(err ? *err : NULL);
	ib_error_free(err);
	return code == IB_EUSAGE ? 2 : 1;
}

int ib_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "imgbuild: error: %s (see 'imgbuild %s --help')\n", m, cmd);
	return 2;
}

bool ib_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	}
	return false;
}

int ib_cli_option_value(int argc, char **argv, int *i, const char *shrt, const char *lng,
			const char **out)
{
	const char *a = argv[*i];
	size_t n = strlen(lng);
	if (!strncmp(a, lng, n) && a[n] == '=') {
		*out = a + n + 1;
		return 1;
	}
	if (strcmp(a, lng) != 0 && (!shrt || strcmp(a, shrt) != 0))
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*out = argv[++*i];
	return 1;
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
