/* SHA-256 content digests in the OCI form "sha256:<64 lower-case hex>". */
#ifndef IB_DIGEST_H
#define IB_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define IB_DIGEST_STRLEN 71 /* "sha256:" + 64 hex */
#define IB_DIGEST_BUFLEN 72

typedef struct ib_digest_ctx ib_digest_ctx;

/* Streaming hash; aborts on OOM.  Free with ib_digest_free. */
ib_digest_ctx *ib_digest_new(void);
void ib_digest_update(ib_digest_ctx *ctx, const void *data, size_t len);
/* Write "sha256:hex" into out; ctx may be reused after ib_digest_reset. */
void ib_digest_final(ib_digest_ctx *ctx, char out[IB_DIGEST_BUFLEN]);
void ib_digest_reset(ib_digest_ctx *ctx);
void ib_digest_free(ib_digest_ctx *ctx);

void ib_digest_buffer(char out[IB_DIGEST_BUFLEN], const void *data, size_t len);
/* Hash from the current offset of fd to EOF; *size_out (may be NULL) gets
 * the number of bytes read.  The fd is not closed. */
int ib_digest_fd(char out[IB_DIGEST_BUFLEN], int fd, uint64_t *size_out, ib_error **err);

/* Validate "sha256:" + exactly 64 lower-case hex digits.  Anything else
 * (other algorithms, upper case, '/', "..", wrong length) is IB_EINVALID.
 * The error names the offending value. */
int ib_digest_validate(const char *s, ib_error **err);
/* Pointer to the hex part of a validated digest. */
const char *ib_digest_hex(const char *digest);

#endif
