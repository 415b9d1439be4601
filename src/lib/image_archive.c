/* docker-archive and OCI archive: save from and load into the store.
 * See image_archive.h for the contract. */
#include "image_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ref.h"
#include "unpack.h"
#include "util.h"

#define COPY_BUF (1u << 20)
#define MAX_LINK_HOPS 40
#define MAX_INDEX_DEPTH 2
#define MAX_DOCKER_IMAGES 10000

static void archive_freep(struct archive **a)
{
	if (*a)
		archive_read_free(*a);
}
#define cleanup_archive_read __attribute__((cleanup(archive_freep)))

static void archive_write_freep(struct archive **a)
{
	if (*a)
		archive_write_free(*a);
}
#define cleanup_archive_write __attribute__((cleanup(archive_write_freep)))

static const char *aerr(struct archive *a)
{
	const char *m = archive_error_string(a);
	return m ? m : "unknown libarchive error";
}

/* Add context to *err and return code: unlike `return ib_error_wrap()`,
 * the semantic code survives when the caller passed err == NULL. */
static int wrapped(int code, ib_error **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int wrapped(int code, ib_error **err, const char *fmt, ...)
{
	if (err && *err) {
		va_list ap;
		va_start(ap, fmt);
		cleanup_free char *ctx = xvasprintf(fmt, ap);
		va_end(ap);
		ib_error_wrap(err, "%s", ctx);
	}
	return code;
}

/* ------------------------------------------------------------------ */
/* member names                                                        */

int ib_archive_check_member_name(const char *name, ib_error **err)
{
	if (!name || !*name)
		return ib_error_setc(err, IB_EUNSAFE, "archive member with an empty name");
	size_t len = strlen(name);
	if (len > IB_ARCHIVE_MAX_NAME)
		return ib_error_setc(err, IB_EUNSAFE, "archive member name too long (%zu bytes)",
				     len);
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return ib_error_setc(err, IB_EUNSAFE,
					     "archive member name with a control character");
	if (name[0] == '/')
		return ib_error_setc(err, IB_EUNSAFE, "archive member '%s' has an absolute path",
				     name);
	const char *p = name;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return ib_error_setc(err, IB_EUNSAFE,
					     "archive member '%s' has an unsafe path component",
					     name);
		if (!slash)
			break;
		p = slash + 1;
	}
	return 0;
}

/* Strip leading "./" (any number) and trailing "/"; NULL when nothing
 * remains (the archive root itself). */
static char *strip_member_name(const char *raw)
{
	while (raw[0] == '.' && raw[1] == '/') {
		raw += 2;
		while (*raw == '/')
			raw++;
	}
	size_t n = strlen(raw);
	while (n > 0 && raw[n - 1] == '/')
		n--;
	if (n == 0 || (n == 1 && raw[0] == '.'))
		return NULL;
	return xstrndup(raw, n);
}

/* Resolve a symlink target relative to the member's directory, lexically,
 * without leaving the archive root. */
static int resolve_link(const char *member, const char *target, char **out, ib_error **err)
{
	if (!target || !*target)
		return ib_error_setc(err, IB_EUNSAFE, "archive member '%s' is an empty link",
				     member);
	if (target[0] == '/')
		return ib_error_setc(err, IB_EUNSAFE,
				     "archive member '%s' links to an absolute path '%s'", member,
				     target);
	cleanup_free char *dir = xstrdup(member);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		dir[0] = '\0';
	cleanup_free char *joined = dir[0] ? xasprintf("%s/%s", dir, target) : xstrdup(target);
	/* Walk components, popping on "..". */
	size_t jl = strlen(joined);
	cleanup_free char *res = xmalloc(jl + 1);
	size_t rl = 0;
	const char *p = joined;
	while (*p) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n == 0 || (n == 1 && p[0] == '.')) {
			/* skip */
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (rl == 0)
				return ib_error_setc(
				    err, IB_EUNSAFE,
				    "archive member '%s' links outside the archive ('%s')", member,
				    target);
			while (rl > 0 && res[rl - 1] != '/')
				rl--;
			if (rl > 0)
				rl--; /* the '/' */
		} else {
			if (rl > 0)
				res[rl++] = '/';
			memcpy(res + rl, p, n);
			rl += n;
		}
		if (!e)
			break;
		p = e + 1;
	}
	res[rl] = '\0';
	if (rl == 0)
		return ib_error_setc(err, IB_EUNSAFE,
				     "archive member '%s' links to the archive root", member);
	*out = steal_pointer(&res);
	return 0;
}

/* ------------------------------------------------------------------ */
/* extraction                                                          */

typedef struct member {
	char *name;
	char *file; /* extracted file, NULL for links */
	char *link; /* resolved target member name, for links */
	int64_t size;
	char digest[IB_DIGEST_BUFLEN];
} member;

struct ib_archive_members {
	member *v;
	size_t n, alloc;
	json_t *index; /* name -> position in v */
};

void ib_archive_members_free(ib_archive_members *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].name);
		free(m->v[i].file);
		free(m->v[i].link);
	}
	free(m->v);
	json_decref(m->index);
	free(m);
}

static void members_freep(ib_archive_members **m)
{
	ib_archive_members_free(*m);
}
#define cleanup_members __attribute__((cleanup(members_freep)))

static member *members_add(ib_archive_members *m, char *name, ib_error **err)
{
	if (json_object_get(m->index, name)) {
		ib_error_setc(err, IB_EINVALID, "archive has member '%s' twice", name);
		free(name);
		return NULL;
	}
	if (m->n == m->alloc) {
		m->alloc = m->alloc ? m->alloc * 2 : 32;
		m->v = xrealloc(m->v, m->alloc * sizeof(*m->v));
	}
	member *e = &m->v[m->n];
	memset(e, 0, sizeof(*e));
	e->name = name;
	json_object_set_new(m->index, name, json_integer((json_int_t)m->n));
	m->n++;
	return e;
}

/* *budget: bytes the archive may still expand to. */
static int extract_data(struct archive *a, const char *name, const char *file, member *e,
			uint64_t *budget, ib_error **err)
{
	cleanup_close int fd =
	    open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return ib_error_set(err, errno, "create %s", file);
	cleanup_free char *buf = xmalloc(COPY_BUF);
	ib_digest_ctx *ctx = ib_digest_new();
	int64_t total = 0;
	int r = 0;
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, COPY_BUF);
		if (n == 0)
			break;
		if (n < 0) {
			r = ib_error_setc(err, IB_EINVALID, "read archive member '%s': %s", name,
					  aerr(a));
			break;
		}
		if ((uint64_t)n > *budget) {
			r = ib_error_setc(err, IB_ETOOLARGE,
					  "archive expands to more than %" PRIu64 " bytes",
					  (uint64_t)IB_ARCHIVE_MAX_BYTES);
			break;
		}
		*budget -= (uint64_t)n;
		ib_digest_update(ctx, buf, (size_t)n);
		r = ib_write_all(fd, buf, (size_t)n, err);
		if (r < 0)
			break;
		total += n;
	}
	ib_digest_final(ctx, e->digest);
	ib_digest_free(ctx);
	if (r < 0)
		return r;
	if (close(ib_steal_fd(&fd)) < 0)
		return ib_error_set(err, errno, "write %s", file);
	e->size = total;
	return 0;
}

