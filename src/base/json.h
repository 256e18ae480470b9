/* A small JSON reader: parses a whole document into a tree of nodes held in one
 * allocation. Enough for safetensors headers, golden metadata and config files.
 * Strings are decoded (escapes, \uXXXX incl. surrogate pairs) to UTF-8. Numbers
 * keep their text so that integers up to 2^63 are read exactly. */
#ifndef LP_JSON_H
#define LP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { LP_JSON_NULL, LP_JSON_BOOL, LP_JSON_NUMBER, LP_JSON_STRING, LP_JSON_ARRAY, LP_JSON_OBJECT } lp_json_type;

typedef struct lp_json lp_json;
struct lp_json {
    lp_json_type type;
    int boolean;
    const char *str;    /* STRING: decoded text; NUMBER: its literal; OBJECT member: see key */
    size_t str_len;
    const char *key;    /* set on members of an object */
    size_t count;       /* ARRAY/OBJECT: number of children */
    lp_json *children;  /* ARRAY/OBJECT: the children in document order */
};

typedef struct lp_json_doc lp_json_doc;

/* Parses len bytes of text. what names the source in error messages.
 * Nesting deeper than 64 levels is refused. */
lp_status lp_json_parse(const char *text, size_t len, const char *what, lp_json_doc **out);
void lp_json_free(lp_json_doc *doc);
const lp_json *lp_json_root(const lp_json_doc *doc);

/* Object member by key, or NULL. */
const lp_json *lp_json_get(const lp_json *obj, const char *key);
/* Number conversions; return LP_ERR_FORMAT if the node is not a number that fits. */
lp_status lp_json_int64(const lp_json *n, int64_t *out);
lp_status lp_json_double(const lp_json *n, double *out);

#endif
