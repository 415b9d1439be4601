/* Shared helpers (src/lib/util.c): cleanup attributes, aborting allocators,
 * string vectors, the capped buffer and the file utilities.  File tests work
 * in a fresh temp dir per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "testutil.h"
#include "util.h"

/* ---- fixture: a temp dir ---- */

static int setup_tmp(void **state)
{
	*state = tu_tmpdir();
	return 0;
}

static int teardown_tmp(void **state)
{
	char *dir = *state;
	tu_rm_rf(dir);
	free(dir);
	return 0;
}

/* ---- helpers ---- */

static char *in(void **state, const char *rel)
{
	return ib_path_join(*state, rel);
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

/* ---- cleanup attributes ---- */

static void test_cleanup_close_closes_fd(void **state)
{
	(void)state;
	int raw;
	{
		cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		raw = fd;
	}
	assert_false(fd_is_open(raw));
}

static void test_cleanup_close_ignores_negative_fd(void **state)
{
	(void)state;
	errno = 0;
	{
		cleanup_close int fd = -1;
		(void)fd;
	}
	assert_int_equal(errno, 0);
}

static void test_cleanup_close_preserves_errno(void **state)
{
	(void)state;
	{
		cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		/* make the cleanup's close() fail with EBADF */
		close(fd);
		errno = EXDEV;
	}
	assert_int_equal(errno, EXDEV);
}

static void test_steal_fd_keeps_fd_open(void **state)
{
	(void)state;
	int kept;
	{
		cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		kept = ib_steal_fd(&fd);
		assert_int_equal(fd, -1);
	}
	assert_true(fd_is_open(kept));
	close(kept);
}

static void test_cleanup_fclose_and_closedir(void **state)
{
	(void)state;
	int ffd, dfd;
	{
		cleanup_fclose FILE *f = fopen("/dev/null", "re");
		cleanup_dir DIR *d = opendir("/");
		cleanup_fclose FILE *none = NULL;
		cleanup_dir DIR *nodir = NULL;
		(void)none;
		(void)nodir;
		assert_non_null(f);
		assert_non_null(d);
		ffd = fileno(f);
		dfd = dirfd(d);
		assert_true(fd_is_open(ffd));
		assert_true(fd_is_open(dfd));
	}
	assert_false(fd_is_open(ffd));
	assert_false(fd_is_open(dfd));
}

static void test_steal_pointer_hands_out_ownership(void **state)
{
	(void)state;
	char *out;
	{
		cleanup_free char *p = xstrdup("owned");
		cleanup_free char *nothing = NULL;
		(void)nothing;
		out = steal_pointer(&p);
		assert_null(p);
	}
	/* still valid: ASan would report a use-after-free otherwise */
	assert_string_equal(out, "owned");
	free(out);
}

static void test_cleanup_strv_frees_vector(void **state)
{
	(void)state;
	/* leak detection proves the vector and its strings are released */
	cleanup_strv char **v = NULL;
	ib_strv_push(&v, "a");
	ib_strv_push(&v, "b");
	assert_int_equal(ib_strv_len(v), 2);
}

/* ---- allocators ---- */

static void test_x_allocators(void **state)
{
	(void)state;
	void *z = xmalloc(0);
	assert_non_null(z);
	free(z);

	unsigned char *c = xcalloc(64, 1);
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(c[i], 0);
	memset(c, 0xab, 64);
	c = xrealloc(c, 4096);
	assert_int_equal(c[63], 0xab);
	free(c);
	void *zc = xcalloc(0, 0);
	assert_non_null(zc);
	free(zc);

	char *s = xstrdup("hello");
	assert_string_equal(s, "hello");
	free(s);
	s = xstrdup(NULL);
	assert_string_equal(s, "");
	free(s);
	s = xstrndup("hello world", 5);
	assert_string_equal(s, "hello");
	free(s);
	s = xstrndup("ab", 10);
	assert_string_equal(s, "ab");
	free(s);
	s = xasprintf("%s-%d-%05.1f", "x", -3, 2.5);
	assert_string_equal(s, "x--3-002.5");
	free(s);
}

/* ---- string vectors ---- */

static void test_strv_push_len_dup(void **state)
{
	(void)state;
	assert_int_equal(ib_strv_len(NULL), 0);
	ib_strv_free(NULL);

	char **v = NULL;
	char word[] = "first";
	ib_strv_push(&v, word);
	/* push copies: changing the source does not change the vector */
	word[0] = 'X';
	ib_strv_push(&v, "second");
	ib_strv_push(&v, "");
	assert_int_equal(ib_strv_len(v), 3);
	assert_string_equal(v[0], "first");
	assert_string_equal(v[1], "second");
	assert_string_equal(v[2], "");
	assert_null(v[3]);

	char **d = ib_strv_dup(v);
	assert_int_equal(ib_strv_len(d), 3);
	assert_ptr_not_equal(d[0], v[0]);
	v[1][0] = 'S';
	assert_string_equal(d[1], "second");
	ib_strv_free(v);
	assert_string_equal(d[0], "first");
	ib_strv_free(d);

	char **e = ib_strv_dup(NULL);
	assert_non_null(e);
	assert_null(e[0]);
	ib_strv_free(e);
}

/* ---- capped buffer ---- */

static void test_buf_append_grows_and_terminates(void **state)
{
	(void)state;
	ib_buf b = IB_BUF_INIT;
	assert_int_equal(ib_buf_append(&b, "abc", 3), 0);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "abc");
	/* grow well past the initial allocation */
	char chunk[1000];
	memset(chunk, 'z', sizeof(chunk));
	for (int i = 0; i < 10; i++)
		assert_int_equal(ib_buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 3 + 10000);
	assert_true(b.alloc > b.len);
	assert_int_equal(b.data[b.len], '\0');
	assert_memory_equal(b.data, "abczzz", 6);
	assert_int_equal(b.data[b.len - 1], 'z');
	/* zero-length append is fine */
	assert_int_equal(ib_buf_append(&b, NULL, 0), 0);
	assert_int_equal(b.len, 10003);
	ib_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_buf_binary_data(void **state)
{
	(void)state;
	ib_buf b;
	ib_buf_init(&b, 0);
	const char bin[] = {'a', '\0', 'b', '\0'};
	assert_int_equal(ib_buf_append(&b, bin, sizeof(bin)), 0);
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, bin, 4);
	assert_int_equal(b.data[4], '\0');
	ib_buf_free(&b);
}

