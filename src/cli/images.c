/* imgbuild images: list the tagged images of the store. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "ref.h"
#include "util.h"

static const char usage[] =
    "Usage: imgbuild images [--json | --format TEMPLATE]\n"
    "\n"
    "List the tagged images of the store: name, tag, manifest digest (short),\n"
    "creation time and size (the uncompressed content of the layers, as\n"
    "docker and podman show it; the compressed size is in --json and\n"
    "--format).  An image built from a registry cache whose layers are not\n"
    "downloaded yet shows N/A (null in --json): its content size is unknown.\n"
    "\n"
    "Options:\n"
    "  --json           print a JSON array of {name, tag, reference, digest,\n"
    "                   created, size, compressed_size}\n"
    "  --format TMPL    one line per image from a Go-template-style string with\n"
    "                   .Repository .Tag .Reference .ID .Digest .CreatedAt\n"
    "                   .CreatedSince .Size .CompressedSize (bytes: .SizeBytes\n"
    "                   .CompressedSizeBytes) and json, index, join\n"
    "  -h, --help       this help\n";

typedef struct row {
	char *name;	 /* familiar repository name */
	char *tag;	 /* tag or "<none>" */
	char *reference; /* full normalised reference */
	char digest[IB_DIGEST_BUFLEN];
	char *created; /* config "created" or NULL */
	int64_t size;  /* uncompressed content; -1 when the image could not be read
			  or has layers not downloaded yet */
	int64_t compressed_size;
	bool loaded; /* compressed_size is known */
} row;

/* Familiar repository name and tag (ref.c's rule) of a stored name. */
static void split_reference(const char *full, char **name_out, char **tag_out)
{
	ib_ref *r = NULL;
	if (ib_ref_parse(&r, full, NULL) < 0) {
		*name_out = xstrdup(full);
		*tag_out = xstrdup("<none>");
		return;
	}
	*name_out = ib_ref_familiar_name(r);
	*tag_out = xstrdup(r->tag ? r->tag : "<none>");
	ib_ref_free(r);
}

/* go-units HumanDuration, as docker prints CREATED. */
static void human_since(char *out, size_t len, const char *created)
{
	long long s;
	if (!ib_cli_age(created, &s, out, len))
		return;
	long long minutes = s / 60, hours = (s + 1800) / 3600;
	if (s < 1)
		snprintf(out, len, "Less than a second ago");
	else if (s == 1)
		snprintf(out, len, "1 second ago");
	else if (s < 60)
		snprintf(out, len, "%lld seconds ago", s);
	else if (minutes == 1)
		snprintf(out, len, "About a minute ago");
	else if (minutes < 60)
		snprintf(out, len, "%lld minutes ago", minutes);
	else if (hours == 1)
		snprintf(out, len, "About an hour ago");
	else if (hours < 48)
		snprintf(out, len, "%lld hours ago", hours);
	else if (hours < 24 * 7 * 2)
		snprintf(out, len, "%lld days ago", hours / 24);
	else if (hours < 24 * 30 * 2)
		snprintf(out, len, "%lld weeks ago", hours / 24 / 7);
	else if (hours < 24 * 365 * 2)
		snprintf(out, len, "%lld months ago", hours / 24 / 30);
	else
		snprintf(out, len, "%lld years ago", s / 3600 / 24 / 365);
}

static int row_cmp(const void *a, const void *b)
{
	const row *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->tag, y->tag);
}

static void rows_free(row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].name);
		free(rows[i].tag);
		free(rows[i].reference);
		free(rows[i].created);
	}
	free(rows);
}

static void fill_row(ib_store *s, const ib_store_tag *t, row *r)
{
	split_reference(t->name, &r->name, &r->tag);
	r->reference = xstrdup(t->name);
	memcpy(r->digest, t->desc.digest, IB_DIGEST_BUFLEN);
	r->size = -1;
	ib_image *img = NULL;
	ib_error *err = NULL;
	if (ib_store_image_load(s, t->name, &img, &err) < 0) {
		fprintf(stderr, "imgbuild: warning: %s\n", ib_error_msg(err));
		ib_error_free(&err);
		return;
	}
	json_t *created = json_object_get(img->config, "created");
	if (json_is_string(created))
		r->created = xstrdup(json_string_value(created));
	r->compressed_size = 0;
	for (size_t k = 0; k < img->manifest->n_layers; k++)
		r->compressed_size += img->manifest->layers[k].size;
	uint64_t content = 0;
	/* layers still in a cache registry are not downloaded to be measured:
	 * the content size is unknown (N/A), the compressed one known */
	if (ib_store_content_sizes(s, img->manifest->layers, img->manifest->n_layers, &content,
				   NULL) == 0)
		r->size = (int64_t)content;
	r->loaded = true;
	ib_image_free(img);
}

