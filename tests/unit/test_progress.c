/* Build output (src/lib/progress.c): plain lines, one JSON object per line,
 * quiet mode, the TTY view and mode parsing.  Output goes to an in-memory
 * FILE from open_memstream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "progress.h"
#include "testutil.h"
#include "util.h"

/* ---- capture ---- */

typedef struct capture {
	char *buf;
	size_t len;
	FILE *f;
	ib_progress *p;
} capture;

static void cap_open(capture *c, ib_progress_mode mode, bool quiet)
{
	memset(c, 0, sizeof(*c));
	c->f = open_memstream(&c->buf, &c->len);
	assert_non_null(c->f);
	c->p = ib_progress_new(mode, quiet, c->f);
	assert_non_null(c->p);
}

/* Free the progress object, close the stream; c->buf holds everything. */
static const char *cap_close(capture *c)
{
	ib_progress_free(c->p);
	c->p = NULL;
	assert_int_equal(fclose(c->f), 0);
	c->f = NULL;
	return c->buf;
}

static void cap_free(capture *c)
{
	free(c->buf);
	c->buf = NULL;
}

/* Split JSON-lines output; every line must be one JSON object.  Returns a
 * new array of the objects. */
static json_t *parse_lines(const char *out)
{
	json_t *arr = json_array();
	const char *p = out;
	while (*p) {
		const char *nl = strchr(p, '\n');
		if (!nl)
			fail_msg("unterminated line: %s", p);
		json_error_t jerr;
		json_t *j = json_loadb(p, (size_t)(nl - p), 0, &jerr);
		if (!j)
			fail_msg("line is not JSON (%s): %.*s", jerr.text, (int)(nl - p), p);
		if (!json_is_object(j))
			fail_msg("line is not a JSON object: %.*s", (int)(nl - p), p);
		json_array_append_new(arr, j);
		p = nl + 1;
	}
	return arr;
}

/* Call every public printing function once. */
static void emit_everything(ib_progress *p)
{
	ib_progress_step_start(p, 1, "[final 1/3] COPY . /src");
	ib_progress_step_cached(p, 2, "[final 2/3] RUN apk add gcc");
	ib_progress_output(p, 1, "compiling", 9);
	ib_progress_bytes(p, 1, "layer", 10, 100);
	ib_progress_bytes(p, 1, "layer", 100, 100);
	ib_progress_step_done(p, 1, 1.23);
	ib_progress_step_start(p, 3, "[final 3/3] RUN false");
	ib_progress_step_failed(p, 3, 0.5);
	ib_progress_info(p, "pushed %s", "example.com/app:1");
}

/* ---- mode parsing ---- */

static void test_mode_parse_accepts_names(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		ib_progress_mode m;
	} ok[] = {
	    {"auto", IB_PROGRESS_AUTO},
	    {"tty", IB_PROGRESS_TTY},
	    {"plain", IB_PROGRESS_PLAIN},
	    {"json", IB_PROGRESS_JSON},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ib_progress_mode m = (ib_progress_mode)99;
		assert_int_equal(ib_progress_mode_parse(ok[i].s, &m), 0);
		assert_int_equal(m, ok[i].m);
	}
}

static void test_mode_parse_rejects_others(void **state)
{
	(void)state;
	static const char *bad[] = {"", "JSON", "Plain", "json ", " tty", "jsonl", "a", "quiet"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ib_progress_mode m = IB_PROGRESS_TTY;
		if (ib_progress_mode_parse(bad[i], &m) != -1)
			fail_msg("mode \"%s\" accepted", bad[i]);
		assert_int_equal(m, IB_PROGRESS_TTY);
	}
}

/* ---- plain ---- */

static void test_plain_step_lines(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	ib_progress_step_start(c.p, 1, "[final 1/2] RUN make");
	ib_progress_step_cached(c.p, 2, "[final 2/2] COPY out /");
	ib_progress_step_done(c.p, 1, 1.23);
	ib_progress_step_failed(c.p, 7, 0.46);
	const char *out = cap_close(&c);
	assert_string_equal(out, "#1 [final 1/2] RUN make\n"
				 "#2 [final 2/2] COPY out / CACHED\n"
				 "#1 DONE 1.2s\n"
				 "#7 ERROR after 0.5s\n");
	cap_free(&c);
}

