/* Evaluation: the DESIGN.md loss of a model (with its attached adapter) over
 * a dataset, and optionally the exact gradient of that loss with respect to
 * every LoRA parameter (for the PyTorch reference check); and the length
 * buckets that evaluation and training share. */
#ifndef EL_TRAIN_EVAL_H
#define EL_TRAIN_EVAL_H

#include <stdint.h>

#include "base/error.h"
#include "nn/dataset.h"
#include "nn/llama.h"

#define EL_TRAIN_MAX_BUCKETS 3

typedef struct el_eval_result {
    double loss;        /* total NLL (nats) / tokens; NAN when tokens == 0 */
    uint64_t tokens;    /* scored target tokens */
    double seconds;
} el_eval_result;

/* Sequence lengths of up to WANT (1..EL_TRAIN_MAX_BUCKETS) buckets for
 * SEQ_LEN: seq_len/4, seq_len/2, seq_len (the largest WANT of them that are
 * at least 8), ascending, into LENS. Returns the count (>= 1). */
int el_train_buckets(int seq_len, int want, int *lens);

/* Index of the smallest bucket of LENS[0..N) holding LEN tokens. */
int el_train_bucket_of(const int *lens, int n, int len);

/* Sorts IDX[0..N) (example indices of DS) by (length, index), so the order
 * is the same on every libc. Not reentrant (qsort has no context). */
void el_train_sort_by_length(const el_dataset *ds, size_t *idx, size_t n);

/* Evaluates M on every example of DS in fixed-shape batches of BATCH rows:
 * examples sorted by length, each batch padded (unscored rows and PAD) to
 * the smallest of BUCKETS length buckets that holds it, so a batch replays
 * one recorded graph per bucket. When GRADS is not NULL (M needs an adapter
 * attached with gradients), also writes d loss / d params (nparams floats,
 * same layout as the adapter) there. Returns 0 and *OUT, or an error (OUT
 * unspecified). */
int el_train_eval(el_llama *m, const el_dataset *ds, int batch, int buckets, float *grads,
                  el_eval_result *out, el_error *err);

#endif
