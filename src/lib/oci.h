/* OCI / Docker schema2 data structures: descriptors, manifests, indexes and
 * image configs, read and written with jansson.  Parsing validates every
 * field the rest of imgbuild relies on (digests, sizes, media types). */
#ifndef IB_OCI_H
#define IB_OCI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"

/* The PATH docker and BuildKit give an image (and a process) whose config
 * sets none. */
#define IB_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define IB_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IB_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IB_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define IB_MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define IB_MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define IB_MT_OCI_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define IB_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define IB_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IB_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define IB_MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define IB_MT_DOCKER_FOREIGN_LAYER "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#define IB_ANNOT_REF_NAME "org.opencontainers.image.ref.name"

/* Hard caps on JSON documents we read from disk or the network. */
#define IB_MAX_MANIFEST_SIZE (4u << 20)
#define IB_MAX_CONFIG_SIZE (8u << 20)

typedef enum { IB_COMP_NONE, IB_COMP_GZIP, IB_COMP_ZSTD } ib_compression;

typedef struct ib_platform {
	char *os;	    /* "linux" */
	char *architecture; /* "amd64" */
	char *variant;	    /* may be NULL */
} ib_platform;

typedef struct ib_descriptor {
	char *media_type;
	char digest[IB_DIGEST_BUFLEN];
	int64_t size;
	ib_platform platform; /* fields NULL when absent */
	json_t *annotations;  /* object or NULL; owned */
	char **urls;	      /* NULL-terminated or NULL (foreign layers) */
} ib_descriptor;

typedef struct ib_manifest {
	char *media_type; /* IB_MT_OCI_MANIFEST or IB_MT_DOCKER_MANIFEST */
	ib_descriptor config;
	ib_descriptor *layers;
	size_t n_layers;
	json_t *annotations; /* may be NULL */
} ib_manifest;

typedef struct ib_index {
	char *media_type; /* IB_MT_OCI_INDEX or IB_MT_DOCKER_LIST (may be NULL in index.json) */
	ib_descriptor *manifests;
	size_t n_manifests;
	json_t *annotations;
} ib_index;

/* Parse a manifest.  Rejects a body that is not a schemaVersion 2 image
 * manifest, or whose descriptors have bad digests / negative sizes. */
int ib_manifest_parse(ib_manifest **out, const char *buf, size_t len, ib_error **err);
/* Serialise compactly with sorted keys (deterministic bytes). Caller frees. */
char *ib_manifest_serialize(const ib_manifest *m, size_t *len_out);
void ib_manifest_free(ib_manifest *m);

int ib_index_parse(ib_index **out, const char *buf, size_t len, ib_error **err);
char *ib_index_serialize(const ib_index *idx, size_t *len_out);
void ib_index_free(ib_index *idx);

/* Look at a JSON body's "mediaType" (or structure, when absent) and tell
 * whether it is an index/list (true) or a single manifest (false). */
int ib_oci_is_index(const char *buf, size_t len, bool *is_index, ib_error **err);

/* Descriptor helpers. */
void ib_descriptor_copy(ib_descriptor *dst, const ib_descriptor *src);
void ib_descriptor_clear(ib_descriptor *d);
json_t *ib_descriptor_to_json(const ib_descriptor *d);
int ib_descriptor_from_json(ib_descriptor *out, json_t *j, ib_error **err);

/* Layer media type for a compression in OCI or Docker flavour. */
const char *ib_layer_media_type(ib_compression c, bool docker);
/* Compression implied by a layer media type; IB_EINVALID for unknown ones. */
int ib_layer_compression(const char *media_type, ib_compression *out, ib_error **err);

/* Image config (the JSON document), kept as json_t since the builder edits
 * many fields.  ib_config_parse validates: an object with "rootfs" of type
 * "layers" whose "diff_ids" are valid digests. */
int ib_config_parse(json_t **out, const char *buf, size_t len, ib_error **err);
/* Deterministic serialisation (sorted keys, compact). Caller frees. */
char *ib_config_serialize(json_t *config, size_t *len_out);
/* A new config without layers: platform os/arch[/variant] (variant may be
 * NULL), "config": {}, rootfs {type "layers", diff_ids []}, "history": [];
 * with created non-NULL also "created". */
json_t *ib_config_new(const char *os, const char *arch, const char *variant, const char *created);
/* Append a history entry {created, created_by} (both may be NULL) and, for
 * a layer (diff_id non-NULL), its diff_id; else the entry is an
 * "empty_layer". */
void ib_config_add_history(json_t *config, const char *diff_id, const char *created,
			   const char *created_by);
/* Number of diff_ids and the i-th one (borrowed). */
size_t ib_config_n_diff_ids(json_t *config);
const char *ib_config_diff_id(json_t *config, size_t i);

/* Canonical JSON dump used for anything hashed: sorted keys, compact. */
char *ib_json_dump_canonical(json_t *j, size_t *len_out);

#endif
