/* Go-template-style --format strings (the subset docker and podman users
 * script with) evaluated against a JSON value:
 *
 *   {{.Field.Sub}}                 a field path (exact key, else the one
 *                                  key equal ignoring case); "." is the value
 *   {{json .Config}}               compact JSON
 *   {{index .Config.Labels "k"}}   a key of an object, an element of an array
 *   {{join .Config.Cmd " "}}       the strings of an array joined
 *   {{upper .X}} {{lower .X}} {{len .X}}
 *   {{.Config.Env | json}}         a pipeline: the value is the last argument
 *
 * Values print as Go prints them: strings as they are, arrays as
 * "[a b]", objects as "map[k:v]", a missing field as "<no value>".
 * Escapes "\n" and "\t" in the text outside actions are turned into a
 * newline and a tab, as docker's --format does. */
#ifndef IB_GOTMPL_H
#define IB_GOTMPL_H

#include <jansson.h>

#include "error.h"

/* Render tmpl against data into *out (caller frees).  A malformed template
 * or an unknown function is IB_EUSAGE with a message naming it. */
int ib_gotmpl_render(const char *tmpl, json_t *data, char **out, ib_error **err);

#endif
