/* LoRA adapter layout and PEFT file I/O (see lora.h).
 *
 * y = x.W^T + scale * (x.A^T).B^T with scale = alpha/r (alpha/sqrt(r) with
 * rsLoRA), as PEFT's Linear.forward. A is [r, in], B is [out, r], exactly the
 * shapes of PEFT's lora_A/lora_B nn.Linear weights, so files round-trip with
 * PEFT unchanged. */
#include "nn/lora.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/safetensors.h"
#include "nn/rng.h"

#define ADAPTER_CONFIG_MAX (1024 * 1024)

static const char *const target_names[EL_LORA_NTARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *el_nn_lora_target_name(el_lora_target t)
{
    return target_names[t];
}

static int target_from_name(const char *s, size_t n)
{
    for (int t = 0; t < EL_LORA_NTARGETS; t++)
        if (strlen(target_names[t]) == n && !strncmp(s, target_names[t], n))
            return t;
    return -1;
}

int el_nn_lora_targets_parse(const char *csv, unsigned *mask, el_error *err)
{
    *mask = 0;
    for (const char *p = csv; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int t = target_from_name(p, n);
        if (t < 0)
            return el_error_set(err, EL_EUSAGE,
                                "unknown LoRA target \"%.*s\" (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                                (int)n, p);
        *mask |= 1u << t;
        if (!end)
            break;
        p = end + 1;
    }
    if (!*mask)
        return el_error_set(err, EL_EUSAGE, "no LoRA targets given");
    return 0;
}

float el_nn_lora_scale(const el_lora_config *cfg)
{
    return cfg->use_rslora ? cfg->alpha / sqrtf((float)cfg->rank)
                           : cfg->alpha / (float)cfg->rank;
}

static void dims_of(const el_llama_config *m, el_lora_target t, int *in, int *out)
{
    int D = m->hidden_size, KV = m->num_key_value_heads * m->head_dim;
    int F = m->intermediate_size;
    switch (t) {
    case EL_LORA_K:
    case EL_LORA_V: *in = D; *out = KV; break;
    case EL_LORA_GATE:
    case EL_LORA_UP: *in = D; *out = F; break;
    case EL_LORA_DOWN: *in = F; *out = D; break;
    default: *in = D; *out = D; break;
    }
}

int el_nn_lora_create(const el_llama_config *model, const el_lora_config *cfg,
                      el_lora **out, el_error *err)
{
    *out = NULL;
    if (cfg->rank < 1 || cfg->rank > EL_LORA_MAX_RANK)
        return el_error_set(err, EL_EUSAGE, "LoRA rank %d is outside [1, %d]", cfg->rank,
                            EL_LORA_MAX_RANK);
    if (!(cfg->alpha > 0) || !isfinite(cfg->alpha))
        return el_error_set(err, EL_EUSAGE, "LoRA alpha must be positive");
    if (!cfg->targets || cfg->targets >> EL_LORA_NTARGETS)
        return el_error_set(err, EL_EUSAGE, "no valid LoRA targets");
    el_lora *l = el_calloc(1, sizeof *l);
    if (!l)
        return el_error_set(err, EL_ENOMEM, "out of memory for an adapter");
    l->cfg = *cfg;
    int per_layer = __builtin_popcount(cfg->targets);
    l->slots = el_calloc((size_t)model->num_hidden_layers * (size_t)per_layer, sizeof *l->slots);
    if (!l->slots)
        goto oom;
    size_t at = 0, r = (size_t)cfg->rank;
    for (int layer = 0; layer < model->num_hidden_layers; layer++)
        for (int t = 0; t < EL_LORA_NTARGETS; t++) {
            if (!(cfg->targets & (1u << t)))
                continue;
            el_lora_slot *s = &l->slots[l->nslots++];
            s->layer = layer;
            s->target = (el_lora_target)t;
            dims_of(model, s->target, &s->in, &s->out);
            s->a_off = at;
            at += r * (size_t)s->in;
            s->b_off = at;
            at += (size_t)s->out * r;
        }
    l->nparams = at;
    l->params = el_calloc(at, sizeof *l->params);
    if (!l->params)
        goto oom;
    *out = l;
    return 0;
oom:
    el_nn_lora_destroy(l);
    return el_error_set(err, EL_ENOMEM, "out of memory for an adapter");
}

void el_nn_lora_destroy(el_lora *lora)
{
    if (!lora)
        return;
    el_free(lora->slots);
    el_free(lora->params);
    el_free(lora);
}

void el_nn_lora_init(el_lora *lora, uint64_t seed)
{
    uint64_t rng = seed;
    memset(lora->params, 0, lora->nparams * sizeof *lora->params);
    for (int i = 0; i < lora->nslots; i++) {
        const el_lora_slot *s = &lora->slots[i];
        /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound
         * gain*sqrt(3/fan_in) = 1/sqrt(fan_in), fan_in = in. */
        double bound = 1.0 / sqrt((double)s->in);
        size_t n = (size_t)lora->cfg.rank * (size_t)s->in;
        for (size_t j = 0; j < n; j++)
            lora->params[s->a_off + j] = (float)((2.0 * el_nn_rng_uniform(&rng) - 1.0) * bound);
    }
}

void el_nn_lora_key(const el_lora_slot *slot, int is_b, char *buf, size_t n)
{
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", slot->layer,
             slot->target <= EL_LORA_O ? "self_attn" : "mlp", target_names[slot->target],
             is_b ? 'B' : 'A');
}

/* The entries of every A and B in PARAMS, keys in KEYS (2 * nslots * 96). */
static int make_entries(const el_lora *lora, const float *params, el_st_entry **entries,
                        char **keys, el_error *err)
{
    size_t n = 2 * (size_t)lora->nslots;
    *entries = el_calloc(n ? n : 1, sizeof **entries);
    *keys = el_calloc(n ? n : 1, 96);
    if (!*entries || !*keys) {
        el_free(*entries);
        el_free(*keys);
        return el_error_set(err, EL_ENOMEM, "out of memory");
    }
    for (int i = 0; i < lora->nslots; i++) {
        const el_lora_slot *s = &lora->slots[i];
        for (int b = 0; b < 2; b++) {
            el_st_entry *e = &(*entries)[2 * i + b];
            char *key = *keys + (2 * (size_t)i + (size_t)b) * 96;
            el_nn_lora_key(s, b, key, 96);
            e->name = key;
            e->ndim = 2;
            e->shape[0] = b ? s->out : lora->cfg.rank;
            e->shape[1] = b ? lora->cfg.rank : s->in;
            e->data = params + (b ? s->b_off : s->a_off);
        }
    }
    return 0;
}

int el_nn_lora_save_tensors(const el_lora *lora, const float *params, const char *path,
                            el_error *err)
{
    el_st_entry *entries;
    char *keys;
    int rc = make_entries(lora, params ? params : lora->params, &entries, &keys, err);
    if (rc)
        return rc;
    rc = el_safetensors_write(path, entries, 2 * (size_t)lora->nslots, NULL, 0, err);
    el_free(entries);
    el_free(keys);
    return rc;
}

int el_nn_lora_save(const el_lora *lora, const float *params, const char *dir,
                    el_error *err)
{
    char path[4096];
    int rc = el_fs_mkdirs(dir, 0755, err);
    if (rc)
        return rc;
    json_t *cfg = json_object();
    json_t *targets = json_array();
    if (!cfg || !targets) {
        json_decref(cfg);
        json_decref(targets);
        return el_error_set(err, EL_ENOMEM, "out of memory");
    }
    for (int t = 0; t < EL_LORA_NTARGETS; t++)
        if (lora->cfg.targets & (1u << t))
            json_array_append_new(targets, json_string(target_names[t]));
    double alpha = lora->cfg.alpha;
    json_object_set_new(cfg, "base_model_name_or_path", json_string(lora->cfg.base_model));
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "lora_alpha", alpha == floor(alpha) && alpha < 1e9
                                               ? json_integer((json_int_t)alpha)
                                               : json_real(alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(0.0));
    json_object_set_new(cfg, "modules_to_save", json_null());
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "r", json_integer(lora->cfg.rank));
    json_object_set_new(cfg, "target_modules", targets);
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "use_rslora", json_boolean(lora->cfg.use_rslora));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    if (!text)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    if (el_fs_join(path, sizeof path, dir, "adapter_config.json")) {
        free(text);
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    }
    size_t len = strlen(text);
    text[len] = '\n';   /* the NUL is not written */
    rc = el_fs_write_atomic(path, text, len + 1, 0644, err);
    free(text);
    if (rc)
        return rc;
    if (el_fs_join(path, sizeof path, dir, "adapter_model.safetensors"))
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    return el_nn_lora_save_tensors(lora, params, path, err);
}