int ib_archive_extract(const char *path, const char *dir, ib_archive_members **out, ib_error **err)
{
	*out = NULL;
	cleanup_archive_read struct archive *a = archive_read_new();
	if (!a)
		return ib_error_setc(err, IB_ERROR, "out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	bool is_stdin = !strcmp(path, "-");
	int r = is_stdin ? archive_read_open_fd(a, STDIN_FILENO, 1 << 16)
			 : archive_read_open_filename(a, path, 1 << 16);
	if (r != ARCHIVE_OK) {
		if (!is_stdin && access(path, F_OK) < 0)
			return ib_error_set(err, errno, "open %s", path);
		return ib_error_setc(err, IB_EINVALID, "%s: not a valid tar archive: %s", path,
				     aerr(a));
	}
	cleanup_members ib_archive_members *m = xcalloc(1, sizeof(*m));
	m->index = json_object();
	size_t headers = 0;
	uint64_t budget = IB_ARCHIVE_MAX_BYTES;
	for (;;) {
		struct archive_entry *ae;
		r = archive_read_next_header(a, &ae);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return ib_error_setc(err, IB_EINVALID, "%s: not a valid tar archive: %s",
					     path, aerr(a));
		if (++headers > IB_ARCHIVE_MAX_MEMBERS)
			return ib_error_setc(err, IB_ETOOLARGE, "%s: more than %d archive members",
					     path, IB_ARCHIVE_MAX_MEMBERS);
		const char *raw = archive_entry_pathname(ae);
		if (!raw)
			return ib_error_setc(err, IB_EINVALID, "%s: archive member without a name",
					     path);
		char *name = strip_member_name(raw);
		if (!name)
			continue; /* "./" */
		r = ib_archive_check_member_name(name, err);
		if (r < 0) {
			free(name);
			return wrapped(r, err, "%s", path);
		}
		const char *hardlink = archive_entry_hardlink(ae);
		mode_t type = archive_entry_filetype(ae);
		if (hardlink) {
			cleanup_free char *target = strip_member_name(hardlink);
			if (!target || ib_archive_check_member_name(target, NULL) < 0) {
				ib_error_setc(err, IB_EUNSAFE,
					      "%s: archive member '%s' is a hardlink to '%s'", path,
					      name, hardlink);
				free(name);
				return IB_EUNSAFE;
			}
			member *e = members_add(m, name, err);
			if (!e)
				return wrapped(IB_EINVALID, err, "%s", path);
			e->link = steal_pointer(&target);
		} else if (type == AE_IFDIR) {
			free(name);
		} else if (type == AE_IFLNK) {
			char *target = NULL;
			r = resolve_link(name, archive_entry_symlink(ae), &target, err);
			if (r < 0) {
				free(name);
				return wrapped(r, err, "%s", path);
			}
			member *e = members_add(m, name, err);
			if (!e) {
				free(target);
				return wrapped(IB_EINVALID, err, "%s", path);
			}
			e->link = target;
		} else if (type == AE_IFREG) {
			member *e = members_add(m, name, err);
			if (!e)
				return wrapped(IB_EINVALID, err, "%s", path);
			char *file = xasprintf("%s/m%zu", dir, m->n - 1);
			e->file = file;
			r = extract_data(a, e->name, file, e, &budget, err);
			if (r < 0)
				return wrapped(r, err, "%s", path);
		} else {
			ib_error_setc(err, IB_EUNSAFE,
				      "%s: archive member '%s' is not a file, directory or link",
				      path, name);
			free(name);
			return IB_EUNSAFE;
		}
	}
	*out = steal_pointer(&m);
	return 0;
}

static member *member_find(ib_archive_members *m, const char *name)
{
	json_t *j = json_object_get(m->index, name);
	return j ? &m->v[json_integer_value(j)] : NULL;
}

int ib_archive_member(ib_archive_members *m, const char *name, const char **file_out,
		      int64_t *size_out, const char **digest_out, ib_error **err)
{
	const char *cur = name;
	for (int hops = 0; hops <= MAX_LINK_HOPS; hops++) {
		member *e = member_find(m, cur);
		if (!e)
			return ib_error_setc(err, IB_ENOTFOUND, "archive has no member '%s'", cur);
		if (!e->link) {
			*file_out = e->file;
			if (size_out)
				*size_out = e->size;
			if (digest_out)
				*digest_out = e->digest;
			return 0;
		}
		cur = e->link;
	}
	return ib_error_setc(err, IB_EINVALID, "archive member '%s': too many levels of links",
			     name);
}

int ib_archive_member_read(ib_archive_members *m, const char *name, size_t cap, char **out,
			   size_t *len_out, ib_error **err)
{
	const char *file;
	int64_t size;
	int r = ib_archive_member(m, name, &file, &size, NULL, err);
	if (r < 0)
		return r;
	if ((uint64_t)size > cap)
		return ib_error_setc(err, IB_ETOOLARGE,
				     "archive member '%s' is too large (%" PRId64
				     " bytes, limit %zu)",
				     name, size, cap);
	r = ib_read_file(file, cap, out, len_out, err);
	if (r < 0)
		return wrapped(r, err, "archive member '%s'", name);
	return 0;
}

/* ------------------------------------------------------------------ */
/* documents                                                           */

static json_t *load_json(const char *buf, size_t len, const char *what, ib_error **err)
{
	json_error_t jerr;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		ib_error_setc(err, IB_EINVALID, "%s: invalid JSON at line %d: %s", what, jerr.line,
			      jerr.text);
	return j;
}

void ib_docker_manifest_free(ib_docker_archive_image *imgs, size_t n)
{
	if (!imgs)
		return;
	for (size_t i = 0; i < n; i++) {
		free(imgs[i].config);
		ib_strv_free(imgs[i].repo_tags);
		for (size_t k = 0; k < imgs[i].n_layers; k++)
			free(imgs[i].layers[k]);
		free(imgs[i].layers);
	}
	free(imgs);
}

/* Normalise a reference that must name a tag. */
static int normalize_tag_ref(const char *s, char **out, ib_error **err)
{
	ib_ref *ref = NULL;
	if (ib_ref_parse(&ref, s, err) < 0)
		return IB_EINVALID;
	if (!ref->tag || ref->digest) {
		ib_ref_free(ref);
		return ib_error_setc(err, IB_EINVALID, "'%s' is not a tagged reference", s);
	}
	*out = ib_ref_string(ref);
	ib_ref_free(ref);
	return 0;
}

static int parse_docker_item(json_t *item, size_t i, ib_docker_archive_image *img, ib_error **err)
{
	if (!json_is_object(item))
		return ib_error_setc(err, IB_EINVALID, "manifest.json: entry %zu is not an object",
				     i);
	json_t *cfg = json_object_get(item, "Config");
	if (!json_is_string(cfg))
		return ib_error_setc(err, IB_EINVALID,
				     "manifest.json: entry %zu has no \"Config\" string", i);
	int r = ib_archive_check_member_name(json_string_value(cfg), err);
	if (r < 0)
		return wrapped(r, err, "manifest.json: entry %zu: Config", i);
	img->config = xstrdup(json_string_value(cfg));

	json_t *tags = json_object_get(item, "RepoTags");
	img->repo_tags = xcalloc(1, sizeof(char *));
	if (tags && !json_is_null(tags)) {
		if (!json_is_array(tags))
			return ib_error_setc(
			    err, IB_EINVALID,
			    "manifest.json: entry %zu: \"RepoTags\" is not an array", i);
		for (size_t k = 0; k < json_array_size(tags); k++) {
			json_t *t = json_array_get(tags, k);
			if (!json_is_string(t))
				return ib_error_setc(
				    err, IB_EINVALID,
				    "manifest.json: entry %zu: RepoTags[%zu] is not a string", i,
				    k);
			cleanup_free char *norm = NULL;
			r = normalize_tag_ref(json_string_value(t), &norm, err);
			if (r < 0)
				return wrapped(r, err, "manifest.json: entry %zu: RepoTags", i);
			ib_strv_push(&img->repo_tags, norm);
		}
	}

	json_t *layers = json_object_get(item, "Layers");
	if (!json_is_array(layers))
		return ib_error_setc(err, IB_EINVALID,
				     "manifest.json: entry %zu has no \"Layers\" array", i);
	size_t nl = json_array_size(layers);
	img->layers = xcalloc(nl ? nl : 1, sizeof(char *));
	for (size_t k = 0; k < nl; k++) {
		json_t *l = json_array_get(layers, k);
		if (!json_is_string(l))
			return ib_error_setc(
			    err, IB_EINVALID,
			    "manifest.json: entry %zu: Layers[%zu] is not a string", i, k);
		r = ib_archive_check_member_name(json_string_value(l), err);
		if (r < 0)
			return wrapped(r, err, "manifest.json: entry %zu: Layers[%zu]", i, k);
		img->layers[k] = xstrdup(json_string_value(l));
		img->n_layers = k + 1;
	}
	return 0;
}

int ib_docker_manifest_parse(const char *buf, size_t len, ib_docker_archive_image **out,
			     size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	json_auto_t *root = load_json(buf, len, "manifest.json", err);
	if (!root)
		return IB_EINVALID;
	if (!json_is_array(root) || json_array_size(root) == 0)
		return ib_error_setc(err, IB_EINVALID, "manifest.json: not a non-empty array");
	size_t n = json_array_size(root);
	if (n > MAX_DOCKER_IMAGES)
		return ib_error_setc(err, IB_ETOOLARGE, "manifest.json: too many images (%zu)", n);
	ib_docker_archive_image *imgs = xcalloc(n, sizeof(*imgs));
	for (size_t i = 0; i < n; i++) {
		int r = parse_docker_item(json_array_get(root, i), i, &imgs[i], err);
		if (r < 0) {
			ib_docker_manifest_free(imgs, n);
			return r;
		}
	}
	*out = imgs;
	*n_out = n;
	return 0;
}

int ib_oci_layout_check(const char *buf, size_t len, ib_error **err)
{
	json_auto_t *root = load_json(buf, len, "oci-layout", err);
	if (!root)
		return IB_EINVALID;
	json_t *v = json_object_get(root, "imageLayoutVersion");
	if (!json_is_string(v))
		return ib_error_setc(err, IB_EINVALID, "oci-layout: no \"imageLayoutVersion\"");
	if (strncmp(json_string_value(v), "1.0.", 4) != 0)
		return ib_error_setc(err, IB_EINVALID,
				     "oci-layout: unsupported image layout version '%s'",
				     json_string_value(v));
	return 0;
}

void ib_oci_archive_entries_free(ib_oci_archive_entry *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++) {
		free(e[i].name);
		ib_descriptor_clear(&e[i].desc);
	}
	free(e);
}

