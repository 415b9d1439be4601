/* Registry configuration from the files users already have:
 *
 *   registries.conf (containers-registries.conf(5), version 2 and the
 *   deprecated version 1 tables): the first of $IMGBUILD_REGISTRIES_CONF,
 *   $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf,
 *   /etc/containers/registries.conf; then the drop-ins *.conf of
 *   /etc/containers/registries.conf.d (or $IMGBUILD_REGISTRIES_CONF_DIR)
 *   and of ~/.config/containers/registries.conf.d, in name order.  A
 *   drop-in's [[registry]] replaces an earlier one with the same prefix,
 *   its unqualified-search-registries replaces the earlier list.
 *
 *   daemon.json ($IMGBUILD_DOCKER_DAEMON_JSON, else /etc/docker/daemon.json):
 *   insecure-registries (host[:port] names and CIDRs) and registry-mirrors
 *   (mirrors of docker.io).
 *
 *   certs.d: /etc/containers/certs.d/HOST[:PORT], /etc/docker/certs.d/...,
 *   ~/.config/containers/certs.d/... (or the directories listed in
 *   $IMGBUILD_CERTS_D, separated by ':'): *.crt are CAs for that registry
 *   only, a *.cert with the *.key of the same name a client certificate.
 *
 * Missing files are no configuration; unreadable or malformed ones are
 * errors naming FILE:LINE. */
#ifndef IB_REGCONF_H
#define IB_REGCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "error.h"

typedef struct ib_regconf_mirror {
	char *location; /* "host[:port][/path]" */
	bool insecure;
} ib_regconf_mirror;

typedef struct ib_regconf_registry {
	char *prefix;	/* "example.com/foo", "*.example.com" */
	char *location; /* "internal:5000/bar"; NULL for wildcard prefixes */
	bool wildcard, insecure, blocked, mirror_by_digest_only;
	ib_regconf_mirror *mirrors;
	size_t n_mirrors;
	char *source; /* "FILE:LINE" of its table */
} ib_regconf_registry;

typedef struct ib_regconf_cidr {
	int family;
	unsigned char addr[16];
	int bits;
} ib_regconf_cidr;

typedef struct ib_regconf {
	ib_regconf_registry *regs;
	size_t n_regs;
	char **search; /* unqualified-search-registries; NULL = not configured */
	char *search_source;
	/* daemon.json */
	char *daemon_json;
	char **insecure_names; /* host[:port] */
	ib_regconf_cidr *cidrs;
	size_t n_cidrs;
	ib_regconf_mirror *hub_mirrors; /* registry-mirrors, for docker.io */
	size_t n_hub_mirrors;
	char **files; /* what was read, in order */
} ib_regconf;

/* Load from the standard places (above). */
int ib_regconf_load(ib_regconf **out, ib_error **err);
/* Load from these files (any may be NULL = none).  dropin_dirs: NULL or a
 * NULL-terminated list of directories. */
int ib_regconf_load_from(ib_regconf **out, const char *conf, const char *const *dropin_dirs,
			 const char *daemon_json, ib_error **err);
void ib_regconf_free(ib_regconf *c);

/* The [[registry]] whose prefix matches name ("host[:port][/path]") the
 * longest (an exact prefix beats a wildcard of the same length); NULL
 * when none does. */
const ib_regconf_registry *ib_regconf_find(const ib_regconf *c, const char *name);

/* One place to fetch a repository from. */
typedef struct ib_regconf_endpoint {
	char *domain; /* host[:port] */
	char *path;   /* repository path on it */
	bool insecure;
	bool mirror;
	bool digest_only; /* a mirror for pulls by digest only */
} ib_regconf_endpoint;

/* Where the repository domain/path lives: for a pull the mirrors (unless
 * mirror-by-digest-only and !by_digest; with by_digest those mirrors are
 * marked digest_only) and then the location; for a push
 * only the location.  A blocked registry is an error naming the file. */
int ib_regconf_endpoints(const ib_regconf *c, const char *domain, const char *path, bool pull,
			 bool by_digest, ib_regconf_endpoint **out, size_t *n_out, ib_error **err);
void ib_regconf_endpoints_free(ib_regconf_endpoint *e, size_t n);
/* Blocked by a [[registry]] matching name: IB_ERROR naming the file. */
int ib_regconf_check_blocked(const ib_regconf *c, const char *name, ib_error **err);

/* Insecure by name: a matching [[registry]] or mirror marked insecure, or
 * a daemon.json insecure-registries name. */
bool ib_regconf_insecure_name(const ib_regconf *c, const char *domain);
/* An address inside one of daemon.json's insecure CIDRs. */
bool ib_regconf_insecure_addr(const ib_regconf *c, const struct sockaddr *sa);

/* certs.d for domain ("host[:port]"): *ca_files = the *.crt files (a
 * NULL-terminated list, possibly empty), *cert / *key = the first client
 * pair or NULL.  Caller frees. */
int ib_regconf_certs(const char *domain, char ***ca_files, char **cert, char **key, ib_error **err);

/* The domain part of an unqualified reference ("app:1" or "team/app"):
 * true when s names no registry (its first component has no '.' or ':'
 * and is not "localhost"). */
bool ib_regconf_unqualified(const char *s);

#endif
