/* Test fixture shared by test_model.c and test_train.c: writes a small random
 * Llama model dir (config.json + model.safetensors), and evaluates the same
 * model naively in double precision, straight from the HF definitions, as an
 * independent reference for the backend forward/backward. */
#ifndef EL_TESTS_TINY_MODEL_H
#define EL_TESTS_TINY_MODEL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/safetensors.h"
#include "nn/config.h"
#include "nn/lora.h"
#include "nn/rng.h"


enum { TW_Q, TW_K, TW_V, TW_O, TW_GATE, TW_UP, TW_DOWN, TW_IN, TW_POST, TW_N };

typedef struct tiny_model {
    el_llama_config cfg;
    float *embed, *norm, *lm_head;   /* lm_head == embed when tied */
    float *w[16][TW_N];              /* per layer */
} tiny_model;

static inline float tiny_uniform(uint64_t *rng, float a)
{
    return (float)((2.0 * el_nn_rng_uniform(rng) - 1.0) * a);
}

static float *tiny_rand(size_t n, uint64_t *rng, float a, float base)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = base + tiny_uniform(rng, a);
    return p;
}

static inline void tiny_sizes(const el_llama_config *c, int i, int *rows, int *cols)
{
    int D = c->hidden_size, F = c->intermediate_size, KV = c->num_key_value_heads * c->head_dim;
    int r[TW_N] = {D, KV, KV, D, F, F, D, D, D}, k[TW_N] = {D, D, D, D, D, D, F, 0, 0};
    *rows = r[i];
    *cols = k[i];
}

/* Random weights of a model with the given sizes (L <= 16). */
static inline void tiny_init(tiny_model *m, int V, int D, int F, int L, int H, int KVH, int tied,
                      uint64_t seed)
{
    memset(m, 0, sizeof *m);
    el_llama_config *c = &m->cfg;
    c->vocab_size = V;
    c->hidden_size = D;
    c->intermediate_size = F;
    c->num_hidden_layers = L;
    c->num_attention_heads = H;
    c->num_key_value_heads = KVH;
    c->head_dim = D / H;
    c->max_position_embeddings = 64;
    c->tie_word_embeddings = tied;
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    uint64_t rng = seed;
    m->embed = tiny_rand((size_t)V * D, &rng, 1.0f, 0.0f);
    m->norm = tiny_rand((size_t)D, &rng, 0.2f, 1.0f);
    m->lm_head = tied ? m->embed : tiny_rand((size_t)V * D, &rng, 0.5f, 0.0f);
    for (int l = 0; l < L; l++)
        for (int i = 0; i < TW_N; i++) {
            int rows, cols;
            tiny_sizes(c, i, &rows, &cols);
            m->w[l][i] = cols ? tiny_rand((size_t)rows * cols, &rng, 1.0f / sqrtf((float)cols), 0)
                              : tiny_rand((size_t)rows, &rng, 0.2f, 1.0f);
        }
}

static inline void tiny_free(tiny_model *m)
{
    free(m->embed);
    free(m->norm);
    if (m->lm_head != m->embed)
        free(m->lm_head);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int i = 0; i < TW_N; i++)
            free(m->w[l][i]);
}

