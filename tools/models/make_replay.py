#!/usr/bin/python3
"""Write tiny-bytes' rehearsal set, tools/models/tiny-bytes/replay.jsonl.

Rehearsal ("replay") mixes general text of the pretraining distribution into
every fine-tuning batch so a LoRA adapter learns a site's data without
forgetting general text (DESIGN.md "Data splits"). The lines come from the
same generator as the pretraining corpus (tools/data/make_data.py,
`general_line`) on a stream of its own (REPLAY_SEED), and every line that
equals a line of any tools/data/site-*/anchor.jsonl is dropped, because the
anchor files measure forgetting and must never be trained on. Duplicates
within the set are dropped too. The output is a pure function of this
script and make_data.py.

Usage: make_replay.py [--lines N] [--out FILE]
"""
import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
sys.path.insert(0, DATA)
import make_data  # noqa: E402

REPLAY_SEED = 301      # pretraining is stream 1, anchors 201/202, held-out 3
REPLAY_LINES = 1000


def anchor_lines():
    """Every text (or prompt + completion) of every site anchor file."""
    out = set()
    for path in sorted(glob.glob(os.path.join(DATA, "site-*", "anchor.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.add(make_data._key(json.loads(line)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=REPLAY_LINES)
    ap.add_argument("--out", default=os.path.join(HERE, "tiny-bytes",
                                                  "replay.jsonl"))
    args = ap.parse_args()
    banned = anchor_lines()
    if not banned:
        sys.exit("no tools/data/site-*/anchor.jsonl found; run make_data.py")
    import random
    r = random.Random(REPLAY_SEED)
    seen, records, dropped = set(), [], 0
    while len(records) < args.lines:
        line = make_data.general_line(r)
        if line in banned:
            dropped += 1
            continue
        if line in seen:
            continue
        seen.add(line)
        records.append({"text": line})
    make_data.write_jsonl(args.out, records)
    print(f"{args.out}: {len(records)} lines, {dropped} anchor lines dropped")


if __name__ == "__main__":
    main()
