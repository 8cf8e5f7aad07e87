#!/usr/bin/python3
"""Write a PEFT LoRA adapter dir with seeded random, NON-ZERO A and B.

A freshly initialised PEFT adapter has B = 0, which makes the adapter a no-op
and the gradient of A zero - useless for holding an engine's adapter path and
gradients to the reference. This writes A ~ N(0, 1/in) and B ~ N(0, b_std)
instead, reproducibly (torch generator seeded with --seed).

Usage: make_adapter.py --model DIR --out DIR [--r 8] [--alpha 16]
                       [--targets q_proj,v_proj] [--seed 0] [--b-std 0.05]
                       [--rslora] [--dtype F32|F16|BF16]
Writes OUT/adapter_config.json and OUT/adapter_model.safetensors with keys
base_model.model.model.layers.N.{self_attn|mlp}.<target>.lora_{A,B}.weight
(A [r, in], B [out, r]).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402

TARGET_GROUP = {"q_proj": "self_attn", "k_proj": "self_attn",
                "v_proj": "self_attn", "o_proj": "self_attn",
                "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def make_adapter(model_dir, out_dir, r=8, alpha=16.0, targets=("q_proj",
                 "v_proj"), seed=0, b_std=0.05, rslora=False, dtype="F32"):
    """Create out_dir with a PEFT adapter for the model in model_dir; return
    {key: tensor} as written. Raises ValueError on an unknown target."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = ref.Config(json.load(f))
    shapes = ref.layer_shapes(cfg)
    gen = torch.Generator().manual_seed(seed)
    tdt = {"F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16}[dtype]
    tensors = {}
    for n in range(cfg.num_hidden_layers):
        for t in targets:
            if t not in TARGET_GROUP:
                raise ValueError(f"unknown LoRA target {t}")
            mod = f"model.layers.{n}.{TARGET_GROUP[t]}.{t}"
            out_f, in_f = shapes[mod + ".weight"]
            key = ref.ADAPTER_PREFIX + mod
            a = torch.randn((r, in_f), generator=gen) / in_f ** 0.5
            b = torch.randn((out_f, r), generator=gen) * b_std
            tensors[key + ".lora_A.weight"] = a.to(tdt)
            tensors[key + ".lora_B.weight"] = b.to(tdt)
    os.makedirs(out_dir, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": os.path.abspath(model_dir),
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": rslora,
        "inference_mode": True,
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"),
                          tensors, {"format": "pt"})
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,v_proj",
                    help="comma-separated: q_proj,k_proj,v_proj,o_proj,"
                    "gate_proj,up_proj,down_proj")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--b-std", type=float, default=0.05)
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    args = ap.parse_args()
    if args.r < 1:
        ap.error("--r must be >= 1")
    try:
        make_adapter(args.model, args.out, args.r, args.alpha,
                     [t for t in args.targets.split(",") if t], args.seed,
                     args.b_std, args.rslora, args.dtype)
    except (OSError, ValueError, KeyError) as e:
        print(f"make_adapter.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
