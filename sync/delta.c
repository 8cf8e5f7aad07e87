/* Adapter deltas: encode, decode, rebuild, digest.
 *
 * Container (all integers little-endian), version 1:
 *   "ELD1" | u32 format version (1) | u32 encoding (1 q8, 2 exact)
 *   | u32 tensor count | u64 body length | u64 compressed length
 *   | zstd frame of the body (its content size recorded in the frame)
 * Body, per tensor:
 *   u16 name length (1..256) | name | u8 ndim (1..4) | u64 dims[ndim] (>= 1)
 *   | data: q8:    rows = count / last dim; rows x f32 scale, then count x i8
 *           exact: count x 4 bytes, byte-shuffled: all bytes 0 of the LE
 *                  floats, then all bytes 1, 2, 3 (zstd finds the repeated
 *                  sign/exponent bytes).
 *
 * Invariants:
 *  1. Decoding checks magic, version, encoding, tensor count, body length and
 *     compressed length against the limits and the input before allocating;
 *     the zstd frame must declare exactly the body length, and the body must
 *     be consumed exactly.
 *  2. q8: scale = max|d| / 127 per row (fp32), q = round-half-even(d / scale)
 *     clamped to [-127, 127]; decoded d' = (float)q * scale, stored as float
 *     before the rebuild adds it, so every machine computes the same bits.
 *  3. exact: the delta's bits are carried unchanged.
 */
#include "delta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/alloc.h"
#include "base/sha256.h"

#define HEAD_LEN 32
/* Level 9: on LoRA deltas level 19 saved ~4% of the exact size for ~20x the
 * encode time (bench-delta, 5 MB adapter); q8 sizes were equal. */
#define ZSTD_LEVEL 9

void el_delta_limits_default(el_delta_limits *limits)
{
    limits->max_tensors = 4096;
    limits->max_elements = 64u * 1024 * 1024;
}

const char *el_delta_encoding_name(int encoding)
{
    return encoding == EL_DELTA_Q8 ? "lora-delta-q8"
         : encoding == EL_DELTA_EXACT ? "lora-delta-exact" : NULL;
}

int el_delta_encoding_parse(const char *name)
{
    if (strcmp(name, "lora-delta-q8") == 0)
        return EL_DELTA_Q8;
    if (strcmp(name, "lora-delta-exact") == 0)
        return EL_DELTA_EXACT;
    return -1;
}

void el_delta_set_finish(el_delta_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        el_free(set->tensors[i].name);
        el_free(set->tensors[i].data);
    }
    el_free(set->tensors);
    set->tensors = NULL;
    set->n = 0;
}

const el_delta_tensor *el_delta_set_find(const el_delta_set *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->tensors[i].name, name) == 0)
            return &set->tensors[i];
    return NULL;
}

/* Element count of SHAPE, or 0 on overflow / zero dims. */
static uint64_t shape_count(uint32_t ndim, const uint64_t *shape)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] == 0 || n > UINT64_MAX / shape[i])
            return 0;
        n *= shape[i];
    }
    return n;
}

int el_delta_set_add(el_delta_set *set, const char *name, uint32_t ndim,
                     const uint64_t *shape, const float *data, el_error *err)
{
    size_t nl = strlen(name);
    if (nl == 0 || nl > EL_DELTA_NAME_MAX)
        return el_error_set(err, EL_EINPUT, "tensor name must be 1-%d bytes",
                            EL_DELTA_NAME_MAX);
    if (ndim == 0 || ndim > EL_DELTA_NDIM_MAX)
        return el_error_set(err, EL_EINPUT, "%s: %u dimensions (1-%d allowed)", name,
                            ndim, EL_DELTA_NDIM_MAX);
    uint64_t count = shape_count(ndim, shape);
    if (count == 0 || count > SIZE_MAX / sizeof(float))
        return el_error_set(err, EL_EINPUT, "%s: bad shape", name);
    if (el_delta_set_find(set, name))
        return el_error_set(err, EL_EINPUT, "tensor %s given twice", name);
    el_delta_tensor *grown = el_realloc(set->tensors, (set->n + 1) * sizeof *grown);
    if (!grown)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    set->tensors = grown;
    el_delta_tensor *t = &grown[set->n];
    memset(t, 0, sizeof *t);
    t->name = el_strdup(name);
    t->data = data ? el_malloc((size_t)count * sizeof(float))
                   : el_calloc((size_t)count, sizeof(float));
    if (!t->name || !t->data) {
        el_free(t->name);
        el_free(t->data);
        return el_error_set(err, EL_ENOMEM, "out of memory");
    }
    if (data)
        memcpy(t->data, data, (size_t)count * sizeof(float));
    t->ndim = ndim;
    memcpy(t->shape, shape, ndim * sizeof *shape);
    t->count = (size_t)count;
    set->n++;
    return 0;
}

