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

static void test_passwd_by_uid_gives_name_gid_and_home(void **state)
{
	(void)state;
	const char *pw = "root:x:0:0:root:/root:/bin/sh\n"
			 "bad:x:1000:x:Bad:/nowhere:/bin/sh\n" /* skipped: gid */
			 "app:x:1000:1001:App:/home/app:/bin/sh\n"
			 "again:x:1000:7::/again:/bin/sh\n"
			 "short:x:5:6\n";
	ib_passwd_entry e;
	assert_true(ib_passwd_by_uid(pw, strlen(pw), 1000, &e));
	assert_int_equal(e.name_len, 3);
	assert_memory_equal(e.name, "app", 3);
	assert_int_equal(e.uid, 1000);
	assert_int_equal(e.gid, 1001);
	assert_int_equal(e.home_len, 9);
	assert_memory_equal(e.home, "/home/app", 9);
	/* four fields are enough; then there is no home */
	assert_true(ib_passwd_by_uid(pw, strlen(pw), 5, &e));
	assert_memory_equal(e.name, "short", 5);
	assert_int_equal(e.gid, 6);
	assert_int_equal(e.home_len, 0);
	assert_false(ib_passwd_by_uid(pw, strlen(pw), 4, &e));
	assert_false(ib_passwd_by_uid(pw, strlen(pw), UINT32_MAX, &e));
}

static void test_passwd_by_name_gives_home(void **state)
{
	(void)state;
	const char *pw = "root:x:0:0:root:/root:/bin/sh\n"
			 "app:x:1000:1001:App:/home/app\n" /* no shell field */
			 "app:x:2000:2000::/second:/bin/sh\n";
	ib_passwd_entry e;
	assert_true(ib_passwd_by_name(pw, strlen(pw), "app", &e));
	assert_int_equal(e.uid, 1000);
	assert_int_equal(e.home_len, 9);
	assert_memory_equal(e.home, "/home/app", 9);
	assert_true(ib_passwd_by_name(pw, strlen(pw), "root", &e));
	assert_int_equal(e.home_len, 5);
	assert_false(ib_passwd_by_name(pw, strlen(pw), "roo", &e));
}

static void add_gid(uint32_t gid, void *payload)
{
	ib_buf *b = payload;
	ib_buf_appendf(b, "%u,", gid);
}

static void test_group_memberships_in_file_order(void **state)
{
	(void)state;
	const char *gr = "wheel:x:10:root,app\n"
			 "audio:x:29:application,ap\n" /* names that only start alike */
			 "bad:x:-1:app\n"
			 "video:x:44:app\n"
			 "none:x:45:\n"
			 "short:x:46\n"
			 "users:x:100:bob,app";
	ib_buf b = IB_BUF_INIT;
	ib_buf_append(&b, "", 0);
	ib_group_each_membership(gr, strlen(gr), "app", 3, add_gid, &b);
	assert_string_equal(b.data, "10,44,100,");
	ib_buf_reset(&b);
	ib_buf_append(&b, "", 0);
	/* the length bounds the name: "application" is not "app" */
	ib_group_each_membership(gr, strlen(gr), "applicationX", 11, add_gid, &b);
	assert_string_equal(b.data, "29,");
	ib_buf_free(&b);
	uint32_t gid = 0;
	assert_true(ib_group_by_name(gr, strlen(gr), "short", &gid));
	assert_int_equal(gid, 46);
	assert_false(ib_group_by_name(gr, strlen(gr), "bad", &gid));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_found_with_uid_and_gid),
	    cmocka_unit_test(test_group_file_has_gid_in_third_field),
	    cmocka_unit_test(test_long_lines_are_one_line),
	    cmocka_unit_test(test_bad_lines_skipped),
	    cmocka_unit_test(test_passwd_by_uid_gives_name_gid_and_home),
	    cmocka_unit_test(test_passwd_by_name_gives_home),
	    cmocka_unit_test(test_group_memberships_in_file_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
