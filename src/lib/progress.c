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

/* The TTY view: a running step's line stays open and a ticker thread
 * redraws it with the elapsed time; DONE/ERROR rewrite it in place.  When
 * the step prints output, the line is closed and output scrolls below it.
 * Every write in TTY mode holds `mu` (the ticker writes too). */
struct ib_progress {
	ib_progress_mode mode;
	bool quiet;
	FILE *out;
	bool status_shown; /* TTY: a transient status line is on screen */
	double last_bytes_update;
	pthread_mutex_t mu;
	pthread_t ticker;
	bool ticker_started, stop;
	int run_id;	 /* running step, 0 = none */
	char *run_label; /* as shown (cut to the terminal width) */
	double run_t0;
	bool line_open;		      /* the running step's line is the cursor's line */
	uint64_t run_done, run_total; /* bytes shown on the running line */
	bool debug;		      /* --debug: ib_progress_debug prints */
	double t_start;		      /* for the debug lines' timestamps */
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

/* Close the running step's open line so the next write starts fresh. */
static void close_line(ib_progress *p)
{
	if (p->line_open) {
		fputc('\n', p->out);
		p->line_open = false;
	}
}

static void draw_running(ib_progress *p)
{
	fprintf(p->out, "\r\033[K\033[1m#%d %s\033[0m \033[33m%.1fs\033[0m", p->run_id,
		p->run_label, now() - p->run_t0);
	if (p->run_done) {
		char d[32], t[32];
		ib_format_size(d, sizeof(d), p->run_done);
		ib_format_size(t, sizeof(t), p->run_total);
		if (p->run_total)
			fprintf(p->out, " %s/%s", d, t);
		else
			fprintf(p->out, " %s", d);
	}
	fflush(p->out);
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
		if (p->line_open && p->run_id)
			draw_running(p);
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
	close_line(p);
	clear_status(p);
	pthread_mutex_destroy(&p->mu);
	free(p->run_label);
	free(p);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* TTY: erase the transient status line before printing a permanent one. */
static void clear_status(ib_progress *p)
{
	if (p->status_shown) {
		fputs("\r\033[K", p->out);
		p->status_shown = false;
	}
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
	clear_status(p);
	if (!strcmp(state, "running")) {
		close_line(p);
		free(p->run_label);
		/* keep the line on one terminal row so \r can redraw it */
		int max = term_width(p) - 32;
		p->run_label = xasprintf("%.*s", max > 10 ? max : 10, label);
		p->run_id = id;
		p->run_t0 = now();
		p->run_done = p->run_total = 0;
		p->line_open = true;
		draw_running(p);
		if (!p->ticker_started && pthread_create(&p->ticker, NULL, ticker_main, p) == 0)
			p->ticker_started = true;
	} else if (!strcmp(state, "cached")) {
		close_line(p);
		fprintf(p->out, "\033[36m#%d %s CACHED\033[0m\n", id, label);
	} else {
		bool ok = !strcmp(state, "done");
		const char *color = ok ? "\033[32m" : "\033[31m";
		const char *word = ok ? "DONE" : "ERROR";
		if (p->line_open && p->run_id == id)
			fprintf(p->out, "\r\033[K#%d %s %s%s %.1fs\033[0m\n", id, p->run_label,
				color, word, secs);
		else
			fprintf(p->out, "%s#%d %s %.1fs\033[0m\n", color, id, word, secs);
		p->line_open = false;
		p->run_id = 0;
	}
	fflush(p->out);
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
	bool tty = p->mode == IB_PROGRESS_TTY;
	if (tty) {
		tty_step_event(p, id, state, label, secs);
		return;
	}
	clear_status(p);
	const char *color = "", *reset = tty ? "\033[0m" : "";
	if (tty) {
		if (!strcmp(state, "cached"))
			color = "\033[36m";
		else if (!strcmp(state, "done"))
			color = "\033[32m";
		else if (!strcmp(state, "failed"))
			color = "\033[31m";
		else
			color = "\033[1m";
	}
	if (!strcmp(state, "running"))
		fprintf(p->out, "%s#%d %s%s\n", color, id, label, reset);
	else if (!strcmp(state, "cached"))
		fprintf(p->out, "%s#%d %s CACHED%s\n", color, id, label, reset);
	else if (!strcmp(state, "done"))
		fprintf(p->out, "%s#%d DONE %.1fs%s\n", color, id, secs, reset);
	else
		fprintf(p->out, "%s#%d ERROR after %.1fs%s\n", color, id, secs, reset);
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
		clear_status(p);
		close_line(p);
		fprintf(p->out, "\033[2m#%d\033[0m %.*s\n", id, (int)len, line);
		fflush(p->out);
		unlock(p);
		return;
	}
	clear_status(p);
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
	if (p->line_open && p->run_id == id) {
		/* the running step's own bytes: shown on its line */
		p->run_done = done;
		p->run_total = total;
		draw_running(p);
		unlock(p);
		return;
	}
	close_line(p);
	char d[32], tot[32];
	ib_format_size(d, sizeof(d), done);
	ib_format_size(tot, sizeof(tot), total);
	int width = 30, filled = total ? (int)((double)done / (double)total * width) : 0;
	char bar[64];
	for (int i = 0; i < width; i++)
		bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
	bar[width] = '\0';
	fprintf(p->out, "\r\033[K#%d %s [%s] %s/%s", id, what, bar, d, total ? tot : "?");
	p->status_shown = true;
	if (final)
		clear_status(p);
	fflush(p->out);
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
	clear_status(p);
	close_line(p);
	fprintf(p->out, "debug: [%7.3fs] %s\n", t, m);
	fflush(p->out);
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
	bool tty = p->mode == IB_PROGRESS_TTY;
	if (tty)
		lock(p);
	clear_status(p);
	close_line(p);
	fprintf(p->out, "%s\n", m);
	fflush(p->out);
	if (tty)
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
