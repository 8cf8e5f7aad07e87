#!/usr/bin/env bash
# Exact deltas bit for bit (DESIGN.md "Deltas": device and hub hold
# bit-identical weights). For lora-delta-exact and lora-delta-q8, and for a
# version with a parent: train (state mode) -> `edgeloop bundle` -> rebuild
# the adapter from the bundle bytes with sync/delta.h alone, as the hub does
# (delta_rebuild_check) -> every value equal, bit for bit, to the adapter
# the registry stores (`edgeloop export`). Also: a scratch folder left by a
# killed command (train-work.PID of a dead pid) is gone after the next open.
# usage: test_delta_rebuild.sh EDGELOOP EDGELOOP_FLEET DELTA_REBUILD_CHECK DATA_DIR
set -u
E=$(realpath "$1")
F=$(realpath "$2")
CHECKER=$(realpath "$3")
DATA=$(realpath "$4")
T=$(mktemp -d /tmp/el_delta_rebuild.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
export EDGELOOP_STATE="$T/state" EDGELOOP_FLEET="$T/fleet"
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
run() { "$@" >"$T/out" 2>&1 || { echo "command failed: $*"; cat "$T/out"; bad "$*"; }; }

# A small random model (same generator as the other e2e tests).
python3 "$(dirname "$0")/tiny_model.py" "$T/model" 11 --layers 1 --hidden 16 --unit-norms

# The fleet and an enrolled device (a delta is signed by the device key).
run "$F" ca init
for k in root1 rel1; do run "$F" keys gen $k; done
run "$F" root init --root-key root1 --root-threshold 1 --release-key rel1 \
  --release-threshold 1 --expires 365d
run "$E" init --model "$T/model"
run "$E" enroll --csr-out "$T/dev.csr" --name dev-1
run "$F" issue --csr "$T/dev.csr" --role device --group line-a -o "$T/dev.crt"
run "$E" enroll --cert "$T/dev.crt" --ca "$T/fleet/ca.crt" --root "$T/fleet/root.elb"

# Every version passes the gate (this test is about bytes, not quality) and
# becomes the parent of the next. Large steps make deltas larger than
# parents, where fp32 parent + (next - parent) is not always next.
cat >> "$EDGELOOP_STATE/edgeloop.conf" <<'CONF'
[train]
backend = cpu
steps = 8
rank = 4
batch = 4
seq_len = 32
lr = 0.02
targets = q_proj,k_proj,v_proj,o_proj,up_proj,down_proj
seed = 5
[gate]
min_gain = 0
max_forget = 1
[sync]
encoding = lora-delta-exact
CONF
sed -n 1,20p "$DATA/holdout.jsonl" > "$T/holdout.jsonl"
sed -n 1,20p "$DATA/anchor.jsonl" > "$T/anchor.jsonl"
run "$E" ingest "$T/holdout.jsonl" --split holdout
run "$E" ingest "$T/anchor.jsonl" --split anchor

# train_version N FIRST_LINE: ingests 16 new train lines, trains version N
# (a gate refusal, exit 3, still records it; only an active one is a parent).
# (expect evals its condition in its own scope: it sees these locals, not $1)
train_version() {
  local n=$1
  sed -n "$2,$(($2 + 15))p" "$DATA/train.jsonl" > "$T/train$n.jsonl"
  run "$E" ingest "$T/train$n.jsonl" --split train
  "$E" train --threads 1 --json > "$T/t$n.json" 2>"$T/t$n.err"
  local rc=$?
  expect '{ [ $rc -eq 0 ] || [ $rc -eq 3 ]; } && [ "$(jget "$T/t$n.json" "d[\"version\"]")" = $n ]' \
    "version $n recorded (rc=$rc)"
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || cat "$T/t$n.err"
  run "$E" export "$n" --peft "$T/v$n"
}

# check_version N ENCODING: bundle N, rebuild it from the bundle bytes as
# the hub does, against its recorded parent.
check_version() {
  local n=$1 enc=$2 parent=- p
  p=$(jget "$T/t$n.json" 'd["parent"]')
  run "$E" bundle "$n" -o "$T/v$n.elb"
  [ "$p" = None ] || parent="$T/v$p/adapter_model.safetensors"
  "$CHECKER" "$T/v$n.elb" "$parent" "$T/v$n/adapter_model.safetensors" > "$T/c$n.out"
  local rc=$?
  cat "$T/c$n.out"
  expect '[ $rc -eq 0 ]' "v$n ($enc, parent $p): hub rebuild is bit-identical to the registry's adapter"
  expect 'grep -q "$enc" "$T/c$n.out"' "v$n's bundle is $enc"
}

train_version 1 1
expect '[ "$(jget "$T/t1.json" "d[\"state\"]")" = probation ]' "v1 active (the parent of what follows)"
train_version 2 17
expect '[ "$(jget "$T/t2.json" "d[\"parent\"]")" != None ]' "v2 has a parent"
check_version 1 lora-delta-exact
check_version 2 lora-delta-exact

printf '[sync]\nencoding = lora-delta-q8\n' >> "$EDGELOOP_STATE/edgeloop.conf"
train_version 3 33
train_version 4 49
expect '[ "$(jget "$T/t3.json" "d[\"parent\"]")" != None ] && [ "$(jget "$T/t4.json" "d[\"parent\"]")" != None ]' \
  "q8 versions have parents"
check_version 3 "lora-delta-"
check_version 4 "lora-delta-"
# the q8 rebuild reproduces itself in all but rare rows; those go exact
expect 'grep -q lora-delta-q8 "$T/c3.out" || grep -q lora-delta-q8 "$T/c4.out"' \
  "q8 versions travel as q8"

# A train-work folder of a dead process goes at the next open.
sh -c 'exit 0' &
dead=$!
wait $dead
mkdir -p "$EDGELOOP_STATE/train-work.$dead/adapter"
echo x > "$EDGELOOP_STATE/train-work.$dead/adapter/adapter_model.safetensors"
mkdir -p "$EDGELOOP_STATE/train-work.$$"
run "$E" check
expect '[ ! -e "$EDGELOOP_STATE/train-work.$dead" ]' "train-work of a dead pid removed at open"
expect '[ -d "$EDGELOOP_STATE/train-work.$$" ]' "train-work of a live pid kept"
expect '"$E" check >/dev/null 2>&1' "state check passes"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
