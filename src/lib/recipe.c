/* Recipe evaluation: a sandboxed Lua 5.4 state whose API functions append
 * pure data to a plan (plan.h).
 *
 * Resources: luaL_error long-jumps past C cleanup handlers, so nothing an
 * API function allocates may be held only by a C local across a call that
 * can raise.  Two anchors owned by the evaluation context take care of it:
 * `scratch` (a JSON array holding every JSON value under construction) and
 * the `arena` (malloc'd pointers with their free function).  Both are
 * emptied when the next API call starts and when the evaluation ends, so an
 * error caught by the recipe's pcall() or one that aborts the evaluation
 * leaks nothing.  Lua values are read with raw access only (no metamethods),
 * so no recipe code runs inside an API function.
 *
 * Error locations: every message starts with "FILE:LINE: ".  Lua truncates
 * chunk names longer than LUA_IDSIZE in the positions it adds itself, so a
 * long path is given to Lua as a short token ("\1N\2") and replaced by the
 * real path when the message leaves the evaluation. */
#include "recipe.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "embedded.h"
#include "ref.h"
#include "path.h"
#include "ignore.h"
#include "pathglob.h"
#include "plan.h"
#include "util.h"

#define RECIPE_MAX_BYTES ((size_t)16 << 20) /* a recipe or module file */
#define CONTEXT_READ_MAX ((size_t)64 << 20) /* context.read() */
#define LUA_MEM_LIMIT ((size_t)512 << 20)   /* Lua heap + plan */
#define HOOK_INTERVAL 1000000		    /* VM instructions per count hook */
#define HOOK_MAX_CALLS 200		    /* => 2 * 10^8 instructions */
#define SHORT_CHUNKNAME_MAX 50 /* below LUA_IDSIZE with room */

#define STAGE_MT "imgbuild.stage"
#define EMBEDDED_PREFIX "[imgbuild]/"

/* Registry keys (addresses only). */
static char ENV_KEY;	 /* the sandbox environment */
static char LOADED_KEY;	 /* require cache: name -> value | LOADING */
static char LOADING_KEY; /* sentinel for modules being loaded */
static char STAGES_KEY;	 /* stage index + 1 -> stage userdata */
static char ARGS_KEY;	 /* arg name -> default (false for nil) */
static char OBJID_KEY;	 /* object -> deterministic id (weak keys) */
static char CAP_KEY;	 /* the instruction cap message, once hit */

typedef struct stage_state {
	char *name;
	json_t *obj;   /* owned: the plan's STAGE object */
	json_t *shell; /* owned: current shell argv (null before a base) */
	char *workdir; /* current workdir (absolute), NULL while it depends
			  on the base image's config */
	bool has_base;
	int sealed_by; /* index of a stage built on this one, or -1 */
} stage_state;

typedef struct chunk_info {
	char *name;    /* chunk name given to Lua, without the leading '@' */
	char *display; /* path shown in messages */
} chunk_info;

typedef struct arena_item {
	void *p;
	void (*fn)(void *);
} arena_item;

typedef struct ib_eval {
	const char *recipe_path; /* as given */
	char *recipe_dir;	 /* "" when the recipe path has no '/' */
	char *context_dir;
	ib_ignore *ignore; /* the context's ignore file, or NULL */
	char *recipe_data;
	size_t recipe_len;
	char **barg_names; /* --build-arg names/values; value NULL = unset */
	char **barg_values;
	size_t nbargs;

	json_t *plan;	     /* owned */
	json_t *stages_json; /* borrowed from plan */
	json_t *args_json;   /* borrowed from plan */
	json_t *scratch;     /* owned: JSON under construction */

	stage_state *stages;
	size_t nstages;
	size_t cur; /* current stage, valid when nstages > 0 */

	chunk_info *chunks; /* chunks[0] is the recipe */
	size_t nchunks;

	arena_item *arena;
	size_t narena, aarena;

	lua_State *L;
	size_t mem_used;     /* Lua heap */
	size_t plan_bytes;   /* plan and stage state kept across API calls */
	size_t plan_pending; /* strings of the API call under way */
	unsigned hook_calls;
	bool cap_hit; /* the instruction cap was hit: nothing may catch it */
	lua_Integer next_objid;
} ib_eval;

typedef struct stage_ud {
	size_t idx;
} stage_ud;

static const char *const default_shell[] = {"/bin/sh", "-c", NULL};

/* ------------------------------------------------------------------ */
/* context, arena, errors                                              */

static ib_eval *get_ctx(lua_State *L)
{
	return *(ib_eval **)lua_getextraspace(L);
}

static void *arena_own(ib_eval *ctx, void *p, void (*fn)(void *))
{
	if (ctx->narena == ctx->aarena) {
		ctx->aarena = ctx->aarena ? ctx->aarena * 2 : 16;
		ctx->arena = xrealloc(ctx->arena, ctx->aarena * sizeof(*ctx->arena));
	}
	ctx->arena[ctx->narena++] = (arena_item){p, fn};
	return p;
}

static void arena_release(ib_eval *ctx)
{
	for (size_t i = ctx->narena; i > 0; i--)
		ctx->arena[i - 1].fn(ctx->arena[i - 1].p);
	ctx->narena = 0;
	if (ctx->scratch)
		json_array_clear(ctx->scratch);
	ctx->plan_pending = 0;
}

static void free_error_item(void *p)
{
	ib_error *e = p;
	ib_error_free(&e);
}

static void free_strv_item(void *p)
{
	ib_strv_free(p);
}

/* Anchor a new JSON value in scratch; returns it borrowed. */
static json_t *anchor(ib_eval *ctx, json_t *j)
{
	if (!j) {
		fputs("imgbuild: error: out of memory\n", stderr);
		abort();
	}
	json_array_append_new(ctx->scratch, j);
	return j;
}

static const char *chunk_display(const ib_eval *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->nchunks; i++)
		if (!strcmp(ctx->chunks[i].name, name))
			return ctx->chunks[i].display;
	return name;
}

/* Push "FILE:LINE: " for the innermost frame, from `level` outwards, that
 * runs a file chunk (a recipe or a module; not load()ed strings). */
static void push_where(lua_State *L, int level)
{
	ib_eval *ctx = get_ctx(L);
	lua_Debug ar;
	while (lua_getstack(L, level++, &ar)) {
		if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@') {
			lua_pushfstring(L, "%s:%d: ", chunk_display(ctx, ar.source + 1),
					ar.currentline);
			return;
		}
	}
	lua_pushfstring(L, "%s: ", ctx->recipe_path);
}

/* Raise "FILE:LINE: message" located at the Lua code that called the
 * running C function.  Format directives are lua_pushfstring's. */
static _Noreturn void api_fail(lua_State *L, const char *fmt, ...)
{
	va_list ap;
	push_where(L, 1);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	lua_error(L);
	__builtin_unreachable();
}

/* Turn *e into a Lua error "FILE:LINE: fn: message"; *e is consumed. */
static _Noreturn void raise_ib(lua_State *L, ib_error **e, const char *fn)
{
	ib_error *owned = steal_pointer(e);
	arena_own(get_ctx(L), owned, free_error_item);
	api_fail(L, "%s: %s", fn, ib_error_msg(owned));
}

/* Line in the recipe file of the innermost recipe frame: a step made by a
 * module function called from the recipe gets the recipe's line. */
static int recipe_line(lua_State *L)
{
	ib_eval *ctx = get_ctx(L);
	lua_Debug ar;
	int first = 0;
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
			continue;
		if (ar.source[0] == '@' && !strcmp(ar.source + 1, ctx->chunks[0].name))
			return ar.currentline;
		if (!first)
			first = ar.currentline;
	}
	return first;
}

/* Register a chunk; returns the chunk name to give Lua (with '@'), pushed
 * on the Lua stack. */
static const char *chunk_register(lua_State *L, ib_eval *ctx, const char *display)
{
	size_t i = ctx->nchunks;
	bool plain = strlen(display) <= SHORT_CHUNKNAME_MAX;
	for (const char *p = display; plain && *p; p++)
		if ((unsigned char)*p < 0x20)
			plain = false;
	ctx->chunks = xrealloc(ctx->chunks, (i + 1) * sizeof(*ctx->chunks));
	ctx->chunks[i].display = xstrdup(display);
	ctx->chunks[i].name = plain ? xstrdup(display) : xasprintf("\001%zu\002", i);
	ctx->nchunks++;
	return lua_pushfstring(L, "@%s", ctx->chunks[i].name);
}

/* Replace chunk tokens by the paths they stand for. Caller frees. */
static char *expand_tokens(const ib_eval *ctx, const char *msg)
{
	ib_buf b = IB_BUF_INIT;
	for (const char *p = msg; *p; p++) {
		if (*p == '\001') {
			char *end = NULL;
			unsigned long n = strtoul(p + 1, &end, 10);
			if (end != p + 1 && *end == '\002' && n < ctx->nchunks) {
				ib_buf_append(&b, ctx->chunks[n].display,
					      strlen(ctx->chunks[n].display));
				p = end;
				continue;
			}
		}
		ib_buf_append(&b, p, 1);
	}
	return ib_buf_steal(&b, NULL);
}

