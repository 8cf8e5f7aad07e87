/* bench-delta: compression ratio and quantization error of adapter deltas on
 * a realistic LoRA (rank 8 on a 128-dim, 4-layer model, q/k/v/o/gate/up/down
 * targets; A ~ kaiming-uniform scale, B small after training, the new
 * version a small update of its parent). Prints numbers; asserts nothing.
 *
 * usage: bench-delta [--rank R] [--dim D] [--layers L] [--step S]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "delta.h"

static uint64_t state = 0x243f6a8885a308d3ull;

static double uniform(void)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(state >> 11) / (double)(1ull << 53);
}

static float gauss(void)
{
    double u = uniform(), v = uniform();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int rank = 8, dim = 128, layers = 4;
    double step = 0.02;   /* update size relative to the weights' scale */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rank"))
            rank = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim"))
            dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers"))
            layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step"))
            step = atof(argv[i + 1]);
    }
    if (rank < 1 || dim < 1 || layers < 1 || rank > 1024 || dim > 8192 || layers > 256) {
        fprintf(stderr, "usage: bench-delta [--rank R] [--dim D] [--layers L] [--step S]\n");
        return 1;
    }
    const char *mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                          "mlp.down_proj"};
    int ffn = dim * 8 / 3;
    el_delta_set parent = {0}, next = {0};
    el_error err;
    size_t raw = 0;
    for (int l = 0; l < layers; l++)
        for (int m = 0; m < 7; m++) {
            int in = m == 6 ? ffn : dim, out = (m == 4 || m == 5) ? ffn : dim;
            for (int ab = 0; ab < 2; ab++) {
                char name[160];
                snprintf(name, sizeof name,
                         "base_model.model.model.layers.%d.%s.lora_%c.weight", l, mods[m],
                         ab ? 'B' : 'A');
                uint64_t shape[2] = {ab ? (uint64_t)out : (uint64_t)rank,
                                     ab ? (uint64_t)rank : (uint64_t)in};
                size_t n = (size_t)(shape[0] * shape[1]);
                float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
                float scale = ab ? 0.01f : 1.0f / sqrtf((float)in);
                for (size_t k = 0; k < n; k++) {
                    p[k] = gauss() * scale;
                    q[k] = p[k] + gauss() * scale * (float)step;
                }
                if (el_delta_set_add(&parent, name, 2, shape, p, &err) ||
                    el_delta_set_add(&next, name, 2, shape, q, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                raw += n * 4;
                free(p);
                free(q);
            }
        }
    printf("adapter: %d layers, dim %d, ffn %d, rank %d, 7 targets, %zu tensors, "
           "%zu fp32 bytes; update step %.3g x weight scale\n",
           layers, dim, ffn, rank, next.n, raw, step);
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    for (int pass = 0; pass < 4; pass++) {
        int enc = pass % 2 ? EL_DELTA_Q8 : EL_DELTA_EXACT;
        const el_delta_set *from = pass < 2 ? NULL : &parent;
        uint8_t *buf;
        size_t len;
        double t0 = seconds();
        if (el_delta_encode(&next, from, enc, &buf, &len, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t1 = seconds();
        el_delta_set d = {0}, rebuilt = {0};
        int got;
        if (el_delta_decode(buf, len, &lim, &d, &got, &err) ||
            el_delta_apply(from, &d, &rebuilt, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t2 = seconds();
        double max_abs = 0, se = 0, ss = 0, dss = 0;
        for (size_t t = 0; t < next.n; t++)
            for (size_t k = 0; k < next.tensors[t].count; k++) {
                double want = next.tensors[t].data[k];
                double e = rebuilt.tensors[t].data[k] - want;
                double dv = want - (from ? from->tensors[t].data[k] : 0.0);
                max_abs = fmax(max_abs, fabs(e));
                se += e * e;
                ss += want * want;
                dss += dv * dv;
            }
        printf("%-17s from %-6s: %9zu bytes, ratio %6.2fx, max|err| %.3g, "
               "rel RMS err (of weights) %.3g, (of delta) %.3g, encode %.1f ms, "
               "decode+rebuild %.1f ms\n",
               el_delta_encoding_name(enc), from ? "parent" : "zeros", len,
               (double)raw / (double)len, max_abs, sqrt(se / ss), sqrt(se / dss),
               (t1 - t0) * 1e3, (t2 - t1) * 1e3);
        el_free(buf);
        el_delta_set_finish(&d);
        el_delta_set_finish(&rebuilt);
    }
    el_delta_set_finish(&parent);
    el_delta_set_finish(&next);
    return 0;
}
