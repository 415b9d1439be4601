#include "imgdiff.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "digest.h"
#include "path.h"
#include "util.h"

#define READ_BUF (1u << 18)

/* ---- a store blob read through libarchive, re-hashed on the way ---- */

typedef struct blob_reader {
	int fd;
	char *buf;
	ib_digest_ctx *ctx;
	int64_t total;
} blob_reader;

static la_ssize_t blob_read(struct archive *a, void *payload, const void **out)
{
	blob_reader *br = payload;
	for (;;) {
		ssize_t n = read(br->fd, br->buf, READ_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			archive_set_error(a, errno, "read: %s", strerror(errno));
			return -1;
		}
		ib_digest_update(br->ctx, br->buf, (size_t)n);
		br->total += n;
		*out = br->buf;
		return n;
	}
}

/* Hash whatever libarchive did not read: padding after the end marker, or
 * the rest of a tar it gave up on. */
static int blob_drain(blob_reader *br, ib_error **err)
{
	for (;;) {
		ssize_t n = read(br->fd, br->buf, READ_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ib_error_set(err, errno, "read");
		if (n == 0)
			return 0;
		ib_digest_update(br->ctx, br->buf, (size_t)n);
		br->total += n;
	}
}

/* "./a/b/" -> "a/b"; the root ("", ".", "./", "/") -> "". */
static char *normalise_path(const char *raw)
{
	char *out = NULL;
	ib_path_clean(raw, IB_PATH_RELATIVE, &out, NULL);
	return out;
}

static int hash_data(struct archive *a, char *buf, ib_digest_ctx *ctx, const char *path,
		     char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	ib_digest_reset(ctx);
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, READ_BUF);
		if (n == 0)
			break;
		if (n < 0)
			return ib_error_setc(err, IB_EINVALID, "read /%s: %s", path,
					     archive_error_string(a) ? archive_error_string(a)
								     : "error");
		ib_digest_update(ctx, buf, (size_t)n);
	}
	ib_digest_final(ctx, out);
	return 0;
}

int ib_layer_walk(ib_store *s, const char *blob_digest, int64_t expect_size, ib_layer_walk_fn cb,
		  void *payload, ib_error **err)
{
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(s, blob_digest, &fd, &size, err);
	if (r < 0) {
		ib_error_wrap(err, "layer %s", blob_digest);
		return r;
	}
	cleanup_free char *rbuf = xmalloc(READ_BUF);
	cleanup_free char *dbuf = xmalloc(READ_BUF);
	blob_reader br = {fd, rbuf, ib_digest_new(), 0};
	ib_digest_ctx *content_ctx = ib_digest_new();
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	if (archive_read_open(a, &br, NULL, blob_read, NULL) != ARCHIVE_OK) {
		r = ib_error_setc(err, IB_EINVALID, "%s", archive_error_string(a));
		goto verify;
	}
	for (;;) {
		struct archive_entry *ae;
		int ar = archive_read_next_header(a, &ae);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = ib_error_setc(err, IB_EINVALID, "not a valid tar archive: %s",
					  archive_error_string(a));
			goto verify;
		}
		const char *raw = archive_entry_pathname(ae);
		if (!raw)
			raw = "";
		cleanup_free char *path = normalise_path(raw);
		char content[IB_DIGEST_BUFLEN];
		r = hash_data(a, dbuf, content_ctx, path, content, err);
		if (r < 0)
			goto verify;
		char xattrs[IB_DIGEST_BUFLEN] = "";
		if (archive_entry_xattr_reset(ae) > 0) {
			ib_digest_ctx *xc = ib_digest_new();
			const char *xn;
			const void *xv;
			size_t xs;
			while (archive_entry_xattr_next(ae, &xn, &xv, &xs) == ARCHIVE_OK) {
				ib_digest_update(xc, xn, strlen(xn) + 1);
				ib_digest_update(xc, xv, xs);
			}
			ib_digest_final(xc, xattrs);
			ib_digest_free(xc);
		}
		ib_layer_entry e = {
		    .path = path,
		    .raw_path = raw,
		    .mode = archive_entry_mode(ae),
		    .uid = archive_entry_uid(ae),
		    .gid = archive_entry_gid(ae),
		    .size = archive_entry_size(ae),
		    .mtime = archive_entry_mtime(ae),
		    .rdev = archive_entry_rdev(ae),
		    .symlink = archive_entry_symlink(ae),
		    .hardlink = archive_entry_hardlink(ae),
		    .content = content,
		    .xattrs = xattrs,
		};
		r = cb(&e, payload, err);
		if (r < 0)
			goto out;
	}
