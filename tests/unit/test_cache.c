/* The step cache, the explain records and the stat cache (src/lib/cache.c).
 * Every test opens a fresh store in its own temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "error.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

#define LAYER_MT "application/vnd.oci.image.layer.v1.tar+gzip"

typedef struct fixture {
	char *dir;  /* the temp dir: store root and test files live below */
	char *root; /* DIR/store */
	ib_store *s;
	ib_cache *c;
} fixture;

static int setup(void **state)
{
	fixture *f = xcalloc(1, sizeof(*f));
	f->dir = tu_tmpdir();
	f->root = ib_path_join(f->dir, "store");
	f->s = tu_store_open(f->root);
	ib_error *err = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "cache open");
	/* files written by a test count as settled (see test_fresh_file_...) */
	ib_cache_stat_set_now(f->c, INT64_C(4000000000) * 1000000000);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	ib_cache_free(f->c);
	ib_store_free(f->s);
	tu_rm_rf(f->dir);
	free(f->root);
	free(f->dir);
	free(f);
	return 0;
}

/* ---- helpers ---- */

/* A distinct valid digest per seed. */
static void digest_of(char out[IB_DIGEST_BUFLEN], const char *seed)
{
	ib_digest_buffer(out, seed, strlen(seed));
}

static json_t *make_entry(const char *key, const char *digest, const char *diff_id, json_int_t size)
{
	return json_pack("{s:s, s:{s:s, s:s, s:I, s:s}, s:s}", "key", key, "layer", "digest",
			 digest, "diff_id", diff_id, "size", size, "mediaType", LAYER_MT,
			 "created_by", "RUN make");
}

static char *step_file(fixture *f, const char *key)
{
	return xasprintf("%s/cache/steps/%s.json", f->root, ib_digest_hex(key));
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void lstat_ok(const char *path, struct stat *st)
{
	assert_int_equal(lstat(path, st), 0);
}

/* Rewrite path in place (same inode) and put its timestamps back to st's. */
static void rewrite_keep_stat(const char *path, const char *content, const struct stat *st)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
	struct stat now;
	lstat_ok(path, &now);
	assert_true(now.st_ino == st->st_ino);
	assert_true(now.st_size == st->st_size);
	assert_true(now.st_mtim.tv_sec == st->st_mtim.tv_sec);
	assert_true(now.st_mtim.tv_nsec == st->st_mtim.tv_nsec);
}

static void expect_file_digest(ib_cache *c, const char *path, const char *want)
{
	struct stat st;
	lstat_ok(path, &st);
	char d[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	tu_must(ib_cache_file_digest(c, path, &st, d, &err), &err, "file digest");
	assert_string_equal(d, want);
}

static bool strv_contains(char **v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* ---- open ---- */

static void test_open_creates_cache_dirs(void **state)
{
	fixture *f = *state;
	cleanup_free char *steps = ib_path_join(f->root, "cache/steps");
	cleanup_free char *explain = ib_path_join(f->root, "cache/explain");
	assert_true(is_dir(steps));
	assert_true(is_dir(explain));
	assert_int_equal(tu_count_entries(steps), 0);
}

/* ---- step cache ---- */

static void test_step_put_get_round_trip(void **state)
{
	fixture *f = *state;
	char key[IB_DIGEST_BUFLEN], dg[IB_DIGEST_BUFLEN], diff[IB_DIGEST_BUFLEN];
	digest_of(key, "key-1");
	digest_of(dg, "blob-1");
	digest_of(diff, "diff-1");
	json_t *entry = make_entry(key, dg, diff, 4242);
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, key, entry, &err), &err, "put");

	cleanup_free char *file = step_file(f, key);
	assert_true(ib_file_exists(file));

	json_t *got = ib_cache_step_get(f->c, key);
	assert_non_null(got);
	assert_true(json_equal(got, entry));
	json_t *layer = json_object_get(got, "layer");
	assert_string_equal(json_string_value(json_object_get(layer, "digest")), dg);
	assert_int_equal(json_integer_value(json_object_get(layer, "size")), 4242);
	/* a new reference: changing it does not change what is cached */
	json_object_set_new(got, "created_by", json_string("changed"));
	json_decref(got);
	got = ib_cache_step_get(f->c, key);
	assert_string_equal(json_string_value(json_object_get(got, "created_by")), "RUN make");
	json_decref(got);
	json_decref(entry);
}

static void test_step_get_missing_is_miss(void **state)
{
	fixture *f = *state;
	char key[IB_DIGEST_BUFLEN];
	digest_of(key, "never stored");
	assert_null(ib_cache_step_get(f->c, key));
}

static void test_step_put_replaces(void **state)
{
	fixture *f = *state;
	char key[IB_DIGEST_BUFLEN], a[IB_DIGEST_BUFLEN], b[IB_DIGEST_BUFLEN];
	digest_of(key, "k");
	digest_of(a, "a");
	digest_of(b, "b");
	json_t *e1 = make_entry(key, a, a, 1);
	json_t *e2 = make_entry(key, b, b, 2);
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, key, e1, &err), &err, "put 1");
	tu_must(ib_cache_step_put(f->c, key, e2, &err), &err, "put 2");
	json_t *got = ib_cache_step_get(f->c, key);
	assert_non_null(got);
	assert_true(json_equal(got, e2));
	json_decref(got);
	json_decref(e1);
	json_decref(e2);
	cleanup_free char *steps = ib_path_join(f->root, "cache/steps");
	assert_int_equal(tu_count_entries(steps), 1);
}

static void test_step_entries_survive_reopen(void **state)
{
	fixture *f = *state;
	char key[IB_DIGEST_BUFLEN], dg[IB_DIGEST_BUFLEN];
	digest_of(key, "persist");
	digest_of(dg, "layer");
	json_t *entry = make_entry(key, dg, dg, 10);
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, key, entry, &err), &err, "put");
	ib_cache_free(f->c);
	f->c = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "reopen");
	json_t *got = ib_cache_step_get(f->c, key);
	assert_non_null(got);
	assert_true(json_equal(got, entry));
	json_decref(got);
	json_decref(entry);
}

