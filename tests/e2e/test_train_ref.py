#!/usr/bin/python3
"""The C engine held to the PyTorch reference (tests/ref/llama_ref.py).

On a seeded random GQA model (written here with the reference's own
safetensors writer, F32 and a BF16 copy) with a random NON-ZERO adapter on all
seven projections (tests/ref/make_adapter.py), and on the bundled tiny model
with site-a holdout data when it exists:
  1. `edgeloop eval` loss == reference loss (float64) to 1e-4 relative, on
     every backend that is available (cpu always; vulkan when a Vulkan device,
     lavapipe included, exists);
  2. `edgeloop eval --dump-grads` == autograd gradients of the same file loss
     to 1e-3 relative (norm of the difference per tensor);
  3. cpu and vulkan agree after 20 training steps (adapter evaluated on cpu,
     loss to 1e-3 relative).
Exits 77 (skipped) only when torch is not installed.
"""
import json
import os
import subprocess
import sys
import tempfile

SRC = os.environ.get("EDGELOOP_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.environ.get("EDGELOOP_BUILD_ROOT", os.path.join(SRC, "build"))
EDGELOOP = os.path.join(BUILD, "agent", "edgeloop")
sys.path.insert(0, os.path.join(SRC, "tests", "ref"))

try:
    import torch
except ImportError:
    print("torch is not installed: skipped")
    sys.exit(77)

import llama_ref as ref  # noqa: E402
import make_adapter  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)
    else:
        print("ok:", what)


