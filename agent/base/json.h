/* JSON helpers over jansson.
 *
 * Why jansson (and not cJSON): it parses from a buffer with an explicit
 * length (json_loadb) so untrusted bytes need no NUL terminator, it can
 * refuse duplicate object keys (JSON_REJECT_DUPLICATES) which manifests and
 * safetensors headers must, and its errors carry line and column.
 */
#ifndef EL_BASE_JSON_H
#define EL_BASE_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Parses LEN bytes of BUF as one JSON value, refusing more than MAX bytes,
 * duplicate keys and trailing garbage. WHAT names the source in messages.
 * Returns a new reference (caller json_decref's) or NULL with ERR set
 * (EL_EINPUT). */
json_t *el_json_parse(const void *buf, size_t len, size_t max,
                      const char *what, el_error *err);

/* Field readers. OBJ must be an object; KEY is looked up; WHAT names the
 * document in messages. Each returns 0 and stores the value, or EL_EINPUT with
 * ERR naming the key when it is missing (unless the *_opt variant is used, which
 * leaves OUT untouched and returns 0) or has the wrong type or range.
 * Strings are borrowed from OBJ. */
int el_json_get_str(const json_t *obj, const char *key, const char **out,
                    const char *what, el_error *err);
int el_json_get_str_opt(const json_t *obj, const char *key, const char **out,
                        const char *what, el_error *err);
int el_json_get_i64(const json_t *obj, const char *key, int64_t min,
                    int64_t max, int64_t *out, const char *what, el_error *err);
int el_json_get_i64_opt(const json_t *obj, const char *key, int64_t min,
                        int64_t max, int64_t *out, const char *what,
                        el_error *err);
int el_json_get_f64(const json_t *obj, const char *key, double *out,
                    const char *what, el_error *err);
int el_json_get_f64_opt(const json_t *obj, const char *key, double *out,
                        const char *what, el_error *err);
int el_json_get_bool_opt(const json_t *obj, const char *key, int *out,
                         const char *what, el_error *err);

/* Serializes VALUE compactly with sorted keys into a new NUL-terminated
 * string (caller frees with free()). NULL when out of memory. */
char *el_json_dump_sorted(const json_t *value);

#endif
