/* Unit tests for compress.c: gzip and zstd streams are valid, round-trip,
 * and are byte-identical whatever the thread count or write chunking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <glob.h>
#include <stdio.h>
#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "compress.h"
#include "util.h"

struct out {
	ib_buf buf;
	int fail_after; /* fail the sink call with this index (0 = never) */
	int calls;
};

static int sink(const void *data, size_t len, void *payload)
{
	struct out *o = payload;
	o->calls++;
	if (o->fail_after && o->calls >= o->fail_after)
		return -1;
	return ib_buf_append(&o->buf, data, len) == 0 ? 0 : -1;
}

/* Deterministic, moderately compressible bytes (words from a small set
 * with random separators), so deflate has real work and back-references. */
static unsigned char *make_data(size_t n, uint32_t seed)
{
	static const char *const words[] = {"layer", "blob",	"digest", "tar",      "gzip",
					    "zstd",  "overlay", "sha256", "manifest", "image"};
	unsigned char *d = xmalloc(n ? n : 1);
	uint32_t x = seed ? seed : 1;
	size_t i = 0;
	while (i < n) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		const char *w = words[x % 10];
		for (size_t k = 0; w[k] && i < n; k++)
			d[i++] = (unsigned char)w[k];
		if (i < n)
			d[i++] = (unsigned char)(" \n\t,"[(x >> 8) % 4] + ((x >> 16) % 3 == 0));
	}
	return d;
}

static unsigned char *random_bytes(size_t n, uint32_t seed)
{
	unsigned char *d = xmalloc(n);
	uint32_t x = seed;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		d[i] = (unsigned char)(x >> 24);
	}
	return d;
}

/* Compress data writing it in pieces of `chunk` bytes (0 = all at once). */
static void compress_buf(ib_compression kind, int threads, const unsigned char *data, size_t n,
			 size_t chunk, struct out *o)
{
	ib_error *err = NULL;
	ib_compressor *c = NULL;
	ib_buf_init(&o->buf, 0);
	assert_int_equal(ib_compressor_new(&c, kind, threads, 0, sink, o, &err), 0);
	size_t off = 0;
	while (off < n) {
		size_t k = chunk && chunk < n - off ? chunk : n - off;
		assert_int_equal(ib_compressor_write(c, data + off, k, &err), 0);
		off += k;
	}
	assert_int_equal(ib_compressor_finish(c, &err), 0);
	assert_null(err);
	ib_compressor_free(c);
}

/* Inflate a gzip stream of one or more members with zlib (which checks
 * each member's CRC and length), the way gzip and Go's reader do. */
static unsigned char *gunzip(const ib_buf *in, size_t *out_len)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
	size_t alloc = 1 << 16, len = 0;
	unsigned char *out = xmalloc(alloc);
	zs.next_in = (unsigned char *)in->data;
	zs.avail_in = (uInt)in->len;
	int r;
	do {
		if (len == alloc) {
			alloc *= 2;
			out = xrealloc(out, alloc);
		}
		zs.next_out = out + len;
		zs.avail_out = (uInt)(alloc - len);
		r = inflate(&zs, Z_NO_FLUSH);
		len = alloc - zs.avail_out;
		assert_true(r == Z_OK || r == Z_STREAM_END || (r == Z_BUF_ERROR && len == alloc));
		if (r == Z_STREAM_END && zs.avail_in > 0) { /* the next member */
			assert_int_equal(inflateReset(&zs), Z_OK);
			r = Z_OK;
		}
	} while (r != Z_STREAM_END);
	assert_int_equal(zs.avail_in, 0); /* nothing after the last trailer */
	inflateEnd(&zs);
	*out_len = len;
	return out;
}

static void assert_gzip_roundtrip(const ib_buf *gz, const unsigned char *data, size_t n)
{
	size_t len = 0;
	unsigned char *plain = gunzip(gz, &len);
	assert_int_equal(len, n);
	if (n)
		assert_memory_equal(plain, data, n);
	free(plain);
}

