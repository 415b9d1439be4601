/* The local store (src/lib/store.c): blobs, tags in index.json, images,
 * locking, prune and verify.  Every test works in its own temp root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "error.h"
#include "oci.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

/* sha256("hello") */
#define HELLO_DIGEST "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

typedef struct fixture {
	char *root;
	ib_store *s;
} fixture;

static int setup(void **state)
{
	fixture *f = xcalloc(1, sizeof(*f));
	cleanup_free char *tmp = tu_tmpdir();
	/* a root that does not exist yet: open must create it */
	f->root = xasprintf("%s/nested/root", tmp);
	f->s = tu_store_open(f->root);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	ib_store_free(f->s);
	char *top = xstrdup(f->root);
	char *p = strstr(top, "/nested/root");
	*p = '\0';
	tu_rm_rf(top);
	free(top);
	free(f->root);
	free(f);
	return 0;
}

/* ---- helpers ---- */

static char *path_in(fixture *f, const char *rel)
{
	return ib_path_join(f->root, rel);
}

static void put(fixture *f, const char *data, char digest[IB_DIGEST_BUFLEN])
{
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->s, data, strlen(data), digest, &err), &err, "blob put");
}

/* One image: a layer blob with content "layer:<seed>" (its diff_id is
 * taken as the digest of that content, as if uncompressed), a config for
 * os/arch and a manifest carrying the annotation "seed". */
static json_t *make_config(const char *arch, const char *diff_id)
{
	json_t *cfg =
	    json_pack("{s:s, s:s, s:{s:s, s:[s]}, s:{s:[s]}}", "architecture", arch, "os", "linux",
		      "rootfs", "type", "layers", "diff_ids", diff_id, "config", "Cmd", "/bin/sh");
	assert_non_null(cfg);
	return cfg;
}

static void make_image(fixture *f, const char *seed, const char *arch, ib_descriptor *desc_out)
{
	ib_error *err = NULL;
	cleanup_free char *content = xasprintf("layer:%s", seed);
	ib_descriptor layer;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = IB_MT_OCI_LAYER;
	layer.size = (int64_t)strlen(content);
	put(f, content, layer.digest);
	json_t *cfg = make_config(arch, layer.digest);
	json_t *ann = json_pack("{s:s}", "seed", seed);
	tu_must(ib_store_image_write(f->s, cfg, &layer, 1, ann, desc_out, &err), &err,
		"image write");
	json_decref(cfg);
	json_decref(ann);
}

static void tag(fixture *f, const char *name, const ib_descriptor *d)
{
	ib_error *err = NULL;
	tu_must(ib_store_tag_set(f->s, name, d, &err), &err, name);
}

static ib_image *load_ok(fixture *f, const char *ref)
{
	ib_image *img = NULL;
	ib_error *err = NULL;
	if (ib_store_image_load(f->s, ref, &img, &err) < 0)
		fail_msg("load %s: %s", ref, ib_error_msg(err));
	assert_non_null(img);
	return img;
}

/* Expect a failure with `code` and a message containing `needle`. */
static void load_fails(fixture *f, const char *ref, int code, const char *needle)
{
	ib_image *img = NULL;
	ib_error *err = NULL;
	int r = ib_store_image_load(f->s, ref, &img, &err);
	if (r == 0)
		fail_msg("load %s succeeded", ref);
	assert_int_equal(r, code);
	assert_null(img);
	assert_non_null(err);
	if (!strstr(err->msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
	ib_error_free(&err);
}

static void corrupt_blob(fixture *f, const char *digest)
{
	cleanup_free char *p = ib_store_blob_path(f->s, digest);
	int fd = open(p, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 0), 1);
	close(fd);
}

/* ---- layout ---- */

static void test_open_creates_layout(void **state)
{
	fixture *f = *state;
	cleanup_free char *layout = path_in(f, "oci/oci-layout");
	cleanup_free char *data = NULL;
	size_t len;
	ib_error *err = NULL;
	tu_must(ib_read_file(layout, 4096, &data, &len, &err), &err, "read oci-layout");
	assert_string_equal(data, "{\"imageLayoutVersion\":\"1.0.0\"}");

	cleanup_free char *index = path_in(f, "oci/index.json");
	json_t *j = json_load_file(index, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "schemaVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(j, "mediaType")), IB_MT_OCI_INDEX);
	assert_int_equal(json_array_size(json_object_get(j, "manifests")), 0);
	json_decref(j);

	const char *dirs[] = {"oci/blobs/sha256", "layers", "tmp"};
	for (size_t i = 0; i < 3; i++) {
		cleanup_free char *p = path_in(f, dirs[i]);
		struct stat st;
		assert_int_equal(stat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
	}
	assert_string_equal(ib_store_root(f->s), f->root);
	cleanup_free char *oci = path_in(f, "oci");
	assert_string_equal(ib_store_layout_dir(f->s), oci);

	/* a second open of an existing store works and changes nothing */
	ib_store *s2 = NULL;
	tu_must(ib_store_open(&s2, f->root, &err), &err, "reopen");
	ib_store_free(s2);
}

static void test_open_rejects_file_as_root(void **state)
{
	fixture *f = *state;
	cleanup_free char *file = path_in(f, "plainfile");
	tu_write_text(file, "x");
	ib_store *s = NULL;
	ib_error *err = NULL;
	assert_true(ib_store_open(&s, file, &err) < 0);
	assert_null(s);
	assert_non_null(err);
	ib_error_free(&err);
}

static void test_tmp_path_unique_under_tmp(void **state)
{
	fixture *f = *state;
	cleanup_free char *a = ib_store_tmp_path(f->s, "x");
	cleanup_free char *b = ib_store_tmp_path(f->s, "x");
	cleanup_free char *tmp = path_in(f, "tmp/x-");
	assert_string_not_equal(a, b);
	assert_memory_equal(a, tmp, strlen(tmp));
	assert_false(ib_file_exists(a));
}

/* ---- blobs ---- */

static void test_blob_put_read_roundtrip(void **state)
{
	fixture *f = *state;
	char digest[IB_DIGEST_BUFLEN];
	put(f, "hello", digest);
	assert_string_equal(digest, HELLO_DIGEST);
	assert_true(ib_store_blob_exists(f->s, HELLO_DIGEST));

	cleanup_free char *path = ib_store_blob_path(f->s, HELLO_DIGEST);
	cleanup_free char *want =
	    path_in(f, "oci/blobs/sha256/"
		       "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
	assert_string_equal(path, want);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);

	char *data = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	tu_must(ib_store_blob_read(f->s, HELLO_DIGEST, 100, &data, &len, &err), &err, "read");
	assert_int_equal(len, 5);
	assert_string_equal(data, "hello");
	free(data);

	int fd = -1;
	int64_t size = 0;
	tu_must(ib_store_blob_open(f->s, HELLO_DIGEST, &fd, &size, &err), &err, "open");
	assert_int_equal(size, 5);
	close(fd);
	assert_int_equal(ib_store_blob_verify(f->s, HELLO_DIGEST, &err), 0);
	/* nothing is left behind in tmp */
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
}

static void test_blob_put_existing_is_idempotent(void **state)
{
	fixture *f = *state;
	char d1[IB_DIGEST_BUFLEN], d2[IB_DIGEST_BUFLEN];
	put(f, "hello", d1);
	put(f, "hello", d2);
	assert_string_equal(d1, d2);
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	assert_int_equal(tu_count_entries(blobs), 1);
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
}

/* An interrupted build removes its own temp entries: a blob being written
 * (a layer's compression) is one of them. */
static void test_tmp_remove_own_takes_blob_writer_temp(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	tu_must(ib_blob_writer_write(w, "x", 1, &err), &err, "write");
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 1);
	assert_int_equal(ib_store_tmp_remove_own(f->s), 1);
	assert_int_equal(tu_count_entries(tmp), 0);
	ib_blob_writer_abort(w);
}

static void test_blob_writer_streams_large_content(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	/* chunk sizes around the internal buffer size, including big ones */
	size_t total = 0;
	ib_digest_ctx *h = ib_digest_new();
	unsigned char *chunk = xmalloc(300000);
	size_t sizes[] = {1, 7, 4096, 131072, 131071, 300000, 2, 65536, 0, 99999};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (size_t k = 0; k < sizes[i]; k++)
			chunk[k] = (unsigned char)(k * 31 + i);
		ib_digest_update(h, chunk, sizes[i]);
		tu_must(ib_blob_writer_write(w, chunk, sizes[i], &err), &err, "write");
		total += sizes[i];
		assert_int_equal(ib_blob_writer_size(w), (int64_t)total);
	}
	char want[IB_DIGEST_BUFLEN];
	ib_digest_final(h, want);
	ib_digest_free(h);
	free(chunk);

	char got[IB_DIGEST_BUFLEN];
	int64_t size = -1;
	tu_must(ib_blob_writer_commit(w, want, (int64_t)total, got, &size, &err), &err, "commit");
	assert_string_equal(got, want);
	assert_int_equal(size, (int64_t)total);
	assert_int_equal(ib_store_blob_verify(f->s, want, &err), 0);
	cleanup_free char *path = ib_store_blob_path(f->s, want);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, (off_t)total);
}

