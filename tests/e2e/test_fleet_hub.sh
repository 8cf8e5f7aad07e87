#!/usr/bin/env bash
# edgeloop-fleet's hub commands against a real edgeloop-hub on 127.0.0.1 (a
# port chosen at run time), and the device's trusted time from the hub:
#  - release push publishes a 2-of-2 signed release (201), again is
#    idempotent (200), and a 1-of-2 signed one is refused with exit 3;
#  - status lists an enrolled device after its sync (table and --json);
#  - promote fetches a device's delta, verifies and rebuilds it, and makes an
#    unsigned release; signed 2-of-2 and pushed, a second device installs it;
#  - a device whose clock is set back (EDGELOOP_NOW) takes the hub's time at
#    its sync and then refuses an expired release it accepted before.
# argv: edgeloop, edgeloop-hub, edgeloop-fleet executables.
set -u
EL="$1"
HUB="$2"
FLEET="$3"
TMP=$(mktemp -d /tmp/el_fleethub.XXXXXX)
HUB_PID=
cleanup() {
  if [ -n "$HUB_PID" ]; then kill -9 "$HUB_PID"; wait "$HUB_PID"; fi 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
quiet() { "$@" >"$TMP/out" 2>&1 || { echo "FAIL: $*"; cat "$TMP/out"; fails=$((fails + 1)); }; }
jget() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" "$1" "$2"; }
rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

NOW=$(date +%s)
DAY=86400
# The fleet is made 60 days ago, so that a device whose clock is 50 days
# behind still accepts its certificates and root.
export EDGELOOP_FLEET="$TMP/fleet"
export EDGELOOP_FLEET_NOW=$(rfc3339 $((NOW - 60 * DAY)))
F="$FLEET"
quiet "$F" ca init
for k in root1 rel1 rel2; do quiet "$F" keys gen "$k"; done
quiet "$F" root init --root-key root1 --root-threshold 1 --release-key rel1 rel2 \
  --release-threshold 2 --expires 365d
ROOT1=$(ls "$EDGELOOP_FLEET"/root*.elb | head -n 1)
CA="$EDGELOOP_FLEET/ca.crt"
quiet "$F" csr --cn localhost --key-out "$TMP/hub.key" -o "$TMP/hub.csr"
quiet "$F" issue --csr "$TMP/hub.csr" --role hub --name localhost -o "$TMP/hub.crt"
quiet "$F" csr --cn admin-1 --key-out "$TMP/admin.key" -o "$TMP/admin.csr"
quiet "$F" issue --csr "$TMP/admin.csr" --role admin -o "$TMP/admin.crt"

"$HUB" serve --listen 127.0.0.1:0 --port-file "$TMP/port" --cert "$TMP/hub.crt" \
  --key "$TMP/hub.key" --ca "$CA" --root "$ROOT1" --data "$TMP/hubdata" >>"$TMP/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/port")
H=(--hub "https://localhost:$PORT" --cert "$TMP/admin.crt" --key "$TMP/admin.key" --ca "$CA")

# a small random Llama for the device (cpu training takes a second)
/usr/bin/python3 - "$TMP/model" <<'PY'
import json, os, random, struct, sys
d = sys.argv[1]
os.makedirs(d)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 259,
           "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": True,
           "edgeloop_tokenizer": "bytes-v1"}, open(os.path.join(d, "config.json"), "w"))
rng = random.Random(11)
H, I, KV = 32, 48, 16
p = "model.layers.0."
shapes = {"model.embed_tokens.weight": (259, H), "model.norm.weight": (H,),
          p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
          p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
          p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
          p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
          p + "post_attention_layernorm.weight": (H,)}
header, blob = {}, b""
for name in sorted(shapes):
    n = 1
    for x in shapes[name]:
        n *= x
    vals = [1.0 if len(shapes[name]) == 1 else rng.uniform(-0.3, 0.3) for _ in range(n)]
    header[name] = {"dtype": "F32", "shape": list(shapes[name]),
                    "data_offsets": [len(blob), len(blob) + 4 * n]}
    blob += struct.pack(f"<{n}f", *vals)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + blob)
PY
lines() { # lines N PREFIX: N samples unique to PREFIX
  for i in $(seq 1 "$1"); do
    echo "{\"prompt\": \"$2 PRESS-0$((i % 9)) pressure=$((150 + i))bar Action:\", \"completion\": \" check seal $i\"}"
  done
}

lines() { # lines N PREFIX: N samples unique to PREFIX
  for i in $(seq 1 "$1"); do
    echo "{\"prompt\": \"$2 PRESS-0$((i % 9)) pressure=$((150 + i))bar Action:\", \"completion\": \" check seal $i\"}"
  done
}
device() { # device STATE NAME GROUP: init + enroll against the hub
  quiet "$EL" init --state "$1" --model "$TMP/model"
  quiet "$EL" enroll --state "$1" --csr-out "$TMP/$2.csr" --name "$2"
  quiet "$F" issue --csr "$TMP/$2.csr" --role device --group "$3" -o "$TMP/$2.crt"
  quiet "$EL" enroll --state "$1" --cert "$TMP/$2.crt" --ca "$CA" --root "$ROOT1" \
    --hub "https://localhost:$PORT"
}