/* True when msg already starts with "CHUNK:LINE:" for one of our chunks. */
static bool has_location(const ib_eval *ctx, const char *msg)
{
	for (size_t i = 0; i < ctx->nchunks; i++) {
		const char *names[2] = {ctx->chunks[i].name, ctx->chunks[i].display};
		for (int k = 0; k < 2; k++) {
			size_t n = strlen(names[k]);
			if (strncmp(msg, names[k], n) || msg[n] != ':')
				continue;
			const char *p = msg + n + 1;
			if (*p < '0' || *p > '9')
				continue;
			while (*p >= '0' && *p <= '9')
				p++;
			if (*p == ':')
				return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* what the plan holds                                                 */

/* Bytes charged per JSON value on top of its text (measured: a jansson
 * value, its object slot and malloc overhead; a run step is about 2.5 KB). */
#define PLAN_VALUE_COST 160

/* The plan lives outside the Lua heap but counts against the same limit,
 * or a recipe could make it as large as it likes (a 100 MB string given to
 * label{} 30 times).  Bytes of the API call under way are pending: they are
 * freed with the scratch when the call fails.  Bytes kept (committed steps,
 * stage state) stay charged. */
static void plan_charge(ib_eval *ctx, const char *fn, size_t bytes, bool keep)
{
	size_t used = ctx->mem_used + ctx->plan_bytes + ctx->plan_pending;
	if (used > LUA_MEM_LIMIT || bytes > LUA_MEM_LIMIT - used)
		api_fail(ctx->L, "%s: the plan and the Lua heap exceed the memory limit (%d MiB)",
			 fn, (int)(LUA_MEM_LIMIT >> 20));
	if (keep)
		ctx->plan_bytes += bytes;
	else
		ctx->plan_pending += bytes;
}

/* Memory held by a JSON value (shared parts counted each time). */
static size_t json_cost(json_t *v)
{
	size_t c = PLAN_VALUE_COST;
	if (json_is_string(v))
		return c + json_string_length(v);
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach (v, i, e)
			c += json_cost(e);
	} else if (json_is_object(v)) {
		const char *k;
		json_t *e;
		json_object_foreach (v, k, e)
			c += strlen(k) + json_cost(e);
	}
	return c;
}

/* Well-formed UTF-8: shortest forms, no surrogates, at most U+10FFFF. */
static bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	while (p < end) {
		unsigned c = *p++, cp, min;
		size_t more;
		if (c < 0x80)
			continue;
		if ((c & 0xe0) == 0xc0) {
			more = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			more = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			more = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if ((size_t)(end - p) < more)
			return false;
		for (size_t i = 0; i < more; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		p += more;
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

/* Check text from the recipe that goes into the plan: JSON carries UTF-8
 * only (jansson refuses anything else), so invalid UTF-8 is a recipe error,
 * never a dropped argument; its bytes are charged as pending. */
static void plan_text_check(ib_eval *ctx, const char *fn, const char *what, const char *s)
{
	size_t len = strlen(s);
	if (!utf8_valid(s, len))
		api_fail(ctx->L, "%s: %s: invalid UTF-8", fn, what);
	plan_charge(ctx, fn, len + PLAN_VALUE_COST, false);
}

/* A JSON string for the plan from text of the recipe (checked as above). */
static json_t *plan_string(ib_eval *ctx, const char *fn, const char *what, const char *s)
{
	plan_text_check(ctx, fn, what, s);
	json_t *j = json_string(s);
	if (!j) {
		fputs("imgbuild: error: out of memory\n", stderr);
		abort();
	}
	return j;
}

/* ------------------------------------------------------------------ */
/* small validators and path helpers (no Lua)                          */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Lexically clean a path, keeping its kind: "a/./b/../c" -> "a/c",
 * "/.." -> "/", "" -> "."; a relative path keeps its leading "..". */
static char *path_clean(const char *p)
{
	return ib_path_join_clean(NULL, p, 0);
}

/* Resolve p against cwd as docker does for WORKDIR and COPY destinations:
 * absolute p is cleaned; relative p is joined to cwd when the stage's
 * workdir is known (cwd absolute) and otherwise stays relative, meaning
 * relative to the workdir in effect when the step runs.  keep_slash keeps
 * a directory-meaning trailing "/". */
static char *path_resolve(const char *cwd, const char *p, bool keep_slash)
{
	return ib_path_join_clean(cwd, p, keep_slash ? IB_PATH_KEEP_SLASH : 0);
}

/* ------------------------------------------------------------------ */
/* the build context (no Lua)                                          */

/* Resolve rel inside root without leaving it.  Symlinks are followed as
 * long as they stay inside (relative targets only); the last component
 * only when follow_last or when rel ends with '/'.  *out (may be NULL) gets
 * the resolved path relative to root ("" for root itself), st_out its
 * (l)stat.  IB_ENOTFOUND when something is missing, IB_EUNSAFE when rel or
 * a symlink leads outside, IB_EINVALID for absolute paths. */
static int ctx_resolve(const char *root, const char *rel, bool follow_last, char **out,
		       struct stat *st_out, ib_error **err)
{
	cleanup_close int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ib_error_set(err, errno, "open %s", root);
	ib_path_dir dir = {fd};
	ib_path_fs fs = ib_path_fs_dir;
	fs.name = "the build context";
	return ib_path_resolve(&fs, &dir, rel, follow_last ? IB_PATH_FOLLOW_LAST : 0, out, st_out,
			       err);
}

/* Open rel, as ctx_resolve returned it (symlink-free), below root for
 * reading without following any symlink: a swap after the resolution
 * cannot lead the read outside.  The fd, or -1 with errno. */
static int ctx_open(const char *root, const char *rel)
{
	cleanup_close int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		return -1;
	return ib_path_open_in_root(rfd, rel, O_RDONLY | O_NOFOLLOW, 0, IB_PATH_OPEN_BENEATH);
}

/* ------------------------------------------------------------------ */
/* reading Lua values given to the API                                 */

typedef struct skey {
	const char *s;
	size_t len;
} skey;

static int cmp_skey(const void *a, const void *b)
{
	const skey *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->s, y->s, n);
	if (c)
		return c;
	return x->len < y->len ? -1 : x->len > y->len;
}

static const char *type_name(lua_State *L, int idx)
{
	if (luaL_testudata(L, idx, STAGE_MT))
		return "stage object";
	return luaL_typename(L, idx);
}

/* Suggest a known option within edit distance 2 (for typos). */
static const char *suggest(const char *key, const char *const *allowed)
{
	const char *best = NULL;
	size_t best_d = 3;
	size_t kl = strlen(key);
	if (kl > 64)
		return NULL;
	for (size_t a = 0; allowed && allowed[a]; a++) {
		size_t al = strlen(allowed[a]);
		if (al > 64)
			continue;
		size_t prev[66], row[66];
		for (size_t j = 0; j <= al; j++)
			prev[j] = j;
		for (size_t i2 = 1; i2 <= kl; i2++) {
			row[0] = i2;
			for (size_t j = 1; j <= al; j++) {
				size_t c = prev[j - 1] + (key[i2 - 1] != allowed[a][j - 1]);
				if (prev[j] + 1 < c)
					c = prev[j] + 1;
				if (row[j - 1] + 1 < c)
					c = row[j - 1] + 1;
				row[j] = c;
			}
			memcpy(prev, row, (al + 1) * sizeof(size_t));
		}
		if (prev[al] < best_d) {
			best_d = prev[al];
			best = allowed[a];
		}
	}
	return best;
}

/* Collect the string keys of the table at idx, sorted bytewise, into a
 * userdata pushed on the stack (the strings stay anchored by the table).
 * Integer keys 1..*npos_out are positional entries; with allow_pos false
 * any positional entry is an error.  Other keys are errors. */
static skey *table_keys(lua_State *L, int idx, const char *fn, bool allow_pos, size_t *nkeys_out,
			lua_Integer *npos_out)
{
	idx = lua_absindex(L, idx);
	lua_Integer npos = (lua_Integer)lua_rawlen(L, idx);
	size_t nkeys = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		int kt = lua_type(L, -1);
		if (kt == LUA_TSTRING) {
			nkeys++;
			continue;
		}
		if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
			lua_Integer k = lua_tointeger(L, -1);
			if (!allow_pos)
				api_fail(
				    L,
				    "%s: expected name = value pairs, got a positional entry [%I]",
				    fn, k);
			if (k >= 1 && k <= npos)
				continue;
			api_fail(L,
				 "%s: unexpected key [%I] (positional entries must form a sequence "
				 "1..n)",
				 fn, k);
		}
		api_fail(L, "%s: unexpected %s key in table (names must be strings)", fn,
			 luaL_typename(L, -1));
	}
	skey *keys = lua_newuserdatauv(L, (nkeys ? nkeys : 1) * sizeof(skey), 0);
	size_t i = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING && i < nkeys) {
			keys[i].s = lua_tolstring(L, -1, &keys[i].len);
			i++;
		}
	}
	qsort(keys, i, sizeof(skey), cmp_skey);
	*nkeys_out = i;
	if (npos_out)
		*npos_out = npos;
	return keys;
}

/* Validate a table of positional entries plus the options named in
 * `allowed` (NULL = none).  The first unknown option in sorted order is
 * reported.  Returns the number of positional entries. */
static lua_Integer check_table(lua_State *L, int idx, const char *fn, const char *const *allowed)
{
	size_t nkeys;
	lua_Integer npos;
	skey *keys = table_keys(L, idx, fn, true, &nkeys, &npos);
	for (size_t i = 0; i < nkeys; i++) {
		bool ok = false;
		for (size_t a = 0; allowed && allowed[a]; a++)
			if (strlen(allowed[a]) == keys[i].len &&
			    !memcmp(allowed[a], keys[i].s, keys[i].len))
				ok = true;
		if (ok)
			continue;
		const char *hint =
		    strlen(keys[i].s) == keys[i].len ? suggest(keys[i].s, allowed) : NULL;
		if (hint)
			api_fail(L, "%s: unknown option '%s' (did you mean '%s'?)", fn, keys[i].s,
				 hint);
		api_fail(L, "%s: unknown option '%s'", fn, keys[i].s);
	}
	lua_pop(L, 1);
	return npos;
}

/* The string at idx (no conversion from numbers); fails otherwise. */
static const char *want_string(lua_State *L, int idx, const char *fn, const char *what)
{
	if (lua_type(L, idx) != LUA_TSTRING)
		api_fail(L, "%s: %s must be a string, got %s", fn, what, type_name(L, idx));
	size_t len;
	const char *s = lua_tolstring(L, idx, &len);
	if (strlen(s) != len)
		api_fail(L, "%s: %s must not contain NUL bytes", fn, what);
	return s;
}

static const char *want_nonempty(lua_State *L, int idx, const char *fn, const char *what)
{
	const char *s = want_string(L, idx, fn, what);
	if (!*s)
		api_fail(L, "%s: %s must not be empty", fn, what);
	return s;
}

/* A string, or a number converted deterministically ("8080", "1.5"). */
static const char *want_scalar(lua_State *L, int idx, const char *fn, const char *what)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		idx = lua_absindex(L, idx);
		if (lua_isinteger(L, idx))
			lua_pushfstring(L, "%I", lua_tointeger(L, idx));
		else
			lua_pushfstring(L, "%f", lua_tonumber(L, idx));
		lua_replace(L, idx);
		return lua_tostring(L, idx);
	}
	if (lua_type(L, idx) != LUA_TSTRING)
		api_fail(L, "%s: %s must be a string or a number, got %s", fn, what,
			 type_name(L, idx));
	return want_string(L, idx, fn, what);
}

/* Push t[name] (raw) and return its type. */
static int opt_push(lua_State *L, int t, const char *name)
{
	lua_pushstring(L, name);
	return lua_rawget(L, t);
}

/* Positional entry i of the table at t, pushed; nil entries fail. */
static void pos_push(lua_State *L, int t, lua_Integer i, const char *fn)
{
	if (lua_rawgeti(L, t, i) == LUA_TNIL)
		api_fail(L, "%s: entry %I is nil", fn, i);
}

/* An array of strings from positional entries 1..n of the table at t. */
static json_t *strings_array(lua_State *L, ib_eval *ctx, int t, lua_Integer n, const char *fn,
			     const char *what)
{
	json_t *a = anchor(ctx, json_array());
	for (lua_Integer i = 1; i <= n; i++) {
		pos_push(L, t, i, fn);
		lua_pushfstring(L, "%s %I", what, i);
		const char *s = want_string(L, -2, fn, lua_tostring(L, -1));
		json_array_append_new(a, plan_string(ctx, fn, lua_tostring(L, -1), s));
		lua_pop(L, 2);
	}
	return a;
}

/* {NAME = value} -> JSON object (keys read in sorted order). */
static json_t *string_map(lua_State *L, ib_eval *ctx, int t, const char *fn, bool env_names)
{
	t = lua_absindex(L, t);
	json_t *o = anchor(ctx, json_object());
	size_t nkeys;
	skey *keys = table_keys(L, t, fn, false, &nkeys, NULL);
	for (size_t i = 0; i < nkeys; i++) {
		const char *k = keys[i].s;
		if (strlen(k) != keys[i].len || !*k)
			api_fail(L, "%s: names must be non-empty strings without NUL bytes", fn);
		plan_text_check(ctx, fn, "name", k);
		if (env_names && strchr(k, '='))
			api_fail(L, "%s: variable name '%s' must not contain '='", fn, k);
		lua_pushlstring(L, keys[i].s, keys[i].len);
		lua_rawget(L, t);
		lua_pushfstring(L, "value of '%s'", k);
		const char *v = want_scalar(L, -2, fn, lua_tostring(L, -1));
		json_object_set_new(o, k, plan_string(ctx, fn, lua_tostring(L, -1), v));
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
	return o;
}

/* ------------------------------------------------------------------ */
/* stages                                                              */

static void push_stage(lua_State *L, size_t idx)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, &STAGES_KEY);
	if (lua_rawgeti(L, -1, (lua_Integer)idx + 1) == LUA_TNIL) {
		lua_pop(L, 1);
		stage_ud *ud = lua_newuserdatauv(L, sizeof(*ud), 0);
		ud->idx = idx;
		luaL_setmetatable(L, STAGE_MT);
		lua_pushvalue(L, -1);
		lua_rawseti(L, -3, (lua_Integer)idx + 1);
	}
	lua_remove(L, -2);
}

static ssize_t stage_find(const ib_eval *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->nstages; i++)
		if (!strcmp(ctx->stages[i].name, name))
			return (ssize_t)i;
	return -1;
}

static size_t stage_new(ib_eval *ctx, const char *name, int line)
{
	size_t i = ctx->nstages;
	ctx->stages = xrealloc(ctx->stages, (i + 1) * sizeof(*ctx->stages));
	stage_state *st = &ctx->stages[i];
	memset(st, 0, sizeof(*st));
	st->name = xstrdup(name);
	st->sealed_by = -1;
	st->obj = json_pack("{s:s, s:n, s:n, s:n, s:i, s:[]}", "name", name, "from", "platform",
			    "pull", "line", line, "steps");
	json_array_append(ctx->stages_json, st->obj);
	ctx->nstages++;
	ctx->cur = i;
	return i;
}

/* A parsed base: from JSON (anchored), platform/pull (Lua strings or NULL),
 * and the index of the stage it is built on (-1 for images and scratch). */
typedef struct base_spec {
	json_t *from;
	const char *platform;
	const char *pull;
	ssize_t stage;
} base_spec;

static json_t *image_json(lua_State *L, ib_eval *ctx, const char *fn, const char *s)
{
	ib_ref *ref = NULL;
	ib_error *e = NULL;
	if (ib_ref_parse(&ref, s, &e) < 0)
		raise_ib(L, &e, fn);
	cleanup_free char *norm = ib_ref_string(ref);
	ib_ref_free(ref);
	/* a short name keeps what the user wrote: a local image of that name
	 * under another registry may stand for it (builder) */
	if (ib_ref_is_short(s))
		return anchor(ctx, json_pack("{s:s, s:s}", "image", norm, "short", s));
	return anchor(ctx, json_pack("{s:s}", "image", norm));
}

/* Parse a base reference at idx: "scratch", an image reference, a stage
 * object or the name of an existing stage, or (with allow_table) the table
 * form {ref, platform=, pull=}. */
