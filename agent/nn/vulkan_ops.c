/* Host side of the vulkan backend's model ops: embedding, RMSNorm, RoPE,
 * attention, SwiGLU, cross-entropy and AdamW. Each op packs its dims into the
 * push constants of its shader (shaders/<name>.comp, conventions in
 * shaders/ops_common.glsl and vulkan_impl.h) and issues it through
 * el_vk_dispatch, which inserts the barriers and records or replays.
 *
 * Design:
 *  1. No op allocates: every pass writes only the op's outputs (attention's
 *     backward parks its per-row softmax term in dq, see
 *     shaders/ops_attention_bwd.glsl), so an op can be recorded into a
 *     replayed graph without owning memory that must outlive it.
 *  2. A view larger than one binding (caps.max_view_elems, i.e.
 *     maxStorageBufferRange or $EDGELOOP_VK_MAX_BINDING) is split into
 *     chunks along the op's independent axis: elements for the elementwise
 *     ops, rows for the row ops, sequences for attention, row ranges of the
 *     table for embedding. The split depends only on shapes and the device,
 *     so a graph replays it identically. When one unit (a row, a sequence)
 *     does not fit, the op fails with EL_EUNAVAIL and says which.
 *  3. Shaders use 32-bit indices; chunks are capped at 2^30 elements, which
 *     keeps every index inside a binding below 2^32.
 *  4. lavapipe silently ends an invocation's loops after 65535 back-edges in
 *     total (shaders/ops_common.glsl note 4), so the work of one invocation
 *     is bounded by shape, not by the data: cross-entropy gives each row a
 *     workgroup (at most max_groups rows a dispatch, so no workgroup takes
 *     two), and attention's backward issues one key-side dispatch per query
 *     head of a kv group. What remains grows with S * hd (attention) or D
 *     (RMSNorm); on a CPU device a shape whose estimate passes the limit is
 *     refused with EL_EUNAVAIL rather than computed wrong (loop_budget).
 */
#include "nn/vulkan_impl.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Must match OPS_LOCAL in shaders/ops_common.glsl. */
#define OPS_LOCAL 64u
/* Largest chunk in elements (design note 3). */
#define OPS_MAX_CHUNK ((size_t)1 << 30)

static el_view sub(el_view v, size_t off, size_t n)
{
    el_view r = {v.t, v.off + off, n};
    return r;
}

/* Elements one binding may hold for these ops. */
static size_t chunk_elems(el_backend *be)
{
    size_t max = el_vk_backend_caps(be)->max_view_elems;
    return max < OPS_MAX_CHUNK ? max : OPS_MAX_CHUNK;
}

/* How many units of UNIT elements fit one binding (0 when not even one). */
static size_t units_per_chunk(el_backend *be, size_t unit)
{
    return chunk_elems(be) / unit;
}

static int too_large(const char *op, const char *what, size_t need,
                     el_backend *be, el_error *err)
{
    return el_error_set(err, EL_EUNAVAIL,
                        "%s: %s of %zu elements does not fit one storage "
                        "binding of this device (%zu elements)",
                        op, what, need, chunk_elems(be));
}

/* lavapipe's limit on loop back-edges per invocation, less a margin for the
 * grid-stride loop and the estimates' rounding. */
#define LOOP_LIMIT 65000u

/* Refuses an op whose invocations would take more than LOOP_LIMIT loop
 * back-edges (BACKEDGES, estimated from the shader's loops) on a software
 * rasterizer, whose loop limiter would cut them short silently (design
 * note 4). Returns 0 or EL_EUNAVAIL with ERR set. */
static int loop_budget(el_backend *be, const char *op, size_t backedges,
                       el_error *err)
{
    if (!el_vk_backend_caps(be)->is_cpu || backedges <= LOOP_LIMIT)
        return 0;
    return el_error_set(err, EL_EUNAVAIL,
                        "%s: this shape needs about %zu loop steps per shader "
                        "invocation, more than the software Vulkan driver runs "
                        "(65535); use the cpu backend", op, backedges);
}

/* At most ROWS units of ITEMS_PER invocations each, so that one dispatch
 * never gives an invocation two rows of a row op: the grid-stride loop
 * would add their loop steps up (note 4). */