static void test_blob_writer_digest_mismatch_stores_nothing(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	tu_must(ib_blob_writer_write(w, "hellO", 5, &err), &err, "write");
	char got[IB_DIGEST_BUFLEN] = "";
	int r = ib_blob_writer_commit(w, HELLO_DIGEST, 5, got, NULL, &err);
	assert_int_equal(r, IB_EDIGEST);
	assert_non_null(err);
	assert_non_null(
	    strstr(err->msg, "digest mismatch: expected " HELLO_DIGEST ", got sha256:"));
	ib_error_free(&err);
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	assert_int_equal(tu_count_entries(blobs), 0);
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
	assert_false(ib_store_blob_exists(f->s, HELLO_DIGEST));
}

static void test_blob_writer_size_mismatch_stores_nothing(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	tu_must(ib_blob_writer_write(w, "hello", 5, &err), &err, "write");
	assert_int_equal(ib_blob_writer_commit(w, HELLO_DIGEST, 6, NULL, NULL, &err), IB_EDIGEST);
	assert_non_null(strstr(err->msg, "size mismatch"));
	ib_error_free(&err);
	assert_false(ib_store_blob_exists(f->s, HELLO_DIGEST));
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
}

static void test_blob_writer_bad_expected_digest(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	tu_must(ib_blob_writer_write(w, "hello", 5, &err), &err, "write");
	assert_int_equal(ib_blob_writer_commit(w, "sha256:../../x", -1, NULL, NULL, &err),
			 IB_EINVALID);
	ib_error_free(&err);
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
}

static void test_blob_writer_abort_removes_temp(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_blob_writer *w = NULL;
	tu_must(ib_blob_writer_new(&w, f->s, &err), &err, "writer");
	tu_must(ib_blob_writer_write(w, "hello", 5, &err), &err, "write");
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 1);
	ib_blob_writer_abort(w);
	ib_blob_writer_abort(NULL);
	assert_int_equal(tu_count_entries(tmp), 0);
	assert_false(ib_store_blob_exists(f->s, HELLO_DIGEST));
}

static void test_blob_read_size_cap(void **state)
{
	fixture *f = *state;
	char digest[IB_DIGEST_BUFLEN];
	put(f, "hello", digest);
	char *data = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_blob_read(f->s, digest, 4, &data, NULL, &err), IB_ETOOLARGE);
	assert_null(data);
	ib_error_free(&err);
	tu_must(ib_store_blob_read(f->s, digest, 5, &data, NULL, &err), &err, "read at cap");
	free(data);
}

static void test_blob_read_missing_is_not_found(void **state)
{
	fixture *f = *state;
	char *data = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_blob_read(f->s, HELLO_DIGEST, 100, &data, NULL, &err),
			 IB_ENOTFOUND);
	assert_non_null(strstr(err->msg, HELLO_DIGEST));
	ib_error_free(&err);
	assert_int_equal(ib_store_blob_verify(f->s, HELLO_DIGEST, &err), IB_ENOTFOUND);
	ib_error_free(&err);
}

static void test_blob_read_detects_corruption(void **state)
{
	fixture *f = *state;
	char digest[IB_DIGEST_BUFLEN];
	put(f, "hello", digest);
	corrupt_blob(f, digest);
	char *data = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_store_blob_read(f->s, digest, 100, &data, NULL, &err), IB_EDIGEST);
	assert_null(data);
	assert_non_null(strstr(err->msg, "digest mismatch"));
	ib_error_free(&err);
	assert_int_equal(ib_store_blob_verify(f->s, digest, &err), IB_EDIGEST);
	ib_error_free(&err);
}

static void test_blob_rewrite_repairs_truncated_blob(void **state)
{
	fixture *f = *state;
	char digest[IB_DIGEST_BUFLEN];
	put(f, "hello", digest);
	cleanup_free char *p = ib_store_blob_path(f->s, digest);
	assert_int_equal(truncate(p, 2), 0);
	put(f, "hello", digest);
	ib_error *err = NULL;
	assert_int_equal(ib_store_blob_verify(f->s, digest, &err), 0);
}

static void test_blob_invalid_digest_never_escapes(void **state)
{
	fixture *f = *state;
	cleanup_free char *p = ib_store_blob_path(f->s, "sha256:../../../etc/passwd");
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256/");
	assert_memory_equal(p, blobs, strlen(blobs));
	assert_null(strstr(p, ".."));
	assert_false(ib_store_blob_exists(f->s, "sha256:../../../etc/passwd"));
	assert_false(ib_store_blob_exists(f->s, "md5:abc"));
	int fd = -1;
	int64_t size;
	ib_error *err = NULL;
	assert_int_equal(ib_store_blob_open(f->s, "sha256:../x", &fd, &size, &err), IB_EINVALID);
	ib_error_free(&err);
	cleanup_free char *l = ib_store_layer_dir(f->s, "../../x");
	assert_null(strstr(l, ".."));
}

/* ---- tags ---- */

static void test_tag_set_get_list_remove(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "a", "amd64", &d);
	tag(f, "docker.io/library/b:1", &d);
	tag(f, "docker.io/library/a:latest", &d);

	ib_error *err = NULL;
	ib_descriptor got;
	tu_must(ib_store_tag_get(f->s, "docker.io/library/a:latest", &got, &err), &err, "get");
	assert_string_equal(got.digest, d.digest);
	assert_string_equal(got.media_type, IB_MT_OCI_MANIFEST);
	assert_int_equal(got.size, d.size);
	assert_string_equal(json_string_value(json_object_get(got.annotations, IB_ANNOT_REF_NAME)),
			    "docker.io/library/a:latest");
	ib_descriptor_clear(&got);

	ib_store_tag *tags = NULL;
	size_t n = 0;
	tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags");
	assert_int_equal(n, 2);
	assert_string_equal(tags[0].name, "docker.io/library/a:latest");
	assert_string_equal(tags[1].name, "docker.io/library/b:1");
	assert_string_equal(tags[1].desc.digest, d.digest);
	ib_store_tags_free(tags, n);

	tu_must(ib_store_tag_remove(f->s, "docker.io/library/a:latest", &err), &err, "remove");
	assert_int_equal(ib_store_tag_get(f->s, "docker.io/library/a:latest", &got, &err),
			 IB_ENOTFOUND);
	assert_string_equal(err->msg, "image \"a:latest\" not found in the store");
	ib_error_free(&err);
	tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags");
	assert_int_equal(n, 1);
	ib_store_tags_free(tags, n);
	/* the blobs stay until prune */
	assert_true(ib_store_blob_exists(f->s, d.digest));
	ib_descriptor_clear(&d);
}

static void test_tag_remove_missing_is_not_found(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	assert_int_equal(ib_store_tag_remove(f->s, "docker.io/library/alpine:latest", &err),
			 IB_ENOTFOUND);
	assert_string_equal(err->msg, "image \"alpine:latest\" not found in the store");
	ib_error_free(&err);
}

