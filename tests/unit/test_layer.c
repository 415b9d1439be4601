/* Unit tests for layer.c: reproducible tar layers from host trees, overlay
 * upper dirs, synthetic entries and imported tars.  Some cases need root
 * (chown, mknod, trusted.* xattrs); CI runs them as root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "layer.h"
#include "layer_jobs.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

#define EPOCH 1000000000LL

struct fx {
	char *tmp;
	char *root;
	ib_store *store;
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	f->tmp = tu_tmpdir();
	f->root = ib_path_join(f->tmp, "store");
	f->store = tu_store_open(f->root);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	ib_store_free(f->store);
	tu_rm_rf(f->tmp);
	free(f->tmp);
	free(f->root);
	free(f);
	return 0;
}

/* ---- helpers: building trees ---- */

static char *fx_path(struct fx *f, const char *rel)
{
	return ib_path_join(f->tmp, rel);
}

static void mkdir_at(struct fx *f, const char *rel, mode_t mode)
{
	cleanup_free char *p = fx_path(f, rel);
	assert_int_equal(mkdir(p, mode), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static void write_at(struct fx *f, const char *rel, const void *data, size_t len, mode_t mode)
{
	cleanup_free char *p = fx_path(f, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
	assert_true(fd >= 0);
	assert_int_equal(ib_write_all(fd, data, len, NULL), 0);
	close(fd);
	assert_int_equal(chmod(p, mode), 0);
}

static void set_mtime(struct fx *f, const char *rel, time_t sec, long nsec)
{
	cleanup_free char *p = fx_path(f, rel);
	tu_set_mtime(p, sec, nsec);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
	unsigned char *d = xmalloc(n ? n : 1);
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		d[i] = (unsigned char)("abcdefgh\n"[x % 9]);
	}
	return d;
}

/* A small tree: dirs, files (one bigger than a compression block and
 * than the copy chunk), a symlink.  `order` changes creation order. */
static void make_tree(struct fx *f, const char *top, int order, time_t mtime)
{
	static const char *const dirs[] = {"", "/etc", "/usr", "/usr/bin"};
	static const char *const files[] = {"/etc/hosts", "/usr/bin/tool", "/readme", "/usr/big"};
	mkdir_at(f, top, 0755);
	static const size_t dir_order[2][3] = {{1, 2, 3}, {2, 3, 1}};
	for (size_t k = 0; k < 3; k++) {
		size_t i = dir_order[order ? 1 : 0][k];
		cleanup_free char *d = xasprintf("%s%s", top, dirs[i]);
		mkdir_at(f, d, 0755);
	}
	for (size_t k = 0; k < 4; k++) {
		size_t i = order ? 3 - k : k;
		cleanup_free char *p = xasprintf("%s%s", top, files[i]);
		size_t n = i == 3 ? 700000 : 100 + i;
		unsigned char *data = pattern(n, (unsigned)i);
		write_at(f, p, data, n, i == 1 ? 0755 : 0644);
		free(data);
	}
	cleanup_free char *ln = xasprintf("%s/usr/bin/alias", top);
	cleanup_free char *lp = fx_path(f, ln);
	assert_int_equal(symlink("tool", lp), 0);
	/* mtimes last: creating children touches the directories. */
	const char *all[] = {"",	 "/etc",       "/usr",
			     "/usr/bin", "/etc/hosts", "/usr/bin/tool",
			     "/readme",	 "/usr/big",   "/usr/bin/alias"};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		cleanup_free char *p = xasprintf("%s%s", top, all[i]);
		set_mtime(f, p, mtime + (time_t)i * 7, 123456789);
	}
}

/* ---- helpers: reading a layer back ---- */

/* Read the committed blob, check its digest and size, decompress it and
 * check the diff_id.  Returns the tar bytes. */
static unsigned char *layer_tar(struct fx *f, const ib_layer_result *res, ib_compression c,
				size_t *len)
{
	cleanup_free char *path = ib_store_blob_path(f->store, res->digest);
	cleanup_free char *blob = NULL;
	size_t blen = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_read_file(path, 1u << 30, &blob, &blen, &err), 0);
	assert_int_equal((int64_t)blen, res->size);
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, blob, blen);
	assert_string_equal(d, res->digest);
	unsigned char *tar = tu_decompress(c, (unsigned char *)blob, blen, len);
	ib_digest_buffer(d, tar, *len);
	assert_string_equal(d, res->diff_id);
	return tar;
}

struct tent {
	char *path;
	mode_t type;
	mode_t perm;
	int64_t uid, gid, mtime;
	int64_t size;
	char *uname, *gname, *hardlink, *symlink;
	dev_t rdev;
	char *xattrs; /* "name=value;" in archive order */
	unsigned char *data;
	bool atime_set, ctime_set;
};

struct tlist {
	struct tent *v;
	size_t n;
};

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static struct tlist read_tar(const unsigned char *tar, size_t len)
{
	struct tlist l = {0};
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, tar, len), ARCHIVE_OK);
	struct archive_entry *e;
	int r;
	while ((r = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
		assert_true(r >= ARCHIVE_WARN);
		l.v = xrealloc(l.v, (l.n + 1) * sizeof(*l.v));
		struct tent *t = &l.v[l.n++];
		memset(t, 0, sizeof(*t));
		t->path = xstrdup(archive_entry_pathname(e));
		t->type = archive_entry_filetype(e);
		t->perm = archive_entry_perm(e);
		t->uid = archive_entry_uid(e);
		t->gid = archive_entry_gid(e);
		t->mtime = archive_entry_mtime(e);
		t->size = archive_entry_size(e);
		t->uname = dup_or_null(archive_entry_uname(e));
		t->gname = dup_or_null(archive_entry_gname(e));
		t->hardlink = dup_or_null(archive_entry_hardlink(e));
		t->symlink = dup_or_null(archive_entry_symlink(e));
		t->rdev = archive_entry_rdev(e);
		t->atime_set = archive_entry_atime_is_set(e);
		t->ctime_set = archive_entry_ctime_is_set(e);
		ib_buf xb = IB_BUF_INIT;
		archive_entry_xattr_reset(e);
		const char *name;
		const void *val;
		size_t vs;
		while (archive_entry_xattr_next(e, &name, &val, &vs) == ARCHIVE_OK) {
			ib_buf_append(&xb, name, strlen(name));
			ib_buf_append(&xb, "=", 1);
			ib_buf_append(&xb, val, vs);
			ib_buf_append(&xb, ";", 1);
		}
		t->xattrs = ib_buf_steal(&xb, NULL);
		if (t->size > 0) {
			t->data = xmalloc((size_t)t->size);
			assert_int_equal(archive_read_data(a, t->data, (size_t)t->size), t->size);
		}
	}
	archive_read_free(a);
	return l;
}

