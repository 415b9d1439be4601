/* /etc/passwd and /etc/group entries, parsed from a buffer the caller
 * read: nothing here opens a file or allocates, so the builder (reading an
 * image's layers) and the sandbox (reading the container's root, after
 * fork) apply one set of rules.
 *
 * The rules: lines end at '\n' (or at the end of the buffer) and may be of
 * any length; fields are split at ':'.  A passwd line needs at least
 * name:password:uid:gid (home is the sixth field, empty when missing), a
 * group line name:password:gid (members, comma-separated, the fourth).  An
 * id is a decimal number below UINT32_MAX ((uid_t)-1 means "no id"); a line
 * with too few fields or a bad id is skipped.  The first matching line
 * wins. */
#ifndef IB_PASSWD_H
#define IB_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A passwd entry; name and home point into the caller's buffer and are not
 * NUL-terminated. */
typedef struct ib_passwd_entry {
	const char *name;
	size_t name_len;
	uint32_t uid, gid;
	const char *home;
	size_t home_len; /* 0: none */
} ib_passwd_entry;

/* The passwd entry named name / with uid in buf (len bytes, no terminator
 * needed).  False (out untouched) when there is none. */
bool ib_passwd_by_name(const char *buf, size_t len, const char *name, ib_passwd_entry *out);
bool ib_passwd_by_uid(const char *buf, size_t len, uint32_t uid, ib_passwd_entry *out);

/* The gid of the group named name in buf, a group file. */
bool ib_group_by_name(const char *buf, size_t len, const char *name, uint32_t *gid);

/* Call fn with the gid of every group in buf, a group file, that lists
 * user (name_len bytes) as a member, in file order. */
void ib_group_each_membership(const char *buf, size_t len, const char *user, size_t user_len,
			      void (*fn)(uint32_t gid, void *payload), void *payload);

/* Find the first entry named name in buf.  With gid non-NULL buf is a
 * passwd file: *id gets the uid and *gid the gid (ib_passwd_by_name); with
 * gid NULL it is a group file and *id gets the gid (ib_group_by_name). */
bool ib_passwd_find(const char *buf, size_t len, const char *name, uint32_t *id, uint32_t *gid);

#endif
