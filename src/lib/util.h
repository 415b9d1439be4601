/* Small shared helpers: cleanup attributes, aborting allocators, a capped
 * dynamic buffer and file utilities.  Everything here is used by several
 * modules; module-specific helpers stay static in their module. */
#ifndef IB_UTIL_H
#define IB_UTIL_H

#include <dirent.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "error.h"

/* ---- cleanup attributes (crun/bubblewrap style) ---- */
void ib_cleanup_freep(void *p);
void ib_cleanup_closep(int *fd);
void ib_cleanup_fclosep(FILE **f);
void ib_cleanup_closedirp(DIR **d);
void ib_cleanup_strvp(char ***v);

#define cleanup_free __attribute__((cleanup(ib_cleanup_freep)))
#define cleanup_close __attribute__((cleanup(ib_cleanup_closep)))
#define cleanup_fclose __attribute__((cleanup(ib_cleanup_fclosep)))
#define cleanup_dir __attribute__((cleanup(ib_cleanup_closedirp)))
#define cleanup_strv __attribute__((cleanup(ib_cleanup_strvp)))

/* Return *pp and set it to NULL: hands ownership out of a cleanup scope. */
static inline void *ib_steal_pointer(void *pp)
{
	void **p = (void **)pp;
	void *r = *p;
	*p = NULL;
	return r;
}
#define steal_pointer(pp) ib_steal_pointer(pp)

static inline int ib_steal_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}

/* ---- allocators: abort on OOM ---- */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* NULL-terminated string vectors. */
size_t ib_strv_len(char *const *v);
void ib_strv_free(char **v);
char **ib_strv_dup(char *const *v);
/* Append a copy of s to *v (growing it); *v may be NULL. */
void ib_strv_push(char ***v, const char *s);

/* ---- capped dynamic buffer (curl dynbuf style) ---- */
typedef struct ib_buf {
	char *data; /* always NUL-terminated when non-NULL */
	size_t len;
	size_t alloc;
	size_t cap; /* hard limit on len; 0 = unlimited */
} ib_buf;

#define IB_BUF_INIT                                                                                \
	{                                                                                          \
		NULL, 0, 0, 0                                                                      \
	}
void ib_buf_init(ib_buf *b, size_t cap);
/* Returns IB_ETOOLARGE (and leaves b unchanged) when len would exceed cap. */
int ib_buf_append(ib_buf *b, const void *data, size_t len);
int ib_buf_appendf(ib_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ib_buf_reset(ib_buf *b);
void ib_buf_free(ib_buf *b);
/* Hand the data out (caller frees); b is reset. Never returns NULL. */
char *ib_buf_steal(ib_buf *b, size_t *len_out);

/* ---- files ---- */
/* Read a whole file (at most `cap` bytes, else IB_ETOOLARGE). *out is
 * NUL-terminated and owned by the caller. */
int ib_read_file(const char *path, size_t cap, char **out, size_t *len_out, ib_error **err);
int ib_read_fd(int fd, size_t cap, char **out, size_t *len_out, ib_error **err);
/* write(2) all of buf, retrying on EINTR / short writes. */
int ib_write_all(int fd, const void *buf, size_t len, ib_error **err);
/* Write to PATH.tmp.PID, fsync, rename over path, fsync the directory. */
int ib_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode,
			 ib_error **err);
/* mkdir -p with mode for created components. */
int ib_mkdir_p(const char *path, mode_t mode, ib_error **err);
/* rm -rf without following symlinks; a missing path is not an error. */
int ib_rm_rf(const char *path, ib_error **err);
int ib_fsync_dir(const char *dir, ib_error **err);
/* Join two path parts with exactly one '/'. */
char *ib_path_join(const char *a, const char *b);
bool ib_file_exists(const char *path);

/* ---- locks: flock(2) on lock files, released on close ---- */
/* flock(fd, op), retried on EINTR.  0, or -1 with errno. */
int ib_flock(int fd, int op);
/* Open (creating, mode 0644) the lock file path and flock it with op
 * (LOCK_SH or LOCK_EX), waiting.  Returns the fd that holds the lock (close
 * it to unlock) or a negative error. */
int ib_lock_file(const char *path, int op, ib_error **err);

/* Hex encode n bytes into out (2n+1 bytes). */
void ib_hex_encode(char *out, const unsigned char *in, size_t n);

/* Human-readable size ("12.3MB"), docker style (powers of 1000). */
void ib_format_size(char *out, size_t outlen, uint64_t bytes);

/* Parse an unsigned decimal; rejects trailing junk and overflow. */
int ib_parse_u64(const char *s, uint64_t *out);
/* "123", "10k", "500MB", "1.5GB", "2GiB" -> bytes: kB/MB/GB are powers of
 * 1000 as docker prints sizes, KiB/MiB/GiB powers of 1024; with binary,
 * k/m/g (and kb/mb/gb) are powers of 1024 too, as docker's --memory reads
 * them.  -1 when s is not such a size. */
int ib_parse_size(const char *s, bool binary, uint64_t *out);

/* Block SIGPIPE for the calling thread (the old mask goes to *old), so a
 * write to a pipe whose reader left fails with EPIPE instead of killing
 * the process; ib_sigpipe_restore consumes a SIGPIPE left pending by such a
 * write and restores *old. */
void ib_sigpipe_block(sigset_t *old);
void ib_sigpipe_restore(const sigset_t *old);
/* A build timestamp in seconds since the epoch (SOURCE_DATE_EPOCH,
 * --source-date-epoch): digits only, at most INT64_MAX / 2.  s NULL:
 * $SOURCE_DATE_EPOCH; that or s empty or unset: 0.  IB_EINVALID
 * naming the value (and the variable when it came from there). */
int ib_parse_source_date_epoch(const char *s, int64_t *out, ib_error **err);
/* "2024-05-01T12:00:00Z" (RFC 3339, UTC) for seconds since the epoch. */
void ib_format_rfc3339(char *out, size_t len, int64_t epoch);

/* Start fn(arg) in a detached thread and return once it runs (0, or an
 * errno value): a fork right after cannot catch the thread inside its own
 * start-up (where the sanitizers' allocators hold locks a child would
 * inherit taken). */
int ib_thread_start_detached(void *(*fn)(void *), void *arg);

/* Send sig to every child of every thread of this process, except those
 * for which skip (may be NULL) is true. */
void ib_kill_children(int sig, bool (*skip)(pid_t pid));

#endif
