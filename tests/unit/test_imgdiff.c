/* Unit tests for imgdiff.c: walking layer blobs (entries, content digests,
 * blob verification) and diffing images built with the layer writer into a
 * temporary store: added/deleted/changed files, whiteouts, opaque
 * directories, hardlinks, and corrupt or missing blobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "imgdiff.h"
#include "layer.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

#define EPOCH 2000000000LL
#define EMPTY_DIGEST "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct fx {
	char *tmp;
	ib_store *store;
	int seq; /* names host files uniquely */
} fx;

/* A committed layer: its descriptor (for manifests) and diff_id (for the
 * config). */
typedef struct test_layer {
	ib_descriptor desc;
	char diff_id[IB_DIGEST_BUFLEN];
} test_layer;

static int setup(void **state)
{
	fx *f = xcalloc(1, sizeof(*f));
	f->tmp = tu_tmpdir();
	cleanup_free char *root = ib_path_join(f->tmp, "store");
	f->store = tu_store_open(root);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ib_store_free(f->store);
	tu_rm_rf(f->tmp);
	free(f->tmp);
	free(f);
	return 0;
}

/* ---- helpers: layers and images ---- */

static ib_layer_writer *writer(fx *f, ib_compression comp)
{
	ib_layer_options o = IB_LAYER_OPTIONS_INIT;
	o.compression = comp;
	o.source_date_epoch = EPOCH;
	o.threads = 1;
	ib_layer_writer *w = NULL;
	ib_error *err = NULL;
	tu_must(ib_layer_writer_new(&w, f->store, &o, &err), &err, "writer");
	return w;
}

/* A fresh host file with data, mode and mtime; the caller frees the path. */
static char *host_file(fx *f, const char *data, mode_t mode, int64_t mtime)
{
	char *p = xasprintf("%s/h%d", f->tmp, f->seq++);
	ib_error *err = NULL;
	tu_must(ib_write_file_atomic(p, data, strlen(data), mode, &err), &err, p);
	assert_int_equal(chmod(p, mode), 0);
	struct timespec ts[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	return p;
}

/* Add a regular file owned by 0:0. */
static void add_file_at(fx *f, ib_layer_writer *w, const char *path, const char *data, mode_t mode,
			int64_t mtime)
{
	cleanup_free char *host = host_file(f, data, mode, mtime);
	ib_layer_override ov = {0, 0, -1};
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_path(w, path, host, &ov, &err), &err, path);
}

static void add_file(fx *f, ib_layer_writer *w, const char *path, const char *data)
{
	add_file_at(f, w, path, data, 0644, 1500000000);
}

static void add_symlink(fx *f, ib_layer_writer *w, const char *path, const char *target)
{
	cleanup_free char *host = xasprintf("%s/h%d", f->tmp, f->seq++);
	assert_int_equal(symlink(target, host), 0);
	ib_layer_override ov = {0, 0, -1};
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_path(w, path, host, &ov, &err), &err, path);
}

static void add_dir(ib_layer_writer *w, const char *path)
{
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_dir(w, path, 0755, 0, 0, &err), &err, path);
}

static void add_whiteout(ib_layer_writer *w, const char *path)
{
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_whiteout(w, path, &err), &err, path);
}

static void add_opaque(ib_layer_writer *w, const char *dir)
{
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_opaque(w, dir, &err), &err, dir);
}

static void finish(ib_layer_writer *w, ib_compression comp, test_layer *out)
{
	ib_layer_result res;
	ib_error *err = NULL;
	tu_must(ib_layer_writer_finish(w, &res, &err), &err, "finish");
	memset(out, 0, sizeof(*out));
	out->desc.media_type = comp == IB_COMP_NONE ? IB_MT_OCI_LAYER : IB_MT_OCI_LAYER_GZIP;
	memcpy(out->desc.digest, res.digest, IB_DIGEST_BUFLEN);
	out->desc.size = res.size;
	memcpy(out->diff_id, res.diff_id, IB_DIGEST_BUFLEN);
}

/* Store an image of the given layers; ref gets its manifest digest, which
 * ib_store_image_load takes as a reference. */
