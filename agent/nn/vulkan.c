/* The vulkan backend: tensors in sub-allocated device memory, ops recorded
 * as dispatches of the embedded shaders into command streams (agent/gpu/),
 * graphs recorded once and replayed. The model ops live in vulkan_ops.c on
 * top of el_vk_dispatch (vulkan_impl.h); the core ops are here.
 *
 * States (vk_backend.mode) and transitions:
 *     IMMEDIATE: ops record into the immediate stream, which el_nn_sync (and
 *       every read, write, graph begin) ends and submits.
 *     IMMEDIATE --graph_begin(new key)--> RECORD: ops record into the graph's
 *       own stream and their hashes are kept; graph_end ends and submits it.
 *     IMMEDIATE --graph_begin(known key)--> CHECK: ops are only hashed and
 *       compared one by one with the recording; graph_end submits the
 *       recorded command buffer again when all matched and the count is the
 *       same, else fails with "graph changed" (backend.h invariant 4).
 *     RECORD, CHECK --graph_end--> IMMEDIATE (also after a failure).
 *
 * Invariants:
 *  1. A tensor is one el_vk_alloc of 4 * n bytes; a view binds exactly the
 *     bytes it covers (from the aligned offset before it), so barrier
 *     tracking sees real overlaps and a shader cannot stray outside.
 *  2. A replayed graph binds the same physical ranges as its recording: the
 *     hash covers buffer handles and byte ranges, not tensor pointers.
 *  3. Host transfers are refused inside a graph (they would run at issue
 *     time, the graph at graph_end); outside one they sync first.
 */
#include "nn/vulkan_impl.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "gpu/vk.h"

_Static_assert(EL_VK_MAX_VIEWS == EL_VK_BINDINGS, "texel bindings follow the views");

#define REDUCE_GROUPS_MAX 1024

enum { IMMEDIATE, RECORD, CHECK };

typedef struct graph {
    uint64_t key;
    el_vk_stream *stream;
    uint64_t *hashes;
    uint32_t n, cap;
    struct graph *next;
} graph;

typedef struct vk_backend {
    el_backend base;
    el_vk_device *d;
    el_vk_caps caps;
    el_vk_stream *imm;
    int profile;
    int tiled;              /* matmul variant */
    uint32_t texel_dispatches;
    int mode;
    graph *graphs;
    graph *cur;             /* RECORD / CHECK */
    uint32_t check_i;
    int cur_failed;
    uint32_t graphs_recorded, graphs_replayed;
    el_tensor *scratch;     /* reduce partials */
} vk_backend;

static vk_backend *vkb(el_backend *be)
{
    return (vk_backend *)be;
}

/* ---- hashing for replay checks (FNV-1a, 64 bit) ---- */

static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- dispatch ---- */

static el_vk_alloc *alloc_of(const el_tensor *t)
{
    return t->impl;
}

/* Makes sure the immediate stream records. Returns 0 or an error. */
static int immediate(vk_backend *b, el_error *err)
{
    if (el_vk_stream_recording(b->imm))
        return 0;
    return el_vk_stream_begin(b->imm, err);
}

/* Ends and submits the immediate stream when it holds dispatches. */
static int flush(vk_backend *b, el_error *err)
{
    if (!el_vk_stream_recording(b->imm))
        return 0;
    int rc = el_vk_stream_end(b->imm, err);
    if (rc == 0 && el_vk_stream_dispatches(b->imm) > 0)
        rc = el_vk_stream_submit(b->imm, err);
    return rc;
}

