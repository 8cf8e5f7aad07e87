/* Llama forward and backward over the backend interface (see llama.h).
 *
 * Per layer l, with T = B*S rows, x_l the residual stream:
 *   xn1 = rmsnorm(x_l) ; q,k,v = lin(xn1) ; rope(q,k) ; o = attn(q,k,v)
 *   xm  = x_l + lin_o(o)
 *   xn2 = rmsnorm(xm) ; g,u = lin(xn2) ; h = silu(g)*u ; x_{l+1} = xm + lin_d(h)
 * then xf = rmsnorm(x_L), logits = xf.Wlm^T, loss = CE(logits, targets).
 * lin(x) = x.W^T + s*(x.A^T).B^T; the LoRA intermediate u = x.A^T is kept.
 *
 * Backward (gradient of grad_scale * sum(loss)), reversing the above:
 *   dlogits (in place of logits) -> dxf = dlogits.Wlm -> dx = rmsnorm_bwd;
 *   per layer: dh = lin_d^T(dx), dg,du = swiglu_bwd, dxn2 = lin_g^T + lin_u^T,
 *   dx += rmsnorm_bwd(dxn2); do = lin_o^T(dx), dq,dk,dv = attn_bwd,
 *   rope^-1(dq,dk), dxn1 = lin_q^T + lin_k^T + lin_v^T, dx += rmsnorm_bwd.
 * For each LoRA projection with input x, output grad dy:
 *   dB += s * dy^T.u ; du = s * dy.B ; dA += du^T.x ; dx += du.A
 * No op computes a gradient for a base weight.
 */
#include "nn/llama.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/safetensors.h"

enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, W_IN_NORM, W_POST_NORM, W_PER_LAYER };

struct el_llama {
    el_backend *be;
    el_llama_config cfg;
    el_tensor *weights;
    el_view embed, final_norm, lm_head;
    el_view *layer;                 /* [L * W_PER_LAYER] */
    const el_lora *lora;
    el_tensor *lora_params, *lora_grads;
    int *slot_of;                   /* [L * EL_LORA_NTARGETS] -> slot or -1 */
};

typedef struct layer_acts {
    el_view x, rstd1, xn1, q, k, v, p, o, xm, rstd2, xn2, g, u, h;
} layer_acts;

struct el_llama_work {
    el_llama *m;
    uint64_t id;                    /* unique per process, for graph keys */
    int B, S, T, backward;
    el_tensor *arena;
    layer_acts *acts;               /* L entries (1 shared when !backward) */
    el_view *lora_u;                /* per slot [T, r] (1 set when !backward) */
    el_view x_final, rstd_f, xf, logits, mlp_out;
    /* backward scratch */
    el_view dx, dxn, dtmp, dq, dk, dv, dg, du, dh, dlora;
};

const el_llama_config *el_nn_llama_config(const el_llama *m)
{
    return &m->cfg;
}

el_backend *el_nn_llama_backend(el_llama *m)
{
    return m->be;
}

/* ---- loading ---- */

#define MAX_SHARDS 64

typedef struct weight_source {
    int n;
    el_safetensors *shard[MAX_SHARDS];
} weight_source;

