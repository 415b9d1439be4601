/* imgbuild inspect / history: show one image of the store. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "ref.h"
#include "util.h"

static const char inspect_usage[] =
    "Usage: imgbuild inspect [-f TEMPLATE] REF\n"
    "\n"
    "Print an image's manifest, config and digests as JSON.  REF is a name\n"
    "(alpine, registry.example.com/team/app:1.4), NAME@sha256:..., a manifest\n"
    "digest or a unique prefix of one.\n"
    "\n"
    "Options:\n"
    "  -f, --format TMPL  print a Go-template-style string instead, over the\n"
    "                     fields docker's image inspect has: .Id (config digest)\n"
    "                     .Digest .RepoTags .Created .Architecture .Os .Author\n"
    "                     .Config (.Config.Env, .Config.Cmd, .Config.Labels ...)\n"
    "                     .RootFS .History .Size (uncompressed; null while\n"
    "                     layers are only in a cache registry) .CompressedSize,\n"
    "                     and .Manifest .Layers .ImageConfig (the whole config);\n"
    "                     with json, index, join: '{{json .Config}}',\n"
    "                     '{{index .Config.Labels \"k\"}}', '{{join .Config.Cmd \" \"}}'\n"
    "  -h, --help         this help\n";

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

/* One positional REF; history also takes --no-trunc.  -1 to go on, else
 * the exit status. */
static int single_ref(int argc, char **argv, ib_global *g, const char *cmd, bool *no_trunc,
		      const char **format, const char **ref)
{
	enum { O_NO_TRUNC = 256, O_FORMAT };
	static const struct option history_opts[] = {{"no-trunc", no_argument, NULL, O_NO_TRUNC},
						     {NULL, 0, NULL, 0}};
	static const struct option inspect_opts[] = {{"format", required_argument, NULL, 'f'},
						     {NULL, 0, NULL, 0}};
	const ib_cli_cmd c = {.name = cmd,
			      .help = no_trunc ? history_usage : inspect_usage,
			      .shortopts = no_trunc ? NULL : "f:",
			      .longopts = no_trunc ? history_opts : inspect_opts};
	*ref = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &c, argc, argv, g);
	int o;
	while ((o = ib_cli_next(&p)) != -1)
		if (o == O_NO_TRUNC)
			*no_trunc = true;
		else if (o == 'f' && format)
			*format = optarg;
	if (p.exit >= 0)
		return p.exit;
	if (optind >= argc)
		return ib_cli_usage_error(cmd, "missing image reference");
	if (optind + 1 < argc)
		return ib_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
	*ref = argv[optind];
	return -1;
}

/* single_ref, then open the store and load the image REF names.  -1 with
 * *ref, *s and *img set (the caller frees the store and the image), else
 * the exit status for the command (help printed, or the error). */
static int open_image(int argc, char **argv, ib_global *g, const char *cmd, bool *no_trunc,
		      const char **format, const char **ref, ib_store **s, ib_image **img)
{
	int r = single_ref(argc, argv, g, cmd, no_trunc, format, ref);
	if (r >= 0)
		return r;
	*s = ib_cli_open_store(g);
	if (!*s)
		return 1;
	ib_error *err = NULL;
	if (ib_store_image_load(*s, *ref, img, &err) < 0) {
		ib_store_free(*s);
		return ib_cli_fail(&err);
	}
	return -1;
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

/* inspect --format: the JSON output o reshaped as docker's image inspect. */
/* size < 0: unknown (layers not downloaded yet, left in a cache registry) */
static int print_format(json_t *o, json_t *config, int64_t size, uint64_t compressed,
			const char *tmpl)
{
	json_t *d = json_deep_copy(o);
	json_object_set(d, "ImageConfig", config);
	json_object_set(d, "Id", json_object_get(o, "ConfigDigest"));
	static const struct {
		const char *from, *to;
	} copy[] = {{"created", "Created"}, {"architecture", "Architecture"},
		    {"os", "Os"},	    {"variant", "Variant"},
		    {"author", "Author"},   {"history", "History"}};
	for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
		json_t *v = json_object_get(config, copy[i].from);
		if (v)
			json_object_set(d, copy[i].to, v);
	}
	json_t *cc = json_object_get(config, "config");
	json_object_set_new(d, "Config", cc ? json_incref(cc) : json_object());
	json_t *rootfs = json_object_get(config, "rootfs"), *rf = json_object();
	json_t *type = json_object_get(rootfs, "type"), *ids = json_object_get(rootfs, "diff_ids");
	json_object_set_new(rf, "Type", type ? json_incref(type) : json_string("layers"));
	json_object_set_new(rf, "Layers", ids ? json_incref(ids) : json_array());
	json_object_set_new(d, "RootFS", rf);
	json_object_set_new(d, "Size", size >= 0 ? json_integer((json_int_t)size) : json_null());
	json_object_set_new(d, "CompressedSize", json_integer((json_int_t)compressed));
	int r = ib_cli_print_template(tmpl, d);
	json_decref(d);
	return r;
}

