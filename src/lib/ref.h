/* Image references, parsed and normalised the way docker does:
 *   alpine                 -> docker.io/library/alpine:latest
 *   localhost:5000/a/b:t   -> localhost:5000/a/b:t
 *   x@sha256:...           -> docker.io/library/x@sha256:...
 *   host/x:t@sha256:...    -> tag and digest both kept */
#ifndef IB_REF_H
#define IB_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct ib_ref {
	char *domain; /* "docker.io", "localhost:5000", "registry.example.com" */
	char *path;   /* "library/alpine", "team/app" */
	char *tag;    /* "latest" when neither tag nor digest was given; NULL
			 when only a digest was given */
	char *digest; /* "sha256:..." or NULL */
} ib_ref;

/* Parse and normalise s.  Invalid input (upper case in the path, empty
 * components, bad tag, bad digest, over 255 chars for the name) gives
 * IB_EINVALID with a message naming s.  *out is owned by the caller. */
int ib_ref_parse(ib_ref **out, const char *s, ib_error **err);
void ib_ref_free(ib_ref *ref);

/* Full normalised form: "docker.io/library/alpine:latest",
 * "host/x:t@sha256:..." .  Caller frees. */
char *ib_ref_string(const ib_ref *ref);
/* Familiar short form, as docker prints it: "alpine:latest",
 * "team/app:1.4" for docker.io, full form elsewhere.  "docker.io/" is
 * dropped only when the rest cannot be read as naming another registry
 * (its first component has no '.' or ':' and is not "localhost"), so the
 * short form always parses back to the same reference. Caller frees. */
char *ib_ref_familiar(const ib_ref *ref);
/* The same without tag or digest: "alpine", "team/app", "quay.io/x/y".
 * Caller frees. */
char *ib_ref_familiar_name(const ib_ref *ref);
/* "domain/path" without tag or digest. Caller frees. */
char *ib_ref_name(const ib_ref *ref);
/* Host to connect to: "registry-1.docker.io" for docker.io, else domain. */
const char *ib_ref_registry_host(const ib_ref *ref);
/* True for localhost, 127.0.0.0/8 and [::1] domains (with or without a port). */
bool ib_ref_is_loopback(const char *domain);

/* Shorten a normalised name string for display ("docker.io/library/x:t" ->
 * "x:t").  Returns a new string; input that does not parse is copied. */
char *ib_ref_familiarize(const char *normalized);

/* Whether the user wrote s without a registry: its first component (when
 * there is a "/") has no ".", ":" or upper case and is not "localhost".
 * "debian:bookworm" and "team/app" are short; "localhost/x", "quay.io/x"
 * are not. */
bool ib_ref_is_short(const char *s);
/* Whether the short name short_name (as the user wrote it) names the
 * image full under some registry (podman's short-name rule): same path
 * ("debian" also matching "library/debian"), same tag and digest. */
bool ib_ref_short_matches(const char *short_name, const char *full);
/* Edit distance (insertions, deletions, substitutions, swaps of two
 * neighbours) between a and b, for "similar names" hints. */
size_t ib_ref_edit_distance(const char *a, const char *b);

#endif
