/* Build output (SPEC §7): a live view on a TTY, plain lines elsewhere, one
 * JSON event per line with --progress json.  All output goes to one FILE
 * (stderr by default) so that stdout carries only the result (the digest). */
#ifndef IB_PROGRESS_H
#define IB_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
	IB_PROGRESS_AUTO,
	IB_PROGRESS_TTY,
	IB_PROGRESS_PLAIN,
	IB_PROGRESS_JSON,
} ib_progress_mode;

typedef struct ib_progress ib_progress;

/* Parse "auto|tty|plain|json"; returns -1 on anything else. */
int ib_progress_mode_parse(const char *s, ib_progress_mode *out);

/* out is borrowed (not closed). quiet suppresses everything but errors. */
ib_progress *ib_progress_new(ib_progress_mode mode, bool quiet, FILE *out);
void ib_progress_free(ib_progress *p);

/* A step: id is the global step number (1-based), label like
 * "[final 2/5] RUN make".  State changes are printed as they happen. */
void ib_progress_step_start(ib_progress *p, int id, const char *label);
void ib_progress_step_cached(ib_progress *p, int id, const char *label);
void ib_progress_step_done(ib_progress *p, int id, double seconds);
void ib_progress_step_failed(ib_progress *p, int id, double seconds);
/* One line of a step's own output (no newline). */
void ib_progress_output(ib_progress *p, int id, const char *line, size_t len);
/* Byte progress for a transfer or a layer commit; total may be 0 (unknown). */
void ib_progress_bytes(ib_progress *p, int id, const char *what, uint64_t done, uint64_t total);
/* Adapter with the registry's ib_transfer_progress_fn signature, for
 * pulls and pushes shown as part of a build: payload = the ib_progress. */
void ib_progress_transfer_cb(const char *what, uint64_t done, uint64_t total, void *payload);

/* --debug: lines "debug: [SECONDS] MSG" (seconds since the call to
 * ib_progress_set_debug; a JSON "debug" event in json mode), printed even
 * when quiet; nothing unless turned on. */
void ib_progress_set_debug(ib_progress *p, bool on);
bool ib_progress_debugging(const ib_progress *p);
void ib_progress_debug(ib_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress of a build worker (a stage built in a process of its own): its
 * events as JSON lines on out, replayed by the parent's ib_progress with
 * ib_progress_replay, so one view shows every stage.  Debug output is on
 * when it is on in parent. */
ib_progress *ib_progress_new_relay(const ib_progress *parent, FILE *out);
/* Show one event line of a relay as if it happened here; a line that is
 * not an event is printed as it is. */
void ib_progress_replay(ib_progress *p, const char *line);

/* Hold (true) or release the lock every write of the view takes (the TTY
 * ticker thread's too): held around a fork, so that the child cannot
 * inherit stdio locked by that thread. */
void ib_progress_hold(ib_progress *p, bool hold);

/* A free-form informational line. */
void ib_progress_info(ib_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- transfers (pull/push commands) ----
 * Several blobs move at once, so this view is one line per blob rather than
 * one per step. */
typedef struct ib_transfer_printer ib_transfer_printer;
/* verb: "pulling" / "pushing".  On a TTY (isatty(fileno(f))) one live line
 * per blob with bytes and rate, redrawn in place; elsewhere one plain line
 * per finished blob.  quiet: print nothing. */
ib_transfer_printer *ib_transfer_printer_new(FILE *f, const char *verb, bool quiet);
/* The same printer for a transfer inside a build: on prog's stream, plain
 * lines for --progress plain, JSON "transfer" events for --progress json
 * ({"event":"transfer","verb","what","state","size","time"}). */
ib_transfer_printer *ib_transfer_printer_for(ib_progress *prog, const char *verb);
/* Finish the live view. Safe on NULL. */
void ib_transfer_printer_free(ib_transfer_printer *p);
/* Use as o->progress / o->event with o->payload = the printer. */
void ib_transfer_printer_progress(const char *what, uint64_t done, uint64_t total, void *payload);
void ib_transfer_printer_event(const char *what, const char *state, uint64_t size, void *payload);

#endif