verify:
	/* Also after a tar error: a blob that does not match its digest is
	 * reported as corrupt, whatever libarchive made of it. */
	{
		int dr = blob_drain(&br, r < 0 ? NULL : err);
		if (dr < 0) {
			if (r == 0)
				r = dr;
			goto out;
		}
		char got[IB_DIGEST_BUFLEN];
		ib_digest_final(br.ctx, got);
		if (strcmp(got, blob_digest) != 0 ||
		    (expect_size >= 0 && br.total != expect_size)) {
			ib_error_free(err);
			r = ib_error_setc(err, IB_EDIGEST, "blob %s in the store is corrupt",
					  blob_digest);
		}
	}
out:
	if (r < 0)
		ib_error_wrap(err, "layer %s", blob_digest);
	archive_read_free(a);
	ib_digest_free(br.ctx);
	ib_digest_free(content_ctx);
	return r;
}

/* ---- the flattened filesystem: a JSON object path -> signature ---- */

/* Keys and values are set with the _nocheck calls: file names need not be
 * UTF-8 and must not be dropped for it. */

static bool is_dir_sig(json_t *v)
{
	const char *s = json_string_value(v);
	return s && s[0] == 'd';
}

/* Remove every path strictly below dir ("" = everything). */
static void remove_below(json_t *fs, const char *dir)
{
	size_t dl = strlen(dir);
	void *it = json_object_iter(fs);
	while (it) {
		const char *key = json_object_iter_key(it);
		/* The successor stays valid when key is deleted. */
		void *next = json_object_iter_next(fs, it);
		if (dl == 0 || (!strncmp(key, dir, dl) && key[dl] == '/'))
			json_object_del(fs, key);
		it = next;
	}
}

/* What is compared: type, mode, owner and, by type, size and content
 * digest, link target or device numbers. */
