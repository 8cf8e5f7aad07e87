/* Model-level tests of the Llama + LoRA engine on the cpu backend:
 *  - data: bytes-v1 sequences, scored targets, cutting, bad lines;
 *  - config.json and PEFT adapter files (keys, shapes, round trip, init);
 *  - known answers: a uniform-logit model scores ln(V); a hand-set 1-layer
 *    model whose loss is log(e^a + 3) - a in closed form; GQA == MHA with the
 *    kv heads duplicated;
 *  - the whole forward against a double-precision reference written from the
 *    HF definitions (tiny_model.h), base and with a random non-zero adapter;
 *  - LoRA gradients (every A and B, non-zero) against central finite
 *    differences of that reference, to 1e-3 relative per tensor. */
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
#include "nn/tokenizer.h"
#include "tiny_model.h"
#include "train/eval.h"

static el_backend *be;

static void make_dir(char *dir)
{
    strcpy(dir, "/tmp/el_model_XXXXXX");
    if (!mkdtemp(dir))
        abort();
}

static void remove_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void test_dataset(void)
{
    el_dataset *ds;
    el_error err = {0};
    const char *jsonl = "{\"text\": \"abc\"}\n"
                        "\n"
                        "{\"prompt\": \"xy\", \"completion\": \"z\"}\n"
                        "{\"text\": \"0123456789\"}\n";
    CHECK_OK(el_nn_dataset_parse(jsonl, strlen(jsonl), "d.jsonl", 6, EL_BAD_LINES_FAIL, &ds, &err),
             &err);
    if (!ds)
        return;
    CHECK(ds->count == 3);
    int32_t ids[6], tg[6];
    /* BOS a b c EOS PAD: targets a b c EOS, then none */
    CHECK(el_nn_dataset_fill(ds, 0, ids, tg) == 4);
    CHECK(ids[0] == EL_TOK_BOS && ids[1] == 'a' && ids[4] == EL_TOK_EOS && ids[5] == EL_TOK_PAD);
    CHECK(tg[0] == 'a' && tg[3] == EL_TOK_EOS && tg[4] == -1 && tg[5] == -1);
    /* BOS x y z EOS: scored = z and EOS (positions 2, 3) */
    CHECK(el_nn_dataset_fill(ds, 1, ids, tg) == 2);
    CHECK(tg[0] == -1 && tg[1] == -1 && tg[2] == 'z' && tg[3] == EL_TOK_EOS && tg[4] == -1);
    /* cut to 6: BOS 0 1 2 3 4, no EOS; 5 targets */
    CHECK(el_nn_dataset_fill(ds, 2, ids, tg) == 5);
    CHECK(ids[5] == '4' && tg[4] == '4' && tg[5] == -1);
    CHECK(ds->scored == 11);
    el_nn_dataset_destroy(ds);

    const char *bad = "{\"text\": \"ok\"}\n{\"text\": 5}\nnot json\n{\"prompt\": \"p\"}\n";
    CHECK(el_nn_dataset_parse(bad, strlen(bad), "b.jsonl", 16, EL_BAD_LINES_FAIL, &ds, &err) ==
          EL_EINPUT);
    CHECK_MSG(strstr(err.msg, "b.jsonl:2") != NULL, "%s", err.msg);
    CHECK_OK(el_nn_dataset_parse(bad, strlen(bad), "b.jsonl", 16, EL_BAD_LINES_SKIP, &ds, &err),
             &err);
    if (ds) {
        CHECK(ds->count == 1 && ds->skipped == 3);
        el_nn_dataset_destroy(ds);
    }
    CHECK(el_nn_dataset_parse("\n\n", 2, "e.jsonl", 16, EL_BAD_LINES_SKIP, &ds, &err) ==
          EL_EINPUT);
    /* a line over the limit is refused before it is parsed */
    size_t big = EL_DATASET_LINE_MAX + 20;
    char *line = malloc(big + 1);
    memset(line, 'a', big);
    memcpy(line, "{\"text\": \"", 10);
    memcpy(line + big - 2, "\"}", 2);
    line[big] = 0;
    CHECK(el_nn_dataset_parse(line, big, "l.jsonl", 16, EL_BAD_LINES_FAIL, &ds, &err) ==
          EL_EINPUT);
    CHECK(strstr(err.msg, "l.jsonl:1") && strstr(err.msg, "limit"));
    free(line);
    el_bad_lines bl;
    CHECK(el_nn_bad_lines_parse("skip", &bl, &err) == 0 && bl == EL_BAD_LINES_SKIP);
    CHECK(el_nn_bad_lines_parse("maybe", &bl, &err) == EL_EUSAGE);
    char text[8];
    int32_t toks[4] = {'h', EL_TOK_EOS, 'i', 300};
    CHECK(el_nn_detokenize_bytes(toks, 4, text, sizeof text) == 2 && !strcmp(text, "hi"));
}

