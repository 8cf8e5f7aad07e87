#!/usr/bin/python3
"""Reference LoRA fine-tune in PyTorch (the baseline the C trainer is
measured against, and the check that the bundled model + site data make a
learnable task).

Same model and loss as llama_ref.py. PEFT initialisation (A uniform in
+-1/sqrt(in) - kaiming_uniform(a=sqrt(5)) - and B = 0), AdamW on A and B
only, constant learning rate after a short warmup, batches drawn from a
seeded shuffle of the training file; each batch is padded to its longest
sequence (or to --seq-len with --pad-to-seq, matching an engine that runs
fixed shapes). The per-batch loss is the mean NLL over the batch's scored
tokens.

Usage: lora_train.py --model DIR --train FILE [--eval NAME=FILE]...
                     [--steps 200] [--batch 8] [--r 8] [--alpha 16]
                     [--targets q_proj,v_proj] [--lr 2e-3] [--seed 0]
                     [--seq-len N] [--pad-to-seq] [--threads N] [--out DIR]
Prints one JSON object: {"steps", "tokens" (scored), "seq_tokens" (BOS..EOS
of every sequence, no padding), "positions" (incl. padding), "seconds" (the
training loop only), "tokens_per_s", "seq_tokens_per_s", "positions_per_s",
"eval": {NAME:
{"before", "after", "change"}}}; --out writes the trained adapter (PEFT dir).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402
from make_adapter import TARGET_GROUP  # noqa: E402


def init_adapter(cfg, targets, r, alpha, seed):
    """PEFT-initialised Adapter (B = 0) for the given target modules."""
    shapes = ref.layer_shapes(cfg)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for n in range(cfg.num_hidden_layers):
        for t in targets:
            mod = f"model.layers.{n}.{TARGET_GROUP[t]}.{t}"
            out_f, in_f = shapes[mod + ".weight"]
            bound = 1.0 / math.sqrt(in_f)
            key = ref.ADAPTER_PREFIX + mod
            tensors[key + ".lora_A.weight"] = \
                (torch.rand((r, in_f), generator=gen) * 2 - 1) * bound
            tensors[key + ".lora_B.weight"] = torch.zeros((out_f, r))
    return ref.Adapter(tensors, r, alpha)


def train(cfg, weights, records, adapter, steps, batch, lr, seed,
          seq_len=None, pad_to_seq=False, log=None):
    """Train adapter in place; return (scored tokens, sequence tokens,
    positions, seconds): sequence tokens count BOS..EOS of every sequence
    trained on (no padding), positions include the padding."""
    params = list(adapter.tensors.values())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999),
                            weight_decay=0.0)
    rng = random.Random(seed)
    order = []
    tokens = seq_tokens = positions = 0
    warmup = max(1, steps // 20)
    t0 = time.time()
    for step in range(steps):
        if len(order) < batch:
            order = list(range(len(records)))
            rng.shuffle(order)
        chunk = [records[order.pop()] for _ in range(batch)]
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)
        s, n = ref.batch_nll(cfg, weights, chunk, adapter,
                             seq_len if pad_to_seq else None)
        opt.zero_grad(set_to_none=True)
        (s / max(n, 1)).backward()
        opt.step()
        tokens += n
        seq_tokens += sum(len(c[0]) for c in chunk)
        positions += batch * (seq_len if pad_to_seq else
                              max(len(c[0]) for c in chunk))
        if log and (step + 1) % 50 == 0:
            log(f"step {step + 1} loss {float(s) / max(n, 1):.4f}")
    secs = time.time() - t0
    for p in params:
        p.requires_grad_(False)
    return tokens, seq_tokens, positions, secs


def save_adapter(out_dir, adapter, targets):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM",
                   "r": adapter.r, "lora_alpha": adapter.alpha,
                   "lora_dropout": 0.0, "target_modules": list(targets),
                   "bias": "none", "fan_in_fan_out": False,
                   "use_rslora": False, "inference_mode": True}, f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"),
                          {k: v.detach() for k, v in adapter.tensors.items()},
                          {"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", action="append", default=[],
                    metavar="NAME=FILE")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--pad-to-seq", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGET_GROUP:
            ap.error(f"unknown target {t}")
    cfg, weights = ref.load_model(args.model)
    seq_len = args.seq_len or ref.default_seq_len(cfg)
    records = ref.load_jsonl(args.train, seq_len)
    evals = {}
    for spec in args.eval:
        name, _, path = spec.partition("=")
        evals[name] = ref.load_jsonl(path, seq_len)
    adapter = init_adapter(cfg, targets, args.r, args.alpha, args.seed)
    result = {"eval": {}}
    for name, recs in evals.items():
        result["eval"][name] = {"before": ref.file_loss(cfg, weights, recs,
                                                        adapter, 32)[0]}
    log = (lambda m: print(m, file=sys.stderr, flush=True)) \
        if args.verbose else None
    tokens, seq_tokens, positions, secs = train(cfg, weights, records, adapter,
                                    args.steps, args.batch, args.lr,
                                    args.seed, seq_len, args.pad_to_seq, log)
    for name, recs in evals.items():
        e = result["eval"][name]
        e["after"] = ref.file_loss(cfg, weights, recs, adapter, 32)[0]
        e["change"] = e["after"] / e["before"] - 1.0
    result.update({"steps": args.steps, "batch": args.batch, "r": args.r,
                   "targets": targets, "tokens": tokens,
                   "seq_tokens": seq_tokens,
                   "positions": positions, "seconds": secs,
                   "tokens_per_s": tokens / secs,
                   "seq_tokens_per_s": seq_tokens / secs,
                   "positions_per_s": positions / secs,
                   "threads": torch.get_num_threads()})
    if args.out:
        save_adapter(args.out, adapter, targets)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
