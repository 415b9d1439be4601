/* One passwd/group parser (src/lib/passwd.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "passwd.h"
#include "util.h"

static bool find(const char *buf, const char *name, uint32_t *id, uint32_t *gid)
{
	return ib_passwd_find(buf, strlen(buf), name, id, gid);
}

static void test_user_found_with_uid_and_gid(void **state)
{
	(void)state;
	const char *pw = "root:x:0:0:root:/root:/bin/sh\n"
			 "app:x:1000:1001:App:/home/app:/bin/sh\n";
	uint32_t uid = 7, gid = 7;
	assert_true(find(pw, "app", &uid, &gid));
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 1001);
	assert_true(find(pw, "root", &uid, &gid));
	assert_int_equal(uid, 0);
	assert_false(find(pw, "ap", &uid, &gid));
	assert_false(find(pw, "nobody", &uid, &gid));
}

static void test_group_file_has_gid_in_third_field(void **state)
{
	(void)state;
	const char *gr = "wheel:x:10:root,app\nstaff:x:50";
	uint32_t gid = 0;
	assert_true(find(gr, "staff", &gid, NULL));
	assert_int_equal(gid, 50);
	assert_true(find(gr, "wheel", &gid, NULL));
	assert_int_equal(gid, 10);
}

static void test_long_lines_are_one_line(void **state)
{
	(void)state;
	/* past 1 KiB of one line's gecos field, text that looks like an
	 * entry: a parser reading fixed-size line chunks would take it for one */
	ib_buf b = IB_BUF_INIT;
	ib_buf_appendf(&b, "big:x:5:5:");
	for (int i = 0; i < 1013; i++)
		ib_buf_append(&b, "y", 1);
	ib_buf_appendf(&b, "evil:x:0:0:/root:/bin/sh\nlast:x:6:6::/:\n");
	size_t len = 0;
	cleanup_free char *pw = ib_buf_steal(&b, &len);
	uint32_t uid = 99, gid = 99;
	assert_false(ib_passwd_find(pw, len, "evil", &uid, &gid));
	assert_int_equal(uid, 99);
	assert_true(ib_passwd_find(pw, len, "big", &uid, &gid));
	assert_int_equal(uid, 5);
	assert_true(ib_passwd_find(pw, len, "last", &uid, &gid));
	assert_int_equal(uid, 6);
}

static void test_bad_lines_skipped(void **state)
{
	(void)state;
	const char *pw = "a:x:4294967295:0::/:\n" /* (uid_t)-1 */
			 "b:x:12x:0::/:\n"
			 "c:x:1\n"
			 "d:x:3:3\n"
			 "a:x:9:9::/:\n";
	uint32_t uid = 0, gid = 0;
	assert_true(find(pw, "a", &uid, &gid));
	assert_int_equal(uid, 9);
	assert_false(find(pw, "b", &uid, &gid));
	assert_false(find(pw, "c", &uid, &gid));
	assert_true(find(pw, "d", &uid, &gid));
	assert_int_equal(gid, 3);
	/* no terminator needed: the length bounds the buffer */
	assert_false(ib_passwd_find("e:x:1:1", 3, "e", &uid, &gid));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_found_with_uid_and_gid),
	    cmocka_unit_test(test_group_file_has_gid_in_third_field),
	    cmocka_unit_test(test_long_lines_are_one_line),
	    cmocka_unit_test(test_bad_lines_skipped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
