/* Hand-off: deliver stored images to the local container engine, so that
 * `docker run` / `podman run` find them with no other command.
 *
 * docker: the docker-archive stream (ib_archive_save_fd) is POSTed to the
 * engine's /images/load endpoint over its API socket ($DOCKER_HOST,
 * unix:// or tcp://, default unix:///var/run/docker.sock), written by a
 * second thread into a pipe while curl sends it: nothing is buffered whole.
 * podman: the same stream on the standard input of `podman load`, which
 * writes into containers-storage (podman's own configuration applies:
 * storage.conf, CONTAINERS_STORAGE_CONF, rootless or not).
 *
 * Neither engine has an API to receive only the layers it lacks: the
 * whole archive is sent, and the engine skips the layers it already has
 * on its side. */
#ifndef IB_HANDOFF_H
#define IB_HANDOFF_H

#include <stddef.h>
#include <stdio.h>

#include "error.h"
#include "store.h"

typedef enum {
	IB_HANDOFF_AUTO = 0, /* docker when its socket answers, else podman when installed */
	IB_HANDOFF_DOCKER,
	IB_HANDOFF_PODMAN,
} ib_handoff_engine;

typedef struct ib_handoff_options {
	ib_handoff_engine engine;
	/* The engine's report ("Loaded image: app:latest") goes here; NULL
	 * discards it. */
	FILE *out;
} ib_handoff_options;

#define IB_HANDOFF_OPTIONS_INIT                                                                    \
	{                                                                                          \
		0                                                                                  \
	}

/* "docker", "podman" or "auto" (also ""). IB_EINVALID otherwise. */
int ib_handoff_engine_parse(const char *s, ib_handoff_engine *out, ib_error **err);
const char *ib_handoff_engine_name(ib_handoff_engine e);

/* Where the docker API listens, from a DOCKER_HOST value (NULL or "" for
 * the default): *socket_out is the unix socket path (NULL for tcp://) and
 * *base_out the URL prefix of the API ("http://localhost" on a socket).
 * ssh:// and other schemes are IB_EINVALID.  Caller frees both. */
int ib_handoff_docker_endpoint(const char *docker_host, char **socket_out, char **base_out,
			       ib_error **err);

/* The body of a docker /images/load answer: JSON messages one after the
 * other.  Each "stream" text is copied to out (may be NULL); a message
 * with "error" (or "errorDetail") is an IB_ERROR carrying its text. */
int ib_handoff_docker_messages(const char *body, size_t len, FILE *out, ib_error **err);

/* Deliver the images refs[0..n_refs) (as ib_archive_save takes them; tags
 * are kept) to the engine o->engine.  *used (may be NULL) tells which
 * engine received them. */
int ib_handoff_load(ib_store *s, char *const *refs, size_t n_refs, const ib_handoff_options *o,
		    ib_handoff_engine *used, ib_error **err);

/* Which local engine holds the image ref (full name): "docker" when its
 * API answers GET /images/REF/json, else "podman" when `podman image
 * exists REF` says so, else NULL.  For "how to bring it over" hints. */
const char *ib_handoff_image_holder(const char *ref);

#endif