static void free_tlist(struct tlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		struct tent *t = &l->v[i];
		free(t->path);
		free(t->uname);
		free(t->gname);
		free(t->hardlink);
		free(t->symlink);
		free(t->xattrs);
		free(t->data);
	}
	free(l->v);
}

static const struct tent *find(const struct tlist *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].path, path) == 0)
			return &l->v[i];
	return NULL;
}

static ib_layer_options opts_with(ib_compression c, int threads)
{
	ib_layer_options o = IB_LAYER_OPTIONS_INIT;
	o.compression = c;
	o.source_date_epoch = EPOCH;
	o.threads = threads;
	return o;
}

static void tree_layer(struct fx *f, const char *top, const ib_layer_options *o,
		       ib_layer_result *res)
{
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	cleanup_free char *host = fx_path(f, top);
	assert_int_equal(ib_layer_writer_new(&w, f->store, o, &err), 0);
	assert_int_equal(ib_layer_writer_add_tree(w, "", host, NULL, &err), 0);
	int r = ib_layer_writer_finish(w, res, &err);
	if (r < 0)
		fail_msg("finish: %s", ib_error_msg(err));
}

/* ---- tests ---- */

/* The entries of layer res, compressed with c. */
static struct tlist layer_list(struct fx *f, const ib_layer_result *res, ib_compression c)
{
	size_t len;
	unsigned char *tar = layer_tar(f, res, c, &len);
	struct tlist l = read_tar(tar, len);
	free(tar);
	return l;
}

static void test_same_tree_same_digest_despite_mtimes_and_order(void **state)
{
	struct fx *f = *state;
	time_t now = time(NULL);
	make_tree(f, "a", 0, now);
	make_tree(f, "b", 1, now + 86400);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result ra, rb;
	tree_layer(f, "a", &o, &ra);
	tree_layer(f, "b", &o, &rb);
	assert_string_equal(ra.digest, rb.digest);
	assert_string_equal(ra.diff_id, rb.diff_id);
	assert_int_equal(ra.entries, 8);

	/* The epoch does matter. */
	o.source_date_epoch = EPOCH + 1;
	ib_layer_result rc;
	tree_layer(f, "a", &o, &rc);
	assert_string_not_equal(ra.diff_id, rc.diff_id);
}

static void test_thread_count_does_not_change_digest(void **state)
{
	struct fx *f = *state;
	make_tree(f, "t", 0, time(NULL));
	ib_layer_result r1, r2, r0;
	ib_layer_options o1 = opts_with(IB_COMP_GZIP, 1), o2 = opts_with(IB_COMP_GZIP, 2),
			 o0 = opts_with(IB_COMP_GZIP, 0);
	tree_layer(f, "t", &o1, &r1);
	tree_layer(f, "t", &o2, &r2);
	tree_layer(f, "t", &o0, &r0);
	assert_string_equal(r1.digest, r2.digest);
	assert_string_equal(r1.digest, r0.digest);
	assert_int_equal(r1.size, r2.size);

	ib_layer_options z1 = opts_with(IB_COMP_ZSTD, 1), z2 = opts_with(IB_COMP_ZSTD, 2);
	tree_layer(f, "t", &z1, &r1);
	tree_layer(f, "t", &z2, &r2);
	assert_string_equal(r1.digest, r2.digest);
	assert_string_equal(r1.diff_id, r0.diff_id); /* same tar, other compression */
}

static void test_gzip_layer_inflates_to_tar_with_diff_id(void **state)
{
	struct fx *f = *state;
	make_tree(f, "t", 0, 100);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result res;
	tree_layer(f, "t", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_GZIP, &len); /* checks digests */
	assert_int_equal(len % 512, 0);
	struct tlist l = read_tar(tar, len);
	assert_int_equal(l.n, res.entries);
	const struct tent *big = find(&l, "usr/big");
	assert_non_null(big);
	unsigned char *want = pattern(700000, 3);
	assert_int_equal(big->size, 700000);
	assert_memory_equal(big->data, want, 700000);
	free(want);
	const struct tent *ln = find(&l, "usr/bin/alias");
	assert_non_null(ln);
	assert_int_equal(ln->type, AE_IFLNK);
	assert_string_equal(ln->symlink, "tool");
	free_tlist(&l);
	free(tar);
}

static void test_zstd_layer_round_trip(void **state)
{
	struct fx *f = *state;
	make_tree(f, "t", 0, 100);
	ib_layer_options o = opts_with(IB_COMP_ZSTD, 2);
	ib_layer_result res;
	tree_layer(f, "t", &o, &res);
	struct tlist l = layer_list(f, &res, IB_COMP_ZSTD);
	const struct tent *t = find(&l, "usr/bin/tool");
	assert_non_null(t);
	unsigned char *want = pattern(101, 1);
	assert_int_equal(t->size, 101);
	assert_memory_equal(t->data, want, 101);
	assert_int_equal(t->perm, 0755);
	free(want);
	free_tlist(&l);
}

static void test_uncompressed_layer_digest_is_diff_id(void **state)
{
	struct fx *f = *state;
	make_tree(f, "t", 0, 100);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "t", &o, &res);
	assert_string_equal(res.digest, res.diff_id);
	size_t len;
	free(layer_tar(f, &res, IB_COMP_NONE, &len));
}

static void test_entries_sorted_parents_first(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "s", 0755);
	const char *dirs[] = {"s/b", "s/a", "s/a/z", "s/a-b"};
	for (size_t i = 0; i < 4; i++)
		mkdir_at(f, dirs[i], 0755);
	const char *files[] = {"s/a.c", "s/a/z/f", "s/a/y", "s/B", "s/a-b/x"};
	for (size_t i = 0; i < 5; i++)
		write_at(f, files[i], "x", 1, 0644);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 1);
	ib_layer_result res;
	tree_layer(f, "s", &o, &res);
	struct tlist l = layer_list(f, &res, IB_COMP_GZIP);
	const char *want[] = {"B", "a", "a/y", "a/z", "a/z/f", "a-b", "a-b/x", "a.c", "b"};
	assert_int_equal(l.n, 9);
	for (size_t i = 0; i < l.n; i++) {
		/* libarchive hands back directory names with their '/'. */
		size_t n = strlen(l.v[i].path);
		if (l.v[i].type == AE_IFDIR) {
			assert_true(n > 0 && l.v[i].path[n - 1] == '/');
			l.v[i].path[n - 1] = '\0';
		}
		assert_string_equal(l.v[i].path, want[i]);
	}
	free_tlist(&l);
}