/* A worker's relay replayed by the parent prints what the parent would
 * have printed itself, in plain and in JSON mode; a line that is not an
 * event passes through. */
static void test_relay_replayed_as_if_local(void **state)
{
	(void)state;
	ib_progress_mode modes[] = {IB_PROGRESS_PLAIN, IB_PROGRESS_JSON};
	for (size_t m = 0; m < 2; m++) {
		capture direct, relay, replayed;
		cap_open(&direct, modes[m], false);
		emit_everything(direct.p);
		ib_progress_debug(direct.p, "not shown: debug is off");
		cap_close(&direct);
		cap_open(&replayed, modes[m], false);
		cap_open(&relay, IB_PROGRESS_JSON, false);
		ib_progress_free(relay.p);
		relay.p = ib_progress_new_relay(replayed.p, relay.f);
		emit_everything(relay.p);
		ib_progress_debug(relay.p, "not shown: debug is off");
		cap_close(&relay);
		for (char *line = relay.buf, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
			*nl = '\0';
			ib_progress_replay(replayed.p, line);
		}
		cap_close(&replayed);
		if (modes[m] == IB_PROGRESS_PLAIN) {
			assert_string_equal(replayed.buf, direct.buf);
		} else {
			/* same events, times aside */
			json_t *a = parse_lines(direct.buf), *b = parse_lines(replayed.buf);
			assert_int_equal(json_array_size(a), json_array_size(b));
			for (size_t i = 0; i < json_array_size(a); i++) {
				json_object_del(json_array_get(a, i), "time");
				json_object_del(json_array_get(b, i), "time");
				assert_true(json_equal(json_array_get(a, i), json_array_get(b, i)));
			}
			json_decref(a);
			json_decref(b);
		}
		cap_free(&direct);
		cap_free(&relay);
		cap_free(&replayed);
	}
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	ib_progress_replay(c.p, "warning: not an event");
	ib_progress_set_debug(c.p, true);
	ib_progress_replay(c.p, "{\"event\":\"debug\",\"message\":\"from a worker\"}");
	cap_close(&c);
	assert_non_null(strstr(c.buf, "warning: not an event\n"));
	assert_non_null(strstr(c.buf, "] from a worker\n"));
	cap_free(&c);
}

static void test_plain_output_lines_prefixed(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	ib_progress_output(c.p, 4, "gcc -c main.c", 13);
	/* only len bytes of the line are printed */
	ib_progress_output(c.p, 12, "hello world", 5);
	ib_progress_output(c.p, 4, "", 0);
	const char *out = cap_close(&c);
	assert_string_equal(out, "#4 gcc -c main.c\n"
				 "#12 hello\n"
				 "#4 \n");
	cap_free(&c);
}

static void test_plain_bytes_only_on_completion(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	ib_progress_bytes(c.p, 3, "pull sha256:abc", 100, 1500000);
	ib_progress_bytes(c.p, 3, "pull sha256:abc", 1000000, 1500000);
	ib_progress_bytes(c.p, 3, "unknown total", 5000, 0);
	ib_progress_bytes(c.p, 3, "pull sha256:abc", 1500000, 1500000);
	const char *out = cap_close(&c);
	assert_string_equal(out, "#3 pull sha256:abc 1.5MB done\n");
	cap_free(&c);
}

static void test_plain_info_and_no_escapes(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	emit_everything(c.p);
	const char *out = cap_close(&c);
	assert_non_null(strstr(out, "pushed example.com/app:1\n"));
	assert_null(strchr(out, '\033'));
	assert_null(strchr(out, '\r'));
	/* every line of a step is tagged with its number */
	assert_non_null(strstr(out, "#1 compiling\n"));
	assert_non_null(strstr(out, "#1 layer 100B done\n"));
	cap_free(&c);
}

static void test_auto_on_non_tty_is_plain(void **state)
{
	(void)state;
	FILE *f = tmpfile();
	assert_non_null(f);
	ib_progress *p = ib_progress_new(IB_PROGRESS_AUTO, false, f);
	ib_progress_step_cached(p, 1, "label");
	ib_progress_free(p);
	rewind(f);
	char buf[256] = {0};
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_string_equal(buf, "#1 label CACHED\n");
}

