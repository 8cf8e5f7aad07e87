/* Public entry points of the backend interface: argument checks, then
 * dispatch through the backend's op table. Checking here, once, lets both
 * backends trust their views (backend_impl.h). */
#include "nn/backend_impl.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

int el_nn_backend_parse(const char *s, el_backend_kind *out, el_error *err)
{
    if (!strcmp(s, "auto"))
        *out = EL_BACKEND_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = EL_BACKEND_CPU;
    else if (!strcmp(s, "vulkan"))
        *out = EL_BACKEND_VULKAN;
    else
        return el_error_set(err, EL_EUSAGE,
                            "unknown backend \"%s\" (expected auto, cpu or vulkan)", s);
    return 0;
}

int el_nn_backend_create(const el_backend_options *opts, el_backend **out,
                         el_error *err)
{
    el_backend_options o = {0};
    if (opts)
        o = *opts;
    *out = NULL;
    switch (o.kind) {
    case EL_BACKEND_CPU:
        return el_nn_cpu_create(&o, out, err);
    case EL_BACKEND_VULKAN:
        return el_nn_vulkan_create(&o, out, err);
    case EL_BACKEND_AUTO:
    default:
        if (el_nn_vulkan_has_gpu() && el_nn_vulkan_create(&o, out, NULL) == 0)
            return 0;
        return el_nn_cpu_create(&o, out, err);
    }
}