int el_vk_dispatch(el_backend *be, const el_vk_kernel *k, const el_view *views,
                   uint32_t nviews, uint32_t write_mask, const void *push,
                   uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz,
                   el_error *err)
{
    if (be->kind != EL_BACKEND_VULKAN)
        return el_error_set(err, EL_EINTERNAL, "el_vk_dispatch on a %s backend", be->name);
    vk_backend *b = vkb(be);
    el_vk_device *d = b->d;
    if (nviews == 0 || nviews > EL_VK_MAX_VIEWS || push_size % 4 ||
        4 * nviews + push_size > EL_VK_MAX_PUSH || k->nspec > EL_VK_MAX_SPEC)
        return el_error_set(err, EL_EINTERNAL,
                            "dispatch of %s: %u views and %u push bytes do not fit", k->shader,
                            nviews, push_size);
    el_vk_range ranges[EL_VK_MAX_VIEWS];
    uint32_t block[EL_VK_MAX_PUSH / 4];
    for (uint32_t i = 0; i < nviews; i++) {
        const el_view *v = &views[i];
        if (!v->t || v->off > v->t->n || v->n > v->t->n - v->off)
            return el_error_set(err, EL_EINTERNAL, "dispatch of %s: view %u is invalid",
                                k->shader, i);
        const el_vk_alloc *a = alloc_of(v->t);
        int texel = i < EL_VK_TEXELS && ((k->texel_mask >> i) & 1);
        if (texel && (!b->caps.max_texel_elems || ((write_mask >> i) & 1) || v->off % 4 ||
                      v->n % 4 || v->n > b->caps.max_texel_elems))
            return el_error_set(err, EL_EINTERNAL, "dispatch of %s: view %u cannot be read "
                                "as a texel buffer", k->shader, i);
        VkDeviceSize align = texel ? d->texel_align : d->align;
        VkDeviceSize start = a->offset + 4 * (VkDeviceSize)v->off;
        VkDeviceSize bound = start / align * align;
        VkDeviceSize end = start + 4 * (VkDeviceSize)(v->n ? v->n : 1);
        if (end - bound > d->max_binding)
            return el_error_set(err, EL_EUNAVAIL,
                                "dispatch of %s: view %u of %zu elements exceeds the %llu bytes "
                                "one binding may cover on this device", k->shader, i, v->n,
                                (unsigned long long)d->max_binding);
        ranges[i].buffer = a->buffer;
        ranges[i].offset = bound;
        ranges[i].size = end - bound;
        ranges[i].written = (write_mask >> i) & 1;
        ranges[i].texel = texel;
        block[i] = (uint32_t)((start - bound) / 4);
    }
    if (push_size)
        memcpy(&block[nviews], push, push_size);
    uint32_t block_size = 4 * nviews + push_size;

    if (b->mode != IMMEDIATE) {
        uint64_t h = 1469598103934665603ull;
        h = fnv(h, k->shader, strlen(k->shader) + 1);
        h = fnv(h, &k->nspec, sizeof k->nspec);
        h = fnv(h, k->spec, k->nspec * sizeof k->spec[0]);
        for (uint32_t i = 0; i < nviews; i++) {
            uint64_t fields[4] = {(uint64_t)(uintptr_t)ranges[i].buffer, ranges[i].offset,
                                  ranges[i].size,
                                  (uint64_t)ranges[i].written | (uint64_t)ranges[i].texel << 1};
            h = fnv(h, fields, sizeof fields);
        }
        h = fnv(h, block, block_size);
        uint32_t groups[3] = {gx, gy, gz};
        h = fnv(h, groups, sizeof groups);
        graph *g = b->cur;
        if (b->mode == CHECK) {
            if (b->cur_failed)
                return el_error_set(err, EL_EINTERNAL, "graph changed (already refused)");
            if (b->check_i >= g->n || g->hashes[b->check_i] != h) {
                b->cur_failed = 1;
                return el_error_set(err, EL_EINTERNAL,
                                    "graph changed: dispatch %u (%s) of graph %llx differs "
                                    "from its recording", b->check_i, k->shader,
                                    (unsigned long long)g->key);
            }
            b->check_i++;
            return 0;
        }
        if (g->n == g->cap) {
            uint32_t cap = g->cap ? 2 * g->cap : 64;
            uint64_t *hs = el_realloc(g->hashes, cap * sizeof *hs);
            if (!hs) {
                b->cur_failed = 1;
                return el_error_set(err, EL_ENOMEM, "out of memory recording a graph");
            }
            g->hashes = hs;
            g->cap = cap;
        }
        g->hashes[g->n++] = h;
    }
    const el_vk_pipeline *pipe;
    int rc = el_vk_pipeline_get(d->pipes, k->shader, k->spec, k->nspec, &pipe, err);
    if (rc == 0 && b->mode == IMMEDIATE)
        rc = immediate(b, err);
    if (rc == 0)
        rc = el_vk_stream_dispatch(b->mode == RECORD ? b->cur->stream : b->imm, pipe, ranges,
                                   nviews, block, block_size, gx, gy, gz, err);
    if (rc == 0 && k->texel_mask)
        b->texel_dispatches++;
    if (rc && b->mode == RECORD)
        b->cur_failed = 1;
    return rc;
}

const el_vk_caps *el_vk_backend_caps(el_backend *be)
{
    return &vkb(be)->caps;
}

