#include "progress.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "util.h"

/* The TTY view: permanent lines (CACHED, DONE, ERROR, a step's output,
 * info) scroll; below them a live area holds one line per running step
 * (several when stages are built side by side), each with its elapsed
 * time and bytes, and the transient status line of a transfer.  A ticker
 * thread redraws the live area; a permanent line erases it, is printed
 * and the area is drawn again below it.  Every write in TTY mode holds
 * `mu` (the ticker writes too). */
typedef struct live_step {
	int id;
	char *label; /* as shown (cut to the terminal width) */
	double t0;
	uint64_t done, total; /* bytes shown on its line */
} live_step;

struct ib_progress {
	ib_progress_mode mode;
	bool quiet;
	FILE *out;
	double last_bytes_update;
	pthread_mutex_t mu;
	pthread_t ticker;
	bool ticker_started, stop;
	live_step *run; /* TTY: the running steps, in start order */
	size_t n_run;
	char *status;	  /* TTY: the transient status line, or NULL */
	size_t drawn;	  /* TTY: lines of the live area on screen, above the cursor */
	bool debug;	  /* --debug: ib_progress_debug prints */
	double t_start;	  /* for the debug lines' timestamps */
};

static double now(void);

static const char *jstr_of(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

int ib_progress_mode_parse(const char *s, ib_progress_mode *out)
{
	static const char *names[] = {"auto", "tty", "plain", "json"};
	for (int i = 0; i < 4; i++) {
		if (!strcmp(s, names[i])) {
			*out = (ib_progress_mode)i;
			return 0;
		}
	}
	return -1;
}

ib_progress *ib_progress_new(ib_progress_mode mode, bool quiet, FILE *out)
{
	ib_progress *p = xcalloc(1, sizeof(*p));
	p->out = out ? out : stderr;
	if (mode == IB_PROGRESS_AUTO)
		mode = isatty(fileno(p->out)) && getenv("CI") == NULL ? IB_PROGRESS_TTY
								      : IB_PROGRESS_PLAIN;
	p->mode = mode;
	p->quiet = quiet;
	pthread_mutex_init(&p->mu, NULL);
	return p;
}

static void clear_status(ib_progress *p);

static void lock(ib_progress *p)
{
	pthread_mutex_lock(&p->mu);
}

static void unlock(ib_progress *p)
{
	pthread_mutex_unlock(&p->mu);
}

/* TTY: erase the live area; the cursor is where it began. */
static void live_erase(ib_progress *p)
{
	if (p->drawn)
		fprintf(p->out, "\033[%zuA", p->drawn);
	if (p->drawn || p->n_run || p->status)
		fputs("\r\033[J", p->out);
	p->drawn = 0;
}

/* TTY: draw the live area below the cursor. */
static void live_draw(ib_progress *p)
{
	double t = now();
	for (size_t i = 0; i < p->n_run; i++) {
		live_step *r = &p->run[i];
		fprintf(p->out, "\033[1m#%d %s\033[0m \033[33m%.1fs\033[0m", r->id, r->label,
			t - r->t0);
		if (r->done) {
			char d[32], tot[32];
			ib_format_size(d, sizeof(d), r->done);
			ib_format_size(tot, sizeof(tot), r->total);
			if (r->total)
				fprintf(p->out, " %s/%s", d, tot);
			else
				fprintf(p->out, " %s", d);
		}
		fputc('\n', p->out);
	}
	if (p->status)
		fprintf(p->out, "%s\n", p->status);
	p->drawn = p->n_run + (p->status ? 1 : 0);
	fflush(p->out);
}

static live_step *live_find(ib_progress *p, int id)
{
	for (size_t i = 0; i < p->n_run; i++)
		if (p->run[i].id == id)
			return &p->run[i];
	return NULL;
}

static void *ticker_main(void *arg)
{
	ib_progress *p = arg;
	for (;;) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
		lock(p);
		if (p->stop) {
			unlock(p);
			return NULL;
		}
		if (p->n_run) {
			live_erase(p);
			live_draw(p);
		}
		unlock(p);
	}
}

