#include "compress.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "util.h"

#define GZ_BLOCK IB_COMPRESS_GZIP_BLOCK
#define GZ_DICT (32u << 10) /* deflate's window: all a back-reference can reach */

/* One 128 KiB block on its way through a worker.  Slots live in a ring and
 * are reused; the caller's thread owns a slot except between submit and
 * done, when exactly one worker does. */
struct gz_job {
	unsigned char *in;
	size_t in_len;
	unsigned char *dict; /* the 32 KiB of input before this block */
	size_t dict_len;
	unsigned char *out;
	size_t out_alloc, out_len;
	uLong crc;
	bool last;
	bool done;
	int zerr;	     /* zlib error code, 0 when fine */
	struct gz_job *next; /* work queue link */
};

struct ib_compressor {
	ib_compression kind;
	ib_sink_fn sink;
	void *payload;
	int level;
	bool failed;
	bool finished;

	/* gzip */
	int nthreads; /* worker threads; 0 = compress on the caller's thread */
	pthread_t *threads;
	int nstarted;
	struct gz_job *jobs;
	size_t njobs;
	size_t head;	     /* oldest submitted slot */
	size_t inflight;     /* submitted and not yet written out */
	struct gz_job *cur;  /* slot being filled, never submitted */
	unsigned char *tail; /* last GZ_DICT bytes of submitted input */
	size_t tail_len;
	uLong crc;
	uint64_t isize;
	z_stream zs; /* for nthreads == 0 */
	bool zs_init;
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	bool sync_init;
	struct gz_job *q_head, *q_tail;
	bool stop;

	/* zstd */
	ZSTD_CCtx *zc;
	unsigned char *zout;
	size_t zout_len;
};

int ib_compress_online_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		int n = CPU_COUNT(&set);
		if (n > 0)
			return n;
	}
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

static int emit(ib_compressor *c, const void *data, size_t len, ib_error **err)
{
	if (len == 0)
		return 0;
	if (c->sink(data, len, c->payload) < 0) {
		c->failed = true;
		return ib_error_setc(err, IB_ERROR, "compressed output: sink failed");
	}
	return 0;
}

static int fail(ib_compressor *c, ib_error **err, const char *what, int zerr)
{
	c->failed = true;
	return ib_error_setc(err, IB_ERROR, "%s: zlib error %d", what, zerr);
}

/* ---- gzip ---- */

