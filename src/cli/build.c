#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder.h"
#include "compress.h"
#include "imgdiff.h"
#include "cli/commands.h"
#include "recipe.h"
#include "ref.h"
#include "registry.h"
#include "remote_cache.h"
#include "store.h"
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
    "      --context-modes MODE   modes of files copied from the context: normalize\n"
    "                             (default: 0755 if the owner may execute, else 0644;\n"
    "                             directories 0755) or preserve (the checkout's)\n"
    "      --pull POLICY          missing (default), always, never\n"
    "      --push                 push every tag after the build\n"
    "      --load[=ENGINE]        hand the image to docker or podman after the\n"
    "                             build (default: docker if it answers, else podman)\n"
    "      --compression ALG      gzip (default) or zstd\n"
    "      --compression-level N  gzip 1-9 (default 6), zstd 1-19 (default 3)\n"
    "      --network MODE         network of run steps: default (own namespace,\n"
    "                             outbound through slirp4netns), none or host\n"
    "      --pids-limit N         processes per run step (default 4096, -1 = none)\n"
    "      --memory SIZE          memory per run step (512m, 2g; default none)\n"
    "      --step-timeout SECS    timeout of run steps without their own (default none)\n"
    "      --security-opt seccomp=unconfined  run steps without the seccomp filter\n"
    "      --sync-steps           let run steps' fsync, fdatasync, sync, syncfs and\n"
    "                             sync_file_range reach the disk (default: they return\n"
    "                             0 at once; the layer does not depend on them)\n"
    "      --isolation MODE       run steps in: auto (default: oci where it works, else\n"
    "                             chroot; --debug says which), oci or chroot\n"
    "      --secret id=ID,src=PATH  source of the run{secrets} ID (else the recipe's\n"
    "                             src, which must lie inside the build context);\n"
    "                             id=ID,env=VAR: the value of an environment variable\n"
    "      --source-date-epoch N  build timestamp (default $SOURCE_DATE_EPOCH, else the\n"
    "                             commit time of the context's git HEAD, else 0)\n"
    "      --iidfile FILE         write the image digest to FILE\n"
    "      --metadata-file FILE   write build metadata as JSON to FILE\n"
    "      --progress MODE        auto, tty, plain or json\n"
    "      --explain              say why each executed step missed the cache\n"
    "      --check                rebuild without cache into a scratch area (the step\n"
    "                             cache, cache mounts and tags stay as they were; -t\n"
    "                             tags only a reproducible build); list each\n"
    "                             differing file; exit 1 when the builds differ\n"
    "      --check-limit N        list at most N differences (default 20, 0: all)\n"
    "      --cache-from REF       use the step cache REF in a registry (repeatable;\n"
    "                             also type=registry,ref=REF; env IMGBUILD_CACHE_FROM)\n"
    "      --cache-to REF[,mode=min|max]  write the steps' cache records to REF\n"
    "                             (repeatable; env IMGBUILD_CACHE_TO)\n"
    "      --cache-mode MODE      min (default: the target stage's steps) or max\n"
    "                             (every stage's)\n"
    "  -h, --help                 this help\n";

static const char plan_help[] =
    "Usage: imgbuild plan RECIPE.lua [--build-arg K=V]... [--context DIR]\n\n"
    "Evaluate a recipe and print the resolved plan as JSON.\n\n"
    "Options:\n"
    "      --build-arg K[=V]      value for arg(K) (repeatable)\n"
    "      --context DIR          build context (default: the recipe's directory)\n"
    "  -h, --help                 this help\n";

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
	if (stat(context, &st) < 0 || !S_ISDIR(st.st_mode))
		return ib_cli_failf(IB_EINVALID, "build context %s is not a directory", context);
	return 0;
}

/* A library parse error of an option value as a usage error (exit 2). */
static int usage_fail(const char *opt, ib_error **err)
{
	ib_error_wrap(err, "%s", opt);
	ib_error_set_code(err, IB_EUSAGE);
	return ib_cli_fail(err);
}

