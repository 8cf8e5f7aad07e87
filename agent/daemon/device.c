/* State-mode training: ingested samples -> candidate -> gate -> probation.
 *
 * Invariants:
 *  1. What trains never judges: the training set is EL_LIST_NEW_TRAIN plus a
 *     draw from EL_LIST_REPLAY (accepted train data and anchor-replay); the
 *     gate reads EL_LIST_HOLDOUT and EL_LIST_ANCHOR_CHECK, the health check
 *     EL_LIST_PROBE. The store keeps these lists disjoint. When the base
 *     model ships a rehearsal set (BASE/replay.jsonl), [replay]
 *     base_fraction of every batch comes from it, minus any line equal to a
 *     holdout, anchor-check or probe sample.
 *  2. "Before" and "after" are measured on the same model object with the
 *     same adapter shape: before = the starting parameters (the active
 *     version's, or a fresh PEFT init whose B = 0 makes it the base alone),
 *     after = the trained ones. So the gate's reference is exactly the
 *     active version (or the base), as DESIGN.md asks.
 *  3. Nothing is recorded until the adapter files are durable: the trained
 *     adapter is written to a private directory under the state directory,
 *     then el_store_candidate_create copies it into the blob store and
 *     records the row in one transaction. The private directory is removed
 *     on every path.
 *  4. The verdict is recorded before activation; a crash between the two
 *     leaves a judged candidate that `edgeloop activate ID` can finish.
 *  5. The recorded adapter is what the hub will rebuild from this version's
 *     delta (parent + decoded delta, sync/delta.h, in the configured
 *     encoding), and it is what the gate judged (requantize). The private
 *     directory (train-work.PID) of a killed run is removed by the next
 *     el_store_open once PID is gone.
 *
 * Transitions performed here: (none) -> candidate (el_store_candidate_create),
 * candidate -> rejected or judged-pass (el_store_candidate_judge),
 * candidate -> probation (el_store_activate), probation -> rolled_back on a
 * failed probe health check (el_store_health_report).
 */
#include "daemon/device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "nn/backend.h"
#include "nn/dataset.h"
#include "nn/llama.h"
#include "nn/lora.h"
#include "nn/rng.h"
#include "sync/delta.h"
#include "train/eval.h"
#include "train/gate.h"
#include "train/trainer.h"

#define EVAL_BATCH 8
/* Jacobi sweeps for the effective rank; r <= EL_LORA_MAX_RANK but the
 * figure is only computed up to this rank (larger ranks report NAN). */
#define RANK_MAX 64
#define JACOBI_SWEEPS 60

/* ---- sample lists -> datasets -------------------------------------------- */

/* Joins BODIES[0..N) into one JSONL buffer and tokenizes it (WHAT names it
 * in messages). Returns 0 and *OUT (NULL when N is 0), or an error. */
static int bodies_dataset(const char *const *bodies, size_t n, const char *what,
                          int seq_len, el_dataset **out, el_error *err)
{
    *out = NULL;
    if (!n)
        return 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(bodies[i]) + 1;
    char *buf = el_malloc(len + 1);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory joining %s samples", what);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t bl = strlen(bodies[i]);
        memcpy(buf + at, bodies[i], bl);
        at += bl;
        buf[at++] = '\n';
    }
    buf[at] = 0;
    int rc = el_nn_dataset_parse(buf, at, what, seq_len, EL_BAD_LINES_FAIL, out, err);
    el_free(buf);
    return rc;
}

/* A dataset of the whole list V[0..N) (NULL when empty). */
static int list_dataset(const el_store_sample *v, size_t n, const char *what,
                        int seq_len, el_dataset **out, el_error *err)
{
    *out = NULL;
    if (!n)
        return 0;
    const char **bodies = el_calloc(n, sizeof *bodies);
    if (!bodies)
        return el_error_set(err, EL_ENOMEM, "out of memory listing %s samples", what);
    for (size_t i = 0; i < n; i++)
        bodies[i] = v[i].body;
    int rc = bodies_dataset(bodies, n, what, seq_len, out, err);
    el_free(bodies);
    return rc;
}

/* ---- plasticity figures -------------------------------------------------- */

/* Eigenvalues of the symmetric N x N matrix A (destroyed) into W, and the
 * eigenvectors as columns of V when V is not NULL (cyclic Jacobi). */
