/* TOML reader (src/lib/toml.c): valid documents, each malformed case with
 * its FILE:LINE, and a deterministic mutation fuzz run under the
 * sanitizers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "toml.h"
#include "util.h"

static ib_toml *parse_ok(const char *text)
{
	ib_toml *t = NULL;
	ib_error *err = NULL;
	if (ib_toml_parse(&t, text, strlen(text), "t.toml", &err) < 0)
		fail_msg("parse failed: %s\n%s", ib_error_msg(err), text);
	assert_null(err);
	return t;
}

static void check_bad(const char *text, int line, const char *why)
{
	ib_toml *t = NULL;
	ib_error *err = NULL;
	int r = ib_toml_parse(&t, text, strlen(text), "bad.conf", &err);
	if (r == 0)
		fail_msg("parsed but should not have:\n%s", text);
	assert_int_equal(r, IB_EINVALID);
	assert_null(t);
	cleanup_free char *prefix = xasprintf("bad.conf:%d: ", line);
	const char *m = ib_error_msg(err);
	if (strncmp(m, prefix, strlen(prefix)) != 0 || !strstr(m, why))
		fail_msg("want \"%s...%s\", got \"%s\" for:\n%s", prefix, why, m, text);
	ib_error_free(&err);
}

static const char *str_at(const ib_toml *t, const char *path)
{
	/* "a.b.c" (keys without dots) */
	const ib_toml *cur = t;
	for (const char *k = path; cur;) {
		size_t n = strcspn(k, ".");
		cleanup_free char *key = xstrndup(k, n);
		cur = ib_toml_get(cur, key);
		if (!k[n])
			break;
		k += n + 1;
	}
	return ib_toml_string(cur);
}

static void test_scalars(void **state)
{
	(void)state;
	ib_toml *t = parse_ok("# comment\n"
			      "a = \"basic \\\"q\\\" \\t \\u00e9 \\U0001F600\"\n"
			      "b = 'C:\\path\\no-escape'\n"
			      "c = true\n"
			      "d = false # trailing\n"
			      "e = 1_000\n"
			      "f = -42\n"
			      "g = 0xff\n"
			      "h = 0o17\n"
			      "i = 0b101\n"
			      "j = 3.5e2\n"
			      "k = -inf\n"
			      "\"quoted key\" = 1\n"
			      "'lit.key' = 2\n"
			      "bare-key_1 = 3\r\n"
			      "empty = \"\"\n");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "a")),
			    "basic \"q\" \t \xc3\xa9 \xf0\x9f\x98\x80");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "b")), "C:\\path\\no-escape");
	assert_true(ib_toml_bool(ib_toml_get(t, "c")));
	assert_int_equal(ib_toml_type_of(ib_toml_get(t, "d")), IB_TOML_BOOL);
	assert_false(ib_toml_bool(ib_toml_get(t, "d")));
	assert_int_equal(ib_toml_int(ib_toml_get(t, "e")), 1000);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "f")), -42);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "g")), 255);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "h")), 15);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "i")), 5);
	assert_int_equal(ib_toml_type_of(ib_toml_get(t, "j")), IB_TOML_FLOAT);
	assert_int_equal(ib_toml_type_of(ib_toml_get(t, "k")), IB_TOML_FLOAT);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "quoted key")), 1);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "lit.key")), 2);
	assert_int_equal(ib_toml_int(ib_toml_get(t, "bare-key_1")), 3);
	assert_string_equal(ib_toml_string(ib_toml_get(t, "empty")), "");
	assert_int_equal(ib_toml_line(ib_toml_get(t, "f")), 7);
	assert_null(ib_toml_get(t, "missing"));
	assert_null(ib_toml_string(ib_toml_get(t, "c")));
	ib_toml_free(t);
}

static void test_multiline_strings(void **state)
{
	(void)state;
	ib_toml *t = parse_ok("a = \"\"\"\nline1\nline2\"\"\"\n"
			      "b = '''\n  raw \\n '' '''\n"
			      "c = \"\"\"one \\\n     two\"\"\"\n"
			      "d = \"\"\"q\"\"\"\"\"\n"
			      "e = 1\n");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "a")), "line1\nline2");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "b")), "  raw \\n '' ");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "c")), "one two");
	assert_string_equal(ib_toml_string(ib_toml_get(t, "d")), "q\"\"");
	assert_int_equal(ib_toml_line(ib_toml_get(t, "e")), 9);
	ib_toml_free(t);
}