static void test_step_invalid_key_rejected(void **state)
{
	fixture *f = *state;
	char dg[IB_DIGEST_BUFLEN];
	digest_of(dg, "layer");
	json_t *entry = make_entry("x", dg, dg, 1);
	static const char *bad[] = {
	    "sha256:../../../evil", "sha512:00", "", "latest",
	    "SHA256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_error *err = NULL;
		assert_int_equal(ib_cache_step_put(f->c, bad[i], entry, &err), IB_EINVALID);
		assert_non_null(err);
		ib_error_free(&err);
		assert_null(ib_cache_step_get(f->c, bad[i]));
	}
	assert_null(ib_cache_step_get(f->c, NULL));
	json_decref(entry);
	/* nothing was written anywhere: not in steps/, not above the store */
	cleanup_free char *steps = ib_path_join(f->root, "cache/steps");
	assert_int_equal(tu_count_entries(steps), 0);
	cleanup_free char *evil = ib_path_join(f->dir, "evil.json");
	assert_false(ib_file_exists(evil));
}

/* Entries that do not name a complete, valid layer are misses. */
static void test_step_invalid_entry_is_miss(void **state)
{
	fixture *f = *state;
	char dg[IB_DIGEST_BUFLEN], diff[IB_DIGEST_BUFLEN];
	digest_of(dg, "blob");
	digest_of(diff, "diff");
	json_t *bad[] = {
	    json_pack("{s:s}", "key", "no layer"),
	    json_pack("{s:s}", "layer", dg),
	    json_pack("{s:{s:s, s:I, s:s}}", "layer", "diff_id", diff, "size", (json_int_t)1,
		      "mediaType", LAYER_MT),
	    json_pack("{s:{s:s, s:s, s:I, s:s}}", "layer", "digest", "sha256:../../etc", "diff_id",
		      diff, "size", (json_int_t)1, "mediaType", LAYER_MT),
	    json_pack("{s:{s:s, s:s, s:I, s:s}}", "layer", "digest", dg, "diff_id", "sha256:ABC",
		      "size", (json_int_t)1, "mediaType", LAYER_MT),
	    json_pack("{s:{s:s, s:s, s:s, s:s}}", "layer", "digest", dg, "diff_id", diff, "size",
		      "12", "mediaType", LAYER_MT),
	    json_pack("{s:{s:s, s:s, s:I}}", "layer", "digest", dg, "diff_id", diff, "size",
		      (json_int_t)1),
	    json_pack("{s:{s:s, s:s, s:I, s:i}}", "layer", "digest", dg, "diff_id", diff, "size",
		      (json_int_t)1, "mediaType", 5),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_non_null(bad[i]);
		cleanup_free char *seed = xasprintf("bad-%zu", i);
		char key[IB_DIGEST_BUFLEN];
		digest_of(key, seed);
		ib_error *err = NULL;
		tu_must(ib_cache_step_put(f->c, key, bad[i], &err), &err, "put");
		json_t *got = ib_cache_step_get(f->c, key);
		if (got) {
			json_decref(got);
			fail_msg("invalid entry %zu was a hit", i);
		}
		json_decref(bad[i]);
	}
	/* control: the same shape with every field right is a hit */
	char key[IB_DIGEST_BUFLEN];
	digest_of(key, "good");
	json_t *good = make_entry(key, dg, diff, 1);
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, key, good, &err), &err, "put good");
	json_t *got = ib_cache_step_get(f->c, key);
	assert_non_null(got);
	json_decref(got);
	json_decref(good);
}

/* Torn, empty, non-object and oversized files on disk are misses. */
static void test_step_corrupt_file_is_miss(void **state)
{
	fixture *f = *state;
	char dg[IB_DIGEST_BUFLEN];
	digest_of(dg, "blob");
	json_t *entry = make_entry("k", dg, dg, 1);
	cleanup_free char *valid = json_dumps(entry, JSON_COMPACT);
	json_decref(entry);
	/* a valid entry padded past the 1 MiB entry cap */
	size_t big_len = ((size_t)1 << 20) + 1;
	cleanup_free char *big = xmalloc(big_len + 1);
	memset(big, ' ', big_len);
	memcpy(big, valid, strlen(valid));
	big[big_len] = '\0';
	cleanup_free char *torn = xstrndup(valid, strlen(valid) / 2);
	cleanup_free char *array = xasprintf("[%s]", valid);

	const char *contents[] = {torn, "", "null", "\"string\"", array, big};
	for (size_t i = 0; i < sizeof(contents) / sizeof(contents[0]); i++) {
		cleanup_free char *seed = xasprintf("corrupt-%zu", i);
		char key[IB_DIGEST_BUFLEN];
		digest_of(key, seed);
		cleanup_free char *file = step_file(f, key);
		tu_write_text(file, contents[i]);
		json_t *got = ib_cache_step_get(f->c, key);
		if (got) {
			json_decref(got);
			fail_msg("corrupt file %zu was a hit", i);
		}
	}
	/* control: the intact text written the same way is a hit */
	char key[IB_DIGEST_BUFLEN];
	digest_of(key, "intact");
	cleanup_free char *file = step_file(f, key);
	tu_write_text(file, valid);
	json_t *got = ib_cache_step_get(f->c, key);
	assert_non_null(got);
	json_decref(got);
}

/* ---- explain records ---- */

static void test_explain_put_get_round_trip(void **state)
{
	fixture *f = *state;
	const char *id1 = "/src/recipe.lua/final/3";
	const char *id2 = "/src/recipe.lua/final/4";
	assert_null(ib_cache_explain_get(f->c, id1));
	json_t *in1 = json_pack("{s:s, s:[s,s]}", "cmd", "make", "files", "a.c", "b.c");
	json_t *in2 = json_pack("{s:s}", "cmd", "make install");
	ib_error *err = NULL;
	tu_must(ib_cache_explain_put(f->c, id1, in1, &err), &err, "put 1");
	tu_must(ib_cache_explain_put(f->c, id2, in2, &err), &err, "put 2");
	json_t *got1 = ib_cache_explain_get(f->c, id1);
	json_t *got2 = ib_cache_explain_get(f->c, id2);
	assert_non_null(got1);
	assert_non_null(got2);
	assert_true(json_equal(got1, in1));
	assert_true(json_equal(got2, in2));
	json_decref(got1);
	json_decref(got2);
	/* ids with slashes never become paths: one file per id under explain/ */
	cleanup_free char *explain = ib_path_join(f->root, "cache/explain");
	assert_int_equal(tu_count_entries(explain), 2);

	/* a put replaces the previous record of that position */
	tu_must(ib_cache_explain_put(f->c, id1, in2, &err), &err, "replace");
	got1 = ib_cache_explain_get(f->c, id1);
	assert_true(json_equal(got1, in2));
	json_decref(got1);
	assert_int_equal(tu_count_entries(explain), 2);
	json_decref(in1);
	json_decref(in2);
}

