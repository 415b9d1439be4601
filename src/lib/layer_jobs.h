/* Layer compression in the background: a queue of uncompressed layer tars
 * (written by a tar_only finish, see layer.h) that one thread of its own
 * compresses into store blobs, in the order they were submitted, while the
 * caller goes on (runs the next build step).  Each job's compressor has its
 * usual worker threads; the bytes are those of the direct path.
 *
 * Only the queue's thread touches a job between submit and its result:
 * the caller gets every result back through ib_layer_jobs_next, on its own
 * thread, and does the bookkeeping (descriptors, cache entries) there.
 * Memory: one compressor at a time (see compress.h), whatever the queue
 * length; the queued tars are files. */
#ifndef IB_LAYER_JOBS_H
#define IB_LAYER_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "layer.h"
#include "store.h"

typedef struct ib_layer_jobs ib_layer_jobs;

/* opts gives compression, level and threads (copied); the store is borrowed
 * and must outlive the queue.  Starts the thread. */
int ib_layer_jobs_new(ib_layer_jobs **out, ib_store *store, const ib_layer_options *opts,
		      ib_error **err);
/* Queue the tar in tar_fd (taken over: closed once compressed, failed or
 * dropped).  payload comes back with the job's result. */
void ib_layer_jobs_submit(ib_layer_jobs *q, int tar_fd, void *payload);
/* Jobs submitted whose result was not taken yet. */
size_t ib_layer_jobs_pending(const ib_layer_jobs *q);
/* The oldest job's result: returns 1 with *payload and either *res (digest
 * and size) or *job_err (the job's failure, the caller's to free) set; 0
 * when nothing is pending, or when wait is false and the oldest job is not
 * finished yet. */
int ib_layer_jobs_next(ib_layer_jobs *q, bool wait, void **payload, ib_layer_result *res,
		       ib_error **job_err);
/* Stop the thread (after the job it is compressing, whose blob is then
 * stored) and drop the rest of the queue: tars closed, results not taken
 * lost, drop (may be NULL) called on each of their payloads.  Safe on
 * NULL. */
void ib_layer_jobs_free(ib_layer_jobs *q, void (*drop)(void *payload));

#endif
