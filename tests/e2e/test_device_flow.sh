#!/usr/bin/env bash
# The device flow from the command line (issue 4's done-when), on the cpu
# backend with a small random model (tiny_model.py, seed 5; no torch)
# and the bundled site-a data:
#   init -> ingest -> train (state mode) -> gate -> probation -> good
#   (feedback accepts); a bad update (trained on scrambled completions)
#   refused by the gate (exit 3, "gate_failed", version rejected, active
#   unchanged); an update that passes the gate but draws rejections on
#   probation rolled back automatically to the last good version; no new
#   data is exit 2 "no_data"; with [sync] encoding = lora-delta-q8 the
#   recorded version is parent + an 8-bit delta (what is gated is what is
#   synced); the standalone trainer still answers --model/--data/--out.
#   After each step `edgeloop check` must pass.
# usage: test_device_flow.sh EDGELOOP DATA_DIR
set -u
E=$(realpath "$1")
DATA=$(realpath "$2")
TMP=$(mktemp -d /tmp/el_device_flow.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export EDGELOOP_STATE="$TMP/state"
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
# jget FILE EXPR: a field of a JSON document, via python3's json module.
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

python3 "$(dirname "$0")/tiny_model.py" "$TMP/model" 5

# Data: two batches of real train data, holdout, anchor; and a scrambled
# batch whose text and completions are the same lines with their bytes
# shuffled (the same characters, none of the structure).
sed -n 1,120p "$DATA/train.jsonl" > "$TMP/train1.jsonl"
sed -n 121,240p "$DATA/train.jsonl" > "$TMP/train2.jsonl"
sed -n 1,60p "$DATA/holdout.jsonl" > "$TMP/holdout.jsonl"
sed -n 1,80p "$DATA/anchor.jsonl" > "$TMP/anchor.jsonl"
python3 - "$DATA/train.jsonl" "$TMP/scrambled.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
out = open(sys.argv[2], "w")
for i, line in enumerate(open(sys.argv[1])):
    if i < 400 or i >= 640:
        continue
    o = json.loads(line)
    for k in ("text", "completion"):
        if k in o:
            b = list(o[k] * 3)
            rng.shuffle(b)
            o[k] = "".join(b)
    out.write(json.dumps(o) + "\n")
PY

"$E" init --model "$TMP/model" >/dev/null
expect '[ $? -eq 0 ]' "init"
cat > "$EDGELOOP_STATE/edgeloop.conf" <<'CONF'
[train]
backend = cpu
steps = 30
rank = 4
alpha = 16
batch = 8
seq_len = 64
lr = 0.01
targets = q_proj,v_proj,down_proj
seed = 3
[gate]
min_gain = 0.01
max_forget = 0.5
[probation]
events = 4
min_events = 3
window = 4
max_reject_rate = 0.5
max_probe_regress = 0.5
[replay]
fraction = 0.25
CONF
for x in "train1 train" "holdout holdout" "anchor anchor"; do
  set -- $x
  "$E" ingest "$TMP/$1.jsonl" --split "$2" --json > "$TMP/ingest-$1.json" || bad "ingest $1"
done
anchor_replay=$(jget "$TMP/ingest-anchor.json" 'd["anchor_replay"]')
check() { "$E" check >/dev/null 2>&1 || bad "state check after $1"; }

expect '"$E" train --help | grep -q -- "--no-activate"' "train --help shows state mode"
expect '"$E" train --help | grep -q -- "--checkpoint-every"' "train --help shows standalone mode"
"$E" train --bogus >/dev/null 2>&1
expect '[ $? -eq 1 ]' "unknown flag is a usage error"

# 1. a good update: candidate -> gate passed -> probation -> good
"$E" train --threads 1 --json > "$TMP/t1.json"
rc=$?
expect '[ $rc -eq 0 ]' "train v1 exits 0 (rc=$rc)"
expect '[ "$(jget "$TMP/t1.json" "d[\"version\"]")" = 1 ]' "v1 recorded"
expect '[ "$(jget "$TMP/t1.json" "d[\"state\"]")" = probation ]' "v1 on probation"
expect '[ "$(jget "$TMP/t1.json" "d[\"parent\"]")" = None ]' "v1 trained from the base"
expect '[ "$(jget "$TMP/t1.json" "d[\"gate\"][\"pass\"]")" = True ]' "v1 passed the gate"
expect '[ "$(jget "$TMP/t1.json" "d[\"holdout_after\"] < d[\"holdout_before\"]")" = True ]' \
  "v1 holdout loss fell"
expect '[ "$(jget "$TMP/t1.json" "d[\"plasticity\"][\"update_norm\"] > 0")" = True ]' \
  "v1 update norm > 0"
expect '[ "$(jget "$TMP/t1.json" "1 <= d[\"plasticity\"][\"effective_rank\"] <= 4")" = True ]' \
  "v1 effective rank within [1, r]"
expect '[ "$(jget "$TMP/t1.json" "\"health_check\" in d")" = True ]' "v1 probe health check ran"
# before any accepted version only anchor-replay can be replayed: a quarter
# of the mix, i.e. new/3 of them, as many as exist
want=$(jget "$TMP/t1.json" "min($anchor_replay, int(d['samples_new'] / 3 + 0.5))")
expect '[ "$(jget "$TMP/t1.json" "d[\"samples_replay\"]")" = "$want" ]' \
  "v1 replays $want anchor-replay samples (a quarter of the mix)"
check "v1"
for i in 1 2 3 4; do "$E" feedback --accept >/dev/null || bad "feedback accept $i"; done
"$E" show 1 --json > "$TMP/s1.json"
expect '[ "$(jget "$TMP/s1.json" "d[\"state\"]")" = good ]' "v1 good after 4 accepts"
expect '[ "$(jget "$TMP/s1.json" "d[\"plasticity\"][\"update_norm\"] > 0")" = True ]' \
  "v1 plasticity recorded in the registry"

# 2. nothing new to train on: exit 2, no_data, nothing recorded
"$E" train --json > "$TMP/nodata.json"
rc=$?
expect '[ $rc -eq 2 ]' "no new data exits 2 (rc=$rc)"
expect '[ "$(jget "$TMP/nodata.json" "d[\"error\"][\"code\"]")" = no_data ]' "no_data code"

# 3. a bad update: scrambled data, refused by the gate
"$E" ingest "$TMP/scrambled.jsonl" --split train >/dev/null || bad "ingest scrambled"
"$E" train --threads 1 --json > "$TMP/t2.json"
rc=$?
expect '[ $rc -eq 3 ]' "scrambled update exits 3 (rc=$rc)"
expect '[ "$(jget "$TMP/t2.json" "d[\"error\"][\"code\"]")" = gate_failed ]' \
  "scrambled update: gate_failed"
"$E" show 2 --json > "$TMP/s2.json"
expect '[ "$(jget "$TMP/s2.json" "d[\"state\"]")" = rejected ]' "v2 rejected"
expect '[ "$(jget "$TMP/s2.json" "d[\"parent\"]")" = 1 ]' "v2 trained from v1"
"$E" show 1 --json > "$TMP/s1.json"
expect '[ "$(jget "$TMP/s1.json" "d[\"active\"]")" = True ]' "v1 still active"
check "v2"

# 4. passes the gate, draws rejections on probation: rolled back to v1
"$E" ingest "$TMP/train2.jsonl" --split train >/dev/null || bad "ingest train2"
"$E" train --threads 1 --json > "$TMP/t3.json"
rc=$?
expect '[ $rc -eq 0 ]' "train v3 exits 0 (rc=$rc)"
expect '[ "$(jget "$TMP/t3.json" "d[\"state\"]")" = probation ]' "v3 on probation"
expect '[ "$(jget "$TMP/t3.json" "d[\"parent\"]")" = 1 ]' "v3 trained from v1"
expect '[ "$(jget "$TMP/t3.json" "d[\"samples_replay\"] > 0")" = True ]' \
  "v3 replays v1's accepted data"
for i in 1 2 3; do "$E" feedback --reject >/dev/null; done
"$E" show 3 --json > "$TMP/s3.json"
expect '[ "$(jget "$TMP/s3.json" "d[\"state\"]")" = rolled_back ]' "v3 rolled back by probation"
"$E" show 1 --json > "$TMP/s1.json"
expect '[ "$(jget "$TMP/s1.json" "d[\"active\"]")" = True ]' "v1 active again"
check "v3"
expect '"$E" audit --verify >/dev/null' "audit chain verifies"
expect '"$E" audit --json | grep -q gate' "gate verdicts in the audit chain"

# 5. [sync] encoding = lora-delta-q8: what is gated is what is synced, so
#    the recorded adapter is parent + an 8-bit delta: every row of
#    (version - parent) is a multiple of its own max|row| / 127.
printf '[sync]\nencoding = lora-delta-q8\n' >> "$EDGELOOP_STATE/edgeloop.conf"
sed -n 241,360p "$DATA/train.jsonl" > "$TMP/train3.jsonl"
"$E" ingest "$TMP/train3.jsonl" --split train >/dev/null || bad "ingest train3"
"$E" train --threads 1 --json > "$TMP/t4.json"
rc=$?
expect '[ $rc -eq 0 ] || [ $rc -eq 3 ]' "q8 training recorded a verdict (rc=$rc)"
"$E" show 4 --json > "$TMP/s4.json"
expect '[ "$(jget "$TMP/s4.json" "d[\"recipe\"][\"encoding\"]")" = lora-delta-q8 ]' \
  "v4 recipe says lora-delta-q8"
expect '[ "$(jget "$TMP/s4.json" "d[\"parent\"]")" = 1 ]' "v4 trained from v1"
"$E" export 4 --peft "$TMP/v4" >/dev/null && "$E" export 1 --peft "$TMP/v1" >/dev/null
expect 'python3 - "$TMP/v1/adapter_model.safetensors" "$TMP/v4/adapter_model.safetensors" <<'"'"'PY'"'"'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        vals = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
        out[k] = (v["shape"], vals)
    return out
p, c = load(sys.argv[1]), load(sys.argv[2])
assert p.keys() == c.keys()
rows = 0
for k in c:
    shape, cv = c[k]
    pv = p[k][1]
    cols = shape[1]
    for r in range(shape[0]):
        d = [cv[r * cols + j] - pv[r * cols + j] for j in range(cols)]
        m = max(abs(x) for x in d)
        if m == 0:
            continue
        s = m / 127
        assert all(abs(x / s - round(x / s)) < 0.05 for x in d), (k, r)
        rows += 1
assert rows > 0
PY' "v4 = v1 + an 8-bit delta, row by row"

# 6. --model/--data/--out is still the standalone trainer
"$E" train --model "$TMP/model" --data "$TMP/train1.jsonl" --out "$TMP/standalone" \
  --backend cpu --threads 1 --steps 2 --batch 2 --seq-len 32 --rank 2 \
  --targets q_proj >/dev/null 2>&1
expect '[ $? -eq 0 ] && [ -f "$TMP/standalone/adapter_model.safetensors" ]' \
  "standalone train still works"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
