/* Independent stages built at the same time (BuildKit does the same).
 *
 * The builder's state (progress numbering, the cache handle, the
 * compression queue, the output ring, the remote state) belongs to one
 * thread, so each stage that has work to do is built by a worker: a child
 * process forked after the key pass, which knows every step key, loaded
 * base images and hashed context copies (its memo, inherited).  A worker
 * builds the stages its stage depends on (cache hits: those were built by
 * earlier workers), then its stage, waits for its layers to be compressed
 * and reports back on a pipe.  The parent replays the workers' progress
 * events in one view and, once a stage's dependencies are done, starts it;
 * afterwards the ordinary sequential pass finds every worker-built step in
 * the step cache (allowed even under --no-cache: b->fresh) and builds the
 * target.  Step numbers are those of the sequential pass.
 *
 * A worker's events and its result are JSON lines; the result is
 * {"event":"worker","ok":true,"run":N,"cached":N,"keys":[...],"mounts":{...}}
 * or {"event":"worker","ok":false,"code":C,"message":"...","restart":B}.
 * The first failure stops the others (SIGTERM; a worker takes it as an
 * interrupt: its sandboxes are killed and it unwinds) and is the build's
 * error.  IMGBUILD_PARALLEL_STAGES=0 builds one stage after the other. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder_internal.h"
#include "plan.h"
#include "progress.h"
#include "util.h"

#define WORKERS_MAX 8
#define INTERRUPT_GRACE_MS 5000

/* Workers running, for ib_build_signal_workers (an interrupt thread). */
static volatile pid_t worker_pids[WORKERS_MAX];

void ib_build_signal_workers(int sig)
{
	for (int i = 0; i < WORKERS_MAX; i++) {
		pid_t p = worker_pids[i];
		if (p > 0)
			kill(p, sig);
	}
}

bool ib_build_is_worker(pid_t pid)
{
	for (int i = 0; i < WORKERS_MAX; i++)
		if (pid > 0 && worker_pids[i] == pid)
			return true;
	return false;
}

void ib_build_interrupt(ib_store *s)
{
	ib_build_signal_workers(SIGTERM);
	for (int i = 0; i < INTERRUPT_GRACE_MS / 100; i++) {
		ib_kill_children(SIGKILL, ib_build_is_worker);
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	/* a worker that did not unwind either goes with us */
	ib_build_signal_workers(SIGKILL);
	if (s)
		ib_store_tmp_remove_own(s);
}

typedef struct worker {
	pid_t pid;
	int fd; /* its events; -1 once at EOF */
	size_t stage;
	int slot; /* in worker_pids */
	char *buf;
	size_t len;
	json_t *result; /* its "worker" event */
} worker;

/* ---- in the worker ---- */

static ib_store *worker_store;
static sigset_t worker_sigs;

/* SIGTERM or SIGINT: as the build command takes them (the step fails and
 * the worker unwinds and reports); exit after the grace. */
static void *worker_interrupt_main(void *payload)
{
	(void)payload;
	int sig = 0;
	if (sigwait(&worker_sigs, &sig) != 0)
		return NULL;
	ib_build_interrupt(worker_store);
	_exit(1);
}

static void worker_result(FILE *f, json_t *res)
{
	char *s = json_dumps(res, JSON_COMPACT);
	fprintf(f, "%s\n", s);
	fflush(f);
	free(s);
	json_decref(res);
}

static void worker_main(builder *b, size_t stage, const bool *deps, int fd)
{
	/* the parent's other workers are not ours */
	for (int i = 0; i < WORKERS_MAX; i++)
		worker_pids[i] = 0;
	worker_store = b->store;
	sigemptyset(&worker_sigs);
	sigaddset(&worker_sigs, SIGINT);
	sigaddset(&worker_sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &worker_sigs, NULL);
	ib_thread_start_detached(worker_interrupt_main, NULL);
	FILE *f = fdopen(fd, "w");
	if (!f)
		_exit(1);
	ib_build_options o = *b->o;
	o.progress = ib_progress_new_relay(b->o->progress, f);
	b->o = &o;
	ib_error *err = NULL;
	int rc = 0;
	b->silent = true;
	for (size_t i = 0; i < stage && rc == 0; i++)
		if (deps[i])
			rc = build_stage(b, &b->stages[i], &err);
	b->silent = false;
	b->step_no = b->first_step[stage] - 1;
	b->keys_out = json_array();
	if (rc == 0)
		rc = build_stage(b, &b->stages[stage], &err);
	if (rc == 0)
		rc = build_wait_layers(b, &err);
	fflush(stderr);
	if (rc == 0) {
		worker_result(f, json_pack("{s:s, s:b, s:i, s:i, s:O, s:O}", "event", "worker", "ok",
					   1, "run", b->steps_run, "cached", b->steps_cached,
					   "keys", b->keys_out, "mounts", b->remote->mounts));
	} else {
		worker_result(f, json_pack("{s:s, s:b, s:i, s:s, s:b}", "event", "worker", "ok", 0,
					   "code", err ? err->code : IB_ERROR, "message",
					   err ? ib_error_msg(err) : "failed", "restart",
					   b->remote->restart));
	}
	for (size_t i = 0; i < b->n_stages; i++)
		build_release_view(&b->stages[i]);
	_exit(rc == 0 ? 0 : 1);
}

/* ---- in the parent ---- */

/* Whether the stage has a run or copy step the step cache (local, or a
 * --cache-from registry's) cannot answer (0 no, 1 yes); -1 when the key
 * pass did not reach it (it stopped at an error: the sequential pass
 * reports it). */
static int stage_has_work(builder *b, size_t s)
{
	json_t *steps = json_object_get(b->stages[s].plan, "steps");
	size_t i;
	json_t *step;
	int work = 0;
	json_array_foreach (steps, i, step) {
		int kind = ib_plan_step_kind_of(step);
		if (kind != IB_STEP_RUN && kind != IB_STEP_COPY)
			continue;
		step_memo *m = build_memo(b, s, i, false);
		if (!m || !m->key[0])
			return -1;
		if (!build_may_use_cache(b, step, m->key)) {
			work = 1;
			continue;
		}
		/* a hit in a --cache-from registry is no work either (the
		 * prefetch answered it: no request) */
		json_t *e = build_cache_entry(b, m->key);
		if (!e)
			work = 1;
		json_decref(e);
	}
	return work;
}

static int worker_cap(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		n = 2;
	return n > WORKERS_MAX ? WORKERS_MAX : (int)n;
}

static int worker_start(builder *b, worker *w, size_t stage, const bool *deps, ib_error **err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return ib_error_set(err, errno, "pipe");
	fflush(stdout);
	fflush(stderr);
	/* no other thread of ours may hold the progress lock (the TTY ticker
	 * writes under it) while the worker is forked */
	ib_progress_hold(b->o->progress, true);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		worker_main(b, stage, deps, p[1]);
	}
	int e = errno;
	ib_progress_hold(b->o->progress, false);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return ib_error_set(err, e, "fork a worker for stage %s", b->stages[stage].name);
	}
	memset(w, 0, sizeof(*w));
	w->pid = pid;
	w->fd = p[0];
	w->stage = stage;
	w->slot = -1;
	for (int i = 0; i < WORKERS_MAX; i++)
		if (worker_pids[i] == 0) {
			worker_pids[i] = pid;
			w->slot = i;
			break;
		}
	ib_progress_debug(b->o->progress, "stage %s: built by worker %d", b->stages[stage].name,
			  (int)pid);
	return 0;
}

