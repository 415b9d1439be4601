/* Unit tests for image_archive: member names, extraction of hostile tars,
 * docker manifest.json and OCI layout parsing, and load/save through a
 * store in a temp dir. */
#include <archive.h>
#include <archive_entry.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "image_archive.h"
#include "ref.h"
#include "store.h"
#include "util.h"

/* ---------------------------------------------------------------- helpers */

typedef struct tentry {
	const char *name;
	char type;	  /* 'f' file, 'd' dir, 'l' symlink, 'h' hardlink, 'p' fifo, 'c' chardev */
	const char *data; /* file content, or link target */
	size_t len;	  /* for files; 0 = strlen(data) */
} tentry;

static void write_tar(const char *path, const tentry *e, size_t n)
{
	struct archive *a = archive_write_new();
	assert_non_null(a);
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e[i].name);
		archive_entry_set_perm(ae, 0644);
		size_t len = 0;
		switch (e[i].type) {
		case 'd':
			archive_entry_set_filetype(ae, AE_IFDIR);
			break;
		case 'l':
			archive_entry_set_filetype(ae, AE_IFLNK);
			archive_entry_set_symlink(ae, e[i].data);
			break;
		case 'h':
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_hardlink(ae, e[i].data);
			break;
		case 'p':
			archive_entry_set_filetype(ae, AE_IFIFO);
			break;
		case 'c':
			archive_entry_set_filetype(ae, AE_IFCHR);
			archive_entry_set_rdev(ae, 0x0103);
			break;
		default:
			archive_entry_set_filetype(ae, AE_IFREG);
			len = e[i].len ? e[i].len : strlen(e[i].data);
			archive_entry_set_size(ae, (la_int64_t)len);
		}
		assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
		if (len)
			assert_int_equal(archive_write_data(a, e[i].data, len), (la_ssize_t)len);
		archive_entry_free(ae);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/* A tar in memory (for layers). Caller frees. */
static char *tar_buffer(const tentry *e, size_t n, size_t *len_out)
{
	char path[] = "/tmp/ib-test-archive-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	write_tar(path, e, n);
	char *buf = NULL;
	assert_int_equal(ib_read_file(path, 1 << 20, &buf, len_out, NULL), 0);
	unlink(path);
	return buf;
}

typedef struct fixture {
	char *dir;  /* temp dir, removed at teardown */
	char *xdir; /* dir/x, for extraction */
} fixture;