static void parse_base(lua_State *L, ib_eval *ctx, int idx, const char *fn, base_spec *b)
{
	static const char *const opts[] = {"platform", "pull", NULL};
	idx = lua_absindex(L, idx);
	memset(b, 0, sizeof(*b));
	b->stage = -1;
	if (lua_type(L, idx) == LUA_TTABLE) {
		lua_Integer n = check_table(L, idx, fn, opts);
		if (n != 1)
			api_fail(L, "%s: expected exactly one base reference in the table, got %I",
				 fn, n);
		if (opt_push(L, idx, "platform") != LUA_TNIL) {
			b->platform = want_string(L, -1, fn, "option 'platform'");
			if (!ib_plan_valid_platform(b->platform))
				api_fail(L,
					 "%s: option 'platform' must look like \"linux/amd64\" or "
					 "\"linux/arm64/v8\", got '%s'",
					 fn, b->platform);
		}
		lua_pop(L, 1);
		if (opt_push(L, idx, "pull") != LUA_TNIL) {
			b->pull = want_string(L, -1, fn, "option 'pull'");
			if (strcmp(b->pull, "missing") && strcmp(b->pull, "always") &&
			    strcmp(b->pull, "never"))
				api_fail(L,
					 "%s: option 'pull' must be \"missing\", \"always\" or "
					 "\"never\", got '%s'",
					 fn, b->pull);
		}
		lua_pop(L, 1);
		/* the table stays in its slot: it anchors platform and pull */
		pos_push(L, idx, 1, fn);
		idx = lua_gettop(L);
	}
	stage_ud *ud = luaL_testudata(L, idx, STAGE_MT);
	if (ud) {
		b->stage = (ssize_t)ud->idx;
	} else {
		const char *ref = want_nonempty(L, idx, fn, "base reference");
		if (!strcmp(ref, "scratch")) {
			b->from = anchor(ctx, json_pack("{s:b}", "scratch", 1));
			return;
		}
		b->stage = stage_find(ctx, ref);
		if (b->stage < 0) {
			b->from = image_json(L, ctx, fn, ref);
			return;
		}
	}
	stage_state *st = &ctx->stages[b->stage];
	if (!st->has_base)
		api_fail(L, "%s: stage '%s' has no base yet; call from() on it first", fn,
			 st->name);
	b->from = anchor(ctx, json_pack("{s:s}", "stage", st->name));
}

static void stage_set_base(ib_eval *ctx, size_t si, const base_spec *b)
{
	stage_state *st = &ctx->stages[si];
	json_object_set(st->obj, "from", b->from);
	json_object_set_new(st->obj, "platform",
			    b->platform ? json_string(b->platform) : json_null());
	json_object_set_new(st->obj, "pull", b->pull ? json_string(b->pull) : json_null());
	json_decref(st->shell);
	free(st->workdir);
	st->workdir = NULL;
	if (b->stage >= 0) {
		stage_state *parent = &ctx->stages[b->stage];
		st->shell = json_deep_copy(parent->shell);
		st->workdir = parent->workdir ? xstrdup(parent->workdir) : NULL;
		parent->sealed_by = (int)si;
	} else {
		st->shell = json_array();
		for (size_t i = 0; default_shell[i]; i++)
			json_array_append_new(st->shell, json_string(default_shell[i]));
		if (json_object_get(b->from, "scratch"))
			st->workdir = xstrdup("/");
	}
	st->has_base = true;
}

static bool is_method(lua_State *L)
{
	return lua_toboolean(L, lua_upvalueindex(1));
}

/* The stage a step function appends to: the receiver of a method call
 * (removed from the stack), else the current stage. */
static size_t api_target(lua_State *L, ib_eval *ctx, const char *fn)
{
	size_t si;
	if (is_method(L)) {
		stage_ud *ud = luaL_testudata(L, 1, STAGE_MT);
		if (!ud)
			api_fail(L, "%s: method called without a stage object (use s:%s(...))", fn,
				 fn);
		si = ud->idx;
		lua_remove(L, 1);
	} else {
		if (ctx->nstages == 0)
			api_fail(L, "%s: no from: call from() or stage() first", fn);
		si = ctx->cur;
	}
	stage_state *st = &ctx->stages[si];
	if (!st->has_base)
		api_fail(L, "%s: no from: stage '%s' has no base; call from() first", fn, st->name);
	if (st->sealed_by >= 0)
		api_fail(L,
			 "%s: stage '%s' is already the base of stage '%s'; add its steps "
			 "before building on it",
			 fn, st->name, ctx->stages[st->sealed_by].name);
	return si;
}

static ib_eval *api_begin(lua_State *L)
{
	ib_eval *ctx = get_ctx(L);
	arena_release(ctx);
	return ctx;
}

static json_t *new_step(lua_State *L, ib_eval *ctx, const char *kind)
{
	return anchor(ctx, json_pack("{s:s, s:i}", "kind", kind, "line", recipe_line(L)));
}

static void commit_step(ib_eval *ctx, size_t si, json_t *step)
{
	ctx->plan_pending = 0;
	plan_charge(ctx, json_string_value(json_object_get(step, "kind")), json_cost(step), true);
	json_array_append(json_object_get(ctx->stages[si].obj, "steps"), step);
}

/* Exactly one argument, or fail with the usage text. */
static void want_one_arg(lua_State *L, const char *fn, const char *usage)
{
	if (lua_gettop(L) != 1)
		api_fail(L, "%s: expected one argument: %s", fn, usage);
}

/* "cmd string" -> shell + {cmd}, table -> its strings.  Pushes nothing;
 * returns an anchored array; *shell_form tells which. */
static json_t *command_argv(lua_State *L, ib_eval *ctx, size_t si, const char *fn,
			    const char *const *opts, bool allow_empty, bool *shell_form)
{
	if (lua_type(L, 1) == LUA_TSTRING) {
		const char *s = want_string(L, 1, fn, "command");
		if (!s[strspn(s, " \t\r\n")])
			api_fail(L, "%s: empty command", fn);
		plan_charge(ctx, fn, json_cost(ctx->stages[si].shell), false);
		json_t *a = anchor(ctx, json_deep_copy(ctx->stages[si].shell));
		json_array_append_new(a, plan_string(ctx, fn, "command", s));
		*shell_form = true;
		return a;
	}
	if (lua_type(L, 1) != LUA_TTABLE)
		api_fail(L, "%s: expected a command string or a table, got %s", fn,
			 type_name(L, 1));
	lua_Integer n = check_table(L, 1, fn, opts);
	if (n == 0 && !allow_empty)
		api_fail(L, "%s: empty command", fn);
	*shell_form = false;
	return strings_array(L, ctx, 1, n, fn, "argv entry");
}

/* ------------------------------------------------------------------ */
/* API: stages                                                         */

static int api_from(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	ssize_t self = -1;
	if (is_method(L)) {
		stage_ud *ud = luaL_testudata(L, 1, STAGE_MT);
		if (!ud)
			api_fail(L, "from: method called without a stage object (use s:from(...))");
		self = (ssize_t)ud->idx;
		lua_remove(L, 1);
	}
	want_one_arg(L, "from", "a reference or {ref, platform=, pull=}");
	base_spec b;
	parse_base(L, ctx, 1, "from", &b);

	size_t si;
	if (self < 0 && ctx->nstages && !ctx->stages[ctx->cur].has_base)
		self = (ssize_t)ctx->cur;
	if (self >= 0) {
		si = (size_t)self;
		if (ctx->stages[si].has_base)
			api_fail(L, "from: stage '%s' already has a base", ctx->stages[si].name);
		if (b.stage == self)
			api_fail(L, "from: a stage cannot be its own base");
	} else {
		char name[32];
		snprintf(name, sizeof(name), "stage%zu", ctx->nstages);
		if (stage_find(ctx, name) >= 0)
			api_fail(L,
				 "from: the unnamed stage would be called '%s', which is already "
				 "taken; name it with stage()",
				 name);
		si = stage_new(ctx, name, recipe_line(L));
	}
	stage_set_base(ctx, si, &b);
	plan_charge(ctx, "from", json_cost(ctx->stages[si].obj) + json_cost(ctx->stages[si].shell),
		    true);
	push_stage(L, si);
	return 1;
}

static int api_stage(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	int top = lua_gettop(L);
	if (top < 1 || top > 2)
		api_fail(L, "stage: expected stage(name, ref)");
	const char *name = want_string(L, 1, "stage", "name");
	if (!ib_plan_valid_stage_name(name))
		api_fail(L,
			 "stage: invalid name '%s' (letters, digits, '_', '.', '-'; starting "
			 "with a letter)",
			 name);
	if (!strcmp(name, "scratch"))
		api_fail(L, "stage: the name 'scratch' is reserved for the empty base");
	if (stage_find(ctx, name) >= 0)
		api_fail(L, "stage: duplicate stage name '%s'", name);
	base_spec b;
	bool with_base = top == 2 && !lua_isnil(L, 2);
	if (with_base)
		parse_base(L, ctx, 2, "stage", &b);
	size_t si = stage_new(ctx, name, recipe_line(L));
	if (with_base)
		stage_set_base(ctx, si, &b);
	plan_charge(ctx, "stage", json_cost(ctx->stages[si].obj) + json_cost(ctx->stages[si].shell),
		    true);
	push_stage(L, si);
	return 1;
}

/* ------------------------------------------------------------------ */
/* API: copy and run                                                   */

/* Drop the paths the ignore file excludes from a NULL-terminated list
 * (in place, order kept). */
static void drop_ignored(const ib_eval *ctx, char **v)
{
	size_t o = 0;
	for (size_t i = 0; v && v[i]; i++) {
		if (ib_ignore_match(ctx->ignore, v[i]))
			free(v[i]);
		else
			v[o++] = v[i];
	}
	if (v)
		v[o] = NULL;
}

/* Check that a context source exists (or a glob matches); returns the
 * number of entries it stands for.  clean is the cleaned relative path. */
static size_t check_context_source(lua_State *L, ib_eval *ctx, const char *src, const char *clean)
{
	ib_error *e = NULL;
	if (ib_glob_has_meta(clean)) {
		char **matches = NULL;
		if (ib_glob(ctx->context_dir, clean, &matches, &e) < 0)
			raise_ib(L, &e, "copy");
		arena_own(ctx, matches, free_strv_item);
		drop_ignored(ctx, matches);
		size_t n = ib_strv_len(matches);
		if (n == 0)
			api_fail(L, "copy: no file in the build context matches '%s'", src);
		return n;
	}
	if (ctx_resolve(ctx->context_dir, clean, false, NULL, NULL, &e) < 0) {
		if (e->code == IB_ENOTFOUND) {
			ib_error_free(&e);
			api_fail(L, "copy: source '%s' not found in the build context", src);
		}
		raise_ib(L, &e, "copy");
	}
	if (ib_ignore_match(ctx->ignore, clean))
		api_fail(L, "copy: source '%s' is excluded by %s", src,
			 ib_ignore_source(ctx->ignore));
	return 1;
}