static void image(fx *f, const test_layer *layers, size_t n, char ref[IB_DIGEST_BUFLEN])
{
	const char *os, *arch, *variant;
	ib_host_platform(&os, &arch, &variant);
	json_t *ids = json_array();
	ib_descriptor *descs = xcalloc(n ? n : 1, sizeof(*descs));
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(ids, json_string(layers[i].diff_id));
		descs[i] = layers[i].desc;
	}
	json_t *cfg = json_pack("{s:s, s:s, s:{s:s, s:o}}", "architecture", arch, "os", os,
				"rootfs", "type", "layers", "diff_ids", ids);
	assert_non_null(cfg);
	ib_descriptor d;
	ib_error *err = NULL;
	tu_must(ib_store_image_write(f->store, cfg, descs, n, NULL, &d, &err), &err, "image write");
	memcpy(ref, d.digest, IB_DIGEST_BUFLEN);
	ib_descriptor_clear(&d);
	json_decref(cfg);
	free(descs);
}

/* Replace the first occurrence of from in the blob by to (same length). */
static void patch_blob(fx *f, const char *digest, const char *from, const char *to)
{
	cleanup_free char *p = ib_store_blob_path(f->store, digest);
	cleanup_free char *data = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	tu_must(ib_read_file(p, 0, &data, &len, &err), &err, p);
	char *at = memmem(data, len, from, strlen(from));
	assert_non_null(at);
	assert_int_equal(chmod(p, 0644), 0);
	int fd = open(p, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, to, strlen(to), at - data), (ssize_t)strlen(to));
	close(fd);
}

/* ---- helpers: walking ---- */

typedef struct walked {
	char *path, *raw_path, *content, *symlink, *hardlink;
	mode_t mode;
	int64_t uid, gid, size, mtime;
} walked;

typedef struct walk_log {
	walked *v;
	size_t n;
	size_t fail_at; /* 1-based entry at which the callback fails, 0 = never */
} walk_log;

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static int log_entry(const ib_layer_entry *e, void *payload, ib_error **err)
{
	walk_log *l = payload;
	if (l->fail_at && l->n + 1 == l->fail_at)
		return ib_error_setc(err, IB_EEXISTS, "stop at %s", e->path);
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = (walked){xstrdup(e->path),
				xstrdup(e->raw_path),
				xstrdup(e->content),
				dup_or_null(e->symlink),
				dup_or_null(e->hardlink),
				e->mode,
				e->uid,
				e->gid,
				e->size,
				e->mtime};
	return 0;
}

static void walk_log_free(walk_log *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].raw_path);
		free(l->v[i].content);
		free(l->v[i].symlink);
		free(l->v[i].hardlink);
	}
	free(l->v);
}

static const walked *find(const walk_log *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].path, path))
			return &l->v[i];
	fail_msg("no entry %s", path);
	return NULL;
}

/* ---- helpers: diffing ---- */

/* The diff of ref1 and ref2 as "K path" lines joined by '\n'. */
static char *diff_text(fx *f, const char *ref1, const char *ref2)
{
	ib_diff_entry *v = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	tu_must(ib_image_diff(f->store, ref1, ref2, &v, &n, &err), &err, "diff");
	ib_buf b = IB_BUF_INIT;
	for (size_t i = 0; i < n; i++)
		ib_buf_appendf(&b, "%s%c %s", i ? "\n" : "", v[i].kind, v[i].path);
	ib_diff_entries_free(v, n);
	return ib_buf_steal(&b, NULL);
}

/* Base image: etc/ {motd, keep}, dir/ {a, b}, bin/sh -> busybox. */
static void base_layer(fx *f, test_layer *out)
{
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_file(f, w, "etc/motd", "welcome\n");
	add_file(f, w, "etc/keep", "keep\n");
	add_dir(w, "dir");
	add_file(f, w, "dir/a", "a\n");
	add_file(f, w, "dir/b", "b\n");
	add_dir(w, "bin");
	add_symlink(f, w, "bin/sh", "busybox");
	finish(w, IB_COMP_GZIP, out);
}

/* ---- ib_layer_walk ---- */

