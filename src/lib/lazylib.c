/* libcurl and libarchive, opened on first call instead of at start.
 *
 * With their dependencies (TLS, ssh, ldap, kerberos, libxml2, ICU, C++
 * runtime ...) they are about 35 of the 45 shared objects the loader maps
 * and relocates before main: several milliseconds of every command, of
 * which a cached build or `imgbuild images` uses nothing.  The imgbuild
 * binary is therefore not linked against them; each function of theirs
 * that src/ calls is defined here and forwards to the library, dlopen'ed
 * by soname (found at configure time) on the first call.  A function
 * newly used in src/ needs its line here: the link of imgbuild fails
 * until it has one.  A library that cannot be loaded ends the process as
 * the dynamic loader would, with a message and status 127. */
#define CURL_DISABLE_TYPECHECK /* the wrappers define the functions the macros wrap */
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct lazy_lib {
	const char *soname;
	pthread_once_t once;
	void *handle;
} lazy_lib;

static lazy_lib curl_lib = {IB_LIBCURL_SONAME, PTHREAD_ONCE_INIT, NULL};
static lazy_lib archive_lib = {IB_LIBARCHIVE_SONAME, PTHREAD_ONCE_INIT, NULL};

static void lazy_fail(const char *what)
{
	fprintf(stderr, "imgbuild: %s\n", what ? what : "cannot load a library");
	exit(127);
}

static void open_curl(void)
{
	curl_lib.handle = dlopen(curl_lib.soname, RTLD_NOW | RTLD_LOCAL);
}

static void open_archive(void)
{
	archive_lib.handle = dlopen(archive_lib.soname, RTLD_NOW | RTLD_LOCAL);
}

static void *lazy_sym(lazy_lib *l, void (*open_fn)(void), const char *name)
{
	pthread_once(&l->once, open_fn);
	if (!l->handle)
		lazy_fail(dlerror());
	void *p = dlsym(l->handle, name);
	if (!p)
		lazy_fail(dlerror());
	return p;
}