static void test_gzip_roundtrip_multi_block(void **state)
{
	(void)state;
	size_t n = 5 * IB_COMPRESS_GZIP_BLOCK + 12345;
	unsigned char *data = make_data(n, 7);
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 2, data, n, 0, &o);
	assert_true(o.buf.len < n / 2);
	assert_gzip_roundtrip(&o.buf, data, n);
	ib_buf_free(&o.buf);
	free(data);
}

static void test_gzip_header_is_fixed(void **state)
{
	(void)state;
	static const unsigned char want[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	unsigned char *data = make_data(1000, 3);
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 1, data, 1000, 0, &o);
	assert_true(o.buf.len > 18);
	assert_memory_equal(o.buf.data, want, sizeof(want));
	/* Trailer: CRC-32 and length, little-endian. */
	const unsigned char *t = (const unsigned char *)o.buf.data + o.buf.len - 8;
	uint32_t crc = (uint32_t)crc32(0, data, 1000);
	assert_int_equal(t[0] | t[1] << 8 | t[2] << 16 | (uint32_t)t[3] << 24, crc);
	assert_int_equal(t[4] | t[5] << 8 | t[6] << 16 | (uint32_t)t[7] << 24, 1000);
	ib_buf_free(&o.buf);
	free(data);
}

static void test_gzip_identical_for_any_thread_count(void **state)
{
	(void)state;
	size_t n = 9 * IB_COMPRESS_GZIP_BLOCK + 77;
	unsigned char *data = make_data(n, 11);
	struct out ref = {0};
	compress_buf(IB_COMP_GZIP, 1, data, n, 0, &ref);
	const int threads[] = {2, 3, 4, 8, 0};
	for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
		struct out o = {0};
		compress_buf(IB_COMP_GZIP, threads[i], data, n, 0, &o);
		assert_int_equal(o.buf.len, ref.buf.len);
		assert_memory_equal(o.buf.data, ref.buf.data, ref.buf.len);
		ib_buf_free(&o.buf);
	}
	assert_gzip_roundtrip(&ref.buf, data, n);
	ib_buf_free(&ref.buf);
	free(data);
}

static void test_gzip_identical_for_any_write_chunking(void **state)
{
	(void)state;
	size_t n = 3 * IB_COMPRESS_GZIP_BLOCK + 999;
	unsigned char *data = make_data(n, 5);
	struct out ref = {0};
	compress_buf(IB_COMP_GZIP, 2, data, n, 0, &ref);
	const size_t chunks[] = {1000, 4096, IB_COMPRESS_GZIP_BLOCK, IB_COMPRESS_GZIP_BLOCK + 1};
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct out o = {0};
		compress_buf(IB_COMP_GZIP, 2, data, n, chunks[i], &o);
		assert_int_equal(o.buf.len, ref.buf.len);
		assert_memory_equal(o.buf.data, ref.buf.data, ref.buf.len);
		ib_buf_free(&o.buf);
	}
	ib_buf_free(&ref.buf);
	free(data);
}

static void test_gzip_empty_input(void **state)
{
	(void)state;
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 2, NULL, 0, 0, &o);
	assert_gzip_roundtrip(&o.buf, NULL, 0);
	ib_buf_free(&o.buf);
}

static void test_gzip_exact_block_multiple(void **state)
{
	(void)state;
	size_t n = 2 * IB_COMPRESS_GZIP_BLOCK;
	unsigned char *data = make_data(n, 9);
	struct out o = {0}, p = {0};
	compress_buf(IB_COMP_GZIP, 1, data, n, 0, &o);
	compress_buf(IB_COMP_GZIP, 4, data, n, 777, &p);
	assert_gzip_roundtrip(&o.buf, data, n);
	assert_int_equal(o.buf.len, p.buf.len);
	assert_memory_equal(o.buf.data, p.buf.data, o.buf.len);
	ib_buf_free(&o.buf);
	ib_buf_free(&p.buf);
	free(data);
}

/* Decompress with libarchive's gzip filter, as `tar tzf` and the unpacker
 * read layers. */