static void test_walk_reports_every_entry_with_normalised_path_and_metadata(void **state)
{
	fx *f = *state;
	test_layer l;
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_file_at(f, w, "etc/motd", "hello\n", 0640, 1600000000);
	add_symlink(f, w, "etc/link", "motd");
	add_whiteout(w, "etc/gone");
	finish(w, IB_COMP_GZIP, &l);

	walk_log log = {NULL, 0, 0};
	ib_error *err = NULL;
	tu_must(ib_layer_walk(f->store, l.desc.digest, l.desc.size, log_entry, &log, &err), &err,
		"walk");
	assert_int_equal(log.n, 4);
	/* tar order: the directory first, then its entries sorted by name */
	assert_string_equal(log.v[0].path, "etc");
	assert_string_equal(log.v[0].raw_path, "etc/");
	assert_int_equal(log.v[0].mode, S_IFDIR | 0755);
	assert_string_equal(log.v[0].content, EMPTY_DIGEST);

	const walked *motd = find(&log, "etc/motd");
	assert_string_equal(motd->raw_path, "etc/motd");
	assert_int_equal(motd->mode, S_IFREG | 0640);
	assert_int_equal(motd->uid, 0);
	assert_int_equal(motd->gid, 0);
	assert_int_equal(motd->size, 6);
	assert_int_equal(motd->mtime, 1600000000);
	char want[IB_DIGEST_BUFLEN];
	ib_digest_buffer(want, "hello\n", 6);
	assert_string_equal(motd->content, want);
	assert_null(motd->symlink);
	assert_null(motd->hardlink);

	const walked *link = find(&log, "etc/link");
	assert_int_equal(link->mode & S_IFMT, S_IFLNK);
	assert_string_equal(link->symlink, "motd");
	assert_string_equal(link->content, EMPTY_DIGEST);

	/* whiteouts are passed on as they are, not interpreted */
	find(&log, "etc/.wh.gone");
	walk_log_free(&log);
}

/* Tar names as another tool may write them: the same path however its
 * slashes and "." components are spelled. */
static void test_walk_cleans_names_spelled_with_extra_slashes_and_dots(void **state)
{
	fx *f = *state;
	size_t cap = 64 << 10, used = 0;
	cleanup_free char *buf = xcalloc(1, cap);
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
	static const char *const names[] = {"./etc//", "etc//./motd", "./etc/./sub/./"};
	for (size_t i = 0; i < 3; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, names[i]);
		bool dir = names[i][strlen(names[i]) - 1] == '/';
		archive_entry_set_mode(e, dir ? (S_IFDIR | 0755) : (S_IFREG | 0644));
		archive_entry_set_size(e, dir ? 0 : 3);
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (!dir)
			assert_int_equal(archive_write_data(a, "hi\n", 3), 3);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);

	char digest[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->store, buf, used, digest, &err), &err, "put");
	walk_log log = {NULL, 0, 0};
	tu_must(ib_layer_walk(f->store, digest, (int64_t)used, log_entry, &log, &err), &err, "walk");
	assert_int_equal(log.n, 3);
	assert_string_equal(log.v[0].path, "etc");
	assert_string_equal(log.v[1].path, "etc/motd");
	assert_string_equal(log.v[1].raw_path, "etc//./motd");
	assert_string_equal(log.v[2].path, "etc/sub");
	walk_log_free(&log);
}

static void test_walk_reports_hardlinks_with_their_target(void **state)
{
	fx *f = *state;
	cleanup_free char *h1 = host_file(f, "shared\n", 0755, 1500000000);
	cleanup_free char *h2 = xasprintf("%s/linked", f->tmp);
	assert_int_equal(link(h1, h2), 0);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	ib_error *err = NULL;
	tu_must(ib_layer_writer_add_path(w, "x", h1, NULL, &err), &err, "x");
	tu_must(ib_layer_writer_add_path(w, "y", h2, NULL, &err), &err, "y");
	test_layer l;
	finish(w, IB_COMP_GZIP, &l);

	walk_log log = {NULL, 0, 0};
	tu_must(ib_layer_walk(f->store, l.desc.digest, -1, log_entry, &log, &err), &err, "walk");
	assert_int_equal(log.n, 2);
	assert_null(find(&log, "x")->hardlink);
	assert_string_equal(find(&log, "y")->hardlink, "x");
	walk_log_free(&log);
}

