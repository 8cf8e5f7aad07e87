/* edgeloop train / eval / generate: LoRA fine-tuning of a Llama model dir on
 * JSONL data, its evaluation, and text generation, on the cpu or vulkan
 * backend. Flags are parsed by one table-free loop per command; every value
 * is range-checked before use. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "cli.h"
#include "nn/backend.h"
#include "nn/cpu.h"
#include "nn/dataset.h"
#include "nn/llama.h"
#include "nn/lora.h"
#include "nn/rng.h"
#include "nn/tokenizer.h"
#include "train/eval.h"
#include "train/trainer.h"

/* Defaults, tuned on tools/models/tiny-bytes + tools/data/site-a with
 * --backend cpu. Without rehearsal the best setting (rank 2 / alpha 4 / lr
 * 1e-3 / 60 steps / batch 8 / all seven targets) cut holdout loss 20.5% but
 * raised the anchor loss 7.4%, and no other rank, rate or target set did
 * better on both. With the base's replay.jsonl in every batch the anchor
 * rise falls with the replay share much faster than the holdout gain: at
 * 60 steps, 4/8 rows gave -18%/+4.9%, 6/8 -15%/+1.9%, 14/16 -14%/+0.5%,
 * 30/32 -18%/-0.2%. 30 of 32 rows at lr 2e-3 gives -23.7% holdout, +0.3%
 * anchor in ~27 s (BENCHMARKS-style figures in tools/models/tiny-bytes/
 * README.md). */
#define DEFAULT_RANK 2
#define DEFAULT_ALPHA 4.0
#define DEFAULT_LR 2e-3
#define DEFAULT_BATCH 32
#define DEFAULT_TARGETS "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
#define DEFAULT_EVAL_BATCH 8
#define DEFAULT_REPLAY_FRACTION 0.9375

static const char *train_help =
    "usage: edgeloop train --model DIR --data FILE.jsonl --out DIR [options]\n"
    "\n"
    "Fine-tunes a LoRA adapter of the model in DIR (Hugging Face Llama layout)\n"
    "on JSONL data ({\"text\"} or {\"prompt\",\"completion\"} lines) and writes\n"
    "it to --out as a PEFT adapter (adapter_config.json +\n"
    "adapter_model.safetensors). Sequences are padded to one of a few length\n"
    "buckets so each training step has a fixed shape (one recorded Vulkan\n"
    "command buffer per bucket).\n"
    "\n"
    "  --holdout FILE      evaluate this data before and after training\n"
    "  --anchor FILE       also evaluate general (anchor) data before/after\n"
    "  --replay FILE       rehearsal set mixed into every batch (default\n"
    "                      MODEL/replay.jsonl when it exists; \"none\" = off);\n"
    "                      lines equal to a --holdout or --anchor line are\n"
    "                      dropped from it\n"
    "  --replay-fraction F share of each batch taken from the rehearsal set\n"
    "                      (default 0.9375: 30 of 32 rows; rounded\n"
    "                      to whole rows, at most batch - 1)\n"
    "  --steps N           optimizer steps (default 60)\n"
    "  --rank R            LoRA rank (default 2)\n"
    "  --alpha A           LoRA alpha (default 4); scale alpha/r\n"
    "  --rslora            scale alpha/sqrt(r) instead\n"
    "  --targets LIST      modules to adapt, comma separated (default all\n"
    "                      seven: q_proj,k_proj,v_proj,o_proj,gate_proj,\n"
    "                      up_proj,down_proj)\n"
    "  --lr LR             peak learning rate (default 0.002), linear warmup\n"
    "                      then cosine decay to lr/10\n"
    "  --warmup N          warmup steps (default 5)\n"
    "  --batch B           sequences per micro-batch (default 32, rehearsal\n"
    "                      rows included)\n"
    "  --accum N           micro-batches per step (default 1)\n"
    "  --seq-len L         tokens per sequence (default 256, or the model's\n"
    "                      max_position_embeddings if smaller)\n"
    "  --buckets N         length buckets 1-3 (default 3: L/4, L/2, L); a\n"
    "                      batch is padded to the smallest that holds it\n"
    "  --weight-decay W    AdamW decoupled weight decay (default 0)\n"
    "  --clip C            global gradient-norm clip (default 1; 0 = off)\n"
    "  --seed S            seed of the LoRA init and the data order (default 1)\n"
    "  --backend KIND      auto, cpu or vulkan (default auto)\n"
    "  --threads N         cpu backend threads (default: all cores)\n"
    "  --checkpoint-every N  write OUT/checkpoint.safetensors every N steps\n"
    "  --resume            continue from OUT/checkpoint.safetensors if it exists\n"
    "                      (same options required); the result is identical\n"
    "                      to an uninterrupted run on the same backend\n"
    "  --bad-lines MODE    skip (warn) or fail (default) on malformed lines\n"
    "  --json              print one JSON object with the results\n"
    "  --help              this text\n"
    "\n"
    "When OpenBLAS picked older kernels than this CPU runs, train, eval and\n"
    "generate re-execute themselves once with OPENBLAS_CORETYPE set (2-3x\n"
    "faster on the cpu backend); EDGELOOP_NO_BLAS_REEXEC=1 turns that off.\n";