int ib_cmd_inspect(int argc, char **argv, ib_global *g)
{
	const char *ref;
	ib_store *s = NULL;
	ib_image *img = NULL;
	const char *format = NULL;
	int r = open_image(argc, argv, g, "inspect", NULL, &format, &ref, &s, &img);
	if (r >= 0)
		return r;
	json_t *manifest = json_loadb(img->manifest_raw, img->manifest_len, 0, NULL);
	if (!manifest) {
		ib_error *err = NULL;
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
	uint64_t content = 0, compressed = 0;
	int64_t size = -1;
	if (format) {
		if (ib_store_content_sizes(s, img->manifest->layers, img->manifest->n_layers,
					   &content, NULL) == 0)
			size = (int64_t)content;
		for (size_t k = 0; k < img->manifest->n_layers; k++)
			compressed += (uint64_t)img->manifest->layers[k].size;
	}
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
	if (format) {
		r = print_format(o, img->config, size, compressed, format);
		json_decref(o);
		ib_image_free(img);
		return r;
	}
	char *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	puts(out);
	free(out);
	json_decref(o);
	ib_image_free(img);
	return 0;
}

/* "3 days ago", coarser than `images` (history rows are read side by side). */
static void human_since(char *out, size_t len, const char *created)
{
	long long s;
	if (!ib_cli_age(created, &s, out, len))
		return;
	if (s < 60)
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
	const char *ref;
	bool no_trunc = false;
	ib_store *s = NULL;
	ib_image *img = NULL;
	int r = open_image(argc, argv, g, "history", &no_trunc, NULL, &ref, &s, &img);
	if (r >= 0)
		return r;
	ib_store_free(s);

	json_t *history = json_object_get(img->config, "history");
	size_t nh = json_is_array(history) ? json_array_size(history) : 0;
	size_t nl = img->manifest->n_layers;
	enum { NCOL = 5 };
	char **cells = xcalloc((nh + nl) * NCOL + 1, sizeof(char *));
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
		char **c = &cells[n * NCOL];
		c[0] = xasprintf("%zu", n);
		c[1] = xstrdup(created);
		c[2] = one_line(json_string_value(json_object_get(h, "created_by")), trunc);
		c[3] = xstrdup(size);
		c[4] = one_line(json_string_value(json_object_get(h, "comment")), trunc);
		n++;
	}
	/* Layers the history does not describe (images built without it). */
	for (; layer < nl; layer++) {
		char size[32];
		ib_format_size(size, sizeof(size), (uint64_t)img->manifest->layers[layer].size);
		char **c = &cells[n * NCOL];
		c[0] = xasprintf("%zu", n);
		c[1] = xstrdup("N/A");
		c[2] = xstrdup("<missing>");
		c[3] = xstrdup(size);
		c[4] = xstrdup("");
		n++;
	}
	ib_image_free(img);

	static const char *const head[NCOL] = {"STEP", "CREATED", "CREATED BY", "SIZE", "COMMENT"};
	ib_cli_print_table(head, NCOL, cells, n);
	return 0;
}