static void test_walk_stops_with_the_callbacks_error(void **state)
{
	fx *f = *state;
	test_layer l;
	base_layer(f, &l);
	walk_log log = {NULL, 0, 3};
	ib_error *err = NULL;
	int r = ib_layer_walk(f->store, l.desc.digest, l.desc.size, log_entry, &log, &err);
	assert_int_equal(r, IB_EEXISTS);
	assert_int_equal(log.n, 2);
	cleanup_free char *want = xasprintf("layer %s: stop at ", l.desc.digest);
	assert_non_null(strstr(ib_error_msg(err), want));
	ib_error_free(&err);
	walk_log_free(&log);
}

static void test_walk_refuses_a_blob_whose_tar_is_intact_but_content_changed(void **state)
{
	fx *f = *state;
	ib_layer_writer *w = writer(f, IB_COMP_NONE);
	add_file(f, w, "greeting", "hello world\n");
	test_layer l;
	finish(w, IB_COMP_NONE, &l);
	/* same length, still a valid tar: only the blob digest can tell */
	patch_blob(f, l.desc.digest, "hello world", "jello world");

	walk_log log = {NULL, 0, 0};
	ib_error *err = NULL;
	int r = ib_layer_walk(f->store, l.desc.digest, l.desc.size, log_entry, &log, &err);
	assert_int_equal(r, IB_EDIGEST);
	cleanup_free char *want =
	    xasprintf("layer %s: blob %s in the store is corrupt", l.desc.digest, l.desc.digest);
	assert_string_equal(ib_error_msg(err), want);
	ib_error_free(&err);
	walk_log_free(&log);
}

static void test_walk_refuses_a_corrupt_compressed_blob_as_corrupt(void **state)
{
	fx *f = *state;
	test_layer l;
	base_layer(f, &l);
	cleanup_free char *p = ib_store_blob_path(f->store, l.desc.digest);
	assert_int_equal(chmod(p, 0644), 0);
	int fd = open(p, O_WRONLY);
	assert_true(fd >= 0);
	/* the gzip magic: libarchive no longer sees a compressed tar */
	assert_int_equal(pwrite(fd, "XX", 2, 0), 2);
	close(fd);

	walk_log log = {NULL, 0, 0};
	ib_error *err = NULL;
	int r = ib_layer_walk(f->store, l.desc.digest, l.desc.size, log_entry, &log, &err);
	assert_int_equal(r, IB_EDIGEST);
	assert_non_null(strstr(ib_error_msg(err), "in the store is corrupt"));
	ib_error_free(&err);
	walk_log_free(&log);
}

static void test_walk_checks_the_expected_size(void **state)
{
	fx *f = *state;
	test_layer l;
	base_layer(f, &l);
	walk_log log = {NULL, 0, 0};
	ib_error *err = NULL;
	int r = ib_layer_walk(f->store, l.desc.digest, l.desc.size + 1, log_entry, &log, &err);
	assert_int_equal(r, IB_EDIGEST);
	ib_error_free(&err);
	walk_log_free(&log);
}

static void test_walk_of_a_missing_blob_is_not_found(void **state)
{
	fx *f = *state;
	walk_log log = {NULL, 0, 0};
	ib_error *err = NULL;
	int r = ib_layer_walk(f->store, EMPTY_DIGEST, -1, log_entry, &log, &err);
	assert_int_equal(r, IB_ENOTFOUND);
	assert_int_equal(log.n, 0);
	assert_non_null(strstr(ib_error_msg(err), "layer " EMPTY_DIGEST ": "));
	ib_error_free(&err);
}