# ---- release push ----
unset EDGELOOP_FLEET_NOW
printf '[probation]\nevents = 7\n' >"$TMP/policy.ini"
quiet "$F" release create --kind policy --policy "$TMP/policy.ini" --target line-z --counter 1 \
  --expires 30d -o "$TMP/pol.elb"
quiet "$F" release sign "$TMP/pol.elb" --key rel1
cp "$TMP/pol.elb" "$TMP/pol-half.elb"
"$F" release push "$TMP/pol-half.elb" "${H[@]}" --json >"$TMP/half.json" 2>/dev/null
expect '[ $? -eq 3 ] && [ "$(jget "$TMP/half.json" "[\"error\"][\"code\"]")" = threshold_not_met ]' \
       "push of a 1-of-2 signed release: refused, exit 3, threshold_not_met"
quiet "$F" release sign "$TMP/pol.elb" --key rel2
"$F" release push "$TMP/pol.elb" "${H[@]}" --json >"$TMP/push1.json" 2>"$TMP/push1.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/push1.json" "[\"created\"]")" = True ]' \
       "push of a 2-of-2 signed release: created (201)"
"$F" release push "$TMP/pol.elb" "${H[@]}" >"$TMP/push2.out" 2>&1
expect '[ $? -eq 0 ] && grep -q "already published" "$TMP/push2.out"' \
       "pushing it again: idempotent (200)"
"$F" release push "$TMP/pol.elb" --hub "https://localhost:$PORT" >/dev/null 2>&1
expect '[ $? -eq 1 ]' "push without --cert/--key/--ca: usage, exit 1"
"$F" release push "$TMP/policy.ini" "${H[@]}" >/dev/null 2>&1
expect '[ $? -eq 2 ]' "push of a file that is no bundle: bad input, exit 2"

# ---- a device trains, syncs, shows in status ----
S1="$TMP/dev1"
device "$S1" dev-1 line-a
printf '\n[train]\nbackend = cpu\nsteps = 2\nbatch = 2\nseq_len = 48\nrank = 2\n' >>"$S1/edgeloop.conf"
printf '[gate]\nmin_gain = 0\nmax_forget = 1\n' >>"$S1/edgeloop.conf"
printf '[probation]\nevents = 1\nmin_events = 1\nmax_probe_regress = 1\n' >>"$S1/edgeloop.conf"
lines 30 train >"$TMP/train.jsonl"
lines 20 hold >"$TMP/hold.jsonl"
lines 30 anchor >"$TMP/anchor.jsonl"
quiet "$EL" ingest --state "$S1" --split train "$TMP/train.jsonl"
quiet "$EL" ingest --state "$S1" --split holdout "$TMP/hold.jsonl"
quiet "$EL" ingest --state "$S1" --split anchor "$TMP/anchor.jsonl"
quiet "$EL" train --state "$S1"
quiet "$EL" feedback --state "$S1" --accept
"$EL" sync --state "$S1" --json >"$TMP/s1.json" 2>"$TMP/s1.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s1.json" "[\"uploaded\"]")" = 1 ]' \
       "device 1 syncs and uploads its delta"
BUNDLE=$(jget "$TMP/s1.json" '["events"][0]["bundle"]')
"$F" status "${H[@]}" >"$TMP/status.out" 2>&1
expect '[ $? -eq 0 ] && grep -E -q "^dev-1 +line-a +[0-9]+ +good " "$TMP/status.out"' \
       "status table lists dev-1: group, active version, state"
"$F" status "${H[@]}" --json >"$TMP/status.json" 2>/dev/null
expect '[ "$(jget "$TMP/status.json" "[0][\"id\"]")" = dev-1 ] &&
        [ "$(jget "$TMP/status.json" "[0][\"status\"][\"audit\"][\"seq\"] > 0")" = True ]' \
       "status --json: the device list with its last report"

# ---- promote -> sign 2-of-2 -> push -> a second device installs it ----
"$F" promote 0000000000000000000000000000000000000000000000000000000000000000 "${H[@]}" \
  --target line-a --counter 1 -o "$TMP/none.elb" >/dev/null 2>&1
expect '[ $? -eq 2 ] && [ ! -e "$TMP/none.elb" ]' "promote of an unknown bundle: exit 2, nothing written"
"$F" promote "$BUNDLE" "${H[@]}" --target line-a --counter 1 --expires 30d \
  -o "$TMP/promo.elb" --json >"$TMP/promo.json" 2>"$TMP/promo.err"
expect '[ $? -eq 0 ] && [ -s "$TMP/promo.elb" ]' "promote writes a release"
"$F" release push "$TMP/promo.elb" "${H[@]}" >/dev/null 2>&1
expect '[ $? -eq 3 ]' "the unsigned promoted release is refused by the hub"
quiet "$F" release sign "$TMP/promo.elb" --key rel1
quiet "$F" release sign "$TMP/promo.elb" --key rel2
"$F" release push "$TMP/promo.elb" "${H[@]}" >/dev/null 2>&1
expect '[ $? -eq 0 ]' "the 2-of-2 signed promoted release is published"
S2="$TMP/dev2"
device "$S2" dev-2 line-a
"$EL" sync --state "$S2" --json >"$TMP/s2.json" 2>"$TMP/s2.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s2.json" "[\"installed\"]")" = 1 ]' \
       "device 2 syncs and installs the promoted adapter"
