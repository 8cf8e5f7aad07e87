#!/usr/bin/python3
"""Self-check of the PyTorch reference the C engine is held to.

If the reference is wrong, every engine test that agrees with it is wrong
too, so this holds the reference to things that do not depend on it:
  - the safetensors writer against the independent strict checker, and the
    checker against hand-broken files (it must reject each);
  - scored-token counting against counts worked out by hand from DESIGN.md;
  - a model with all-zero logits has loss exactly ln(vocab_size);
  - batch size and padding do not change the loss;
  - autograd LoRA gradients (through the CLI's --grads file) against central
    finite differences, in float64, for every LoRA target module;
  - RoPE against the complex-number formulation of rotate-half.
Exit 77 (skipped) when PyTorch is missing.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import torch
except ImportError:
    print("PyTorch not installed; skipping")
    sys.exit(77)

import llama_ref as ref  # noqa: E402
import make_adapter  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"ok   {what}")
    else:
        failures += 1
        print(f"FAIL {what}")


def run(script, *args):
    p = subprocess.run([sys.executable, os.path.join(HERE, script)] +
                       list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


TINY = {"vocab_size": 259, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 24, "tie_word_embeddings": False,
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "torch_dtype": "float32", "edgeloop_tokenizer": "bytes-v1"}

RECORDS = [{"text": "abc"},
           {"prompt": "ab", "completion": "cd"},
           {"text": "x" * 40},                      # cut: no EOS
           {"prompt": "p" * 30, "completion": "c"},  # prompt fills the cut
           {"text": "h\u00e9llo w\u00f6rld"},
           {"prompt": "log=1 Action:", "completion": " fix it"}]


def write_model(d, cfg, gen, zero_head=False):
    os.makedirs(d, exist_ok=True)
    c = ref.Config(cfg)
    w = {}
    for name, shape in ref.layer_shapes(c).items():
        if len(shape) == 1:
            w[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            w[name] = 0.3 * torch.randn(shape, generator=gen)
    if zero_head:
        head = "model.embed_tokens.weight" if c.tie_word_embeddings \
            else "lm_head.weight"
        w[head].zero_()
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    ref.write_safetensors(os.path.join(d, "model.safetensors"), w)
    return w


def test_safetensors(tmp, gen):
    t = {"b.f32": torch.randn(3, 5, generator=gen),
         "a.f16": torch.randn(7, generator=gen).half(),
         "c.bf16": torch.randn(2, 3, generator=gen).bfloat16(),
         "d.empty": torch.zeros(0, 4)}
    path = os.path.join(tmp, "t.safetensors")
    ref.write_safetensors(path, t, {"format": "pt"})
    rc, out, err = run("safetensors_check.py", path, "--expect",
                       "b.f32:F32:3x5", "--expect", "c.bf16:BF16:2x3")
    check(rc == 0, f"writer output passes the strict checker ({err.strip()})")
    back, meta = ref.read_safetensors(path)
    check(meta == {"format": "pt"} and all(
        back[k].dtype == v.dtype and torch.equal(back[k], v)
        for k, v in t.items()), "safetensors round trip keeps dtype + bits")

    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]

    def rebuild(h, payload, pad=True):
        hb = json.dumps(h, separators=(",", ":")).encode()
        if pad:
            hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb + payload

    def bad(name, content):
        p = os.path.join(tmp, "bad.safetensors")
        with open(p, "wb") as f:
            f.write(content)
        rc, _, _ = run("safetensors_check.py", p)
        check(rc != 0, f"checker rejects {name}")

    unpadded = json.dumps(header, separators=(",", ":")).encode()
    if len(unpadded) % 8 == 0:
        unpadded += b"  "
    bad("unpadded header", struct.pack("<Q", len(unpadded)) + unpadded +
        data)
    bad("trailing bytes", blob + b"\0")
    bad("truncated data", blob[:-1])
    bad("header length past EOF", struct.pack("<Q", 1 << 40) + blob[8:])
    bad("short file", blob[:5])
    h = json.loads(json.dumps(header))
    h["b.f32"]["shape"] = [3, 4]
    bad("shape/span mismatch", rebuild(h, data))
    h = json.loads(json.dumps(header))
    first = min((v for k, v in h.items() if k != "__metadata__"),
                key=lambda v: v["data_offsets"][0])
    first["data_offsets"] = [x + 4 for x in first["data_offsets"]]
    bad("gap before a tensor", rebuild(h, b"\0" * 4 + data))
    h = json.loads(json.dumps(header))
    h["a.f16"]["dtype"] = "F17"
    bad("unknown dtype", rebuild(h, data))
    h = json.loads(json.dumps(header))
    h["__metadata__"] = {"format": 1}
    bad("non-string metadata", rebuild(h, data))
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb = hb[:-1] + b',"a.f16":' + json.dumps(header["a.f16"]).encode() + b"}"
    hb += b" " * (-len(hb) % 8)
    bad("duplicate key", struct.pack("<Q", len(hb)) + hb + data)


def expected_tokens(seq_len):
    """Scored counts worked out by hand from DESIGN.md's rules."""
    return (4          # a b c EOS
            + 3        # c d EOS
            + (seq_len - 1)   # cut text: every target after BOS, no EOS
            + 0        # prompt of 30 bytes fills a 24-token sequence
            + len("h\u00e9llo w\u00f6rld".encode()) + 1
            + len(" fix it") + 1)