static void test_config(void)
{
    el_llama_config c;
    el_error err = {0};
    const char *good = "{\"vocab_size\": 300, \"hidden_size\": 64, \"intermediate_size\": 96,"
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                       "\"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000,"
                       "\"max_position_embeddings\": 128, \"tie_word_embeddings\": true,"
                       "\"edgeloop_tokenizer\": \"bytes-v1\", \"torch_dtype\": \"float32\"}";
    CHECK_OK(el_nn_config_parse(good, strlen(good), "c", &c, &err), &err);
    CHECK(c.head_dim == 16 && c.num_key_value_heads == 2 && c.tie_word_embeddings == 1);
    CHECK(c.rope_theta == 500000.0f && c.tokenizer == EL_TOKENIZER_BYTES_V1);
    const char *bad_heads = "{\"vocab_size\": 300, \"hidden_size\": 64, \"intermediate_size\": 96,"
                            "\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                            "\"num_key_value_heads\": 3}";
    CHECK(el_nn_config_parse(bad_heads, strlen(bad_heads), "c", &c, &err) == EL_EINPUT);
    const char *missing = "{\"vocab_size\": 300}";
    CHECK(el_nn_config_parse(missing, strlen(missing), "c", &c, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "hidden_size") != NULL);
    const char *small_vocab = "{\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 96,"
                              "\"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                              "\"edgeloop_tokenizer\": \"bytes-v1\"}";
    CHECK(el_nn_config_parse(small_vocab, strlen(small_vocab), "c", &c, &err) == EL_EINPUT);
}

