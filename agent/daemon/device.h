/* The device's glue between the registry (store/), the trainer (train/, nn/)
 * and, later, the sync pieces: what `edgeloop train` does in state mode and
 * what the long-running agent (daemon/agent.c) calls on its timer.
 *
 * DESIGN.md's dependency rule puts this here: main -> daemon -> {train,
 * store, sync}. The store never reads the trainer, the gate takes its
 * thresholds as values; this file reads the effective configuration and
 * hands the values on.
 */
#ifndef EL_DAEMON_DEVICE_H
#define EL_DAEMON_DEVICE_H

#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

/* Overrides of the [train] configuration for one run; 0 / NULL / "" keeps the
 * effective configuration's value. */
typedef struct el_device_train_opts {
    int64_t steps;         /* optimizer steps */
    const char *backend;   /* "auto", "cpu", "vulkan" */
    int threads;           /* cpu backend threads; 0 = all cores */
    int64_t seed;          /* < 0 keeps [train] seed */
    int no_activate;       /* 1: record the verdict but do not activate */
    void (*progress)(void *ctx, int step, int steps, double loss);
    void *progress_ctx;
} el_device_train_opts;

/* What one state-mode training run did. */
typedef struct el_device_train_result {
    int64_t version_id;        /* the candidate recorded (0 when none) */
    int64_t parent_id;         /* the version trained from, 0 = the base */
    int64_t n_new, n_replay;   /* training samples: new train, replayed */
    int64_t steps;
    char backend[64];
    double train_loss_first, train_loss_last;
    double holdout_before, holdout_after;
    double anchor_before, anchor_after;   /* anchor-check; NAN when empty */
    /* plasticity figures */
    double update_norm;        /* ||delta(scale * B A)||_F over all slots */
    double grad_norm_before, grad_norm_after;  /* on the training set */
    double effective_rank;     /* mean over slots of exp(entropy of sigma) */
    /* the gate */
    int gate_pass;
    char gate_reason[32];      /* el_gate_result.reason */
    double gain, forget;
    /* after the gate */
    int activated;             /* 1 when the candidate entered probation */
    char activate_error[160];  /* why activation was refused, when it was */
    int health_checked;        /* 1 when a probe health check ran */
    double probe_loss, probe_ref_loss;
    char outcome[16];          /* the version's state at the end */
} el_device_train_result;

/* Trains a candidate from the data ingested in S (state mode of `edgeloop
 * train`): new train samples plus a [replay] fraction drawn from earlier
 * accepted train and anchor-replay samples (never holdout, anchor-check or
 * probe), starting from the active adapter (or a fresh PEFT init when the
 * base alone is active). Evaluates holdout and anchor-check before and
 * after, computes the plasticity figures, records the candidate with
 * el_store_candidate_create, runs el_gate_decide with [gate] min_gain /
 * max_forget and records the verdict. On a pass it activates the candidate
 * (probation) and runs the probe health check against the previous version.
 *
 * Deltas are synced as lora-delta-exact, which is lossless: the candidate's
 * weights are exactly what would be synced, so no re-quantization happens
 * before the gate.
 *
 * Returns 0 with *R filled when the gate passed (whether or not activation
 * was possible: see R->activated / R->activate_error); EL_EPOLICY tagged
 * "gate_failed" when the gate refused (the candidate is recorded as
 * rejected and *R is filled); EL_EINPUT tagged "no_data" when no new train
 * sample exists (nothing recorded); another negative EL_E* on failure
 * (nothing recorded, temporary files removed). R must not be NULL. */
int el_device_train(el_store *s, const el_device_train_opts *o,
                    el_device_train_result *r, el_error *err);

#endif
