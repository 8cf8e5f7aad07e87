#!/usr/bin/env python3
"""Writes a small random Llama (HF layout, bytes-v1, 2 layers, hidden 32)
to DIR for the e2e tests: cpu training on it takes a second.

usage: tiny_model.py DIR SEED"""
import json, os, random, struct, sys
d = sys.argv[1]
os.makedirs(d)
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
       "vocab_size": 259, "hidden_size": 32, "intermediate_size": 48,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
       "tie_word_embeddings": True, "edgeloop_tokenizer": "bytes-v1"}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
rng = random.Random(int(sys.argv[2]))
H, I, KV = 32, 48, 16
shapes = {"model.embed_tokens.weight": (259, H), "model.norm.weight": (H,)}
for n in range(2):
    p = f"model.layers.{n}."
    shapes.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                   p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                   p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
                   p + "post_attention_layernorm.weight": (H,)})
header, blob = {}, b""
for name in sorted(shapes):
    shape = shapes[name]
    n = 1
    for s in shape:
        n *= s
    vals = [1.0 + rng.uniform(-0.1, 0.1) if len(shape) == 1 else rng.uniform(-0.3, 0.3)
            for _ in range(n)]
    header[name] = {"dtype": "F32", "shape": list(shape),
                    "data_offsets": [len(blob), len(blob) + 4 * n]}
    blob += struct.pack(f"<{n}f", *vals)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + blob)
