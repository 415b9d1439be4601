/* imgbuild inspect / history: show one image of the store. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "ref.h"
#include "util.h"

static const char inspect_usage[] =
    "Usage: imgbuild inspect REF\n"
    "\n"
    "Print an image's manifest, config and digests as JSON.  REF is a name\n"
    "(alpine, registry.example.com/team/app:1.4), NAME@sha256:..., a manifest\n"
    "digest or a unique prefix of one.\n"
    "\n"
    "Options:\n"
    "  -h, --help this help\n";

static const char history_usage[] =
    "Usage: imgbuild history [--no-trunc] REF\n"
    "\n"
    "Show the history of an image, one row per step in build order: the\n"
    "step, when it was created, the command that created it, the size of the\n"
    "layer it added (0B for steps that only changed the config) and the comment.\n"
    "\n"
    "Options:\n"
    "  --no-trunc  do not shorten the CREATED BY column\n"
    "  -h, --help  this help\n";

/* One positional REF, no options except those listed in flags. */
static int single_ref(int argc, char **argv, const char *cmd, bool *no_trunc, const char **ref)
{
	*ref = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (no_trunc && !strcmp(a, "--no-trunc")) {
			*no_trunc = true;
		} else if (!strcmp(a, "--")) {
			if (i + 1 < argc && !*ref)
				*ref = argv[++i];
			if (i + 1 < argc)
				return ib_cli_usage_error(cmd, "unexpected argument '%s'",
							  argv[i + 1]);
		} else if (a[0] == '-' && a[1]) {
			return ib_cli_usage_error(cmd, "unknown option '%s'", a);
		} else if (*ref) {
			return ib_cli_usage_error(cmd, "unexpected argument '%s'", a);
		} else {
			*ref = a;
		}
	}
	if (!*ref)
		return ib_cli_usage_error(cmd, "missing image reference");
	return 0;
}

/* Tags in the store that point at digest, plus wanted when it is a tag:
 * ib_store_image_load looks tags up first, so a tag named wanted is what
 * the image was resolved through (possibly via an index). */
static json_t *tags_for(ib_store *s, const char *digest, const char *wanted, bool *wanted_found)
{
	json_t *arr = json_array();
	ib_store_tag *tags = NULL;
	size_t n = 0;
	*wanted_found = false;
	if (ib_store_tags(s, &tags, &n, NULL) < 0)
		return arr;
	for (size_t i = 0; i < n; i++) {
		bool is_wanted = wanted && !strcmp(tags[i].name, wanted);
		if (strcmp(tags[i].desc.digest, digest) != 0 && !is_wanted)
			continue;
		json_array_append_new(arr, json_string(tags[i].name));
		if (is_wanted)
			*wanted_found = true;
	}
	ib_store_tags_free(tags, n);
	return arr;
}

int ib_cmd_inspect(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(inspect_usage, stdout);
		return 0;
	}
	const char *ref;
	int r = single_ref(argc, argv, "inspect", NULL, &ref);
	if (r)
		return r;
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_image *img = NULL;
	if (ib_store_image_load(s, ref, &img, &err) < 0) {
		ib_store_free(s);
		return ib_cli_fail(&err);
	}
	json_t *manifest = json_loadb(img->manifest_raw, img->manifest_len, 0, NULL);
	if (!manifest) {
		ib_error_setc(&err, IB_EINVALID, "manifest %s is not valid JSON", img->desc.digest);
		ib_image_free(img);
		ib_store_free(s);
		return ib_cli_fail(&err);
	}
	/* Name: the normalised reference when it is a tag of this image. */
	cleanup_free char *full = NULL;
	ib_ref *parsed = NULL;
	if (ib_ref_parse(&parsed, ref, NULL) == 0) {
		full = ib_ref_string(parsed);
		ib_ref_free(parsed);
	}
	bool tagged = false;
	json_t *repo_tags = tags_for(s, img->desc.digest, full, &tagged);
	ib_store_free(s);

	json_t *o = json_object();
	json_object_set_new(
	    o, "Name",
	    json_string(tagged || (full && strchr(full, '@')) ? full : img->desc.digest));
	json_object_set_new(o, "Digest", json_string(img->desc.digest));
	json_object_set_new(o, "MediaType",
			    json_string(img->manifest->media_type ? img->manifest->media_type
								  : IB_MT_OCI_MANIFEST));
	json_object_set_new(o, "RepoTags", repo_tags);
	json_object_set_new(o, "ConfigDigest", json_string(img->manifest->config.digest));
	json_t *layers = json_array();
	for (size_t k = 0; k < img->manifest->n_layers; k++) {
		const ib_descriptor *l = &img->manifest->layers[k];
		const char *diff_id = ib_config_diff_id(img->config, k);
		json_t *lo = json_object();
		json_object_set_new(lo, "digest", json_string(l->digest));
		json_object_set_new(lo, "size", json_integer(l->size));
		json_object_set_new(lo, "diff_id", diff_id ? json_string(diff_id) : json_null());
		json_object_set_new(lo, "mediaType",
				    json_string(l->media_type ? l->media_type : ""));
		json_array_append_new(layers, lo);
	}
	json_object_set_new(o, "Layers", layers);
	json_object_set_new(o, "Manifest", manifest);
	json_object_set(o, "Config", img->config);
	char *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	puts(out);
	free(out);
	json_decref(o);
	ib_image_free(img);
	return 0;
}

