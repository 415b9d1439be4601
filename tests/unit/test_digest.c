/* SHA-256 digests (src/lib/digest.c): known vectors, streaming in odd chunk
 * sizes, hashing file descriptors, and strict validation of the
 * "sha256:<64 lower-case hex>" form that later becomes a file name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "digest.h"
#include "error.h"
#include "util.h"

/* FIPS 180-2 / NIST vectors */
#define EMPTY_DIGEST "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC_DIGEST "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define ABC448_INPUT "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
#define ABC448_DIGEST "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define MILLION_A_DIGEST "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

/* sha256 of pattern(1 MiB), of pattern(1 MiB) without its first 3 bytes, and
 * of pattern(3 MiB + 5), computed independently with Python's hashlib. */
#define PATTERN_1M_DIGEST "sha256:62db649367f92b7f585bc2eda21acd6f9a37d6d42b3423e69a309baee0bbd6d8"
#define PATTERN_1M_SKIP3_DIGEST                                                                    \
	"sha256:10f4e2889c37cc97465e002ba8c650555236e8e1fa491f913002a0b185605576"
#define PATTERN_3M5_DIGEST "sha256:7b62b7fb335d4cec086a52c86170d8cc983e6028fce08abef2a6399ef80963fc"

#define MIB ((size_t)1 << 20)

static unsigned char *pattern(size_t n)
{
	unsigned char *b = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(((i * 31 + 7) ^ (i >> 8)) & 0xff);
	return b;
}

/* A temp file holding data, opened for reading at offset 0; unlinked
 * already, so closing the fd cleans up. */
static int temp_fd_with(const void *data, size_t len)
{
	const char *base = getenv("TMPDIR");
	cleanup_free char *tmpl =
	    xasprintf("%s/ib-test-digest-XXXXXX", base && *base ? base : "/tmp");
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	unlink(tmpl);
	ib_error *err = NULL;
	assert_int_equal(ib_write_all(fd, data, len, &err), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static void test_buffer_known_vectors(void **state)
{
	(void)state;
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, "", 0);
	assert_string_equal(d, EMPTY_DIGEST);
	assert_int_equal(strlen(d), IB_DIGEST_STRLEN);
	ib_digest_buffer(d, "abc", 3);
	assert_string_equal(d, ABC_DIGEST);
	ib_digest_buffer(d, ABC448_INPUT, strlen(ABC448_INPUT));
	assert_string_equal(d, ABC448_DIGEST);
}

static void test_empty_stream_matches_empty_vector(void **state)
{
	(void)state;
	char d[IB_DIGEST_BUFLEN];
	ib_digest_ctx *c = ib_digest_new();
	ib_digest_update(c, NULL, 0);
	ib_digest_final(c, d);
	ib_digest_free(c);
	assert_string_equal(d, EMPTY_DIGEST);
}

static void test_stream_byte_by_byte_abc(void **state)
{
	(void)state;
	char d[IB_DIGEST_BUFLEN];
	ib_digest_ctx *c = ib_digest_new();
	ib_digest_update(c, "a", 1);
	ib_digest_update(c, "", 0);
	ib_digest_update(c, "b", 1);
	ib_digest_update(c, "c", 1);
	ib_digest_final(c, d);
	ib_digest_free(c);
	assert_string_equal(d, ABC_DIGEST);
}

static void test_million_a_streamed(void **state)
{
	(void)state;
	char chunk[1000];
	memset(chunk, 'a', sizeof(chunk));
	ib_digest_ctx *c = ib_digest_new();
	for (int i = 0; i < 1000; i++)
		ib_digest_update(c, chunk, sizeof(chunk));
	char d[IB_DIGEST_BUFLEN];
	ib_digest_final(c, d);
	ib_digest_free(c);
	assert_string_equal(d, MILLION_A_DIGEST);
}

static void test_1mib_odd_chunks_equal_one_shot(void **state)
{
	(void)state;
	cleanup_free unsigned char *buf = pattern(MIB);
	char one[IB_DIGEST_BUFLEN];
	ib_digest_buffer(one, buf, MIB);
	assert_string_equal(one, PATTERN_1M_DIGEST);

	/* odd sizes straddle every 64-byte block boundary in different ways */
	static const size_t chunk_sets[][6] = {
	    {1, 0, 0, 0, 0, 0},	    {3, 0, 0, 0, 0, 0},		{63, 65, 0, 0, 0, 0},
	    {7, 13, 4093, 0, 0, 0}, {65537, 1, 127, 129, 0, 0}, {999983, 0, 0, 0, 0, 0},
	};
	for (size_t s = 0; s < sizeof(chunk_sets) / sizeof(chunk_sets[0]); s++) {
		ib_digest_ctx *c = ib_digest_new();
		size_t off = 0, k = 0;
		while (off < MIB) {
			size_t want = chunk_sets[s][k];
			k = (k + 1 < 6 && chunk_sets[s][k + 1]) ? k + 1 : 0;
			size_t n = want < MIB - off ? want : MIB - off;
			ib_digest_update(c, buf + off, n);
			off += n;
		}
		char d[IB_DIGEST_BUFLEN];
		ib_digest_final(c, d);
		ib_digest_free(c);
		if (strcmp(d, one) != 0)
			fail_msg("chunk set %zu: %s != %s", s, d, one);
	}
}

static void test_reset_allows_reuse(void **state)
{
	(void)state;
	ib_digest_ctx *c = ib_digest_new();
	char d[IB_DIGEST_BUFLEN];
	ib_digest_update(c, "garbage", 7);
	ib_digest_final(c, d);
	ib_digest_reset(c);
	ib_digest_update(c, "abc", 3);
	ib_digest_final(c, d);
	assert_string_equal(d, ABC_DIGEST);
	/* reset discards data that was fed but not finalised */
	ib_digest_reset(c);
	ib_digest_update(c, "partial", 7);
	ib_digest_reset(c);
	ib_digest_final(c, d);
	assert_string_equal(d, EMPTY_DIGEST);
	ib_digest_free(c);
	ib_digest_free(NULL);
}

static void test_fd_hashes_file_and_reports_size(void **state)
{
	(void)state;
	size_t n = 3 * MIB + 5; /* more than one internal read */
	cleanup_free unsigned char *buf = pattern(n);
	cleanup_close int fd = temp_fd_with(buf, n);
	char d[IB_DIGEST_BUFLEN];
	uint64_t size = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_digest_fd(d, fd, &size, &err), 0);
	assert_null(err);
	assert_string_equal(d, PATTERN_3M5_DIGEST);
	assert_true(size == n);
	/* the fd is left open (at EOF) */
	assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)n);
}