static bool is_index_type(const char *mt)
{
	return mt && (!strcmp(mt, IB_MT_OCI_INDEX) || !strcmp(mt, IB_MT_DOCKER_LIST));
}

static bool is_manifest_type(const char *mt)
{
	return mt && (!strcmp(mt, IB_MT_OCI_MANIFEST) || !strcmp(mt, IB_MT_DOCKER_MANIFEST));
}

int ib_oci_archive_index_parse(const char *buf, size_t len, ib_oci_archive_entry **out,
			       size_t *n_out, ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	ib_index *idx = NULL;
	int r = ib_index_parse(&idx, buf, len, err);
	if (r < 0)
		return wrapped(r, err, "index.json");
	if (idx->n_manifests == 0) {
		ib_index_free(idx);
		return ib_error_setc(err, IB_EINVALID, "index.json lists no images");
	}
	ib_oci_archive_entry *e = xcalloc(idx->n_manifests, sizeof(*e));
	size_t n = 0;
	r = 0;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const ib_descriptor *d = &idx->manifests[i];
		if (!is_index_type(d->media_type) && !is_manifest_type(d->media_type)) {
			r = ib_error_setc(err, IB_EINVALID,
					  "index.json: entry %zu has media type '%s', not an image "
					  "manifest or index",
					  i, d->media_type ? d->media_type : "(none)");
			break;
		}
		const char *name = NULL;
		json_t *cn = d->annotations
				 ? json_object_get(d->annotations, "io.containerd.image.name")
				 : NULL;
		json_t *rn =
		    d->annotations ? json_object_get(d->annotations, IB_ANNOT_REF_NAME) : NULL;
		if (json_is_string(cn))
			name = json_string_value(cn);
		else if (json_is_string(rn))
			name = json_string_value(rn);
		ib_descriptor_copy(&e[n].desc, d);
		n++;
		if (name && (r = normalize_tag_ref(name, &e[n - 1].name, err)) < 0) {
			wrapped(r, err, "index.json: entry %zu: image name", i);
			break;
		}
	}
	ib_index_free(idx);
	if (r < 0) {
		ib_oci_archive_entries_free(e, n);
		return r;
	}
	*out = e;
	*n_out = n;
	return 0;
}

void ib_archive_loaded_free(ib_archive_loaded *l, size_t n)
{
	if (!l)
		return;
	for (size_t i = 0; i < n; i++)
		free(l[i].name);
	free(l);
}

/* ------------------------------------------------------------------ */
/* load                                                                */

typedef struct pending_blob {
	char *file;
	char digest[IB_DIGEST_BUFLEN];
	int64_t size;
} pending_blob;

typedef struct docker_plan {
	json_t *config;
	char config_digest[IB_DIGEST_BUFLEN]; /* of the bytes in the archive, kept as they are */
	int64_t config_size;
	ib_descriptor *layers;
	size_t n_layers;
	char **tags;
} docker_plan;

typedef struct load_ctx {
	ib_store *s;
	char *dir;     /* private temp dir, removed at the end */
	char *xdir;    /* extracted members */
	char *scratch; /* unpack checks */
	ib_archive_members *m;
	json_t *checked;  /* layer blob digest -> diff_id, already checked */
	json_t *blob_set; /* digests already in blobs[] */
	pending_blob *blobs;
	size_t n_blobs, alloc_blobs;
	docker_plan *docker;
	size_t n_docker;
	ib_oci_archive_entry *oci;
	size_t n_oci;
} load_ctx;

