/* Safe layer extraction (src/lib/unpack.c).
 *
 * Every test works in its own temp dir TMP holding:
 *   TMP/root/     the destination of the unpack
 *   TMP/victim/x  a file that no layer may touch ("secret\n", 0644, dir 0755)
 *   TMP/layer.tar the layer under test, written here with libarchive's writer
 * Hostile cases assert the error the call returns and then that TMP and the
 * victim are exactly as they were.  Needs root (devices, chown, trusted.*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <zlib.h>

#include "compress.h"
#include "error.h"
#include "layer.h"
#include "store.h"
#include "testutil.h"
#include "unpack.h"
#include "util.h"

#define MTIME 1600000000
#define VICTIM_CONTENT "secret\n"

typedef struct fixture {
	char *tmp;
	char *root;
	char *victim; /* absolute */
	char *victim_x;
	char *tar;
} fixture;

static int setup(void **state)
{
	fixture *f = xcalloc(1, sizeof(*f));
	f->tmp = tu_tmpdir();
	f->root = xasprintf("%s/root", f->tmp);
	f->victim = xasprintf("%s/victim", f->tmp);
	f->victim_x = xasprintf("%s/victim/x", f->tmp);
	f->tar = xasprintf("%s/layer.tar", f->tmp);
	assert_int_equal(mkdir(f->root, 0755), 0);
	assert_int_equal(mkdir(f->victim, 0755), 0);
	assert_int_equal(chmod(f->victim, 0755), 0);
	int fd = open(f->victim_x, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, VICTIM_CONTENT, strlen(VICTIM_CONTENT)),
			 (ssize_t)strlen(VICTIM_CONTENT));
	assert_int_equal(fchmod(fd, 0644), 0);
	close(fd);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	tu_rm_rf(f->tmp);
	free(f->tmp);
	free(f->root);
	free(f->victim);
	free(f->victim_x);
	free(f->tar);
	free(f);
	return 0;
}

static char *rootpath(const fixture *f, const char *rel)
{
	return xasprintf("%s/%s", f->root, rel);
}

/* ---- writing layers ---- */

enum { FMT_PAX, FMT_GNU };
enum { FILT_NONE, FILT_GZIP, FILT_ZSTD };

static struct archive *tw_open_ext(const fixture *f, int fmt, int filt)
{
	struct archive *a = archive_write_new();
	assert_non_null(a);
	if (fmt == FMT_GNU)
		assert_int_equal(archive_write_set_format_gnutar(a), ARCHIVE_OK);
	else
		assert_int_equal(archive_write_set_format_pax(a), ARCHIVE_OK);
	if (filt == FILT_GZIP)
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	else if (filt == FILT_ZSTD)
		assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, f->tar), ARCHIVE_OK);
	return a;
}

static struct archive *tw_open(const fixture *f)
{
	return tw_open_ext(f, FMT_PAX, FILT_NONE);
}

static struct archive_entry *tw_entry(const char *name, mode_t type, mode_t perm)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_mtime(e, MTIME, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	return e;
}

static void tw_put(struct archive *a, struct archive_entry *e, const void *data, size_t len)
{
	if (archive_write_header(a, e) != ARCHIVE_OK)
		fail_msg("write header %s: %s", archive_entry_pathname(e), archive_error_string(a));
	if (len > 0)
		assert_int_equal(archive_write_data(a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

static void tw_file(struct archive *a, const char *name, mode_t perm, const char *data)
{
	struct archive_entry *e = tw_entry(name, AE_IFREG, perm);
	archive_entry_set_size(e, (la_int64_t)strlen(data));
	tw_put(a, e, data, strlen(data));
}

static void tw_dir(struct archive *a, const char *name, mode_t perm)
{
	tw_put(a, tw_entry(name, AE_IFDIR, perm), NULL, 0);
}

static void tw_symlink(struct archive *a, const char *name, const char *target)
{
	struct archive_entry *e = tw_entry(name, AE_IFLNK, 0777);
	archive_entry_set_symlink(e, target);
	tw_put(a, e, NULL, 0);
}

static void tw_hardlink(struct archive *a, const char *name, const char *target)
{
	struct archive_entry *e = tw_entry(name, AE_IFREG, 0644);
	archive_entry_set_hardlink(e, target);
	archive_entry_set_size(e, 0);
	tw_put(a, e, NULL, 0);
}

static void tw_node(struct archive *a, const char *name, mode_t type, mode_t perm,
		    unsigned long maj, unsigned long min)
{
	struct archive_entry *e = tw_entry(name, type, perm);
	archive_entry_set_rdevmajor(e, (dev_t)maj);
	archive_entry_set_rdevminor(e, (dev_t)min);
	tw_put(a, e, NULL, 0);
}

/* A whiteout as layer.c writes it: an empty regular file. */
static void tw_whiteout(struct archive *a, const char *name)
{
	tw_file(a, name, 0644, "");
}

static void tw_close(struct archive *a)
{
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/* ---- unpacking ---- */

static int unpack_opts(const fixture *f, const ib_unpack_options *o, ib_unpack_stats *st,
		       ib_error **err)
{
	int fd = open(f->tar, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	int r = ib_unpack_fd(fd, f->root, o, st, err);
	/* the fd is still ours */
	assert_int_equal(fcntl(fd, F_GETFD), FD_CLOEXEC);
	close(fd);
	return r;
}

static int unpack(const fixture *f, ib_error **err)
{
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	return unpack_opts(f, &o, NULL, err);
}

static void unpack_ok(const fixture *f, const ib_unpack_options *o)
{
	ib_error *err = NULL;
	ib_unpack_options def = IB_UNPACK_OPTIONS_INIT;
	if (unpack_opts(f, o ? o : &def, NULL, &err) < 0)
		fail_msg("unpack: %s", ib_error_msg(err));
	assert_null(err);
}

/* The call failed with `code` and the message names `needle`. */
static void expect_error(int r, ib_error **err, int code, const char *needle)
{
	if (r != code)
		fail_msg("expected code %d, got %d (%s)", code, r, ib_error_msg(*err));
	assert_non_null(*err);
	assert_int_equal((*err)->code, code);
	if (needle && !strstr((*err)->msg, needle))
		fail_msg("message \"%s\" does not mention \"%s\"", (*err)->msg, needle);
	ib_error_free(err);
}

/* ---- inspecting the result ---- */

static void assert_content(const char *path, const char *want)
{
	char *got = tu_read_file(path);
	assert_string_equal(got, want);
	free(got);
}

static void assert_rel_content(const fixture *f, const char *rel, const char *want)
{
	char *p = rootpath(f, rel);
	assert_content(p, want);
	free(p);
}

static mode_t lmode(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		fail_msg("lstat %s: %s", path, strerror(errno));
	return st.st_mode;
}

static mode_t rel_lmode(const fixture *f, const char *rel)
{
	char *p = rootpath(f, rel);
	mode_t m = lmode(p);
	free(p);
	return m;
}

static bool rel_exists(const fixture *f, const char *rel)
{
	struct stat st;
	char *p = rootpath(f, rel);
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

/* Sorted names in dir, joined with ','. */
static char *listing(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		fail_msg("opendir %s: %s", dir, strerror(errno));
	char **names = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			ib_strv_push(&names, de->d_name);
	closedir(d);
	size_t n = ib_strv_len(names);
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	ib_buf b = IB_BUF_INIT;
	ib_buf_append(&b, "", 0);
	for (size_t i = 0; i < n; i++)
		ib_buf_appendf(&b, "%s%s", i ? "," : "", names[i]);
	ib_strv_free(names);
	return ib_buf_steal(&b, NULL);
}

static void assert_listing(const char *dir, const char *want)
{
	char *got = listing(dir);
	assert_string_equal(got, want);
	free(got);
}

static void assert_rel_listing(const fixture *f, const char *rel, const char *want)
{
	char *p = rootpath(f, rel);
	assert_listing(p, want);
	free(p);
}

/* Nothing escaped: TMP holds what setup made, the victim is untouched. */
static void assert_victim_intact(const fixture *f)
{
	assert_listing(f->tmp, "layer.tar,root,victim");
	assert_listing(f->victim, "x");
	assert_content(f->victim_x, VICTIM_CONTENT);
	struct stat st;
	assert_int_equal(lstat(f->victim, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(lstat(f->victim_x, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_nlink, 1);
}

/* Write a raw ustar stream holding one empty entry (for names that
 * libarchive's writer refuses to produce). */
static void write_raw_ustar(const fixture *f, const char *name, char typeflag)
{
	unsigned char blk[512 * 3];
	memset(blk, 0, sizeof(blk));
	memcpy(blk, name, strlen(name));
	memcpy(blk + 100, "0000644", 8);
	memcpy(blk + 108, "0000000", 8);
	memcpy(blk + 116, "0000000", 8);
	memcpy(blk + 124, "00000000000", 12);
	memcpy(blk + 136, "00000000000", 12);
	memset(blk + 148, ' ', 8);
	blk[156] = (unsigned char)typeflag;
	memcpy(blk + 257, "ustar", 6);
	memcpy(blk + 263, "00", 2);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += blk[i];
	snprintf((char *)blk + 148, 8, "%06o", sum);
	int fd = open(f->tar, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, blk, sizeof(blk)), (ssize_t)sizeof(blk));
	close(fd);
}

/* =================== hostile layers =================== */

/* Unpacking the layer fails with code and a message naming needle, and
 * nothing escaped. */
static void unpack_refused(const fixture *f, int code, const char *needle)
{
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, code, needle);
	assert_victim_intact(f);
}

static void test_dotdot_name_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "../victim/x", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "../victim/x");
	assert_rel_listing(f, "", "");
}

static void test_dotdot_inner_component_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "a/", 0755);
	tw_file(a, "a/../../victim/x", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "a/../../victim/x");
}

static void test_dotdot_trailing_component_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "a/..", 0777);
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "\"a/..");
	assert_int_equal(lmode(f->root) & 07777, 0755);
}