static void test_explain_hostile_id_stays_inside(void **state)
{
	fixture *f = *state;
	const char *id = "../../../../escape";
	json_t *in = json_pack("{s:s}", "x", "y");
	ib_error *err = NULL;
	tu_must(ib_cache_explain_put(f->c, id, in, &err), &err, "put");
	json_t *got = ib_cache_explain_get(f->c, id);
	assert_true(json_equal(got, in));
	json_decref(got);
	json_decref(in);
	cleanup_free char *explain = ib_path_join(f->root, "cache/explain");
	assert_int_equal(tu_count_entries(explain), 1);
	cleanup_free char *outside = ib_path_join(f->dir, "escape");
	assert_false(ib_file_exists(outside));
}

/* ---- stat cache ---- */

static int xattr_calls;

static void fake_xattrs(const char *path, char out[IB_DIGEST_BUFLEN])
{
	xattr_calls++;
	ib_digest_buffer(out, path, strlen(path));
}

/* Far enough ahead that every file of a test counts as settled. */
#define SETTLED_NOW (INT64_C(4000000000) * 1000000000)

/* Close and open the fixture's cache again (a new process, as it were). */
static void reopen(fixture *f)
{
	ib_cache_free(f->c);
	f->c = NULL;
	ib_error *err = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "reopen");
	ib_cache_stat_set_now(f->c, SETTLED_NOW);
}

static char *stat_bin(fixture *f)
{
	return ib_path_join(f->root, "cache/stat.bin");
}

static void test_file_digest_is_content_digest(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "file.txt");
	tu_write_text(p, "hello world\n");
	char want[IB_DIGEST_BUFLEN];
	ib_digest_buffer(want, "hello world\n", 12);
	expect_file_digest(f->c, p, want);
	/* asking again (now from the cache) gives the same answer */
	expect_file_digest(f->c, p, want);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);

	cleanup_free char *empty = ib_path_join(f->dir, "empty");
	tu_write_text(empty, "");
	ib_digest_buffer(want, "", 0);
	expect_file_digest(f->c, empty, want);
}

/* A file name in the test dir holding "content-A\n" (its lstat in *st),
 * hashed once, so the cache now holds its digest da; db is the digest of
 * "content-B\n".  Caller frees the path. */
static char *hashed_file(fixture *f, const char *name, struct stat *st, char da[IB_DIGEST_BUFLEN],
			 char db[IB_DIGEST_BUFLEN])
{
	char *p = ib_path_join(f->dir, name);
	tu_write_text(p, "content-A\n");
	ib_digest_buffer(da, "content-A\n", 10);
	ib_digest_buffer(db, "content-B\n", 10);
	lstat_ok(p, st);
	expect_file_digest(f->c, p, da);
	return p;
}

static void digest_with(ib_cache *c, const char *path, const struct stat *st,
			char out[IB_DIGEST_BUFLEN])
{
	ib_error *err = NULL;
	tu_must(ib_cache_file_digest(c, path, st, out, &err), &err, "file digest");
}

static void test_file_digest_reuses_cache_when_stat_unchanged(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN], d[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "src.c", &st, da, db);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
	digest_with(f->c, p, &st, d);
	assert_string_equal(d, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
	/* and in the next process, without reading the file */
	reopen(f);
	digest_with(f->c, p, &st, d);
	assert_string_equal(d, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);
}

/* Each of size, mtime, inode and ctime alone differing from the record is
 * a miss: the stat the caller passes is changed one field at a time. */
static void test_file_digest_misses_on_any_stat_field(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN], d[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "fields", &st, da, db);
	for (int field = 0; field < 5; field++) {
		struct stat other = st;
		if (field == 0)
			other.st_size++;
		else if (field == 1)
			other.st_mtim.tv_nsec = (other.st_mtim.tv_nsec + 1) % 1000000000;
		else if (field == 2)
			other.st_ino++;
		else if (field == 3)
			other.st_ctim.tv_nsec = (other.st_ctim.tv_nsec + 1) % 1000000000;
		else
			other.st_ctim.tv_sec--;
		reopen(f);
		digest_with(f->c, p, &other, d);
		assert_int_equal(ib_cache_stat_hashed(f->c), 1);
		/* the record now describes the other stat: the real one misses */
		digest_with(f->c, p, &st, d);
		assert_int_equal(ib_cache_stat_hashed(f->c), 2);
		digest_with(f->c, p, &st, d);
		assert_int_equal(ib_cache_stat_hashed(f->c), 2);
	}
}

/* Rewritten in place with the same size and mtime put back: only ctime
 * tells, and it is enough. */
static void test_file_digest_rehashes_after_content_change_keeping_mtime(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "src.c", &st, da, db);
	struct timespec pause = {0, 20 * 1000 * 1000};
	nanosleep(&pause, NULL);
	rewrite_keep_stat(p, "content-B\n", &st);
	expect_file_digest(f->c, p, db);
	reopen(f);
	expect_file_digest(f->c, p, db);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);
}

static void test_file_digest_rehashes_after_mtime_change(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "src.c", &st, da, db);
	tu_write_text(p, "content-B\n");
	/* an mtime in the past, as a checkout or an archive sets it */
	tu_set_mtime(p, st.st_mtim.tv_sec - 100, 0);
	expect_file_digest(f->c, p, db);
}

static void test_file_digest_rehashes_after_size_change(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "grow");
	tu_write_text(p, "short");
	struct stat st;
	lstat_ok(p, &st);
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	ib_digest_buffer(d1, "short", 5);
	ib_digest_buffer(d2, "much longer", 11);
	expect_file_digest(f->c, p, d1);
	tu_write_text(p, "much longer");
	struct timespec ts[2] = {st.st_atim, st.st_mtim};
	assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
	expect_file_digest(f->c, p, d2);
}