/* ---- json ---- */

static void test_json_one_object_per_line(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_JSON, false);
	emit_everything(c.p);
	const char *out = cap_close(&c);
	json_t *ev = parse_lines(out);
	/* 2 starts, cached, output, 2 bytes, done, failed, info */
	assert_int_equal(json_array_size(ev), 9);

	json_t *e = json_array_get(ev, 0);
	assert_string_equal(tu_json_str(e, "event"), "step");
	assert_int_equal(tu_json_int(e, "id"), 1);
	assert_string_equal(tu_json_str(e, "state"), "running");
	assert_string_equal(tu_json_str(e, "label"), "[final 1/3] COPY . /src");

	e = json_array_get(ev, 1);
	assert_string_equal(tu_json_str(e, "event"), "step");
	assert_int_equal(tu_json_int(e, "id"), 2);
	assert_string_equal(tu_json_str(e, "state"), "cached");
	assert_string_equal(tu_json_str(e, "label"), "[final 2/3] RUN apk add gcc");

	e = json_array_get(ev, 2);
	assert_string_equal(tu_json_str(e, "event"), "output");
	assert_int_equal(tu_json_int(e, "id"), 1);
	assert_string_equal(tu_json_str(e, "line"), "compiling");

	e = json_array_get(ev, 3);
	assert_string_equal(tu_json_str(e, "event"), "bytes");
	assert_int_equal(tu_json_int(e, "id"), 1);
	assert_string_equal(tu_json_str(e, "what"), "layer");
	assert_int_equal(tu_json_int(e, "done"), 10);
	assert_int_equal(tu_json_int(e, "total"), 100);
	e = json_array_get(ev, 4);
	assert_string_equal(tu_json_str(e, "event"), "bytes");
	assert_int_equal(tu_json_int(e, "done"), 100);

	e = json_array_get(ev, 5);
	assert_string_equal(tu_json_str(e, "event"), "step");
	assert_int_equal(tu_json_int(e, "id"), 1);
	assert_string_equal(tu_json_str(e, "state"), "done");
	assert_true(json_is_number(json_object_get(e, "seconds")));
	assert_float_equal(json_number_value(json_object_get(e, "seconds")), 1.23, 1e-9);
	assert_null(json_object_get(e, "label"));

	e = json_array_get(ev, 7);
	assert_string_equal(tu_json_str(e, "state"), "failed");
	assert_int_equal(tu_json_int(e, "id"), 3);
	assert_float_equal(json_number_value(json_object_get(e, "seconds")), 0.5, 1e-9);

	e = json_array_get(ev, 8);
	assert_string_equal(tu_json_str(e, "event"), "info");
	assert_string_equal(tu_json_str(e, "message"), "pushed example.com/app:1");
	json_decref(ev);
	cap_free(&c);
}

static void test_json_output_escaping(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_JSON, false);
	const char tricky[] = "say \"hi\"\\ \t{\"event\":\"step\"}";
	ib_progress_output(c.p, 5, tricky, strlen(tricky));
	ib_progress_output(c.p, 5, "abcdef", 3);
	const char bad_utf8[] = {'o', 'k', (char)0xff, (char)0xfe};
	ib_progress_output(c.p, 6, bad_utf8, sizeof(bad_utf8));
	ib_progress_step_start(c.p, 9, "RUN echo \"a\nb\"");
	const char *out = cap_close(&c);
	json_t *ev = parse_lines(out);
	assert_int_equal(json_array_size(ev), 4);
	assert_string_equal(tu_json_str(json_array_get(ev, 0), "line"), tricky);
	assert_string_equal(tu_json_str(json_array_get(ev, 1), "line"), "abc");
	/* invalid UTF-8 still yields a valid JSON line */
	json_t *e = json_array_get(ev, 2);
	assert_string_equal(tu_json_str(e, "event"), "output");
	assert_int_equal(tu_json_int(e, "id"), 6);
	assert_string_equal(tu_json_str(e, "line"), "<binary>");
	/* a newline inside a label does not split the event */
	assert_string_equal(tu_json_str(json_array_get(ev, 3), "label"), "RUN echo \"a\nb\"");
	json_decref(ev);
	cap_free(&c);
}

