/* LoRA adapters in the PEFT layout: configuration, parameter layout, PEFT
 * initialization, and adapter_config.json + adapter_model.safetensors I/O.
 *
 * All A and B matrices of an adapter live in one flat f32 array (host side
 * here, one backend tensor in the model), slot after slot: for each layer, for
 * each target in el_lora_target order, A [r, in] then B [out, r]. */
#ifndef EL_NN_LORA_H
#define EL_NN_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "nn/config.h"

typedef enum el_lora_target {
    EL_LORA_Q = 0, EL_LORA_K, EL_LORA_V, EL_LORA_O,
    EL_LORA_GATE, EL_LORA_UP, EL_LORA_DOWN,
    EL_LORA_NTARGETS
} el_lora_target;

typedef struct el_lora_config {
    int rank;
    float alpha;
    int use_rslora;           /* scale alpha/sqrt(r) instead of alpha/r */
    unsigned targets;         /* bit (1 << el_lora_target) per target */
    char base_model[512];     /* base_model_name_or_path */
} el_lora_config;

typedef struct el_lora_slot {
    int layer;
    el_lora_target target;
    int in, out;
    size_t a_off, b_off;      /* into the flat parameter array */
} el_lora_slot;

typedef struct el_lora {
    el_lora_config cfg;
    int nslots;
    el_lora_slot *slots;      /* by layer, then target */
    size_t nparams;
    float *params;            /* host copy, nparams floats */
} el_lora;

#define EL_LORA_MAX_RANK 1024

/* Module name ("q_proj"...) and its sublayer ("self_attn" or "mlp"). */
const char *el_nn_lora_target_name(el_lora_target t);

/* Parses "q_proj,v_proj" into a bitmask. Returns 0 or EL_EUSAGE naming the
 * unknown module. */
int el_nn_lora_targets_parse(const char *csv, unsigned *mask, el_error *err);

/* alpha / r, or alpha / sqrt(r) with rsLoRA. */
float el_nn_lora_scale(const el_lora_config *cfg);

/* Makes an adapter for MODEL with CFG, parameters zeroed. Returns 0 and *OUT
 * (caller destroys) or EL_EUSAGE (rank, targets) / EL_ENOMEM. */
int el_nn_lora_create(const el_llama_config *model, const el_lora_config *cfg,
                      el_lora **out, el_error *err);
void el_nn_lora_destroy(el_lora *lora);   /* accepts NULL */

/* PEFT initialization: A ~ kaiming_uniform(a = sqrt(5)) = U(+-1/sqrt(in)),
 * B = 0, drawn from SEED in slot order. */
void el_nn_lora_init(el_lora *lora, uint64_t seed);

/* The PEFT key of a slot's A (IS_B 0) or B matrix, e.g.
 * "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight". */
void el_nn_lora_key(const el_lora_slot *slot, int is_b, char *buf, size_t n);

/* Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (each
 * atomically; DIR is created) from PARAMS (nparams floats; NULL = the host
 * copy). Bytes depend only on the values. Returns 0 or an I/O error. */
int el_nn_lora_save(const el_lora *lora, const float *params, const char *dir,
                    el_error *err);

/* Writes PARAMS as a safetensors file with the adapter's keys (used for
 * gradient dumps). */
int el_nn_lora_save_tensors(const el_lora *lora, const float *params, const char *path,
                            el_error *err);

/* Loads a PEFT adapter dir for MODEL: every expected A/B key must be present
 * with its shape, and no other tensor. Returns 0 and *OUT or EL_ENOTFOUND /
 * EL_EINPUT naming the file and key. */
int el_nn_lora_load(const el_llama_config *model, const char *dir, el_lora **out,
                    el_error *err);

#endif
