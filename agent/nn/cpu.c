/* The cpu backend: every op of backend_impl.h in plain C over host memory,
 * matmuls through OpenBLAS's cblas_sgemm.
 *
 * Design:
 *  1. A tensor's impl is a host array of n 4-byte elements (f32 or i32),
 *     zeroed at creation. Ops run when issued; sync and graphs have nothing
 *     to wait for or record (graph_begin/graph_end only check nesting, so a
 *     caller that would break the vulkan backend's replay rules is told so
 *     here too).
 *  2. Threads: OpenBLAS threads its own sgemm (its thread count is set from
 *     the options); every other op that is large enough is split into tasks
 *     of a fixed size on our pool (cpu_pool.h), one pool run per op. Loops
 *     are fused: each op reads its inputs and writes its outputs in one pass
 *     per row or chunk, with no temporary copies of tensors. Attention's
 *     products are sgemm calls on the heads' strided rows (see its section);
 *     its only scratch is the RoPE table and attention_bwd's ds.
 *  3. Determinism: a task's range depends only on the op's dimensions, never
 *     on the thread count, and reductions combine per-task partials in task
 *     order; OpenBLAS splits sgemm over rows and columns, never over K. So
 *     results are bit-identical for any number of threads (tested).
 *  4. Numerics (DESIGN.md): fp32 values; sums over a row or a tensor
 *     (reduce, RMSNorm's mean square, softmax and log-sum-exp sums) are
 *     accumulated in double; softmax and cross-entropy subtract the row max.
 *     RoPE angles are formed in fp32 as Hugging Face does (fp32 inv_freq
 *     times the fp32 position), so our tables match PyTorch's.
 *  5. Data-dependent indexes (embedding ids, cross-entropy targets) are
 *     checked before anything is written: a bad id is an error, never an
 *     out-of-bounds read.
 *  6. Aliasing: ops that may run in place (add, axpby, swiglu, rmsnorm_bwd's
 *     dx = dy, cross-entropy's dlogits = logits) read every input of an
 *     element before writing that element.
 */
#include "nn/backend_impl.h"

#include <cblas.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "nn/cpu.h"
#include "nn/cpu_pool.h"

/* Elements per task of an elementwise op: below two chunks an op runs on
 * the calling thread, where waking a worker would cost more than it saves. */
#define CHUNK ((size_t)16384)
/* Elements per partial sum of a reduction (invariant 3). */
#define RCHUNK ((size_t)65536)
#define MAX_THREADS 64

typedef struct cpu_backend {
    el_backend base;   /* first: el_backend * and cpu_backend * convert */
    el_nn_pool *pool;
    int threads;
    int in_graph;
} cpu_backend;

static cpu_backend *cpu(el_backend *be)
{
    return (cpu_backend *)be;
}

static float *fp(el_view v)
{
    return (float *)v.t->impl + v.off;
}

static int32_t *ip(el_view v)
{
    return (int32_t *)v.t->impl + v.off;
}

static size_t ntasks_for(size_t n, size_t chunk)
{
    return (n + chunk - 1) / chunk;
}

/* Rows per task so that a task covers about CHUNK elements (>= 1 row). */
static size_t rows_per_task(size_t row_cost)
{
    size_t r = CHUNK / (row_cost ? row_cost : 1);
    return r ? r : 1;
}

static void task_range(size_t task, size_t per, size_t n, size_t *lo, size_t *hi)
{
    *lo = task * per;
    *hi = *lo + per < n ? *lo + per : n;
}

static void run(el_backend *be, size_t ntasks, el_nn_pool_fn fn, void *ctx)
{
    el_nn_pool_run(cpu(be)->pool, ntasks, fn, ctx);
}

/* ---- backend object, tensors, transfers ---- */

static void cpu_destroy(el_backend *be)
{
    el_nn_pool_destroy(cpu(be)->pool);
    el_free(be);
}

static int cpu_tensor_init(el_backend *be, el_tensor *t, el_error *err)
{
    t->impl = el_calloc(t->n, 4);
    if (!t->impl)
        return el_error_set(err, EL_ENOMEM, "out of memory for a tensor of %zu elements",
                            t->n);
    return 0;
}

static void cpu_tensor_finish(el_backend *be, el_tensor *t)
{
    el_free(t->impl);
    t->impl = NULL;
}

static int cpu_write(el_backend *be, el_view v, const void *src, el_error *err)
{
    if (v.n)
        memcpy((char *)v.t->impl + v.off * 4, src, v.n * 4);
    return 0;
}

static int cpu_read(el_backend *be, el_view v, void *dst, el_error *err)
{
    if (v.n)
        memcpy(dst, (const char *)v.t->impl + v.off * 4, v.n * 4);
    return 0;
}

