/* Private contract between backend.c (argument checks, dispatch) and the two
 * backends (cpu.c, vulkan.c). backend.c has checked every view against the
 * dimensions before an op reaches a backend, so backends may trust them. */
#ifndef EL_NN_BACKEND_IMPL_H
#define EL_NN_BACKEND_IMPL_H

#include "nn/backend.h"

struct el_tensor {
    el_dtype dtype;
    size_t n;
    void *impl;   /* backend-private (host pointer for cpu) */
};

typedef struct el_backend_ops {
    void (*destroy)(el_backend *be);
    int (*tensor_init)(el_backend *be, el_tensor *t, el_error *err);
    void (*tensor_finish)(el_backend *be, el_tensor *t);
    int (*write)(el_backend *be, el_view v, const void *src, el_error *err);
    int (*read)(el_backend *be, el_view v, void *dst, el_error *err);
    int (*sync)(el_backend *be, el_error *err);
    int (*graph_begin)(el_backend *be, uint64_t key, el_error *err);
    int (*graph_end)(el_backend *be, el_error *err);

    int (*matmul)(el_backend *be, el_matmul_layout layout, int M, int N, int K,
                  float alpha, el_view A, el_view B, float beta, el_view C,
                  el_error *err);
    int (*fill)(el_backend *be, el_view x, float value, el_error *err);
    int (*copy)(el_backend *be, el_view dst, el_view src, el_error *err);
    int (*axpby)(el_backend *be, float alpha, el_view x, float beta, el_view y,
                 el_error *err);
    int (*add)(el_backend *be, el_view a, el_view b, el_view c, el_error *err);
    int (*reduce)(el_backend *be, el_reduce_op op, el_view x, el_view out,
                  int accumulate, el_error *err);
    int (*embedding)(el_backend *be, el_view ids, el_view table, int T, int V,
                     int D, el_view out, el_error *err);
    int (*rmsnorm_fwd)(el_backend *be, el_view x, el_view w, int T, int D,
                       float eps, el_view y, el_view rstd, el_error *err);
    int (*rmsnorm_bwd)(el_backend *be, el_view x, el_view w, el_view rstd,
                       el_view dy, int T, int D, float beta, el_view dx,
                       el_error *err);
    int (*rope)(el_backend *be, el_view x, int B, int S, int H, int hd,
                float theta, int inverse, el_error *err);
    int (*attention_fwd)(el_backend *be, el_view q, el_view k, el_view v,
                         int B, int S, int H, int KVH, int hd, float scale,
                         el_view o, el_view p, el_error *err);
    int (*attention_bwd)(el_backend *be, el_view q, el_view k, el_view v,
                         el_view p, el_view dout, int B, int S, int H, int KVH,
                         int hd, float scale, el_view dq, el_view dk,
                         el_view dv, el_error *err);
    int (*swiglu_fwd)(el_backend *be, el_view g, el_view u, el_view h,
                      el_error *err);
    int (*swiglu_bwd)(el_backend *be, el_view g, el_view u, el_view dh,
                      el_view dg, el_view du, el_error *err);
    int (*cross_entropy)(el_backend *be, el_view logits, el_view targets, int T,
                         int V, float grad_scale, el_view loss, el_view dlogits,
                         el_error *err);
    int (*adamw)(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                 el_view hp, el_view gnorm_sq, el_error *err);
} el_backend_ops;

struct el_backend {
    const el_backend_ops *ops;
    el_backend_kind kind;
    char name[160];
};

/* Constructors of the two backends (cpu.c, vulkan.c). */
int el_nn_cpu_create(const el_backend_options *opts, el_backend **out,
                     el_error *err);
int el_nn_vulkan_create(const el_backend_options *opts, el_backend **out,
                        el_error *err);
/* 1 when a Vulkan device exists that is a real GPU (not a CPU rasterizer);
 * used by AUTO. Must not fail loudly: returns 0 when Vulkan is absent. */
int el_nn_vulkan_has_gpu(void);

#endif