/* Take the complete lines of w->buf (at EOF, the rest too): the result
 * line kept, the events replayed.  w->buf always has room for a NUL. */
static void worker_lines(builder *b, worker *w, bool eof)
{
	size_t at = 0;
	char *nl;
	while (at < w->len && (nl = memchr(w->buf + at, '\n', w->len - at)) != NULL) {
		char *line = w->buf + at;
		*nl = '\0';
		/* the worker writes its result with "event" first */
		if (!strncmp(line, "{\"event\":\"worker\"", 17)) {
			json_decref(w->result);
			w->result = json_loads(line, 0, NULL);
		} else if (*line) {
			ib_progress_replay(b->o->progress, line);
		}
		at = (size_t)(nl + 1 - w->buf);
	}
	if (eof && at < w->len) {
		w->buf[w->len] = '\0';
		ib_progress_replay(b->o->progress, w->buf + at);
		at = w->len;
	}
	if (at) {
		memmove(w->buf, w->buf + at, w->len - at);
		w->len -= at;
	}
}

/* Read what the worker wrote; false at EOF. */
static bool worker_read(builder *b, worker *w)
{
	char chunk[16384];
	ssize_t n = read(w->fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		worker_lines(b, w, true);
		return false;
	}
	w->buf = xrealloc(w->buf, w->len + (size_t)n + 1);
	memcpy(w->buf + w->len, chunk, (size_t)n);
	w->len += (size_t)n;
	worker_lines(b, w, false);
	return true;
}

/* The worker is done (EOF): reap it, take its result.  0, or -1 with
 * *err (its failure). */