static void test_tag_replace_points_at_new_image(void **state)
{
	fixture *f = *state;
	ib_descriptor d1, d2;
	make_image(f, "one", "amd64", &d1);
	make_image(f, "two", "amd64", &d2);
	assert_string_not_equal(d1.digest, d2.digest);
	tag(f, "localhost:5000/app:v1", &d1);
	tag(f, "localhost:5000/app:v1", &d2);
	ib_store_tag *tags = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags");
	assert_int_equal(n, 1);
	assert_string_equal(tags[0].desc.digest, d2.digest);
	ib_store_tags_free(tags, n);
	ib_descriptor_clear(&d1);
	ib_descriptor_clear(&d2);
}

static void test_tag_set_requires_stored_manifest(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	memset(&d, 0, sizeof(d));
	d.media_type = IB_MT_OCI_MANIFEST;
	d.size = 5;
	memcpy(d.digest, HELLO_DIGEST, IB_DIGEST_BUFLEN);
	ib_error *err = NULL;
	assert_int_equal(ib_store_tag_set(f->s, "docker.io/library/x:latest", &d, &err),
			 IB_ENOTFOUND);
	ib_error_free(&err);
	memcpy(d.digest, "sha256:nothex", 14);
	assert_int_equal(ib_store_tag_set(f->s, "docker.io/library/x:latest", &d, &err),
			 IB_EINVALID);
	ib_error_free(&err);
}

static void test_index_json_is_valid_and_deterministic(void **state)
{
	fixture *f = *state;
	ib_descriptor d1, d2;
	make_image(f, "one", "amd64", &d1);
	make_image(f, "two", "arm64", &d2);
	tag(f, "docker.io/library/zeta:latest", &d1);
	tag(f, "docker.io/library/alpha:3", &d2);

	cleanup_free char *index = path_in(f, "oci/index.json");
	cleanup_free char *bytes1 = NULL;
	size_t len1;
	ib_error *err = NULL;
	tu_must(ib_read_file(index, 1 << 20, &bytes1, &len1, &err), &err, "read index");
	json_error_t jerr;
	json_t *j = json_loadb(bytes1, len1, 0, &jerr);
	if (!j)
		fail_msg("index.json is not JSON: %s", jerr.text);
	assert_int_equal(json_integer_value(json_object_get(j, "schemaVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(j, "mediaType")), IB_MT_OCI_INDEX);
	json_t *ms = json_object_get(j, "manifests");
	assert_int_equal(json_array_size(ms), 2);
	json_t *e0 = json_array_get(ms, 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(e0, "annotations"),
							      "org.opencontainers.image.ref.name")),
			    "docker.io/library/alpha:3");
	assert_string_equal(json_string_value(json_object_get(e0, "mediaType")),
			    IB_MT_OCI_MANIFEST);
	assert_string_equal(json_string_value(json_object_get(e0, "digest")), d2.digest);
	assert_int_equal(json_integer_value(json_object_get(e0, "size")), d2.size);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(e0, "platform"), "architecture")),
	    "arm64");
	json_decref(j);

	/* same tags set in the other order in a fresh store: same bytes */
	cleanup_free char *root2 = xasprintf("%s2", f->root);
	ib_store *s2 = NULL;
	tu_must(ib_store_open(&s2, root2, &err), &err, "open 2");
	ib_store *saved = f->s;
	char *saved_root = f->root;
	f->s = s2;
	f->root = root2;
	ib_descriptor e1, e2;
	make_image(f, "one", "amd64", &e1);
	make_image(f, "two", "arm64", &e2);
	tag(f, "docker.io/library/alpha:3", &e2);
	tag(f, "docker.io/library/zeta:latest", &e1);
	f->s = saved;
	f->root = saved_root;
	cleanup_free char *index2 = ib_path_join(root2, "oci/index.json");
	cleanup_free char *bytes2 = NULL;
	size_t len2;
	tu_must(ib_read_file(index2, 1 << 20, &bytes2, &len2, &err), &err, "read index 2");
	assert_int_equal(len1, len2);
	assert_memory_equal(bytes1, bytes2, len1);
	ib_store_free(s2);
	ib_rm_rf(root2, NULL);
	ib_descriptor_clear(&d1);
	ib_descriptor_clear(&d2);
	ib_descriptor_clear(&e1);
	ib_descriptor_clear(&e2);
}

static void test_index_json_keeps_foreign_entries(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "one", "amd64", &d);
	/* an entry without a ref.name, as another tool may write */
	cleanup_free char *index = path_in(f, "oci/index.json");
	cleanup_free char *doc =
	    xasprintf("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":\"%s\","
		      "\"size\":%lld}]}",
		      IB_MT_OCI_MANIFEST, d.digest, (long long)d.size);
	tu_write_text(index, doc);
	tag(f, "docker.io/library/x:latest", &d);
	json_t *j = json_load_file(index, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "manifests")), 2);
	json_decref(j);
	ib_store_tag *tags = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags");
	assert_int_equal(n, 1);
	ib_store_tags_free(tags, n);
	ib_descriptor_clear(&d);
}

static void test_concurrent_tag_set_from_processes(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "shared", "amd64", &d);
	enum { PROCS = 8, TAGS = 20 };
	pid_t pids[PROCS];
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			ib_store *s = NULL;
			if (ib_store_open(&s, f->root, NULL) < 0)
				_exit(2);
			for (int t = 0; t < TAGS; t++) {
				char name[64];
				snprintf(name, sizeof(name), "localhost/p%d:t%d", p, t);
				if (ib_store_tag_set(s, name, &d, NULL) < 0)
					_exit(3);
			}
			ib_store_free(s);
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int status;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	ib_store_tag *tags = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags");
	assert_int_equal(n, PROCS * TAGS);
	for (int p = 0; p < PROCS; p++) {
		for (int t = 0; t < TAGS; t++) {
			char name[64];
			snprintf(name, sizeof(name), "localhost/p%d:t%d", p, t);
			ib_descriptor got;
			tu_must(ib_store_tag_get(f->s, name, &got, &err), &err, name);
			ib_descriptor_clear(&got);
		}
	}
	ib_store_tags_free(tags, n);
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
	ib_descriptor_clear(&d);
}

/* kill -9 while tagging in a loop: index.json always parses and only
 * ROOT/tmp may hold leftovers. */
static void test_kill9_never_leaves_half_index(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "k", "amd64", &d);
	cleanup_free char *index = path_in(f, "oci/index.json");
	cleanup_free char *oci = path_in(f, "oci");
	for (int round = 0; round < 12; round++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			ib_store *s = NULL;
			if (ib_store_open(&s, f->root, NULL) < 0)
				_exit(2);
			for (unsigned i = 0;; i++) {
				char name[64];
				snprintf(name, sizeof(name), "localhost/k:%u", i % 50);
				ib_store_tag_set(s, name, &d, NULL);
				ib_store_blob_put(s, name, strlen(name), NULL, NULL);
			}
		}
		struct timespec ts = {0, (long)(1 + round * 3) * 1000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		json_t *j = json_load_file(index, 0, NULL);
		assert_non_null(j);
		json_decref(j);
		ib_error *err = NULL;
		ib_store_tag *tags = NULL;
		size_t n = 0;
		tu_must(ib_store_tags(f->s, &tags, &n, &err), &err, "tags after kill");
		ib_store_tags_free(tags, n);
		assert_int_equal(tu_count_entries(oci), 3); /* oci-layout index.json blobs */
		assert_int_equal(ib_store_verify(f->s, NULL, NULL, &err), 0);
	}
	ib_descriptor_clear(&d);
}

/* ---- images ---- */

static void test_image_write_and_load_by_tag(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "a", "amd64", &d);
	assert_string_equal(d.media_type, IB_MT_OCI_MANIFEST);
	assert_string_equal(d.platform.os, "linux");
	assert_string_equal(d.platform.architecture, "amd64");
	assert_true(ib_store_blob_exists(f->s, d.digest));
	tag(f, "docker.io/library/alpine:latest", &d);

	ib_image *img = load_ok(f, "alpine");
	assert_string_equal(img->desc.digest, d.digest);
	assert_int_equal(img->desc.size, d.size);
	assert_null(img->desc.annotations); /* ref.name is not part of the image */
	assert_int_equal(img->manifest->n_layers, 1);
	assert_string_equal(img->manifest->media_type, IB_MT_OCI_MANIFEST);
	assert_string_equal(img->manifest->config.media_type, IB_MT_OCI_CONFIG);
	assert_string_equal(json_string_value(json_object_get(img->manifest->annotations, "seed")),
			    "a");
	assert_string_equal(json_string_value(json_object_get(img->config, "architecture")),
			    "amd64");
	assert_int_equal(ib_config_n_diff_ids(img->config), 1);
	char raw_digest[IB_DIGEST_BUFLEN];
	ib_digest_buffer(raw_digest, img->manifest_raw, img->manifest_len);
	assert_string_equal(raw_digest, d.digest);
	ib_image_free(img);

	/* the full form works too */
	img = load_ok(f, "docker.io/library/alpine:latest");
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);
	ib_descriptor_clear(&d);
}