static void test_numeric_ids_and_empty_names(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "o", 0755);
	write_at(f, "o/file", "data", 4, 0640);
	cleanup_free char *p = fx_path(f, "o/file");
	assert_int_equal(lchown(p, 1234, 5678), 0); /* root */
	write_at(f, "o/root", "r", 1, 0644);
	cleanup_free char *rp = fx_path(f, "o/root");
	assert_int_equal(lchown(rp, 0, 0), 0);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "o", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	struct tlist l = read_tar(tar, len);
	const struct tent *t = find(&l, "file");
	assert_non_null(t);
	assert_int_equal(t->uid, 1234);
	assert_int_equal(t->gid, 5678);
	for (size_t i = 0; i < l.n; i++) {
		assert_true(l.v[i].uname == NULL || l.v[i].uname[0] == '\0');
		assert_true(l.v[i].gname == NULL || l.v[i].gname[0] == '\0');
		assert_false(l.v[i].atime_set);
		assert_false(l.v[i].ctime_set);
	}
	/* ustar uname/gname fields (offsets 265 and 297, 32 bytes) are zero. */
	static const char zeros[64];
	assert_memory_equal(tar + 265, zeros, 64);
	assert_null(memmem(tar, len, "atime=", 6));
	assert_null(memmem(tar, len, "ctime=", 6));
	free_tlist(&l);
	free(tar);
}

static void test_mtime_clamped_to_epoch(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "m", 0755);
	write_at(f, "m/new", "n", 1, 0644);
	write_at(f, "m/old", "o", 1, 0644);
	set_mtime(f, "m/new", EPOCH + 5000, 999);
	set_mtime(f, "m/old", 12345, 678900000);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "m", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	struct tlist l = read_tar(tar, len);
	assert_int_equal(find(&l, "new")->mtime, EPOCH);
	assert_int_equal(find(&l, "old")->mtime, 12345);
	/* No sub-second times: no PAX mtime record at all. */
	assert_null(memmem(tar, len, "mtime=", 6));
	free_tlist(&l);
	free(tar);
}

static void test_hardlink_second_entry_is_link(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "h", 0755);
	mkdir_at(f, "h/d", 0755);
	write_at(f, "h/d/orig", "linked content", 14, 0644);
	cleanup_free char *orig = fx_path(f, "h/d/orig");
	cleanup_free char *l1 = fx_path(f, "h/b");
	cleanup_free char *l2 = fx_path(f, "h/z");
	assert_int_equal(link(orig, l1), 0);
	assert_int_equal(link(orig, l2), 0);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result res;
	tree_layer(f, "h", &o, &res);
	struct tlist l = layer_list(f, &res, IB_COMP_GZIP);
	const struct tent *b = find(&l, "b"), *d = find(&l, "d/orig"), *z = find(&l, "z");
	assert_non_null(b);
	assert_non_null(d);
	assert_non_null(z);
	/* "b" sorts first: it carries the data, the others point at it. */
	assert_null(b->hardlink);
	assert_int_equal(b->size, 14);
	assert_memory_equal(b->data, "linked content", 14);
	assert_string_equal(d->hardlink, "b");
	assert_int_equal(d->size, 0);
	assert_string_equal(z->hardlink, "b");
	free_tlist(&l);
}

static void test_upper_dir_whiteouts_and_opaque(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "up", 0755);
	mkdir_at(f, "up/etc", 0755);
	mkdir_at(f, "up/opq", 0700);
	mkdir_at(f, "up/proc", 0555);
	mkdir_at(f, "up/skip", 0755);
	write_at(f, "up/skip/inner", "i", 1, 0644);
	write_at(f, "up/opq/new", "new", 3, 0644);
	write_at(f, "up/etc/resolv.conf", "x", 1, 0644);
	cleanup_free char *wh = fx_path(f, "up/etc/gone");
	cleanup_free char *wh2 = fx_path(f, "up/gone-top");
	assert_int_equal(mknod(wh, S_IFCHR | 0, makedev(0, 0)), 0);
	assert_int_equal(mknod(wh2, S_IFCHR | 0, makedev(0, 0)), 0);
	cleanup_free char *opq = fx_path(f, "up/opq");
	assert_int_equal(lsetxattr(opq, "trusted.overlay.opaque", "y", 1, 0), 0);
	assert_int_equal(lsetxattr(opq, "trusted.overlay.origin", "zz", 2, 0), 0);
	assert_int_equal(lsetxattr(opq, "user.keep", "k", 1, 0), 0);
	/* Not opaque: the value must be "y". */
	cleanup_free char *etc = fx_path(f, "up/etc");
	assert_int_equal(lsetxattr(etc, "trusted.overlay.opaque", "n", 1, 0), 0);

	char *skip[] = {"/proc", "skip", "etc/resolv.conf", NULL};
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result res;
	ib_error *err = NULL;
	cleanup_free char *up = fx_path(f, "up");
	assert_int_equal(ib_layer_from_upper(f->store, up, skip, &o, &res, &err), 0);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_GZIP, &len);
	struct tlist l = read_tar(tar, len);
	const char *want[] = {".wh.gone-top",	  "etc/",   "etc/.wh.gone", "opq/",
			      "opq/.wh..wh..opq", "opq/new"};
	assert_int_equal(l.n, 6);
	for (size_t i = 0; i < l.n; i++)
		assert_string_equal(l.v[i].path, want[i]);
	const struct tent *w = find(&l, "etc/.wh.gone");
	assert_int_equal(w->type, AE_IFREG);
	assert_int_equal(w->size, 0);
	assert_int_equal(w->mtime, EPOCH);
	const struct tent *od = find(&l, "opq/");
	assert_int_equal(od->perm, 0700);
	assert_string_equal(od->xattrs, "user.keep=k;");
	assert_string_equal(find(&l, "etc/")->xattrs, "");
	assert_null(memmem(tar, len, "trusted.overlay", 15));
	free_tlist(&l);
	free(tar);
}

static void test_xattrs_filtered_and_sorted(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "x", 0755);
	write_at(f, "x/bin",
		 "\x7f"
		 "ELF",
		 4, 0755);
	cleanup_free char *p = fx_path(f, "x/bin");
	/* vfs_cap_data v2: magic 0x02000000, cap_net_bind_service (10). */
	static const unsigned char cap[20] = {0, 0, 0, 2, 0, 4, 0, 0, 0, 0,
					      0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(lsetxattr(p, "user.zeta", "z", 1, 0), 0);
	assert_int_equal(lsetxattr(p, "user.alpha", "a", 1, 0), 0);
	assert_int_equal(lsetxattr(p, "security.capability", cap, sizeof(cap), 0), 0);
	assert_int_equal(lsetxattr(p, "trusted.other", "t", 1, 0), 0);
	assert_int_equal(lsetxattr(p, "user.overlay.impure", "y", 1, 0), 0);
	assert_int_equal(lsetxattr(p, "user.mid", "m", 1, 0), 0);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "x", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	/* SCHILY.xattr records in name order, and nothing else about xattrs. */
	const char *names[] = {"SCHILY.xattr.security.capability=", "SCHILY.xattr.user.alpha=",
			       "SCHILY.xattr.user.mid=", "SCHILY.xattr.user.zeta="};
	const unsigned char *prev = tar;
	for (size_t i = 0; i < 4; i++) {
		const unsigned char *at = memmem(tar, len, names[i], strlen(names[i]));
		assert_non_null(at);
		assert_true(at > prev);
		prev = at;
	}
	assert_null(memmem(tar, len, "LIBARCHIVE.xattr", 16));
	assert_null(memmem(tar, len, "trusted.other", 13));
	assert_null(memmem(tar, len, "user.overlay", 12));
	struct tlist l = read_tar(tar, len);
	const struct tent *t = find(&l, "bin");
	assert_non_null(t);
	assert_non_null(strstr(t->xattrs, "user.alpha=a;"));
	free_tlist(&l);
	free(tar);
}