static void put16(uint8_t **p, uint16_t v)
{
    (*p)[0] = (uint8_t)v;
    (*p)[1] = (uint8_t)(v >> 8);
    *p += 2;
}

static void put32(uint8_t **p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 4;
}

static void put64(uint8_t **p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 8;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static size_t tensor_body_size(const el_delta_tensor *t, int encoding)
{
    size_t cols = (size_t)t->shape[t->ndim - 1];
    size_t rows = t->count / cols;
    size_t data = encoding == EL_DELTA_Q8 ? rows * 4 + t->count : t->count * 4;
    return 2 + strlen(t->name) + 1 + 8 * t->ndim + data;
}

/* Writes the q8 data of D (count elements, COLS per row) at *P. */
static void write_q8(uint8_t **p, const float *d, size_t count, size_t cols)
{
    size_t rows = count / cols;
    uint8_t *scales = *p;
    int8_t *q = (int8_t *)(*p + rows * 4);
    for (size_t r = 0; r < rows; r++) {
        const float *row = d + r * cols;
        float maxabs = 0.0f;
        for (size_t c = 0; c < cols; c++)
            if (fabsf(row[c]) > maxabs)
                maxabs = fabsf(row[c]);
        float scale = maxabs / 127.0f;
        uint8_t *sp = scales + r * 4;
        put32(&sp, float_bits(scale));
        for (size_t c = 0; c < cols; c++) {
            float v = scale > 0.0f ? nearbyintf(row[c] / scale) : 0.0f;
            if (v > 127.0f)
                v = 127.0f;
            if (v < -127.0f)
                v = -127.0f;
            q[r * cols + c] = (int8_t)v;
        }
    }
    *p += rows * 4 + count;
}

static void write_exact(uint8_t **p, const float *d, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t u = float_bits(d[i]);
        for (int b = 0; b < 4; b++)
            (*p)[(size_t)b * count + i] = (uint8_t)(u >> (8 * b));
    }
    *p += count * 4;
}

int el_delta_encode(const el_delta_set *next, const el_delta_set *parent,
                    int encoding, uint8_t **out, size_t *out_len, el_error *err)
{
    return el_delta_encode_level(next, parent, encoding, ZSTD_LEVEL, out, out_len, err);
}

int el_delta_encode_level(const el_delta_set *next, const el_delta_set *parent, int encoding,
                          int level, uint8_t **out, size_t *out_len, el_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (!el_delta_encoding_name(encoding))
        return el_error_set(err, EL_EUSAGE, "unknown delta encoding %d", encoding);
    if (next->n > UINT32_MAX)
        return el_error_set(err, EL_EINPUT, "too many tensors");
    size_t body_len = 0, max_count = 0;
    for (size_t i = 0; i < next->n; i++) {
        const el_delta_tensor *t = &next->tensors[i];
        if (parent) {
            const el_delta_tensor *p = el_delta_set_find(parent, t->name);
            if (!p || p->ndim != t->ndim ||
                memcmp(p->shape, t->shape, t->ndim * sizeof *t->shape) != 0)
                return el_error_set(err, EL_EINPUT, "%s: parent has no tensor of the "
                                    "same shape", t->name);
        }
        body_len += tensor_body_size(t, encoding);
        if (t->count > max_count)
            max_count = t->count;
    }
    uint8_t *body = el_malloc(body_len ? body_len : 1);
    float *d = el_malloc((max_count ? max_count : 1) * sizeof(float));
    uint8_t *frame = NULL;
    int rc = 0;
    if (!body || !d) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto out;
    }
    uint8_t *p = body;
    for (size_t i = 0; i < next->n; i++) {
        const el_delta_tensor *t = &next->tensors[i];
        const el_delta_tensor *pt = parent ? el_delta_set_find(parent, t->name) : NULL;
        for (size_t k = 0; k < t->count; k++) {
            d[k] = pt ? t->data[k] - pt->data[k] : t->data[k];
            if (!isfinite(d[k])) {
                rc = el_error_set(err, EL_EINPUT, "%s: non-finite value at %zu",
                                  t->name, k);
                goto out;
            }
        }
        size_t nl = strlen(t->name);
        put16(&p, (uint16_t)nl);
        memcpy(p, t->name, nl);
        p += nl;
        *p++ = (uint8_t)t->ndim;
        for (uint32_t k = 0; k < t->ndim; k++)
            put64(&p, t->shape[k]);
        if (encoding == EL_DELTA_Q8)
            write_q8(&p, d, t->count, (size_t)t->shape[t->ndim - 1]);
        else
            write_exact(&p, d, t->count);
    }
    size_t bound = ZSTD_compressBound(body_len);
    frame = el_malloc(HEAD_LEN + bound);
    if (!frame) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto out;
    }
    size_t clen = ZSTD_compress(frame + HEAD_LEN, bound, body, body_len, level);
    if (ZSTD_isError(clen)) {
        rc = el_error_set(err, EL_EINTERNAL, "zstd: %s", ZSTD_getErrorName(clen));
        goto out;
    }
    uint8_t *h = frame;
    memcpy(h, "ELD1", 4);
    h += 4;
    put32(&h, EL_DELTA_FORMAT_VERSION);
    put32(&h, (uint32_t)encoding);
    put32(&h, (uint32_t)next->n);
    put64(&h, body_len);
    put64(&h, clen);
    *out = frame;
    *out_len = HEAD_LEN + clen;
    frame = NULL;