static int api_copy(lua_State *L)
{
	static const char *const opts[] = {"exclude", "from", "mode", "owner", NULL};
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "copy");
	want_one_arg(L, "copy", "{src..., dest, from=, owner=, mode=, exclude=}");
	if (lua_type(L, 1) != LUA_TTABLE)
		api_fail(L, "copy: expected a table {src..., dest, ...}, got %s", type_name(L, 1));
	lua_Integer n = check_table(L, 1, "copy", opts);
	if (n < 2)
		api_fail(L, "copy: need at least one source and a destination, got %I entr%s", n,
			 n == 1 ? "y" : "ies");
	json_t *step = new_step(L, ctx, "copy");

	/* options, in sorted order */
	json_t *exclude = anchor(ctx, json_array());
	int t = opt_push(L, 1, "exclude");
	if (t == LUA_TSTRING) {
		json_array_append_new(
		    exclude, plan_string(ctx, "copy", "option 'exclude'",
					 want_nonempty(L, -1, "copy", "option 'exclude'")));
	} else if (t == LUA_TTABLE) {
		lua_Integer ne = check_table(L, -1, "copy: option 'exclude'", NULL);
		exclude =
		    strings_array(L, ctx, lua_gettop(L), ne, "copy: option 'exclude'", "pattern");
	} else if (t != LUA_TNIL) {
		api_fail(L, "copy: option 'exclude' must be a table of patterns, got %s",
			 type_name(L, -1));
	}
	lua_pop(L, 1);

	json_t *from = NULL;
	t = opt_push(L, 1, "from");
	if (t != LUA_TNIL) {
		stage_ud *ud = luaL_testudata(L, -1, STAGE_MT);
		ssize_t fsi = -1;
		if (ud) {
			fsi = (ssize_t)ud->idx;
		} else if (t == LUA_TSTRING) {
			const char *ref = want_nonempty(L, -1, "copy", "option 'from'");
			if (!strcmp(ref, "scratch"))
				api_fail(L,
					 "copy: option 'from' cannot be \"scratch\" (it is empty)");
			fsi = stage_find(ctx, ref);
			if (fsi < 0)
				from = image_json(L, ctx, "copy", ref);
		} else {
			api_fail(L,
				 "copy: option 'from' must be a stage object or an image "
				 "reference, got %s",
				 type_name(L, -1));
		}
		if (fsi >= 0) {
			if ((size_t)fsi == si)
				api_fail(L, "copy: stage '%s' cannot copy from itself",
					 ctx->stages[si].name);
			if ((size_t)fsi > si)
				api_fail(L,
					 "copy: option 'from' names stage '%s', which is defined "
					 "after stage '%s'",
					 ctx->stages[fsi].name, ctx->stages[si].name);
			if (!ctx->stages[fsi].has_base)
				api_fail(L, "copy: stage '%s' has no base", ctx->stages[fsi].name);
			from = anchor(ctx, json_pack("{s:s}", "stage", ctx->stages[fsi].name));
		}
	}
	lua_pop(L, 1);

	json_t *mode = json_null();
	t = opt_push(L, 1, "mode");
	if (t == LUA_TNUMBER)
		api_fail(L, "copy: option 'mode' must be an octal string like \"0644\", got a "
			    "number");
	if (t != LUA_TNIL) {
		const char *m = want_string(L, -1, "copy", "option 'mode'");
		size_t ml = strlen(m);
		if (ml == 0 || ml > 5 || strspn(m, "01234567") != ml)
			api_fail(
			    L,
			    "copy: option 'mode' must be an octal string like \"0644\", got '%s'",
			    m);
		unsigned long v = strtoul(m, NULL, 8);
		if (v > IB_PLAN_MODE_MAX)
			api_fail(L, "copy: option 'mode' %s is out of range (at most 07777)", m);
		char buf[8];
		snprintf(buf, sizeof(buf), "%04lo", v);
		mode = json_string(buf);
	}
	json_object_set_new(step, "mode", mode);
	lua_pop(L, 1);

	t = opt_push(L, 1, "owner");
	json_t *owner = json_null();
	if (t != LUA_TNIL) {
		if (t == LUA_TNUMBER && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0))
			api_fail(L,
				 "copy: option 'owner' must be \"uid[:gid]\" or \"user[:group]\"");
		const char *o = want_scalar(L, -1, "copy", "option 'owner'");
		if (!ib_plan_valid_owner(o))
			api_fail(L,
				 "copy: option 'owner' must be \"uid[:gid]\" or \"user[:group]\", "
				 "got '%s'",
				 o);
		owner = json_string(o);
	}
	json_object_set_new(step, "owner", owner);
	lua_pop(L, 1);

	/* sources and destination */
	json_t *sources = anchor(ctx, json_array());
	size_t entries = 0;
	for (lua_Integer i = 1; i < n; i++) {
		pos_push(L, 1, i, "copy");
		lua_pushfstring(L, "source %I", i);
		const char *src = want_nonempty(L, -2, "copy", lua_tostring(L, -1));
		if (from) {
			json_array_append_new(sources,
					      plan_string(ctx, "copy", lua_tostring(L, -1), src));
			entries++;
		} else {
			if (src[0] == '/')
				api_fail(
				    L,
				    "copy: source '%s' is absolute; sources are relative to the "
				    "build context",
				    src);
			char *clean = arena_own(ctx, path_clean(src), free);
			if (!strcmp(clean, "..") || !strncmp(clean, "../", 3))
				api_fail(L, "copy: source '%s' is outside the build context", src);
			entries += check_context_source(L, ctx, src, clean);
			size_t cl = strlen(clean);
			if (src[strlen(src) - 1] == '/' && strcmp(clean, ".") &&
			    clean[cl - 1] != '/')
				clean = arena_own(ctx, xasprintf("%s/", clean), free);
			json_array_append_new(sources,
					      plan_string(ctx, "copy", lua_tostring(L, -1), clean));
		}
		lua_pop(L, 2);
	}
	pos_push(L, 1, n, "copy");
	const char *dest = want_nonempty(L, -1, "copy", "destination");
	/* with $VAR the build expands and resolves it against its workdir */
	char *rdest = strchr(dest, '$')
			  ? arena_own(ctx, xstrdup(dest), free)
			  : arena_own(ctx, path_resolve(ctx->stages[si].workdir, dest, true), free);
	if (entries > 1 && rdest[strlen(rdest) - 1] != '/')
		api_fail(L, "copy: destination '%s' must end with '/' when copying several files",
			 dest);
	lua_pop(L, 1);

	json_object_set(step, "sources", sources);
	json_object_set_new(step, "dest", plan_string(ctx, "copy", "destination", rdest));
	json_object_set(step, "from", from ? from : json_null());
	json_object_set(step, "exclude", exclude);
	commit_step(ctx, si, step);
	return 0;
}

/* A cache mount (on top of the stack): a path, or {target=, id=, uid=,
 * gid=, mode=, sharing=}.  A bare path stays a string in the plan. */
/* One cache_mounts entry: "PATH", {target=PATH, ...} or {PATH, ...};
 * *share is set when it asks to be shared through the registry cache
 * (share = "registry"). */
static json_t *parse_cache_mount(lua_State *L, ib_eval *ctx, lua_Integer i, bool *share)
{
	static const char *const opts[] = {"target", "id",      "uid",   "gid",
					   "mode",   "sharing", "share", NULL};
	static const char fn[] = "run: cache mount";
	int e = lua_gettop(L);
	if (lua_type(L, e) != LUA_TTABLE) {
		const char *p = want_nonempty(L, e, "run", "cache mount");
		if (p[0] != '/')
			api_fail(L, "run: cache mount '%s' must be an absolute path", p);
		return anchor(ctx, plan_string(ctx, "run", "cache mount",
					       arena_own(ctx, path_clean(p), free)));
	}
	lua_Integer npos = check_table(L, e, fn, opts);
	bool has_target = opt_push(L, e, "target") != LUA_TNIL;
	if (npos > 1 || (npos == 1 && has_target))
		api_fail(L,
			 "run: cache mount %I: expected {target=, id=, uid=, gid=, mode=, "
			 "sharing=, share=}",
			 i);
	if (npos == 1) {
		lua_pop(L, 1);
		lua_rawgeti(L, e, 1);
	} else if (!has_target) {
		api_fail(L, "run: cache mount %I: option 'target' is required", i);
	}
	const char *p = want_nonempty(L, -1, fn, "option 'target'");
	if (p[0] != '/')
		api_fail(L, "run: cache mount '%s' must be an absolute path", p);
	const char *target = arena_own(ctx, path_clean(p), free);
	json_t *m = anchor(ctx, json_object()); /* api_fail longjmps: the anchor frees it */
	json_object_set_new(m, "target", plan_string(ctx, "run", "cache mount", target));
	const char *id = target;
	if (opt_push(L, e, "id") != LUA_TNIL)
		id = want_nonempty(L, -1, fn, "option 'id'");
	json_object_set_new(m, "id", plan_string(ctx, "run", "cache mount id", id));
	static const char *const ids[] = {"uid", "gid"};
	for (size_t k = 0; k < 2; k++) {
		if (opt_push(L, e, ids[k]) == LUA_TNIL)
			continue;
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 ||
		    lua_tointeger(L, -1) > 4294967294LL) {
			api_fail(L, "run: cache mount %I: option '%s' must be a number >= 0", i,
				 ids[k]);
		}
		json_object_set_new(m, ids[k], json_integer((json_int_t)lua_tointeger(L, -1)));
	}
	int t = opt_push(L, e, "mode");
	if (t != LUA_TNIL) {
		const char *ms = t == LUA_TSTRING ? lua_tostring(L, -1) : "";
		size_t ml = strlen(ms);
		unsigned long v = ml ? strtoul(ms, NULL, 8) : 0;
		if (ml == 0 || ml > 5 || strspn(ms, "01234567") != ml || v > IB_PLAN_MODE_MAX) {
			api_fail(L,
				 "run: cache mount %I: option 'mode' must be an octal string like "
				 "\"0755\"",
				 i);
		}
		char buf[8];
		snprintf(buf, sizeof(buf), "%04lo", v);
		json_object_set_new(m, "mode", json_string(buf));
	}
	const char *sharing = "shared";
	if (opt_push(L, e, "sharing") != LUA_TNIL)
		sharing = want_string(L, -1, fn, "option 'sharing'");
	if (strcmp(sharing, "shared") && strcmp(sharing, "private") && strcmp(sharing, "locked")) {
		api_fail(L,
			 "run: cache mount %I: option 'sharing' must be \"shared\", \"private\" "
			 "or \"locked\", got '%s'",
			 i, sharing);
	}
	json_object_set_new(m, "sharing", json_string(sharing));
	if (opt_push(L, e, "share") != LUA_TNIL) {
		const char *sh = want_string(L, -1, fn, "option 'share'");
		if (strcmp(sh, "registry") != 0)
			api_fail(L, "run: cache mount option 'share' must be \"registry\"");
		*share = true;
	}
	lua_settop(L, e);
	return m;
}

static json_t *parse_secrets(lua_State *L, ib_eval *ctx, int t)
{
	static const char *const opts[] = {"id", "src", "target", NULL};
	static const char fn[] = "run: option 'secrets'";
	t = lua_absindex(L, t);
	if (lua_type(L, t) != LUA_TTABLE)
		api_fail(L, "%s must be a table, got %s", fn, type_name(L, t));
	lua_Integer n = check_table(L, t, fn, NULL);
	json_t *a = anchor(ctx, json_array());
	for (lua_Integer i = 1; i <= n; i++) {
		const char *id = NULL, *src = NULL, *target = NULL;
		pos_push(L, t, i, fn);
		int e = lua_gettop(L);
		if (lua_type(L, e) == LUA_TSTRING) {
			src = want_nonempty(L, e, fn, "entry");
		} else if (lua_type(L, e) == LUA_TTABLE) {
			if (check_table(L, e, "run: secret", opts) != 0)
				api_fail(L, "run: secret %I: expected {id=, src=, target=}", i);
			if (opt_push(L, e, "id") != LUA_TNIL)
				id = want_nonempty(L, -1, "run: secret", "option 'id'");
			if (opt_push(L, e, "src") != LUA_TNIL)
				src = want_nonempty(L, -1, "run: secret", "option 'src'");
			if (opt_push(L, e, "target") != LUA_TNIL)
				target = want_nonempty(L, -1, "run: secret", "option 'target'");
		} else {
			api_fail(L, "%s: entry %I must be a path or {id=, src=, target=}, got %s",
				 fn, i, type_name(L, e));
		}
		/* without src, --secret id=ID,... must give the source at build time */
		if (!src && !id)
			api_fail(L, "run: secret %I: give 'id' (and a default 'src')", i);
		if (!id) {
			const char *slash = strrchr(src, '/');
			id = slash ? slash + 1 : src;
		}
		if (!*id ||
		    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			       "0123456789_.-") != strlen(id) ||
		    !strcmp(id, ".") || !strcmp(id, ".."))
			api_fail(L,
				 "run: secret %I: invalid id '%s' (letters, digits, '_', '.', '-')",
				 i, id);
		for (size_t k = 0; k < json_array_size(a); k++)
			if (!strcmp(json_string_value(json_object_get(json_array_get(a, k), "id")),
				    id))
				api_fail(L, "run: duplicate secret id '%s'", id);
		char *tgt;
		if (target) {
			if (target[0] != '/')
				api_fail(L, "run: secret %I: target '%s' must be absolute", i,
					 target);
			tgt = arena_own(ctx, path_clean(target), free);
		} else {
			tgt = arena_own(ctx, xasprintf("/run/secrets/%s", id), free);
		}
		if (src)
			plan_text_check(ctx, "run: secret", "option 'src'", src);
		plan_text_check(ctx, "run: secret", "option 'target'", tgt);
		json_t *sec = json_pack("{s:s, s:s}", "id", id, "target", tgt);
		if (src)
			json_object_set_new(sec, "src", json_string(src));
		json_array_append_new(a, sec);
		lua_settop(L, e - 1);
	}
	return a;
}

