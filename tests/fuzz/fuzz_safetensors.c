/* libFuzzer target: the safetensors reader over arbitrary bytes, then every
 * accessor over what it accepted (widening each tensor to f32 touches every
 * data byte it claims), then a write-back: serializing the accepted tensors
 * must give a file the reader accepts again with the same values. Must never
 * crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so the reader can only see SIZE bytes. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    el_safetensors *st;
    el_error err;
    if (el_safetensors_parse(buf, size, "fuzz", &st, &err) != 0) {
        free(buf);
        return 0;
    }
    size_t n = el_safetensors_count(st), total = 0;
    el_st_entry *entries = calloc(n ? n : 1, sizeof *entries);
    float **vals = calloc(n ? n : 1, sizeof *vals);
    for (size_t i = 0; entries && vals && i < n; i++) {
        const el_st_tensor *t = el_safetensors_at(st, i);
        if (el_safetensors_find(st, t->name) != t)
            abort();
        total += t->numel;
        if (total > ((size_t)1 << 24))   /* keep the write-back small */
            break;
        vals[i] = malloc((t->numel ? t->numel : 1) * sizeof(float));
        if (!vals[i])
            break;
        el_safetensors_to_f32(t, vals[i]);
        entries[i].name = t->name;
        entries[i].ndim = t->ndim;
        memcpy(entries[i].shape, t->shape, sizeof t->shape);
        entries[i].data = vals[i];
    }
    el_safetensors_meta(st, "format");
    uint8_t *out;
    size_t out_len;
    int all = entries && vals && total <= ((size_t)1 << 24);
    for (size_t i = 0; all && i < n; i++)
        all = vals[i] != NULL;
    if (all && el_safetensors_serialize(entries, n, NULL, 0, &out, &out_len, &err) == 0) {
        el_safetensors *again;
        if (el_safetensors_parse(out, out_len, "rewrite", &again, &err) != 0)
            abort();   /* our own output must be valid */
        if (el_safetensors_count(again) != n)
            abort();
        el_safetensors_close(again);
        el_free(out);
    }
    for (size_t i = 0; vals && i < n; i++)
        free(vals[i]);
    free(vals);
    free(entries);
    el_safetensors_close(st);
    free(buf);
    return 0;
}