static void test_buf_cap_exceeded_leaves_buffer_unchanged(void **state)
{
	(void)state;
	ib_buf b;
	ib_buf_init(&b, 10);
	assert_int_equal(ib_buf_append(&b, "12345", 5), 0);
	assert_int_equal(ib_buf_append(&b, "678901", 6), IB_ETOOLARGE);
	assert_int_equal(b.len, 5);
	assert_string_equal(b.data, "12345");
	/* filling exactly to the cap is allowed */
	assert_int_equal(ib_buf_append(&b, "67890", 5), 0);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "1234567890");
	assert_int_equal(ib_buf_append(&b, "x", 1), IB_ETOOLARGE);
	assert_int_equal(b.len, 10);
	assert_int_equal(ib_buf_appendf(&b, "%d", 1), IB_ETOOLARGE);
	assert_string_equal(b.data, "1234567890");
	ib_buf_free(&b);
}

static void test_buf_cap_rejects_overflowing_length(void **state)
{
	(void)state;
	ib_buf b;
	ib_buf_init(&b, 100);
	assert_int_equal(ib_buf_append(&b, "abc", 3), 0);
	/* len + SIZE_MAX would wrap around: must be rejected, not copied */
	assert_int_equal(ib_buf_append(&b, "abc", SIZE_MAX), IB_ETOOLARGE);
	assert_int_equal(ib_buf_append(&b, "abc", SIZE_MAX - 1), IB_ETOOLARGE);
	assert_int_equal(b.len, 3);
	ib_buf_free(&b);
}

static void test_buf_appendf_formats(void **state)
{
	(void)state;
	ib_buf b = IB_BUF_INIT;
	assert_int_equal(ib_buf_appendf(&b, "%s=%d", "n", 42), 0);
	assert_int_equal(ib_buf_appendf(&b, ";%05x", 255u), 0);
	assert_string_equal(b.data, "n=42;000ff");
	assert_int_equal(b.len, strlen("n=42;000ff"));
	ib_buf_free(&b);
}