static void test_fd_starts_at_current_offset(void **state)
{
	(void)state;
	cleanup_free unsigned char *buf = pattern(MIB);
	cleanup_close int fd = temp_fd_with(buf, MIB);
	assert_int_equal(lseek(fd, 3, SEEK_SET), 3);
	char d[IB_DIGEST_BUFLEN];
	uint64_t size = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_digest_fd(d, fd, &size, &err), 0);
	assert_string_equal(d, PATTERN_1M_SKIP3_DIGEST);
	assert_true(size == MIB - 3);
}

static void test_fd_empty_and_null_size(void **state)
{
	(void)state;
	cleanup_close int fd = temp_fd_with("", 0);
	char d[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	assert_int_equal(ib_digest_fd(d, fd, NULL, &err), 0);
	assert_string_equal(d, EMPTY_DIGEST);
}

static void test_fd_from_pipe(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "abc", 3), 3);
	close(p[1]);
	char d[IB_DIGEST_BUFLEN];
	uint64_t size = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_digest_fd(d, p[0], &size, &err), 0);
	close(p[0]);
	assert_string_equal(d, ABC_DIGEST);
	assert_true(size == 3);
}

static void test_fd_read_error(void **state)
{
	(void)state;
	char d[IB_DIGEST_BUFLEN];
	uint64_t size = 77;
	ib_error *err = NULL;
	int wfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	assert_true(wfd >= 0);
	/* reading from a write-only fd fails with EBADF */
	assert_true(ib_digest_fd(d, wfd, &size, &err) < 0);
	close(wfd);
	assert_non_null(err);
	assert_int_equal(err->sys_errno, EBADF);
	assert_true(size == 77);
	ib_error_free(&err);
}

static void test_validate_accepts_canonical(void **state)
{
	(void)state;
	ib_error *err = NULL;
	assert_int_equal(ib_digest_validate(EMPTY_DIGEST, &err), 0);
	assert_int_equal(ib_digest_validate(ABC_DIGEST, &err), 0);
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, "x", 1);
	assert_int_equal(ib_digest_validate(d, &err), 0);
	assert_null(err);
}

static void expect_invalid(const char *s)
{
	ib_error *err = NULL;
	int r = ib_digest_validate(s, &err);
	if (r != IB_EINVALID)
		fail_msg("validate(\"%s\") = %d, want IB_EINVALID", s ? s : "(null)", r);
	assert_non_null(err);
	assert_int_equal(err->code, IB_EINVALID);
	ib_error_free(&err);
	/* a NULL err is allowed */
	assert_int_equal(ib_digest_validate(s, NULL), IB_EINVALID);
}