static int cpu_sync(el_backend *be, el_error *err)
{
    return 0;
}

static int cpu_graph_begin(el_backend *be, uint64_t key, el_error *err)
{
    if (cpu(be)->in_graph)
        return el_error_set(err, EL_EINTERNAL, "graph_begin: a graph is already open");
    cpu(be)->in_graph = 1;
    return 0;
}

static int cpu_graph_end(el_backend *be, el_error *err)
{
    if (!cpu(be)->in_graph)
        return el_error_set(err, EL_EINTERNAL, "graph_end: no graph is open");
    cpu(be)->in_graph = 0;
    return 0;
}

/* ---- matmul ---- */

static int cpu_matmul(el_backend *be, el_matmul_layout layout, int M, int N,
                      int K, float alpha, el_view A, el_view B, float beta,
                      el_view C, el_error *err)
{
    /* OpenBLAS treats beta == 0 as "C is not read", as BLAS specifies, so
     * an uninitialized (even NaN) C is overwritten. */
    switch (layout) {
    case EL_MM_NT:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, alpha,
                    fp(A), K, fp(B), K, beta, fp(C), N);
        return 0;
    case EL_MM_NN:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha,
                    fp(A), K, fp(B), N, beta, fp(C), N);
        return 0;
    case EL_MM_TN:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, alpha,
                    fp(A), M, fp(B), N, beta, fp(C), N);
        return 0;
    }
    return el_error_set(err, EL_EINTERNAL, "matmul: bad layout %d", (int)layout);
}

/* ---- elementwise ops ---- */

struct ew_ctx {
    size_t n;
    float alpha, beta;
    const float *a, *b;
    float *x, *y;
    int32_t *xi;
    int32_t ivalue;
};

static void fill_f32_task(void *p, size_t task, int worker)
{
    struct ew_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        c->x[i] = c->alpha;
}

static void fill_i32_task(void *p, size_t task, int worker)
{
    struct ew_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        c->xi[i] = c->ivalue;
}

/* An i32 tensor is filled with VALUE converted as C converts (toward zero,
 * as the vulkan backend does), clamped to the i32 range and NaN as 0, so
 * fill(-1) marks targets as not scored. */
static int cpu_fill(el_backend *be, el_view x, float value, el_error *err)
{
    struct ew_ctx c = {.n = x.n, .alpha = value};
    if (x.t->dtype == EL_I32) {
        double r = trunc((double)value);
        if (r != r)
            r = 0;
        c.ivalue = r >= 2147483647.0 ? INT32_MAX
                 : r <= -2147483648.0 ? INT32_MIN : (int32_t)r;
        c.xi = ip(x);
        run(be, ntasks_for(x.n, CHUNK), fill_i32_task, &c);
    } else {
        c.x = fp(x);
        run(be, ntasks_for(x.n, CHUNK), fill_f32_task, &c);
    }
    return 0;
}

static int cpu_copy(el_backend *be, el_view dst, el_view src, el_error *err)
{
    /* memmove: dst and src may be overlapping ranges of one tensor. */
    memmove((char *)dst.t->impl + dst.off * 4,
            (const char *)src.t->impl + src.off * 4, src.n * 4);
    return 0;
}

static void axpby_task(void *p, size_t task, int worker)
{
    struct ew_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    const float *x = c->a;
    float *y = c->y;
    if (c->beta == 0.0f) {
        for (size_t i = lo; i < hi; i++)
            y[i] = c->alpha * x[i];
    } else {
        for (size_t i = lo; i < hi; i++)
            y[i] = c->alpha * x[i] + c->beta * y[i];
    }
}

/* As BLAS does, beta == 0 does not read y (NaN garbage there is dropped). */
static int cpu_axpby(el_backend *be, float alpha, el_view x, float beta,
                     el_view y, el_error *err)
{
    struct ew_ctx c = {.n = x.n, .alpha = alpha, .beta = beta, .a = fp(x), .y = fp(y)};
    run(be, ntasks_for(x.n, CHUNK), axpby_task, &c);
    return 0;
}

static void add_task(void *p, size_t task, int worker)
{
    struct ew_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        c->y[i] = c->a[i] + c->b[i];
}

static int cpu_add(el_backend *be, el_view a, el_view b, el_view c, el_error *err)
{
    struct ew_ctx ctx = {.n = a.n, .a = fp(a), .b = fp(b), .y = fp(c)};
    run(be, ntasks_for(a.n, CHUNK), add_task, &ctx);
    return 0;
}

/* ---- reduce ---- */

struct reduce_ctx {
    el_reduce_op op;
    size_t n;
    const float *x;
    double *partial;   /* one per task */
};