static void test_buf_reset_keeps_cap(void **state)
{
	(void)state;
	ib_buf b;
	ib_buf_init(&b, 4);
	ib_buf_reset(&b); /* on an empty buffer */
	assert_int_equal(ib_buf_append(&b, "abcd", 4), 0);
	ib_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_int_equal(ib_buf_append(&b, "wxyz", 4), 0);
	assert_string_equal(b.data, "wxyz");
	assert_int_equal(ib_buf_append(&b, "!", 1), IB_ETOOLARGE);
	ib_buf_free(&b);
}

static void test_buf_steal(void **state)
{
	(void)state;
	ib_buf b = IB_BUF_INIT;
	size_t len = 99;
	char *s = ib_buf_steal(&b, &len);
	assert_non_null(s);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);

	assert_int_equal(ib_buf_append(&b, "data", 4), 0);
	s = ib_buf_steal(&b, &len);
	assert_string_equal(s, "data");
	assert_int_equal(len, 4);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	/* the buffer is reusable after a steal, independent of the old data */
	assert_int_equal(ib_buf_append(&b, "new", 3), 0);
	assert_string_equal(s, "data");
	free(s);
	s = ib_buf_steal(&b, NULL);
	assert_string_equal(s, "new");
	free(s);
}

/* ---- reading files ---- */

static void test_read_file_round_trip_binary(void **state)
{
	cleanup_free char *p = in(state, "bin");
	const char content[] = {'x', '\0', 'y', '\n', (char)0xff};
	tu_write_file(p, content, sizeof(content));
	cleanup_free char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(p, 0, &out, &len, &err), 0);
	assert_null(err);
	assert_int_equal(len, sizeof(content));
	assert_memory_equal(out, content, sizeof(content));
	assert_int_equal(out[len], '\0');
}

static void test_read_file_larger_than_chunk(void **state)
{
	cleanup_free char *p = in(state, "big");
	size_t n = 200 * 1024 + 17;
	cleanup_free unsigned char *data = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (unsigned char)(i * 131 + 7);
	tu_write_file(p, data, n);
	cleanup_free char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(p, n, &out, &len, &err), 0);
	assert_int_equal(len, n);
	assert_memory_equal(out, data, n);
}

static void test_read_file_empty(void **state)
{
	cleanup_free char *p = in(state, "empty");
	tu_write_file(p, "", 0);
	cleanup_free char *out = NULL;
	size_t len = 5;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(p, 16, &out, &len, &err), 0);
	assert_non_null(out);
	assert_string_equal(out, "");
	assert_int_equal(len, 0);
}

static void test_read_file_cap_enforced(void **state)
{
	cleanup_free char *p = in(state, "capped");
	tu_write_file(p, "0123456789", 10);
	cleanup_free char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	/* exactly at the cap: fine */
	assert_int_equal(ib_read_file(p, 10, &out, &len, &err), 0);
	assert_int_equal(len, 10);
	free(out);
	out = NULL;
	/* one byte over: IB_ETOOLARGE, nothing handed out, error names the file */
	assert_int_equal(ib_read_file(p, 9, &out, &len, &err), IB_ETOOLARGE);
	assert_null(out);
	assert_non_null(err);
	assert_int_equal(err->code, IB_ETOOLARGE);
	assert_non_null(strstr(err->msg, p));
	ib_error_free(&err);
}

static void test_read_file_missing_is_notfound(void **state)
{
	cleanup_free char *p = in(state, "nope");
	char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(p, 0, &out, &len, &err), IB_ENOTFOUND);
	assert_null(out);
	assert_int_equal(err->sys_errno, ENOENT);
	assert_non_null(strstr(err->msg, p));
	ib_error_free(&err);
}

static void test_read_file_directory_fails(void **state)
{
	char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_true(ib_read_file(*state, 0, &out, &len, &err) < 0);
	assert_null(out);
	assert_non_null(err);
	assert_int_equal(err->sys_errno, EISDIR);
	ib_error_free(&err);
}

static void test_read_fd_from_pipe(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	ib_error *err = NULL;
	assert_int_equal(ib_write_all(fds[1], "through a pipe", 14, &err), 0);
	close(fds[1]);
	cleanup_free char *out = NULL;
	size_t len = 0;
	assert_int_equal(ib_read_fd(fds[0], 0, &out, &len, &err), 0);
	close(fds[0]);
	assert_int_equal(len, 14);
	assert_string_equal(out, "through a pipe");
}

