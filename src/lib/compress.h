/* Streaming layer compression, bounded in memory.
 *
 * gzip: pigz-style parallel deflate.  Input is cut into fixed 128 KiB
 * blocks; each block is raw-deflated on its own (level 6 unless told
 * otherwise) with the previous 32 KiB of input as its dictionary and ends
 * with a sync flush (the last one with Z_FINISH).  The blocks are written in
 * order behind a fixed gzip header (mtime 0, no name, xfl 0, OS 3) and
 * followed by the combined CRC-32 and length.  The bytes therefore depend
 * only on the input, the block size and the level: any thread count, and any
 * way of chopping the input into ib_compressor_write calls, gives the same
 * output.  At most 2 * threads + 8 blocks (~300 KiB each with their output)
 * are in memory, threads capped at IB_COMPRESS_MAX_THREADS: ~30 MiB at the
 * cap, ~4 MiB with 2 threads.
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

#define IB_COMPRESS_GZIP_BLOCK (128u << 10)
/* Layers are compressed when a step commits, on the build's critical path:
 * level 1 is about twice as fast as zlib's default 6 for blobs about 20%
 * larger.  `build --compression-level` trades the other way. */
#define IB_COMPRESS_GZIP_LEVEL 1
#define IB_COMPRESS_ZSTD_LEVEL 3
#define IB_COMPRESS_MAX_THREADS 32
#define IB_COMPRESS_ZSTD_MAX_WORKERS 4
#define IB_COMPRESS_ZSTD_JOB_SIZE (2 << 20)

typedef struct ib_compressor ib_compressor;

/* Receives compressed bytes, in order, always on the thread that called
 * ib_compressor_write/finish.  Returns 0, or a negative value to abort: the
 * compressor then fails with IB_ERROR and stays failed (the sink keeps its
 * own record of why). */
typedef int (*ib_sink_fn)(const void *data, size_t len, void *payload);

/* threads: 0 = online CPUs (of this process's affinity mask).
 * level: 0 = the default above; otherwise 1..9 for gzip, 1..22 for zstd.
 * The gzip header is handed to the sink before this returns. */
int ib_compressor_new(ib_compressor **out, ib_compression c, int threads, int level,
		      ib_sink_fn sink, void *payload, ib_error **err);
/* Feed uncompressed bytes.  May block while earlier blocks are compressed
 * (that is what bounds memory).  Once an error is returned every further
 * call fails. */
int ib_compressor_write(ib_compressor *c, const void *data, size_t len, ib_error **err);
/* Compress what is buffered, hand everything (and the trailer) to the sink.
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

/* Number of CPUs this process may run on (>= 1). */
int ib_compress_online_cpus(void);

#endif
