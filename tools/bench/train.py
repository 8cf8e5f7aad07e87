#!/usr/bin/python3
"""Training benchmark: LoRA training throughput and peak memory, side by side.

Columns (one run each, same model, data, batch, sequence length, rank,
targets and thread count):
  edgeloop cpu     `edgeloop train ... --backend cpu --json`
  edgeloop vulkan  `edgeloop train ... --backend vulkan --json`
  pytorch          tests/ref/lora_train.py (the same LoRA training in plain
                   PyTorch, CPU, each batch padded to its longest sequence)
Each is run under `/usr/bin/time -v` for the peak RSS. Each side also reports
which BLAS it runs on and a plain sgemm GFLOP/s through that BLAS, so a
crippled baseline (reference BLAS, one thread) is visible in the output:
  - edgeloop: the BLAS libraries `ldd` resolves for the binary, and
    cblas_sgemm timed through that very library (ctypes);
  - pytorch: BLAS_INFO from torch.__config__.show(), the BLAS libraries in
    /proc/self/maps of a torch process after a matmul, and torch.mm timed.
    Debian's torch links the generic libblas.so.3; the bench puts
    OpenBLAS's libblas.so.3 first on LD_LIBRARY_PATH so the baseline runs
    on OpenBLAS whatever the alternatives system selects.
A column whose binary or backend is unavailable says so; the others still
run. This prints numbers and asserts nothing (STYLE.md).

Usage: tools/bench/train [--edgeloop PATH] [--model DIR] [--data FILE]
                         [--steps N] [--vulkan-steps N] [--batch B]
                         [--seq-len L] [--rank R] [--targets LIST]
                         [--threads T] [--timeout S] [--json]
"""
import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PY = "/usr/bin/python3"
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"

# Runs in a separate process so it measures exactly the BLAS it is given.
CBLAS_PROBE = r"""
import ctypes, sys, time
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
n = int(sys.argv[2])
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
c = np.zeros((n, n), dtype=np.float32)
p = lambda x: x.ctypes.data_as(ctypes.c_void_p)
f = lib.cblas_sgemm
f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p,
              ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
              ctypes.c_void_p, ctypes.c_int]
def run():
    f(101, 111, 111, n, n, n, 1.0, p(a), n, p(b), n, 0.0, p(c), n)
run()
best = 1e9
for _ in range(5):
    t = time.perf_counter(); run(); best = min(best, time.perf_counter() - t)
ok = np.allclose(c, a @ b, rtol=1e-3, atol=1e-2)
print(2 * n ** 3 / best / 1e9, ok)
"""

TORCH_PROBE = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
n = int(sys.argv[2])
a = torch.randn(n, n); b = torch.randn(n, n)
torch.mm(a, b)
best = 1e9
for _ in range(5):
    t = time.perf_counter(); torch.mm(a, b); best = min(best, time.perf_counter() - t)
import re
info = re.findall(r"BLAS_INFO=\w+", torch.__config__.show())
libs = sorted({l.split()[-1] for l in open("/proc/self/maps")
               if "blas" in l.lower() and "/" in l})
print(repr({"gflops": 2 * n ** 3 / best / 1e9, "blas_info": info,
            "libs": libs, "threads": torch.get_num_threads()}))
"""


def max_rss_kib(time_stderr):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_stderr)
    return int(m.group(1)) if m else None


def last_json(text):
    """The last JSON object in text (one line or pretty-printed over
    several, starting at the beginning of a line), or None."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                obj = json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def own_stderr(text):
    """stderr of the measured command, without /usr/bin/time's report."""
    return text.split("\tCommand being timed:")[0].strip()


