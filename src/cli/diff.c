/* imgbuild diff: file-level differences between two images.  The engine
 * (layers read from a store, flattened and compared) is
 * ib_image_diff_stores in lib/imgdiff.c; an image that is not in the store
 * (an archive, an OCI layout, a registry) is first brought into a
 * temporary store of its own under ROOT/tmp. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "image_archive.h"
#include "imgdiff.h"
#include "ref.h"
#include "registry.h"
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
    "Each REF is an image of the store, or (brought into a temporary store,\n"
    "the store itself is not changed):\n"
    "  oci:DIR[:TAG]               an OCI image layout directory\n"
    "  oci-archive:FILE            a tarred OCI layout (its first image)\n"
    "  docker-archive:FILE         a `docker save` archive (its first image)\n"
    "  docker://NAME               an image of a registry\n"
    "A name that is not in the store is pulled from its registry.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

typedef struct source {
	ib_store *store; /* the main store, or own */
	ib_store *own;	 /* temporary store, or NULL */
	char *dir;	 /* its root under ROOT/tmp */
	char *ref;	 /* the image in store */
} source;

static void source_clear(source *src)
{
	ib_store_free(src->own);
	if (src->dir) {
		ib_error *e = NULL;
		ib_rm_rf(src->dir, &e);
		ib_error_free(&e);
	}
	free(src->dir);
	free(src->ref);
}

