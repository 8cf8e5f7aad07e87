/* Probation of an activated version: a pure decision over counts and
 * thresholds (DESIGN.md "Policies").
 *
 * A version is judged over its first [probation] events feedback events or
 * [probation] hours, whichever ends first. The reject rate is rejects /
 * events over the last [probation] window events and counts only once at
 * least [probation] min_events exist; above max_reject_rate the version
 * fails. A health check (probe-set loss of this version against the previous
 * good version's, relative rise above max_probe_regress) fails it too, and so
 * does boot counting: more than max_crashes interrupted runs. The caller (the
 * store) gathers the counts and applies the verdict; this file decides only.
 */
#ifndef EL_TRAIN_PROBATION_H
#define EL_TRAIN_PROBATION_H

#include <stdint.h>

typedef struct el_probation_policy {
    int64_t events;            /* judge over the first N feedback events */
    double hours;              /* ... or this many hours, whichever first */
    int64_t window;            /* reject rate over the last N events */
    int64_t min_events;        /* rate counts once this many exist */
    double max_reject_rate;    /* fraction */
    int64_t max_crashes;       /* interrupted runs tolerated */
    double max_probe_regress;  /* fraction: probe loss rise vs previous good */
} el_probation_policy;

typedef struct el_probation_input {
    int64_t events;          /* feedback events since activation */
    int64_t window_events;   /* events among the last `window` (<= window) */
    int64_t window_rejects;  /* rejects among those */
    double hours;            /* hours since activation */
    int64_t crashes;         /* interrupted runs while on probation */
    int has_probe;           /* 1 when a health check is to be judged */
    double probe_loss;       /* this version's probe-set loss */
    double probe_ref_loss;   /* the previous good version's (or base's) */
} el_probation_input;

enum el_probation_verdict {
    EL_PROBATION_CONTINUE = 0,  /* keep judging */
    EL_PROBATION_PASS = 1,      /* probation -> good */
    EL_PROBATION_FAIL = 2,      /* probation -> rolled_back */
};

typedef struct el_probation_result {
    enum el_probation_verdict verdict;
    const char *reason;    /* static: "pending", "complete_events",
                              "complete_hours", "reject_rate", "health_check",
                              "boot_crashes", "bad_policy" */
    double reject_rate;    /* over the window; 0 when no events */
    double probe_regress;  /* relative probe loss rise; 0 without a check */
} el_probation_result;

/* Decides the probation of one version from IN under P and fills OUT
 * (always fully written). Failures are checked before completion, so a
 * version that reaches its event count with a bad reject rate fails.
 * Returns OUT->verdict. A policy with non-finite or negative figures, or a
 * health check with a non-positive reference, fails closed ("bad_policy"
 * / "health_check") instead of passing. */
enum el_probation_verdict el_probation_decide(const el_probation_policy *p,
                                              const el_probation_input *in,
                                              el_probation_result *out);

#endif