static void test_json_bytes_throttled_but_final_always_sent(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_JSON, false);
	ib_progress_bytes(c.p, 2, "push", 1, 1000);
	for (uint64_t i = 2; i < 500; i++)
		ib_progress_bytes(c.p, 2, "push", i, 1000);
	ib_progress_bytes(c.p, 2, "push", 1000, 1000);
	const char *out = cap_close(&c);
	json_t *ev = parse_lines(out);
	/* back-to-back updates collapse; completion is never dropped */
	assert_true(json_array_size(ev) >= 2);
	assert_true(json_array_size(ev) < 10);
	json_t *last = json_array_get(ev, json_array_size(ev) - 1);
	assert_string_equal(tu_json_str(last, "event"), "bytes");
	assert_int_equal(tu_json_int(last, "done"), 1000);
	assert_int_equal(tu_json_int(last, "total"), 1000);
	json_decref(ev);
	cap_free(&c);
}

/* ---- quiet ---- */

static void test_quiet_prints_nothing(void **state)
{
	(void)state;
	static const ib_progress_mode modes[] = {IB_PROGRESS_PLAIN, IB_PROGRESS_JSON,
						 IB_PROGRESS_TTY};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		capture c;
		cap_open(&c, modes[i], true);
		emit_everything(c.p);
		cap_close(&c);
		if (c.len != 0)
			fail_msg("quiet mode %d printed: %s", (int)modes[i], c.buf);
		cap_free(&c);
	}
}

/* ---- tty ---- */

/* ---- the TTY view, rendered ----
 * A small terminal: printable bytes at the cursor, \r, \n, ESC[nA (up),
 * ESC[K (erase to end of line), ESC[J (erase to end of screen); colours
 * (ESC[...m) are dropped.  screen() returns the rows as text, one per
 * line. */
#define ROWS 64
#define COLS 256
static char *screen(const char *out)
{
	static char rows[ROWS][COLS + 1];
	memset(rows, 0, sizeof(rows));
	int r = 0, c = 0, maxr = 0;
	for (const char *q = out; *q; q++) {
		if (*q == '\033' && q[1] == '[') {
			int n = 0;
			q += 2;
			while (*q >= '0' && *q <= '9')
				n = n * 10 + (*q++ - '0');
			while (*q == ';' || (*q >= '0' && *q <= '9'))
				q++;
			if (*q == 'A')
				r -= n ? n : 1;
			else if (*q == 'K')
				rows[r][c] = '\0';
			else if (*q == 'J')
				for (int k = r; k < ROWS; k++)
					memset(k == r ? &rows[k][c] : rows[k], 0,
					       k == r ? (size_t)(COLS + 1 - c) : COLS + 1);
			assert_true(r >= 0);
			continue;
		}
		if (*q == '\r') {
			c = 0;
		} else if (*q == '\n') {
			r++;
			c = 0;
			assert_true(r < ROWS);
		} else if (c < COLS) {
			/* writing past the end of a row's text pads with spaces */
			for (int k = (int)strlen(rows[r]); k < c; k++)
				rows[r][k] = ' ';
			rows[r][c++] = *q;
		}
		if (r > maxr)
			maxr = r;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	for (int k = 0; k < maxr; k++)
		if (rows[k][0])
			fprintf(f, "%s\n", rows[k]);
	fclose(f);
	return text;
}

static void test_tty_colours_and_clears_status_line(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_TTY, false);
	ib_progress_step_cached(c.p, 1, "COPY");
	ib_progress_bytes(c.p, 2, "layer", 10, 100); /* transient status line */
	ib_progress_info(c.p, "next");
	const char *out = cap_close(&c);
	assert_non_null(strstr(out, "#1 COPY CACHED"));
	assert_non_null(strstr(out, "\033[36m")); /* cached is cyan */
	assert_non_null(strstr(out, "#2 layer [===>"));
	/* the status line was shown, then erased by the next permanent line */
	cleanup_free char *scr = screen(out);
	assert_string_equal(scr, "#1 COPY CACHED\nnext\n");
	cap_free(&c);
}

