/* The copy step: sources from the context, a stage or an image, the
 * destination resolved inside the image, owners from the image's passwd,
 * the cache key from contents and metadata, the layer written, and its
 * unpacked copy laid out directly. */
#include "builder_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "compress.h"
#include "digest.h"
#include "passwd.h"
#include "path.h"
#include "pathglob.h"
#include "plan.h"
#include "progress.h"
#include "unpack.h"
#include "util.h"

#define PASSWD_READ_MAX ((size_t)16 << 20) /* an image's /etc/passwd or /etc/group */

/* The lstat fields a copy uses: the layer writer, the unpacked copy, the
 * stat cache and the key need no more, and a struct stat is twice the size
 * (a cached build lists the whole context every time). */
typedef struct copy_stat {
	uint64_t dev, ino, rdev;
	int64_t size, mtime, ctime;
	uint32_t mtime_nsec, ctime_nsec;
	uint32_t mode, uid, gid, nlink; /* nlink: saturated (only >= 2 matters) */
} copy_stat;

static void copy_stat_set(copy_stat *o, const struct stat *st)
{
	*o = (copy_stat){
	    .dev = (uint64_t)st->st_dev,
	    .ino = (uint64_t)st->st_ino,
	    .rdev = (uint64_t)st->st_rdev,
	    .size = (int64_t)st->st_size,
	    .mtime = (int64_t)st->st_mtim.tv_sec,
	    .ctime = (int64_t)st->st_ctim.tv_sec,
	    .mtime_nsec = (uint32_t)st->st_mtim.tv_nsec,
	    .ctime_nsec = (uint32_t)st->st_ctim.tv_nsec,
	    .mode = (uint32_t)st->st_mode,
	    .uid = (uint32_t)st->st_uid,
	    .gid = (uint32_t)st->st_gid,
	    .nlink = st->st_nlink > UINT32_MAX ? UINT32_MAX : (uint32_t)st->st_nlink,
	};
}

/* The struct stat the stat cache and the unpacker take (other fields 0). */
static void copy_stat_get(const copy_stat *s, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = (dev_t)s->dev;
	st->st_ino = (ino_t)s->ino;
	st->st_rdev = (dev_t)s->rdev;
	st->st_size = (off_t)s->size;
	st->st_mtim.tv_sec = (time_t)s->mtime;
	st->st_mtim.tv_nsec = (long)s->mtime_nsec;
	st->st_ctim.tv_sec = (time_t)s->ctime;
	st->st_ctim.tv_nsec = (long)s->ctime_nsec;
	st->st_mode = (mode_t)s->mode;
	st->st_uid = (uid_t)s->uid;
	st->st_gid = (gid_t)s->gid;
	st->st_nlink = (nlink_t)s->nlink;
}

typedef struct copy_item {
	char *dest; /* archive path, relative ("usr/bin/x") */
	char *host; /* absolute host path */
	char *rel;  /* path relative to the source root (for --explain) */
	copy_stat st;
	char content[IB_DIGEST_BUFLEN]; /* content digest, link target digest, ... */
} copy_item;

/* Items and their paths are carved from chunks, one arena per walking
 * thread: a context of thousands of files costs a few dozen allocations,
 * and an item never moves once made (lists hold pointers to items, so the
 * threads' lists are joined by copying pointers). */
#define COPY_CHUNK ((size_t)64 << 10)

typedef struct copy_chunk {
	struct copy_chunk *next;
	max_align_t data[];
} copy_chunk;

typedef struct copy_arena {
	copy_chunk *chunks; /* the one allocated from first */
	char *pos;
	size_t left;
} copy_arena;

static void *arena_alloc(copy_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n > a->left) {
		size_t sz =
		    n > COPY_CHUNK - sizeof(copy_chunk) ? n : COPY_CHUNK - sizeof(copy_chunk);
		copy_chunk *c = xmalloc(sizeof(copy_chunk) + sz);
		c->next = a->chunks;
		a->chunks = c;
		a->pos = (char *)c->data;
		a->left = sz;
	}
	void *p = a->pos;
	a->pos += n;
	a->left -= n;
	return p;
}

static char *arena_strdup(copy_arena *a, const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(arena_alloc(a, n), s, n);
}

/* from's chunks become to's (from is left empty) */
static void arena_adopt(copy_arena *to, copy_arena *from)
{
	if (!from->chunks)
		return;
	if (!to->chunks) {
		*to = *from;
	} else {
		copy_chunk *tail = from->chunks;
		while (tail->next)
			tail = tail->next;
		tail->next = to->chunks->next;
		to->chunks->next = from->chunks;
	}
	*from = (copy_arena){0};
}

static void arena_free(copy_arena *a)
{
	while (a->chunks) {
		copy_chunk *next = a->chunks->next;
		free(a->chunks);
		a->chunks = next;
	}
	*a = (copy_arena){0};
}

/* A directory on the way to (or at) the destination: written into the
 * layer with the image's own metadata when it exists, 0755 root otherwise. */
typedef struct parent_dir {
	char *path;
	uint32_t mode;
	int64_t uid, gid;
	bool created; /* not in the image */
} parent_dir;

typedef struct copy_list {
	copy_item **items; /* in mem, or in the arenas mem adopted */
	size_t n, alloc;
	copy_arena mem;
	parent_dir *parents; /* shallowest first */
	size_t n_parents;
	bool last_is_dest;	 /* the last parent is the destination directory */
	const ib_ignore *ignore; /* the context's ignore file (context copies) */
	char *dest;		 /* the destination as written, cleaned, relative */
	bool whole;		 /* dest is a directory the sources go into */
	bool normalize;		 /* modes as build_context_mode gives them */
} copy_list;

mode_t build_context_mode(mode_t m)
{
	if (S_ISREG(m))
		return (m & S_IFMT) | (m & S_IXUSR ? 0755 : 0644);
	if (S_ISDIR(m))
		return (m & S_IFMT) | 0755;
	if (S_ISLNK(m))
		return m;
	return m & (S_IFMT | 0777);
}

static void copy_list_reserve(copy_list *l, size_t more)
{
	if (l->n + more <= l->alloc)
		return;
	size_t a = l->alloc ? l->alloc : 64;
	while (a < l->n + more)
		a *= 2;
	l->items = xrealloc(l->items, a * sizeof(*l->items));
	l->alloc = a;
}

/* it (made in an arena the list owns or will adopt) goes last; the layer,
 * the key and --explain all see the normalised mode */
static void copy_list_push(copy_list *l, copy_item *it)
{
	if (l->normalize)
		it->st.mode = (uint32_t)build_context_mode((mode_t)it->st.mode);
	copy_list_reserve(l, 1);
	l->items[l->n++] = it;
}

static void copy_list_add(copy_list *l, const char *dest, const char *host, const char *rel,
			  const struct stat *st)
{
	size_t dl = strlen(dest) + 1, hl = strlen(host) + 1, rl = strlen(rel) + 1;
	copy_item *it = arena_alloc(&l->mem, sizeof(*it) + dl + hl + rl);
	char *p = (char *)(it + 1);
	it->dest = memcpy(p, dest, dl);
	it->host = memcpy(p + dl, host, hl);
	it->rel = memcpy(p + dl + hl, rel, rl);
	copy_stat_set(&it->st, st);
	copy_list_push(l, it);
}

