/* Rehearsal (replay) in the training loop, on the cpu backend with a small
 * random model:
 *  - el_train_replay_rows: round(fraction * batch), at most batch - 1, 0
 *    without a replay set;
 *  - el_train_replay_exclude drops exactly the replay lines that equal a
 *    holdout or anchor line (also a prompt/completion pair with the same
 *    bytes), and fixes the scored total;
 *  - every step trains on round(F * B) replay rows per micro-batch, all from
 *    the filtered replay set (never a holdout or anchor line), the rest from
 *    the training set, and the replay order walks the whole set per epoch;
 *  - kill + resume with replay on gives the same rows after the resume and
 *    bit-identical parameters; a checkpoint made without replay is refused;
 *  - a fraction outside [0, 1] is a usage error. */
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
#include "train/trainer.h"

#define SEQ 48
#define MAX_ROWS 4096

static el_backend *be;
static char dir[64];

static const char *site =
    "{\"text\": \"PRESS-07 pressure=182bar status=WARN\"}\n"
    "{\"text\": \"PRESS-08 pressure=150bar status=OK\"}\n"
    "{\"prompt\": \"PRESS-07 status=WARN Action:\", \"completion\": \" replace seal\"}\n"
    "{\"text\": \"PRESS-09 pressure=181bar status=WARN\"}\n"
    "{\"prompt\": \"PRESS-02 status=OK Action:\", \"completion\": \" none\"}\n"
    "{\"text\": \"PRESS-01 OK\"}\n"
    "{\"text\": \"PRESS-03 WARN\"}\n"
    "{\"text\": \"FEEDER-02 jam cleared\"}\n";

static const char *holdout =
    "{\"text\": \"PRESS-11 pressure=190bar status=ALARM\"}\n"
    "{\"text\": \"The cat sleeps on the red chair.\"}\n";

static const char *anchor =
    "{\"text\": \"What is 3 plus 4? It is 7.\"}\n"
    "{\"text\": \"Anna reads a book in the garden.\"}\n";

/* General lines; lines 2 and 5 repeat a holdout and an anchor line (5 as a
 * prompt/completion pair with the same bytes) and must be dropped. */
static const char *general =
    "{\"text\": \"Ben finds a blue key at the station.\"}\n"
    "{\"text\": \"The cat sleeps on the red chair.\"}\n"
    "{\"text\": \"A week has seven days.\"}\n"
    "{\"text\": \"Zoe: Is it rainy? Leo: No, it is sunny.\"}\n"
    "{\"prompt\": \"What is 3 plus 4?\", \"completion\": \" It is 7.\"}\n"
    "{\"text\": \"Emma buys bread at the bakery.\"}\n"
    "{\"text\": \"What is 10 minus 2? It is 8.\"}\n";

/* The lines of GENERAL that survive the exclusion. */
static const char *general_kept =
    "{\"text\": \"Ben finds a blue key at the station.\"}\n"
    "{\"text\": \"A week has seven days.\"}\n"
    "{\"text\": \"Zoe: Is it rainy? Leo: No, it is sunny.\"}\n"
    "{\"text\": \"Emma buys bread at the bakery.\"}\n"
    "{\"text\": \"What is 10 minus 2? It is 8.\"}\n";

/* What on_batch saw: every row of every step, in order. */
typedef struct seen {
    int steps, bad_counts;
    size_t want_data, want_replay;
    size_t data_count, replay_count;
    size_t n_data, n_replay;
    int step_of[MAX_ROWS];
    size_t data[MAX_ROWS], replay[MAX_ROWS];
    int out_of_range;
} seen;

static void on_batch(void *ctx, int step, const size_t *data_idx, size_t n_data,
                     const size_t *replay_idx, size_t n_replay)
{
    seen *s = ctx;
    s->steps++;
    if (n_data != s->want_data || n_replay != s->want_replay)
        s->bad_counts++;
    for (size_t i = 0; i < n_data && s->n_data < MAX_ROWS; i++) {
        if (data_idx[i] >= s->data_count)
            s->out_of_range++;
        s->data[s->n_data++] = data_idx[i];
    }
    for (size_t i = 0; i < n_replay && s->n_replay < MAX_ROWS; i++) {
        if (replay_idx[i] >= s->replay_count)
            s->out_of_range++;
        s->step_of[s->n_replay] = step;
        s->replay[s->n_replay++] = replay_idx[i];
    }
}