void el_nn_backend_destroy(el_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

el_backend_kind el_nn_backend_kind(const el_backend *be)
{
    return be->kind;
}

const char *el_nn_backend_name(const el_backend *be)
{
    return be->name;
}

el_tensor *el_nn_tensor_create(el_backend *be, el_dtype dtype, size_t n,
                               el_error *err)
{
    if (n == 0 || n > ((size_t)1 << 40)) {
        el_error_set(err, EL_EINTERNAL, "tensor of %zu elements refused", n);
        return NULL;
    }
    el_tensor *t = el_calloc(1, sizeof *t);
    if (!t) {
        el_error_set(err, EL_ENOMEM, "out of memory for a tensor");
        return NULL;
    }
    t->dtype = dtype;
    t->n = n;
    if (be->ops->tensor_init(be, t, err) != 0) {
        el_free(t);
        return NULL;
    }
    return t;
}

void el_nn_tensor_destroy(el_backend *be, el_tensor *t)
{
    if (!t)
        return;
    be->ops->tensor_finish(be, t);
    el_free(t);
}

size_t el_nn_tensor_len(const el_tensor *t)
{
    return t->n;
}

el_view el_nn_view(el_tensor *t, size_t off, size_t n)
{
    el_view v = {t, off, n};
    return v;
}

el_view el_nn_whole(el_tensor *t)
{
    el_view v = {t, 0, t ? t->n : 0};
    return v;
}

/* A view is valid when it lies inside its tensor, has the expected dtype and
 * holds at least NEED elements. */
static int check(el_view v, el_dtype dtype, size_t need, const char *op,
                 const char *name, el_error *err)
{
    if (!v.t)
        return el_error_set(err, EL_EINTERNAL, "%s: %s is missing", op, name);
    if (v.off > v.t->n || v.n > v.t->n - v.off)
        return el_error_set(err, EL_EINTERNAL,
                            "%s: %s [%zu, +%zu) lies outside its tensor of %zu",
                            op, name, v.off, v.n, v.t->n);
    if (v.t->dtype != dtype)
        return el_error_set(err, EL_EINTERNAL, "%s: %s has the wrong dtype", op, name);
    if (v.n < need)
        return el_error_set(err, EL_EINTERNAL,
                            "%s: %s holds %zu elements, needs %zu", op, name, v.n, need);
    return 0;
}

static int dims(const char *op, el_error *err)
{
    return el_error_set(err, EL_EINTERNAL, "%s: dimensions must be positive", op);
}

#define CHECK(v, dt, need, name) \
    do { int rc_ = check(v, dt, need, OP, name, err); if (rc_) return rc_; } while (0)
#define POSITIVE(cond) \
    do { if (!(cond)) return dims(OP, err); } while (0)

int el_nn_write(el_backend *be, el_view v, const void *src, el_error *err)
{
    const char *OP = "write";
    if (!v.t)
        return el_error_set(err, EL_EINTERNAL, "write: no tensor");
    CHECK(v, v.t->dtype, 0, "view");
    return be->ops->write(be, v, src, err);
}

int el_nn_read(el_backend *be, el_view v, void *dst, el_error *err)
{
    const char *OP = "read";
    if (!v.t)
        return el_error_set(err, EL_EINTERNAL, "read: no tensor");
    CHECK(v, v.t->dtype, 0, "view");
    return be->ops->read(be, v, dst, err);
}

int el_nn_sync(el_backend *be, el_error *err)
{
    return be->ops->sync(be, err);
}

int el_nn_graph_begin(el_backend *be, uint64_t key, el_error *err)
{
    if (!key)
        return el_error_set(err, EL_EINTERNAL, "graph key must be nonzero");
    return be->ops->graph_begin(be, key, err);
}

int el_nn_graph_end(el_backend *be, el_error *err)
{
    return be->ops->graph_end(be, err);
}

int el_nn_matmul(el_backend *be, el_matmul_layout layout, int M, int N, int K,
                 float alpha, el_view A, el_view B, float beta, el_view C,
                 el_error *err)
{
    const char *OP = "matmul";
    POSITIVE(M > 0 && N > 0 && K > 0);
    if (layout != EL_MM_NT && layout != EL_MM_NN && layout != EL_MM_TN)
        return el_error_set(err, EL_EINTERNAL, "matmul: bad layout %d", (int)layout);
    size_t m = (size_t)M, n = (size_t)N, k = (size_t)K;
    CHECK(A, EL_F32, m * k, "A");
    CHECK(B, EL_F32, n * k, "B");
    CHECK(C, EL_F32, m * n, "C");
    return be->ops->matmul(be, layout, M, N, K, alpha, A, B, beta, C, err);
}

int el_nn_fill(el_backend *be, el_view x, float value, el_error *err)
{
    const char *OP = "fill";
    if (!x.t)
        return el_error_set(err, EL_EINTERNAL, "fill: no tensor");
    CHECK(x, x.t->dtype, 1, "x");
    return be->ops->fill(be, x, value, err);
}

int el_nn_copy(el_backend *be, el_view dst, el_view src, el_error *err)
{
    const char *OP = "copy";
    if (!src.t)
        return el_error_set(err, EL_EINTERNAL, "copy: no source");
    CHECK(src, src.t->dtype, 1, "src");
    CHECK(dst, src.t->dtype, src.n, "dst");
    return be->ops->copy(be, dst, src, err);
}

int el_nn_axpby(el_backend *be, float alpha, el_view x, float beta, el_view y,
                el_error *err)
{
    const char *OP = "axpby";
    CHECK(x, EL_F32, 1, "x");
    CHECK(y, EL_F32, x.n, "y");
    return be->ops->axpby(be, alpha, x, beta, y, err);
}

int el_nn_add(el_backend *be, el_view a, el_view b, el_view c, el_error *err)
{
    const char *OP = "add";
    CHECK(a, EL_F32, 1, "a");
    CHECK(b, EL_F32, a.n, "b");
    CHECK(c, EL_F32, a.n, "c");
    return be->ops->add(be, a, b, c, err);
}

int el_nn_reduce(el_backend *be, el_reduce_op op, el_view x, el_view out,
                 int accumulate, el_error *err)
{
    const char *OP = "reduce";
    if (op != EL_REDUCE_SUM && op != EL_REDUCE_MAX && op != EL_REDUCE_SUMSQ)
        return el_error_set(err, EL_EINTERNAL, "reduce: bad op %d", (int)op);
    CHECK(x, EL_F32, 1, "x");
    CHECK(out, EL_F32, 1, "out");
    return be->ops->reduce(be, op, x, out, accumulate, err);
}

int el_nn_embedding(el_backend *be, el_view ids, el_view table, int T, int V,
                    int D, el_view out, el_error *err)
{
    const char *OP = "embedding";
    POSITIVE(T > 0 && V > 0 && D > 0);
    CHECK(ids, EL_I32, (size_t)T, "ids");
    CHECK(table, EL_F32, (size_t)V * D, "table");
    CHECK(out, EL_F32, (size_t)T * D, "out");
    return be->ops->embedding(be, ids, table, T, V, D, out, err);
}

int el_nn_rmsnorm_fwd(el_backend *be, el_view x, el_view w, int T, int D,
                      float eps, el_view y, el_view rstd, el_error *err)
{
    const char *OP = "rmsnorm_fwd";
    POSITIVE(T > 0 && D > 0);
    CHECK(x, EL_F32, (size_t)T * D, "x");
    CHECK(w, EL_F32, (size_t)D, "w");
    CHECK(y, EL_F32, (size_t)T * D, "y");
    CHECK(rstd, EL_F32, (size_t)T, "rstd");
    return be->ops->rmsnorm_fwd(be, x, w, T, D, eps, y, rstd, err);
}

int el_nn_rmsnorm_bwd(el_backend *be, el_view x, el_view w, el_view rstd,
                      el_view dy, int T, int D, float beta, el_view dx,
                      el_error *err)
{
    const char *OP = "rmsnorm_bwd";
    POSITIVE(T > 0 && D > 0);
    CHECK(x, EL_F32, (size_t)T * D, "x");
    CHECK(w, EL_F32, (size_t)D, "w");
    CHECK(rstd, EL_F32, (size_t)T, "rstd");
    CHECK(dy, EL_F32, (size_t)T * D, "dy");
    CHECK(dx, EL_F32, (size_t)T * D, "dx");
    return be->ops->rmsnorm_bwd(be, x, w, rstd, dy, T, D, beta, dx, err);
}

int el_nn_rope(el_backend *be, el_view x, int B, int S, int H, int hd,
               float theta, int inverse, el_error *err)
{
    const char *OP = "rope";
    POSITIVE(B > 0 && S > 0 && H > 0 && hd > 0);
    if (hd % 2)
        return el_error_set(err, EL_EINTERNAL, "rope: head dim %d is odd", hd);
    CHECK(x, EL_F32, (size_t)B * S * H * hd, "x");
    return be->ops->rope(be, x, B, S, H, hd, theta, inverse, err);
}

static int attn_dims(int H, int KVH, el_error *err)
{
    if (KVH <= 0 || H % KVH)
        return el_error_set(err, EL_EINTERNAL,
                            "attention: %d heads do not divide into %d kv heads", H, KVH);
    return 0;
}

int el_nn_attention_fwd(el_backend *be, el_view q, el_view k, el_view v,
                        int B, int S, int H, int KVH, int hd, float scale,
                        el_view o, el_view p, el_error *err)
{
    const char *OP = "attention_fwd";
    POSITIVE(B > 0 && S > 0 && H > 0 && hd > 0);
    int rc = attn_dims(H, KVH, err);
    if (rc)
        return rc;
    size_t rows = (size_t)B * S;
    CHECK(q, EL_F32, rows * H * hd, "q");
    CHECK(k, EL_F32, rows * KVH * hd, "k");
    CHECK(v, EL_F32, rows * KVH * hd, "v");
    CHECK(o, EL_F32, rows * H * hd, "o");
    CHECK(p, EL_F32, (size_t)B * H * S * S, "p");
    return be->ops->attention_fwd(be, q, k, v, B, S, H, KVH, hd, scale, o, p, err);
}

int el_nn_attention_bwd(el_backend *be, el_view q, el_view k, el_view v,
                        el_view p, el_view dout, int B, int S, int H, int KVH,
                        int hd, float scale, el_view dq, el_view dk,
                        el_view dv, el_error *err)
{
    const char *OP = "attention_bwd";
    POSITIVE(B > 0 && S > 0 && H > 0 && hd > 0);
    int rc = attn_dims(H, KVH, err);
    if (rc)
        return rc;
    size_t rows = (size_t)B * S;
    CHECK(q, EL_F32, rows * H * hd, "q");
    CHECK(k, EL_F32, rows * KVH * hd, "k");
    CHECK(v, EL_F32, rows * KVH * hd, "v");
    CHECK(p, EL_F32, (size_t)B * H * S * S, "p");
    CHECK(dout, EL_F32, rows * H * hd, "dout");
    CHECK(dq, EL_F32, rows * H * hd, "dq");
    CHECK(dk, EL_F32, rows * KVH * hd, "dk");
    CHECK(dv, EL_F32, rows * KVH * hd, "dv");
    return be->ops->attention_bwd(be, q, k, v, p, dout, B, S, H, KVH, hd, scale,
                                  dq, dk, dv, err);
}

int el_nn_swiglu_fwd(el_backend *be, el_view g, el_view u, el_view h,
                     el_error *err)
{
    const char *OP = "swiglu_fwd";
    CHECK(g, EL_F32, 1, "g");
    CHECK(u, EL_F32, g.n, "u");
    CHECK(h, EL_F32, g.n, "h");
    return be->ops->swiglu_fwd(be, g, u, h, err);
}

int el_nn_swiglu_bwd(el_backend *be, el_view g, el_view u, el_view dh,
                     el_view dg, el_view du, el_error *err)
{
    const char *OP = "swiglu_bwd";
    CHECK(g, EL_F32, 1, "g");
    CHECK(u, EL_F32, g.n, "u");
    CHECK(dh, EL_F32, g.n, "dh");
    CHECK(dg, EL_F32, g.n, "dg");
    CHECK(du, EL_F32, g.n, "du");
    return be->ops->swiglu_bwd(be, g, u, dh, dg, du, err);
}

int el_nn_cross_entropy(el_backend *be, el_view logits, el_view targets,
                        int T, int V, float grad_scale, el_view loss,
                        el_view dlogits, el_error *err)
{
    const char *OP = "cross_entropy";
    POSITIVE(T > 0 && V > 0);
    CHECK(logits, EL_F32, (size_t)T * V, "logits");
    CHECK(targets, EL_I32, (size_t)T, "targets");
    CHECK(loss, EL_F32, (size_t)T, "loss");
    if (dlogits.t)
        CHECK(dlogits, EL_F32, (size_t)T * V, "dlogits");
    return be->ops->cross_entropy(be, logits, targets, T, V, grad_scale, loss,
                                  dlogits, err);
}

int el_nn_adamw(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                el_view hp, el_view gnorm_sq, el_error *err)
{
    const char *OP = "adamw";
    CHECK(p, EL_F32, 1, "p");
    CHECK(g, EL_F32, p.n, "g");
    CHECK(m, EL_F32, p.n, "m");
    CHECK(v, EL_F32, p.n, "v");
    CHECK(hp, EL_F32, 8, "hp");
    CHECK(gnorm_sq, EL_F32, 1, "gnorm_sq");
    return be->ops->adamw(be, p, g, m, v, hp, gnorm_sq, err);
}