static void test_lora_files(void)
{
    tiny_model tm;
    tiny_init(&tm, 40, 16, 24, 2, 4, 2, 0, 7);
    el_lora_config lc = {.rank = 4, .alpha = 8};
    el_error err = {0};
    CHECK_OK(el_nn_lora_targets_parse("q_proj,v_proj,down_proj", &lc.targets, &err), &err);
    CHECK(el_nn_lora_targets_parse("q_proj,wo", &lc.targets, &err) == EL_EUSAGE);
    CHECK_OK(el_nn_lora_targets_parse("q_proj,v_proj,down_proj", &lc.targets, &err), &err);
    snprintf(lc.base_model, sizeof lc.base_model, "tiny");
    el_lora *l;
    CHECK_OK(el_nn_lora_create(&tm.cfg, &lc, &l, &err), &err);
    CHECK(l->nslots == 6);
    /* q: A [4,16] B [16,4]; v: A [4,16] B [8,4]; down: A [4,24] B [16,4] */
    CHECK(l->nparams == 2 * (64 + 64 + 64 + 32 + 96 + 64));
    char key[96];
    el_nn_lora_key(&l->slots[2], 0, key, sizeof key);
    CHECK_STR(key, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
    el_nn_lora_key(&l->slots[4], 1, key, sizeof key);
    CHECK_STR(key, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    el_nn_lora_init(l, 42);
    int a_in = 1, b_zero = 1;
    for (int s = 0; s < l->nslots; s++) {
        double bound = 1.0 / sqrt(l->slots[s].in);
        for (size_t i = 0; i < (size_t)4 * l->slots[s].in; i++)
            a_in &= fabs(l->params[l->slots[s].a_off + i]) <= bound &&
                    l->params[l->slots[s].a_off + i] != 0;
        for (size_t i = 0; i < (size_t)4 * l->slots[s].out; i++)
            b_zero &= l->params[l->slots[s].b_off + i] == 0;
    }
    CHECK(a_in && b_zero);
    CHECK_NEAR(el_nn_lora_scale(&lc), 2.0, 1e-7);
    lc.use_rslora = 1;
    CHECK_NEAR(el_nn_lora_scale(&lc), 4.0, 1e-7);
    char dir[64];
    make_dir(dir);
    for (size_t i = 0; i < l->nparams; i++)
        l->params[i] = (float)i * 0.001f;
    CHECK_OK(el_nn_lora_save(l, NULL, dir, &err), &err);
    el_lora *back;
    CHECK_OK(el_nn_lora_load(&tm.cfg, dir, &back, &err), &err);
    if (back) {
        CHECK(back->cfg.rank == 4 && back->cfg.alpha == 8 && back->cfg.targets == l->cfg.targets);
        CHECK(back->nparams == l->nparams &&
              !memcmp(back->params, l->params, l->nparams * sizeof(float)));
        CHECK_STR(back->cfg.base_model, "tiny");
        el_nn_lora_destroy(back);
    }
    /* an adapter for more layers than the model is refused */
    tiny_model small;
    tiny_init(&small, 40, 16, 24, 1, 4, 2, 0, 7);
    CHECK(el_nn_lora_load(&small.cfg, dir, &back, &err) == EL_EINPUT);
    CHECK_MSG(strstr(err.msg, "expects") != NULL, "%s", err.msg);
    tiny_free(&small);
    el_nn_lora_destroy(l);
    remove_dir(dir);
    tiny_free(&tm);
}

/* Loads the model dir TM is written to, on the cpu backend. */
static el_llama *load(const tiny_model *tm, const char *dir, const char *tok)
{
    el_error err = {0};
    el_llama *m = NULL;
    CHECK(tiny_write(tm, dir, tok) == 0);
    CHECK_OK(el_nn_llama_load(be, dir, &m, &err), &err);
    return m;
}

/* Mean loss of M on IDS/TARGETS [B*S] through the backend directly. */
static double direct_loss(el_llama *m, const int32_t *ids, const int32_t *tg, int B, int S)
{
    el_error err = {0};
    el_llama_work *w;
    double total = 0;
    size_t T = (size_t)B * S;
    CHECK_OK(el_nn_llama_work_create(m, B, S, 0, &w, &err), &err);
    el_tensor *ti = el_nn_tensor_create(be, EL_I32, T, &err);
    el_tensor *tt = el_nn_tensor_create(be, EL_I32, T, &err);
    el_tensor *tl = el_nn_tensor_create(be, EL_F32, T, &err);
    float *loss = malloc(T * sizeof *loss);
    CHECK_OK(el_nn_write(be, el_nn_whole(ti), ids, &err), &err);
    CHECK_OK(el_nn_write(be, el_nn_whole(tt), tg, &err), &err);
    CHECK_OK(el_nn_llama_forward(w, el_nn_whole(ti), el_nn_whole(tt), el_nn_whole(tl), 0, 1.0f,
                                 &err), &err);
    CHECK_OK(el_nn_read(be, el_nn_whole(tl), loss, &err), &err);
    int n = 0;
    for (size_t t = 0; t < T; t++)
        if (tg[t] >= 0) {
            total += loss[t];
            n++;
        }
    free(loss);
    el_nn_tensor_destroy(be, ti);
    el_nn_tensor_destroy(be, tt);
    el_nn_tensor_destroy(be, tl);
    el_nn_llama_work_destroy(w);
    return total / n;
}

static void test_known_answers(void)
{
    char dir[64];
    make_dir(dir);
    int32_t ids[8] = {0, 1, 2, 3, 3, 2, 1, 0}, tg[8] = {0, 2, 2, -1, 1, 2, 3, 0};

    /* lm_head = 0: every logit is 0, so every scored token costs ln(V). */
    tiny_model tm;
    tiny_init(&tm, 37, 16, 24, 2, 4, 2, 0, 3);
    memset(tm.lm_head, 0, 37 * 16 * sizeof(float));
    el_llama *m = load(&tm, dir, NULL);
    if (m) {
        CHECK_NEAR(direct_loss(m, ids, tg, 2, 4), log(37.0), 1e-6);
        el_nn_llama_destroy(m);
    }
    tiny_free(&tm);

    /* One layer with all projections zero (attention and MLP add nothing),
     * norms 1, E = 2I, lm_head = 3I: x = 2e_i, rmsnorm gives 2e_i/sqrt(1+eps),
     * logits = a e_i with a = 6/sqrt(1+eps), so NLL = log(e^a + 3) - [j == i] a. */
    tiny_init(&tm, 4, 4, 8, 1, 2, 1, 0, 5);
    for (int i = 0; i < TW_N; i++) {
        int rows, cols;
        tiny_sizes(&tm.cfg, i, &rows, &cols);
        for (int j = 0; j < rows * (cols ? cols : 1); j++)
            tm.w[0][i][j] = cols ? 0.0f : 1.0f;
    }
    for (int i = 0; i < 16; i++) {
        tm.embed[i] = (i % 5 == 0) ? 2.0f : 0.0f;
        tm.lm_head[i] = (i % 5 == 0) ? 3.0f : 0.0f;
        if (i < 4)
            tm.norm[i] = 1.0f;
    }
    m = load(&tm, dir, NULL);
    if (m) {
        double a = 6.0 / sqrt(1.0 + 1e-5), want = 0;
        int n = 0;
        for (int t = 0; t < 8; t++)
            if (tg[t] >= 0) {
                want += log(exp(a) + 3.0) - (tg[t] == ids[t] ? a : 0.0);
                n++;
            }
        CHECK_NEAR(direct_loss(m, ids, tg, 2, 4), want / n, 1e-5);
        el_nn_llama_destroy(m);
    }
    tiny_free(&tm);

    /* GQA: 4 query heads over 2 kv heads equals MHA whose kv head h is kv
     * head h/2 of the GQA model (query head h reads kv head h / (H/KVH)). */
    tiny_init(&tm, 37, 16, 24, 2, 4, 2, 1, 9);
    m = load(&tm, dir, NULL);
    double gqa = m ? direct_loss(m, ids, tg, 2, 4) : 0;
    el_nn_llama_destroy(m);
    tiny_model mha;
    tiny_init(&mha, 37, 16, 24, 2, 4, 4, 1, 9);
    memcpy(mha.embed, tm.embed, 37 * 16 * sizeof(float));
    memcpy(mha.norm, tm.norm, 16 * sizeof(float));
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < TW_N; i++) {
            int rows, cols;
            tiny_sizes(&mha.cfg, i, &rows, &cols);
            if (i == TW_K || i == TW_V) {
                for (int h = 0; h < 4; h++)   /* head_dim 4: rows of head h */
                    memcpy(mha.w[l][i] + h * 4 * 16, tm.w[l][i] + (h / 2) * 4 * 16,
                           4 * 16 * sizeof(float));
            } else {
                memcpy(mha.w[l][i], tm.w[l][i], (size_t)rows * (cols ? cols : 1) * sizeof(float));
            }
        }
    m = load(&mha, dir, NULL);
    if (m) {
        CHECK_NEAR(direct_loss(m, ids, tg, 2, 4), gqa, 1e-5);
        el_nn_llama_destroy(m);
    }
    tiny_free(&mha);
    tiny_free(&tm);
    remove_dir(dir);
}

/* Forward vs the double reference, and LoRA gradients vs finite
 * differences, on a 2-layer GQA model with every projection adapted. */
static void test_against_reference(int tied)
{
    char dir[64];
    make_dir(dir);
    tiny_model tm;
    tiny_init(&tm, 259, 16, 24, 2, 4, 2, tied, 11 + (uint64_t)tied);
    el_llama *m = load(&tm, dir, "bytes-v1");
    el_error err = {0};
    const char *jsonl = "{\"text\": \"pump P-7 ok\"}\n"
                        "{\"prompt\": \"seal temp=71C \", \"completion\": \"WARN\"}\n"
                        "{\"text\": \"\\u00e9t\\u00e9 x\"}\n";
    el_dataset *ds = NULL;
    CHECK_OK(el_nn_dataset_parse(jsonl, strlen(jsonl), "r.jsonl", 12, EL_BAD_LINES_FAIL, &ds,
                                 &err), &err);
    if (!m || !ds)
        goto done;
    int B = 2, S = 12, nb = 2;   /* 3 examples -> 2 batches, one pad row */
    int32_t *ids = calloc((size_t)nb * B * S, 4), *tg = calloc((size_t)nb * B * S, 4);
    for (int i = 0; i < nb * B; i++)
        if (i < (int)ds->count)
            el_nn_dataset_fill(ds, (size_t)i, ids + i * S, tg + i * S);
        else
            el_nn_dataset_fill_pad(S, ids + i * S, tg + i * S);

    el_eval_result r;
    CHECK_OK(el_train_eval(m, ds, B, 3, NULL, &r, &err), &err);
    double want = ref_loss(&tm, NULL, NULL, ids, tg, nb * B, S) / (double)ds->scored;
    CHECK(r.tokens == ds->scored);
    CHECK_NEAR(r.loss, want, 1e-5);

    el_lora_config lc = {.rank = 2, .alpha = 3, .targets = 0x7f};
    el_lora *l;
    CHECK_OK(el_nn_lora_create(&tm.cfg, &lc, &l, &err), &err);
    uint64_t rng = 99;
    for (size_t i = 0; i < l->nparams; i++)   /* random non-zero A AND B */
        l->params[i] = tiny_uniform(&rng, 0.3f);
    CHECK_OK(el_nn_llama_set_lora(m, l, 1, &err), &err);
    float *grads = calloc(l->nparams, sizeof *grads);
    CHECK_OK(el_train_eval(m, ds, B, 3, grads, &r, &err), &err);
    double *lp = malloc(l->nparams * sizeof *lp);
    for (size_t i = 0; i < l->nparams; i++)
        lp[i] = l->params[i];
    double base = ref_loss(&tm, l, lp, ids, tg, nb * B, S) / (double)ds->scored;
    CHECK_NEAR(r.loss, base, 1e-5);
    CHECK_MSG(fabs(base - want) > 1e-3, "the adapter should change the loss");
    /* finite differences, per A / B tensor: ||g - fd|| <= 1e-3 ||fd|| */
    double h = 1e-5;
    for (int s = 0; s < l->nslots; s++)
        for (int b = 0; b < 2; b++) {
            size_t off = b ? l->slots[s].b_off : l->slots[s].a_off;
            size_t n = (size_t)2 * (b ? l->slots[s].out : l->slots[s].in);
            double diff = 0, norm = 0;
            for (size_t i = off; i < off + n; i++) {
                double keep = lp[i];
                lp[i] = keep + h;
                double up = ref_loss(&tm, l, lp, ids, tg, nb * B, S);
                lp[i] = keep - h;
                double dn = ref_loss(&tm, l, lp, ids, tg, nb * B, S);
                lp[i] = keep;
                double fd = (up - dn) / (2 * h) / (double)ds->scored;
                diff += (grads[i] - fd) * (grads[i] - fd);
                norm += fd * fd;
            }
            CHECK_MSG(norm > 0 && sqrt(diff) <= 1e-3 * sqrt(norm),
                      "slot %d (layer %d %s) %s: |g - fd| = %g, |fd| = %g", s, l->slots[s].layer,
                      el_nn_lora_target_name(l->slots[s].target), b ? "B" : "A", sqrt(diff),
                      sqrt(norm));
        }
    free(lp);
    free(grads);
    free(ids);
    free(tg);
    el_nn_llama_set_lora(m, NULL, 0, &err);
    el_nn_lora_destroy(l);
done:
    el_nn_dataset_destroy(ds);
    el_nn_llama_destroy(m);
    tiny_free(&tm);
    remove_dir(dir);
}

/* Length buckets change only the padding: the loss and the gradients of
 * one bucket (everything padded to 64) and of three (16, 32, 64) agree. */
static void test_buckets(void)
{
    char dir[64];
    make_dir(dir);
    tiny_model tm;
    tiny_init(&tm, 259, 16, 24, 2, 4, 2, 0, 17);
    el_llama *m = load(&tm, dir, "bytes-v1");
    el_error err = {0};
    const char *jsonl = "{\"text\": \"a\"}\n{\"text\": \"bc\"}\n"
                        "{\"text\": \"a much longer line of about forty bytes\"}\n"
                        "{\"prompt\": \"short \", \"completion\": \"one\"}\n"
                        "{\"text\": \"twenty bytes or so..\"}\n{\"text\": \"x\"}\n";
    el_dataset *ds = NULL;
    CHECK_OK(el_nn_dataset_parse(jsonl, strlen(jsonl), "b.jsonl", 64, EL_BAD_LINES_FAIL, &ds,
                                 &err), &err);
    int lens[4];
    CHECK(el_train_buckets(64, 3, lens) == 3 && lens[0] == 16 && lens[1] == 32 && lens[2] == 64);
    CHECK(el_train_buckets(20, 3, lens) == 2 && lens[0] == 10 && lens[1] == 20);
    CHECK(el_train_buckets(64, 1, lens) == 1 && lens[0] == 64);
    CHECK(el_train_bucket_of(lens, 1, 5) == 0);
    el_lora_config lc = {.rank = 2, .alpha = 4, .targets = 0x55};
    el_lora *l = NULL;
    if (!m || !ds)
        goto done;
    CHECK_OK(el_nn_lora_create(&tm.cfg, &lc, &l, &err), &err);
    uint64_t rng = 5;
    for (size_t i = 0; i < l->nparams; i++)
        l->params[i] = tiny_uniform(&rng, 0.3f);
    CHECK_OK(el_nn_llama_set_lora(m, l, 1, &err), &err);
    float *g1 = calloc(l->nparams, sizeof *g1), *g3 = calloc(l->nparams, sizeof *g3);
    el_eval_result r1, r3;
    CHECK_OK(el_train_eval(m, ds, 2, 1, g1, &r1, &err), &err);
    CHECK_OK(el_train_eval(m, ds, 2, 3, g3, &r3, &err), &err);
    CHECK(r1.tokens == r3.tokens && r1.tokens == ds->scored);
    CHECK_NEAR(r3.loss, r1.loss, 1e-6);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < l->nparams; i++) {
        diff += (g1[i] - g3[i]) * (g1[i] - g3[i]);
        norm += g1[i] * g1[i];
    }
    CHECK_MSG(norm > 0 && sqrt(diff) <= 1e-5 * sqrt(norm), "|g1 - g3| = %g", sqrt(diff));
    free(g1);
    free(g3);
    el_nn_llama_set_lora(m, NULL, 0, &err);
done:
    el_nn_lora_destroy(l);
    el_nn_dataset_destroy(ds);
    el_nn_llama_destroy(m);
    tiny_free(&tm);
    remove_dir(dir);
}