static el_dataset *parse(const char *text, const char *what)
{
    el_error err = {0};
    el_dataset *ds = NULL;
    CHECK_OK(el_nn_dataset_parse(text, strlen(text), what, SEQ, EL_BAD_LINES_FAIL, &ds, &err),
             &err);
    return ds;
}

static int same_tokens(const el_dataset *a, size_t i, const el_dataset *b, size_t j)
{
    const el_example *x = &a->examples[i], *y = &b->examples[j];
    return x->len == y->len &&
           !memcmp(a->tokens + x->off, b->tokens + y->off, (size_t)x->len * sizeof(int32_t));
}

/* Trains a fresh adapter (seed 5) on DS with O; returns its params (caller
 * frees) or NULL with *RC_OUT set. */
static float *train(const el_dataset *ds, el_train_options *o, size_t *n, int *rc_out)
{
    el_error err = {0};
    el_llama *m = NULL;
    el_lora *l = NULL;
    float *out = NULL;
    int rc = el_nn_llama_load(be, dir, &m, &err);
    CHECK_OK(rc, &err);
    if (rc) {
        *rc_out = rc;
        return NULL;
    }
    el_lora_config lc = {.rank = 4, .alpha = 8, .targets = 0x7f};
    CHECK_OK(el_nn_lora_create(el_nn_llama_config(m), &lc, &l, &err), &err);
    el_nn_lora_init(l, 5);
    CHECK_OK(el_nn_llama_set_lora(m, l, 1, &err), &err);
    el_train_result res;
    rc = el_train_run(m, l, ds, o, &res, &err);
    *rc_out = rc;
    if (rc == 0) {
        CHECK(isfinite(res.last_loss));
        *n = l->nparams;
        out = malloc(l->nparams * sizeof *out);
        memcpy(out, l->params, l->nparams * sizeof *out);
    }
    el_nn_llama_destroy(m);
    el_nn_lora_destroy(l);
    return out;
}

static void test_rows(const el_dataset *replay)
{
    el_train_options o;
    el_train_options_default(&o);
    o.batch = 8;
    o.replay = replay;
    o.replay_fraction = 0.5f;
    CHECK(el_train_replay_rows(&o) == 4);
    o.replay_fraction = 0.3f;   /* 2.4 -> 2 */
    CHECK(el_train_replay_rows(&o) == 2);
    o.replay_fraction = 0.32f;  /* 2.56 -> 3 */
    CHECK(el_train_replay_rows(&o) == 3);
    o.replay_fraction = 1.0f;   /* the training data always keeps a row */
    CHECK(el_train_replay_rows(&o) == 7);
    o.replay_fraction = 0.0f;
    CHECK(el_train_replay_rows(&o) == 0);
    o.replay_fraction = 0.5f;
    o.replay = NULL;
    CHECK(el_train_replay_rows(&o) == 0);
    o.replay = replay;
    o.batch = 1;
    CHECK(el_train_replay_rows(&o) == 0);
}

static void test_exclude(el_dataset *replay, const el_dataset *hold, const el_dataset *anch)
{
    el_dataset *kept = parse(general_kept, "kept.jsonl");
    CHECK(replay->count == 7);
    size_t removed = el_train_replay_exclude(replay, hold);
    removed += el_train_replay_exclude(replay, anch);
    CHECK_MSG(removed == 2, "removed %zu", removed);
    CHECK(el_train_replay_exclude(replay, NULL) == 0);
    CHECK(kept && replay->count == kept->count);
    CHECK_MSG(kept && replay->scored == kept->scored, "scored %llu, want %llu",
              (unsigned long long)replay->scored,
              (unsigned long long)(kept ? kept->scored : 0));
    for (size_t i = 0; kept && i < replay->count && i < kept->count; i++)
        CHECK(same_tokens(replay, i, kept, i));
    for (size_t i = 0; i < replay->count; i++) {
        for (size_t j = 0; j < hold->count; j++)
            CHECK(!same_tokens(replay, i, hold, j));
        for (size_t j = 0; j < anch->count; j++)
            CHECK(!same_tokens(replay, i, anch, j));
    }
    el_nn_dataset_destroy(kept);
}

