/* Explicit error objects: fallible functions return 0 or a negative IB_E*
 * code and fill `ib_error **err` (always the last parameter).  An explicit
 * object, not thread-local state, because the sandbox forks. */
#ifndef IB_ERROR_H
#define IB_ERROR_H

#include <stdarg.h>

enum {
	IB_OK = 0,
	IB_ERROR = -1,	   /* generic failure */
	IB_ENOTFOUND = -2, /* missing blob, tag, file, reference */
	IB_EDIGEST = -3,   /* content does not match its digest or size */
	IB_ETOOLARGE = -4, /* a cap was exceeded */
	IB_EAUTH = -5,	   /* registry refused our credentials */
	IB_EINVALID = -6,  /* malformed input (reference, JSON, tar, recipe) */
	IB_EUNSAFE = -7,   /* input tried to escape its root */
	IB_EEXISTS = -8,
	IB_ENET = -9,	 /* transport failure after retries */
	IB_EUSAGE = -10, /* bad command line: exit status 2 */
};

typedef struct ib_error {
	int code;      /* one of IB_E*, negative */
	int sys_errno; /* errno that caused it, or 0 */
	char *msg;     /* one line, owned */
} ib_error;

/* Set *err (if err is non-NULL and *err is NULL) to a new error.
 * errnum is an errno value or 0; when non-zero ": strerror(errnum)" is
 * appended and ENOENT maps to IB_ENOTFOUND.  Returns the (negative) code so
 * that `return ib_error_set(err, errno, "open %s", path);` is one line.
 * The first error wins: when *err is already set it is kept and its code
 * is returned (debug builds say on stderr which message was dropped). */
int ib_error_set(ib_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, with an explicit semantic code (IB_E*). */
int ib_error_setc(ib_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix context: "CONTEXT: previous message".  Returns the error's code
 * (IB_ERROR if *err is NULL, after creating one from the context alone). */
int ib_error_wrap(ib_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Change the code of *err (e.g. to IB_EUSAGE for a bad command-line value)
 * and return it; with no error set only returns code. */
int ib_error_set_code(ib_error **err, int code);

/* Free *err and set it to NULL; safe on NULL. */
void ib_error_free(ib_error **err);

/* Message of err, or "unknown error". */
const char *ib_error_msg(const ib_error *err);

/* Print "imgbuild: error: MSG" on stderr (one line: newlines are replaced). */
void ib_error_print(const ib_error *err);

#endif