static void test_image_write_is_deterministic(void **state)
{
	fixture *f = *state;
	ib_descriptor d1, d2;
	make_image(f, "same", "amd64", &d1);
	make_image(f, "same", "amd64", &d2);
	assert_string_equal(d1.digest, d2.digest);
	ib_descriptor_clear(&d1);
	ib_descriptor_clear(&d2);
}

static void test_image_load_by_digest_and_prefix(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "a", "amd64", &d);
	tag(f, "docker.io/library/a:latest", &d);

	ib_image *img = load_ok(f, d.digest);
	assert_string_equal(img->desc.digest, d.digest);
	assert_string_equal(img->desc.media_type, IB_MT_OCI_MANIFEST);
	assert_string_equal(img->desc.platform.architecture, "amd64");
	ib_image_free(img);

	char prefix[16];
	snprintf(prefix, sizeof(prefix), "%.12s", ib_digest_hex(d.digest));
	img = load_ok(f, prefix);
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);

	snprintf(prefix, sizeof(prefix), "sha256:%.5s", ib_digest_hex(d.digest));
	img = load_ok(f, prefix);
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);

	cleanup_free char *named = xasprintf("whatever/name@%s", d.digest);
	img = load_ok(f, named);
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);

	ib_error *err = NULL;
	tu_must(ib_store_image_load_digest(f->s, d.digest, &img, &err), &err, "load digest");
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);
	ib_descriptor_clear(&d);
}

static void test_image_load_prefix_of_untagged_manifest(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "untagged", "amd64", &d);
	char prefix[16];
	snprintf(prefix, sizeof(prefix), "%.8s", ib_digest_hex(d.digest));
	ib_image *img = load_ok(f, prefix);
	assert_string_equal(img->desc.digest, d.digest);
	ib_image_free(img);
	/* a prefix of the config or layer blob is not an image */
	char p2[16];
	snprintf(p2, sizeof(p2), "%.10s", ib_digest_hex(HELLO_DIGEST));
	char dg[IB_DIGEST_BUFLEN];
	put(f, "hello", dg);
	load_fails(f, p2, IB_ENOTFOUND, "not found in the store");
	ib_descriptor_clear(&d);
}

/* The manifest bytes image_write produces for make_image(seed), computed
 * in memory so that a digest-prefix collision can be searched cheaply. */
static void predict_manifest_digest(fixture *f, const char *seed, char out[IB_DIGEST_BUFLEN])
{
	cleanup_free char *content = xasprintf("layer:%s", seed);
	ib_descriptor layer;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = IB_MT_OCI_LAYER;
	layer.size = (int64_t)strlen(content);
	ib_digest_buffer(layer.digest, content, strlen(content));
	json_t *cfg = make_config("amd64", layer.digest);
	size_t cfg_len;
	cleanup_free char *cfg_raw = ib_config_serialize(cfg, &cfg_len);
	json_decref(cfg);
	ib_manifest m;
	memset(&m, 0, sizeof(m));
	m.media_type = IB_MT_OCI_MANIFEST;
	m.config.media_type = IB_MT_OCI_CONFIG;
	m.config.size = (int64_t)cfg_len;
	ib_digest_buffer(m.config.digest, cfg_raw, cfg_len);
	m.layers = &layer;
	m.n_layers = 1;
	m.annotations = json_pack("{s:s}", "seed", seed);
	size_t len;
	cleanup_free char *raw = ib_manifest_serialize(&m, &len);
	json_decref(m.annotations);
	ib_digest_buffer(out, raw, len);
	(void)f;
}

static void test_image_load_ambiguous_prefix(void **state)
{
	fixture *f = *state;
	/* find two seeds whose manifest digests share the first 4 hex digits */
	enum { N = 4096 };
	char(*dg)[IB_DIGEST_BUFLEN] = xcalloc(N, IB_DIGEST_BUFLEN);
	int a = -1, b = -1;
	for (int i = 0; i < N && a < 0; i++) {
		char seed[16];
		snprintf(seed, sizeof(seed), "s%d", i);
		predict_manifest_digest(f, seed, dg[i]);
		for (int k = 0; k < i; k++) {
			if (!memcmp(dg[i] + 7, dg[k] + 7, 4)) {
				a = k;
				b = i;
				break;
			}
		}
	}
	assert_true(a >= 0);
	char seed_a[16], seed_b[16];
	snprintf(seed_a, sizeof(seed_a), "s%d", a);
	snprintf(seed_b, sizeof(seed_b), "s%d", b);
	ib_descriptor da, db;
	make_image(f, seed_a, "amd64", &da);
	make_image(f, seed_b, "amd64", &db);
	assert_string_equal(da.digest, dg[a]);
	assert_string_equal(db.digest, dg[b]);
	free(dg);

	char prefix[8];
	snprintf(prefix, sizeof(prefix), "%.4s", ib_digest_hex(da.digest));
	/* untagged: found by scanning blobs */
	load_fails(f, prefix, IB_EINVALID, "ambiguous");
	tag(f, "localhost/a:1", &da);
	tag(f, "localhost/b:1", &db);
	load_fails(f, prefix, IB_EINVALID, "ambiguous");

	/* a longer prefix that tells them apart resolves */
	size_t common = 4;
	while (da.digest[7 + common] == db.digest[7 + common])
		common++;
	cleanup_free char *longer = xasprintf("%.*s", (int)common + 1, ib_digest_hex(db.digest));
	ib_image *img = load_ok(f, longer);
	assert_string_equal(img->desc.digest, db.digest);
	ib_image_free(img);
	ib_descriptor_clear(&da);
	ib_descriptor_clear(&db);
}

static void test_image_load_not_found_messages(void **state)
{
	fixture *f = *state;
	load_fails(f, "alpine", IB_ENOTFOUND, "image \"alpine:latest\" not found in the store");
	load_fails(f, "docker.io/library/alpine:latest", IB_ENOTFOUND,
		   "image \"alpine:latest\" not found in the store");
	load_fails(f, "localhost:5000/team/app:1", IB_ENOTFOUND,
		   "image \"localhost:5000/team/app:1\" not found in the store");
	load_fails(f, HELLO_DIGEST, IB_ENOTFOUND, "not found in the store");
	load_fails(f, "2cf24dba", IB_ENOTFOUND, "not found in the store");
	cleanup_free char *named = xasprintf("alpine@%s", HELLO_DIGEST);
	load_fails(f, named, IB_ENOTFOUND, "not found in the store");
	load_fails(f, "Not/A/Valid:ref:", IB_EINVALID, "invalid reference");
}

static void test_image_load_index_picks_platform(void **state)
{
	fixture *f = *state;
	const char *host_os, *host_arch, *host_variant;
	ib_host_platform(&host_os, &host_arch, &host_variant);
	const char *other = strcmp(host_arch, "s390x") ? "s390x" : "riscv64";

	ib_descriptor dh, dother;
	make_image(f, "host", host_arch, &dh);
	make_image(f, "other", other, &dother);
	json_t *ms = json_array();
	json_array_append_new(ms, ib_descriptor_to_json(&dother));
	json_array_append_new(ms, ib_descriptor_to_json(&dh));
	json_t *idx = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType", IB_MT_OCI_INDEX,
				"manifests", ms);
	size_t len;
	cleanup_free char *raw = ib_json_dump_canonical(idx, &len);
	json_decref(idx);
	ib_descriptor di;
	memset(&di, 0, sizeof(di));
	di.media_type = IB_MT_OCI_INDEX;
	di.size = (int64_t)len;
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->s, raw, len, di.digest, &err), &err, "put index");
	tag(f, "docker.io/library/multi:latest", &di);

	ib_image *img = load_ok(f, "multi");
	assert_string_equal(img->desc.digest, dh.digest);
	assert_string_equal(img->desc.platform.architecture, host_arch);
	ib_image_free(img);

	img = load_ok(f, di.digest); /* the index's digest resolves the same way */
	assert_string_equal(img->desc.digest, dh.digest);
	ib_image_free(img);

	tu_must(ib_store_image_load_platform(f->s, "multi", "linux", other, NULL, &img, &err), &err,
		"load other");
	assert_string_equal(img->desc.digest, dother.digest);
	ib_image_free(img);

	assert_int_equal(
	    ib_store_image_load_platform(f->s, "multi", "linux", "mips64", NULL, &img, &err),
	    IB_ENOTFOUND);
	assert_non_null(strstr(err->msg, "linux/mips64"));
	ib_error_free(&err);
	ib_descriptor_clear(&dh);
	ib_descriptor_clear(&dother);
}