/* A sharded checkpoint (model.safetensors.index.json + two shards) loads
 * to the same model as the single file. */
static void test_sharded(void)
{
    char dir[64], path[128], p1[128], p2[128];
    make_dir(dir);
    tiny_model tm;
    tiny_init(&tm, 37, 16, 24, 2, 4, 2, 0, 23);
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    el_llama *m = load(&tm, dir, NULL);
    double single = m ? direct_loss(m, ids, tg, 2, 4) : 0;
    el_nn_llama_destroy(m);
    el_error err = {0};
    el_safetensors *st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(el_safetensors_open(path, &st, &err), &err);
    if (!st)
        goto done;
    size_t n = el_safetensors_count(st);
    el_st_entry *e = calloc(n, sizeof *e);
    float **vals = calloc(n, sizeof *vals);
    FILE *idx;
    snprintf(p1, sizeof p1, "%s/model.safetensors.index.json", dir);
    idx = fopen(p1, "w");
    fprintf(idx, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < n; i++) {
        const el_st_tensor *t = el_safetensors_at(st, i);
        vals[i] = malloc(t->numel * sizeof(float));
        el_safetensors_to_f32(t, vals[i]);
        e[i].name = t->name;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = vals[i];
        fprintf(idx, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                t->name, i < n / 2 ? 1 : 2);
    }
    fprintf(idx, "}}\n");
    fclose(idx);
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    CHECK_OK(el_safetensors_write(p1, e, n / 2, NULL, 0, &err), &err);
    CHECK_OK(el_safetensors_write(p2, e + n / 2, n - n / 2, NULL, 0, &err), &err);
    el_safetensors_close(st);
    unlink(path);
    CHECK_OK(el_nn_llama_load(be, dir, &m, &err), &err);
    if (m) {
        CHECK_NEAR(direct_loss(m, ids, tg, 2, 4), single, 1e-7);
        el_nn_llama_destroy(m);
    }
    for (size_t i = 0; i < n; i++)
        free(vals[i]);
    free(vals);
    free(e);
done:
    tiny_free(&tm);
    remove_dir(dir);
}