def edgeloop(*args, ok=True):
    p = subprocess.run([EDGELOOP, *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise SystemExit(f"edgeloop {' '.join(args)} failed ({p.returncode}):\n"
                         f"{p.stdout}\n{p.stderr}")
    return p


def reference(model, data, adapter=None, seq_len=None, grads=None):
    cmd = ["/usr/bin/python3", os.path.join(SRC, "tests", "ref", "llama_ref.py"),
           "--model", model, "--data", data, "--double"]
    if adapter:
        cmd += ["--adapter", adapter]
    if seq_len:
        cmd += ["--seq-len", str(seq_len)]
    if grads:
        cmd += ["--grads", grads]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"reference failed: {p.stderr}")
    return json.loads(p.stdout)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def backends():
    have = ["cpu"]
    p = edgeloop("devices", "--json", ok=False)
    try:
        if p.returncode == 0 and json.loads(p.stdout).get("devices"):
            have.append("vulkan")
    except ValueError:
        pass
    return have


def write_random_model(d, dtype=torch.float32):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "vocab_size": 259, "hidden_size": 32, "intermediate_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "max_position_embeddings": 64, "tie_word_embeddings": False,
           "edgeloop_tokenizer": "bytes-v1"}
    gen = torch.Generator().manual_seed(1234)
    os.makedirs(d, exist_ok=True)
    w = {}
    for name, shape in ref.layer_shapes(ref.Config(cfg)).items():
        if len(shape) == 1:
            w[name] = (1.0 + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
        else:
            w[name] = (0.3 * torch.randn(shape, generator=gen)).to(dtype)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    ref.write_safetensors(os.path.join(d, "model.safetensors"), w)


RECORDS = [{"text": "2026-03-14T06:12:09 LINE-A PRESS-07 pressure=182bar WARN"},
           {"prompt": "PRESS-07 seal_temp=71C status=WARN Action:",
            "completion": " replace O-ring"},
           {"text": "x" * 80},
           {"text": "h\u00e9llo w\u00f6rld"},
           {"prompt": "p" * 70, "completion": "cut"},
           {"text": "Torque 45 Nm; next check 250 cycles."},
           {"text": "ok"}, {"text": "PRESS-01"}, {"prompt": "a", "completion": "b"}]


def compare(model, data, adapter, seq_len, tmp, label, bes):
    want = reference(model, data, adapter, seq_len,
                     grads=os.path.join(tmp, "ref_grads.safetensors"))
    ref_g = ref.read_safetensors(os.path.join(tmp, "ref_grads.safetensors"))[0]
    for be in bes:
        out = os.path.join(tmp, f"grads_{be}.safetensors")
        # batches of 2 in length order: short ones use the short buckets
        args = ["eval", "--model", model, "--data", data, "--adapter", adapter,
                "--backend", be, "--json", "--dump-grads", out, "--batch", "2"]
        if seq_len:
            args += ["--seq-len", str(seq_len)]
        got = json.loads(edgeloop(*args).stdout)
        check(got["tokens"] == want["tokens"],
              f"{label} [{be}]: {got['tokens']} scored tokens == reference {want['tokens']}")
        check(rel(got["loss"], want["loss"]) <= 1e-4,
              f"{label} [{be}]: loss {got['loss']:.8f} vs reference {want['loss']:.8f}")
        ours = ref.read_safetensors(out)[0]
        check(set(ours) == set(ref_g), f"{label} [{be}]: same gradient keys")
        worst = 0.0
        for k, g in ref_g.items():
            g = g.double()
            if k not in ours or float(g.norm()) == 0:
                check(False, f"{label} [{be}]: gradient {k} present and non-zero")
                continue
            worst = max(worst, float((ours[k].double() - g).norm() / g.norm()))
        check(worst <= 1e-3, f"{label} [{be}]: worst per-tensor gradient error {worst:.2e}")


def main():
    if not os.access(EDGELOOP, os.X_OK):
        raise SystemExit(f"{EDGELOOP} is not built")
    torch.set_num_threads(1)
    bes = backends()
    print("backends:", bes)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "d.jsonl")
        with open(data, "w") as f:
            for r in RECORDS:
                f.write(json.dumps(r) + "\n")
        model = os.path.join(tmp, "model")
        write_random_model(model)
        adapter = os.path.join(tmp, "adapter")
        make_adapter.make_adapter(model, adapter, r=4, alpha=8.0,
                                  targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                           "gate_proj", "up_proj", "down_proj"),
                                  seed=7, b_std=0.2)
        compare(model, data, adapter, 48, tmp, "random f32 model", bes)
        bf16 = os.path.join(tmp, "model_bf16")
        write_random_model(bf16, torch.bfloat16)
        compare(bf16, data, adapter, None, tmp, "random bf16 model", bes[:1])

        bundled = os.path.join(SRC, "tools", "models", "tiny-bytes")
        holdout = os.path.join(SRC, "tools", "data", "site-a", "holdout.jsonl")
        if os.path.exists(os.path.join(bundled, "model.safetensors")) and os.path.exists(holdout):
            small = os.path.join(tmp, "holdout40.jsonl")
            with open(holdout) as f, open(small, "w") as g:
                g.writelines(f.readlines()[:40])
            ad2 = os.path.join(tmp, "adapter2")
            make_adapter.make_adapter(bundled, ad2, r=8, alpha=16.0,
                                      targets=("q_proj", "v_proj", "down_proj"), seed=3)
            compare(bundled, small, ad2, None, tmp, "bundled tiny-bytes", bes)
        else:
            print("tools/models/tiny-bytes not present: bundled-model check not run")

        if "vulkan" in bes:
            adapters = {}
            for be in ("cpu", "vulkan"):
                out = os.path.join(tmp, f"trained_{be}")
                edgeloop("train", "--model", model, "--data", data, "--out", out,
                         "--steps", "20", "--batch", "2", "--seq-len", "48",
                         "--seed", "5", "--backend", be, "--json")
                adapters[be] = out
            losses = {}
            for be, ad in adapters.items():
                got = json.loads(edgeloop("eval", "--model", model, "--data", data,
                                          "--adapter", ad, "--backend", "cpu",
                                          "--seq-len", "48", "--json").stdout)
                losses[be] = got["loss"]
            check(rel(losses["vulkan"], losses["cpu"]) <= 1e-3,
                  f"after 20 steps: cpu-trained loss {losses['cpu']:.6f} vs "
                  f"vulkan-trained {losses['vulkan']:.6f}")
        else:
            print("no Vulkan device: cpu/vulkan training agreement not run")
    print(f"test_train_ref: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