static int api_run(lua_State *L)
{
	static const char *const opts[] = {"cache",   "cache_mounts", "env",
					   "network", "secrets",      "timeout",
					   "user",    "workdir",      NULL};
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "run");
	want_one_arg(L, "run", "a command string or {argv..., options}");
	bool shell_form;
	json_t *argv = command_argv(L, ctx, si, "run", opts, false, &shell_form);
	json_t *step = new_step(L, ctx, "run");
	json_object_set(step, "argv", argv);
	json_object_set_new(step, "shell_form", json_boolean(shell_form));

	bool cache = true;
	const char *network = "default";
	json_t *env = NULL, *mounts = NULL, *secrets = NULL, *shared = NULL;
	json_t *user = json_null(), *workdir = json_null();
	json_int_t timeout = 0;
	if (!shell_form) {
		int t;
		if ((t = opt_push(L, 1, "cache")) != LUA_TNIL) {
			if (t != LUA_TBOOLEAN)
				api_fail(L, "run: option 'cache' must be a boolean, got %s",
					 type_name(L, -1));
			cache = lua_toboolean(L, -1);
		}
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "cache_mounts")) != LUA_TNIL) {
			if (t != LUA_TTABLE)
				api_fail(
				    L,
				    "run: option 'cache_mounts' must be a table of paths, got %s",
				    type_name(L, -1));
			int mt = lua_gettop(L);
			lua_Integer nm = check_table(L, mt, "run: option 'cache_mounts'", NULL);
			mounts = anchor(ctx, json_array());
			for (lua_Integer i = 1; i <= nm; i++) {
				pos_push(L, mt, i, "run: option 'cache_mounts'");
				bool share = false;
				json_t *cm = parse_cache_mount(L, ctx, i, &share);
				json_array_append(mounts, cm);
				if (share) {
					if (!shared)
						shared = anchor(ctx, json_array());
					/* by id: the key of its directory and of the
					 * registry artifact */
					json_array_append(shared, json_is_string(cm)
								      ? cm
								      : json_object_get(cm, "id"));
				}
				lua_pop(L, 1);
			}
		}
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "env")) != LUA_TNIL) {
			if (t != LUA_TTABLE)
				api_fail(L, "run: option 'env' must be a table, got %s",
					 type_name(L, -1));
			env = string_map(L, ctx, -1, "run: option 'env'", true);
		}
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "network")) != LUA_TNIL) {
			network = want_string(L, -1, "run", "option 'network'");
			if (strcmp(network, "default") && strcmp(network, "none") &&
			    strcmp(network, "host"))
				api_fail(L,
					 "run: option 'network' must be \"default\", \"none\" or "
					 "\"host\", got '%s'",
					 network);
		}
		json_object_set_new(step, "network", json_string(network));
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "secrets")) != LUA_TNIL)
			secrets = parse_secrets(L, ctx, -1);
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "timeout")) != LUA_TNIL) {
			if (t != LUA_TNUMBER)
				api_fail(L, "run: option 'timeout' must be a number, got %s",
					 type_name(L, -1));
			lua_Number v = lua_tonumber(L, -1);
			if (!(v >= 0) || v > (lua_Number)IB_PLAN_MAX_TIMEOUT ||
			    v != (lua_Number)(int64_t)v)
				api_fail(L,
					 "run: option 'timeout' must be a whole number of seconds "
					 "from 0 to %I",
					 (lua_Integer)IB_PLAN_MAX_TIMEOUT);
			timeout = (json_int_t)v;
		}
		lua_pop(L, 1);
		if ((t = opt_push(L, 1, "user")) != LUA_TNIL) {
			const char *u = want_scalar(L, -1, "run", "option 'user'");
			if (!ib_plan_valid_owner(u))
				api_fail(L,
					 "run: option 'user' must be \"user[:group]\" or "
					 "\"uid[:gid]\", got '%s'",
					 u);
			user = json_string(u);
		}
		lua_pop(L, 1);
		json_object_set_new(step, "user", user);
		if ((t = opt_push(L, 1, "workdir")) != LUA_TNIL) {
			const char *w = want_nonempty(L, -1, "run", "option 'workdir'");
			workdir = plan_string(
			    ctx, "run", "option 'workdir'",
			    arena_own(ctx, path_resolve(ctx->stages[si].workdir, w, false), free));
		}
		lua_pop(L, 1);
		json_object_set_new(step, "workdir", workdir);
	} else {
		json_object_set_new(step, "network", json_string(network));
		json_object_set_new(step, "user", user);
		json_object_set_new(step, "workdir", workdir);
	}
	json_object_set_new(step, "cache", json_boolean(cache));
	json_object_set(step, "cache_mounts", mounts ? mounts : anchor(ctx, json_array()));
	if (shared)
		json_object_set(step, "shared_mounts", shared);
	json_object_set(step, "env", env ? env : anchor(ctx, json_object()));
	json_object_set(step, "secrets", secrets ? secrets : anchor(ctx, json_array()));
	json_object_set_new(step, "timeout", json_integer(timeout));
	commit_step(ctx, si, step);
	return 0;
}

/* ------------------------------------------------------------------ */
/* API: image configuration                                            */

static int api_env(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "env");
	want_one_arg(L, "env", "{NAME = value, ...}");
	if (lua_type(L, 1) != LUA_TTABLE)
		api_fail(L, "env: expected a table {NAME = value}, got %s", type_name(L, 1));
	json_t *vars = string_map(L, ctx, 1, "env", true);
	if (json_object_size(vars) == 0)
		api_fail(L, "env: no variables given");
	json_t *step = new_step(L, ctx, "env");
	json_object_set(step, "env", vars);
	commit_step(ctx, si, step);
	return 0;
}

static int api_workdir(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "workdir");
	want_one_arg(L, "workdir", "a path");
	const char *p = want_nonempty(L, 1, "workdir", "path");
	/* with $VAR the build expands it and resolves it against the workdir
	 * then in effect; later relative paths are resolved there too */
	char *resolved =
	    strchr(p, '$') ? arena_own(ctx, xstrdup(p), free)
			   : arena_own(ctx, path_resolve(ctx->stages[si].workdir, p, false), free);
	json_t *step = new_step(L, ctx, "workdir");
	json_object_set_new(step, "path", plan_string(ctx, "workdir", "path", resolved));
	commit_step(ctx, si, step);
	/* a relative result means the base image's workdir is unknown here */
	free(ctx->stages[si].workdir);
	ctx->stages[si].workdir =
	    resolved[0] == '/' && !strchr(resolved, '$') ? xstrdup(resolved) : NULL;
	return 0;
}

static int api_user(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "user");
	want_one_arg(L, "user", "\"user[:group]\" or \"uid[:gid]\"");
	if (lua_type(L, 1) == LUA_TNUMBER && (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 0))
		api_fail(L, "user: expected \"user[:group]\" or \"uid[:gid]\"");
	const char *u = want_scalar(L, 1, "user", "user");
	if (!strchr(u, '$') && !ib_plan_valid_owner(u))
		api_fail(L, "user: expected \"user[:group]\" or \"uid[:gid]\", got '%s'", u);
	json_t *step = new_step(L, ctx, "user");
	json_object_set_new(step, "user", json_string(u));
	commit_step(ctx, si, step);
	return 0;
}

static int argv_step(lua_State *L, const char *kind)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, kind);
	want_one_arg(L, kind, "a command string or a table of strings");
	bool shell_form;
	json_t *argv = command_argv(L, ctx, si, kind, NULL, true, &shell_form);
	json_t *step = new_step(L, ctx, kind);
	json_object_set(step, "argv", argv);
	commit_step(ctx, si, step);
	return 0;
}

static int api_entrypoint(lua_State *L)
{
	return argv_step(L, "entrypoint");
}

static int api_cmd(lua_State *L)
{
	return argv_step(L, "cmd");
}

static int api_shell(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "shell");
	want_one_arg(L, "shell", "a table of strings, e.g. {\"/bin/bash\", \"-c\"}");
	if (lua_type(L, 1) != LUA_TTABLE)
		api_fail(L, "shell: expected a table of strings, got %s", type_name(L, 1));
	lua_Integer n = check_table(L, 1, "shell", NULL);
	if (n == 0)
		api_fail(L, "shell: empty shell");
	json_t *argv = strings_array(L, ctx, 1, n, "shell", "entry");
	json_t *step = new_step(L, ctx, "shell");
	json_object_set(step, "argv", argv);
	commit_step(ctx, si, step);
	plan_charge(ctx, "shell", json_cost(argv), true);
	json_decref(ctx->stages[si].shell);
	ctx->stages[si].shell = json_deep_copy(argv);
	return 0;
}

/* Arguments f(a, b, ...) or f{a, b, ...} as one list, pushed as a table. */
static lua_Integer varargs_table(lua_State *L, const char *fn)
{
	int top = lua_gettop(L);
	if (top == 1 && lua_type(L, 1) == LUA_TTABLE) {
		lua_Integer n = check_table(L, 1, fn, NULL);
		return n;
	}
	lua_createtable(L, top, 0);
	for (int i = 1; i <= top; i++) {
		lua_pushvalue(L, i);
		lua_rawseti(L, -2, i);
	}
	lua_replace(L, 1);
	lua_settop(L, 1);
	return top;
}

static int api_expose(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "expose");
	lua_Integer n = varargs_table(L, "expose");
	if (n == 0)
		api_fail(L, "expose: no port given");
	json_t *ports = anchor(ctx, json_array());
	for (lua_Integer i = 1; i <= n; i++) {
		pos_push(L, 1, i, "expose");
		const char *p = want_scalar(L, -1, "expose", "port");
		unsigned lo, hi;
		const char *proto;
		if (strchr(p, '$')) { /* $VAR: expanded and checked at build time */
			json_array_append_new(ports, plan_string(ctx, "expose", "port", p));
			lua_pop(L, 1);
			continue;
		}
		if (!ib_plan_port_parse(p, &lo, &hi, &proto))
			api_fail(L,
				 "expose: invalid port '%s' (expected N, N/tcp, N/udp or N-M/proto "
				 "with 1 <= N <= 65535)",
				 p);
		/* OCI ExposedPorts keys are single ports: ranges are expanded */
		for (unsigned port = lo; port <= hi; port++) {
			char key[32];
			snprintf(key, sizeof(key), "%u/%s", port, proto);
			json_array_append_new(ports, json_string(key));
		}
		lua_pop(L, 1);
	}
	json_t *step = new_step(L, ctx, "expose");
	json_object_set(step, "ports", ports);
	commit_step(ctx, si, step);
	return 0;
}

static int api_volume(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "volume");
	lua_Integer n = varargs_table(L, "volume");
	if (n == 0)
		api_fail(L, "volume: no path given");
	json_t *paths = anchor(ctx, json_array());
	for (lua_Integer i = 1; i <= n; i++) {
		pos_push(L, 1, i, "volume");
		const char *p = want_nonempty(L, -1, "volume", "path");
		if (strchr(p, '$')) { /* $VAR: expanded and checked at build time */
			json_array_append_new(paths, plan_string(ctx, "volume", "path", p));
			lua_pop(L, 1);
			continue;
		}
		if (p[0] != '/')
			api_fail(L, "volume: path '%s' must be absolute", p);
		json_array_append_new(
		    paths, plan_string(ctx, "volume", "path", arena_own(ctx, path_clean(p), free)));
		lua_pop(L, 1);
	}
	json_t *step = new_step(L, ctx, "volume");
	json_object_set(step, "paths", paths);
	commit_step(ctx, si, step);
	return 0;
}

static int map_step(lua_State *L, const char *kind, const char *field)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, kind);
	want_one_arg(L, kind, "{key = value, ...}");
	if (lua_type(L, 1) != LUA_TTABLE)
		api_fail(L, "%s: expected a table {key = value}, got %s", kind, type_name(L, 1));
	json_t *map = string_map(L, ctx, 1, kind, false);
	if (json_object_size(map) == 0)
		api_fail(L, "%s: nothing given", kind);
	json_t *step = new_step(L, ctx, kind);
	json_object_set(step, field, map);
	commit_step(ctx, si, step);
	return 0;
}

static int api_label(lua_State *L)
{
	return map_step(L, "label", "labels");
}

static int api_annotation(lua_State *L)
{
	return map_step(L, "annotation", "annotations");
}

static int api_stopsignal(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "stopsignal");
	want_one_arg(L, "stopsignal", "a signal name or number");
	const char *s = want_scalar(L, 1, "stopsignal", "signal");
	if (!strchr(s, '$') && !ib_plan_valid_signal(s))
		api_fail(L, "stopsignal: invalid signal '%s' (e.g. \"SIGTERM\", \"TERM\" or 15)",
			 s);
	json_t *step = new_step(L, ctx, "stopsignal");
	json_object_set_new(step, "signal", json_string(s));
	commit_step(ctx, si, step);
	return 0;
}

static json_int_t duration_opt(lua_State *L, int t, const char *name)
{
	int ty = opt_push(L, t, name);
	json_int_t v = 0;
	if (ty == LUA_TNUMBER) {
		lua_Number x = lua_tonumber(L, -1);
		if (!(x >= 0) || x > 9e9)
			api_fail(L, "healthcheck: option '%s' must be a duration >= 0", name);
		v = (json_int_t)(x * 1e9 + 0.5);
	} else if (ty == LUA_TSTRING) {
		const char *s = lua_tostring(L, -1);
		int64_t ns;
		if (!ib_plan_parse_duration(s, &ns))
			api_fail(L,
				 "healthcheck: option '%s' must be a duration like \"30s\" or "
				 "\"1m30s\", got '%s'",
				 name, s);
		v = (json_int_t)ns;
	} else if (ty != LUA_TNIL) {
		api_fail(L,
			 "healthcheck: option '%s' must be a duration string or a number of "
			 "seconds, got %s",
			 name, type_name(L, -1));
	}
	lua_pop(L, 1);
	return v;
}

