/* Explicit error objects (src/lib/error.c): codes, errno mapping, first error
 * wins, context wrapping, freeing and one-line printing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "util.h"

static void test_set_without_errno_is_generic_error(void **state)
{
	(void)state;
	ib_error *err = NULL;
	int r = ib_error_set(&err, 0, "open %s", "/x");
	assert_int_equal(r, IB_ERROR);
	assert_non_null(err);
	assert_int_equal(err->code, IB_ERROR);
	assert_int_equal(err->sys_errno, 0);
	assert_string_equal(err->msg, "open /x");
	ib_error_free(&err);
}

static void test_set_enoent_maps_to_notfound(void **state)
{
	(void)state;
	ib_error *err = NULL;
	int r = ib_error_set(&err, ENOENT, "open %s", "/missing");
	assert_int_equal(r, IB_ENOTFOUND);
	assert_int_equal(err->code, IB_ENOTFOUND);
	assert_int_equal(err->sys_errno, ENOENT);
	cleanup_free char *want = xasprintf("open /missing: %s", strerror(ENOENT));
	assert_string_equal(err->msg, want);
	ib_error_free(&err);
}

static void test_set_other_errno_appends_strerror(void **state)
{
	(void)state;
	ib_error *err = NULL;
	int r = ib_error_set(&err, EACCES, "write %d", 42);
	assert_int_equal(r, IB_ERROR);
	assert_int_equal(err->sys_errno, EACCES);
	cleanup_free char *want = xasprintf("write 42: %s", strerror(EACCES));
	assert_string_equal(err->msg, want);
	ib_error_free(&err);
}

static void test_set_code_changes_the_code(void **state)
{
	(void)state;
	ib_error *err = NULL;
	assert_int_equal(ib_error_set_code(&err, IB_EUSAGE), IB_EUSAGE);
	assert_null(err);
	ib_error_setc(&err, IB_EINVALID, "bad");
	assert_int_equal(ib_error_set_code(&err, IB_EUSAGE), IB_EUSAGE);
	assert_int_equal(err->code, IB_EUSAGE);
	assert_string_equal(err->msg, "bad");
	ib_error_free(&err);
}

static void test_set_with_null_err_only_returns_code(void **state)
{
	(void)state;
	assert_int_equal(ib_error_set(NULL, ENOENT, "x"), IB_ENOTFOUND);
	assert_int_equal(ib_error_set(NULL, EIO, "x"), IB_ERROR);
	assert_int_equal(ib_error_setc(NULL, IB_EDIGEST, "x"), IB_EDIGEST);
}

static void test_first_error_wins(void **state)
{
	(void)state;
	ib_error *err = NULL;
	ib_error_setc(&err, IB_EDIGEST, "first");
	ib_error *same = err;
	int r = ib_error_set(&err, ENOENT, "second");
	/* the stored error and its code are unchanged and returned */
	assert_int_equal(r, IB_EDIGEST);
	assert_ptr_equal(err, same);
	assert_int_equal(err->code, IB_EDIGEST);
	assert_string_equal(err->msg, "first");
	r = ib_error_setc(&err, IB_EAUTH, "third");
	assert_int_equal(r, IB_EDIGEST);
	assert_string_equal(err->msg, "first");
	ib_error_free(&err);
}

static void test_setc_keeps_semantic_code(void **state)
{
	(void)state;
	static const int codes[] = {IB_ENOTFOUND, IB_EDIGEST, IB_ETOOLARGE, IB_EAUTH, IB_EINVALID,
				    IB_EUNSAFE,	  IB_EEXISTS, IB_ENET,	    IB_EUSAGE};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		ib_error *err = NULL;
		assert_int_equal(ib_error_setc(&err, codes[i], "code %d", codes[i]), codes[i]);
		assert_int_equal(err->code, codes[i]);
		assert_int_equal(err->sys_errno, 0);
		cleanup_free char *want = xasprintf("code %d", codes[i]);
		assert_string_equal(err->msg, want);
		ib_error_free(&err);
	}
}

static void test_setc_non_negative_code_becomes_generic(void **state)
{
	(void)state;
	ib_error *err = NULL;
	assert_int_equal(ib_error_setc(&err, 5, "positive"), IB_ERROR);
	assert_int_equal(err->code, IB_ERROR);
	ib_error_free(&err);
	assert_int_equal(ib_error_setc(&err, 0, "zero"), IB_ERROR);
	assert_int_equal(err->code, IB_ERROR);
	ib_error_free(&err);
}

