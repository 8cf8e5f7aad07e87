/* JSONL -> token sequences.
 *
 * A sequence is BOS + bytes + EOS (prompt and completion joined with no
 * separator), cut to seq_len so that a cut sequence has no EOS. Position i
 * predicts token i+1. Scored: every position for "text"; for
 * prompt/completion the positions whose target is a completion byte or the
 * EOS, i.e. i >= 1 + len(prompt) - 1. Each line is bounded before it is
 * parsed; every rejection names PATH:LINE.
 */
#include "nn/dataset.h"

#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "nn/tokenizer.h"

void el_nn_dataset_destroy(el_dataset *ds)
{
    if (!ds)
        return;
    el_free(ds->examples);
    el_free(ds->tokens);
    el_free(ds);
}

int el_nn_bad_lines_parse(const char *s, el_bad_lines *out, el_error *err)
{
    if (!strcmp(s, "skip"))
        *out = EL_BAD_LINES_SKIP;
    else if (!strcmp(s, "fail"))
        *out = EL_BAD_LINES_FAIL;
    else
        return el_error_set(err, EL_EUSAGE, "--bad-lines must be skip or fail, not \"%s\"", s);
    return 0;
}

static int grow(el_dataset *ds, size_t *cap_ex, size_t *cap_tok, size_t ntok_needed)
{
    if (ds->count == *cap_ex) {
        size_t cap = *cap_ex ? *cap_ex * 2 : 256;
        el_example *p = el_realloc(ds->examples, cap * sizeof *p);
        if (!p)
            return -1;
        ds->examples = p;
        *cap_ex = cap;
    }
    if (ntok_needed > *cap_tok) {
        size_t cap = *cap_tok ? *cap_tok : 4096;
        while (cap < ntok_needed)
            cap *= 2;
        int32_t *p = el_realloc(ds->tokens, cap * sizeof *p);
        if (!p)
            return -1;
        ds->tokens = p;
        *cap_tok = cap;
    }
    return 0;
}

/* Tokenizes one parsed line into the pool. Returns 0, or EL_EINPUT with ERR
 * explaining why the object is not a data line. */
static int add_line(el_dataset *ds, const json_t *o, size_t *next_tok, const char *where,
                    el_error *err)
{
    const char *text = NULL, *prompt = NULL, *completion = NULL;
    if (!json_is_object(o))
        return el_error_set(err, EL_EINPUT, "%s: not a JSON object", where);
    json_t *t = json_object_get(o, "text");
    json_t *p = json_object_get(o, "prompt");
    json_t *c = json_object_get(o, "completion");
    if (t && (p || c))
        return el_error_set(err, EL_EINPUT, "%s: has both \"text\" and prompt/completion", where);
    if (!t && !(p && c))
        return el_error_set(err, EL_EINPUT,
                            "%s: needs \"text\" or both \"prompt\" and \"completion\"", where);
    if ((t && !json_is_string(t)) || (p && !json_is_string(p)) || (c && !json_is_string(c)))
        return el_error_set(err, EL_EINPUT, "%s: text, prompt and completion must be strings",
                            where);
    size_t tlen = 0, plen = 0, clen = 0;
    if (t) {
        text = json_string_value(t);
        tlen = json_string_length(t);
    } else {
        prompt = json_string_value(p);
        plen = json_string_length(p);
        completion = json_string_value(c);
        clen = json_string_length(c);
    }
    size_t S = (size_t)ds->seq_len;
    int32_t *out = ds->tokens + *next_tok;
    size_t n = 0;
    out[n++] = EL_TOK_BOS;
    int first_scored = 0;
    if (text) {
        n += el_nn_tokenize_bytes(text, tlen, out + n, S - n);
    } else {
        n += el_nn_tokenize_bytes(prompt, plen, out + n, S - n);
        n += el_nn_tokenize_bytes(completion, clen, out + n, S - n);
        first_scored = (int)(plen < S ? plen : S);
    }
    if (n < S)
        out[n++] = EL_TOK_EOS;
    el_example *ex = &ds->examples[ds->count++];
    ex->off = *next_tok;
    ex->len = (int)n;
    ex->first_scored = first_scored;
    if ((int)n - 1 > first_scored)
        ds->scored += (uint64_t)((int)n - 1 - first_scored);
    *next_tok += n;
    return 0;
}