/* Writes DIR/config.json and DIR/model.safetensors. Returns 0 on success. */
static inline int tiny_write(const tiny_model *m, const char *dir, const char *tokenizer)
{
    const el_llama_config *c = &m->cfg;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\",\n"
            " \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d,\n"
            " \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
            " \"num_key_value_heads\": %d, \"rms_norm_eps\": %g, \"rope_theta\": %g,\n"
            " \"max_position_embeddings\": %d, \"tie_word_embeddings\": %s%s%s%s}\n",
            c->vocab_size, c->hidden_size, c->intermediate_size, c->num_hidden_layers,
            c->num_attention_heads, c->num_key_value_heads, (double)c->rms_norm_eps,
            (double)c->rope_theta, c->max_position_embeddings,
            c->tie_word_embeddings ? "true" : "false", tokenizer ? ", \"edgeloop_tokenizer\": \"" : "",
            tokenizer ? tokenizer : "", tokenizer ? "\"" : "");
    fclose(f);
    static const char *const names[TW_N] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
        "post_attention_layernorm",
    };
    el_st_entry e[3 + 16 * TW_N];
    static char keys[16 * TW_N][96];
    size_t n = 0;
    e[n++] = (el_st_entry){"model.embed_tokens.weight", 2, {c->vocab_size, c->hidden_size}, m->embed};
    e[n++] = (el_st_entry){"model.norm.weight", 1, {c->hidden_size}, m->norm};
    if (!c->tie_word_embeddings)
        e[n++] = (el_st_entry){"lm_head.weight", 2, {c->vocab_size, c->hidden_size}, m->lm_head};
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int i = 0; i < TW_N; i++) {
            int rows, cols;
            tiny_sizes(c, i, &rows, &cols);
            char *k = keys[l * TW_N + i];
            snprintf(k, 96, "model.layers.%d.%s.weight", l, names[i]);
            e[n] = (el_st_entry){k, cols ? 2 : 1, {rows, cols}, m->w[l][i]};
            n++;
        }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    el_error err;
    return el_safetensors_write(path, e, n, NULL, 0, &err);
}

/* ---- double-precision reference ---- */

static inline void ref_rmsnorm(const double *x, const float *w, int D, double eps, double *y)
{
    double ss = 0;
    for (int i = 0; i < D; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++)
        y[i] = x[i] * r * w[i];
}

/* y[out] = x.W^T (+ scale * (x.A^T).B^T for slot S, when S >= 0). */
static inline void ref_linear(const double *x, const float *W, int in, int out, const el_lora *lora,
                       const double *lp, int s, double *y)
{
    for (int o = 0; o < out; o++) {
        double acc = 0;
        for (int i = 0; i < in; i++)
            acc += x[i] * W[(size_t)o * in + i];
        y[o] = acc;
    }
    if (s < 0)
        return;
    int r = lora->cfg.rank;
    double sc = el_nn_lora_scale(&lora->cfg), u[64];
    const double *A = lp + lora->slots[s].a_off, *B = lp + lora->slots[s].b_off;
    for (int j = 0; j < r; j++) {
        u[j] = 0;
        for (int i = 0; i < in; i++)
            u[j] += x[i] * A[(size_t)j * in + i];
    }
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++)
            y[o] += sc * u[j] * B[(size_t)o * r + j];
}

static inline void ref_rope(double *x, int heads, int hd, int pos, double theta)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double ang = pos * pow(theta, -2.0 * i / hd);
            double a = x[h * hd + i], b = x[h * hd + i + hd / 2];
            x[h * hd + i] = a * cos(ang) - b * sin(ang);
            x[h * hd + i + hd / 2] = b * cos(ang) + a * sin(ang);
        }
}

static inline int ref_slot(const el_lora *lora, int layer, int t)
{
    if (!lora)
        return -1;
    for (int i = 0; i < lora->nslots; i++)
        if (lora->slots[i].layer == layer && (int)lora->slots[i].target == t)
            return i;
    return -1;
}

/* Sum of NLL over scored positions of B sequences of S tokens; LP are the
 * LoRA params in double (NULL lora = base model). */
