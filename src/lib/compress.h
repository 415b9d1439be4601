/* Streaming layer compression, bounded in memory.
 *
 * gzip: parallel libdeflate.  Input is cut into fixed 1 MiB blocks; each
 * block becomes one complete gzip member of its own (fixed 10-byte header:
 * mtime 0, no name, xfl 0, OS 3; raw deflate by libdeflate at level 6 unless
 * told otherwise; CRC-32 and length), and the members are written in order.
 * A file of several members is one valid gzip stream (RFC 1952 2.2): gzip,
 * zlib's gzread, Go's compress/gzip (containerd, docker, skopeo, podman,
 * umoci), python's gzip and libarchive read it whole.  (libdeflate has no
 * streaming API and always ends its output with a final block, so pigz's
 * one-member trick does not apply; blocks carry no dictionary from the block
 * before, which costs ~0.2% at 1 MiB.)
 *
 * The bytes depend only on the input, the block size, the level and the
 * libdeflate version: any thread count, and any way of chopping the input
 * into ib_compressor_write calls, gives the same output, so the same build
 * gives the same digest on any machine with the same libdeflate.  A
 * different libdeflate release may choose other matches (as may a different
 * zlib); it still produces valid gzip of the same size within a hair.
 *
 * At most threads + 4 blocks (~2 MiB each with their output) are in memory,
 * threads capped at IB_COMPRESS_MAX_THREADS: ~30 MiB at the cap, ~13 MiB
 * with 2 threads, plus ~0.5 MiB of libdeflate state per thread.
 *
 * zstd: libzstd streaming API at level 3 (unless told otherwise) with frame
 * checksums, nbWorkers = threads clamped to 1..4 and a fixed 2 MiB job
 * size.  libzstd cuts the input into jobs of that size whatever nbWorkers
 * is, so every nbWorkers >= 1 produces the same frame (0 would not: it is a
 * different code path).  The fixed job size (instead of libzstd's 8 MiB)
 * and the cap keep memory near 25 MiB; the ratio costs ~0.5%.
 *
 * none: bytes are passed straight to the sink. */
#ifndef IB_COMPRESS_H
#define IB_COMPRESS_H

#include <stddef.h>

#include "error.h"
#include "oci.h"

/* Both shape the output: changing either changes every gzip layer digest
 * (and must change ib_compress_cache_tag). */
#define IB_COMPRESS_GZIP_BLOCK (1u << 20)
/* A build compresses a step's layer in the background while the next step
 * runs (layer_jobs.h); the last one is on the critical path.
 * libdeflate's level 6 gives blobs within ~1% of `gzip -6` (docker's and
 * buildah's; /usr/include: +0.7%, /usr/lib: -1.3%) where zlib's level 1,
 * the earlier default, was 12-25% larger; it costs 1.3-1.8x zlib level 1's
 * CPU on compressible data and ~0.55x on incompressible data.  Level 5 is
 * ~15% faster but +2.1% on /usr/include. */
#define IB_COMPRESS_GZIP_LEVEL 6
#define IB_COMPRESS_ZSTD_LEVEL 3
#define IB_COMPRESS_MAX_THREADS 8
#define IB_COMPRESS_ZSTD_MAX_WORKERS 4
#define IB_COMPRESS_ZSTD_JOB_SIZE (2 << 20)

typedef struct ib_compressor ib_compressor;

/* Receives compressed bytes, in order, always on the thread that called
 * ib_compressor_write/finish.  Returns 0, or a negative value to abort: the
 * compressor then fails with IB_ERROR and stays failed (the sink keeps its
 * own record of why). */
typedef int (*ib_sink_fn)(const void *data, size_t len, void *payload);

/* threads: 0 = $IMGBUILD_COMPRESS_THREADS when set (a number >= 1), else the
 * online CPUs (of this process's affinity mask).  The output does not
 * depend on it.
 * level: 0 = the default above; otherwise 1..9 for gzip, 1..22 for zstd. */
int ib_compressor_new(ib_compressor **out, ib_compression c, int threads, int level,
		      ib_sink_fn sink, void *payload, ib_error **err);
/* Feed uncompressed bytes.  May block while earlier blocks are compressed
 * (that is what bounds memory).  Once an error is returned every further
 * call fails. */
int ib_compressor_write(ib_compressor *c, const void *data, size_t len, ib_error **err);
/* Compress what is buffered, hand everything to the sink.
 * No write may follow. */
int ib_compressor_finish(ib_compressor *c, ib_error **err);
/* Stops the workers and frees everything; safe on NULL, and safe without a
 * finish (pending output is dropped). */
void ib_compressor_free(ib_compressor *c);

/* Parse a user's choice: name "gzip" or "zstd" (NULL: gzip) and level
 * "1".."9" for gzip, "1".."19" for zstd (NULL: 0, the default).
 * IB_EINVALID with a one-line message otherwise. */
int ib_compression_parse(const char *name, const char *level, ib_compression *alg, int *lvl,
			 ib_error **err);

/* The level ib_compressor_new uses for `level` (0 = the default). */
int ib_compress_level(ib_compression c, int level);
/* Names the encoder and its fixed parameters for the step cache key: a
 * cached layer may only stand in for one a fresh build would write byte for
 * byte, so this changes whenever the output for the same input would. */
const char *ib_compress_cache_tag(ib_compression c);

/* Number of CPUs this process may run on (>= 1). */
int ib_compress_online_cpus(void);

#endif
