/* Helpers shared by the unit tests.
 *
 * Files and directories: a temp dir, a store in it, writing, reading,
 * counting, touching and removing files, each failing the test (cmocka)
 * when the file system says no.  tu_must: an ib_error-returning call that
 * must succeed.  tu_decompress: a layer blob back to its tar, with zlib and
 * libzstd (not the code under test).
 *
 * tu_http: a small HTTP/1.1 server on 127.0.0.1 (ephemeral port, one
 * thread, one request per connection) for testing the registry client
 * without a registry.  A test handler sees each parsed request and fills
 * in the answer: status, header lines, body, and faults (close the
 * connection after N body bytes, or without answering).  Range requests
 * ("bytes=N-") are honoured when asked.  Every request is logged as
 * "METHOD TARGET STATUS" for assertions. */
#ifndef IB_TESTUTIL_H
#define IB_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "error.h"
#include "oci.h"
#include "store.h"

typedef struct tu_http_request {
	char method[16];
	char target[4096]; /* path and query as sent */
	char *headers;	   /* "Name: value\r\n" lines */
	char *body;
	size_t body_len;
} tu_http_request;

/* Value of header name (case-insensitive), or NULL.  Caller frees. */
char *tu_http_header(const tu_http_request *r, const char *name);

typedef struct tu_http_response {
	int status;    /* 200 when the handler leaves 0 */
	char *headers; /* extra "Name: value\r\n" lines (owned; tu_http_add_header) */
	char *body;    /* owned */
	size_t body_len;
	long drop_after; /* >= 0: close after this many body bytes */
	bool hang_up;	 /* close without answering */
	bool ranges;	 /* answer "Range: bytes=N-" with 206 and the tail */
} tu_http_response;

void tu_http_add_header(tu_http_response *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Set the body to a copy of len bytes of data (len (size_t)-1 = strlen). */
void tu_http_set_body(tu_http_response *r, const void *data, size_t len);

/* Called on the server thread, one request at a time. */
typedef void (*tu_http_handler)(const tu_http_request *req, tu_http_response *resp, void *payload);

typedef struct tu_http tu_http;
/* Start a server; aborts the test program when it cannot. */
tu_http *tu_http_start(tu_http_handler handler, void *payload);
/* "127.0.0.1:PORT" (borrowed). */
const char *tu_http_host(const tu_http *h);
/* The request log so far, "METHOD TARGET STATUS\n" per request (caller
 * frees). */
char *tu_http_log(tu_http *h);
/* Number of requests answered so far. */
size_t tu_http_count(tu_http *h);
/* From a handler: whether another connection waits to be accepted within
 * timeout_ms (a client sending its requests side by side). */
bool tu_http_waiting(tu_http *h, int timeout_ms);
void tu_http_stop(tu_http *h);

/* A fresh temporary directory under $TMPDIR or /tmp (caller frees; remove
 * with tu_rm_rf). */
char *tu_tmpdir(void);
/* Remove path and everything below it (a missing path is fine). */
void tu_rm_rf(const char *path);
/* The store at root (created when missing); ib_store_free it. */
ib_store *tu_store_open(const char *root);

/* Fail the test with what and the error's message when r < 0; after a
 * success *err must be unset. */
void tu_must(int r, ib_error **err, const char *what);

/* Create or truncate path (mode 0644 when created) and write len bytes. */
void tu_write_file(const char *path, const void *data, size_t len);
/* tu_write_file of a string. */
void tu_write_text(const char *path, const char *text);
/* Write text to dir/rel, parents created 0755, as a new file (a new inode
 * each time) of mode 0644.  Returns the path; caller frees. */
char *tu_write_under(const char *dir, const char *rel, const char *text);
/* The whole file (at most 1 MiB), NUL-terminated.  Caller frees. */
char *tu_read_file(const char *path);
/* Entries of dir, "." and ".." not counted. */
size_t tu_count_entries(const char *dir);
/* Set atime and mtime of path (a symlink itself, not followed). */
void tu_set_mtime(const char *path, time_t sec, long nsec);
/* CLOCK_MONOTONIC in seconds. */
double tu_now(void);

/* Member key of object o, failing the test unless it is a string / an
 * integer. */
const char *tu_json_str(json_t *o, const char *key);
json_int_t tu_json_int(json_t *o, const char *key);

/* in (n bytes, compressed with c) decompressed; *out_len gets its size.
 * gzip may have several members.  Fails the test on a corrupt stream or
 * trailing bytes.  Caller frees. */
unsigned char *tu_decompress(ib_compression c, const unsigned char *in, size_t n, size_t *out_len);

#endif