static inline double ref_loss(const tiny_model *m, const el_lora *lora, const double *lp,
                       const int32_t *ids, const int32_t *targets, int B, int S)
{
    const el_llama_config *c = &m->cfg;
    int D = c->hidden_size, F = c->intermediate_size, H = c->num_attention_heads;
    int KVH = c->num_key_value_heads, hd = c->head_dim, KV = KVH * hd, V = c->vocab_size;
    int T = B * S;
    double *x = calloc((size_t)T * D, 8), *xn = calloc((size_t)T * D, 8);
    double *q = calloc((size_t)T * D, 8), *k = calloc((size_t)T * KV, 8);
    double *v = calloc((size_t)T * KV, 8), *o = calloc((size_t)T * D, 8);
    double *tmp = calloc((size_t)(F > V ? F : V) + D, 8), *g = calloc((size_t)F, 8);
    double *u = calloc((size_t)F, 8), *att = calloc((size_t)S, 8);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            x[(size_t)t * D + i] = m->embed[(size_t)ids[t] * D + i];
    for (int l = 0; l < c->num_hidden_layers; l++) {
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * D, *xnt = xn + (size_t)t * D;
            ref_rmsnorm(xt, m->w[l][TW_IN], D, c->rms_norm_eps, xnt);
            ref_linear(xnt, m->w[l][TW_Q], D, D, lora, lp, ref_slot(lora, l, EL_LORA_Q),
                       q + (size_t)t * D);
            ref_linear(xnt, m->w[l][TW_K], D, KV, lora, lp, ref_slot(lora, l, EL_LORA_K),
                       k + (size_t)t * KV);
            ref_linear(xnt, m->w[l][TW_V], D, KV, lora, lp, ref_slot(lora, l, EL_LORA_V),
                       v + (size_t)t * KV);
            ref_rope(q + (size_t)t * D, H, hd, t % S, c->rope_theta);
            ref_rope(k + (size_t)t * KV, KVH, hd, t % S, c->rope_theta);
        }
        for (int b = 0; b < B; b++)
            for (int s = 0; s < S; s++)
                for (int h = 0; h < H; h++) {
                    int kh = h / (H / KVH);
                    const double *qt = q + ((size_t)b * S + s) * D + h * hd;
                    double mx = -1e300, sum = 0;
                    for (int j = 0; j <= s; j++) {
                        const double *kt = k + ((size_t)b * S + j) * KV + kh * hd;
                        double dot = 0;
                        for (int i = 0; i < hd; i++)
                            dot += qt[i] * kt[i];
                        att[j] = dot / sqrt((double)hd);
                        if (att[j] > mx)
                            mx = att[j];
                    }
                    for (int j = 0; j <= s; j++)
                        sum += (att[j] = exp(att[j] - mx));
                    double *ot = o + ((size_t)b * S + s) * D + h * hd;
                    for (int i = 0; i < hd; i++) {
                        double acc = 0;
                        for (int j = 0; j <= s; j++)
                            acc += att[j] / sum * v[((size_t)b * S + j) * KV + kh * hd + i];
                        ot[i] = acc;
                    }
                }
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * D, *xnt = xn + (size_t)t * D;
            ref_linear(o + (size_t)t * D, m->w[l][TW_O], D, D, lora, lp,
                       ref_slot(lora, l, EL_LORA_O), tmp);
            for (int i = 0; i < D; i++)
                xt[i] += tmp[i];
            ref_rmsnorm(xt, m->w[l][TW_POST], D, c->rms_norm_eps, xnt);
            ref_linear(xnt, m->w[l][TW_GATE], D, F, lora, lp, ref_slot(lora, l, EL_LORA_GATE), g);
            ref_linear(xnt, m->w[l][TW_UP], D, F, lora, lp, ref_slot(lora, l, EL_LORA_UP), u);
            for (int i = 0; i < F; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            ref_linear(g, m->w[l][TW_DOWN], F, D, lora, lp, ref_slot(lora, l, EL_LORA_DOWN), tmp);
            for (int i = 0; i < D; i++)
                xt[i] += tmp[i];
        }
    }
    double total = 0;
    for (int t = 0; t < T; t++) {
        if (targets[t] < 0)
            continue;
        ref_rmsnorm(x + (size_t)t * D, m->norm, D, c->rms_norm_eps, xn);
        ref_linear(xn, m->lm_head, D, V, NULL, NULL, -1, tmp);
        double mx = -1e300, sum = 0;
        for (int i = 0; i < V; i++)
            if (tmp[i] > mx)
                mx = tmp[i];
        for (int i = 0; i < V; i++)
            sum += exp(tmp[i] - mx);
        total += log(sum) + mx - tmp[targets[t]];
    }
    free(x);
    free(xn);
    free(q);
    free(k);
    free(v);
    free(o);
    free(tmp);
    free(g);
    free(u);
    free(att);
    return total;
}

#endif
