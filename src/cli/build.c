#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder.h"
#include "cli/commands.h"
#include "recipe.h"
#include "ref.h"
#include "registry.h"
#include "util.h"

static const char build_help[] =
    "Usage: imgbuild build RECIPE.lua [OPTIONS]\n"
    "       imgbuild RECIPE.lua [OPTIONS]\n\n"
    "Build an image from a Lua recipe and print its digest.\n\n"
    "Options:\n"
    "  -t, --tag REF              tag the result (repeatable)\n"
    "      --context DIR          build context (default: the recipe's directory)\n"
    "      --build-arg K[=V]      value for arg(K); without =V, from $K (repeatable)\n"
    "      --target STAGE         build up to this stage\n"
    "      --no-cache             run every step\n"
    "      --pull POLICY          missing (default), always, never\n"
    "      --push                 push every tag after the build\n"
    "      --compression ALG      gzip (default) or zstd\n"
    "      --compression-level N  gzip 1-9 (default 1), zstd 1-19 (default 3)\n"
    "      --network MODE         network of run steps: default (own namespace,\n"
    "                             outbound through slirp4netns), none or host\n"
    "      --pids-limit N         processes per run step (default 4096, -1 = none)\n"
    "      --memory SIZE          memory per run step (K, M, G suffixes; default none)\n"
    "      --step-timeout SECS    timeout of run steps without their own (default none)\n"
    "      --security-opt seccomp=unconfined  run steps without the seccomp filter\n"
    "      --secret id=ID,src=PATH  source of the run{secrets} ID (else the recipe's\n"
    "                             src, which must lie inside the build context)\n"
    "      --source-date-epoch N  build timestamp (default $SOURCE_DATE_EPOCH, else 0)\n"
    "      --iidfile FILE         write the image digest to FILE\n"
    "      --metadata-file FILE   write build metadata as JSON to FILE\n"
    "      --progress MODE        auto, tty, plain or json\n"
    "      --explain              say why each executed step missed the cache\n"
    "      --check                rebuild without cache and report the first difference\n";

static const char plan_help[] =
    "Usage: imgbuild plan RECIPE.lua [--build-arg K=V]... [--context DIR]\n\n"
    "Evaluate a recipe and print the resolved plan as JSON.\n";

static char *recipe_dir(const char *recipe)
{
	cleanup_free char *tmp = xstrdup(recipe);
	return xstrdup(dirname(tmp));
}

static int eval_recipe(json_t **plan, const char *recipe, const char *context, char **args)
{
	ib_error *err = NULL;
	ib_recipe_options ro = IB_RECIPE_OPTIONS_INIT;
	ro.context_dir = context;
	ro.build_args = args;
	if (ib_recipe_eval(plan, recipe, &ro, &err) < 0)
		return ib_cli_fail(&err);
	return 0;
}

static int check_context(const char *context)
{
	struct stat st;
	if (stat(context, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "imgbuild: error: build context %s is not a directory\n", context);
		return 1;
	}
	return 0;
}

