/* The compute backend interface: one table of tensor ops, two backends.
 *
 * Design:
 *  1. A tensor is a flat, backend-owned array of N elements of one dtype
 *     (f32 or i32). Shapes are not stored: every op takes its dimensions
 *     explicitly, as BLAS does, so ops map 1:1 onto shader push constants.
 *     All matrices are row-major and densely packed.
 *  2. A view (el_view) names a contiguous element range of a tensor; ops take
 *     views, so one allocation can hold many weights (e.g. all LoRA params).
 *  3. Ops are *issued*, not necessarily executed: the cpu backend runs each
 *     at once; the vulkan backend records a dispatch (with the barriers the
 *     previous ops need) into the current command stream. el_nn_sync() waits
 *     until every issued op has finished. Reads (el_nn_read) sync first.
 *  4. Replay: ops issued between el_nn_graph_begin(be, key) and
 *     el_nn_graph_end(be) form a graph. The first time a key is seen, the
 *     vulkan backend records the graph into a command buffer; later graphs
 *     with the same key submit that buffer again without recording, after
 *     checking that the issued ops (names, views, dims, scalars) hash to the
 *     recorded sequence; a mismatch is EL_EINTERNAL ("graph changed"). So a
 *     graph must have fixed shapes; values that change per step (learning
 *     rate, step number) travel in tensors (see el_nn_adamw), not scalars.
 *  5. Every op returns 0 or a negative EL_E* code with ERR set; on failure
 *     output tensors hold unspecified values.
 *  6. Numerics: fp32 everywhere, accumulation in fp32 or better; softmax and
 *     cross-entropy subtract the row max.
 */
#ifndef EL_NN_BACKEND_H
#define EL_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct el_backend el_backend;
typedef struct el_tensor el_tensor;

typedef enum el_dtype { EL_F32 = 0, EL_I32 = 1 } el_dtype;

typedef enum el_backend_kind {
    EL_BACKEND_AUTO = 0,
    EL_BACKEND_CPU = 1,
    EL_BACKEND_VULKAN = 2,
} el_backend_kind;

typedef struct el_view {
    el_tensor *t;
    size_t off;   /* first element */
    size_t n;     /* element count */
} el_view;

typedef enum el_matmul_layout {
    /* C[M,N] = alpha * A[M,K] . B[N,K]^T + beta * C   (Y = X.W^T)   */
    EL_MM_NT = 0,
    /* C[M,N] = alpha * A[M,K] . B[K,N]   + beta * C   (dX = dY.W)   */
    EL_MM_NN = 1,
    /* C[M,N] = alpha * A[K,M]^T . B[K,N] + beta * C   (dW = dY^T.X) */
    EL_MM_TN = 2,
} el_matmul_layout;

typedef enum el_reduce_op { EL_REDUCE_SUM = 0, EL_REDUCE_MAX = 1, EL_REDUCE_SUMSQ = 2 } el_reduce_op;

typedef struct el_backend_options {
    el_backend_kind kind;
    int device_index;      /* vulkan: -1 = choose (or $EDGELOOP_VK_DEVICE) */
    int threads;           /* cpu: 0 = all cores */
    const char *cache_dir; /* vulkan pipeline cache dir; NULL = default */
    int profile;           /* collect per-op timings (vulkan timestamps) */
} el_backend_options;

/* Creates a backend. AUTO picks vulkan on a real GPU and cpu when no Vulkan
 * device exists or the only one is a software rasterizer (lavapipe); VULKAN
 * fails with EL_EUNAVAIL and one sentence saying why when Vulkan is absent.
 * Returns 0 and *OUT (caller destroys) or an error. */
int el_nn_backend_create(const el_backend_options *opts, el_backend **out,
                         el_error *err);
void el_nn_backend_destroy(el_backend *be);   /* accepts NULL */
el_backend_kind el_nn_backend_kind(const el_backend *be);
/* Human-readable name, e.g. "cpu (openblas, 2 threads)" or
 * "vulkan (llvmpipe (LLVM 15.0.6, 256 bits))". Static/borrowed. */
const char *el_nn_backend_name(const el_backend *be);
/* Parses "auto", "cpu", "vulkan". Returns 0 or EL_EUSAGE. */
int el_nn_backend_parse(const char *s, el_backend_kind *out, el_error *err);

/* Tensors. create returns a tensor of N zeroed elements or NULL (ERR set).
 * destroy accepts NULL. */
el_tensor *el_nn_tensor_create(el_backend *be, el_dtype dtype, size_t n,
                               el_error *err);
void el_nn_tensor_destroy(el_backend *be, el_tensor *t);
size_t el_nn_tensor_len(const el_tensor *t);
el_view el_nn_view(el_tensor *t, size_t off, size_t n);
el_view el_nn_whole(el_tensor *t);

/* Host transfers of BYTES = n * 4 bytes at element OFF of V. Both sync. */
int el_nn_write(el_backend *be, el_view v, const void *src, el_error *err);
int el_nn_read(el_backend *be, el_view v, void *dst, el_error *err);