static unsigned char *archive_gunzip(const ib_buf *in, size_t *out_len)
{
	struct archive *a = archive_read_new();
	assert_non_null(a);
	assert_int_equal(archive_read_support_filter_gzip(a), ARCHIVE_OK);
	assert_int_equal(archive_read_support_format_raw(a), ARCHIVE_OK);
	assert_int_equal(archive_read_open_memory(a, in->data, in->len), ARCHIVE_OK);
	struct archive_entry *e;
	assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
	assert_int_equal(archive_filter_code(a, 0), ARCHIVE_FILTER_GZIP);
	size_t alloc = 1 << 16, len = 0;
	unsigned char *out = xmalloc(alloc);
	for (;;) {
		if (len == alloc) {
			alloc *= 2;
			out = xrealloc(out, alloc);
		}
		la_ssize_t k = archive_read_data(a, out + len, alloc - len);
		assert_true(k >= 0);
		if (k == 0)
			break;
		len += (size_t)k;
	}
	assert_int_equal(archive_read_free(a), ARCHIVE_OK);
	*out_len = len;
	return out;
}

/* A realistic corpus that is the same on every machine: this project's own
 * sources and docs (C, Lua, markdown: ~1.3 MB), as a layer of source files
 * would be.  Its exact size changes with the tree; its ratio hardly does. */
static unsigned char *source_corpus(size_t *n)
{
	const char *root = getenv("IB_SOURCE_DIR");
	assert_non_null(root);
	static const char *const pats[] = {"src/lib/*.[ch]", "src/cli/*.[ch]", "lua/*.lua",
					   "tests/unit/*.c", "docs/*.md"};
	ib_buf b;
	ib_buf_init(&b, 0);
	for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
		cleanup_free char *pat = xasprintf("%s/%s", root, pats[i]);
		glob_t g;
		if (glob(pat, 0, NULL, &g) != 0)
			continue;
		for (size_t k = 0; k < g.gl_pathc; k++) { /* glob sorts */
			FILE *f = fopen(g.gl_pathv[k], "rb");
			assert_non_null(f);
			char chunk[65536];
			size_t got;
			while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
				assert_int_equal(ib_buf_append(&b, chunk, got), 0);
			fclose(f);
		}
		globfree(&g);
	}
	*n = b.len;
	return (unsigned char *)b.data;
}

/* zlib at level 6 in one stream: what `gzip -6`, docker and buildah write. */
static size_t zlib6_size(const unsigned char *data, size_t n)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t alloc = deflateBound(&zs, (uLong)n);
	unsigned char *out = xmalloc(alloc);
	zs.next_in = (unsigned char *)data;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)alloc;
	assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
	size_t len = alloc - zs.avail_out;
	deflateEnd(&zs);
	free(out);
	return len;
}

static void test_gzip_size_within_2_percent_of_zlib6(void **state)
{
	(void)state;
	size_t n = 0;
	unsigned char *data = source_corpus(&n);
	assert_true(n > IB_COMPRESS_GZIP_BLOCK); /* more than one member */
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 2, data, n, 0, &o);
	assert_gzip_roundtrip(&o.buf, data, n);
	size_t ref = zlib6_size(data, n);
	/* A realistic ratio, or the comparison says little. */
	assert_true(ref > n / 8 && ref < n / 2);
	print_message("gzip default: %zu bytes, zlib -6: %zu bytes (%.2f%%)\n", o.buf.len, ref,
		      100.0 * ((double)o.buf.len / (double)ref - 1));
	assert_true((double)o.buf.len <= 1.02 * (double)ref);
	ib_buf_free(&o.buf);
	free(data);
}

/* One gzip member per block, each with the fixed header and a trailer
 * for exactly that block. */
static void test_gzip_one_member_per_block(void **state)
{
	(void)state;
	size_t n = 3 * IB_COMPRESS_GZIP_BLOCK + 100;
	unsigned char *data = make_data(n, 5);
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 3, data, n, 0, &o);
	static const unsigned char hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	const unsigned char *p = (const unsigned char *)o.buf.data, *end = p + o.buf.len;
	size_t members = 0, total = 0;
	while (p < end) {
		assert_true(end - p > 18);
		assert_memory_equal(p, hdr, sizeof(hdr));
		/* Inflate this member alone: it must end on its own. */
		z_stream zs;
		memset(&zs, 0, sizeof(zs));
		assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
		unsigned char *buf = xmalloc(IB_COMPRESS_GZIP_BLOCK);
		zs.next_in = (unsigned char *)p;
		zs.avail_in = (uInt)(end - p);
		zs.next_out = buf;
		zs.avail_out = IB_COMPRESS_GZIP_BLOCK;
		assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
		size_t got = IB_COMPRESS_GZIP_BLOCK - zs.avail_out;
		assert_memory_equal(buf, data + total, got);
		assert_int_equal(got, members < 3 ? IB_COMPRESS_GZIP_BLOCK : 100);
		total += got;
		p = zs.next_in;
		inflateEnd(&zs);
		free(buf);
		members++;
	}
	assert_int_equal(members, 4);
	assert_int_equal(total, n);
	ib_buf_free(&o.buf);
	free(data);
}