static void copy_list_free(copy_list *l)
{
	free(l->items);
	arena_free(&l->mem);
	for (size_t i = 0; i < l->n_parents; i++)
		free(l->parents[i].path);
	free(l->parents);
	free(l->dest);
}

void build_copy_memo_free(copy_list *l)
{
	if (l)
		copy_list_free(l);
	free(l);
}

/* The stage's layers as one tree (the image's filesystem as overlayfs
 * shows it), each layer unpacked when first looked at. */
typedef struct stage_layers {
	builder *b;
	stage_state *st;
	ib_path_layers view;
} stage_layers;

static int open_stage_layer(void *payload, size_t i, int *fd, ib_error **err)
{
	stage_layers *sl = payload;
	layer_ref *l = &sl->st->layers[i];
	if (build_ensure_unpacked(sl->b, l, err) < 0)
		return -1;
	cleanup_free char *dir = ib_store_layer_dir(sl->b->store, l->diff_id);
	*fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0)
		return ib_error_set(err, errno, "open layer %.19s", l->diff_id);
	return 0;
}

static void stage_layers_init(stage_layers *sl, builder *b, stage_state *st)
{
	*sl = (stage_layers){b, st, {st->n_layers, open_stage_layer, NULL}};
	sl->view.payload = sl;
}

/* Metadata of parent i: a destination directory the copy creates gets the
 * copy's owner and mode overrides, like the files in it. */
static void parent_meta(const copy_list *l, size_t i, const ib_layer_override *ov, uint32_t *mode,
			int64_t *uid, int64_t *gid)
{
	const parent_dir *pd = &l->parents[i];
	bool own = l->last_is_dest && i + 1 == l->n_parents && pd->created;
	*mode = own && ov->mode >= 0 ? (uint32_t)ov->mode : pd->mode;
	*uid = own && ov->uid >= 0 ? ov->uid : pd->uid;
	*gid = own && ov->gid >= 0 ? ov->gid : pd->gid;
}

static void add_parent(copy_list *l, const char *path, const struct stat *st)
{
	l->parents = xrealloc(l->parents, (l->n_parents + 1) * sizeof(parent_dir));
	parent_dir *p = &l->parents[l->n_parents++];
	p->path = xstrdup(path);
	p->created = st == NULL;
	p->mode = st ? (uint32_t)(st->st_mode & 07777) : 0755;
	p->uid = st ? (int64_t)st->st_uid : 0;
	p->gid = st ? (int64_t)st->st_gid : 0;
}

/* Resolve the destination in the stage's filesystem the way docker does:
 * symlinks on the way are followed inside the image (usrmerge's /bin ->
 * usr/bin stays a symlink), existing directories keep their metadata (a
 * 1777 /tmp stays 1777).  With whole, the last component is resolved too
 * (a directory destination).  *out is the resolved relative path; every
 * directory on the way (and the destination itself with whole) is recorded
 * in l->parents. */
static int resolve_dest(builder *b, stage_state *st, const char *dest, bool whole, copy_list *l,
			char **out, ib_error **err)
{
	stage_layers sl;
	stage_layers_init(&sl, b, st);
	cleanup_free char *res = NULL;
	struct stat sb;
	unsigned flags = IB_PATH_IMAGE | IB_PATH_MISSING_OK | (whole ? IB_PATH_FOLLOW_LAST : 0);
	if (ib_path_resolve(&ib_path_fs_layers, &sl.view, dest, flags, &res, &sb, err) < 0)
		return ib_error_wrap(err, "copy: destination /%s", dest);
	if (whole && sb.st_mode && !S_ISDIR(sb.st_mode))
		return ib_error_setc(err, IB_EINVALID,
				     "copy: destination /%s: /%s is not a directory", dest, res);
	for (size_t i = 0; i < l->n_parents; i++)
		free(l->parents[i].path);
	l->n_parents = 0;
	for (const char *p = res; *p;) {
		size_t n = strcspn(p, "/");
		bool last = p[n] == '\0';
		if (last && !whole)
			break;
		cleanup_free char *cand = xstrndup(res, (size_t)(p - res) + n);
		struct stat ps;
		int r = ib_path_fs_layers.lstat(&sl.view, cand, &ps, err);
		if (r < 0)
			return ib_error_wrap(err, "copy: destination /%s", dest);
		add_parent(l, cand, r == 1 ? &ps : NULL);
		p += n + !last;
	}
	*out = steal_pointer(&res);
	return 0;
}

/* exclude= globs are relative to the source root, like the sources; a
 * pattern without '/' also matches a base name at any depth ("*.o"), and a
 * pattern that matches a directory excludes everything below it. */
static bool excluded(json_t *exclude, const char *rel)
{
	size_t i;
	json_t *v;
	json_array_foreach (exclude, i, v) {
		const char *pat = json_string_value(v);
		cleanup_free char *any_depth = strchr(pat, '/') ? NULL : xasprintf("**/%s", pat);
		cleanup_free char *tmp = xstrdup(rel);
		/* rel itself, then each of its parent directories */
		for (size_t k = strlen(tmp);;) {
			if (ib_glob_match(pat, tmp) || (any_depth && ib_glob_match(any_depth, tmp)))
				return true;
			while (k > 0 && tmp[k - 1] != '/')
				k--;
			if (k == 0)
				break;
			tmp[--k] = '\0';
		}
	}
	return false;
}

/* The xattrs a layer keeps, hashed as "name\0value\n" in name order.
 * Unreadable xattrs hash as none: the layer writer then fails on them. */
static void xattrs_digest(const char *path, char out[IB_DIGEST_BUFLEN])
{
	ib_digest_ctx *c = ib_digest_new();
	ib_xattr *xs = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	if (ib_layer_xattrs_read(-1, path, &xs, &n, &e) < 0)
		ib_error_free(&e);
	for (size_t k = 0; k < n; k++) {
		ib_digest_update(c, xs[k].name, strlen(xs[k].name) + 1);
		ib_digest_update(c, xs[k].value, xs[k].size);
		ib_digest_update(c, "\n", 1);
	}
	ib_layer_xattrs_free(xs, n);
	ib_digest_final(c, out);
	ib_digest_free(c);
}

/* Hardlinks, as the tar writes them: for a regular file with several links,
 * the earlier item of the same inode, or NULL (then it is recorded in
 * linked, which holds at most one item per inode). */
static const copy_item *first_link(const copy_item **linked, size_t *n_linked, const copy_item *it)
{
	if (!*it->host || !S_ISREG(it->st.mode) || it->st.nlink < 2)
		return NULL;
	for (size_t k = 0; k < *n_linked; k++)
		if (linked[k]->st.dev == it->st.dev && linked[k]->st.ino == it->st.ino)
			return linked[k];
	linked[(*n_linked)++] = it;
	return NULL;
}

/* printf's "%o" and "%lld" by hand: the hasher writes a line for every
 * file of the context. */