static int api_healthcheck(lua_State *L)
{
	static const char *const opts[] = {"interval", "retries", "start_period",
					   "test",     "timeout", NULL};
	ib_eval *ctx = api_begin(L);
	size_t si = api_target(L, ctx, "healthcheck");
	want_one_arg(L, "healthcheck",
		     "{test=, interval=, timeout=, start_period=, retries=} or false");
	json_t *step = new_step(L, ctx, "healthcheck");
	json_int_t interval = 0, timeout = 0, start = 0, retries = 0;
	json_t *test;
	if (lua_type(L, 1) == LUA_TBOOLEAN && !lua_toboolean(L, 1)) {
		test = anchor(ctx, json_pack("[s]", "NONE"));
	} else {
		if (lua_type(L, 1) != LUA_TTABLE)
			api_fail(L, "healthcheck: expected a table or false, got %s",
				 type_name(L, 1));
		if (check_table(L, 1, "healthcheck", opts) != 0)
			api_fail(L, "healthcheck: expected options only, e.g. "
				    "healthcheck{test = \"curl -f http://localhost/\"}");
		interval = duration_opt(L, 1, "interval");
		int t = opt_push(L, 1, "retries");
		if (t != LUA_TNIL) {
			if (t != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 ||
			    lua_tointeger(L, -1) > INT32_MAX)
				api_fail(
				    L, "healthcheck: option 'retries' must be a whole number >= 0");
			retries = (json_int_t)lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
		start = duration_opt(L, 1, "start_period");
		t = opt_push(L, 1, "test");
		int ti = lua_gettop(L);
		if (t == LUA_TNIL) {
			api_fail(L, "healthcheck: option 'test' is required");
		} else if (t == LUA_TSTRING) {
			const char *s = want_string(L, ti, "healthcheck", "option 'test'");
			if (!s[strspn(s, " \t\r\n")])
				api_fail(L, "healthcheck: option 'test' is an empty command");
			plan_text_check(ctx, "healthcheck", "option 'test'", s);
			test = anchor(ctx, json_pack("[s,s]", "CMD-SHELL", s));
		} else if (t == LUA_TTABLE) {
			lua_Integer n = check_table(L, ti, "healthcheck: option 'test'", NULL);
			json_t *a =
			    strings_array(L, ctx, ti, n, "healthcheck: option 'test'", "entry");
			const char *first = n ? json_string_value(json_array_get(a, 0)) : "";
			if (n == 0)
				api_fail(L, "healthcheck: option 'test' is an empty command");
			if (!strcmp(first, "NONE")) {
				if (n != 1)
					api_fail(L, "healthcheck: {\"NONE\"} takes no arguments");
				test = a;
			} else if (!strcmp(first, "CMD-SHELL")) {
				if (n != 2)
					api_fail(
					    L,
					    "healthcheck: {\"CMD-SHELL\", command} takes exactly "
					    "one command string");
				test = a;
			} else if (!strcmp(first, "CMD")) {
				if (n < 2)
					api_fail(L, "healthcheck: {\"CMD\", ...} needs a command");
				test = a;
			} else {
				test = anchor(ctx, json_pack("[s]", "CMD"));
				json_array_extend(test, a);
			}
		} else {
			api_fail(L,
				 "healthcheck: option 'test' must be a string or a table, got %s",
				 type_name(L, ti));
		}
		lua_pop(L, 1);
		timeout = duration_opt(L, 1, "timeout");
	}
	json_object_set(step, "test", test);
	json_object_set_new(step, "interval", json_integer(interval));
	json_object_set_new(step, "timeout", json_integer(timeout));
	json_object_set_new(step, "start_period", json_integer(start));
	json_object_set_new(step, "retries", json_integer(retries));
	commit_step(ctx, si, step);
	return 0;
}

/* ------------------------------------------------------------------ */
/* API: arg, context, require                                          */

static int api_arg(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	int top = lua_gettop(L);
	if (top < 1 || top > 2)
		api_fail(L, "arg: expected arg(name [, default])");
	const char *name = want_string(L, 1, "arg", "name");
	if (!ib_plan_valid_identifier(name))
		api_fail(L, "arg: invalid name '%s' (letters, digits and '_')", name);
	const char *def = NULL;
	if (top == 2 && !lua_isnil(L, 2))
		def = want_scalar(L, 2, "arg", "default");

	/* the same arg read twice must agree on its default */
	lua_rawgetp(L, LUA_REGISTRYINDEX, &ARGS_KEY);
	int known = lua_getfield(L, -1, name);
	if (known != LUA_TNIL) {
		const char *prev = known == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if ((prev == NULL) != (def == NULL) || (prev && strcmp(prev, def)))
			api_fail(L, "arg: '%s' was already read with default %s%s%s", name,
				 prev ? "'" : "", prev ? prev : "nil", prev ? "'" : "");
	}
	lua_pop(L, 1);
	if (def)
		lua_pushstring(L, def);
	else
		lua_pushboolean(L, 0);
	lua_setfield(L, -2, name);
	lua_pop(L, 1);

	const char *val = def;
	for (size_t i = ctx->nbargs; i > 0; i--) {
		if (!strcmp(ctx->barg_names[i - 1], name)) {
			if (ctx->barg_values[i - 1])
				val = ctx->barg_values[i - 1];
			break;
		}
	}
	if (val && !utf8_valid(val, strlen(val)))
		api_fail(L, "arg: value of '%s': invalid UTF-8", name);
	plan_charge(ctx, "arg", strlen(name) + (val ? strlen(val) : 0) + PLAN_VALUE_COST, true);
	json_object_set_new(ctx->args_json, name, val ? json_string(val) : json_null());
	if (val)
		lua_pushstring(L, val);
	else
		lua_pushnil(L);
	return 1;
}

static const char *context_path_arg(lua_State *L, const char *fn)
{
	if (lua_gettop(L) != 1)
		api_fail(L, "%s: expected one argument (a path)", fn);
	return want_string(L, 1, fn, "path");
}

static int api_context_read(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	const char *path = context_path_arg(L, "context.read");
	ib_error *e = NULL;
	char *rel = NULL;
	struct stat st;
	if (ctx_resolve(ctx->context_dir, path, true, &rel, &st, &e) < 0)
		raise_ib(L, &e, "context.read");
	arena_own(ctx, rel, free);
	if (ib_ignore_match(ctx->ignore, rel))
		api_fail(L, "context.read: '%s' is excluded by %s", path,
			 ib_ignore_source(ctx->ignore));
	if (!S_ISREG(st.st_mode))
		api_fail(L, "context.read: '%s' is not a regular file", path);
	char *data = NULL;
	size_t len = 0;
	int fd = ctx_open(ctx->context_dir, rel);
	if (fd < 0) {
		ib_error_set(&e, errno, "open '%s'", path);
		raise_ib(L, &e, "context.read");
	}
	int rc = ib_read_fd(fd, CONTEXT_READ_MAX, &data, &len, &e);
	close(fd);
	if (rc < 0) {
		ib_error_wrap(&e, "read '%s'", path);
		raise_ib(L, &e, "context.read");
	}
	arena_own(ctx, data, free);
	lua_pushlstring(L, data, len);
	return 1;
}

static int api_context_exists(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	const char *path = context_path_arg(L, "context.exists");
	ib_error *e = NULL;
	char *rel = NULL;
	if (ctx_resolve(ctx->context_dir, path, true, &rel, NULL, &e) < 0) {
		if (e->code != IB_ENOTFOUND)
			raise_ib(L, &e, "context.exists");
		ib_error_free(&e);
		lua_pushboolean(L, 0);
		return 1;
	}
	arena_own(ctx, rel, free);
	lua_pushboolean(L, !ib_ignore_match(ctx->ignore, rel));
	return 1;
}

static int api_context_glob(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	if (lua_gettop(L) != 1)
		api_fail(L, "context.glob: expected one argument (a pattern)");
	const char *pattern = want_string(L, 1, "context.glob", "pattern");
	ib_error *e = NULL;
	char **matches = NULL;
	if (ib_glob(ctx->context_dir, pattern, &matches, &e) < 0)
		raise_ib(L, &e, "context.glob");
	arena_own(ctx, matches, free_strv_item);
	drop_ignored(ctx, matches);
	size_t n = ib_strv_len(matches);
	lua_createtable(L, (int)(n < INT_MAX ? n : 0), 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, matches[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

static bool valid_module_name(const char *s)
{
	if (!*s || s[0] == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
		return false;
	for (const char *p = s; *p; p++)
		if (!is_alpha(*p) && !is_digit(*p) && !strchr("_-.", *p))
			return false;
	return true;
}

static void set_env_upvalue(lua_State *L, int fidx)
{
	fidx = lua_absindex(L, fidx);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_KEY);
	if (!lua_setupvalue(L, fidx, 1))
		lua_pop(L, 1);
}

/* Load Lua source text as a function on the stack, running in the sandbox
 * environment.  Syntax errors are raised. */
static void load_source(lua_State *L, const char *data, size_t len, const char *chunkname)
{
	/* a "#!" first line is skipped but still counts as line 1 */
	if (len && data[0] == '#') {
		const char *nl = memchr(data, '\n', len);
		size_t skip = nl ? (size_t)(nl - data) : len;
		data += skip;
		len -= skip;
	}
	if (luaL_loadbufferx(L, data, len, chunkname, "t") != LUA_OK)
		lua_error(L);
	set_env_upvalue(L, -1);
}

/* Load a module file (or embedded source) as a function on the stack, as
 * load_source does. */
static void load_chunk(lua_State *L, ib_eval *ctx, const char *data, size_t len,
		       const char *display)
{
	load_source(L, data, len, chunk_register(L, ctx, display));
	lua_remove(L, -2); /* the chunk name */
}

/* Find and load module `name`; pushes the function. Returns false when no
 * module of that name exists. */
static bool find_module(lua_State *L, ib_eval *ctx, const char *name)
{
	/* load_chunk() raises on syntax errors: everything here is in the arena */
	char *rel = arena_own(ctx, xstrdup(name), free);
	for (char *p = rel; *p; p++)
		if (*p == '.')
			*p = '/';
	static const char *const patterns[] = {"%s.lua", "%s/init.lua"};
	for (size_t k = 0; k < 2; k++) {
		char *file = arena_own(ctx, xasprintf(patterns[k], rel), free);
		char *path = arena_own(
		    ctx, *ctx->recipe_dir ? ib_path_join(ctx->recipe_dir, file) : xstrdup(file),
		    free);
		/* symlinks are followed only inside the recipe's directory,
		 * as context.read does inside the build context */
		const char *root = *ctx->recipe_dir ? ctx->recipe_dir : ".";
		char *resolved = NULL;
		struct stat st;
		ib_error *e = NULL;
		if (ctx_resolve(root, file, true, &resolved, &st, &e) < 0) {
			if (e->code == IB_ENOTFOUND) {
				ib_error_free(&e);
				continue;
			}
			if (e->code == IB_EUNSAFE) {
				ib_error_free(&e);
				api_fail(L,
					 "require: module '%s': %s leads outside the recipe's "
					 "directory (a symlink)",
					 name, path);
			}
			raise_ib(L, &e, "require");
		}
		arena_own(ctx, resolved, free);
		if (!S_ISREG(st.st_mode))
			continue;
		char *data = NULL;
		size_t len = 0;
		int fd = ctx_open(root, resolved);
		if (fd < 0) {
			ib_error_set(&e, errno, "open %s", path);
			raise_ib(L, &e, "require");
		}
		int rc = ib_read_fd(fd, RECIPE_MAX_BYTES, &data, &len, &e);
		close(fd);
		if (rc < 0) {
			ib_error_wrap(&e, "read %s", path);
			raise_ib(L, &e, "require");
		}
		arena_own(ctx, data, free);
		load_chunk(L, ctx, data, len, path);
		return true;
	}
	for (const ib_embedded_file *f = ib_embedded_lua; f->name; f++) {
		if (strcmp(f->name, name))
			continue;
		char *display = arena_own(ctx, xasprintf(EMBEDDED_PREFIX "%s.lua", name), free);
		load_chunk(L, ctx, f->data, f->len, display);
		return true;
	}
	return false;
}

static int api_require(lua_State *L)
{
	ib_eval *ctx = api_begin(L);
	if (lua_gettop(L) != 1)
		api_fail(L, "require: expected one argument (a module name)");
	const char *name = want_string(L, 1, "require", "module name");
	if (!valid_module_name(name))
		api_fail(L,
			 "require: invalid module name '%s' (use dots to separate directories, "
			 "e.g. \"lib.util\")",
			 name);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
	int loaded = lua_gettop(L);
	lua_pushvalue(L, 1);
	if (lua_rawget(L, loaded) != LUA_TNIL) {
		lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADING_KEY);
		if (lua_rawequal(L, -1, -2))
			api_fail(L, "require: module '%s' requires itself (a require cycle)", name);
		lua_pop(L, 1);
		return 1;
	}
	lua_pop(L, 1);
	if (!find_module(L, ctx, name))
		api_fail(L,
			 "require: module '%s' not found (looked for %s%s%s.lua next to the "
			 "recipe and in the imgbuild library)",
			 name, ctx->recipe_dir, *ctx->recipe_dir ? "/" : "", name);
	int fn = lua_gettop(L);
	lua_pushvalue(L, 1);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADING_KEY);
	lua_rawset(L, loaded);
	/* the module runs API functions itself: nothing of ours is in the arena
	 * from here on */
	lua_pushvalue(L, fn);
	lua_pushvalue(L, 1);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		lua_pushvalue(L, 1);
		lua_pushnil(L);
		lua_rawset(L, loaded);
		lua_error(L);
	}
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, 1);
	lua_pushvalue(L, -2);
	lua_rawset(L, loaded);
	return 1;
}

/* ------------------------------------------------------------------ */
/* sandboxed base functions                                            */

/* tostring() that never shows an address: tables, functions and the like
 * get an id in order of first appearance, which is deterministic. */
static const char *det_tostring(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	switch (lua_type(L, idx)) {
	case LUA_TTABLE:
	case LUA_TFUNCTION:
	case LUA_TUSERDATA:
	case LUA_TTHREAD:
	case LUA_TLIGHTUSERDATA:
		if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
			lua_pop(L, 1);
			return luaL_tolstring(L, idx, NULL);
		}
		break;
	default:
		return luaL_tolstring(L, idx, NULL);
	}
	ib_eval *ctx = get_ctx(L);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &OBJID_KEY);
	lua_pushvalue(L, idx);
	lua_Integer id;
	if (lua_rawget(L, -2) == LUA_TNUMBER) {
		id = lua_tointeger(L, -1);
	} else {
		id = ++ctx->next_objid;
		lua_pushvalue(L, idx);
		lua_pushinteger(L, id);
		lua_rawset(L, -4);
	}
	lua_pop(L, 2);
	return lua_pushfstring(L, "%s: #%I", luaL_typename(L, idx), id);
}

