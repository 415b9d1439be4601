#include "layer_jobs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

struct job {
	int fd;
	void *payload;
	bool done;
	ib_layer_result res;
	ib_error *err;
	struct job *next;
};

struct ib_layer_jobs {
	ib_store *store;
	ib_layer_options opts;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	struct job *head, *tail; /* every job whose result was not taken, oldest first */
	struct job *todo;	 /* the first of them the thread has not started */
	size_t n;
	bool stop;
};

static void *jobs_main(void *arg)
{
	ib_layer_jobs *q = arg;
	for (;;) {
		pthread_mutex_lock(&q->mu);
		while (q->todo == NULL && !q->stop)
			pthread_cond_wait(&q->work_cv, &q->mu);
		if (q->stop) {
			pthread_mutex_unlock(&q->mu);
			return NULL;
		}
		struct job *j = q->todo;
		q->todo = j->next;
		pthread_mutex_unlock(&q->mu);

		ib_layer_result res;
		memset(&res, 0, sizeof(res));
		ib_error *e = NULL;
		if (ib_layer_compress_fd(q->store, j->fd, &q->opts, &res, &e) < 0 && e == NULL)
			ib_error_setc(&e, IB_ERROR, "compress layer failed");
		close(j->fd);

		pthread_mutex_lock(&q->mu);
		j->fd = -1;
		j->res = res;
		j->err = e;
		j->done = true;
		pthread_cond_broadcast(&q->done_cv);
		pthread_mutex_unlock(&q->mu);
	}
}

int ib_layer_jobs_new(ib_layer_jobs **out, ib_store *store, const ib_layer_options *opts,
		      ib_error **err)
{
	*out = NULL;
	ib_layer_jobs *q = xcalloc(1, sizeof(*q));
	q->store = store;
	q->opts = *opts;
	q->opts.progress = NULL; /* not from this thread */
	q->opts.payload = NULL;
	q->opts.tar_only = false;
	q->opts.tar_fd = -1;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->work_cv, NULL);
	pthread_cond_init(&q->done_cv, NULL);
	int r = pthread_create(&q->thread, NULL, jobs_main, q);
	if (r != 0) {
		pthread_cond_destroy(&q->work_cv);
		pthread_cond_destroy(&q->done_cv);
		pthread_mutex_destroy(&q->mu);
		free(q);
		return ib_error_set(err, r, "start layer compression thread");
	}
	*out = q;
	return 0;
}

void ib_layer_jobs_submit(ib_layer_jobs *q, int tar_fd, void *payload)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->fd = tar_fd;
	j->payload = payload;
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	if (q->todo == NULL)
		q->todo = j;
	q->n++;
	pthread_cond_signal(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
}

size_t ib_layer_jobs_pending(const ib_layer_jobs *q)
{
	/* only the caller's thread changes n */
	return q ? q->n : 0;
}

int ib_layer_jobs_next(ib_layer_jobs *q, bool wait, void **payload, ib_layer_result *res,
		       ib_error **job_err)
{
	pthread_mutex_lock(&q->mu);
	struct job *j = q->head;
	while (j && !j->done && wait)
		pthread_cond_wait(&q->done_cv, &q->mu);
	if (!j || !j->done) {
		pthread_mutex_unlock(&q->mu);
		return 0;
	}
	q->head = j->next;
	if (q->head == NULL)
		q->tail = NULL;
	q->n--;
	pthread_mutex_unlock(&q->mu);
	*payload = j->payload;
	*res = j->res;
	*job_err = j->err;
	free(j);
	return 1;
}

void ib_layer_jobs_free(ib_layer_jobs *q, void (*drop)(void *payload))
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = true;
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	for (struct job *j = q->head, *next; j; j = next) {
		next = j->next;
		if (j->fd >= 0)
			close(j->fd);
		ib_error_free(&j->err);
		if (drop)
			drop(j->payload);
		free(j);
	}
	pthread_cond_destroy(&q->work_cv);
	pthread_cond_destroy(&q->done_cv);
	pthread_mutex_destroy(&q->mu);
	free(q);
}