static void reduce_task(void *p, size_t task, int worker)
{
    struct reduce_ctx *c = p;
    size_t lo, hi;
    task_range(task, RCHUNK, c->n, &lo, &hi);
    const float *x = c->x;
    double r;
    if (c->op == EL_REDUCE_MAX) {
        float m = x[lo];
        int nan = 0;
        for (size_t i = lo; i < hi; i++) {
            nan |= x[i] != x[i];
            m = x[i] > m ? x[i] : m;
        }
        r = nan ? NAN : (double)m;
    } else if (c->op == EL_REDUCE_SUMSQ) {
        r = 0;
        for (size_t i = lo; i < hi; i++)
            r += (double)x[i] * x[i];
    } else {
        r = 0;
        for (size_t i = lo; i < hi; i++)
            r += x[i];
    }
    c->partial[task] = r;
}

/* MAX propagates NaN: a NaN anywhere in x (or in out[0] when accumulating)
 * gives NaN, so a diverged tensor cannot hide behind a finite maximum. */
static int cpu_reduce(el_backend *be, el_reduce_op op, el_view x, el_view out,
                      int accumulate, el_error *err)
{
    size_t ntasks = ntasks_for(x.n, RCHUNK);
    double one;
    struct reduce_ctx c = {.op = op, .n = x.n, .x = fp(x)};
    c.partial = ntasks == 1 ? &one : el_malloc(ntasks * sizeof *c.partial);
    if (!c.partial)
        return el_error_set(err, EL_ENOMEM, "reduce: out of memory for %zu partial sums",
                            ntasks);
    run(be, ntasks, reduce_task, &c);
    double r = c.partial[0];
    for (size_t t = 1; t < ntasks; t++) {
        double v = c.partial[t];
        if (op == EL_REDUCE_MAX)
            r = (r != r || v != v) ? NAN : (v > r ? v : r);
        else
            r += v;
    }
    if (c.partial != &one)
        el_free(c.partial);
    float *o = fp(out);
    if (accumulate) {
        double prev = o[0];
        if (op == EL_REDUCE_MAX)
            r = (r != r || prev != prev) ? NAN : (prev > r ? prev : r);
        else
            r += prev;
    }
    o[0] = (float)r;
    return 0;
}

/* ---- embedding ---- */

static int cpu_embedding(el_backend *be, el_view ids, el_view table, int T,
                         int V, int D, el_view out, el_error *err)
{
    const int32_t *id = ip(ids);
    for (int t = 0; t < T; t++)
        if (id[t] < 0 || id[t] >= V)
            return el_error_set(err, EL_EINTERNAL,
                                "embedding: id %d at position %d is outside [0, %d)",
                                (int)id[t], t, V);
    const float *tab = fp(table);
    float *o = fp(out);
    for (int t = 0; t < T; t++)
        memcpy(o + (size_t)t * D, tab + (size_t)id[t] * D, (size_t)D * sizeof *o);
    return 0;
}

/* ---- RMSNorm ---- */

struct rms_ctx {
    size_t T, D, per;
    float eps, beta;
    const float *x, *w, *dy;
    float *y, *rstd, *dx;
    const float *rstd_in;
};

static void rmsnorm_fwd_task(void *p, size_t task, int worker)
{
    struct rms_ctx *c = p;
    size_t lo, hi, D = c->D;
    task_range(task, c->per, c->T, &lo, &hi);
    for (size_t t = lo; t < hi; t++) {
        const float *x = c->x + t * D;
        float *y = c->y + t * D;
        double ss = 0;
        for (size_t i = 0; i < D; i++)
            ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / (double)D + (double)c->eps));
        c->rstd[t] = r;
        for (size_t i = 0; i < D; i++)
            y[i] = x[i] * r * c->w[i];
    }
}

static int cpu_rmsnorm_fwd(el_backend *be, el_view x, el_view w, int T, int D,
                           float eps, el_view y, el_view rstd, el_error *err)
{
    struct rms_ctx c = {.T = (size_t)T, .D = (size_t)D, .eps = eps, .x = fp(x),
                        .w = fp(w), .y = fp(y), .rstd = fp(rstd)};
    c.per = rows_per_task(c.D);
    run(be, ntasks_for(c.T, c.per), rmsnorm_fwd_task, &c);
    return 0;
}

/* y_i = w_i x_i r with r = (mean(x^2) + eps)^-1/2, dr/dx_j = -r^3 x_j / D:
 *   dx_j = r w_j dy_j - x_j r^3 / D * sum_i w_i dy_i x_i. */