static void test_image_load_rejects_layer_count_mismatch(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	/* config with no diff_ids, manifest with one layer */
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\","
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	char cfg_digest[IB_DIGEST_BUFLEN], layer_digest[IB_DIGEST_BUFLEN];
	put(f, cfg, cfg_digest);
	put(f, "layer", layer_digest);
	cleanup_free char *man = xasprintf(
	    "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
	    "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
	    "\"%s\",\"size\":5}]}",
	    IB_MT_OCI_MANIFEST, IB_MT_OCI_CONFIG, cfg_digest, strlen(cfg), IB_MT_OCI_LAYER,
	    layer_digest);
	ib_descriptor d;
	memset(&d, 0, sizeof(d));
	d.media_type = IB_MT_OCI_MANIFEST;
	d.size = (int64_t)strlen(man);
	put(f, man, d.digest);
	tag(f, "docker.io/library/bad:latest", &d);
	load_fails(f, "bad", IB_EINVALID, "diff_ids");
	(void)err;
}

static void test_image_load_detects_corrupt_config(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "c", "amd64", &d);
	tag(f, "docker.io/library/c:latest", &d);
	ib_image *img = load_ok(f, "c");
	char cfg[IB_DIGEST_BUFLEN];
	memcpy(cfg, img->manifest->config.digest, IB_DIGEST_BUFLEN);
	ib_image_free(img);
	corrupt_blob(f, cfg);
	load_fails(f, "c", IB_EDIGEST, "digest mismatch");
	ib_descriptor_clear(&d);
}

static void test_image_write_requires_layers_and_matching_config(void **state)
{
	fixture *f = *state;
	ib_descriptor layer, out;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = IB_MT_OCI_LAYER;
	layer.size = 5;
	memcpy(layer.digest, HELLO_DIGEST, IB_DIGEST_BUFLEN);
	json_t *cfg = make_config("amd64", HELLO_DIGEST);
	ib_error *err = NULL;
	assert_int_equal(ib_store_image_write(f->s, cfg, &layer, 1, NULL, &out, &err),
			 IB_ENOTFOUND);
	ib_error_free(&err);
	char dg[IB_DIGEST_BUFLEN];
	put(f, "hello", dg);
	assert_int_equal(ib_store_image_write(f->s, cfg, &layer, 0, NULL, &out, &err), IB_EINVALID);
	ib_error_free(&err);
	tu_must(ib_store_image_write(f->s, cfg, &layer, 1, NULL, &out, &err), &err, "write");
	ib_descriptor_clear(&out);
	json_decref(cfg);
}

/* ---- unpacked layers ---- */

static void test_layer_dir_and_unpacked(void **state)
{
	fixture *f = *state;
	cleanup_free char *dir = ib_store_layer_dir(f->s, HELLO_DIGEST);
	cleanup_free char *want =
	    path_in(f, "layers/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
	assert_string_equal(dir, want);
	assert_false(ib_store_layer_unpacked(f->s, HELLO_DIGEST));
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(ib_store_layer_unpacked(f->s, HELLO_DIGEST));
}

/* ---- verify ---- */

struct problems {
	int n;
	char *text;
};

static void collect_problem(const char *digest, const char *problem, void *payload)
{
	struct problems *p = payload;
	char *t = xasprintf("%s%s %s\n", p->text ? p->text : "", digest, problem);
	free(p->text);
	p->text = t;
	p->n++;
}

static void test_verify_clean_store(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "v", "amd64", &d);
	tag(f, "docker.io/library/v:latest", &d);
	struct problems p = {0, NULL};
	ib_error *err = NULL;
	assert_int_equal(ib_store_verify(f->s, collect_problem, &p, &err), 0);
	assert_int_equal(p.n, 0);
	ib_descriptor_clear(&d);
}

static void test_verify_reports_corrupt_missing_and_bad_names(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "v", "amd64", &d);
	tag(f, "docker.io/library/v:latest", &d);
	ib_image *img = load_ok(f, "v");
	char layer[IB_DIGEST_BUFLEN], cfg[IB_DIGEST_BUFLEN];
	memcpy(layer, img->manifest->layers[0].digest, IB_DIGEST_BUFLEN);
	memcpy(cfg, img->manifest->config.digest, IB_DIGEST_BUFLEN);
	ib_image_free(img);

	char extra[IB_DIGEST_BUFLEN];
	put(f, "unreferenced but corrupt", extra);
	corrupt_blob(f, extra);
	corrupt_blob(f, cfg);
	cleanup_free char *lp = ib_store_blob_path(f->s, layer);
	assert_int_equal(unlink(lp), 0);
	cleanup_free char *junk = path_in(f, "oci/blobs/sha256/not-a-digest");
	tu_write_text(junk, "junk");

	struct problems p = {0, NULL};
	ib_error *err = NULL;
	assert_int_equal(ib_store_verify(f->s, collect_problem, &p, &err), 4);
	assert_int_equal(p.n, 4);
	cleanup_free char *t1 = xasprintf("%s corrupt", extra);
	cleanup_free char *t2 = xasprintf("%s corrupt", cfg);
	cleanup_free char *t3 = xasprintf("%s missing (referenced by v:latest)", layer);
	assert_non_null(strstr(p.text, t1));
	assert_non_null(strstr(p.text, t2));
	assert_non_null(strstr(p.text, t3));
	assert_non_null(strstr(p.text, "not-a-digest"));
	free(p.text);
	/* without a callback the count is the same */
	assert_int_equal(ib_store_verify(f->s, NULL, NULL, &err), 4);
	ib_descriptor_clear(&d);
}

/* ---- prune ---- */