static void test_absolute_name_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, f->victim_x, 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "absolute");
	assert_rel_listing(f, "", "");
}

static void test_empty_name_rejected(void **state)
{
	fixture *f = *state;
	write_raw_ustar(f, "", '0');
	unpack_refused(f, IB_EUNSAFE, "empty name");
}

/* The symlink's target does not exist inside the root, so the write fails
 * rather than following it to the real victim. */
static void test_path_over_path_max_rejected(void **state)
{
	fixture *f = *state;
	/* 50 directories of 99 bytes: 5000 bytes, every name within NAME_MAX */
	char *name = xcalloc(1, 5001);
	for (size_t i = 0; i < 5000; i++)
		name[i] = (i % 100 == 50) ? '/' : 'd';
	struct archive *a = tw_open(f);
	tw_file(a, "ok", 0644, "fine");
	tw_file(a, name, 0644, "deep");
	tw_close(a);
	free(name);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EINVALID, "is 5000 bytes long");
}

static void test_check_path_limits(void **state)
{
	(void)state;
	char *p = xcalloc(1, PATH_MAX + 1);
	for (size_t i = 0; i < PATH_MAX - 2; i++)
		p[i] = (i % 100 == 99) ? '/' : 'p';
	assert_int_equal(ib_unpack_check_path(p, NULL), 0);
	p[PATH_MAX - 2] = 'p'; /* "/" + path + NUL now needs PATH_MAX + 1 */
	ib_error *err = NULL;
	assert_int_equal(ib_unpack_check_path(p, &err), IB_EINVALID);
	assert_non_null(strstr(err->msg, "layer path \"pppp"));
	ib_error_free(&err);
	memset(p, 'n', NAME_MAX + 1);
	p[NAME_MAX + 1] = '\0';
	assert_int_equal(ib_unpack_check_path(p, NULL), IB_EINVALID);
	p[NAME_MAX] = '\0';
	assert_int_equal(ib_unpack_check_path(p, NULL), 0);
	free(p);
}

static void test_symlink_escape_absolute_write_fails(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "esc", f->victim);
	tw_file(a, "esc/x", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_ERROR, "esc/x");
}

/* When the target path exists inside the root, the write lands there. */
static void test_symlink_escape_absolute_resolves_in_root(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	char *inroot = xasprintf("%s/", f->victim + 1);
	tw_dir(a, inroot, 0755);
	tw_symlink(a, "esc", f->victim);
	tw_file(a, "esc/x", 0644, "pwned");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	char *x = xasprintf("%sx", inroot);
	assert_rel_content(f, x, "pwned");
	free(x);
	free(inroot);
}

static void test_symlink_escape_relative_write_fails(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "esc", "../victim");
	tw_file(a, "esc/new", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_ERROR, "esc/new");
}

static void test_symlink_escape_relative_resolves_in_root(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "victim/", 0755);
	tw_symlink(a, "esc", "../victim");
	tw_file(a, "esc/x", 0644, "pwned");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_rel_content(f, "victim/x", "pwned");
}

static void test_symlink_chain_escape_write_fails(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "a", "b");
	tw_symlink(a, "b", "c/../d");
	tw_dir(a, "c/", 0755);
	tw_symlink(a, "d", f->victim);
	tw_file(a, "a/x", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_ERROR, "a/x");
}

/* A chain climbing above the root is clamped at the root: parents are then
 * created inside it.  (Followed naively, it would reach TMP's victim.) */
static void test_symlink_chain_dotdot_clamped_to_root(void **state)
{
	fixture *f = *state;
	const char *tmpbase = strrchr(f->tmp, '/') + 1;
	char *name = xasprintf("l1/%s/victim/x", tmpbase);
	struct archive *a = tw_open(f);
	tw_symlink(a, "l1", "l2");
	tw_symlink(a, "l2", "../..");
	tw_file(a, name, 0644, "pwned");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	char *inroot = xasprintf("%s/victim/x", tmpbase);
	assert_rel_content(f, inroot, "pwned");
	assert_true(S_ISLNK(rel_lmode(f, "l1")));
	free(inroot);
	free(name);
}

static void test_symlink_to_dir_new_file_through_it_fails(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "d", f->victim);
	tw_dir(a, "d/sub/", 0755);
	tw_close(a);
	unpack_refused(f, IB_ERROR, "d/sub");
}

static void test_dir_replaced_by_symlink_then_written_through(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "d/", 0755);
	tw_file(a, "d/f", 0644, "inner");
	tw_symlink(a, "d", f->victim);
	tw_file(a, "d/x", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_ERROR, "d/x");
	assert_true(S_ISLNK(rel_lmode(f, "d")));
}

/* A file entry over a symlink replaces the link; the target is untouched. */
static void test_file_over_symlink_replaces_link(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "abs", f->victim_x);
	tw_symlink(a, "rel", "../victim/x");
	tw_file(a, "abs", 0777, "pwned-abs");
	tw_file(a, "rel", 04777, "pwned-rel");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_true(S_ISREG(rel_lmode(f, "abs")));
	assert_true(S_ISREG(rel_lmode(f, "rel")));
	assert_rel_content(f, "abs", "pwned-abs");
	assert_rel_content(f, "rel", "pwned-rel");
	assert_int_equal(rel_lmode(f, "rel") & 07777, 04777);
}

static void test_device_over_symlink_replaces_link(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "fifo", f->victim_x);
	tw_node(a, "fifo", AE_IFIFO, 0666, 0, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_true(S_ISFIFO(rel_lmode(f, "fifo")));
	assert_int_equal(rel_lmode(f, "fifo") & 07777, 0666);
}

static void test_hardlink_dotdot_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_hardlink(a, "h", "../victim/x");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "../victim/x");
	assert_false(rel_exists(f, "h"));
}

static void test_hardlink_absolute_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_hardlink(a, "h", f->victim_x);
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "absolute");
	assert_false(rel_exists(f, "h"));
}

static void test_hardlink_through_symlink_dir_stays_in_root(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "s", f->victim);
	tw_hardlink(a, "h", "s/x");
	tw_file(a, "h", 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_ENOTFOUND, "s/x");
	assert_false(rel_exists(f, "h"));
}

/* A hardlink to a symlink links the symlink itself; writing the name again
 * replaces the link and never reaches the symlink's target. */
static void test_hardlink_to_escaping_symlink_links_the_link(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "s", f->victim_x);
	tw_hardlink(a, "h", "s");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	struct stat s1, s2;
	char *ps = rootpath(f, "s"), *ph = rootpath(f, "h");
	assert_int_equal(lstat(ps, &s1), 0);
	assert_int_equal(lstat(ph, &s2), 0);
	assert_true(S_ISLNK(s2.st_mode));
	assert_int_equal(s1.st_ino, s2.st_ino);

	a = tw_open(f);
	tw_file(a, "h", 0644, "pwned");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_content(ph, "pwned");
	assert_true(S_ISLNK(lmode(ps)));
	free(ps);
	free(ph);
}