static int open_source(const char *dir, weight_source *src, el_error *err)
{
    char path[4096];
    memset(src, 0, sizeof *src);
    if (el_fs_join(path, sizeof path, dir, "model.safetensors"))
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    if (el_fs_exists(path)) {
        src->n = 1;
        return el_safetensors_open(path, &src->shard[0], err);
    }
    if (el_fs_join(path, sizeof path, dir, "model.safetensors.index.json"))
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, 64u << 20, &buf, &len, err);
    if (rc == EL_ENOTFOUND)
        return el_error_set(err, EL_ENOTFOUND,
                            "%s: neither model.safetensors nor model.safetensors.index.json exists",
                            dir);
    if (rc)
        return rc;
    json_t *idx = el_json_parse(buf, len, 64u << 20, path, err);
    el_free(buf);
    if (!idx)
        return EL_EINPUT;
    json_t *map = json_object_get(idx, "weight_map");
    const char *name;
    json_t *file;
    if (!json_is_object(map)) {
        json_decref(idx);
        return el_error_set(err, EL_EINPUT, "%s: weight_map is missing", path);
    }
    /* Open each distinct shard once; tensors are found by name later. */
    const char *files[MAX_SHARDS];
    json_object_foreach(map, name, file) {
        if (!json_is_string(file) || strchr(json_string_value(file), '/')) {
            rc = el_error_set(err, EL_EINPUT, "%s: shard of \"%s\" is not a plain file name",
                              path, name);
            break;
        }
        int seen = 0;
        for (int i = 0; i < src->n; i++)
            seen |= !strcmp(files[i], json_string_value(file));
        if (seen)
            continue;
        if (src->n == MAX_SHARDS) {
            rc = el_error_set(err, EL_EINPUT, "%s: more than %d shards", path, MAX_SHARDS);
            break;
        }
        char shard[4096];
        files[src->n] = json_string_value(file);
        if (el_fs_join(shard, sizeof shard, dir, files[src->n])) {
            rc = el_error_set(err, EL_EINPUT, "path too long: %s", dir);
            break;
        }
        if ((rc = el_safetensors_open(shard, &src->shard[src->n], err)))
            break;
        src->n++;
    }
    json_decref(idx);
    return rc;
}

static void close_source(weight_source *src)
{
    for (int i = 0; i < src->n; i++)
        el_safetensors_close(src->shard[i]);
}

static const el_st_tensor *find_weight(const weight_source *src, const char *name)
{
    for (int i = 0; i < src->n; i++) {
        const el_st_tensor *t = el_safetensors_find(src->shard[i], name);
        if (t)
            return t;
    }
    return NULL;
}

/* Copies weight NAME of shape [rows, cols] (cols 0 = 1-D) into view V. */
static int load_weight(el_llama *m, const weight_source *src, const char *dir,
                       const char *name, int64_t rows, int64_t cols, el_view v,
                       float *stage, el_error *err)
{
    const el_st_tensor *t = find_weight(src, name);
    if (!t)
        return el_error_set(err, EL_EINPUT, "%s: tensor \"%s\" is missing", dir, name);
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                  : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok)
        return el_error_set(err, EL_EINPUT, "%s: tensor \"%s\" must have shape [%lld%s%lld]",
                            dir, name, (long long)rows, cols ? ", " : "",
                            cols ? (long long)cols : 0LL);
    el_safetensors_to_f32(t, stage);
    return el_nn_write(m->be, v, stage, err);
}