static int read_config(const char *path, el_lora_config *cfg, el_error *err)
{
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, ADAPTER_CONFIG_MAX, &buf, &len, err);
    if (rc)
        return rc;
    json_t *o = el_json_parse(buf, len, ADAPTER_CONFIG_MAX, path, err);
    el_free(buf);
    if (!o)
        return EL_EINPUT;
    memset(cfg, 0, sizeof *cfg);
    int64_t r = 0;
    double alpha = 0;
    const char *peft_type = NULL, *base = NULL;
    json_t *targets;
    if ((rc = el_json_get_i64(o, "r", 1, EL_LORA_MAX_RANK, &r, path, err)) ||
        (rc = el_json_get_f64(o, "lora_alpha", &alpha, path, err)) ||
        (rc = el_json_get_str(o, "peft_type", &peft_type, path, err)) ||
        (rc = el_json_get_bool_opt(o, "use_rslora", &cfg->use_rslora, path, err)))
        goto done;
    json_t *b = json_object_get(o, "base_model_name_or_path");
    if (json_is_string(b))
        base = json_string_value(b);
    if (strcmp(peft_type, "LORA")) {
        rc = el_error_set(err, EL_EINPUT, "%s: peft_type \"%s\" is not LORA", path, peft_type);
        goto done;
    }
    if (!(alpha > 0)) {
        rc = el_error_set(err, EL_EINPUT, "%s: lora_alpha must be positive", path);
        goto done;
    }
    targets = json_object_get(o, "target_modules");
    if (!json_is_array(targets) || json_array_size(targets) == 0) {
        rc = el_error_set(err, EL_EINPUT, "%s: target_modules must be a non-empty list", path);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(targets); i++) {
        json_t *t = json_array_get(targets, i);
        int id = json_is_string(t) ? target_from_name(json_string_value(t),
                                                      json_string_length(t)) : -1;
        if (id < 0) {
            rc = el_error_set(err, EL_EINPUT, "%s: target_modules[%zu] is not a supported module",
                              path, i);
            goto done;
        }
        cfg->targets |= 1u << id;
    }
    cfg->rank = (int)r;
    cfg->alpha = (float)alpha;
    snprintf(cfg->base_model, sizeof cfg->base_model, "%s", base ? base : "");