static char *entry_sig(const ib_layer_entry *e, json_t *layer_adds, json_t *fs)
{
	unsigned perm = (unsigned)(e->mode & 07777);
	int64_t uid = e->uid, gid = e->gid;
	if (e->hardlink) {
		cleanup_free char *target = normalise_path(e->hardlink);
		json_t *t = target[0] ? json_object_get(layer_adds, target) : NULL;
		if (!t && target[0])
			t = json_object_get(fs, target);
		/* A hardlink has its target's content and metadata. */
		if (t)
			return xstrdup(json_string_value(t));
		return xasprintf("h %s", e->hardlink);
	}
	switch (e->mode & S_IFMT) {
	case S_IFREG:
		return xasprintf("f %04o %" PRId64 ":%" PRId64 " %" PRId64 " %s", perm, uid, gid,
				 e->size, e->content);
	case S_IFDIR:
		return xasprintf("d %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	case S_IFLNK:
		return xasprintf("l %04o %" PRId64 ":%" PRId64 " -> %s", perm, uid, gid,
				 e->symlink ? e->symlink : "");
	case S_IFCHR:
	case S_IFBLK:
		return xasprintf("%c %04o %" PRId64 ":%" PRId64 " %u,%u",
				 (e->mode & S_IFMT) == S_IFCHR ? 'c' : 'b', perm, uid, gid,
				 major(e->rdev), minor(e->rdev));
	case S_IFIFO:
		return xasprintf("p %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	default:
		return xasprintf("? %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	}
}

/* One layer's entries, gathered while its blob is read and applied to fs
 * only once the blob is known to be intact. */
typedef struct layer_changes {
	json_t *fs;	  /* borrowed: the filesystem below this layer */
	json_t *adds;	  /* path -> signature */
	char **whiteouts; /* paths removed (with everything below them) */
	char **opaques;	  /* directories emptied ("" = the root) */
} layer_changes;

static int collect_entry(const ib_layer_entry *e, void *payload, ib_error **err)
{
	(void)err;
	layer_changes *lc = payload;
	if (!e->path[0])
		return 0;
	const char *slash = strrchr(e->path, '/');
	const char *base = slash ? slash + 1 : e->path;
	cleanup_free char *dir = slash ? xstrndup(e->path, (size_t)(slash - e->path)) : xstrdup("");
	if (!strcmp(base, IB_WH_OPAQUE)) {
		ib_strv_push(&lc->opaques, dir);
	} else if (!strncmp(base, IB_WH_PREFIX, strlen(IB_WH_PREFIX))) {
		/* ".wh." alone names nothing (and must not empty the root). */
		const char *name = base + strlen(IB_WH_PREFIX);
		if (*name) {
			cleanup_free char *victim =
			    dir[0] ? xasprintf("%s/%s", dir, name) : xstrdup(name);
			ib_strv_push(&lc->whiteouts, victim);
		}
	} else {
		char *sig = entry_sig(e, lc->adds, lc->fs);
		json_object_set_new_nocheck(lc->adds, e->path, json_string_nocheck(sig));
		free(sig);
	}
	return 0;
}

static void apply_changes(layer_changes *lc)
{
	json_t *fs = lc->fs;
	/* Deletions first: this layer's own entries are never hidden by its
	 * whiteouts or opaque markers. */
	for (char **p = lc->opaques; p && *p; p++)
		remove_below(fs, *p);
	for (char **p = lc->whiteouts; p && *p; p++) {
		json_object_del(fs, *p);
		remove_below(fs, *p);
	}
	for (void *it = json_object_iter(lc->adds); it; it = json_object_iter_next(lc->adds, it)) {
		const char *key = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		json_t *old = json_object_get(fs, key);
		/* A non-directory over a directory hides the directory's tree. */
		if (old && is_dir_sig(old) && !is_dir_sig(v))
			remove_below(fs, key);
		json_object_set_nocheck(fs, key, v);
	}
}

static int flatten(ib_store *s, const char *ref, json_t **out, ib_error **err)
{
	*out = NULL;
	ib_image *img = NULL;
	int r = ib_store_image_load(s, ref, &img, err);
	if (r < 0)
		return r;
	json_t *fs = json_object();
	for (size_t k = 0; r == 0 && k < img->manifest->n_layers; k++) {
		const ib_descriptor *layer = &img->manifest->layers[k];
		layer_changes lc = {fs, json_object(), NULL, NULL};
		r = ib_layer_walk(s, layer->digest, layer->size, collect_entry, &lc, err);
		if (r == 0)
			apply_changes(&lc);
		json_decref(lc.adds);
		ib_strv_free(lc.whiteouts);
		ib_strv_free(lc.opaques);
	}
	ib_image_free(img);
	if (r < 0) {
		json_decref(fs);
		ib_error_wrap(err, "%s", ref);
		return r;
	}
	*out = fs;
	return 0;
}

static int diff_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const ib_diff_entry *)a)->path, ((const ib_diff_entry *)b)->path);
}

int ib_image_diff(ib_store *s, const char *ref1, const char *ref2, ib_diff_entry **out,
		  size_t *n_out, ib_error **err)
{
	return ib_image_diff_stores(s, ref1, s, ref2, out, n_out, err);
}

int ib_image_diff_stores(ib_store *s1, const char *ref1, ib_store *s2, const char *ref2,
			 ib_diff_entry **out, size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	json_t *a = NULL, *b = NULL;
	int r = flatten(s1, ref1, &a, err);
	if (r == 0)
		r = flatten(s2, ref2, &b, err);
	if (r < 0) {
		json_decref(a);
		return r;
	}
	ib_diff_entry *v = NULL;
	size_t n = 0, cap = json_object_size(a) + json_object_size(b);
	if (cap)
		v = xcalloc(cap, sizeof(*v));
	for (void *it = json_object_iter(a); it; it = json_object_iter_next(a, it)) {
		const char *key = json_object_iter_key(it);
		json_t *w = json_object_get(b, key);
		if (!w)
			v[n++] = (ib_diff_entry){'D', xstrdup(key)};
		else if (strcmp(json_string_value(json_object_iter_value(it)),
				json_string_value(w)) != 0)
			v[n++] = (ib_diff_entry){'C', xstrdup(key)};
	}
	for (void *it = json_object_iter(b); it; it = json_object_iter_next(b, it)) {
		const char *key = json_object_iter_key(it);
		if (!json_object_get(a, key))
			v[n++] = (ib_diff_entry){'A', xstrdup(key)};
	}
	json_decref(a);
	json_decref(b);
	if (n == 0) {
		free(v);
		return 0;
	}
	qsort(v, n, sizeof(*v), diff_entry_cmp);
	*out = v;
	*n_out = n;
	return 0;
}