static void rmsnorm_bwd_task(void *p, size_t task, int worker)
{
    struct rms_ctx *c = p;
    size_t lo, hi, D = c->D;
    task_range(task, c->per, c->T, &lo, &hi);
    for (size_t t = lo; t < hi; t++) {
        const float *x = c->x + t * D, *dy = c->dy + t * D, *w = c->w;
        float *dx = c->dx + t * D;
        double r = c->rstd_in[t];
        double dot = 0;
        for (size_t i = 0; i < D; i++)
            dot += (double)w[i] * dy[i] * x[i];
        float k = (float)(r * r * r * dot / (double)D);
        float rf = (float)r;
        if (c->beta == 0.0f) {
            for (size_t i = 0; i < D; i++)
                dx[i] = rf * w[i] * dy[i] - x[i] * k;
        } else {
            for (size_t i = 0; i < D; i++) {
                float g = rf * w[i] * dy[i] - x[i] * k;
                dx[i] = c->beta * dx[i] + g;
            }
        }
    }
}

/* beta == 0 does not read dx. */
static int cpu_rmsnorm_bwd(el_backend *be, el_view x, el_view w, el_view rstd,
                           el_view dy, int T, int D, float beta, el_view dx,
                           el_error *err)
{
    struct rms_ctx c = {.T = (size_t)T, .D = (size_t)D, .beta = beta, .x = fp(x),
                        .w = fp(w), .dy = fp(dy), .dx = fp(dx), .rstd_in = fp(rstd)};
    c.per = rows_per_task(c.D);
    run(be, ntasks_for(c.T, c.per), rmsnorm_bwd_task, &c);
    return 0;
}

/* ---- RoPE ---- */

struct rope_ctx {
    size_t rows, S, H, hd, per;
    float *x;
    const float *cs;   /* [S][hd/2] cos then [S][hd/2] sin */
    float sign;
};

static void rope_task(void *p, size_t task, int worker)
{
    struct rope_ctx *c = p;
    size_t lo, hi, half = c->hd / 2;
    task_range(task, c->per, c->rows, &lo, &hi);
    const float *sin_base = c->cs + c->S * half;
    for (size_t r = lo; r < hi; r++) {
        size_t s = r % c->S;
        const float *cs = c->cs + s * half, *sn = sin_base + s * half;
        for (size_t h = 0; h < c->H; h++) {
            float *x = c->x + (r * c->H + h) * c->hd;
            for (size_t i = 0; i < half; i++) {
                float x1 = x[i], x2 = x[i + half];
                float si = c->sign * sn[i];
                x[i] = x1 * cs[i] - x2 * si;
                x[i + half] = x2 * cs[i] + x1 * si;
            }
        }
    }
}

static int cpu_rope(el_backend *be, el_view x, int B, int S, int H, int hd,
                    float theta, int inverse, el_error *err)
{
    size_t half = (size_t)hd / 2;
    float *cs = el_malloc(2 * (size_t)S * half * sizeof *cs);
    if (!cs)
        return el_error_set(err, EL_ENOMEM, "rope: out of memory for a %d x %d table",
                            S, hd / 2);
    /* Hugging Face: inv_freq = 1 / theta^(arange(0, hd, 2) / hd) in fp32, the
     * angle pos * inv_freq in fp32, cos and sin of that fp32 angle. */
    for (size_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)hd;
        float inv = 1.0f / (float)pow((double)theta, (double)e);
        for (size_t s = 0; s < (size_t)S; s++) {
            float ang = (float)s * inv;
            cs[s * half + i] = (float)cos((double)ang);
            cs[(size_t)S * half + s * half + i] = (float)sin((double)ang);
        }
    }
    struct rope_ctx c = {.rows = (size_t)B * S, .S = (size_t)S, .H = (size_t)H,
                         .hd = (size_t)hd, .x = fp(x), .cs = cs,
                         .sign = inverse ? -1.0f : 1.0f};
    c.per = rows_per_task((size_t)H * hd);
    run(be, ntasks_for(c.rows, c.per), rope_task, &c);
    el_free(cs);
    return 0;
}

/* ---- attention ----
 *
 * Per (batch, head) the products go through sgemm with the heads' row
 * strides as leading dimensions (no copies): scores = scale q.k^T, o = p.v
 * forward; dp = do.v^T, dq = ds.k, dk += ds^T.q, dv += p^T.do backward.
 * The causal triangle is covered in blocks of ATT_BLOCK rows (or columns)
 * that stop at the diagonal block, so about half of each S x S product is
 * skipped; what a block computes above the diagonal is overwritten with 0
 * by the row pass (softmax forward, ds backward), which runs on the pool. */

#define ATT_BLOCK 64

typedef struct att_dims {
    size_t B, S, H, KVH, hd, group, qstride, kvstride;
} att_dims;

static att_dims att_dims_of(int B, int S, int H, int KVH, int hd)
{
    att_dims d = {(size_t)B, (size_t)S, (size_t)H, (size_t)KVH, (size_t)hd,
                  (size_t)(H / KVH), (size_t)H * hd, (size_t)KVH * hd};
    return d;
}

