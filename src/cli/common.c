#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "util.h"

#pragma weak ib_store_open /* until store.c lands */

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
