/* libFuzzer harness for the TOML reader (src/lib/toml.c).  Not part of the
 * normal build (the unit suite runs a deterministic mutation test instead);
 * with clang:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Isrc/lib tests/fuzz/fuzz_toml.c src/lib/toml.c src/lib/util.c \
 *     src/lib/error.c -o fuzz_toml && ./fuzz_toml -max_total_time=60
 *
 * Every input must parse, or fail with IB_EINVALID and "<fuzz>:LINE: ". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

static void walk(const ib_toml *t, int depth)
{
	for (size_t i = 0; i < ib_toml_len(t); i++) {
		const char *k = NULL;
		const ib_toml *v = ib_toml_at(t, i, &k);
		if (k && ib_toml_get(t, k) == NULL)
			abort();
		(void)ib_toml_string(v);
		(void)ib_toml_int(v);
		if (depth < 200)
			walk(v, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ib_toml *t = NULL;
	ib_error *err = NULL;
	int r = ib_toml_parse(&t, (const char *)data, size, "<fuzz>", &err);
	if (r == 0) {
		walk(t, 0);
		ib_toml_free(t);
		return 0;
	}
	if (r != IB_EINVALID || t || strncmp(ib_error_msg(err), "<fuzz>:", 7) != 0)
		abort();
	ib_error_free(&err);
	return 0;
}
