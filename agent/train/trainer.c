/* Training loop.
 *
 * Design:
 *  1. Fixed shapes, padded, in a few length buckets: every micro-batch is
 *     BATCH sequences padded (masked: PAD ids, no targets) to the smallest of
 *     up to three bucket lengths (seq_len/4, /2, /1) that holds its longest
 *     sequence. We pad rather than pack because the attention op has no
 *     document mask, so packed sequences would attend to each other. Buckets
 *     because site lines are 60-250 bytes: padding everything to 256 wasted
 *     half of the compute, and attention cost grows with the square of the
 *     length. One step = one graph per bucket (zero grads, ACCUM
 *     forward/backward passes, squared norm, AdamW), recorded once and
 *     replayed; per-step values (lr, bias corrections) travel in the 8-float
 *     hyperparameter tensor, tokens in the ids/targets tensors.
 *  2. Batching: each epoch's permutation is cut into windows of 8 steps;
 *     within a window examples are sorted by length and cut into steps, and
 *     the steps are shuffled, so a step holds sequences of similar length
 *     (mostly a short bucket) while the order stays random.
 *  3. Objective per step: sum of NLL over scored tokens / (batch * seq_len *
 *     accum), seq_len the longest bucket. The normalizer is fixed so graph
 *     scalars never change and every token weighs the same in every bucket;
 *     Adam is invariant to a constant gradient scale, and the reported loss
 *     is the true mean over scored tokens.
 *  4. Determinism: the epoch order is a pure function of (seed, epoch); the
 *     state that matters is (params, m, v, step, epoch, cursor), all in the
 *     checkpoint, so a resumed run replays the uninterrupted one exactly on
 *     the same backend.
 *  5. Checkpoint: a safetensors file (lora, adam_m, adam_v + metadata step,
 *     epoch, cursor, recipe) written with el_fs_write_atomic: after a kill
 *     the file is the previous checkpoint or the new one, never a mix. The
 *     crash point "train.after_checkpoint" fires right after it is durable.
 */
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/safetensors.h"
#include "nn/rng.h"
#include "train/eval.h"

void el_train_options_default(el_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 60;
    o->batch = 8;
    o->accum = 1;
    o->buckets = EL_TRAIN_MAX_BUCKETS;
    o->lr = 3e-3f;
    o->min_lr_ratio = 0.1f;
    o->warmup_steps = 5;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.0f;
    o->max_grad_norm = 1.0f;
    o->seed = 1;
}