static void test_tables_and_arrays(void **state)
{
	(void)state;
	ib_toml *t = parse_ok("top = [ \"a\", 'b',\n  # comment in array\n  \"c\", ]\n"
			      "nested = [[1, 2], [\"x\"]]\n"
			      "inl = { x = 1, y.z = \"deep\" }\n"
			      "dotted.key.here = \"v\"\n"
			      "dotted.key.other = \"w\"\n"
			      "[server]\n"
			      "name = \"s\"\n"
			      "[server.sub]\n"
			      "x = 1\n"
			      "[[item]]\n"
			      "n = 1\n"
			      "[[item.part]]\n"
			      "p = \"a\"\n"
			      "[[item]]\n"
			      "n = 2\n"
			      "[ a . \"b\" . c ]\n"
			      "v = 'abc'\n");
	const ib_toml *top = ib_toml_get(t, "top");
	assert_int_equal(ib_toml_type_of(top), IB_TOML_ARRAY);
	assert_int_equal(ib_toml_len(top), 3);
	assert_string_equal(ib_toml_string(ib_toml_at(top, 2, NULL)), "c");
	assert_null(ib_toml_at(top, 3, NULL));
	assert_int_equal(ib_toml_len(ib_toml_get(t, "nested")), 2);
	assert_string_equal(str_at(t, "inl.y.z"), "deep");
	assert_string_equal(str_at(t, "dotted.key.here"), "v");
	assert_string_equal(str_at(t, "dotted.key.other"), "w");
	assert_string_equal(str_at(t, "server.name"), "s");
	assert_int_equal(
	    ib_toml_int(ib_toml_get(ib_toml_get(ib_toml_get(t, "server"), "sub"), "x")), 1);
	const ib_toml *items = ib_toml_get(t, "item");
	assert_int_equal(ib_toml_len(items), 2);
	assert_int_equal(ib_toml_int(ib_toml_get(ib_toml_at(items, 1, NULL), "n")), 2);
	const ib_toml *parts = ib_toml_get(ib_toml_at(items, 0, NULL), "part");
	assert_string_equal(ib_toml_string(ib_toml_get(ib_toml_at(parts, 0, NULL), "p")), "a");
	assert_string_equal(str_at(t, "a.b.c.v"), "abc");
	assert_int_equal(ib_toml_line(ib_toml_at(items, 1, NULL)), 16);
	const char *key = NULL;
	assert_non_null(ib_toml_at(t, 0, &key));
	assert_string_equal(key, "top");
	ib_toml_free(t);
}

/* Close to the registries.conf Debian ships, plus what people add. */
static const char real_world[] =
    "# For more information on this configuration file, see containers-registries.conf(5).\n"
    "#\n"
    "# NOTE: RISK OF USING UNQUALIFIED IMAGE NAMES\n"
    "# We recommend always using fully qualified image names including the registry\n"
    "# server (full dns name), namespace, image name, and tag\n"
    "#\n"
    "unqualified-search-registries = [\"registry.fedoraproject.org\", \"quay.io\", "
    "\"docker.io\"]\n"
    "short-name-mode = \"enforcing\"\n"
    "credential-helpers = [ \"containers-auth.json\", \"secretservice\" ]\n"
    "\n"
    "[aliases]\n"
    "  \"fedora\" = \"registry.fedoraproject.org/fedora\"\n"
    "  'ubi8' = \"registry.access.redhat.com/ubi8\"\n"
    "\n"
    "[[registry]]\n"
    "# The \"prefix\" field is used to choose the relevant [[registry]] TOML table;\n"
    "prefix = \"example.com/foo\"\n"
    "insecure = false\n"
    "blocked = false\n"
    "location = \"internal-registry-for-example.com/bar\"\n"
    "mirror-by-digest-only = true\n"
    "pull-from-mirror = \"all\"\n"
    "\n"
    "[[registry.mirror]]\n"
    "location = \"example-mirror-0.local/mirror-for-foo\"\n"
    "pull-from-mirror = \"digest-only\"\n"
    "\n"
    "[[registry.mirror]]\n"
    "location = \"example-mirror-1.local/mirrors/foo\"\n"
    "insecure = true\n"
    "\n"
    "[[registry]]\n"
    "location = \"registry.internal:5000\"\n"
    "insecure = true\n"
    "\n"
    "[registries.search]\n"
    "registries = []\n";