static void load_ctx_clear(load_ctx *c)
{
	if (c->dir)
		ib_rm_rf(c->dir, NULL);
	free(c->dir);
	free(c->xdir);
	free(c->scratch);
	ib_archive_members_free(c->m);
	json_decref(c->checked);
	json_decref(c->blob_set);
	for (size_t i = 0; i < c->n_blobs; i++)
		free(c->blobs[i].file);
	free(c->blobs);
	for (size_t i = 0; i < c->n_docker; i++) {
		json_decref(c->docker[i].config);
		for (size_t k = 0; k < c->docker[i].n_layers; k++)
			ib_descriptor_clear(&c->docker[i].layers[k]);
		free(c->docker[i].layers);
		ib_strv_free(c->docker[i].tags);
	}
	free(c->docker);
	ib_oci_archive_entries_free(c->oci, c->n_oci);
}

static void add_pending_blob(load_ctx *c, const char *file, const char *digest, int64_t size)
{
	if (json_object_get(c->blob_set, digest))
		return;
	json_object_set_new(c->blob_set, digest, json_true());
	if (c->n_blobs == c->alloc_blobs) {
		c->alloc_blobs = c->alloc_blobs ? c->alloc_blobs * 2 : 16;
		c->blobs = xrealloc(c->blobs, c->alloc_blobs * sizeof(*c->blobs));
	}
	pending_blob *b = &c->blobs[c->n_blobs++];
	b->file = xstrdup(file);
	memcpy(b->digest, digest, IB_DIGEST_BUFLEN);
	b->size = size;
}

static int sniff_compression(const char *file, ib_compression *out, ib_error **err)
{
	cleanup_close int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", file);
	unsigned char b[4] = {0};
	ssize_t n = pread(fd, b, sizeof(b), 0);
	if (n < 0)
		return ib_error_set(err, errno, "read %s", file);
	if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		*out = IB_COMP_GZIP;
	else if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
		*out = IB_COMP_ZSTD;
	else
		*out = IB_COMP_NONE;
	return 0;
}

static const char *compression_name(ib_compression c)
{
	return c == IB_COMP_GZIP ? "gzip" : c == IB_COMP_ZSTD ? "zstd" : "uncompressed";
}