static void test_wrap_prefixes_context_and_keeps_code(void **state)
{
	(void)state;
	ib_error *err = NULL;
	ib_error_setc(&err, IB_EDIGEST, "blob mismatch");
	int r = ib_error_wrap(&err, "pull %s", "alpine");
	assert_int_equal(r, IB_EDIGEST);
	assert_string_equal(err->msg, "pull alpine: blob mismatch");
	r = ib_error_wrap(&err, "build");
	assert_int_equal(r, IB_EDIGEST);
	assert_string_equal(err->msg, "build: pull alpine: blob mismatch");
	assert_int_equal(err->code, IB_EDIGEST);
	ib_error_free(&err);
}

static void test_wrap_without_error_creates_one(void **state)
{
	(void)state;
	ib_error *err = NULL;
	int r = ib_error_wrap(&err, "context %d", 7);
	assert_int_equal(r, IB_ERROR);
	assert_non_null(err);
	assert_int_equal(err->code, IB_ERROR);
	assert_string_equal(err->msg, "context 7");
	ib_error_free(&err);
}

static void test_wrap_null_err_pointer_is_safe(void **state)
{
	(void)state;
	assert_int_equal(ib_error_wrap(NULL, "ctx"), IB_ERROR);
}

static void test_free_resets_pointer_and_is_safe_on_null(void **state)
{
	(void)state;
	ib_error *err = NULL;
	ib_error_free(&err);
	ib_error_free(NULL);
	assert_null(err);
	ib_error_set(&err, EIO, "io");
	assert_non_null(err);
	ib_error_free(&err);
	assert_null(err);
	/* after freeing, a new error can be set again */
	ib_error_setc(&err, IB_ENET, "again");
	assert_string_equal(err->msg, "again");
	ib_error_free(&err);
}

static void test_msg_of_null_is_unknown(void **state)
{
	(void)state;
	assert_string_equal(ib_error_msg(NULL), "unknown error");
	ib_error e = {IB_ERROR, 0, NULL};
	assert_string_equal(ib_error_msg(&e), "unknown error");
	ib_error *err = NULL;
	ib_error_setc(&err, IB_EINVALID, "bad ref");
	assert_string_equal(ib_error_msg(err), "bad ref");
	ib_error_free(&err);
}

static void test_long_message_is_not_truncated(void **state)
{
	(void)state;
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ib_error *err = NULL;
	ib_error_set(&err, 0, "%s", big);
	assert_int_equal(strlen(err->msg), sizeof(big) - 1);
	ib_error_wrap(&err, "ctx");
	assert_int_equal(strlen(err->msg), sizeof(big) - 1 + 5);
	ib_error_free(&err);
}

/* Run ib_error_print with stderr redirected to a temp file; returns what it
 * wrote (caller frees). */
static char *capture_print(const ib_error *e)
{
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	ib_error_print(e);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(tmp);
	char *out = xcalloc(1, 4096);
	size_t n = fread(out, 1, 4095, tmp);
	out[n] = '\0';
	fclose(tmp);
	return out;
}

static void test_print_is_one_line(void **state)
{
	(void)state;
	ib_error *err = NULL;
	ib_error_setc(&err, IB_EINVALID, "line one\nline two\r\nthree");
	cleanup_free char *out = capture_print(err);
	assert_string_equal(out, "imgbuild: error: line one line two  three\n");
	/* the stored message is not modified by printing */
	assert_string_equal(err->msg, "line one\nline two\r\nthree");
	ib_error_free(&err);
}

static void test_print_null_error(void **state)
{
	(void)state;
	cleanup_free char *out = capture_print(NULL);
	assert_string_equal(out, "imgbuild: error: unknown error\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_without_errno_is_generic_error),
	    cmocka_unit_test(test_set_enoent_maps_to_notfound),
	    cmocka_unit_test(test_set_other_errno_appends_strerror),
	    cmocka_unit_test(test_set_with_null_err_only_returns_code),
	    cmocka_unit_test(test_first_error_wins),
	    cmocka_unit_test(test_setc_keeps_semantic_code),
	    cmocka_unit_test(test_setc_non_negative_code_becomes_generic),
	    cmocka_unit_test(test_wrap_prefixes_context_and_keeps_code),
	    cmocka_unit_test(test_wrap_without_error_creates_one),
	    cmocka_unit_test(test_wrap_null_err_pointer_is_safe),
	    cmocka_unit_test(test_free_resets_pointer_and_is_safe_on_null),
	    cmocka_unit_test(test_msg_of_null_is_unknown),
	    cmocka_unit_test(test_long_message_is_not_truncated),
	    cmocka_unit_test(test_print_is_one_line),
	    cmocka_unit_test(test_print_null_error),
	    cmocka_unit_test(test_set_code_changes_the_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