static void test_long_and_utf8_names_round_trip(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "n", 0755);
	char comp[241];
	memset(comp, 'l', 240);
	comp[240] = '\0';
	cleanup_free char *d1 = xasprintf("n/%s", comp);
	mkdir_at(f, d1, 0755);
	cleanup_free char *longf = xasprintf("n/%s/%s", comp, comp); /* 481 bytes */
	write_at(f, longf, "L", 1, 0644);
	write_at(f, "n/caf\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac", "u", 1, 0644);
	write_at(f, "n/bad-\xff\xfe", "b", 1, 0644);
	cleanup_free char *lnk = fx_path(f, "n/longlink");
	cleanup_free char *target = xasprintf("%s/%s/\xc3\xa9", comp, comp);
	assert_int_equal(symlink(target, lnk), 0);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result res;
	tree_layer(f, "n", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_GZIP, &len);
	struct tlist l = read_tar(tar, len);
	cleanup_free char *want_long = xasprintf("%s/%s", comp, comp);
	const struct tent *t = find(&l, want_long);
	assert_non_null(t);
	assert_int_equal(t->size, 1);
	assert_non_null(find(&l, "caf\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac"));
	assert_non_null(find(&l, "bad-\xff\xfe"));
	const struct tent *s = find(&l, "longlink");
	assert_non_null(s);
	assert_string_equal(s->symlink, target);
	/* The raw UTF-8 bytes are in the archive (not transliterated). */
	assert_non_null(memmem(tar, len, "caf\xc3\xa9-", 6));
	free_tlist(&l);
	free(tar);
}

/* The process locale must not leak into the bytes (the CLI may well call
 * setlocale for its messages). */
static void test_output_independent_of_locale(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "loc", 0755);
	write_at(f, "loc/caf\xc3\xa9", "u", 1, 0644);
	char longname[160];
	memset(longname, 'q', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cleanup_free char *lp = xasprintf("loc/%s\xc3\xa9", longname);
	write_at(f, lp, "l", 1, 0644);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result in_c, in_utf8;
	tree_layer(f, "loc", &o, &in_c);
	if (setlocale(LC_ALL, "C.UTF-8") == NULL)
		skip();
	tree_layer(f, "loc", &o, &in_utf8);
	setlocale(LC_ALL, "C");
	assert_string_equal(in_c.diff_id, in_utf8.diff_id);
}

static size_t count_occurrences(const unsigned char *hay, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	const unsigned char *at = hay;
	while ((at = memmem(at, len - (size_t)(at - hay), needle, nl)) != NULL) {
		n++;
		at += nl;
	}
	return n;
}

/* GNU tar warns about every "hdrcharset" record: only a name that is not
 * valid UTF-8 may carry one. */
static void test_hdrcharset_only_for_invalid_utf8(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "hc", 0755);
	char longname[150];
	memset(longname, 'w', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cleanup_free char *p1 = xasprintf("hc/%s", longname);
	cleanup_free char *p2 = xasprintf("hc/%s\xc3\xa9", longname);
	write_at(f, p1, "1", 1, 0644);
	write_at(f, p2, "2", 1, 0644);
	write_at(f, "hc/cafe\xcc\x81", "3", 1, 0644); /* NFD stays NFD */
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "hc", &o, &res);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	assert_int_equal(count_occurrences(tar, len, "hdrcharset"), 0);
	assert_non_null(memmem(tar, len, "cafe\xcc\x81", 6));
	free(tar);

	write_at(f, "hc/bad\xff", "4", 1, 0644);
	tree_layer(f, "hc", &o, &res);
	tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	assert_int_equal(count_occurrences(tar, len, "hdrcharset=BINARY"), 1);
	struct tlist l = read_tar(tar, len);
	assert_non_null(find(&l, "bad\xff"));
	assert_non_null(find(&l, "cafe\xcc\x81"));
	free_tlist(&l);
	free(tar);
}

static void test_special_files_kept(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "sp", 0755);
	mkdir_at(f, "sp/tmp", 01777);
	write_at(f, "sp/suid", "s", 1, 04755);
	write_at(f, "sp/sgid", "g", 1, 02711);
	cleanup_free char *fifo = fx_path(f, "sp/fifo");
	cleanup_free char *chr = fx_path(f, "sp/null");
	cleanup_free char *blk = fx_path(f, "sp/blk");
	cleanup_free char *sock = fx_path(f, "sp/sock");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(mknod(chr, S_IFCHR | 0666, makedev(1, 3)), 0);
	assert_int_equal(mknod(blk, S_IFBLK | 0660, makedev(8, 1)), 0);
	assert_int_equal(mknod(sock, S_IFSOCK | 0600, 0), 0);
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	tree_layer(f, "sp", &o, &res);
	struct tlist l = layer_list(f, &res, IB_COMP_NONE);
	assert_int_equal(l.n, 6); /* no socket */
	assert_null(find(&l, "sock"));
	assert_int_equal(find(&l, "tmp/")->perm, 01777);
	assert_int_equal(find(&l, "suid")->perm, 04755);
	assert_int_equal(find(&l, "sgid")->perm, 02711);
	assert_int_equal(find(&l, "fifo")->type, AE_IFIFO);
	const struct tent *n = find(&l, "null");
	assert_int_equal(n->type, AE_IFCHR);
	assert_int_equal(major(n->rdev), 1);
	assert_int_equal(minor(n->rdev), 3);
	const struct tent *b = find(&l, "blk");
	assert_int_equal(b->type, AE_IFBLK);
	assert_int_equal(major(b->rdev), 8);
	free_tlist(&l);
}