/* One function: its pointer resolved once (a race only resolves it twice). */
#define LAZY_FN(lib, ret, name, params)                                                            \
	static ret(*lazy_##name(void)) params                                                      \
	{                                                                                          \
		static ret(*fn) params;                                                            \
		ret(*f) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                           \
		if (!f) {                                                                          \
			f = (ret(*) params)lazy_sym(&lib##_lib, open_##lib, #name);                \
			__atomic_store_n(&fn, f, __ATOMIC_RELEASE);                                \
		}                                                                                  \
		return f;                                                                          \
	}
#define LAZY(lib, ret, name, params, args)                                                         \
	LAZY_FN(lib, ret, name, params)                                                            \
	ret name params                                                                            \
	{                                                                                          \
		return lazy_##name() args;                                                         \
	}
#define LAZY_VOID(lib, name, params, args)                                                         \
	LAZY_FN(lib, void, name, params)                                                           \
	void name params                                                                           \
	{                                                                                          \
		lazy_##name() args;                                                                \
	}

/* ---- libcurl ---- */

LAZY(curl, CURLcode, curl_global_init, (long flags), (flags))
LAZY(curl, CURL *, curl_easy_init, (void), ())
LAZY_VOID(curl, curl_easy_cleanup, (CURL * h), (h))
LAZY_VOID(curl, curl_easy_reset, (CURL * h), (h))
LAZY(curl, CURLcode, curl_easy_perform, (CURL * h), (h))
LAZY(curl, const char *, curl_easy_strerror, (CURLcode code), (code))
LAZY(curl, char *, curl_easy_escape, (CURL * h, const char *s, int len), (h, s, len))
LAZY_VOID(curl, curl_free, (void *p), (p))
LAZY(curl, time_t, curl_getdate, (const char *p, const time_t *unused), (p, unused))
LAZY(curl, struct curl_slist *, curl_slist_append, (struct curl_slist * l, const char *s), (l, s))
LAZY_VOID(curl, curl_slist_free_all, (struct curl_slist * l), (l))
LAZY(curl, CURLU *, curl_url, (void), ())
LAZY_VOID(curl, curl_url_cleanup, (CURLU * u), (u))
LAZY(curl, CURLUcode, curl_url_get, (CURLU * u, CURLUPart what, char **part, unsigned int flags),
     (u, what, part, flags))
LAZY(curl, CURLUcode, curl_url_set,
     (CURLU * u, CURLUPart what, const char *part, unsigned int flags), (u, what, part, flags))
LAZY_FN(curl, CURLcode, curl_easy_setopt, (CURL * h, CURLoption opt, ...))
LAZY_FN(curl, CURLcode, curl_easy_getinfo, (CURL * h, CURLINFO info, ...))

/* The option number says the argument's type, as libcurl itself reads it. */
CURLcode curl_easy_setopt(CURL *h, CURLoption opt, ...)
{
	CURLcode (*f)(CURL *, CURLoption, ...) = lazy_curl_easy_setopt();
	va_list ap;
	va_start(ap, opt);
	CURLcode rc;
	if (opt < CURLOPTTYPE_OBJECTPOINT)
		rc = f(h, opt, va_arg(ap, long));
	else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
		rc = f(h, opt, va_arg(ap, void *));
	else if (opt < CURLOPTTYPE_OFF_T)
		rc = f(h, opt, va_arg(ap, void (*)(void)));
	else if (opt < CURLOPTTYPE_BLOB)
		rc = f(h, opt, va_arg(ap, curl_off_t));
	else
		rc = f(h, opt, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

/* Every kind of CURLINFO takes a pointer to the result. */
CURLcode curl_easy_getinfo(CURL *h, CURLINFO info, ...)
{
	CURLcode (*f)(CURL *, CURLINFO, ...) = lazy_curl_easy_getinfo();
	va_list ap;
	va_start(ap, info);
	CURLcode rc = f(h, info, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

/* ---- libarchive ---- */

typedef struct archive A;
typedef struct archive_entry E;

LAZY(archive, A *, archive_read_new, (void), ())
LAZY(archive, A *, archive_read_disk_new, (void), ())
LAZY(archive, A *, archive_write_new, (void), ())
LAZY(archive, int, archive_read_free, (A * a), (a))
LAZY(archive, int, archive_write_free, (A * a), (a))
LAZY(archive, int, archive_write_close, (A * a), (a))
LAZY(archive, int, archive_errno, (A * a), (a))
LAZY(archive, const char *, archive_error_string, (A * a), (a))
LAZY(archive, la_int64_t, archive_filter_bytes, (A * a, int n), (a, n))
LAZY(archive, la_ssize_t, archive_read_data, (A * a, void *buf, size_t n), (a, buf, n))
LAZY(archive, int, archive_read_data_block,
     (A * a, const void **buf, size_t *size, la_int64_t *offset), (a, buf, size, offset))
LAZY(archive, int, archive_read_disk_descend, (A * a), (a))
LAZY(archive, int, archive_read_disk_open, (A * a, const char *path), (a, path))
LAZY(archive, int, archive_read_disk_set_behavior, (A * a, int flags), (a, flags))
LAZY(archive, int, archive_read_disk_set_standard_lookup, (A * a), (a))
LAZY(archive, int, archive_read_next_header, (A * a, E **e), (a, e))
LAZY(archive, int, archive_read_next_header2, (A * a, E *e), (a, e))
LAZY(archive, int, archive_read_open,
     (A * a, void *data, archive_open_callback *o, archive_read_callback *r,
      archive_close_callback *c),
     (a, data, o, r, c))
LAZY(archive, int, archive_read_open_fd, (A * a, int fd, size_t block), (a, fd, block))
LAZY(archive, int, archive_read_open_filename, (A * a, const char *file, size_t block),
     (a, file, block))
LAZY(archive, int, archive_read_support_filter_all, (A * a), (a))
LAZY(archive, int, archive_read_support_filter_bzip2, (A * a), (a))
LAZY(archive, int, archive_read_support_filter_gzip, (A * a), (a))
LAZY(archive, int, archive_read_support_filter_xz, (A * a), (a))
LAZY(archive, int, archive_read_support_filter_zstd, (A * a), (a))
LAZY(archive, int, archive_read_support_format_empty, (A * a), (a))
LAZY(archive, int, archive_read_support_format_gnutar, (A * a), (a))
LAZY(archive, int, archive_read_support_format_raw, (A * a), (a))
LAZY(archive, int, archive_read_support_format_tar, (A * a), (a))
LAZY(archive, int, archive_write_add_filter_none, (A * a), (a))
LAZY(archive, la_ssize_t, archive_write_data, (A * a, const void *buf, size_t n), (a, buf, n))
LAZY(archive, int, archive_write_finish_entry, (A * a), (a))
LAZY(archive, int, archive_write_header, (A * a, E *e), (a, e))
LAZY(archive, int, archive_write_open,
     (A * a, void *data, archive_open_callback *o, archive_write_callback *w,
      archive_close_callback *c),
     (a, data, o, w, c))
LAZY(archive, int, archive_write_open_fd, (A * a, int fd), (a, fd))
LAZY(archive, int, archive_write_open_filename, (A * a, const char *file), (a, file))
LAZY(archive, int, archive_write_set_bytes_in_last_block, (A * a, int n), (a, n))
LAZY(archive, int, archive_write_set_format_pax_restricted, (A * a), (a))
LAZY(archive, int, archive_write_set_options, (A * a, const char *opts), (a, opts))
LAZY_FN(archive, void, archive_set_error, (A * a, int err, const char *fmt, ...))

/* Formatted here: a va_list cannot be passed on to a variadic function. */
void archive_set_error(A *a, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lazy_archive_set_error()(a, err, "%s", msg);
}

LAZY(archive, E *, archive_entry_new, (void), ())
LAZY_VOID(archive, archive_entry_free, (E * e), (e))
LAZY(archive, time_t, archive_entry_atime, (E * e), (e))
LAZY(archive, int, archive_entry_atime_is_set, (E * e), (e))
LAZY(archive, long, archive_entry_atime_nsec, (E * e), (e))
LAZY(archive, time_t, archive_entry_mtime, (E * e), (e))
LAZY(archive, int, archive_entry_mtime_is_set, (E * e), (e))
LAZY(archive, long, archive_entry_mtime_nsec, (E * e), (e))
LAZY(archive, __LA_MODE_T, archive_entry_filetype, (E * e), (e))
LAZY(archive, __LA_MODE_T, archive_entry_mode, (E * e), (e))
LAZY(archive, __LA_MODE_T, archive_entry_perm, (E * e), (e))
LAZY(archive, la_int64_t, archive_entry_gid, (E * e), (e))
LAZY(archive, la_int64_t, archive_entry_uid, (E * e), (e))
LAZY(archive, la_int64_t, archive_entry_size, (E * e), (e))
LAZY(archive, int, archive_entry_size_is_set, (E * e), (e))
LAZY(archive, dev_t, archive_entry_rdev, (E * e), (e))
LAZY(archive, dev_t, archive_entry_rdevmajor, (E * e), (e))
LAZY(archive, dev_t, archive_entry_rdevminor, (E * e), (e))
LAZY(archive, const char *, archive_entry_hardlink, (E * e), (e))
LAZY(archive, const char *, archive_entry_pathname, (E * e), (e))
LAZY(archive, const char *, archive_entry_sourcepath, (E * e), (e))
LAZY(archive, const char *, archive_entry_symlink, (E * e), (e))
LAZY_VOID(archive, archive_entry_copy_hardlink, (E * e, const char *s), (e, s))
LAZY_VOID(archive, archive_entry_copy_pathname, (E * e, const char *s), (e, s))
LAZY_VOID(archive, archive_entry_copy_symlink, (E * e, const char *s), (e, s))
LAZY_VOID(archive, archive_entry_set_pathname, (E * e, const char *s), (e, s))
LAZY_VOID(archive, archive_entry_set_filetype, (E * e, unsigned int t), (e, t))
LAZY_VOID(archive, archive_entry_set_perm, (E * e, __LA_MODE_T m), (e, m))
LAZY_VOID(archive, archive_entry_set_gid, (E * e, la_int64_t v), (e, v))
LAZY_VOID(archive, archive_entry_set_uid, (E * e, la_int64_t v), (e, v))
LAZY_VOID(archive, archive_entry_set_size, (E * e, la_int64_t v), (e, v))
LAZY_VOID(archive, archive_entry_set_mtime, (E * e, time_t t, long ns), (e, t, ns))
LAZY_VOID(archive, archive_entry_set_rdevmajor, (E * e, dev_t v), (e, v))
LAZY_VOID(archive, archive_entry_set_rdevminor, (E * e, dev_t v), (e, v))
LAZY_VOID(archive, archive_entry_xattr_add_entry,
	  (E * e, const char *name, const void *value, size_t size), (e, name, value, size))
LAZY(archive, int, archive_entry_xattr_next,
     (E * e, const char **name, const void **value, size_t *size), (e, name, value, size))
LAZY(archive, int, archive_entry_xattr_reset, (E * e), (e))