static int setup(void **state)
{
	fixture *f = xcalloc(1, sizeof(*f));
	char tmpl[] = "/tmp/ib-test-archive-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	f->dir = xstrdup(tmpl);
	f->xdir = ib_path_join(f->dir, "x");
	assert_int_equal(mkdir(f->xdir, 0700), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	ib_rm_rf(f->dir, NULL);
	free(f->dir);
	free(f->xdir);
	free(f);
	return 0;
}

/* Extract a tar made of entries; returns the result code. */
static int extract(fixture *f, const tentry *e, size_t n, ib_archive_members **m, ib_error **err)
{
	cleanup_free char *path = ib_path_join(f->dir, "in.tar");
	write_tar(path, e, n);
	return ib_archive_extract(path, f->xdir, m, err);
}

static void expect_extract_fails(fixture *f, const tentry *e, size_t n, int code,
				 const char *msg_part)
{
	ib_archive_members *m = NULL;
	ib_error *err = NULL;
	assert_int_equal(extract(f, e, n, &m, &err), code);
	assert_null(m);
	assert_non_null(err);
	if (msg_part && !strstr(err->msg, msg_part))
		fail_msg("error '%s' does not mention '%s'", err->msg, msg_part);
	ib_error_free(&err);
}

/* ---------------------------------------------------------------- member names */

static void test_member_name_accepts_plain_relative_paths(void **state)
{
	(void)state;
	assert_int_equal(ib_archive_check_member_name("manifest.json", NULL), 0);
	assert_int_equal(ib_archive_check_member_name("blobs/sha256/abc", NULL), 0);
	assert_int_equal(ib_archive_check_member_name("abc/layer.tar", NULL), 0);
	assert_int_equal(ib_archive_check_member_name("..hidden/x..y", NULL), 0);
}

static void test_member_name_rejects_escapes_and_junk(void **state)
{
	(void)state;
	const char *bad[] = {"",      "/etc/passwd", "../x", "a/../../b", "a/..",     "a//b",
			     "a/./b", ".",	     "a/",   "x\ny",	  "tab\there"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_error *err = NULL;
		if (ib_archive_check_member_name(bad[i], &err) != IB_EUNSAFE)
			fail_msg("'%s' was accepted", bad[i]);
		ib_error_free(&err);
	}
}

static void test_member_name_rejects_overlong(void **state)
{
	(void)state;
	char *name = xmalloc(IB_ARCHIVE_MAX_NAME + 2);
	memset(name, 'a', IB_ARCHIVE_MAX_NAME + 1);
	name[IB_ARCHIVE_MAX_NAME + 1] = '\0';
	assert_int_equal(ib_archive_check_member_name(name, NULL), IB_EUNSAFE);
	name[IB_ARCHIVE_MAX_NAME] = '\0';
	assert_int_equal(ib_archive_check_member_name(name, NULL), 0);
	free(name);
}

/* ---------------------------------------------------------------- extraction */

static void test_extract_regular_members_with_digests(void **state)
{
	fixture *f = *state;
	const tentry e[] = {{"./", 'd', "", 0},
			    {"./dir/", 'd', "", 0},
			    {"./dir/hello.txt", 'f', "hello\n", 0},
			    {"top.json", 'f', "{}", 0}};
	ib_archive_members *m = NULL;
	ib_error *err = NULL;
	assert_int_equal(extract(f, e, 4, &m, &err), 0);
	const char *file, *digest;
	int64_t size;
	assert_int_equal(ib_archive_member(m, "dir/hello.txt", &file, &size, &digest, NULL), 0);
	assert_int_equal(size, 6);
	char want[IB_DIGEST_BUFLEN];
	ib_digest_buffer(want, "hello\n", 6);
	assert_string_equal(digest, want);
	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(ib_read_file(file, 100, &buf, &len, NULL), 0);
	assert_string_equal(buf, "hello\n");
	free(buf);
	/* extracted under generated names, never under the member's own */
	assert_true(strncmp(file, f->xdir, strlen(f->xdir)) == 0);
	assert_null(strstr(file, "hello"));
	assert_int_equal(ib_archive_member(m, "dir", &file, NULL, NULL, NULL), IB_ENOTFOUND);
	assert_int_equal(ib_archive_member(m, "nope", &file, NULL, NULL, NULL), IB_ENOTFOUND);
	ib_archive_members_free(m);
}

static void test_extract_rejects_dotdot_member(void **state)
{
	const tentry e[] = {{"ok.json", 'f', "{}", 0}, {"../evil", 'f', "x", 0}};
	expect_extract_fails(*state, e, 2, IB_EUNSAFE, "../evil");
	fixture *f = *state;
	/* the code does not depend on the caller wanting the message */
	cleanup_free char *in = ib_path_join(f->dir, "in.tar");
	cleanup_free char *x2 = ib_path_join(f->dir, "x2");
	assert_int_equal(mkdir(x2, 0700), 0);
	ib_archive_members *m = NULL;
	assert_int_equal(ib_archive_extract(in, x2, &m, NULL), IB_EUNSAFE);
	cleanup_free char *evil = ib_path_join(f->dir, "evil");
	assert_false(ib_file_exists(evil));
}

static void test_extract_rejects_absolute_member(void **state)
{
	const tentry e[] = {{"/etc/evil", 'f', "x", 0}};
	expect_extract_fails(*state, e, 1, IB_EUNSAFE, "absolute");
}

static void test_extract_rejects_symlink_leaving_archive(void **state)
{
	const tentry e[] = {{"a/link", 'l', "../../etc/passwd", 0}};
	expect_extract_fails(*state, e, 1, IB_EUNSAFE, "outside the archive");
	const tentry e2[] = {{"link", 'l', "/etc/passwd", 0}};
	expect_extract_fails(*state, e2, 1, IB_EUNSAFE, "absolute");
}

static void test_extract_rejects_devices_and_fifos(void **state)
{
	const tentry e[] = {{"fifo", 'p', "", 0}};
	expect_extract_fails(*state, e, 1, IB_EUNSAFE, "fifo");
	const tentry e2[] = {{"null", 'c', "", 0}};
	expect_extract_fails(*state, e2, 1, IB_EUNSAFE, "null");
}

static void test_extract_rejects_duplicate_member(void **state)
{
	const tentry e[] = {{"manifest.json", 'f', "[]", 0}, {"./manifest.json", 'f', "[1]", 0}};
	expect_extract_fails(*state, e, 2, IB_EINVALID, "twice");
}

static void test_extract_rejects_hardlink_outside(void **state)
{
	const tentry e[] = {{"x", 'h', "../etc/shadow", 0}};
	expect_extract_fails(*state, e, 1, IB_EUNSAFE, "hardlink");
}

static void test_extract_resolves_links_inside(void **state)
{
	fixture *f = *state;
	const tentry e[] = {{"blobs/sha256/aa", 'f', "layer-bytes", 0},
			    {"one/layer.tar", 'l', "../blobs/sha256/aa", 0},
			    {"two/layer.tar", 'h', "blobs/sha256/aa", 0},
			    {"three", 'l', "one/layer.tar", 0}};
	ib_archive_members *m = NULL;
	assert_int_equal(extract(f, e, 4, &m, NULL), 0);
	const char *a, *b, *c, *d;
	assert_int_equal(ib_archive_member(m, "blobs/sha256/aa", &a, NULL, NULL, NULL), 0);
	assert_int_equal(ib_archive_member(m, "one/layer.tar", &b, NULL, NULL, NULL), 0);
	assert_int_equal(ib_archive_member(m, "two/layer.tar", &c, NULL, NULL, NULL), 0);
	assert_int_equal(ib_archive_member(m, "three", &d, NULL, NULL, NULL), 0);
	assert_string_equal(a, b);
	assert_string_equal(a, c);
	assert_string_equal(a, d);
	ib_archive_members_free(m);
}

static void test_extract_detects_link_loops(void **state)
{
	fixture *f = *state;
	const tentry e[] = {{"a", 'l', "b", 0}, {"b", 'l', "a", 0}};
	ib_archive_members *m = NULL;
	assert_int_equal(extract(f, e, 2, &m, NULL), 0);
	const char *file;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_member(m, "a", &file, NULL, NULL, &err), IB_EINVALID);
	ib_error_free(&err);
	ib_archive_members_free(m);
}

