/* Helpers shared by the unit tests.
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
void tu_http_stop(tu_http *h);

/* A fresh temporary directory (caller frees; remove with ib_rm_rf). */
char *tu_tmpdir(void);

#endif
