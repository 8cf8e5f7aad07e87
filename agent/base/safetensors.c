/* safetensors reader and writer.
 *
 * Rules the reader enforces, in order (a file breaking one is refused with a
 * message naming the file, the tensor where there is one, and the rule):
 *  1. The file holds at least the 8-byte little-endian header length N.
 *  2. N <= EL_SAFETENSORS_HEADER_MAX and 8 + N <= file size.
 *  3. The header is one JSON object with no duplicate keys.
 *  4. "__metadata__", when present, is an object of string values.
 *  5. Every other key is a non-empty tensor name whose value is an object with
 *     exactly "dtype", "shape" and "data_offsets".
 *  6. dtype is F32, F16 or BF16 (anything else is refused, not skipped).
 *  7. shape is an array of at most EL_SAFETENSORS_MAX_DIMS integers >= 0 whose
 *     product times the element size does not overflow.
 *  8. data_offsets is [begin, end] with 0 <= begin <= end, and
 *     end - begin == product(shape) * element size.
 *  9. Taken in begin order the tensors tile the data exactly: the first
 *     begins at 0, each begins where the previous ends, the last ends at the
 *     end of the file (no gap, no overlap, nothing past EOF, no trailing
 *     bytes).
 * The writer follows the Python library (safetensors 0.4, Rust core): tensors
 * sorted by (dtype, name) and laid out contiguously in that order, header =
 * compact JSON with "__metadata__" first, then the tensors in offset order,
 * each as {"dtype","shape","data_offsets"}, padded with spaces to a multiple
 * of 8 bytes. All our tensors are F32, so the order is the name order.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "fs.h"
#include "json.h"

struct el_safetensors {
    void *map;              /* mmap'd file, NULL when parsing a borrowed buffer */
    size_t map_len;
    json_t *header;         /* owns the tensor names and metadata strings */
    json_t *meta;           /* borrowed from header, may be NULL */
    size_t count;
    el_st_tensor *tensors;  /* sorted by data offset */
};

size_t el_st_dtype_size(el_st_dtype dtype)
{
    return dtype == EL_ST_F32 ? 4 : 2;
}

const char *el_st_dtype_name(el_st_dtype dtype)
{
    switch (dtype) {
    case EL_ST_F32: return "F32";
    case EL_ST_F16: return "F16";
    default: return "BF16";
    }
}

static int parse_dtype(const char *s, el_st_dtype *out)
{
    if (!strcmp(s, "F32"))
        *out = EL_ST_F32;
    else if (!strcmp(s, "F16"))
        *out = EL_ST_F16;
    else if (!strcmp(s, "BF16"))
        *out = EL_ST_BF16;
    else
        return -1;
    return 0;
}