static size_t cap_rows(el_backend *be, size_t rows, size_t items_per)
{
    size_t most = (size_t)el_vk_backend_caps(be)->max_groups[0] * OPS_LOCAL / items_per;
    if (most == 0)
        most = 1;
    return rows < most ? rows : most;
}

/* Back-edges of one OPS_DOT / OPS_AXPY over N elements. */
static size_t dot_steps(size_t n)
{
    return n / 4 + n % 4 + 2;
}

/* Issues SHADER as GROUPS workgroups, capped at the device limit (the
 * shaders loop with a grid stride). Returns el_vk_dispatch's result. */
static int dispatch_groups(el_backend *be, const char *shader,
                           const el_view *views, uint32_t nviews,
                           uint32_t write_mask, const void *push,
                           uint32_t push_size, size_t groups, el_error *err)
{
    el_vk_kernel k;
    memset(&k, 0, sizeof k);
    k.shader = shader;
    uint32_t max_groups = el_vk_backend_caps(be)->max_groups[0];
    if (groups > max_groups)
        groups = max_groups;
    if (groups == 0)
        groups = 1;
    return el_vk_dispatch(be, &k, views, nviews, write_mask, push, push_size,
                          (uint32_t)groups, 1, 1, err);
}

/* Issues SHADER over ITEMS work items, one invocation each. */
static int dispatch(el_backend *be, const char *shader, const el_view *views,
                    uint32_t nviews, uint32_t write_mask, const void *push,
                    uint32_t push_size, size_t items, el_error *err)
{
    return dispatch_groups(be, shader, views, nviews, write_mask, push,
                           push_size, (items + OPS_LOCAL - 1) / OPS_LOCAL, err);
}

/* ---- embedding ---- */

struct embedding_push {
    uint32_t T, V, D, v0, vn;
};