static void test_member_read_enforces_cap(void **state)
{
	fixture *f = *state;
	const tentry e[] = {{"big.json", 'f', "0123456789", 0}};
	ib_archive_members *m = NULL;
	assert_int_equal(extract(f, e, 1, &m, NULL), 0);
	char *buf = NULL;
	size_t len = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_member_read(m, "big.json", 9, &buf, &len, &err), IB_ETOOLARGE);
	assert_null(buf);
	ib_error_free(&err);
	assert_int_equal(ib_archive_member_read(m, "big.json", 10, &buf, &len, NULL), 0);
	assert_int_equal(len, 10);
	free(buf);
	ib_archive_members_free(m);
}

static void test_extract_rejects_non_tar_and_missing_files(void **state)
{
	fixture *f = *state;
	cleanup_free char *path = ib_path_join(f->dir, "text");
	const char junk[] = "this is certainly not a tar archive, only a line of text\n";
	assert_int_equal(ib_write_file_atomic(path, junk, sizeof(junk) - 1, 0644, NULL), 0);
	ib_archive_members *m = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_extract(path, f->xdir, &m, &err), IB_EINVALID);
	assert_null(m);
	ib_error_free(&err);
	cleanup_free char *missing = ib_path_join(f->dir, "missing.tar");
	assert_int_equal(ib_archive_extract(missing, f->xdir, &m, &err), IB_ENOTFOUND);
	assert_non_null(strstr(err->msg, "missing.tar"));
	ib_error_free(&err);
}