static void test_file_digest_rehashes_after_inode_change(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "swapped");
	cleanup_free char *keep = ib_path_join(f->dir, "keepalive");
	cleanup_free char *next = ib_path_join(f->dir, "swapped.new");
	tu_write_text(p, "content-A\n");
	/* keep the old inode allocated so the new file cannot reuse it */
	assert_int_equal(link(p, keep), 0);
	struct stat st;
	lstat_ok(p, &st);
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	ib_digest_buffer(da, "content-A\n", 10);
	ib_digest_buffer(db, "content-B\n", 10);
	expect_file_digest(f->c, p, da);

	tu_write_text(next, "content-B\n");
	struct timespec ts[2] = {st.st_atim, st.st_mtim};
	assert_int_equal(utimensat(AT_FDCWD, next, ts, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(rename(next, p), 0);
	struct stat now;
	lstat_ok(p, &now);
	assert_true(now.st_ino != st.st_ino);
	assert_true(now.st_size == st.st_size);
	assert_true(now.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
	expect_file_digest(f->c, p, db);
}

/* A file whose ctime is not yet a few seconds old might be edited again
 * within the same timestamp tick without any stat field changing: it is
 * hashed, not remembered, until it has settled. */
static void test_fresh_file_is_not_remembered(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "fresh");
	tu_write_text(p, "new");
	struct stat st;
	lstat_ok(p, &st);
	int64_t ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	char d[IB_DIGEST_BUFLEN];
	/* judged against the handle's own clock: too fresh */
	ib_cache_free(f->c);
	f->c = NULL;
	ib_error *err = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "open");
	digest_with(f->c, p, &st, d);
	digest_with(f->c, p, &st, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 2);
	/* a second after its ctime: still too fresh */
	ib_cache_stat_set_now(f->c, ctime_ns + 1000000000);
	digest_with(f->c, p, &st, d);
	digest_with(f->c, p, &st, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 4);
	/* settled */
	ib_cache_stat_set_now(f->c, ctime_ns + 3 * INT64_C(1000000000));
	digest_with(f->c, p, &st, d);
	digest_with(f->c, p, &st, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 5);
}

static void test_stat_cache_persists_across_reopen(void **state)
{
	fixture *f = *state;
	cleanup_free char *bin = stat_bin(f);
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "persist.txt", &st, da, db);
	reopen(f);
	assert_true(ib_file_exists(bin));
	expect_file_digest(f->c, p, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);

	/* control: without stat.bin the file is read */
	ib_cache_free(f->c);
	f->c = NULL;
	assert_int_equal(unlink(bin), 0);
	reopen(f);
	expect_file_digest(f->c, p, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
}

/* A build that changed nothing writes nothing. */
static void test_stat_cache_not_written_when_unused(void **state)
{
	fixture *f = *state;
	cleanup_free char *bin = stat_bin(f);
	ib_cache_free(f->c);
	f->c = NULL;
	assert_false(ib_file_exists(bin));
	reopen(f);

	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st, before, after;
	cleanup_free char *p = hashed_file(f, "kept", &st, da, db);
	reopen(f);
	lstat_ok(bin, &before);
	struct timespec pause = {0, 20 * 1000 * 1000};
	nanosleep(&pause, NULL);
	expect_file_digest(f->c, p, da);
	reopen(f);
	lstat_ok(bin, &after);
	assert_true(before.st_ino == after.st_ino);
	assert_true(before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
}

/* stat.bin's bytes (the cache closed). */
static char *stat_bin_read(fixture *f, size_t *len)
{
	ib_cache_free(f->c);
	f->c = NULL;
	cleanup_free char *bin = stat_bin(f);
	char *buf = NULL;
	ib_error *err = NULL;
	tu_must(ib_read_file(bin, 1 << 20, &buf, len, &err), &err, "read stat.bin");
	return buf;
}

static void stat_bin_write(fixture *f, const void *data, size_t len)
{
	ib_cache_free(f->c);
	f->c = NULL;
	cleanup_free char *bin = stat_bin(f);
	tu_write_file(bin, data, len);
	reopen(f);
}

static void hex_to_raw(const char *digest, uint8_t raw[32])
{
	for (int i = 0; i < 32; i++) {
		unsigned v;
		assert_int_equal(sscanf(digest + 7 + 2 * i, "%2x", &v), 1);
		raw[i] = (uint8_t)v;
	}
}

/* The file's record of p with its content digest replaced by the one of
 * "content-B\n" (the raw bytes found and swapped): a bait that only a file
 * trusted as a whole can make the cache return. */
static char *stat_bin_with_bait(fixture *f, const char *da, const char *db, size_t *len)
{
	char *buf = stat_bin_read(f, len);
	uint8_t ra[32], rb[32];
	hex_to_raw(da, ra);
	hex_to_raw(db, rb);
	char *at = memmem(buf, *len, ra, 32);
	assert_non_null(at);
	memcpy(at, rb, 32);
	return buf;
}

/* Round trip with a forged digest: the format is what the loader reads
 * back; then every damaged form of the same file is read as empty. */
static void test_stat_cache_corrupt_file_is_empty(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "f", &st, da, db);
	/* a second record, so damage can fall on either */
	cleanup_free char *other = ib_path_join(f->dir, "g");
	tu_write_text(other, "other");
	char dg[IB_DIGEST_BUFLEN];
	ib_digest_buffer(dg, "other", 5);
	expect_file_digest(f->c, other, dg);
	size_t len = 0;
	cleanup_free char *bait = stat_bin_with_bait(f, da, db, &len);

	/* control: the forged file as is is trusted */
	stat_bin_write(f, bait, len);
	expect_file_digest(f->c, p, db);

	/* truncated anywhere, a byte appended, the count or a path length off,
	 * junk: never the bait */
	size_t cuts[] = {len - 1, len - 8, len / 2, 20, 16, 8, 3, 0};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		stat_bin_write(f, bait, cuts[i]);
		expect_file_digest(f->c, p, da);
	}
	cleanup_free char *longer = xmalloc(len + 8);
	memcpy(longer, bait, len);
	memset(longer + len, 0, 8);
	stat_bin_write(f, longer, len + 8);
	expect_file_digest(f->c, p, da);
	for (size_t off = 8; off < 24; off++) { /* byte order mark, count, index size, zero */
		cleanup_free char *bad = xmalloc(len);
		memcpy(bad, bait, len);
		bad[off] ^= 1;
		stat_bin_write(f, bad, len);
		expect_file_digest(f->c, p, da);
	}
	/* the path length of the first record (after the 24-byte header, the
	 * index of 1024 8-byte slots, then 4*8 + 2*32 + 4 bytes) */
	size_t first = 24 + 1024 * 8;
	for (int delta = -1; delta <= 1; delta += 2) {
		cleanup_free char *bad = xmalloc(len);
		memcpy(bad, bait, len);
		bad[first + 32 + 64 + 4] = (char)(bad[first + 32 + 64 + 4] + delta);
		stat_bin_write(f, bad, len);
		expect_file_digest(f->c, p, da);
	}
	/* an index slot naming the other record (then one is named twice) or
	 * no record, or emptied (one fewer than the count) */
	uint32_t num_at[2];
	int found = 0;
	for (size_t i = 0; i < 1024 && found < 2; i++) {
		uint32_t o;
		memcpy(&o, bait + 24 + i * 8 + 4, 4);
		if (o)
			num_at[found++] = (uint32_t)(24 + i * 8 + 4);
	}
	assert_int_equal(found, 2);
	for (int k = 0; k < 2; k++) {
		for (int j = 0; j < 3; j++) {
			cleanup_free char *bad = xmalloc(len);
			memcpy(bad, bait, len);
			uint32_t num;
			memcpy(&num, bad + num_at[k], 4);
			num = j == 0 ? 3 - num : j == 1 ? 3 : 0;
			memcpy(bad + num_at[k], &num, 4);
			stat_bin_write(f, bad, len);
			expect_file_digest(f->c, p, da);
		}
	}
	static const char *junk[] = {"12 34", "x y z w /p", "", "42 1 1 abc /f"};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		stat_bin_write(f, junk[i], strlen(junk[i]));
		expect_file_digest(f->c, p, da);
	}
}

