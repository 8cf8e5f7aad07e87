#!/usr/bin/env python3
"""Writes a small random Llama (HF layout, bytes-v1) to DIR for the e2e and
crypto tests: cpu training on it takes a second. Plain Python, no torch.

usage: tiny_model.py DIR SEED [--layers N] [--hidden H] [--unit-norms]

Default: 2 layers, hidden 32. The other sizes follow from --hidden so that
every shape keeps head dim 8 and grouped-query attention: intermediate 3H/2,
H/8 heads, H/16 key-value heads, max_position_embeddings 2H (hidden 16 gives
intermediate 24, 2 heads, 1 kv head, 32 positions). The same arguments always
give the same bytes; tests whose assertions hold for one model (a gate that
passes, a loss that falls) rely on that.

Weights: uniform(-0.3, 0.3); norm weights 1 + uniform(-0.1, 0.1), or exactly
1.0 with --unit-norms (which then draws nothing from the generator for them,
so the other weights differ too)."""
import argparse, json, os, random, struct

ap = argparse.ArgumentParser(description="small random Llama for the tests")
ap.add_argument("dir")
ap.add_argument("seed", type=int)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--hidden", type=int, default=32, help="a multiple of 16")
ap.add_argument("--unit-norms", action="store_true")
args = ap.parse_args()
if args.layers < 1 or args.hidden < 16 or args.hidden % 16:
    ap.error("--layers must be >= 1 and --hidden a positive multiple of 16")
H = args.hidden
I, HEADS, KV_HEADS = H * 3 // 2, H // 8, H // 16
KV = H // HEADS * KV_HEADS

d = args.dir
os.makedirs(d)
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
       "vocab_size": 259, "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": args.layers, "num_attention_heads": HEADS,
       "num_key_value_heads": KV_HEADS,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 2 * H,
       "tie_word_embeddings": True, "edgeloop_tokenizer": "bytes-v1"}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
rng = random.Random(args.seed)
shapes = {"model.embed_tokens.weight": (259, H), "model.norm.weight": (H,)}
for n in range(args.layers):
    p = f"model.layers.{n}."
    shapes.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                   p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                   p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
                   p + "post_attention_layernorm.weight": (H,)})


def norm_weight():
    return 1.0 if args.unit_norms else 1.0 + rng.uniform(-0.1, 0.1)


header, blob = {}, b""
for name in sorted(shapes):
    shape = shapes[name]
    n = 1
    for s in shape:
        n *= s
    vals = [norm_weight() if len(shape) == 1 else rng.uniform(-0.3, 0.3) for _ in range(n)]
    header[name] = {"dtype": "F32", "shape": list(shape),
                    "data_offsets": [len(blob), len(blob) + 4 * n]}
    blob += struct.pack(f"<{n}f", *vals)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + blob)