static void test_gzip_libarchive_reads_all_members(void **state)
{
	(void)state;
	size_t n = 5 * IB_COMPRESS_GZIP_BLOCK + 777;
	unsigned char *data = make_data(n, 17);
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 4, data, n, 3000, &o);
	size_t len = 0;
	unsigned char *plain = archive_gunzip(&o.buf, &len);
	assert_int_equal(len, n);
	assert_memory_equal(plain, data, n);
	free(plain);
	ib_buf_free(&o.buf);
	free(data);
}

/* Compress with threads = 0 under IMGBUILD_COMPRESS_THREADS=value. */
static void compress_env_threads(const char *value, const unsigned char *data, size_t n,
				 struct out *o)
{
	assert_int_equal(setenv("IMGBUILD_COMPRESS_THREADS", value, 1), 0);
	compress_buf(IB_COMP_GZIP, 0, data, n, 65536, o);
	unsetenv("IMGBUILD_COMPRESS_THREADS");
}

static void test_gzip_thread_env_gives_identical_output(void **state)
{
	(void)state;
	size_t n = 7 * IB_COMPRESS_GZIP_BLOCK + 1;
	unsigned char *data = make_data(n, 23);
	struct out one = {0}, four = {0};
	compress_env_threads("1", data, n, &one);
	compress_env_threads("4", data, n, &four);
	assert_int_equal(one.buf.len, four.buf.len);
	assert_memory_equal(one.buf.data, four.buf.data, one.buf.len);
	assert_gzip_roundtrip(&one.buf, data, n);
	ib_buf_free(&one.buf);
	ib_buf_free(&four.buf);
	free(data);

	/* A bad value is an error, not a silent fallback. */
	const char *bad[] = {"0", "-2", "four", "4x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct out o = {0};
		ib_error *err = NULL;
		ib_compressor *c = NULL;
		assert_int_equal(setenv("IMGBUILD_COMPRESS_THREADS", bad[i], 1), 0);
		assert_int_equal(ib_compressor_new(&c, IB_COMP_GZIP, 0, 0, sink, &o, &err),
				 IB_EINVALID);
		unsetenv("IMGBUILD_COMPRESS_THREADS");
		assert_null(c);
		assert_non_null(err);
		ib_error_free(&err);
	}
}

static void test_cache_tag_and_default_level(void **state)
{
	(void)state;
	assert_int_equal(ib_compress_level(IB_COMP_GZIP, 0), IB_COMPRESS_GZIP_LEVEL);
	assert_int_equal(ib_compress_level(IB_COMP_GZIP, 2), 2);
	assert_int_equal(ib_compress_level(IB_COMP_ZSTD, 0), IB_COMPRESS_ZSTD_LEVEL);
	/* The zlib encoder's cache entries were keyed "gzip": never reuse them. */
	assert_string_not_equal(ib_compress_cache_tag(IB_COMP_GZIP), "gzip");
	assert_string_not_equal(ib_compress_cache_tag(IB_COMP_GZIP),
				ib_compress_cache_tag(IB_COMP_ZSTD));
}

static void test_gzip_incompressible_data(void **state)
{
	(void)state;
	size_t n = 3 * IB_COMPRESS_GZIP_BLOCK + 5;
	unsigned char *data = random_bytes(n, 1234);
	struct out o = {0};
	compress_buf(IB_COMP_GZIP, 3, data, n, 0, &o);
	assert_gzip_roundtrip(&o.buf, data, n);
	ib_buf_free(&o.buf);
	free(data);
}