int ib_cmd_plan(int argc, char **argv, ib_global *g)
{
	enum { O_ARG = 256, O_CONTEXT };
	static const struct option opts[] = {{"build-arg", required_argument, NULL, O_ARG},
					     {"context", required_argument, NULL, O_CONTEXT},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {.name = "plan", .help = plan_help, .longopts = opts};
	cleanup_strv char **args = xcalloc(1, sizeof(char *));
	const char *context = NULL;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == O_ARG)
			ib_strv_push(&args, optarg);
		else if (c == O_CONTEXT)
			context = optarg;
	}
	if (p.exit >= 0)
		return p.exit;
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

/* Whether dir or a directory above it holds .git (a directory, or a file
 * in worktrees and submodules): without one, and without GIT_DIR, git
 * finds no work tree, and spawning it would cost more than a cached build. */
static bool maybe_in_git_tree(const char *dir)
{
	if (getenv("GIT_DIR"))
		return true;
	cleanup_free char *p = realpath(dir, NULL);
	if (!p)
		return true; /* git decides */
	for (;;) {
		cleanup_free char *dotgit = ib_path_join(p, ".git");
		struct stat st;
		if (lstat(dotgit, &st) == 0)
			return true;
		char *slash = strrchr(p, '/');
		if (!slash || (slash == p && !p[1]))
			return false;
		slash[slash == p ? 1 : 0] = '\0';
	}
}

/* The commit time of HEAD of the git work tree holding dir, from
 * `git -C DIR log -1 --format=%ct` (no shell, at most GIT_TIMEOUT_MS).
 * false when there is none: no git, not a work tree, no commit, timeout. */
#define GIT_TIMEOUT_MS 10000
static bool git_head_time(const char *dir, int64_t *out)
{
	int p[2];
	if (!maybe_in_git_tree(dir) || pipe2(p, O_CLOEXEC) < 0)
		return false;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	char *argv[] = {"git", "-C", (char *)dir, "log", "-1", "--format=%ct", NULL};
	pid_t pid;
	int rc = posix_spawnp(&pid, "git", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		return false;
	}
	char buf[64];
	size_t len = 0;
	bool timed_out = false;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long left = GIT_TIMEOUT_MS - ((now.tv_sec - start.tv_sec) * 1000LL +
						   (now.tv_nsec - start.tv_nsec) / 1000000);
		struct pollfd pfd = {.fd = p[0], .events = POLLIN};
		int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			timed_out = true;
			break;
		}
		ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break;
	}
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return false;
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	uint64_t v;
	if (ib_parse_u64(buf, &v) < 0 || v > (uint64_t)INT64_MAX / 2)
		return false;
	*out = (int64_t)v;
	return true;
}

/* ---- SIGINT/SIGTERM during a build ----
 * Both are blocked while the build runs and taken by a thread of their own,
 * which stops the build (ib_build_interrupt); the build then reports
 * "interrupted" and exits 128+signal.  A build that does not unwind within
 * the grace (a pull, a long compression) is ended by that thread, its
 * temp entries removed. */
static volatile sig_atomic_t interrupted_by;
static ib_store *interrupt_store;
static sigset_t interrupt_set;

static void *interrupt_main(void *payload)
{
	(void)payload;
	int sig = 0;
	if (sigwait(&interrupt_set, &sig) != 0)
		return NULL;
	interrupted_by = sig;
	ib_build_interrupt(interrupt_store);
	static const char msg[] = "imgbuild: error: interrupted\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)w;
	_exit(128 + sig);
}

static void interrupt_watch(ib_store *s)
{
	interrupt_store = s;
	sigemptyset(&interrupt_set);
	sigaddset(&interrupt_set, SIGINT);
	sigaddset(&interrupt_set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &interrupt_set, NULL);
	if (ib_thread_start_detached(interrupt_main, NULL) != 0)
		pthread_sigmask(SIG_UNBLOCK, &interrupt_set, NULL);
}

/* What `imgbuild build` was asked to do. */
typedef struct build_args {
	ib_build_options bo;
	char **args, **tags, **secrets, **cache_from, **cache_to;
	int cache_mode; /* -1 = not given, 0 = min, 1 = max */
	const char *recipe, *context, *iidfile, *metafile, *load;
	bool push, check;
	size_t check_limit; /* differences --check lists (0: all) */
	bool sde_given; /* --source-date-epoch or SOURCE_DATE_EPOCH */
	ib_progress_mode pmode;
} build_args;