static void jacobi(double *a, int n, double *w, double *v)
{
    if (v)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                v[i * n + j] = i == j;
    for (int sweep = 0; sweep < JACOBI_SWEEPS; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += a[p * n + q] * a[p * n + q];
        if (off < 1e-30)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300)
                    continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) {
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                if (v)
                    for (int k = 0; k < n; k++) {
                        double vkp = v[k * n + p], vkq = v[k * n + q];
                        v[k * n + p] = c * vkp - s * vkq;
                        v[k * n + q] = s * vkp + c * vkq;
                    }
            }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
}

/* Effective rank (Roy & Vetterli: exp of the entropy of the normalized
 * singular values) of B A for one slot, without forming the out x in
 * product: the squared singular values of B A are the eigenvalues of
 * C^1/2 D C^1/2 with C = A A^T and D = B^T B (both r x r). Returns NAN for
 * a zero product or a rank above RANK_MAX. */
static double slot_effective_rank(const float *A, const float *B, int r, int in, int out)
{
    if (r > RANK_MAX)
        return NAN;
    double C[RANK_MAX * RANK_MAX], D[RANK_MAX * RANK_MAX], V[RANK_MAX * RANK_MAX];
    double w[RANK_MAX], S[RANK_MAX * RANK_MAX], T[RANK_MAX * RANK_MAX];
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double c = 0, d = 0;
            for (int k = 0; k < in; k++)
                c += (double)A[i * in + k] * A[j * in + k];
            for (int k = 0; k < out; k++)
                d += (double)B[k * r + i] * B[k * r + j];
            C[i * r + j] = c;
            D[i * r + j] = d;
        }
    jacobi(C, r, w, V);
    /* S = V diag(sqrt w) V^T = C^1/2 */
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double x = 0;
            for (int k = 0; k < r; k++)
                x += V[i * r + k] * sqrt(w[k] > 0 ? w[k] : 0) * V[j * r + k];
            S[i * r + j] = x;
        }
    /* T = S D S */
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double x = 0;
            for (int k = 0; k < r; k++)
                x += S[i * r + k] * D[k * r + j];
            C[i * r + j] = x;
        }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double x = 0;
            for (int k = 0; k < r; k++)
                x += C[i * r + k] * S[k * r + j];
            T[i * r + j] = x;
        }
    jacobi(T, r, w, NULL);
    double sum = 0;
    for (int i = 0; i < r; i++) {
        w[i] = w[i] > 0 ? sqrt(w[i]) : 0;
        sum += w[i];
    }
    if (!(sum > 0))
        return NAN;
    double h = 0;
    for (int i = 0; i < r; i++)
        if (w[i] > 0) {
            double p = w[i] / sum;
            h -= p * log(p);
        }
    return exp(h);
}

/* ||scale * (B1 A1 - B0 A0)||_F summed over slots (squared, then rooted),
 * and the mean effective rank of the new B1 A1 over slots whose product is
 * not zero. P0 is the starting parameters, P1 the trained ones. */
static void plasticity(const el_lora *lora, const float *p0, const float *p1,
                       double *update_norm, double *eff_rank)
{
    double scale = el_nn_lora_scale(&lora->cfg), sq = 0, rank_sum = 0;
    int r = lora->cfg.rank, ranked = 0;
    for (int s = 0; s < lora->nslots; s++) {
        const el_lora_slot *sl = &lora->slots[s];
        const float *A0 = p0 + sl->a_off, *B0 = p0 + sl->b_off;
        const float *A1 = p1 + sl->a_off, *B1 = p1 + sl->b_off;
        for (int o = 0; o < sl->out; o++)
            for (int i = 0; i < sl->in; i++) {
                double d = 0;
                for (int k = 0; k < r; k++)
                    d += (double)B1[o * r + k] * A1[k * sl->in + i] -
                         (double)B0[o * r + k] * A0[k * sl->in + i];
                sq += d * d;
            }
        double er = slot_effective_rank(A1, B1, r, sl->in, sl->out);
        if (isfinite(er)) {
            rank_sum += er;
            ranked++;
        }
    }
    *update_norm = scale * sqrt(sq);
    *eff_rank = ranked ? rank_sum / ranked : NAN;
}

/* ---- what is gated is what is synced ---------------------------------------- */

#define REQUANTIZE_ROUNDS 4