/* Write the tree dir (an OCI layout) as a tar file at out. */
static int tar_dir(const char *dir, const char *out, ib_error **err)
{
	struct archive *rd = archive_read_disk_new();
	struct archive *wr = archive_write_new();
	archive_read_disk_set_standard_lookup(rd);
	archive_read_disk_set_behavior(rd, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
	archive_write_set_format_pax_restricted(wr);
	int rc = 0;
	if (archive_write_open_filename(wr, out) != ARCHIVE_OK ||
	    archive_read_disk_open(rd, dir) != ARCHIVE_OK) {
		rc = ib_error_setc(err, IB_ERROR, "oci:%s: %s", dir,
				   archive_error_string(archive_errno(rd) ? rd : wr));
		goto out;
	}
	size_t dlen = strlen(dir);
	char *buf = xmalloc(65536);
	for (;;) {
		struct archive_entry *e = archive_entry_new();
		int r = archive_read_next_header2(rd, e);
		if (r == ARCHIVE_EOF) {
			archive_entry_free(e);
			break;
		}
		if (r != ARCHIVE_OK) {
			rc = ib_error_setc(err, IB_ERROR, "oci:%s: %s", dir,
					   archive_error_string(rd));
			archive_entry_free(e);
			break;
		}
		archive_read_disk_descend(rd);
		const char *path = archive_entry_pathname(e);
		const char *rel = !strncmp(path, dir, dlen) ? path + dlen : path;
		while (*rel == '/')
			rel++;
		if (!*rel || archive_entry_filetype(e) == AE_IFLNK) {
			archive_entry_free(e);
			continue;
		}
		archive_entry_set_pathname(e, rel);
		if (archive_write_header(wr, e) != ARCHIVE_OK) {
			rc = ib_error_setc(err, IB_ERROR, "tar %s: %s", out,
					   archive_error_string(wr));
			archive_entry_free(e);
			break;
		}
		if (archive_entry_filetype(e) == AE_IFREG) {
			int fd = open(archive_entry_sourcepath(e), O_RDONLY | O_CLOEXEC);
			ssize_t n = 0;
			while (fd >= 0 && (n = read(fd, buf, 65536)) > 0)
				archive_write_data(wr, buf, (size_t)n);
			if (fd < 0 || n < 0)
				rc = ib_error_set(err, errno, "read %s",
						  archive_entry_sourcepath(e));
			if (fd >= 0)
				close(fd);
		}
		archive_entry_free(e);
		if (rc < 0)
			break;
	}
	free(buf);
out:
	archive_read_free(rd);
	if (archive_write_close(wr) != ARCHIVE_OK && rc == 0)
		rc = ib_error_setc(err, IB_ERROR, "tar %s: %s", out, archive_error_string(wr));
	archive_write_free(wr);
	return rc;
}

/* Load an archive into src->own; src->ref = the image tagged want (a tag
 * or a full name, NULL = the first image). */
static int load_into(source *src, const char *file, const char *want, const char *what,
		     ib_error **err)
{
	ib_archive_loaded *l = NULL;
	size_t n = 0;
	int r = ib_archive_load(src->own, file, &l, &n, err);
	if (r < 0)
		return r;
	/* an OCI layout's ref.name "v1" or "app:v1" loads as a full name */
	cleanup_free char *norm = NULL;
	ib_ref *parsed = NULL;
	if (want && ib_ref_parse(&parsed, want, NULL) == 0) {
		norm = ib_ref_string(parsed);
		ib_ref_free(parsed);
	}
	for (size_t i = 0; i < n && !src->ref; i++) {
		const char *name = l[i].name;
		size_t nl = name ? strlen(name) : 0, wl = want ? strlen(want) : 0;
		if (!want || (name && (!strcmp(name, want) || (norm && !strcmp(name, norm)) ||
				       (nl > wl && name[nl - wl - 1] == ':' &&
					!strcmp(name + nl - wl, want)))))
			src->ref = xstrdup(l[i].digest);
	}
	ib_archive_loaded_free(l, n);
	if (!src->ref)
		return ib_error_setc(err, IB_ENOTFOUND, "%s: no image%s%s", what,
				     want ? " tagged " : "", want ? want : "");
	return 0;
}

static int open_source(ib_store *s, const ib_global *g, const char *spec, source *src,
		       ib_error **err)
{
	memset(src, 0, sizeof(*src));
	src->store = s;
	static const char *const kinds[] = {"oci-archive:", "docker-archive:", "oci:", "docker://"};
	size_t k = 0;
	while (k < 4 && strncmp(spec, kinds[k], strlen(kinds[k])) != 0)
		k++;
	ib_error *e = NULL;
	if (k == 4) {
		ib_image *img = NULL;
		int r = ib_store_image_load(s, spec, &img, &e);
		ib_image_free(img);
		if (r == 0 || r != IB_ENOTFOUND || !strncmp(spec, "localhost/", 10)) {
			if (r < 0) {
				*err = e;
				return r;
			}
			src->ref = xstrdup(spec);
			return 0;
		}
		ib_error_free(&e);
	}
	/* a temporary store of its own */
	src->dir = ib_store_tmp_path(s, "diff");
	int r = ib_store_open(&src->own, src->dir, err);
	if (r < 0)
		return r;
	src->store = src->own;
	const char *arg = k < 4 ? spec + strlen(kinds[k]) : spec;
	if (k == 0 || k == 1)
		return load_into(src, arg, NULL, spec, err);
	if (k == 2) {
		/* oci:DIR[:TAG] */
		cleanup_free char *dir = xstrdup(arg);
		char *colon = strrchr(dir, ':');
		const char *tag = NULL;
		if (colon && !strchr(colon, '/')) {
			*colon = '\0';
			tag = colon + 1;
		}
		cleanup_free char *tar = ib_path_join(src->dir, "layout.tar");
		if ((r = tar_dir(dir, tar, err)) < 0)
			return r;
		r = load_into(src, tar, tag && *tag ? tag : NULL, dir, err);
		unlink(tar);
		return r;
	}
	ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&ro, g, NULL);
	ib_descriptor d = {0};
	if ((r = ib_registry_pull(src->own, arg, &ro, &d, err)) < 0)
		return r;
	src->ref = xstrdup(d.digest);
	ib_descriptor_clear(&d);
	return 0;
}

int ib_cmd_diff(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "diff", .help = usage};
	int rc = ib_cli_parse_plain(&cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	if (argc - optind > 2)
		return ib_cli_usage_error("diff", "unexpected argument '%s'", argv[optind + 2]);
	if (argc - optind != 2)
		return ib_cli_usage_error("diff", "expected two image references");
	const char *refs[2] = {argv[optind], argv[optind + 1]};
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	source src[2];
	memset(src, 0, sizeof(src));
	ib_diff_entry *changes = NULL;
	size_t n_changes = 0;
	int r = open_source(s, g, refs[0], &src[0], &err);
	if (r < 0)
		ib_error_wrap(&err, "%s", refs[0]);
	if (r == 0 && (r = open_source(s, g, refs[1], &src[1], &err)) < 0)
		ib_error_wrap(&err, "%s", refs[1]);
	if (r == 0)
		r = ib_image_diff_stores(src[0].store, src[0].ref, src[1].store, src[1].ref,
					 &changes, &n_changes, &err);
	source_clear(&src[0]);
	source_clear(&src[1]);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	for (size_t i = 0; i < n_changes; i++)
		printf("%c /%s\n", changes[i].kind, changes[i].path);
	ib_diff_entries_free(changes, n_changes);
	return 0;
}