static const char *eval_help =
    "usage: edgeloop eval --model DIR --data FILE.jsonl [options]\n"
    "\n"
    "Prints the loss of the model (plus --adapter) on the data: total NLL in\n"
    "nats over the scored tokens / their count (text: every next token;\n"
    "prompt/completion: the completion tokens and EOS).\n"
    "\n"
    "  --adapter DIR       PEFT adapter dir to apply\n"
    "  --seq-len L         tokens per sequence (default 256 or the model's max)\n"
    "  --batch B           sequences per batch (default 8)\n"
    "  --buckets N         length buckets 1-3 (default 3); does not change\n"
    "                      the result, only the padding\n"
    "  --backend KIND      auto, cpu or vulkan (default auto)\n"
    "  --threads N         cpu backend threads\n"
    "  --bad-lines MODE    skip or fail (default)\n"
    "  --dump-grads FILE   also write d(loss)/d(every LoRA A and B) as\n"
    "                      safetensors with the adapter's keys (needs\n"
    "                      --adapter; used by the PyTorch reference tests)\n"
    "  --json              print {\"loss\": ..., \"tokens\": ..., ...}\n"
    "  --help              this text\n";

static const char *generate_help =
    "usage: edgeloop generate --model DIR --prompt TEXT [options]\n"
    "\n"
    "Continues TEXT with the model (plus --adapter) and prints the result.\n"
    "\n"
    "  --adapter DIR       PEFT adapter dir to apply\n"
    "  --max-tokens N      tokens to generate at most (default 64); stops\n"
    "                      early at EOS or at the sequence length\n"
    "  --temperature T     0 = greedy (default 0.7)\n"
    "  --seed S            sampling seed (default 1)\n"
    "  --seq-len L         context length (default 256 or the model's max)\n"
    "  --backend KIND      auto, cpu or vulkan (default auto)\n"
    "  --threads N         cpu backend threads\n"
    "  --json              print {\"text\": ..., \"tokens\": ...}\n"
    "  --help              this text\n";

/* Options of all three commands; each command reads the ones it knows. */
typedef struct opts {
    const char *cmd;
    const char *model, *data, *holdout, *anchor, *out, *adapter, *prompt, *dump_grads;
    const char *replay;
    const char *targets;
    int steps, rank, batch, accum, seq_len, warmup, checkpoint_every, threads, max_tokens;
    int buckets;
    double alpha, lr, weight_decay, clip, temperature, replay_fraction;
    uint64_t seed;
    int rslora, resume, json;
    el_backend_kind backend;
    el_bad_lines bad_lines;
} opts;

