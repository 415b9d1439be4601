/* The copy step: sources from the context, a stage or an image, the
 * destination resolved inside the image, owners from the image's passwd,
 * the cache key from contents and metadata, the layer written, and its
 * unpacked copy laid out directly. */
#include "builder_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "digest.h"
#include "passwd.h"
#include "pathglob.h"
#include "plan.h"
#include "progress.h"
#include "util.h"

#define PASSWD_READ_MAX ((size_t)16 << 20) /* an image's /etc/passwd or /etc/group */

typedef struct copy_item {
	char *dest; /* archive path, relative ("usr/bin/x") */
	char *host; /* absolute host path */
	char *rel;  /* path relative to the source root (for --explain) */
	struct stat st;
	char content[IB_DIGEST_BUFLEN]; /* content digest, link target digest, ... */
} copy_item;

/* A directory on the way to (or at) the destination: written into the
 * layer with the image's own metadata when it exists, 0755 root otherwise. */
typedef struct parent_dir {
	char *path;
	uint32_t mode;
	int64_t uid, gid;
	bool created; /* not in the image */
} parent_dir;

typedef struct copy_list {
	copy_item *items;
	size_t n, alloc;
	parent_dir *parents; /* shallowest first */
	size_t n_parents;
	bool last_is_dest; /* the last parent is the destination directory */
} copy_list;

static void copy_list_add(copy_list *l, const char *dest, const char *host, const char *rel,
			  const struct stat *st)
{
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? l->alloc * 2 : 64;
		l->items = xrealloc(l->items, l->alloc * sizeof(copy_item));
	}
	copy_item *it = &l->items[l->n++];
	it->dest = xstrdup(dest);
	it->host = xstrdup(host);
	it->rel = xstrdup(rel);
	it->st = *st;
}

static void copy_list_free(copy_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].dest);
		free(l->items[i].host);
		free(l->items[i].rel);
	}
	free(l->items);
	for (size_t i = 0; i < l->n_parents; i++)
		free(l->parents[i].path);
	free(l->parents);
}

/* One layer's entry for rel: 1 found (*st, and *target for a symlink), 0 not
 * in this layer, -1 deleted by this layer (an overlay whiteout).  Nothing
 * is resolved through a symlink inside the layer directory. */