void ib_progress_free(ib_progress *p)
{
	if (!p)
		return;
	if (p->ticker_started) {
		lock(p);
		p->stop = true;
		unlock(p);
		pthread_join(p->ticker, NULL);
	}
	if (p->status) {
		/* a transfer's status line goes; running steps' lines stay */
		live_erase(p);
		clear_status(p);
		live_draw(p);
	}
	pthread_mutex_destroy(&p->mu);
	for (size_t i = 0; i < p->n_run; i++)
		free(p->run[i].label);
	free(p->run);
	free(p->status);
	free(p);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* TTY: drop the transient status line (erased with the live area). */
static void clear_status(ib_progress *p)
{
	free(p->status);
	p->status = NULL;
}

/* Every JSON event carries "time": when it happened, RFC 3339 in UTC with
 * milliseconds ("2024-05-01T12:00:00.123Z"). */
static void emit_json(ib_progress *p, json_t *ev)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	time_t secs = ts.tv_sec;
	gmtime_r(&secs, &tm);
	char when[40], stamp[64];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp, sizeof(stamp), "%s.%03dZ", when, (int)(ts.tv_nsec / 1000000) % 1000);
	json_object_set_new(ev, "time", json_string(stamp));
	char *s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
	fprintf(p->out, "%s\n", s);
	free(s);
	json_decref(ev);
	fflush(p->out);
}