def test_loss(tmp, gen):
    data = os.path.join(tmp, "d.jsonl")
    with open(data, "w") as f:
        for r in RECORDS:
            f.write(json.dumps(r) + "\n")
        f.write("\n")  # blank lines are skipped
    for tie in (False, True):
        cfg = dict(TINY, tie_word_embeddings=tie)
        mdir = os.path.join(tmp, f"uniform{int(tie)}")
        write_model(mdir, cfg, gen, zero_head=True)
        rc, out, err = run("llama_ref.py", "--model", mdir, "--data", data)
        res = json.loads(out) if rc == 0 else {}
        check(rc == 0 and abs(res["loss"] - math.log(259)) < 1e-6,
              f"zero logits give ln(V) (tied={tie}): {res} {err.strip()}")
        check(res.get("tokens") == expected_tokens(24),
              f"scored token count {res.get('tokens')} == "
              f"{expected_tokens(24)} by hand")

    mdir = os.path.join(tmp, "rand")
    write_model(mdir, TINY, gen)
    rc1, out1, _ = run("llama_ref.py", "--model", mdir, "--data", data,
                       "--batch", "1")
    rc2, out2, _ = run("llama_ref.py", "--model", mdir, "--data", data,
                       "--batch", "16")
    l1, l2 = json.loads(out1)["loss"], json.loads(out2)["loss"]
    check(rc1 == 0 and rc2 == 0 and abs(l1 - l2) < 1e-5 * l1,
          f"padding is not scored: batch 1 {l1} == batch 16 {l2}")
    check(l1 > 0.5 and abs(l1 - math.log(259)) > 0.05,
          f"random model loss {l1} differs from uniform")

    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "ok"}\n{"prompt": "no completion"}\n')
    rc, _, err = run("llama_ref.py", "--model", mdir, "--data", bad)
    check(rc == 2 and ":2:" in err, f"bad record rejected with line number: "
          f"{err.strip()}")
    return mdir, data


def test_grads(tmp, mdir, data):
    targets = list(make_adapter.TARGET_GROUP)
    adir = os.path.join(tmp, "adapter")
    make_adapter.make_adapter(mdir, adir, r=2, alpha=4.0, targets=targets,
                              seed=7, b_std=0.2)
    gpath = os.path.join(tmp, "grads.safetensors")
    rc, out, err = run("llama_ref.py", "--model", mdir, "--data", data,
                       "--adapter", adir, "--double", "--grads", gpath)
    check(rc == 0, f"--grads runs ({err.strip()})")
    if rc != 0:
        return
    rc, _, err = run("safetensors_check.py", gpath)
    check(rc == 0, f"gradient file passes the strict checker {err.strip()}")
    grads, _ = ref.read_safetensors(gpath)

    cfg, w = ref.load_model(mdir, torch.float64)
    ad = ref.load_adapter(adir, torch.float64)
    check(set(grads) == set(ad.tensors) and len(grads) == 4 * 7,
          f"one gradient per adapter tensor ({len(grads)})")
    recs = ref.load_jsonl(data, ref.default_seq_len(cfg))
    base, _, _ = ref.file_loss(cfg, w, recs, ad)
    rc, out, _ = run("llama_ref.py", "--model", mdir, "--data", data,
                     "--adapter", adir, "--double")
    check(abs(json.loads(out)["loss"] - base) < 1e-9,
          "CLI loss with adapter matches the module")
    nonzero, worst = 0, 0.0
    gen = torch.Generator().manual_seed(3)
    eps = 1e-5
    for key in sorted(ad.tensors):
        t = ad.tensors[key]
        g = grads[key].double()
        for _ in range(3):
            i = int(torch.randint(t.numel(), (1,), generator=gen))
            old = float(t.view(-1)[i])
            t.view(-1)[i] = old + eps
            lp, _, _ = ref.file_loss(cfg, w, recs, ad)
            t.view(-1)[i] = old - eps
            lm, _, _ = ref.file_loss(cfg, w, recs, ad)
            t.view(-1)[i] = old
            fd = (lp - lm) / (2 * eps)
            an = float(g.view(-1)[i])
            err = abs(fd - an) / max(1e-4, abs(fd) + abs(an))
            worst = max(worst, err)
            nonzero += abs(an) > 1e-8
    check(worst < 1e-4, f"autograd vs finite differences: worst relative "
          f"error {worst:.2e}")
    check(nonzero > 0.8 * 3 * len(ad.tensors),
          f"gradients are non-trivial ({nonzero} of {3 * len(ad.tensors)} "
          f"sampled entries nonzero)")

    # adapter must change the loss vs the base alone (B is non-zero)
    plain, _, _ = ref.file_loss(cfg, w, recs, None)
    check(abs(plain - base) > 1e-4, f"adapter changes the loss ({plain} vs "
          f"{base})")


def test_rope():
    cfg = ref.Config(TINY)
    cos, sin = ref.rope_tables(cfg, 10, torch.float64)
    x = torch.randn(10, cfg.head_dim, dtype=torch.float64)
    got = x * cos + ref._rotate_half(x) * sin
    h = cfg.head_dim // 2
    z = torch.complex(x[:, :h], x[:, h:])
    inv = cfg.rope_theta ** (-torch.arange(h, dtype=torch.float64) * 2 /
                             cfg.head_dim)
    ang = torch.arange(10, dtype=torch.float64)[:, None] * inv[None, :]
    z = z * torch.polar(torch.ones_like(ang), ang)
    want = torch.cat([z.real, z.imag], dim=-1)
    check(torch.allclose(got, want, atol=1e-12),
          "RoPE rotate-half == complex rotation of pairs (i, i + d/2)")


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(42)
    with tempfile.TemporaryDirectory(prefix="el_ref_") as tmp:
        test_safetensors(tmp, gen)
        mdir, data = test_loss(tmp, gen)
        test_grads(tmp, mdir, data)
        test_rope()
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