static int layer_entry(const char *layer_dir, const char *rel, struct stat *st, char *target,
		       size_t tlen)
{
	cleanup_close int root = open(layer_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return 0;
	cleanup_free char *parent = xstrdup(rel);
	char *slash = strrchr(parent, '/');
	const char *base = slash ? rel + (slash - parent) + 1 : rel;
	cleanup_close int pfd = -1;
	if (slash) {
		*slash = '\0';
		struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
		pfd = (int)syscall(SYS_openat2, root, parent, &how, sizeof(how));
		if (pfd < 0)
			return 0;
	}
	int dfd = slash ? pfd : root;
	if (fstatat(dfd, base, st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (S_ISCHR(st->st_mode) && st->st_rdev == 0)
		return -1;
	if (S_ISLNK(st->st_mode)) {
		ssize_t n = readlinkat(dfd, base, target, tlen - 1);
		if (n < 0)
			return 0;
		target[n] = '\0';
	}
	return 1;
}

/* What the stage's filesystem holds at rel (top-most layer wins). */
static int image_entry(builder *b, stage_state *st, const char *rel, struct stat *out, char *target,
		       size_t tlen, ib_error **err)
{
	for (size_t i = st->n_layers; i > 0; i--) {
		layer_ref *l = &st->layers[i - 1];
		if (build_ensure_unpacked(b, l, err) < 0)
			return -1;
		cleanup_free char *dir = ib_store_layer_dir(b->store, l->diff_id);
		int r = layer_entry(dir, rel, out, target, tlen);
		if (r != 0)
			return r > 0 ? 1 : 0;
	}
	return 0;
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
	cleanup_free char *path = xstrdup(dest);
	for (int hops = 0;; hops++) {
		if (hops > 40)
			return ib_error_setc(err, IB_EINVALID,
					     "copy: destination /%s: too many symlinks", dest);
		for (size_t i = 0; i < l->n_parents; i++)
			free(l->parents[i].path);
		l->n_parents = 0;
		cleanup_free char *cur = xstrdup("");
		char *jump = NULL;
		const char *p = path;
		while (*p) {
			size_t n = strcspn(p, "/");
			const char *rest = p + n + (p[n] == '/');
			bool last = *rest == '\0';
			if (last && !whole)
				break;
			cleanup_free char *cand =
			    *cur ? xasprintf("%s/%.*s", cur, (int)n, p) : xstrndup(p, n);
			struct stat sb;
			char target[PATH_MAX];
			int r = image_entry(b, st, cand, &sb, target, sizeof(target), err);
			if (r < 0)
				return -1;
			if (r == 1 && S_ISLNK(sb.st_mode)) {
				cleanup_free char *joined =
				    target[0] == '/' ? xasprintf("%s/%s", target, rest)
						     : xasprintf("/%s/%s/%s", cur, target, rest);
				jump = build_clean_path(joined);
				break;
			}
			if (r == 1 && !S_ISDIR(sb.st_mode))
				return ib_error_setc(
				    err, IB_EINVALID,
				    "copy: destination /%s: /%s is not a directory", dest, cand);
			add_parent(l, cand, r == 1 ? &sb : NULL);
			free(cur);
			cur = steal_pointer(&cand);
			p = rest;
		}
		if (jump) {
			free(path);
			path = xstrdup(jump[0] == '/' ? jump + 1 : jump);
			free(jump);
			continue;
		}
		*out = whole || !*p ? steal_pointer(&cur)
				    : (*cur ? xasprintf("%s/%s", cur, p) : xstrdup(p));
		return 0;
	}
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

static int walk_tree(copy_list *l, const char *host, const char *dest, const char *rel,
		     json_t *exclude, ib_error **err)
{
	cleanup_dir DIR *d = opendir(host);
	if (!d)
		return ib_error_set(err, errno, "open %s", rel);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *h = ib_path_join(host, de->d_name);
		cleanup_free char *dd =
		    *dest ? ib_path_join(dest, de->d_name) : xstrdup(de->d_name);
		cleanup_free char *rr = *rel ? ib_path_join(rel, de->d_name) : xstrdup(de->d_name);
		if (excluded(exclude, rr))
			continue;
		struct stat st;
		if (lstat(h, &st) < 0)
			return ib_error_set(err, errno, "stat %s", rr);
		copy_list_add(l, dd, h, rr, &st);
		if (S_ISDIR(st.st_mode) && walk_tree(l, h, dd, rr, exclude, err) < 0)
			return -1;
	}
	return 0;
}

/* Expand a copy source into (rel path) matches under root. */
static int expand_source(const char *root, const char *src, char ***out, ib_error **err)
{
	cleanup_free char *clean = xstrdup(src);
	/* strip leading "/" and "./" (sources are relative to the root) */
	char *s = clean;
	while (*s == '/' || (s[0] == '.' && s[1] == '/'))
		s += (*s == '/') ? 1 : 2;
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return ib_error_setc(err, IB_EUNSAFE, "copy: source \"%s\" leaves its root",
					     src);
		p += len;
		while (*p == '/')
			p++;
	}
	char **res = NULL;
	if (*s == '\0' || !strcmp(s, ".")) {
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
static int copy_collect(builder *b, stage_state *st, json_t *step, const char *root,
			bool from_context, copy_list *l, ib_error **err)
{
	json_t *sources = json_object_get(step, "sources");
	json_t *exclude = json_object_get(step, "exclude");
	const char *dest_in = jstr(step, "dest");
	cleanup_free char *dest_abs = build_image_path(st, dest_in);
	bool dest_is_dir = dest_in[strlen(dest_in) - 1] == '/';
	char rootreal[PATH_MAX];
	if (!realpath(root, rootreal))
		return ib_error_set(err, errno, "context %s", root);

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
	cleanup_free char *dest_resolved = NULL;
	l->last_is_dest = whole;
	if (*(dest_abs + 1) &&
	    resolve_dest(b, st, dest_abs + 1, whole, l, &dest_resolved, err) < 0) {
		ib_strv_free(all);
		return -1;
	}
	const char *dest_rel = dest_resolved ? dest_resolved : "";
	int rc = 0;
	for (size_t k = 0; all[k] && rc == 0; k++) {
		const char *rel = all[k];
		if (*rel && excluded(exclude, rel))
			continue;
		cleanup_free char *host = *rel ? ib_path_join(root, rel) : xstrdup(root);
		/* the parent of a source must resolve inside the root: a symlink
		 * in the context, or an absolute one in a stage, must not lead the
		 * copy to host files */
		if (*rel) {
			cleanup_free char *parent = xstrdup(host);
			*strrchr(parent, '/') = '\0';
			char pr[PATH_MAX];
			if (!realpath(parent, pr) || !build_path_within(rootreal, pr)) {
				rc = ib_error_setc(err, IB_EUNSAFE,
						   "copy: source \"%s\" is outside the %s", rel,
						   from_context ? "build context" : "source image");
				break;
			}
		}
		struct stat sst;
		if (lstat(host, &sst) < 0) {
			rc = ib_error_set(err, errno, "copy: source \"%s\"", *rel ? rel : ".");
			break;
		}
		if (S_ISDIR(sst.st_mode)) {
			/* directory: its contents go into dest (recorded in l->parents) */
			rc = walk_tree(l, host, dest_rel, rel, exclude, err);
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
	}
	ib_strv_free(all);
	return rc;
}

/* Find NAME in the stage's /etc/passwd (field 3 = uid, 4 = gid) or
 * /etc/group (field 3 = gid), reading the top-most layer that has the file. */
static int lookup_id(builder *b, stage_state *st, const char *file, const char *name, int64_t *id,
		     int64_t *gid, ib_error **err)
{
	for (size_t i = st->n_layers; i > 0; i--) {
		layer_ref *l = &st->layers[i - 1];
		if (build_ensure_unpacked(b, l, err) < 0)
			return -1;
		cleanup_free char *dir = ib_store_layer_dir(b->store, l->diff_id);
		/* read the file inside the layer only: a symlinked /etc in an
		 * image must not lead to the host's passwd */
		cleanup_close int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		struct stat sb;
		if (dfd < 0 || fstatat(dfd, file, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISREG(sb.st_mode))
			break; /* a whiteout or something odd hides lower copies */
		struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
		cleanup_close int fd = (int)syscall(SYS_openat2, dfd, file, &how, sizeof(how));
		if (fd < 0)
			break;
		cleanup_free char *data = NULL;
		size_t len = 0;
		if (ib_read_fd(fd, PASSWD_READ_MAX, &data, &len, err) < 0)
			return ib_error_wrap(err, "copy: read the image's /%s", file);
		uint32_t v, g;
		if (ib_passwd_find(data, len, name, &v, gid ? &g : NULL)) {
			*id = v;
			if (gid)
				*gid = g;
			return 0;
		}
		break;
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
	if (!*it->host || !S_ISREG(it->st.st_mode) || it->st.st_nlink < 2)
		return NULL;
	for (size_t k = 0; k < *n_linked; k++)
		if (linked[k]->st.st_dev == it->st.st_dev && linked[k]->st.st_ino == it->st.st_ino)
			return linked[k];
	linked[(*n_linked)++] = it;
	return NULL;
}

static int copy_digest(builder *b, copy_list *l, char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	ib_digest_ctx *c = ib_digest_new();
	/* hardlinks: a later name of an inode is hashed as a link to the first */
	const copy_item **linked = xcalloc(l->n + 1, sizeof(*linked));
	size_t n_linked = 0;
	int rc = 0;
	for (size_t i = 0; i < l->n && rc == 0; i++) {
		copy_item *it = &l->items[i];
		const copy_item *orig = first_link(linked, &n_linked, it);
		const char *link_to = orig ? orig->dest : "";
		char *content = it->content;
		content[0] = '\0';
		/* the layer stores min(mtime, epoch): only an mtime below the
		 * build timestamp can change it, so only that one is an input */
		int64_t epoch = b->o->source_date_epoch;
		int64_t clamped = it->st.st_mtime < epoch ? (int64_t)it->st.st_mtime : epoch;
		if (!*it->host) {
			snprintf(content, IB_DIGEST_BUFLEN, "dir");
		} else if (S_ISREG(it->st.st_mode)) {
			rc = ib_cache_file_digest(b->cache, it->host, &it->st, content, err);
		} else if (S_ISLNK(it->st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(it->host, target, sizeof(target) - 1);
			if (n < 0) {
				rc = ib_error_set(err, errno, "readlink %s", it->rel);
				break;
			}
			target[n] = '\0';
			ib_digest_buffer(content, target, (size_t)n);
		} else if (S_ISCHR(it->st.st_mode) || S_ISBLK(it->st.st_mode)) {
			snprintf(content, IB_DIGEST_BUFLEN, "dev:%llu",
				 (unsigned long long)it->st.st_rdev);
		}
		cleanup_free char *line = xasprintf(
		    "%s\t%o\t%u\t%u\t%lld\t%lld\t%s\t%s\n", it->dest, it->st.st_mode, it->st.st_uid,
		    it->st.st_gid, S_ISREG(it->st.st_mode) ? (long long)it->st.st_size : 0LL,
		    (long long)clamped, content, link_to);
		ib_digest_update(c, line, strlen(line));
		if (*it->host) {
			char xd[IB_DIGEST_BUFLEN];
			if (S_ISREG(it->st.st_mode))
				ib_cache_file_xattrs(b->cache, it->host, &it->st, xattrs_digest,
						     xd);
			else
				xattrs_digest(it->host, xd);
			ib_digest_update(c, xd, strlen(xd));
		}
	}
	free(linked);
	ib_digest_final(c, out);
	ib_digest_free(c);
	return rc;
}

/* rel path -> "DIGEST MODE UID:GID" of every non-directory source: what
 * --explain compares, and what tells materialize_copy a file is unchanged */
static json_t *copy_sources_json(const copy_list *l)
{
	json_t *j = json_object();
	for (size_t i = 0; i < l->n; i++) {
		const copy_item *it = &l->items[i];
		if (!*it->rel || S_ISDIR(it->st.st_mode))
			continue;
		cleanup_free char *v = xasprintf("%s %o %u:%u", it->content, it->st.st_mode,
						 it->st.st_uid, it->st.st_gid);
		json_object_set_new(j, it->rel, json_string(v));
	}
	return j;
}

/* Copy a regular file's bytes (in the kernel where possible). */
static int copy_file_data(int in, int out)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return -1;
		break;
	}
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		if (ib_write_all(out, buf, (size_t)n, NULL) < 0)
			return -1;
	}
}

/* The xattrs a layer keeps (ib_layer_keeps_xattr), best effort. */
static void copy_xattrs(const char *src, const char *dst)
{
	ib_xattr *xs = NULL;
	size_t n = 0;
	ib_error *e = NULL;
	if (ib_layer_xattrs_read(-1, src, &xs, &n, &e) < 0)
		ib_error_free(&e);
	for (size_t k = 0; k < n; k++)
		lsetxattr(dst, xs[k].name, xs[k].value, xs[k].size, 0);
	ib_layer_xattrs_free(xs, n);
}

typedef struct dest_ent {
	const char *path;
	bool is_dir;
} dest_ent;

static int cmp_dest(const void *a, const void *b)
{
	return strcmp(((const dest_ent *)a)->path, ((const dest_ent *)b)->path);
}

/* True when every destination is written once and no destination lies
 * below another one that is not a directory.  Anything else (a symlink
 * "x" and a directory "x/" from two sources, say) is left to the tar's
 * last-entry-wins rules and the safe unpacker: writing it by path here
 * could follow the symlink out of the store. */
static bool dests_are_a_tree(const copy_list *l)
{
	dest_ent *v = xcalloc(l->n + 1, sizeof(*v));
	for (size_t i = 0; i < l->n; i++)
		v[i] = (dest_ent){l->items[i].dest,
				  !*l->items[i].host || S_ISDIR(l->items[i].st.st_mode)};
	qsort(v, l->n, sizeof(*v), cmp_dest);
	bool ok = true;
	for (size_t i = 1; i < l->n && ok; i++)
		ok = strcmp(v[i - 1].path, v[i].path) != 0;
	for (size_t i = 0; i < l->n && ok; i++) {
		cleanup_free char *anc = xstrdup(v[i].path);
		for (char *sl = strrchr(anc, '/'); sl && ok; sl = strrchr(anc, '/')) {
			*sl = '\0';
			dest_ent key = {anc, false};
			dest_ent *hit = bsearch(&key, v, l->n, sizeof(*v), cmp_dest);
			ok = !hit || hit->is_dir;
		}
	}
	free(v);
	return ok;
}

/* The previous layer's copy of dest, when it is a regular file reached
 * without any symlink: only then may it be hardlinked into the new layer. */
static char *prev_file(const char *prev_real, const char *dest)
{
	char *old = ib_path_join(prev_real, dest);
	char real[PATH_MAX];
	struct stat st;
	if (realpath(old, real) && !strcmp(real, old) && lstat(old, &st) == 0 &&
	    S_ISREG(st.st_mode))
		return old;
	free(old);
	return NULL;
}

/* Write a copy step's entries straight into the unpacked layer directory,
 * as ib_unpack would lay out its tar (same owners, modes, clamped mtimes),
 * so the next run step finds its lower dir without decompressing and
 * parsing the blob again.  Any failure just leaves the layer to be
 * unpacked from its blob on demand. */
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
	if (ib_store_layer_unpacked(b->store, diff_id) || l->n == 0 || !dests_are_a_tree(l))
		return;
	cleanup_free char *tmp = ib_store_tmp_path(b->store, "copy");
	ib_error *e = NULL;
	bool ok = ib_mkdir_p(tmp, 0755, &e) == 0;
	int64_t epoch = b->o->source_date_epoch;
	/* directories on the way, with the metadata the layer gives them */
	for (size_t i = 0; i < l->n_parents && ok; i++) {
		cleanup_free char *d = ib_path_join(tmp, l->parents[i].path);
		uint32_t m;
		int64_t u, g;
		parent_meta(l, i, ov, &m, &u, &g);
		struct stat ds;
		ok = (mkdir(d, 0700) == 0 || errno == EEXIST) && lstat(d, &ds) == 0 &&
		     S_ISDIR(ds.st_mode) && lchown(d, (uid_t)u, (gid_t)g) == 0 &&
		     chmod(d, (mode_t)m) == 0;
	}
	/* files with several links become hardlinks, as in the tar */
	const copy_item **linked = xcalloc(l->n + 1, sizeof(*linked));
	size_t n_linked = 0;
	for (size_t i = 0; i < l->n && ok; i++) {
		const copy_item *it = &l->items[i];
		cleanup_free char *dst = ib_path_join(tmp, it->dest);
		struct stat st = it->st;
		if (prev_dir && *it->host && S_ISREG(st.st_mode)) {
			json_t *was = json_object_get(prev_sources, it->rel);
			json_t *now = json_object_get(sources, it->rel);
			cleanup_free char *old = was && now && json_equal(was, now)
						     ? prev_file(prev_dir, it->dest)
						     : NULL;
			if (old && link(old, dst) == 0)
				continue;
		}
		const copy_item *orig = first_link(linked, &n_linked, it);
		if (orig) {
			cleanup_free char *target = ib_path_join(tmp, orig->dest);
			ok = link(target, dst) == 0;
			continue;
		}
		if (!*it->host)
			st.st_mode = S_IFDIR | 0755;
		uid_t uid = ov->uid >= 0 ? (uid_t)ov->uid : owner_root ? 0 : st.st_uid;
		gid_t gid = ov->gid >= 0 ? (gid_t)ov->gid : owner_root ? 0 : st.st_gid;
		mode_t perm = ov->mode >= 0 ? (mode_t)ov->mode : (st.st_mode & 07777);
		int r = 0;
		if (S_ISDIR(st.st_mode)) {
			struct stat dstat;
			r = mkdir(dst, 0700) < 0 && errno != EEXIST ? -1 : 0;
			if (r == 0 && (lstat(dst, &dstat) < 0 || !S_ISDIR(dstat.st_mode)))
				r = -1; /* never chmod/chown through something else */
		} else if (S_ISREG(st.st_mode)) {
			cleanup_close int in = open(it->host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			cleanup_close int out =
			    open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
			r = in < 0 || out < 0 ? -1 : copy_file_data(in, out);
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(it->host, target, sizeof(target) - 1);
			if (n >= 0)
				target[n] = '\0';
			r = n < 0 ? -1 : symlink(target, dst);
		} else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
			r = mknod(dst, st.st_mode & S_IFMT, st.st_rdev);
		} else {
			continue; /* sockets are not in layers */
		}
		if (r == 0)
			r = lchown(dst, uid, gid);
		if (r == 0 && !S_ISLNK(st.st_mode))
			r = chmod(dst, perm); /* after chown, which clears setuid */
		if (r == 0 && *it->host)
			copy_xattrs(it->host, dst);
		if (r == 0 && !S_ISDIR(st.st_mode)) {
			struct timespec ts[2] = {{0, UTIME_OMIT},
						 {st.st_mtime < epoch ? st.st_mtime : epoch, 0}};
			r = utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
		}
		ok = r == 0;
	}
	free(linked);
	/* directories on the way carry the build timestamp, deepest first */
	for (size_t i = l->n_parents; i > 0 && ok; i--) {
		cleanup_free char *d = ib_path_join(tmp, l->parents[i - 1].path);
		struct timespec ts[2] = {{0, UTIME_OMIT}, {epoch, 0}};
		utimensat(AT_FDCWD, d, ts, AT_SYMLINK_NOFOLLOW);
	}
	/* directory mtimes last, children first */
	for (size_t i = l->n; i > 0 && ok; i--) {
		const copy_item *it = &l->items[i - 1];
		if (*it->host && !S_ISDIR(it->st.st_mode))
			continue;
		cleanup_free char *dst = ib_path_join(tmp, it->dest);
		time_t m = *it->host && it->st.st_mtime < epoch ? it->st.st_mtime : epoch;
		struct timespec ts[2] = {{0, UTIME_OMIT}, {m, 0}};
		utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
	}
	ib_error_free(&e);
	if (ok && ib_store_layer_install(b->store, tmp, diff_id, &e) == 0 && !ib_file_exists(tmp))
		return;
	ib_error_free(&e);
	if (ib_rm_rf(tmp, &e) < 0)
		ib_error_free(&e);
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
	int rc = 0;
	if (from_context) {
		root = xstrdup(b->context);
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
		/* copy from an image: load (pulling if needed) into a temp stage */
		ib_image *img = NULL;
		if (build_load_base_image(b, step, jstr(from, "image"), &img, err) < 0) {
			ib_error_wrap(err, "copy from %s", jstr(from, "image"));
			return build_recipe_error(b, step, err);
		}
		tmpstage.name = "copy-source";
		tmpstage.n_layers = img->manifest->n_layers;
		tmpstage.layers = xcalloc(tmpstage.n_layers + 1, sizeof(layer_ref));
		for (size_t i = 0; i < tmpstage.n_layers; i++) {
			ib_descriptor_copy(&tmpstage.layers[i].desc, &img->manifest->layers[i]);
			memcpy(tmpstage.layers[i].diff_id, ib_config_diff_id(img->config, i),
			       IB_DIGEST_BUFLEN);
		}
		json_object_set_new(extra, "from_key", json_string(img->desc.digest));
		ib_image_free(img);
		src = &tmpstage;
	}
	if (src) {
		rc = build_mount_stage_view(b, src, err);
		if (rc < 0)
			goto done;
		root = xstrdup(src->mount_dir);
	}

	copy_list l = {0};
	rc = copy_collect(b, st, step, root, from_context, &l, err);
	/* content from a stage or image is fixed by its key (from_key) */
	char cdigest[IB_DIGEST_BUFLEN] = "from";
	if (rc == 0 && from_context)
		rc = copy_digest(b, &l, cdigest, err);
	if (rc < 0) {
		copy_list_free(&l);
		goto done;
	}
	json_object_set_new(extra, "content", json_string(cdigest));
	build_step_key(key_out, parent, step, extra);
	srcs = build_argv_string(json_object_get(step, "sources"));
	/* as docker's history: COPY --from=STAGE|IMAGE SRC... DEST */
	const char *from_name = from_context	      ? NULL
				: jstr(from, "stage") ? jstr(from, "stage")
				: jstr(from, "short") ? jstr(from, "short")
						      : jstr(from, "image");
	created_by =
	    xasprintf("COPY %s%s%s%s %s", from_name ? "--from=" : "", from_name ? from_name : "",
		      from_name ? " " : "", srcs, jstr(step, "dest"));
	json_t *inputs = NULL;
	if (!b->o->no_cache && build_use_cached(b, st, key_out, created_by)) {
		*cached = true;
		/* a hit keeps the existing record; write one only where none is */
		cleanup_free char *id = build_explain_id(b, st, idx);
		if (!ib_cache_explain_exists(b->cache, id))
			inputs = json_pack("{s:s, s:O, s:O, s:o}", "parent", parent, "step", step,
					   "extra", extra, "sources", copy_sources_json(&l));
	} else {
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
			    S_ISREG(l.items[i].st.st_mode) ? (uint64_t)l.items[i].st.st_size : 0;
			b->layer_total += 512 + (sz + 511) / 512 * 512;
		}
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
			copy_item *it = &l.items[i];
			/* context files belong to root unless owner= says otherwise;
			 * files from a stage keep their owner (docker semantics) */
			ib_layer_override ov = {.uid = uid, .gid = gid, .mode = mode};
			if (from_context && uid < 0)
				ov.uid = ov.gid = 0;
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
		if (rc == 0)
			rc = build_commit_layer(b, st, key_out, &res, created_by, err);
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