static char *put_u64(char *p, uint64_t v, unsigned base)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % base);
		v /= base;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_i64(char *p, int64_t v)
{
	if (v >= 0)
		return put_u64(p, (uint64_t)v, 10);
	*p++ = '-';
	return put_u64(p, -(uint64_t)v, 10);
}

static char *put_str(char *p, const char *s, char sep)
{
	size_t n = strlen(s);
	memcpy(p, s, n);
	p[n] = sep;
	return p + n + 1;
}

/* The content digest of a context copy: a line per item, in list order.
 * Items are fed as they are collected -- the parts of a threaded walk as
 * soon as they are complete, while other threads still walk -- so that
 * hashing overlaps the stat of the context.  Only the thread that made
 * the hasher feeds it (the stat cache is not shared between threads).
 * Hashing stops at its first error, kept in err. */
typedef struct copy_hasher {
	builder *b;
	ib_digest_ctx *c;
	const copy_item **linked; /* one item per hardlinked inode (first_link) */
	size_t n_linked, alloc_linked;
	size_t done; /* items of the list hashed */
	ib_error *err;
} copy_hasher;

static void hasher_init(copy_hasher *h, builder *b)
{
	*h = (copy_hasher){.b = b, .c = ib_digest_new()};
}

static void hasher_free(copy_hasher *h)
{
	if (h->c)
		ib_digest_free(h->c);
	free(h->linked);
	ib_error_free(&h->err);
	*h = (copy_hasher){0};
}

