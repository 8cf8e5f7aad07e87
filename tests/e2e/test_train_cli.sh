#!/usr/bin/env bash
# edgeloop train / eval / generate from the command line, on the cpu backend,
# with a small random model (tiny_model.py, seed 5; plain Python, no torch):
#  - --help, usage errors (exit 1, --json error object), bad data (exit 2,
#    file:line), --bad-lines skip;
#  - a run killed with SIGKILL right after a checkpoint, and one killed inside
#    the checkpoint's atomic write, then resumed, end with the same adapter
#    bytes as an uninterrupted run; so does a loop of random kills + --resume;
#  - MODEL/replay.jsonl is mixed into batches by default (also in the resume
#    runs); --replay FILE loses its lines equal to a --holdout line;
#    --replay none turns rehearsal off;
#  - eval and generate outputs (JSON fields, greedy determinism).
set -u
EL="${EDGELOOP_BUILD_ROOT:-build}/agent/edgeloop"
TMP=$(mktemp -d /tmp/el_train_cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }

/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$TMP/model" 5
M="$TMP/model"
{
  for i in $(seq 1 24); do
    echo "{\"text\": \"PRESS-0$((i % 9)) pressure=$((150 + i))bar status=OK\"}"
    echo "{\"prompt\": \"PRESS-0$((i % 9)) WARN Action:\", \"completion\": \" check seal $i\"}"
  done
} > "$TMP/train.jsonl"
head -n 6 "$TMP/train.jsonl" > "$TMP/holdout.jsonl"
# the model's rehearsal set, mixed into every batch by default (so the
# resume tests below run with replay on); a copy that also holds a holdout
# line, which train must drop
for i in $(seq 1 20); do
  echo "{\"text\": \"Anna reads $i books in the garden.\"}"
done > "$M/replay.jsonl"
cat "$TMP/holdout.jsonl" "$M/replay.jsonl" > "$TMP/replay_dup.jsonl"
printf '{"text": "ok"}\n{"text": 3}\n' > "$TMP/bad.jsonl"
COMMON=(--model "$M" --data "$TMP/train.jsonl" --backend cpu --threads 1 --steps 8
        --batch 2 --seq-len 40 --seed 4 --rank 4 --targets q_proj,v_proj,down_proj)

# help and usage
expect '"$EL" train --help | grep -q -- "--checkpoint-every"' "train --help"
expect '"$EL" eval --help | grep -q -- "--adapter"' "eval --help"
expect '"$EL" generate --help | grep -q -- "--temperature"' "generate --help"
"$EL" train --data x >/dev/null 2>&1; expect '[ $? -eq 1 ]' "missing --model is a usage error (1)"
out=$("$EL" train --data x --json 2>/dev/null)
expect 'echo "$out" | /usr/bin/python3 -c "import json,sys; e=json.load(sys.stdin)[\"error\"]; assert e[\"code\"] and e[\"message\"]"' \
  "--json usage error is an error object"
"$EL" train --model "$M" --data x --out "$TMP/o" --steps zero >/dev/null 2>&1
expect '[ $? -eq 1 ]' "bad --steps value is a usage error"
err=$("$EL" eval --model "$M" --data "$TMP/bad.jsonl" 2>&1 >/dev/null); rc=$?
expect '[ $rc -eq 2 ] && echo "$err" | grep -q "bad.jsonl:2"' "malformed line: exit 2 naming file:line"
"$EL" eval --model "$M" --data "$TMP/bad.jsonl" --bad-lines skip --json >/dev/null 2>&1
expect '[ $? -eq 0 ]' "--bad-lines skip evaluates the good lines"
"$EL" eval --model "$TMP/nomodel" --data "$TMP/train.jsonl" >/dev/null 2>&1
expect '[ $? -eq 2 ]' "missing model dir: exit 2"

# uninterrupted reference run
"$EL" train "${COMMON[@]}" --out "$TMP/a" --checkpoint-every 3 --holdout "$TMP/holdout.jsonl" \
  --json > "$TMP/a.json"
expect '[ $? -eq 0 ] && [ -f "$TMP/a/adapter_model.safetensors" ] && [ -f "$TMP/a/adapter_config.json" ]' \
  "train writes a PEFT adapter"