static int deflate_init(z_stream *zs, int level)
{
	memset(zs, 0, sizeof(*zs));
	/* Raw deflate (-15): the gzip framing is ours, per block there is none. */
	return deflateInit2(zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
}

/* Compress one block with zs (reset here).  Runs on a worker or inline. */
static void gz_compress_job(z_stream *zs, struct gz_job *j)
{
	int r = deflateReset(zs);
	if (r == Z_OK && j->dict_len > 0)
		r = deflateSetDictionary(zs, j->dict, (uInt)j->dict_len);
	if (r != Z_OK) {
		j->zerr = r;
		return;
	}
	zs->next_in = j->in;
	zs->avail_in = (uInt)j->in_len;
	j->out_len = 0;
	int flush = j->last ? Z_FINISH : Z_SYNC_FLUSH;
	for (;;) {
		if (j->out_len == j->out_alloc) {
			/* deflate's output does not depend on how much room it is
			 * given, so growing here cannot change the bytes. */
			j->out_alloc *= 2;
			j->out = xrealloc(j->out, j->out_alloc);
		}
		zs->next_out = j->out + j->out_len;
		zs->avail_out = (uInt)(j->out_alloc - j->out_len);
		r = deflate(zs, flush);
		j->out_len = j->out_alloc - zs->avail_out;
		if (r == Z_STREAM_END)
			break;
		if (r != Z_OK && r != Z_BUF_ERROR) {
			j->zerr = r;
			return;
		}
		/* A sync flush is complete when deflate left room unused. */
		if (!j->last && zs->avail_out > 0 && zs->avail_in == 0)
			break;
	}
	j->crc = crc32(0L, j->in, (uInt)j->in_len);
	j->zerr = 0;
}

static void *gz_worker(void *arg)
{
	ib_compressor *c = arg;
	z_stream zs;
	int init = deflate_init(&zs, c->level);
	for (;;) {
		pthread_mutex_lock(&c->mu);
		while (c->q_head == NULL && !c->stop)
			pthread_cond_wait(&c->work_cv, &c->mu);
		if (c->stop) {
			pthread_mutex_unlock(&c->mu);
			break;
		}
		struct gz_job *j = c->q_head;
		c->q_head = j->next;
		if (c->q_head == NULL)
			c->q_tail = NULL;
		pthread_mutex_unlock(&c->mu);

		if (init != Z_OK)
			j->zerr = init;
		else
			gz_compress_job(&zs, j);

		pthread_mutex_lock(&c->mu);
		j->done = true;
		pthread_cond_broadcast(&c->done_cv);
		pthread_mutex_unlock(&c->mu);
	}
	if (init == Z_OK)
		deflateEnd(&zs);
	return NULL;
}

/* Hand the slot at head to the sink once its worker is done. */
static int gz_retire(ib_compressor *c, bool wait, bool *retired, ib_error **err)
{
	struct gz_job *j = &c->jobs[c->head];
	*retired = false;
	if (c->nthreads > 0) {
		pthread_mutex_lock(&c->mu);
		while (!j->done && wait)
			pthread_cond_wait(&c->done_cv, &c->mu);
		bool done = j->done;
		pthread_mutex_unlock(&c->mu);
		if (!done)
			return 0;
	}
	if (j->zerr != 0)
		return fail(c, err, "deflate", j->zerr);
	int r = emit(c, j->out, j->out_len, err);
	if (r < 0)
		return r;
	c->crc = crc32_combine(c->crc, j->crc, (z_off_t)j->in_len);
	c->isize += j->in_len;
	j->in_len = 0;
	j->done = false;
	c->head = (c->head + 1) % c->njobs;
	c->inflight--;
	*retired = true;
	return 0;
}

/* Submit c->cur and make the next free slot current. */
static int gz_submit(ib_compressor *c, bool last, ib_error **err)
{
	struct gz_job *j = c->cur;
	memcpy(j->dict, c->tail, c->tail_len);
	j->dict_len = c->tail_len;
	/* The next block's dictionary: the last GZ_DICT bytes seen so far. */
	if (j->in_len >= GZ_DICT) {
		memcpy(c->tail, j->in + j->in_len - GZ_DICT, GZ_DICT);
		c->tail_len = GZ_DICT;
	} else if (j->in_len > 0) {
		size_t keep = c->tail_len + j->in_len > GZ_DICT ? GZ_DICT - j->in_len : c->tail_len;
		memmove(c->tail, c->tail + c->tail_len - keep, keep);
		memcpy(c->tail + keep, j->in, j->in_len);
		c->tail_len = keep + j->in_len;
	}
	j->last = last;
	j->done = false;
	j->zerr = 0;
	j->next = NULL;
	c->inflight++;
	c->cur = NULL;

	if (c->nthreads == 0) {
		gz_compress_job(&c->zs, j);
		j->done = true;
	} else {
		pthread_mutex_lock(&c->mu);
		if (c->q_tail)
			c->q_tail->next = j;
		else
			c->q_head = j;
		c->q_tail = j;
		pthread_cond_signal(&c->work_cv);
		pthread_mutex_unlock(&c->mu);
	}

	/* Write out whatever is finished, in order, without waiting ... */
	bool retired = true;
	while (c->inflight > 0 && retired) {
		int r = gz_retire(c, false, &retired, err);
		if (r < 0)
			return r;
	}
	/* ... and wait only when every slot is taken. */
	if (c->inflight == c->njobs) {
		int r = gz_retire(c, true, &retired, err);
		if (r < 0)
			return r;
	}
	if (!last)
		c->cur = &c->jobs[(c->head + c->inflight) % c->njobs];
	return 0;
}

static int gz_write(ib_compressor *c, const unsigned char *p, size_t len, ib_error **err)
{
	while (len > 0) {
		/* A full block is submitted only when more input arrives, so the
		 * final block (flushed with Z_FINISH) is never empty unless the
		 * whole stream is. */
		if (c->cur->in_len == GZ_BLOCK) {
			int r = gz_submit(c, false, err);
			if (r < 0)
				return r;
		}
		size_t n = GZ_BLOCK - c->cur->in_len;
		if (n > len)
			n = len;
		memcpy(c->cur->in + c->cur->in_len, p, n);
		c->cur->in_len += n;
		p += n;
		len -= n;
	}
	return 0;
}

static int gz_finish(ib_compressor *c, ib_error **err)
{
	int r = gz_submit(c, true, err);
	if (r < 0)
		return r;
	while (c->inflight > 0) {
		bool retired;
		r = gz_retire(c, true, &retired, err);
		if (r < 0)
			return r;
	}
	unsigned char trailer[8];
	uint32_t crc = (uint32_t)c->crc, isize = (uint32_t)c->isize;
	for (int i = 0; i < 4; i++) {
		trailer[i] = (unsigned char)(crc >> (8 * i));
		trailer[4 + i] = (unsigned char)(isize >> (8 * i));
	}
	return emit(c, trailer, sizeof(trailer), err);
}

static int gz_new(ib_compressor *c, int threads, ib_error **err)
{
	c->level = c->level > 0 ? c->level : IB_COMPRESS_GZIP_LEVEL;
	if (c->level > 9)
		return ib_error_setc(err, IB_EINVALID, "gzip level %d out of range 1..9", c->level);
	/* One thread: compress on the caller's thread, no hand-offs. */
	c->nthreads = threads > 1 ? threads : 0;
	/* Slots (~300 KiB each): enough queued work that the workers stay busy
	 * while the caller's thread is off producing input. */
	c->njobs = c->nthreads > 0 ? 2 * (size_t)c->nthreads + 8 : 1;
	c->jobs = xcalloc(c->njobs, sizeof(*c->jobs));
	for (size_t i = 0; i < c->njobs; i++) {
		struct gz_job *j = &c->jobs[i];
		j->in = xmalloc(GZ_BLOCK);
		j->dict = xmalloc(GZ_DICT);
		j->out_alloc = GZ_BLOCK + (GZ_BLOCK >> 3) + 256;
		j->out = xmalloc(j->out_alloc);
	}
	c->tail = xmalloc(GZ_DICT);
	c->cur = &c->jobs[0];
	c->crc = crc32(0L, Z_NULL, 0);

	if (c->nthreads == 0) {
		int r = deflate_init(&c->zs, c->level);
		if (r != Z_OK)
			return fail(c, err, "deflateInit2", r);
		c->zs_init = true;
	} else {
		pthread_mutex_init(&c->mu, NULL);
		pthread_cond_init(&c->work_cv, NULL);
		pthread_cond_init(&c->done_cv, NULL);
		c->sync_init = true;
		c->threads = xcalloc((size_t)c->nthreads, sizeof(pthread_t));
		for (int i = 0; i < c->nthreads; i++) {
			int r = pthread_create(&c->threads[i], NULL, gz_worker, c);
			if (r != 0) {
				c->failed = true;
				return ib_error_set(err, r, "start compression thread");
			}
			c->nstarted++;
		}
	}

	/* Fixed header: no mtime, no name, no extra flags, OS = Unix. */
	static const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	return emit(c, header, sizeof(header), err);
}

/* ---- zstd ---- */

static int zstd_check(ib_compressor *c, size_t r, const char *what, ib_error **err)
{
	if (!ZSTD_isError(r))
		return 0;
	c->failed = true;
	return ib_error_setc(err, IB_ERROR, "%s: %s", what, ZSTD_getErrorName(r));
}

static int zstd_new(ib_compressor *c, int threads, ib_error **err)
{
	c->level = c->level > 0 ? c->level : IB_COMPRESS_ZSTD_LEVEL;
	if (c->level > ZSTD_maxCLevel())
		return ib_error_setc(err, IB_EINVALID, "zstd level %d out of range", c->level);
	c->zc = ZSTD_createCCtx();
	if (c->zc == NULL)
		return ib_error_setc(err, IB_ERROR, "ZSTD_createCCtx failed");
	int r = zstd_check(c, ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, c->level),
			   "zstd level", err);
	if (r == 0)
		r = zstd_check(c, ZSTD_CCtx_setParameter(c->zc, ZSTD_c_checksumFlag, 1),
			       "zstd checksum", err);
	if (r < 0)
		return r;
	/* Always at least one worker: the multi-threaded code path is the
	 * one whose output does not depend on the worker count.  A libzstd
	 * built without threads refuses; it then compresses inline (and its
	 * output differs from a threaded build's, which cannot be helped).
	 * The job size is fixed rather than libzstd's default (8 MiB at level
	 * 3, which costs ~10 MiB per worker); it shapes the output, so it is a
	 * constant.  Workers are capped: output does not depend on them, and
	 * four already outrun the tar writer feeding us. */
	int workers = threads < 1			       ? 1
		      : threads > IB_COMPRESS_ZSTD_MAX_WORKERS ? IB_COMPRESS_ZSTD_MAX_WORKERS
							       : threads;
	if (!ZSTD_isError(ZSTD_CCtx_setParameter(c->zc, ZSTD_c_nbWorkers, workers))) {
		r = zstd_check(
		    c, ZSTD_CCtx_setParameter(c->zc, ZSTD_c_jobSize, IB_COMPRESS_ZSTD_JOB_SIZE),
		    "zstd job size", err);
		if (r < 0)
			return r;
	}
	c->zout_len = ZSTD_CStreamOutSize();
	c->zout = xmalloc(c->zout_len);
	return 0;
}