static void test_synthetic_entries_and_opaque_first(void **state)
{
	struct fx *f = *state;
	write_at(f, "dash", "-", 1, 0644);
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_GZIP, 1);
	cleanup_free char *dash = fx_path(f, "dash");
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	assert_int_equal(ib_layer_writer_add_whiteout(w, "/a/b", &err), 0);
	assert_int_equal(ib_layer_writer_add_path(w, "a/-x", dash, NULL, &err), 0);
	assert_int_equal(ib_layer_writer_add_opaque(w, "a/", &err), 0);
	assert_int_equal(ib_layer_writer_add_dir(w, "./a", 0750, 12, 34, &err), 0);
	assert_int_equal(ib_layer_writer_add_whiteout(w, "top", &err), 0);
	assert_int_equal(ib_layer_writer_add_opaque(w, "", &err), 0);
	ib_layer_result res;
	assert_int_equal(ib_layer_writer_finish(w, &res, &err), 0);
	struct tlist l = layer_list(f, &res, IB_COMP_GZIP);
	const char *want[] = {".wh..wh..opq", ".wh.top", "a/", "a/.wh..wh..opq", "a/-x", "a/.wh.b"};
	assert_int_equal(l.n, 6);
	for (size_t i = 0; i < l.n; i++) {
		assert_string_equal(l.v[i].path, want[i]);
		assert_int_equal(l.v[i].mtime, EPOCH);
	}
	const struct tent *a = find(&l, "a/");
	assert_int_equal(a->type, AE_IFDIR);
	assert_int_equal(a->perm, 0750);
	assert_int_equal(a->uid, 12);
	assert_int_equal(a->gid, 34);
	free_tlist(&l);
}

static void test_override_owner_and_mode(void **state)
{
	struct fx *f = *state;
	mkdir_at(f, "ov", 0700);
	write_at(f, "ov/f", "f", 1, 0600);
	cleanup_free char *dir = fx_path(f, "ov");
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	ib_layer_override ov = {1000, -1, 0755};
	assert_int_equal(ib_layer_writer_add_tree(w, "/app/", dir, &ov, &err), 0);
	ib_layer_override ov2 = IB_LAYER_OVERRIDE_INIT;
	ov2.gid = 77;
	assert_int_equal(ib_layer_writer_add_path(w, "app", dir, &ov2, &err), 0);
	ib_layer_result res;
	assert_int_equal(ib_layer_writer_finish(w, &res, &err), 0);
	struct tlist l = layer_list(f, &res, IB_COMP_NONE);
	assert_int_equal(l.n, 2);
	const struct tent *app = find(&l, "app/"), *file = find(&l, "app/f");
	assert_non_null(app);
	assert_non_null(file);
	assert_int_equal(app->perm, 0700);
	assert_int_equal(app->gid, 77);
	assert_int_equal(file->perm, 0755);
	assert_int_equal(file->uid, 1000);
	assert_int_equal(file->gid, getegid());
	free_tlist(&l);
}

static void test_duplicate_path_last_added_wins(void **state)
{
	struct fx *f = *state;
	write_at(f, "one", "1", 1, 0644);
	write_at(f, "two", "22", 2, 0644);
	cleanup_free char *one = fx_path(f, "one");
	cleanup_free char *two = fx_path(f, "two");
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	assert_int_equal(ib_layer_writer_add_path(w, "f", one, NULL, &err), 0);
	assert_int_equal(ib_layer_writer_add_path(w, "f", two, NULL, &err), 0);
	ib_layer_result res;
	assert_int_equal(ib_layer_writer_finish(w, &res, &err), 0);
	assert_int_equal(res.entries, 1);
	struct tlist l = layer_list(f, &res, IB_COMP_NONE);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].size, 2);
	free_tlist(&l);
}

static void test_unsafe_and_empty_paths_rejected(void **state)
{
	struct fx *f = *state;
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	assert_int_equal(ib_layer_writer_add_dir(w, "a/../../x", 0755, 0, 0, &err), IB_EUNSAFE);
	ib_error_free(&err);
	assert_int_equal(ib_layer_writer_add_whiteout(w, "..", &err), IB_EUNSAFE);
	ib_error_free(&err);
	assert_int_equal(ib_layer_writer_add_path(w, "/./", f->tmp, NULL, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_layer_writer_add_tree(w, "x/..", f->tmp, NULL, &err), IB_EUNSAFE);
	ib_error_free(&err);
	cleanup_free char *missing = fx_path(f, "missing");
	assert_int_equal(ib_layer_writer_add_path(w, "m", missing, NULL, &err), IB_ENOTFOUND);
	ib_error_free(&err);
	ib_layer_writer_free(w);
}

static void test_empty_layer_is_1024_zero_bytes(void **state)
{
	struct fx *f = *state;
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	ib_layer_result res;
	assert_int_equal(ib_layer_writer_finish(w, &res, &err), 0);
	assert_int_equal(res.entries, 0);
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_GZIP, &len);
	static const unsigned char zeros[1024];
	assert_int_equal(len, 1024);
	assert_memory_equal(tar, zeros, 1024);
	char d[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d, zeros, 1024);
	assert_string_equal(res.diff_id, d);
	free(tar);
}

static void test_vanished_file_fails_and_stores_nothing(void **state)
{
	struct fx *f = *state;
	write_at(f, "gone", "g", 1, 0644);
	cleanup_free char *p = fx_path(f, "gone");
	ib_error *err = NULL;
	ib_layer_writer *w = NULL;
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	assert_int_equal(ib_layer_writer_new(&w, f->store, &o, &err), 0);
	assert_int_equal(ib_layer_writer_add_path(w, "gone", p, NULL, &err), 0);
	assert_int_equal(unlink(p), 0);
	ib_layer_result res;
	assert_true(ib_layer_writer_finish(w, &res, &err) < 0);
	assert_non_null(strstr(ib_error_msg(err), "gone"));
	ib_error_free(&err);
	cleanup_free char *blobs = ib_path_join(ib_store_layout_dir(f->store), "blobs/sha256");
	cleanup_free char *tmp = ib_path_join(ib_store_root(f->store), "tmp");
	const char *dirs[] = {blobs, tmp};
	for (size_t i = 0; i < 2; i++) {
		DIR *d = opendir(dirs[i]);
		if (d == NULL)
			continue;
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				fail_msg("left behind: %s/%s", dirs[i], de->d_name);
		closedir(d);
	}
}

/* ---- import ---- */

struct src_entry {
	const char *path;
	mode_t type;
	const char *data; /* regular: content; symlink: target */
	const char *hardlink;
};

/* Write a tar with libarchive into a file; returns an fd open for reading
 * at offset 0. */
