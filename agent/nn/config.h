/* The Llama model configuration, read from a Hugging Face config.json. */
#ifndef EL_NN_CONFIG_H
#define EL_NN_CONFIG_H

#include "base/error.h"

typedef enum el_tokenizer_kind { EL_TOKENIZER_NONE = 0, EL_TOKENIZER_BYTES_V1 = 1 } el_tokenizer_kind;

typedef struct el_llama_config {
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int max_position_embeddings;
    int tie_word_embeddings;
    float rms_norm_eps;
    float rope_theta;
    int head_dim;                 /* hidden_size / num_attention_heads */
    el_tokenizer_kind tokenizer;  /* from "edgeloop_tokenizer" */
} el_llama_config;

/* Limits that keep every size product inside int and memory sane. */
#define EL_LLAMA_MAX_DIM 65536
#define EL_LLAMA_MAX_LAYERS 256
#define EL_LLAMA_MAX_VOCAB 1048576

/* Reads and validates DIR/config.json (sizes positive and within limits,
 * heads divide hidden_size, kv heads divide heads, even head dim, vocab >= 259
 * for bytes-v1). Returns 0 and fills *CFG, or EL_ENOTFOUND / EL_EINPUT with
 * ERR naming the file and field; *CFG is unspecified on failure. */
int el_nn_config_load(const char *dir, el_llama_config *cfg, el_error *err);

/* Parses a config.json already in memory; WHAT names it in messages. */
int el_nn_config_parse(const char *json, size_t len, const char *what,
                       el_llama_config *cfg, el_error *err);

#endif