/* sha256 of the decompressed content of file. */
static int uncompressed_digest(const char *file, char out[IB_DIGEST_BUFLEN], ib_error **err)
{
	cleanup_archive_read struct archive *a = archive_read_new();
	if (!a)
		return ib_error_setc(err, IB_ERROR, "out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_filename(a, file, 1 << 16) != ARCHIVE_OK)
		return ib_error_setc(err, IB_EINVALID, "%s", aerr(a));
	ib_digest_ctx *ctx = ib_digest_new();
	struct archive_entry *ae;
	int r = archive_read_next_header(a, &ae);
	if (r == ARCHIVE_OK || r == ARCHIVE_WARN) {
		cleanup_free char *buf = xmalloc(COPY_BUF);
		for (;;) {
			la_ssize_t n = archive_read_data(a, buf, COPY_BUF);
			if (n == 0)
				break;
			if (n < 0) {
				ib_digest_free(ctx);
				return ib_error_setc(err, IB_EINVALID, "decompress: %s", aerr(a));
			}
			ib_digest_update(ctx, buf, (size_t)n);
		}
	} else if (r != ARCHIVE_EOF) {
		ib_digest_free(ctx);
		return ib_error_setc(err, IB_EINVALID, "decompress: %s", aerr(a));
	}
	ib_digest_final(ctx, out);
	ib_digest_free(ctx);
	return 0;
}

/* The layer in file must unpack safely and decompress to expect_diff_id.
 * what names it in errors.  Results are remembered per blob digest. */
static int check_layer(load_ctx *c, const char *what, const char *file, const char *digest,
		       const char *expect_diff_id, ib_error **err)
{
	json_t *seen = json_object_get(c->checked, digest);
	if (seen) {
		if (strcmp(json_string_value(seen), expect_diff_id) != 0)
			return ib_error_setc(
			    err, IB_EDIGEST,
			    "layer %s: content digest %s does not match diff_id %s", what,
			    json_string_value(seen), expect_diff_id);
		return 0;
	}
	/* Safety first: the extractor caps sizes and refuses hostile entries
	 * before we spend time hashing a bomb. */
	int r = ib_rm_rf(c->scratch, err);
	if (r < 0)
		return r;
	if (mkdir(c->scratch, 0700) < 0)
		return ib_error_set(err, errno, "mkdir %s", c->scratch);
	{
		cleanup_close int fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return ib_error_set(err, errno, "open %s", file);
		ib_unpack_options opts = IB_UNPACK_OPTIONS_INIT;
		/* Ownership is irrelevant to the check, and chown needs root. */
		opts.same_owner = geteuid() == 0;
		ib_unpack_stats stats;
		memset(&stats, 0, sizeof(stats));
		r = ib_unpack_fd(fd, c->scratch, &opts, &stats, err);
	}
	int r2 = ib_rm_rf(c->scratch, r < 0 ? NULL : err);
	if (r < 0)
		return wrapped(r, err, "layer %s", what);
	if (r2 < 0)
		return r2;
	char diff_id[IB_DIGEST_BUFLEN];
	r = uncompressed_digest(file, diff_id, err);
	if (r < 0)
		return wrapped(r, err, "layer %s", what);
	if (strcmp(diff_id, expect_diff_id) != 0)
		return ib_error_setc(err, IB_EDIGEST,
				     "layer %s: content digest %s does not match diff_id %s", what,
				     diff_id, expect_diff_id);
	json_object_set_new(c->checked, digest, json_string(diff_id));
	return 0;
}

static int validate_docker(load_ctx *c, ib_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r =
	    ib_archive_member_read(c->m, "manifest.json", IB_MAX_MANIFEST_SIZE, &buf, &len, err);
	if (r < 0)
		return r;
	ib_docker_archive_image *imgs = NULL;
	size_t n = 0;
	r = ib_docker_manifest_parse(buf, len, &imgs, &n, err);
	if (r < 0)
		return r;
	c->docker = xcalloc(n, sizeof(*c->docker));
	for (size_t i = 0; i < n && r == 0; i++) {
		ib_docker_archive_image *di = &imgs[i];
		docker_plan *p = &c->docker[i];
		c->n_docker = i + 1;
		p->tags = ib_strv_dup(di->repo_tags);
		cleanup_free char *cbuf = NULL;
		size_t clen = 0;
		r = ib_archive_member_read(c->m, di->config, IB_MAX_CONFIG_SIZE, &cbuf, &clen, err);
		if (r < 0)
			break;
		r = ib_config_parse(&p->config, cbuf, clen, err);
		if (r < 0) {
			wrapped(r, err, "config %s", di->config);
			break;
		}
		/* The config is stored byte for byte: its digest is docker's
		 * image ID, which must survive load and save. */
		const char *cfile, *cdigest;
		r = ib_archive_member(c->m, di->config, &cfile, &p->config_size, &cdigest, err);
		if (r < 0)
			break;
		memcpy(p->config_digest, cdigest, IB_DIGEST_BUFLEN);
		add_pending_blob(c, cfile, cdigest, p->config_size);
		size_t nd = ib_config_n_diff_ids(p->config);
		if (nd != di->n_layers) {
			r = ib_error_setc(
			    err, IB_EINVALID,
			    "image %zu: config %s lists %zu diff_ids but the manifest "
			    "has %zu layers",
			    i, di->config, nd, di->n_layers);
			break;
		}
		p->layers = xcalloc(di->n_layers ? di->n_layers : 1, sizeof(ib_descriptor));
		for (size_t k = 0; k < di->n_layers; k++) {
			const char *file, *digest;
			int64_t size;
			r = ib_archive_member(c->m, di->layers[k], &file, &size, &digest, err);
			if (r < 0)
				break;
			ib_compression comp;
			r = sniff_compression(file, &comp, err);
			if (r < 0)
				break;
			r = check_layer(c, di->layers[k], file, digest,
					ib_config_diff_id(p->config, k), err);
			if (r < 0)
				break;
			ib_descriptor *d = &p->layers[k];
			p->n_layers = k + 1;
			d->media_type = xstrdup(ib_layer_media_type(comp, false));
			memcpy(d->digest, digest, IB_DIGEST_BUFLEN);
			d->size = size;
			add_pending_blob(c, file, digest, size);
		}
	}
	ib_docker_manifest_free(imgs, n);
	return r;
}

/* The blob member for a descriptor, checked against its digest and size. */
static int oci_blob(load_ctx *c, const ib_descriptor *d, const char **file_out, ib_error **err)
{
	cleanup_free char *name = xasprintf("blobs/sha256/%s", ib_digest_hex(d->digest));
	const char *file, *digest;
	int64_t size;
	int r = ib_archive_member(c->m, name, &file, &size, &digest, err);
	if (r < 0)
		return r;
	if (size != d->size)
		return ib_error_setc(err, IB_EDIGEST,
				     "blob %s: size %" PRId64
				     " does not match its descriptor (%" PRId64 ")",
				     d->digest, size, d->size);
	if (strcmp(digest, d->digest) != 0)
		return ib_error_setc(err, IB_EDIGEST, "blob %s: content has digest %s", d->digest,
				     digest);
	*file_out = file;
	return 0;
}

/* oci_blob, then the blob read whole (at most cap bytes); what ("manifest",
 * "index", "config") names it in a read error. */
static int oci_blob_read(load_ctx *c, const ib_descriptor *d, size_t cap, const char *what,
			 const char **file_out, char **buf_out, size_t *len_out, ib_error **err)
{
	int r = oci_blob(c, d, file_out, err);
	if (r < 0)
		return r;
	r = ib_read_file(*file_out, cap, buf_out, len_out, err);
	if (r < 0)
		return wrapped(r, err, "%s %s", what, d->digest);
	return 0;
}

static int validate_oci_manifest(load_ctx *c, const ib_descriptor *d, ib_error **err)
{
	const char *file;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = oci_blob_read(c, d, IB_MAX_MANIFEST_SIZE, "manifest", &file, &buf, &len, err);
	if (r < 0)
		return r;
	ib_manifest *man = NULL;
	r = ib_manifest_parse(&man, buf, len, err);
	if (r < 0)
		return wrapped(r, err, "manifest %s", d->digest);
	const char *cfile;
	cleanup_free char *cbuf = NULL;
	size_t clen = 0;
	json_t *config = NULL;
	r = oci_blob_read(c, &man->config, IB_MAX_CONFIG_SIZE, "config", &cfile, &cbuf, &clen, err);
	if (r == 0) {
		r = ib_config_parse(&config, cbuf, clen, err);
		if (r < 0)
			wrapped(r, err, "config %s", man->config.digest);
	}
	if (r == 0 && ib_config_n_diff_ids(config) != man->n_layers)
		r = ib_error_setc(err, IB_EINVALID,
				  "manifest %s has %zu layers but its config lists %zu diff_ids",
				  d->digest, man->n_layers, ib_config_n_diff_ids(config));
	for (size_t k = 0; r == 0 && k < man->n_layers; k++) {
		const ib_descriptor *l = &man->layers[k];
		ib_compression want, got;
		const char *lfile;
		if (l->urls) {
			r = ib_error_setc(err, IB_EINVALID,
					  "layer %s is a foreign layer (not supported)", l->digest);
			break;
		}
		r = ib_layer_compression(l->media_type, &want, err);
		if (r == 0)
			r = oci_blob(c, l, &lfile, err);
		if (r == 0)
			r = sniff_compression(lfile, &got, err);
		if (r == 0 && got != want)
			r = ib_error_setc(err, IB_EINVALID,
					  "layer %s: media type says %s but the content is %s",
					  l->digest, compression_name(want), compression_name(got));
		if (r == 0)
			r = check_layer(c, l->digest, lfile, l->digest,
					ib_config_diff_id(config, k), err);
		if (r == 0)
			add_pending_blob(c, lfile, l->digest, l->size);
	}
	if (r == 0) {
		add_pending_blob(c, cfile, man->config.digest, man->config.size);
		add_pending_blob(c, file, d->digest, d->size);
	}
	json_decref(config);
	ib_manifest_free(man);
	return r;
}

static int validate_oci_desc(load_ctx *c, const ib_descriptor *d, int depth, ib_error **err)
{
	if (is_manifest_type(d->media_type))
		return validate_oci_manifest(c, d, err);
	if (!is_index_type(d->media_type))
		return ib_error_setc(err, IB_EINVALID, "%s has unsupported media type '%s'",
				     d->digest, d->media_type ? d->media_type : "(none)");
	if (depth >= MAX_INDEX_DEPTH)
		return ib_error_setc(err, IB_EINVALID, "image index %s is nested too deeply",
				     d->digest);
	const char *file;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = oci_blob_read(c, d, IB_MAX_MANIFEST_SIZE, "index", &file, &buf, &len, err);
	if (r < 0)
		return r;
	ib_index *idx = NULL;
	r = ib_index_parse(&idx, buf, len, err);
	if (r < 0)
		return wrapped(r, err, "index %s", d->digest);
	for (size_t i = 0; r == 0 && i < idx->n_manifests; i++)
		r = validate_oci_desc(c, &idx->manifests[i], depth + 1, err);
	ib_index_free(idx);
	if (r == 0)
		add_pending_blob(c, file, d->digest, d->size);
	return r;
}

static int validate_oci(load_ctx *c, ib_error **err)
{
	cleanup_free char *layout = NULL;
	size_t len = 0;
	int r = ib_archive_member_read(c->m, "oci-layout", IB_ARCHIVE_MAX_LAYOUT_FILE, &layout,
				       &len, err);
	if (r < 0)
		return r;
	r = ib_oci_layout_check(layout, len, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = NULL;
	r = ib_archive_member_read(c->m, "index.json", IB_MAX_MANIFEST_SIZE, &buf, &len, err);
	if (r < 0)
		return r;
	r = ib_oci_archive_index_parse(buf, len, &c->oci, &c->n_oci, err);
	for (size_t i = 0; r == 0 && i < c->n_oci; i++)
		r = validate_oci_desc(c, &c->oci[i].desc, 0, err);
	return r;
}

static int store_file_blob(ib_store *s, const pending_blob *b, ib_error **err)
{
	if (ib_store_blob_exists(s, b->digest))
		return 0;
	cleanup_close int fd = open(b->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", b->file);
	ib_blob_writer *w = NULL;
	int r = ib_blob_writer_new(&w, s, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = xmalloc(COPY_BUF);
	for (;;) {
		ssize_t n = read(fd, buf, COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ib_blob_writer_abort(w);
			return ib_error_set(err, errno, "read %s", b->file);
		}
		if (n == 0)
			break;
		r = ib_blob_writer_write(w, buf, (size_t)n, err);
		if (r < 0) {
			ib_blob_writer_abort(w);
			return r;
		}
	}
	return ib_blob_writer_commit(w, b->digest, b->size, NULL, NULL, err);
}

/* The OCI manifest of a docker-archive image over its config as stored. */
static int write_docker_manifest(ib_store *s, const docker_plan *p, ib_descriptor *out,
				 ib_error **err)
{
	ib_manifest m;
	memset(&m, 0, sizeof(m));
	m.media_type = (char *)IB_MT_OCI_MANIFEST;
	m.config.media_type = (char *)IB_MT_OCI_CONFIG;
	memcpy(m.config.digest, p->config_digest, IB_DIGEST_BUFLEN);
	m.config.size = p->config_size;
	m.layers = p->layers; /* borrowed: m is not freed */
	m.n_layers = p->n_layers;
	size_t len = 0;
	cleanup_free char *man = ib_manifest_serialize(&m, &len);
	memset(out, 0, sizeof(*out));
	int r = ib_store_blob_put(s, man, len, out->digest, err);
	if (r < 0)
		return wrapped(r, err, "store image manifest");
	out->media_type = xstrdup(IB_MT_OCI_MANIFEST);
	out->size = (int64_t)len;
	const char *os = json_string_value(json_object_get(p->config, "os"));
	const char *arch = json_string_value(json_object_get(p->config, "architecture"));
	const char *variant = json_string_value(json_object_get(p->config, "variant"));
	out->platform.os = os ? xstrdup(os) : NULL;
	out->platform.architecture = arch ? xstrdup(arch) : NULL;
	out->platform.variant = variant ? xstrdup(variant) : NULL;
	return 0;
}

static void push_loaded(ib_archive_loaded **v, size_t *n, const char *name, const char *digest)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[*n].name = name ? xstrdup(name) : NULL;
	memcpy((*v)[*n].digest, digest, IB_DIGEST_BUFLEN);
	(*n)++;
}

static int commit_load(load_ctx *c, ib_archive_loaded **out, size_t *n_out, ib_error **err)
{
	ib_archive_loaded *res = NULL;
	size_t n = 0;
	int r = 0;
	for (size_t i = 0; r == 0 && i < c->n_blobs; i++)
		r = store_file_blob(c->s, &c->blobs[i], err);
	/* Docker images get a manifest written now; OCI ones already have theirs. */
	ib_descriptor *descs = xcalloc(c->n_docker ? c->n_docker : 1, sizeof(*descs));
	for (size_t i = 0; r == 0 && i < c->n_docker; i++) {
		docker_plan *p = &c->docker[i];
		r = write_docker_manifest(c->s, p, &descs[i], err);
	}
	/* Tags last: nothing is named until everything is stored. */
	for (size_t i = 0; r == 0 && i < c->n_docker; i++) {
		char **tags = c->docker[i].tags;
		if (!tags || !tags[0])
			push_loaded(&res, &n, NULL, descs[i].digest);
		for (size_t k = 0; r == 0 && tags && tags[k]; k++) {
			r = ib_store_tag_set(c->s, tags[k], &descs[i], err);
			if (r == 0)
				push_loaded(&res, &n, tags[k], descs[i].digest);
		}
	}
	for (size_t i = 0; r == 0 && i < c->n_oci; i++) {
		ib_oci_archive_entry *e = &c->oci[i];
		if (!e->name) {
			push_loaded(&res, &n, NULL, e->desc.digest);
			continue;
		}
		ib_descriptor d = {0};
		d.media_type = xstrdup(e->desc.media_type);
		memcpy(d.digest, e->desc.digest, IB_DIGEST_BUFLEN);
		d.size = e->desc.size;
		r = ib_store_tag_set(c->s, e->name, &d, err);
		ib_descriptor_clear(&d);
		if (r == 0)
			push_loaded(&res, &n, e->name, e->desc.digest);
	}
	for (size_t i = 0; i < c->n_docker; i++)
		ib_descriptor_clear(&descs[i]);
	free(descs);
	if (r < 0) {
		ib_archive_loaded_free(res, n);
		return r;
	}
	*out = res;
	*n_out = n;
	return 0;
}

int ib_archive_load(ib_store *s, const char *path, ib_archive_loaded **out, size_t *n_out,
		    ib_error **err)
{
	*out = NULL;
	*n_out = 0;
	load_ctx c = {0};
	c.s = s;
	c.checked = json_object();
	c.blob_set = json_object();
	c.dir = ib_store_tmp_path(s, "load");
	int r = 0;
	if (mkdir(c.dir, 0700) < 0) {
		r = ib_error_set(err, errno, "mkdir %s", c.dir);
		free(c.dir);
		c.dir = NULL;
		goto out;
	}
	c.xdir = ib_path_join(c.dir, "x");
	c.scratch = ib_path_join(c.dir, "scratch");
	if (mkdir(c.xdir, 0700) < 0) {
		r = ib_error_set(err, errno, "mkdir %s", c.xdir);
		goto out;
	}
	r = ib_archive_extract(path, c.xdir, &c.m, err);
	if (r < 0)
		goto out;
	const char *f;
	if (ib_archive_member(c.m, "manifest.json", &f, NULL, NULL, NULL) == 0)
		r = validate_docker(&c, err);
	else if (ib_archive_member(c.m, "index.json", &f, NULL, NULL, NULL) == 0)
		r = validate_oci(&c, err);
	else
		r = ib_error_setc(
		    err, IB_EINVALID,
		    "%s is not a docker or OCI archive (no manifest.json or index.json)", path);
	if (r < 0) {
		wrapped(r, err, "load %s", path);
		goto out;
	}
	r = commit_load(&c, out, n_out, err);
	if (r < 0)
		wrapped(r, err, "load %s", path);
out:
	load_ctx_clear(&c);
	return r;
}

/* ------------------------------------------------------------------ */
/* save                                                                */

typedef struct save_image {
	ib_image *img;
	char **names; /* full normalised tags, NULL-terminated */
	char *config_raw;
	size_t config_len;
} save_image;

typedef struct save_ctx {
	ib_store *s;
	struct archive *a;
	json_t *written; /* member names already in the archive */
	save_image *imgs;
	size_t n_imgs;
} save_ctx;

static void save_images_free(save_image *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ib_image_free(v[i].img);
		ib_strv_free(v[i].names);
		free(v[i].config_raw);
	}
	free(v);
}

/* The full reference when ref names a tag in the store, else NULL. */
static char *tag_of(ib_store *s, const char *ref)
{
	ib_ref *r = NULL;
	if (ib_ref_parse(&r, ref, NULL) < 0)
		return NULL;
	char *full = NULL;
	if (r->tag && !r->digest) {
		full = ib_ref_string(r);
		ib_descriptor d = {0};
		if (ib_store_tag_get(s, full, &d, NULL) < 0) {
			free(full);
			full = NULL;
		}
		ib_descriptor_clear(&d);
	}
	ib_ref_free(r);
	return full;
}

static int resolve_images(save_ctx *c, char *const *refs, size_t n_refs, ib_error **err)
{
	c->imgs = xcalloc(n_refs ? n_refs : 1, sizeof(*c->imgs));
	for (size_t i = 0; i < n_refs; i++) {
		ib_image *img = NULL;
		int r = ib_store_image_load(c->s, refs[i], &img, err);
		if (r < 0)
			return wrapped(r, err, "%s", refs[i]);
		cleanup_free char *name = tag_of(c->s, refs[i]);
		save_image *si = NULL;
		for (size_t k = 0; k < c->n_imgs; k++)
			if (!strcmp(c->imgs[k].img->desc.digest, img->desc.digest))
				si = &c->imgs[k];
		if (si) {
			ib_image_free(img);
		} else {
			si = &c->imgs[c->n_imgs++];
			si->img = img;
			si->names = xcalloc(1, sizeof(char *));
			r = ib_store_blob_read(c->s, img->manifest->config.digest,
					       IB_MAX_CONFIG_SIZE, &si->config_raw, &si->config_len,
					       err);
			if (r < 0)
				return wrapped(r, err, "%s: config", refs[i]);
		}
		bool dup = false;
		for (size_t k = 0; name && si->names[k]; k++)
			dup = dup || !strcmp(si->names[k], name);
		if (name && !dup)
			ib_strv_push(&si->names, name);
	}
	return 0;
}

/* Write the header of a member owned by root with mtime 0: a directory
 * (0755), or a regular file (0644) of size bytes. */
static int write_header(save_ctx *c, const char *name, bool is_dir, int64_t size, ib_error **err)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, is_dir ? AE_IFDIR : AE_IFREG);
	archive_entry_set_perm(e, is_dir ? 0755 : 0644);
	archive_entry_set_mtime(e, 0, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	if (!is_dir)
		archive_entry_set_size(e, size);
	int r = archive_write_header(c->a, e);
	archive_entry_free(e);
	if (r != ARCHIVE_OK)
		return ib_error_setc(err, IB_ERROR, "write archive: %s", aerr(c->a));
	return 0;
}

static int write_dir(save_ctx *c, const char *name, ib_error **err)
{
	if (json_object_get(c->written, name))
		return 0;
	json_object_set_new(c->written, name, json_true());
	return write_header(c, name, true, 0, err);
}

static int write_buffer(save_ctx *c, const char *name, const void *data, size_t len, ib_error **err)
{
	if (json_object_get(c->written, name))
		return 0;
	json_object_set_new(c->written, name, json_true());
	int r = write_header(c, name, false, (int64_t)len, err);
	if (r < 0)
		return r;
	if (len > 0 && archive_write_data(c->a, data, len) != (la_ssize_t)len)
		return ib_error_setc(err, IB_ERROR, "write archive: %s", aerr(c->a));
	return 0;
}

/* Copy a store blob into the archive, re-hashing it on the way. */
static int write_blob(save_ctx *c, const char *name, const ib_descriptor *d, ib_error **err)
{
	if (json_object_get(c->written, name))
		return 0;
	json_object_set_new(c->written, name, json_true());
	cleanup_close int fd = -1;
	int64_t size = 0;
	int r = ib_store_blob_open(c->s, d->digest, &fd, &size, err);
	if (r < 0)
		return r;
	if (size != d->size)
		return ib_error_setc(err, IB_EDIGEST,
				     "blob %s in the store has size %" PRId64 ", expected %" PRId64,
				     d->digest, size, d->size);
	r = write_header(c, name, false, size, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = xmalloc(COPY_BUF);
	ib_digest_ctx *ctx = ib_digest_new();
	int64_t total = 0;
	r = 0;
	while (total < size) {
		size_t want = (size_t)((size - total) < COPY_BUF ? (size - total) : COPY_BUF);
		ssize_t n = read(fd, buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = ib_error_set(err, errno, "read blob %s", d->digest);
			break;
		}
		if (n == 0) {
			r = ib_error_setc(err, IB_EDIGEST, "blob %s in the store is truncated",
					  d->digest);
			break;
		}
		ib_digest_update(ctx, buf, (size_t)n);
		if (archive_write_data(c->a, buf, (size_t)n) != n) {
			r = ib_error_setc(err, IB_ERROR, "write archive: %s", aerr(c->a));
			break;
		}
		total += n;
	}
	char got[IB_DIGEST_BUFLEN];
	ib_digest_final(ctx, got);
	ib_digest_free(ctx);
	if (r < 0)
		return r;
	if (strcmp(got, d->digest) != 0)
		return ib_error_setc(err, IB_EDIGEST,
				     "blob %s in the store is corrupt (content is %s)", d->digest,
				     got);
	return 0;
}

/* "docker.io/library/x:t" -> "docker.io/library/x" and "t". */
static char *split_tag(const char *full, char **tag_out)
{
	ib_ref *r = NULL;
	*tag_out = NULL;
	if (ib_ref_parse(&r, full, NULL) < 0)
		return NULL;
	char *name = ib_ref_name(r);
	*tag_out = r->tag ? xstrdup(r->tag) : NULL;
	ib_ref_free(r);
	return name;
}

/* RepoTags hold full references ("docker.io/library/x:t"): docker load
 * normalises them like the familiar form, and podman load keeps them as
 * they are (it would turn a familiar "x:t" into "localhost/x:t"). */
static int save_docker(save_ctx *c, ib_error **err)
{
	json_auto_t *manifest = json_array();
	json_auto_t *repos = json_object();
	for (size_t i = 0; i < c->n_imgs; i++) {
		save_image *si = &c->imgs[i];
		ib_manifest *m = si->img->manifest;
		cleanup_free char *cfg_name = xasprintf("%s.json", ib_digest_hex(m->config.digest));
		int r = write_buffer(c, cfg_name, si->config_raw, si->config_len, err);
		if (r < 0)
			return r;
		json_t *layers = json_array();
		const char *top = NULL;
		for (size_t k = 0; k < m->n_layers; k++) {
			const char *hex = ib_digest_hex(m->layers[k].digest);
			cleanup_free char *dname = xstrdup(hex);
			cleanup_free char *lname = xasprintf("%s/layer.tar", hex);
			r = write_dir(c, dname, err);
			if (r == 0)
				r = write_blob(c, lname, &m->layers[k], err);
			if (r < 0) {
				json_decref(layers);
				return wrapped(r, err, "layer %s", m->layers[k].digest);
			}
			json_array_append_new(layers, json_string(lname));
			top = hex;
		}
		json_t *tags = json_array();
		for (size_t k = 0; si->names[k]; k++) {
			json_array_append_new(tags, json_string(si->names[k]));
			char *tag = NULL;
			cleanup_free char *repo_name = split_tag(si->names[k], &tag);
			if (repo_name && tag && top) {
				json_t *repo = json_object_get(repos, repo_name);
				if (!repo) {
					repo = json_object();
					json_object_set_new(repos, repo_name, repo);
				}
				json_object_set_new(repo, tag, json_string(top));
			}
			free(tag);
		}
		json_t *item = json_object();
		json_object_set_new(item, "Config", json_string(cfg_name));
		json_object_set_new(item, "RepoTags", tags);
		json_object_set_new(item, "Layers", layers);
		json_array_append_new(manifest, item);
	}
	cleanup_free char *mj = json_dumps(manifest, JSON_COMPACT | JSON_SORT_KEYS);
	int r = write_buffer(c, "manifest.json", mj, strlen(mj), err);
	if (r == 0 && json_object_size(repos) > 0) {
		cleanup_free char *rj = json_dumps(repos, JSON_COMPACT | JSON_SORT_KEYS);
		r = write_buffer(c, "repositories", rj, strlen(rj), err);
	}
	return r;
}

static int save_oci(save_ctx *c, ib_error **err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	int r = write_buffer(c, "oci-layout", layout, strlen(layout), err);
	if (r == 0)
		r = write_dir(c, "blobs", err);
	if (r == 0)
		r = write_dir(c, "blobs/sha256", err);
	if (r < 0)
		return r;
	json_auto_t *manifests = json_array();
	for (size_t i = 0; i < c->n_imgs; i++) {
		save_image *si = &c->imgs[i];
		ib_image *img = si->img;
		ib_manifest *m = img->manifest;
		for (size_t k = 0; k < m->n_layers; k++) {
			cleanup_free char *n =
			    xasprintf("blobs/sha256/%s", ib_digest_hex(m->layers[k].digest));
			r = write_blob(c, n, &m->layers[k], err);
			if (r < 0)
				return wrapped(r, err, "layer %s", m->layers[k].digest);
		}
		cleanup_free char *cn =
		    xasprintf("blobs/sha256/%s", ib_digest_hex(m->config.digest));
		r = write_buffer(c, cn, si->config_raw, si->config_len, err);
		if (r < 0)
			return r;
		cleanup_free char *mn =
		    xasprintf("blobs/sha256/%s", ib_digest_hex(img->desc.digest));
		r = write_buffer(c, mn, img->manifest_raw, img->manifest_len, err);
		if (r < 0)
			return r;
		const char *mt = m->media_type ? m->media_type : IB_MT_OCI_MANIFEST;
		size_t n_names = ib_strv_len(si->names);
		for (size_t k = 0; k < (n_names ? n_names : 1); k++) {
			json_t *d = json_object();
			json_object_set_new(d, "mediaType", json_string(mt));
			json_object_set_new(d, "digest", json_string(img->desc.digest));
			json_object_set_new(d, "size", json_integer((json_int_t)img->manifest_len));
			if (n_names) {
				json_t *an = json_object();
				json_object_set_new(an, IB_ANNOT_REF_NAME,
						    json_string(si->names[k]));
				json_object_set_new(d, "annotations", an);
			}
			json_array_append_new(manifests, d);
		}
	}
	json_t *index = json_object();
	json_object_set_new(index, "schemaVersion", json_integer(2));
	json_object_set_new(index, "mediaType", json_string(IB_MT_OCI_INDEX));
	json_object_set(index, "manifests", manifests);
	cleanup_free char *ij = json_dumps(index, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(index);
	return write_buffer(c, "index.json", ij, strlen(ij), err);
}

/* Write the archive of the resolved images to fd; what names it in errors. */
static int save_to_fd(save_ctx *c, int fd, const char *what, ib_archive_format format,
		      ib_error **err)
{
	int r = 0;
	cleanup_archive_write struct archive *a = archive_write_new();
	c->a = a;
	c->written = json_object();
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(a, fd) != ARCHIVE_OK)
		r = ib_error_setc(err, IB_ERROR, "%s: %s", what, aerr(a));
	if (r == 0)
		r = format == IB_ARCHIVE_OCI ? save_oci(c, err) : save_docker(c, err);
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = ib_error_setc(err, IB_ERROR, "write %s: %s", what, aerr(a));
	json_decref(c->written);
	c->written = NULL;
	c->a = NULL;
	return r;
}

int ib_archive_save_fd(ib_store *s, int fd, ib_archive_format format, char *const *refs,
		       size_t n_refs, ib_error **err)
{
	if (n_refs == 0)
		return ib_error_setc(err, IB_EINVALID, "no image to save");
	save_ctx c = {0};
	c.s = s;
	int r = resolve_images(&c, refs, n_refs, err);
	if (r == 0)
		r = save_to_fd(&c, fd, "archive stream", format, err);
	save_images_free(c.imgs, c.n_imgs);
	return r;
}

int ib_archive_save(ib_store *s, const char *path, ib_archive_format format, char *const *refs,
		    size_t n_refs, ib_error **err)
{
	if (n_refs == 0)
		return ib_error_setc(err, IB_EINVALID, "no image to save");
	save_ctx c = {0};
	c.s = s;
	int r = resolve_images(&c, refs, n_refs, err);
	if (r < 0) {
		save_images_free(c.imgs, c.n_imgs);
		return r;
	}
	bool to_stdout = !strcmp(path, "-");
	cleanup_free char *tmp = to_stdout ? NULL : xasprintf("%s.tmp.%ld", path, (long)getpid());
	cleanup_close int fd = -1;
	if (to_stdout) {
		fd = dup(STDOUT_FILENO);
		if (fd < 0)
			r = ib_error_set(err, errno, "stdout");
	} else {
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			r = ib_error_set(err, errno, "create %s", path);
	}
	if (r < 0) {
		save_images_free(c.imgs, c.n_imgs);
		return r;
	}
	r = save_to_fd(&c, fd, path, format, err);
	if (r == 0 && !to_stdout && fsync(fd) < 0)
		r = ib_error_set(err, errno, "fsync %s", tmp);
	if (r == 0 && close(ib_steal_fd(&fd)) < 0)
		r = ib_error_set(err, errno, "write %s", path);
	if (r == 0 && !to_stdout && rename(tmp, path) < 0)
		r = ib_error_set(err, errno, "rename %s to %s", tmp, path);
	if (r == 0 && !to_stdout) {
		cleanup_free char *d = xstrdup(path);
		ib_fsync_dir(dirname(d), NULL);
	}
	if (r < 0 && !to_stdout)
		unlink(tmp);
	save_images_free(c.imgs, c.n_imgs);
	return r;
}
