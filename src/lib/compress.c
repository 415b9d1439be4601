#include "compress.h"

#include <errno.h>
#include <libdeflate.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "util.h"

#define GZ_BLOCK IB_COMPRESS_GZIP_BLOCK
#define GZ_HEADER 10
#define GZ_TRAILER 8

/* One 1 MiB block on its way through a worker, and the gzip member it
 * becomes.  Slots live in a ring and are reused; the caller's thread owns a
 * slot except between submit and done, when exactly one worker does. */
struct gz_job {
	unsigned char *in;
	size_t in_len;
	unsigned char *out; /* header, deflate data, trailer */
	size_t out_len;
	bool done;
	bool failed;	     /* the member did not fit its buffer (cannot happen) */
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
	size_t out_alloc;		  /* room for one member: bound for GZ_BLOCK bytes */
	size_t head;			  /* oldest submitted slot */
	size_t inflight;		  /* submitted and not yet written out */
	struct gz_job *cur;		  /* slot being filled, never submitted */
	bool any;			  /* a member was submitted (empty input still gets one) */
	struct libdeflate_compressor *ld; /* for nthreads == 0 */
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

int ib_compress_level(ib_compression c, int level)
{
	if (level > 0)
		return level;
	return c == IB_COMP_GZIP   ? IB_COMPRESS_GZIP_LEVEL
	       : c == IB_COMP_ZSTD ? IB_COMPRESS_ZSTD_LEVEL
				   : 0;
}

const char *ib_compress_cache_tag(ib_compression c)
{
	switch (c) {
	case IB_COMP_GZIP:
		/* 1 MiB members by libdeflate; the zlib encoder before it
		 * (128 KiB blocks in one member) was plain "gzip". */
		return "gzip/libdeflate-1m";
	case IB_COMP_ZSTD:
		return "zstd";
	default:
		return "none";
	}
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

/* ---- gzip ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Turn one block into a complete gzip member.  Runs on a worker or inline. */
static void gz_compress_job(struct libdeflate_compressor *ld, size_t out_alloc, struct gz_job *j)
{
	/* Fixed header: no mtime, no name, no extra flags, OS = Unix. */
	static const unsigned char header[GZ_HEADER] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
	memcpy(j->out, header, GZ_HEADER);
	size_t n = libdeflate_deflate_compress(ld, j->in, j->in_len, j->out + GZ_HEADER,
					       out_alloc - GZ_HEADER - GZ_TRAILER);
	if (n == 0) { /* the buffer is sized by libdeflate's own bound */
		j->failed = true;
		return;
	}
	unsigned char *t = j->out + GZ_HEADER + n;
	put_le32(t, libdeflate_crc32(0, j->in, j->in_len));
	put_le32(t + 4, (uint32_t)j->in_len);
	j->out_len = GZ_HEADER + n + GZ_TRAILER;
	j->failed = false;
}

static void *gz_worker(void *arg)
{
	ib_compressor *c = arg;
	/* Allocated per thread: a libdeflate compressor is not shareable. */
	struct libdeflate_compressor *ld = libdeflate_alloc_compressor(c->level);
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

		if (ld == NULL)
			j->failed = true;
		else
			gz_compress_job(ld, c->out_alloc, j);

		pthread_mutex_lock(&c->mu);
		j->done = true;
		pthread_cond_broadcast(&c->done_cv);
		pthread_mutex_unlock(&c->mu);
	}
	libdeflate_free_compressor(ld);
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
	if (j->failed) {
		c->failed = true;
		return ib_error_setc(err, IB_ERROR, "libdeflate: cannot compress a block");
	}
	int r = emit(c, j->out, j->out_len, err);
	if (r < 0)
		return r;
	j->in_len = 0;
	j->done = false;
	c->head = (c->head + 1) % c->njobs;
	c->inflight--;
	*retired = true;
	return 0;
}

/* Submit c->cur and make the next free slot current. */
static int gz_submit(ib_compressor *c, ib_error **err)
{
	struct gz_job *j = c->cur;
	j->done = false;
	j->failed = false;
	j->next = NULL;
	c->inflight++;
	c->any = true;
	c->cur = NULL;

	if (c->nthreads == 0) {
		gz_compress_job(c->ld, c->out_alloc, j);
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
	c->cur = &c->jobs[(c->head + c->inflight) % c->njobs];
	return 0;
}

static int gz_write(ib_compressor *c, const unsigned char *p, size_t len, ib_error **err)
{
	while (len > 0) {
		if (c->cur->in_len == GZ_BLOCK) {
			int r = gz_submit(c, err);
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
	/* A partial block is a member; so is an empty input's (gzip wants at
	 * least one), but not an empty block after full ones. */
	if (c->cur->in_len > 0 || !c->any) {
		int r = gz_submit(c, err);
		if (r < 0)
			return r;
	}
	while (c->inflight > 0) {
		bool retired;
		int r = gz_retire(c, true, &retired, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int gz_new(ib_compressor *c, int threads, ib_error **err)
{
	c->level = ib_compress_level(IB_COMP_GZIP, c->level);
	if (c->level > 9)
		return ib_error_setc(err, IB_EINVALID, "gzip level %d out of range 1..9", c->level);
	/* One thread: compress on the caller's thread, no hand-offs. */
	c->nthreads = threads > 1 ? threads : 0;
	/* Slots (~2 MiB each): one being filled, one per worker, and a few
	 * finished ones that wait for an earlier block to be written out. */
	c->njobs = c->nthreads > 0 ? (size_t)c->nthreads + 4 : 1;
	c->out_alloc = GZ_HEADER + libdeflate_deflate_compress_bound(NULL, GZ_BLOCK) + GZ_TRAILER;
	c->jobs = xcalloc(c->njobs, sizeof(*c->jobs));
	for (size_t i = 0; i < c->njobs; i++) {
		c->jobs[i].in = xmalloc(GZ_BLOCK);
		c->jobs[i].out = xmalloc(c->out_alloc);
	}
	c->cur = &c->jobs[0];

	if (c->nthreads == 0) {
		c->ld = libdeflate_alloc_compressor(c->level);
		if (c->ld == NULL) {
			c->failed = true;
			return ib_error_set(err, ENOMEM, "libdeflate compressor");
		}
		return 0;
	}
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
	return 0;
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
	c->level = ib_compress_level(IB_COMP_ZSTD, c->level);
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
	if (threads <= 0) {
		const char *env = getenv("IMGBUILD_COMPRESS_THREADS");
		if (env && *env) {
			uint64_t v;
			if (ib_parse_u64(env, &v) < 0 || v < 1 || v > INT32_MAX)
				return ib_error_setc(
				    err, IB_EINVALID,
				    "IMGBUILD_COMPRESS_THREADS=%s: want a number >= 1", env);
			threads = (int)v;
		} else {
			threads = ib_compress_online_cpus();
		}
	}
	ib_compressor *c = xcalloc(1, sizeof(*c));
	c->kind = kind;
	c->sink = sink;
	c->payload = payload;
	c->level = level;
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
	libdeflate_free_compressor(c->ld);
	for (size_t i = 0; c->jobs && i < c->njobs; i++) {
		free(c->jobs[i].in);
		free(c->jobs[i].out);
	}
	free(c->jobs);
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