RESULT=$(jget "$TMP/promo.json" '["result"]')
"$EL" versions --state "$S2" --json >"$TMP/v2.json" 2>/dev/null
expect 'grep -q fleet "$TMP/v2.json"' "device 2 holds a fleet version"
"$EL" rollback --state "$S2" --to base >/dev/null 2>&1
expect '[ $? -eq 0 ]' "device 2 rolls the fleet version back (it was on probation)"
quiet "$EL" sync --state "$S2"
"$F" status "${H[@]}" >"$TMP/status2.out" 2>&1
expect 'grep -E -q "^dev-2 +line-a +- +base +[0-9T:Z-]+ +[a-z]" "$TMP/status2.out" &&
        ! grep -E -q "^dev-2 .* -$" "$TMP/status2.out"' \
       "status shows device 2 on the base with its last rollback's reason"
grep -E -q "^dev-1 .* -$" "$TMP/status2.out"
expect '[ $? -eq 0 ]' "a device that never rolled back shows -"

# ---- promote of a second version: the parent chain is rebuilt ----
lines 30 more >"$TMP/train2.jsonl"
quiet "$EL" ingest --state "$S1" --split train "$TMP/train2.jsonl"
quiet "$EL" train --state "$S1"
quiet "$EL" feedback --state "$S1" --accept
"$EL" sync --state "$S1" --json >"$TMP/s1b.json" 2>/dev/null
expect '[ "$(jget "$TMP/s1b.json" "[\"uploaded\"]")" = 1 ]' "device 1 uploads its second version"
BUNDLE2=$(jget "$TMP/s1b.json" '["events"][0]["bundle"]')   # uploads come first
"$F" promote "$BUNDLE2" "${H[@]}" --target dev-2 --counter 2 -o "$TMP/promo2.elb" \
  --json >"$TMP/promo2.json" 2>"$TMP/promo2.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/promo2.json" "[\"result\"]")" != "$RESULT" ]' \
       "promote of a second version follows its parent on the hub"
quiet "$F" release sign "$TMP/promo2.elb" --key rel1
quiet "$F" release sign "$TMP/promo2.elb" --key rel2
quiet "$F" release push "$TMP/promo2.elb" "${H[@]}"
"$EL" sync --state "$S2" --json >"$TMP/s2b.json" 2>/dev/null
expect '[ "$(jget "$TMP/s2b.json" "[\"installed\"]")" = 1 ]' \
       "device 2 installs it: the rebuilt adapter is bit-identical to device 1's"

# ---- trusted time from the hub ----
# A policy release made 60 days ago that expired 30 days ago, and a device
# whose clock is 50 days behind: by its own clock the release is valid.
printf '[probation]\nevents = 5\n' >"$TMP/old.ini"
EDGELOOP_FLEET_NOW=$(rfc3339 $((NOW - 60 * DAY))) \
  quiet "$F" release create --kind policy --policy "$TMP/old.ini" --target '*' --counter 3 \
  --expires 30d -o "$TMP/old.elb"
quiet "$F" release sign "$TMP/old.elb" --key rel1
quiet "$F" release sign "$TMP/old.elb" --key rel2
export EDGELOOP_NOW=$((NOW - 50 * DAY))
S3="$TMP/dev3"
export EDGELOOP_FLEET_NOW=$(rfc3339 $((NOW - 60 * DAY)))   # its certificate too
device "$S3" dev-3 line-b
unset EDGELOOP_FLEET_NOW
cp -a "$S3" "$TMP/dev3-copy"
"$EL" import --state "$TMP/dev3-copy" "$TMP/old.elb" >/dev/null 2>&1
expect '[ $? -eq 0 ]' "before a sync, the set-back device takes the expired release"
"$EL" sync --state "$S3" --json >"$TMP/s3.json" 2>"$TMP/s3.err"
expect '[ $? -eq 0 ]' "the set-back device syncs"
"$EL" import --state "$S3" "$TMP/old.elb" --json >"$TMP/i3.json" 2>/dev/null
expect '[ $? -eq 3 ] && [ "$(jget "$TMP/i3.json" "[\"error\"][\"code\"]")" = expired ]' \
       "after a sync, the same device refuses it: expired (the hub's time)"
unset EDGELOOP_NOW

if [ "$fails" -ne 0 ]; then
  echo "--- hub log"
  tail -n 20 "$TMP/hub.log"
  echo "$fails check(s) failed"
  exit 1
fi
echo "all fleet hub checks passed"
