/* imgbuild diff: file-level differences between two images, computed from
 * the layer tars (read with libarchive, nothing is extracted). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cli/commands.h"
#include "util.h"

static const char usage[] =
    "Usage: imgbuild diff REF1 REF2\n"
    "\n"
    "Show the files that differ between the filesystems of two images, one\n"
    "line each, sorted by path:\n"
    "  A /path   only in REF2 (added)\n"
    "  D /path   only in REF1 (deleted)\n"
    "  C /path   in both, but type, content, link target, mode or owner differ\n"
    "Modification times are not compared.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

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

/* Hash whatever libarchive did not read (padding after the end marker). */
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

/* ---- the flattened filesystem: path -> signature string ---- */

static char *strip_path(const char *raw)
{
	while (raw[0] == '.' && raw[1] == '/')
		raw += 2;
	while (*raw == '/')
		raw++;
	size_t n = strlen(raw);
	while (n > 0 && raw[n - 1] == '/')
		n--;
	if (n == 0 || (n == 1 && raw[0] == '.'))
		return NULL;
	return xstrndup(raw, n);
}

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

static char *content_sig(struct archive *a, struct archive_entry *e, const char *path,
			 ib_error **err)
{
	ib_digest_ctx *ctx = ib_digest_new();
	cleanup_free char *buf = xmalloc(READ_BUF);
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, READ_BUF);
		if (n == 0)
			break;
		if (n < 0) {
			ib_digest_free(ctx);
			ib_error_setc(err, IB_EINVALID, "read /%s: %s", path,
				      archive_error_string(a) ? archive_error_string(a) : "error");
			return NULL;
		}
		ib_digest_update(ctx, buf, (size_t)n);
	}
	char d[IB_DIGEST_BUFLEN];
	ib_digest_final(ctx, d);
	ib_digest_free(ctx);
	return xasprintf("f %04o %" PRId64 ":%" PRId64 " %" PRId64 " %s",
			 (unsigned)(archive_entry_perm(e) & 07777), (int64_t)archive_entry_uid(e),
			 (int64_t)archive_entry_gid(e), (int64_t)archive_entry_size(e), d);
}

static char *entry_sig(struct archive *a, struct archive_entry *e, const char *path,
		       json_t *layer_adds, json_t *fs, ib_error **err)
{
	unsigned perm = (unsigned)(archive_entry_perm(e) & 07777);
	int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	const char *hl = archive_entry_hardlink(e);
	if (hl) {
		cleanup_free char *target = strip_path(hl);
		json_t *t = target ? json_object_get(layer_adds, target) : NULL;
		if (!t && target)
			t = json_object_get(fs, target);
		/* A hardlink has its target's content and metadata. */
		if (t)
			return xstrdup(json_string_value(t));
		return xasprintf("h %s", hl);
	}
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
		return content_sig(a, e, path, err);
	case AE_IFDIR:
		return xasprintf("d %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	case AE_IFLNK:
		return xasprintf("l %04o %" PRId64 ":%" PRId64 " -> %s", perm, uid, gid,
				 archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
	case AE_IFCHR:
	case AE_IFBLK: {
		dev_t rdev = archive_entry_rdev(e);
		return xasprintf("%c %04o %" PRId64 ":%" PRId64 " %u,%u",
				 archive_entry_filetype(e) == AE_IFCHR ? 'c' : 'b', perm, uid, gid,
				 major(rdev), minor(rdev));
	}
	case AE_IFIFO:
		return xasprintf("p %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	default:
		return xasprintf("? %04o %" PRId64 ":%" PRId64, perm, uid, gid);
	}
}

/* Apply one layer (a store blob) to fs. */
static int apply_layer(ib_store *s, const ib_descriptor *layer, json_t *fs, ib_error **err)
{
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(s, layer->digest, &fd, &size, err);
	if (r < 0)
		return r;
	cleanup_free char *rbuf = xmalloc(READ_BUF);
	blob_reader br = {fd, rbuf, ib_digest_new(), 0};
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	json_t *adds = json_object();
	json_t *whiteouts = json_array();
	json_t *opaques = json_array();
	if (archive_read_open(a, &br, NULL, blob_read, NULL) != ARCHIVE_OK) {
		r = ib_error_setc(err, IB_EINVALID, "%s", archive_error_string(a));
		goto out;
	}
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			r = ib_error_setc(err, IB_EINVALID, "not a valid tar archive: %s",
					  archive_error_string(a));
			goto out;
		}
		const char *raw = archive_entry_pathname(e);
		cleanup_free char *path = raw ? strip_path(raw) : NULL;
		if (!path)
			continue;
		const char *slash = strrchr(path, '/');
		const char *base = slash ? slash + 1 : path;
		cleanup_free char *dir =
		    slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup("");
		if (!strcmp(base, ".wh..wh..opq")) {
			json_array_append_new(opaques, json_string(dir));
		} else if (!strncmp(base, ".wh.", 4)) {
			cleanup_free char *victim =
			    dir[0] ? xasprintf("%s/%s", dir, base + 4) : xstrdup(base + 4);
			json_array_append_new(whiteouts, json_string(victim));
		} else {
			char *sig = entry_sig(a, e, path, adds, fs, err);
			if (!sig) {
				r = IB_EINVALID;
				goto out;
			}
			json_object_set_new(adds, path, json_string_nocheck(sig));
			free(sig);
		}
	}
	r = blob_drain(&br, err);
	if (r < 0)
		goto out;
	char got[IB_DIGEST_BUFLEN];
	ib_digest_final(br.ctx, got);
	if (br.total != layer->size || strcmp(got, layer->digest) != 0) {
		r = ib_error_setc(err, IB_EDIGEST, "blob %s in the store is corrupt",
				  layer->digest);
		goto out;
	}
	/* Deletions first: this layer's own entries are never hidden by its
	 * whiteouts or opaque markers. */
	for (size_t i = 0; i < json_array_size(opaques); i++)
		remove_below(fs, json_string_value(json_array_get(opaques, i)));
	for (size_t i = 0; i < json_array_size(whiteouts); i++) {
		const char *p = json_string_value(json_array_get(whiteouts, i));
		json_object_del(fs, p);
		remove_below(fs, p);
	}
	for (void *it = json_object_iter(adds); it; it = json_object_iter_next(adds, it)) {
		const char *key = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		json_t *old = json_object_get(fs, key);
		/* A non-directory over a directory hides the directory's tree. */
		if (old && is_dir_sig(old) && !is_dir_sig(v))
			remove_below(fs, key);
		json_object_set(fs, key, v);
	}
out:
	if (r < 0)
		ib_error_wrap(err, "layer %s", layer->digest);
	archive_read_free(a);
	ib_digest_free(br.ctx);
	json_decref(adds);
	json_decref(whiteouts);
	json_decref(opaques);
	return r;
}