out:
    el_free(frame);
    el_free(body);
    el_free(d);
    return rc;
}

/* Parses one tensor from the body at *POS; bounds-checked against LEN. */
static int read_tensor(const uint8_t *body, size_t len, size_t *pos, int encoding,
                       uint64_t *elements_left, el_delta_set *out, el_error *err)
{
    size_t p = *pos;
    if (len - p < 2)
        return el_error_set(err, EL_EINPUT, "delta body ends inside a tensor header");
    size_t nl = (size_t)body[p] | (size_t)body[p + 1] << 8;
    p += 2;
    if (nl == 0 || nl > EL_DELTA_NAME_MAX || len - p < nl + 1)
        return el_error_set(err, EL_EINPUT, "delta: bad tensor name length %zu", nl);
    char name[EL_DELTA_NAME_MAX + 1];
    memcpy(name, body + p, nl);
    name[nl] = '\0';
    if (strlen(name) != nl)
        return el_error_set(err, EL_EINPUT, "delta: tensor name contains NUL");
    p += nl;
    uint32_t ndim = body[p++];
    if (ndim == 0 || ndim > EL_DELTA_NDIM_MAX || len - p < 8 * (size_t)ndim)
        return el_error_set(err, EL_EINPUT, "delta: %s has a bad rank", name);
    uint64_t shape[EL_DELTA_NDIM_MAX];
    for (uint32_t i = 0; i < ndim; i++, p += 8)
        shape[i] = get64(body + p);
    uint64_t count = shape_count(ndim, shape);
    if (count == 0 || count > *elements_left)
        return el_error_set_tag(err, EL_ETRUST, "oversize",
                                "delta: %s has a bad or oversized shape", name);
    *elements_left -= count;
    uint64_t cols = shape[ndim - 1], rows = count / cols;
    uint64_t need = encoding == EL_DELTA_Q8 ? rows * 4 + count : count * 4;
    if (len - p < need)
        return el_error_set(err, EL_EINPUT, "delta: %s data runs past the body", name);
    int rc = el_delta_set_add(out, name, ndim, shape, NULL, err);
    if (rc)
        return rc;
    float *d = out->tensors[out->n - 1].data;
    const uint8_t *src = body + p;
    if (encoding == EL_DELTA_Q8) {
        const int8_t *q = (const int8_t *)(src + rows * 4);
        for (uint64_t r = 0; r < rows; r++) {
            float scale = bits_float(get32(src + r * 4));
            if (!isfinite(scale) || scale < 0.0f)
                return el_error_set(err, EL_EINPUT, "delta: %s row %llu has a bad scale",
                                    name, (unsigned long long)r);
            for (uint64_t c = 0; c < cols; c++)
                d[r * cols + c] = (float)q[r * cols + c] * scale;
        }
    } else {
        for (uint64_t i = 0; i < count; i++) {
            uint32_t u = 0;
            for (int b = 0; b < 4; b++)
                u |= (uint32_t)src[(uint64_t)b * count + i] << (8 * b);
            d[i] = bits_float(u);
            if (!isfinite(d[i]))
                return el_error_set(err, EL_EINPUT, "delta: %s has a non-finite value",
                                    name);
        }
    }
    *pos = p + (size_t)need;
    return 0;
}