static int worker_finish(builder *b, worker *w, ib_error **err)
{
	int status = 0;
	/* a worker stopped before its EOF dies writing to it, if not of SIGTERM */
	close(w->fd);
	w->fd = -1;
	while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (w->slot >= 0)
		worker_pids[w->slot] = 0;
	free(w->buf);
	w->buf = NULL;
	const char *name = b->stages[w->stage].name;
	json_t *r = w->result;
	w->result = NULL;
	int rc = 0;
	if (json_is_true(json_object_get(r, "ok")) && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0) {
		b->steps_run += (int)json_integer_value(json_object_get(r, "run"));
		b->steps_cached += (int)json_integer_value(json_object_get(r, "cached"));
		size_t i;
		json_t *k;
		json_array_foreach (json_object_get(r, "keys"), i, k)
			json_object_set(b->fresh, json_string_value(k), json_true());
		json_object_update(b->remote->mounts, json_object_get(r, "mounts"));
	} else if (r && json_is_false(json_object_get(r, "ok"))) {
		int code = (int)json_integer_value(json_object_get(r, "code"));
		rc = ib_error_setc(err, code < 0 ? code : IB_ERROR, "%s", jstr(r, "message"));
		if (json_is_true(json_object_get(r, "restart")))
			b->remote->restart = true;
	} else if (WIFSIGNALED(status)) {
		rc = ib_error_setc(err, IB_ERROR, "stage %s: its build process was killed (signal %d)",
				   name, WTERMSIG(status));
	} else {
		rc = ib_error_setc(err, IB_ERROR, "stage %s: its build process exited with status %d",
				   name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	json_decref(r);
	return rc;
}

int build_stages_parallel(builder *b, size_t target, const bool *needed, ib_error **err)
{
	const char *env = getenv("IMGBUILD_PARALLEL_STAGES");
	if ((env && !strcmp(env, "0")) || b->remote->attempt > 0)
		return 0;
	size_t n = b->n_stages;
	/* deps[i*n + j]: stage i needs stage j (transitively; i itself too) */
	cleanup_free bool *deps = xcalloc(n * n, sizeof(bool));
	cleanup_free bool *work = xcalloc(n, sizeof(bool));
	size_t n_work = 0;
	for (size_t i = 0; i < target; i++) {
		if (!needed[i])
			continue;
		int w = stage_has_work(b, i);
		if (w < 0)
			return 0;
		work[i] = w == 1;
		n_work += work[i];
		build_mark_needed(b, i, &deps[i * n]);
	}
	/* only when two stages with work could run at the same time */
	bool independent = false;
	for (size_t i = 0; i < target && !independent; i++)
		for (size_t j = i + 1; j < target && !independent; j++)
			independent = work[i] && work[j] && !deps[j * n + i];
	if (!independent)
		return 0;
	b->first_step = xcalloc(n, sizeof(int));
	b->by_worker = xcalloc(n, sizeof(bool));
	int no = 1;
	for (size_t i = 0; i <= target; i++) {
		b->first_step[i] = no;
		if (!needed[i])
			continue;
		size_t k;
		json_t *step;
		json_array_foreach (json_object_get(b->stages[i].plan, "steps"), k, step) {
			int kind = ib_plan_step_kind_of(step);
			no += kind == IB_STEP_RUN || kind == IB_STEP_COPY;
		}
	}
	ib_progress_debug(b->o->progress, "stages: %zu with work, built side by side", n_work);
	cleanup_free bool *started = xcalloc(n, sizeof(bool));
	cleanup_free bool *done = xcalloc(n, sizeof(bool));
	worker ws[WORKERS_MAX];
	int n_run = 0, cap = worker_cap();
	int rc = 0;
	for (;;) {
		for (size_t i = 0; i < target && rc == 0 && n_run < cap; i++) {
			if (!work[i] || started[i])
				continue;
			bool ready = true;
			for (size_t j = 0; j < i && ready; j++)
				ready = !(deps[i * n + j] && work[j] && !done[j]);
			if (!ready)
				continue;
			if (worker_start(b, &ws[n_run], i, &deps[i * n], err) < 0) {
				rc = -1;
				ib_build_signal_workers(SIGTERM);
				break;
			}
			started[i] = true;
			n_run++;
		}
		if (n_run == 0)
			break;
		struct pollfd pfd[WORKERS_MAX];
		for (int k = 0; k < n_run; k++)
			pfd[k] = (struct pollfd){.fd = ws[k].fd, .events = POLLIN};
		if (poll(pfd, (nfds_t)n_run, -1) < 0) {
			if (errno == EINTR)
				continue;
			if (rc == 0)
				rc = ib_error_set(err, errno, "poll");
			ib_build_signal_workers(SIGTERM);
			while (n_run > 0) {
				ib_error *e = NULL;
				worker_finish(b, &ws[--n_run], &e);
				ib_error_free(&e);
			}
			break;
		}
		for (int k = 0; k < n_run; k++) {
			if (!pfd[k].revents || worker_read(b, &ws[k]))
				continue;
			size_t s = ws[k].stage;
			ib_error *e = NULL;
			if (worker_finish(b, &ws[k], &e) < 0) {
				if (rc == 0) {
					/* the first failure is the build's; the rest stop */
					*err = e;
					e = NULL;
					rc = -1;
					ib_build_signal_workers(SIGTERM);
				}
				ib_error_free(&e);
			} else {
				done[s] = true;
				b->by_worker[s] = true;
			}
			ws[k] = ws[--n_run];
			break; /* pfd[] no longer matches ws[]: poll again */
		}
	}
	return rc;
}