def timed(cmd, env, timeout):
    """Run cmd under /usr/bin/time -v; return (rc, stdout, stderr, seconds,
    max RSS KiB). rc is None on timeout."""
    t0 = time.time()
    wrap = ["/usr/bin/time", "-v"] if os.access("/usr/bin/time", os.X_OK) \
        else []
    try:
        p = subprocess.run(wrap + cmd, env=env,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", e.stderr or "", time.time() - t0, None
    return (p.returncode, p.stdout, p.stderr, time.time() - t0,
            max_rss_kib(p.stderr))


def find_rate(res):
    """Tokens/s from an edgeloop --json object, whatever it calls it."""
    for k in ("tokens_per_s", "tokens_per_sec", "tokens_per_second",
              "tok_per_s", "tok_s", "throughput_tokens_per_s"):
        v = res.get(k)
        if isinstance(v, (int, float)):
            return float(v), k
    for k, v in res.items():
        if isinstance(v, dict):
            r = find_rate(v)
            if r[0] is not None:
                return r[0], f"{k}.{r[1]}"
    return None, None


def edgeloop_blas(binary):
    """BLAS shared libraries the dynamic loader resolves for binary."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    libs = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m and "blas" in m.group(1).lower():
            libs.append(os.path.realpath(m.group(2)))
    return libs


def cblas_gflops(lib, n, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    try:
        p = subprocess.run([PY, "-c", CBLAS_PROBE, lib, str(n)], env=env,
                           capture_output=True, text=True, timeout=300)
        g, ok = p.stdout.split()
        return float(g), ok == "True"
    except (ValueError, OSError, subprocess.TimeoutExpired):
        return None, False


def run_edgeloop(args, backend, steps, tmp):
    col = {"name": f"edgeloop {backend}"}
    if not os.access(args.edgeloop, os.X_OK):
        col["unavailable"] = f"no edgeloop binary at {args.edgeloop}"
        return col
    out = os.path.join(tmp, f"adapter-{backend}")
    cmd = [args.edgeloop, "train", "--model", args.model, "--data",
           args.data, "--out", out, "--steps", str(steps), "--batch",
           str(args.batch), "--seq-len", str(args.seq_len), "--rank",
           str(args.rank), "--targets", args.targets, "--backend", backend,
           "--threads", str(args.threads), "--json"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    rc, so, se, secs, rss = timed(cmd, env, args.timeout)
    col.update({"command": " ".join(cmd), "wall_s": secs, "max_rss_kib": rss,
                "steps": steps})
    res = last_json(so)
    if rc is None:
        col["unavailable"] = f"timed out after {args.timeout}s"
    elif rc != 0 or res is None or "error" in res:
        why = res["error"] if res and "error" in res else \
            (own_stderr(se).splitlines() or ["no JSON result"])[-1]
        col["unavailable"] = f"exit {rc}: {why}"
    else:
        rate, key = find_rate(res)
        col["tokens_per_s"] = rate
        col["rate_field"] = key
        col["positions_per_s_wall"] = steps * args.batch * args.seq_len / secs
        col["result"] = res
    libs = edgeloop_blas(args.edgeloop)
    col["blas"] = libs or ["(no BLAS library linked)"]
    if libs:
        g, ok = cblas_gflops(libs[0], args.sgemm_n, args.threads)
        col["sgemm_gflops"] = g
        col["sgemm_checked"] = ok
    return col


def torch_env(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    if os.path.isdir(OPENBLAS_DIR):
        env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (
            ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH")
            else "")
    return env


def run_torch(args):
    col = {"name": "pytorch"}
    env = torch_env(args.threads)
    try:
        p = subprocess.run([PY, "-c", TORCH_PROBE, str(args.threads),
                            str(args.sgemm_n)], env=env, capture_output=True,
                           text=True, timeout=300)
        probe = ast.literal_eval(p.stdout.strip())
    except (OSError, ValueError, SyntaxError, subprocess.TimeoutExpired):
        col["unavailable"] = "python3-torch not usable at " + PY
        return col
    col["blas"] = probe["libs"] + probe["blas_info"]
    col["sgemm_gflops"] = probe["gflops"]
    cmd = [PY, os.path.join(ROOT, "tests", "ref", "lora_train.py"),
           "--model", args.model, "--train", args.data, "--steps",
           str(args.steps), "--batch", str(args.batch), "--seq-len",
           str(args.seq_len), "--r", str(args.rank),
           "--targets", args.targets, "--threads", str(args.threads)]
    rc, so, se, secs, rss = timed(cmd, env, args.timeout)
    col.update({"command": " ".join(cmd), "wall_s": secs, "max_rss_kib": rss,
                "steps": args.steps})
    res = last_json(so)
    if rc != 0 or res is None:
        col["unavailable"] = f"exit {rc}: " + \
            ((own_stderr(se).splitlines() or ["no JSON result"])[-1])
        return col
    col["tokens_per_s"] = res["seq_tokens_per_s"]
    col["rate_field"] = ("seq_tokens_per_s (BOS..EOS tokens, no padding; "
                         "training loop only)")
    col["positions_per_s"] = res["positions_per_s"]
    col["result"] = res
    return col


def fmt(v, spec):
    """v formatted with spec, or "-" right-aligned to the spec's width."""
    if isinstance(v, (int, float)):
        return format(v, spec)
    width = int(spec.split(".")[0].rstrip("dfs") or 0)
    return "-".rjust(width)


def main():
    ap = argparse.ArgumentParser(
        description="LoRA training throughput: edgeloop cpu, edgeloop "
                    "vulkan and PyTorch side by side (prints, never "
                    "asserts).")
    ap.add_argument("--edgeloop", default=os.path.join(ROOT, "build",
                                                       "agent", "edgeloop"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tools", "models",
                                                    "tiny-bytes"))
    ap.add_argument("--data", default=os.path.join(ROOT, "tools", "data",
                                                   "site-a", "train.jsonl"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--vulkan-steps", type=int, default=3,
                    help="steps for the vulkan column (lavapipe is slow)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sgemm-n", type=int, default=512)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--skip", default="", help="comma list of columns to "
                    "skip: cpu,vulkan,pytorch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    cols = []
    with tempfile.TemporaryDirectory(prefix="el_bench_train_") as tmp:
        for backend, steps in (("cpu", args.steps),
                               ("vulkan", args.vulkan_steps)):
            if backend in skip:
                cols.append({"name": f"edgeloop {backend}",
                             "unavailable": "skipped (--skip)"})
                continue
            cols.append(run_edgeloop(args, backend, steps, tmp))
        cols.append({"name": "pytorch", "unavailable": "skipped (--skip)"}
                    if "pytorch" in skip else run_torch(args))

    setup = {"model": args.model, "data": args.data, "batch": args.batch,
             "seq_len": args.seq_len, "rank": args.rank,
             "targets": args.targets, "threads": args.threads,
             "cpu": cpu_model(), "sgemm_n": args.sgemm_n}
    if args.json:
        print(json.dumps({"setup": setup, "columns": cols}, indent=2))
        return 0
    print(f"LoRA training bench: {setup['cpu']}, {args.threads} threads")
    print(f"model {args.model}\ndata {args.data}\nbatch {args.batch} x "
          f"seq {args.seq_len}, rank {args.rank}, targets {args.targets}\n")
    print(f"{'column':<17} {'steps':>5} {'tokens/s':>10} {'wall s':>8} "
          f"{'max RSS MiB':>11} {'sgemm GF/s':>10}")
    for c in cols:
        rss = c.get("max_rss_kib")
        print(f"{c['name']:<17} {fmt(c.get('steps'), '5d')} "
              f"{fmt(c.get('tokens_per_s'), '10.0f')} "
              f"{fmt(c.get('wall_s'), '8.1f')} "
              f"{fmt(rss / 1024 if rss else None, '11.1f')} "
              f"{fmt(c.get('sgemm_gflops'), '10.1f')}")
    print("\ntokens/s = sequence tokens (BOS..EOS, padding not counted) "
          "trained per second of the training loop (startup and model "
          "loading excluded). edgeloop pads each batch to a length bucket "
          "(L/4, L/2, L); pytorch pads to the longest sequence of the batch, "
          "which does no more padded work than the buckets.")
    for c in cols:
        print(f"\n[{c['name']}]")
        if "unavailable" in c:
            print(f"  not measured: {c['unavailable']}")
        for k in ("rate_field", "blas", "sgemm_checked", "command"):
            if k in c:
                print(f"  {k}: {c[k]}")
        if "positions_per_s_wall" in c:
            print(f"  positions/s from wall time incl. startup: "
                  f"{c['positions_per_s_wall']:.0f}")
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
