/* A reader for the TOML (v1.0) that configuration files such as
 * containers-registries.conf(5) use: tables, arrays of tables, dotted and
 * quoted keys, basic / literal / multi-line strings, integers (decimal,
 * hex, octal, binary), floats, booleans, arrays and inline tables.  Dates
 * and times are rejected.  The whole document becomes a tree the caller
 * queries by key; keys a caller does not ask for are simply never looked
 * at.  Malformed input gives IB_EINVALID with "FILE:LINE: message". */
#ifndef IB_TOML_H
#define IB_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum ib_toml_type {
	IB_TOML_TABLE,
	IB_TOML_ARRAY,
	IB_TOML_STRING,
	IB_TOML_INTEGER,
	IB_TOML_FLOAT,
	IB_TOML_BOOL,
} ib_toml_type;

typedef struct ib_toml ib_toml;

/* Parse len bytes of text; file names the input in messages.  *out is the
 * root table (free with ib_toml_free). */
int ib_toml_parse(ib_toml **out, const char *text, size_t len, const char *file, ib_error **err);
void ib_toml_free(ib_toml *t);

ib_toml_type ib_toml_type_of(const ib_toml *t);
/* The line the value (or the table header) starts on, 1-based. */
int ib_toml_line(const ib_toml *t);
/* The value of key in table t; NULL when t is not a table or has no such
 * key. */
const ib_toml *ib_toml_get(const ib_toml *t, const char *key);
/* Entries of an array or a table (0 for scalars), and entry i (NULL past
 * the end).  key_out (may be NULL) gets the key of a table entry. */
size_t ib_toml_len(const ib_toml *t);
const ib_toml *ib_toml_at(const ib_toml *t, size_t i, const char **key_out);
/* Scalars: NULL / false / 0 when t is NULL or of another type. */
const char *ib_toml_string(const ib_toml *t);
bool ib_toml_bool(const ib_toml *t);
int64_t ib_toml_int(const ib_toml *t);

#endif
