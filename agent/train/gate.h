/* The gate after training: a pure decision over metrics and thresholds.
 *
 * DESIGN.md "Policies": the candidate's holdout loss must improve on the
 * reference (the active version, or the base model when none is active) by
 * at least min_gain, relative; its anchor-check loss may rise by at most
 * max_forget, relative; and no figure may be NaN or infinite. The thresholds
 * are values handed in by the caller: the gate never reads edgeloop.conf or a
 * policy release itself, so the same function judges local candidates, fleet
 * releases and test fixtures.
 */
#ifndef EL_TRAIN_GATE_H
#define EL_TRAIN_GATE_H

#include <stddef.h>

typedef struct el_gate_thresholds {
    double min_gain;    /* [gate] min_gain: required relative holdout gain */
    double max_forget;  /* [gate] max_forget: allowed relative anchor rise */
} el_gate_thresholds;

typedef struct el_gate_input {
    double holdout_ref;   /* holdout loss of the active version (or base) */
    double holdout_new;   /* holdout loss of the candidate */
    double anchor_ref;    /* anchor-check loss of the active version (or base) */
    double anchor_new;    /* anchor-check loss of the candidate */
    const double *extra;  /* further figures that must be finite (losses
                             before/after, norms...), may be NULL */
    size_t n_extra;
} el_gate_input;

typedef struct el_gate_result {
    int pass;            /* 1 when the candidate may be activated */
    const char *reason;  /* static: "ok", "non_finite", "bad_reference",
                            "insufficient_gain", "forgetting" */
    double gain;         /* (holdout_ref - holdout_new) / holdout_ref */
    double forget;       /* (anchor_new - anchor_ref) / anchor_ref */
} el_gate_result;

/* Judges IN against T and fills OUT (always fully written). When several
 * rules fail the first in the order non_finite, bad_reference,
 * insufficient_gain, forgetting is named. Returns OUT->pass. Thresholds that
 * are themselves NaN/Inf or negative fail the candidate as "bad_reference"
 * rather than letting a comparison with NaN pass silently. */
int el_gate_decide(const el_gate_thresholds *t, const el_gate_input *in,
                   el_gate_result *out);

#endif
