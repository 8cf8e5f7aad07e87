/* agent/train/gate.c and probation.c: the pure decisions on crafted
 * figures, including the edges (exactly at a threshold) and NaN/Inf. */
#include <math.h>

#include "check.h"
#include "train/gate.h"
#include "train/probation.h"

static el_gate_result gate(double href, double hnew, double aref, double anew)
{
    el_gate_thresholds t = {.min_gain = 0.01, .max_forget = 0.02};
    el_gate_input in = {href, hnew, aref, anew, NULL, 0};
    el_gate_result r;
    el_gate_decide(&t, &in, &r);
    return r;
}

static void test_gate(void)
{
    el_gate_result r = gate(2.0, 1.5, 1.0, 1.01);
    CHECK(r.pass);
    CHECK_STR(r.reason, "ok");
    CHECK_NEAR(r.gain, 0.25, 1e-12);
    CHECK_NEAR(r.forget, 0.01, 1e-12);

    /* holdout gain below min_gain (0.5% < 1%) */
    r = gate(2.0, 1.99, 1.0, 1.0);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "insufficient_gain");
    /* a worse holdout is a negative gain */
    r = gate(2.0, 2.5, 1.0, 1.0);
    CHECK(!r.pass);
    CHECK(r.gain < 0);
    /* exactly min_gain passes (>=); values chosen to be exact in binary */
    el_gate_thresholds t = {.min_gain = 0.25, .max_forget = 0.5};
    el_gate_input in = {4.0, 3.0, 2.0, 3.0, NULL, 0};
    el_gate_decide(&t, &in, &r);
    CHECK(r.pass);
    in.anchor_new = 3.0 + 1e-9;
    el_gate_decide(&t, &in, &r);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "forgetting");

    /* forgetting: anchor-check rose 5% > 2% although holdout improved */
    r = gate(2.0, 1.0, 1.0, 1.05);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "forgetting");
    CHECK_NEAR(r.forget, 0.05, 1e-12);

    /* NaN / Inf anywhere fails, including in the extra figures */
    r = gate(2.0, NAN, 1.0, 1.0);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "non_finite");
    r = gate(2.0, 1.0, 1.0, INFINITY);
    CHECK_STR(r.reason, "non_finite");
    double extra[3] = {0.5, NAN, 1.0};
    el_gate_thresholds t2 = {.min_gain = 0.01, .max_forget = 0.02};
    el_gate_input in2 = {2.0, 1.0, 1.0, 1.0, extra, 3};
    el_gate_decide(&t2, &in2, &r);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "non_finite");
    extra[1] = 2.0;
    el_gate_decide(&t2, &in2, &r);
    CHECK(r.pass);

    /* a reference of zero, or NaN thresholds, never pass */
    r = gate(0.0, 0.0, 1.0, 1.0);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "bad_reference");
    el_gate_thresholds tn = {.min_gain = NAN, .max_forget = 0.02};
    el_gate_input ok = {2.0, 1.0, 1.0, 1.0, NULL, 0};
    el_gate_decide(&tn, &ok, &r);
    CHECK(!r.pass);
    CHECK_STR(r.reason, "bad_reference");
}

static el_probation_policy policy(void)
{
    el_probation_policy p = {
        .events = 50, .hours = 24, .window = 20, .min_events = 10,
        .max_reject_rate = 0.3, .max_crashes = 3, .max_probe_regress = 0.05,
    };
    return p;
}

static void test_probation(void)
{
    el_probation_policy p = policy();
    el_probation_result r;
    el_probation_input in = {0};

    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_CONTINUE);
    CHECK_STR(r.reason, "pending");

    /* 9 events all rejects: below min_events, the rate does not count yet */
    in.events = 9;
    in.window_events = 9;
    in.window_rejects = 9;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_CONTINUE);
    CHECK_NEAR(r.reject_rate, 1.0, 0);
    /* the 10th makes it count */
    in.events = in.window_events = 10;
    in.window_rejects = 4;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_FAIL);
    CHECK_STR(r.reason, "reject_rate");
    CHECK_NEAR(r.reject_rate, 0.4, 1e-12);
    /* exactly max_reject_rate is not above it */
    in.window_rejects = 3;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_CONTINUE);

    /* completion by events, by hours */
    in.events = 50;
    in.window_events = 20;
    in.window_rejects = 2;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_PASS);
    CHECK_STR(r.reason, "complete_events");
    in.events = 5;
    in.window_events = 5;
    in.hours = 24.0;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_PASS);
    CHECK_STR(r.reason, "complete_hours");
    /* a bad reject rate at the end still fails: failure is checked first */
    in.events = 50;
    in.window_events = 20;
    in.window_rejects = 15;
    CHECK(el_probation_decide(&p, &in, &r) == EL_PROBATION_FAIL);

    /* boot counting: more than max_crashes */
    el_probation_input crash = {.crashes = 3};
    CHECK(el_probation_decide(&p, &crash, &r) == EL_PROBATION_CONTINUE);
    crash.crashes = 4;
    CHECK(el_probation_decide(&p, &crash, &r) == EL_PROBATION_FAIL);
    CHECK_STR(r.reason, "boot_crashes");

    /* health check: probe loss 4% worse passes, 6% worse fails, NaN fails */
    el_probation_input h = {.has_probe = 1, .probe_loss = 1.04, .probe_ref_loss = 1.0};
    CHECK(el_probation_decide(&p, &h, &r) == EL_PROBATION_CONTINUE);
    CHECK_NEAR(r.probe_regress, 0.04, 1e-12);
    h.probe_loss = 1.06;
    CHECK(el_probation_decide(&p, &h, &r) == EL_PROBATION_FAIL);
    CHECK_STR(r.reason, "health_check");
    h.probe_loss = NAN;
    CHECK(el_probation_decide(&p, &h, &r) == EL_PROBATION_FAIL);
    h.probe_loss = 1.0;
    h.probe_ref_loss = 0.0;
    CHECK(el_probation_decide(&p, &h, &r) == EL_PROBATION_FAIL);
    /* an improvement is fine */
    h.probe_loss = 0.5;
    h.probe_ref_loss = 1.0;
    CHECK(el_probation_decide(&p, &h, &r) == EL_PROBATION_CONTINUE);

    /* a policy with a NaN fails closed */
    el_probation_policy bad = policy();
    bad.max_reject_rate = NAN;
    el_probation_input none = {0};
    CHECK(el_probation_decide(&bad, &none, &r) == EL_PROBATION_FAIL);
    CHECK_STR(r.reason, "bad_policy");
}

int main(void)
{
    test_gate();
    test_probation();
    return el_test_done("test_gate");
}