static void test_hardlink_to_directory_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "d/", 0755);
	tw_hardlink(a, "h", "d");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "directory");
	assert_false(rel_exists(f, "h"));
}

static void test_hardlink_to_root_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_hardlink(a, "h", "./");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "root");
}

/* A directory entry over a symlink to the victim replaces the symlink: its
 * mode and owner never reach the victim. */
static void test_chmod_via_symlink_does_not_touch_target(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "link", f->victim);
	tw_symlink(a, "flink", "../victim/x");
	struct archive_entry *e = tw_entry("link/", AE_IFDIR, 0777);
	archive_entry_set_uid(e, 1234);
	tw_put(a, e, NULL, 0);
	e = tw_entry("flink", AE_IFREG, 06777);
	archive_entry_set_uid(e, 1234);
	archive_entry_set_size(e, 0);
	tw_put(a, e, NULL, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_true(S_ISDIR(rel_lmode(f, "link")));
	assert_int_equal(rel_lmode(f, "link") & 07777, 0777);
	assert_true(S_ISREG(rel_lmode(f, "flink")));
}

static void test_whiteout_dotdot_rejected(void **state)
{
	fixture *f = *state;
	const char *names[] = {"a/.wh..", "a/.wh...", "../.wh.victim", ".wh.", NULL};
	for (int i = 0; names[i]; i++) {
		struct archive *a = tw_open(f);
		tw_dir(a, "a/", 0755);
		tw_whiteout(a, names[i]);
		tw_close(a);
		ib_error *err = NULL;
		int r = unpack(f, &err);
		if (r != IB_EUNSAFE)
			fail_msg("%s: got %d (%s)", names[i], r, ib_error_msg(err));
		ib_error_free(&err);
		assert_victim_intact(f);
		assert_true(S_ISDIR(rel_lmode(f, "a")));
	}
}

static void test_whiteout_through_symlink_stays_in_root(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "s", f->tmp);
	tw_whiteout(a, "s/.wh.victim");
	tw_dir(a, "victim/", 0755);
	tw_file(a, "victim/x", 0644, "in root");
	tw_symlink(a, "r", "..");
	tw_whiteout(a, "r/.wh.victim");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	/* "r" resolves to the root itself: its victim is the in-root one */
	assert_false(rel_exists(f, "victim"));
	assert_true(S_ISLNK(rel_lmode(f, "s")));
}

static void test_whiteout_of_escaping_symlink_removes_only_link(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "s", f->victim);
	tw_close(a);
	unpack_ok(f, NULL);
	a = tw_open(f);
	tw_whiteout(a, ".wh.s");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_victim_intact(f);
	assert_rel_listing(f, "", "");
}

static void test_overlay_whiteout_through_symlink_stays_in_root(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "s", f->victim);
	tw_whiteout(a, "s/.wh.x");
	tw_close(a);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.whiteouts = IB_WHITEOUT_OVERLAY;
	ib_error *err = NULL;
	expect_error(unpack_opts(f, &o, NULL, &err), &err, IB_ERROR, "s/.wh.x");
	assert_victim_intact(f);
}

static void test_opaque_through_symlink_rejected(void **state)
{
	fixture *f = *state;
	const char *targets[] = {NULL, "../victim", NULL};
	targets[0] = f->victim;
	for (int mode = 0; mode < 2; mode++) {
		for (int i = 0; targets[i]; i++) {
			struct archive *a = tw_open(f);
			tw_symlink(a, "s", targets[i]);
			tw_dir(a, "victim/", 0755);
			tw_file(a, "victim/x", 0644, "in root");
			tw_whiteout(a, "s/.wh..wh..opq");
			tw_close(a);
			ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
			o.whiteouts = mode ? IB_WHITEOUT_OVERLAY : IB_WHITEOUT_APPLY;
			ib_error *err = NULL;
			expect_error(unpack_opts(f, &o, NULL, &err), &err, IB_EUNSAFE, "symlink");
			assert_victim_intact(f);
			assert_rel_content(f, "victim/x", "in root");
			char *v = rootpath(f, "victim");
			assert_int_equal(lgetxattr(v, "trusted.overlay.opaque", NULL, 0), -1);
			free(v);
		}
	}
}

static void test_nondir_root_entry_rejected(void **state)
{
	fixture *f = *state;
	/* (libarchive's reader takes a regular "./" for a directory) */
	struct archive *a = tw_open(f);
	tw_file(a, ".", 0644, "pwned");
	tw_close(a);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EUNSAFE, "root");
	assert_victim_intact(f);

	a = tw_open(f);
	tw_symlink(a, "./", f->victim);
	tw_close(a);
	expect_error(unpack(f, &err), &err, IB_EUNSAFE, "root");
	assert_victim_intact(f);

	a = tw_open(f);
	tw_file(a, "x", 0644, "x");
	tw_hardlink(a, ".", "x");
	tw_close(a);
	expect_error(unpack(f, &err), &err, IB_EUNSAFE, "root");
	assert_victim_intact(f);
	assert_true(S_ISDIR(lmode(f->root)));
	assert_int_equal(lmode(f->root) & 07777, 0755);
}

static void test_device_major_out_of_range_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_node(a, "dev", AE_IFCHR, 0666, 0x1000, 1);
	tw_close(a);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EUNSAFE, "out-of-range");
	assert_false(rel_exists(f, "dev"));
	assert_victim_intact(f);
}

static void test_device_minor_out_of_range_rejected(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_node(a, "blk", AE_IFBLK, 0666, 8, 0x100000);
	tw_close(a);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EUNSAFE, "out-of-range");
	assert_false(rel_exists(f, "blk"));
	assert_victim_intact(f);
}

static char *long_dotdot_name(void)
{
	ib_buf b = IB_BUF_INIT;
	for (int i = 0; i < 40; i++)
		ib_buf_append(&b, "dir0/", 5);
	for (int i = 0; i < 41; i++)
		ib_buf_append(&b, "../", 3);
	ib_buf_append(&b, "victim/x", 8);
	return ib_buf_steal(&b, NULL);
}

static void test_pax_long_name_dotdot_rejected(void **state)
{
	fixture *f = *state;
	char *name = long_dotdot_name();
	assert_true(strlen(name) > 255); /* needs a pax "path" record */
	struct archive *a = tw_open(f);
	tw_file(a, name, 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "..");
	assert_rel_listing(f, "", "");
	free(name);
}

static void test_gnu_long_name_dotdot_rejected(void **state)
{
	fixture *f = *state;
	char *name = long_dotdot_name();
	struct archive *a = tw_open_ext(f, FMT_GNU, FILT_NONE);
	tw_file(a, name, 0644, "pwned");
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "..");
	assert_rel_listing(f, "", "");
	free(name);
}

static void test_gnu_long_link_dotdot_rejected(void **state)
{
	fixture *f = *state;
	char *name = long_dotdot_name();
	struct archive *a = tw_open_ext(f, FMT_GNU, FILT_NONE);
	tw_hardlink(a, "h", name);
	tw_close(a);
	unpack_refused(f, IB_EUNSAFE, "hardlink");
	assert_rel_listing(f, "", "");
	free(name);
}

/* =================== legitimate layers =================== */

static void test_regular_file_content_mode_mtime(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("etc/motd", AE_IFREG, 0640);
	archive_entry_set_mtime(e, 1234567890, 500);
	archive_entry_set_uid(e, 1000);
	archive_entry_set_gid(e, 2000);
	archive_entry_set_size(e, 6);
	tw_put(a, e, "hello\n", 6);
	tw_close(a);
	unpack_ok(f, NULL);
	assert_rel_content(f, "etc/motd", "hello\n");
	struct stat st;
	char *p = rootpath(f, "etc/motd");
	assert_int_equal(lstat(p, &st), 0);
	free(p);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_mtim.tv_sec, 1234567890);
	assert_int_equal(st.st_mtim.tv_nsec, 500);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_gid, 2000);
	/* the implicit parent */
	assert_int_equal(rel_lmode(f, "etc") & 07777, 0755);
}