/* Adds every A and B matrix of PARAMS to SET under its PEFT key. */
static int lora_set(const el_lora *lora, const float *params, el_delta_set *set,
                    el_error *err)
{
    char key[256];
    int rc = 0;
    for (int i = 0; i < lora->nslots && !rc; i++) {
        const el_lora_slot *sl = &lora->slots[i];
        uint64_t a[2] = {(uint64_t)lora->cfg.rank, (uint64_t)sl->in};
        uint64_t b[2] = {(uint64_t)sl->out, (uint64_t)lora->cfg.rank};
        el_nn_lora_key(sl, 0, key, sizeof key);
        rc = el_delta_set_add(set, key, 2, a, params + sl->a_off, err);
        if (!rc) {
            el_nn_lora_key(sl, 1, key, sizeof key);
            rc = el_delta_set_add(set, key, 2, b, params + sl->b_off, err);
        }
    }
    return rc;
}

/* Replaces the trained parameters by parent + decoded(encode(trained -
 * parent)) with sync/delta.h, the adapter every receiver rebuilds (hub
 * included), and re-attaches them to the model, so the gate judges and the
 * registry stores exactly what will be synced (DESIGN.md "Policies", "device
 * and hub hold bit-identical weights"). Done for every encoding: even the
 * exact one goes through fp32 subtraction and addition. PARENT is the parent
 * version's parameters, or NULL when the version has none (its delta is from
 * zeros, not from the fresh PEFT init). *CHANGED is set to 1 when any
 * parameter changed, 0 when the parameters already were a rebuild of
 * themselves (the fixed point delta_export.c relies on). Returns 0 or a
 * negative EL_E*; on failure the parameters may be partly replaced. */
static int requantize(el_llama *model, el_lora *lora, const float *parent, int encoding,
                      int *changed, el_error *err)
{
    *changed = 0;
    el_delta_set next = {0}, base = {0}, delta = {0}, rebuilt = {0};
    el_delta_limits lim;
    el_delta_limits_default(&lim);
    uint8_t *buf = NULL;
    size_t len = 0;
    int got, rc;
    if ((rc = lora_set(lora, lora->params, &next, err)) ||
        (parent && (rc = lora_set(lora, parent, &base, err))) ||
        (rc = el_delta_encode(&next, parent ? &base : NULL, encoding, &buf, &len, err)) ||
        (rc = el_delta_decode(buf, len, &lim, &delta, &got, err)) ||
        (rc = el_delta_apply(parent ? &base : NULL, &delta, &rebuilt, err)))
        goto done;
    char key[256];
    for (int i = 0; i < lora->nslots && !rc; i++) {
        const el_lora_slot *sl = &lora->slots[i];
        for (int is_b = 0; is_b < 2 && !rc; is_b++) {
            el_nn_lora_key(sl, is_b, key, sizeof key);
            const el_delta_tensor *t = el_delta_set_find(&rebuilt, key);
            size_t n = (size_t)lora->cfg.rank * (size_t)(is_b ? sl->out : sl->in);
            float *dst = lora->params + (is_b ? sl->b_off : sl->a_off);
            if (!t || t->count != n) {
                rc = el_error_set(err, EL_EINTERNAL, "requantized adapter lacks %s", key);
            } else if (memcmp(dst, t->data, n * sizeof(float))) {
                memcpy(dst, t->data, n * sizeof(float));
                *changed = 1;
            }
        }
    }
    if (!rc)
        rc = el_nn_llama_set_lora(model, lora, 1, err);
done:
    el_free(buf);
    el_delta_set_finish(&next);
    el_delta_set_finish(&base);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);
    return rc;
}

/* ---- evaluation helpers ---------------------------------------------------- */

/* Loss of M on DS (NAN when DS is NULL). When GRADS is not NULL, also the
 * L2 norm of the gradient into *GNORM. */
static int eval_loss(el_llama *m, const el_dataset *ds, float *grads, size_t nparams,
                     double *loss, double *gnorm, el_error *err)
{
    *loss = NAN;
    if (gnorm)
        *gnorm = NAN;
    if (!ds)
        return 0;
    el_eval_result r;
    int rc = el_train_eval(m, ds, EVAL_BATCH, EL_TRAIN_MAX_BUCKETS, grads, &r, err);
    if (rc)
        return rc;
    *loss = r.loss;
    if (grads && gnorm) {
        double sq = 0;
        for (size_t i = 0; i < nparams; i++)
            sq += (double)grads[i] * grads[i];
        *gnorm = sqrt(sq);
    }
    return 0;
}