static void print_json(const row *rows, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(rows[i].name));
		json_object_set_new(o, "tag", json_string(rows[i].tag));
		json_object_set_new(o, "reference", json_string(rows[i].reference));
		json_object_set_new(o, "digest", json_string(rows[i].digest));
		json_object_set_new(o, "created",
				    rows[i].created ? json_string(rows[i].created) : json_null());
		json_object_set_new(o, "size",
				    rows[i].size >= 0 ? json_integer(rows[i].size) : json_null());
		json_object_set_new(o, "compressed_size",
				    rows[i].loaded ? json_integer(rows[i].compressed_size)
						   : json_null());
		json_array_append_new(arr, o);
	}
	char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	puts(s);
	free(s);
	json_decref(arr);
}

/* The fields of `docker images --format`. */
static json_t *format_data(const row *r)
{
	char since[64], size[32], csize[32];
	human_since(since, sizeof(since), r->created);
	snprintf(size, sizeof(size), "N/A");
	snprintf(csize, sizeof(csize), "N/A");
	if (r->size >= 0)
		ib_format_size(size, sizeof(size), (uint64_t)r->size);
	if (r->loaded)
		ib_format_size(csize, sizeof(csize), (uint64_t)r->compressed_size);
	json_t *o =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "Repository", r->name, "Tag",
		      r->tag, "Reference", r->reference, "ID", ib_digest_hex(r->digest), "Digest",
		      r->digest, "CreatedSince", since, "Size", size, "CompressedSize", csize);
	json_object_set_new(o, "ID", json_stringn(ib_digest_hex(r->digest), 12));
	json_object_set_new(o, "CreatedAt", r->created ? json_string(r->created) : json_null());
	json_object_set_new(o, "SizeBytes", json_integer(r->size));
	json_object_set_new(o, "CompressedSizeBytes", json_integer(r->compressed_size));
	return o;
}

static int print_format(const row *rows, size_t n, const char *tmpl)
{
	for (size_t i = 0; i < n; i++) {
		json_t *d = format_data(&rows[i]);
		int r = ib_cli_print_template(tmpl, d);
		json_decref(d);
		if (r)
			return r;
	}
	return 0;
}

static void print_table(const row *rows, size_t n)
{
	enum { NCOL = 5 };
	static const char *const head[NCOL] = {"NAME", "TAG", "DIGEST", "CREATED", "SIZE"};
	char **cells = xcalloc(n * NCOL + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		char created[64], size[32];
		human_since(created, sizeof(created), rows[i].created);
		if (rows[i].size >= 0)
			ib_format_size(size, sizeof(size), (uint64_t)rows[i].size);
		else
			snprintf(size, sizeof(size), "N/A");
		char **c = &cells[i * NCOL];
		c[0] = xstrdup(rows[i].name);
		c[1] = xstrdup(rows[i].tag);
		c[2] = xstrndup(ib_digest_hex(rows[i].digest), 12);
		c[3] = xstrdup(created);
		c[4] = xstrdup(size);
	}
	ib_cli_print_table(head, NCOL, cells, n);
}

int ib_cmd_images(int argc, char **argv, ib_global *g)
{
	enum { O_JSON = 256, O_FORMAT };
	static const struct option opts[] = {{"json", no_argument, NULL, O_JSON},
					     {"format", required_argument, NULL, O_FORMAT},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {.name = "images", .help = usage, .longopts = opts};
	bool as_json = false;
	const char *format = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == O_JSON)
			as_json = true;
		else if (c == O_FORMAT)
			format = optarg;
	}
	if (p.exit >= 0)
		return p.exit;
	if (optind < argc)
		return ib_cli_usage_error("images", "unexpected argument '%s'", argv[optind]);
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_store_tag *tags = NULL;
	size_t n = 0;
	if (ib_store_tags(s, &tags, &n, &err) < 0) {
		ib_store_free(s);
		return ib_cli_fail(&err);
	}
	row *rows = xcalloc(n ? n : 1, sizeof(row));
	for (size_t i = 0; i < n; i++)
		fill_row(s, &tags[i], &rows[i]);
	ib_store_tags_free(tags, n);
	ib_store_free(s);
	qsort(rows, n, sizeof(row), row_cmp);
	int rc = 0;
	if (format && !strcmp(format, "json"))
		as_json = true;
	if (as_json)
		print_json(rows, n);
	else if (format)
		rc = print_format(rows, n, format);
	else
		print_table(rows, n);
	rows_free(rows, n);
	return rc;
}
