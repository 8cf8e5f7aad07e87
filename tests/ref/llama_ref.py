#!/usr/bin/python3
"""PyTorch reference for edgeloop's Llama + LoRA loss and gradients.

Independent of the C engine: plain PyTorch (no transformers, no peft, no
safetensors package), written from the Hugging Face LlamaForCausalLM and PEFT
LoRA semantics and from DESIGN.md's data/loss rules, so the C engine can be
held to it.

  model    config.json (HF field names) + model.safetensors (F32/F16/BF16,
           HF tensor names); `tie_word_embeddings` selects embed as lm_head.
  adapter  PEFT dir: adapter_config.json (r, lora_alpha, target_modules,
           use_rslora) + adapter_model.safetensors with keys
           base_model.model.model.layers.N.<self_attn|mlp>.<proj>.lora_{A,B}.weight
           (A [r, in], B [out, r]); y = W x + scale * B (A x), scale =
           alpha / r, or alpha / sqrt(r) with use_rslora.
  data     JSONL, {"text": ...} or {"prompt": ..., "completion": ...};
           sequence = BOS + UTF-8 bytes (+ completion bytes) + EOS, cut to the
           sequence length (default min(256, max_position_embeddings)).
           text: every next token is scored; prompt/completion: the
           completion tokens and the EOS. Padding (PAD) is never scored.
  loss     total NLL (natural log) over scored tokens / their count, over the
           whole file.

CLI:
  llama_ref.py --model DIR --data FILE.jsonl [--adapter DIR] [--seq-len N]
               [--batch N] [--double] [--grads OUT.safetensors]
prints {"loss": L, "tokens": N}; --grads writes d(loss)/d(lora_A|lora_B) for
every adapter tensor, in float32, under the adapter's own key names.
"""
import argparse
import json
import math
import os
import re
import struct
import sys

try:
    import torch
except ImportError:  # callers (tests) turn this into "skipped"
    torch = None

BOS, EOS, PAD = 256, 257, 258
DEFAULT_SEQ_LEN = 256

# ---------------------------------------------------------------------------
# safetensors, read and written by hand (struct + json)
# ---------------------------------------------------------------------------

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
              "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 1024 * 1024


def _torch_dtype(name):
    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
            "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
            "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}[name]


def _dtype_name(dt):
    for k in DTYPE_SIZE:
        if _torch_dtype(k) == dt:
            return k
    raise ValueError(f"unsupported dtype {dt}")