static int parse_int(const char *s, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parses ARGV into O. Returns 0, 1 when --help was printed (HELP), or an exit
 * status (> 1 offset by 100 never happens) via *STATUS with -1. */
static int parse_opts(int argc, char **argv, const char *help, opts *o, int *status)
{
    memset(o, 0, sizeof *o);
    o->cmd = argv[0];
    o->steps = 60;
    o->rank = DEFAULT_RANK;
    o->alpha = DEFAULT_ALPHA;
    o->lr = DEFAULT_LR;
    o->batch = -1;
    o->accum = 1;
    o->buckets = EL_TRAIN_MAX_BUCKETS;
    o->warmup = 5;
    o->clip = 1.0;
    o->replay_fraction = DEFAULT_REPLAY_FRACTION;
    o->seed = 1;
    o->max_tokens = 64;
    o->temperature = 0.7;
    o->targets = DEFAULT_TARGETS;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json"))
            o->json = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, takes = 1;
        char msg[160];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help, stdout);
            *status = 0;
            return 1;
        } else if (!strcmp(a, "--json")) {
            takes = 0;
        } else if (!strcmp(a, "--rslora")) {
            o->rslora = 1;
            takes = 0;
        } else if (!strcmp(a, "--resume")) {
            o->resume = 1;
            takes = 0;
        } else if (!v) {
            snprintf(msg, sizeof msg, "%s needs a value", a);
            *status = el_cli_usage(o->cmd, msg, o->json);
            return 1;
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--data")) {
            o->data = v;
        } else if (!strcmp(a, "--holdout")) {
            o->holdout = v;
        } else if (!strcmp(a, "--anchor")) {
            o->anchor = v;
        } else if (!strcmp(a, "--replay")) {
            o->replay = v;
        } else if (!strcmp(a, "--replay-fraction")) {
            bad = parse_double(v, 0, 1, &o->replay_fraction);
        } else if (!strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "--adapter")) {
            o->adapter = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--dump-grads")) {
            o->dump_grads = v;
        } else if (!strcmp(a, "--targets")) {
            o->targets = v;
        } else if (!strcmp(a, "--steps")) {
            bad = parse_int(v, 1, 10000000, &o->steps);
        } else if (!strcmp(a, "--rank")) {
            bad = parse_int(v, 1, EL_LORA_MAX_RANK, &o->rank);
        } else if (!strcmp(a, "--batch")) {
            bad = parse_int(v, 1, 4096, &o->batch);
        } else if (!strcmp(a, "--buckets")) {
            bad = parse_int(v, 1, EL_TRAIN_MAX_BUCKETS, &o->buckets);
        } else if (!strcmp(a, "--accum")) {
            bad = parse_int(v, 1, 4096, &o->accum);
        } else if (!strcmp(a, "--seq-len")) {
            bad = parse_int(v, 2, 1 << 20, &o->seq_len);
        } else if (!strcmp(a, "--warmup")) {
            bad = parse_int(v, 0, 10000000, &o->warmup);
        } else if (!strcmp(a, "--checkpoint-every")) {
            bad = parse_int(v, 0, 10000000, &o->checkpoint_every);
        } else if (!strcmp(a, "--threads")) {
            bad = parse_int(v, 0, 1024, &o->threads);
        } else if (!strcmp(a, "--max-tokens")) {
            bad = parse_int(v, 1, 1 << 20, &o->max_tokens);
        } else if (!strcmp(a, "--alpha")) {
            bad = parse_double(v, 1e-6, 1e6, &o->alpha);
        } else if (!strcmp(a, "--lr")) {
            bad = parse_double(v, 1e-12, 10, &o->lr);
        } else if (!strcmp(a, "--weight-decay")) {
            bad = parse_double(v, 0, 10, &o->weight_decay);
        } else if (!strcmp(a, "--clip")) {
            bad = parse_double(v, 0, 1e9, &o->clip);
        } else if (!strcmp(a, "--temperature")) {
            bad = parse_double(v, 0, 100, &o->temperature);
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            bad = !*v || *end || errno || *v == '-';
        } else if (!strcmp(a, "--backend") || !strcmp(a, "--bad-lines")) {
            el_error err = {0};
            int rc = !strcmp(a, "--backend") ? el_nn_backend_parse(v, &o->backend, &err)
                                              : el_nn_bad_lines_parse(v, &o->bad_lines, &err);
            if (rc) {
                *status = el_cli_usage(o->cmd, err.msg, o->json);
                return 1;
            }
        } else {
            snprintf(msg, sizeof msg, "unknown option \"%s\"", a);
            *status = el_cli_usage(o->cmd, msg, o->json);
            return 1;
        }
        if (bad) {
            snprintf(msg, sizeof msg, "bad value \"%s\" for %s", v, a);
            *status = el_cli_usage(o->cmd, msg, o->json);
            return 1;
        }
        i += takes;
    }
    return 0;
}