static int sb_tostring(lua_State *L)
{
	luaL_checkany(L, 1);
	det_tostring(L, 1);
	return 1;
}

/* print() goes to stderr so that `imgbuild plan` output stays JSON. */
static int sb_print(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		det_tostring(L, i);
		luaL_addvalue(&b);
	}
	luaL_addchar(&b, '\n');
	luaL_pushresult(&b);
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	fwrite(s, 1, len, stderr);
	fflush(stderr);
	return 0;
}

/* string.format without "%p" (an address) and with deterministic "%s" for
 * tables and functions. */
static int sb_format(lua_State *L)
{
	size_t flen;
	const char *fmt = luaL_checklstring(L, 1, &flen);
	int top = lua_gettop(L);
	int arg = 1;
	for (size_t i = 0; i < flen; i++) {
		if (fmt[i] != '%')
			continue;
		if (++i < flen && fmt[i] == '%')
			continue;
		while (i < flen && strchr("-+ #0123456789.", fmt[i]))
			i++;
		if (i >= flen)
			break;
		arg++;
		if (fmt[i] == 'p')
			return luaL_error(L, "string.format: '%%p' is not available in recipes "
					     "(addresses are not deterministic)");
		if (fmt[i] == 's' && arg <= top && lua_type(L, arg) != LUA_TSTRING &&
		    lua_type(L, arg) != LUA_TNUMBER) {
			det_tostring(L, arg);
			lua_replace(L, arg);
		}
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, top, 1);
	return 1;
}

/* setmetatable() without __gc and __mode: finalizers and weak tables
 * depend on garbage collection timing. */
static int sb_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		int gc = lua_rawget(L, 2);
		lua_pushliteral(L, "__mode");
		int mode = lua_rawget(L, 2);
		lua_pop(L, 2);
		if (gc != LUA_TNIL || mode != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc and __mode are not available in "
					     "recipes (garbage collection timing is not "
					     "deterministic)");
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

/* load() for source strings only, in the sandbox environment by default. */
static int sb_load(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "load: only source strings can be loaded in recipes");
	size_t len;
	const char *s = lua_tolstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "(load)");
	const char *mode = luaL_optstring(L, 3, "t");
	if (!strchr(mode, 't'))
		return luaL_error(L, "load: only text chunks can be loaded in recipes");
	const char *chunkname = lua_pushfstring(L, "=%s", name);
	if (luaL_loadbufferx(L, s, len, chunkname, "t") != LUA_OK) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4)) {
		lua_pushvalue(L, 4);
		if (!lua_setupvalue(L, -2, 1))
			lua_pop(L, 1);
	} else {
		set_env_upvalue(L, -1);
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* a budget for pattern matching                                       */

/* Lua's pattern matcher backtracks without limit, in C where the
 * instruction cap does not see it: string.rep("a", 30000):find(
 * string.rep("a*", 6) .. "b") would run for ages.  So string.find, match,
 * gmatch and gsub are wrapped: before the real function runs, an upper bound
 * of its work is computed from the pattern and the subject's length n, and a
 * call whose bound exceeds MATCH_BUDGET steps is refused with the recipe's
 * line.  Everything the real function does is then bounded; gsub's
 * replacement functions are Lua code, under the instruction cap.
 *
 * The bound follows the matcher's search tree.  Only a quantified single
 * character item chooses: x*, x+ and x- a length, x? one of two;
 * captures, %f, %b and back-references do not.  The lengths chosen before
 * an item cover consecutive pieces of the subject, so with b length choices
 * before it an item is reached at most C(n+b, b) times from one start
 * position and C(n+b+1, b+1) times summed over all start positions (find,
 * match, gmatch and gsub try each start position at most once; an anchored
 * pattern only the first), times 2 per choice of an x?.  Reaching an item
 * costs one step, or n+1 for a greedy expansion, %b or a back-reference.
 *
 * A quantified item whose rest always matches (the end of the pattern,
 * captures, x* x- x?, or .* .- followed by items that match the empty
 * string at the end) does not choose: its first try succeeds, or x+ fails
 * at once.  Its greedy scan happens in a successful match only, and the
 * matches of gmatch/gsub do not overlap, so these scans add up to n+1 per
 * call.  With that, "[^\n]+" costs about 3n and "^%s*(.-)%s*$" about 2n^2,
 * which is what they can cost; ("a*"):rep(6) .. "b" costs C(n+7, 7). */
#define MATCH_BUDGET 1e9

enum { PI_SINGLE, PI_OPEN, PI_CLOSE, PI_POSCAP, PI_SCAN, PI_FRONTIER, PI_END };

typedef struct pat_item {
	unsigned char kind;
	char quant; /* 0 or one of "*+-?" (PI_SINGLE) */
	bool dot;   /* the item is "." (any character) */
} pat_item;

/* Index after the set "[...]" that starts at p[i]; m when it is not closed
 * (the matcher raises that). */
static size_t set_end(const char *p, size_t m, size_t i)
{
	i++;
	if (i < m && p[i] == '^')
		i++;
	do {
		if (i >= m)
			return m;
		if (p[i++] == '%' && i < m)
			i++;
	} while (i < m && p[i] != ']');
	return i < m ? i + 1 : m;
}

/* C(n+b, b), stopping early once far above the budget. */
static double choose(double n, int b)
{
	double r = 1;
	for (int i = 1; i <= b && r <= MATCH_BUDGET * 1e3; i++)
		r = r * (n + i) / i;
	return r;
}

/* Upper bound of the matching steps of pattern p (m bytes) on a subject of
 * n bytes, see above.  The item arrays live in a userdata that is pushed
 * and popped. */
static double pattern_cost(lua_State *L, const char *p, size_t m, size_t n_subject, bool may_anchor)
{
	double n = (double)n_subject;
	if (!memchr(p, 0, m) && !strpbrk(p, "^$*+?.([%-"))
		return (n + 1) * ((double)m + 1); /* a plain search */
	bool anchored = may_anchor && m && p[0] == '^';
	size_t i = anchored ? 1 : 0, k = 0;
	pat_item *it = lua_newuserdatauv(L, (m + 1) * (sizeof(pat_item) + 2), 0);
	bool *as = (bool *)(it + m + 1), *ae = as + m + 1;
	while (i < m) {
		pat_item t = {PI_SINGLE, 0, false};
		char c = p[i];
		if (c == '(') {
			t.kind = i + 1 < m && p[i + 1] == ')' ? PI_POSCAP : PI_OPEN;
			i += t.kind == PI_POSCAP ? 2 : 1;
		} else if (c == ')') {
			t.kind = PI_CLOSE;
			i++;
		} else if (c == '$' && i + 1 == m) {
			t.kind = PI_END;
			i++;
		} else if (c == '%' && i + 1 < m && p[i + 1] == 'b') {
			t.kind = PI_SCAN;
			i = i + 4 < m ? i + 4 : m;
		} else if (c == '%' && i + 1 < m && p[i + 1] == 'f') {
			t.kind = PI_FRONTIER;
			i += 2;
			if (i < m && p[i] == '[')
				i = set_end(p, m, i);
		} else if (c == '%' && i + 1 < m && p[i + 1] >= '0' && p[i + 1] <= '9') {
			t.kind = PI_SCAN;
			i += 2;
		} else {
			if (c == '[')
				i = set_end(p, m, i);
			else if (c == '%' && i + 1 < m)
				i += 2;
			else
				i++;
			t.dot = c == '.';
			if (i < m && memchr("*+-?", p[i], 4)) {
				t.quant = p[i];
				i++;
			}
		}
		it[k++] = t;
	}
	/* ae[j]: items j.. can match the empty string at the end of the
	 * subject; as[j]: they match from any position */
	as[k] = ae[k] = true;
	for (size_t j = k; j-- > 0;) {
		const pat_item *t = &it[j];
		switch (t->kind) {
		case PI_OPEN:
		case PI_CLOSE:
		case PI_POSCAP:
			ae[j] = ae[j + 1];
			as[j] = as[j + 1];
			break;
		case PI_END:
			ae[j] = ae[j + 1];
			as[j] = false;
			break;
		case PI_SINGLE: {
			bool optional = t->quant && t->quant != '+';
			ae[j] = optional && ae[j + 1];
			as[j] = optional && (as[j + 1] || (t->dot && t->quant != '?' && ae[j + 1]));
			break;
		}
		default:
			ae[j] = as[j] = false;
			break;
		}
	}
	double total = 0, twos = 1;
	int b = 0;
	for (size_t j = 0; j <= k && total <= MATCH_BUDGET; j++) {
		double reached = (anchored ? choose(n, b) : choose(n, b + 1)) * twos;
		double step = 1;
		if (j < k && it[j].kind == PI_SCAN)
			step = n + 1;
		if (j < k && it[j].quant) {
			bool greedy = it[j].quant == '*' || it[j].quant == '+';
			if (as[j + 1])
				total += greedy ? n + 1 : 0;
			else if (it[j].quant == '?')
				twos *= 2;
			else if (++b, greedy)
				step = n + 1;
		}
		total += reached * step;
	}
	lua_pop(L, 1);
	return total;
}

/* string.find/match/gmatch/gsub (upvalue 1) with the budget above; upvalue
 * 2 is the name, upvalue 3 true for find (which has a plain flag). */
static int sb_pattern(lua_State *L)
{
	size_t n, m;
	luaL_checklstring(L, 1, &n);
	const char *p = luaL_checklstring(L, 2, &m);
	const char *fn = lua_tostring(L, lua_upvalueindex(2));
	double cost;
	if (lua_toboolean(L, lua_upvalueindex(3)) && lua_toboolean(L, 4))
		cost = ((double)n + 1) * ((double)m + 1);
	else
		cost = pattern_cost(L, p, m, n, strcmp(fn, "string.gmatch") != 0);
	if (cost > MATCH_BUDGET)
		api_fail(L,
			 "%s: pattern too expensive for a subject of %I bytes (its worst case "
			 "exceeds %d million matching steps)",
			 fn, (lua_Integer)n, (int)(MATCH_BUDGET / 1e6));
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

/* ------------------------------------------------------------------ */
/* stage objects                                                       */

static int stage_index(lua_State *L)
{
	stage_ud *ud = luaL_checkudata(L, 1, STAGE_MT);
	if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "name")) {
		lua_pushstring(L, get_ctx(L)->stages[ud->idx].name);
		return 1;
	}
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	return 1;
}

static int stage_newindex(lua_State *L)
{
	return luaL_error(L, "stage objects are read-only");
}

static int stage_tostring(lua_State *L)
{
	stage_ud *ud = luaL_checkudata(L, 1, STAGE_MT);
	lua_pushfstring(L, "stage(%s)", get_ctx(L)->stages[ud->idx].name);
	return 1;
}

/* Step functions: global form (upvalue false) and method form (true). */
static const luaL_Reg step_api[] = {
    {"from", api_from},
    {"copy", api_copy},
    {"run", api_run},
    {"env", api_env},
    {"workdir", api_workdir},
    {"user", api_user},
    {"entrypoint", api_entrypoint},
    {"cmd", api_cmd},
    {"expose", api_expose},
    {"volume", api_volume},
    {"label", api_label},
    {"annotation", api_annotation},
    {"stopsignal", api_stopsignal},
    {"healthcheck", api_healthcheck},
    {"shell", api_shell},
    {NULL, NULL},
};

static const luaL_Reg context_api[] = {
    {"read", api_context_read},
    {"glob", api_context_glob},
    {"exists", api_context_exists},
    {NULL, NULL},
};

/* ------------------------------------------------------------------ */
/* evaluation                                                          */

/* The instruction cap cannot be caught.  Lua's pcall/xpcall would turn the
 * hook's error into a return value, and a recipe looping around pcall()
 * would run forever.  So once the cap is hit: the message is kept in the
 * registry, the hook fires before every instruction and raises it again, the
 * sandbox's pcall/xpcall raise it again instead of returning it, and an
 * xpcall message handler is not run (it would run with hooks disabled when
 * the error comes from the hook).  No coroutine library is offered, so the
 * main thread is the only one.  The evaluation unwinds to the top. */
static _Noreturn void raise_cap(lua_State *L)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, &CAP_KEY);
	lua_error(L);
	__builtin_unreachable();
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	ib_eval *ctx = get_ctx(L);
	if (ctx->cap_hit)
		raise_cap(L);
	if (++ctx->hook_calls < HOOK_MAX_CALLS)
		return;
	push_where(L, 0);
	lua_pushfstring(L, "recipe evaluation exceeded %d million instructions (endless loop?)",
			HOOK_MAX_CALLS * (HOOK_INTERVAL / 1000000));
	lua_concat(L, 2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &CAP_KEY);
	ctx->cap_hit = true;
	lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
	raise_cap(L);
}

/* pcall(f, ...) that lets the instruction cap through. */
static int sb_pcall(lua_State *L)
{
	luaL_checkany(L, 1);
	int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
	if (get_ctx(L)->cap_hit)
		raise_cap(L);
	lua_pushboolean(L, status == LUA_OK);
	lua_insert(L, 1);
	return lua_gettop(L);
}