void el_vk_backend_stats(el_backend *be, el_vk_stats *out)
{
    vk_backend *b = vkb(be);
    el_vk_pipe_stats ps;
    el_vk_pipes_stats(b->d->pipes, &ps);
    memset(out, 0, sizeof *out);
    out->validation_messages = __atomic_load_n(&b->d->inst->validation_messages,
                                               __ATOMIC_RELAXED);
    out->pipelines_created = ps.created;
    out->pipelines_compiled = ps.compiled;
    out->cache_feedback = ps.feedback;
    out->cache_loaded = ps.cache_loaded;
    out->cache_rejected = ps.cache_rejected;
    out->cache_bytes = ps.cache_bytes;
    out->submits = b->d->submits;
    out->graphs_recorded = b->graphs_recorded;
    out->graphs_replayed = b->graphs_replayed;
    out->staging = b->d->staging;
    out->memory_blocks = el_vk_heap_blocks(b->d->heap);
    out->matmul = b->tiled ? "tiled" : "regblock";
    out->texel_dispatches = b->texel_dispatches;
}

/* ---- backend ops: lifecycle, tensors, transfers ---- */

static int vk_sync(el_backend *be, el_error *err)
{
    vk_backend *b = vkb(be);
    if (b->mode != IMMEDIATE)
        return el_error_set(err, EL_EINTERNAL, "sync inside a graph (end the graph first)");
    int rc = flush(b, err);
    if (rc == 0)
        rc = el_vk_stream_wait(b->imm, err);
    for (graph *g = b->graphs; g && rc == 0; g = g->next)
        rc = el_vk_stream_wait(g->stream, err);
    return rc;
}

static void graph_free(graph *g)
{
    el_vk_stream_destroy(g->stream);
    el_free(g->hashes);
    el_free(g);
}

static void vk_tensor_finish(el_backend *be, el_tensor *t);

static void vk_destroy(el_backend *be)
{
    vk_backend *b = vkb(be);
    if (b->d && b->imm) {
        b->mode = IMMEDIATE;
        el_error err = {0};
        if (vk_sync(be, &err) != 0)
            el_log_warn("vulkan backend: %s", err.msg);
    }
    while (b->graphs) {
        graph *g = b->graphs;
        b->graphs = g->next;
        graph_free(g);
    }
    if (b->scratch) {
        vk_tensor_finish(be, b->scratch);
        el_free(b->scratch);
    }
    el_vk_stream_destroy(b->imm);
    if (b->d) {
        uint32_t n = b->d->inst->validation_messages;
        if (n)
            el_log_warn("vulkan backend: the validation layer reported %u message(s)", n);
    }
    el_vk_device_destroy(b->d);
    el_free(b);
}

static int vk_tensor_init(el_backend *be, el_tensor *t, el_error *err)
{
    vk_backend *b = vkb(be);
    el_vk_alloc *a = el_calloc(1, sizeof *a);
    if (!a)
        return el_error_set(err, EL_ENOMEM, "out of memory for a tensor");
    /* Zeroing on the device must not overtake pending work that still uses
     * a freed range being handed out again. */
    int rc = b->mode == IMMEDIATE ? vk_sync(be, err) : 0;
    if (rc == 0)
        rc = el_vk_alloc_create(b->d->heap, 4 * (VkDeviceSize)t->n, a, err);
    if (rc) {
        el_free(a);
        return rc;
    }
    t->impl = a;
    return 0;
}

static void vk_tensor_finish(el_backend *be, el_tensor *t)
{
    vk_backend *b = vkb(be);
    el_vk_alloc *a = t->impl;
    if (!a)
        return;
    if (b->mode == IMMEDIATE) {
        el_error err = {0};
        if (vk_sync(be, &err) != 0)
            el_log_warn("vulkan backend: freeing a tensor: %s", err.msg);
    }
    el_vk_alloc_free(b->d->heap, a);
    el_free(a);
    t->impl = NULL;
}

static int vk_write(el_backend *be, el_view v, const void *src, el_error *err)
{
    vk_backend *b = vkb(be);
    if (b->mode != IMMEDIATE)
        return el_error_set(err, EL_EINTERNAL, "write inside a graph is not allowed on vulkan");
    int rc = vk_sync(be, err);
    if (rc)
        return rc;
    return el_vk_upload(b->d->heap, alloc_of(v.t), 4 * (VkDeviceSize)v.off, src, 4 * v.n, err);
}