/* it's line into the digest, its content digest into it->content */
static int hasher_item(copy_hasher *h, copy_item *it, ib_error **err)
{
	builder *b = h->b;
	if (h->n_linked == h->alloc_linked) {
		h->alloc_linked = h->alloc_linked ? 2 * h->alloc_linked : 64;
		h->linked = xrealloc(h->linked, h->alloc_linked * sizeof(*h->linked));
	}
	const copy_item *orig = first_link(h->linked, &h->n_linked, it);
	const char *link_to = orig ? orig->dest : "";
	char *content = it->content;
	content[0] = '\0';
	char xd[IB_DIGEST_BUFLEN];
	bool have_xd = false;
	/* the layer stores min(mtime, epoch): only an mtime below the
	 * build timestamp can change it, so only that one is an input */
	int64_t epoch = b->o->source_date_epoch;
	int64_t clamped = it->st.mtime < epoch ? it->st.mtime : epoch;
	struct stat sb;
	if (*it->host)
		copy_stat_get(&it->st, &sb);
	if (!*it->host) {
		snprintf(content, IB_DIGEST_BUFLEN, "dir");
	} else if (S_ISREG(it->st.mode)) {
		if (ib_cache_file_digests(b->cache, it->host, &sb, content, xattrs_digest, xd,
					  err) < 0)
			return -1;
		have_xd = true;
	} else if (S_ISLNK(it->st.mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(it->host, target, sizeof(target) - 1);
		if (n < 0)
			return ib_error_set(err, errno, "readlink %s", it->rel);
		target[n] = '\0';
		ib_digest_buffer(content, target, (size_t)n);
	} else if (S_ISCHR(it->st.mode) || S_ISBLK(it->st.mode)) {
		snprintf(content, IB_DIGEST_BUFLEN, "dev:%llu", (unsigned long long)it->st.rdev);
	}
	/* no owner: context files are written as 0:0 or owner= (so
	 * runners with other uids share keys) */
	long long size = S_ISREG(it->st.mode) ? (long long)it->st.size : 0LL;
	/* "DEST\tMODE(octal)\tSIZE\tMTIME\tCONTENT\tLINK\n" */
	char small[512];
	if (strlen(it->dest) + strlen(content) + strlen(link_to) + 3 * 24 + 6 < sizeof(small)) {
		char *p = put_str(small, it->dest, '\t');
		p = put_u64(p, it->st.mode, 8);
		*p++ = '\t';
		p = put_i64(p, size);
		*p++ = '\t';
		p = put_i64(p, clamped);
		*p++ = '\t';
		p = put_str(p, content, '\t');
		p = put_str(p, link_to, '\n');
		ib_digest_update(h->c, small, (size_t)(p - small));
	} else {
		cleanup_free char *line =
		    xasprintf("%s\t%o\t%lld\t%lld\t%s\t%s\n", it->dest, it->st.mode, size,
			      (long long)clamped, content, link_to);
		ib_digest_update(h->c, line, strlen(line));
	}
	if (*it->host) {
		if (!have_xd)
			ib_cache_file_xattrs(b->cache, it->host, &sb, xattrs_digest, xd);
		ib_digest_update(h->c, xd, strlen(xd));
	}
	return 0;
}

/* The next n items of the list (the caller counts them in h->done);
 * after an error, nothing more is hashed. */
static void hasher_feed(copy_hasher *h, copy_item *const *items, size_t n)
{
	for (size_t i = 0; i < n && !h->err; i++)
		if (hasher_item(h, items[i], &h->err) < 0)
			return;
}

/* What the list holds beyond what h hashed (h may be NULL: no hashing). */
static void hasher_catch_up(copy_hasher *h, const copy_list *l)
{
	if (h && h->done < l->n) {
		hasher_feed(h, l->items + h->done, l->n - h->done);
		h->done = l->n;
	}
}

/* The digest of every item fed, or the first error of hashing them. */
static int hasher_final(copy_hasher *h, char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	if (h->err) {
		*err = h->err;
		h->err = NULL;
		return -1;
	}
	ib_digest_final(h->c, out);
	return 0;
}

/* Entries are read with getdents64 into a buffer per level, not through a
 * DIR (its 32 KiB buffer, an fstat and two fcntl for every directory). */
#define WALK_DIRENT_BUF 8192
/* The entries of a source directory are walked by up to this many threads
 * (the stat of every file is most of a cached build). */
#define WALK_THREADS_MAX 4

/* A directory being walked: its fd, its paths (without a trailing '/',
 * except "/"; rel and dest may be "") and where its items go. */
typedef struct walk_level {
	copy_list *l;
	copy_arena *mem; /* the walking thread's */
	int fd;
	const char *host, *dest, *rel;
	size_t hl, dl, rl;
	json_t *exclude;
	ib_error **err;
} walk_level;

/* ib_path_join(dir, name) into out, dir being dl bytes as walk_level keeps
 * them, and "" giving name alone; returns the length. */
static size_t join_into(char *out, const char *dir, size_t dl, const char *name, size_t nl)
{
	size_t n = dl;
	memcpy(out, dir, dl);
	if (dl && dir[dl - 1] != '/')
		out[n++] = '/';
	memcpy(out + n, name, nl + 1);
	return n + nl;
}

/* strlen(s) without trailing '/' (but "/" stays) */
static size_t trimmed_len(const char *s)
{
	size_t n = strlen(s);
	while (n > 1 && s[n - 1] == '/')
		n--;
	return n;
}

static int walk_tree(const walk_level *w, const char *name, const copy_item *it, size_t hl,
		     size_t dl, size_t rl);

/* One entry of the directory w: its item and, for a directory, everything
 * below.  The item and its three paths are one piece of the arena, given
 * back when the entry is skipped. */
static int walk_entry(const walk_level *w, const char *name)
{
	copy_list *l = w->l;
	size_t nl = strlen(name);
	copy_arena saved = *w->mem;
	copy_item *it = arena_alloc(w->mem, sizeof(*it) + w->rl + w->hl + w->dl + 3 * (nl + 2));
	char *p = (char *)(it + 1);
	it->rel = p;
	size_t rl = join_into(p, w->rel, w->rl, name, nl);
	/* an ignored directory is looked into only for '!' exceptions */
	bool ignored = false;
	bool skip = excluded(w->exclude, it->rel);
	if (!skip) {
		ignored = ib_ignore_match(l->ignore, it->rel);
		skip = ignored && !ib_ignore_has_exceptions(l->ignore);
	}
	struct stat st;
	if (!skip) {
		if (fstatat(w->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return ib_error_set(w->err, errno, "stat %s", it->rel);
		skip = ignored && !S_ISDIR(st.st_mode);
	}
	if (skip) {
		if (w->mem->chunks == saved.chunks)
			*w->mem = saved;
		return 0;
	}
	p += rl + 1;
	it->host = p;
	size_t hl = join_into(p, w->host, w->hl, name, nl);
	p += hl + 1;
	it->dest = p;
	size_t dl = join_into(p, w->dest, w->dl, name, nl);
	copy_stat_set(&it->st, &st);
	size_t mark = l->n;
	copy_list_push(l, it);
	if (S_ISDIR(st.st_mode) && walk_tree(w, name, it, hl, dl, rl) < 0)
		return -1;
	if (ignored && l->n == mark + 1) /* nothing inside was kept */
		l->n--;
	return 0;
}

/* Each entry of the directory fd, in the order getdents64 gives them:
 * fn(payload, name) until it fails. */
static int walk_names(int fd, const char *rel, int (*fn)(void *payload, const char *name),
		      void *payload, ib_error **err)
{
	cleanup_free char *buf = xmalloc(WALK_DIRENT_BUF);
	for (;;) {
		ssize_t got = getdents64(fd, buf, WALK_DIRENT_BUF);
		if (got < 0)
			return ib_error_set(err, errno, "read %s", rel);
		if (got == 0)
			return 0;
		for (ssize_t off = 0; off < got;) {
			const struct dirent64 *de = (const struct dirent64 *)(buf + off);
			off += de->d_reclen;
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
			    fn(payload, de->d_name) < 0)
				return -1;
		}
	}
}

static int walk_level_entry(void *payload, const char *name)
{
	return walk_entry(payload, name);
}

/* The directory item it, entry name of w, walked (hl, dl, rl: the lengths
 * of its paths). */
static int walk_tree(const walk_level *w, const char *name, const copy_item *it, size_t hl,
		     size_t dl, size_t rl)
{
	cleanup_close int fd = openat(w->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(w->err, errno, "open %s", it->rel);
	walk_level sub = *w;
	sub.fd = fd;
	sub.host = it->host;
	sub.dest = it->dest;
	sub.rel = it->rel;
	sub.hl = hl;
	sub.dl = dl;
	sub.rl = rl;
	return walk_names(fd, it->rel, walk_level_entry, &sub, w->err);
}

/* The top of a source directory: its entries are shared out to threads,
 * each walking whole entries into a list of its own (items in the thread's
 * arena); the lists are then joined in the order of the entries, as one
 * walk would have made them, and the arenas handed to the result.  With a
 * hasher, the calling thread also hashes the lists in that order as they
 * are complete. */
typedef struct walk_top {
	walk_level w; /* l: the result; mem, err: unused */
	char **names;
	copy_list *parts;
	ib_error **errs;
	size_t n, next;
	bool failed;
	copy_hasher *h; /* or NULL */
	size_t hashed;	/* parts fed to h (the calling thread's) */
	bool *done;	/* parts walked, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a part done, or failed */
} walk_top;

typedef struct walk_worker {
	walk_top *t;
	copy_arena mem;
	bool hashes; /* the calling thread, with a hasher */
} walk_worker;

/* Feed the parts that are complete, in order; with wait, until all are
 * (or a walk failed: then hashing is moot). */
static void walk_top_hash(walk_top *t, bool wait)
{
	pthread_mutex_lock(&t->mu);
	while (t->hashed < t->n && !__atomic_load_n(&t->failed, __ATOMIC_RELAXED)) {
		if (!t->done[t->hashed]) {
			if (!wait)
				break;
			pthread_cond_wait(&t->cv, &t->mu);
			continue;
		}
		copy_list *p = &t->parts[t->hashed++];
		pthread_mutex_unlock(&t->mu);
		hasher_feed(t->h, p->items, p->n);
		pthread_mutex_lock(&t->mu);
	}
	pthread_mutex_unlock(&t->mu);
}

static int walk_top_name(void *payload, const char *name)
{
	ib_strv_push(&((walk_top *)payload)->names, name);
	return 0;
}

static void *walk_top_worker(void *payload)
{
	walk_worker *k = payload;
	walk_top *t = k->t;
	for (;;) {
		if (k->hashes)
			walk_top_hash(t, false);
		size_t i = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
		if (i >= t->n || __atomic_load_n(&t->failed, __ATOMIC_RELAXED))
			break;
		copy_list *p = &t->parts[i];
		p->ignore = t->w.l->ignore;
		p->normalize = t->w.l->normalize;
		walk_level w = t->w;
		w.l = p;
		w.mem = &k->mem;
		w.err = &t->errs[i];
		int rc = walk_entry(&w, t->names[i]);
		pthread_mutex_lock(&t->mu);
		t->done[i] = true;
		if (rc < 0)
			__atomic_store_n(&t->failed, true, __ATOMIC_RELAXED);
		pthread_cond_broadcast(&t->cv);
		pthread_mutex_unlock(&t->mu);
	}
	if (k->hashes)
		walk_top_hash(t, true);
	return NULL;
}

/* The items of l must all be hashed by h (NULL: no hashing) before. */
static int walk_source_dir(copy_list *l, copy_hasher *h, const char *host, const char *dest,
			   const char *rel, json_t *exclude, ib_error **err)
{
	hasher_catch_up(h, l);
	cleanup_close int fd = open(host, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", rel);
	walk_top t = {.w = {l, &l->mem, fd, host, dest, rel, trimmed_len(host), trimmed_len(dest),
			    trimmed_len(rel), exclude, err}};
	t.names = xcalloc(1, sizeof(char *));
	if (walk_names(fd, rel, walk_top_name, &t, err) < 0) {
		ib_strv_free(t.names);
		return -1;
	}
	t.n = ib_strv_len(t.names);
	int threads = ib_compress_online_cpus();
	if (threads > WALK_THREADS_MAX)
		threads = WALK_THREADS_MAX;
	if ((size_t)threads > t.n)
		threads = (int)t.n;
	int rc = 0;
	if (threads < 2) {
		for (size_t i = 0; i < t.n && rc == 0; i++)
			rc = walk_entry(&t.w, t.names[i]);
		ib_strv_free(t.names);
		return rc;
	}
	t.parts = xcalloc(t.n, sizeof(*t.parts));
	t.errs = xcalloc(t.n, sizeof(*t.errs));
	t.done = xcalloc(t.n, sizeof(*t.done));
	t.h = h;
	pthread_mutex_init(&t.mu, NULL);
	pthread_cond_init(&t.cv, NULL);
	walk_worker workers[WALK_THREADS_MAX];
	for (int k = 0; k < WALK_THREADS_MAX; k++)
		workers[k] = (walk_worker){&t, {0}, k == 0 && h};
	pthread_t tids[WALK_THREADS_MAX];
	int started = 0;
	for (; started < threads - 1; started++)
		if (pthread_create(&tids[started], NULL, walk_top_worker, &workers[started + 1]) !=
		    0)
			break; /* fewer helpers: this thread walks the rest */
	walk_top_worker(&workers[0]);
	for (int k = 0; k < started; k++)
		pthread_join(tids[k], NULL);
	size_t total = 0;
	for (size_t i = 0; i < t.n; i++)
		total += t.parts[i].n;
	copy_list_reserve(l, total);
	for (size_t i = 0; i < t.n; i++) {
		copy_list *p = &t.parts[i];
		if (rc == 0 && t.errs[i]) {
			*err = t.errs[i];
			t.errs[i] = NULL;
			rc = -1;
		}
		ib_error_free(&t.errs[i]);
		if (rc == 0 && p->n) {
			memcpy(l->items + l->n, p->items, p->n * sizeof(*p->items));
			l->n += p->n;
		}
		if (rc == 0 && h && i < t.hashed)
			h->done += p->n; /* fed by walk_top_hash, as part of l */
		copy_list_free(p);
	}
	for (int k = 0; k < WALK_THREADS_MAX; k++)
		arena_adopt(&l->mem, &workers[k].mem);
	pthread_cond_destroy(&t.cv);
	pthread_mutex_destroy(&t.mu);
	free(t.done);
	free(t.parts);
	free(t.errs);
	ib_strv_free(t.names);
	return rc;
}

/* Expand a copy source into (rel path) matches under root. */
static int expand_source(const char *root, const char *src, char ***out, ib_error **err)
{
	/* relative to the root: leading "/" and "./" dropped, ".." refused */
	cleanup_free char *s = NULL;
	if (ib_path_clean(src, IB_PATH_RELATIVE | IB_PATH_REFUSE_DOTDOT, &s, NULL) < 0)
		return ib_error_setc(err, IB_EUNSAFE, "copy: source \"%s\" leaves its root", src);
	char **res = NULL;
	if (*s == '\0') {
		res = xcalloc(1, sizeof(char *));
		ib_strv_push(&res, "");
	} else if (ib_glob_has_meta(s)) {
		/* the same matcher the recipe used when it checked the source */
		if (ib_glob(root, s, &res, err) < 0)
			return ib_error_wrap(err, "copy: \"%s\"", src);
	} else {
		res = xcalloc(1, sizeof(char *));
		ib_strv_push(&res, s);
	}
	if (ib_strv_len(res) == 0) {
		ib_strv_free(res);
		return ib_error_setc(err, IB_ENOTFOUND, "copy: no source matches \"%s\"", src);
	}
	*out = res;
	return 0;
}

/* Collect what a copy step adds: items with archive paths. */
/* Collect the sources of a copy step under the destination as written
 * (cleaned), which is all the step key needs: the parent key fixes the
 * image it resolves in, and resolving reads the stage's layers, which a
 * cache hit must not need (they may not even be local).  A miss then calls
 * copy_resolve_dest.  hash (NULL: none) is fed every item, in list order. */
static int copy_collect(builder *b, stage_state *st, json_t *step, const char *root,
			bool from_context, copy_list *l, copy_hasher *hash, ib_error **err)
{
	json_t *sources = json_object_get(step, "sources");
	json_t *exclude = json_object_get(step, "exclude");
	cleanup_free char *dest_in = build_expand(st, jstr(step, "dest"), err);
	if (!dest_in || !*dest_in) {
		if (dest_in)
			ib_error_setc(err, IB_EINVALID, "the destination expands to nothing");
		return ib_error_wrap(err, "copy: %s", jstr(step, "dest"));
	}
	cleanup_free char *dest_abs = build_image_path(st, dest_in);
	bool dest_is_dir = dest_in[strlen(dest_in) - 1] == '/';
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return ib_error_set(err, errno, "context %s", root);
	ib_path_dir rootdir = {rootfd};
	ib_path_fs rootfs = ib_path_fs_dir;
	rootfs.name = from_context ? "the build context" : "the source image";

	char **all = xcalloc(1, sizeof(char *));
	size_t i;
	json_t *v;
	json_array_foreach (sources, i, v) {
		char **m = NULL;
		if (expand_source(root, json_string_value(v), &m, err) < 0) {
			ib_strv_free(all);
			return -1;
		}
		for (size_t k = 0; m[k]; k++)
			ib_strv_push(&all, m[k]);
		ib_strv_free(m);
	}
	if (ib_strv_len(all) > 1)
		dest_is_dir = true;
	/* a single directory source also puts its contents into dest */
	bool whole = dest_is_dir;
	if (!whole && all[0]) {
		cleanup_free char *h = *all[0] ? ib_path_join(root, all[0]) : xstrdup(root);
		struct stat sb;
		whole = lstat(h, &sb) == 0 && S_ISDIR(sb.st_mode);
	}
	l->last_is_dest = l->whole = whole;
	l->dest = xstrdup(dest_abs + 1);
	const char *dest_rel = l->dest;
	int rc = 0;
	size_t n_ignored = 0;
	l->ignore = from_context ? b->ignore : NULL;
	for (size_t k = 0; all[k] && rc == 0; k++) {
		const char *rel = all[k];
		if (*rel && excluded(exclude, rel))
			continue;
		if (*rel && ib_ignore_match(l->ignore, rel)) {
			cleanup_free char *h = ib_path_join(root, rel);
			struct stat ist;
			if (!ib_ignore_has_exceptions(l->ignore) || lstat(h, &ist) < 0 ||
			    !S_ISDIR(ist.st_mode)) {
				n_ignored++;
				continue;
			}
		}
		/* the parent of a source must resolve inside the root: a symlink
		 * in the context or in a stage, absolute or climbing out with "..",
		 * must not lead the copy to host files; the host path is then
		 * built from the resolved, symlink-free parent */
		cleanup_free char *host = NULL;
		if (*rel) {
			const char *slash = strrchr(rel, '/');
			const char *base = slash ? slash + 1 : rel;
			cleanup_free char *parent =
			    slash ? xstrndup(rel, (size_t)(slash - rel)) : xstrdup("");
			cleanup_free char *rparent = NULL;
			ib_error *e = NULL;
			if (ib_path_resolve(&rootfs, &rootdir, parent, IB_PATH_FOLLOW_LAST,
					    &rparent, NULL, &e) < 0) {
				if (e->code == IB_EUNSAFE)
					rc = ib_error_setc(
					    err, IB_EUNSAFE,
					    "copy: source \"%s\" is outside the %s", rel,
					    from_context ? "build context" : "source image");
				else
					rc = ib_error_setc(err, e->code, "copy: source \"%s\": %s",
							   rel, ib_error_msg(e));
				ib_error_free(&e);
				break;
			}
			host = *rparent ? xasprintf("%s/%s/%s", root, rparent, base)
					: ib_path_join(root, base);
		} else {
			host = xstrdup(root);
		}
		struct stat sst;
		if (lstat(host, &sst) < 0) {
			rc = ib_error_set(err, errno, "copy: source \"%s\"", *rel ? rel : ".");
			break;
		}
		if (S_ISDIR(sst.st_mode)) {
			/* directory: its contents go into dest (recorded in l->parents) */
			rc = walk_source_dir(l, hash, host, dest_rel, rel, exclude, err);
		} else {
			cleanup_free char *d = NULL;
			const char *base = strrchr(rel, '/');
			base = base ? base + 1 : rel;
			d = dest_is_dir ? (*dest_rel ? ib_path_join(dest_rel, base) : xstrdup(base))
					: xstrdup(dest_rel);
			if (!*d) {
				rc = ib_error_setc(err, IB_EINVALID,
						   "copy: cannot copy a file to /");
				break;
			}
			copy_list_add(l, d, host, rel, &sst);
		}
		if (rc == 0)
			hasher_catch_up(hash, l);
	}
	if (rc == 0 && n_ignored && n_ignored == ib_strv_len(all))
		rc = ib_error_setc(err, IB_ENOTFOUND, "copy: \"%s\" is excluded by %s", all[0],
				   ib_ignore_source(l->ignore));
	ib_strv_free(all);
	return rc;
}

/* Resolve the collected destination in the stage's filesystem (symlinks on
 * the way followed inside the image, existing directories recorded with
 * their metadata) and move every item under the resolved path. */
static int copy_resolve_dest(builder *b, stage_state *st, copy_list *l, ib_error **err)
{
	if (!*l->dest)
		return 0;
	cleanup_free char *res = NULL;
	if (resolve_dest(b, st, l->dest, l->whole, l, &res, err) < 0)
		return -1;
	size_t n = strlen(l->dest);
	while (n > 0 && l->dest[n - 1] == '/') /* items are "DEST/..." (ib_path_join) */
		n--;
	for (size_t i = 0; i < l->n; i++) {
		const char *d = l->items[i]->dest; /* l->dest itself, or under it */
		if (strncmp(d, l->dest, n) != 0 || (d[n] != '\0' && d[n] != '/'))
			return ib_error_setc(err, IB_ERROR, "copy: %s is not under %s", d, l->dest);
		const char *rest = d[n] == '/' ? d + n + 1 : "";
		if (!*rest) {
			l->items[i]->dest = arena_strdup(&l->mem, res);
		} else if (*res) {
			cleanup_free char *j = ib_path_join(res, rest);
			l->items[i]->dest = arena_strdup(&l->mem, j);
		} else {
			l->items[i]->dest = (char *)rest; /* the tail of the old one */
		}
	}
	return 0;
}

/* Find NAME in the stage's /etc/passwd (field 3 = uid, 4 = gid) or
 * /etc/group (field 3 = gid), as the image's filesystem shows the file:
 * symlinks are followed inside the image only, never to the host's. */
static int lookup_id(builder *b, stage_state *st, const char *file, const char *name, int64_t *id,
		     int64_t *gid, ib_error **err)
{
	stage_layers sl;
	stage_layers_init(&sl, b, st);
	cleanup_free char *res = NULL;
	struct stat sb;
	ib_error *e = NULL;
	int r = ib_path_resolve(&ib_path_fs_layers, &sl.view, file,
				IB_PATH_IMAGE | IB_PATH_FOLLOW_LAST, &res, &sb, &e);
	if (r < 0 && r != IB_ENOTFOUND) {
		r = ib_error_setc(err, r, "copy: read the image's /%s: %s", file, ib_error_msg(e));
		ib_error_free(&e);
		return r;
	}
	ib_error_free(&e);
	if (r == 0 && S_ISREG(sb.st_mode)) {
		cleanup_close int fd = -1;
		cleanup_free char *data = NULL;
		size_t len = 0;
		if (ib_path_layers_open(&sl.view, res, O_RDONLY, &fd, err) < 0 ||
		    ib_read_fd(fd, PASSWD_READ_MAX, &data, &len, err) < 0)
			return ib_error_wrap(err, "copy: read the image's /%s", file);
		uint32_t v, g;
		if (ib_passwd_find(data, len, name, &v, gid ? &g : NULL)) {
			*id = v;
			if (gid)
				*gid = g;
			return 0;
		}
	}
	return ib_error_setc(err, IB_ENOTFOUND, "copy: no %s \"%s\" in the image's /%s",
			     gid ? "user" : "group", name, file);
}

/* owner= "uid[:gid]" or "user[:group]" (names resolved in the image). */
static int parse_owner(builder *b, stage_state *st, const char *s, int64_t *uid, int64_t *gid,
		       ib_error **err)
{
	*uid = *gid = -1;
	if (!s)
		return 0;
	uint64_t v;
	cleanup_free char *tmp = xstrdup(s);
	char *colon = strchr(tmp, ':');
	if (colon)
		*colon++ = '\0';
	if (ib_parse_u64(tmp, &v) == 0 && v <= UINT32_MAX) {
		*uid = *gid = (int64_t)v;
	} else if (lookup_id(b, st, "etc/passwd", tmp, uid, gid, err) < 0) {
		return -1;
	}
	if (colon) {
		if (ib_parse_u64(colon, &v) == 0 && v <= UINT32_MAX)
			*gid = (int64_t)v;
		else if (lookup_id(b, st, "etc/group", colon, gid, NULL, err) < 0)
			return -1;
	}
	return 0;
}

/* rel path -> "DIGEST MODE UID:GID" of every non-directory source: what
 * --explain compares, and what tells materialize_copy a file is unchanged */
static json_t *copy_sources_json(const copy_list *l)
{
	json_t *j = json_object();
	for (size_t i = 0; i < l->n; i++) {
		const copy_item *it = l->items[i];
		if (!*it->rel || S_ISDIR(it->st.mode))
			continue;
		cleanup_free char *v =
		    xasprintf("%s %o %u:%u", it->content, it->st.mode, it->st.uid, it->st.gid);
		json_object_set_new(j, it->rel, json_string(v));
	}
	return j;
}

/* The previous layer's copy of dest, when it is a regular file reached
 * without any symlink: only then may it be hardlinked into the new layer. */
static char *prev_file(const char *prev_real, const char *dest)
{
	cleanup_close int fd = open(prev_real, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	ib_path_dir dir = {fd};
	struct stat st;
	ib_error *e = NULL;
	int r = ib_path_fs_dir.lstat(&dir, dest, &st, &e);
	ib_error_free(&e);
	return r == 1 && S_ISREG(st.st_mode) ? ib_path_join(prev_real, dest) : NULL;
}

/* Write a copy step's entries straight into the unpacked layer directory
 * (ib_unpack_from_files: as ib_unpack would lay out its tar), so the next
 * run step finds its lower dir without decompressing and parsing the blob
 * again.  Any failure just leaves the layer to be unpacked from its blob on
 * demand. */
static void materialize_copy(builder *b, const copy_list *l, const char *diff_id,
			     const ib_layer_override *ov, bool owner_root, json_t *sources,
			     json_t *prev)
{
	/* The previous run of this same step (same definition, same epoch) left
	 * an unpacked layer: its files whose source is unchanged are hardlinked
	 * instead of copied.  Unpacked layers are never modified (overlay only
	 * reads lower dirs), so sharing inodes between them is safe. */
	char prev_real[PATH_MAX];
	const char *prev_dir = NULL;
	json_t *prev_sources = json_object_get(prev, "sources");
	const char *prev_diff = json_string_value(json_object_get(prev, "diff_id"));
	if (prev_diff && ib_store_layer_unpacked(b->store, prev_diff)) {
		cleanup_free char *d = ib_store_layer_dir(b->store, prev_diff);
		if (realpath(d, prev_real))
			prev_dir = prev_real;
	}
	if (ib_store_layer_unpacked(b->store, diff_id) || l->n == 0)
		return;
	ib_unpack_dir *dirs = xcalloc(l->n_parents + 1, sizeof(*dirs));
	for (size_t i = 0; i < l->n_parents; i++) {
		dirs[i].path = l->parents[i].path;
		parent_meta(l, i, ov, &dirs[i].mode, &dirs[i].uid, &dirs[i].gid);
	}
	ib_unpack_file *files = xcalloc(l->n + 1, sizeof(*files));
	for (size_t i = 0; i < l->n; i++) {
		const copy_item *it = l->items[i];
		ib_unpack_file *f = &files[i];
		f->path = it->dest;
		f->host = *it->host ? it->host : NULL;
		copy_stat_get(&it->st, &f->st);
		if (!f->host)
			f->st.st_mode = S_IFDIR | 0755;
		f->uid = ov->uid >= 0 ? ov->uid : owner_root ? 0 : f->st.st_uid;
		f->gid = ov->gid >= 0 ? ov->gid : owner_root ? 0 : f->st.st_gid;
		f->mode = ov->mode >= 0 ? (uint32_t)ov->mode : (f->st.st_mode & 07777);
		if (prev_dir && f->host && S_ISREG(f->st.st_mode)) {
			json_t *was = json_object_get(prev_sources, it->rel);
			json_t *now = json_object_get(sources, it->rel);
			if (was && now && json_equal(was, now))
				f->reuse = prev_file(prev_dir, it->dest);
		}
	}
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "copy");
	ib_error *e = NULL;
	int rc =
	    ib_unpack_from_files(tmp, dirs, l->n_parents, files, l->n, b->o->source_date_epoch, &e);
	for (size_t i = 0; i < l->n; i++)
		free((char *)files[i].reuse);
	free(files);
	free(dirs);
	if (rc == 0 && ib_store_layer_install(b->store, tmp, diff_id, &e) == 0 &&
	    !ib_file_exists(tmp))
		return;
	ib_error_free(&e);
	if (ib_rm_rf(tmp, &e) < 0)
		ib_error_free(&e);
}

/* The key: the parent, the step, the content digest of its sources and
 * what $VARs in the destination gave. */
static void copy_key(stage_state *st, json_t *step, const char *parent, json_t *extra,
		     const char *content, char key_out[IB_DIGEST_BUFLEN])
{
	json_object_set_new(extra, "content", json_string(content));
	if (strchr(jstr(step, "dest"), '$')) { /* the key holds what $VARs gave */
		char *x = build_expand(st, jstr(step, "dest"), NULL);
		json_object_set_new(extra, "dest", json_string(x ? x : ""));
		free(x);
	}
	build_step_key(key_out, parent, step, extra);
}

int build_copy_step(builder *b, stage_state *st, json_t *step, size_t idx, const char *parent,
		    json_t *extra, const char *label, char key_out[IB_DIGEST_BUFLEN], bool *cached,
		    ib_error **err)
{
	json_t *from = json_object_get(step, "from");
	cleanup_free char *root = NULL;
	bool from_context = !json_is_object(from);
	stage_state *src = NULL;
	stage_state tmpstage = {0};
	cleanup_free char *srcs = NULL, *created_by = NULL;
	step_memo *memo = build_memo(b, b->cur_stage, idx, b->keys_only);
	copy_list l = {0};
	int rc = 0;
	if (from_context) {
		root = xstrdup(b->context);
		/* the modes of the checkout are the runner's (umask): not kept */
		if (!b->o->preserve_context_modes)
			l.normalize = true;
		else
			json_object_set_new(extra, "context_modes", json_string("preserve"));
	} else if (jstr(from, "stage")) {
		src = build_find_stage(b, jstr(from, "stage"));
		if (!src || !src->built) {
			ib_error_setc(err, IB_EINVALID,
				      "copy: stage \"%s\" is not built before this step",
				      jstr(from, "stage"));
			return build_recipe_error(b, step, err);
		}
		json_object_set_new(extra, "from_key", json_string(src->key));
	} else if (jstr(from, "image")) {
		/* copy from an image: load (pulling if needed) into a temp stage;
		 * the key pass keeps it for the real pass */
		ib_image *img = memo ? memo->image : NULL;
		if (memo)
			memo->image = NULL;
		if (!img && build_load_base_image(b, step, jstr(from, "image"), &img, err) < 0) {
			ib_error_wrap(err, "copy from %s", jstr(from, "image"));
			return build_recipe_error(b, step, err);
		}
		json_object_set_new(extra, "from_key", json_string(img->desc.digest));
		if (b->keys_only) {
			memo->image = img;
		} else {
			tmpstage.name = "copy-source";
			tmpstage.n_layers = img->manifest->n_layers;
			tmpstage.layers = xcalloc(tmpstage.n_layers + 1, sizeof(layer_ref));
			for (size_t i = 0; i < tmpstage.n_layers; i++) {
				ib_descriptor_copy(&tmpstage.layers[i].desc,
						   &img->manifest->layers[i]);
				memcpy(tmpstage.layers[i].diff_id,
				       ib_config_diff_id(img->config, i), IB_DIGEST_BUFLEN);
			}
			ib_image_free(img);
			src = &tmpstage;
		}
	}
	srcs = build_argv_string(json_object_get(step, "sources"));
	/* as docker's history: COPY --from=STAGE|IMAGE SRC... DEST */
	const char *from_name = from_context	      ? NULL
				: jstr(from, "stage") ? jstr(from, "stage")
				: jstr(from, "short") ? jstr(from, "short")
						      : jstr(from, "image");
	created_by =
	    xasprintf("COPY %s%s%s%s %s", from_name ? "--from=" : "", from_name ? from_name : "",
		      from_name ? " " : "", srcs, jstr(step, "dest"));
	/* content from a stage or image is fixed by its key (from_key) */
	char cdigest[IB_DIGEST_BUFLEN] = "from";
	bool hit = false;
	if (!from_context) {
		/* the key needs no file of the source: the key pass mounts
		 * nothing, and a hit leaves the source's layers unfetched */
		copy_key(st, step, parent, extra, cdigest, key_out);
		build_key_computed(b, st, idx, key_out, build_may_use_cache(b, step, key_out));
		if (b->keys_only)
			return 0;
		hit = build_may_use_cache(b, step, key_out) && build_use_cached(b, st, key_out, created_by);
	}
	if (src && !hit) {
		rc = build_mount_stage_view(b, src, err);
		if (rc < 0)
			goto done;
		root = xstrdup(src->mount_dir);
	}

	if (hit) {
		/* nothing to collect */
	} else if (memo && memo->copy) {
		/* collected and hashed by the key pass */
		l = *memo->copy;
		free(memo->copy);
		memo->copy = NULL;
		memcpy(cdigest, memo->content, IB_DIGEST_BUFLEN);
	} else {
		/* a context copy is hashed as it is collected */
		copy_hasher h;
		hasher_init(&h, b);
		rc = copy_collect(b, st, step, root, from_context, &l, from_context ? &h : NULL,
				  err);
		if (rc == 0 && from_context)
			rc = hasher_final(&h, cdigest, err);
		hasher_free(&h);
	}
	if (rc < 0) {
		copy_list_free(&l);
		goto done;
	}
	if (from_context) {
		copy_key(st, step, parent, extra, cdigest, key_out);
		build_key_computed(b, st, idx, key_out, build_may_use_cache(b, step, key_out));
		if (b->keys_only) {
			memo->copy = xmalloc(sizeof(l));
			*memo->copy = l;
			memcpy(memo->content, cdigest, IB_DIGEST_BUFLEN);
			return 0;
		}
		hit = build_may_use_cache(b, step, key_out) && build_use_cached(b, st, key_out, created_by);
	}
	json_t *inputs = NULL;
	if (hit) {
		*cached = true;
		/* a hit keeps the existing record; write one only where none is
		 * (not for a stage or image source: its files were not listed) */
		cleanup_free char *id = build_explain_id(b, st, idx);
		if (from_context && !ib_cache_explain_exists(b->cache, id))
			inputs = json_pack("{s:s, s:O, s:O, s:o}", "parent", parent, "step", step,
					   "extra", extra, "sources", copy_sources_json(&l));
	} else {
		/* a miss writes the layer: now the destination is resolved in
		 * the image */
		rc = copy_resolve_dest(b, st, &l, err);
		if (rc < 0) {
			copy_list_free(&l);
			goto done;
		}
		inputs = json_pack("{s:s, s:O, s:O, s:o}", "parent", parent, "step", step, "extra",
				   extra, "sources", copy_sources_json(&l));
		if (b->o->explain)
			build_explain_miss(b, st, idx, inputs);
		ib_progress_step_start(b->o->progress, b->step_no, label);
		int64_t uid, gid;
		rc = parse_owner(b, st, jstr(step, "owner"), &uid, &gid, err);
		int32_t mode = ib_plan_mode_parse(jstr(step, "mode")); /* -1: null */
		ib_layer_options lo = build_layer_options(b);
		/* tar size: a header per entry, contents padded to 512 bytes */
		b->layer_total = 1024;
		for (size_t i = 0; i < l.n; i++) {
			uint64_t sz =
			    S_ISREG(l.items[i]->st.mode) ? (uint64_t)l.items[i]->st.size : 0;
			b->layer_total += 512 + (sz + 511) / 512 * 512;
		}
		/* the tar now, its compression in the background (when on) */
		int tar_fd = rc == 0 ? build_layer_tar_fd(b) : -1;
		lo.tar_only = tar_fd >= 0;
		lo.tar_fd = tar_fd;
		ib_layer_writer *w = NULL;
		if (rc == 0)
			rc = ib_layer_writer_new(&w, b->store, &lo, err);
		/* directories on the way: the image's metadata, or new ones */
		ib_layer_override pov = {.uid = uid, .gid = gid, .mode = mode};
		for (size_t i = 0; rc == 0 && i < l.n_parents; i++) {
			uint32_t m;
			int64_t u, g;
			parent_meta(&l, i, &pov, &m, &u, &g);
			rc = ib_layer_writer_add_dir(w, l.parents[i].path, m, u, g, err);
		}
		for (size_t i = 0; i < l.n && rc == 0; i++) {
			copy_item *it = l.items[i];
			/* context files belong to root unless owner= says otherwise;
			 * files from a stage keep their owner (docker semantics) */
			ib_layer_override ov = {.uid = uid, .gid = gid, .mode = mode};
			if (from_context && uid < 0)
				ov.uid = ov.gid = 0;
			/* items hold the normalised modes (copy_list_push) */
			if (l.normalize && mode < 0 && !S_ISLNK(it->st.mode))
				ov.mode = (int32_t)(it->st.mode & 07777);
			if (!*it->host)
				rc = ib_layer_writer_add_dir(
				    w, it->dest, mode >= 0 ? (uint32_t)mode : 0755,
				    ov.uid >= 0 ? ov.uid : 0, ov.gid >= 0 ? ov.gid : 0, err);
			else
				rc = ib_layer_writer_add_path(w, it->dest, it->host, &ov, err);
		}
		ib_layer_result res = {0};
		if (rc == 0) {
			rc = ib_layer_writer_finish(w, &res, err);
			w = NULL;
		}
		ib_layer_writer_free(w);
		if (rc == 0) {
			rc = build_commit_layer(b, st, key_out, &res, tar_fd, created_by, err);
			tar_fd = -1;
		}
		if (tar_fd >= 0)
			close(tar_fd);
		if (rc == 0) {
			ib_layer_override ov = {.uid = uid, .gid = gid, .mode = mode};
			cleanup_free char *id = build_explain_id(b, st, idx);
			json_t *prev = ib_cache_explain_get(b->cache, id);
			if (prev &&
			    (!json_equal(json_object_get(prev, "step"), step) ||
			     !json_equal(json_object_get(json_object_get(prev, "extra"), "epoch"),
					 json_object_get(extra, "epoch"))))
				json_object_clear(prev);
			materialize_copy(b, &l, res.diff_id, &ov, from_context,
					 json_object_get(inputs, "sources"), prev);
			json_decref(prev);
			json_object_set_new(inputs, "diff_id", json_string(res.diff_id));
		}
		*cached = false;
	}
	if (rc == 0 && inputs)
		build_explain_record(b, st, idx, inputs);
	json_decref(inputs);
	copy_list_free(&l);
done:
	if (src == &tmpstage) {
		build_release_view(&tmpstage);
		for (size_t i = 0; i < tmpstage.n_layers; i++)
			ib_descriptor_clear(&tmpstage.layers[i].desc);
		free(tmpstage.layers);
	}
	if (rc < 0)
		return build_recipe_error(b, step, err);
	return 0;
}
