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
 *  6. Rehearsal (replay): with a replay set, K = round(fraction * BATCH) rows
 *     of every micro-batch (at most BATCH - 1, so the training data always
 *     moves) come from it, the other BATCH - K from the training data.
 *     Fine-tuning on site data alone pulled the tiny base away from general
 *     text (+7.4% anchor loss for -20% holdout); rows of its pretraining
 *     distribution in every batch hold that rise under 2%. The replay set
 *     has its own order (same scheme as 2, seed derived from SEED) whose
 *     epoch and cursor are checkpointed next to the data cursor, and K and
 *     the replay set's size are part of the recipe, so resume stays exact.
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
    o->batch = 32;
    o->accum = 1;
    o->buckets = EL_TRAIN_MAX_BUCKETS;
    o->lr = 2e-3f;
    o->min_lr_ratio = 0.1f;
    o->warmup_steps = 5;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.0f;
    o->max_grad_norm = 1.0f;
    o->seed = 1;
    o->replay_fraction = 0.9375f;   /* 30 of 32 rows; see cmd_train.c */
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
    for (size_t start = 0; win > 0 && start < n; start += win) {
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
    /* unit 0 never asks (no replay rows); an empty set is never built */
    if (d->cursor == d->ds->count) {
        d->epoch++;
        d->cursor = 0;
        shuffle(d);
    }
    return d->perm[d->cursor++];
}

/* Everything that must match for a checkpoint to be resumed. */
static void recipe(const el_train_options *o, const el_lora *lora, const el_dataset *ds,
                   int k, char *buf, size_t n)
{
    int at = snprintf(buf, n,
             "v1 steps=%d batch=%d accum=%d seq=%d lr=%.9g min=%.9g warmup=%d b1=%.9g "
             "b2=%.9g eps=%.9g wd=%.9g clip=%.9g seed=%" PRIu64 " r=%d alpha=%.9g rs=%d "
             "targets=%u params=%zu data=%zu/%" PRIu64 " buckets=%d",
             o->steps, o->batch, o->accum, ds->seq_len, (double)o->lr, (double)o->min_lr_ratio,
             o->warmup_steps, (double)o->beta1, (double)o->beta2, (double)o->eps,
             (double)o->weight_decay, (double)o->max_grad_norm, o->seed, lora->cfg.rank,
             (double)lora->cfg.alpha, lora->cfg.use_rslora, lora->cfg.targets, lora->nparams,
             ds->count, ds->scored, o->buckets);
    if (k > 0 && at > 0 && (size_t)at < n)   /* no replay: the recipe of before replay */
        snprintf(buf + at, n - (size_t)at, " replay=%d/%zu/%" PRIu64, k, o->replay->count,
                 o->replay->scored);
}