static void test_tty_running_line_is_rewritten_in_place(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_TTY, false);
	ib_progress_step_start(c.p, 1, "[s 1/2] RUN quiet");
	ib_progress_step_done(c.p, 1, 0.25);
	ib_progress_step_start(c.p, 2, "[s 2/2] RUN loud");
	ib_progress_output(c.p, 2, "hello", 5);
	ib_progress_step_failed(c.p, 2, 1.5);
	const char *out = cap_close(&c);
	assert_non_null(strstr(out, "\033[32mDONE 0.2s"));
	assert_non_null(strstr(out, "\033[31mERROR 1.5s"));
	/* the running line becomes the DONE line; output scrolls above the
	 * running line, which then becomes the ERROR line */
	cleanup_free char *scr = screen(out);
	assert_string_equal(scr, "#1 [s 1/2] RUN quiet DONE 0.2s\n"
				 "#2 hello\n"
				 "#2 [s 2/2] RUN loud ERROR 1.5s\n");
	cap_free(&c);
}

/* Stages built side by side: every running step has its line at the
 * bottom; output and finished steps scroll above them. */
static void test_tty_several_running_steps(void **state)
{
	(void)state;
	capture c;
	cap_open(&c, IB_PROGRESS_TTY, false);
	ib_progress_step_start(c.p, 1, "[a 1/1] RUN make");
	ib_progress_step_start(c.p, 2, "[b 1/1] RUN test");
	ib_progress_output(c.p, 1, "cc main.c", 9);
	ib_progress_bytes(c.p, 2, "layer", 2048, 0);
	fflush(c.f);
	cleanup_free char *mid = screen(c.buf);
	assert_non_null(strstr(mid, "#1 cc main.c\n#1 [a 1/1] RUN make 0."));
	assert_non_null(strstr(mid, "s\n#2 [b 1/1] RUN test 0."));
	assert_non_null(strstr(mid, "s 2.05kB\n"));
	ib_progress_step_done(c.p, 2, 1.0);
	ib_progress_step_done(c.p, 1, 2.0);
	const char *out = cap_close(&c);
	cleanup_free char *scr = screen(out);
	assert_string_equal(scr, "#1 cc main.c\n"
				 "#2 [b 1/1] RUN test DONE 1.0s\n"
				 "#1 [a 1/1] RUN make DONE 2.0s\n");
	cap_free(&c);
}

static void test_auto_on_tty_is_tty(void **state)
{
	(void)state;
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
		if (master >= 0)
			close(master);
		print_message("no pseudo-terminal available: skipping\n");
		skip();
	}
	const char *name = ptsname(master);
	assert_non_null(name);
	int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(slave >= 0);
	FILE *f = fdopen(slave, "w");
	assert_non_null(f);

	cleanup_free char *saved_ci = getenv("CI") ? xstrdup(getenv("CI")) : NULL;
	unsetenv("CI");
	ib_progress *tty = ib_progress_new(IB_PROGRESS_AUTO, false, f);
	setenv("CI", "true", 1);
	ib_progress *ci = ib_progress_new(IB_PROGRESS_AUTO, false, f);
	if (saved_ci)
		setenv("CI", saved_ci, 1);
	else
		unsetenv("CI");

	ib_progress_step_cached(tty, 1, "A");
	ib_progress_step_cached(ci, 2, "B");
	ib_progress_free(tty);
	ib_progress_free(ci);
	fflush(f);

	/* read what is pending on the master side, without blocking */
	assert_int_equal(fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK), 0);
	char buf[512] = {0};
	size_t len = 0;
	for (int tries = 0; tries < 200 && !strstr(buf, "B CACHED"); tries++) {
		ssize_t n = read(master, buf + len, sizeof(buf) - 1 - len);
		if (n > 0)
			len += (size_t)n;
		else
			usleep(10000);
		buf[len] = '\0';
	}
	fclose(f);
	close(master);
	/* on a terminal: colours; with CI set: plain even on a terminal */
	assert_non_null(strstr(buf, "\033[36m#1 A CACHED\033[0m"));
	const char *b = strstr(buf, "#2 B CACHED");
	assert_non_null(b);
	assert_true(b == buf || b[-1] == '\n');
	assert_null(strchr(b, '\033'));
}