static int zstd_pump(ib_compressor *c, ZSTD_inBuffer *in, ZSTD_EndDirective mode, ib_error **err)
{
	for (;;) {
		ZSTD_outBuffer out = {c->zout, c->zout_len, 0};
		size_t rem = ZSTD_compressStream2(c->zc, &out, in, mode);
		int r = zstd_check(c, rem, "zstd compress", err);
		if (r == 0)
			r = emit(c, c->zout, out.pos, err);
		if (r < 0)
			return r;
		if (mode == ZSTD_e_end ? rem == 0 : in->pos == in->size)
			return 0;
	}
}

/* ---- public ---- */

int ib_compressor_new(ib_compressor **out, ib_compression kind, int threads, int level,
		      ib_sink_fn sink, void *payload, ib_error **err)
{
	*out = NULL;
	if (level < 0)
		return ib_error_setc(err, IB_EINVALID, "negative compression level %d", level);
	ib_compressor *c = xcalloc(1, sizeof(*c));
	c->kind = kind;
	c->sink = sink;
	c->payload = payload;
	c->level = level;
	if (threads <= 0)
		threads = ib_compress_online_cpus();
	if (threads > IB_COMPRESS_MAX_THREADS)
		threads = IB_COMPRESS_MAX_THREADS;

	int r = 0;
	switch (kind) {
	case IB_COMP_NONE:
		break;
	case IB_COMP_GZIP:
		r = gz_new(c, threads, err);
		break;
	case IB_COMP_ZSTD:
		r = zstd_new(c, threads, err);
		break;
	default:
		r = ib_error_setc(err, IB_EINVALID, "unknown compression %d", (int)kind);
	}
	if (r < 0) {
		ib_compressor_free(c);
		return r;
	}
	*out = c;
	return 0;
}