int ib_cmd_plan(int argc, char **argv, ib_global *g)
{
	(void)g;
	static const struct option opts[] = {{"build-arg", required_argument, NULL, 'a'},
					     {"context", required_argument, NULL, 'c'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	cleanup_strv char **args = xcalloc(1, sizeof(char *));
	const char *context = NULL;
	int c;
	optind = 1;
	opterr = 0; /* one error line, ours */
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			ib_strv_push(&args, optarg);
			break;
		case 'c':
			context = optarg;
			break;
		case 'h':
			fputs(plan_help, stdout);
			return 0;
		default:
			return ib_cli_usage_error("plan", "unknown option or missing value: %s",
						  argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return ib_cli_usage_error("plan", "expected exactly one RECIPE argument");
	const char *recipe = argv[optind];
	cleanup_free char *ctx = context ? xstrdup(context) : recipe_dir(recipe);
	if (check_context(ctx))
		return 1;
	json_t *plan = NULL;
	int r = eval_recipe(&plan, recipe, ctx, args);
	if (r)
		return r;
	char *s = json_dumps(plan, JSON_INDENT(2) | JSON_SORT_KEYS);
	printf("%s\n", s);
	free(s);
	json_decref(plan);
	return 0;
}

static int write_text(const char *path, const char *text)
{
	ib_error *err = NULL;
	if (ib_write_file_atomic(path, text, strlen(text), 0644, &err) < 0)
		return ib_cli_fail(&err);
	return 0;
}

int ib_cmd_build(int argc, char **argv, ib_global *g)
{
	enum {
		O_CONTEXT = 256,
		O_ARG,
		O_TARGET,
		O_NOCACHE,
		O_PULL,
		O_PUSH,
		O_COMP,
		O_NET,
		O_SDE,
		O_IID,
		O_META,
		O_PROGRESS,
		O_EXPLAIN,
		O_CHECK,
		O_CACHE_FROM,
		O_CACHE_TO,
		O_LEVEL,
		O_SECRET,
		O_PIDS,
		O_MEMORY,
		O_STEP_TIMEOUT,
		O_SECOPT,
	};
	static const struct option opts[] = {
	    {"tag", required_argument, NULL, 't'},
	    {"context", required_argument, NULL, O_CONTEXT},
	    {"build-arg", required_argument, NULL, O_ARG},
	    {"target", required_argument, NULL, O_TARGET},
	    {"no-cache", no_argument, NULL, O_NOCACHE},
	    {"pull", required_argument, NULL, O_PULL},
	    {"push", no_argument, NULL, O_PUSH},
	    {"compression", required_argument, NULL, O_COMP},
	    {"compression-level", required_argument, NULL, O_LEVEL},
	    {"secret", required_argument, NULL, O_SECRET},
	    {"network", required_argument, NULL, O_NET},
	    {"pids-limit", required_argument, NULL, O_PIDS},
	    {"memory", required_argument, NULL, O_MEMORY},
	    {"step-timeout", required_argument, NULL, O_STEP_TIMEOUT},
	    {"security-opt", required_argument, NULL, O_SECOPT},
	    {"source-date-epoch", required_argument, NULL, O_SDE},
	    {"iidfile", required_argument, NULL, O_IID},
	    {"metadata-file", required_argument, NULL, O_META},
	    {"progress", required_argument, NULL, O_PROGRESS},
	    {"explain", no_argument, NULL, O_EXPLAIN},
	    {"check", no_argument, NULL, O_CHECK},
	    {"cache-from", required_argument, NULL, O_CACHE_FROM},
	    {"cache-to", required_argument, NULL, O_CACHE_TO},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	ib_build_options bo = IB_BUILD_OPTIONS_INIT;
	cleanup_strv char **args = xcalloc(1, sizeof(char *));
	cleanup_strv char **tags = xcalloc(1, sizeof(char *));
	cleanup_strv char **secrets = xcalloc(1, sizeof(char *));
	const char *context = NULL, *iidfile = NULL, *metafile = NULL;
	bool push = false, check = false;
	ib_progress_mode pmode = IB_PROGRESS_AUTO;
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	int c;
	optind = 1;
	opterr = 0; /* one error line, ours */
	while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
		switch (c) {
		case 't': {
			ib_ref *ref = NULL;
			ib_error *err = NULL;
			if (ib_ref_parse(&ref, optarg, &err) < 0) {
				ib_error_wrap(&err, "-t");
				err->code = IB_EUSAGE;
				return ib_cli_fail(&err);
			}
			if (ref->digest) {
				ib_ref_free(ref);
				return ib_cli_usage_error(
				    "build", "-t %s: a tag cannot contain a digest", optarg);
			}
			cleanup_free char *full = ib_ref_string(ref);
			ib_strv_push(&tags, full);
			ib_ref_free(ref);
			break;
		}
		case O_CONTEXT:
			context = optarg;
			break;
		case O_ARG:
			ib_strv_push(&args, optarg);
			break;
		case O_TARGET:
			bo.target = optarg;
			break;
		case O_NOCACHE:
			bo.no_cache = true;
			break;
		case O_PULL:
			if (strcmp(optarg, "missing") && strcmp(optarg, "always") &&
			    strcmp(optarg, "never"))
				return ib_cli_usage_error(
				    "build", "--pull must be missing, always or never");
			bo.pull = optarg;
			break;
		case O_PUSH:
			push = true;
			break;
		case O_COMP:
			if (!strcmp(optarg, "gzip"))
				bo.compression = IB_COMP_GZIP;
			else if (!strcmp(optarg, "zstd"))
				bo.compression = IB_COMP_ZSTD;
			else
				return ib_cli_usage_error("build",
							  "--compression must be gzip or zstd");
			break;
		case O_LEVEL: {
			uint64_t v;
			if (ib_parse_u64(optarg, &v) < 0 || v < 1 || v > 19)
				return ib_cli_usage_error("build",
							  "--compression-level must be 1-9 "
							  "(gzip) or 1-19 (zstd)");
			bo.compression_level = (int)v;
			break;
		}
		case O_SECRET: {
			/* id=ID,src=PATH (docker/buildah syntax) */
			cleanup_free char *dup = xstrdup(optarg);
			const char *id = NULL, *src = NULL;
			for (char *tok = dup, *next; tok; tok = next) {
				next = strchr(tok, ',');
				if (next)
					*next++ = '\0';
				if (!strncmp(tok, "id=", 3))
					id = tok + 3;
				else if (!strncmp(tok, "src=", 4) || !strncmp(tok, "source=", 7))
					src = strchr(tok, '=') + 1;
				else
					return ib_cli_usage_error(
					    "build", "--secret %s: unknown field", optarg);
			}
			if (!id || !*id || !src || !*src)
				return ib_cli_usage_error("build", "--secret wants id=ID,src=PATH");
			cleanup_free char *kv = xasprintf("%s=%s", id, src);
			ib_strv_push(&secrets, kv);
			break;
		}
		case O_NET:
			if (strcmp(optarg, "default") && strcmp(optarg, "host") &&
			    strcmp(optarg, "none"))
				return ib_cli_usage_error("build",
							  "--network must be default, host or none");
			bo.network = optarg;
			break;
		case O_PIDS: {
			uint64_t v;
			if (!strcmp(optarg, "-1"))
				bo.pids_limit = -1;
			else if (ib_parse_u64(optarg, &v) < 0 || v == 0 || v > INT32_MAX)
				return ib_cli_usage_error("build",
							  "--pids-limit wants a positive number or -1");
			else
				bo.pids_limit = (long)v;
			break;
		}
		case O_MEMORY: {
			cleanup_free char *num = xstrdup(optarg);
			size_t n = strlen(num);
			uint64_t mult = 1, v;
			const char *suf = "kKmMgG";
			if (n && strchr(suf, num[n - 1])) {
				char u = (char)(num[n - 1] | 0x20);
				mult = u == 'k' ? 1024 : u == 'm' ? 1024 * 1024 : 1024 * 1024 * 1024;
				num[n - 1] = '\0';
			}
			if (ib_parse_u64(num, &v) < 0 || v == 0 || v > UINT64_MAX / mult)
				return ib_cli_usage_error("build", "--memory wants a size such as 512M");
			bo.memory_limit = v * mult;
			break;
		}
		case O_STEP_TIMEOUT: {
			uint64_t v;
			if (ib_parse_u64(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
				return ib_cli_usage_error("build",
							  "--step-timeout wants a number of seconds");
			bo.step_timeout = (unsigned)v;
			break;
		}
		case O_SECOPT:
			if (strcmp(optarg, "seccomp=unconfined"))
				return ib_cli_usage_error("build", "--security-opt: only "
								   "seccomp=unconfined is known");
			bo.seccomp_unconfined = true;
			break;
		case O_SDE:
			sde = optarg;
			break;
		case O_IID:
			iidfile = optarg;
			break;
		case O_META:
			metafile = optarg;
			break;
		case O_PROGRESS:
			if (ib_progress_mode_parse(optarg, &pmode) < 0)
				return ib_cli_usage_error(
				    "build", "--progress must be auto, tty, plain or json");
			break;
		case O_EXPLAIN:
			bo.explain = true;
			break;
		case O_CHECK:
			check = true;
			break;
		case O_CACHE_FROM:
		case O_CACHE_TO:
			fprintf(stderr, "imgbuild: error: --cache-from/--cache-to (registry cache) "
					"are not supported by this version\n");
			return 1;
		case 'h':
			fputs(build_help, stdout);
			return 0;
		default:
			return ib_cli_usage_error("build", "unknown option or missing value: %s",
						  argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return ib_cli_usage_error("build", optind >= argc
						       ? "missing RECIPE argument"
						       : "expected exactly one RECIPE argument");
	if (bo.compression == IB_COMP_GZIP && bo.compression_level > 9)
		return ib_cli_usage_error("build", "--compression-level for gzip must be 1-9");
	if (push && ib_strv_len(tags) == 0)
		return ib_cli_usage_error("build", "--push needs at least one -t REF");
	if (sde && *sde) {
		uint64_t v;
		if (ib_parse_u64(sde, &v) < 0 || v > INT64_MAX / 2)
			return ib_cli_usage_error("build", "invalid source date epoch \"%s\"", sde);
		bo.source_date_epoch = (int64_t)v;
	}
	const char *recipe = argv[optind];
	cleanup_free char *ctx = context ? xstrdup(context) : recipe_dir(recipe);
	if (check_context(ctx))
		return 1;

	/* Evaluate the whole recipe before anything runs. */
	json_t *plan = NULL;
	int r = eval_recipe(&plan, recipe, ctx, args);
	if (r)
		return r;

	ib_build_prepare_process();
	ib_store *store = ib_cli_open_store(g);
	if (!store) {
		json_decref(plan);
		return 1;
	}
	ib_progress *prog = ib_progress_new(pmode, g->quiet, stderr);
	bo.recipe_path = recipe;
	bo.context_dir = ctx;
	bo.tags = tags;
	bo.secrets = secrets;
	bo.tls_verify = g->tls_verify;
	bo.authfile = g->authfile;
	bo.progress = prog;
	ib_build_result res = {0};
	ib_error *err = NULL;
	int rc = 0;
	if (ib_build_run(store, plan, &bo, &res, &err) < 0) {
		rc = ib_cli_fail(&err);
		goto out;
	}
	if (check) {
		ib_build_options bo2 = bo;
		bo2.no_cache = true;
		bo2.tags = NULL;
		bo2.explain = false;
		ib_build_result res2 = {0};
		ib_progress_info(prog, "--check: rebuilding without cache");
		if (ib_build_run(store, plan, &bo2, &res2, &err) < 0) {
			rc = ib_cli_fail(&err);
			goto out;
		}
		char *report = NULL;
		if (ib_build_compare(store, res.manifest.digest, res2.manifest.digest, &report,
				     &err) < 0) {
			ib_build_result_clear(&res2);
			rc = ib_cli_fail(&err);
			goto out;
		}
		ib_build_result_clear(&res2);
		if (report) {
			fprintf(stderr, "imgbuild: error: not reproducible: %s\n", report);
			free(report);
			rc = 1;
			goto out;
		}
		ib_progress_info(prog, "--check: reproducible (%s)", res.manifest.digest);
	}
	if (push) {
		ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
		ib_cli_registry_options(&ro, g, NULL);
		ro.progress = ib_progress_transfer_cb;
		ro.payload = prog;
		for (size_t i = 0; tags[i]; i++) {
			char pushed[IB_DIGEST_BUFLEN];
			ib_progress_info(prog, "pushing %s", tags[i]);
			if (ib_registry_push(store, tags[i], NULL, &ro, pushed, &err) < 0) {
				rc = ib_cli_fail(&err);
				goto out;
			}
			if (strcmp(pushed, res.manifest.digest) != 0) {
				fprintf(stderr,
					"imgbuild: error: push %s: registry holds %s, built %s\n",
					tags[i], pushed, res.manifest.digest);
				rc = 1;
				goto out;
			}
		}
	}
	if (iidfile && (rc = write_text(iidfile, res.manifest.digest)) != 0)
		goto out;
	if (metafile) {
		json_t *names = json_array();
		for (size_t i = 0; tags[i]; i++)
			json_array_append_new(names, json_string(tags[i]));
		json_t *m = json_pack("{s:s, s:s, s:o, s:i, s:i}", "containerimage.digest",
				      res.manifest.digest, "containerimage.config.digest",
				      res.config_digest, "image.names", names, "steps.run",
				      res.steps_run, "steps.cached", res.steps_cached);
		char *s = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
		json_decref(m);
		rc = write_text(metafile, s);
		free(s);
		if (rc)
			goto out;
	}
	printf("%s\n", res.manifest.digest);
out:
	ib_build_result_clear(&res);
	ib_progress_free(prog);
	ib_store_free(store);
	json_decref(plan);
	return rc;
}