int el_nn_llama_load(el_backend *be, const char *dir, el_llama **out, el_error *err)
{
    *out = NULL;
    el_llama *m = el_calloc(1, sizeof *m);
    if (!m)
        return el_error_set(err, EL_ENOMEM, "out of memory for a model");
    m->be = be;
    weight_source src = {0};
    float *stage = NULL;
    int rc = el_nn_config_load(dir, &m->cfg, err);
    if (rc)
        goto fail;
    const el_llama_config *c = &m->cfg;
    size_t D = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t KV = (size_t)c->num_key_value_heads * (size_t)c->head_dim, V = (size_t)c->vocab_size;
    size_t L = (size_t)c->num_hidden_layers;
    size_t sizes[W_PER_LAYER] = {D * D, KV * D, KV * D, D * D, F * D, F * D, D * F, D, D};
    size_t per_layer = 0, biggest = V * D;
    for (int i = 0; i < W_PER_LAYER; i++) {
        per_layer += sizes[i];
        if (sizes[i] > biggest)
            biggest = sizes[i];
    }
    size_t total = V * D + D + (c->tie_word_embeddings ? 0 : V * D) + L * per_layer;
    m->layer = el_calloc(L * W_PER_LAYER, sizeof *m->layer);
    stage = el_malloc(biggest * sizeof *stage);
    if (!m->layer || !stage) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory loading %s", dir);
        goto fail;
    }
    if (!(m->weights = el_nn_tensor_create(be, EL_F32, total, err))) {
        rc = err ? err->code : EL_ENOMEM;
        goto fail;
    }
    size_t at = 0;
    m->embed = el_nn_view(m->weights, at, V * D);
    at += V * D;
    m->final_norm = el_nn_view(m->weights, at, D);
    at += D;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else {
        m->lm_head = el_nn_view(m->weights, at, V * D);
        at += V * D;
    }
    for (size_t l = 0; l < L; l++)
        for (int i = 0; i < W_PER_LAYER; i++) {
            m->layer[l * W_PER_LAYER + (size_t)i] = el_nn_view(m->weights, at, sizes[i]);
            at += sizes[i];
        }
    if ((rc = open_source(dir, &src, err)))
        goto fail;
    int64_t d = (int64_t)D, f = (int64_t)F, kv = (int64_t)KV;
    if ((rc = load_weight(m, &src, dir, "model.embed_tokens.weight", (int64_t)V, d, m->embed,
                          stage, err)) ||
        (rc = load_weight(m, &src, dir, "model.norm.weight", d, 0, m->final_norm, stage, err)))
        goto fail;
    if (!c->tie_word_embeddings &&
        (rc = load_weight(m, &src, dir, "lm_head.weight", (int64_t)V, d, m->lm_head, stage, err)))
        goto fail;
    static const char *const names[W_PER_LAYER] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
        "post_attention_layernorm",
    };
    int64_t rows[W_PER_LAYER] = {d, kv, kv, d, f, f, d, d, d};
    int64_t cols[W_PER_LAYER] = {d, d, d, d, d, d, f, 0, 0};
    for (size_t l = 0; l < L; l++)
        for (int i = 0; i < W_PER_LAYER; i++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%zu.%s.weight", l, names[i]);
            if ((rc = load_weight(m, &src, dir, name, rows[i], cols[i],
                                  m->layer[l * W_PER_LAYER + (size_t)i], stage, err)))
                goto fail;
        }
    close_source(&src);
    el_free(stage);
    *out = m;
    return 0;
fail:
    close_source(&src);
    el_free(stage);
    el_nn_llama_destroy(m);
    return rc;
}

void el_nn_llama_destroy(el_llama *m)
{
    if (!m)
        return;
    el_nn_tensor_destroy(m->be, m->weights);
    el_nn_tensor_destroy(m->be, m->lora_params);
    el_nn_tensor_destroy(m->be, m->lora_grads);
    el_free(m->slot_of);
    el_free(m->layer);
    el_free(m);
}

int el_nn_llama_set_lora(el_llama *m, const el_lora *lora, int with_grads, el_error *err)
{
    el_nn_tensor_destroy(m->be, m->lora_params);
    el_nn_tensor_destroy(m->be, m->lora_grads);
    el_free(m->slot_of);
    m->lora_params = m->lora_grads = NULL;
    m->slot_of = NULL;
    m->lora = NULL;
    if (!lora)
        return 0;
    size_t L = (size_t)m->cfg.num_hidden_layers;
    m->slot_of = el_malloc(L * EL_LORA_NTARGETS * sizeof *m->slot_of);
    if (!m->slot_of)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    for (size_t i = 0; i < L * EL_LORA_NTARGETS; i++)
        m->slot_of[i] = -1;
    for (int i = 0; i < lora->nslots; i++) {
        const el_lora_slot *s = &lora->slots[i];
        if (s->layer >= (int)L)
            return el_error_set(err, EL_EINPUT, "adapter has layer %d, the model has %zu",
                                s->layer, L);
        m->slot_of[(size_t)s->layer * EL_LORA_NTARGETS + s->target] = i;
    }
    if (!(m->lora_params = el_nn_tensor_create(m->be, EL_F32, lora->nparams, err)))
        return err ? err->code : EL_ENOMEM;
    int rc = el_nn_write(m->be, el_nn_whole(m->lora_params), lora->params, err);
    if (rc)
        return rc;
    if (with_grads && !(m->lora_grads = el_nn_tensor_create(m->be, EL_F32, lora->nparams, err)))
        return err ? err->code : EL_ENOMEM;
    m->lora = lora;
    return 0;
}