/* C[i0.., 0..i1) for each row block [i0, i1): C = alpha A_rows . B^T with B's
 * rows 0..i1 (scores and dp: only columns up to the diagonal block). */
static void gemm_causal_nt(size_t S, size_t hd, float alpha, const float *A,
                           size_t lda, const float *Bm, size_t ldb, float *C)
{
    for (size_t i0 = 0; i0 < S; i0 += ATT_BLOCK) {
        size_t m = S - i0 < ATT_BLOCK ? S - i0 : ATT_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)(i0 + m),
                    (int)hd, alpha, A + i0 * lda, (int)lda, Bm, (int)ldb, 0.0f,
                    C + i0 * S, (int)S);
    }
}

/* OUT rows i = sum_{j <= i} L_ij X_j for lower-triangular L [S x S]
 * (o = p.v, dq = ds.k), overwriting OUT. */
static void gemm_causal_nn(size_t S, size_t hd, float alpha, const float *L,
                           const float *X, size_t ldx, float *out, size_t ldo)
{
    for (size_t i0 = 0; i0 < S; i0 += ATT_BLOCK) {
        size_t m = S - i0 < ATT_BLOCK ? S - i0 : ATT_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd,
                    (int)(i0 + m), alpha, L + i0 * S, (int)S, X, (int)ldx, 0.0f,
                    out + i0 * ldo, (int)ldo);
    }
}

/* OUT rows j += sum_{i >= j} L_ij X_i for lower-triangular L (dk += ds^T.q,
 * dv += p^T.do). */
static void gemm_causal_tn_acc(size_t S, size_t hd, float alpha, const float *L,
                               const float *X, size_t ldx, float *out, size_t ldo)
{
    for (size_t j0 = 0; j0 < S; j0 += ATT_BLOCK) {
        size_t m = S - j0 < ATT_BLOCK ? S - j0 : ATT_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)hd,
                    (int)(S - j0), alpha, L + j0 * S + j0, (int)S, X + j0 * ldx,
                    (int)ldx, 1.0f, out + j0 * ldo, (int)ldo);
    }
}

/* The row pass runs once per op over all B*H*S rows (one pool run, not one
 * per head), between the sgemm phases. */
struct rows_ctx {
    size_t S, rows, per;
    float scale;
    float *p;           /* forward: scores in, probabilities out */
    const float *pin;   /* backward: saved p */
    float *ds;          /* backward: dp in, ds out */
};

/* Causal softmax of rows [lo, hi) (row r is query r % S of head r / S), max
 * subtracted, sum in double; zero above the diagonal. */
