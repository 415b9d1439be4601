#include "progress.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

struct ib_progress {
	ib_progress_mode mode;
	bool quiet;
	FILE *out;
	bool status_shown; /* TTY: a transient status line is on screen */
	double last_bytes_update;
};

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
	return p;
}

static void clear_status(ib_progress *p);

void ib_progress_free(ib_progress *p)
{
	if (!p)
		return;
	clear_status(p);
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

static void emit_json(ib_progress *p, json_t *ev)
{
	char *s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
	fprintf(p->out, "%s\n", s);
	free(s);
	json_decref(ev);
	fflush(p->out);
}

static void step_event(ib_progress *p, int id, const char *state, const char *label, double secs)
{
	if (p->quiet)
		return;
	if (p->mode == IB_PROGRESS_JSON) {
		json_t *ev = json_pack("{s:s, s:i, s:s}", "event", "step", "id", id, "state", state);
		if (label)
			json_object_set_new(ev, "label", json_string(label));
		if (secs >= 0)
			json_object_set_new(ev, "seconds", json_real(secs));
		emit_json(p, ev);
		return;
	}
	clear_status(p);
	bool tty = p->mode == IB_PROGRESS_TTY;
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
		json_t *ev = json_pack("{s:s, s:i, s:s%}", "event", "output", "id", id, "line", line, len);
		if (!ev) /* not valid UTF-8: escape bytes */
			ev = json_pack("{s:s, s:i, s:s}", "event", "output", "id", id, "line", "<binary>");
		emit_json(p, ev);
		return;
	}
	clear_status(p);
	if (p->mode == IB_PROGRESS_TTY)
		fprintf(p->out, "\033[2m#%d\033[0m %.*s\n", id, (int)len, line);
	else
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
		emit_json(p, json_pack("{s:s, s:i, s:s, s:I, s:I}", "event", "bytes", "id", id,
				       "what", what, "done", (json_int_t)done, "total",
				       (json_int_t)total));
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
}

void ib_progress_transfer_cb(const char *what, uint64_t done, uint64_t total, void *payload)
{
	ib_progress_bytes(payload, 0, what, done, total);
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
	clear_status(p);
	fprintf(p->out, "%s\n", m);
	fflush(p->out);
}