static int flatten(ib_store *s, const char *ref, json_t **out, ib_error **err)
{
	ib_image *img = NULL;
	int r = ib_store_image_load(s, ref, &img, err);
	if (r < 0)
		return r;
	json_t *fs = json_object();
	for (size_t k = 0; r == 0 && k < img->manifest->n_layers; k++)
		r = apply_layer(s, &img->manifest->layers[k], fs, err);
	ib_image_free(img);
	if (r < 0) {
		json_decref(fs);
		return ib_error_wrap(err, "%s", ref);
	}
	*out = fs;
	return 0;
}

typedef struct change {
	const char *path;
	char kind;
} change;

static int change_cmp(const void *a, const void *b)
{
	return strcmp(((const change *)a)->path, ((const change *)b)->path);
}

int ib_cmd_diff(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	const char *refs[2];
	int n = 0;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1])
			return ib_cli_usage_error("diff", "unknown option '%s'", argv[i]);
		if (n == 2)
			return ib_cli_usage_error("diff", "unexpected argument '%s'", argv[i]);
		refs[n++] = argv[i];
	}
	if (n != 2)
		return ib_cli_usage_error("diff", "expected two image references");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	json_t *a = NULL, *b = NULL;
	int r = flatten(s, refs[0], &a, &err);
	if (r == 0)
		r = flatten(s, refs[1], &b, &err);
	ib_store_free(s);
	if (r < 0) {
		json_decref(a);
		return ib_cli_fail(&err);
	}
	size_t cap = json_object_size(a) + json_object_size(b);
	change *ch = xcalloc(cap ? cap : 1, sizeof(change));
	size_t nc = 0;
	for (void *it = json_object_iter(a); it; it = json_object_iter_next(a, it)) {
		const char *key = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		json_t *w = json_object_get(b, key);
		if (!w)
			ch[nc++] = (change){key, 'D'};
		else if (strcmp(json_string_value(v), json_string_value(w)) != 0)
			ch[nc++] = (change){key, 'C'};
	}
	for (void *it = json_object_iter(b); it; it = json_object_iter_next(b, it)) {
		const char *key = json_object_iter_key(it);
		if (!json_object_get(a, key))
			ch[nc++] = (change){key, 'A'};
	}
	qsort(ch, nc, sizeof(change), change_cmp);
	for (size_t i = 0; i < nc; i++)
		printf("%c /%s\n", ch[i].kind, ch[i].path);
	free(ch);
	json_decref(a);
	json_decref(b);
	return 0;
}