el_tensor *el_nn_llama_lora_params(el_llama *m)
{
    return m->lora_params;
}

el_tensor *el_nn_llama_lora_grads(el_llama *m)
{
    return m->lora_grads;
}

/* ---- workspace ---- */

typedef struct carver {
    el_tensor *t;
    size_t at;
} carver;

static el_view carve(carver *c, size_t n)
{
    el_view v = {c->t, c->at, n};
    c->at += n;
    return v;
}

/* Lays out (or, with C->t NULL, only sizes) every activation view. */
static void plan(el_llama_work *w, carver *c)
{
    const el_llama_config *cfg = &w->m->cfg;
    size_t T = (size_t)w->T, D = (size_t)cfg->hidden_size, F = (size_t)cfg->intermediate_size;
    size_t KV = (size_t)cfg->num_key_value_heads * (size_t)cfg->head_dim;
    size_t P = (size_t)w->B * (size_t)cfg->num_attention_heads * (size_t)w->S * (size_t)w->S;
    int nl = w->backward ? cfg->num_hidden_layers : 1;
    for (int l = 0; l < nl; l++) {
        layer_acts *a = &w->acts[l];
        a->x = carve(c, T * D);
        a->rstd1 = carve(c, T);
        a->xn1 = carve(c, T * D);
        a->q = carve(c, T * D);
        a->k = carve(c, T * KV);
        a->v = carve(c, T * KV);
        a->p = carve(c, P);
        a->o = carve(c, T * D);
        a->xm = carve(c, T * D);
        a->rstd2 = carve(c, T);
        a->xn2 = carve(c, T * D);
        a->g = carve(c, T * F);
        a->u = carve(c, T * F);
        a->h = carve(c, T * F);
    }
    const el_lora *lora = w->m->lora;
    if (lora) {
        size_t r = (size_t)lora->cfg.rank;
        /* Slots are layer-major; without backward, layer l reuses layer 0's
         * intermediates. */
        int per_layer = lora->nslots / cfg->num_hidden_layers;
        for (int i = 0; i < lora->nslots; i++)
            w->lora_u[i] = (w->backward || i < per_layer) ? carve(c, T * r)
                                                          : w->lora_u[i % per_layer];
        if (w->backward)
            w->dlora = carve(c, T * r);
    }
    w->x_final = carve(c, T * D);
    w->rstd_f = carve(c, T);
    w->xf = carve(c, T * D);
    w->mlp_out = carve(c, T * D);
    w->logits = carve(c, T * (size_t)cfg->vocab_size);
    if (w->backward) {
        w->dx = carve(c, T * D);
        w->dxn = carve(c, T * D);
        w->dtmp = carve(c, T * D);
        w->dq = carve(c, T * D);
        w->dk = carve(c, T * KV);
        w->dv = carve(c, T * KV);
        w->dg = carve(c, T * F);
        w->du = carve(c, T * F);
        w->dh = carve(c, T * F);
    }
}

