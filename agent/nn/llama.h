/* The Llama model on a compute backend: frozen base weights, LoRA on any of
 * the seven projections, forward and backward (LoRA gradients only).
 *
 * Memory plan (the performance-critical path):
 *  - base weights: one f32 tensor, views per matrix (fp16/bf16 files are
 *    widened at load);
 *  - LoRA parameters and their gradients: one tensor each, shared by every
 *    workspace of a model (training and evaluation use the same parameters);
 *  - activations: one f32 tensor per workspace, carved into views once for a
 *    fixed (batch, seq_len), so a training step issues the same ops on the
 *    same views every time and the vulkan backend can replay it.
 * Frozen W gets no gradient: its backward is only dX = dY.W; a LoRA
 * projection adds two small matmuls forward and four backward. */
#ifndef EL_NN_LLAMA_H
#define EL_NN_LLAMA_H

#include "base/error.h"
#include "nn/backend.h"
#include "nn/config.h"
#include "nn/lora.h"

typedef struct el_llama el_llama;
typedef struct el_llama_work el_llama_work;

/* Loads DIR (config.json + model.safetensors, or model.safetensors.index.json
 * and its shards) onto BE. Every tensor of LlamaForCausalLM must be present
 * with its shape (lm_head.weight unless tie_word_embeddings). Returns 0 and
 * *OUT (caller destroys, before BE) or EL_ENOTFOUND / EL_EINPUT naming the
 * file and tensor, EL_ENOMEM. */
int el_nn_llama_load(el_backend *be, const char *dir, el_llama **out, el_error *err);
void el_nn_llama_destroy(el_llama *m);   /* accepts NULL */
const el_llama_config *el_nn_llama_config(const el_llama *m);
el_backend *el_nn_llama_backend(el_llama *m);

/* Attaches adapter LORA's layout (and uploads its host parameters) to M:
 * creates the parameter tensor and, when WITH_GRADS, the gradient tensor.
 * LORA is borrowed and must outlive M's use of it; NULL detaches (base model
 * alone). Returns 0 or an error. */
int el_nn_llama_set_lora(el_llama *m, const el_lora *lora, int with_grads, el_error *err);
/* The LoRA parameter / gradient tensors (NULL when absent), nparams each. */
el_tensor *el_nn_llama_lora_params(el_llama *m);
el_tensor *el_nn_llama_lora_grads(el_llama *m);

/* A workspace for batches of B sequences of S tokens (S <= max positions).
 * BACKWARD keeps every layer's activations for el_nn_llama_backward (needs
 * the gradient tensor). The LoRA layout must not change while it exists.
 * Returns 0 and *OUT (caller destroys) or an error. */
int el_nn_llama_work_create(el_llama *m, int B, int S, int backward,
                            el_llama_work **out, el_error *err);
void el_nn_llama_work_destroy(el_llama_work *w);   /* accepts NULL */

/* Issues the forward pass over IDS (i32, B*S) and, when TARGETS.t is set,
 * the cross-entropy against TARGETS (i32, B*S, -1 = not scored) into LOSS
 * (f32, B*S; per-position NLL). With BACKWARD (workspace made for it) it also
 * issues the backward pass of sum(loss) * GRAD_SCALE and adds the LoRA
 * gradients into the gradient tensor (callers zero it per step). The logits
 * are overwritten by the backward. Returns 0 or an op error. */
int el_nn_llama_forward(el_llama_work *w, el_view ids, el_view targets, el_view loss,
                        int backward, float grad_scale, el_error *err);

/* A graph key unique to W and PURPOSE (0-255): a workspace's views never
 * change, so each (workspace, purpose) names one fixed-shape graph. */
uint64_t el_nn_llama_work_key(const el_llama_work *w, unsigned purpose);

/* The logits [B*S, V] of the last forward (valid until the next call, and
 * only after a forward without backward). */
el_view el_nn_llama_logits(el_llama_work *w);

#endif