static void test_same_owner_off_keeps_our_ids(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("f", AE_IFREG, 0644);
	archive_entry_set_uid(e, 1000);
	archive_entry_set_size(e, 0);
	tw_put(a, e, NULL, 0);
	tw_close(a);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.same_owner = false;
	unpack_ok(f, &o);
	struct stat st;
	char *p = rootpath(f, "f");
	assert_int_equal(lstat(p, &st), 0);
	free(p);
	assert_int_equal(st.st_uid, geteuid());
}

static void test_directory_mode_and_mtime_set_after_contents(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("ro/", AE_IFDIR, 0555);
	archive_entry_set_mtime(e, 1000000000, 0);
	tw_put(a, e, NULL, 0);
	e = tw_entry("ro/sub/", AE_IFDIR, 0750);
	archive_entry_set_mtime(e, 1100000000, 0);
	tw_put(a, e, NULL, 0);
	tw_file(a, "ro/sub/f", 0644, "x");
	tw_file(a, "ro/g", 0644, "y");
	tw_close(a);
	unpack_ok(f, NULL);
	struct stat st;
	char *p = rootpath(f, "ro");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0555);
	assert_int_equal(st.st_mtim.tv_sec, 1000000000);
	free(p);
	p = rootpath(f, "ro/sub");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_mtim.tv_sec, 1100000000);
	free(p);
	assert_rel_content(f, "ro/sub/f", "x");
}

static void test_root_entry_metadata_applied(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "./", 0711);
	tw_file(a, "./a", 0644, "a");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_int_equal(lmode(f->root) & 07777, 0711);
	assert_rel_content(f, "a", "a");
}

static void test_names_normalised(void **state)
{
	fixture *f = *state;
	/* The pax writer needs a UTF-8 locale to record a UTF-8 name; the
	 * reader must give us the bytes whatever our own locale is. */
	locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	assert_non_null(utf8);
	locale_t old = uselocale(utf8);
	struct archive *a = tw_open(f);
	tw_file(a, "./a", 0644, "1");
	tw_file(a, "././b//c", 0644, "2");
	tw_file(a, "d/./e", 0644, "3");
	tw_file(a, "caf\xc3\xa9", 0644, "4");
	tw_close(a);
	uselocale(old);
	freelocale(utf8);
	unpack_ok(f, NULL);
	assert_rel_content(f, "a", "1");
	assert_rel_content(f, "b/c", "2");
	assert_rel_content(f, "d/e", "3");
	assert_rel_content(f, "caf\xc3\xa9", "4");
}

static void test_symlink_target_kept_verbatim(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_symlink(a, "abs", "/etc/passwd");
	tw_symlink(a, "rel", "../../x/./y");
	struct archive_entry *e = tw_entry("owned", AE_IFLNK, 0777);
	archive_entry_set_symlink(e, "target");
	archive_entry_set_uid(e, 42);
	archive_entry_set_mtime(e, 1111111111, 0);
	tw_put(a, e, NULL, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	char buf[256];
	char *p = rootpath(f, "abs");
	ssize_t n = readlink(p, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "/etc/passwd");
	free(p);
	p = rootpath(f, "rel");
	n = readlink(p, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "../../x/./y");
	free(p);
	struct stat st;
	p = rootpath(f, "owned");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_uid, 42);
	assert_int_equal(st.st_mtim.tv_sec, 1111111111);
	free(p);
}

static void test_hardlink_same_inode(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "bin/busybox", 0755, "BB");
	tw_hardlink(a, "bin/sh", "bin/busybox");
	tw_hardlink(a, "usr/bin/ls", "./bin/busybox");
	tw_hardlink(a, "bin/busybox", "bin/busybox"); /* a link to itself is a no-op */
	tw_close(a);
	unpack_ok(f, NULL);
	struct stat s1, s2, s3;
	char *p1 = rootpath(f, "bin/busybox"), *p2 = rootpath(f, "bin/sh");
	char *p3 = rootpath(f, "usr/bin/ls");
	assert_int_equal(lstat(p1, &s1), 0);
	assert_int_equal(lstat(p2, &s2), 0);
	assert_int_equal(lstat(p3, &s3), 0);
	assert_int_equal(s1.st_ino, s2.st_ino);
	assert_int_equal(s1.st_ino, s3.st_ino);
	assert_int_equal(s1.st_nlink, 3);
	assert_content(p2, "BB");
	free(p1);
	free(p2);
	free(p3);
}

static void test_hardlink_to_missing_target_fails(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_hardlink(a, "h", "nope");
	tw_close(a);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_ENOTFOUND, "nope");
	assert_false(rel_exists(f, "h"));
}

static void test_fifo_created(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_node(a, "run/fifo", AE_IFIFO, 0620, 0, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	assert_true(S_ISFIFO(rel_lmode(f, "run/fifo")));
	assert_int_equal(rel_lmode(f, "run/fifo") & 07777, 0620);
}

static void test_char_and_block_devices_created(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_node(a, "dev/null", AE_IFCHR, 0666, 1, 3);
	tw_node(a, "dev/big", AE_IFCHR, 0600, 0xfff, 0xfffff);
	tw_node(a, "dev/loop0", AE_IFBLK, 0660, 7, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	struct stat st;
	char *p = rootpath(f, "dev/null");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0666);
	assert_int_equal(major(st.st_rdev), 1);
	assert_int_equal(minor(st.st_rdev), 3);
	free(p);
	p = rootpath(f, "dev/big");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(major(st.st_rdev), 0xfff);
	assert_int_equal(minor(st.st_rdev), 0xfffff);
	free(p);
	p = rootpath(f, "dev/loop0");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISBLK(st.st_mode));
	assert_int_equal(major(st.st_rdev), 7);
	free(p);
}

static void test_setuid_setgid_sticky_kept(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("usr/bin/su", AE_IFREG, 04755);
	archive_entry_set_uid(e, 1000);
	archive_entry_set_gid(e, 1000);
	archive_entry_set_size(e, 2);
	tw_put(a, e, "su", 2);
	e = tw_entry("usr/bin/wall", AE_IFREG, 02755);
	archive_entry_set_gid(e, 5);
	archive_entry_set_size(e, 0);
	tw_put(a, e, NULL, 0);
	e = tw_entry("shared/", AE_IFDIR, 02775);
	archive_entry_set_gid(e, 100);
	tw_put(a, e, NULL, 0);
	tw_dir(a, "tmp/", 01777);
	tw_close(a);
	unpack_ok(f, NULL);
	assert_int_equal(rel_lmode(f, "usr/bin/su") & 07777, 04755);
	assert_int_equal(rel_lmode(f, "usr/bin/wall") & 07777, 02755);
	assert_int_equal(rel_lmode(f, "shared") & 07777, 02775);
	assert_int_equal(rel_lmode(f, "tmp") & 07777, 01777);
}