/* Offsets of the tensors, for sorting without losing the JSON order. */
typedef struct span {
    uint64_t begin, end;
    size_t index;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int read_tensor(const char *what, const char *name, json_t *val,
                       el_st_tensor *t, span *sp, el_error *err)
{
    if (!json_is_object(val))
        return el_error_set(err, EL_EINPUT, "%s: tensor \"%s\": entry is not an object (rule 5)",
                            what, name);
    const char *key;
    json_t *field;
    json_object_foreach(val, key, field) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return el_error_set(err, EL_EINPUT,
                                "%s: tensor \"%s\": unknown field \"%s\" (rule 5)",
                                what, name, key);
    }
    json_t *dt = json_object_get(val, "dtype");
    json_t *shape = json_object_get(val, "shape");
    json_t *offs = json_object_get(val, "data_offsets");
    if (!dt || !shape || !offs)
        return el_error_set(err, EL_EINPUT,
                            "%s: tensor \"%s\": needs dtype, shape and data_offsets (rule 5)",
                            what, name);
    if (!json_is_string(dt) || parse_dtype(json_string_value(dt), &t->dtype))
        return el_error_set(err, EL_EINPUT,
                            "%s: tensor \"%s\": unsupported dtype %s%s%s (rule 6: F32, F16, BF16)",
                            what, name, json_is_string(dt) ? "\"" : "",
                            json_is_string(dt) ? json_string_value(dt) : "(not a string)",
                            json_is_string(dt) ? "\"" : "");
    if (!json_is_array(shape) || json_array_size(shape) > EL_SAFETENSORS_MAX_DIMS)
        return el_error_set(err, EL_EINPUT,
                            "%s: tensor \"%s\": shape must be an array of at most %d integers (rule 7)",
                            what, name, EL_SAFETENSORS_MAX_DIMS);
    size_t esize = el_st_dtype_size(t->dtype);
    uint64_t numel = 1;
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return el_error_set(err, EL_EINPUT,
                                "%s: tensor \"%s\": shape[%d] is not an integer >= 0 (rule 7)",
                                what, name, i);
        uint64_t dim = (uint64_t)json_integer_value(d);
        if (dim && numel > (UINT64_MAX / esize) / dim)
            return el_error_set(err, EL_EINPUT,
                                "%s: tensor \"%s\": shape overflows (rule 7)", what, name);
        numel *= dim;
        t->shape[i] = (int64_t)dim;
    }
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) ||
        !json_is_integer(json_array_get(offs, 1)) ||
        json_integer_value(json_array_get(offs, 0)) < 0 ||
        json_integer_value(json_array_get(offs, 1)) <
            json_integer_value(json_array_get(offs, 0)))
        return el_error_set(err, EL_EINPUT,
                            "%s: tensor \"%s\": data_offsets must be [begin, end] with 0 <= begin <= end (rule 8)",
                            what, name);
    sp->begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
    sp->end = (uint64_t)json_integer_value(json_array_get(offs, 1));
    if (sp->end - sp->begin != numel * esize)
        return el_error_set(err, EL_EINPUT,
                            "%s: tensor \"%s\": shape needs %llu bytes of %s but data_offsets span %llu (rule 8)",
                            what, name, (unsigned long long)(numel * esize),
                            el_st_dtype_name(t->dtype),
                            (unsigned long long)(sp->end - sp->begin));
    t->name = name;
    t->numel = (size_t)numel;
    t->nbytes = (size_t)(numel * esize);
    return 0;
}