static int make_input_tar(struct fx *f, const struct src_entry *es, size_t n, bool gzip)
{
	cleanup_free char *path = fx_path(f, "input.tar");
	struct archive *a = archive_write_new();
	/* gzip'ed inputs are GNU format, plain ones PAX: both get exercised. */
	if (gzip)
		archive_write_set_format_gnutar(a);
	else
		archive_write_set_format_pax(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_copy_pathname(e, es[i].path);
		archive_entry_set_filetype(e, es[i].type);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_uid(e, 42);
		archive_entry_set_gid(e, 43);
		archive_entry_copy_uname(e, "someone");
		archive_entry_copy_gname(e, "group");
		archive_entry_set_mtime(e, EPOCH + 99999, 5);
		archive_entry_set_atime(e, EPOCH + 99999, 5);
		size_t dl = 0;
		if (es[i].hardlink) {
			archive_entry_copy_hardlink(e, es[i].hardlink);
		} else if (es[i].type == AE_IFREG) {
			dl = strlen(es[i].data);
			archive_entry_set_size(e, (la_int64_t)dl);
		} else if (es[i].type == AE_IFLNK) {
			archive_entry_copy_symlink(e, es[i].data);
		}
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (dl)
			assert_int_equal(archive_write_data(a, es[i].data, dl), (la_ssize_t)dl);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void test_import_normalises_names_and_metadata(void **state)
{
	struct fx *f = *state;
	const struct src_entry es[] = {
	    {"./", AE_IFDIR, NULL, NULL},
	    {"/zz/", AE_IFDIR, NULL, NULL},
	    {"/zz/file", AE_IFREG, "hello", NULL},
	    {"./aa//b/./c", AE_IFREG, "world!", NULL},
	    {"./link", AE_IFLNK, "/etc/passwd", NULL},
	    {"hard", AE_IFREG, NULL, "/zz/file"},
	};
	int fd = make_input_tar(f, es, sizeof(es) / sizeof(es[0]), true);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result res;
	ib_error *err = NULL;
	int r = ib_layer_import(f->store, fd, &o, &res, &err);
	close(fd);
	if (r < 0)
		fail_msg("import: %s", ib_error_msg(err));
	assert_int_equal(res.entries, 5);
	struct tlist l = layer_list(f, &res, IB_COMP_GZIP);
	/* Order preserved (not sorted), root dropped, prefixes stripped. */
	const char *want[] = {"zz/", "zz/file", "aa/b/c", "link", "hard"};
	assert_int_equal(l.n, 5);
	for (size_t i = 0; i < l.n; i++) {
		assert_string_equal(l.v[i].path, want[i]);
		assert_int_equal(l.v[i].uid, 42);
		assert_int_equal(l.v[i].gid, 43);
		assert_true(l.v[i].uname == NULL || l.v[i].uname[0] == '\0');
		assert_int_equal(l.v[i].mtime, EPOCH);
		assert_false(l.v[i].atime_set);
	}
	assert_int_equal(l.v[1].size, 5);
	assert_memory_equal(l.v[1].data, "hello", 5);
	assert_string_equal(l.v[3].symlink, "/etc/passwd"); /* targets are data */
	assert_string_equal(l.v[4].hardlink, "zz/file");
	assert_int_equal(l.v[4].size, 0);
	free_tlist(&l);
}

/* A UTF-8 PAX name in NFD must come out byte for byte, even when the
 * process runs in a UTF-8 locale (where libarchive would normalise it). */
static void test_import_keeps_name_bytes_in_utf8_locale(void **state)
{
	struct fx *f = *state;
	locale_t u8 = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0);
	if (u8 == (locale_t)0)
		skip();
	const struct src_entry es[] = {
	    {"cafe\xcc\x81", AE_IFREG, "nfd", NULL},
	    {"caf\xc3\xa9", AE_IFREG, "nfc", NULL},
	};
	/* Written in a UTF-8 locale: plain UTF-8 "path" records. */
	locale_t prev = uselocale(u8);
	int fd = make_input_tar(f, es, 2, false);
	uselocale(prev);
	setlocale(LC_ALL, "C.UTF-8");
	ib_layer_options o = opts_with(IB_COMP_NONE, 1);
	ib_layer_result res;
	ib_error *err = NULL;
	int r = ib_layer_import(f->store, fd, &o, &res, &err);
	setlocale(LC_ALL, "C");
	freelocale(u8);
	close(fd);
	if (r < 0)
		fail_msg("import: %s", ib_error_msg(err));
	size_t len;
	unsigned char *tar = layer_tar(f, &res, IB_COMP_NONE, &len);
	struct tlist l = read_tar(tar, len);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.v[0].path, "cafe\xcc\x81");
	assert_memory_equal(l.v[0].data, "nfd", 3);
	assert_string_equal(l.v[1].path, "caf\xc3\xa9");
	assert_int_equal(count_occurrences(tar, len, "hdrcharset"), 0);
	free_tlist(&l);
	free(tar);
}

static void test_import_rejects_dotdot(void **state)
{
	struct fx *f = *state;
	const struct src_entry bad_name[] = {
	    {"ok", AE_IFREG, "x", NULL},
	    {"../x", AE_IFREG, "evil", NULL},
	};
	const struct src_entry bad_link[] = {
	    {"h", AE_IFREG, NULL, "a/../../etc/shadow"},
	};
	const struct src_entry *cases[] = {bad_name, bad_link};
	const size_t ns[] = {2, 1};
	for (size_t c = 0; c < 2; c++) {
		int fd = make_input_tar(f, cases[c], ns[c], false);
		ib_layer_options o = opts_with(IB_COMP_GZIP, 1);
		ib_layer_result res;
		ib_error *err = NULL;
		assert_int_equal(ib_layer_import(f->store, fd, &o, &res, &err), IB_EUNSAFE);
		assert_non_null(strstr(ib_error_msg(err), ".."));
		ib_error_free(&err);
		close(fd);
	}
}

static void test_import_rejects_garbage(void **state)
{
	struct fx *f = *state;
	write_at(f, "junk", "this is not a tar archive at all, sorry", 39, 0644);
	cleanup_free char *p = fx_path(f, "junk");
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	ib_layer_options o = opts_with(IB_COMP_GZIP, 1);
	ib_layer_result res;
	ib_error *err = NULL;
	assert_int_equal(ib_layer_import(f->store, fd, &o, &res, &err), IB_EINVALID);
	ib_error_free(&err);
	close(fd);
}

static void test_import_of_layer_is_identity(void **state)
{
	struct fx *f = *state;
	make_tree(f, "t", 0, 100);
	ib_layer_options o = opts_with(IB_COMP_ZSTD, 2);
	ib_layer_result res;
	tree_layer(f, "t", &o, &res);
	/* Our own output is already normal: importing it changes nothing. */
	cleanup_free char *blob = ib_store_blob_path(f->store, res.digest);
	int fd = open(blob, O_RDONLY);
	assert_true(fd >= 0);
	ib_layer_result again;
	ib_error *err = NULL;
	assert_int_equal(ib_layer_import(f->store, fd, &o, &again, &err), 0);
	close(fd);
	assert_string_equal(again.diff_id, res.diff_id);
	assert_string_equal(again.digest, res.digest);
	assert_int_equal(again.entries, res.entries);
}

/* Values larger than any fixed buffer are read whole, kept names only,
 * sorted (tmpfs: user xattrs of any size up to 64 KiB). */