/* Message handler of sb_xpcall: the recipe's handler (upvalue 1), unless
 * the cap was hit. */
static int sb_xpcall_handler(lua_State *L)
{
	if (get_ctx(L)->cap_hit)
		raise_cap(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

/* xpcall(f, msgh, ...) that lets the instruction cap through. */
static int sb_xpcall(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, sb_xpcall_handler, 1);
	lua_replace(L, 2);
	lua_pushvalue(L, 1); /* -> handler, f, args... */
	lua_copy(L, 2, 1);
	lua_replace(L, 2);
	int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
	if (get_ctx(L)->cap_hit)
		raise_cap(L);
	lua_pushboolean(L, status == LUA_OK);
	lua_replace(L, 1);
	return lua_gettop(L);
}

static void copy_field(lua_State *L, int from, int to, const char *name)
{
	lua_getfield(L, from, name);
	lua_setfield(L, to, name);
}

static void build_env(lua_State *L)
{
	static const char *const base_names[] = {
	    "assert", "error",	"getmetatable", "ipairs",   "next", "rawequal", "rawget",
	    "rawlen", "rawset", "select",	"tonumber", "type", "_VERSION", NULL,
	};
	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
	luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
	lua_pop(L, 5);

	lua_pushglobaltable(L);
	int g = lua_gettop(L);
	lua_newtable(L);
	int env = lua_gettop(L);
	for (size_t i = 0; base_names[i]; i++)
		copy_field(L, g, env, base_names[i]);
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");
	lua_pushcfunction(L, sb_tostring);
	lua_setfield(L, env, "tostring");
	lua_pushcfunction(L, sb_print);
	lua_setfield(L, env, "print");
	lua_pushcfunction(L, sb_load);
	lua_setfield(L, env, "load");
	lua_pushcfunction(L, sb_pcall);
	lua_setfield(L, env, "pcall");
	lua_pushcfunction(L, sb_xpcall);
	lua_setfield(L, env, "xpcall");
	lua_getfield(L, g, "setmetatable");
	lua_pushcclosure(L, sb_setmetatable, 1);
	lua_setfield(L, env, "setmetatable");

	/* libraries: no clock, no random source, no addresses */
	lua_getfield(L, g, LUA_STRLIBNAME);
	lua_getfield(L, -1, "format");
	lua_pushcclosure(L, sb_format, 1);
	lua_setfield(L, -2, "format");
	static const char *const matchers[] = {"find", "match", "gmatch", "gsub", NULL};
	for (size_t i = 0; matchers[i]; i++) {
		lua_getfield(L, -1, matchers[i]);
		lua_pushfstring(L, "string.%s", matchers[i]);
		lua_pushboolean(L, i == 0);
		lua_pushcclosure(L, sb_pattern, 3);
		lua_setfield(L, -2, matchers[i]);
	}
	lua_setfield(L, env, LUA_STRLIBNAME);
	lua_getfield(L, g, LUA_MATHLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "random");
	lua_pushnil(L);
	lua_setfield(L, -2, "randomseed");
	lua_setfield(L, env, LUA_MATHLIBNAME);
	copy_field(L, g, env, LUA_TABLIBNAME);
	copy_field(L, g, env, LUA_UTF8LIBNAME);

	/* the recipe API */
	lua_pushboolean(L, 0);
	luaL_setfuncs(L, step_api, 1);
	lua_pushcfunction(L, api_stage);
	lua_setfield(L, env, "stage");
	lua_pushcfunction(L, api_arg);
	lua_setfield(L, env, "arg");
	lua_pushcfunction(L, api_require);
	lua_setfield(L, env, "require");
	luaL_newlib(L, context_api);
	lua_setfield(L, env, "context");

	/* stage objects */
	luaL_newmetatable(L, STAGE_MT);
	lua_newtable(L);
	lua_pushboolean(L, 1);
	luaL_setfuncs(L, step_api, 1);
	lua_pushcclosure(L, stage_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, stage_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, stage_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "stage");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);

	lua_pushvalue(L, env);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_KEY);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADING_KEY);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &STAGES_KEY);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &ARGS_KEY);
	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "k");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &OBJID_KEY);
	lua_settop(L, g - 1);
}

static _Noreturn void fail_at_line(lua_State *L, ib_eval *ctx, int line, const char *fmt, ...)
{
	va_list ap;
	lua_pushfstring(L, "%s:%d: ", ctx->recipe_path, line);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	lua_error(L);
	__builtin_unreachable();
}

static int eval_main(lua_State *L)
{
	ib_eval *ctx = lua_touserdata(L, 1);
	lua_settop(L, 0);
	build_env(L);

	/* the prelude: Lua-side part of the environment */
	const ib_embedded_file *prelude = NULL;
	for (const ib_embedded_file *f = ib_embedded_lua; f->name; f++)
		if (!strcmp(f->name, "prelude"))
			prelude = f;
	if (prelude) {
		load_chunk(L, ctx, prelude->data, prelude->len, EMBEDDED_PREFIX "prelude.lua");
		lua_call(L, 0, 0);
		lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "prelude");
		lua_pop(L, 1);
	}

	/* the recipe itself is chunk 0 */
	load_source(L, ctx->recipe_data, ctx->recipe_len,
		    lua_pushfstring(L, "@%s", ctx->chunks[0].name));
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_INTERVAL);
	lua_call(L, 0, 0);
	lua_sethook(L, NULL, 0, 0);
	arena_release(ctx);

	if (ctx->nstages == 0)
		fail_at_line(L, ctx, 1, "recipe defines no stage (call from() or stage())");
	for (size_t i = 0; i < ctx->nstages; i++) {
		stage_state *st = &ctx->stages[i];
		if (!st->has_base)
			fail_at_line(
			    L, ctx, (int)json_integer_value(json_object_get(st->obj, "line")),
			    "stage '%s' has no base: pass one to stage() or call from()", st->name);
	}
	return 0;
}

/* Error handler of the evaluation: makes sure the message is a string
 * that starts with "FILE:LINE: ". */
static int eval_msgh(lua_State *L)
{
	ib_eval *ctx = get_ctx(L);
	const char *msg;
	if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
		msg = lua_tostring(L, 1);
	else if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
		msg = lua_tostring(L, -1);
	else
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	if (has_location(ctx, msg)) {
		lua_pushstring(L, msg);
		return 1;
	}
	push_where(L, 1);
	lua_pushstring(L, msg);
	lua_concat(L, 2);
	return 1;
}

static void *eval_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	ib_eval *ctx = ud;
	if (!ptr)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		ctx->mem_used -= osize;
		return NULL;
	}
	size_t used = ctx->mem_used + ctx->plan_bytes + ctx->plan_pending;
	if (nsize > osize && (used > LUA_MEM_LIMIT || nsize - osize > LUA_MEM_LIMIT - used))
		return NULL;
	void *p = realloc(ptr, nsize);
	if (!p)
		return NULL;
	ctx->mem_used = ctx->mem_used - osize + nsize;
	return p;
}

static void eval_clear(ib_eval *ctx)
{
	arena_release(ctx);
	free(ctx->arena);
	json_decref(ctx->scratch);
	json_decref(ctx->plan);
	for (size_t i = 0; i < ctx->nstages; i++) {
		free(ctx->stages[i].name);
		json_decref(ctx->stages[i].obj);
		json_decref(ctx->stages[i].shell);
		free(ctx->stages[i].workdir);
	}
	free(ctx->stages);
	for (size_t i = 0; i < ctx->nchunks; i++) {
		free(ctx->chunks[i].name);
		free(ctx->chunks[i].display);
	}
	free(ctx->chunks);
	for (size_t i = 0; i < ctx->nbargs; i++) {
		free(ctx->barg_names[i]);
		free(ctx->barg_values[i]);
	}
	free(ctx->barg_names);
	free(ctx->barg_values);
	free(ctx->recipe_data);
	free(ctx->recipe_dir);
	free(ctx->context_dir);
	ib_ignore_free(ctx->ignore);
}

static int parse_build_args(ib_eval *ctx, char *const *args, ib_error **err)
{
	size_t n = ib_strv_len(args);
	ctx->barg_names = xcalloc(n + 1, sizeof(char *));
	ctx->barg_values = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(args[i], '=');
		char *name = eq ? xstrndup(args[i], (size_t)(eq - args[i])) : xstrdup(args[i]);
		ctx->barg_names[ctx->nbargs] = name;
		/* docker: "--build-arg NAME" takes the value from the environment */
		const char *v = eq ? eq + 1 : getenv(name);
		ctx->barg_values[ctx->nbargs] = v ? xstrdup(v) : NULL;
		ctx->nbargs++;
		if (!ib_plan_valid_identifier(name))
			return ib_error_setc(err, IB_EUSAGE,
					     "--build-arg '%s': expected NAME=VALUE with NAME made "
					     "of letters, digits and '_'",
					     args[i]);
	}
	return 0;
}

int ib_recipe_eval(json_t **plan_out, const char *recipe_path, const ib_recipe_options *opts,
		   ib_error **err)
{
	static const ib_recipe_options defaults = IB_RECIPE_OPTIONS_INIT;
	ib_eval ctx;
	int rc = 0;

	*plan_out = NULL;
	if (!opts)
		opts = &defaults;
	memset(&ctx, 0, sizeof(ctx));
	ctx.recipe_path = recipe_path;

	if (ib_read_file(recipe_path, RECIPE_MAX_BYTES, &ctx.recipe_data, &ctx.recipe_len, err) <
	    0) {
		rc = ib_error_wrap(err, "read recipe %s", recipe_path);
		goto out;
	}
	if (strlen(ctx.recipe_data) != ctx.recipe_len) {
		rc = ib_error_setc(err, IB_EINVALID, "%s: recipe contains NUL bytes", recipe_path);
		goto out;
	}
	const char *slash = strrchr(recipe_path, '/');
	if (!slash)
		ctx.recipe_dir = xstrdup("");
	else if (slash == recipe_path)
		ctx.recipe_dir = xstrdup("/");
	else
		ctx.recipe_dir = xstrndup(recipe_path, (size_t)(slash - recipe_path));
	ctx.context_dir = xstrdup(opts->context_dir ? opts->context_dir
				  : *ctx.recipe_dir ? ctx.recipe_dir
						    : ".");
	struct stat st;
	if (stat(ctx.context_dir, &st) < 0) {
		rc = ib_error_set(err, errno, "build context %s", ctx.context_dir);
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		rc = ib_error_setc(err, IB_EINVALID, "build context %s is not a directory",
				   ctx.context_dir);
		goto out;
	}
	if ((rc = parse_build_args(&ctx, opts->build_args, err)) < 0)
		goto out;
	/* docker: what the ignore file excludes is not in the context at all */
	if ((rc = ib_ignore_load(ctx.context_dir, recipe_path, &ctx.ignore, err)) < 0)
		goto out;

	const char *base = slash ? slash + 1 : recipe_path;
	if (!utf8_valid(base, strlen(base))) {
		rc = ib_error_setc(err, IB_EINVALID,
				   "%s: the recipe's file name is not valid UTF-8", recipe_path);
		goto out;
	}
	ctx.scratch = json_array();
	ctx.plan = json_pack("{s:i, s:s, s:{}, s:[]}", "version", IB_PLAN_VERSION, "recipe",
			     slash ? slash + 1 : recipe_path, "args", "stages");
	ctx.args_json = json_object_get(ctx.plan, "args");
	ctx.stages_json = json_object_get(ctx.plan, "stages");

	lua_State *L = lua_newstate(eval_alloc, &ctx);
	if (!L) {
		rc = ib_error_setc(err, IB_ERROR, "cannot create a Lua state");
		goto out;
	}
	*(ib_eval **)lua_getextraspace(L) = &ctx;
	ctx.L = L;

	/* chunk 0 is the recipe; registered before anything can fail */
	ctx.chunks = xcalloc(1, sizeof(*ctx.chunks));
	ctx.chunks[0].display = xstrdup(recipe_path);
	bool plain = strlen(recipe_path) <= SHORT_CHUNKNAME_MAX;
	for (const char *p = recipe_path; plain && *p; p++)
		if ((unsigned char)*p < 0x20)
			plain = false;
	ctx.chunks[0].name = plain ? xstrdup(recipe_path) : xstrdup("\0010\002");
	ctx.nchunks = 1;

	lua_pushcfunction(L, eval_msgh);
	lua_pushcfunction(L, eval_main);
	lua_pushlightuserdata(L, &ctx);
	int status = lua_pcall(L, 1, 0, 1);
	if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		cleanup_free char *text = NULL;
		if (status == LUA_ERRMEM)
			text = xasprintf("%s: recipe evaluation ran out of memory (limit %zu MiB)",
					 recipe_path, LUA_MEM_LIMIT >> 20);
		else
			text = expand_tokens(&ctx, msg ? msg : "unknown error");
		rc = ib_error_setc(err, IB_EINVALID, "%s", text);
	}
	lua_close(L);
	if (rc == 0)
		*plan_out = json_incref(ctx.plan);
out:
	eval_clear(&ctx);
	return rc;
}
