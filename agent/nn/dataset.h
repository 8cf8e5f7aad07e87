/* Training and evaluation data: JSONL files of {"text"} or
 * {"prompt","completion"} lines, tokenized into fixed-length sequences
 * (DESIGN.md "Model and formats"). */
#ifndef EL_NN_DATASET_H
#define EL_NN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* What to do with a malformed line: refuse the file, or warn and skip. */
typedef enum el_bad_lines { EL_BAD_LINES_FAIL = 0, EL_BAD_LINES_SKIP = 1 } el_bad_lines;

/* Longest accepted line, and largest accepted file. */
#define EL_DATASET_LINE_MAX ((size_t)1 << 20)
#define EL_DATASET_FILE_MAX ((size_t)1 << 30)

typedef struct el_example {
    size_t off;        /* first token in el_dataset.tokens */
    int len;           /* tokens, <= seq_len (BOS and EOS included) */
    int first_scored;  /* positions first_scored .. len-2 predict a scored target */
} el_example;

typedef struct el_dataset {
    int seq_len;
    size_t count;
    el_example *examples;
    int32_t *tokens;
    size_t skipped;        /* malformed lines skipped (EL_BAD_LINES_SKIP) */
    uint64_t scored;       /* scored target tokens over the whole file */
} el_dataset;

/* Reads PATH (bytes-v1 tokens), cutting each sequence to SEQ_LEN. Blank lines
 * are ignored; a malformed line (bad JSON, wrong fields, over
 * EL_DATASET_LINE_MAX) is reported as "PATH:LINE: why" and either refuses the
 * file (EL_EINPUT) or is skipped with a warning on stderr. A file with no
 * usable line is EL_EINPUT. Returns 0 and *OUT (caller destroys) or an error
 * with *OUT NULL. */
int el_nn_dataset_load(const char *path, int seq_len, el_bad_lines bad,
                       el_dataset **out, el_error *err);

/* Parses LEN bytes already in memory; WHAT names them in messages. */
int el_nn_dataset_parse(const char *buf, size_t len, const char *what, int seq_len,
                        el_bad_lines bad, el_dataset **out, el_error *err);

void el_nn_dataset_destroy(el_dataset *ds);   /* accepts NULL */

/* Writes example I padded to seq_len: IDS (PAD after the end) and TARGETS
 * (the next token where scored, -1 elsewhere). Returns the scored count. */
int el_nn_dataset_fill(const el_dataset *ds, size_t i, int32_t *ids, int32_t *targets);
/* As el_nn_dataset_fill with rows of S tokens (S >= the example's length;
 * used for length buckets shorter than seq_len). */
int el_nn_dataset_fill_to(const el_dataset *ds, size_t i, int S, int32_t *ids, int32_t *targets);

/* Fills one padding row: all PAD, no target. */
void el_nn_dataset_fill_pad(int seq_len, int32_t *ids, int32_t *targets);

/* Parses "skip" or "fail". Returns 0 or EL_EUSAGE. */
int el_nn_bad_lines_parse(const char *s, el_bad_lines *out, el_error *err);

#endif