/* ---- transfer printer (pull/push) ---- */

static void test_printer_plain_lines_only_for_finished_blobs(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	ib_transfer_printer *p = ib_transfer_printer_new(f, "pulling", false);
	const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	ib_transfer_printer_progress(d, 10, 12300000, p);
	ib_transfer_printer_event(d, "done", 12300000, p);
	ib_transfer_printer_event(d, "exists", 5, p);
	ib_transfer_printer_free(p);
	fclose(f);
	assert_string_equal(buf, "pulling sha256:0123456789ab 12.3MB done\n"
				 "pulling sha256:0123456789ab 5B already exists\n");
	free(buf);
}

static void test_printer_quiet_prints_nothing(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ib_transfer_printer *p = ib_transfer_printer_new(f, "pushing", true);
	ib_transfer_printer_event("sha256:00", "done", 1, p);
	ib_transfer_printer_free(p);
	fclose(f);
	assert_int_equal(len, 0);
	free(buf);
}

/* A build's transfers print as `pull`/`push` print them (plain), or as
 * JSON events with a time (json), or not at all (quiet). */
static void test_printer_for_build_progress(void **state)
{
	(void)state;
	const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	capture c;
	cap_open(&c, IB_PROGRESS_PLAIN, false);
	ib_transfer_printer *p = ib_transfer_printer_for(c.p, "pushing");
	ib_transfer_printer_progress(d, 10, 12300000, p);
	ib_transfer_printer_event(d, "done", 12300000, p);
	ib_transfer_printer_free(p);
	assert_string_equal(cap_close(&c), "pushing sha256:0123456789ab 12.3MB done\n");
	cap_free(&c);

	cap_open(&c, IB_PROGRESS_JSON, false);
	p = ib_transfer_printer_for(c.p, "pulling");
	ib_transfer_printer_progress(d, 10, 20, p);
	ib_transfer_printer_event(d, "exists", 20, p);
	ib_transfer_printer_free(p);
	json_t *ev = parse_lines(cap_close(&c));
	assert_int_equal(json_array_size(ev), 1);
	json_t *e = json_array_get(ev, 0);
	assert_string_equal(tu_json_str(e, "event"), "transfer");
	assert_string_equal(tu_json_str(e, "verb"), "pulling");
	assert_string_equal(tu_json_str(e, "what"), d);
	assert_string_equal(tu_json_str(e, "state"), "exists");
	assert_int_equal(json_integer_value(json_object_get(e, "size")), 20);
	assert_non_null(tu_json_str(e, "time"));
	json_decref(ev);
	cap_free(&c);

	cap_open(&c, IB_PROGRESS_PLAIN, true);
	p = ib_transfer_printer_for(c.p, "pushing");
	ib_transfer_printer_event(d, "done", 1, p);
	ib_transfer_printer_free(p);
	assert_string_equal(cap_close(&c), "");
	cap_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mode_parse_accepts_names),
	    cmocka_unit_test(test_mode_parse_rejects_others),
	    cmocka_unit_test(test_plain_step_lines),
	    cmocka_unit_test(test_plain_output_lines_prefixed),
	    cmocka_unit_test(test_relay_replayed_as_if_local),
	    cmocka_unit_test(test_plain_bytes_only_on_completion),
	    cmocka_unit_test(test_plain_info_and_no_escapes),
	    cmocka_unit_test(test_auto_on_non_tty_is_plain),
	    cmocka_unit_test(test_json_one_object_per_line),
	    cmocka_unit_test(test_json_output_escaping),
	    cmocka_unit_test(test_json_bytes_throttled_but_final_always_sent),
	    cmocka_unit_test(test_quiet_prints_nothing),
	    cmocka_unit_test(test_tty_colours_and_clears_status_line),
	    cmocka_unit_test(test_tty_running_line_is_rewritten_in_place),
	    cmocka_unit_test(test_tty_several_running_steps),
	    cmocka_unit_test(test_auto_on_tty_is_tty),
	    cmocka_unit_test(test_printer_plain_lines_only_for_finished_blobs),
	    cmocka_unit_test(test_printer_quiet_prints_nothing),
	    cmocka_unit_test(test_printer_for_build_progress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