/* RFC 3339 to seconds; -1 when unparsable. */
static int parse_rfc3339(const char *s, time_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -1;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int h = (p[1] - '0') * 10 + (p[2] - '0');
		int m = (p[4] - '0') * 10 + (p[5] - '0');
		off = (h * 3600L + m * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	*out = timegm(&tm) - off;
	return 0;
}

/* "3 days ago", coarser than `images` (history rows are read side by side). */
static void human_since(char *out, size_t len, const char *created)
{
	time_t t;
	if (!created || parse_rfc3339(created, &t) < 0) {
		snprintf(out, len, "N/A");
		return;
	}
	long long s = (long long)difftime(time(NULL), t);
	if (s < 0)
		snprintf(out, len, "in the future");
	else if (s < 60)
		snprintf(out, len, "%lld seconds ago", s);
	else if (s < 3600)
		snprintf(out, len, "%lld minutes ago", s / 60);
	else if (s < 48 * 3600)
		snprintf(out, len, "%lld hours ago", s / 3600);
	else if (s < 14LL * 86400)
		snprintf(out, len, "%lld days ago", s / 86400);
	else if (s < 60LL * 86400)
		snprintf(out, len, "%lld weeks ago", s / 86400 / 7);
	else if (s < 730LL * 86400)
		snprintf(out, len, "%lld months ago", s / 86400 / 30);
	else
		snprintf(out, len, "%lld years ago", s / 86400 / 365);
}

typedef struct hrow {
	char *cells[5];
} hrow;

/* Single-line text: newlines and tabs become spaces; shortened to max
 * characters with "..." unless max is 0. */
static char *one_line(const char *s, size_t max)
{
	char *r = xstrdup(s ? s : "");
	for (char *p = r; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	if (max && strlen(r) > max) {
		r[max - 3] = '.';
		r[max - 2] = '.';
		r[max - 1] = '.';
		r[max] = '\0';
	}
	return r;
}

int ib_cmd_history(int argc, char **argv, ib_global *g)
{
	if (ib_cli_wants_help(argc, argv)) {
		fputs(history_usage, stdout);
		return 0;
	}
	const char *ref;
	bool no_trunc = false;
	int r = single_ref(argc, argv, "history", &no_trunc, &ref);
	if (r)
		return r;
	ib_store *s = ib_cli_open_store(g);
	if (!s)
		return 1;
	ib_error *err = NULL;
	ib_image *img = NULL;
	r = ib_store_image_load(s, ref, &img, &err);
	ib_store_free(s);
	if (r < 0)
		return ib_cli_fail(&err);

	json_t *history = json_object_get(img->config, "history");
	size_t nh = json_is_array(history) ? json_array_size(history) : 0;
	size_t nl = img->manifest->n_layers;
	hrow *rows = xcalloc(nh + nl + 1, sizeof(hrow));
	size_t n = 0, layer = 0;
	size_t trunc = no_trunc ? 0 : 60;
	for (size_t i = 0; i < nh; i++) {
		json_t *h = json_array_get(history, i);
		bool empty = json_is_true(json_object_get(h, "empty_layer"));
		char created[64], size[32];
		human_since(created, sizeof(created),
			    json_string_value(json_object_get(h, "created")));
		if (empty)
			snprintf(size, sizeof(size), "0B");
		else if (layer < nl)
			ib_format_size(size, sizeof(size),
				       (uint64_t)img->manifest->layers[layer++].size);
		else
			snprintf(size, sizeof(size), "N/A");
		rows[n].cells[0] = xasprintf("%zu", n);
		rows[n].cells[1] = xstrdup(created);
		rows[n].cells[2] =
		    one_line(json_string_value(json_object_get(h, "created_by")), trunc);
		rows[n].cells[3] = xstrdup(size);
		rows[n].cells[4] =
		    one_line(json_string_value(json_object_get(h, "comment")), trunc);
		n++;
	}
	/* Layers the history does not describe (images built without it). */
	for (; layer < nl; layer++) {
		char size[32];
		ib_format_size(size, sizeof(size), (uint64_t)img->manifest->layers[layer].size);
		rows[n].cells[0] = xasprintf("%zu", n);
		rows[n].cells[1] = xstrdup("N/A");
		rows[n].cells[2] = xstrdup("<missing>");
		rows[n].cells[3] = xstrdup(size);
		rows[n].cells[4] = xstrdup("");
		n++;
	}
	ib_image_free(img);

	static const char *head[5] = {"STEP", "CREATED", "CREATED BY", "SIZE", "COMMENT"};
	size_t w[5];
	for (int c = 0; c < 5; c++) {
		w[c] = strlen(head[c]);
		for (size_t i = 0; i < n; i++)
			if (strlen(rows[i].cells[c]) > w[c])
				w[c] = strlen(rows[i].cells[c]);
	}
	for (int c = 0; c < 5; c++)
		if (c < 4)
			printf("%-*s   ", (int)w[c], head[c]);
		else
			printf("%s\n", head[c]);
	for (size_t i = 0; i < n; i++) {
		for (int c = 0; c < 5; c++) {
			if (c < 4)
				printf("%-*s   ", (int)w[c], rows[i].cells[c]);
			else
				printf("%s\n", rows[i].cells[c]);
			free(rows[i].cells[c]);
		}
	}
	free(rows);
	return 0;
}