static int term_width(ib_progress *p)
{
	struct winsize ws;
	if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

static void tty_step_event(ib_progress *p, int id, const char *state, const char *label,
			   double secs)
{
	lock(p);
	live_erase(p);
	if (!strcmp(state, "running")) {
		p->run = xrealloc(p->run, (p->n_run + 1) * sizeof(*p->run));
		live_step *r = &p->run[p->n_run++];
		/* each live line on one terminal row, so the area's height is
		 * its number of lines */
		int max = term_width(p) - 32;
		*r = (live_step){.id = id,
				 .label = xasprintf("%.*s", max > 10 ? max : 10, label),
				 .t0 = now()};
		if (!p->ticker_started && pthread_create(&p->ticker, NULL, ticker_main, p) == 0)
			p->ticker_started = true;
	} else if (!strcmp(state, "cached")) {
		fprintf(p->out, "\033[36m#%d %s CACHED\033[0m\n", id, label);
	} else {
		bool ok = !strcmp(state, "done");
		const char *color = ok ? "\033[32m" : "\033[31m";
		const char *word = ok ? "DONE" : "ERROR";
		live_step *r = live_find(p, id);
		if (r) {
			fprintf(p->out, "#%d %s %s%s %.1fs\033[0m\n", id, r->label, color, word, secs);
			size_t at = (size_t)(r - p->run);
			free(r->label);
			memmove(r, r + 1, (p->n_run - at - 1) * sizeof(*r));
			p->n_run--;
		} else {
			fprintf(p->out, "%s#%d %s %.1fs\033[0m\n", color, id, word, secs);
		}
	}
	live_draw(p);
	unlock(p);
}

static void step_event(ib_progress *p, int id, const char *state, const char *label, double secs)
{
	if (p->quiet)
		return;
	if (p->mode == IB_PROGRESS_JSON) {
		json_t *ev =
		    json_pack("{s:s, s:i, s:s}", "event", "step", "id", id, "state", state);
		if (label)
			json_object_set_new(ev, "label", json_string(label));
		if (secs >= 0)
			json_object_set_new(ev, "seconds", json_real(secs));
		emit_json(p, ev);
		return;
	}
	if (p->mode == IB_PROGRESS_TTY) {
		tty_step_event(p, id, state, label, secs);
		return;
	}
	if (!strcmp(state, "running"))
		fprintf(p->out, "#%d %s\n", id, label);
	else if (!strcmp(state, "cached"))
		fprintf(p->out, "#%d %s CACHED\n", id, label);
	else if (!strcmp(state, "done"))
		fprintf(p->out, "#%d DONE %.1fs\n", id, secs);
	else
		fprintf(p->out, "#%d ERROR after %.1fs\n", id, secs);
	fflush(p->out);
}

void ib_progress_step_start(ib_progress *p, int id, const char *label)
{
	step_event(p, id, "running", label, -1);
}

void ib_progress_step_cached(ib_progress *p, int id, const char *label)
{
	step_event(p, id, "cached", label, -1);
}

void ib_progress_step_done(ib_progress *p, int id, double seconds)
{
	step_event(p, id, "done", NULL, seconds);
}

void ib_progress_step_failed(ib_progress *p, int id, double seconds)
{
	step_event(p, id, "failed", NULL, seconds);
}

void ib_progress_output(ib_progress *p, int id, const char *line, size_t len)
{
	if (p->quiet)
		return;
	if (p->mode == IB_PROGRESS_JSON) {
		json_t *ev =
		    json_pack("{s:s, s:i, s:s%}", "event", "output", "id", id, "line", line, len);
		if (!ev) /* not valid UTF-8: escape bytes */
			ev = json_pack("{s:s, s:i, s:s}", "event", "output", "id", id, "line",
				       "<binary>");
		emit_json(p, ev);
		return;
	}
	if (p->mode == IB_PROGRESS_TTY) {
		lock(p);
		live_erase(p);
		fprintf(p->out, "\033[2m#%d\033[0m %.*s\n", id, (int)len, line);
		live_draw(p);
		unlock(p);
		return;
	}
	fprintf(p->out, "#%d %.*s\n", id, (int)len, line);
	fflush(p->out);
}

void ib_progress_bytes(ib_progress *p, int id, const char *what, uint64_t done, uint64_t total)
{
	if (p->quiet)
		return;
	double t = now();
	bool final = total && done >= total;
	if (p->mode == IB_PROGRESS_JSON) {
		if (!final && t - p->last_bytes_update < 0.5)
			return;
		p->last_bytes_update = t;
		emit_json(p,
			  json_pack("{s:s, s:i, s:s, s:I, s:I}", "event", "bytes", "id", id, "what",
				    what, "done", (json_int_t)done, "total", (json_int_t)total));
		return;
	}
	if (p->mode == IB_PROGRESS_PLAIN) {
		/* Plain output: only completion, so logs stay short. */
		if (final) {
			char sz[32];
			ib_format_size(sz, sizeof(sz), done);
			fprintf(p->out, "#%d %s %s done\n", id, what, sz);
		}
		return;
	}
	if (!final && t - p->last_bytes_update < 0.1)
		return;
	p->last_bytes_update = t;
	lock(p);
	live_step *r = live_find(p, id);
	if (r) {
		/* a running step's own bytes: shown on its line */
		r->done = done;
		r->total = total;
		live_erase(p);
		live_draw(p);
		unlock(p);
		return;
	}
	char d[32], tot[32];
	ib_format_size(d, sizeof(d), done);
	ib_format_size(tot, sizeof(tot), total);
	int width = 30, filled = total ? (int)((double)done / (double)total * width) : 0;
	char bar[64];
	for (int i = 0; i < width; i++)
		bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
	bar[width] = '\0';
	live_erase(p);
	clear_status(p);
	if (!final)
		p->status = xasprintf("#%d %s [%s] %s/%s", id, what, bar, d, total ? tot : "?");
	live_draw(p);
	unlock(p);
}

void ib_progress_transfer_cb(const char *what, uint64_t done, uint64_t total, void *payload)
{
	ib_progress_bytes(payload, 0, what, done, total);
}

void ib_progress_set_debug(ib_progress *p, bool on)
{
	p->debug = on;
	p->t_start = now();
}

bool ib_progress_debugging(const ib_progress *p)
{
	return p && p->debug;
}

void ib_progress_debug(ib_progress *p, const char *fmt, ...)
{
	if (!p || !p->debug)
		return;
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	double t = now() - p->t_start;
	if (p->mode == IB_PROGRESS_JSON) {
		lock(p);
		emit_json(
		    p, json_pack("{s:s, s:s, s:f}", "event", "debug", "message", m, "elapsed", t));
		unlock(p);
		return;
	}
	lock(p);
	live_erase(p);
	fprintf(p->out, "debug: [%7.3fs] %s\n", t, m);
	live_draw(p);
	unlock(p);
}

void ib_progress_info(ib_progress *p, const char *fmt, ...)
{
	if (p->quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = xvasprintf(fmt, ap);
	va_end(ap);
	if (p->mode == IB_PROGRESS_JSON) {
		emit_json(p, json_pack("{s:s, s:s}", "event", "info", "message", m));
		return;
	}
	lock(p);
	live_erase(p);
	clear_status(p);
	fprintf(p->out, "%s\n", m);
	live_draw(p);
	unlock(p);
}

ib_progress *ib_progress_new_relay(const ib_progress *parent, FILE *out)
{
	ib_progress *p = ib_progress_new(IB_PROGRESS_JSON, false, out);
	p->debug = parent->debug;
	p->t_start = parent->t_start;
	return p;
}

void ib_progress_hold(ib_progress *p, bool hold)
{
	if (hold)
		lock(p);
	else
		unlock(p);
}

static void replay_transfer(ib_progress *p, json_t *ev)
{
	ib_transfer_printer *tp = ib_transfer_printer_for(p, jstr_of(ev, "verb"));
	ib_transfer_printer_event(jstr_of(ev, "what"), jstr_of(ev, "state"),
				  (uint64_t)json_integer_value(json_object_get(ev, "size")), tp);
	ib_transfer_printer_free(tp);
}

void ib_progress_replay(ib_progress *p, const char *line)
{
	json_t *ev = json_loads(line, 0, NULL);
	const char *kind = jstr_of(ev, "event");
	int id = (int)json_integer_value(json_object_get(ev, "id"));
	const char *label = jstr_of(ev, "label");
	double secs = json_number_value(json_object_get(ev, "seconds"));
	const char *text = jstr_of(ev, "line");
	if (!kind) {
		ib_progress_info(p, "%s", line);
	} else if (!strcmp(kind, "step")) {
		const char *state = jstr_of(ev, "state");
		if (!strcmp(state, "running") || !strcmp(state, "cached"))
			step_event(p, id, state, label ? label : "", -1);
		else
			step_event(p, id, state, NULL, secs);
	} else if (!strcmp(kind, "output") && text) {
		ib_progress_output(p, id, text, json_string_length(json_object_get(ev, "line")));
	} else if (!strcmp(kind, "bytes")) {
		ib_progress_bytes(p, id, jstr_of(ev, "what"),
				  (uint64_t)json_integer_value(json_object_get(ev, "done")),
				  (uint64_t)json_integer_value(json_object_get(ev, "total")));
	} else if (!strcmp(kind, "debug")) {
		ib_progress_debug(p, "%s", jstr_of(ev, "message"));
	} else if (!strcmp(kind, "info")) {
		ib_progress_info(p, "%s", jstr_of(ev, "message"));
	} else if (!strcmp(kind, "transfer") && jstr_of(ev, "verb") && jstr_of(ev, "what") &&
		   jstr_of(ev, "state")) {
		replay_transfer(p, ev);
	}
	json_decref(ev);
}

/* ---- transfers: one line per blob ---- */

typedef struct pline {
	char what[IB_DIGEST_BUFLEN];
	uint64_t done, total;
	double t0;
	char state[24];
} pline;

struct ib_transfer_printer {
	FILE *f;
	bool tty, quiet;
	ib_progress *json; /* a build's --progress json: events go there */
	char *verb;
	pthread_mutex_t lock;
	pline *v;
	size_t n;
	size_t drawn;
	double last;
};

ib_transfer_printer *ib_transfer_printer_new(FILE *f, const char *verb, bool quiet)
{
	ib_transfer_printer *p = xcalloc(1, sizeof(*p));
	p->f = f;
	p->quiet = quiet;
	p->tty = isatty(fileno(f)) == 1;
	p->verb = xstrdup(verb);
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

ib_transfer_printer *ib_transfer_printer_for(ib_progress *prog, const char *verb)
{
	ib_transfer_printer *p = ib_transfer_printer_new(prog->out, verb, prog->quiet);
	if (prog->mode == IB_PROGRESS_JSON)
		p->json = prog;
	else if (prog->mode == IB_PROGRESS_PLAIN)
		p->tty = false;
	return p;
}

static pline *pline_get(ib_transfer_printer *p, const char *what)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->v[i].what, what))
			return &p->v[i];
	p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
	pline *l = &p->v[p->n++];
	memset(l, 0, sizeof(*l));
	snprintf(l->what, sizeof(l->what), "%s", what);
	l->t0 = now();
	return l;
}

