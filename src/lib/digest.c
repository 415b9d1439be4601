#include "digest.h"

#include <errno.h>
/* SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, but
 * EVP fetches the algorithm from a provider, which initializes the library
 * (its configuration, every algorithm's name) on first use and pulls all of
 * libcrypto into the static link: a millisecond of a cached build.  The
 * direct functions are the same code, with the same CPU dispatch. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

struct ib_digest_ctx {
	SHA256_CTX md;
};

ib_digest_ctx *ib_digest_new(void)
{
	ib_digest_ctx *c = xcalloc(1, sizeof(*c));
	if (SHA256_Init(&c->md) != 1)
		abort();
	return c;
}

void ib_digest_update(ib_digest_ctx *ctx, const void *data, size_t len)
{
	if (len)
		SHA256_Update(&ctx->md, data, len);
}

void ib_digest_final(ib_digest_ctx *ctx, char out[IB_DIGEST_BUFLEN])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256_Final(md, &ctx->md);
	memcpy(out, "sha256:", 7);
	ib_hex_encode(out + 7, md, 32);
}

void ib_digest_reset(ib_digest_ctx *ctx)
{
	SHA256_Init(&ctx->md);
}

void ib_digest_free(ib_digest_ctx *ctx)
{
	if (!ctx)
		return;
	free(ctx);
}

void ib_digest_buffer(char out[IB_DIGEST_BUFLEN], const void *data, size_t len)
{
	ib_digest_ctx *c = ib_digest_new();
	ib_digest_update(c, data, len);
	ib_digest_final(c, out);
	ib_digest_free(c);
}

int ib_digest_fd(char out[IB_DIGEST_BUFLEN], int fd, uint64_t *size_out, ib_error **err)
{
	ib_digest_ctx *c = ib_digest_new();
	cleanup_free char *buf = xmalloc(1 << 20);
	uint64_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, 1 << 20);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ib_digest_free(c);
			return ib_error_set(err, errno, "read");
		}
		if (n == 0)
			break;
		ib_digest_update(c, buf, (size_t)n);
		total += (uint64_t)n;
	}
	ib_digest_final(c, out);
	ib_digest_free(c);
	if (size_out)
		*size_out = total;
	return 0;
}

int ib_digest_validate(const char *s, ib_error **err)
{
	if (!s)
		return ib_error_setc(err, IB_EINVALID, "missing digest");
	if (strncmp(s, "sha256:", 7) != 0)
		return ib_error_setc(err, IB_EINVALID,
				     "invalid digest \"%.80s\": only sha256 is supported", s);
	const char *h = s + 7;
	size_t n = 0;
	for (; h[n]; n++) {
		char ch = h[n];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return ib_error_setc(err, IB_EINVALID,
					     "invalid digest \"%.80s\": not lower-case hex", s);
	}
	if (n != 64)
		return ib_error_setc(err, IB_EINVALID,
				     "invalid digest \"%.80s\": want 64 hex digits, got %zu", s, n);
	return 0;
}

const char *ib_digest_hex(const char *digest)
{
	return strncmp(digest, "sha256:", 7) == 0 ? digest + 7 : digest;
}