static unsigned char *unzstd(const ib_buf *in, size_t *out_len)
{
	ZSTD_DStream *ds = ZSTD_createDStream();
	assert_non_null(ds);
	size_t alloc = 1 << 16, len = 0;
	unsigned char *out = xmalloc(alloc);
	ZSTD_inBuffer ib = {in->data, in->len, 0};
	size_t r;
	do {
		if (len == alloc) {
			alloc *= 2;
			out = xrealloc(out, alloc);
		}
		ZSTD_outBuffer ob = {out + len, alloc - len, 0};
		r = ZSTD_decompressStream(ds, &ob, &ib);
		assert_false(ZSTD_isError(r));
		len += ob.pos;
	} while (r != 0 || ib.pos < ib.size);
	ZSTD_freeDStream(ds);
	*out_len = len;
	return out;
}

static void test_zstd_roundtrip_with_checksum(void **state)
{
	(void)state;
	size_t n = 3 * (1u << 20) + 17;
	unsigned char *data = make_data(n, 21);
	struct out o = {0};
	compress_buf(IB_COMP_ZSTD, 2, data, n, 100000, &o);
	assert_true(o.buf.len < n / 2);
	/* Magic, then the frame header descriptor: bit 2 = content checksum. */
	static const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
	assert_memory_equal(o.buf.data, magic, 4);
	assert_true(((unsigned char)o.buf.data[4] & 0x04) != 0);
	size_t len = 0;
	unsigned char *plain = unzstd(&o.buf, &len);
	assert_int_equal(len, n);
	assert_memory_equal(plain, data, n);
	free(plain);
	ib_buf_free(&o.buf);
	free(data);
}

static void test_zstd_identical_for_any_thread_count(void **state)
{
	(void)state;
	size_t n = 20u << 20; /* several zstd jobs */
	unsigned char *data = make_data(n, 33);
	struct out ref = {0};
	compress_buf(IB_COMP_ZSTD, 1, data, n, 0, &ref);
	const int threads[] = {2, 4};
	for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
		struct out o = {0};
		compress_buf(IB_COMP_ZSTD, threads[i], data, n, 1 << 20, &o);
		assert_int_equal(o.buf.len, ref.buf.len);
		assert_memory_equal(o.buf.data, ref.buf.data, ref.buf.len);
		ib_buf_free(&o.buf);
	}
	ib_buf_free(&ref.buf);
	free(data);
}

static void test_none_passes_bytes_through(void **state)
{
	(void)state;
	unsigned char *data = make_data(5000, 2);
	struct out o = {0};
	compress_buf(IB_COMP_NONE, 0, data, 5000, 999, &o);
	assert_int_equal(o.buf.len, 5000);
	assert_memory_equal(o.buf.data, data, 5000);
	ib_buf_free(&o.buf);
	free(data);
}

static void test_sink_failure_fails_the_stream(void **state)
{
	(void)state;
	const ib_compression kinds[] = {IB_COMP_GZIP, IB_COMP_ZSTD, IB_COMP_NONE};
	size_t n = 4 * IB_COMPRESS_GZIP_BLOCK;
	unsigned char *data = random_bytes(n, 8);
	for (size_t k = 0; k < 3; k++) {
		struct out o = {0};
		o.fail_after = 2;
		ib_buf_init(&o.buf, 0);
		ib_error *err = NULL;
		ib_compressor *c = NULL;
		assert_int_equal(ib_compressor_new(&c, kinds[k], 2, 0, sink, &o, &err), 0);
		int r = 0;
		for (size_t off = 0; off < n && r == 0; off += 4096)
			r = ib_compressor_write(c, data + off, 4096, &err);
		if (r == 0)
			r = ib_compressor_finish(c, &err);
		assert_true(r < 0);
		assert_non_null(err);
		ib_error_free(&err);
		/* Stays failed. */
		assert_true(ib_compressor_write(c, data, 10, &err) < 0);
		ib_error_free(&err);
		ib_compressor_free(c);
		ib_buf_free(&o.buf);
	}
	free(data);
}

