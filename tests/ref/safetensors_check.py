#!/usr/bin/python3
"""Strictly validate a safetensors file as the Python library writes it.

Independent of llama_ref.py's reader (so a shared bug cannot hide), using only
the standard library. Checks, in order, each before the bytes it guards are
read:
  1. the file holds the 8-byte little-endian header length N, N > 0,
     N <= 100 MiB and 8 + N <= file size;
  2. N is a multiple of 8 and the header is UTF-8 JSON starting with '{',
     followed only by space padding (the library pads with b' ');
  3. the JSON is one object without duplicate keys; "__metadata__", if
     present, maps strings to strings;
  4. every other entry has exactly "dtype", "shape", "data_offsets"; a known
     dtype; a shape of non-negative ints; offsets [begin, end] with
     end - begin == prod(shape) * dtype size;
  5. sorted by begin, the spans are contiguous from 0 (no gap, no overlap)
     and the last one ends exactly at end of file.
Usage: safetensors_check.py FILE [--expect NAME:DTYPE:D0xD1...]...
Exit 0 and print a one-line summary when valid; exit 1 with a message naming
the fault otherwise.
"""
import json
import os
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
         "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
         "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER = 100 * 1024 * 1024


class Invalid(Exception):
    pass


def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Invalid(f"duplicate key {k!r} in header")
        d[k] = v
    return d


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def check(path):
    """Return a list of (name, dtype, shape) in storage order; raise Invalid."""
    size = os.path.getsize(path)
    if size < 8:
        raise Invalid(f"file is {size} bytes, shorter than the header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n == 0 or n > MAX_HEADER:
            raise Invalid(f"header length {n} out of range")
        if 8 + n > size:
            raise Invalid(f"header length {n} runs past end of file "
                          f"({size} bytes)")
        if n % 8:
            raise Invalid(f"header length {n} is not a multiple of 8")
        raw = f.read(n)
    if raw[:1] != b"{":
        raise Invalid("header does not start with '{'")
    body = raw.rstrip(b" ")
    if not body.endswith(b"}"):
        raise Invalid("header is not a JSON object followed by space padding")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"header is not UTF-8: {e}") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_dupes)
    except json.JSONDecodeError as e:
        raise Invalid(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise Invalid("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in meta.items()):
            raise Invalid("__metadata__ is not a string-to-string map")
    spans = []
    for name, info in header.items():
        if not name:
            raise Invalid("empty tensor name")
        if not isinstance(info, dict) or \
                set(info) != {"dtype", "shape", "data_offsets"}:
            raise Invalid(f"{name}: entry must have exactly dtype, shape, "
                          f"data_offsets")
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in SIZES:
            raise Invalid(f"{name}: unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(
                _is_int(d) and d >= 0 for d in shape):
            raise Invalid(f"{name}: bad shape {shape!r}")
        if not isinstance(offs, list) or len(offs) != 2 or not all(
                _is_int(o) and o >= 0 for o in offs) or offs[0] > offs[1]:
            raise Invalid(f"{name}: bad data_offsets {offs!r}")
        count = 1
        for d in shape:
            count *= d
        if offs[1] - offs[0] != count * SIZES[dt]:
            raise Invalid(f"{name}: span {offs[1] - offs[0]} bytes != shape "
                          f"{shape} x {SIZES[dt]} bytes")
        spans.append((offs[0], offs[1], name, dt, shape))
    spans.sort()
    pos = 0
    for begin, end, name, _, _ in spans:
        if begin != pos:
            raise Invalid(f"{name}: starts at {begin}, expected {pos} "
                          f"({'gap' if begin > pos else 'overlap'})")
        pos = end
    if 8 + n + pos != size:
        raise Invalid(f"data ends at {8 + n + pos}, file is {size} bytes")
    return [(name, dt, shape) for _, _, name, dt, shape in spans]


def main(argv):
    args = argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 1
    path, expects = args[0], {}
    rest = args[1:]
    while rest:
        if rest[0] != "--expect" or len(rest) < 2:
            print(f"safetensors_check.py: unexpected argument {rest[0]}",
                  file=sys.stderr)
            return 1
        name, dt, dims = rest[1].rsplit(":", 2)
        expects[name] = (dt, [int(d) for d in dims.split("x")] if dims
                         else [])
        rest = rest[2:]
    try:
        tensors = check(path)
    except (Invalid, OSError) as e:
        print(f"{path}: invalid safetensors: {e}", file=sys.stderr)
        return 1
    found = {name: (dt, shape) for name, dt, shape in tensors}
    for name, want in expects.items():
        if found.get(name) != want:
            print(f"{path}: {name} is {found.get(name)}, expected {want}",
                  file=sys.stderr)
            return 1
    print(f"{path}: ok, {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