/* OpenBLAS picks its kernels when it loads (nn/cpu.h); on CPUs it does not
 * know it falls back to SSE3 kernels that made training 2-3x slower here.
 * When that happened and the cpu backend may be used, re-execute this
 * program once with OPENBLAS_CORETYPE set (the hint is NULL once it is set,
 * so this cannot loop). Returns only when nothing is done or exec failed. */
static void blas_reexec(const opts *o, int argc, char **argv)
{
    if (o->backend == EL_BACKEND_VULKAN || getenv("EDGELOOP_NO_BLAS_REEXEC"))
        return;
    const char *hint = el_nn_cpu_blas_coretype_hint();
    if (!hint)
        return;
    char **args = el_calloc((size_t)argc + 2, sizeof *args);
    if (!args)
        return;
    args[0] = "edgeloop";
    memcpy(args + 1, argv, (size_t)argc * sizeof *argv);
    setenv("OPENBLAS_CORETYPE", hint, 1);
    fflush(NULL);
    execv("/proc/self/exe", args);
    unsetenv("OPENBLAS_CORETYPE");
    el_free(args);
}

/* The engine every command sets up: backend, model, optional adapter. */
typedef struct engine {
    el_backend *be;
    el_llama *model;
    el_lora *lora;
    int seq_len;
} engine;

static void engine_finish(engine *e)
{
    el_nn_llama_destroy(e->model);
    el_nn_lora_destroy(e->lora);
    el_nn_backend_destroy(e->be);
}

static int engine_init(engine *e, const opts *o, el_error *err)
{
    memset(e, 0, sizeof *e);
    el_backend_options bo = {.kind = o->backend, .device_index = -1, .threads = o->threads};
    int rc = el_nn_backend_create(&bo, &e->be, err);
    if (rc)
        return rc;
    if ((rc = el_nn_llama_load(e->be, o->model, &e->model, err)))
        return rc;
    const el_llama_config *c = el_nn_llama_config(e->model);
    if (c->tokenizer != EL_TOKENIZER_BYTES_V1)
        return el_error_set(err, EL_EINPUT,
                            "%s: config.json has no \"edgeloop_tokenizer\": \"bytes-v1\"; other tokenizers are not supported yet",
                            o->model);
    int maxpos = c->max_position_embeddings;
    e->seq_len = o->seq_len ? o->seq_len : (maxpos < 256 ? maxpos : 256);
    if (e->seq_len > maxpos)
        return el_error_set(err, EL_EUSAGE, "--seq-len %d is over the model's %d positions",
                            e->seq_len, maxpos);
    return 0;
}

static json_t *eval_json(const el_eval_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "loss", json_real(r->loss));
    json_object_set_new(o, "tokens", json_integer((json_int_t)r->tokens));
    return o;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

typedef struct progress_ctx {
    int tty;
} progress_ctx;