int el_delta_decode(const uint8_t *buf, size_t len, const el_delta_limits *limits,
                    el_delta_set *delta, int *encoding, el_error *err)
{
    memset(delta, 0, sizeof *delta);
    *encoding = 0;
    if (len < HEAD_LEN)
        return el_error_set(err, EL_EINPUT, "delta payload is shorter than its header");
    if (memcmp(buf, "ELD1", 4) != 0 || get32(buf + 4) != EL_DELTA_FORMAT_VERSION)
        return el_error_set(err, EL_EINPUT, "not a version-1 delta container");
    uint32_t enc = get32(buf + 8), n = get32(buf + 12);
    uint64_t body_len = get64(buf + 16), clen = get64(buf + 24);
    if (!el_delta_encoding_name((int)enc))
        return el_error_set(err, EL_EINPUT, "delta: unknown encoding %u", enc);
    if (n > limits->max_tensors)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "delta: %u tensors exceed "
                                "the limit of %zu", n, limits->max_tensors);
    /* The largest body the limits allow: exact data plus per-tensor headers. */
    uint64_t max_body = limits->max_elements * 4 +
                        (uint64_t)n * (2 + EL_DELTA_NAME_MAX + 1 + 8 * EL_DELTA_NDIM_MAX);
    if (body_len > max_body || body_len > SIZE_MAX)
        return el_error_set_tag(err, EL_ETRUST, "oversize", "delta body of %llu bytes "
                                "exceeds the limits", (unsigned long long)body_len);
    if (clen != len - HEAD_LEN)
        return el_error_set(err, EL_EINPUT, "delta: compressed length %llu, %zu bytes "
                            "present", (unsigned long long)clen, len - HEAD_LEN);
    unsigned long long declared = ZSTD_getFrameContentSize(buf + HEAD_LEN, (size_t)clen);
    if (declared != body_len)
        return el_error_set(err, EL_EINPUT, "delta: zstd frame does not declare the "
                            "body length");
    uint8_t *body = el_malloc(body_len ? (size_t)body_len : 1);
    if (!body)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    size_t got = ZSTD_decompress(body, (size_t)body_len, buf + HEAD_LEN, (size_t)clen);
    int rc = 0;
    if (ZSTD_isError(got) || got != body_len) {
        rc = el_error_set(err, EL_EINPUT, "delta: zstd frame is corrupt");
        goto out;
    }
    size_t pos = 0;
    uint64_t elements_left = limits->max_elements;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = read_tensor(body, (size_t)body_len, &pos, (int)enc, &elements_left, delta,
                         err);
    if (rc == 0 && pos != body_len)
        rc = el_error_set(err, EL_EINPUT, "delta: %llu trailing bytes in the body",
                          (unsigned long long)(body_len - pos));
out:
    el_free(body);
    if (rc)
        el_delta_set_finish(delta);
    else
        *encoding = (int)enc;
    return rc;
}

int el_delta_apply(const el_delta_set *parent, const el_delta_set *delta,
                   el_delta_set *result, el_error *err)
{
    memset(result, 0, sizeof *result);
    for (size_t i = 0; i < delta->n; i++) {
        const el_delta_tensor *d = &delta->tensors[i];
        const el_delta_tensor *p = parent ? el_delta_set_find(parent, d->name) : NULL;
        if (parent && (!p || p->ndim != d->ndim ||
                       memcmp(p->shape, d->shape, d->ndim * sizeof *d->shape) != 0)) {
            el_delta_set_finish(result);
            return el_error_set(err, EL_EINPUT, "%s: parent has no tensor of the "
                                "delta's shape", d->name);
        }
        int rc = el_delta_set_add(result, d->name, d->ndim, d->shape, d->data, err);
        if (rc) {
            el_delta_set_finish(result);
            return rc;
        }
        if (p) {
            float *r = result->tensors[result->n - 1].data;
            for (size_t k = 0; k < d->count; k++)
                r[k] = p->data[k] + d->data[k];
        }
    }
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    const el_delta_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

int el_delta_digest(const el_delta_set *set, char out[65], el_error *err)
{
    const el_delta_tensor **order = el_malloc((set->n ? set->n : 1) * sizeof *order);
    if (!order)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    for (size_t i = 0; i < set->n; i++)
        order[i] = &set->tensors[i];
    qsort(order, set->n, sizeof *order, cmp_name);
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    for (size_t i = 0; i < set->n; i++) {
        const el_delta_tensor *t = order[i];
        uint8_t head[4 + 4 + 8 * EL_DELTA_NDIM_MAX], *p = head;
        size_t nl = strlen(t->name);
        put32(&p, (uint32_t)nl);
        el_sha256_update(&ctx, head, 4);
        el_sha256_update(&ctx, t->name, nl);
        p = head;
        put32(&p, t->ndim);
        for (uint32_t k = 0; k < t->ndim; k++)
            put64(&p, t->shape[k]);
        el_sha256_update(&ctx, head, (size_t)(p - head));
        uint8_t chunk[1024];
        size_t fill = 0;
        for (size_t k = 0; k < t->count; k++) {
            uint8_t *c = chunk + fill;
            put32(&c, float_bits(t->data[k]));
            fill += 4;
            if (fill == sizeof chunk) {
                el_sha256_update(&ctx, chunk, fill);
                fill = 0;
            }
        }
        el_sha256_update(&ctx, chunk, fill);
    }
    el_free(order);
    uint8_t h[EL_SHA256_LEN];
    el_sha256_final(&ctx, h);
    el_hex(h, sizeof h, out);
    return 0;
}