double el_train_lr_at(const el_train_options *o, int step)
{
    if (o->warmup_steps > 0 && step <= o->warmup_steps)
        return (double)o->lr * step / o->warmup_steps;
    int span = o->steps - o->warmup_steps;
    double progress = span > 0 ? (double)(step - o->warmup_steps) / span : 1.0;
    if (progress > 1)
        progress = 1;
    double min_lr = (double)o->lr * o->min_lr_ratio;
    return min_lr + ((double)o->lr - min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Data cursor: position CURSOR in the permutation of EPOCH. */
typedef struct data_order {
    const el_dataset *ds;
    uint64_t seed;
    uint64_t epoch;
    size_t cursor;
    size_t *perm;
    size_t unit;        /* examples per step (batch * accum) */
    size_t *scratch;    /* one window */
} data_order;

#define WINDOW_STEPS 8

static void swap_idx(size_t *a, size_t *b)
{
    size_t t = *a;
    *a = *b;
    *b = t;
}

/* The order of epoch d->epoch (design 2): a permutation, then per window of
 * WINDOW_STEPS steps a length sort and a shuffle of whole steps. */
static void shuffle(data_order *d)
{
    uint64_t rng = d->seed * 0x9e3779b97f4a7c15ULL + d->epoch + 1;
    size_t n = d->ds->count, u = d->unit, win = u * WINDOW_STEPS;
    for (size_t i = 0; i < n; i++)
        d->perm[i] = i;
    for (size_t i = n; i > 1; i--)
        swap_idx(&d->perm[i - 1], &d->perm[el_nn_rng_below(&rng, i)]);
    for (size_t start = 0; start < n; start += win) {
        size_t len = n - start < win ? n - start : win, steps = len / u;
        size_t *w = d->perm + start;
        el_train_sort_by_length(d->ds, w, len);
        size_t order[WINDOW_STEPS];
        for (size_t i = 0; i < steps; i++)
            order[i] = i;
        for (size_t i = steps; i > 1; i--)
            swap_idx(&order[i - 1], &order[el_nn_rng_below(&rng, i)]);
        for (size_t i = 0; i < steps; i++)
            memcpy(d->scratch + i * u, w + order[i] * u, u * sizeof *w);
        memcpy(w, d->scratch, steps * u * sizeof *w);
    }
}

static size_t next_example(data_order *d)
{
    if (d->cursor == d->ds->count) {
        d->epoch++;
        d->cursor = 0;
        shuffle(d);
    }
    return d->perm[d->cursor++];
}

/* Everything that must match for a checkpoint to be resumed. */
static void recipe(const el_train_options *o, const el_lora *lora, const el_dataset *ds,
                   char *buf, size_t n)
{
    snprintf(buf, n,
             "v1 steps=%d batch=%d accum=%d seq=%d lr=%.9g min=%.9g warmup=%d b1=%.9g "
             "b2=%.9g eps=%.9g wd=%.9g clip=%.9g seed=%" PRIu64 " r=%d alpha=%.9g rs=%d "
             "targets=%u params=%zu data=%zu/%" PRIu64 " buckets=%d",
             o->steps, o->batch, o->accum, ds->seq_len, (double)o->lr, (double)o->min_lr_ratio,
             o->warmup_steps, (double)o->beta1, (double)o->beta2, (double)o->eps,
             (double)o->weight_decay, (double)o->max_grad_norm, o->seed, lora->cfg.rank,
             (double)lora->cfg.alpha, lora->cfg.use_rslora, lora->cfg.targets, lora->nparams,
             ds->count, ds->scored, o->buckets);
}

static int save_checkpoint(const char *path, const el_lora *lora, const float *p,
                           const float *mm, const float *vv, int step,
                           const data_order *d, const char *rec, el_error *err)
{
    char s_step[32], s_epoch[32], s_cursor[32];
    snprintf(s_step, sizeof s_step, "%d", step);
    snprintf(s_epoch, sizeof s_epoch, "%" PRIu64, d->epoch);
    snprintf(s_cursor, sizeof s_cursor, "%zu", d->cursor);
    const char *meta[] = {"step", s_step, "epoch", s_epoch, "cursor", s_cursor,
                          "recipe", rec, "format", "edgeloop-train-checkpoint-v1"};
    el_st_entry e[3] = {
        {"lora", 1, {(int64_t)lora->nparams}, p},
        {"adam_m", 1, {(int64_t)lora->nparams}, mm},
        {"adam_v", 1, {(int64_t)lora->nparams}, vv},
    };
    return el_safetensors_write(path, e, 3, meta, 5, err);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Loads PATH into P, M, V and the cursor. Returns 0, EL_ENOTFOUND when there
 * is no checkpoint, or EL_EINPUT when it is malformed or from another
 * recipe. */
static int load_checkpoint(const char *path, const el_lora *lora, float *p, float *mm,
                           float *vv, int *step, data_order *d, const char *rec,
                           int steps, el_error *err)
{
    if (!el_fs_exists(path))
        return EL_ENOTFOUND;
    el_safetensors *st;
    int rc = el_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    const char *r = el_safetensors_meta(st, "recipe");
    uint64_t s, epoch, cursor;
    const el_st_tensor *tp = el_safetensors_find(st, "lora");
    const el_st_tensor *tm = el_safetensors_find(st, "adam_m");
    const el_st_tensor *tv = el_safetensors_find(st, "adam_v");
    if (!r || strcmp(r, rec)) {
        rc = el_error_set(err, EL_EINPUT,
                          "%s: checkpoint was made with other settings (%s); rerun without --resume or with the same options",
                          path, r ? r : "no recipe");
    } else if (parse_u64(el_safetensors_meta(st, "step"), (uint64_t)steps, &s) ||
               parse_u64(el_safetensors_meta(st, "epoch"), UINT32_MAX, &epoch) ||
               parse_u64(el_safetensors_meta(st, "cursor"), d->ds->count, &cursor) ||
               !tp || !tm || !tv || tp->numel != lora->nparams || tm->numel != lora->nparams ||
               tv->numel != lora->nparams || tp->dtype != EL_ST_F32) {
        rc = el_error_set(err, EL_EINPUT, "%s: malformed training checkpoint", path);
    } else {
        el_safetensors_to_f32(tp, p);
        el_safetensors_to_f32(tm, mm);
        el_safetensors_to_f32(tv, vv);
        *step = (int)s;
        d->epoch = epoch;
        shuffle(d);
        d->cursor = (size_t)cursor;
    }
    el_safetensors_close(st);
    return rc;
}

typedef struct train_bucket {
    int S;
    el_llama_work *w;
    el_tensor *ids, *targets, *loss;   /* ids/targets: ACCUM micro-batches */
} train_bucket;

int el_train_run(el_llama *m, el_lora *lora, const el_dataset *ds,
                 const el_train_options *o, el_train_result *res, el_error *err)
{
    memset(res, 0, sizeof *res);
    el_backend *be = el_nn_llama_backend(m);
    el_tensor *params = el_nn_llama_lora_params(m), *grads = el_nn_llama_lora_grads(m);
    if (!params || !grads)
        return el_error_set(err, EL_EINTERNAL, "training needs an adapter with gradients");
    if (o->steps < 1 || o->batch < 1 || o->accum < 1 || !(o->lr > 0))
        return el_error_set(err, EL_EUSAGE, "steps, batch, accumulation and lr must be positive");
    int B = o->batch, A = o->accum, rc = 0;
    int lens[EL_TRAIN_MAX_BUCKETS + 1];
    int nb = el_train_buckets(ds->seq_len, o->buckets, lens);
    size_t Tmax = (size_t)B * (size_t)ds->seq_len, n = lora->nparams;
    size_t unit = (size_t)B * (size_t)A;
    train_bucket bk[EL_TRAIN_MAX_BUCKETS] = {{0}};
    el_tensor *loss_sum = NULL, *am = NULL, *av = NULL, *hp = NULL, *gnorm = NULL;
    int32_t *h_ids = el_malloc(Tmax * (size_t)A * sizeof *h_ids);
    int32_t *h_targets = el_malloc(Tmax * (size_t)A * sizeof *h_targets);
    size_t *picked = el_malloc(unit * sizeof *picked);
    float *h_m = el_calloc(n, sizeof *h_m), *h_v = el_calloc(n, sizeof *h_v);
    data_order d = {ds, o->seed, 0, 0, el_malloc(ds->count * sizeof(size_t)), unit,
                    el_malloc(unit * WINDOW_STEPS * sizeof(size_t))};
    char rec[640];
    recipe(o, lora, ds, rec, sizeof rec);
    if (!h_ids || !h_targets || !picked || !h_m || !h_v || !d.perm || !d.scratch) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for training");
        goto done;
    }
    shuffle(&d);
    int step = 0;
    if (o->resume && o->checkpoint_path) {
        rc = load_checkpoint(o->checkpoint_path, lora, lora->params, h_m, h_v, &step, &d, rec,
                             o->steps, err);
        if (rc == EL_ENOTFOUND)
            rc = 0;
        else if (rc)
            goto done;
    }
    res->start_step = step;
    if (!(loss_sum = el_nn_tensor_create(be, EL_F32, 1, err)) ||
        !(am = el_nn_tensor_create(be, EL_F32, n, err)) ||
        !(av = el_nn_tensor_create(be, EL_F32, n, err)) ||
        !(hp = el_nn_tensor_create(be, EL_F32, 8, err)) ||
        !(gnorm = el_nn_tensor_create(be, EL_F32, 1, err))) {
        rc = err ? err->code : EL_ENOMEM;
        goto done;
    }
    if ((rc = el_nn_write(be, el_nn_whole(params), lora->params, err)) ||
        (rc = el_nn_write(be, el_nn_whole(am), h_m, err)) ||
        (rc = el_nn_write(be, el_nn_whole(av), h_v, err)))
        goto done;
    float grad_scale = 1.0f / (float)(Tmax * (size_t)A);
    double t0 = now_s();
    for (step = step + 1; step <= o->steps; step++) {
        int longest = 0;
        for (size_t i = 0; i < unit; i++) {
            picked[i] = next_example(&d);
            if (ds->examples[picked[i]].len > longest)
                longest = ds->examples[picked[i]].len;
        }
        train_bucket *b = &bk[el_train_bucket_of(lens, nb, longest)];
        b->S = lens[b - bk];
        size_t T = (size_t)B * (size_t)b->S;
        if (!b->w) {   /* first step of this bucket: its workspace and inputs */
            if ((rc = el_nn_llama_work_create(m, B, b->S, 1, &b->w, err)))
                goto done;
            if (!(b->ids = el_nn_tensor_create(be, EL_I32, T * (size_t)A, err)) ||
                !(b->targets = el_nn_tensor_create(be, EL_I32, T * (size_t)A, err)) ||
                !(b->loss = el_nn_tensor_create(be, EL_F32, T, err))) {
                rc = err ? err->code : EL_ENOMEM;
                goto done;
            }
        }
        uint64_t scored = 0;
        for (size_t i = 0; i < unit; i++) {
            size_t row = i * (size_t)b->S;
            scored += (uint64_t)el_nn_dataset_fill_to(ds, picked[i], b->S, h_ids + row,
                                                      h_targets + row);
            res->tokens += (uint64_t)ds->examples[picked[i]].len;
        }
        float h_hp[8] = {
            (float)el_train_lr_at(o, step), o->beta1, o->beta2, o->eps, o->weight_decay,
            (float)(1.0 - pow((double)o->beta1, step)),
            (float)(1.0 - pow((double)o->beta2, step)), o->max_grad_norm,
        };
        if ((rc = el_nn_write(be, el_nn_whole(b->ids), h_ids, err)) ||
            (rc = el_nn_write(be, el_nn_whole(b->targets), h_targets, err)) ||
            (rc = el_nn_write(be, el_nn_whole(hp), h_hp, err)) ||
            (rc = el_nn_graph_begin(be, el_nn_llama_work_key(b->w, 2), err)) ||
            (rc = el_nn_fill(be, el_nn_whole(grads), 0.0f, err)))
            goto done;
        for (int a = 0; a < A; a++) {
            el_view vi = el_nn_view(b->ids, (size_t)a * T, T);
            el_view vt = el_nn_view(b->targets, (size_t)a * T, T);
            if ((rc = el_nn_llama_forward(b->w, vi, vt, el_nn_whole(b->loss), 1, grad_scale,
                                          err)) ||
                (rc = el_nn_reduce(be, EL_REDUCE_SUM, el_nn_whole(b->loss),
                                   el_nn_whole(loss_sum), a > 0, err)))
                goto done;
        }
        float lsum;
        if ((rc = el_nn_reduce(be, EL_REDUCE_SUMSQ, el_nn_whole(grads), el_nn_whole(gnorm), 0,
                               err)) ||
            (rc = el_nn_adamw(be, el_nn_whole(params), el_nn_whole(grads), el_nn_whole(am),
                              el_nn_whole(av), el_nn_whole(hp), el_nn_whole(gnorm), err)) ||
            (rc = el_nn_graph_end(be, err)) ||
            (rc = el_nn_read(be, el_nn_whole(loss_sum), &lsum, err)))
            goto done;
        double step_loss = scored ? (double)lsum / (double)scored : NAN;
        if (!isfinite(lsum)) {
            rc = el_error_set(err, EL_EINTERNAL, "training diverged at step %d (loss %g)", step,
                              (double)lsum);
            goto done;
        }
        if (res->steps == 0)
            res->first_loss = step_loss;
        res->last_loss = step_loss;
        res->steps++;
        double el = now_s() - t0;
        if (o->progress) {
            el_train_progress p = {step, o->steps, step_loss, el > 0 ? res->tokens / el : 0, el,
                                   el / res->steps * (o->steps - step)};
            o->progress(o->progress_ctx, &p);
        }
        if (o->checkpoint_every > 0 && o->checkpoint_path && step % o->checkpoint_every == 0 &&
            step < o->steps) {
            if ((rc = el_nn_read(be, el_nn_whole(params), lora->params, err)) ||
                (rc = el_nn_read(be, el_nn_whole(am), h_m, err)) ||
                (rc = el_nn_read(be, el_nn_whole(av), h_v, err)) ||
                (rc = save_checkpoint(o->checkpoint_path, lora, lora->params, h_m, h_v, step, &d,
                                      rec, err)))
                goto done;
            el_crash_point("train.after_checkpoint");
        }
    }
    if ((rc = el_nn_read(be, el_nn_whole(params), lora->params, err)))
        goto done;
    res->seconds = now_s() - t0;
    res->tokens_per_s = res->seconds > 0 ? res->tokens / res->seconds : 0;
done:
    for (int i = 0; i < EL_TRAIN_MAX_BUCKETS; i++) {
        el_nn_tensor_destroy(be, bk[i].ids);
        el_nn_tensor_destroy(be, bk[i].targets);
        el_nn_tensor_destroy(be, bk[i].loss);
        el_nn_llama_work_destroy(bk[i].w);
    }
    el_nn_tensor_destroy(be, loss_sum);
    el_nn_tensor_destroy(be, am);
    el_nn_tensor_destroy(be, av);
    el_nn_tensor_destroy(be, hp);
    el_nn_tensor_destroy(be, gnorm);
    el_free(h_ids);
    el_free(h_targets);
    el_free(picked);
    el_free(h_m);
    el_free(h_v);
    el_free(d.perm);
    el_free(d.scratch);
    return rc;
}