static void test_walk_refuses_an_intact_blob_that_is_not_a_tar(void **state)
{
	fx *f = *state;
	char digest[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	static const char junk[] = "this is not a tar archive, not even close to one";
	tu_must(ib_store_blob_put(f->store, junk, sizeof(junk), digest, &err), &err, "put");
	walk_log log = {NULL, 0, 0};
	int r = ib_layer_walk(f->store, digest, (int64_t)sizeof(junk), log_entry, &log, &err);
	assert_int_equal(r, IB_EINVALID);
	ib_error_free(&err);
	walk_log_free(&log);
}

/* ---- ib_image_diff ---- */

static void test_diff_of_an_image_with_itself_is_empty(void **state)
{
	fx *f = *state;
	test_layer l;
	base_layer(f, &l);
	char ref[IB_DIGEST_BUFLEN];
	image(f, &l, 1, ref);
	ib_diff_entry *v = (ib_diff_entry *)1;
	size_t n = 99;
	ib_error *err = NULL;
	tu_must(ib_image_diff(f->store, ref, ref, &v, &n, &err), &err, "diff");
	assert_null(v);
	assert_int_equal(n, 0);
}

static void test_diff_reports_added_deleted_and_changed_sorted_by_path(void **state)
{
	fx *f = *state;
	test_layer l1, l2;
	base_layer(f, &l1);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_file(f, w, "etc/motd", "changed\n");		   /* content */
	add_file_at(f, w, "etc/keep", "keep\n", 0600, 1500000000); /* mode */
	add_dir(w, "dir");
	add_file(f, w, "dir/a", "a\n");
	add_dir(w, "bin");
	add_symlink(f, w, "bin/sh", "ash"); /* link target */
	add_dir(w, "new");
	add_file(f, w, "new/file", "new\n");
	finish(w, IB_COMP_GZIP, &l2);
	char r1[IB_DIGEST_BUFLEN], r2[IB_DIGEST_BUFLEN];
	image(f, &l1, 1, r1);
	image(f, &l2, 1, r2);

	cleanup_free char *d12 = diff_text(f, r1, r2);
	assert_string_equal(d12, "C bin/sh\n"
				 "D dir/b\n"
				 "C etc/keep\n"
				 "C etc/motd\n"
				 "A new\n"
				 "A new/file");
	cleanup_free char *d21 = diff_text(f, r2, r1);
	assert_string_equal(d21, "C bin/sh\n"
				 "A dir/b\n"
				 "C etc/keep\n"
				 "C etc/motd\n"
				 "D new\n"
				 "D new/file");
}

static void test_diff_ignores_modification_times(void **state)
{
	fx *f = *state;
	test_layer l1, l2;
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_file_at(f, w, "f", "same\n", 0644, 1500000000);
	finish(w, IB_COMP_GZIP, &l1);
	w = writer(f, IB_COMP_GZIP);
	add_file_at(f, w, "f", "same\n", 0644, 1700000000);
	finish(w, IB_COMP_GZIP, &l2);
	assert_string_not_equal(l1.desc.digest, l2.desc.digest);
	char r1[IB_DIGEST_BUFLEN], r2[IB_DIGEST_BUFLEN];
	image(f, &l1, 1, r1);
	image(f, &l2, 1, r2);
	cleanup_free char *d = diff_text(f, r1, r2);
	assert_string_equal(d, "");
}

static void test_diff_applies_whiteouts_of_later_layers(void **state)
{
	fx *f = *state;
	test_layer l[2];
	base_layer(f, &l[0]);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_whiteout(w, "etc/motd");
	add_whiteout(w, "dir"); /* a whole directory */
	finish(w, IB_COMP_GZIP, &l[1]);
	char base[IB_DIGEST_BUFLEN], top[IB_DIGEST_BUFLEN];
	image(f, l, 1, base);
	image(f, l, 2, top);
	cleanup_free char *d = diff_text(f, base, top);
	assert_string_equal(d, "D dir\n"
			       "D dir/a\n"
			       "D dir/b\n"
			       "D etc/motd");
}

static void test_diff_applies_opaque_directories_but_keeps_the_layers_own_entries(void **state)
{
	fx *f = *state;
	test_layer l[2];
	base_layer(f, &l[0]);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "dir");
	add_opaque(w, "dir");
	add_file(f, w, "dir/a", "a\n"); /* same as below: survives unchanged */
	add_file(f, w, "dir/c", "c\n");
	finish(w, IB_COMP_GZIP, &l[1]);
	char base[IB_DIGEST_BUFLEN], top[IB_DIGEST_BUFLEN];
	image(f, l, 1, base);
	image(f, l, 2, top);
	cleanup_free char *d = diff_text(f, base, top);
	assert_string_equal(d, "D dir/b\n"
			       "A dir/c");
}