static void test_prune_removes_unreferenced(void **state)
{
	fixture *f = *state;
	ib_descriptor keep_img, gone_img;
	make_image(f, "keep", "amd64", &keep_img);
	make_image(f, "gone", "amd64", &gone_img);
	tag(f, "docker.io/library/keep:latest", &keep_img);
	ib_image *img = load_ok(f, "keep");
	char keep_diff[IB_DIGEST_BUFLEN];
	snprintf(keep_diff, sizeof(keep_diff), "%s", ib_config_diff_id(img->config, 0));
	ib_image_free(img);

	char cached[IB_DIGEST_BUFLEN], junk[IB_DIGEST_BUFLEN];
	put(f, "kept by the cache", cached);
	put(f, "junk", junk);

	/* unpacked layers: the image's, a kept one and a stray one */
	char kept_layer[IB_DIGEST_BUFLEN], stray_layer[IB_DIGEST_BUFLEN];
	ib_digest_buffer(kept_layer, "kl", 2);
	ib_digest_buffer(stray_layer, "sl", 2);
	const char *dirs[] = {keep_diff, kept_layer, stray_layer};
	for (size_t i = 0; i < 3; i++) {
		cleanup_free char *dir = ib_store_layer_dir(f->s, dirs[i]);
		assert_int_equal(mkdir(dir, 0755), 0);
		cleanup_free char *file = ib_path_join(dir, "file");
		tu_write_text(file, "content");
	}
	cleanup_free char *tmpfile = path_in(f, "tmp/leftover");
	tu_write_text(tmpfile, "partial");
	cleanup_free char *tmpdir = path_in(f, "tmp/leftover-dir");
	assert_int_equal(mkdir(tmpdir, 0755), 0);

	char *keep_digests[] = {cached, NULL};
	char *keep_layers[] = {kept_layer, NULL};
	ib_prune_options opts = IB_PRUNE_OPTIONS_INIT;
	opts.keep_digests = keep_digests;
	opts.keep_layers = keep_layers;

	/* dry run counts but removes nothing */
	opts.dry_run = true;
	ib_prune_stats st;
	ib_error *err = NULL;
	tu_must(ib_store_prune(f->s, &opts, &st, &err), &err, "prune dry");
	assert_int_equal(st.blobs_removed, 4); /* junk + gone's layer, config, manifest */
	assert_int_equal(st.layers_removed, 1);
	assert_int_equal(st.tmp_removed, 2);
	assert_true(ib_store_blob_exists(f->s, junk));
	assert_true(ib_file_exists(tmpfile));

	opts.dry_run = false;
	tu_must(ib_store_prune(f->s, &opts, &st, &err), &err, "prune");
	assert_int_equal(st.blobs_removed, 4);
	assert_int_equal(st.layers_removed, 1);
	assert_int_equal(st.tmp_removed, 2);
	assert_true(st.bytes_removed > 4);
	assert_false(ib_store_blob_exists(f->s, junk));
	assert_false(ib_store_blob_exists(f->s, gone_img.digest));
	assert_true(ib_store_blob_exists(f->s, cached));
	assert_true(ib_store_blob_exists(f->s, keep_img.digest));
	assert_true(ib_store_layer_unpacked(f->s, keep_diff));
	assert_true(ib_store_layer_unpacked(f->s, kept_layer));
	assert_false(ib_store_layer_unpacked(f->s, stray_layer));
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);

	/* the kept image is still complete */
	img = load_ok(f, "keep");
	ib_image_free(img);
	assert_int_equal(ib_store_verify(f->s, NULL, NULL, &err), 0);

	/* after rmi, everything of it goes */
	tu_must(ib_store_tag_remove(f->s, "docker.io/library/keep:latest", &err), &err, "rmi");
	tu_must(ib_store_prune(f->s, NULL, &st, &err), &err, "prune 2");
	assert_int_equal(st.blobs_removed, 4); /* keep's 3 + cached */
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	assert_int_equal(tu_count_entries(blobs), 0);
	cleanup_free char *layers = path_in(f, "layers");
	assert_int_equal(tu_count_entries(layers), 0);
	/* the store is still usable: the shared lock was taken back */
	put(f, "hello", junk);
	ib_descriptor_clear(&keep_img);
	ib_descriptor_clear(&gone_img);
}

static void test_prune_keeps_index_children(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "child", "amd64", &d);
	json_t *ms = json_array();
	json_array_append_new(ms, ib_descriptor_to_json(&d));
	/* a sibling that was never pulled */
	ib_descriptor missing;
	ib_descriptor_copy(&missing, &d);
	ib_digest_buffer(missing.digest, "never pulled", 12);
	free(missing.platform.architecture);
	missing.platform.architecture = xstrdup("s390x");
	json_array_append_new(ms, ib_descriptor_to_json(&missing));
	ib_descriptor_clear(&missing);
	json_t *idx = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType", IB_MT_OCI_INDEX,
				"manifests", ms);
	size_t len;
	cleanup_free char *raw = ib_json_dump_canonical(idx, &len);
	json_decref(idx);
	ib_descriptor di;
	memset(&di, 0, sizeof(di));
	di.media_type = IB_MT_OCI_INDEX;
	di.size = (int64_t)len;
	ib_error *err = NULL;
	tu_must(ib_store_blob_put(f->s, raw, len, di.digest, &err), &err, "put index");
	tag(f, "docker.io/library/multi:latest", &di);

	ib_prune_stats st;
	tu_must(ib_store_prune(f->s, NULL, &st, &err), &err, "prune");
	assert_int_equal(st.blobs_removed, 0);
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	assert_int_equal(tu_count_entries(blobs), 4);
	/* an absent sibling of a partial pull is not a verify problem */
	assert_int_equal(ib_store_verify(f->s, NULL, NULL, &err), 0);
	ib_descriptor_clear(&d);
}

static void test_prune_refuses_when_tagged_manifest_is_corrupt(void **state)
{
	fixture *f = *state;
	ib_descriptor d;
	make_image(f, "x", "amd64", &d);
	tag(f, "docker.io/library/x:latest", &d);
	corrupt_blob(f, d.digest);
	ib_prune_stats st;
	ib_error *err = NULL;
	assert_int_equal(ib_store_prune(f->s, NULL, &st, &err), IB_EDIGEST);
	assert_non_null(strstr(err->msg, "x:latest"));
	ib_error_free(&err);
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	assert_int_equal(tu_count_entries(blobs), 3);
	ib_descriptor_clear(&d);
}

/* ---- locks ---- */

static void test_open_holds_shared_gc_lock(void **state)
{
	fixture *f = *state;
	cleanup_free char *lock = path_in(f, "gc.lock");
	int fd = open(lock, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_int_equal(flock(fd, LOCK_SH | LOCK_NB), 0);
	flock(fd, LOCK_UN);
	ib_store_free(f->s);
	f->s = NULL;
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
	close(fd);
	ib_error *err = NULL;
	tu_must(ib_store_open(&f->s, f->root, &err), &err, "reopen");
}

static void test_prune_waits_for_other_users(void **state)
{
	fixture *f = *state;
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pipefd[0]);
		ib_store *s = NULL;
		if (ib_store_open(&s, f->root, NULL) < 0)
			_exit(2);
		if (write(pipefd[1], "x", 1) != 1)
			_exit(3);
		struct timespec ts = {0, 400 * 1000000L};
		nanosleep(&ts, NULL);
		ib_store_free(s);
		_exit(0);
	}
	close(pipefd[1]);
	char c;
	assert_int_equal(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	double t0 = tu_now();
	ib_error *err = NULL;
	ib_prune_stats st;
	tu_must(ib_store_prune(f->s, NULL, &st, &err), &err, "prune");
	double waited = tu_now() - t0;
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (waited < 0.25)
		fail_msg("prune returned after %.3fs while another user held the store", waited);
}

static void test_kill9_during_blob_write_leaves_only_tmp(void **state)
{
	fixture *f = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ib_store *s = NULL;
		ib_blob_writer *w = NULL;
		if (ib_store_open(&s, f->root, NULL) < 0 || ib_blob_writer_new(&w, s, NULL) < 0)
			_exit(2);
		char buf[200000];
		memset(buf, 'a', sizeof(buf));
		ib_blob_writer_write(w, buf, sizeof(buf), NULL);
		raise(SIGKILL);
		_exit(3);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status));
	cleanup_free char *blobs = path_in(f, "oci/blobs/sha256");
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(blobs), 0);
	assert_int_equal(tu_count_entries(tmp), 1);
	ib_prune_stats st;
	ib_error *err = NULL;
	tu_must(ib_store_prune(f->s, NULL, &st, &err), &err, "prune");
	assert_int_equal(st.tmp_removed, 1);
	assert_int_equal(tu_count_entries(tmp), 0);
}

/* ---- platforms ---- */