/* Removes DIR's adapter files and DIR itself; missing files are fine. */
static void remove_adapter_dir(const char *dir)
{
    static const char *const names[] = {"adapter_config.json",
                                        "adapter_model.safetensors",
                                        "checkpoint.safetensors"};
    char p[4096];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!el_fs_join(p, sizeof p, dir, names[i]))
            unlink(p);
    rmdir(dir);
}

static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* ---- the run ----------------------------------------------------------------- */

typedef struct run {
    el_backend *be;
    el_llama *model;
    el_lora *lora;
    float *p0, *grads;
    el_store_sample *news, *replay, *holdout, *anchor, *probe;
    size_t n_news, n_replay, n_holdout, n_anchor, n_probe;
    size_t *replay_idx, n_replay_used;
    el_dataset *train_ds, *holdout_ds, *anchor_ds, *probe_ds;
    el_dataset *base_replay_ds;     /* BASE/replay.jsonl, or NULL */
    int64_t *sample_ids;
    char work[4096], parent_dir[4096], out_dir[4096];
} run;

static void run_finish(run *x)
{
    el_nn_dataset_destroy(x->train_ds);
    el_nn_dataset_destroy(x->holdout_ds);
    el_nn_dataset_destroy(x->anchor_ds);
    el_nn_dataset_destroy(x->probe_ds);
    el_nn_dataset_destroy(x->base_replay_ds);
    el_store_sample_list_free(x->news, x->n_news);
    el_store_sample_list_free(x->replay, x->n_replay);
    el_store_sample_list_free(x->holdout, x->n_holdout);
    el_store_sample_list_free(x->anchor, x->n_anchor);
    el_store_sample_list_free(x->probe, x->n_probe);
    el_free(x->replay_idx);
    el_free(x->sample_ids);
    el_free(x->p0);
    el_free(x->grads);
    el_nn_llama_destroy(x->model);
    el_nn_lora_destroy(x->lora);
    el_nn_backend_destroy(x->be);
    if (x->parent_dir[0])
        remove_adapter_dir(x->parent_dir);
    if (x->out_dir[0])
        remove_adapter_dir(x->out_dir);
    if (x->work[0])
        rmdir(x->work);
}

/* Picks the replay draw: K of the N replay samples, by a seeded partial
 * Fisher-Yates shuffle, so a run is reproducible from its recipe. */
static int draw_replay(run *x, double fraction, uint64_t seed, el_error *err)
{
    size_t k = 0;
    if (fraction > 0 && fraction < 1 && x->n_replay)
        k = (size_t)floor((double)x->n_news * fraction / (1 - fraction) + 0.5);
    else if (fraction >= 1)
        k = x->n_replay;
    if (k > x->n_replay)
        k = x->n_replay;
    x->n_replay_used = k;
    if (!x->n_replay)
        return 0;
    x->replay_idx = el_calloc(x->n_replay, sizeof *x->replay_idx);
    if (!x->replay_idx)
        return el_error_set(err, EL_ENOMEM, "out of memory drawing replay samples");
    for (size_t i = 0; i < x->n_replay; i++)
        x->replay_idx[i] = i;
    uint64_t st = seed ^ 0x7265706c6179ULL;
    for (size_t i = 0; i < k; i++) {
        size_t j = i + (size_t)el_nn_rng_below(&st, x->n_replay - i);
        size_t t = x->replay_idx[i];
        x->replay_idx[i] = x->replay_idx[j];
        x->replay_idx[j] = t;
    }
    return 0;
}

/* Loads every list the run needs. Returns 0 or an error. */
static int load_lists(el_store *s, run *x, el_error *err)
{
    int rc;
    if ((rc = el_store_samples(s, EL_LIST_NEW_TRAIN, &x->news, &x->n_news, err)) ||
        (rc = el_store_samples(s, EL_LIST_REPLAY, &x->replay, &x->n_replay, err)) ||
        (rc = el_store_samples(s, EL_LIST_HOLDOUT, &x->holdout, &x->n_holdout, err)) ||
        (rc = el_store_samples(s, EL_LIST_ANCHOR_CHECK, &x->anchor, &x->n_anchor, err)) ||
        (rc = el_store_samples(s, EL_LIST_PROBE, &x->probe, &x->n_probe, err)))
        return rc;
    if (!x->n_news)
        return el_error_set_tag(err, EL_EINPUT, "no_data",
                                "%s: no new train samples (ingest data with "
                                "`edgeloop ingest FILE --split train`)", el_store_dir(s));
    if (!x->n_holdout || !x->n_anchor)
        return el_error_set_tag(err, EL_EINPUT, "no_data",
                                "%s: the gate needs holdout and anchor-check samples "
                                "(ingest with --split holdout and --split anchor)",
                                el_store_dir(s));
    return 0;
}

