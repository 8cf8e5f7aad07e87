/* Device commands over the state directory: `edgeloop train` in state mode
 * (ingested data -> candidate -> gate -> probation). With --model, --data
 * or --out, `train` is the standalone trainer of cmd_train.c and this file
 * only forwards to it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "cli.h"
#include "cmd_state.h"
#include "daemon/device.h"
#include "nn/cpu.h"

static const char *train_state_help =
    "usage: edgeloop train [--state DIR] [--steps N] [--backend auto|cpu|vulkan]\n"
    "                      [--threads N] [--seed N] [--no-activate] [--json]\n"
    "       edgeloop train --model DIR --data FILE.jsonl --out DIR [options]\n"
    "\n"
    "State mode (no --model/--data/--out): trains a candidate adapter from the\n"
    "data ingested into the state directory, judges it with the gate and\n"
    "activates it on a pass. The training set is every new train sample plus a\n"
    "[replay] fraction of earlier accepted train and anchor-replay samples;\n"
    "holdout, anchor-check and probe samples are never trained on. Training\n"
    "starts from the active version (a fresh LoRA when the base runs alone)\n"
    "with the [train] settings of edgeloop.conf. The gate compares holdout and\n"
    "anchor-check loss before and after ([gate] min_gain, max_forget); a pass\n"
    "activates the version on probation and runs the probe health check.\n"
    "\n"
    "  --state DIR     state directory (default $EDGELOOP_STATE or\n"
    "                  /var/lib/edgeloop)\n"
    "  --steps N       optimizer steps instead of [train] steps\n"
    "  --backend B     compute backend instead of [train] backend\n"
    "  --threads N     cpu backend threads (default: all cores)\n"
    "  --seed N        seed instead of [train] seed (LoRA init, data order)\n"
    "  --no-activate   record the gate verdict but leave the active version\n"
    "  --json          print the result (or the error) as JSON\n"
    "\n"
    "Exit status: 0 the candidate passed the gate (see \"activated\"), 2 no\n"
    "new data or bad input, 3 the gate refused it (code \"gate_failed\"; the\n"
    "version is recorded as rejected), 1 usage or internal error.\n"
    "\n"
    "Standalone mode, with --model, --data and --out:\n\n";

/* 1 when ARGV asks for the standalone trainer. */
static int standalone(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") || !strcmp(a, "--data") || !strcmp(a, "--out") ||
            !strncmp(a, "--model=", 8) || !strncmp(a, "--data=", 7) ||
            !strncmp(a, "--out=", 6))
            return 1;
    }
    return 0;
}

static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* OpenBLAS picks slow generic kernels on CPUs it does not know; as the
 * standalone trainer does (cmd_train.c), re-execute once with the core type
 * set. The hint is NULL once it is set, so this cannot loop. */
static void blas_reexec(const char *backend, int argc, char **argv)
{
    if ((backend && !strcmp(backend, "vulkan")) || getenv("EDGELOOP_NO_BLAS_REEXEC"))
        return;
    const char *hint = el_nn_cpu_blas_coretype_hint();
    if (!hint)
        return;
    char **args = el_calloc((size_t)argc + 2, sizeof *args);
    if (!args)
        return;
    args[0] = "edgeloop";
    memcpy(args + 1, argv, (size_t)argc * sizeof *argv);
    setenv("OPENBLAS_CORETYPE", hint, 1);
    fflush(NULL);
    execv("/proc/self/exe", args);
    unsetenv("OPENBLAS_CORETYPE");
    el_free(args);
}

static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *result_json(const el_device_train_result *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "version", json_integer(r->version_id));
    json_object_set_new(j, "parent", r->parent_id ? json_integer(r->parent_id) : json_null());
    json_object_set_new(j, "state", json_string(r->outcome));
    json_object_set_new(j, "backend", json_string(r->backend));
    json_object_set_new(j, "steps", json_integer(r->steps));
    json_object_set_new(j, "samples_new", json_integer(r->n_new));
    json_object_set_new(j, "samples_replay", json_integer(r->n_replay));
    json_object_set_new(j, "train_loss_first", num(r->train_loss_first));
    json_object_set_new(j, "train_loss_last", num(r->train_loss_last));
    json_object_set_new(j, "holdout_before", num(r->holdout_before));
    json_object_set_new(j, "holdout_after", num(r->holdout_after));
    json_object_set_new(j, "anchor_before", num(r->anchor_before));
    json_object_set_new(j, "anchor_after", num(r->anchor_after));
    json_t *p = json_object();
    json_object_set_new(p, "update_norm", num(r->update_norm));
    json_object_set_new(p, "grad_norm_before", num(r->grad_norm_before));
    json_object_set_new(p, "grad_norm_after", num(r->grad_norm_after));
    json_object_set_new(p, "effective_rank", num(r->effective_rank));
    json_object_set_new(j, "plasticity", p);
    json_t *g = json_object();
    json_object_set_new(g, "pass", json_boolean(r->gate_pass));
    json_object_set_new(g, "reason", json_string(r->gate_reason));
    json_object_set_new(g, "gain", num(r->gain));
    json_object_set_new(g, "forget", num(r->forget));
    json_object_set_new(j, "gate", g);
    json_object_set_new(j, "activated", json_boolean(r->activated));
    if (r->activate_error[0])
        json_object_set_new(j, "activate_refused", json_string(r->activate_error));
    if (r->health_checked) {
        json_t *h = json_object();
        json_object_set_new(h, "probe_loss", num(r->probe_loss));
        json_object_set_new(h, "ref_loss", num(r->probe_ref_loss));
        json_object_set_new(j, "health_check", h);
    }
    return j;
}

