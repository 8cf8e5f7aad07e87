/* Adapter version deltas (DESIGN.md "Deltas"): new adapter minus parent,
 * encoded as `lora-delta-q8` (int8 per row + fp32 row scale, zstd) or
 * `lora-delta-exact` (fp32 byte-shuffled, zstd, lossless), inside a small
 * versioned container (docs/bundle-format.md "Delta payloads").
 *
 * The representation is neutral: a list of named fp32 tensors with shapes
 * (el_delta_set), so sync/ does not depend on agent/nn. Both ends rebuild an
 * adapter as parent + decoded delta with the arithmetic fixed here, and so
 * hold bit-identical weights.
 *
 * el_delta_set is caller-owned (zero it, add tensors, finish).
 */
#ifndef EL_SYNC_DELTA_H
#define EL_SYNC_DELTA_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define EL_DELTA_NDIM_MAX 4
#define EL_DELTA_NAME_MAX 256
#define EL_DELTA_FORMAT_VERSION 1

enum { EL_DELTA_Q8 = 1, EL_DELTA_EXACT = 2 };

typedef struct el_delta_tensor {
    char *name;                          /* owned, NUL-terminated */
    uint32_t ndim;
    uint64_t shape[EL_DELTA_NDIM_MAX];
    float *data;                         /* owned, count elements */
    size_t count;
} el_delta_tensor;

typedef struct el_delta_set {
    el_delta_tensor *tensors;            /* owned */
    size_t n;
} el_delta_set;

/* Bounds for decoding untrusted payloads; checked before any allocation. */
typedef struct el_delta_limits {
    size_t max_tensors;
    uint64_t max_elements;               /* over all tensors */
} el_delta_limits;

/* 4096 tensors, 64 M elements (256 MiB of fp32). */
void el_delta_limits_default(el_delta_limits *limits);

/* "lora-delta-q8" / "lora-delta-exact" and back; -1 / NULL when unknown. */
const char *el_delta_encoding_name(int encoding);
int el_delta_encoding_parse(const char *name);

/* Appends a tensor NAME of shape SHAPE[NDIM] to SET, copying DATA (zeros when
 * DATA is NULL). Names must be unique. Returns 0, EL_EINPUT or EL_ENOMEM. */
int el_delta_set_add(el_delta_set *set, const char *name, uint32_t ndim,
                     const uint64_t *shape, const float *data, el_error *err);
const el_delta_tensor *el_delta_set_find(const el_delta_set *set, const char *name);
void el_delta_set_finish(el_delta_set *set);

/* Encodes NEXT - PARENT (PARENT NULL: zeros) as ENCODING into a new buffer.
 * PARENT, when given, must hold every tensor of NEXT with the same shape.
 * Returns 0, EL_EINPUT (mismatch, non-finite value) or EL_ENOMEM. */
int el_delta_encode(const el_delta_set *next, const el_delta_set *parent,
                    int encoding, uint8_t **out, size_t *out_len, el_error *err);
/* The same with zstd compression LEVEL (el_delta_encode uses 9; the bytes
 * decode the same whatever the level). */
int el_delta_encode_level(const el_delta_set *next, const el_delta_set *parent, int encoding,
                          int level, uint8_t **out, size_t *out_len, el_error *err);

/* Decodes a delta container into *DELTA (the dequantized differences) and its
 * *ENCODING. Every size is checked against LIMITS and the input length before
 * anything is allocated. Returns 0 or EL_EINPUT (EL_ETRUST "oversize" for a
 * limit) with *DELTA empty. */
int el_delta_decode(const uint8_t *buf, size_t len, const el_delta_limits *limits,
                    el_delta_set *delta, int *encoding, el_error *err);

/* Rebuilds *RESULT = PARENT + DELTA, element by element in fp32 (one IEEE
 * single-precision addition per element, no fusion: the delta values were
 * already rounded to float when decoded). PARENT NULL: zeros. Tensors keep
 * DELTA's order. Returns 0, EL_EINPUT (shape mismatch) or EL_ENOMEM. */
int el_delta_apply(const el_delta_set *parent, const el_delta_set *delta,
                   el_delta_set *result, el_error *err);

/* Canonical digest of an adapter: SHA-256 over the tensors sorted by name
 * (bytewise), each as u32 LE name length, name, u32 LE ndim, u64 LE dims,
 * fp32 LE values. Used for a manifest's "parent" and "result". */
int el_delta_digest(const el_delta_set *set, char out[65], el_error *err);

#endif