int el_safetensors_parse(const uint8_t *buf, size_t len, const char *what,
                         el_safetensors **out, el_error *err)
{
    *out = NULL;
    if (len < 8)
        return el_error_set(err, EL_EINPUT,
                            "%s: %zu bytes is too short for the 8-byte header length (rule 1)",
                            what, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    if (n > EL_SAFETENSORS_HEADER_MAX)
        return el_error_set(err, EL_EINPUT,
                            "%s: header of %llu bytes is over the limit of %zu (rule 2)",
                            what, (unsigned long long)n, EL_SAFETENSORS_HEADER_MAX);
    if (n > len - 8)
        return el_error_set(err, EL_EINPUT,
                            "%s: header of %llu bytes runs past the end of the %zu-byte file (rule 2, truncated)",
                            what, (unsigned long long)n, len);
    el_safetensors *st = el_calloc(1, sizeof *st);
    span *spans = NULL;
    int rc = 0;
    if (!st)
        return el_error_set(err, EL_ENOMEM, "%s: out of memory", what);
    el_error jerr;
    st->header = el_json_parse(buf + 8, (size_t)n, EL_SAFETENSORS_HEADER_MAX, what, &jerr);
    if (!st->header) {
        rc = el_error_set(err, EL_EINPUT, "%s (rule 3)", jerr.msg);
        goto fail;
    }
    if (!json_is_object(st->header)) {
        rc = el_error_set(err, EL_EINPUT, "%s: header is not a JSON object (rule 3)", what);
        goto fail;
    }
    size_t total = json_object_size(st->header);
    st->meta = json_object_get(st->header, "__metadata__");
    if (st->meta) {
        if (!json_is_object(st->meta)) {
            rc = el_error_set(err, EL_EINPUT, "%s: __metadata__ is not an object (rule 4)", what);
            goto fail;
        }
        const char *k;
        json_t *v;
        json_object_foreach(st->meta, k, v) {
            if (!json_is_string(v)) {
                rc = el_error_set(err, EL_EINPUT,
                                  "%s: __metadata__ \"%s\" is not a string (rule 4)", what, k);
                goto fail;
            }
        }
        total--;
    }
    st->count = total;
    st->tensors = el_calloc(total ? total : 1, sizeof *st->tensors);
    spans = el_calloc(total ? total : 1, sizeof *spans);
    if (!st->tensors || !spans) {
        rc = el_error_set(err, EL_ENOMEM, "%s: out of memory for %zu tensors", what, total);
        goto fail;
    }
    el_st_tensor *tmp = el_calloc(total ? total : 1, sizeof *tmp);
    if (!tmp) {
        rc = el_error_set(err, EL_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(st->header, key, val) {
        if (!strcmp(key, "__metadata__"))
            continue;
        if (!*key) {
            rc = el_error_set(err, EL_EINPUT, "%s: a tensor has an empty name (rule 5)", what);
            break;
        }
        rc = read_tensor(what, key, val, &tmp[i], &spans[i], err);
        if (rc)
            break;
        spans[i].index = i;
        i++;
    }
    if (rc) {
        el_free(tmp);
        goto fail;
    }
    qsort(spans, total, sizeof *spans, cmp_span);
    uint64_t data_len = len - 8 - n, at = 0;
    const uint8_t *data = buf + 8 + n;
    for (i = 0; i < total; i++) {
        el_st_tensor *t = &tmp[spans[i].index];
        if (spans[i].end > data_len) {
            rc = el_error_set(err, EL_EINPUT,
                              "%s: tensor \"%s\": data_offsets end %llu lies past the end of the %llu data bytes (rule 9)",
                              what, t->name, (unsigned long long)spans[i].end,
                              (unsigned long long)data_len);
            break;
        }
        if (spans[i].begin != at) {
            rc = el_error_set(err, EL_EINPUT,
                              "%s: tensor \"%s\": begins at %llu, expected %llu (rule 9: %s)",
                              what, t->name, (unsigned long long)spans[i].begin,
                              (unsigned long long)at,
                              spans[i].begin < at ? "overlap" : "gap");
            break;
        }
        at = spans[i].end;
        t->data = data + spans[i].begin;
        st->tensors[i] = *t;
    }
    el_free(tmp);
    if (!rc && at != data_len)
        rc = el_error_set(err, EL_EINPUT,
                          "%s: tensors end at %llu but the file holds %llu data bytes (rule 9: trailing bytes)",
                          what, (unsigned long long)at, (unsigned long long)data_len);
    if (rc)
        goto fail;
    el_free(spans);
    *out = st;
    return 0;
fail:
    el_free(spans);
    el_safetensors_close(st);
    return rc;
}

int el_safetensors_open(const char *path, el_safetensors **out, el_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return el_error_set(err, errno == ENOENT ? EL_ENOTFOUND : EL_EIO,
                            "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return el_error_set(err, EL_EINPUT, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return el_error_set(err, EL_EIO, "%s: mmap failed: %s", path, strerror(e));
        }
    }
    close(fd);
    static const uint8_t empty[1];
    int rc = el_safetensors_parse(map ? map : empty, len, path, out, err);
    if (rc) {
        if (map)
            munmap(map, len);
        return rc;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return 0;
}

void el_safetensors_close(el_safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    json_decref(st->header);
    el_free(st->tensors);
    el_free(st);
}

size_t el_safetensors_count(const el_safetensors *st)
{
    return st->count;
}

const el_st_tensor *el_safetensors_at(const el_safetensors *st, size_t i)
{
    return i < st->count ? &st->tensors[i] : NULL;
}

const el_st_tensor *el_safetensors_find(const el_safetensors *st, const char *name)
{
    for (size_t i = 0; i < st->count; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

const char *el_safetensors_meta(const el_safetensors *st, const char *key)
{
    if (!st->meta)
        return NULL;
    json_t *v = json_object_get(st->meta, key);
    return v ? json_string_value(v) : NULL;
}

static float half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {   /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void el_safetensors_to_f32(const el_st_tensor *t, float *dst)
{
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        if (t->dtype == EL_ST_F32) {
            uint32_t b = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            memcpy(&dst[i], &b, 4);
        } else {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            if (t->dtype == EL_ST_F16) {
                dst[i] = half_to_f32(h);
            } else {
                uint32_t b = (uint32_t)h << 16;
                memcpy(&dst[i], &b, 4);
            }
        }
    }
}

/* ---- writer ---- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = el_realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A JSON string as serde_json writes it: only '"', '\\' and control bytes
 * escaped, UTF-8 passed through. */
static void sb_json_string(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c == '\n') {
            sb_str(b, "\\n");
        } else if (c == '\t') {
            sb_str(b, "\\t");
        } else if (c == '\r') {
            sb_str(b, "\\r");
        } else if (c == '\b') {
            sb_str(b, "\\b");
        } else if (c == '\f') {
            sb_str(b, "\\f");
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_entry(const void *a, const void *b)
{
    const el_st_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

int el_safetensors_serialize(const el_st_entry *entries, size_t n,
                             const char *const *meta, size_t meta_n,
                             uint8_t **out, size_t *len, el_error *err)
{
    *out = NULL;
    *len = 0;
    const el_st_entry **order = el_calloc(n ? n : 1, sizeof *order);
    const char **metas = el_calloc(meta_n ? 2 * meta_n : 1, sizeof *metas);
    strbuf h = {0};
    int rc = 0;
    if (!order || !metas) {
        rc = el_error_set(err, EL_ENOMEM, "safetensors: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &entries[i];
    qsort(order, n, sizeof *order, cmp_entry);
    for (size_t i = 0; i < n; i++) {
        if (!order[i]->name[0] || !strcmp(order[i]->name, "__metadata__") ||
            (i && !strcmp(order[i]->name, order[i - 1]->name))) {
            rc = el_error_set(err, EL_EINPUT,
                              "safetensors: tensor name \"%s\" is empty, reserved or repeated",
                              order[i]->name);
            goto done;
        }
        if (order[i]->ndim < 0 || order[i]->ndim > EL_SAFETENSORS_MAX_DIMS) {
            rc = el_error_set(err, EL_EINPUT, "safetensors: tensor \"%s\" has %d dims",
                              order[i]->name, order[i]->ndim);
            goto done;
        }
    }
    sb_str(&h, "{");
    if (meta_n) {
        memcpy(metas, meta, 2 * meta_n * sizeof *metas);
        qsort(metas, meta_n, 2 * sizeof *metas, cmp_meta);
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < meta_n; i++) {
            if (i)
                sb_str(&h, ",");
            sb_json_string(&h, metas[2 * i]);
            sb_str(&h, ":");
            sb_json_string(&h, metas[2 * i + 1]);
        }
        sb_str(&h, "}");
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const el_st_entry *e = order[i];
        uint64_t numel = 1;
        char num[64];
        if (i || meta_n)
            sb_str(&h, ",");
        sb_json_string(&h, e->name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0) {
                rc = el_error_set(err, EL_EINPUT, "safetensors: tensor \"%s\" has a negative dim",
                                  e->name);
                goto done;
            }
            numel *= (uint64_t)e->shape[d];
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}",
                 (unsigned long long)at, (unsigned long long)(at + 4 * numel));
        sb_str(&h, num);
        at += 4 * numel;
    }
    sb_str(&h, "}");
    while (!h.oom && h.len % 8)
        sb_str(&h, " ");
    if (h.oom) {
        rc = el_error_set(err, EL_ENOMEM, "safetensors: out of memory for the header");
        goto done;
    }
    size_t total = 8 + h.len + (size_t)at;
    uint8_t *buf = el_malloc(total);
    if (!buf) {
        rc = el_error_set(err, EL_ENOMEM, "safetensors: out of memory for %zu bytes", total);
        goto done;
    }
    uint64_t hl = h.len;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, h.p, h.len);
    uint8_t *p = buf + 8 + h.len;
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < order[i]->ndim; d++)
            numel *= (size_t)order[i]->shape[d];
        for (size_t j = 0; j < numel; j++) {
            uint32_t b;
            memcpy(&b, &order[i]->data[j], 4);
            p[0] = (uint8_t)b;
            p[1] = (uint8_t)(b >> 8);
            p[2] = (uint8_t)(b >> 16);
            p[3] = (uint8_t)(b >> 24);
            p += 4;
        }
    }
    *out = buf;
    *len = total;
done:
    el_free(h.p);
    el_free(order);
    el_free(metas);
    return rc;
}

int el_safetensors_write(const char *path, const el_st_entry *entries, size_t n,
                         const char *const *meta, size_t meta_n, el_error *err)
{
    uint8_t *buf;
    size_t len;
    int rc = el_safetensors_serialize(entries, n, meta, meta_n, &buf, &len, err);
    if (rc)
        return el_error_prefix(err, "%s", path);
    rc = el_fs_write_atomic(path, buf, len, 0644, err);
    el_free(buf);
    return rc;
}