/* A file of another format version (the text one before it included) is
 * empty: an entry it holds is never used. */
static void test_stat_cache_old_version_is_empty(void **state)
{
	fixture *f = *state;
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "f", &st, da, db);
	size_t len = 0;
	cleanup_free char *bait = stat_bin_with_bait(f, da, db, &len);
	bait[7] = 1; /* the version byte of the magic */
	stat_bin_write(f, bait, len);
	expect_file_digest(f->c, p, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);

	/* version 1: "SIZE MTIME_NS INO HEX PATH\0" */
	unsigned long long mtime_ns = (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL +
				      (unsigned long long)st.st_mtim.tv_nsec;
	cleanup_free char *v1 = xasprintf("%llu %llu %llu %s %s", (unsigned long long)st.st_size,
					  mtime_ns, (unsigned long long)st.st_ino, db + 7, p);
	stat_bin_write(f, v1, strlen(v1) + 1);
	expect_file_digest(f->c, p, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
}

/* Every entry of a large file is read back (the table sized from the file
 * and grown past it), names with spaces included, xattr digests too. */
static void test_stat_cache_many_entries_survive_reopen(void **state)
{
	fixture *f = *state;
	enum { N = 3000 };
	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN], x[IB_DIGEST_BUFLEN],
	    want[IB_DIGEST_BUFLEN];
	cleanup_strv char **paths = xcalloc(1, sizeof(char *));
	for (int i = 0; i < N; i++) {
		cleanup_free char *name =
		    xasprintf("a file %d%s", i, i % 7 ? "" : " with a longer name");
		struct stat st;
		cleanup_free char *p = hashed_file(f, name, &st, da, db);
		if (i % 2)
			ib_cache_file_xattrs(f->c, p, &st, fake_xattrs, x);
		ib_strv_push(&paths, p);
	}
	reopen(f);
	xattr_calls = 0;
	for (int i = 0; i < N; i++) {
		expect_file_digest(f->c, paths[i], da);
		if (i % 2) {
			struct stat st;
			lstat_ok(paths[i], &st);
			ib_cache_file_xattrs(f->c, paths[i], &st, fake_xattrs, x);
			ib_digest_buffer(want, paths[i], strlen(paths[i]));
			assert_string_equal(x, want);
		}
	}
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);
	assert_int_equal(xattr_calls, 0);
	/* a file hashed after the load lives next to the loaded entries */
	cleanup_free char *extra = ib_path_join(f->dir, "extra");
	tu_write_text(extra, "content-B\n");
	expect_file_digest(f->c, extra, db);
	reopen(f);
	expect_file_digest(f->c, extra, db);
	expect_file_digest(f->c, paths[N - 1], da);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);
}

static void test_stat_cache_scope_drops_unused_entries(void **state)
{
	fixture *f = *state;
	cleanup_free char *scope = ib_path_join(f->dir, "ctx");
	cleanup_free char *in_a = ib_path_join(scope, "a");
	cleanup_free char *in_b = ib_path_join(scope, "b");
	cleanup_free char *out = ib_path_join(f->dir, "outside");
	ib_error *err = NULL;
	tu_must(ib_mkdir_p(scope, 0755, &err), &err, "mkdir");
	tu_write_text(in_a, "a");
	tu_write_text(in_b, "b");
	tu_write_text(out, "o");
	struct stat sa, sb, so;
	lstat_ok(in_a, &sa);
	lstat_ok(in_b, &sb);
	lstat_ok(out, &so);
	char d[IB_DIGEST_BUFLEN];
	digest_with(f->c, in_a, &sa, d);
	digest_with(f->c, in_b, &sb, d);
	digest_with(f->c, out, &so, d);

	/* second process: scope set, only "a" looked up */
	reopen(f);
	ib_cache_stat_scope(f->c, scope);
	digest_with(f->c, in_a, &sa, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);

	/* third: which entries survived */
	reopen(f);
	digest_with(f->c, out, &so, d); /* outside the scope: kept */
	digest_with(f->c, in_a, &sa, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 0);
	digest_with(f->c, in_b, &sb, d); /* dropped: hashed again */
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
}

/* The paths of stat.bin's records, in the order of the file (the cache
 * closed): the 24-byte header, the index of COUNT slots, then each record
 * (4*8 + 2*32 + 4 bytes, its path length, the path, a NUL, zeros to 8). */
static char **stat_bin_paths(fixture *f)
{
	size_t len = 0;
	cleanup_free char *buf = stat_bin_read(f, &len);
	uint32_t cap;
	memcpy(&cap, buf + 16, 4);
	char **paths = xcalloc(1, sizeof(char *));
	for (size_t off = 24 + (size_t)cap * 8; off < len;) {
		uint32_t n;
		memcpy(&n, buf + off + 100, 4);
		ib_strv_push(&paths, buf + off + 104);
		off += 104 + ((n + 1 + 7) & ~(size_t)7);
	}
	return paths;
}

/* Records are saved in the order they were first used, so the next build
 * reads the file front to back; a build of another context that saves
 * keeps that order for the records it did not use. */
static void test_stat_cache_saved_in_order_of_use(void **state)
{
	fixture *f = *state;
	enum { N = 40 };
	cleanup_free char *ctx = ib_path_join(f->dir, "ctx");
	cleanup_free char *other = ib_path_join(f->dir, "other");
	ib_error *err = NULL;
	tu_must(ib_mkdir_p(ctx, 0755, &err), &err, "mkdir");
	tu_must(ib_mkdir_p(other, 0755, &err), &err, "mkdir");
	cleanup_strv char **want = xcalloc(1, sizeof(char *));
	char d[IB_DIGEST_BUFLEN];
	/* names whose hashes scatter them over the index, used backwards */
	for (int i = N - 1; i >= 0; i--) {
		cleanup_free char *name = xasprintf("f%03d", (i * 7) % N);
		cleanup_free char *p = ib_path_join(ctx, name);
		tu_write_text(p, name);
		struct stat st;
		lstat_ok(p, &st);
		digest_with(f->c, p, &st, d);
		ib_strv_push(&want, p);
	}
	cleanup_strv char **got = stat_bin_paths(f);
	assert_int_equal(ib_strv_len(got), N);
	for (size_t i = 0; i < N; i++)
		assert_string_equal(got[i], want[i]);

	/* another context's build adds a file: it comes first, the others
	 * follow in their order */
	reopen(f);
	ib_cache_stat_scope(f->c, other);
	cleanup_free char *o = ib_path_join(other, "o");
	tu_write_text(o, "o");
	struct stat so;
	lstat_ok(o, &so);
	digest_with(f->c, o, &so, d);
	ib_strv_free(got);
	got = stat_bin_paths(f);
	assert_int_equal(ib_strv_len(got), N + 1);
	assert_string_equal(got[0], o);
	for (size_t i = 0; i < N; i++)
		assert_string_equal(got[i + 1], want[i]);
	reopen(f);
}