int el_nn_llama_work_create(el_llama *m, int B, int S, int backward,
                            el_llama_work **out, el_error *err)
{
    *out = NULL;
    if (B < 1 || S < 1 || S > m->cfg.max_position_embeddings || (size_t)B * (size_t)S > (1u << 24))
        return el_error_set(err, EL_EUSAGE,
                            "batch %d x sequence %d does not fit the model (max positions %d)",
                            B, S, m->cfg.max_position_embeddings);
    if (backward && (!m->lora || !m->lora_grads))
        return el_error_set(err, EL_EINTERNAL, "a backward workspace needs LoRA gradients");
    el_llama_work *w = el_calloc(1, sizeof *w);
    if (!w)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    static uint64_t next_id;
    w->id = ++next_id;
    w->m = m;
    w->B = B;
    w->S = S;
    w->T = B * S;
    w->backward = backward;
    w->acts = el_calloc((size_t)(backward ? m->cfg.num_hidden_layers : 1), sizeof *w->acts);
    w->lora_u = el_calloc(m->lora ? (size_t)m->lora->nslots : 1, sizeof *w->lora_u);
    if (!w->acts || !w->lora_u) {
        el_nn_llama_work_destroy(w);
        return el_error_set(err, EL_ENOMEM, "out of memory");
    }
    carver sizing = {NULL, 0};
    plan(w, &sizing);
    if (!(w->arena = el_nn_tensor_create(m->be, EL_F32, sizing.at, err))) {
        el_nn_llama_work_destroy(w);
        return err ? err->code : EL_ENOMEM;
    }
    carver c = {w->arena, 0};
    plan(w, &c);
    *out = w;
    return 0;
}

void el_nn_llama_work_destroy(el_llama_work *w)
{
    if (!w)
        return;
    el_nn_tensor_destroy(w->m->be, w->arena);
    el_free(w->acts);
    el_free(w->lora_u);
    el_free(w);
}

uint64_t el_nn_llama_work_key(const el_llama_work *w, unsigned purpose)
{
    return (w->id << 8) | (purpose & 0xff);
}

el_view el_nn_llama_logits(el_llama_work *w)
{
    return w->logits;
}

/* ---- forward / backward ---- */

#define TRY(call) do { if ((rc = (call))) return rc; } while (0)

static int slot_index(const el_llama_work *w, int layer, el_lora_target t)
{
    if (!w->m->lora)
        return -1;
    return w->m->slot_of[(size_t)layer * EL_LORA_NTARGETS + t];
}

static el_view lora_a(const el_llama_work *w, int s)
{
    const el_lora *l = w->m->lora;
    return el_nn_view(w->m->lora_params, l->slots[s].a_off,
                      (size_t)l->cfg.rank * (size_t)l->slots[s].in);
}

static el_view lora_b(const el_llama_work *w, int s)
{
    const el_lora *l = w->m->lora;
    return el_nn_view(w->m->lora_params, l->slots[s].b_off,
                      (size_t)l->slots[s].out * (size_t)l->cfg.rank);
}

static el_view grad_of(const el_llama_work *w, el_view param)
{
    return el_nn_view(w->m->lora_grads, param.off, param.n);
}

/* y = x.W^T (+ s * (x.A^T).B^T when target T of LAYER has a slot). */
static int linear_fwd(el_llama_work *w, int layer, el_lora_target t, el_view x, int in,
                      int out, el_view W, el_view y, el_error *err)
{
    el_backend *be = w->m->be;
    int rc;
    TRY(el_nn_matmul(be, EL_MM_NT, w->T, out, in, 1.0f, x, W, 0.0f, y, err));
    int s = slot_index(w, layer, t);
    if (s < 0)
        return 0;
    int r = w->m->lora->cfg.rank;
    float scale = el_nn_lora_scale(&w->m->lora->cfg);
    el_view u = w->lora_u[s];
    TRY(el_nn_matmul(be, EL_MM_NT, w->T, r, in, 1.0f, x, lora_a(w, s), 0.0f, u, err));
    return el_nn_matmul(be, EL_MM_NT, w->T, out, r, scale, u, lora_b(w, s), 1.0f, y, err);
}