static void test_xattrs_restored_overlay_ones_dropped(void **state)
{
	fixture *f = *state;
	/* VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_BIND_SERVICE */
	static const unsigned char cap[20] = {0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0};
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("bin/ping", AE_IFREG, 0755);
	archive_entry_set_uid(e, 1000);
	archive_entry_set_size(e, 4);
	archive_entry_xattr_add_entry(e, "user.foo", "bar", 3);
	archive_entry_xattr_add_entry(e, "security.capability", cap, sizeof(cap));
	archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
	tw_put(a, e, "ping", 4);
	e = tw_entry("d/", AE_IFDIR, 0755);
	archive_entry_xattr_add_entry(e, "user.dir", "1", 1);
	archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
	tw_put(a, e, NULL, 0);
	e = tw_entry("d/fifo", AE_IFIFO, 0644);
	archive_entry_xattr_add_entry(e, "trusted.x", "z", 1);
	tw_put(a, e, NULL, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	char buf[64];
	char *p = rootpath(f, "bin/ping");
	assert_int_equal(lgetxattr(p, "user.foo", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "bar", 3);
	assert_int_equal(lgetxattr(p, "security.capability", buf, sizeof(buf)), sizeof(cap));
	assert_memory_equal(buf, cap, sizeof(cap));
	assert_int_equal(lgetxattr(p, "trusted.overlay.opaque", buf, sizeof(buf)), -1);
	free(p);
	p = rootpath(f, "d");
	assert_int_equal(lgetxattr(p, "user.dir", buf, sizeof(buf)), 1);
	assert_int_equal(lgetxattr(p, "trusted.overlay.opaque", buf, sizeof(buf)), -1);
	free(p);
	p = rootpath(f, "d/fifo");
	assert_int_equal(lgetxattr(p, "trusted.x", buf, sizeof(buf)), 1);
	free(p);
}

static void test_whiteout_apply_deletes(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "a/b/c", 0644, "c");
	tw_file(a, "f", 0644, "f");
	tw_symlink(a, "l", "a");
	tw_file(a, "keep", 0644, "k");
	tw_close(a);
	unpack_ok(f, NULL);
	a = tw_open(f);
	tw_whiteout(a, ".wh.a");
	tw_whiteout(a, "./.wh.f");
	tw_whiteout(a, ".wh.l");
	tw_whiteout(a, ".wh.missing");
	tw_whiteout(a, "nodir/.wh.x");
	tw_whiteout(a, ".wh..wh.plnk");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_rel_listing(f, "", "keep");
	assert_victim_intact(f);
}

/* Files come grouped by directory and share its lookup; a whiteout or a
 * directory entry in between starts afresh, so the next file lands in the
 * directory that is there now. */
static void test_files_after_their_dir_was_replaced(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "a/b/f1", 0644, "1");
	tw_whiteout(a, "a/.wh.b");
	tw_file(a, "a/b/f2", 0644, "2");
	tw_file(a, "a/b/f3", 0644, "3");
	tw_dir(a, "a/b/", 0700);
	tw_file(a, "a/b/f4", 0644, "4");
	tw_file(a, "a/b/f4", 0600, "four");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_rel_listing(f, "a/b", "f2,f3,f4");
	assert_rel_content(f, "a/b/f4", "four");
	assert_int_equal(rel_lmode(f, "a/b/f4") & 07777, 0600);
}

/* A new file takes a setgid parent's group: chowned to the entry's own
 * group even when that is ours. */
static void test_file_in_setgid_dir_gets_the_entrys_group(void **state)
{
	fixture *f = *state;
	char *sg = rootpath(f, "sg");
	assert_int_equal(mkdir(sg, 0755), 0);
	assert_int_equal(chown(sg, 0, 50), 0);
	assert_int_equal(chmod(sg, 02775), 0);
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("sg/ours", AE_IFREG, 0644);
	archive_entry_set_uid(e, geteuid());
	archive_entry_set_gid(e, getegid());
	archive_entry_set_size(e, 0);
	tw_put(a, e, NULL, 0);
	tw_file(a, "plain/ours", 0644, "x");
	tw_close(a);
	unpack_ok(f, NULL);
	struct stat st;
	char *p = rootpath(f, "sg/ours");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_gid, getegid());
	free(p);
	p = rootpath(f, "plain/ours");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_gid, 0);
	free(p);
	free(sg);
}

/* A sparse file ending in a hole gets its full size. */
static void test_sparse_file_trailing_hole(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("sparse", AE_IFREG, 0644);
	archive_entry_set_size(e, 1 << 20);
	archive_entry_sparse_add_entry(e, 0, 5);
	tw_put(a, e, "hello", 5);
	tw_close(a);
	unpack_ok(f, NULL);
	struct stat st;
	char *p = rootpath(f, "sparse");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	char buf[8] = "";
	assert_int_equal(pread(fd, buf, 5, 0), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(pread(fd, buf, 1, (1 << 20) - 1), 1);
	assert_int_equal(buf[0], 0);
	close(fd);
	free(p);
}

static void test_opaque_apply_clears_lower_keeps_same_layer(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "d/old1", 0644, "o");
	tw_file(a, "d/olddir/x", 0644, "o");
	tw_file(a, "d/new", 0644, "lower");
	tw_file(a, "other", 0644, "o");
	tw_close(a);
	unpack_ok(f, NULL);
	a = tw_open(f);
	tw_dir(a, "d/", 0755);
	tw_file(a, "d/new", 0644, "upper");
	tw_whiteout(a, "d/.wh..wh..opq");
	tw_file(a, "d/new2", 0644, "upper2");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_rel_listing(f, "d", "new,new2");
	assert_rel_content(f, "d/new", "upper");
	assert_rel_listing(f, "", "d,other");
	assert_victim_intact(f);
}

static void test_overlay_whiteout_is_char_device(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_whiteout(a, ".wh.foo");
	tw_whiteout(a, "deep/dir/.wh.bar");
	tw_close(a);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.whiteouts = IB_WHITEOUT_OVERLAY;
	unpack_ok(f, &o);
	const char *names[] = {"foo", "deep/dir/bar"};
	for (int i = 0; i < 2; i++) {
		struct stat st;
		char *p = rootpath(f, names[i]);
		assert_int_equal(lstat(p, &st), 0);
		assert_true(S_ISCHR(st.st_mode));
		assert_int_equal(st.st_rdev, makedev(0, 0));
		assert_int_equal(st.st_uid, 0);
		assert_int_equal(st.st_gid, 0);
		free(p);
	}
	assert_false(rel_exists(f, ".wh.foo"));
}

static void test_overlay_opaque_sets_xattr(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_dir(a, "d/", 0755);
	tw_file(a, "d/kept", 0644, "k");
	tw_whiteout(a, "d/.wh..wh..opq");
	tw_whiteout(a, "e/.wh..wh..opq"); /* before its directory entry */
	tw_dir(a, "e/", 0700);
	tw_whiteout(a, ".wh..wh..opq");
	tw_close(a);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.whiteouts = IB_WHITEOUT_OVERLAY;
	unpack_ok(f, &o);
	char buf[8];
	const char *dirs[] = {"d", "e", ""};
	for (int i = 0; i < 3; i++) {
		char *p = rootpath(f, dirs[i]);
		assert_int_equal(lgetxattr(p, "trusted.overlay.opaque", buf, sizeof(buf)), 1);
		assert_int_equal(buf[0], 'y');
		free(p);
	}
	assert_rel_listing(f, "d", "kept");
	assert_int_equal(rel_lmode(f, "e") & 07777, 0700);
}

static void test_type_change_replaces_entry(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "p/deep/x", 0644, "x");
	tw_file(a, "q", 0644, "q");
	tw_symlink(a, "r", "p");
	tw_node(a, "s", AE_IFIFO, 0644, 0, 0);
	tw_close(a);
	unpack_ok(f, NULL);
	a = tw_open(f);
	tw_file(a, "p", 0600, "now a file");
	tw_dir(a, "q/", 0755);
	tw_file(a, "q/inner", 0644, "i");
	tw_dir(a, "r/", 0755);
	tw_symlink(a, "s", "q");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_true(S_ISREG(rel_lmode(f, "p")));
	assert_rel_content(f, "p", "now a file");
	assert_true(S_ISDIR(rel_lmode(f, "q")));
	assert_rel_content(f, "q/inner", "i");
	assert_true(S_ISDIR(rel_lmode(f, "r")));
	assert_rel_listing(f, "r", "");
	assert_true(S_ISLNK(rel_lmode(f, "s")));
}

static void test_existing_dir_keeps_contents(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	tw_file(a, "d/a", 0644, "a");
	tw_close(a);
	unpack_ok(f, NULL);
	a = tw_open(f);
	struct archive_entry *e = tw_entry("d/", AE_IFDIR, 0700);
	archive_entry_set_uid(e, 7);
	tw_put(a, e, NULL, 0);
	tw_file(a, "d/b", 0644, "b");
	tw_close(a);
	unpack_ok(f, NULL);
	assert_rel_listing(f, "d", "a,b");
	assert_int_equal(rel_lmode(f, "d") & 07777, 0700);
	struct stat st;
	char *p = rootpath(f, "d");
	assert_int_equal(lstat(p, &st), 0);
	assert_int_equal(st.st_uid, 7);
	free(p);
}

static void write_sample(const fixture *f, int filt)
{
	struct archive *a = tw_open_ext(f, FMT_PAX, filt);
	tw_dir(a, "etc/", 0755);
	tw_file(a, "etc/hostname", 0644, "box\n");
	tw_symlink(a, "etc/mtab", "/proc/mounts");
	tw_close(a);
}

