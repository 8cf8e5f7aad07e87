#!/usr/bin/python3
"""Pretrain edgeloop's bundled tiny byte-level Llama (tools/models/tiny-bytes).

Reproducible: seeded corpus (tools/data/make_data.py, stream 1), seeded init,
seeded batch order, a fixed number of steps, 2 torch threads. Run it with
`nice -n 10`; on the shared 2-core dev box the default schedule takes about
10-15 minutes. Uses the same forward pass as the reference
(tests/ref/llama_ref.py), so what is trained here is exactly what the
reference and the C engine evaluate.

Model: HF LlamaForCausalLM semantics, vocab 259 (bytes-v1: 0-255 bytes,
256 BOS, 257 EOS, 258 PAD), untied lm_head. Training sequences are single
corpus lines, BOS + bytes + EOS, batched by similar length (so padding is
small) and padded with PAD, which is never scored - the same layout as
evaluation, so no position the engine will see is new to the model.

Usage: pretrain_tiny.py [--out DIR] [--steps N] [--batch N] [--lr X]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
sys.path.insert(0, os.path.join(ROOT, "tools", "data"))
import llama_ref as ref  # noqa: E402
import make_data  # noqa: E402

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 259,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "initializer_range": 0.02,
    "bos_token_id": 256,
    "eos_token_id": 257,
    "pad_token_id": 258,
    "torch_dtype": "float32",
    "edgeloop_tokenizer": "bytes-v1",
}


def init_weights(cfg, gen):
    """HF-style init: normal(0, 0.02) matrices, ones for norms; the output
    projections of each residual branch scaled by 1/sqrt(2 * layers) so the
    residual stream starts at unit scale (GPT-2's rule)."""
    w = {}
    for name, shape in ref.layer_shapes(cfg).items():
        if len(shape) == 1:
            w[name] = torch.ones(shape)
            continue
        std = 0.02
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            std /= math.sqrt(2 * cfg.num_hidden_layers)
        w[name] = torch.randn(shape, generator=gen) * std
    return w


def batches(records, batch, rng):
    """Batches of records of similar length, in a seeded random order."""
    order = sorted(range(len(records)),
                   key=lambda i: (len(records[i][0]), rng.random()))
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(chunks)
    return [[records[i] for i in c] for c in chunks]


def evaluate(cfg, weights, records):
    loss, tokens, _ = ref.file_loss(cfg, weights, records, batch=64)
    return loss, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "tiny-bytes"))
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus-lines", type=int,
                    default=make_data.PRETRAIN_LINES)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    cfg = ref.Config(CONFIG)
    seq_len = cfg.max_position_embeddings
    corpus = [ref.encode_record({"text": t}, seq_len) for t in
              make_data.general_lines(args.corpus_lines,
                                      make_data.PRETRAIN_SEED)]
    # general text the model never trains on: stream 3 (anchors use 201/202)
    pretrain_set = set(make_data.general_lines(args.corpus_lines,
                                               make_data.PRETRAIN_SEED))
    held = [ref.encode_record({"text": t}, seq_len)
            for t in make_data.general_lines(3000, 3)
            if t not in pretrain_set][:1000]

    weights = init_weights(cfg, torch.Generator().manual_seed(args.seed))
    params = [p.requires_grad_(True) for p in weights.values()]
    n_params = sum(p.numel() for p in params)
    decay = [p for p in params if p.dim() == 2]
    no_decay = [p for p in params if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    warmup = max(1, args.steps // 30)

    with torch.no_grad():
        before, held_tokens = evaluate(cfg, weights, held)
    print(f"params {n_params}, corpus {len(corpus)} lines, held-out "
          f"{held_tokens} tokens, loss before {before:.4f}", flush=True)

    t0 = time.time()
    step, seen_tokens, plan = 0, 0, []
    while step < args.steps:
        if not plan:
            plan = batches(corpus, args.batch, rng)
        chunk = plan.pop()
        lr = args.lr * (step + 1) / warmup if step < warmup else \
            args.lr * (0.1 + 0.45 * (1 + math.cos(
                math.pi * (step - warmup) / (args.steps - warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        s, n = ref.batch_nll(cfg, weights, chunk)
        opt.zero_grad(set_to_none=True)
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        seen_tokens += n
        step += 1
        if step % 100 == 0 or step == args.steps:
            el = time.time() - t0
            print(f"step {step} loss {float(s) / n:.4f} lr {lr:.2e} "
                  f"{seen_tokens / el:.0f} tok/s {el:.0f}s", flush=True)

    with torch.no_grad():
        final = {k: v.detach().clone() for k, v in weights.items()}
        after, _ = evaluate(cfg, final, held)
    print(f"held-out general loss: before {before:.4f} after {after:.4f} "
          f"nats/byte-token; trained on {seen_tokens} tokens in "
          f"{time.time() - t0:.0f}s", flush=True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(args.out, "model.safetensors"), final,
                          {"format": "pt", "edgeloop_tokenizer": "bytes-v1"})
    with open(os.path.join(args.out, "pretrain_log.json"), "w") as f:
        json.dump({"params": n_params, "steps": args.steps,
                   "batch": args.batch, "lr": args.lr, "seed": args.seed,
                   "tokens": seen_tokens, "heldout_loss_before": before,
                   "heldout_loss_after": after,
                   "heldout_tokens": held_tokens}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
