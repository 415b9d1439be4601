/* /etc/passwd and /etc/group entries, parsed from a buffer the caller
 * read: nothing here opens a file, so the builder (reading an image's
 * layers) and the sandbox (reading the container's root) apply one set of
 * rules. */
#ifndef IB_PASSWD_H
#define IB_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Find the first entry named name in buf (len bytes, no terminator
 * needed).  With gid non-NULL buf is a passwd file ("name:pw:uid:gid:..."),
 * *id gets the uid and *gid the gid; with gid NULL it is a group file
 * ("name:pw:gid:..."), *id gets the gid.  Lines may be of any length;
 * lines with too few fields or an id that is not a number below
 * UINT32_MAX are skipped.  False (outputs untouched) when not found. */
bool ib_passwd_find(const char *buf, size_t len, const char *name, uint32_t *id, uint32_t *gid);

#endif