/* dx = BETA * dx + dy.W (+ LoRA path), and the LoRA gradients of the slot. */
static int linear_bwd(el_llama_work *w, int layer, el_lora_target t, el_view x, int in,
                      int out, el_view W, el_view dy, float beta, el_view dx, el_error *err)
{
    el_backend *be = w->m->be;
    int rc;
    TRY(el_nn_matmul(be, EL_MM_NN, w->T, in, out, 1.0f, dy, W, beta, dx, err));
    int s = slot_index(w, layer, t);
    if (s < 0)
        return 0;
    int r = w->m->lora->cfg.rank;
    float scale = el_nn_lora_scale(&w->m->lora->cfg);
    el_view A = lora_a(w, s), Bm = lora_b(w, s), u = w->lora_u[s];
    TRY(el_nn_matmul(be, EL_MM_TN, out, r, w->T, scale, dy, u, 1.0f, grad_of(w, Bm), err));
    TRY(el_nn_matmul(be, EL_MM_NN, w->T, r, out, scale, dy, Bm, 0.0f, w->dlora, err));
    TRY(el_nn_matmul(be, EL_MM_TN, r, in, w->T, 1.0f, w->dlora, x, 1.0f, grad_of(w, A), err));
    return el_nn_matmul(be, EL_MM_NN, w->T, in, r, 1.0f, w->dlora, A, 1.0f, dx, err);
}

static el_view weight(const el_llama_work *w, int layer, int which)
{
    return w->m->layer[(size_t)layer * W_PER_LAYER + (size_t)which];
}

