/* imgbuild tag / rmi: add and remove names.  Blobs stay until prune. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "ref.h"
#include "util.h"

static const char tag_usage[] =
    "Usage: imgbuild tag SOURCE TARGET\n"
    "\n"
    "Give the image SOURCE (a name, NAME@sha256:..., a manifest digest or a\n"
    "unique prefix of one) the additional name TARGET (NAME[:TAG]).\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

static const char rmi_usage[] =
    "Usage: imgbuild rmi REF...\n"
    "\n"
    "Remove tags.  A manifest digest (or unique prefix) removes every tag of\n"
    "that image; NAME@sha256:... removes the tags of NAME that point at it.\n"
    "The blobs stay in the store until 'imgbuild prune'.  Every REF is tried;\n"
    "the exit status is 1 if any of them was not found.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

/* Collect the operands: -1, or the exit status (help, usage error). */
static int positional(int argc, char **argv, ib_global *g, const ib_cli_cmd *cmd, char ***out)
{
	int rc = ib_cli_parse_plain(cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	for (int i = optind; i < argc; i++)
		ib_strv_push(out, argv[i]);
	return -1;
}

/* The exact descriptor a tag points at (index or manifest), else the
 * manifest that ref resolves to. */
static int resolve_source(ib_store *s, const char *ref, ib_descriptor *out, ib_error **err)
{
	ib_ref *parsed = NULL;
	if (ib_ref_parse(&parsed, ref, NULL) == 0) {
		cleanup_free char *full = parsed->digest ? NULL : ib_ref_string(parsed);
		ib_ref_free(parsed);
		if (full && ib_store_tag_get(s, full, out, NULL) == 0)
			return 0;
	}
	ib_image *img = NULL;
	int r = ib_store_image_load(s, ref, &img, err);
	if (r < 0)
		return r;
	ib_descriptor_copy(out, &img->desc);
	ib_image_free(img);
	return 0;
}

int ib_cmd_tag(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "tag", .help = tag_usage};
	cleanup_strv char **args = NULL;
	int r = positional(argc, argv, g, &cmd, &args);
	if (r >= 0)
		return r;
	size_t n = ib_strv_len(args);
	if (n != 2)
		return ib_cli_usage_error("tag", "expected SOURCE and TARGET, got %zu argument%s",
					  n, n == 1 ? "" : "s");
	ib_error *err = NULL;
	ib_ref *dst = NULL;
	if (ib_ref_parse(&dst, args[1], &err) < 0)
		return ib_cli_fail(&err);
	if (dst->digest || !dst->tag) {
		ib_ref_free(dst);
		ib_error_setc(&err, IB_EINVALID, "target \"%s\" must be NAME[:TAG], not a digest",
			      args[1]);
		return ib_cli_fail(&err);
	}
	cleanup_free char *dst_full = ib_ref_string(dst);
	ib_ref_free(dst);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_descriptor d = {0};
	r = resolve_source(s, args[0], &d, &err);
	if (r == 0) {
		/* The store writes its own ref.name annotation. */
		json_decref(d.annotations);
		d.annotations = NULL;
		r = ib_store_tag_set(s, dst_full, &d, &err);
	}
	ib_descriptor_clear(&d);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);
	return 0;
}

static bool hex_or_digest(const char *s)
{
	if (!strncmp(s, "sha256:", 7))
		return true;
	if (!*s)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static void untagged(const char *full)
{
	cleanup_free char *fam = ib_ref_familiarize(full);
	printf("Untagged: %s\n", fam);
}

/* Remove the tags pointing at digest; with repo non-NULL only those whose
 * repository (domain/path) is repo.  Returns the number removed. */
static int remove_tags_of(ib_store *s, const char *digest, const char *repo, ib_error **err)
{
	ib_store_tag *tags = NULL;
	size_t n = 0;
	int r = ib_store_tags(s, &tags, &n, err);
	if (r < 0)
		return r;
	int removed = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (strcmp(tags[i].desc.digest, digest) != 0)
			continue;
		if (repo) {
			ib_ref *t = NULL;
			if (ib_ref_parse(&t, tags[i].name, NULL) < 0)
				continue;
			cleanup_free char *name = ib_ref_name(t);
			ib_ref_free(t);
			if (strcmp(name, repo) != 0)
				continue;
		}
		r = ib_store_tag_remove(s, tags[i].name, err);
		if (r == 0) {
			untagged(tags[i].name);
			removed++;
		}
	}
	ib_store_tags_free(tags, n);
	return r < 0 ? r : removed;
}

static int rmi_one(ib_store *s, const char *arg, ib_error **err)
{
	ib_ref *parsed = NULL;
	ib_error *perr = NULL;
	if (ib_ref_parse(&parsed, arg, &perr) == 0) {
		ib_error_free(&perr);
		if (parsed->digest) {
			cleanup_free char *repo = ib_ref_name(parsed);
			char digest[IB_DIGEST_BUFLEN];
			snprintf(digest, sizeof(digest), "%s", parsed->digest);
			ib_ref_free(parsed);
			int r = remove_tags_of(s, digest, repo, err);
			if (r == 0)
				return ib_error_setc(err, IB_ENOTFOUND, "no tag of %s points at %s",
						     repo, digest);
			return r < 0 ? r : 0;
		}
		cleanup_free char *full = ib_ref_string(parsed);
		cleanup_free char *fam = ib_ref_familiar(parsed);
		ib_ref_free(parsed);
		ib_error *terr = NULL;
		int r = ib_store_tag_remove(s, full, &terr);
		if (r == 0) {
			untagged(full);
			return 0;
		}
		if (r != IB_ENOTFOUND) {
			*err = terr;
			return r;
		}
		ib_error_free(&terr);
		if (!hex_or_digest(arg))
			return ib_error_setc(err, r, "image \"%s\" not found in the store", fam);
	} else if (!hex_or_digest(arg)) {
		int code = perr->code;
		*err = perr;
		return code;
	} else {
		ib_error_free(&perr);
	}
	/* A manifest digest or a prefix of one: drop every tag of the image. */
	ib_image *img = NULL;
	int r = ib_store_image_load(s, arg, &img, err);
	if (r < 0)
		return r;
	char digest[IB_DIGEST_BUFLEN];
	memcpy(digest, img->desc.digest, IB_DIGEST_BUFLEN);
	ib_image_free(img);
	r = remove_tags_of(s, digest, NULL, err);
	if (r == 0)
		return ib_error_setc(err, IB_ENOTFOUND, "image %s has no tags", digest);
	return r < 0 ? r : 0;
}

int ib_cmd_rmi(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "rmi", .help = rmi_usage};
	cleanup_strv char **args = NULL;
	int r = positional(argc, argv, g, &cmd, &args);
	if (r >= 0)
		return r;
	if (!args || !args[0])
		return ib_cli_usage_error("rmi", "missing image reference");
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	int status = 0;
	for (size_t i = 0; args[i]; i++) {
		ib_error *err = NULL;
		if (rmi_one(s, args[i], &err) < 0) {
			int st = ib_cli_fail(&err);
			if (st > status)
				status = st;
		}
	}
	ib_store_free(s);
	return status;
}