static void build_args_clear(build_args *a)
{
	ib_strv_free(a->args);
	ib_strv_free(a->tags);
	ib_strv_free(a->secrets);
	ib_strv_free(a->cache_from);
	ib_strv_free(a->cache_to);
}

/* One --cache-from/--cache-to value, normalised onto *list. */
static int add_cache_ref(build_args *a, char ***list, const char *opt, const char *arg)
{
	ib_error *err = NULL;
	char *ref = NULL;
	int mode = -1;
	if (ib_rcache_spec_parse(arg, &ref, &mode, &err) < 0)
		return usage_fail(opt, &err);
	if (list == &a->cache_to && mode == 1 && a->cache_mode < 0)
		a->cache_mode = 2; /* max, unless --cache-mode says otherwise */
	ib_strv_push(list, ref);
	free(ref);
	return 0;
}

/* IMGBUILD_CACHE_FROM / IMGBUILD_CACHE_TO: references separated by spaces
 * or commas; a word with '=' is one BuildKit-style value. */
static int add_cache_env(build_args *a, char ***list, const char *var)
{
	const char *v = getenv(var);
	if (!v || !*v)
		return 0;
	for (const char *p = v; *p;) {
		p += strspn(p, " \t\n");
		size_t n = strcspn(p, " \t\n");
		if (n == 0)
			break;
		cleanup_free char *w = xstrndup(p, n);
		p += n;
		if (strchr(w, '=')) {
			int r = add_cache_ref(a, list, var, w);
			if (r)
				return r;
			continue;
		}
		for (const char *q = w; *q;) {
			size_t m = strcspn(q, ",");
			cleanup_free char *one = xstrndup(q, m);
			q += m + (q[m] == ',');
			int r = *one ? add_cache_ref(a, list, var, one) : 0;
			if (r)
				return r;
		}
	}
	return 0;
}

static int add_tag(build_args *a, const char *arg)
{
	ib_ref *ref = NULL;
	ib_error *err = NULL;
	if (ib_ref_parse(&ref, arg, &err) < 0)
		return usage_fail("-t", &err);
	if (ref->digest) {
		ib_ref_free(ref);
		return ib_cli_usage_error("build", "-t %s: a tag cannot contain a digest", arg);
	}
	cleanup_free char *full = ib_ref_string(ref);
	ib_strv_push(&a->tags, full);
	ib_ref_free(ref);
	return 0;
}

/* --secret id=ID,src=PATH (docker/buildah syntax) -> "ID=PATH";
 * --secret id=ID,env=NAME (BuildKit) -> "env:ID=NAME" (read at build time);
 * a bare --secret id=ID looks for the variable ID, as BuildKit does. */
static int add_secret(build_args *a, const char *arg)
{
	cleanup_free char *dup = xstrdup(arg);
	const char *id = NULL, *src = NULL, *env = NULL;
	for (char *tok = dup, *next; tok; tok = next) {
		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		if (!strncmp(tok, "id=", 3))
			id = tok + 3;
		else if (!strncmp(tok, "src=", 4) || !strncmp(tok, "source=", 7))
			src = strchr(tok, '=') + 1;
		else if (!strncmp(tok, "env=", 4))
			env = tok + 4;
		else if (strcmp(tok, "type=file") && strcmp(tok, "type=env"))
			return ib_cli_usage_error("build", "--secret %s: unknown field", arg);
	}
	if (!id || !*id || (src && !*src) || (env && !*env) || (src && env))
		return ib_cli_usage_error("build",
					  "--secret wants id=ID,src=PATH or id=ID,env=VARIABLE");
	if (!src && !env)
		env = id;
	cleanup_free char *kv = src ? xasprintf("%s=%s", id, src) : xasprintf("env:%s=%s", id, env);
	ib_strv_push(&a->secrets, kv);
	return 0;
}