static void on_progress(void *ctx, const el_train_progress *p)
{
    progress_ctx *pc = ctx;
    if (!pc->tty)
        return;
    fprintf(stderr, "\rstep %d/%d  loss %.4f  %.0f tok/s  ETA %.0fs   ", p->step, p->steps,
            p->loss, p->tokens_per_s, p->eta_s);
    if (p->step == p->steps)
        fputc('\n', stderr);
    fflush(stderr);
}

/* The rehearsal file of train: --replay, or MODEL/replay.jsonl when it
 * exists; NULL for none. BUF holds a built path. */
static const char *replay_path(const opts *o, char *buf, size_t n)
{
    if (o->replay)
        return strcmp(o->replay, "none") ? o->replay : NULL;
    if (el_fs_join(buf, n, o->model, "replay.jsonl") || !el_fs_exists(buf))
        return NULL;
    return buf;
}

int el_cmd_train(int argc, char **argv)
{
    opts o;
    int status;
    if (parse_opts(argc, argv, train_help, &o, &status))
        return status;
    blas_reexec(&o, argc, argv);
    if (!o.model || !o.data || !o.out)
        return el_cli_usage(o.cmd, "--model, --data and --out are required", o.json);
    if (o.batch < 0)
        o.batch = DEFAULT_BATCH;
    el_error err = {0};
    engine e;
    el_dataset *ds = NULL, *hold_ds = NULL, *anch_ds = NULL, *replay_ds = NULL;
    int rc = engine_init(&e, &o, &err);
    el_eval_result hold0 = {0}, hold1 = {0}, anch0 = {0}, anch1 = {0};
    el_train_result res;
    char ckpt[4096], rbuf[4096];
    const char *replay = replay_path(&o, rbuf, sizeof rbuf);
    size_t replay_dropped = 0;
    if (rc)
        goto done;
    if ((rc = el_nn_dataset_load(o.data, e.seq_len, o.bad_lines, &ds, &err)) ||
        (o.holdout &&
         (rc = el_nn_dataset_load(o.holdout, e.seq_len, o.bad_lines, &hold_ds, &err))) ||
        (o.anchor &&
         (rc = el_nn_dataset_load(o.anchor, e.seq_len, o.bad_lines, &anch_ds, &err))) ||
        (replay && (rc = el_nn_dataset_load(replay, e.seq_len, o.bad_lines, &replay_ds, &err))))
        goto done;
    /* What judges the run is never rehearsed on. */
    replay_dropped = el_train_replay_exclude(replay_ds, hold_ds) +
                     el_train_replay_exclude(replay_ds, anch_ds);
    /* Baselines on the base model alone (B = 0 at init makes the adapter a
     * no-op anyway, but a resumed run has trained values already). */
    if (hold_ds && (rc = el_train_eval(e.model, hold_ds, DEFAULT_EVAL_BATCH, o.buckets, NULL,
                                       &hold0, &err)))
        goto done;
    if (anch_ds && (rc = el_train_eval(e.model, anch_ds, DEFAULT_EVAL_BATCH, o.buckets, NULL,
                                       &anch0, &err)))
        goto done;
    el_lora_config lc = {.rank = o.rank, .alpha = (float)o.alpha, .use_rslora = o.rslora};
    snprintf(lc.base_model, sizeof lc.base_model, "%s", o.model);
    if ((rc = el_nn_lora_targets_parse(o.targets, &lc.targets, &err)) ||
        (rc = el_nn_lora_create(el_nn_llama_config(e.model), &lc, &e.lora, &err)))
        goto done;
    el_nn_lora_init(e.lora, o.seed);
    if ((rc = el_nn_llama_set_lora(e.model, e.lora, 1, &err)) ||
        (rc = el_fs_mkdirs(o.out, 0755, &err)))
        goto done;
    if (el_fs_join(ckpt, sizeof ckpt, o.out, "checkpoint.safetensors")) {
        rc = el_error_set(&err, EL_EUSAGE, "--out path too long");
        goto done;
    }
    el_train_options to;
    el_train_options_default(&to);
    to.steps = o.steps;
    to.batch = o.batch;
    to.accum = o.accum;
    to.buckets = o.buckets;
    to.lr = (float)o.lr;
    to.warmup_steps = o.warmup < o.steps ? o.warmup : 0;
    to.weight_decay = (float)o.weight_decay;
    to.max_grad_norm = (float)o.clip;
    to.seed = o.seed;
    to.checkpoint_every = o.checkpoint_every;
    to.checkpoint_path = ckpt;
    to.resume = o.resume;
    progress_ctx pc = {.tty = !o.json && isatty(STDERR_FILENO)};
    to.progress = on_progress;
    to.progress_ctx = &pc;
    to.replay = replay_ds;
    to.replay_fraction = (float)o.replay_fraction;
    if ((rc = el_train_run(e.model, e.lora, ds, &to, &res, &err)))
        goto done;
    if ((rc = el_nn_lora_save(e.lora, NULL, o.out, &err)))
        goto done;
    /* The adapter is durable; the checkpoint has served its purpose. */
    if (o.checkpoint_every)
        unlink(ckpt);
    if (hold_ds && (rc = el_train_eval(e.model, hold_ds, DEFAULT_EVAL_BATCH, o.buckets, NULL,
                                       &hold1, &err)))
        goto done;
    if (anch_ds && (rc = el_train_eval(e.model, anch_ds, DEFAULT_EVAL_BATCH, o.buckets, NULL,
                                       &anch1, &err)))
        goto done;
    if (o.json) {
        json_t *j = json_object();
        json_object_set_new(j, "backend", json_string(el_nn_backend_name(e.be)));
        json_object_set_new(j, "steps", json_integer(o.steps));
        json_object_set_new(j, "resumed_from_step", json_integer(res.start_step));
        json_object_set_new(j, "train_loss", json_real(res.last_loss));
        json_object_set_new(j, "train_loss_first", json_real(res.first_loss));
        json_object_set_new(j, "tokens", json_integer((json_int_t)res.tokens));
        json_object_set_new(j, "tokens_per_s", json_real(res.tokens_per_s));
        json_object_set_new(j, "train_seconds", json_real(res.seconds));
        json_object_set_new(j, "sequences", json_integer((json_int_t)ds->count));
        json_object_set_new(j, "skipped_lines", json_integer((json_int_t)ds->skipped));
        json_object_set_new(j, "out", json_string(o.out));
        json_object_set_new(j, "replay", replay ? json_string(replay) : json_null());
        json_object_set_new(j, "replay_fraction", json_real(o.replay_fraction));
        json_object_set_new(j, "replay_rows", json_integer(el_train_replay_rows(&to)));
        json_object_set_new(j, "replay_sequences",
                            json_integer(replay_ds ? (json_int_t)replay_ds->count : 0));
        json_object_set_new(j, "replay_excluded", json_integer((json_int_t)replay_dropped));
        if (o.holdout) {
            json_object_set_new(j, "holdout_loss_before", json_real(hold0.loss));
            json_object_set_new(j, "holdout_loss_after", json_real(hold1.loss));
            json_object_set_new(j, "holdout_tokens", json_integer((json_int_t)hold1.tokens));
        }
        if (o.anchor) {
            json_object_set_new(j, "anchor_loss_before", json_real(anch0.loss));
            json_object_set_new(j, "anchor_loss_after", json_real(anch1.loss));
        }
        print_json(j);
    } else {
        printf("trained %d steps on %s: loss %.4f -> %.4f, %.0f tokens/s, %.1f s\n",
               o.steps, el_nn_backend_name(e.be), res.first_loss, res.last_loss,
               res.tokens_per_s, res.seconds);
        if (replay)
            printf("rehearsal: %d of %d rows per batch from %s (%zu lines, %zu dropped)\n",
                   el_train_replay_rows(&to), o.batch, replay, replay_ds->count,
                   replay_dropped);
        if (o.holdout)
            printf("holdout loss %.4f -> %.4f\n", hold0.loss, hold1.loss);
        if (o.anchor)
            printf("anchor loss %.4f -> %.4f\n", anch0.loss, anch1.loss);
        printf("adapter written to %s\n", o.out);
    }
done:
    el_nn_dataset_destroy(ds);
    el_nn_dataset_destroy(hold_ds);
    el_nn_dataset_destroy(anch_ds);
    el_nn_dataset_destroy(replay_ds);
    engine_finish(&e);
    return rc ? el_cli_fail(&err, o.json) : 0;
}