/* Sets up the backend, the base model and the starting adapter: the active
 * version's when it was trained on the current base, else a fresh PEFT init.
 * Sets R->parent_id. */
static int load_model(el_store *s, const el_device_train_opts *o, run *x, uint64_t seed,
                      el_device_train_result *r, int *seq_len, el_error *err)
{
    const el_store_config *cfg = el_store_get_config(s);
    int64_t base_id, active;
    char base_path[4096];
    int rc;
    if ((rc = el_store_base_current(s, &base_id, NULL, err)) ||
        (rc = el_store_base_path(s, base_id, base_path, sizeof base_path, err)) ||
        (rc = el_store_active(s, &active, err)))
        return rc;
    el_backend_options bo = {.device_index = -1, .threads = o->threads};
    const char *bname = o->backend && *o->backend ? o->backend : cfg->train.backend;
    if ((rc = el_nn_backend_parse(bname, &bo.kind, err)) ||
        (rc = el_nn_backend_create(&bo, &x->be, err)) ||
        (rc = el_nn_llama_load(x->be, base_path, &x->model, err)))
        return rc;
    const el_llama_config *mc = el_nn_llama_config(x->model);
    if (mc->tokenizer != EL_TOKENIZER_BYTES_V1)
        return el_error_set(err, EL_EINPUT, "%s: only the bytes-v1 tokenizer is supported",
                            base_path);
    *seq_len = (int)cfg->train.seq_len;
    if (*seq_len > mc->max_position_embeddings)
        *seq_len = mc->max_position_embeddings;
    char replay_path[4096];
    if (cfg->replay.base_fraction > 0 &&
        !el_fs_join(replay_path, sizeof replay_path, base_path, "replay.jsonl") &&
        el_fs_exists(replay_path) &&
        (rc = el_nn_dataset_load(replay_path, *seq_len, EL_BAD_LINES_FAIL, &x->base_replay_ds,
                                 err)))
        return rc;
    if (active) {
        el_store_version v;
        if ((rc = el_store_version_get(s, active, &v, err)))
            return rc;
        int same_base = v.base_id == base_id;
        el_store_version_finish(&v);
        if (same_base) {
            if (el_fs_join(x->parent_dir, sizeof x->parent_dir, x->work, "parent"))
                return el_error_set(err, EL_EUSAGE, "state path too long");
            if ((rc = el_store_export(s, active, x->parent_dir, err)) ||
                (rc = el_nn_lora_load(mc, x->parent_dir, &x->lora, err)))
                return el_error_prefix(err, "loading the active version %lld",
                                       (long long)active);
            r->parent_id = active;
        }
    }
    if (!x->lora) {
        el_lora_config lc = {.rank = (int)cfg->train.rank, .alpha = (float)cfg->train.alpha};
        snprintf(lc.base_model, sizeof lc.base_model, "%s", base_path);
        if ((rc = el_nn_lora_targets_parse(cfg->train.targets, &lc.targets, err)) ||
            (rc = el_nn_lora_create(mc, &lc, &x->lora, err)))
            return rc;
        el_nn_lora_init(x->lora, seed);
    }
    snprintf(r->backend, sizeof r->backend, "%s",
             el_nn_backend_kind(x->be) == EL_BACKEND_VULKAN ? "vulkan" : "cpu");
    return el_nn_llama_set_lora(x->model, x->lora, 1, err);
}

static void trainer_progress(void *ctx, const el_train_progress *p)
{
    const el_device_train_opts *o = ctx;
    o->progress(o->progress_ctx, p->step, p->steps, p->loss);
}