/* Fill *a from the command line: -1, or the exit status (help, usage). */
static int parse_build_args(build_args *a, int argc, char **argv, ib_global *g)
{
	enum {
		O_CONTEXT = 256,
		O_ARG,
		O_TARGET,
		O_NOCACHE,
		O_PULL,
		O_PUSH,
		O_COMP,
		O_LEVEL,
		O_SECRET,
		O_NET,
		O_SDE,
		O_IID,
		O_META,
		O_PROGRESS,
		O_EXPLAIN,
		O_CHECK,
		O_CHECK_LIMIT,
		O_CACHE_FROM,
		O_CACHE_TO,
		O_PIDS,
		O_MEMORY,
		O_STEP_TIMEOUT,
		O_SECOPT,
		O_LOAD,
		O_CACHE_MODE,
		O_ISOLATION,
		O_CONTEXT_MODES,
		O_SYNC_STEPS,
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
	    {"source-date-epoch", required_argument, NULL, O_SDE},
	    {"iidfile", required_argument, NULL, O_IID},
	    {"metadata-file", required_argument, NULL, O_META},
	    {"progress", required_argument, NULL, O_PROGRESS},
	    {"explain", no_argument, NULL, O_EXPLAIN},
	    {"check", no_argument, NULL, O_CHECK},
	    {"check-limit", required_argument, NULL, O_CHECK_LIMIT},
	    {"cache-from", required_argument, NULL, O_CACHE_FROM},
	    {"cache-to", required_argument, NULL, O_CACHE_TO},
	    {"pids-limit", required_argument, NULL, O_PIDS},
	    {"memory", required_argument, NULL, O_MEMORY},
	    {"step-timeout", required_argument, NULL, O_STEP_TIMEOUT},
	    {"security-opt", required_argument, NULL, O_SECOPT},
	    {"load", optional_argument, NULL, O_LOAD},
	    {"cache-mode", required_argument, NULL, O_CACHE_MODE},
	    {"isolation", required_argument, NULL, O_ISOLATION},
	    {"sync-steps", no_argument, NULL, O_SYNC_STEPS},
	    {"context-modes", required_argument, NULL, O_CONTEXT_MODES},
	    {NULL, 0, NULL, 0},
	};
	static const ib_cli_cmd cmd = {
	    .name = "build", .help = build_help, .shortopts = "t:", .longopts = opts};
	const char *comp = NULL, *level = NULL, *sde = NULL;
	ib_error *err = NULL;
	int r = 0;
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while (r == 0 && (c = ib_cli_next(&p)) != -1) {
		switch (c) {
		case 't':
			r = add_tag(a, optarg);
			break;
		case O_CONTEXT:
			a->context = optarg;
			break;
		case O_ARG:
			ib_strv_push(&a->args, optarg);
			break;
		case O_TARGET:
			a->bo.target = optarg;
			break;
		case O_NOCACHE:
			a->bo.no_cache = true;
			break;
		case O_CONTEXT_MODES:
			if (strcmp(optarg, "normalize") && strcmp(optarg, "preserve"))
				r = ib_cli_bad_value(
				    &p, "--context-modes must be normalize or preserve");
			a->bo.preserve_context_modes = !strcmp(optarg, "preserve");
			break;
		case O_PULL:
			if (strcmp(optarg, "missing") && strcmp(optarg, "always") &&
			    strcmp(optarg, "never"))
				r = ib_cli_bad_value(&p, "--pull must be missing, always or never");
			a->bo.pull = optarg;
			break;
		case O_PUSH:
			a->push = true;
			break;
		case O_COMP:
			comp = optarg;
			break;
		case O_LEVEL:
			level = optarg;
			break;
		case O_SECRET:
			r = add_secret(a, optarg);
			break;
		case O_NET:
			if (strcmp(optarg, "default") && strcmp(optarg, "host") &&
			    strcmp(optarg, "none"))
				r = ib_cli_bad_value(&p, "--network must be default, host or none");
			a->bo.network = optarg;
			break;
		case O_PIDS: {
			uint64_t v;
			if (!strcmp(optarg, "-1"))
				a->bo.pids_limit = -1;
			else if (ib_parse_u64(optarg, &v) < 0 || v == 0 || v > INT32_MAX)
				r = ib_cli_bad_value(&p, "--pids-limit wants a positive number or -1");
			else
				a->bo.pids_limit = (long)v;
			break;
		}
		case O_MEMORY: {
			uint64_t v;
			if (ib_parse_size(optarg, true, &v) < 0 || v == 0)
				r = ib_cli_bad_value(&p, "--memory wants a size such as 512m");
			a->bo.memory_limit = v;
			break;
		}
		case O_STEP_TIMEOUT: {
			uint64_t v;
			if (ib_parse_u64(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
				r = ib_cli_bad_value(&p, "--step-timeout wants a number of seconds");
			else
				a->bo.step_timeout = (unsigned)v;
			break;
		}
		case O_SECOPT:
			if (strcmp(optarg, "seccomp=unconfined"))
				r = ib_cli_bad_value(&p,
						     "--security-opt: only seccomp=unconfined is known");
			a->bo.seccomp_unconfined = true;
			break;
		case O_SYNC_STEPS:
			a->bo.sync_steps = true;
			break;
		case O_ISOLATION:
			if (!strcmp(optarg, "auto"))
				a->bo.isolation = IB_ISOLATION_AUTO;
			else if (!strcmp(optarg, "oci"))
				a->bo.isolation = IB_ISOLATION_OCI;
			else if (!strcmp(optarg, "chroot"))
				a->bo.isolation = IB_ISOLATION_CHROOT;
			else
				r = ib_cli_bad_value(&p, "--isolation must be auto, oci or chroot");
			break;
		case O_SDE:
			sde = optarg;
			break;
		case O_IID:
			a->iidfile = optarg;
			break;
		case O_META:
			a->metafile = optarg;
			break;
		case O_PROGRESS:
			if (ib_progress_mode_parse(optarg, &a->pmode) < 0)
				r = ib_cli_bad_value(&p,
						     "--progress must be auto, tty, plain or json");
			break;
		case O_EXPLAIN:
			a->bo.explain = true;
			break;
		case O_CHECK:
			a->check = true;
			break;
		case O_CHECK_LIMIT: {
			uint64_t v = 0;
			if (ib_parse_u64(optarg, &v) < 0 || v > INT32_MAX)
				r = ib_cli_bad_value(&p,
						     "--check-limit wants a number (0: no limit)");
			a->check_limit = (size_t)v;
			a->check = true;
			break;
		}
		case O_LOAD:
			a->load = optarg ? optarg : "auto";
			r = ib_cli_handoff_check("build", a->load);
			break;
		case O_CACHE_FROM:
			r = add_cache_ref(a, &a->cache_from, "--cache-from", optarg);
			break;
		case O_CACHE_TO:
			r = add_cache_ref(a, &a->cache_to, "--cache-to", optarg);
			break;
		case O_CACHE_MODE:
			if (strcmp(optarg, "min") && strcmp(optarg, "max"))
				r = ib_cli_bad_value(&p, "--cache-mode must be min or max");
			a->cache_mode = !strcmp(optarg, "max");
			break;
		}
	}
	if (r == 0 && ib_strv_len(a->cache_from) == 0)
		r = add_cache_env(a, &a->cache_from, "IMGBUILD_CACHE_FROM");
	if (r == 0 && ib_strv_len(a->cache_to) == 0)
		r = add_cache_env(a, &a->cache_to, "IMGBUILD_CACHE_TO");
	if (r)
		return r;
	if (p.exit >= 0)
		return p.exit;
	a->bo.cache_from = a->cache_from;
	a->bo.cache_to = a->cache_to;
	a->bo.cache_max = a->cache_mode > 0;
	if (optind != argc - 1)
		return ib_cli_usage_error("build", optind >= argc
						       ? "missing RECIPE argument"
						       : "expected exactly one RECIPE argument");
	a->recipe = argv[optind];
	if (ib_compression_parse(comp, level, &a->bo.compression, &a->bo.compression_level,
				 &err) < 0)
		return usage_fail(level ? "--compression-level" : "--compression", &err);
	if (a->push && ib_strv_len(a->tags) == 0)
		return ib_cli_usage_error("build", "--push needs at least one -t REF");
	if (ib_parse_source_date_epoch(sde, &a->bo.source_date_epoch, &err) < 0)
		return usage_fail("--source-date-epoch", &err);
	const char *env_sde = getenv("SOURCE_DATE_EPOCH");
	a->sde_given = sde || (env_sde && *env_sde);
	return -1;
}

/* --check: build again without the cache into a scratch area (the step
 * cache and the cache mounts are only read, nothing is tagged); 0 when both
 * images are the same, else every difference (at most limit lines) and 1. */
static int run_check(ib_store *store, json_t *plan, const ib_build_options *bo,
		     const ib_build_result *res, size_t limit, ib_progress *prog)
{
	ib_build_options bo2 = *bo;
	bo2.no_cache = true;
	bo2.cache_readonly = true;
	bo2.tags = NULL;
	bo2.explain = false;
	ib_build_result res2 = {0};
	ib_error *err = NULL;
	ib_progress_info(prog, "--check: rebuilding without cache");
	if (ib_build_run(store, plan, &bo2, &res2, &err) < 0)
		return ib_cli_fail(&err);
	char **lines = NULL;
	size_t total = 0;
	int r = ib_image_differences(store, res->manifest.digest, res2.manifest.digest,
				     limit ? limit : SIZE_MAX, &lines, &total, &err);
	ib_build_result_clear(&res2);
	if (r < 0)
		return ib_cli_fail(&err);
	if (total) {
		for (size_t i = 0; lines && lines[i]; i++)
			fprintf(stderr, "%s\n", lines[i]);
		size_t shown = ib_strv_len(lines);
		if (shown < total)
			fprintf(stderr, "... and %zu more (--check-limit)\n", total - shown);
		ib_strv_free(lines);
		return ib_cli_failf(IB_ERROR, "not reproducible: %zu difference%s", total,
				    total == 1 ? "" : "s");
	}
	ib_progress_info(prog, "--check: reproducible (%s)", res->manifest.digest);
	return 0;
}

/* --check: the tags move only once the build is known to be reproducible. */
static int set_tags(ib_store *store, char **tags, const ib_build_result *res)
{
	ib_error *err = NULL;
	for (size_t i = 0; tags[i]; i++)
		if (ib_store_tag_set(store, tags[i], &res->manifest, &err) < 0)
			return ib_cli_fail(&err);
	return 0;
}

/* --push: every tag to its registry, which must then hold the built digest. */
static int push_tags(ib_store *store, char **tags, const char *digest, ib_global *g,
		     ib_progress *prog)
{
	/* the printer of `imgbuild push` */
	ib_transfer_printer *pr = ib_transfer_printer_for(prog, "pushing");
	ib_registry_options ro = IB_REGISTRY_OPTIONS_INIT;
	ib_cli_registry_options(&ro, g, pr);
	ib_error *err = NULL;
	for (size_t i = 0; tags[i]; i++) {
		char pushed[IB_DIGEST_BUFLEN];
		ib_progress_info(prog, "pushing %s", tags[i]);
		int r = ib_registry_push(store, tags[i], NULL, &ro, pushed, &err);
		ib_transfer_printer_free(pr);
		pr = tags[i + 1] ? ib_transfer_printer_for(prog, "pushing") : NULL;
		ro.payload = pr;
		if (r < 0) {
			ib_transfer_printer_free(pr);
			return ib_cli_fail(&err);
		}
		if (strcmp(pushed, digest) != 0)
			return ib_cli_failf(IB_EDIGEST, "push %s: registry holds %s, built %s",
					    tags[i], pushed, digest);
	}
	return 0;
}

/* --metadata-file: buildx's keys for the result. */
static int write_metadata(const char *path, char **tags, const ib_build_result *res)
{
	json_t *names = json_array();
	for (size_t i = 0; tags[i]; i++)
		json_array_append_new(names, json_string(tags[i]));
	json_t *m = json_pack("{s:s, s:s, s:o, s:i, s:i}", "containerimage.digest",
			      res->manifest.digest, "containerimage.config.digest",
			      res->config_digest, "image.names", names, "steps.run", res->steps_run,
			      "steps.cached", res->steps_cached);
	char *s = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(m);
	int rc = write_text(path, s);
	free(s);
	return rc;
}

int ib_cmd_build(int argc, char **argv, ib_global *g)
{
	build_args a = {.bo = IB_BUILD_OPTIONS_INIT,
			.pmode = IB_PROGRESS_AUTO,
			.cache_mode = -1,
			.check_limit = 20};
	a.args = xcalloc(1, sizeof(char *));
	a.tags = xcalloc(1, sizeof(char *));
	a.secrets = xcalloc(1, sizeof(char *));
	int rc = parse_build_args(&a, argc, argv, g);
	if (rc >= 0) {
		build_args_clear(&a);
		return rc;
	}
	cleanup_free char *ctx = a.context ? xstrdup(a.context) : recipe_dir(a.recipe);
	json_t *plan = NULL;
	/* Evaluate the whole recipe before anything runs. */
	if ((rc = check_context(ctx)) != 0 || (rc = eval_recipe(&plan, a.recipe, ctx, a.args))) {
		build_args_clear(&a);
		return rc;
	}
	bool from_git = !a.sde_given && git_head_time(ctx, &a.bo.source_date_epoch);
	ib_build_prepare_process();
	ib_store *store = ib_cli_open_store(g);
	if (!store) {
		json_decref(plan);
		build_args_clear(&a);
		return 1;
	}
	ib_progress *prog = ib_progress_new(a.pmode, g->quiet, stderr);
	ib_progress_set_debug(prog, g->debug);
	if (g->debug)
		ib_progress_debug(prog, "build time %lld (%s), context %s",
				  (long long)a.bo.source_date_epoch,
				  from_git	? "commit time of the context's git HEAD"
				  : a.sde_given ? "--source-date-epoch / SOURCE_DATE_EPOCH"
						: "default 0",
				  ctx);
	ib_build_options *bo = &a.bo;
	bo->recipe_path = a.recipe;
	bo->context_dir = ctx;
	bo->tags = a.check ? NULL : a.tags; /* --check tags after the check */
	bo->secrets = a.secrets;
	bo->tls_verify = g->tls_verify;
	bo->authfile = g->authfile;
	bo->debug = g->debug;
	bo->progress = prog;
	ib_build_result res = {0};
	ib_error *err = NULL;
	interrupt_watch(store);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int br = ib_build_run(store, plan, bo, &res, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ib_progress_debug(prog, "build %s after %.3fs: %d steps run, %d cached",
			  br < 0 ? "failed" : "done",
			  (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
			  res.steps_run, res.steps_cached);
	if (br < 0)
		rc = interrupted_by ? 1 : ib_cli_fail(&err);
	if (rc == 0 && a.check && !interrupted_by)
		rc = run_check(store, plan, bo, &res, a.check_limit, prog);
	if (rc == 0 && a.check && !interrupted_by)
		rc = set_tags(store, a.tags, &res);
	if (interrupted_by) {
		ib_error_free(&err);
		ib_cli_failf(IB_ERROR, "interrupted");
		rc = 128 + interrupted_by;
	} else {
		/* pushes and hand-offs are interrupted the ordinary way */
		pthread_sigmask(SIG_UNBLOCK, &interrupt_set, NULL);
	}
	/* layers a cache registry holds are mounted there, not downloaded */
	if (rc == 0 && a.push)
		rc = push_tags(store, a.tags, res.manifest.digest, g, prog);
	if (rc == 0 && a.load) {
		char *one[] = {res.manifest.digest, NULL};
		char **refs = a.tags[0] ? a.tags : one;
		rc = ib_cli_handoff(store, a.load, refs, ib_strv_len(refs), g);
	}
	if (rc == 0 && a.iidfile)
		rc = write_text(a.iidfile, res.manifest.digest);
	if (rc == 0 && a.metafile)
		rc = write_metadata(a.metafile, a.tags, &res);
	if (rc == 0)
		printf("%s\n", res.manifest.digest);
	ib_build_result_clear(&res);
	ib_progress_free(prog);
	ib_store_free(store);
	json_decref(plan);
	build_args_clear(&a);
	return rc;
}
