/* Evaluation loop and length buckets.
 *
 * Batches have one fixed shape per bucket so every batch replays one
 * recorded graph; examples are taken in length order so most batches fit a
 * short bucket (the loss is a sum, so order does not change it). The
 * per-batch NLL sum is reduced on the device and read as one float, then
 * accumulated in double on the host, so the file total does not lose
 * precision over thousands of batches. */
#include "train/eval.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "base/alloc.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int el_train_buckets(int seq_len, int want, int *lens)
{
    if (want < 1)
        want = 1;
    if (want > EL_TRAIN_MAX_BUCKETS)
        want = EL_TRAIN_MAX_BUCKETS;
    int n = 0;
    for (int i = want - 1; i >= 0; i--) {
        int len = seq_len >> i;
        if (len >= 8 && (n == 0 || len > lens[n - 1]))
            lens[n++] = len;
    }
    if (n == 0 || lens[n - 1] != seq_len)
        lens[n++] = seq_len;
    return n;
}

int el_train_bucket_of(const int *lens, int n, int len)
{
    for (int i = 0; i < n; i++)
        if (len <= lens[i])
            return i;
    return n - 1;
}

static const el_dataset *sort_ds;

static int by_length(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int lx = sort_ds->examples[x].len, ly = sort_ds->examples[y].len;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return x < y ? -1 : (x > y);
}

void el_train_sort_by_length(const el_dataset *ds, size_t *idx, size_t n)
{
    sort_ds = ds;
    qsort(idx, n, sizeof *idx, by_length);
    sort_ds = NULL;
}

typedef struct eval_bucket {
    int S;
    el_llama_work *w;
    el_tensor *ids, *targets, *loss;
} eval_bucket;

int el_train_eval(el_llama *m, const el_dataset *ds, int batch, int buckets, float *grads,
                  el_eval_result *out, el_error *err)
{
    double t0 = now_s();
    el_backend *be = el_nn_llama_backend(m);
    eval_bucket bk[EL_TRAIN_MAX_BUCKETS] = {{0}};
    int lens[EL_TRAIN_MAX_BUCKETS + 1];
    int nb = el_train_buckets(ds->seq_len, buckets, lens), rc = 0;
    el_tensor *sum = NULL;
    int32_t *h_ids = NULL, *h_targets = NULL;
    size_t *order = NULL;
    size_t T = (size_t)batch * (size_t)ds->seq_len;
    int backward = grads != NULL;
    el_tensor *g = el_nn_llama_lora_grads(m);
    if (backward && !g)
        return el_error_set(err, EL_EINTERNAL, "gradients requested without a gradient tensor");
    h_ids = el_malloc(T * sizeof *h_ids);
    h_targets = el_malloc(T * sizeof *h_targets);
    order = el_malloc(ds->count * sizeof *order);
    if (!h_ids || !h_targets || !order) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ds->count; i++)
        order[i] = i;
    el_train_sort_by_length(ds, order, ds->count);
    if (!(sum = el_nn_tensor_create(be, EL_F32, 1, err))) {
        rc = err ? err->code : EL_ENOMEM;
        goto done;
    }
    if (backward && (rc = el_nn_fill(be, el_nn_whole(g), 0.0f, err)))
        goto done;
    double total = 0;
    uint64_t tokens = 0;
    for (size_t first = 0; first < ds->count; first += (size_t)batch) {
        size_t last = first + (size_t)batch < ds->count ? first + (size_t)batch : ds->count;
        eval_bucket *b = &bk[el_train_bucket_of(lens, nb, ds->examples[order[last - 1]].len)];
        b->S = lens[b - bk];
        size_t bt = (size_t)batch * (size_t)b->S;
        if (!b->w) {
            if ((rc = el_nn_llama_work_create(m, batch, b->S, backward, &b->w, err)))
                goto done;
            if (!(b->ids = el_nn_tensor_create(be, EL_I32, bt, err)) ||
                !(b->targets = el_nn_tensor_create(be, EL_I32, bt, err)) ||
                !(b->loss = el_nn_tensor_create(be, EL_F32, bt, err))) {
                rc = err ? err->code : EL_ENOMEM;
                goto done;
            }
        }
        for (int r = 0; r < batch; r++) {
            size_t i = first + (size_t)r, row = (size_t)r * (size_t)b->S;
            if (i < last)
                tokens += (uint64_t)el_nn_dataset_fill_to(ds, order[i], b->S, h_ids + row,
                                                          h_targets + row);
            else
                el_nn_dataset_fill_pad(b->S, h_ids + row, h_targets + row);
        }
        float batch_sum;
        if ((rc = el_nn_write(be, el_nn_whole(b->ids), h_ids, err)) ||
            (rc = el_nn_write(be, el_nn_whole(b->targets), h_targets, err)) ||
            (rc = el_nn_graph_begin(be, el_nn_llama_work_key(b->w, 1), err)) ||
            (rc = el_nn_llama_forward(b->w, el_nn_whole(b->ids), el_nn_whole(b->targets),
                                      el_nn_whole(b->loss), backward, 1.0f, err)) ||
            (rc = el_nn_reduce(be, EL_REDUCE_SUM, el_nn_whole(b->loss), el_nn_whole(sum), 0,
                               err)) ||
            (rc = el_nn_graph_end(be, err)) ||
            (rc = el_nn_read(be, el_nn_whole(sum), &batch_sum, err)))
            goto done;
        total += batch_sum;
    }
    out->tokens = tokens;
    out->loss = tokens ? total / (double)tokens : NAN;
    if (backward) {
        size_t n = el_nn_tensor_len(g);
        if ((rc = el_nn_read(be, el_nn_whole(g), grads, err)))
            goto done;
        for (size_t i = 0; i < n; i++)
            grads[i] = tokens ? (float)((double)grads[i] / (double)tokens) : 0.0f;
    }
    out->seconds = now_s() - t0;
done:
    for (int i = 0; i < EL_TRAIN_MAX_BUCKETS; i++) {
        el_nn_tensor_destroy(be, bk[i].ids);
        el_nn_tensor_destroy(be, bk[i].targets);
        el_nn_tensor_destroy(be, bk[i].loss);
        el_nn_llama_work_destroy(bk[i].w);
    }
    el_nn_tensor_destroy(be, sum);
    el_free(h_ids);
    el_free(h_targets);
    el_free(order);
    return rc;
}
