/* config.json of a Hugging Face Llama model. Unknown fields are ignored (HF
 * writes many we do not use); the ones we need are required, except
 * num_key_value_heads (defaults to num_attention_heads, as HF does),
 * rope_theta (10000), rms_norm_eps (1e-6), tie_word_embeddings (false) and
 * max_position_embeddings (2048). */
#include "nn/config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"

#define CONFIG_MAX_BYTES (1024 * 1024)

static int get_int(const json_t *o, const char *key, int required, int min, int max,
                   int *out, const char *what, el_error *err)
{
    int64_t v = *out;
    int rc = required ? el_json_get_i64(o, key, min, max, &v, what, err)
                      : el_json_get_i64_opt(o, key, min, max, &v, what, err);
    if (rc)
        return rc;
    *out = (int)v;
    return 0;
}

int el_nn_config_parse(const char *json, size_t len, const char *what,
                       el_llama_config *cfg, el_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *o = el_json_parse(json, len, CONFIG_MAX_BYTES, what, err);
    if (!o)
        return EL_EINPUT;
    int rc = 0;
    if (!json_is_object(o)) {
        rc = el_error_set(err, EL_EINPUT, "%s: expected a JSON object", what);
        goto done;
    }
    if ((rc = get_int(o, "vocab_size", 1, 1, EL_LLAMA_MAX_VOCAB, &cfg->vocab_size, what, err)) ||
        (rc = get_int(o, "hidden_size", 1, 2, EL_LLAMA_MAX_DIM, &cfg->hidden_size, what, err)) ||
        (rc = get_int(o, "intermediate_size", 1, 1, 4 * EL_LLAMA_MAX_DIM,
                      &cfg->intermediate_size, what, err)) ||
        (rc = get_int(o, "num_hidden_layers", 1, 1, EL_LLAMA_MAX_LAYERS,
                      &cfg->num_hidden_layers, what, err)) ||
        (rc = get_int(o, "num_attention_heads", 1, 1, EL_LLAMA_MAX_DIM,
                      &cfg->num_attention_heads, what, err)))
        goto done;
    cfg->num_key_value_heads = cfg->num_attention_heads;
    cfg->max_position_embeddings = 2048;
    if ((rc = get_int(o, "num_key_value_heads", 0, 1, EL_LLAMA_MAX_DIM,
                      &cfg->num_key_value_heads, what, err)) ||
        (rc = get_int(o, "max_position_embeddings", 0, 1, 1 << 20,
                      &cfg->max_position_embeddings, what, err)))
        goto done;
    double eps = 1e-6, theta = 10000.0;
    if ((rc = el_json_get_f64_opt(o, "rms_norm_eps", &eps, what, err)) ||
        (rc = el_json_get_f64_opt(o, "rope_theta", &theta, what, err)) ||
        (rc = el_json_get_bool_opt(o, "tie_word_embeddings", &cfg->tie_word_embeddings,
                                   what, err)))
        goto done;
    if (!(eps > 0 && eps < 1) || !(theta > 1)) {
        rc = el_error_set(err, EL_EINPUT, "%s: rms_norm_eps must be in (0, 1) and rope_theta > 1",
                          what);
        goto done;
    }
    cfg->rms_norm_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    if (cfg->hidden_size % cfg->num_attention_heads ||
        cfg->num_attention_heads % cfg->num_key_value_heads) {
        rc = el_error_set(err, EL_EINPUT,
                          "%s: num_attention_heads must divide hidden_size and num_key_value_heads must divide num_attention_heads",
                          what);
        goto done;
    }
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    int head_dim = cfg->head_dim;
    if ((rc = get_int(o, "head_dim", 0, 1, EL_LLAMA_MAX_DIM, &head_dim, what, err)))
        goto done;
    if (head_dim != cfg->head_dim) {
        rc = el_error_set(err, EL_EINPUT,
                          "%s: head_dim %d != hidden_size / num_attention_heads is not supported",
                          what, head_dim);
        goto done;
    }
    if (cfg->head_dim % 2) {
        rc = el_error_set(err, EL_EINPUT, "%s: head dim %d must be even for RoPE", what,
                          cfg->head_dim);
        goto done;
    }
    const char *tok = NULL;
    if ((rc = el_json_get_str_opt(o, "edgeloop_tokenizer", &tok, what, err)))
        goto done;
    if (tok && !strcmp(tok, "bytes-v1")) {
        cfg->tokenizer = EL_TOKENIZER_BYTES_V1;
        if (cfg->vocab_size < 259) {
            rc = el_error_set(err, EL_EINPUT,
                              "%s: tokenizer bytes-v1 needs vocab_size >= 259, got %d", what,
                              cfg->vocab_size);
            goto done;
        }
    } else if (tok) {
        rc = el_error_set(err, EL_EINPUT, "%s: unknown edgeloop_tokenizer \"%s\"", what, tok);
        goto done;
    }
done:
    json_decref(o);
    return rc;
}

int el_nn_config_load(const char *dir, el_llama_config *cfg, el_error *err)
{
    char path[4096];
    if (el_fs_join(path, sizeof path, dir, "config.json"))
        return el_error_set(err, EL_EINPUT, "model path too long: %s", dir);
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, CONFIG_MAX_BYTES, &buf, &len, err);
    if (rc)
        return rc;
    rc = el_nn_config_parse((const char *)buf, len, path, cfg, err);
    el_free(buf);
    return rc;
}