void ib_diff_entries_free(ib_diff_entry *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].path);
	free(v);
}

/* ---- first difference (build --check) ---- */

typedef struct tar_entry_sum {
	char *path; /* as written in the tar */
	char *meta; /* type, mode, owner, size, link target, content digest */
	mode_t mode;
	int64_t uid, gid, size, mtime;
	char *link; /* "" for none */
	char content[IB_DIGEST_BUFLEN];
	char xattrs[IB_DIGEST_BUFLEN];
} tar_entry_sum;

typedef struct sum_list {
	tar_entry_sum *v;
	size_t n;
} sum_list;

static void free_sums(tar_entry_sum *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].path);
		free(v[i].meta);
		free(v[i].link);
	}
	free(v);
}

static int sum_entry(const ib_layer_entry *e, void *payload, ib_error **err)
{
	(void)err;
	sum_list *l = payload;
	const char *link = e->symlink ? e->symlink : e->hardlink;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n].path = xstrdup(e->raw_path);
	l->v[l->n].meta =
	    xasprintf("mode %o, owner %lld:%lld, size %lld, mtime %lld, link \"%s\", "
		      "content %.19s",
		      (unsigned)e->mode, (long long)e->uid, (long long)e->gid, (long long)e->size,
		      (long long)e->mtime, link ? link : "", e->content);
	tar_entry_sum *t = &l->v[l->n];
	t->mode = e->mode;
	t->uid = e->uid;
	t->gid = e->gid;
	t->size = e->size;
	t->mtime = e->mtime;
	t->link = xstrdup(link ? link : "");
	snprintf(t->content, sizeof(t->content), "%s", e->content);
	snprintf(t->xattrs, sizeof(t->xattrs), "%s", e->xattrs ? e->xattrs : "");
	l->n++;
	return 0;
}

/* Every entry of one layer, in tar order. */
static int list_layer(ib_store *s, const ib_descriptor *layer, tar_entry_sum **out, size_t *n_out,
		      ib_error **err)
{
	sum_list l = {NULL, 0};
	int r = ib_layer_walk(s, layer->digest, layer->size, sum_entry, &l, err);
	if (r < 0) {
		free_sums(l.v, l.n);
		return r;
	}
	*out = l.v;
	*n_out = l.n;
	return 0;
}


/* ---- every difference (build --check) ---- */

static int sum_cmp(const void *a, const void *b)
{
	return strcmp(((const tar_entry_sum *)a)->path, ((const tar_entry_sum *)b)->path);
}

/* What differs between two entries of one path: "content, mode (0644 vs
 * 0755)", or NULL when nothing does. */
static char *entry_difference(const tar_entry_sum *x, const tar_entry_sum *y)
{
	ib_buf b = IB_BUF_INIT;
	if ((x->mode & S_IFMT) != (y->mode & S_IFMT))
		ib_buf_appendf(&b, ", type");
	if (strcmp(x->content, y->content) || x->size != y->size)
		ib_buf_appendf(&b, ", content");
	if (strcmp(x->link, y->link))
		ib_buf_appendf(&b, ", link (\"%s\" vs \"%s\")", x->link, y->link);
	if ((x->mode & 07777) != (y->mode & 07777))
		ib_buf_appendf(&b, ", mode (%04o vs %04o)", (unsigned)(x->mode & 07777),
			       (unsigned)(y->mode & 07777));
	if (x->uid != y->uid || x->gid != y->gid)
		ib_buf_appendf(&b, ", owner (%lld:%lld vs %lld:%lld)", (long long)x->uid,
			       (long long)x->gid, (long long)y->uid, (long long)y->gid);
	if (x->mtime != y->mtime)
		ib_buf_appendf(&b, ", mtime (%lld vs %lld)", (long long)x->mtime,
			       (long long)y->mtime);
	if (strcmp(x->xattrs, y->xattrs))
		ib_buf_appendf(&b, ", xattr");
	if (b.len == 0) {
		ib_buf_free(&b);
		return NULL;
	}
	char *all = ib_buf_steal(&b, NULL);
	char *out = xstrdup(all + 2);
	free(all);
	return out;
}