/* Lookups follow the file's order most of the time, but not always: in
 * any order, and for a path that is the start of the next record's, each
 * gets its own record. */
static void test_stat_cache_lookups_in_any_order(void **state)
{
	fixture *f = *state;
	static const char *names[] = {"pq", "p", "a", "b", "c", "d", "e", "p2"};
	enum { N = sizeof(names) / sizeof(names[0]) };
	char *paths[N];
	char want[N][IB_DIGEST_BUFLEN];
	for (size_t i = 0; i < N; i++) {
		paths[i] = ib_path_join(f->dir, names[i]);
		cleanup_free char *text = xasprintf("content of %s", names[i]);
		tu_write_text(paths[i], text);
		ib_digest_buffer(want[i], text, strlen(text));
		expect_file_digest(f->c, paths[i], want[i]);
	}
	/* saved in that order; then asked for: "p" first (the record after
	 * none is "pq"), backwards, skipping, twice */
	static const size_t order[] = {1, 0, 7, 6, 4, 2, 3, 5, 5, 1, 0};
	for (int round = 0; round < 2; round++) {
		reopen(f);
		for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
			expect_file_digest(f->c, paths[order[k]], want[order[k]]);
		assert_int_equal(ib_cache_stat_hashed(f->c), 0);
	}
	for (size_t i = 0; i < N; i++)
		free(paths[i]);
}

static void test_file_xattrs_remembered_until_ctime_moves(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "xa.txt");
	tu_write_text(p, "x");
	struct stat st;
	lstat_ok(p, &st);
	char d[IB_DIGEST_BUFLEN], x1[IB_DIGEST_BUFLEN], x2[IB_DIGEST_BUFLEN];
	xattr_calls = 0;
	digest_with(f->c, p, &st, d);
	ib_cache_file_xattrs(f->c, p, &st, fake_xattrs, x1);
	assert_int_equal(xattr_calls, 1);
	/* persisted: a new handle does not compute again */
	reopen(f);
	digest_with(f->c, p, &st, d);
	ib_cache_file_xattrs(f->c, p, &st, fake_xattrs, x2);
	assert_int_equal(xattr_calls, 1);
	assert_string_equal(x1, x2);
	/* a metadata change moves ctime: computed again, and so is the content */
	struct timespec pause = {0, 20 * 1000 * 1000};
	nanosleep(&pause, NULL);
	assert_int_equal(chmod(p, 0600), 0);
	lstat_ok(p, &st);
	digest_with(f->c, p, &st, d);
	assert_int_equal(ib_cache_stat_hashed(f->c), 1);
	ib_cache_file_xattrs(f->c, p, &st, fake_xattrs, x2);
	assert_int_equal(xattr_calls, 2);
}

/* A real xattr change: the directory's and the file's digests are
 * computed again (skipped where the filesystem has no user xattrs). */
static void test_xattrs_of_directories_remembered_and_changed(void **state)
{
	fixture *f = *state;
	cleanup_free char *dir = ib_path_join(f->dir, "xdir");
	cleanup_free char *file = ib_path_join(dir, "file");
	ib_error *err = NULL;
	tu_must(ib_mkdir_p(dir, 0755, &err), &err, "mkdir");
	tu_write_text(file, "x");
	const char *paths[] = {dir, file};
	for (size_t i = 0; i < 2; i++) {
		struct stat st;
		char x[IB_DIGEST_BUFLEN];
		lstat_ok(paths[i], &st);
		xattr_calls = 0;
		ib_cache_file_xattrs(f->c, paths[i], &st, fake_xattrs, x);
		reopen(f);
		ib_cache_file_xattrs(f->c, paths[i], &st, fake_xattrs, x);
		assert_int_equal(xattr_calls, 1);
		struct timespec pause = {0, 20 * 1000 * 1000};
		nanosleep(&pause, NULL);
		if (setxattr(paths[i], "user.test", "v", 1, 0) < 0) {
			assert_true(errno == ENOTSUP || errno == EPERM);
			continue;
		}
		lstat_ok(paths[i], &st);
		ib_cache_file_xattrs(f->c, paths[i], &st, fake_xattrs, x);
		assert_int_equal(xattr_calls, 2);
	}
}

