/* The LoRA training loop: AdamW, warmup + cosine schedule, global-norm
 * clipping, gradient accumulation, crash-safe checkpoints and resume. */
#ifndef EL_TRAIN_TRAINER_H
#define EL_TRAIN_TRAINER_H

#include <stdint.h>

#include "base/error.h"
#include "nn/dataset.h"
#include "nn/llama.h"
#include "nn/lora.h"

typedef struct el_train_progress {
    int step, steps;
    double loss;            /* mean NLL per scored token of this step */
    double tokens_per_s;    /* non-padding tokens per second so far */
    double elapsed_s, eta_s;
} el_train_progress;

typedef struct el_train_options {
    int steps;              /* optimizer steps */
    int batch;              /* sequences per micro-batch */
    int accum;              /* micro-batches per step */
    int buckets;            /* length buckets, 1..EL_TRAIN_MAX_BUCKETS */
    float lr, min_lr_ratio; /* peak lr; cosine decays to lr * min_lr_ratio */
    int warmup_steps;
    float beta1, beta2, eps, weight_decay, max_grad_norm;
    uint64_t seed;          /* data order (LoRA init is the caller's) */
    int checkpoint_every;   /* steps; 0 = never */
    const char *checkpoint_path;
    int resume;             /* continue from checkpoint_path when it exists */
    void (*progress)(void *ctx, const el_train_progress *p);
    void *progress_ctx;
    /* Rehearsal: each micro-batch takes round(replay_fraction * batch) rows
     * from REPLAY (general text of the base's pretraining distribution,
     * earlier accepted train data, anchor-replay) and the rest from the
     * training data. NULL, an empty set or fraction 0 = no rehearsal. The
     * replay order is seeded and checkpointed like the data order. */
    const el_dataset *replay;
    float replay_fraction;
    /* Called once per step with the rows it trains on, for tests and
     * diagnostics: DATA_IDX[0..N_DATA) index the training set,
     * REPLAY_IDX[0..N_REPLAY) the replay set. May be NULL. */
    void (*on_batch)(void *ctx, int step, const size_t *data_idx, size_t n_data,
                     const size_t *replay_idx, size_t n_replay);
    void *on_batch_ctx;
} el_train_options;

typedef struct el_train_result {
    int start_step;         /* 0, or the checkpoint's step when resumed */
    int steps;
    double first_loss, last_loss;
    uint64_t tokens;        /* non-padding tokens trained on in this run */
    double seconds, tokens_per_s;
} el_train_result;

/* Fills O with the documented defaults. */
void el_train_options_default(el_train_options *o);

/* Trains LORA (attached to M with gradients: el_nn_llama_set_lora(m, lora, 1))
 * on DS. On success LORA->params holds the trained values. With
 * checkpoint_every, every N steps (before the last) writes params, AdamW
 * state, step and data cursor to checkpoint_path atomically; resume checks
 * the checkpoint was made with the same recipe and continues bit-for-bit as
 * the uninterrupted run would. Returns 0 and *RES, or an error (EL_EINPUT
 * for a checkpoint that does not match). */
int el_train_run(el_llama *m, el_lora *lora, const el_dataset *ds,
                 const el_train_options *o, el_train_result *res, el_error *err);

/* Replay rows per micro-batch under O: round(replay_fraction * batch),
 * at most batch, 0 without a non-empty replay set. */
int el_train_replay_rows(const el_train_options *o);

/* Removes from REPLAY every example whose tokens equal an example of
 * EXCLUDE (holdout and anchor-check data must never be trained on), and
 * fixes REPLAY's count and scored total. Returns the number removed. */
size_t el_train_replay_exclude(el_dataset *replay, const el_dataset *exclude);

/* Learning rate of STEP (1-based) under O's schedule. */
double el_train_lr_at(const el_train_options *o, int step);

#endif