static void test_real_world(void **state)
{
	(void)state;
	ib_toml *t = parse_ok(real_world);
	const ib_toml *usr = ib_toml_get(t, "unqualified-search-registries");
	assert_int_equal(ib_toml_len(usr), 3);
	assert_string_equal(ib_toml_string(ib_toml_at(usr, 1, NULL)), "quay.io");
	const ib_toml *regs = ib_toml_get(t, "registry");
	assert_int_equal(ib_toml_len(regs), 2);
	const ib_toml *r0 = ib_toml_at(regs, 0, NULL);
	assert_string_equal(ib_toml_string(ib_toml_get(r0, "prefix")), "example.com/foo");
	const ib_toml *mirrors = ib_toml_get(r0, "mirror");
	assert_int_equal(ib_toml_len(mirrors), 2);
	assert_true(ib_toml_bool(ib_toml_get(ib_toml_at(mirrors, 1, NULL), "insecure")));
	assert_true(ib_toml_bool(ib_toml_get(ib_toml_at(regs, 1, NULL), "insecure")));
	assert_int_equal(ib_toml_line(ib_toml_at(regs, 1, NULL)), 32);
	assert_string_equal(str_at(t, "aliases.ubi8"), "registry.access.redhat.com/ubi8");
	ib_toml_free(t);
}

static void test_malformed(void **state)
{
	(void)state;
	check_bad("a = 1\nb = \n", 2, "expected a value");
	check_bad("a = 1\na = 2\n", 2, "defined twice");
	check_bad("[t]\nx=1\n[t]\n", 3, "defined twice");
	check_bad("x = \"unterminated\ny = 1\n", 1, "unterminated string");
	check_bad("\n\nx = \"\"\"never closed\n\n", 3, "unterminated multi-line string");
	check_bad("x = 1 2\n", 1, "end of the line");
	check_bad("[a\nx = 1\n", 1, "expected ']'");
	check_bad("[[a]\n", 1, "expected ']]'");
	check_bad("= 1\n", 1, "expected a key");
	check_bad("k 1\n", 1, "expected '='");
	check_bad("x = [1, 2\n\n", 1, "unterminated array");
	check_bad("x = [1 2]\n", 1, "expected ','");
	check_bad("x = {a = 1\n", 1, "expected ',' or '}'");
	check_bad("x = \"\\q\"\n", 1, "invalid escape");
	check_bad("x = \"\\uD800\"\n", 1, "invalid character");
	check_bad("x = \"\\u00\"\n", 1, "invalid \\u escape");
	check_bad("x = 01\n", 1, "invalid number");
	check_bad("x = 1__0\n", 1, "invalid number");
	check_bad("x = 99999999999999999999\n", 1, "out of range");
	check_bad("x = 1979-05-27\n", 1, "dates");
	check_bad("x = tru\n", 1, "invalid");
	check_bad("a = 1\nb = \"tab\x01\"\n", 2, "control character");
	check_bad("a = 1 # bell\x07\n", 1, "control character");
	check_bad("a = 1\n[a]\n", 2, "defined twice");
	check_bad("[[r]]\nx=1\n[r]\n", 3, "defined twice");
	check_bad("r = [1]\n[[r]]\n", 2, "not an array of tables");
	check_bad("t = {a = 1}\n[t.b]\n", 2, "not a table");
	check_bad("t = {a = 1}\nt.b = 2\n", 2, "cannot add keys");
	check_bad("[t]\nx.y = 1\n[t.x]\n", 3, "defined twice");
	check_bad("a.b = 1\na.b.c = 2\n", 2, "cannot add keys");
	check_bad("x = '''abc\n", 1, "unterminated multi-line string");
	check_bad("\"\"\"k\"\"\" = 1\n", 1, "multi-line string not allowed");
	/* nesting bound */
	char deep[400];
	memset(deep, '[', sizeof(deep));
	memcpy(deep, "x = ", 4);
	deep[sizeof(deep) - 1] = '\0';
	check_bad(deep, 1, "nested too deeply");
}