int ib_compressor_write(ib_compressor *c, const void *data, size_t len, ib_error **err)
{
	if (c->failed)
		return ib_error_setc(err, IB_ERROR, "compressor already failed");
	if (c->finished)
		return ib_error_setc(err, IB_ERROR, "compressor write after finish");
	if (len == 0)
		return 0;
	switch (c->kind) {
	case IB_COMP_GZIP:
		return gz_write(c, data, len, err);
	case IB_COMP_ZSTD: {
		ZSTD_inBuffer in = {data, len, 0};
		return zstd_pump(c, &in, ZSTD_e_continue, err);
	}
	default:
		return emit(c, data, len, err);
	}
}

int ib_compressor_finish(ib_compressor *c, ib_error **err)
{
	if (c->failed)
		return ib_error_setc(err, IB_ERROR, "compressor already failed");
	if (c->finished)
		return ib_error_setc(err, IB_ERROR, "compressor finished twice");
	c->finished = true;
	switch (c->kind) {
	case IB_COMP_GZIP:
		return gz_finish(c, err);
	case IB_COMP_ZSTD: {
		ZSTD_inBuffer in = {NULL, 0, 0};
		return zstd_pump(c, &in, ZSTD_e_end, err);
	}
	default:
		return 0;
	}
}

void ib_compressor_free(ib_compressor *c)
{
	if (c == NULL)
		return;
	if (c->sync_init) {
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_cond_broadcast(&c->work_cv);
		pthread_mutex_unlock(&c->mu);
		for (int i = 0; i < c->nstarted; i++)
			pthread_join(c->threads[i], NULL);
		pthread_cond_destroy(&c->work_cv);
		pthread_cond_destroy(&c->done_cv);
		pthread_mutex_destroy(&c->mu);
	}
	free(c->threads);
	if (c->zs_init)
		deflateEnd(&c->zs);
	for (size_t i = 0; c->jobs && i < c->njobs; i++) {
		free(c->jobs[i].in);
		free(c->jobs[i].dict);
		free(c->jobs[i].out);
	}
	free(c->jobs);
	free(c->tail);
	ZSTD_freeCCtx(c->zc);
	free(c->zout);
	free(c);
}

int ib_compression_parse(const char *name, const char *level, ib_compression *alg, int *lvl,
			 ib_error **err)
{
	if (!name || !strcmp(name, "gzip"))
		*alg = IB_COMP_GZIP;
	else if (!strcmp(name, "zstd"))
		*alg = IB_COMP_ZSTD;
	else
		return ib_error_setc(err, IB_EINVALID,
				     "compression must be gzip or zstd, not '%s'", name);
	*lvl = 0;
	if (!level)
		return 0;
	uint64_t v;
	uint64_t max = *alg == IB_COMP_GZIP ? 9 : 19;
	if (ib_parse_u64(level, &v) < 0 || v < 1 || v > max)
		return ib_error_setc(err, IB_EINVALID,
				     "compression level for %s must be 1-%u, not '%s'",
				     *alg == IB_COMP_GZIP ? "gzip" : "zstd", (unsigned)max, level);
	*lvl = (int)v;
	return 0;
}