int el_vk_op_embedding(el_backend *be, el_view ids, el_view table, int T, int V,
                       int D, el_view out, el_error *err)
{
    size_t d = (size_t)D;
    size_t rows = units_per_chunk(be, d);
    if (rows == 0)
        return too_large("embedding", "a row", d, be, err);
    for (size_t t0 = 0; t0 < (size_t)T; t0 += rows) {
        size_t tn = (size_t)T - t0 < rows ? (size_t)T - t0 : rows;
        for (size_t v0 = 0; v0 < (size_t)V; v0 += rows) {
            size_t vn = (size_t)V - v0 < rows ? (size_t)V - v0 : rows;
            el_view views[3] = {
                sub(ids, t0, tn),
                sub(table, v0 * d, vn * d),
                sub(out, t0 * d, tn * d),
            };
            struct embedding_push pc = {(uint32_t)tn, (uint32_t)V, (uint32_t)D,
                                        (uint32_t)v0, (uint32_t)vn};
            int rc = dispatch(be, "embedding", views, 3, 1u << 2, &pc,
                              sizeof pc, tn * d, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- RMSNorm ---- */

struct rmsnorm_fwd_push {
    uint32_t T, D;
    float eps;
};

int el_vk_op_rmsnorm_fwd(el_backend *be, el_view x, el_view w, int T, int D,
                         float eps, el_view y, el_view rstd, el_error *err)
{
    size_t d = (size_t)D;
    size_t rows = units_per_chunk(be, d);
    if (rows == 0)
        return too_large("rmsnorm_fwd", "a row", d, be, err);
    int rc0 = loop_budget(be, "rmsnorm_fwd", 2 * d + 2, err);
    if (rc0)
        return rc0;
    rows = cap_rows(be, rows, 1);
    for (size_t t0 = 0; t0 < (size_t)T; t0 += rows) {
        size_t tn = (size_t)T - t0 < rows ? (size_t)T - t0 : rows;
        el_view views[4] = {
            sub(x, t0 * d, tn * d),
            sub(w, 0, d),
            sub(y, t0 * d, tn * d),
            sub(rstd, t0, tn),
        };
        struct rmsnorm_fwd_push pc = {(uint32_t)tn, (uint32_t)D, eps};
        int rc = dispatch(be, "rmsnorm_fwd", views, 4, (1u << 2) | (1u << 3),
                          &pc, sizeof pc, tn, err);
        if (rc)
            return rc;
    }
    return 0;
}

struct rmsnorm_bwd_push {
    uint32_t T, D;
    float beta;
};

int el_vk_op_rmsnorm_bwd(el_backend *be, el_view x, el_view w, el_view rstd,
                         el_view dy, int T, int D, float beta, el_view dx,
                         el_error *err)
{
    size_t d = (size_t)D;
    size_t rows = units_per_chunk(be, d);
    if (rows == 0)
        return too_large("rmsnorm_bwd", "a row", d, be, err);
    int rc0 = loop_budget(be, "rmsnorm_bwd", 2 * d + 2, err);
    if (rc0)
        return rc0;
    rows = cap_rows(be, rows, 1);
    for (size_t t0 = 0; t0 < (size_t)T; t0 += rows) {
        size_t tn = (size_t)T - t0 < rows ? (size_t)T - t0 : rows;
        el_view views[5] = {
            sub(x, t0 * d, tn * d),
            sub(w, 0, d),
            sub(rstd, t0, tn),
            sub(dy, t0 * d, tn * d),
            sub(dx, t0 * d, tn * d),
        };
        struct rmsnorm_bwd_push pc = {(uint32_t)tn, (uint32_t)D, beta};
        int rc = dispatch(be, "rmsnorm_bwd", views, 5, 1u << 4, &pc, sizeof pc,
                          tn, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- RoPE ---- */

struct rope_push {
    uint32_t rows, S, H, hd, row0;
    float log2_theta;
    float sign;
};

int el_vk_op_rope(el_backend *be, el_view x, int B, int S, int H, int hd,
                  float theta, int inverse, el_error *err)
{
    size_t row_len = (size_t)H * hd;
    size_t total = (size_t)B * S;
    size_t rows = units_per_chunk(be, row_len);
    if (rows == 0)
        return too_large("rope", "a row", row_len, be, err);
    if (!(theta > 0.0f))
        return el_error_set(err, EL_EINTERNAL, "rope: theta %g is not positive",
                            (double)theta);
    /* log2 in double on the host: the shader's exp2 then only rounds once. */
    float log2_theta = (float)log2((double)theta);
    for (size_t r0 = 0; r0 < total; r0 += rows) {
        size_t rn = total - r0 < rows ? total - r0 : rows;
        el_view view = sub(x, r0 * row_len, rn * row_len);
        struct rope_push pc = {(uint32_t)rn, (uint32_t)S, (uint32_t)H,
                               (uint32_t)hd, (uint32_t)(r0 % (size_t)S),
                               log2_theta, inverse ? -1.0f : 1.0f};
        int rc = dispatch(be, "rope", &view, 1, 1u, &pc, sizeof pc,
                          rn * (row_len / 2), err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- attention ---- */

struct attention_push {
    uint32_t B, S, H, KVH, hd;
    float scale;
    uint32_t g;   /* backward only: query head within the kv group */
};

/* Sequences per dispatch so that q/o/dq, k/v/dk/dv and p of that many
 * sequences each fit one binding; 0 when one sequence does not. */
static size_t attention_batches(el_backend *be, int S, int H, int KVH, int hd)
{
    size_t s = (size_t)S;
    size_t q_elems = s * H * hd, kv_elems = s * KVH * hd, p_elems = (size_t)H * s * s;
    size_t most = q_elems;
    if (kv_elems > most)
        most = kv_elems;
    if (p_elems > most)
        most = p_elems;
    return units_per_chunk(be, most);
}

int el_vk_op_attention_fwd(el_backend *be, el_view q, el_view k, el_view v,
                           int B, int S, int H, int KVH, int hd, float scale,
                           el_view o, el_view p, el_error *err)
{
    size_t per = attention_batches(be, S, H, KVH, hd);
    if (per == 0)
        return too_large("attention_fwd", "one sequence's q, kv or p",
                         (size_t)H * S * S, be, err);
    size_t s = (size_t)S;
    size_t q_elems = s * H * hd, kv_elems = s * KVH * hd, p_elems = (size_t)H * s * s;
    /* scores, exp, normalise and zero, then o over keys four at a time */
    int rc0 = loop_budget(be, "attention_fwd",
                          s * (dot_steps((size_t)hd) + 1) + 3 * s +
                              (size_t)hd * (dot_steps(s) + 1), err);
    if (rc0)
        return rc0;
    per = cap_rows(be, per, (size_t)H * s);
    for (size_t b0 = 0; b0 < (size_t)B; b0 += per) {
        size_t bn = (size_t)B - b0 < per ? (size_t)B - b0 : per;
        el_view views[5] = {
            sub(q, b0 * q_elems, bn * q_elems),
            sub(k, b0 * kv_elems, bn * kv_elems),
            sub(v, b0 * kv_elems, bn * kv_elems),
            sub(o, b0 * q_elems, bn * q_elems),
            sub(p, b0 * p_elems, bn * p_elems),
        };
        struct attention_push pc = {(uint32_t)bn, (uint32_t)S, (uint32_t)H,
                                    (uint32_t)KVH, (uint32_t)hd, scale, 0};
        /* the forward's push block ends at scale */
        int rc = dispatch(be, "attention_fwd", views, 5, (1u << 3) | (1u << 4),
                          &pc, offsetof(struct attention_push, g), bn * H * s, err);
        if (rc)
            return rc;
    }
    return 0;
}

int el_vk_op_attention_bwd(el_backend *be, el_view q, el_view k, el_view v,
                           el_view p, el_view dout, int B, int S, int H,
                           int KVH, int hd, float scale, el_view dq,
                           el_view dk, el_view dv, el_error *err)
{
    size_t per = attention_batches(be, S, H, KVH, hd);
    if (per == 0)
        return too_large("attention_bwd", "one sequence's q, kv or p",
                         (size_t)H * S * S, be, err);
    size_t s = (size_t)S;
    size_t q_elems = s * H * hd, kv_elems = s * KVH * hd, p_elems = (size_t)H * s * s;
    /* the key pass is the longest: one dot and two axpys per query row */
    int rc0 = loop_budget(be, "attention_bwd",
                          (size_t)hd + s * (3 * dot_steps((size_t)hd) + 1), err);
    if (rc0)
        return rc0;
    per = cap_rows(be, per, (size_t)H * s);
    for (size_t b0 = 0; b0 < (size_t)B; b0 += per) {
        size_t bn = (size_t)B - b0 < per ? (size_t)B - b0 : per;
        el_view views[8] = {
            sub(q, b0 * q_elems, bn * q_elems),
            sub(k, b0 * kv_elems, bn * kv_elems),
            sub(v, b0 * kv_elems, bn * kv_elems),
            sub(p, b0 * p_elems, bn * p_elems),
            sub(dout, b0 * q_elems, bn * q_elems),
            sub(dq, b0 * q_elems, bn * q_elems),
            sub(dk, b0 * kv_elems, bn * kv_elems),
            sub(dv, b0 * kv_elems, bn * kv_elems),
        };
        struct attention_push pc = {(uint32_t)bn, (uint32_t)S, (uint32_t)H,
                                    (uint32_t)KVH, (uint32_t)hd, scale, 0};
        /* The passes of shaders/ops_attention_bwd.glsl; el_vk_dispatch
         * orders them (pass 2 reads dq written by 1 and accumulates dk, dv
         * over the group's heads; pass 3 rewrites dq). */
        int rc = dispatch(be, "attention_bwd_rows", views, 8, 1u << 5, &pc,
                          sizeof pc, bn * H * s, err);
        for (int g = 0; g < H / KVH && !rc; g++) {
            pc.g = (uint32_t)g;
            rc = dispatch(be, "attention_bwd_kv", views, 8, (1u << 6) | (1u << 7),
                          &pc, sizeof pc, bn * KVH * s, err);
        }
        pc.g = 0;
        if (!rc)
            rc = dispatch(be, "attention_bwd_q", views, 8, 1u << 5, &pc,
                          sizeof pc, bn * H * s, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- SwiGLU ---- */

struct swiglu_push {
    uint32_t n;
};

int el_vk_op_swiglu_fwd(el_backend *be, el_view g, el_view u, el_view h,
                        el_error *err)
{
    size_t chunk = chunk_elems(be);
    for (size_t i0 = 0; i0 < g.n; i0 += chunk) {
        size_t n = g.n - i0 < chunk ? g.n - i0 : chunk;
        el_view views[3] = {sub(g, i0, n), sub(u, i0, n), sub(h, i0, n)};
        struct swiglu_push pc = {(uint32_t)n};
        int rc = dispatch(be, "swiglu_fwd", views, 3, 1u << 2, &pc, sizeof pc,
                          n, err);
        if (rc)
            return rc;
    }
    return 0;
}

int el_vk_op_swiglu_bwd(el_backend *be, el_view g, el_view u, el_view dh,
                        el_view dg, el_view du, el_error *err)
{
    size_t chunk = chunk_elems(be);
    for (size_t i0 = 0; i0 < g.n; i0 += chunk) {
        size_t n = g.n - i0 < chunk ? g.n - i0 : chunk;
        el_view views[5] = {sub(g, i0, n), sub(u, i0, n), sub(dh, i0, n),
                            sub(dg, i0, n), sub(du, i0, n)};
        struct swiglu_push pc = {(uint32_t)n};
        int rc = dispatch(be, "swiglu_bwd", views, 5, (1u << 3) | (1u << 4),
                          &pc, sizeof pc, n, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- cross-entropy ---- */

struct cross_entropy_push {
    uint32_t T, V;
    float grad_scale;
    uint32_t flags;   /* bit 0: write dlogits; bit 1: dlogits is logits */
};

int el_vk_op_cross_entropy(el_backend *be, el_view logits, el_view targets,
                           int T, int V, float grad_scale, el_view loss,
                           el_view dlogits, el_error *err)
{
    size_t vv = (size_t)V, rows_total = (size_t)T;
    size_t span = rows_total * vv;
    uint32_t flags = 0;
    if (dlogits.t) {
        flags |= 1u;
        if (dlogits.t == logits.t) {
            /* backend.h allows dlogits to alias logits exactly; a partial
             * overlap would let one row's gradient clobber another's logits
             * mid-read, so it is refused. */
            if (dlogits.off == logits.off)
                flags |= 2u;
            else if (dlogits.off < logits.off + span && logits.off < dlogits.off + span)
                return el_error_set(err, EL_EINTERNAL,
                                    "cross_entropy: dlogits overlaps logits "
                                    "without aliasing them exactly");
        }
    }
    size_t rows = units_per_chunk(be, vv);
    if (rows == 0)
        return too_large("cross_entropy", "a row of logits", vv, be, err);
    int rc0 = loop_budget(be, "cross_entropy",
                          3 * ((vv + OPS_LOCAL - 1) / OPS_LOCAL) + 2 * OPS_LOCAL, err);
    if (rc0)
        return rc0;
    /* one workgroup per row (the shader splits a row over its lanes) */
    uint32_t max_groups = el_vk_backend_caps(be)->max_groups[0];
    if (rows > max_groups)
        rows = max_groups;
    for (size_t t0 = 0; t0 < rows_total; t0 += rows) {
        size_t tn = rows_total - t0 < rows ? rows_total - t0 : rows;
        el_view lg = sub(logits, t0 * vv, tn * vv);
        el_view views[4] = {
            lg,
            sub(targets, t0, tn),
            sub(loss, t0, tn),
            /* without a separate gradient, binding 3 repeats the logits
             * (read by nobody) so the descriptor set stays complete */
            (flags == 1u) ? sub(dlogits, t0 * vv, tn * vv) : lg,
        };
        uint32_t write_mask = 1u << 2;
        if (flags == 1u)
            write_mask |= 1u << 3;
        else if (flags & 2u)
            write_mask |= 1u;
        struct cross_entropy_push pc = {(uint32_t)tn, (uint32_t)V, grad_scale,
                                        flags};
        int rc = dispatch_groups(be, "cross_entropy", views, 4, write_mask, &pc,
                                 sizeof pc, tn, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- AdamW ---- */

struct adamw_push {
    uint32_t n;
};

int el_vk_op_adamw(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                   el_view hp, el_view gnorm_sq, el_error *err)
{
    size_t chunk = chunk_elems(be);
    for (size_t i0 = 0; i0 < p.n; i0 += chunk) {
        size_t n = p.n - i0 < chunk ? p.n - i0 : chunk;
        el_view views[6] = {sub(p, i0, n), sub(g, i0, n), sub(m, i0, n),
                            sub(v, i0, n), sub(hp, 0, 8), sub(gnorm_sq, 0, 1)};
        struct adamw_push pc = {(uint32_t)n};
        int rc = dispatch(be, "adamw", views, 6, (1u << 0) | (1u << 2) | (1u << 3),
                          &pc, sizeof pc, n, err);
        if (rc)
            return rc;
    }
    return 0;
}