def read_safetensors(path):
    """Return ({name: tensor}, metadata dict) from a safetensors file.

    Sizes are checked against the file before anything is read; raises
    ValueError naming the file and tensor on a malformed file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > MAX_HEADER or 8 + hlen > len(blob):
        raise ValueError(f"{path}: header length {hlen} exceeds file")
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    data = blob[8 + hlen:]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in DTYPE_SIZE:
            raise ValueError(f"{path}: {name}: unknown dtype {dt}")
        shape = [int(s) for s in info["shape"]]
        a, b = (int(x) for x in info["data_offsets"])
        n = math.prod(shape)
        if not (0 <= a <= b <= len(data)) or b - a != n * DTYPE_SIZE[dt]:
            raise ValueError(f"{path}: {name}: data_offsets {a},{b} do not "
                             f"match shape {shape} {dt}")
        raw = bytearray(data[a:b])
        if n == 0:
            t = torch.empty(shape, dtype=_torch_dtype(dt))
        else:
            t = torch.frombuffer(raw, dtype=_torch_dtype(dt)).reshape(shape)
        out[name] = t.clone()
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """Write {name: tensor} the way the safetensors library does.

    Tensors are stored contiguously, largest dtype first then by name (the
    library's order, which keeps every tensor aligned), the JSON header is
    compact and padded with spaces to a multiple of 8. Little-endian host
    assumed (torch tensors are written as their raw bytes)."""
    items = sorted(tensors.items(),
                   key=lambda kv: (-kv[1].element_size(), kv[0]))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, off = [], 0
    for name, t in items:
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _dtype_name(t.dtype), "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------

class Config:
    """The HF config fields the engine uses, with HF defaults."""

    def __init__(self, d):
        self.vocab_size = int(d["vocab_size"])
        self.hidden_size = int(d["hidden_size"])
        self.intermediate_size = int(d["intermediate_size"])
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_attention_heads = int(d["num_attention_heads"])
        self.num_key_value_heads = int(d.get("num_key_value_heads",
                                             self.num_attention_heads))
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 10000.0))
        self.max_position_embeddings = int(d.get("max_position_embeddings",
                                                 2048))
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
        self.head_dim = int(d.get("head_dim", self.hidden_size //
                                  self.num_attention_heads))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads is not a multiple of "
                             "num_key_value_heads")


def layer_shapes(cfg):
    """{HF tensor name: shape} for every weight of the model."""
    h, i, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    s = {"model.embed_tokens.weight": (cfg.vocab_size, h),
         "model.norm.weight": (h,)}
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = (cfg.vocab_size, h)
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        s[p + "self_attn.q_proj.weight"] = (nq * hd, h)
        s[p + "self_attn.k_proj.weight"] = (nkv * hd, h)
        s[p + "self_attn.v_proj.weight"] = (nkv * hd, h)
        s[p + "self_attn.o_proj.weight"] = (h, nq * hd)
        s[p + "mlp.gate_proj.weight"] = (i, h)
        s[p + "mlp.up_proj.weight"] = (i, h)
        s[p + "mlp.down_proj.weight"] = (h, i)
        s[p + "input_layernorm.weight"] = (h,)
        s[p + "post_attention_layernorm.weight"] = (h,)
    return s


def load_model(model_dir, dtype=None):
    """Return (Config, {name: tensor}) with weights upcast to `dtype`
    (float32 by default: the engine keeps fp32 math for fp16/bf16 bases)."""
    dtype = dtype or torch.float32
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = Config(json.load(f))
    tensors, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    weights = {}
    for name, shape in layer_shapes(cfg).items():
        if name not in tensors:
            raise ValueError(f"{model_dir}: missing tensor {name}")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(f"{model_dir}: {name} has shape "
                             f"{list(tensors[name].shape)}, want {list(shape)}")
        weights[name] = tensors[name].to(dtype)
    return cfg, weights


ADAPTER_PREFIX = "base_model.model."


class Adapter:
    """LoRA tensors keyed by the module they modify ("model.layers.0.
    self_attn.q_proj") plus their scale; `tensors` holds the PEFT keys."""

    def __init__(self, tensors, r, alpha, use_rslora=False):
        self.tensors = tensors
        self.r = r
        self.alpha = alpha
        self.scale = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.modules = {}
        for key in tensors:
            m = re.fullmatch(re.escape(ADAPTER_PREFIX) +
                             r"(.+)\.lora_([AB])\.weight", key)
            if not m:
                raise ValueError(f"adapter key {key} is not a PEFT LoRA key")
            self.modules.setdefault(m.group(1), {})[m.group(2)] = key
        for mod, ab in self.modules.items():
            if set(ab) != {"A", "B"}:
                raise ValueError(f"adapter module {mod} lacks lora_A or "
                                 f"lora_B")

    def ab(self, module):
        keys = self.modules.get(module)
        if keys is None:
            return None
        return self.tensors[keys["A"]], self.tensors[keys["B"]]


def load_adapter(adapter_dir, dtype=None):
    dtype = dtype or torch.float32
    with open(os.path.join(adapter_dir, "adapter_config.json"),
              encoding="utf-8") as f:
        ac = json.load(f)
    for unsupported in ("rank_pattern", "alpha_pattern"):
        if ac.get(unsupported):
            raise ValueError(f"{adapter_dir}: {unsupported} is not supported")
    tensors, _ = read_safetensors(os.path.join(adapter_dir,
                                               "adapter_model.safetensors"))
    r = int(ac["r"])
    for key, t in tensors.items():
        dim = 0 if ".lora_A." in key else 1
        if t.dim() != 2 or t.shape[dim] != r:
            raise ValueError(f"{adapter_dir}: {key} shape {list(t.shape)} "
                             f"does not have rank {r}")
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    return Adapter(tensors, r, float(ac.get("lora_alpha", r)),
                   bool(ac.get("use_rslora", False)))


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * w


def rope_tables(cfg, seq_len, dtype):
    """cos/sin [T, head_dim], HF rotate-half layout (pairs i and i + d/2)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta **
                      (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    pos = torch.arange(seq_len, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def _linear(x, weights, adapter, module):
    y = x @ weights[module + ".weight"].t()
    if adapter is not None:
        ab = adapter.ab(module)
        if ab is not None:
            a, b = ab
            y = y + adapter.scale * ((x @ a.t()) @ b.t())
    return y


def forward(cfg, weights, ids, adapter=None):
    """Logits [B, T, V] for token ids [B, T] (causal; right padding needs no
    mask because padded positions come after every real one)."""
    bsz, t = ids.shape
    dtype = weights["model.embed_tokens.weight"].dtype
    x = weights["model.embed_tokens.weight"][ids]
    cos, sin = rope_tables(cfg, t, dtype)
    nq, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, \
        cfg.head_dim
    mask = torch.full((t, t), float("-inf"), dtype=dtype).triu(1)
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        h = rms_norm(x, weights[p + "input_layernorm.weight"],
                     cfg.rms_norm_eps)
        q = _linear(h, weights, adapter, p + "self_attn.q_proj")
        k = _linear(h, weights, adapter, p + "self_attn.k_proj")
        v = _linear(h, weights, adapter, p + "self_attn.v_proj")
        q = q.view(bsz, t, nq, hd).transpose(1, 2)
        k = k.view(bsz, t, nkv, hd).transpose(1, 2)
        v = v.view(bsz, t, nkv, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = nq // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
        att = torch.softmax(att, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(bsz, t, nq * hd)
        x = x + _linear(o, weights, adapter, p + "self_attn.o_proj")
        h = rms_norm(x, weights[p + "post_attention_layernorm.weight"],
                     cfg.rms_norm_eps)
        g = _linear(h, weights, adapter, p + "mlp.gate_proj")
        u = _linear(h, weights, adapter, p + "mlp.up_proj")
        x = x + _linear(torch.nn.functional.silu(g) * u, weights, adapter,
                        p + "mlp.down_proj")
    x = rms_norm(x, weights["model.norm.weight"], cfg.rms_norm_eps)
    head = weights["model.embed_tokens.weight"] if cfg.tie_word_embeddings \
        else weights["lm_head.weight"]
    return x @ head.t()


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def encode_record(rec, seq_len):
    """Return (ids, scored) for one JSONL object: ids is BOS + bytes + EOS cut
    to seq_len; scored[j] says whether ids[j] is a scored target (predicted
    from position j - 1). Raises ValueError on an object of neither kind."""
    if "text" in rec and isinstance(rec["text"], str):
        body = list(rec["text"].encode("utf-8"))
        ids = [BOS] + body + [EOS]
        scored = [False] + [True] * (len(ids) - 1)
    elif isinstance(rec.get("prompt"), str) and \
            isinstance(rec.get("completion"), str):
        p = list(rec["prompt"].encode("utf-8"))
        c = list(rec["completion"].encode("utf-8"))
        ids = [BOS] + p + c + [EOS]
        scored = [False] * (1 + len(p)) + [True] * (len(c) + 1)
    else:
        raise ValueError("record has neither \"text\" nor "
                         "\"prompt\"+\"completion\" strings")
    return ids[:seq_len], scored[:seq_len]


def load_jsonl(path, seq_len):
    """List of (ids, scored) for every non-blank line of a JSONL file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(encode_record(json.loads(line), seq_len))
            except (ValueError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return out


def make_batch(records, length=None):
    """ids [B, T] padded with PAD, targets [B, T] (next token), mask [B, T]
    (True where the target is scored). T is the longest record, or `length`
    when given (fixed-shape batches; must not be shorter)."""
    t = max(len(ids) for ids, _ in records)
    t = max(t, length or 0)
    ids = torch.full((len(records), t), PAD, dtype=torch.long)
    tgt = torch.full((len(records), t), PAD, dtype=torch.long)
    mask = torch.zeros((len(records), t), dtype=torch.bool)
    for i, (seq, scored) in enumerate(records):
        ids[i, :len(seq)] = torch.tensor(seq)
        tgt[i, :len(seq) - 1] = torch.tensor(seq[1:])
        mask[i, :len(seq) - 1] = torch.tensor(scored[1:], dtype=torch.bool)
    return ids, tgt, mask


def batch_nll(cfg, weights, records, adapter=None, length=None):
    """(summed NLL over scored targets as a 0-dim tensor, scored count)."""
    ids, tgt, mask = make_batch(records, length)
    logits = forward(cfg, weights, ids, adapter)
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, tgt.clamp(max=cfg.vocab_size - 1)
                       .unsqueeze(-1)).squeeze(-1)
    return nll[mask].sum(), int(mask.sum())


def file_loss(cfg, weights, records, adapter=None, batch=16, grads=False):
    """Return (loss, tokens, grads) over all records; grads is a dict
    {adapter key: d loss / d tensor} when `grads`, else None."""
    total_tokens = sum(sum(s[1:]) for _, s in records)
    if total_tokens == 0:
        raise ValueError("no scored tokens in the data")
    if grads:
        for t in adapter.tensors.values():
            t.requires_grad_(True)
            t.grad = None
    total = 0.0
    ctx = torch.enable_grad() if grads else torch.no_grad()
    with ctx:
        for i in range(0, len(records), batch):
            s, _ = batch_nll(cfg, weights, records[i:i + batch], adapter)
            if grads:
                (s / total_tokens).backward()
            total += float(s.detach().double())
    g = None
    if grads:
        g = {k: t.grad.detach().clone() if t.grad is not None
             else torch.zeros_like(t) for k, t in adapter.tensors.items()}
        for t in adapter.tensors.values():
            t.requires_grad_(False)
    return total / total_tokens, total_tokens, g


def default_seq_len(cfg):
    return min(DEFAULT_SEQ_LEN, cfg.max_position_embeddings)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Reference loss (and LoRA gradients) of a Llama model "
                    "on a JSONL file, as DESIGN.md defines them.")
    ap.add_argument("--model", required=True, help="dir with config.json + "
                    "model.safetensors")
    ap.add_argument("--data", required=True, help="JSONL file")
    ap.add_argument("--adapter", help="PEFT LoRA adapter dir")
    ap.add_argument("--seq-len", type=int, help="sequence length (default "
                    "min(256, max_position_embeddings))")
    ap.add_argument("--batch", type=int, default=16,
                    help="records per forward pass (does not change results)")
    ap.add_argument("--double", action="store_true",
                    help="compute in float64 instead of float32")
    ap.add_argument("--grads", metavar="OUT.safetensors",
                    help="write d loss / d LoRA A and B (float32); needs "
                    "--adapter")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if torch is None:
        print("llama_ref.py: PyTorch is not installed", file=sys.stderr)
        return 77
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grads and not args.adapter:
        ap.error("--grads needs --adapter")
    dtype = torch.float64 if args.double else torch.float32
    try:
        cfg, weights = load_model(args.model, dtype)
        adapter = load_adapter(args.adapter, dtype) if args.adapter else None
        seq_len = args.seq_len or default_seq_len(cfg)
        if seq_len < 2 or seq_len > cfg.max_position_embeddings:
            raise ValueError(f"--seq-len {seq_len} outside 2.."
                             f"{cfg.max_position_embeddings}")
        records = load_jsonl(args.data, seq_len)
        loss, tokens, g = file_loss(cfg, weights, records, adapter,
                                    args.batch, bool(args.grads))
    except (OSError, ValueError, KeyError) as e:
        print(f"llama_ref.py: {e}", file=sys.stderr)
        return 2
    if g is not None:
        write_safetensors(args.grads, {k: v.float() for k, v in g.items()})
    print(json.dumps({"loss": loss, "tokens": tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