int el_cmd_eval(int argc, char **argv)
{
    opts o;
    int status;
    if (parse_opts(argc, argv, eval_help, &o, &status))
        return status;
    blas_reexec(&o, argc, argv);
    if (!o.model || !o.data)
        return el_cli_usage(o.cmd, "--model and --data are required", o.json);
    if (o.dump_grads && !o.adapter)
        return el_cli_usage(o.cmd, "--dump-grads needs --adapter", o.json);
    if (o.batch < 0)
        o.batch = DEFAULT_EVAL_BATCH;
    el_error err = {0};
    engine e;
    el_dataset *ds = NULL;
    float *grads = NULL;
    el_eval_result r;
    int rc = engine_init(&e, &o, &err);
    if (rc)
        goto done;
    if (o.adapter &&
        ((rc = el_nn_lora_load(el_nn_llama_config(e.model), o.adapter, &e.lora, &err)) ||
         (rc = el_nn_llama_set_lora(e.model, e.lora, o.dump_grads != NULL, &err))))
        goto done;
    if ((rc = el_nn_dataset_load(o.data, e.seq_len, o.bad_lines, &ds, &err)))
        goto done;
    if (o.dump_grads && !(grads = el_calloc(e.lora->nparams, sizeof *grads))) {
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = el_train_eval(e.model, ds, o.batch, o.buckets, grads, &r, &err)))
        goto done;
    if (grads && (rc = el_nn_lora_save_tensors(e.lora, grads, o.dump_grads, &err)))
        goto done;
    if (o.json) {
        json_t *j = eval_json(&r);
        json_object_set_new(j, "sequences", json_integer((json_int_t)ds->count));
        json_object_set_new(j, "skipped_lines", json_integer((json_int_t)ds->skipped));
        json_object_set_new(j, "seq_len", json_integer(e.seq_len));
        json_object_set_new(j, "backend", json_string(el_nn_backend_name(e.be)));
        json_object_set_new(j, "seconds", json_real(r.seconds));
        print_json(j);
    } else {
        printf("loss %.6f over %llu tokens (%zu sequences, %s)\n", r.loss,
               (unsigned long long)r.tokens, ds->count, el_nn_backend_name(e.be));
    }