static void test_load_errors(void)
{
    char dir[64];
    make_dir(dir);
    el_error err = {0};
    el_llama *m;
    CHECK(el_nn_llama_load(be, dir, &m, &err) == EL_ENOTFOUND);
    tiny_model tm;
    tiny_init(&tm, 37, 16, 24, 1, 4, 2, 0, 3);
    tiny_write(&tm, dir, NULL);
    /* the config claims 2 layers: layer 1's tensors are missing */
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    tm.cfg.num_hidden_layers = 2;
    tm.w[1][0] = NULL;
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"vocab_size\": 37, \"hidden_size\": 16, \"intermediate_size\": 24,"
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2}");
    fclose(f);
    CHECK(el_nn_llama_load(be, dir, &m, &err) == EL_EINPUT);
    CHECK_MSG(strstr(err.msg, "model.layers.1.self_attn.q_proj.weight") != NULL, "%s", err.msg);
    tm.cfg.num_hidden_layers = 1;
    tiny_free(&tm);
    remove_dir(dir);
}

int main(void)
{
    el_error err = {0};
    el_backend_options o = {.kind = EL_BACKEND_CPU, .threads = 1};
    test_dataset();
    test_config();
    test_lora_files();
    if (el_nn_backend_create(&o, &be, &err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    test_known_answers();
    test_against_reference(0);
    test_against_reference(1);
    test_buckets();
    test_sharded();
    test_load_errors();
    el_nn_backend_destroy(be);
    return el_test_done("test_model");
}