static void test_file_digest_missing_file(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_path_join(f->dir, "gone");
	tu_write_text(p, "x");
	struct stat st;
	lstat_ok(p, &st);
	assert_int_equal(unlink(p), 0);
	char d[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	assert_int_equal(ib_cache_file_digest(f->c, p, &st, d, &err), IB_ENOTFOUND);
	assert_non_null(strstr(err->msg, p));
	ib_error_free(&err);
}

static void test_file_digest_refuses_symlink(void **state)
{
	fixture *f = *state;
	cleanup_free char *target = ib_path_join(f->dir, "target");
	cleanup_free char *lnk = ib_path_join(f->dir, "link");
	tu_write_text(target, "secret");
	assert_int_equal(symlink(target, lnk), 0);
	struct stat st;
	lstat_ok(lnk, &st);
	char d[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	/* the caller passes the lstat of a regular file; a symlink swapped in
	 * must not be followed to hash its target */
	assert_true(ib_cache_file_digest(f->c, lnk, &st, d, &err) < 0);
	assert_non_null(err);
	assert_int_equal(err->sys_errno, ELOOP);
	ib_error_free(&err);
}

/* ---- referenced and clear ---- */

static void test_referenced_lists_layer_digests(void **state)
{
	fixture *f = *state;
	char k1[IB_DIGEST_BUFLEN], k2[IB_DIGEST_BUFLEN], k3[IB_DIGEST_BUFLEN];
	char b1[IB_DIGEST_BUFLEN], b2[IB_DIGEST_BUFLEN], d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	digest_of(k1, "k1");
	digest_of(k2, "k2");
	digest_of(k3, "k3");
	digest_of(b1, "b1");
	digest_of(b2, "b2");
	digest_of(d1, "d1");
	digest_of(d2, "d2");
	json_t *e1 = make_entry(k1, b1, d1, 1);
	json_t *e2 = make_entry(k2, b2, d2, 2);
	json_t *broken = json_pack("{s:{s:s}}", "layer", "digest", "sha256:nothex");
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, k1, e1, &err), &err, "put 1");
	tu_must(ib_cache_step_put(f->c, k2, e2, &err), &err, "put 2");
	tu_must(ib_cache_step_put(f->c, k3, broken, &err), &err, "put broken");
	json_decref(e1);
	json_decref(e2);
	json_decref(broken);
	/* stray files in steps/ are ignored */
	cleanup_free char *junk1 = ib_path_join(f->root, "cache/steps/README");
	cleanup_free char *junk2 = ib_path_join(f->root, "cache/steps/short.json");
	tu_write_text(junk1, "{}");
	tu_write_text(junk2, "{}");

	cleanup_strv char **digests = NULL;
	cleanup_strv char **diff_ids = NULL;
	tu_must(ib_cache_referenced(f->c, &digests, &diff_ids, &err), &err, "referenced");
	assert_int_equal(ib_strv_len(digests), 2);
	assert_int_equal(ib_strv_len(diff_ids), 2);
	assert_true(strv_contains(digests, b1));
	assert_true(strv_contains(digests, b2));
	assert_true(strv_contains(diff_ids, d1));
	assert_true(strv_contains(diff_ids, d2));
	/* the vectors are parallel: the i-th diff_id belongs to the i-th blob */
	for (size_t i = 0; i < 2; i++)
		assert_true((!strcmp(digests[i], b1) && !strcmp(diff_ids[i], d1)) ||
			    (!strcmp(digests[i], b2) && !strcmp(diff_ids[i], d2)));
}

static void test_referenced_empty_cache(void **state)
{
	fixture *f = *state;
	cleanup_strv char **digests = NULL;
	cleanup_strv char **diff_ids = NULL;
	ib_error *err = NULL;
	tu_must(ib_cache_referenced(f->c, &digests, &diff_ids, &err), &err, "referenced");
	assert_non_null(digests);
	assert_non_null(diff_ids);
	assert_int_equal(ib_strv_len(digests), 0);
	assert_int_equal(ib_strv_len(diff_ids), 0);
}

static void test_clear_empties_everything(void **state)
{
	fixture *f = *state;
	char key[IB_DIGEST_BUFLEN], dg[IB_DIGEST_BUFLEN];
	digest_of(key, "k");
	digest_of(dg, "b");
	json_t *entry = make_entry(key, dg, dg, 1);
	json_t *inputs = json_pack("{s:s}", "cmd", "make");
	ib_error *err = NULL;
	tu_must(ib_cache_step_put(f->c, key, entry, &err), &err, "put");
	tu_must(ib_cache_explain_put(f->c, "pos", inputs, &err), &err, "explain put");

	char da[IB_DIGEST_BUFLEN], db[IB_DIGEST_BUFLEN];
	struct stat st;
	cleanup_free char *p = hashed_file(f, "file", &st, da, db);

	tu_must(ib_cache_clear(f->c, &err), &err, "clear");
	assert_null(ib_cache_step_get(f->c, key));
	assert_null(ib_cache_explain_get(f->c, "pos"));
	cleanup_strv char **digests = NULL;
	cleanup_strv char **diff_ids = NULL;
	tu_must(ib_cache_referenced(f->c, &digests, &diff_ids, &err), &err, "referenced");
	assert_int_equal(ib_strv_len(digests), 0);
	cleanup_free char *steps = ib_path_join(f->root, "cache/steps");
	cleanup_free char *explain = ib_path_join(f->root, "cache/explain");
	assert_true(is_dir(steps));
	assert_true(is_dir(explain));
	assert_int_equal(tu_count_entries(steps), 0);
	assert_int_equal(tu_count_entries(explain), 0);

	/* the stat cache is gone too: the unchanged file is read again */
	size_t hashed = ib_cache_stat_hashed(f->c);
	expect_file_digest(f->c, p, da);
	assert_int_equal(ib_cache_stat_hashed(f->c), hashed + 1);

	/* and the cache keeps working */
	tu_must(ib_cache_step_put(f->c, key, entry, &err), &err, "put after clear");
	json_t *got = ib_cache_step_get(f->c, key);
	assert_true(json_equal(got, entry));
	json_decref(got);
	json_decref(entry);
	json_decref(inputs);
}

static void test_clear_leaves_store_blobs_alone(void **state)
{
	fixture *f = *state;
	char dg[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->s, "blob", 4, dg, &err), &err, "blob put");
	tu_must(ib_cache_clear(f->c, &err), &err, "clear");
	assert_true(ib_store_blob_exists(f->s, dg));
}

/* ---- blob locations (registry-blobs.json) ---- */

static void test_blob_where_names_another_repository_of_the_registry(void **state)
{
	fixture *f = *state;
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	digest_of(d1, "one");
	digest_of(d2, "two");
	char *digests[] = {d1, NULL};
	ib_error *err = NULL;
	tu_must(ib_cache_blob_seen(f->c, "reg:5000/team/a", digests, &err), &err, "seen");
	cleanup_free char *w = ib_cache_blob_where(f->c, d1, "reg:5000", "reg:5000/b");
	assert_string_equal(w, "team/a");
	/* not the repository itself, not another registry, not another blob */
	assert_null(ib_cache_blob_where(f->c, d1, "reg:5000", "reg:5000/team/a"));
	assert_null(ib_cache_blob_where(f->c, d1, "reg", NULL));
	assert_null(ib_cache_blob_where(f->c, d2, "reg:5000", NULL));

	/* the most recent repository first, and it lasts across a reopen */
	tu_must(ib_cache_blob_seen(f->c, "reg:5000/c", digests, &err), &err, "seen");
	ib_cache_free(f->c);
	f->c = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "reopen");
	cleanup_free char *w2 = ib_cache_blob_where(f->c, d1, "reg:5000", "reg:5000/b");
	assert_string_equal(w2, "c");
	cleanup_free char *path = xasprintf("%s/cache/registry-blobs.json", f->root);
	assert_true(ib_file_exists(path));
}

