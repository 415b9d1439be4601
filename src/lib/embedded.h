/* Lua modules from the project's lua/ directory, compiled into the binary
 * by cmake/embed.cmake so that an installed imgbuild needs no data files. */
#ifndef IB_EMBEDDED_H
#define IB_EMBEDDED_H

#include <stddef.h>

typedef struct ib_embedded_file {
	const char *name; /* module name: file name without ".lua" */
	const char *data;
	size_t len;
} ib_embedded_file;

/* Terminated by an entry whose name is NULL. */
extern const ib_embedded_file ib_embedded_lua[];

#endif