static void test_platform_from_machine(void **state)
{
	(void)state;
	static const struct {
		const char *machine, *arch, *variant;
	} cases[] = {
	    {"x86_64", "amd64", NULL},
	    {"aarch64", "arm64", "v8"},
	    {"armv7l", "arm", "v7"},
	    {"armv6l", "arm", "v6"},
	    {"i686", "386", NULL},
	    {"ppc64le", "ppc64le", NULL},
	    {"s390x", "s390x", NULL},
	    {"riscv64", "riscv64", NULL},
	    {"mips64el", "mips64le", NULL},
	    {"loongarch64", "loong64", NULL},
	    {"weird9000", "weird9000", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *arch = NULL, *variant = "unset";
		ib_platform_from_machine(cases[i].machine, &arch, &variant);
		assert_string_equal(arch, cases[i].arch);
		if (cases[i].variant)
			assert_string_equal(variant, cases[i].variant);
		else
			assert_null(variant);
	}
}

static void test_host_platform_matches_uname(void **state)
{
	(void)state;
	struct utsname u;
	assert_int_equal(uname(&u), 0);
	const char *want_arch, *want_variant;
	ib_platform_from_machine(u.machine, &want_arch, &want_variant);
	const char *os = NULL, *arch = NULL, *variant = "unset";
	ib_host_platform(&os, &arch, &variant);
	assert_string_equal(os, "linux");
	assert_string_equal(arch, want_arch);
	if (want_variant)
		assert_string_equal(variant, want_variant);
	else
		assert_null(variant);
}

static void test_platform_select_prefers_exact_variant(void **state)
{
	(void)state;
	ib_index idx;
	memset(&idx, 0, sizeof(idx));
	ib_descriptor m[4];
	memset(m, 0, sizeof(m));
	m[0].platform = (ib_platform){"linux", "arm", "v6"};
	m[1].platform = (ib_platform){"linux", "arm64", NULL};
	m[2].platform = (ib_platform){"linux", "arm64", "v8"};
	m[3].platform = (ib_platform){"windows", "amd64", NULL};
	idx.manifests = m;
	idx.n_manifests = 4;
	assert_int_equal(ib_platform_select(&idx, "linux", "arm64", "v8"), 2);
	assert_int_equal(ib_platform_select(&idx, "linux", "arm64", NULL), 1);
	assert_int_equal(ib_platform_select(&idx, "linux", "arm", "v7"), -1);
	assert_int_equal(ib_platform_select(&idx, "linux", "arm", "v6"), 0);
	assert_int_equal(ib_platform_select(&idx, "linux", "amd64", NULL), -1);
	assert_int_equal(ib_platform_select(&idx, "windows", "amd64", NULL), 3);
	idx.n_manifests = 2;
	assert_int_equal(ib_platform_select(&idx, "linux", "arm64", "v8"), 1);
}

/* ---- remote layers (lazily tagged images) ---- */

#define REMOTE_REPO "cache.example:5000/ci/cache"

/* A fetcher standing in for the registry: it stores `content` (or fails
 * with `fail`), counting its calls. */
typedef struct fake_registry {
	const char *content;
	const char *fail;
	int calls;
	char last_repo[128];
} fake_registry;

static int fake_fetch(ib_store *s, const ib_store_remote *rec, void *payload, ib_error **err)
{
	fake_registry *fr = payload;
	fr->calls++;
	snprintf(fr->last_repo, sizeof(fr->last_repo), "%s", rec->repository);
	if (fr->fail)
		return ib_error_setc(err, IB_ENET, "%s", fr->fail);
	ib_blob_writer *w = NULL;
	int r = ib_blob_writer_new(&w, s, err);
	if (r == 0 && (r = ib_blob_writer_write(w, fr->content, strlen(fr->content), err)) < 0)
		ib_blob_writer_abort(w);
	if (r == 0)
		r = ib_blob_writer_commit(w, rec->digest, rec->size, NULL, NULL, err);
	return r;
}

/* Tag name -> an image whose one layer ("layer:<seed>", diff_id = its
 * digest as if uncompressed) is only recorded as remote, not stored. */
static void make_remote_image(fixture *f, const char *seed, const char *name,
			      char layer_out[IB_DIGEST_BUFLEN])
{
	ib_error *err = NULL;
	cleanup_free char *content = xasprintf("layer:%s", seed);
	ib_descriptor layer;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = IB_MT_OCI_LAYER;
	layer.size = (int64_t)strlen(content);
	ib_digest_buffer(layer.digest, content, strlen(content));
	ib_store_remote rec = {.repository = REMOTE_REPO, .size = layer.size};
	memcpy(rec.digest, layer.digest, IB_DIGEST_BUFLEN);
	memcpy(rec.diff_id, layer.digest, IB_DIGEST_BUFLEN);
	tu_must(ib_store_remote_add(f->s, &rec, 1, &err), &err, "remote add");
	json_t *cfg = make_config("amd64", layer.digest);
	ib_descriptor d;
	tu_must(ib_store_image_write(f->s, cfg, &layer, 1, NULL, &d, &err), &err, "image write");
	json_decref(cfg);
	tag(f, name, &d);
	ib_descriptor_clear(&d);
	memcpy(layer_out, layer.digest, IB_DIGEST_BUFLEN);
}

static void test_remote_records_roundtrip(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	ib_store_remote recs[2] = {{.repository = "r.example/a", .size = 10},
				   {.repository = "r.example/b", .size = 20}};
	memcpy(recs[0].digest, HELLO_DIGEST, IB_DIGEST_BUFLEN);
	ib_digest_buffer(recs[1].digest, "x", 1);
	memcpy(recs[1].diff_id, HELLO_DIGEST, IB_DIGEST_BUFLEN);
	tu_must(ib_store_remote_add(f->s, recs, 2, &err), &err, "add");
	ib_store_remote got;
	assert_int_equal(ib_store_remote_get(f->s, recs[1].digest, &got), 0);
	assert_string_equal(got.repository, "r.example/b");
	assert_int_equal(got.size, 20);
	assert_string_equal(got.diff_id, HELLO_DIGEST);
	ib_store_remote_clear(&got);
	assert_int_equal(ib_store_remote_get(f->s, HELLO_DIGEST, &got), 0);
	assert_string_equal(got.diff_id, "");
	ib_store_remote_clear(&got);
	/* a newer record of a digest replaces the older one */
	recs[0].repository = "r.example/c";
	tu_must(ib_store_remote_add(f->s, recs, 1, &err), &err, "replace");
	assert_int_equal(ib_store_remote_get(f->s, HELLO_DIGEST, &got), 0);
	assert_string_equal(got.repository, "r.example/c");
	ib_store_remote_clear(&got);
	/* another handle reads the file */
	ib_store *s2 = tu_store_open(f->root);
	assert_true(ib_store_blob_is_remote(s2, recs[1].digest));
	ib_store_free(s2);
	/* a record without a repository path is refused; unknown digests */
	ib_store_remote bad = {.repository = "no-slash"};
	memcpy(bad.digest, HELLO_DIGEST, IB_DIGEST_BUFLEN);
	assert_int_equal(ib_store_remote_add(f->s, &bad, 1, &err), IB_EINVALID);
	ib_error_free(&err);
	char other[IB_DIGEST_BUFLEN];
	ib_digest_buffer(other, "y", 1);
	assert_int_equal(ib_store_remote_get(f->s, other, &got), IB_ENOTFOUND);
	assert_false(ib_store_blob_is_remote(f->s, other));
	/* a stored blob is not remote, whatever the records say */
	char h[IB_DIGEST_BUFLEN];
	put(f, "hello", h);
	assert_false(ib_store_blob_is_remote(f->s, HELLO_DIGEST));
}

static void test_image_write_accepts_remote_layer_only(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	/* absent and not recorded: refused */
	ib_descriptor layer;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = IB_MT_OCI_LAYER;
	layer.size = 5;
	ib_digest_buffer(layer.digest, "nope!", 5);
	json_t *cfg = make_config("amd64", layer.digest);
	ib_descriptor d;
	assert_int_equal(ib_store_image_write(f->s, cfg, &layer, 1, NULL, &d, &err), IB_ENOTFOUND);
	ib_error_free(&err);
	json_decref(cfg);
	/* recorded: written and tagged; verify counts no problem but lists it */
	char digest[IB_DIGEST_BUFLEN];
	make_remote_image(f, "r", "docker.io/library/r:latest", digest);
	assert_false(ib_store_blob_exists(f->s, digest));
	struct problems p = {0, NULL};
	assert_int_equal(ib_store_verify(f->s, collect_problem, &p, &err), 0);
	assert_int_equal(p.n, 0);
	ib_store_remote *recs = NULL;
	size_t n = 0;
	tu_must(ib_store_remote_referenced(f->s, &recs, &n, &err), &err, "referenced");
	assert_int_equal(n, 1);
	assert_string_equal(recs[0].digest, digest);
	assert_string_equal(recs[0].repository, REMOTE_REPO);
	ib_store_remote_clear(&recs[0]);
	free(recs);
	ib_store_usage u;
	tu_must(ib_store_usage_get(f->s, NULL, NULL, &u, &err), &err, "usage");
	assert_int_equal(u.remote_layers, 1);
	assert_int_equal(u.remote_bytes, strlen("layer:r"));
	ib_store_usage_free(&u);
}

static void test_blob_open_fetches_remote_layer_once(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char digest[IB_DIGEST_BUFLEN];
	make_remote_image(f, "f", "docker.io/library/f:latest", digest);
	fake_registry fr = {.content = "layer:f"};
	ib_store_set_blob_fetcher(f->s, fake_fetch, &fr);
	/* sizing the image never downloads */
	ib_image *img = load_ok(f, "f");
	uint64_t size = 0;
	assert_int_equal(ib_store_content_sizes(f->s, img->manifest->layers, 1, &size, &err), 1);
	assert_int_equal(size, strlen("layer:f"));
	assert_int_equal(fr.calls, 0);
	/* opening it does, from the recorded repository */
	cleanup_free char *buf = NULL;
	size_t len = 0;
	tu_must(ib_store_blob_read(f->s, digest, 0, &buf, &len, &err), &err, "read");
	assert_int_equal(fr.calls, 1);
	assert_string_equal(fr.last_repo, REMOTE_REPO);
	assert_int_equal(len, strlen("layer:f"));
	assert_memory_equal(buf, "layer:f", len);
	assert_false(ib_store_blob_is_remote(f->s, digest));
	int fd = -1;
	int64_t sz = 0;
	tu_must(ib_store_blob_open(f->s, digest, &fd, &sz, &err), &err, "open");
	close(fd);
	assert_int_equal(fr.calls, 1);
	/* whole now: nothing left to fetch, the size is exact */
	size_t fetched = 9;
	tu_must(ib_store_image_fetch(f->s, img, &fetched, &err), &err, "image fetch");
	assert_int_equal(fetched, 0);
	assert_int_equal(ib_store_content_sizes(f->s, img->manifest->layers, 1, &size, &err), 0);
	ib_image_free(img);
	/* prune drops the record of a layer the store has now */
	tu_must(ib_store_prune(f->s, NULL, NULL, &err), &err, "prune");
	ib_store_remote got;
	assert_int_equal(ib_store_remote_get(f->s, digest, &got), IB_ENOTFOUND);
}

static void test_fetch_failure_is_one_line_naming_layer_image_registry(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char digest[IB_DIGEST_BUFLEN];
	make_remote_image(f, "g", "docker.io/library/g:1", digest);
	int fd = -1;
	int64_t sz = 0;
	/* no fetcher installed */
	assert_int_equal(ib_store_blob_open(f->s, digest, &fd, &sz, &err), IB_ENOTFOUND);
	ib_error_free(&err);
	fake_registry fr = {.fail = "connection refused"};
	ib_store_set_blob_fetcher(f->s, fake_fetch, &fr);
	assert_int_equal(ib_store_blob_open(f->s, digest, &fd, &sz, &err), IB_ENET);
	assert_int_equal(fd, -1);
	cleanup_free char *want = xasprintf("layer %s of g:1 is in the cache registry " REMOTE_REPO
					    " and could not be fetched: connection refused",
					    digest);
	assert_string_equal(err->msg, want);
	assert_null(strchr(err->msg, '\n'));
	ib_error_free(&err);
	assert_true(ib_store_blob_is_remote(f->s, digest));
	cleanup_free char *tmp = path_in(f, "tmp");
	assert_int_equal(tu_count_entries(tmp), 0);
}

static void test_fetch_checks_the_recorded_diff_id(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char digest[IB_DIGEST_BUFLEN];
	make_remote_image(f, "h", "docker.io/library/h:latest", digest);
	/* the record claims another content than the blob has */
	ib_store_remote rec;
	assert_int_equal(ib_store_remote_get(f->s, digest, &rec), 0);
	ib_digest_buffer(rec.diff_id, "something else", 14);
	tu_must(ib_store_remote_add(f->s, &rec, 1, &err), &err, "re-record");
	ib_store_remote_clear(&rec);
	fake_registry fr = {.content = "layer:h"};
	ib_store_set_blob_fetcher(f->s, fake_fetch, &fr);
	assert_int_equal(ib_store_blob_fetch(f->s, digest, &err), IB_EDIGEST);
	assert_non_null(strstr(err->msg, "could not be fetched: its content is"));
	ib_error_free(&err);
	/* nothing that does not match its record stays */
	assert_false(ib_store_blob_exists(f->s, digest));
	assert_true(ib_store_blob_is_remote(f->s, digest));
}

static void test_prune_drops_records_no_image_uses(void **state)
{
	fixture *f = *state;
	ib_error *err = NULL;
	char kept[IB_DIGEST_BUFLEN], dropped[IB_DIGEST_BUFLEN];
	make_remote_image(f, "k", "docker.io/library/k:latest", kept);
	make_remote_image(f, "d", "docker.io/library/d:latest", dropped);
	tu_must(ib_store_tag_remove(f->s, "docker.io/library/d:latest", &err), &err, "untag");
	ib_prune_options dry = IB_PRUNE_OPTIONS_INIT;
	dry.dry_run = true;
	tu_must(ib_store_prune(f->s, &dry, NULL, &err), &err, "dry prune");
	assert_true(ib_store_blob_is_remote(f->s, dropped));
	tu_must(ib_store_prune(f->s, NULL, NULL, &err), &err, "prune");
	assert_true(ib_store_blob_is_remote(f->s, kept));
	assert_false(ib_store_blob_is_remote(f->s, dropped));
	struct problems p = {0, NULL};
	assert_int_equal(ib_store_verify(f->s, collect_problem, &p, &err), 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_open_creates_layout),
	    T(test_open_rejects_file_as_root),
	    T(test_tmp_path_unique_under_tmp),
	    T(test_tmp_remove_own_takes_blob_writer_temp),
	    T(test_blob_put_read_roundtrip),
	    T(test_blob_put_existing_is_idempotent),
	    T(test_blob_writer_streams_large_content),
	    T(test_blob_writer_digest_mismatch_stores_nothing),
	    T(test_blob_writer_size_mismatch_stores_nothing),
	    T(test_blob_writer_bad_expected_digest),
	    T(test_blob_writer_abort_removes_temp),
	    T(test_blob_read_size_cap),
	    T(test_blob_read_missing_is_not_found),
	    T(test_blob_read_detects_corruption),
	    T(test_blob_rewrite_repairs_truncated_blob),
	    T(test_blob_invalid_digest_never_escapes),
	    T(test_tag_set_get_list_remove),
	    T(test_tag_remove_missing_is_not_found),
	    T(test_tag_replace_points_at_new_image),
	    T(test_tag_set_requires_stored_manifest),
	    T(test_index_json_is_valid_and_deterministic),
	    T(test_index_json_keeps_foreign_entries),
	    T(test_concurrent_tag_set_from_processes),
	    T(test_kill9_never_leaves_half_index),
	    T(test_image_write_and_load_by_tag),
	    T(test_image_write_is_deterministic),
	    T(test_image_load_by_digest_and_prefix),
	    T(test_image_load_prefix_of_untagged_manifest),
	    T(test_image_load_ambiguous_prefix),
	    T(test_image_load_not_found_messages),
	    T(test_image_load_index_picks_platform),
	    T(test_image_load_rejects_layer_count_mismatch),
	    T(test_image_load_detects_corrupt_config),
	    T(test_image_write_requires_layers_and_matching_config),
	    T(test_layer_dir_and_unpacked),
	    T(test_verify_clean_store),
	    T(test_verify_reports_corrupt_missing_and_bad_names),
	    T(test_prune_removes_unreferenced),
	    T(test_prune_keeps_index_children),
	    T(test_prune_refuses_when_tagged_manifest_is_corrupt),
	    T(test_open_holds_shared_gc_lock),
	    T(test_prune_waits_for_other_users),
	    T(test_kill9_during_blob_write_leaves_only_tmp),
	    T(test_platform_from_machine),
	    T(test_host_platform_matches_uname),
	    T(test_platform_select_prefers_exact_variant),
	    T(test_remote_records_roundtrip),
	    T(test_image_write_accepts_remote_layer_only),
	    T(test_blob_open_fetches_remote_layer_once),
	    T(test_fetch_failure_is_one_line_naming_layer_image_registry),
	    T(test_fetch_checks_the_recorded_diff_id),
	    T(test_prune_drops_records_no_image_uses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