/* "sha256:0123456789ab" */
static void short_what(char *out, size_t n, const char *what)
{
	/* a digest shows its first 12 hex digits; a label is cut to fit */
	int max = (int)n - 1;
	if (!strncmp(what, "sha256:", 7))
		snprintf(out, n, "%.*s", max < 19 ? max : 19, what);
	else
		snprintf(out, n, "%.*s", max, what);
}

static void draw(ib_transfer_printer *p, bool force)
{
	double t = now();
	if (!force && t - p->last < 0.1)
		return;
	p->last = t;
	if (p->drawn)
		fprintf(p->f, "\033[%zuA", p->drawn);
	for (size_t i = 0; i < p->n; i++) {
		pline *l = &p->v[i];
		char w[32], a[16], b[16], rate[16];
		short_what(w, sizeof(w), l->what);
		ib_format_size(a, sizeof(a), l->done);
		ib_format_size(b, sizeof(b), l->total);
		if (l->state[0]) {
			fprintf(p->f, "\r\033[K%s %s: %s %s\n", p->verb, w, b, l->state);
		} else {
			double el = t - l->t0;
			ib_format_size(rate, sizeof(rate),
				       el > 0.05 ? (uint64_t)((double)l->done / el) : 0);
			fprintf(p->f, "\r\033[K%s %s: %s / %s  %s/s\n", p->verb, w, a, b, rate);
		}
	}
	p->drawn = p->n;
	fflush(p->f);
}