static void test_extract_rejects_truncated_tar(void **state)
{
	fixture *f = *state;
	char *data = xmalloc(100000);
	memset(data, 'z', 100000);
	const tentry e[] = {{"big", 'f', data, 100000}};
	cleanup_free char *path = ib_path_join(f->dir, "in.tar");
	write_tar(path, e, 1);
	free(data);
	assert_int_equal(truncate(path, 50000), 0);
	ib_archive_members *m = NULL;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_extract(path, f->xdir, &m, &err), IB_EINVALID);
	assert_null(m);
	ib_error_free(&err);
}

/* ---------------------------------------------------------------- docker manifest.json */

static int parse_docker(const char *json, ib_docker_archive_image **imgs, size_t *n, ib_error **err)
{
	return ib_docker_manifest_parse(json, strlen(json), imgs, n, err);
}

static void test_docker_manifest_parses_and_normalises_tags(void **state)
{
	(void)state;
	ib_docker_archive_image *imgs = NULL;
	size_t n = 0;
	const char *j = "[{\"Config\":\"c.json\",\"RepoTags\":[\"bb:1\",\"localhost:5000/x/y:z\"],"
			"\"Layers\":[\"a/layer.tar\",\"b/layer.tar\"]},"
			"{\"Config\":\"d.json\",\"RepoTags\":null,\"Layers\":[]}]";
	assert_int_equal(parse_docker(j, &imgs, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_string_equal(imgs[0].config, "c.json");
	assert_string_equal(imgs[0].repo_tags[0], "docker.io/library/bb:1");
	assert_string_equal(imgs[0].repo_tags[1], "localhost:5000/x/y:z");
	assert_null(imgs[0].repo_tags[2]);
	assert_int_equal(imgs[0].n_layers, 2);
	assert_string_equal(imgs[0].layers[1], "b/layer.tar");
	assert_null(imgs[1].repo_tags[0]);
	assert_int_equal(imgs[1].n_layers, 0);
	ib_docker_manifest_free(imgs, n);
}

static void test_docker_manifest_rejects_bad_documents(void **state)
{
	(void)state;
	const struct {
		const char *json;
		int code;
	} bad[] = {
	    {"", IB_EINVALID},
	    {"[{\"Config\":", IB_EINVALID},
	    {"{}", IB_EINVALID},
	    {"[]", IB_EINVALID},
	    {"[1]", IB_EINVALID},
	    {"[{\"RepoTags\":[],\"Layers\":[]}]", IB_EINVALID},
	    {"[{\"Config\":7,\"Layers\":[]}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\"}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Layers\":\"a\"}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Layers\":[1]}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Layers\":[],\"RepoTags\":\"x\"}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Layers\":[],\"RepoTags\":[\"UPPER:case\"]}]", IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Layers\":[],\"RepoTags\":[\"x@sha256:"
	     "0000000000000000000000000000000000000000000000000000000000000000\"]}]",
	     IB_EINVALID},
	    {"[{\"Config\":\"c.json\",\"Config\":\"d.json\",\"Layers\":[]}]", IB_EINVALID},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_docker_archive_image *imgs = NULL;
		size_t n = 0;
		ib_error *err = NULL;
		int r = parse_docker(bad[i].json, &imgs, &n, &err);
		if (r != bad[i].code)
			fail_msg("case %zu (%s): got %d", i, bad[i].json, r);
		assert_null(imgs);
		assert_non_null(err);
		ib_error_free(&err);
	}
}

static void test_docker_manifest_rejects_dotdot_member_names(void **state)
{
	(void)state;
	const char *bad[] = {
	    "[{\"Config\":\"../c.json\",\"Layers\":[]}]",
	    "[{\"Config\":\"/etc/c.json\",\"Layers\":[]}]",
	    "[{\"Config\":\"c.json\",\"Layers\":[\"ok/layer.tar\",\"x/../../layer.tar\"]}]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_docker_archive_image *imgs = NULL;
		size_t n = 0;
		ib_error *err = NULL;
		if (parse_docker(bad[i], &imgs, &n, &err) != IB_EUNSAFE)
			fail_msg("case %zu accepted: %s", i, bad[i]);
		ib_error_free(&err);
		/* the code does not depend on the caller wanting the message */
		assert_int_equal(parse_docker(bad[i], &imgs, &n, NULL), IB_EUNSAFE);
	}
}

/* ---------------------------------------------------------------- OCI layout */

static void test_oci_layout_version_checked(void **state)
{
	(void)state;
	const char ok[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	assert_int_equal(ib_oci_layout_check(ok, strlen(ok), NULL), 0);
	const char *bad[] = {"{\"imageLayoutVersion\":\"2.0.0\"}", "{}", "[]", "nope",
			     "{\"imageLayoutVersion\":1}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_error *err = NULL;
		assert_int_equal(ib_oci_layout_check(bad[i], strlen(bad[i]), &err), IB_EINVALID);
		ib_error_free(&err);
	}
}

#define D64 "1111111111111111111111111111111111111111111111111111111111111111"
#define E64 "2222222222222222222222222222222222222222222222222222222222222222"

static void test_oci_index_names_from_annotations(void **state)
{
	(void)state;
	const char *j =
	    "{\"schemaVersion\":2,\"manifests\":["
	    "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"sha256:" D64 "\",\"size\":10,"
	    "\"annotations\":{\"" IB_ANNOT_REF_NAME "\":\"docker.io/library/bb:1\"}},"
	    "{\"mediaType\":\"" IB_MT_OCI_MANIFEST "\",\"digest\":\"sha256:" E64 "\",\"size\":11,"
	    "\"annotations\":{\"" IB_ANNOT_REF_NAME "\":\"v2\","
	    "\"io.containerd.image.name\":\"localhost/app:v2\"}},"
	    "{\"mediaType\":\"" IB_MT_OCI_INDEX "\",\"digest\":\"sha256:" D64 "\",\"size\":12}]}";
	ib_oci_archive_entry *e = NULL;
	size_t n = 0;
	assert_int_equal(ib_oci_archive_index_parse(j, strlen(j), &e, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].name, "docker.io/library/bb:1");
	assert_string_equal(e[0].desc.digest, "sha256:" D64);
	assert_int_equal(e[0].desc.size, 10);
	assert_string_equal(e[1].name, "localhost/app:v2");
	assert_null(e[2].name);
	assert_string_equal(e[2].desc.media_type, IB_MT_OCI_INDEX);
	ib_oci_archive_entries_free(e, n);
}

static void test_oci_index_rejects_bad_entries(void **state)
{
	(void)state;
	const char *bad[] = {
	    "not json",
	    "{\"schemaVersion\":2,\"manifests\":[]}",
	    /* a layer is not an image */
	    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" IB_MT_OCI_LAYER
	    "\",\"digest\":\"sha256:" D64 "\",\"size\":1}]}",
	    /* bad digest */
	    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" IB_MT_OCI_MANIFEST
	    "\",\"digest\":\"sha256:../../x\",\"size\":1}]}",
	    /* invalid name */
	    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" IB_MT_OCI_MANIFEST
	    "\",\"digest\":\"sha256:" D64 "\",\"size\":1,\"annotations\":{\"" IB_ANNOT_REF_NAME
	    "\":\"Not A Name\"}}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_oci_archive_entry *e = NULL;
		size_t n = 0;
		ib_error *err = NULL;
		if (ib_oci_archive_index_parse(bad[i], strlen(bad[i]), &e, &n, &err) != IB_EINVALID)
			fail_msg("case %zu accepted", i);
		assert_null(e);
		ib_error_free(&err);
	}
}

/* ---------------------------------------------------------------- save / load through a store */

/* A one-layer image tagged name in the store at root. */
static void make_image(const char *root, const char *name, char digest_out[IB_DIGEST_BUFLEN])
{
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, root, NULL), 0);
	const tentry e[] = {{"etc", 'd', "", 0}, {"etc/motd", 'f', "hi\n", 0}};
	size_t len = 0;
	char *layer = tar_buffer(e, 2, &len);
	ib_descriptor d = {0};
	d.media_type = xstrdup(IB_MT_OCI_LAYER);
	d.size = (int64_t)len;
	assert_int_equal(ib_store_blob_put(s, layer, len, d.digest, NULL), 0);
	free(layer);
	json_t *cfg = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "architecture", "amd64", "os",
				"linux", "rootfs", "type", "layers", "diff_ids", d.digest);
	ib_descriptor m = {0};
	assert_int_equal(ib_store_image_write(s, cfg, &d, 1, NULL, &m, NULL), 0);
	assert_int_equal(ib_store_tag_set(s, name, &m, NULL), 0);
	memcpy(digest_out, m.digest, IB_DIGEST_BUFLEN);
	json_decref(cfg);
	ib_descriptor_clear(&d);
	ib_descriptor_clear(&m);
	ib_store_free(s);
}