done:
    json_decref(o);
    return rc;
}

int el_nn_lora_load(const el_llama_config *model, const char *dir, el_lora **out,
                    el_error *err)
{
    *out = NULL;
    char path[4096];
    el_lora_config cfg;
    if (el_fs_join(path, sizeof path, dir, "adapter_config.json"))
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    int rc = read_config(path, &cfg, err);
    if (rc)
        return rc;
    el_lora *l;
    if ((rc = el_nn_lora_create(model, &cfg, &l, err)))
        return el_error_prefix(err, "%s", path);
    if (el_fs_join(path, sizeof path, dir, "adapter_model.safetensors")) {
        el_nn_lora_destroy(l);
        return el_error_set(err, EL_EINPUT, "path too long: %s", dir);
    }
    el_safetensors *st;
    if ((rc = el_safetensors_open(path, &st, err))) {
        el_nn_lora_destroy(l);
        return rc;
    }
    size_t found = 0;
    for (int i = 0; i < l->nslots && !rc; i++)
        for (int b = 0; b < 2 && !rc; b++) {
            const el_lora_slot *s = &l->slots[i];
            char key[96];
            el_nn_lora_key(s, b, key, sizeof key);
            const el_st_tensor *t = el_safetensors_find(st, key);
            int64_t rows = b ? s->out : cfg.rank, cols = b ? cfg.rank : s->in;
            if (!t)
                rc = el_error_set(err, EL_EINPUT, "%s: missing tensor \"%s\"", path, key);
            else if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
                rc = el_error_set(err, EL_EINPUT,
                                  "%s: tensor \"%s\" must have shape [%lld, %lld]", path, key,
                                  (long long)rows, (long long)cols);
            else {
                el_safetensors_to_f32(t, l->params + (b ? s->b_off : s->a_off));
                found++;
            }
        }
    if (!rc && found != el_safetensors_count(st))
        rc = el_error_set(err, EL_EINPUT,
                          "%s: holds %zu tensors, the adapter config expects %zu (layers beyond the model or untargeted modules)",
                          path, el_safetensors_count(st), found);
    el_safetensors_close(st);
    if (rc) {
        el_nn_lora_destroy(l);
        return rc;
    }
    *out = l;
    return 0;
}