static int vk_read(el_backend *be, el_view v, void *dst, el_error *err)
{
    vk_backend *b = vkb(be);
    if (b->mode != IMMEDIATE)
        return el_error_set(err, EL_EINTERNAL, "read inside a graph is not allowed on vulkan");
    int rc = vk_sync(be, err);
    if (rc)
        return rc;
    return el_vk_download(b->d->heap, alloc_of(v.t), 4 * (VkDeviceSize)v.off, dst, 4 * v.n,
                          err);
}

static int vk_graph_begin(el_backend *be, uint64_t key, el_error *err)
{
    vk_backend *b = vkb(be);
    if (b->mode != IMMEDIATE)
        return el_error_set(err, EL_EINTERNAL, "graph %llx begun inside graph %llx",
                            (unsigned long long)key, (unsigned long long)b->cur->key);
    int rc = flush(b, err);
    if (rc)
        return rc;
    for (graph *g = b->graphs; g; g = g->next)
        if (g->key == key) {
            b->cur = g;
            b->mode = CHECK;
            b->check_i = 0;
            b->cur_failed = 0;
            return 0;
        }
    graph *g = el_calloc(1, sizeof *g);
    if (!g)
        return el_error_set(err, EL_ENOMEM, "out of memory for a graph");
    g->key = key;
    if ((rc = el_vk_stream_create(b->d, b->profile, &g->stream, err)) != 0 ||
        (rc = el_vk_stream_begin(g->stream, err)) != 0) {
        graph_free(g);
        return rc;
    }
    b->cur = g;
    b->mode = RECORD;
    b->cur_failed = 0;
    return 0;
}

static int vk_graph_end(el_backend *be, el_error *err)
{
    vk_backend *b = vkb(be);
    graph *g = b->cur;
    int mode = b->mode, failed = b->cur_failed;
    b->mode = IMMEDIATE;
    b->cur = NULL;
    if (mode == IMMEDIATE)
        return el_error_set(err, EL_EINTERNAL, "graph_end without graph_begin");
    if (mode == RECORD) {
        int rc = el_vk_stream_end(g->stream, err);
        if (rc == 0 && failed)
            rc = el_error_set(err, EL_EINTERNAL, "graph %llx failed while recording",
                              (unsigned long long)g->key);
        if (rc == 0 && g->n == 0)
            rc = el_error_set(err, EL_EINTERNAL, "graph %llx issued no ops",
                              (unsigned long long)g->key);
        if (rc == 0)
            rc = el_vk_stream_submit(g->stream, err);
        if (rc) {
            graph_free(g);
            return rc;
        }
        g->next = b->graphs;
        b->graphs = g;
        b->graphs_recorded++;
        return 0;
    }
    if (failed || b->check_i != g->n)
        return el_error_set(err, EL_EINTERNAL,
                            "graph changed: graph %llx issued %u matching ops, its recording "
                            "has %u", (unsigned long long)g->key, b->check_i, g->n);
    int rc = el_vk_stream_submit(g->stream, err);
    if (rc == 0)
        b->graphs_replayed++;
    return rc;
}

/* ---- core ops ---- */

static uint32_t local_1d(const vk_backend *b)
{
    uint32_t l = 256;
    if (l > b->caps.max_invocations)
        l = b->caps.max_invocations;
    if (l > b->caps.max_local[0])
        l = b->caps.max_local[0];
    return l;
}

static uint32_t groups_1d(const vk_backend *b, size_t n, uint32_t local)
{
    uint32_t g = el_vk_div_up(n, local);
    uint32_t cap = b->caps.max_groups[0] < 4096 ? b->caps.max_groups[0] : 4096;
    return g < 1 ? 1 : g > cap ? cap : g;
}

static el_view sub(el_view v, size_t off, size_t n)
{
    el_view s = {v.t, v.off + off, n};
    return s;
}

/* The largest chunk of a view every binding can hold. */
static size_t chunk_of(const vk_backend *b)
{
    return b->caps.max_view_elems;
}