static int save_checkpoint(const char *path, const el_lora *lora, const float *p,
                           const float *mm, const float *vv, int step,
                           const data_order *d, const data_order *rd, const char *rec,
                           el_error *err)
{
    char s_step[32], s_epoch[32], s_cursor[32], s_repoch[32], s_rcursor[32];
    snprintf(s_step, sizeof s_step, "%d", step);
    snprintf(s_epoch, sizeof s_epoch, "%" PRIu64, d->epoch);
    snprintf(s_cursor, sizeof s_cursor, "%zu", d->cursor);
    snprintf(s_repoch, sizeof s_repoch, "%" PRIu64, rd->epoch);
    snprintf(s_rcursor, sizeof s_rcursor, "%zu", rd->cursor);
    const char *meta[] = {"step", s_step, "epoch", s_epoch, "cursor", s_cursor,
                          "recipe", rec, "format", "edgeloop-train-checkpoint-v1",
                          "replay_epoch", s_repoch, "replay_cursor", s_rcursor};
    el_st_entry e[3] = {
        {"lora", 1, {(int64_t)lora->nparams}, p},
        {"adam_m", 1, {(int64_t)lora->nparams}, mm},
        {"adam_v", 1, {(int64_t)lora->nparams}, vv},
    };
    return el_safetensors_write(path, e, 3, meta, rd->unit ? 7 : 5, err);
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
                           float *vv, int *step, data_order *d, data_order *rd,
                           const char *rec, int steps, el_error *err)
{
    if (!el_fs_exists(path))
        return EL_ENOTFOUND;
    el_safetensors *st;
    int rc = el_safetensors_open(path, &st, err);
    if (rc)
        return rc;
    const char *r = el_safetensors_meta(st, "recipe");
    uint64_t s, epoch, cursor, repoch = 0, rcursor = 0;
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
               (rd->unit &&
                (parse_u64(el_safetensors_meta(st, "replay_epoch"), UINT32_MAX, &repoch) ||
                 parse_u64(el_safetensors_meta(st, "replay_cursor"), rd->ds->count,
                           &rcursor))) ||
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
        if (rd->unit) {
            rd->epoch = repoch;
            shuffle(rd);
            rd->cursor = (size_t)rcursor;
        }
    }
    el_safetensors_close(st);
    return rc;
}

/* Salt of the replay order's seed, so it differs from the data order's. */
#define REPLAY_SEED_SALT 0x7265706c6179ULL

int el_train_replay_rows(const el_train_options *o)
{
    if (!o->replay || !o->replay->count || !(o->replay_fraction > 0) || o->batch < 2)
        return 0;
    double k = floor((double)o->replay_fraction * o->batch + 0.5);
    if (k > o->batch - 1)
        k = o->batch - 1;
    return (int)k;
}