static size_t count_tags(ib_store *s)
{
	ib_store_tag *tags = NULL;
	size_t n = 0;
	assert_int_equal(ib_store_tags(s, &tags, &n, NULL), 0);
	ib_store_tags_free(tags, n);
	return n;
}

static void test_save_and_load_round_trip_both_formats(void **state)
{
	fixture *f = *state;
	cleanup_free char *root1 = ib_path_join(f->dir, "s1");
	char digest[IB_DIGEST_BUFLEN];
	make_image(root1, "docker.io/library/rt:1", digest);
	ib_store *s1 = NULL;
	assert_int_equal(ib_store_open(&s1, root1, NULL), 0);
	cleanup_free char *docker = ib_path_join(f->dir, "d.tar");
	cleanup_free char *oci = ib_path_join(f->dir, "o.tar");
	char *refs[] = {"rt:1"};
	assert_int_equal(ib_archive_save(s1, docker, IB_ARCHIVE_DOCKER, refs, 1, NULL), 0);
	assert_int_equal(ib_archive_save(s1, oci, IB_ARCHIVE_OCI, refs, 1, NULL), 0);
	ib_store_free(s1);

	const char *archives[] = {docker, oci};
	for (int k = 0; k < 2; k++) {
		cleanup_free char *root2 = xasprintf("%s/load%d", f->dir, k);
		ib_store *s2 = NULL;
		assert_int_equal(ib_store_open(&s2, root2, NULL), 0);
		ib_archive_loaded *l = NULL;
		size_t n = 0;
		ib_error *err = NULL;
		int r = ib_archive_load(s2, archives[k], &l, &n, &err);
		if (r < 0)
			fail_msg("load %s: %s", archives[k], ib_error_msg(err));
		assert_int_equal(n, 1);
		assert_string_equal(l[0].name, "docker.io/library/rt:1");
		if (k == 1) /* OCI keeps the manifest as it is */
			assert_string_equal(l[0].digest, digest);
		ib_image *img = NULL;
		assert_int_equal(ib_store_image_load(s2, "rt:1", &img, NULL), 0);
		assert_int_equal(img->manifest->n_layers, 1);
		ib_image_free(img);
		ib_archive_loaded_free(l, n);
		ib_store_free(s2);
	}
}