int el_nn_dataset_parse(const char *buf, size_t len, const char *what, int seq_len,
                        el_bad_lines bad, el_dataset **out, el_error *err)
{
    *out = NULL;
    if (seq_len < 2)
        return el_error_set(err, EL_EUSAGE, "sequence length %d is too short", seq_len);
    el_dataset *ds = el_calloc(1, sizeof *ds);
    if (!ds)
        return el_error_set(err, EL_ENOMEM, "%s: out of memory", what);
    ds->seq_len = seq_len;
    size_t cap_ex = 0, cap_tok = 0, next_tok = 0;
    int rc = 0;
    size_t lineno = 0;
    for (size_t at = 0; at < len;) {
        const char *line = buf + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t ll = nl ? (size_t)(nl - line) : len - at;
        at += ll + (nl ? 1 : 0);
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%zu", what, lineno);
        size_t k = 0;
        while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == ll)
            continue;
        el_error lerr;
        json_t *o = NULL;
        int lrc;
        if (ll > EL_DATASET_LINE_MAX) {
            lrc = el_error_set(&lerr, EL_EINPUT, "%s: line of %zu bytes is over the limit of %zu",
                               where, ll, EL_DATASET_LINE_MAX);
        } else if (grow(ds, &cap_ex, &cap_tok, next_tok + (size_t)seq_len)) {
            rc = el_error_set(err, EL_ENOMEM, "%s: out of memory", where);
            break;
        } else {
            o = el_json_parse(line, ll, EL_DATASET_LINE_MAX, where, &lerr);
            lrc = o ? add_line(ds, o, &next_tok, where, &lerr) : EL_EINPUT;
            json_decref(o);
        }
        if (lrc) {
            if (bad == EL_BAD_LINES_FAIL) {
                rc = el_error_set(err, EL_EINPUT, "%s (use --bad-lines skip to skip such lines)",
                                  lerr.msg);
                break;
            }
            el_log_warn("skipping malformed line: %s", lerr.msg);
            ds->skipped++;
        }
    }
    if (!rc && ds->count == 0)
        rc = el_error_set(err, EL_EINPUT, "%s: no usable data lines", what);
    if (rc) {
        el_nn_dataset_destroy(ds);
        return rc;
    }
    *out = ds;
    return 0;
}

int el_nn_dataset_load(const char *path, int seq_len, el_bad_lines bad,
                       el_dataset **out, el_error *err)
{
    *out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, EL_DATASET_FILE_MAX, &buf, &len, err);
    if (rc)
        return rc;
    rc = el_nn_dataset_parse((const char *)buf, len, path, seq_len, bad, out, err);
    el_free(buf);
    return rc;
}

int el_nn_dataset_fill(const el_dataset *ds, size_t i, int32_t *ids, int32_t *targets)
{
    return el_nn_dataset_fill_to(ds, i, ds->seq_len, ids, targets);
}

int el_nn_dataset_fill_to(const el_dataset *ds, size_t i, int S, int32_t *ids, int32_t *targets)
{
    const el_example *ex = &ds->examples[i];
    const int32_t *tok = ds->tokens + ex->off;
    int scored = 0;
    for (int s = 0; s < S; s++) {
        ids[s] = s < ex->len ? tok[s] : EL_TOK_PAD;
        if (s >= ex->first_scored && s + 1 < ex->len) {
            targets[s] = tok[s + 1];
            scored++;
        } else {
            targets[s] = -1;
        }
    }
    return scored;
}

void el_nn_dataset_fill_pad(int seq_len, int32_t *ids, int32_t *targets)
{
    for (int s = 0; s < seq_len; s++) {
        ids[s] = EL_TOK_PAD;
        targets[s] = -1;
    }
}