static void on_progress(void *ctx, int step, int steps, double loss)
{
    (void)ctx;
    fprintf(stderr, "\rstep %d/%d  loss %.4f   ", step, steps, loss);
    if (step == steps)
        fputc('\n', stderr);
    fflush(stderr);
}

/* `edgeloop train`: state mode here, standalone in cmd_train.c. */
int el_cmd_device_train(int argc, char **argv)
{
    if (standalone(argc, argv))
        return el_cmd_train(argc, argv);
    el_cli_state c = {.cmd = argv[0]};
    el_device_train_opts o = {.seed = -1};
    for (int i = 1; i < argc; i++) {
        int k = el_cli_state_common(&c, argc, argv, &i);
        if (k < 0)
            return 1;
        if (k)
            continue;
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x;
        if (!strcmp(a, "--no-activate")) {
            o.no_activate = 1;
        } else if (!strcmp(a, "--steps") || !strcmp(a, "--threads") || !strcmp(a, "--seed")) {
            int64_t max = !strcmp(a, "--threads") ? 1024 : !strcmp(a, "--steps") ? 10000000
                                                                              : INT64_MAX;
            int64_t min = !strcmp(a, "--steps") ? 1 : 0;
            if (!v || parse_i64(v, min, max, &x))
                return el_cli_usage(c.cmd, "--steps, --threads and --seed need a number in range",
                                    c.json);
            if (a[2] == 's' && a[3] == 't')
                o.steps = x;
            else if (a[2] == 't')
                o.threads = (int)x;
            else
                o.seed = x;
            i++;
        } else if (!strcmp(a, "--backend")) {
            if (!v)
                return el_cli_usage(c.cmd, "--backend needs auto, cpu or vulkan", c.json);
            o.backend = v;
            i++;
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown argument '%s' (see --help)", a);
            return el_cli_usage(c.cmd, msg, c.json);
        }
    }
    if (c.help) {
        fputs(train_state_help, stdout);
        fflush(stdout);
        char *help_argv[] = {argv[0], "--help", NULL};
        return el_cmd_train(2, help_argv);
    }
    blas_reexec(o.backend, argc, argv);
    if (!c.json && isatty(STDERR_FILENO))
        o.progress = on_progress;
    el_store *s;
    int status = el_cli_state_open(&c, 0, &s);
    if (status)
        return status;
    el_error err;
    el_error_clear(&err);
    el_device_train_result r;
    int rc = el_device_train(s, &o, &r, &err);
    el_store_close(s);
    if (rc && !(rc == EL_EPOLICY && r.version_id))
        return el_cli_fail(&err, c.json);
    if (c.json && !rc) {
        el_cli_state_print(result_json(&r));
        return 0;
    }
    if (!c.json) {
        printf("version %lld (parent %s%lld): trained %lld steps on %s, %lld new + %lld "
               "replayed samples, loss %.4f -> %.4f\n",
               (long long)r.version_id, r.parent_id ? "" : "base ", (long long)r.parent_id,
               (long long)r.steps, r.backend, (long long)r.n_new, (long long)r.n_replay,
               r.train_loss_first, r.train_loss_last);
        printf("holdout %.4f -> %.4f (gain %.4f), anchor-check %.4f -> %.4f (forget %.4f)\n",
               r.holdout_before, r.holdout_after, r.gain, r.anchor_before, r.anchor_after,
               r.forget);
        printf("plasticity: update norm %.4g, grad norm %.4g -> %.4g, effective rank %.2f\n",
               r.update_norm, r.grad_norm_before, r.grad_norm_after, r.effective_rank);
        if (r.gate_pass && r.activated)
            printf("gate passed; version %lld is %s\n", (long long)r.version_id, r.outcome);
        else if (r.gate_pass)
            printf("gate passed; not activated%s%s\n", r.activate_error[0] ? ": " : "",
                   r.activate_error);
    }
    if (rc) {
        /* The gate refused: the error carries "gate_failed"; in JSON mode
         * the figures are in the error message and in `edgeloop show ID`. */
        return el_cli_fail(&err, c.json);
    }
    return 0;
}