static void test_save_failure_leaves_no_file(void **state)
{
	fixture *f = *state;
	cleanup_free char *root = ib_path_join(f->dir, "s1");
	char digest[IB_DIGEST_BUFLEN];
	make_image(root, "docker.io/library/rt:1", digest);
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, root, NULL), 0);
	cleanup_free char *out = ib_path_join(f->dir, "out.tar");
	char *refs[] = {"rt:1", "missing:1"};
	ib_error *err = NULL;
	assert_int_equal(ib_archive_save(s, out, IB_ARCHIVE_DOCKER, refs, 2, &err), IB_ENOTFOUND);
	ib_error_free(&err);
	assert_false(ib_file_exists(out));
	/* a corrupt manifest blob is caught while reading the image */
	cleanup_free char *blob = ib_store_blob_path(s, digest);
	assert_int_equal(ib_write_file_atomic(blob, "{}", 2, 0644, NULL), 0);
	assert_true(ib_archive_save(s, out, IB_ARCHIVE_OCI, refs, 1, &err) < 0);
	ib_error_free(&err);
	assert_false(ib_file_exists(out));
	cleanup_free char *tmp = xasprintf("%s.tmp.%ld", out, (long)getpid());
	assert_false(ib_file_exists(tmp));
	ib_store_free(s);
}