done:
    el_free(grads);
    el_nn_dataset_destroy(ds);
    engine_finish(&e);
    return rc ? el_cli_fail(&err, o.json) : 0;
}

/* Index drawn from softmax(logits / T), or the argmax when T == 0. */
static int sample(const float *logits, int V, double temperature, uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    if (temperature <= 0)
        return best;
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((logits[i] - logits[best]) / temperature);
    double x = el_nn_rng_uniform(rng) * sum;
    for (int i = 0; i < V; i++) {
        x -= exp((logits[i] - logits[best]) / temperature);
        if (x <= 0)
            return i;
    }
    return best;
}

int el_cmd_generate(int argc, char **argv)
{
    opts o;
    int status;
    if (parse_opts(argc, argv, generate_help, &o, &status))
        return status;
    blas_reexec(&o, argc, argv);
    if (!o.model || !o.prompt)
        return el_cli_usage(o.cmd, "--model and --prompt are required", o.json);
    el_error err = {0};
    engine e;
    el_llama_work *w = NULL;
    el_tensor *ids = NULL;
    int32_t *h_ids = NULL;
    float *row = NULL;
    char *text = NULL;
    int rc = engine_init(&e, &o, &err);
    if (rc)
        goto done;
    if (o.adapter &&
        ((rc = el_nn_lora_load(el_nn_llama_config(e.model), o.adapter, &e.lora, &err)) ||
         (rc = el_nn_llama_set_lora(e.model, e.lora, 0, &err))))
        goto done;
    int S = e.seq_len, V = el_nn_llama_config(e.model)->vocab_size;
    /* One fixed-shape graph: the whole context padded to S, re-run per token
     * (no KV cache; the bundled models are small). */
    h_ids = el_malloc((size_t)S * sizeof *h_ids);
    row = el_malloc((size_t)V * sizeof *row);
    text = el_malloc((size_t)o.max_tokens + 1);
    if (!h_ids || !row || !text) {
        rc = el_error_set(&err, EL_ENOMEM, "out of memory");
        goto done;
    }
    size_t plen = strlen(o.prompt);
    int n = 1;
    h_ids[0] = EL_TOK_BOS;
    if (plen > (size_t)S - 2)   /* keep the end of a long prompt */
        n += (int)el_nn_tokenize_bytes(o.prompt + plen - (size_t)(S - 2), (size_t)S - 2,
                                       h_ids + 1, (size_t)S - 1);
    else
        n += (int)el_nn_tokenize_bytes(o.prompt, plen, h_ids + 1, (size_t)S - 1);
    for (int i = n; i < S; i++)
        h_ids[i] = EL_TOK_PAD;
    if ((rc = el_nn_llama_work_create(e.model, 1, S, 0, &w, &err)))
        goto done;
    if (!(ids = el_nn_tensor_create(e.be, EL_I32, (size_t)S, &err))) {
        rc = err.code;
        goto done;
    }
    uint64_t rng = o.seed;
    int produced = 0;
    size_t tlen = 0;
    el_view none = {0};
    while (produced < o.max_tokens && n < S) {
        if ((rc = el_nn_write(e.be, el_nn_whole(ids), h_ids, &err)) ||
            (rc = el_nn_graph_begin(e.be, el_nn_llama_work_key(w, 3), &err)) ||
            (rc = el_nn_llama_forward(w, el_nn_whole(ids), none, none, 0, 1.0f, &err)) ||
            (rc = el_nn_graph_end(e.be, &err)))
            goto done;
        el_view logits = el_nn_llama_logits(w);
        if ((rc = el_nn_read(e.be, el_nn_view(logits.t, logits.off + (size_t)(n - 1) * V,
                                              (size_t)V), row, &err)))
            goto done;
        int tok = sample(row, V, o.temperature, &rng);
        produced++;
        if (tok == EL_TOK_EOS)
            break;
        h_ids[n++] = tok;
        if (tok < 256)
            text[tlen++] = (char)tok;
    }
    text[tlen] = '\0';
    if (o.json) {
        json_t *j = json_object();
        json_object_set_new(j, "prompt", json_string(o.prompt));
        /* Sampled bytes need not be valid UTF-8; JSON needs it, so invalid
         * output shows as '?' there (the plain output is the raw bytes). */
        json_t *js = json_stringn(text, tlen);
        if (!js) {
            for (size_t i = 0; i < tlen; i++)
                if ((unsigned char)text[i] >= 0x80)
                    text[i] = '?';
            js = json_stringn(text, tlen);
        }
        json_object_set_new(j, "text", js);
        json_object_set_new(j, "tokens", json_integer(produced));
        json_object_set_new(j, "backend", json_string(el_nn_backend_name(e.be)));
        print_json(j);
    } else {
        printf("%s%s\n", o.prompt, text);
    }
done:
    el_nn_llama_work_destroy(w);
    if (e.be)
        el_nn_tensor_destroy(e.be, ids);
    el_free(h_ids);
    el_free(row);
    el_free(text);
    engine_finish(&e);
    return rc ? el_cli_fail(&err, o.json) : 0;
}
