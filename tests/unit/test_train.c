/* Training loop on the cpu backend with a small random model:
 *  - the schedule (warmup, cosine, floor) at known steps;
 *  - training lowers the loss on a repetitive corpus;
 *  - two runs with one seed give bit-identical adapters;
 *  - resuming from the mid-run checkpoint gives the same bytes as the
 *    uninterrupted run (the kill -9 variant is tests/e2e/test_train_cli.sh);
 *  - a checkpoint from other settings is refused;
 *  - gradient accumulation of 2 x 2 equals one batch of 4 when the batches
 *    hold the same rows (the objective is normalized per step). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "nn/backend.h"
#include "nn/dataset.h"
#include "nn/llama.h"
#include "nn/lora.h"
#include "tiny_model.h"
#include "train/eval.h"
#include "train/trainer.h"

static el_backend *be;
static char dir[64];
static el_dataset *ds;

static const char *corpus =
    "{\"text\": \"PRESS-07 pressure=182bar status=WARN\"}\n"
    "{\"text\": \"PRESS-08 pressure=150bar status=OK\"}\n"
    "{\"prompt\": \"PRESS-07 status=WARN Action:\", \"completion\": \" replace seal\"}\n"
    "{\"text\": \"PRESS-09 pressure=181bar status=WARN\"}\n"
    "{\"prompt\": \"PRESS-02 status=OK Action:\", \"completion\": \" none\"}\n"
    "{\"text\": \"ok\"}\n"
    "{\"text\": \"PRESS-01 OK\"}\n"
    "{\"text\": \"PRESS-03 WARN\"}\n";

/* Trains a fresh adapter (seed 5) with O; returns its params (caller frees)
 * and the final eval loss in *LOSS. */
static float *train(const el_train_options *o, double *loss, size_t *n, int *rc_out)
{
    el_error err = {0};
    el_llama *m = NULL;
    el_lora *l = NULL;
    float *out = NULL;
    int rc = el_nn_llama_load(be, dir, &m, &err);
    CHECK_OK(rc, &err);
    if (rc)
        return NULL;
    el_lora_config lc = {.rank = 4, .alpha = 8, .targets = 0x7f};
    CHECK_OK(el_nn_lora_create(el_nn_llama_config(m), &lc, &l, &err), &err);
    el_nn_lora_init(l, 5);
    CHECK_OK(el_nn_llama_set_lora(m, l, 1, &err), &err);
    el_train_result res;
    rc = el_train_run(m, l, ds, o, &res, &err);
    *rc_out = rc;
    if (rc == 0) {
        el_eval_result r;
        CHECK_OK(el_train_eval(m, ds, 4, 3, NULL, &r, &err), &err);
        *loss = r.loss;
        *n = l->nparams;
        out = malloc(l->nparams * sizeof *out);
        memcpy(out, l->params, l->nparams * sizeof *out);
    }
    el_nn_llama_destroy(m);
    el_nn_lora_destroy(l);
    return out;
}

static void test_schedule(void)
{
    el_train_options o;
    el_train_options_default(&o);
    o.steps = 105;
    o.warmup_steps = 5;
    o.lr = 1.0f;
    o.min_lr_ratio = 0.1f;
    CHECK_NEAR(el_train_lr_at(&o, 1), 0.2, 1e-7);
    CHECK_NEAR(el_train_lr_at(&o, 5), 1.0, 1e-7);
    CHECK_NEAR(el_train_lr_at(&o, 55), 0.55, 1e-7);   /* half way: (1 + 0.1) / 2 */
    CHECK_NEAR(el_train_lr_at(&o, 105), 0.1, 1e-7);
}

int main(void)
{
    el_error err = {0};
    el_backend_options bo = {.kind = EL_BACKEND_CPU, .threads = 1};
    if (el_nn_backend_create(&bo, &be, &err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    test_schedule();
    strcpy(dir, "/tmp/el_train_XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    tiny_model tm;
    tiny_init(&tm, 259, 32, 48, 2, 4, 2, 1, 21);
    CHECK(tiny_write(&tm, dir, "bytes-v1") == 0);
    tiny_free(&tm);
    CHECK_OK(el_nn_dataset_parse(corpus, strlen(corpus), "c.jsonl", 48, EL_BAD_LINES_FAIL, &ds,
                                 &err), &err);
    char ckpt[128];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);

    el_train_options o;
    el_train_options_default(&o);
    o.steps = 12;
    o.batch = 2;
    o.lr = 1e-2f;
    o.warmup_steps = 2;
    o.seed = 3;
    o.checkpoint_every = 5;
    o.checkpoint_path = ckpt;
    size_t n = 0, n2 = 0;
    int rc;
    double before = 0, after = 0, again = 0;
    {
        el_llama *m;
        el_eval_result r;
        CHECK_OK(el_nn_llama_load(be, dir, &m, &err), &err);
        CHECK_OK(el_train_eval(m, ds, 4, 3, NULL, &r, &err), &err);
        before = r.loss;
        el_nn_llama_destroy(m);
    }
    float *p1 = train(&o, &after, &n, &rc);
    CHECK(rc == 0 && p1);
    CHECK_MSG(after < 0.9 * before, "loss %g -> %g", before, after);
    CHECK(access(ckpt, F_OK) == 0);
    /* same seed, same bytes */
    o.checkpoint_every = 0;
    float *p2 = train(&o, &again, &n2, &rc);
    CHECK(p1 && p2 && n == n2 && !memcmp(p1, p2, n * sizeof *p1));
    /* resume from the step-10 checkpoint left by run 1 */
    o.checkpoint_every = 5;
    o.resume = 1;
    float *p3 = train(&o, &again, &n2, &rc);
    CHECK(p1 && p3 && n == n2 && !memcmp(p1, p3, n * sizeof *p1));
    /* other settings: refused */
    o.lr = 2e-2f;
    float *p4 = train(&o, &again, &n2, &rc);
    CHECK(rc == EL_EINPUT && p4 == NULL);
    /* accumulation: 2 micro-batches of 2 == 1 batch of 4 (same rows, same
     * normalizer); only the float summation order differs */
    o.lr = 1e-2f;
    o.resume = 0;
    o.checkpoint_every = 0;
    o.steps = 4;
    o.batch = 4;
    float *q1 = train(&o, &again, &n, &rc);
    o.batch = 2;
    o.accum = 2;
    float *q2 = train(&o, &again, &n2, &rc);
    double worst = 0;
    for (size_t i = 0; q1 && q2 && i < n; i++)
        worst = fmax(worst, fabs((double)q1[i] - q2[i]));
    CHECK_MSG(q1 && q2 && worst < 1e-4, "max |diff| %g", worst);
    free(q1);
    free(q2);
    free(p1);
    free(p2);
    free(p3);
    el_nn_dataset_destroy(ds);
    unlink(ckpt);
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    el_nn_backend_destroy(be);
    return el_test_done("test_train");
}