static void test_diff_a_file_over_a_directory_hides_its_tree(void **state)
{
	fx *f = *state;
	test_layer l[2];
	base_layer(f, &l[0]);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_file(f, w, "dir", "now a file\n");
	finish(w, IB_COMP_GZIP, &l[1]);
	char base[IB_DIGEST_BUFLEN], top[IB_DIGEST_BUFLEN];
	image(f, l, 1, base);
	image(f, l, 2, top);
	cleanup_free char *d = diff_text(f, base, top);
	assert_string_equal(d, "C dir\n"
			       "D dir/a\n"
			       "D dir/b");
}

static void test_diff_counts_a_hardlink_as_its_targets_content(void **state)
{
	fx *f = *state;
	/* image 1: y is a hardlink to x; image 2: y is a copy of x */
	cleanup_free char *h1 = host_file(f, "shared\n", 0644, 1500000000);
	cleanup_free char *h2 = xasprintf("%s/linked", f->tmp);
	assert_int_equal(link(h1, h2), 0);
	ib_layer_override ov = {0, 0, -1};
	ib_error *err = NULL;
	test_layer l1, l2, l3;
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	tu_must(ib_layer_writer_add_path(w, "x", h1, &ov, &err), &err, "x");
	tu_must(ib_layer_writer_add_path(w, "y", h2, &ov, &err), &err, "y");
	finish(w, IB_COMP_GZIP, &l1);
	w = writer(f, IB_COMP_GZIP);
	add_file(f, w, "x", "shared\n");
	add_file(f, w, "y", "shared\n");
	finish(w, IB_COMP_GZIP, &l2);
	w = writer(f, IB_COMP_GZIP);
	add_file(f, w, "x", "shared\n");
	add_file(f, w, "y", "other\n");
	finish(w, IB_COMP_GZIP, &l3);
	char r1[IB_DIGEST_BUFLEN], r2[IB_DIGEST_BUFLEN], r3[IB_DIGEST_BUFLEN];
	image(f, &l1, 1, r1);
	image(f, &l2, 1, r2);
	image(f, &l3, 1, r3);
	cleanup_free char *same = diff_text(f, r1, r2);
	assert_string_equal(same, "");
	cleanup_free char *other = diff_text(f, r1, r3);
	assert_string_equal(other, "C y");
}

static void test_diff_keeps_file_names_that_are_not_utf8(void **state)
{
	fx *f = *state;
	test_layer l[2];
	base_layer(f, &l[0]);
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_file(f, w, "latin1-\xe9t\xe9", "bytes\n");
	finish(w, IB_COMP_GZIP, &l[1]);
	char base[IB_DIGEST_BUFLEN], top[IB_DIGEST_BUFLEN];
	image(f, l, 1, base);
	image(f, l, 2, top);
	cleanup_free char *d = diff_text(f, base, top);
	assert_string_equal(d, "A latin1-\xe9t\xe9");
}

static void test_diff_refuses_an_image_with_a_corrupt_layer(void **state)
{
	fx *f = *state;
	ib_layer_writer *w = writer(f, IB_COMP_NONE);
	add_file(f, w, "greeting", "hello world\n");
	test_layer l;
	finish(w, IB_COMP_NONE, &l);
	char ref[IB_DIGEST_BUFLEN], other[IB_DIGEST_BUFLEN];
	image(f, &l, 1, ref);
	test_layer b;
	base_layer(f, &b);
	image(f, &b, 1, other);
	patch_blob(f, l.desc.digest, "hello world", "jello world");

	ib_diff_entry *v = (ib_diff_entry *)1;
	size_t n = 99;
	ib_error *err = NULL;
	int r = ib_image_diff(f->store, other, ref, &v, &n, &err);
	assert_int_equal(r, IB_EDIGEST);
	assert_null(v);
	assert_int_equal(n, 0);
	/* the reference, then the layer */
	cleanup_free char *want = xasprintf("%s: layer %s: ", ref, l.desc.digest);
	assert_true(!strncmp(ib_error_msg(err), want, strlen(want)));
	ib_error_free(&err);
}

