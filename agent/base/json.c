#include "json.h"

#include <math.h>
#include <string.h>

json_t *el_json_parse(const void *buf, size_t len, size_t max,
                      const char *what, el_error *err)
{
    if (len > max) {
        el_error_set(err, EL_EINPUT, "%s: JSON is %zu bytes, limit is %zu",
                     what, len, max);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        el_error_set(err, EL_EINPUT, "%s: invalid JSON at line %d column %d: %s",
                     what, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    return root;
}

static json_t *field(const json_t *obj, const char *key, int required,
                     const char *what, el_error *err, int *rc)
{
    *rc = 0;
    if (!json_is_object(obj)) {
        *rc = el_error_set(err, EL_EINPUT, "%s: expected a JSON object", what);
        return NULL;
    }
    json_t *v = json_object_get(obj, key);
    if (!v && required)
        *rc = el_error_set(err, EL_EINPUT, "%s: missing field \"%s\"", what, key);
    return v;
}

static int get_str(const json_t *obj, const char *key, const char **out,
                   const char *what, el_error *err, int required)
{
    int rc;
    json_t *v = field(obj, key, required, what, err, &rc);
    if (!v)
        return rc;
    if (!json_is_string(v))
        return el_error_set(err, EL_EINPUT, "%s: field \"%s\" must be a string",
                            what, key);
    *out = json_string_value(v);
    return 0;
}

int el_json_get_str(const json_t *obj, const char *key, const char **out,
                    const char *what, el_error *err)
{
    return get_str(obj, key, out, what, err, 1);
}

int el_json_get_str_opt(const json_t *obj, const char *key, const char **out,
                        const char *what, el_error *err)
{
    return get_str(obj, key, out, what, err, 0);
}

static int get_i64(const json_t *obj, const char *key, int64_t min, int64_t max,
                   int64_t *out, const char *what, el_error *err, int required)
{
    int rc;
    json_t *v = field(obj, key, required, what, err, &rc);
    if (!v)
        return rc;
    if (!json_is_integer(v))
        return el_error_set(err, EL_EINPUT, "%s: field \"%s\" must be an integer",
                            what, key);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return el_error_set(err, EL_EINPUT,
                            "%s: field \"%s\" = %lld is outside [%lld, %lld]",
                            what, key, (long long)x, (long long)min,
                            (long long)max);
    *out = x;
    return 0;
}

int el_json_get_i64(const json_t *obj, const char *key, int64_t min,
                    int64_t max, int64_t *out, const char *what, el_error *err)
{
    return get_i64(obj, key, min, max, out, what, err, 1);
}

int el_json_get_i64_opt(const json_t *obj, const char *key, int64_t min,
                        int64_t max, int64_t *out, const char *what,
                        el_error *err)
{
    return get_i64(obj, key, min, max, out, what, err, 0);
}

static int get_f64(const json_t *obj, const char *key, double *out,
                   const char *what, el_error *err, int required)
{
    int rc;
    json_t *v = field(obj, key, required, what, err, &rc);
    if (!v)
        return rc;
    if (!json_is_number(v))
        return el_error_set(err, EL_EINPUT, "%s: field \"%s\" must be a number",
                            what, key);
    double x = json_number_value(v);
    if (!isfinite(x))
        return el_error_set(err, EL_EINPUT, "%s: field \"%s\" is not finite",
                            what, key);
    *out = x;
    return 0;
}

int el_json_get_f64(const json_t *obj, const char *key, double *out,
                    const char *what, el_error *err)
{
    return get_f64(obj, key, out, what, err, 1);
}

int el_json_get_f64_opt(const json_t *obj, const char *key, double *out,
                        const char *what, el_error *err)
{
    return get_f64(obj, key, out, what, err, 0);
}

int el_json_get_bool_opt(const json_t *obj, const char *key, int *out,
                         const char *what, el_error *err)
{
    int rc;
    json_t *v = field(obj, key, 0, what, err, &rc);
    if (!v)
        return rc;
    if (!json_is_boolean(v))
        return el_error_set(err, EL_EINPUT, "%s: field \"%s\" must be true or false",
                            what, key);
    *out = json_is_true(v);
    return 0;
}

char *el_json_dump_sorted(const json_t *value)
{
    return json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);
}
