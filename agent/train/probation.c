#include "train/probation.h"

#include <math.h>

static int policy_valid(const el_probation_policy *p)
{
    return p->events > 0 && isfinite(p->hours) && p->hours > 0.0 &&
           p->window > 0 && p->min_events > 0 &&
           isfinite(p->max_reject_rate) && p->max_reject_rate >= 0.0 &&
           p->max_crashes >= 0 && isfinite(p->max_probe_regress) &&
           p->max_probe_regress >= 0.0;
}

enum el_probation_verdict el_probation_decide(const el_probation_policy *p,
                                              const el_probation_input *in,
                                              el_probation_result *out)
{
    out->verdict = EL_PROBATION_CONTINUE;
    out->reason = "pending";
    out->reject_rate = 0.0;
    out->probe_regress = 0.0;
    if (in->window_events > 0)
        out->reject_rate = (double)in->window_rejects / (double)in->window_events;
    if (!policy_valid(p)) {
        out->verdict = EL_PROBATION_FAIL;
        out->reason = "bad_policy";
        return out->verdict;
    }
    if (in->crashes > p->max_crashes) {
        out->verdict = EL_PROBATION_FAIL;
        out->reason = "boot_crashes";
        return out->verdict;
    }
    if (in->has_probe) {
        /* A NaN probe loss or reference must fail: comparisons with NaN are
         * false, so the test is written as "not within the bound". */
        if (isfinite(in->probe_loss) && isfinite(in->probe_ref_loss) &&
            in->probe_ref_loss > 0.0)
            out->probe_regress =
                (in->probe_loss - in->probe_ref_loss) / in->probe_ref_loss;
        else
            out->probe_regress = INFINITY;
        if (!(out->probe_regress <= p->max_probe_regress)) {
            out->verdict = EL_PROBATION_FAIL;
            out->reason = "health_check";
            return out->verdict;
        }
    }
    if (in->window_events >= p->min_events &&
        out->reject_rate > p->max_reject_rate) {
        out->verdict = EL_PROBATION_FAIL;
        out->reason = "reject_rate";
        return out->verdict;
    }
    if (in->events >= p->events) {
        out->verdict = EL_PROBATION_PASS;
        out->reason = "complete_events";
    } else if (in->hours >= p->hours) {
        out->verdict = EL_PROBATION_PASS;
        out->reason = "complete_hours";
    }
    return out->verdict;
}