static void assert_sample(const fixture *f)
{
	assert_rel_content(f, "etc/hostname", "box\n");
	assert_true(S_ISLNK(rel_lmode(f, "etc/mtab")));
}

static void test_gzip_input(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_GZIP);
	char *head = tu_read_file(f->tar);
	assert_int_equal((unsigned char)head[0], 0x1f);
	assert_int_equal((unsigned char)head[1], 0x8b);
	free(head);
	unpack_ok(f, NULL);
	assert_sample(f);
}

static void test_zstd_input(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_ZSTD);
	unpack_ok(f, NULL);
	assert_sample(f);
}

static void test_stats_counted(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_GZIP);
	ib_unpack_stats st;
	ib_error *err = NULL;
	assert_int_equal(unpack_opts(f, NULL, &st, &err), 0);
	assert_int_equal(st.entries, 3);
	/* three 512-byte headers at least, plus data */
	assert_true(st.bytes >= 3 * 512 + 4);
}

static void test_unpack_archive_from_reader(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_ZSTD);
	struct archive *a = archive_read_new();
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_filename(a, f->tar, 4096), ARCHIVE_OK);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	ib_error *err = NULL;
	if (ib_unpack_archive(a, f->root, &o, NULL, &err) < 0)
		fail_msg("unpack: %s", ib_error_msg(err));
	archive_read_free(a);
	assert_sample(f);
}

static void test_size_cap_exceeded(void **state)
{
	fixture *f = *state;
	size_t n = 1 << 20;
	char *big = xmalloc(n + 1);
	memset(big, 'z', n);
	big[n] = '\0';
	struct archive *a = tw_open_ext(f, FMT_PAX, FILT_GZIP); /* compresses to ~1 KiB */
	tw_file(a, "big", 0644, big);
	tw_close(a);
	free(big);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.max_bytes = 64 * 1024;
	ib_error *err = NULL;
	expect_error(unpack_opts(f, &o, NULL, &err), &err, IB_ETOOLARGE, "cap");
	o.max_bytes = 2 << 20;
	unpack_ok(f, &o);
}

/* A sparse entry declaring a huge size counts with that size. */
static void test_size_cap_counts_declared_size(void **state)
{
	fixture *f = *state;
	struct archive *a = tw_open(f);
	struct archive_entry *e = tw_entry("sparse", AE_IFREG, 0644);
	archive_entry_set_size(e, 1 << 20);
	archive_entry_sparse_add_entry(e, 0, 1);
	tw_put(a, e, "s", 1);
	tw_close(a);
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.max_bytes = 64 * 1024;
	ib_error *err = NULL;
	expect_error(unpack_opts(f, &o, NULL, &err), &err, IB_ETOOLARGE, "cap");
}

static void test_truncated_archive_invalid(void **state)
{
	fixture *f = *state;
	char *data = xmalloc(100001);
	memset(data, 'd', 100000);
	data[100000] = '\0';
	struct archive *a = tw_open(f);
	tw_file(a, "a", 0644, "a");
	tw_file(a, "b", 0644, data);
	tw_close(a);
	free(data);
	assert_int_equal(truncate(f->tar, 50000), 0);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EINVALID, "not a valid tar archive");
}

static void test_garbage_stream_invalid(void **state)
{
	fixture *f = *state;
	int fd = open(f->tar, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(write(fd, "this is not a tar archive!\n", 27), 27);
	close(fd);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EINVALID, "not a valid tar archive");
}

static void test_truncated_gzip_invalid(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_GZIP);
	struct stat st;
	assert_int_equal(stat(f->tar, &st), 0);
	assert_int_equal(truncate(f->tar, st.st_size / 2), 0);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EINVALID, "not a valid tar archive");
}

/* ---- gzip: imgbuild's 1 MiB members by libdeflate, others by zlib ---- */

#define BIG_LEN (4u << 20)

/* f->tar: a plain tar of ~4 MiB (d/big, compressible but not trivially,
 * and d/small); *big (caller frees) is d/big's content */
static void write_big_tar(const fixture *f, char **big)
{
	char *b = xmalloc(BIG_LEN + 1);
	uint32_t x = 1;
	for (size_t i = 0; i < BIG_LEN; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = "abcdefgh\n"[(x >> 16) % 9];
	}
	b[BIG_LEN] = '\0';
	struct archive *a = tw_open(f);
	tw_dir(a, "d/", 0755);
	tw_file(a, "d/big", 0644, b);
	tw_file(a, "d/small", 0600, "small\n");
	tw_close(a);
	*big = b;
}

static int sink_fd(const void *data, size_t len, void *payload)
{
	return write(*(int *)payload, data, len) == (ssize_t)len ? 0 : -1;
}

/* Append bytes [from, from+len) of the file in to out: as imgbuild's
 * compressor writes them (1 MiB members), or as one zlib gzip member. */
static void gzip_part(const char *in, int out, size_t from, size_t len, bool ours)
{
	char *all = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	assert_int_equal(ib_read_file(in, 64 << 20, &all, &n, &e), 0);
	assert_true(from + len <= n);
	if (ours) {
		ib_compressor *c = NULL;
		assert_int_equal(ib_compressor_new(&c, IB_COMP_GZIP, 1, 0, sink_fd, &out, &e), 0);
		assert_int_equal(ib_compressor_write(c, all + from, len, &e), 0);
		assert_int_equal(ib_compressor_finish(c, &e), 0);
		ib_compressor_free(c);
	} else {
		z_stream z;
		memset(&z, 0, sizeof(z));
		assert_int_equal(
		    deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
		uLong bound = deflateBound(&z, (uLong)len);
		unsigned char *buf = xmalloc(bound);
		z.next_in = (unsigned char *)all + from;
		z.avail_in = (uInt)len;
		z.next_out = buf;
		z.avail_out = (uInt)bound;
		assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
		assert_int_equal(write(out, buf, z.total_out), (ssize_t)z.total_out);
		deflateEnd(&z);
		free(buf);
	}
	free(all);
}

static size_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (size_t)st.st_size;
}

/* f->tar becomes gzip of the plain tar: its first `ours` bytes by
 * imgbuild's compressor, the rest as one zlib member */