static void test_write_all_bad_fd_fails(void **state)
{
	(void)state;
	ib_error *err = NULL;
	assert_true(ib_write_all(-1, "x", 1, &err) < 0);
	assert_int_equal(err->sys_errno, EBADF);
	ib_error_free(&err);
	/* nothing to write is not an error, whatever the fd */
	assert_int_equal(ib_write_all(-1, "", 0, &err), 0);
	assert_null(err);
}

/* ---- atomic writes ---- */

static void test_write_file_atomic_creates_with_mode(void **state)
{
	cleanup_free char *p = in(state, "conf.json");
	mode_t old = umask(077);
	ib_error *err = NULL;
	int r = ib_write_file_atomic(p, "{}\n", 3, 0644, &err);
	umask(old);
	assert_int_equal(r, 0);
	assert_null(err);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	/* the mode is exact, not filtered by the umask */
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_size, 3);
	cleanup_free char *out = NULL;
	size_t len = 0;
	assert_int_equal(ib_read_file(p, 0, &out, &len, &err), 0);
	assert_string_equal(out, "{}\n");
	/* no temp file left next to it */
	assert_int_equal(tu_count_entries(*state), 1);
}

static void test_write_file_atomic_replaces_by_rename(void **state)
{
	cleanup_free char *p = in(state, "target");
	cleanup_free char *lnk = in(state, "hardlink");
	tu_write_file(p, "old contents", 12);
	assert_int_equal(link(p, lnk), 0);
	struct stat before;
	assert_int_equal(stat(p, &before), 0);

	ib_error *err = NULL;
	assert_int_equal(ib_write_file_atomic(p, "new", 3, 0600, &err), 0);
	cleanup_free char *out = NULL;
	size_t len = 0;
	assert_int_equal(ib_read_file(p, 0, &out, &len, &err), 0);
	assert_string_equal(out, "new");
	/* a new inode took the name: the old one (still linked) is untouched,
	 * so a reader never sees a half-written file */
	struct stat after;
	assert_int_equal(stat(p, &after), 0);
	assert_true(after.st_ino != before.st_ino);
	cleanup_free char *old = NULL;
	assert_int_equal(ib_read_file(lnk, 0, &old, &len, &err), 0);
	assert_string_equal(old, "old contents");
	assert_int_equal(tu_count_entries(*state), 2);
}

static void test_write_file_atomic_missing_dir_fails_cleanly(void **state)
{
	cleanup_free char *p = in(state, "no/such/dir/file");
	ib_error *err = NULL;
	assert_int_equal(ib_write_file_atomic(p, "x", 1, 0600, &err), IB_ENOTFOUND);
	assert_non_null(err);
	ib_error_free(&err);
	assert_false(ib_file_exists(p));
	assert_int_equal(tu_count_entries(*state), 0);
}

static void test_write_file_atomic_empty_content(void **state)
{
	cleanup_free char *p = in(state, "empty");
	tu_write_file(p, "not empty", 9);
	ib_error *err = NULL;
	assert_int_equal(ib_write_file_atomic(p, "", 0, 0600, &err), 0);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 0);
}

/* ---- mkdir -p ---- */