static void softmax_rows_task(void *p, size_t task, int worker)
{
    struct rows_ctx *c = p;
    size_t lo, hi, S = c->S;
    task_range(task, c->per, c->rows, &lo, &hi);
    for (size_t r = lo; r < hi; r++) {
        size_t i = r % S;
        float *row = c->p + r * S;
        float mx = row[0];
        for (size_t j = 1; j <= i; j++)
            mx = row[j] > mx ? row[j] : mx;
        double sum = 0;
        for (size_t j = 0; j <= i; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (size_t j = 0; j <= i; j++)
            row[j] *= inv;
        for (size_t j = i + 1; j < S; j++)
            row[j] = 0;
    }
}

/* ds_ij = scale p_ij (dp_ij - sum_j' p_ij' dp_ij') for j <= i, else 0. */
static void ds_rows_task(void *p, size_t task, int worker)
{
    struct rows_ctx *c = p;
    size_t lo, hi, S = c->S;
    task_range(task, c->per, c->rows, &lo, &hi);
    for (size_t r = lo; r < hi; r++) {
        size_t i = r % S;
        const float *prow = c->pin + r * S;
        float *row = c->ds + r * S;
        double rs = 0;
        for (size_t j = 0; j <= i; j++)
            rs += (double)prow[j] * row[j];
        float rsf = (float)rs;
        for (size_t j = 0; j <= i; j++)
            row[j] = c->scale * prow[j] * (row[j] - rsf);
        for (size_t j = i + 1; j < S; j++)
            row[j] = 0;
    }
}

static int cpu_attention_fwd(el_backend *be, el_view q, el_view k, el_view v,
                             int B, int S, int H, int KVH, int hd, float scale,
                             el_view o, el_view p, el_error *err)
{
    att_dims d = att_dims_of(B, S, H, KVH, hd);
    for (size_t b = 0; b < d.B; b++)
        for (size_t h = 0; h < d.H; h++)
            gemm_causal_nt(d.S, d.hd, scale, fp(q) + b * d.S * d.qstride + h * d.hd,
                           d.qstride, fp(k) + b * d.S * d.kvstride + h / d.group * d.hd,
                           d.kvstride, fp(p) + (b * d.H + h) * d.S * d.S);
    struct rows_ctx rc = {.S = d.S, .rows = d.B * d.H * d.S, .per = rows_per_task(d.S),
                          .p = fp(p)};
    run(be, ntasks_for(rc.rows, rc.per), softmax_rows_task, &rc);
    for (size_t b = 0; b < d.B; b++)
        for (size_t h = 0; h < d.H; h++)
            gemm_causal_nn(d.S, d.hd, 1.0f, fp(p) + (b * d.H + h) * d.S * d.S,
                           fp(v) + b * d.S * d.kvstride + h / d.group * d.hd, d.kvstride,
                           fp(o) + b * d.S * d.qstride + h * d.hd, d.qstride);
    return 0;
}

/* dk and dv sum over the query heads of their group, accumulated in head
 * order into zeroed outputs; dq is written per head. Scratch: ds, the size
 * of p. */
static int cpu_attention_bwd(el_backend *be, el_view q, el_view k, el_view v,
                             el_view p, el_view dout, int B, int S, int H,
                             int KVH, int hd, float scale, el_view dq,
                             el_view dk, el_view dv, el_error *err)
{
    att_dims d = att_dims_of(B, S, H, KVH, hd);
    size_t np = d.B * d.H * d.S * d.S;
    float *ds = el_malloc(np * sizeof *ds);
    if (!ds)
        return el_error_set(err, EL_ENOMEM,
                            "attention_bwd: out of memory for %zu scratch floats", np);
    for (size_t b = 0; b < d.B; b++)
        for (size_t h = 0; h < d.H; h++)
            gemm_causal_nt(d.S, d.hd, 1.0f, fp(dout) + b * d.S * d.qstride + h * d.hd,
                           d.qstride, fp(v) + b * d.S * d.kvstride + h / d.group * d.hd,
                           d.kvstride, ds + (b * d.H + h) * d.S * d.S);
    struct rows_ctx rc = {.S = d.S, .rows = d.B * d.H * d.S, .per = rows_per_task(d.S),
                          .scale = scale, .pin = fp(p), .ds = ds};
    run(be, ntasks_for(rc.rows, rc.per), ds_rows_task, &rc);
    size_t nkv = d.B * d.S * d.kvstride;
    memset(fp(dk), 0, nkv * sizeof(float));
    memset(fp(dv), 0, nkv * sizeof(float));
    for (size_t b = 0; b < d.B; b++)
        for (size_t h = 0; h < d.H; h++) {
            size_t qoff = b * d.S * d.qstride + h * d.hd;
            size_t kvoff = b * d.S * d.kvstride + h / d.group * d.hd;
            const float *dsb = ds + (b * d.H + h) * d.S * d.S;
            const float *pb = fp(p) + (b * d.H + h) * d.S * d.S;
            gemm_causal_nn(d.S, d.hd, 1.0f, dsb, fp(k) + kvoff, d.kvstride, fp(dq) + qoff,
                           d.qstride);
            gemm_causal_tn_acc(d.S, d.hd, 1.0f, dsb, fp(q) + qoff, d.qstride,
                               fp(dk) + kvoff, d.kvstride);
            gemm_causal_tn_acc(d.S, d.hd, 1.0f, pb, fp(dout) + qoff, d.qstride,
                               fp(dv) + kvoff, d.kvstride);
        }
    el_free(ds);
    return 0;
}

/* ---- SwiGLU ---- */

struct swiglu_ctx {
    size_t n;
    const float *g, *u, *dh;
    float *h, *dg, *du;
};

static void swiglu_fwd_task(void *p, size_t task, int worker)
{
    struct swiglu_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float g = c->g[i];
        c->h[i] = g / (1.0f + expf(-g)) * c->u[i];
    }
}

static int cpu_swiglu_fwd(el_backend *be, el_view g, el_view u, el_view h,
                          el_error *err)
{
    struct swiglu_ctx c = {.n = g.n, .g = fp(g), .u = fp(u), .h = fp(h)};
    run(be, ntasks_for(g.n, CHUNK), swiglu_fwd_task, &c);
    return 0;
}

/* silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g). */
static void swiglu_bwd_task(void *p, size_t task, int worker)
{
    struct swiglu_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float g = c->g[i], u = c->u[i], dh = c->dh[i];
        float s = 1.0f / (1.0f + expf(-g));
        c->dg[i] = dh * u * s * (1.0f + g * (1.0f - s));
        c->du[i] = dh * g * s;
    }
}

static int cpu_swiglu_bwd(el_backend *be, el_view g, el_view u, el_view dh,
                          el_view dg, el_view du, el_error *err)
{
    struct swiglu_ctx c = {.n = g.n, .g = fp(g), .u = fp(u), .dh = fp(dh),
                           .dg = fp(dg), .du = fp(du)};
    run(be, ntasks_for(g.n, CHUNK), swiglu_bwd_task, &c);
    return 0;
}

