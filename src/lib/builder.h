/* Executes a plan (plan.h): cache lookup, run and copy steps, layer commit,
 * image config and manifest, tags.  The builder owns no recipe logic: it
 * only reads the plan. */
#ifndef IB_BUILDER_H
#define IB_BUILDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "oci.h"
#include "progress.h"
#include "sandbox.h"
#include "store.h"

typedef struct ib_build_options {
	const char *recipe_path; /* for messages and --explain records */
	const char *context_dir; /* build context (copy sources) */
	const char *target;	 /* stage name, NULL = last stage */
	char *const *tags;	 /* full normalised references to tag, may be NULL */
	bool no_cache;		 /* run every step (results are still cached) */
	/* --context-modes=preserve: copies from the build context keep the
	 * checkout's permission bits (docker); by default they are
	 * normalised to 0644/0755 as git records them */
	bool preserve_context_modes;
	const char *pull;	 /* "missing" (default, also NULL), "always", "never" */
	ib_compression compression;
	int compression_level; /* 0 = default */
	const char *network;   /* default network of run steps: "default" (NULL), "host", "none" */
	int64_t source_date_epoch;
	bool explain;	 /* say why each executed step missed the cache */
	/* build --check's rebuild: the step cache and cache mounts are only
	 * read (the cache mounts the steps see are fresh and empty) */
	bool cache_readonly;
	bool tls_verify; /* for base image pulls */
	const char *authfile;
	/* "ID=PATH" (a file) or "env:ID=NAME" (an environment variable)
	 * sources for run{secrets=...} given on the command line;
	 * NULL-terminated, may be NULL */
	char *const *secrets;
	/* registry step caches (remote_cache.h): normalised references,
	 * NULL-terminated, may be NULL; cache_max: --cache-to exports every
	 * stage's steps (mode=max), else the target stage's (mode=min) */
	char *const *cache_from;
	char *const *cache_to;
	bool cache_max;
	bool debug;	       /* --debug: cache registry requests, which isolation AUTO picked */
	ib_progress *progress; /* required */
	/* run steps' sandbox (see ib_sandbox_options): 0 = its defaults */
	long pids_limit;
	unsigned long long memory_limit;
	unsigned step_timeout; /* for steps without their own timeout */
	bool seccomp_unconfined;
	/* --sync-steps: run steps' fsync & co. reach the kernel (sandbox.h
	 * keep_sync).  Not part of the step cache key: syncing only decides
	 * when written data reaches the disk, never what a file holds or its
	 * metadata, and the layer is read through the page cache either way. */
	bool sync_steps;
	ib_sandbox_isolation isolation; /* of run steps (sandbox.h); AUTO by default */
} ib_build_options;
/* Zero is the default for every field but these; NULL pull means
 * "missing", NULL network "default". */
#define IB_BUILD_OPTIONS_INIT                                                                      \
	{                                                                                          \
		.pull = "missing", .compression = IB_COMP_GZIP, .network = "default",              \
		.tls_verify = true,                                                                \
	}

typedef struct ib_build_result {
	ib_descriptor manifest; /* the image: digest, size, media type */
	char config_digest[IB_DIGEST_BUFLEN];
	int steps_run;
	int steps_cached;
} ib_build_result;

/* Build the plan into the store.  On failure steps that completed stay
 * cached; nothing is tagged.  result must be cleared with
 * ib_build_result_clear. */
int ib_build_run(ib_store *s, json_t *plan, const ib_build_options *o, ib_build_result *result,
		 ib_error **err);
void ib_build_result_clear(ib_build_result *r);

/* `imgbuild run`: a command in an image, in the run steps' sandbox on the
 * image's unpacked layers with a throwaway upper dir (nothing is kept). */
typedef struct ib_image_run_options {
	char *const *argv;   /* replaces the config's Cmd (after its Entrypoint); NULL = Cmd */
	char *const *env;    /* "K=V" set on top of the config's Env; may be NULL */
	const char *network; /* NULL = "default" (see ib_sandbox_options) */
	const char *user;    /* NULL = the config's User */
	const char *workdir; /* NULL = the config's WorkingDir, else "/" */
} ib_image_run_options;
/* *exit_status gets the command's status (ib_sandbox_run); its merged
 * output goes to stdout line by line. */
int ib_image_run(ib_store *s, const char *ref, const ib_image_run_options *o, int *exit_status,
		 ib_error **err);

/* Prepare the calling process for builds: a private mount namespace so the
 * read-only overlays used by copy-from-stage never show on the host.  Must
 * be called before any thread is created.  Non-fatal when unavailable. */
void ib_build_prepare_process(void);

/* Stages built side by side run in processes of their own (workers), which
 * take SIGTERM and SIGINT as an interrupt and unwind.  For an interrupt
 * handler: signal the running workers; whether pid is one.  Both are
 * async-signal-safe. */
void ib_build_signal_workers(int sig);
bool ib_build_is_worker(pid_t pid);
/* What an interrupt (SIGINT, SIGTERM) does to a build, from the thread
 * that took it: the workers are told (SIGTERM), every other child (a
 * step's sandbox monitor, whose death takes the step with it) is killed,
 * again every 100 ms for 5 s, so the build fails at once and unwinds
 * through its usual cleanup; then workers still running are killed and
 * this process's temp entries in s (may be NULL) are removed, for a build
 * that did not unwind in time. */
void ib_build_interrupt(ib_store *s);

#endif
