#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int error_vset(ib_error **err, int code, int errnum, const char *fmt, va_list ap)
{
	if (err == NULL)
		return code;
	if (*err != NULL) {
		/* The first error wins: it is the cause, what follows is fallout. */
#ifndef NDEBUG
		cleanup_free char *dropped = xvasprintf(fmt, ap);
		fprintf(stderr, "imgbuild: debug: second error dropped (first: %s): %s\n",
			(*err)->msg, dropped);
#endif
		return (*err)->code;
	}
	ib_error *e = xcalloc(1, sizeof(*e));
	char *msg = xvasprintf(fmt, ap);
	if (errnum != 0) {
		char *full = xasprintf("%s: %s", msg, strerror(errnum));
		free(msg);
		msg = full;
	}
	e->code = code;
	e->sys_errno = errnum;
	e->msg = msg;
	*err = e;
	return code;
}

int ib_error_set(ib_error **err, int errnum, const char *fmt, ...)
{
	int code = errnum == ENOENT ? IB_ENOTFOUND : IB_ERROR;
	va_list ap;
	va_start(ap, fmt);
	code = error_vset(err, code, errnum, fmt, ap);
	va_end(ap);
	return code;
}

int ib_error_setc(ib_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	code = error_vset(err, code < 0 ? code : IB_ERROR, 0, fmt, ap);
	va_end(ap);
	return code;
}

int ib_error_wrap(ib_error **err, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL)
		return IB_ERROR;
	va_start(ap, fmt);
	char *ctx = xvasprintf(fmt, ap);
	va_end(ap);
	if (*err == NULL) {
		ib_error_setc(err, IB_ERROR, "%s", ctx);
		free(ctx);
		return IB_ERROR;
	}
	char *full = xasprintf("%s: %s", ctx, (*err)->msg);
	free(ctx);
	free((*err)->msg);
	(*err)->msg = full;
	return (*err)->code;
}

int ib_error_set_code(ib_error **err, int code)
{
	if (err == NULL || *err == NULL)
		return code;
	(*err)->code = code;
	return code;
}

void ib_error_free(ib_error **err)
{
	if (err == NULL || *err == NULL)
		return;
	free((*err)->msg);
	free(*err);
	*err = NULL;
}

const char *ib_error_msg(const ib_error *err)
{
	return err && err->msg ? err->msg : "unknown error";
}

void ib_error_print(const ib_error *err)
{
	cleanup_free char *m = xstrdup(ib_error_msg(err));
	for (char *p = m; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "imgbuild: error: %s\n", m);
}