/* ---- cross-entropy ---- */

struct ce_ctx {
    size_t T, V, per;
    float grad_scale;
    const float *logits;
    const int32_t *targets;
    float *loss, *dlogits;
};

static void cross_entropy_task(void *p, size_t task, int worker)
{
    struct ce_ctx *c = p;
    size_t lo, hi, V = c->V;
    task_range(task, c->per, c->T, &lo, &hi);
    for (size_t t = lo; t < hi; t++) {
        const float *l = c->logits + t * V;
        float *dl = c->dlogits ? c->dlogits + t * V : NULL;
        int32_t target = c->targets[t];
        if (target < 0) {
            c->loss[t] = 0;
            if (dl)
                memset(dl, 0, V * sizeof *dl);
            continue;
        }
        float mx = l[0];
        for (size_t j = 1; j < V; j++)
            mx = l[j] > mx ? l[j] : mx;
        double sum = 0;
        for (size_t j = 0; j < V; j++)
            sum += expf(l[j] - mx);
        double lse = (double)mx + log(sum);
        c->loss[t] = (float)(lse - (double)l[target]);
        if (!dl)
            continue;
        /* In place when dl == l: element j is read before it is written. */
        float scale = (float)((double)c->grad_scale / sum);
        for (size_t j = 0; j < V; j++)
            dl[j] = expf(l[j] - mx) * scale;
        dl[target] -= c->grad_scale;
    }
}

static int cpu_cross_entropy(el_backend *be, el_view logits, el_view targets,
                             int T, int V, float grad_scale, el_view loss,
                             el_view dlogits, el_error *err)
{
    const int32_t *tg = ip(targets);
    for (int t = 0; t < T; t++)
        if (tg[t] < -1 || tg[t] >= V)
            return el_error_set(err, EL_EINTERNAL,
                                "cross_entropy: target %d at row %d is outside [-1, %d)",
                                (int)tg[t], t, V);
    struct ce_ctx c = {.T = (size_t)T, .V = (size_t)V, .grad_scale = grad_scale,
                       .logits = fp(logits), .targets = tg, .loss = fp(loss),
                       .dlogits = dlogits.t ? fp(dlogits) : NULL};
    c.per = rows_per_task(c.V);
    run(be, ntasks_for(c.T, c.per), cross_entropy_task, &c);
    return 0;
}

/* ---- AdamW ---- */

struct adamw_ctx {
    size_t n;
    float lr, b1, b2, eps, wd, inv_bc1, inv_bc2, clip;
    float *p, *m, *v;
    const float *g;
};

static void adamw_task(void *p, size_t task, int worker)
{
    struct adamw_ctx *c = p;
    size_t lo, hi;
    task_range(task, CHUNK, c->n, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float g = c->g[i] * c->clip;
        float m = c->b1 * c->m[i] + (1.0f - c->b1) * g;
        float v = c->b2 * c->v[i] + (1.0f - c->b2) * g * g;
        c->m[i] = m;
        c->v[i] = v;
        float mhat = m * c->inv_bc1, vhat = v * c->inv_bc2;
        c->p[i] -= c->lr * (mhat / (sqrtf(vhat) + c->eps) + c->wd * c->p[i]);
    }
}

static int cpu_adamw(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                     el_view hp, el_view gnorm_sq, el_error *err)
{
    const float *h = fp(hp);
    if (!(h[5] > 0.0f) || !(h[6] > 0.0f))
        return el_error_set(err, EL_EINTERNAL,
                            "adamw: bias corrections %g and %g must be positive "
                            "(hp[5] = 1 - beta1^t, hp[6] = 1 - beta2^t with t >= 1)",
                            (double)h[5], (double)h[6]);
    double clip = 1.0;
    if (h[7] > 0.0f) {
        double norm = sqrt((double)fp(gnorm_sq)[0]);
        double s = (double)h[7] / (norm + 1e-6);
        clip = s < 1.0 ? s : 1.0;
    }
    struct adamw_ctx c = {.n = p.n, .lr = h[0], .b1 = h[1], .b2 = h[2], .eps = h[3],
                          .wd = h[4], .inv_bc1 = (float)(1.0 / h[5]),
                          .inv_bc2 = (float)(1.0 / h[6]), .clip = (float)clip,
                          .p = fp(p), .m = fp(m), .v = fp(v), .g = fp(g)};
    run(be, ntasks_for(p.n, CHUNK), adamw_task, &c);
    return 0;
}

/* ---- constructor ---- */