static void test_diff_of_a_missing_image_is_not_found(void **state)
{
	fx *f = *state;
	test_layer l;
	base_layer(f, &l);
	char ref[IB_DIGEST_BUFLEN];
	image(f, &l, 1, ref);
	ib_diff_entry *v = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	int r = ib_image_diff(f->store, ref, "localhost/nosuch:1", &v, &n, &err);
	assert_int_equal(r, IB_ENOTFOUND);
	assert_null(v);
	ib_error_free(&err);
}


static void test_differences_list_every_file_with_what_differs(void **state)
{
	fx *f = *state;
	test_layer l1, l2;
	ib_layer_writer *w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_file_at(f, w, "etc/motd", "hello\n", 0644, 1500000000);
	add_file(f, w, "etc/same", "same\n");
	add_file(f, w, "only-a", "a\n");
	finish(w, IB_COMP_GZIP, &l1);
	w = writer(f, IB_COMP_GZIP);
	add_dir(w, "etc");
	add_file_at(f, w, "etc/motd", "world\n", 0600, 1600000000);
	add_file(f, w, "etc/same", "same\n");
	add_file(f, w, "only-b", "b\n");
	finish(w, IB_COMP_GZIP, &l2);
	char r1[IB_DIGEST_BUFLEN], r2[IB_DIGEST_BUFLEN];
	image(f, &l1, 1, r1);
	image(f, &l2, 1, r2);
	char **lines = (char **)1;
	size_t total = 1;
	ib_error *err = NULL;
	tu_must(ib_image_differences(f->store, r1, r1, 10, &lines, &total, &err), &err, "same");
	assert_null(lines);
	assert_int_equal(total, 0);
	tu_must(ib_image_differences(f->store, r1, r2, 10, &lines, &total, &err), &err, "differ");
	assert_int_equal(total, 3);
	assert_int_equal(ib_strv_len(lines), 3);
	assert_string_equal(lines[0], "layer 1: etc/motd: content, mode (0644 vs 0600), mtime "
				      "(1500000000 vs 1600000000)");
	assert_string_equal(lines[1], "layer 1: only-a: only in the first build");
	assert_string_equal(lines[2], "layer 1: only-b: only in the second build");
	ib_strv_free(lines);
	/* the limit bounds the lines, not the count */
	tu_must(ib_image_differences(f->store, r1, r2, 1, &lines, &total, &err), &err, "limit");
	assert_int_equal(total, 3);
	assert_int_equal(ib_strv_len(lines), 1);
	ib_strv_free(lines);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(test_walk_reports_every_entry_with_normalised_path_and_metadata),
	    T(test_differences_list_every_file_with_what_differs),
	    T(test_walk_cleans_names_spelled_with_extra_slashes_and_dots),
	    T(test_walk_reports_hardlinks_with_their_target),
	    T(test_walk_stops_with_the_callbacks_error),
	    T(test_walk_refuses_a_blob_whose_tar_is_intact_but_content_changed),
	    T(test_walk_refuses_a_corrupt_compressed_blob_as_corrupt),
	    T(test_walk_checks_the_expected_size),
	    T(test_walk_of_a_missing_blob_is_not_found),
	    T(test_walk_refuses_an_intact_blob_that_is_not_a_tar),
	    T(test_diff_of_an_image_with_itself_is_empty),
	    T(test_diff_reports_added_deleted_and_changed_sorted_by_path),
	    T(test_diff_ignores_modification_times),
	    T(test_diff_applies_whiteouts_of_later_layers),
	    T(test_diff_applies_opaque_directories_but_keeps_the_layers_own_entries),
	    T(test_diff_a_file_over_a_directory_hides_its_tree),
	    T(test_diff_counts_a_hardlink_as_its_targets_content),
	    T(test_diff_keeps_file_names_that_are_not_utf8),
	    T(test_diff_refuses_an_image_with_a_corrupt_layer),
	    T(test_diff_of_a_missing_image_is_not_found),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