/* ---- deterministic mutation fuzzing ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static const char dict[] = "[]{}=\"'.,#\n\r\t \\_-+:0123456789abcdeftruefalsexob\x01\x7f\xc3";

static void fuzz_one(const char *data, size_t len)
{
	ib_toml *t = NULL;
	ib_error *err = NULL;
	int r = ib_toml_parse(&t, data, len, "fuzz", &err);
	if (r == 0) {
		assert_null(err);
		/* walk the tree */
		for (size_t i = 0; i < ib_toml_len(t); i++) {
			const char *k = NULL;
			const ib_toml *v = ib_toml_at(t, i, &k);
			assert_non_null(k);
			assert_true(ib_toml_get(t, k) == v || ib_toml_get(t, k) != NULL);
			(void)ib_toml_string(v);
			(void)ib_toml_len(v);
		}
		ib_toml_free(t);
		return;
	}
	assert_int_equal(r, IB_EINVALID);
	assert_null(t);
	const char *m = ib_error_msg(err);
	int line = 0, used = 0;
	if (sscanf(m, "fuzz:%d: %n", &line, &used) != 1 || used == 0 || line < 1)
		fail_msg("error without FILE:LINE: %s", m);
	/* the line exists in the input */
	int lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += data[i] == '\n';
	assert_true(line <= lines);
	ib_error_free(&err);
}

static void test_fuzz(void **state)
{
	(void)state;
	const char *seeds[] = {
	    real_world,
	    "a = \"\"\"x\\\n  y\"\"\"\nb = '''z'''\nc = [1, [2, {d = 'e'}]]\n",
	    "[[a.b]]\nx = 1\n[a.b.c]\ny = -0x1\n[[a.b]]\nz = 1e-3\n",
	    "k.l.m = { n = [true, false], 'o' = \"\\u0041\" }\n",
	};
	size_t nseeds = sizeof(seeds) / sizeof(seeds[0]);
	ib_buf b;
	ib_buf_init(&b, 0);
	for (int iter = 0; iter < 20000; iter++) {
		const char *seed = seeds[rnd() % nseeds];
		ib_buf_reset(&b);
		ib_buf_append(&b, seed, strlen(seed));
		int nmut = 1 + (int)(rnd() % 8);
		for (int m = 0; m < nmut; m++) {
			size_t len = b.len;
			size_t pos = len ? rnd() % len : 0;
			switch (rnd() % 6) {
			case 0: /* replace a byte */
				if (len)
					b.data[pos] = dict[rnd() % (sizeof(dict) - 1)];
				break;
			case 1: { /* insert a byte */
				char c = dict[rnd() % (sizeof(dict) - 1)];
				ib_buf_append(&b, "", 1);
				memmove(b.data + pos + 1, b.data + pos, len - pos);
				b.data[pos] = c;
				break;
			}
			case 2: /* delete a run */
				if (len) {
					size_t n = 1 + rnd() % 8;
					if (n > len - pos)
						n = len - pos;
					memmove(b.data + pos, b.data + pos + n, len - pos - n);
					b.len -= n;
				}
				break;
			case 3: /* truncate */
				b.len = pos;
				break;
			case 4: { /* duplicate a run */
				size_t n = 1 + rnd() % 32;
				if (n > len - pos)
					n = len - pos;
				cleanup_free char *run = xmalloc(n);
				memcpy(run, b.data + pos, n);
				size_t at = len ? rnd() % len : 0;
				ib_buf_append(&b, run, n);
				memmove(b.data + at + n, b.data + at, len - at);
				memcpy(b.data + at, run, n);
				break;
			}
			default: /* random byte anywhere */
				if (len)
					b.data[pos] = (char)(rnd() & 0xff);
				break;
			}
		}
		/* exact length, no terminator past it: ASan sees overreads */
		char *exact = xmalloc(b.len ? b.len : 1);
		memcpy(exact, b.data ? b.data : "", b.len);
		fuzz_one(exact, b.len);
		free(exact);
	}
	/* pure noise */
	for (int iter = 0; iter < 2000; iter++) {
		size_t len = rnd() % 64;
		char *d = xmalloc(len ? len : 1);
		for (size_t i = 0; i < len; i++)
			d[i] =
			    (rnd() % 2) ? dict[rnd() % (sizeof(dict) - 1)] : (char)(rnd() & 0xff);
		fuzz_one(d, len);
		free(d);
	}
	ib_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scalars),	      cmocka_unit_test(test_multiline_strings),
	    cmocka_unit_test(test_tables_and_arrays), cmocka_unit_test(test_real_world),
	    cmocka_unit_test(test_malformed),	      cmocka_unit_test(test_fuzz),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