static void gzip_tar(const fixture *f, size_t ours)
{
	char *plain = xasprintf("%s.plain", f->tar);
	assert_int_equal(rename(f->tar, plain), 0);
	size_t n = file_size(plain);
	if (ours > n)
		ours = n;
	int out = open(f->tar, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(out >= 0);
	if (ours > 0)
		gzip_part(plain, out, 0, ours, true);
	if (ours < n)
		gzip_part(plain, out, ours, n - ours, false);
	close(out);
	unlink(plain);
	free(plain);
}

static void assert_big_tree(const fixture *f, const char *big)
{
	char *p = rootpath(f, "d/big");
	char *got = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	assert_int_equal(ib_read_file(p, 2 * BIG_LEN, &got, &n, &e), 0);
	assert_int_equal(n, BIG_LEN);
	assert_true(memcmp(got, big, BIG_LEN) == 0);
	free(got);
	free(p);
	assert_rel_content(f, "d/small", "small\n");
}

static void test_gzip_own_members_by_libdeflate(void **state)
{
	fixture *f = *state;
	char *big;
	write_big_tar(f, &big);
	size_t plain = file_size(f->tar);
	gzip_tar(f, SIZE_MAX);
	ib_unpack_stats st;
	ib_error *err = NULL;
	assert_int_equal(unpack_opts(f, NULL, &st, &err), 0);
	assert_big_tree(f, big);
	/* every member went through libdeflate */
	assert_int_equal(st.gzip_members,
			 (plain + IB_COMPRESS_GZIP_BLOCK - 1) / IB_COMPRESS_GZIP_BLOCK);
	assert_true(st.bytes >= BIG_LEN);
	/* the cap on decompressed bytes still holds */
	ib_unpack_options o = IB_UNPACK_OPTIONS_INIT;
	o.max_bytes = 1u << 20;
	tu_rm_rf(f->root);
	assert_int_equal(mkdir(f->root, 0755), 0);
	expect_error(unpack_opts(f, &o, NULL, &err), &err, IB_ETOOLARGE, "cap");
	free(big);
}

static void test_gzip_one_large_member_by_zlib(void **state)
{
	fixture *f = *state;
	char *big;
	write_big_tar(f, &big);
	gzip_tar(f, 0);
	ib_unpack_stats st;
	ib_error *err = NULL;
	assert_int_equal(unpack_opts(f, NULL, &st, &err), 0);
	assert_big_tree(f, big);
	assert_int_equal(st.gzip_members, 0);
	free(big);
}

static void test_gzip_own_members_then_a_large_one(void **state)
{
	fixture *f = *state;
	char *big;
	write_big_tar(f, &big);
	/* two 1 MiB members, then one member of the remaining ~2 MiB */
	gzip_tar(f, 2u << 20);
	ib_unpack_stats st;
	ib_error *err = NULL;
	assert_int_equal(unpack_opts(f, NULL, &st, &err), 0);
	assert_big_tree(f, big);
	assert_int_equal(st.gzip_members, 2);
	free(big);
}

static void test_gzip_own_members_truncated_invalid(void **state)
{
	fixture *f = *state;
	char *big;
	write_big_tar(f, &big);
	gzip_tar(f, SIZE_MAX);
	assert_int_equal(truncate(f->tar, (off_t)(file_size(f->tar) * 3 / 4)), 0);
	ib_error *err = NULL;
	expect_error(unpack(f, &err), &err, IB_EINVALID, "not a valid tar archive");
	free(big);
}

static void test_empty_stream_is_empty_layer(void **state)
{
	fixture *f = *state;
	int fd = open(f->tar, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	close(fd);
	ib_unpack_stats st;
	ib_error *err = NULL;
	assert_int_equal(unpack_opts(f, NULL, &st, &err), 0);
	assert_int_equal(st.entries, 0);
	assert_rel_listing(f, "", "");
}

static void test_missing_destination_fails(void **state)
{
	fixture *f = *state;
	write_sample(f, FILT_NONE);
	int fd = open(f->tar, O_RDONLY);
	assert_true(fd >= 0);
	char *dest = rootpath(f, "nope");
	ib_error *err = NULL;
	expect_error(ib_unpack_fd(fd, dest, NULL, NULL, &err), &err, IB_ENOTFOUND, "nope");
	close(fd);
	free(dest);
}

/* ---- ib_unpack_from_files ---- */

#define FF_EPOCH 1700000000

static void ff_write(const char *path, const char *data, mode_t mode, time_t mtime)
{
	tu_write_text(path, data);
	assert_int_equal(chmod(path, mode), 0);
	tu_set_mtime(path, mtime, 0);
}

/* Every entry below dir, "path type mode uid:gid mtime nlink size content
 * xattrs" sorted, the way a test compares two trees. */
static void ff_listing(const char *dir, const char *rel, ib_buf *out)
{
	char *p = ib_path_join(dir, rel);
	DIR *d = opendir(p);
	assert_non_null(d);
	char **names = NULL;
	size_t n = 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		names = xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	for (size_t i = 0; i < n; i++)
		for (size_t k = i + 1; k < n; k++)
			if (strcmp(names[k], names[i]) < 0) {
				char *t = names[i];
				names[i] = names[k];
				names[k] = t;
			}
	for (size_t i = 0; i < n; i++) {
		char *r = *rel ? xasprintf("%s/%s", rel, names[i]) : xstrdup(names[i]);
		char *full = ib_path_join(dir, r);
		struct stat st;
		assert_int_equal(lstat(full, &st), 0);
		ib_buf_appendf(out, "%s %o %u:%u %lld %lu %lld", r, st.st_mode, st.st_uid,
			       st.st_gid, (long long)st.st_mtime, (unsigned long)st.st_nlink,
			       S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size);
		char buf[256] = "";
		if (S_ISLNK(st.st_mode))
			assert_true(readlink(full, buf, sizeof(buf) - 1) > 0);
		if (S_ISREG(st.st_mode)) {
			int fd = open(full, O_RDONLY);
			assert_true(fd >= 0);
			assert_true(read(fd, buf, sizeof(buf) - 1) >= 0);
			close(fd);
		}
		char xv[64] = "";
		ssize_t xn = lgetxattr(full, "user.ff", xv, sizeof(xv) - 1);
		ib_buf_appendf(out, " [%s] [%s]\n", buf, xn >= 0 ? xv : "");
		if (S_ISDIR(st.st_mode))
			ff_listing(dir, r, out);
		free(full);
		free(r);
		free(names[i]);
	}
	free(names);
	free(p);
}

/* A copy of TMP/src under opt/x: a setuid file hardlinked deeper down, a
 * symlink, a fifo, an xattr, mtimes before and after the epoch, and a
 * directory made without a source. */
typedef struct ff_case {
	char *src;
	ib_unpack_dir dirs[2];
	ib_unpack_file files[8];
	char *hosts[8];
	size_t n;
} ff_case;

static void ff_case_init(ff_case *c, const fixture *f)
{
	memset(c, 0, sizeof(*c));
	c->src = xasprintf("%s/src", f->tmp);
	char *p;
	assert_int_equal(mkdir(c->src, 0750), 0);
	p = xasprintf("%s/e", c->src);
	assert_int_equal(mkdir(p, 0711), 0);
	free(p);
	p = xasprintf("%s/a", c->src);
	ff_write(p, "a\n", 04750, 2000);
	char *hard = xasprintf("%s/e/hard", c->src);
	assert_int_equal(link(p, hard), 0);
	free(hard);
	free(p);
	p = xasprintf("%s/e/sym", c->src);
	assert_int_equal(symlink("../a", p), 0);
	free(p);
	p = xasprintf("%s/fifo", c->src);
	assert_int_equal(mkfifo(p, 0640), 0);
	tu_set_mtime(p, 3000, 0);
	free(p);
	p = xasprintf("%s/x", c->src);
	ff_write(p, "x\n", 0644, FF_EPOCH + 500);
	assert_int_equal(lsetxattr(p, "user.ff", "v1", 2, 0), 0);
	free(p);
	p = xasprintf("%s/e", c->src);
	tu_set_mtime(p, FF_EPOCH + 100, 0);
	free(p);
	tu_set_mtime(c->src, 1000, 0);

	c->dirs[0] = (ib_unpack_dir){"opt", 0755, 0, 0};
	c->dirs[1] = (ib_unpack_dir){"opt/x", 0700, 7, 8};
	static const char *const rel[] = {"", "a", "e", "e/hard", "e/sym", "fifo", "x"};
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		ib_unpack_file *u = &c->files[c->n];
		c->hosts[c->n] = ib_path_join(c->src, rel[i]);
		u->path = *rel[i] ? xasprintf("opt/x/%s", rel[i]) : xstrdup("opt/x");
		u->host = c->hosts[c->n];
		assert_int_equal(lstat(u->host, &u->st), 0);
		u->mode = u->st.st_mode & 07777;
		u->uid = 7;
		u->gid = 8;
		c->n++;
	}
	ib_unpack_file *nd = &c->files[c->n++];
	nd->path = xstrdup("opt/x/new");
	nd->mode = 0705;
	nd->uid = 7;
	nd->gid = 8;
}

static void ff_case_free(ff_case *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free((char *)c->files[i].path);
		free(c->hosts[i]);
	}
	free(c->src);
}