static char *recipe_json(const el_store_config *cfg, const el_lora *lora,
                         const el_train_options *to, size_t n_new, size_t n_replay,
                         int seq_len, int encoding)
{
    json_t *j = json_object();
    json_object_set_new(j, "steps", json_integer(to->steps));
    json_object_set_new(j, "batch", json_integer(to->batch));
    json_object_set_new(j, "lr", json_real(to->lr));
    json_object_set_new(j, "warmup_steps", json_integer(to->warmup_steps));
    json_object_set_new(j, "max_grad_norm", json_real(to->max_grad_norm));
    json_object_set_new(j, "seed", json_integer((json_int_t)to->seed));
    json_object_set_new(j, "seq_len", json_integer(seq_len));
    json_object_set_new(j, "rank", json_integer(lora->cfg.rank));
    json_object_set_new(j, "alpha", json_real(lora->cfg.alpha));
    json_object_set_new(j, "targets", json_string(cfg->train.targets));
    json_object_set_new(j, "replay_fraction", json_real(cfg->replay.fraction));
    json_object_set_new(j, "samples_new", json_integer((json_int_t)n_new));
    json_object_set_new(j, "samples_replay", json_integer((json_int_t)n_replay));
    json_object_set_new(j, "replay_base_rows", json_integer(el_train_replay_rows(to)));
    json_object_set_new(j, "encoding", json_string(el_delta_encoding_name(encoding)));
    char *text = el_json_dump_sorted(j);
    json_decref(j);
    return text;
}

static char *metrics_json(const el_device_train_result *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "train_loss_first", num(r->train_loss_first));
    json_object_set_new(j, "train_loss_last", num(r->train_loss_last));
    json_object_set_new(j, "holdout_before", num(r->holdout_before));
    json_object_set_new(j, "holdout_after", num(r->holdout_after));
    json_object_set_new(j, "anchor_before", num(r->anchor_before));
    json_object_set_new(j, "anchor_after", num(r->anchor_after));
    char *text = el_json_dump_sorted(j);
    json_decref(j);
    return text;
}

static char *plasticity_json(const el_device_train_result *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "update_norm", num(r->update_norm));
    json_object_set_new(j, "grad_norm_before", num(r->grad_norm_before));
    json_object_set_new(j, "grad_norm_after", num(r->grad_norm_after));
    json_object_set_new(j, "effective_rank", num(r->effective_rank));
    char *text = el_json_dump_sorted(j);
    json_decref(j);
    return text;
}

static char *figures_json(const el_gate_thresholds *t, const el_gate_result *g,
                          const el_device_train_result *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "pass", json_boolean(g->pass));
    json_object_set_new(j, "reason", json_string(g->reason));
    json_object_set_new(j, "gain", num(g->gain));
    json_object_set_new(j, "forget", num(g->forget));
    json_object_set_new(j, "min_gain", json_real(t->min_gain));
    json_object_set_new(j, "max_forget", json_real(t->max_forget));
    json_object_set_new(j, "holdout_before", num(r->holdout_before));
    json_object_set_new(j, "holdout_after", num(r->holdout_after));
    json_object_set_new(j, "anchor_before", num(r->anchor_before));
    json_object_set_new(j, "anchor_after", num(r->anchor_after));
    char *text = el_json_dump_sorted(j);
    json_decref(j);
    return text;
}

/* Activates the judged candidate and runs the probe health check. A refused
 * activation (another version on probation, a pin) is reported in R, not
 * returned: the candidate stays judged and can be activated later. */
static int activate(el_store *s, run *x, el_device_train_result *r, double probe_ref,
                    double probe_new, el_error *err)
{
    el_error aerr;
    el_error_clear(&aerr);
    int rc = el_store_activate(s, r->version_id, &aerr);
    if (rc == EL_EPOLICY) {
        snprintf(r->activate_error, sizeof r->activate_error, "%s", aerr.msg);
        return 0;
    }
    if (rc) {
        *err = aerr;
        return rc;
    }
    r->activated = 1;
    if (x->probe_ds && isfinite(probe_ref) && isfinite(probe_new)) {
        const char *outcome = NULL;
        r->health_checked = 1;
        r->probe_loss = probe_new;
        r->probe_ref_loss = probe_ref;
        if ((rc = el_store_health_report(s, probe_new, probe_ref, &outcome, err)))
            return rc;
    }
    return 0;
}