static const el_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .tensor_init = cpu_tensor_init,
    .tensor_finish = cpu_tensor_finish,
    .write = cpu_write,
    .read = cpu_read,
    .sync = cpu_sync,
    .graph_begin = cpu_graph_begin,
    .graph_end = cpu_graph_end,
    .matmul = cpu_matmul,
    .fill = cpu_fill,
    .copy = cpu_copy,
    .axpby = cpu_axpby,
    .add = cpu_add,
    .reduce = cpu_reduce,
    .embedding = cpu_embedding,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope = cpu_rope,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .cross_entropy = cpu_cross_entropy,
    .adamw = cpu_adamw,
};

/* Cores this process may run on (its affinity mask), at least 1. */
static int usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* "0.3.21" from OpenBLAS's "OpenBLAS 0.3.21 NO_LAPACKE ..." config string. */
static void openblas_version(char *out, size_t size)
{
    const char *cfg = openblas_get_config();
    snprintf(out, size, "?");
    if (cfg && !strncmp(cfg, "OpenBLAS ", 9)) {
        size_t n = strcspn(cfg + 9, " ");
        snprintf(out, size, "%.*s", (int)(n < 32 ? n : 32), cfg + 9);
    }
}

/* Vector class of OpenBLAS kernels (cpu.h): 3 AVX-512, 2 AVX2, 1 AVX, 0 SSE;
 * -1 for a name not listed here, about which nothing is claimed. */
static int kernel_class(const char *core)
{
    static const struct {
        const char *name;
        int cls;
    } table[] = {
        {"SapphireRapids", 3}, {"Cooperlake", 3}, {"SkylakeX", 3},
        {"Haswell", 2}, {"Zen", 2}, {"Excavator", 2},
        {"Sandybridge", 1}, {"Bulldozer", 1}, {"Piledriver", 1}, {"Steamroller", 1},
        {"Prescott", 0}, {"Core2", 0}, {"Penryn", 0}, {"Dunnington", 0},
        {"Nehalem", 0}, {"Atom", 0}, {"Nano", 0}, {"Barcelona", 0}, {"Bobcat", 0},
        {"Opteron", 0}, {"Opteron(SSE3)", 0}, {"Athlon", 0}, {"Northwood", 0},
        {"Banias", 0}, {"Katmai", 0}, {"Coppermine", 0},
    };
    for (size_t i = 0; core && i < sizeof table / sizeof table[0]; i++)
        if (!strcasecmp(core, table[i].name))
            return table[i].cls;
    return -1;
}

const char *el_nn_cpu_blas_coretype_hint(void)
{
#if defined(__x86_64__) || defined(__i386__)
    if (getenv("OPENBLAS_CORETYPE"))
        return NULL;
    int have = kernel_class(openblas_get_corename());
    int cpu_class = 0;
    static const char *const name[] = {NULL, "Sandybridge", "Haswell", "SkylakeX"};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        cpu_class = 3;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        cpu_class = 2;
    else if (__builtin_cpu_supports("avx"))
        cpu_class = 1;
    if (have < 0 || have >= cpu_class)
        return NULL;
    return name[cpu_class];
#else
    return NULL;
#endif
}

/* Sets OpenBLAS's (process-wide) thread count to the options' threads, so
 * with two cpu backends alive the one created last decides it. */
int el_nn_cpu_create(const el_backend_options *opts, el_backend **out,
                     el_error *err)
{
    *out = NULL;
    int threads = opts ? opts->threads : 0;
    if (threads < 0)
        return el_error_set(err, EL_EUSAGE, "thread count %d is negative", threads);
    if (threads == 0)
        threads = usable_cores();
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    cpu_backend *cb = el_calloc(1, sizeof *cb);
    if (!cb)
        return el_error_set(err, EL_ENOMEM, "out of memory for the cpu backend");
    int rc = el_nn_pool_create(threads, &cb->pool, err);
    if (rc) {
        el_free(cb);
        return rc;
    }
    cb->threads = el_nn_pool_size(cb->pool);
    openblas_set_num_threads(cb->threads);
    cb->base.ops = &cpu_ops;
    cb->base.kind = EL_BACKEND_CPU;
    char version[40];
    openblas_version(version, sizeof version);
    const char *core = openblas_get_corename();
    snprintf(cb->base.name, sizeof cb->base.name, "cpu (OpenBLAS %s %s, %d thread%s)",
             version, core ? core : "?", cb->threads, cb->threads == 1 ? "" : "s");
    el_log_debug("cpu backend: %s; OpenBLAS config: %s", cb->base.name,
                 openblas_get_config());
    const char *hint = el_nn_cpu_blas_coretype_hint();
    if (hint)
        el_log_info("OpenBLAS chose %s kernels for a CPU that runs %s ones; "
                    "OPENBLAS_CORETYPE=%s makes matmuls several times faster",
                    core ? core : "?", hint, hint);
    *out = &cb->base;
    return 0;
}