/* FNV-1a over an example's tokens. */
static uint64_t example_hash(const el_dataset *ds, size_t i)
{
    const el_example *e = &ds->examples[i];
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)e->len;
    for (int t = 0; t < e->len; t++) {
        h ^= (uint64_t)(uint32_t)ds->tokens[e->off + (size_t)t];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int same_example(const el_dataset *a, size_t i, const el_dataset *b, size_t j)
{
    const el_example *x = &a->examples[i], *y = &b->examples[j];
    return x->len == y->len && !memcmp(a->tokens + x->off, b->tokens + y->off,
                                       (size_t)x->len * sizeof *a->tokens);
}

size_t el_train_replay_exclude(el_dataset *replay, const el_dataset *exclude)
{
    if (!replay || !exclude || !exclude->count)
        return 0;
    /* Hashes narrow the candidates; a hit is confirmed token by token. When
     * the index cannot be allocated, every pair is compared instead. */
    uint64_t *hs = el_malloc(exclude->count * sizeof *hs);
    if (hs) {
        for (size_t j = 0; j < exclude->count; j++)
            hs[j] = example_hash(exclude, j);
        qsort(hs, exclude->count, sizeof *hs, cmp_u64);
    }
    size_t kept = 0, removed = 0;
    for (size_t i = 0; i < replay->count; i++) {
        int hit = 0;
        if (!hs || bsearch(&(uint64_t){example_hash(replay, i)}, hs, exclude->count,
                           sizeof *hs, cmp_u64))
            for (size_t j = 0; j < exclude->count && !hit; j++)
                hit = same_example(replay, i, exclude, j);
        if (hit) {
            const el_example *e = &replay->examples[i];
            if (e->len - 1 > e->first_scored)
                replay->scored -= (uint64_t)(e->len - 1 - e->first_scored);
            removed++;
        } else {
            replay->examples[kept++] = replay->examples[i];
        }
    }
    replay->count = kept;
    el_free(hs);
    return removed;
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
    if (!(o->replay_fraction >= 0 && o->replay_fraction <= 1))
        return el_error_set(err, EL_EUSAGE, "replay fraction %g is not in [0, 1]",
                            (double)o->replay_fraction);
    int B = o->batch, A = o->accum, K = el_train_replay_rows(o), rc = 0;
    if (K > 0 && o->replay->seq_len > ds->seq_len)
        return el_error_set(err, EL_EUSAGE,
                            "replay sequences (%d tokens) are longer than the training ones (%d)",
                            o->replay->seq_len, ds->seq_len);
    int lens[EL_TRAIN_MAX_BUCKETS + 1];
    int nb = el_train_buckets(ds->seq_len, o->buckets, lens);
    size_t Tmax = (size_t)B * (size_t)ds->seq_len, n = lora->nparams;
    size_t unit = (size_t)B * (size_t)A, unit_replay = (size_t)K * (size_t)A;
    size_t unit_data = unit - unit_replay;
    train_bucket bk[EL_TRAIN_MAX_BUCKETS] = {{0}};
    el_tensor *loss_sum = NULL, *am = NULL, *av = NULL, *hp = NULL, *gnorm = NULL;
    int32_t *h_ids = el_malloc(Tmax * (size_t)A * sizeof *h_ids);
    int32_t *h_targets = el_malloc(Tmax * (size_t)A * sizeof *h_targets);
    size_t *picked = el_malloc(unit * sizeof *picked);
    float *h_m = el_calloc(n, sizeof *h_m), *h_v = el_calloc(n, sizeof *h_v);
    size_t *data_idx = el_malloc(unit_data * sizeof *data_idx);
    size_t *replay_idx = K ? el_malloc(unit_replay * sizeof *replay_idx) : NULL;
    data_order d = {ds, o->seed, 0, 0, el_malloc(ds->count * sizeof(size_t)), unit_data,
                    el_malloc(unit_data * WINDOW_STEPS * sizeof(size_t))};
    data_order rd = {o->replay, o->seed ^ REPLAY_SEED_SALT, 0, 0,
                     K ? el_malloc(o->replay->count * sizeof(size_t)) : NULL, unit_replay,
                     K ? el_malloc(unit_replay * WINDOW_STEPS * sizeof(size_t)) : NULL};
    char rec[704];
    recipe(o, lora, ds, K, rec, sizeof rec);
    if (!h_ids || !h_targets || !picked || !h_m || !h_v || !d.perm || !d.scratch ||
        !data_idx || (K && (!replay_idx || !rd.perm || !rd.scratch))) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for training");
        goto done;
    }
    shuffle(&d);
    if (K)
        shuffle(&rd);
    int step = 0;
    if (o->resume && o->checkpoint_path) {
        rc = load_checkpoint(o->checkpoint_path, lora, lora->params, h_m, h_v, &step, &d, &rd,
                             rec, o->steps, err);
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
        size_t nd = 0, nr = 0;
        /* rows 0..B-K-1 of each micro-batch: training data; B-K..B-1: replay */
        for (size_t i = 0; i < unit; i++) {
            int from_replay = (int)(i % (size_t)B) >= B - K;
            const el_dataset *src = from_replay ? o->replay : ds;
            picked[i] = next_example(from_replay ? &rd : &d);
            if (from_replay)
                replay_idx[nr++] = picked[i];
            else
                data_idx[nd++] = picked[i];
            if (src->examples[picked[i]].len > longest)
                longest = src->examples[picked[i]].len;
        }
        if (o->on_batch)
            o->on_batch(o->on_batch_ctx, step, data_idx, nd, replay_idx, nr);
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
            const el_dataset *src = (int)(i % (size_t)B) >= B - K ? o->replay : ds;
            scored += (uint64_t)el_nn_dataset_fill_to(src, picked[i], b->S, h_ids + row,
                                                      h_targets + row);
            res->tokens += (uint64_t)src->examples[picked[i]].len;
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
                                      &rd, rec, err)))
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
    el_free(rd.perm);
    el_free(rd.scratch);
    el_free(data_idx);
    el_free(replay_idx);
    return rc;
}