int main(void)
{
    el_error err = {0};
    el_backend_options bo = {.kind = EL_BACKEND_CPU, .threads = 1};
    if (el_nn_backend_create(&bo, &be, &err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    strcpy(dir, "/tmp/el_replay_XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    tiny_model tm;
    tiny_init(&tm, 259, 32, 48, 2, 4, 2, 1, 21);
    CHECK(tiny_write(&tm, dir, "bytes-v1") == 0);
    tiny_free(&tm);
    el_dataset *ds = parse(site, "site.jsonl");
    el_dataset *hold = parse(holdout, "holdout.jsonl");
    el_dataset *anch = parse(anchor, "anchor.jsonl");
    el_dataset *replay = parse(general, "general.jsonl");
    if (!ds || !hold || !anch || !replay)
        return el_test_done("test_replay");
    test_rows(replay);
    test_exclude(replay, hold, anch);

    char ckpt[128];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);
    el_train_options o;
    el_train_options_default(&o);
    o.steps = 12;
    o.batch = 4;
    o.accum = 2;
    o.lr = 1e-2f;
    o.warmup_steps = 2;
    o.seed = 3;
    o.replay = replay;
    o.replay_fraction = 0.5f;
    o.checkpoint_every = 5;
    o.checkpoint_path = ckpt;
    o.on_batch = on_batch;
    static seen s1, s2;
    s1 = (seen){.want_data = 4, .want_replay = 4, .data_count = ds->count,
                .replay_count = replay->count};
    o.on_batch_ctx = &s1;
    size_t n1 = 0, n2 = 0;
    int rc;
    float *p1 = train(ds, &o, &n1, &rc);
    CHECK_OK(rc, &err);
    CHECK(p1 && s1.steps == 12 && s1.bad_counts == 0 && s1.out_of_range == 0);
    CHECK(s1.n_replay == 48 && s1.n_data == 48);
    /* the replay order is a permutation per epoch: the first 5 rows (one
     * epoch of the 5-line set) are 5 distinct lines */
    int hit[8] = {0}, distinct = 0;
    for (size_t i = 0; i < replay->count && i < s1.n_replay; i++)
        distinct += !hit[s1.replay[i]]++;
    CHECK_MSG(distinct == (int)replay->count, "first epoch visits %d of %zu lines", distinct,
              replay->count);

    /* resume from the step-10 checkpoint: the rows of steps 11-12 and the
     * final parameters match the uninterrupted run */
    s2 = (seen){.want_data = 4, .want_replay = 4, .data_count = ds->count,
                .replay_count = replay->count};
    o.on_batch_ctx = &s2;
    o.resume = 1;
    float *p2 = train(ds, &o, &n2, &rc);
    CHECK_OK(rc, &err);
    CHECK(p1 && p2 && n1 == n2 && !memcmp(p1, p2, n1 * sizeof *p1));
    CHECK_MSG(s2.steps == 2 && s2.n_replay == 8, "resumed %d steps, %zu replay rows", s2.steps,
              s2.n_replay);
    for (size_t i = 0; i < s2.n_replay && i < 8; i++) {
        CHECK(s2.replay[i] == s1.replay[40 + i]);
        CHECK(s2.step_of[i] == s1.step_of[40 + i]);
    }
    for (size_t i = 0; i < s2.n_data && i < 8; i++)
        CHECK(s2.data[i] == s1.data[40 + i]);

    /* a checkpoint of a run without replay does not resume a run with it */
    o.replay = NULL;
    o.resume = 0;
    o.on_batch = NULL;
    o.steps = 8;
    o.checkpoint_every = 5;
    free(train(ds, &o, &n2, &rc));   /* leaves its step-5 checkpoint */
    CHECK_OK(rc, &err);
    o.replay = replay;
    o.resume = 1;
    float *p3 = train(ds, &o, &n2, &rc);
    CHECK(rc == EL_EINPUT && p3 == NULL);
    free(p3);

    o.resume = 0;
    o.checkpoint_every = 0;
    o.replay_fraction = 1.5f;
    float *p4 = train(ds, &o, &n2, &rc);
    CHECK(rc == EL_EUSAGE && p4 == NULL);
    free(p4);

    free(p1);
    free(p2);
    el_nn_dataset_destroy(ds);
    el_nn_dataset_destroy(hold);
    el_nn_dataset_destroy(anch);
    el_nn_dataset_destroy(replay);
    unlink(ckpt);
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    el_nn_backend_destroy(be);
    return el_test_done("test_replay");
}