static void test_blob_records_prune_keeps_only_blobs_in_the_store(void **state)
{
	fixture *f = *state;
	char kept[IB_DIGEST_BUFLEN], gone[IB_DIGEST_BUFLEN];
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->s, "blob", 4, kept, &err), &err, "blob put");
	digest_of(gone, "not in the store");
	char *digests[] = {kept, gone, NULL};
	tu_must(ib_cache_blob_seen(f->c, "reg/a", digests, &err), &err, "seen");
	/* files older versions kept in the store root */
	cleanup_free char *legacy = xasprintf("%s/registry-blobs.json", f->root);
	cleanup_free char *legacy_lock = xasprintf("%s/registry-blobs.lock", f->root);
	tu_must(ib_write_file_atomic(legacy, "{}", 2, 0644, &err), &err, "legacy");
	tu_must(ib_write_file_atomic(legacy_lock, "", 0, 0644, &err), &err, "legacy lock");

	tu_must(ib_cache_blob_records_prune(f->c, &err), &err, "prune");
	assert_false(ib_file_exists(legacy));
	assert_false(ib_file_exists(legacy_lock));
	cleanup_free char *w = ib_cache_blob_where(f->c, kept, "reg", NULL);
	assert_string_equal(w, "a");
	assert_null(ib_cache_blob_where(f->c, gone, "reg", NULL));
	/* and on disk, for the next process */
	ib_cache_free(f->c);
	f->c = NULL;
	tu_must(ib_cache_open(&f->c, f->s, &err), &err, "reopen");
	assert_null(ib_cache_blob_where(f->c, gone, "reg", NULL));
	cleanup_free char *w2 = ib_cache_blob_where(f->c, kept, "reg", NULL);
	assert_string_equal(w2, "a");
}

static void test_clear_drops_blob_locations(void **state)
{
	fixture *f = *state;
	char d[IB_DIGEST_BUFLEN];
	digest_of(d, "one");
	char *digests[] = {d, NULL};
	ib_error *err = NULL;
	tu_must(ib_cache_blob_seen(f->c, "reg/a", digests, &err), &err, "seen");
	tu_must(ib_cache_clear(f->c, &err), &err, "clear");
	assert_null(ib_cache_blob_where(f->c, d, "reg", NULL));
}

/* Entry file of key with its mtime set to t. */
static void age_entry(const fixture *f, const char *key, time_t t)
{
	cleanup_free char *p = xasprintf("%s/cache/steps/%s.json", f->root, key + 7);
	struct timespec ts[2] = {{t, 0}, {t, 0}};
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_trim_keeps_newest_within_budget(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char small[IB_DIGEST_BUFLEN], big[IB_DIGEST_BUFLEN], d[IB_DIGEST_BUFLEN];
	char kn[IB_DIGEST_BUFLEN], ko[IB_DIGEST_BUFLEN], km[IB_DIGEST_BUFLEN];
	char buf[300];
	memset(buf, 'x', sizeof(buf));
	tu_must(ib_store_blob_put(f->s, buf, 100, small, &err), &err, "blob 100");
	tu_must(ib_store_blob_put(f->s, buf, 300, big, &err), &err, "blob 300");
	digest_of(d, "d");
	digest_of(kn, "newest");
	digest_of(ko, "oldest");
	digest_of(km, "middle");
	json_t *en = make_entry(kn, small, d, 100);
	json_t *em = make_entry(km, big, d, 300);
	json_t *eo = make_entry(ko, small, d, 100);
	tu_must(ib_cache_step_put(f->c, kn, en, &err), &err, "put newest");
	tu_must(ib_cache_step_put(f->c, km, em, &err), &err, "put middle");
	tu_must(ib_cache_step_put(f->c, ko, eo, &err), &err, "put oldest");
	json_decref(en);
	json_decref(em);
	json_decref(eo);
	age_entry(f, kn, 3000);
	age_entry(f, km, 2000);
	age_entry(f, ko, 1000);
	/* 250 bytes: the newest (100) fits, the middle one (300) does not, the
	 * oldest (100) still fits after it */
	size_t dropped = 0;
	tu_must(ib_cache_trim(f->c, f->s, 250, &dropped, &err), &err, "trim");
	assert_int_equal(dropped, 1);
	json_t *j = ib_cache_step_get(f->c, kn);
	assert_non_null(j);
	json_decref(j);
	assert_null(ib_cache_step_get(f->c, km));
	j = ib_cache_step_get(f->c, ko);
	assert_non_null(j);
	json_decref(j);
	/* budget 0 drops everything that costs bytes */
	tu_must(ib_cache_trim(f->c, f->s, 0, &dropped, &err), &err, "trim 0");
	assert_int_equal(dropped, 2);
	assert_null(ib_cache_step_get(f->c, kn));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_open_creates_cache_dirs),
	    T(test_step_put_get_round_trip),
	    T(test_step_get_missing_is_miss),
	    T(test_step_put_replaces),
	    T(test_step_entries_survive_reopen),
	    T(test_step_invalid_key_rejected),
	    T(test_step_invalid_entry_is_miss),
	    T(test_step_corrupt_file_is_miss),
	    T(test_explain_put_get_round_trip),
	    T(test_explain_hostile_id_stays_inside),
	    T(test_file_digest_is_content_digest),
	    T(test_file_digest_reuses_cache_when_stat_unchanged),
	    T(test_file_digest_misses_on_any_stat_field),
	    T(test_file_digest_rehashes_after_content_change_keeping_mtime),
	    T(test_file_digest_rehashes_after_mtime_change),
	    T(test_file_digest_rehashes_after_size_change),
	    T(test_file_digest_rehashes_after_inode_change),
	    T(test_fresh_file_is_not_remembered),
	    T(test_stat_cache_many_entries_survive_reopen),
	    T(test_stat_cache_scope_drops_unused_entries),
	    T(test_stat_cache_saved_in_order_of_use),
	    T(test_stat_cache_lookups_in_any_order),
	    T(test_stat_cache_persists_across_reopen),
	    T(test_stat_cache_not_written_when_unused),
	    T(test_stat_cache_corrupt_file_is_empty),
	    T(test_stat_cache_old_version_is_empty),
	    T(test_file_xattrs_remembered_until_ctime_moves),
	    T(test_xattrs_of_directories_remembered_and_changed),
	    T(test_file_digest_missing_file),
	    T(test_file_digest_refuses_symlink),
	    T(test_referenced_lists_layer_digests),
	    T(test_referenced_empty_cache),
	    T(test_clear_empties_everything),
	    T(test_clear_leaves_store_blobs_alone),
	    T(test_blob_where_names_another_repository_of_the_registry),
	    T(test_blob_records_prune_keeps_only_blobs_in_the_store),
	    T(test_clear_drops_blob_locations),
	    T(test_trim_keeps_newest_within_budget),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