void ib_transfer_printer_progress(const char *what, uint64_t done, uint64_t total, void *payload)
{
	ib_transfer_printer *p = payload;
	if (!p || p->quiet || !p->tty || p->json)
		return;
	pthread_mutex_lock(&p->lock);
	pline *l = pline_get(p, what);
	l->done = done;
	l->total = total;
	draw(p, false);
	pthread_mutex_unlock(&p->lock);
}

void ib_transfer_printer_event(const char *what, const char *state, uint64_t size, void *payload)
{
	ib_transfer_printer *p = payload;
	if (!p || p->quiet)
		return;
	const char *text = !strcmp(state, "exists")    ? "already exists"
			   : !strcmp(state, "mounted") ? "mounted from another repository"
			   : !strcmp(state, "skipped") ? "skipped (foreign layer)"
			   : !strcmp(state, "done")    ? "done"
						       : state;
	if (p->json) {
		lock(p->json);
		emit_json(p->json, json_pack("{s:s, s:s, s:s, s:s, s:I}", "event", "transfer",
					     "verb", p->verb, "what", what, "state", state, "size",
					     (json_int_t)size));
		unlock(p->json);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (p->tty) {
		pline *l = pline_get(p, what);
		l->total = size;
		l->done = size;
		snprintf(l->state, sizeof(l->state), "%s", text);
		draw(p, true);
	} else {
		char w[32], sz[16];
		short_what(w, sizeof(w), what);
		ib_format_size(sz, sizeof(sz), size);
		fprintf(p->f, "%s %s %s %s\n", p->verb, w, sz, text);
		fflush(p->f);
	}
	pthread_mutex_unlock(&p->lock);
}

void ib_transfer_printer_free(ib_transfer_printer *p)
{
	if (!p)
		return;
	if (p->tty && !p->quiet && p->n)
		draw(p, true);
	pthread_mutex_destroy(&p->lock);
	free(p->v);
	free(p->verb);
	free(p);
}
