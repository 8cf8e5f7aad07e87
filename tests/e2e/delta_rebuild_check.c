/* Helper of test_delta_rebuild.sh: rebuilds a device delta's adapter the
 * way the hub does (sync/delta.h: parent + decoded payload, in fp32) from
 * the bundle bytes alone, and holds it bit for bit to the adapter the
 * device's registry stores (DESIGN.md: "device and hub hold bit-identical
 * weights"), and its digest to the manifest's "result".
 * usage: delta_rebuild_check DELTA.elb PARENT.safetensors|- STORED.safetensors
 * Prints the encoding and the number of tensors compared; exits 0 when
 * every tensor is bit-identical, 1 on a mismatch, 2 on an error. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/safetensors.h"
#include "bundle.h"
#include "delta.h"
#include "manifest.h"

#define BUNDLE_MAX ((size_t)1 << 26)

/* Reads every tensor of the safetensors file at PATH into SET as fp32. */
static int load(const char *path, el_delta_set *set, el_error *err)
{
    el_safetensors *st = NULL;
    int rc = el_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    size_t n = el_safetensors_count(st);
    for (size_t i = 0; i < n && !rc; i++) {
        const el_st_tensor *t = el_safetensors_at(st, i);
        if (t->ndim < 1 || t->ndim > EL_DELTA_NDIM_MAX) {
            rc = el_error_set(err, EL_EINPUT, "%s: %s has rank %d", path, t->name, t->ndim);
            break;
        }
        uint64_t shape[EL_DELTA_NDIM_MAX];
        for (int k = 0; k < t->ndim; k++)
            shape[k] = (uint64_t)t->shape[k];
        float *f = el_malloc((t->numel ? t->numel : 1) * sizeof *f);
        if (!f) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory");
            break;
        }
        el_safetensors_to_f32(t, f);
        rc = el_delta_set_add(set, t->name, (uint32_t)t->ndim, shape, f, err);
        el_free(f);
    }
    el_safetensors_close(st);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DELTA.elb PARENT.safetensors|- STORED.safetensors\n",
                argv[0]);
        return 2;
    }
    el_error err;
    el_error_clear(&err);
    uint8_t *bytes = NULL;
    size_t len = 0;
    el_bundle b;
    el_bundle_init(&b);
    el_manifest m = {0};
    el_delta_set parent = {0}, delta = {0}, rebuilt = {0}, stored = {0};
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    int have_parent = strcmp(argv[2], "-") != 0, encoding, status = 0;
    char digest[65];
    if (el_fs_read_file(argv[1], BUNDLE_MAX, &bytes, &len, &err) ||
        el_bundle_parse(bytes, len, &b, &err) ||
        el_manifest_parse(b.header, b.header_len, BUNDLE_MAX, &m, &err) ||
        (have_parent && load(argv[2], &parent, &err)) || load(argv[3], &stored, &err) ||
        el_delta_decode(b.payload, b.payload_len, &lim, &delta, &encoding, &err) ||
        el_delta_apply(have_parent ? &parent : NULL, &delta, &rebuilt, &err) ||
        el_delta_digest(&rebuilt, digest, &err)) {
        printf("error: %s\n", err.msg);
        status = 2;
        goto done;
    }
    if (!!m.parent[0] != have_parent) {
        printf("mismatch: the manifest %s a parent\n", m.parent[0] ? "names" : "has no");
        status = 1;
        goto done;
    }
    if (strcmp(digest, m.result)) {
        printf("mismatch: rebuilt digest %s, manifest result %s\n", digest, m.result);
        status = 1;
        goto done;
    }
    if (rebuilt.n != stored.n) {
        printf("mismatch: %zu tensors rebuilt, %zu stored\n", rebuilt.n, stored.n);
        status = 1;
        goto done;
    }
    size_t elements = 0;
    for (size_t i = 0; i < stored.n; i++) {
        const el_delta_tensor *s = &stored.tensors[i];
        const el_delta_tensor *r = el_delta_set_find(&rebuilt, s->name);
        if (!r || r->count != s->count) {
            printf("mismatch: %s missing or of another size in the rebuild\n", s->name);
            status = 1;
            goto done;
        }
        for (size_t k = 0; k < s->count; k++)
            if (memcmp(&r->data[k], &s->data[k], sizeof(float))) {
                printf("mismatch: %s[%zu]: stored %.9g, rebuilt %.9g\n", s->name, k,
                       (double)s->data[k], (double)r->data[k]);
                status = 1;
                goto done;
            }
        elements += s->count;
    }
    printf("bit-identical: %zu tensors, %zu values, %s, result %s\n", stored.n, elements,
           el_delta_encoding_name(encoding), m.result);
done:
    el_delta_set_finish(&parent);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);
    el_delta_set_finish(&stored);
    el_manifest_finish(&m);
    el_bundle_finish(&b);
    el_free(bytes);
    return status;
}
