/* safetensors: the tensor file format of Hugging Face (model weights, PEFT
 * adapters, our training checkpoints and gradient dumps).
 *
 * Layout: u64 LE header length N | N bytes of JSON header | data. The header
 * maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the start of the data); the optional "__metadata__"
 * maps strings to strings.
 *
 * The reader refuses anything it does not fully understand (see
 * safetensors.c for the numbered rules); every refusal names the file, the
 * tensor and the rule broken. The writer produces exactly what the Python
 * `safetensors` library produces for the same tensors in the same order.
 */
#ifndef EL_BASE_SAFETENSORS_H
#define EL_BASE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Header JSON limit (the Python library refuses larger headers too). */
#define EL_SAFETENSORS_HEADER_MAX ((size_t)100 * 1000 * 1000)
#define EL_SAFETENSORS_MAX_DIMS 8

typedef enum el_st_dtype { EL_ST_F32 = 0, EL_ST_F16 = 1, EL_ST_BF16 = 2 } el_st_dtype;

typedef struct el_st_tensor {
    const char *name;          /* borrowed from the file object */
    el_st_dtype dtype;
    int ndim;
    int64_t shape[EL_SAFETENSORS_MAX_DIMS];
    size_t numel;
    const uint8_t *data;       /* numel * element size bytes, unaligned */
    size_t nbytes;
} el_st_tensor;

typedef struct el_safetensors el_safetensors;

/* Maps PATH read-only and validates it. Returns 0 and *OUT (caller closes)
 * or EL_ENOTFOUND / EL_EIO / EL_EINPUT with ERR naming the file, tensor and
 * rule; *OUT is NULL on failure. */
int el_safetensors_open(const char *path, el_safetensors **out, el_error *err);

/* Validates LEN bytes at BUF (borrowed: must outlive *OUT). WHAT names the
 * source in messages. Returns as el_safetensors_open. */
int el_safetensors_parse(const uint8_t *buf, size_t len, const char *what,
                         el_safetensors **out, el_error *err);

/* Unmaps/frees. Accepts NULL. */
void el_safetensors_close(el_safetensors *st);

/* Tensors in data-offset order; I < count. Borrowed. */
size_t el_safetensors_count(const el_safetensors *st);
const el_st_tensor *el_safetensors_at(const el_safetensors *st, size_t i);
/* The tensor called NAME, or NULL. */
const el_st_tensor *el_safetensors_find(const el_safetensors *st, const char *name);
/* The __metadata__ value of KEY, or NULL. Borrowed. */
const char *el_safetensors_meta(const el_safetensors *st, const char *key);

/* Converts T to NUMEL floats at DST (F16/BF16 widened exactly). */
void el_safetensors_to_f32(const el_st_tensor *t, float *dst);

/* Size in bytes of one element of DTYPE; name as in the header ("F32"). */
size_t el_st_dtype_size(el_st_dtype dtype);
const char *el_st_dtype_name(el_st_dtype dtype);

/* One tensor to write: F32 data of numel = product of shape. */
typedef struct el_st_entry {
    const char *name;
    int ndim;
    int64_t shape[EL_SAFETENSORS_MAX_DIMS];
    const float *data;
} el_st_entry;

/* Serializes N F32 entries (in the given order, contiguous from offset 0)
 * and META_N (key, value) string pairs of __metadata__ (META may be NULL)
 * into a new buffer *OUT of *LEN bytes (caller el_free's). Returns 0 or
 * EL_ENOMEM / EL_EINPUT (bad name, duplicate, shape). */
int el_safetensors_serialize(const el_st_entry *entries, size_t n,
                             const char *const *meta, size_t meta_n,
                             uint8_t **out, size_t *len, el_error *err);

/* Serializes as above and writes PATH with el_fs_write_atomic (mode 0644).
 * Returns 0 or the serializer's/writer's error; PATH is untouched on error. */
int el_safetensors_write(const char *path, const el_st_entry *entries, size_t n,
                         const char *const *meta, size_t meta_n, el_error *err);

#endif
