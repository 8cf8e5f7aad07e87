#include "train/gate.h"

#include <math.h>

static int all_finite(const el_gate_input *in)
{
    if (!isfinite(in->holdout_ref) || !isfinite(in->holdout_new) ||
        !isfinite(in->anchor_ref) || !isfinite(in->anchor_new))
        return 0;
    for (size_t i = 0; i < in->n_extra; i++)
        if (!isfinite(in->extra[i]))
            return 0;
    return 1;
}

int el_gate_decide(const el_gate_thresholds *t, const el_gate_input *in,
                   el_gate_result *out)
{
    out->pass = 0;
    out->gain = 0.0;
    out->forget = 0.0;
    if (!all_finite(in)) {
        out->reason = "non_finite";
        return 0;
    }
    /* A loss is a mean NLL: it is positive for any real model. A reference of
     * zero or less cannot anchor a relative comparison, and thresholds that
     * are not finite non-negative numbers would make every comparison lie. */
    if (!(in->holdout_ref > 0.0) || !(in->anchor_ref > 0.0) ||
        !isfinite(t->min_gain) || !isfinite(t->max_forget) ||
        t->min_gain < 0.0 || t->max_forget < 0.0) {
        out->reason = "bad_reference";
        return 0;
    }
    out->gain = (in->holdout_ref - in->holdout_new) / in->holdout_ref;
    out->forget = (in->anchor_new - in->anchor_ref) / in->anchor_ref;
    if (!(out->gain >= t->min_gain)) {
        out->reason = "insufficient_gain";
        return 0;
    }
    if (!(out->forget <= t->max_forget)) {
        out->reason = "forgetting";
        return 0;
    }
    out->reason = "ok";
    out->pass = 1;
    return 1;
}