expect '[ ! -e "$TMP/a/checkpoint.safetensors" ]' "checkpoint removed after success"
expect '/usr/bin/python3 -c "
import json,sys
j=json.load(open(sys.argv[1]))
for k in (\"train_loss\",\"holdout_loss_before\",\"holdout_loss_after\",\"tokens_per_s\",\"steps\",\"backend\"): assert k in j, k
assert j[\"steps\"] == 8 and j[\"backend\"].startswith(\"cpu\")
" "$TMP/a.json"' "train --json fields"
expect 'grep -q "\"peft_type\": \"LORA\"" "$TMP/a/adapter_config.json" && grep -q "\"task_type\": \"CAUSAL_LM\"" "$TMP/a/adapter_config.json"' \
  "adapter_config.json is PEFT"
expect '/usr/bin/python3 -c "
import json,sys
j=json.load(open(sys.argv[1]))
assert j[\"replay\"].endswith(\"model/replay.jsonl\") and j[\"replay_rows\"] == 1, j
assert j[\"replay_sequences\"] == 20 and j[\"replay_excluded\"] == 0, j
" "$TMP/a.json"' "MODEL/replay.jsonl is rehearsed by default"
"$EL" train "${COMMON[@]}" --out "$TMP/n" --replay "$TMP/replay_dup.jsonl" \
  --holdout "$TMP/holdout.jsonl" --steps 2 --json > "$TMP/n.json"
expect '/usr/bin/python3 -c "
import json,sys
j=json.load(open(sys.argv[1]))
assert j[\"replay_sequences\"] == 20 and j[\"replay_excluded\"] == 6, j
" "$TMP/n.json"' "--replay FILE: lines equal to a --holdout line are dropped"
"$EL" train "${COMMON[@]}" --out "$TMP/o" --replay none --steps 2 --json > "$TMP/o.json"
expect '/usr/bin/python3 -c "
import json,sys
j=json.load(open(sys.argv[1]))
assert j[\"replay\"] is None and j[\"replay_rows\"] == 0, j
" "$TMP/o.json"' "--replay none turns rehearsal off"

# killed right after the first checkpoint, then resumed
EDGELOOP_CRASH_AT=train.after_checkpoint "$EL" train "${COMMON[@]}" --out "$TMP/b" \
  --checkpoint-every 3 >/dev/null 2>&1
rc=$?
expect '[ $rc -eq 137 ] && [ -f "$TMP/b/checkpoint.safetensors" ] && [ ! -e "$TMP/b/adapter_model.safetensors" ]' \
  "killed (SIGKILL) after the step-3 checkpoint"
"$EL" train "${COMMON[@]}" --out "$TMP/b" --checkpoint-every 3 --resume --json > "$TMP/b.json"
expect '[ $? -eq 0 ] && grep -q "\"resumed_from_step\": 3" "$TMP/b.json"' "resumed from step 3"
expect 'cmp -s "$TMP/a/adapter_model.safetensors" "$TMP/b/adapter_model.safetensors" && cmp -s "$TMP/a/adapter_config.json" "$TMP/b/adapter_config.json"' \
  "resumed adapter == uninterrupted adapter (bytes)"

# killed inside the checkpoint's atomic write: no checkpoint survives
EDGELOOP_CRASH_AT=fs.before_rename "$EL" train "${COMMON[@]}" --out "$TMP/c" \
  --checkpoint-every 3 >/dev/null 2>&1
expect '[ $? -eq 137 ] && [ ! -e "$TMP/c/checkpoint.safetensors" ]' "kill before rename leaves no checkpoint"
"$EL" train "${COMMON[@]}" --out "$TMP/c" --checkpoint-every 3 --resume >/dev/null 2>&1
expect 'cmp -s "$TMP/a/adapter_model.safetensors" "$TMP/c/adapter_model.safetensors"' \
  "restart after a torn checkpoint == uninterrupted"

# random kills at any crash point, resumed until it finishes
for i in $(seq 1 30); do
  EDGELOOP_CRASH_AT="random:$i:150" "$EL" train "${COMMON[@]}" --out "$TMP/d" \
    --checkpoint-every 2 --resume >/dev/null 2>&1 && break
done
expect 'cmp -s "$TMP/a/adapter_model.safetensors" "$TMP/d/adapter_model.safetensors"' \
  "random kill loop + --resume == uninterrupted (checkpoint every 2: recipe differs only in checkpointing)"
"$EL" train "${COMMON[@]}" --out "$TMP/e" --checkpoint-every 3 --resume --lr 0.01 >/dev/null 2>&1
expect '[ $? -eq 0 ]' "--resume without a checkpoint starts fresh"
EDGELOOP_CRASH_AT=train.after_checkpoint "$EL" train "${COMMON[@]}" --out "$TMP/f" \
  --checkpoint-every 3 >/dev/null 2>&1
err=$("$EL" train "${COMMON[@]}" --out "$TMP/f" --checkpoint-every 3 --resume --lr 0.5 2>&1)
expect '[ $? -eq 2 ] && echo "$err" | grep -q "other settings"' "resume with other settings is refused"

# eval and generate
j=$("$EL" eval --model "$M" --adapter "$TMP/a" --data "$TMP/holdout.jsonl" --backend cpu --json)
expect 'echo "$j" | /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); assert j[\"loss\"] > 0 and j[\"tokens\"] > 0"' \
  "eval --json has loss and tokens"
after=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["holdout_loss_after"])' "$TMP/a.json")
expect '/usr/bin/python3 -c "import json,sys; assert abs(json.loads(sys.argv[1])[\"loss\"] - float(sys.argv[2])) < 1e-6" "$j" "$after"' \
  "eval of the saved adapter == train's holdout_loss_after"
g1=$("$EL" generate --model "$M" --adapter "$TMP/a" --prompt "PRESS-07" --max-tokens 6 --temperature 0 --backend cpu)
g2=$("$EL" generate --model "$M" --adapter "$TMP/a" --prompt "PRESS-07" --max-tokens 6 --temperature 0 --backend cpu)
expect '[ -n "$g1" ] && [ "$g1" = "$g2" ] && [[ "$g1" == PRESS-07* ]]' "greedy generate is deterministic"
"$EL" generate --model "$M" --prompt "x" --max-tokens 4 --seed 3 --json --backend cpu > "$TMP/g.json"
expect '/usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert 1 <= j[\"tokens\"] <= 4" "$TMP/g.json"' \
  "generate --json"

echo "test_train_cli: $fails failed"
[ "$fails" -eq 0 ]
