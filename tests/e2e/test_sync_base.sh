#!/usr/bin/env bash
# A base-model release arriving by `edgeloop sync` is installed exactly as
# `edgeloop import` installs the same file (both go through
# el_device_import): device A syncs it from a real edgeloop-hub on
# 127.0.0.1, device B imports the downloaded-by-hand .elb; both end with the
# same bases (hash = sha256 of model.safetensors, as the fleet tool names
# it), the same trust counter and the weights under STATE/bases/HASH/.
# argv: edgeloop, edgeloop-hub, edgeloop-fleet executables.
set -u
EL="$1"
HUB="$2"
F="$3"
TMP=$(mktemp -d /tmp/el_sync_base.XXXXXX)
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
# registry STATE: bases (id, hash, config) and the base-model counter
registry() {
  /usr/bin/python3 - "$1/registry.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("SELECT id, hash, config FROM bases ORDER BY id").fetchall())
print(db.execute("SELECT kind, counter FROM trust_counters ORDER BY kind").fetchall())
PY
}

export EDGELOOP_FLEET="$TMP/fleet"
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
rm -f "$TMP/port"
"$HUB" serve --listen "127.0.0.1:0" --port-file "$TMP/port" --cert "$TMP/hub.crt" \
  --key "$TMP/hub.key" --ca "$CA" --root "$ROOT1" --data "$TMP/hubdata" >>"$TMP/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/port")
admin() { # admin METHOD PATH [FILE]: curl as the fleet admin, prints the HTTP code
  curl -s -o "$TMP/admin.out" -w '%{http_code}' --cert "$TMP/admin.crt" --key "$TMP/admin.key" \
    --cacert "$CA" -X "$1" ${3:+--data-binary "@$3"} "https://localhost:$PORT$2"
}

# two small bases: model2 differs from model in one weight
/usr/bin/python3 - "$TMP/model" "$TMP/model2" <<'PY'
import json, os, random, struct, sys
rng = random.Random(3)
H, I, KV = 16, 24, 8
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
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 259,
       "hidden_size": H, "intermediate_size": I, "num_hidden_layers": 1,
       "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
       "rope_theta": 10000.0, "max_position_embeddings": 32, "tie_word_embeddings": True,
       "edgeloop_tokenizer": "bytes-v1"}
for d, flip in ((sys.argv[1], 0), (sys.argv[2], 0x10)):
    os.makedirs(d)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    b = bytearray(blob)
    b[-1] ^= flip
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + b)
PY

# device A syncs, device B imports; both enrolled in group line-a
for dev in A B; do
  S="$TMP/state$dev"
  quiet "$EL" init --state "$S" --model "$TMP/model"
  quiet "$EL" enroll --state "$S" --csr-out "$TMP/dev$dev.csr" --name "dev-$dev"
  quiet "$F" issue --csr "$TMP/dev$dev.csr" --role device --group line-a -o "$TMP/dev$dev.crt"
  quiet "$EL" enroll --state "$S" --cert "$TMP/dev$dev.crt" --ca "$CA" --root "$ROOT1" \
    --hub "https://localhost:$PORT"
done
HASH1=$(sha256sum < "$TMP/model/model.safetensors" | cut -c1-64)
HASH2=$(sha256sum < "$TMP/model2/model.safetensors" | cut -c1-64)
expect 'registry "$TMP/stateA" | grep -q "(1, '"'"'$HASH1'"'"'"' \
       "init records the base as sha256 of model.safetensors"

quiet "$F" release create --kind base-model --model "$TMP/model2" --target line-a --counter 1 \
  --expires 30d -o "$TMP/base2.elb"
quiet "$F" release sign "$TMP/base2.elb" --key rel1
quiet "$F" release sign "$TMP/base2.elb" --key rel2
ID=$(head -c 8 "$TMP/base2.elb" | tail -c 4 | od -An -tu4 | tr -d ' ' |
     { read -r n; tail -c +9 "$TMP/base2.elb" | head -c "$n" | sha256sum | cut -c1-64; })
expect '[ "$(admin PUT "/v1/releases/$ID" "$TMP/base2.elb")" = 201 ]' \
       "admin publishes the base-model release"

"$EL" sync --state "$TMP/stateA" --json >"$TMP/sA.json" 2>"$TMP/sA.err"
rc=$?
expect '[ $rc -eq 0 ] && [ "$(jget "$TMP/sA.json" "[\"installed\"]")" = 1 ]' \
       "sync installs the base-model release (rc=$rc)"
[ $rc -eq 0 ] || { cat "$TMP/sA.err"; cat "$TMP/sA.json"; }
expect '[ "$(jget "$TMP/sA.json" "[\"events\"][0][\"outcome\"]")" = installed ]' \
       "reported as installed, not refused"
"$EL" import --state "$TMP/stateB" "$TMP/base2.elb" --json >"$TMP/iB.json" 2>"$TMP/iB.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/iB.json" "[\"base_id\"]")" = 2 ]' \
       "import installs the same release as base 2"
registry "$TMP/stateA" >"$TMP/regA"
registry "$TMP/stateB" >"$TMP/regB"
expect 'cmp -s "$TMP/regA" "$TMP/regB"' "sync and import leave the same bases and counters"
expect 'grep -q "(2, '"'"'$HASH2'"'"'" "$TMP/regA" && grep -q "base-model'"'"', 1" "$TMP/regA"' \
       "base 2 is named by its model.safetensors hash; counter 1 accepted"
expect 'cmp -s "$TMP/model2/model.safetensors" "$TMP/stateA/bases/$HASH2/model.safetensors"' \
       "the synced weights are in STATE/bases/HASH/"
"$EL" sync --state "$TMP/stateA" --json >"$TMP/sA2.json" 2>/dev/null
expect '[ "$(jget "$TMP/sA2.json" "[\"releases_seen\"]")" = 0 ]' "not fetched again"
expect '"$EL" check --state "$TMP/stateA" >/dev/null 2>&1' "state A checks"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