/* A docker archive whose only layer is given; diff_id as given. */
static void write_docker_archive(const char *path, const char *layer, size_t len,
				 const char *diff_id)
{
	cleanup_free char *cfg = xasprintf(
	    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	    "\"diff_ids\":[\"%s\"]}}",
	    diff_id);
	const char man[] = "[{\"Config\":\"c.json\",\"RepoTags\":[\"loaded:1\"],"
			   "\"Layers\":[\"l/layer.tar\"]}]";
	const tentry e[] = {{"c.json", 'f', cfg, 0},
			    {"l/layer.tar", 'f', layer, len},
			    {"manifest.json", 'f', man, 0}};
	write_tar(path, e, 3);
}

static void test_load_refuses_wrong_diff_id_and_tags_nothing(void **state)
{
	fixture *f = *state;
	const tentry le[] = {{"etc", 'd', "", 0}, {"etc/motd", 'f', "hi\n", 0}};
	size_t len = 0;
	cleanup_free char *layer = tar_buffer(le, 2, &len);
	cleanup_free char *path = ib_path_join(f->dir, "bad.tar");
	write_docker_archive(path, layer, len, "sha256:" D64);
	cleanup_free char *root = ib_path_join(f->dir, "s");
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, root, NULL), 0);
	ib_archive_loaded *l = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_load(s, path, &l, &n, &err), IB_EDIGEST);
	assert_non_null(strstr(err->msg, "diff_id"));
	ib_error_free(&err);
	assert_null(l);
	assert_int_equal(count_tags(s), 0);

	/* the same archive with the right diff_id loads */
	char diff_id[IB_DIGEST_BUFLEN];
	ib_digest_buffer(diff_id, layer, len);
	write_docker_archive(path, layer, len, diff_id);
	int r = ib_archive_load(s, path, &l, &n, &err);
	if (r < 0)
		fail_msg("load: %s", ib_error_msg(err));
	assert_int_equal(n, 1);
	assert_string_equal(l[0].name, "docker.io/library/loaded:1");
	ib_archive_loaded_free(l, n);
	assert_int_equal(count_tags(s), 1);
	ib_store_free(s);
}

/* docker's image ID is the digest of the config bytes: load keeps them as
 * they are (key order, spacing), and save gives them back unchanged. */