int el_device_train(el_store *s, const el_device_train_opts *o,
                    el_device_train_result *r, el_error *err)
{
    static const el_device_train_opts none = {.seed = -1};
    if (!o)
        o = &none;
    memset(r, 0, sizeof *r);
    r->anchor_before = r->anchor_after = r->probe_loss = r->probe_ref_loss = NAN;
    const el_store_config *cfg = el_store_get_config(s);
    uint64_t seed = (uint64_t)(o->seed >= 0 ? o->seed : cfg->train.seed);
    run x;
    memset(&x, 0, sizeof x);
    char *recipe = NULL, *metrics = NULL, *plast = NULL, *figures = NULL;
    int seq_len = 0, rc;
    char name[64];
    snprintf(name, sizeof name, "train-work.%ld", (long)getpid());
    if (el_fs_join(x.work, sizeof x.work, el_store_dir(s), name) ||
        el_fs_join(x.out_dir, sizeof x.out_dir, x.work, "adapter")) {
        x.work[0] = x.out_dir[0] = 0;
        return el_error_set(err, EL_EUSAGE, "%s: state path too long", el_store_dir(s));
    }
    int encoding = el_delta_encoding_parse(cfg->sync.encoding);
    if (encoding < 0)
        return el_error_set(err, EL_EINPUT, "[sync] encoding = %s: use lora-delta-exact or "
                            "lora-delta-q8", cfg->sync.encoding);
    if ((rc = el_fs_mkdirs(x.work, 0700, err)) ||
        (rc = load_lists(s, &x, err)) ||
        (rc = draw_replay(&x, cfg->replay.fraction, seed, err)) ||
        (rc = load_model(s, o, &x, seed, r, &seq_len, err)))
        goto done;

    /* The training set: every new sample, then the replay draw. */
    size_t n_train = x.n_news + x.n_replay_used;
    const char **bodies = el_calloc(n_train, sizeof *bodies);
    x.sample_ids = el_calloc(n_train, sizeof *x.sample_ids);
    if (!bodies || !x.sample_ids) {
        el_free(bodies);
        rc = el_error_set(err, EL_ENOMEM, "out of memory listing samples");
        goto done;
    }
    for (size_t i = 0; i < x.n_news; i++) {
        bodies[i] = x.news[i].body;
        x.sample_ids[i] = x.news[i].id;
    }
    for (size_t i = 0; i < x.n_replay_used; i++) {
        bodies[x.n_news + i] = x.replay[x.replay_idx[i]].body;
        x.sample_ids[x.n_news + i] = x.replay[x.replay_idx[i]].id;
    }
    rc = bodies_dataset(bodies, n_train, "train samples", seq_len, &x.train_ds, err);
    el_free(bodies);
    if (rc || (rc = list_dataset(x.holdout, x.n_holdout, "holdout samples", seq_len,
                                 &x.holdout_ds, err)) ||
        (rc = list_dataset(x.anchor, x.n_anchor, "anchor-check samples", seq_len,
                           &x.anchor_ds, err)) ||
        (rc = list_dataset(x.probe, x.n_probe, "probe samples", seq_len, &x.probe_ds, err)))
        goto done;
    r->n_new = (int64_t)x.n_news;
    r->n_replay = (int64_t)x.n_replay_used;
    el_train_replay_exclude(x.base_replay_ds, x.holdout_ds);
    el_train_replay_exclude(x.base_replay_ds, x.anchor_ds);
    el_train_replay_exclude(x.base_replay_ds, x.probe_ds);

    size_t np = x.lora->nparams;
    x.p0 = el_malloc(np * sizeof *x.p0);
    x.grads = el_malloc(np * sizeof *x.grads);
    if (!x.p0 || !x.grads) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for %zu adapter parameters", np);
        goto done;
    }
    memcpy(x.p0, x.lora->params, np * sizeof *x.p0);

    double probe_ref = NAN, probe_new = NAN;
    if ((rc = eval_loss(x.model, x.holdout_ds, NULL, 0, &r->holdout_before, NULL, err)) ||
        (rc = eval_loss(x.model, x.anchor_ds, NULL, 0, &r->anchor_before, NULL, err)) ||
        (rc = eval_loss(x.model, x.probe_ds, NULL, 0, &probe_ref, NULL, err)) ||
        (rc = eval_loss(x.model, x.train_ds, x.grads, np, &(double){0},
                        &r->grad_norm_before, err)))
        goto done;

    el_train_options to;
    el_train_options_default(&to);
    to.steps = (int)(o->steps > 0 ? o->steps : cfg->train.steps);
    to.batch = (int)cfg->train.batch;
    to.lr = (float)cfg->train.lr;
    to.warmup_steps = to.steps >= 20 ? to.steps / 10 : 0;
    to.seed = seed;
    to.replay = x.base_replay_ds;
    to.replay_fraction = (float)cfg->replay.base_fraction;
    if (o->progress) {
        to.progress = trainer_progress;
        to.progress_ctx = (void *)o;
    }
    el_train_result tr;
    if ((rc = el_train_run(x.model, x.lora, x.train_ds, &to, &tr, err)))
        goto done;
    r->steps = tr.steps;
    r->train_loss_first = tr.first_loss;
    r->train_loss_last = tr.last_loss;
    /* A lossy rebuild is not always a fixed point of another encode/decode
     * round (q8 rows re-quantize to other scales now and then); a few rounds
     * almost always reach one, so the export's own round reproduces these
     * weights. delta_export.c checks, and falls back to the exact encoding
     * when a row still moves. */
    for (int round = 0, changed = 1; changed && round < REQUANTIZE_ROUNDS; round++)
        if ((rc = requantize(x.model, x.lora, r->parent_id ? x.p0 : NULL, encoding,
                             &changed, err)))
            goto done;
    if ((rc = eval_loss(x.model, x.holdout_ds, NULL, 0, &r->holdout_after, NULL, err)) ||
        (rc = eval_loss(x.model, x.anchor_ds, NULL, 0, &r->anchor_after, NULL, err)) ||
        (rc = eval_loss(x.model, x.probe_ds, NULL, 0, &probe_new, NULL, err)) ||
        (rc = eval_loss(x.model, x.train_ds, x.grads, np, &(double){0},
                        &r->grad_norm_after, err)))
        goto done;
    plasticity(x.lora, x.p0, x.lora->params, &r->update_norm, &r->effective_rank);

    /* Record the candidate: adapter durable first (invariant 3). */
    if ((rc = el_nn_lora_save(x.lora, NULL, x.out_dir, err)))
        goto done;
    recipe = recipe_json(cfg, x.lora, &to, x.n_news, x.n_replay_used, seq_len, encoding);
    metrics = metrics_json(r);
    plast = plasticity_json(r);
    if (!recipe || !metrics || !plast) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory writing the version's JSON");
        goto done;
    }
    el_store_candidate c = {
        .parent_id = r->parent_id, .origin = "local", .recipe_json = recipe,
        .seed = (int64_t)seed, .backend = r->backend, .metrics_json = metrics,
        .plasticity_json = plast, .sample_ids = x.sample_ids, .n_samples = n_train,
    };
    if ((rc = el_store_candidate_create(s, &c, x.out_dir, &r->version_id, err)))
        goto done;

    /* The gate (invariant 4: verdict recorded before activation). */
    el_gate_thresholds t = {.min_gain = cfg->gate.min_gain, .max_forget = cfg->gate.max_forget};
    double extra[] = {r->train_loss_first, r->train_loss_last, r->update_norm};
    el_gate_input gi = {.holdout_ref = r->holdout_before, .holdout_new = r->holdout_after,
                        .anchor_ref = r->anchor_before, .anchor_new = r->anchor_after,
                        .extra = extra, .n_extra = sizeof extra / sizeof extra[0]};
    el_gate_result g;
    el_gate_decide(&t, &gi, &g);
    r->gate_pass = g.pass;
    r->gain = g.gain;
    r->forget = g.forget;
    snprintf(r->gate_reason, sizeof r->gate_reason, "%s", g.reason);
    if (!(figures = figures_json(&t, &g, r))) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory writing the gate figures");
        goto done;
    }
    if ((rc = el_store_candidate_judge(s, r->version_id, g.pass, g.reason, NULL, figures,
                                       err)))
        goto done;
    if (g.pass && !o->no_activate &&
        (rc = activate(s, &x, r, probe_ref, probe_new, err)))
        goto done;

    el_store_version v;
    if (!el_store_version_get(s, r->version_id, &v, NULL)) {
        snprintf(r->outcome, sizeof r->outcome, "%s", v.state);
        el_store_version_finish(&v);
    }
    if (!g.pass)
        rc = el_error_set_tag(err, EL_EPOLICY, "gate_failed",
                              "version %lld refused by the gate (%s): holdout %.4f -> "
                              "%.4f (gain %.4f, need %.4f), anchor-check %.4f -> %.4f "
                              "(forget %.4f, allowed %.4f)",
                              (long long)r->version_id, g.reason, r->holdout_before,
                              r->holdout_after, g.gain, t.min_gain, r->anchor_before,
                              r->anchor_after, g.forget, t.max_forget);
done:
    free(recipe);
    free(metrics);
    free(plast);
    free(figures);
    run_finish(&x);
    return rc;
}