/* Waits for every issued op. */
int el_nn_sync(el_backend *be, el_error *err);
/* Graph replay, see invariant 4. KEY is any caller-chosen nonzero id. */
int el_nn_graph_begin(el_backend *be, uint64_t key, el_error *err);
int el_nn_graph_end(el_backend *be, el_error *err);

/* ---- ops (all f32 unless noted) ---- */

int el_nn_matmul(el_backend *be, el_matmul_layout layout, int M, int N, int K,
                 float alpha, el_view A, el_view B, float beta, el_view C,
                 el_error *err);

int el_nn_fill(el_backend *be, el_view x, float value, el_error *err);
int el_nn_copy(el_backend *be, el_view dst, el_view src, el_error *err);
/* y = alpha * x + beta * y (elementwise, n = x.n = y.n). */
int el_nn_axpby(el_backend *be, float alpha, el_view x, float beta, el_view y,
                el_error *err);
/* c = a + b. */
int el_nn_add(el_backend *be, el_view a, el_view b, el_view c, el_error *err);
/* out[0] = (accumulate ? out[0] : 0) (+) reduce(x); SUM, MAX, SUMSQ.
 * For MAX, accumulate takes max with out[0]. */
int el_nn_reduce(el_backend *be, el_reduce_op op, el_view x, el_view out,
                 int accumulate, el_error *err);

/* out[t, :] = table[ids[t], :] for t < T; ids is i32, values in [0, V). */
int el_nn_embedding(el_backend *be, el_view ids, el_view table, int T, int V,
                    int D, el_view out, el_error *err);

/* y[t] = x[t] * rstd[t] * w, rstd[t] = 1/sqrt(mean(x[t]^2) + eps). */
int el_nn_rmsnorm_fwd(el_backend *be, el_view x, el_view w, int T, int D,
                      float eps, el_view y, el_view rstd, el_error *err);
/* dx = beta * dx + d(y)/d(x)^T dy; w frozen (no dw). */
int el_nn_rmsnorm_bwd(el_backend *be, el_view x, el_view w, el_view rstd,
                      el_view dy, int T, int D, float beta, el_view dx,
                      el_error *err);

/* Rotary embedding in place on x[B*S, H*hd] (row = b*S + s, position = s),
 * HF rotate-half pairing (i, i + hd/2), inv_freq = theta^(-2i/hd).
 * inverse = 1 rotates by -angle (the backward of the forward). */
int el_nn_rope(el_backend *be, el_view x, int B, int S, int H, int hd,
               float theta, int inverse, el_error *err);

/* Causal grouped-query attention. q[B*S, H*hd], k,v[B*S, KVH*hd],
 * o[B*S, H*hd], p[B, H, S, S] (softmax probabilities, saved for backward;
 * entries above the diagonal are 0). Query head h reads kv head
 * h / (H / KVH). scores = q.k^T * scale. */
int el_nn_attention_fwd(el_backend *be, el_view q, el_view k, el_view v,
                        int B, int S, int H, int KVH, int hd, float scale,
                        el_view o, el_view p, el_error *err);
/* Writes (overwrites) dq, dk, dv from do and the saved p. */
int el_nn_attention_bwd(el_backend *be, el_view q, el_view k, el_view v,
                        el_view p, el_view dout, int B, int S, int H, int KVH,
                        int hd, float scale, el_view dq, el_view dk,
                        el_view dv, el_error *err);

/* h = silu(g) * u over n elements. */
int el_nn_swiglu_fwd(el_backend *be, el_view g, el_view u, el_view h,
                     el_error *err);
/* dg, du (overwritten) from dh. */
int el_nn_swiglu_bwd(el_backend *be, el_view g, el_view u, el_view dh,
                     el_view dg, el_view du, el_error *err);

/* Cross-entropy over logits[T, V] with i32 targets[T] (-1 = not scored).
 * loss[t] = -log softmax(logits[t])[target] (0 when not scored).
 * If dlogits.t is non-NULL: dlogits[t] = grad_scale * (softmax - onehot),
 * zero rows when not scored. dlogits may alias logits. */
int el_nn_cross_entropy(el_backend *be, el_view logits, el_view targets,
                        int T, int V, float grad_scale, el_view loss,
                        el_view dlogits, el_error *err);

/* AdamW over n params with fp32 state m, v. hp is an 8-float tensor view so a
 * replayed graph can change it per step:
 *   hp[0] lr, hp[1] beta1, hp[2] beta2, hp[3] eps, hp[4] weight_decay,
 *   hp[5] 1 - beta1^t, hp[6] 1 - beta2^t, hp[7] max_grad_norm (0 = no clip).
 * gnorm_sq is a 1-float view holding the squared global gradient norm; the
 * gradient is scaled by min(1, max_norm / (sqrt(gnorm_sq) + 1e-6)).
 * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)  (decoupled decay). */
int el_nn_adamw(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                el_view hp, el_view gnorm_sq, el_error *err);

#endif