static void test_load_keeps_docker_config_bytes(void **state)
{
	fixture *f = *state;
	const tentry le[] = {{"etc", 'd', "", 0}, {"etc/motd", 'f', "hi\n", 0}};
	size_t len = 0;
	cleanup_free char *layer = tar_buffer(le, 2, &len);
	char diff_id[IB_DIGEST_BUFLEN];
	ib_digest_buffer(diff_id, layer, len);
	cleanup_free char *cfg = xasprintf("{\"rootfs\": {\"type\": \"layers\", \"diff_ids\": "
					   "[\"%s\"]},\n  \"os\": \"linux\", \"architecture\": "
					   "\"amd64\", \"config\": {\"Cmd\": [\"sh\"]}}\n",
					   diff_id);
	char id[IB_DIGEST_BUFLEN];
	ib_digest_buffer(id, cfg, strlen(cfg));
	cleanup_free char *cname = xasprintf("%s.json", ib_digest_hex(id));
	const char man[] = "[{\"Config\":\"%s\",\"RepoTags\":[\"kept:1\"],"
			   "\"Layers\":[\"l/layer.tar\"]}]";
	cleanup_free char *mj = xasprintf(man, cname);
	const tentry e[] = {
	    {cname, 'f', cfg, 0}, {"l/layer.tar", 'f', layer, len}, {"manifest.json", 'f', mj, 0}};
	cleanup_free char *path = ib_path_join(f->dir, "kept.tar");
	write_tar(path, e, 3);

	cleanup_free char *root = ib_path_join(f->dir, "s");
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, root, NULL), 0);
	ib_archive_loaded *l = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	if (ib_archive_load(s, path, &l, &n, &err) < 0)
		fail_msg("load: %s", ib_error_msg(err));
	ib_archive_loaded_free(l, n);
	ib_image *img = NULL;
	assert_int_equal(ib_store_image_load(s, "kept:1", &img, NULL), 0);
	assert_string_equal(img->manifest->config.digest, id);
	assert_string_equal(img->desc.platform.architecture, "amd64");
	ib_image_free(img);

	/* saved again: the same config member, byte for byte */
	cleanup_free char *out = ib_path_join(f->dir, "again.tar");
	char *refs[] = {"kept:1"};
	assert_int_equal(ib_archive_save(s, out, IB_ARCHIVE_DOCKER, refs, 1, NULL), 0);
	cleanup_free char *x = ib_path_join(f->dir, "again");
	assert_int_equal(mkdir(x, 0700), 0);
	ib_archive_members *m = NULL;
	assert_int_equal(ib_archive_extract(out, x, &m, NULL), 0);
	cleanup_free char *back = NULL;
	size_t blen = 0;
	assert_int_equal(ib_archive_member_read(m, cname, 1 << 20, &back, &blen, NULL), 0);
	assert_int_equal(blen, strlen(cfg));
	assert_memory_equal(back, cfg, blen);
	ib_archive_members_free(m);
	ib_store_free(s);
}

static void test_load_refuses_hostile_layer(void **state)
{
	fixture *f = *state;
	const tentry le[] = {{"etc", 'd', "", 0}, {"../evil", 'f', "pwned\n", 0}};
	size_t len = 0;
	cleanup_free char *layer = tar_buffer(le, 2, &len);
	char diff_id[IB_DIGEST_BUFLEN];
	ib_digest_buffer(diff_id, layer, len);
	cleanup_free char *path = ib_path_join(f->dir, "evil.tar");
	write_docker_archive(path, layer, len, diff_id);
	cleanup_free char *root = ib_path_join(f->dir, "s");
	ib_store *s = NULL;
	assert_int_equal(ib_store_open(&s, root, NULL), 0);
	ib_archive_loaded *l = NULL;
	size_t n = 0;
	ib_error *err = NULL;
	assert_int_equal(ib_archive_load(s, path, &l, &n, &err), IB_EUNSAFE);
	ib_error_free(&err);
	assert_int_equal(count_tags(s), 0);
	cleanup_free char *tmp = ib_path_join(root, "tmp");
	cleanup_dir DIR *d = opendir(tmp);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			fail_msg("left behind in tmp: %s", de->d_name);
	ib_store_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_member_name_accepts_plain_relative_paths),
	    cmocka_unit_test(test_member_name_rejects_escapes_and_junk),
	    cmocka_unit_test(test_member_name_rejects_overlong),
	    cmocka_unit_test_setup_teardown(test_extract_regular_members_with_digests, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_dotdot_member, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_absolute_member, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_symlink_leaving_archive, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_devices_and_fifos, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_duplicate_member, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_hardlink_outside, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_resolves_links_inside, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_detects_link_loops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_member_read_enforces_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_non_tar_and_missing_files, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_extract_rejects_truncated_tar, setup, teardown),
	    cmocka_unit_test(test_docker_manifest_parses_and_normalises_tags),
	    cmocka_unit_test(test_docker_manifest_rejects_bad_documents),
	    cmocka_unit_test(test_docker_manifest_rejects_dotdot_member_names),
	    cmocka_unit_test(test_oci_layout_version_checked),
	    cmocka_unit_test(test_oci_index_names_from_annotations),
	    cmocka_unit_test(test_oci_index_rejects_bad_entries),
	    cmocka_unit_test_setup_teardown(test_save_and_load_round_trip_both_formats, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_save_failure_leaves_no_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_refuses_wrong_diff_id_and_tags_nothing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_load_keeps_docker_config_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_refuses_hostile_layer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