static void test_free_without_finish(void **state)
{
	(void)state;
	size_t n = 6 * IB_COMPRESS_GZIP_BLOCK;
	unsigned char *data = make_data(n, 4);
	struct out o = {0};
	ib_buf_init(&o.buf, 0);
	ib_error *err = NULL;
	ib_compressor *c = NULL;
	assert_int_equal(ib_compressor_new(&c, IB_COMP_GZIP, 4, 0, sink, &o, &err), 0);
	assert_int_equal(ib_compressor_write(c, data, n, &err), 0);
	ib_compressor_free(c); /* workers may still be busy: must not leak or hang */
	ib_buf_free(&o.buf);
	free(data);
}

static void test_bad_level_is_rejected(void **state)
{
	(void)state;
	struct out o = {0};
	ib_error *err = NULL;
	ib_compressor *c = NULL;
	assert_int_equal(ib_compressor_new(&c, IB_COMP_GZIP, 1, 10, sink, &o, &err), IB_EINVALID);
	assert_null(c);
	ib_error_free(&err);
	assert_int_equal(ib_compressor_new(&c, IB_COMP_ZSTD, 1, 99, sink, &o, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_compressor_new(&c, IB_COMP_GZIP, 1, -1, sink, &o, &err), IB_EINVALID);
	ib_error_free(&err);
}

static void test_online_cpus_positive(void **state)
{
	(void)state;
	assert_true(ib_compress_online_cpus() >= 1);
}

static void test_compression_parse(void **state)
{
	(void)state;
	ib_compression alg = IB_COMP_NONE;
	int lvl = -1;
	ib_error *err = NULL;
	assert_int_equal(ib_compression_parse(NULL, NULL, &alg, &lvl, &err), 0);
	assert_int_equal(alg, IB_COMP_GZIP);
	assert_int_equal(lvl, 0);
	assert_int_equal(ib_compression_parse("zstd", "19", &alg, &lvl, &err), 0);
	assert_int_equal(alg, IB_COMP_ZSTD);
	assert_int_equal(lvl, 19);
	assert_int_equal(ib_compression_parse("gzip", "9", &alg, &lvl, &err), 0);
	assert_int_equal(lvl, 9);
	assert_int_equal(ib_compression_parse("gzip", "10", &alg, &lvl, &err), IB_EINVALID);
	assert_non_null(strstr(err->msg, "gzip must be 1-9"));
	ib_error_free(&err);
	assert_int_equal(ib_compression_parse("zstd", "0", &alg, &lvl, NULL), IB_EINVALID);
	assert_int_equal(ib_compression_parse("zstd", "20", &alg, &lvl, NULL), IB_EINVALID);
	assert_int_equal(ib_compression_parse("lz4", NULL, &alg, &lvl, &err), IB_EINVALID);
	assert_non_null(strstr(err->msg, "'lz4'"));
	ib_error_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_gzip_roundtrip_multi_block),
	    cmocka_unit_test(test_gzip_header_is_fixed),
	    cmocka_unit_test(test_gzip_identical_for_any_thread_count),
	    cmocka_unit_test(test_gzip_identical_for_any_write_chunking),
	    cmocka_unit_test(test_gzip_empty_input),
	    cmocka_unit_test(test_gzip_exact_block_multiple),
	    cmocka_unit_test(test_gzip_size_within_2_percent_of_zlib6),
	    cmocka_unit_test(test_gzip_one_member_per_block),
	    cmocka_unit_test(test_gzip_libarchive_reads_all_members),
	    cmocka_unit_test(test_gzip_thread_env_gives_identical_output),
	    cmocka_unit_test(test_cache_tag_and_default_level),
	    cmocka_unit_test(test_gzip_incompressible_data),
	    cmocka_unit_test(test_zstd_roundtrip_with_checksum),
	    cmocka_unit_test(test_zstd_identical_for_any_thread_count),
	    cmocka_unit_test(test_none_passes_bytes_through),
	    cmocka_unit_test(test_sink_failure_fails_the_stream),
	    cmocka_unit_test(test_free_without_finish),
	    cmocka_unit_test(test_bad_level_is_rejected),
	    cmocka_unit_test(test_online_cpus_positive),
	    cmocka_unit_test(test_compression_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