int el_nn_llama_forward(el_llama_work *w, el_view ids, el_view targets, el_view loss,
                        int backward, float grad_scale, el_error *err)
{
    el_llama *m = w->m;
    el_backend *be = m->be;
    const el_llama_config *c = &m->cfg;
    int T = w->T, B = w->B, S = w->S, D = c->hidden_size, F = c->intermediate_size;
    int H = c->num_attention_heads, KVH = c->num_key_value_heads, hd = c->head_dim;
    int KV = KVH * hd, V = c->vocab_size, L = c->num_hidden_layers;
    float eps = c->rms_norm_eps, theta = c->rope_theta, scale = 1.0f / sqrtf((float)hd);
    int rc;
    if (backward && !w->backward)
        return el_error_set(err, EL_EINTERNAL, "workspace was not made for backward");
    if (backward && !targets.t)
        return el_error_set(err, EL_EINTERNAL, "backward needs targets");

    TRY(el_nn_embedding(be, ids, m->embed, T, V, D, w->acts[0].x, err));
    for (int l = 0; l < L; l++) {
        layer_acts *a = &w->acts[w->backward ? l : 0];
        el_view x_next = l + 1 < L ? w->acts[w->backward ? l + 1 : 0].x : w->x_final;
        TRY(el_nn_rmsnorm_fwd(be, a->x, weight(w, l, W_IN_NORM), T, D, eps, a->xn1, a->rstd1, err));
        TRY(linear_fwd(w, l, EL_LORA_Q, a->xn1, D, D, weight(w, l, W_Q), a->q, err));
        TRY(linear_fwd(w, l, EL_LORA_K, a->xn1, D, KV, weight(w, l, W_K), a->k, err));
        TRY(linear_fwd(w, l, EL_LORA_V, a->xn1, D, KV, weight(w, l, W_V), a->v, err));
        TRY(el_nn_rope(be, a->q, B, S, H, hd, theta, 0, err));
        TRY(el_nn_rope(be, a->k, B, S, KVH, hd, theta, 0, err));
        TRY(el_nn_attention_fwd(be, a->q, a->k, a->v, B, S, H, KVH, hd, scale, a->o, a->p, err));
        TRY(linear_fwd(w, l, EL_LORA_O, a->o, D, D, weight(w, l, W_O), w->mlp_out, err));
        TRY(el_nn_add(be, a->x, w->mlp_out, a->xm, err));
        TRY(el_nn_rmsnorm_fwd(be, a->xm, weight(w, l, W_POST_NORM), T, D, eps, a->xn2, a->rstd2,
                              err));
        TRY(linear_fwd(w, l, EL_LORA_GATE, a->xn2, D, F, weight(w, l, W_GATE), a->g, err));
        TRY(linear_fwd(w, l, EL_LORA_UP, a->xn2, D, F, weight(w, l, W_UP), a->u, err));
        TRY(el_nn_swiglu_fwd(be, a->g, a->u, a->h, err));
        TRY(linear_fwd(w, l, EL_LORA_DOWN, a->h, F, D, weight(w, l, W_DOWN), w->mlp_out, err));
        /* Without backward the one shared layer slot is both input and
         * output: add in place into x (elementwise, so aliasing is safe). */
        TRY(el_nn_add(be, a->xm, w->mlp_out, x_next, err));
    }
    TRY(el_nn_rmsnorm_fwd(be, w->x_final, m->final_norm, T, D, eps, w->xf, w->rstd_f, err));
    TRY(el_nn_matmul(be, EL_MM_NT, T, V, D, 1.0f, w->xf, m->lm_head, 0.0f, w->logits, err));
    if (!targets.t)
        return 0;
    el_view none = {0};
    TRY(el_nn_cross_entropy(be, w->logits, targets, T, V, grad_scale, loss,
                            backward ? w->logits : none, err));
    if (!backward)
        return 0;

    el_view dlogits = w->logits;
    TRY(el_nn_matmul(be, EL_MM_NN, T, D, V, 1.0f, dlogits, m->lm_head, 0.0f, w->dxn, err));
    TRY(el_nn_rmsnorm_bwd(be, w->x_final, m->final_norm, w->rstd_f, w->dxn, T, D, 0.0f, w->dx,
                          err));
    for (int l = L - 1; l >= 0; l--) {
        layer_acts *a = &w->acts[l];
        /* MLP block: x_next = xm + down(swiglu(gate(xn2), up(xn2))). */
        TRY(linear_bwd(w, l, EL_LORA_DOWN, a->h, F, D, weight(w, l, W_DOWN), w->dx, 0.0f, w->dh,
                       err));
        TRY(el_nn_swiglu_bwd(be, a->g, a->u, w->dh, w->dg, w->du, err));
        TRY(linear_bwd(w, l, EL_LORA_GATE, a->xn2, D, F, weight(w, l, W_GATE), w->dg, 0.0f,
                       w->dxn, err));
        TRY(linear_bwd(w, l, EL_LORA_UP, a->xn2, D, F, weight(w, l, W_UP), w->du, 1.0f, w->dxn,
                       err));
        TRY(el_nn_rmsnorm_bwd(be, a->xm, weight(w, l, W_POST_NORM), a->rstd2, w->dxn, T, D, 1.0f,
                              w->dx, err));
        /* Attention block: xm = x + o_proj(attn(rope(q), rope(k), v)). */
        TRY(linear_bwd(w, l, EL_LORA_O, a->o, D, D, weight(w, l, W_O), w->dx, 0.0f, w->dtmp,
                       err));
        TRY(el_nn_attention_bwd(be, a->q, a->k, a->v, a->p, w->dtmp, B, S, H, KVH, hd, scale,
                                w->dq, w->dk, w->dv, err));
        TRY(el_nn_rope(be, w->dq, B, S, H, hd, theta, 1, err));
        TRY(el_nn_rope(be, w->dk, B, S, KVH, hd, theta, 1, err));
        TRY(linear_bwd(w, l, EL_LORA_Q, a->xn1, D, D, weight(w, l, W_Q), w->dq, 0.0f, w->dxn,
                       err));
        TRY(linear_bwd(w, l, EL_LORA_K, a->xn1, D, KV, weight(w, l, W_K), w->dk, 1.0f, w->dxn,
                       err));
        TRY(linear_bwd(w, l, EL_LORA_V, a->xn1, D, KV, weight(w, l, W_V), w->dv, 1.0f, w->dxn,
                       err));
        TRY(el_nn_rmsnorm_bwd(be, a->x, weight(w, l, W_IN_NORM), a->rstd1, w->dxn, T, D, 1.0f,
                              w->dx, err));
    }
    return 0;
}