static void test_mkdir_p_creates_nested_with_mode(void **state)
{
	cleanup_free char *p = in(state, "a/b/c");
	mode_t old = umask(0);
	ib_error *err = NULL;
	int r = ib_mkdir_p(p, 0750, &err);
	umask(old);
	assert_int_equal(r, 0);
	assert_null(err);
	const char *rel[] = {"a", "a/b", "a/b/c"};
	for (size_t i = 0; i < 3; i++) {
		cleanup_free char *q = in(state, rel[i]);
		struct stat st;
		assert_int_equal(stat(q, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0750);
	}
}

static void test_mkdir_p_existing_is_ok(void **state)
{
	cleanup_free char *p = in(state, "x/y");
	cleanup_free char *slash = in(state, "x/y/");
	ib_error *err = NULL;
	assert_int_equal(ib_mkdir_p(p, 0700, &err), 0);
	assert_int_equal(ib_mkdir_p(p, 0700, &err), 0);
	assert_int_equal(ib_mkdir_p(slash, 0700, &err), 0);
	assert_int_equal(ib_mkdir_p(*state, 0700, &err), 0);
	assert_null(err);
}

static void test_mkdir_p_file_in_the_way(void **state)
{
	cleanup_free char *f = in(state, "file");
	tu_write_file(f, "x", 1);
	ib_error *err = NULL;
	/* the path itself is a file */
	assert_int_equal(ib_mkdir_p(f, 0700, &err), IB_EEXISTS);
	assert_non_null(strstr(err->msg, f));
	ib_error_free(&err);
	/* a file as an intermediate component */
	cleanup_free char *below = in(state, "file/sub/dir");
	assert_true(ib_mkdir_p(below, 0700, &err) < 0);
	assert_int_equal(err->sys_errno, ENOTDIR);
	ib_error_free(&err);
}

/* ---- rm -rf ---- */

static void test_rm_rf_removes_tree(void **state)
{
	cleanup_free char *top = in(state, "tree");
	cleanup_free char *deep = in(state, "tree/a/b/c/d");
	ib_error *err = NULL;
	assert_int_equal(ib_mkdir_p(deep, 0755, &err), 0);
	const char *files[] = {"tree/f", "tree/a/g", "tree/a/b/c/d/h", "tree/a/b/.hidden"};
	for (size_t i = 0; i < 4; i++) {
		cleanup_free char *q = in(state, files[i]);
		tu_write_file(q, "data", 4);
	}
	cleanup_free char *fifo = in(state, "tree/a/fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	cleanup_free char *dangling = in(state, "tree/a/b/dangling");
	assert_int_equal(symlink("/nonexistent/ib-test", dangling), 0);
	cleanup_free char *empty = in(state, "tree/empty");
	assert_int_equal(mkdir(empty, 0755), 0);

	assert_int_equal(ib_rm_rf(top, &err), 0);
	assert_null(err);
	assert_false(ib_file_exists(top));
	assert_int_equal(tu_count_entries(*state), 0);
}

static void test_rm_rf_missing_path_is_ok(void **state)
{
	cleanup_free char *p = in(state, "never/was");
	ib_error *err = NULL;
	assert_int_equal(ib_rm_rf(p, &err), 0);
	assert_null(err);
}

static void test_rm_rf_single_file(void **state)
{
	cleanup_free char *p = in(state, "lonely");
	tu_write_file(p, "x", 1);
	ib_error *err = NULL;
	assert_int_equal(ib_rm_rf(p, &err), 0);
	assert_false(ib_file_exists(p));
}

/* Build OUTSIDE/keep/file next to the tree that will be removed. */
static char *make_outside(void **state)
{
	char *outside = in(state, "outside");
	cleanup_free char *keep = in(state, "outside/keep");
	cleanup_free char *file = in(state, "outside/keep/precious");
	ib_error *err = NULL;
	assert_int_equal(ib_mkdir_p(keep, 0755, &err), 0);
	tu_write_file(file, "precious", 8);
	return outside;
}

static void assert_outside_intact(void **state)
{
	cleanup_free char *file = in(state, "outside/keep/precious");
	cleanup_free char *out = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(file, 0, &out, &len, &err), 0);
	assert_string_equal(out, "precious");
	cleanup_free char *keep = in(state, "outside/keep");
	assert_int_equal(tu_count_entries(keep), 1);
}

static void test_rm_rf_does_not_follow_symlink_inside_tree(void **state)
{
	cleanup_free char *outside = make_outside(state);
	cleanup_free char *tree = in(state, "tree/sub");
	ib_error *err = NULL;
	assert_int_equal(ib_mkdir_p(tree, 0755, &err), 0);
	cleanup_free char *link_dir = in(state, "tree/sub/escape");
	cleanup_free char *link_file = in(state, "tree/file-escape");
	cleanup_free char *target_file = in(state, "outside/keep/precious");
	assert_int_equal(symlink(outside, link_dir), 0);
	assert_int_equal(symlink(target_file, link_file), 0);

	cleanup_free char *top = in(state, "tree");
	assert_int_equal(ib_rm_rf(top, &err), 0);
	assert_null(err);
	assert_false(ib_file_exists(top));
	assert_outside_intact(state);
}

static void test_rm_rf_top_level_symlink_removes_link_only(void **state)
{
	cleanup_free char *outside = make_outside(state);
	cleanup_free char *lnk = in(state, "link-to-outside");
	assert_int_equal(symlink(outside, lnk), 0);
	ib_error *err = NULL;
	assert_int_equal(ib_rm_rf(lnk, &err), 0);
	assert_null(err);
	assert_false(ib_file_exists(lnk));
	assert_outside_intact(state);
}

/* ---- paths and small helpers ---- */

static void test_path_join_single_slash(void **state)
{
	(void)state;
	static const char *cases[][3] = {
	    {"a", "b", "a/b"},
	    {"a/", "b", "a/b"},
	    {"a", "/b", "a/b"},
	    {"a//", "//b", "a/b"},
	    {"/", "etc", "/etc"},
	    {"/", "/etc", "/etc"},
	    {"/root", "x/y", "/root/x/y"},
	    {"a", "", "a"},
	    {"a/", "/", "a"},
	    {"/", "", "/"},
	    {"/", "/", "/"},
	    {"a/b", "c/", "a/b/c/"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_free char *j = ib_path_join(cases[i][0], cases[i][1]);
		if (strcmp(j, cases[i][2]) != 0)
			fail_msg("join(\"%s\", \"%s\") = \"%s\", want \"%s\"", cases[i][0],
				 cases[i][1], j, cases[i][2]);
	}
}

static void test_file_exists_uses_lstat(void **state)
{
	cleanup_free char *f = in(state, "f");
	cleanup_free char *dangling = in(state, "dangling");
	cleanup_free char *missing = in(state, "missing");
	tu_write_file(f, "", 0);
	assert_int_equal(symlink("/nonexistent/ib-test", dangling), 0);
	assert_true(ib_file_exists(f));
	assert_true(ib_file_exists(*state));
	assert_true(ib_file_exists(dangling));
	assert_false(ib_file_exists(missing));
}

static void test_hex_encode(void **state)
{
	(void)state;
	const unsigned char in_bytes[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
	char out[11];
	memset(out, '#', sizeof(out));
	ib_hex_encode(out, in_bytes, sizeof(in_bytes));
	assert_string_equal(out, "000fa5ff10");
	ib_hex_encode(out, in_bytes, 0);
	assert_string_equal(out, "");
}

static void test_format_size_docker_style(void **state)
{
	(void)state;
	static const struct {
		uint64_t bytes;
		const char *want;
	} cases[] = {
	    {0, "0B"},
	    {1, "1B"},
	    {999, "999B"},
	    {1000, "1kB"},
	    {1500, "1.5kB"},
	    {1024, "1.02kB"},
	    {123456, "123kB"},
	    {1000000, "1MB"},
	    {1234567, "1.23MB"},
	    {45600000, "45.6MB"},
	    {5000000000ULL, "5GB"},
	    {2500000000000ULL, "2.5TB"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[32];
		ib_format_size(out, sizeof(out), cases[i].bytes);
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("format_size(%llu) = \"%s\", want \"%s\"",
				 (unsigned long long)cases[i].bytes, out, cases[i].want);
	}
}

static void test_format_size_never_uses_exponent(void **state)
{
	(void)state;
	/* Just below a unit boundary "%.3g" would round to "1e+03kB"; sizes
	 * past the largest unit must not switch to exponent form either. */
	static const uint64_t cases[] = {999499,
					 999500,
					 999999,
					 999999999,
					 999999999999ULL,
					 999999999999999ULL,
					 1000000000000000ULL,
					 UINT64_MAX};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[32];
		ib_format_size(out, sizeof(out), cases[i]);
		if (strchr(out, 'e') != NULL)
			fail_msg("format_size(%llu) = \"%s\": exponent notation",
				 (unsigned long long)cases[i], out);
	}
}

static void test_format_size_truncates_to_buffer(void **state)
{
	(void)state;
	char out[4];
	memset(out, '#', sizeof(out));
	ib_format_size(out, sizeof(out), 1234567);
	assert_int_equal(out[3], '\0');
	assert_string_equal(out, "1.2");
}

static void test_parse_u64_accepts_decimal(void **state)
{
	(void)state;
	uint64_t v = 1;
	assert_int_equal(ib_parse_u64("0", &v), 0);
	assert_true(v == 0);
	assert_int_equal(ib_parse_u64("42", &v), 0);
	assert_true(v == 42);
	assert_int_equal(ib_parse_u64("007", &v), 0);
	assert_true(v == 7);
	assert_int_equal(ib_parse_u64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
}

static void test_parse_u64_rejects_junk_sign_and_overflow(void **state)
{
	(void)state;
	static const char *bad[] = {
	    "",
	    "-1",
	    "+1",
	    "12a",
	    "1 ",
	    "0x10",
	    "1.5",
	    "abc",
	    "18446744073709551616",
	    "99999999999999999999999",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 12345;
		if (ib_parse_u64(bad[i], &v) != IB_EINVALID)
			fail_msg("ib_parse_u64(\"%s\") accepted", bad[i]);
		assert_true(v == 12345);
	}
	uint64_t v = 0;
	assert_int_equal(ib_parse_u64(NULL, &v), IB_EINVALID);
}

static void test_parse_u64_rejects_leading_space(void **state)
{
	(void)state;
	/* strtoull skips leading white space and then accepts a sign: " -1"
	 * must not come back as UINT64_MAX */
	static const char *bad[] = {" 12", "\t5", " -1", "\n+3"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 12345;
		int r = ib_parse_u64(bad[i], &v);
		if (r != IB_EINVALID)
			fail_msg("ib_parse_u64(\"%s\") = %d, value %llu", bad[i], r,
				 (unsigned long long)v);
	}
}

static void test_lock_file_excludes_other_holders_until_closed(void **state)
{
	char *dir = *state;
	cleanup_free char *path = ib_path_join(dir, "x.lock");
	ib_error *err = NULL;
	int fd = ib_lock_file(path, LOCK_EX, &err);
	assert_true(fd >= 0);
	assert_null(err);
	int other = open(path, O_RDWR | O_CLOEXEC);
	assert_true(other >= 0);
	assert_int_equal(ib_flock(other, LOCK_EX | LOCK_NB), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	close(fd);
	assert_int_equal(ib_flock(other, LOCK_SH | LOCK_NB), 0);
	close(other);
	/* a lock file in a missing directory is an error naming it */
	cleanup_free char *bad = ib_path_join(dir, "missing/x.lock");
	assert_true(ib_lock_file(bad, LOCK_SH, &err) < 0);
	assert_non_null(strstr(ib_error_msg(err), "missing/x.lock"));
	ib_error_free(&err);
}

static void test_parse_size_decimal_and_binary(void **state)
{
	(void)state;
	uint64_t v = 0;
	/* docker's printed sizes: kB/MB/GB are powers of 1000 */
	assert_int_equal(ib_parse_size("123", false, &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(ib_parse_size("10k", false, &v), 0);
	assert_int_equal(v, 10000);
	assert_int_equal(ib_parse_size("1.5GB", false, &v), 0);
	assert_int_equal(v, 1500000000);
	assert_int_equal(ib_parse_size("2GiB", false, &v), 0);
	assert_int_equal(v, 2147483648ULL);
	/* docker --memory: 512m is 512 MiB; the i forms are the same */
	assert_int_equal(ib_parse_size("512m", true, &v), 0);
	assert_int_equal(v, 536870912ULL);
	assert_int_equal(ib_parse_size("1G", true, &v), 0);
	assert_int_equal(v, 1073741824ULL);
	assert_int_equal(ib_parse_size("4Ki", true, &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(ib_parse_size("7b", true, &v), 0);
	assert_int_equal(v, 7);
	/* not sizes */
	assert_int_equal(ib_parse_size("", false, &v), -1);
	assert_int_equal(ib_parse_size("-1", false, &v), -1);
	assert_int_equal(ib_parse_size("12x", true, &v), -1);
	assert_int_equal(ib_parse_size("99999999999t", false, &v), -1);
}

static void test_parse_source_date_epoch(void **state)
{
	(void)state;
	int64_t v = -1;
	ib_error *err = NULL;
	unsetenv("SOURCE_DATE_EPOCH");
	assert_int_equal(ib_parse_source_date_epoch(NULL, &v, &err), 0);
	assert_int_equal(v, 0);
	assert_int_equal(ib_parse_source_date_epoch("1700000000", &v, &err), 0);
	assert_int_equal(v, 1700000000);
	setenv("SOURCE_DATE_EPOCH", "42", 1);
	assert_int_equal(ib_parse_source_date_epoch(NULL, &v, &err), 0);
	assert_int_equal(v, 42);
	/* an explicit value wins over the variable, an empty one means 0 */
	assert_int_equal(ib_parse_source_date_epoch("7", &v, &err), 0);
	assert_int_equal(v, 7);
	assert_int_equal(ib_parse_source_date_epoch("", &v, &err), 0);
	assert_int_equal(v, 0);
	setenv("SOURCE_DATE_EPOCH", "soon", 1);
	assert_int_equal(ib_parse_source_date_epoch(NULL, &v, &err), IB_EINVALID);
	assert_non_null(strstr(err->msg, "SOURCE_DATE_EPOCH \"soon\""));
	ib_error_free(&err);
	unsetenv("SOURCE_DATE_EPOCH");
	assert_int_equal(ib_parse_source_date_epoch("-1", &v, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_parse_source_date_epoch("9223372036854775807", &v, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_parse_source_date_epoch("12x", &v, NULL), IB_EINVALID);
}

static void test_format_rfc3339(void **state)
{
	(void)state;
	char buf[64];
	ib_format_rfc3339(buf, sizeof(buf), 0);
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	ib_format_rfc3339(buf, sizeof(buf), 1700000000);
	assert_string_equal(buf, "2023-11-14T22:13:20Z");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_tmp, teardown_tmp)
	const struct CMUnitTest tests[] = {
	    T(test_lock_file_excludes_other_holders_until_closed),
	    cmocka_unit_test(test_cleanup_close_closes_fd),
	    cmocka_unit_test(test_cleanup_close_ignores_negative_fd),
	    cmocka_unit_test(test_cleanup_close_preserves_errno),
	    cmocka_unit_test(test_steal_fd_keeps_fd_open),
	    cmocka_unit_test(test_cleanup_fclose_and_closedir),
	    cmocka_unit_test(test_steal_pointer_hands_out_ownership),
	    cmocka_unit_test(test_cleanup_strv_frees_vector),
	    cmocka_unit_test(test_x_allocators),
	    cmocka_unit_test(test_strv_push_len_dup),
	    cmocka_unit_test(test_buf_append_grows_and_terminates),
	    cmocka_unit_test(test_buf_binary_data),
	    cmocka_unit_test(test_buf_cap_exceeded_leaves_buffer_unchanged),
	    cmocka_unit_test(test_buf_cap_rejects_overflowing_length),
	    cmocka_unit_test(test_buf_appendf_formats),
	    cmocka_unit_test(test_buf_reset_keeps_cap),
	    cmocka_unit_test(test_buf_steal),
	    T(test_read_file_round_trip_binary),
	    T(test_read_file_larger_than_chunk),
	    T(test_read_file_empty),
	    T(test_read_file_cap_enforced),
	    T(test_read_file_missing_is_notfound),
	    T(test_read_file_directory_fails),
	    cmocka_unit_test(test_read_fd_from_pipe),
	    cmocka_unit_test(test_write_all_bad_fd_fails),
	    T(test_write_file_atomic_creates_with_mode),
	    T(test_write_file_atomic_replaces_by_rename),
	    T(test_write_file_atomic_missing_dir_fails_cleanly),
	    T(test_write_file_atomic_empty_content),
	    T(test_mkdir_p_creates_nested_with_mode),
	    T(test_mkdir_p_existing_is_ok),
	    T(test_mkdir_p_file_in_the_way),
	    T(test_rm_rf_removes_tree),
	    T(test_rm_rf_missing_path_is_ok),
	    T(test_rm_rf_single_file),
	    T(test_rm_rf_does_not_follow_symlink_inside_tree),
	    T(test_rm_rf_top_level_symlink_removes_link_only),
	    cmocka_unit_test(test_path_join_single_slash),
	    T(test_file_exists_uses_lstat),
	    cmocka_unit_test(test_hex_encode),
	    cmocka_unit_test(test_format_size_docker_style),
	    cmocka_unit_test(test_format_size_never_uses_exponent),
	    cmocka_unit_test(test_format_size_truncates_to_buffer),
	    cmocka_unit_test(test_parse_u64_accepts_decimal),
	    cmocka_unit_test(test_parse_u64_rejects_junk_sign_and_overflow),
	    cmocka_unit_test(test_parse_u64_rejects_leading_space),
	    cmocka_unit_test(test_parse_size_decimal_and_binary),
	    cmocka_unit_test(test_parse_source_date_epoch),
	    cmocka_unit_test(test_format_rfc3339),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