static int vk_fill(el_backend *be, el_view x, float value, el_error *err)
{
    vk_backend *b = vkb(be);
    uint32_t bits;
    if (x.t->dtype == EL_I32) {
        int32_t iv = (int32_t)value;
        memcpy(&bits, &iv, 4);
    } else {
        memcpy(&bits, &value, 4);
    }
    uint32_t local = local_1d(b);
    el_vk_kernel k = {"fill", 1, {local}, 0};
    for (size_t off = 0; off < x.n; off += chunk_of(b)) {
        size_t n = x.n - off < chunk_of(b) ? x.n - off : chunk_of(b);
        el_view v = sub(x, off, n);
        uint32_t push[2] = {(uint32_t)n, bits};
        int rc = el_vk_dispatch(be, &k, &v, 1, 1, push, sizeof push, groups_1d(b, n, local), 1,
                                1, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int vk_copy(el_backend *be, el_view dst, el_view src, el_error *err)
{
    vk_backend *b = vkb(be);
    uint32_t local = local_1d(b);
    el_vk_kernel k = {"copy", 1, {local}, 0};
    for (size_t off = 0; off < src.n; off += chunk_of(b)) {
        size_t n = src.n - off < chunk_of(b) ? src.n - off : chunk_of(b);
        el_view v[2] = {sub(dst, off, n), sub(src, off, n)};
        uint32_t push[1] = {(uint32_t)n};
        int rc = el_vk_dispatch(be, &k, v, 2, 1, push, sizeof push, groups_1d(b, n, local), 1,
                                1, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int vk_axpby(el_backend *be, float alpha, el_view x, float beta, el_view y,
                    el_error *err)
{
    vk_backend *b = vkb(be);
    uint32_t local = local_1d(b);
    el_vk_kernel k = {"axpby", 1, {local}, 0};
    for (size_t off = 0; off < x.n; off += chunk_of(b)) {
        size_t n = x.n - off < chunk_of(b) ? x.n - off : chunk_of(b);
        el_view v[2] = {sub(x, off, n), sub(y, off, n)};
        struct { uint32_t n; float alpha, beta; } push = {(uint32_t)n, alpha, beta};
        int rc = el_vk_dispatch(be, &k, v, 2, 2, &push, sizeof push, groups_1d(b, n, local), 1,
                                1, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int vk_add(el_backend *be, el_view a, el_view bv, el_view c, el_error *err)
{
    vk_backend *b = vkb(be);
    uint32_t local = local_1d(b);
    el_vk_kernel k = {"add", 1, {local}, 0};
    for (size_t off = 0; off < a.n; off += chunk_of(b)) {
        size_t n = a.n - off < chunk_of(b) ? a.n - off : chunk_of(b);
        el_view v[3] = {sub(a, off, n), sub(bv, off, n), sub(c, off, n)};
        uint32_t push[1] = {(uint32_t)n};
        int rc = el_vk_dispatch(be, &k, v, 3, 4, push, sizeof push, groups_1d(b, n, local), 1,
                                1, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int vk_reduce(el_backend *be, el_reduce_op op, el_view x, el_view out,
                     int accumulate, el_error *err)
{
    vk_backend *b = vkb(be);
    uint32_t local = local_1d(b);
    const char *shader = b->caps.subgroup_arith ? "reduce_subgroup" : "reduce";
    el_view partial = el_nn_whole(b->scratch);
    el_view out1 = sub(out, 0, 1);
    for (size_t off = 0; off < x.n; off += chunk_of(b)) {
        size_t n = x.n - off < chunk_of(b) ? x.n - off : chunk_of(b);
        uint32_t groups = el_vk_div_up(n, 4 * local);
        if (groups > REDUCE_GROUPS_MAX)
            groups = REDUCE_GROUPS_MAX;
        el_vk_kernel k0 = {shader, 3, {local, (uint32_t)op, 0}, 0};
        el_view v0[2] = {sub(x, off, n), partial};
        uint32_t push0[2] = {(uint32_t)n, 0};
        int rc = el_vk_dispatch(be, &k0, v0, 2, 2, push0, sizeof push0, groups, 1, 1, err);
        if (rc)
            return rc;
        uint32_t op1 = op == EL_REDUCE_SUMSQ ? EL_REDUCE_SUM : (uint32_t)op;
        el_vk_kernel k1 = {shader, 3, {local, op1, 1}, 0};
        el_view v1[2] = {sub(partial, 0, groups), out1};
        uint32_t push1[2] = {groups, (accumulate || off > 0) ? 1u : 0u};
        rc = el_vk_dispatch(be, &k1, v1, 2, 2, push1, sizeof push1, 1, 1, 1, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Workgroup and block shape of matmul_regblock for one product. */
typedef struct regblock_shape {
    uint32_t lx, ly;        /* workgroup; the SIMD lanes run along x */
    uint32_t tm, tn;        /* rows and columns of C per invocation */
    uint32_t rows_on_x;     /* 1: x indexes rows of C, y columns */
} regblock_shape;

/* Picks the shape for an M x N x K product (matmul_regblock.comp gives the
 * cost model: loads set the speed, so blocks are as large as pays). The x
 * size of the workgroup must hold 8 invocations of real work, or SIMD lanes
 * idle: a narrow C (N < 32, a LoRA rank) walks rows along x instead, with
 * 8 rows per invocation (faster than 4 or 16 at 4096 x 16 x 2048). 16-wide
 * blocks take ~4 s to compile against ~1 s for 8 x 8 (Mesa's disk cache
 * keeps them for the next start), so they are used only where K is long
 * enough for the operand loads to dominate (at K = 16 the stores of C do
 * and 16 x 16 ran slower than 8 x 8) and the product is large enough
 * (2^24 multiply-adds, 256^3) to repay the compile. */
static regblock_shape regblock_shape_of(int M, int N, int K)
{
    regblock_shape s;
    int big = K >= 64 && (uint64_t)M * (uint64_t)N * (uint64_t)K >= (1u << 24);
    if (N < 32 && M >= 64) {
        /* Narrow output (a LoRA rank): lanes on rows, each invocation a
         * whole 8-row strip of C (8 rows beat 4 and 16 for 4096 x 16). */
        s.rows_on_x = 1;
        s.tm = 8;
        s.tn = N > 8 ? 16 : N > 4 ? 8 : 4;
        s.lx = 16;
        while (s.lx > 8 && (s.lx / 2) * s.tm >= (uint32_t)M)
            s.lx /= 2;
        s.ly = N > (int)s.tn ? 2 : 1;
        return s;
    }
    s.rows_on_x = 0;
    s.tm = big && M >= 16 ? 16 : M >= 64 ? 8 : 4;
    s.tn = big && N >= 16 ? 16 : N >= 64 ? 8 : 4;
    s.lx = 1;
    while (s.lx < 16 && s.lx * s.tn < (uint32_t)N)
        s.lx *= 2;
    s.ly = 64 / s.lx;
    while (s.ly > 1 && (s.ly / 2) * s.tm >= (uint32_t)M)
        s.ly /= 2;
    return s;
}

/* One matmul dispatch over M rows (the caller chunks). */
static int matmul_dispatch(vk_backend *b, el_matmul_layout layout, int M, int N, int K,
                           float alpha, el_view A, el_view B, float beta, el_view C,
                           el_error *err)
{
    el_vk_kernel k;
    uint32_t gx, gy;
    if (b->tiled) {
        uint32_t side = b->caps.max_invocations >= 256 && b->caps.max_local[0] >= 16 &&
                                b->caps.max_local[1] >= 16 ? 16 : 8;
        uint32_t tm = 4, tn = 4, bk = 16;
        while (bk > 4 && bk * side * (tm + tn) * 4 > b->caps.max_shared_bytes)
            bk /= 2;
        el_vk_kernel t = {"matmul_tiled", 6, {side, side, tm, tn, (uint32_t)layout, bk}, 0};
        k = t;
        gx = el_vk_div_up((size_t)N, side * tn);
        gy = el_vk_div_up((size_t)M, side * tm);
    } else {
        /* The vec4 paths read both operands as vec4 along their contiguous
         * dimension: the dimensions involved and the views' offsets must be
         * multiples of 4 (binding starts are 16-byte aligned, so the
         * shader's offsets then are too). */
        int aligned = A.off % 4 == 0 && B.off % 4 == 0;
        int vec4 = aligned && (layout == EL_MM_NT ? K % 4 == 0
                               : layout == EL_MM_NN ? K % 4 == 0 && N % 4 == 0
                                                    : M % 4 == 0 && N % 4 == 0);
        /* ... and through the texture path where the device has one
         * (vulkan_impl.h note 8). */
        size_t maxt = b->caps.max_texel_elems;
        int texel = vec4 && maxt && A.n % 4 == 0 && B.n % 4 == 0 && A.n <= maxt &&
                    B.n <= maxt;
        regblock_shape s = regblock_shape_of(M, N, K);
        el_vk_kernel r = {"matmul_regblock", 8,
                          {s.lx, s.ly, s.tm, s.tn, (uint32_t)layout, (uint32_t)vec4,
                           s.rows_on_x, (uint32_t)texel},
                          texel ? 3u : 0u};
        k = r;
        uint32_t groups_n = el_vk_div_up((size_t)N, (s.rows_on_x ? s.ly : s.lx) * s.tn);
        uint32_t groups_m = el_vk_div_up((size_t)M, (s.rows_on_x ? s.lx : s.ly) * s.tm);
        gx = s.rows_on_x ? groups_m : groups_n;
        gy = s.rows_on_x ? groups_n : groups_m;
    }
    if (gx > b->caps.max_groups[0] || gy > b->caps.max_groups[1])
        return el_error_set(err, EL_EUNAVAIL, "matmul %dx%d needs %ux%u workgroups, more than "
                            "the device allows", M, N, gx, gy);
    el_view v[3] = {A, B, C};
    struct { uint32_t M, N, K; float alpha, beta; } push = {
        (uint32_t)M, (uint32_t)N, (uint32_t)K, alpha, beta};
    return el_vk_dispatch(&b->base, &k, v, 3, 4, &push, sizeof push, gx, gy, 1, err);
}

static int vk_matmul(el_backend *be, el_matmul_layout layout, int M, int N, int K,
                     float alpha, el_view A, el_view B, float beta, el_view C,
                     el_error *err)
{
    vk_backend *b = vkb(be);
    size_t m = (size_t)M, n = (size_t)N, kk = (size_t)K;
    size_t max = chunk_of(b);
    A = sub(A, 0, m * kk);
    B = sub(B, 0, n * kk);
    C = sub(C, 0, m * n);
    if (A.n <= max && C.n <= max && B.n <= max)
        return matmul_dispatch(b, layout, M, N, K, alpha, A, B, beta, C, err);
    /* Views too large for one binding: rows of C (and of A, when A is
     * row-major in M) are independent, so split M. B is read whole. */
    size_t row = kk > n ? kk : n;
    if (B.n > max || layout == EL_MM_TN || row > max)
        return el_error_set(err, EL_EUNAVAIL,
                            "matmul %dx%dx%d: an operand exceeds the %zu elements one binding "
                            "may cover and cannot be split", M, N, K, max);
    size_t rows = max / row;
    for (size_t i0 = 0; i0 < m; i0 += rows) {
        size_t mc = m - i0 < rows ? m - i0 : rows;
        int rc = matmul_dispatch(b, layout, (int)mc, N, K, alpha, sub(A, i0 * kk, mc * kk), B,
                                 beta, sub(C, i0 * n, mc * n), err);
        if (rc)
            return rc;
    }
    return 0;
}

static const el_backend_ops vk_ops = {
    .destroy = vk_destroy,
    .tensor_init = vk_tensor_init,
    .tensor_finish = vk_tensor_finish,
    .write = vk_write,
    .read = vk_read,
    .sync = vk_sync,
    .graph_begin = vk_graph_begin,
    .graph_end = vk_graph_end,
    .matmul = vk_matmul,
    .fill = vk_fill,
    .copy = vk_copy,
    .axpby = vk_axpby,
    .add = vk_add,
    .reduce = vk_reduce,
    .embedding = el_vk_op_embedding,
    .rmsnorm_fwd = el_vk_op_rmsnorm_fwd,
    .rmsnorm_bwd = el_vk_op_rmsnorm_bwd,
    .rope = el_vk_op_rope,
    .attention_fwd = el_vk_op_attention_fwd,
    .attention_bwd = el_vk_op_attention_bwd,
    .swiglu_fwd = el_vk_op_swiglu_fwd,
    .swiglu_bwd = el_vk_op_swiglu_bwd,
    .cross_entropy = el_vk_op_cross_entropy,
    .adamw = el_vk_op_adamw,
};

int el_nn_vulkan_create(const el_backend_options *opts, el_backend **out,
                        el_error *err)
{
    *out = NULL;
    vk_backend *b = el_calloc(1, sizeof *b);
    if (!b)
        return el_error_set(err, EL_ENOMEM, "out of memory for the vulkan backend");
    b->base.ops = &vk_ops;
    b->base.kind = EL_BACKEND_VULKAN;
    b->profile = opts && opts->profile;
    int rc = el_vk_device_create(opts ? opts->device_index : -1, opts ? opts->cache_dir : NULL,
                                 &b->d, err);
    if (rc)
        goto fail;
    el_vk_device *d = b->d;
    const VkPhysicalDeviceLimits *l = &d->info.limits;
    for (int i = 0; i < 3; i++) {
        b->caps.max_groups[i] = l->maxComputeWorkGroupCount[i];
        b->caps.max_local[i] = l->maxComputeWorkGroupSize[i];
    }
    b->caps.max_invocations = l->maxComputeWorkGroupInvocations;
    b->caps.max_shared_bytes = l->maxComputeSharedMemorySize;
    b->caps.subgroup_size = d->info.subgroup_size;
    b->caps.subgroup_arith = d->info.subgroup_arith;
    b->caps.fp16 = d->info.fp16 && d->info.storage16;
    b->caps.is_cpu = !el_vk_type_is_gpu(d->info.type);
    b->caps.max_view_elems = (size_t)((d->max_binding - d->align) / 4);
    if (d->texel_align && d->info.texel_vec4) {
        /* the view starts up to texel_align early; whole vec4 texels */
        size_t texels = d->info.limits.maxTexelBufferElements;
        size_t slack = (size_t)(d->texel_align / 4);
        size_t elems = 4 * texels > slack ? 4 * texels - slack : 0;
        b->caps.max_texel_elems = elems < b->caps.max_view_elems ? elems : b->caps.max_view_elems;
        b->caps.max_texel_elems -= b->caps.max_texel_elems % 4;
    }
    const char *mm = getenv("EDGELOOP_VK_MATMUL");
    if (mm && !strcmp(mm, "tiled"))
        b->tiled = 1;
    else if (mm && !strcmp(mm, "regblock"))
        b->tiled = 0;
    else if (mm && *mm) {
        rc = el_error_set(err, EL_EUSAGE,
                          "EDGELOOP_VK_MATMUL=\"%s\" (expected regblock or tiled)", mm);
        goto fail;
    } else
        b->tiled = !b->caps.is_cpu;
    snprintf(b->base.name, sizeof b->base.name, "vulkan (%s)", d->info.name);
    if ((rc = el_vk_stream_create(d, b->profile, &b->imm, err)) != 0)
        goto fail;
    b->scratch = el_calloc(1, sizeof *b->scratch);
    if (!b->scratch) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for the vulkan backend");
        goto fail;
    }
    b->scratch->dtype = EL_F32;
    b->scratch->n = REDUCE_GROUPS_MAX;
    if ((rc = vk_tensor_init(&b->base, b->scratch, err)) != 0) {
        el_free(b->scratch);
        b->scratch = NULL;
        goto fail;
    }
    *out = &b->base;
    return 0;
fail:
    vk_destroy(&b->base);
    return rc;
}

int el_nn_vulkan_has_gpu(void)
{
    el_vk_instance *inst;
    if (el_vk_instance_create(&inst, NULL) != 0)
        return 0;
    el_vk_device_info *infos = NULL;
    uint32_t n = 0;
    int gpu = 0;
    if (el_vk_list_devices(inst, &infos, &n, NULL) == 0) {
        int idx = el_vk_choose_device(infos, n, -1, NULL);
        gpu = idx >= 0 && el_vk_type_is_gpu(infos[idx].type);
    }
    el_free(infos);
    el_vk_instance_destroy(inst);
    return gpu;
}

int el_vk_profile_print(el_backend *be, FILE *out, el_error *err)
{
    vk_backend *b = vkb(be);
    if (!b->profile)
        return el_error_set(err, EL_EUNAVAIL, "profiling is off (create the backend with profile)");
    if (!b->d->timestamp_bits)
        return el_error_set(err, EL_EUNAVAIL, "%s has no timestamps on its compute queue",
                            b->d->info.name);
    int rc = vk_sync(be, err);
    if (rc)
        return rc;
    /* Merge the streams' entries by shader. */
    el_vk_profile_entry merged[128];
    uint32_t nm = 0;
    double total = 0;
    for (graph *g = b->graphs;; g = g->next) {
        el_vk_stream *s = g ? g->stream : b->imm;
        uint32_t n;
        const el_vk_profile_entry *e = el_vk_stream_profile(s, &n);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j = 0;
            while (j < nm && strcmp(merged[j].shader, e[i].shader))
                j++;
            if (j == nm) {
                if (nm == sizeof merged / sizeof merged[0])
                    continue;
                merged[nm] = e[i];
                merged[nm].count = 0;
                merged[nm].ns = 0;
                nm++;
            }
            merged[j].count += e[i].count;
            merged[j].ns += e[i].ns;
            total += e[i].ns;
        }
        if (!g)
            break;
    }
    fprintf(out, "%-24s %10s %12s %12s %6s\n", "shader", "dispatches", "total ms", "mean us", "%");
    for (uint32_t i = 0; i < nm; i++)
        fprintf(out, "%-24s %10llu %12.3f %12.3f %6.1f\n", merged[i].shader,
                (unsigned long long)merged[i].count, merged[i].ns / 1e6,
                merged[i].ns / 1e3 / (double)merged[i].count,
                total > 0 ? 100.0 * merged[i].ns / total : 0.0);
    return 0;
}
