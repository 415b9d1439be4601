/* Rootless mode: the user namespace imgbuild works in when it is not root
 * of the initial user namespace.
 *
 * A plain user's imgbuild re-enters, first thing in main, a user namespace
 * where it is uid 0 and the ids of /etc/subuid and /etc/subgid (set by
 * newuidmap/newgidmap) stand for container ids 1..N, so that unpacking,
 * run steps and layer writing see the image's own owners.  Without
 * subordinate ranges the namespace maps only the caller (to 0).
 *
 * One decision about the overlay xattr namespace follows from where we run:
 * trusted.overlay.* in the initial user namespace, user.overlay.* (and the
 * "userxattr" mount option) anywhere else. */
#ifndef IB_USERNS_H
#define IB_USERNS_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

/* True when this process is in the initial user namespace (its uid_map is
 * the identity over all ids).  Read once. */
bool ib_userns_is_initial(void);

/* Rootless: not in the initial user namespace, or not root there. */
bool ib_userns_rootless(void);

/* /proc/self/setgroups says "deny" (a namespace mapping one id). */
bool ib_userns_setgroups_denied(void);

/* The one decision: overlay markers in user.overlay.* and overlay mounts
 * with "userxattr" (rootless, or no CAP_SYS_ADMIN to write trusted.*),
 * from the calling process's ids and capabilities. */
bool ib_overlay_userxattr(void);
/* "trusted.overlay." or "user.overlay." (see above). */
const char *ib_overlay_xattr_prefix(void);
/* The opaque-directory xattr of that namespace. */
const char *ib_overlay_opaque_xattr(void);

/* A subordinate id range. */
typedef struct ib_subid_range {
	unsigned long start;
	unsigned long count;
} ib_subid_range;

/* Parse an /etc/subuid-style file's text for the entries of `name` or of
 * the numeric `id`; sums the usable ranges into out (at most cap).  Returns
 * the number of ranges found (0 when none). */
size_t ib_subid_parse(const char *text, const char *name, unsigned long id, ib_subid_range *out,
		      size_t cap);

/* A host id not mapped in the current user namespace (the EINVAL of
 * chown/setuid there): a hint naming /etc/subuid, or "" when mapped. */
const char *ib_userns_unmapped_hint(void);

/* The early hook of main: when rootless and not yet in a namespace of our
 * own, fork; the child unshares a user namespace that the parent maps
 * (newuidmap/newgidmap with the subordinate ranges, or the caller alone)
 * and returns 0 to carry on as uid 0 there; the parent waits and exits with
 * the child's status.  Returns 0 (carry on) or -1 with err (nothing was
 * touched). */
int ib_userns_enter(ib_error **err);

#endif