static void test_xattrs_read_whole_large_values_sorted(void **state)
{
	(void)state;
	char tmpl[] = "/dev/shm/ib-test-xattr-XXXXXX";
	int fd = mkstemp(tmpl);
	if (fd < 0)
		skip();
	char big[6000];
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '2';
	if (fsetxattr(fd, "user.zz", big, sizeof(big), 0) < 0) {
		close(fd);
		unlink(tmpl);
		skip(); /* no user xattrs on this tmpfs */
	}
	assert_int_equal(fsetxattr(fd, "user.aa", "v", 1, 0), 0);
	assert_int_equal(fsetxattr(fd, "user.overlay.x", "y", 1, 0), 0);
	ib_xattr *xs = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	for (int by_path = 0; by_path < 2; by_path++) {
		assert_int_equal(ib_layer_xattrs_read(by_path ? -1 : fd, tmpl, &xs, &n, &err), 0);
		assert_int_equal(n, 2);
		assert_string_equal(xs[0].name, "user.aa");
		assert_int_equal(xs[0].size, 1);
		assert_string_equal(xs[1].name, "user.zz");
		assert_int_equal(xs[1].size, sizeof(big));
		assert_memory_equal(xs[1].value, big, sizeof(big));
		ib_layer_xattrs_free(xs, n);
	}
	/* a name list longer than the first call's buffer (256 bytes) */
	for (int i = 0; i < 12; i++) {
		char name[64];
		snprintf(name, sizeof(name), "user.a-rather-long-attribute-name-number-%02d", i);
		assert_int_equal(fsetxattr(fd, name, "L", 1, 0), 0);
	}
	for (int by_path = 0; by_path < 2; by_path++) {
		assert_int_equal(ib_layer_xattrs_read(by_path ? -1 : fd, tmpl, &xs, &n, &err), 0);
		assert_int_equal(n, 14);
		assert_string_equal(xs[0].name, "user.a-rather-long-attribute-name-number-00");
		assert_string_equal(xs[11].name, "user.a-rather-long-attribute-name-number-11");
		assert_string_equal(xs[12].name, "user.aa");
		assert_int_equal(xs[13].size, sizeof(big));
		ib_layer_xattrs_free(xs, n);
	}
	close(fd);
	unlink(tmpl);
}

/* ---- trees for chroot isolation ---- */