typedef struct diff_lines {
	char **v;
	size_t n, limit, total;
} diff_lines;

static void add_line(diff_lines *d, char *line)
{
	if (d->n < d->limit) {
		d->v = xrealloc(d->v, (d->n + 2) * sizeof(char *));
		d->v[d->n++] = line;
		d->v[d->n] = NULL;
	} else {
		free(line);
	}
	d->total++;
}

static void compare_layer(diff_lines *d, size_t layer, tar_entry_sum *ea, size_t ca,
			  tar_entry_sum *eb, size_t cb)
{
	qsort(ea, ca, sizeof(*ea), sum_cmp);
	qsort(eb, cb, sizeof(*eb), sum_cmp);
	size_t i = 0, k = 0;
	while (i < ca || k < cb) {
		int c = i >= ca ? 1 : k >= cb ? -1 : strcmp(ea[i].path, eb[k].path);
		if (c < 0) {
			add_line(d, xasprintf("layer %zu: %s: only in the first build", layer,
					      ea[i].path));
			i++;
		} else if (c > 0) {
			add_line(d, xasprintf("layer %zu: %s: only in the second build", layer,
					      eb[k].path));
			k++;
		} else {
			char *what = entry_difference(&ea[i], &eb[k]);
			if (what)
				add_line(d,
					 xasprintf("layer %zu: %s: %s", layer, ea[i].path, what));
			free(what);
			i++;
			k++;
		}
	}
}

int ib_image_differences(ib_store *s, const char *digest_a, const char *digest_b, size_t limit,
			 char ***lines, size_t *n_total, ib_error **err)
{
	*lines = NULL;
	*n_total = 0;
	if (!strcmp(digest_a, digest_b))
		return 0;
	ib_image *a = NULL, *bimg = NULL;
	int rc = ib_store_image_load_digest(s, digest_a, &a, err);
	if (rc == 0)
		rc = ib_store_image_load_digest(s, digest_b, &bimg, err);
	if (rc < 0) {
		ib_image_free(a);
		return rc;
	}
	diff_lines d = {NULL, 0, limit, 0};
	size_t na = a->manifest->n_layers, nb = bimg->manifest->n_layers;
	for (size_t i = 0; i < na && i < nb; i++) {
		if (!strcmp(a->manifest->layers[i].digest, bimg->manifest->layers[i].digest))
			continue;
		tar_entry_sum *ea = NULL, *eb = NULL;
		size_t ca = 0, cb = 0;
		rc = list_layer(s, &a->manifest->layers[i], &ea, &ca, err);
		if (rc == 0)
			rc = list_layer(s, &bimg->manifest->layers[i], &eb, &cb, err);
		if (rc < 0) {
			free_sums(ea, ca);
			break;
		}
		size_t before = d.total;
		compare_layer(&d, i + 1, ea, ca, eb, cb);
		if (d.total == before)
			add_line(&d,
				 xasprintf("layer %zu: same files, different tar bytes (%s vs %s)",
					   i + 1, a->manifest->layers[i].digest,
					   bimg->manifest->layers[i].digest));
		free_sums(ea, ca);
		free_sums(eb, cb);
	}
	if (rc == 0 && na != nb)
		add_line(&d, xasprintf("the builds have %zu and %zu layers", na, nb));
	if (rc == 0 && strcmp(a->manifest->config.digest, bimg->manifest->config.digest)) {
		/* the layers' diff_ids follow the layers: report the rest only */
		json_t *ca = json_deep_copy(a->config), *cb = json_deep_copy(bimg->config);
		json_object_del(ca, "rootfs");
		json_object_del(cb, "rootfs");
		if (!json_equal(ca, cb) || d.total == 0)
			add_line(&d, xasprintf("the image configs differ (%s vs %s)",
					       a->manifest->config.digest,
					       bimg->manifest->config.digest));
		json_decref(ca);
		json_decref(cb);
	}
	if (rc == 0 && d.total == 0)
		add_line(&d, xstrdup("the manifests differ (annotations)"));
	ib_image_free(a);
	ib_image_free(bimg);
	if (rc < 0) {
		ib_strv_free(d.v);
		return rc;
	}
	*lines = d.v;
	*n_total = d.total;
	return 0;
}