static void test_validate_rejects_malformed(void **state)
{
	(void)state;
	const char *hex64 = EMPTY_DIGEST + 7;
	cleanup_free char *upper = xstrdup(EMPTY_DIGEST);
	for (char *p = upper + 7; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	cleanup_free char *one_upper = xstrdup(EMPTY_DIGEST);
	one_upper[IB_DIGEST_STRLEN - 1] = 'F'; /* ...855 -> ...85F */
	cleanup_free char *d63 = xasprintf("sha256:%.63s", hex64);
	cleanup_free char *d65 = xasprintf("sha256:%s0", hex64);
	cleanup_free char *d128 = xasprintf("sha256:%s%s", hex64, hex64);
	cleanup_free char *sha512 = xasprintf("sha512:%s%s", hex64, hex64);
	cleanup_free char *slash = xasprintf("sha256:%.31s/%.32s", hex64, hex64 + 32);
	cleanup_free char *dots = xasprintf("sha256:../../%.58s", hex64);
	cleanup_free char *no_prefix = xstrdup(hex64);
	cleanup_free char *space = xasprintf("sha256:%s ", hex64);
	cleanup_free char *newline = xasprintf("sha256:%.63s\n", hex64);
	cleanup_free char *upper_algo = xasprintf("SHA256:%s", hex64);
	cleanup_free char *lead = xasprintf(" sha256:%s", hex64);
	cleanup_free char *nonhex = xasprintf("sha256:%.63sg", hex64);

	assert_int_equal(strlen(slash), IB_DIGEST_STRLEN);
	assert_int_equal(strlen(dots), IB_DIGEST_STRLEN);
	assert_int_equal(strlen(newline), IB_DIGEST_STRLEN);

	const char *bad[] = {
	    NULL,	  "",	   "sha256:",  "sha256", "sha256:../../etc",
	    "sha256:abc", upper,   one_upper,  d63,	 d65,
	    d128,	  sha512,  slash,      dots,	 no_prefix,
	    space,	  newline, upper_algo, lead,	 nonhex,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_invalid(bad[i]);
}

static void test_validate_error_names_value(void **state)
{
	(void)state;
	ib_error *err = NULL;
	assert_int_equal(ib_digest_validate("sha256:../../etc", &err), IB_EINVALID);
	assert_non_null(strstr(err->msg, "sha256:../../etc"));
	ib_error_free(&err);
	assert_int_equal(ib_digest_validate("md5:d41d8cd98f00b204e9800998ecf8427e", &err),
			 IB_EINVALID);
	assert_non_null(strstr(err->msg, "md5:d41d8cd98f00b204e9800998ecf8427e"));
	ib_error_free(&err);
}

static void test_validate_does_not_overwrite_existing_error(void **state)
{
	(void)state;
	ib_error *err = NULL;
	ib_error_setc(&err, IB_ENET, "earlier");
	/* the first error wins: its code comes back */
	assert_int_equal(ib_digest_validate("bogus", &err), IB_ENET);
	assert_string_equal(err->msg, "earlier");
	ib_error_free(&err);
}

static void test_hex_part(void **state)
{
	(void)state;
	assert_string_equal(ib_digest_hex(ABC_DIGEST), ABC_DIGEST + 7);
	assert_ptr_equal(ib_digest_hex(ABC_DIGEST), ABC_DIGEST + 7);
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, "abc", 3);
	assert_int_equal(strlen(ib_digest_hex(d)), 64);
	assert_string_equal(ib_digest_hex(d), ABC_DIGEST + 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buffer_known_vectors),
	    cmocka_unit_test(test_empty_stream_matches_empty_vector),
	    cmocka_unit_test(test_stream_byte_by_byte_abc),
	    cmocka_unit_test(test_million_a_streamed),
	    cmocka_unit_test(test_1mib_odd_chunks_equal_one_shot),
	    cmocka_unit_test(test_reset_allows_reuse),
	    cmocka_unit_test(test_fd_hashes_file_and_reports_size),
	    cmocka_unit_test(test_fd_starts_at_current_offset),
	    cmocka_unit_test(test_fd_empty_and_null_size),
	    cmocka_unit_test(test_fd_from_pipe),
	    cmocka_unit_test(test_fd_read_error),
	    cmocka_unit_test(test_validate_accepts_canonical),
	    cmocka_unit_test(test_validate_rejects_malformed),
	    cmocka_unit_test(test_validate_error_names_value),
	    cmocka_unit_test(test_validate_does_not_overwrite_existing_error),
	    cmocka_unit_test(test_hex_part),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