static void test_from_files_same_tree_as_the_layer_tar(void **state)
{
	fixture *f = *state;
	ff_case c;
	ff_case_init(&c, f);
	ib_error *err = NULL;

	/* the layer writer's tar of the same entries, unpacked as a lower dir */
	char *sroot = xasprintf("%s/store", f->tmp);
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, sroot, &err), 0);
	ib_layer_options lo = {.compression = IB_COMP_NONE, .source_date_epoch = FF_EPOCH};
	ib_layer_writer *w = NULL;
	assert_int_equal(ib_layer_writer_new(&w, s, &lo, &err), 0);
	for (size_t i = 0; i < 2; i++)
		assert_int_equal(ib_layer_writer_add_dir(w, c.dirs[i].path, c.dirs[i].mode,
							 c.dirs[i].uid, c.dirs[i].gid, &err),
				 0);
	for (size_t i = 0; i < c.n; i++) {
		const ib_unpack_file *u = &c.files[i];
		ib_layer_override ov = {.uid = u->uid, .gid = u->gid, .mode = (int32_t)u->mode};
		if (u->host)
			assert_int_equal(ib_layer_writer_add_path(w, u->path, u->host, &ov, &err),
					 0);
		else
			assert_int_equal(
			    ib_layer_writer_add_dir(w, u->path, u->mode, u->uid, u->gid, &err), 0);
	}
	ib_layer_result res = {0};
	assert_int_equal(ib_layer_writer_finish(w, &res, &err), 0);
	int fd = -1;
	int64_t size = 0;
	assert_int_equal(ib_store_blob_open(s, res.digest, &fd, &size, &err), 0);
	ib_unpack_options uo = IB_UNPACK_OPTIONS_INIT;
	uo.whiteouts = IB_WHITEOUT_OVERLAY;
	assert_int_equal(ib_unpack_fd(fd, f->root, &uo, NULL, &err), 0);
	close(fd);

	char *direct = xasprintf("%s/direct", f->tmp);
	if (ib_unpack_from_files(direct, c.dirs, 2, c.files, c.n, FF_EPOCH, &err) < 0)
		fail_msg("%s", ib_error_msg(err));

	ib_buf want = IB_BUF_INIT, got = IB_BUF_INIT;
	ff_listing(f->root, "", &want);
	ff_listing(direct, "", &got);
	assert_string_equal(got.data, want.data);
	/* and what the listing shows is what the entries asked for */
	assert_non_null(strstr(got.data, "opt/x/a 104750 7:8 2000 2 2 [a\n]"));
	assert_non_null(strstr(got.data, "opt/x/x 100644 7:8 1700000000 1 2 [x\n] [v1]"));
	assert_non_null(strstr(got.data, "opt/x/e 40711 7:8 1700000000"));
	assert_non_null(strstr(got.data, "opt/x/new 40705 7:8 1700000000"));
	assert_non_null(strstr(got.data, "opt/x/fifo 10640 7:8 3000"));
	assert_non_null(strstr(got.data, "opt 40755 0:0 1700000000"));
	ib_buf_free(&want);
	ib_buf_free(&got);
	free(direct);
	ib_store_free(s);
	free(sroot);
	ff_case_free(&c);
}

static void test_from_files_reuses_an_earlier_layer_file(void **state)
{
	fixture *f = *state;
	ff_case c;
	ff_case_init(&c, f);
	ib_error *err = NULL;
	char *old = xasprintf("%s/old-x", f->tmp);
	ff_write(old, "x\n", 0644, FF_EPOCH);
	c.files[6].reuse = old; /* opt/x/x */
	char *missing = xasprintf("%s/gone", f->tmp);
	c.files[1].reuse = missing; /* opt/x/a: cannot be linked, so copied */
	char *direct = xasprintf("%s/direct", f->tmp);
	if (ib_unpack_from_files(direct, c.dirs, 2, c.files, c.n, FF_EPOCH, &err) < 0)
		fail_msg("%s", ib_error_msg(err));
	struct stat a, b;
	char *p = xasprintf("%s/opt/x/x", direct);
	assert_int_equal(stat(p, &a), 0);
	assert_int_equal(stat(old, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	free(p);
	p = xasprintf("%s/opt/x/a", direct);
	assert_int_equal(lstat(p, &a), 0);
	assert_int_equal(a.st_mode, S_IFREG | 04750);
	assert_int_equal(a.st_nlink, 2); /* linked with e/hard, as in the tar */
	free(p);
	free(direct);
	free(missing);
	free(old);
	ff_case_free(&c);
}

static void test_from_files_refuses_a_path_below_a_symlink(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char *link_host = xasprintf("%s/l", f->tmp);
	assert_int_equal(symlink(f->victim, link_host), 0);
	ib_unpack_file files[2] = {
	    {.path = "x", .host = link_host, .mode = 0777},
	    {.path = "x/y", .host = NULL, .mode = 0755},
	};
	assert_int_equal(lstat(link_host, &files[0].st), 0);
	char *direct = xasprintf("%s/direct", f->tmp);
	expect_error(ib_unpack_from_files(direct, NULL, 0, files, 2, FF_EPOCH, &err), &err,
		     IB_EUNSAFE, "non-directory");
	assert_false(ib_file_exists(direct));
	char *y = xasprintf("%s/y", f->victim);
	assert_false(ib_file_exists(y));
	/* a path written twice is refused too */
	files[1].path = "x";
	expect_error(ib_unpack_from_files(direct, NULL, 0, files, 2, FF_EPOCH, &err), &err,
		     IB_EUNSAFE, "twice");
	free(y);
	free(direct);
	free(link_host);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_dotdot_name_rejected),
	    T(test_dotdot_inner_component_rejected),
	    T(test_dotdot_trailing_component_rejected),
	    T(test_absolute_name_rejected),
	    T(test_empty_name_rejected),
	    T(test_path_over_path_max_rejected),
	    cmocka_unit_test(test_check_path_limits),
	    T(test_from_files_same_tree_as_the_layer_tar),
	    T(test_from_files_reuses_an_earlier_layer_file),
	    T(test_from_files_refuses_a_path_below_a_symlink),
	    T(test_symlink_escape_absolute_write_fails),
	    T(test_symlink_escape_absolute_resolves_in_root),
	    T(test_symlink_escape_relative_write_fails),
	    T(test_symlink_escape_relative_resolves_in_root),
	    T(test_symlink_chain_escape_write_fails),
	    T(test_symlink_chain_dotdot_clamped_to_root),
	    T(test_symlink_to_dir_new_file_through_it_fails),
	    T(test_dir_replaced_by_symlink_then_written_through),
	    T(test_file_over_symlink_replaces_link),
	    T(test_device_over_symlink_replaces_link),
	    T(test_hardlink_dotdot_rejected),
	    T(test_hardlink_absolute_rejected),
	    T(test_hardlink_through_symlink_dir_stays_in_root),
	    T(test_hardlink_to_escaping_symlink_links_the_link),
	    T(test_hardlink_to_directory_rejected),
	    T(test_hardlink_to_root_rejected),
	    T(test_chmod_via_symlink_does_not_touch_target),
	    T(test_whiteout_dotdot_rejected),
	    T(test_whiteout_through_symlink_stays_in_root),
	    T(test_whiteout_of_escaping_symlink_removes_only_link),
	    T(test_overlay_whiteout_through_symlink_stays_in_root),
	    T(test_opaque_through_symlink_rejected),
	    T(test_nondir_root_entry_rejected),
	    T(test_device_major_out_of_range_rejected),
	    T(test_device_minor_out_of_range_rejected),
	    T(test_pax_long_name_dotdot_rejected),
	    T(test_gnu_long_name_dotdot_rejected),
	    T(test_gnu_long_link_dotdot_rejected),
	    T(test_regular_file_content_mode_mtime),
	    T(test_same_owner_off_keeps_our_ids),
	    T(test_directory_mode_and_mtime_set_after_contents),
	    T(test_root_entry_metadata_applied),
	    T(test_names_normalised),
	    T(test_symlink_target_kept_verbatim),
	    T(test_hardlink_same_inode),
	    T(test_hardlink_to_missing_target_fails),
	    T(test_fifo_created),
	    T(test_char_and_block_devices_created),
	    T(test_setuid_setgid_sticky_kept),
	    T(test_xattrs_restored_overlay_ones_dropped),
	    T(test_whiteout_apply_deletes),
	    T(test_opaque_apply_clears_lower_keeps_same_layer),
	    T(test_overlay_whiteout_is_char_device),
	    T(test_overlay_opaque_sets_xattr),
	    T(test_type_change_replaces_entry),
	    T(test_existing_dir_keeps_contents),
	    T(test_gzip_input),
	    T(test_zstd_input),
	    T(test_stats_counted),
	    T(test_unpack_archive_from_reader),
	    T(test_size_cap_exceeded),
	    T(test_size_cap_counts_declared_size),
	    T(test_truncated_archive_invalid),
	    T(test_garbage_stream_invalid),
	    T(test_truncated_gzip_invalid),
	    T(test_gzip_own_members_by_libdeflate),
	    T(test_files_after_their_dir_was_replaced),
	    T(test_file_in_setgid_dir_gets_the_entrys_group),
	    T(test_sparse_file_trailing_hole),
	    T(test_gzip_one_large_member_by_zlib),
	    T(test_gzip_own_members_then_a_large_one),
	    T(test_gzip_own_members_truncated_invalid),
	    T(test_empty_stream_is_empty_layer),
	    T(test_missing_destination_fails),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