static bool is_whiteout_at(struct fx *f, const char *rel)
{
	cleanup_free char *p = fx_path(f, rel);
	struct stat st;
	return lstat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

static bool exists_at(struct fx *f, const char *rel)
{
	cleanup_free char *p = fx_path(f, rel);
	struct stat st;
	return lstat(p, &st) == 0;
}

/* Two overlay-format layers copied into a root (whiteout and opaque dir of
 * the upper one applied); a step's changes come back as an upper dir:
 * changed and new entries with their parents, whiteouts for deletions, an
 * opaque marker on a replaced directory, nothing for untouched files. */
static void test_tree_copy_and_diff(void **state)
{
	struct fx *f = *state;
	if (geteuid() != 0)
		skip();
	mkdir_at(f, "l1", 0755);
	mkdir_at(f, "l1/etc", 0755);
	write_at(f, "l1/etc/keep", "k", 1, 0644);
	write_at(f, "l1/etc/gone", "g", 1, 0644);
	write_at(f, "l1/etc/change", "c", 1, 0644);
	mkdir_at(f, "l1/home", 0755);
	write_at(f, "l1/home/old", "o", 1, 0644);
	mkdir_at(f, "l1/opq", 0755);
	write_at(f, "l1/opq/hidden", "h", 1, 0644);
	mkdir_at(f, "l2", 0755);
	mkdir_at(f, "l2/etc", 0755);
	cleanup_free char *wh = fx_path(f, "l2/etc/gone");
	assert_int_equal(mknod(wh, S_IFCHR | 0, makedev(0, 0)), 0);
	mkdir_at(f, "l2/opq", 0755);
	cleanup_free char *opq = fx_path(f, "l2/opq");
	assert_int_equal(setxattr(opq, "trusted.overlay.opaque", "y", 1, 0), 0);
	write_at(f, "l2/opq/new", "n", 1, 0644);

	mkdir_at(f, "root", 0755);
	cleanup_free char *root = fx_path(f, "root");
	cleanup_free char *l1 = fx_path(f, "l1");
	cleanup_free char *l2 = fx_path(f, "l2");
	char *lowers[] = {l2, l1, NULL};
	ib_error *err = NULL;
	assert_int_equal(ib_tree_copy_layers(lowers, root, &err), 0);
	assert_true(exists_at(f, "root/etc/keep"));
	assert_false(exists_at(f, "root/etc/gone"));
	assert_false(exists_at(f, "root/opq/hidden"));
	assert_true(exists_at(f, "root/opq/new"));

	ib_tree_snapshot *snap = NULL;
	assert_int_equal(ib_tree_snapshot_take(root, &snap, &err), 0);
	/* the step */
	write_at(f, "root/etc/new", "x", 1, 0600);
	cleanup_free char *chg = fx_path(f, "root/etc/change");
	assert_int_equal(chmod(chg, 0600), 0);
	cleanup_free char *keep = fx_path(f, "root/etc/keep");
	assert_int_equal(unlink(keep), 0);
	cleanup_free char *home = fx_path(f, "root/home");
	assert_int_equal(ib_rm_rf(home, &err), 0);
	mkdir_at(f, "root/home", 0700);
	write_at(f, "root/home/x", "x", 1, 0644);

	mkdir_at(f, "upper", 0755);
	cleanup_free char *upper = fx_path(f, "upper");
	assert_int_equal(
	    ib_tree_diff_to_upper(root, snap, upper, "trusted.overlay.opaque", &err), 0);
	ib_tree_snapshot_free(snap);
	assert_true(exists_at(f, "upper/etc/new"));
	assert_true(exists_at(f, "upper/etc/change"));
	assert_true(is_whiteout_at(f, "upper/etc/keep"));
	assert_false(exists_at(f, "upper/etc/gone"));
	assert_true(exists_at(f, "upper/home/x"));
	assert_false(exists_at(f, "upper/home/old"));
	assert_false(exists_at(f, "upper/opq"));
	cleanup_free char *uhome = fx_path(f, "upper/home");
	char v[4];
	assert_int_equal(getxattr(uhome, "trusted.overlay.opaque", v, sizeof(v)), 1);
	struct stat st;
	assert_int_equal(lstat(uhome, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	cleanup_free char *uetc = fx_path(f, "upper/etc");
	assert_int_equal(getxattr(uetc, "trusted.overlay.opaque", v, sizeof(v)), -1);
}

/* ---- deferred compression: tar_only, ib_layer_compress_fd, the queue ---- */

/* make_tree plus a file of several compression blocks. */
static void make_big_tree(struct fx *f, const char *top)
{
	make_tree(f, top, 0, 100);
	cleanup_free char *p = xasprintf("%s/usr/huge", top);
	size_t n = (3u << 20) + 12345;
	unsigned char *data = pattern(n, 9);
	write_at(f, p, data, n, 0644);
	free(data);
}

/* The tree's layer written tar_only into a fresh memfd (returned). */
static int tree_tar(struct fx *f, const char *top, ib_layer_options o, ib_layer_result *res)
{
	int fd = memfd_create("layer-tar", MFD_CLOEXEC);
	assert_true(fd >= 0);
	o.tar_only = true;
	o.tar_fd = fd;
	tree_layer(f, top, &o, res);
	return fd;
}

static void test_deferred_compression_same_bytes_as_direct(void **state)
{
	struct fx *f = *state;
	make_big_tree(f, "t");
	const ib_compression cs[] = {IB_COMP_GZIP, IB_COMP_GZIP, IB_COMP_ZSTD, IB_COMP_NONE};
	const int threads[] = {1, 3, 2, 1};
	for (size_t i = 0; i < 4; i++) {
		ib_layer_options o = opts_with(cs[i], threads[i]);
		ib_layer_result direct, tar, late;
		tree_layer(f, "t", &o, &direct);
		int fd = tree_tar(f, "t", o, &tar);
		/* the tar only: its diff_id, no blob */
		assert_string_equal(tar.diff_id, direct.diff_id);
		assert_string_equal(tar.digest, "");
		assert_int_equal(tar.entries, direct.entries);
		struct stat st;
		assert_int_equal(fstat(fd, &st), 0);
		assert_int_equal(tar.size, st.st_size);
		assert_true(st.st_size > (3 << 20));
		/* compressed later (another thread count: same bytes) */
		ib_layer_options lo = opts_with(cs[i], threads[i] == 1 ? 4 : 1);
		ib_error *err = NULL;
		memset(&late, 0, sizeof(late));
		if (ib_layer_compress_fd(f->store, fd, &lo, &late, &err) < 0)
			fail_msg("compress_fd: %s", ib_error_msg(err));
		assert_string_equal(late.digest, direct.digest);
		assert_int_equal(late.size, direct.size);
		memcpy(late.diff_id, tar.diff_id, IB_DIGEST_BUFLEN);
		size_t len;
		free(layer_tar(f, &late, cs[i], &len)); /* blob digest, size, diff_id */
		assert_int_equal(len, (size_t)st.st_size);
		close(fd);
	}
}

static void drop_count(void *payload)
{
	(*(int *)payload)++;
}

/* The queue: results in submission order; a job that fails is reported
 * with its payload and does not stop the next; nothing is left in tmp;
 * freeing drops what was not taken. */
static void test_layer_jobs_order_and_error_path(void **state)
{
	struct fx *f = *state;
	make_big_tree(f, "t");
	ib_layer_options o = opts_with(IB_COMP_GZIP, 2);
	ib_layer_result direct, tar;
	tree_layer(f, "t", &o, &direct);
	ib_error *err = NULL;
	ib_layer_jobs *q = NULL;
	assert_int_equal(ib_layer_jobs_new(&q, f->store, &o, &err), 0);
	assert_int_equal(ib_layer_jobs_pending(q), 0);
	void *payload = NULL;
	ib_layer_result res;
	ib_error *je = NULL;
	assert_int_equal(ib_layer_jobs_next(q, true, &payload, &res, &je), 0);

	int good1 = tree_tar(f, "t", o, &tar);
	cleanup_free char *wpath = fx_path(f, "write-only");
	int bad = open(wpath, O_WRONLY | O_CREAT | O_CLOEXEC, 0600); /* pread: EBADF */
	assert_true(bad >= 0);
	int good2 = tree_tar(f, "t", o, &tar);
	int tags[3] = {1, 2, 3};
	ib_layer_jobs_submit(q, good1, &tags[0]);
	ib_layer_jobs_submit(q, bad, &tags[1]);
	ib_layer_jobs_submit(q, good2, &tags[2]);
	assert_int_equal(ib_layer_jobs_pending(q), 3);
	for (int k = 0; k < 3; k++) {
		memset(&res, 0, sizeof(res));
		assert_int_equal(ib_layer_jobs_next(q, true, &payload, &res, &je), 1);
		assert_ptr_equal(payload, &tags[k]);
		if (k == 1) {
			assert_non_null(je);
			assert_non_null(strstr(ib_error_msg(je), "read uncompressed layer"));
			ib_error_free(&je);
		} else {
			assert_null(je);
			assert_string_equal(res.digest, direct.digest);
			assert_int_equal(res.size, direct.size);
		}
	}
	assert_int_equal(ib_layer_jobs_pending(q), 0);
	assert_int_equal(ib_layer_jobs_next(q, false, &payload, &res, &je), 0);
	/* the failed job's temp blob is gone; tars were never named */
	cleanup_free char *tmp = ib_path_join(ib_store_root(f->store), "tmp");
	DIR *d = opendir(tmp);
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			fail_msg("left behind: %s/%s", tmp, de->d_name);
	if (d)
		closedir(d);

	/* results not taken are dropped with the queue */
	int dropped = 0;
	ib_layer_jobs_submit(q, tree_tar(f, "t", o, &tar), &dropped);
	ib_layer_jobs_submit(q, tree_tar(f, "t", o, &tar), &dropped);
	ib_layer_jobs_free(q, drop_count);
	assert_int_equal(dropped, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(test_same_tree_same_digest_despite_mtimes_and_order),
	    T(test_thread_count_does_not_change_digest),
	    T(test_gzip_layer_inflates_to_tar_with_diff_id),
	    T(test_zstd_layer_round_trip),
	    T(test_uncompressed_layer_digest_is_diff_id),
	    T(test_entries_sorted_parents_first),
	    T(test_numeric_ids_and_empty_names),
	    T(test_mtime_clamped_to_epoch),
	    T(test_hardlink_second_entry_is_link),
	    T(test_upper_dir_whiteouts_and_opaque),
	    T(test_xattrs_filtered_and_sorted),
	    T(test_long_and_utf8_names_round_trip),
	    T(test_output_independent_of_locale),
	    T(test_hdrcharset_only_for_invalid_utf8),
	    T(test_special_files_kept),
	    T(test_synthetic_entries_and_opaque_first),
	    T(test_override_owner_and_mode),
	    T(test_duplicate_path_last_added_wins),
	    T(test_unsafe_and_empty_paths_rejected),
	    T(test_empty_layer_is_1024_zero_bytes),
	    T(test_vanished_file_fails_and_stores_nothing),
	    T(test_import_normalises_names_and_metadata),
	    T(test_import_keeps_name_bytes_in_utf8_locale),
	    T(test_import_rejects_dotdot),
	    T(test_import_rejects_garbage),
	    T(test_import_of_layer_is_identity),
	    cmocka_unit_test(test_xattrs_read_whole_large_values_sorted),
	    T(test_tree_copy_and_diff),
	    T(test_deferred_compression_same_bytes_as_direct),
	    T(test_layer_jobs_order_and_error_path),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
