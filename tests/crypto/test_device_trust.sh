#!/usr/bin/env bash
# Enrollment and import of fleet bundles at the CLI level, with bundles made
# by edgeloop-fleet (2-of-3 root and release keys):
#   enroll --csr-out (key 0600) -> fleet issue -> enroll --cert/--ca/--root
#   ([hub] keys in edgeloop.conf); a 2-of-3 adapter release installs (origin
#   fleet, probation); every attack class is refused with exit 3 and its
#   stable --json code and leaves the registry and the trust state
#   unchanged: tampered payload, unknown key, below threshold, replay,
#   rollback, expired, wrong target, wrong base, revoked key; root rotation
#   N -> N+1 and the replay of root N; a policy release; a base-model
#   release; not enrolled.
#   `edgeloop bundle` writes a device delta that verifies offline with the
#   fleet root and CA (device_delta_check) and is refused when tampered; a
#   local version that becomes good is queued in the outbox.
# usage: test_device_trust.sh EDGELOOP EDGELOOP-FLEET DEVICE_DELTA_CHECK
set -u
E=$(realpath "$1")
F=$(realpath "$2")
CHECK=$(realpath "$3")
T=$(mktemp -d /tmp/el_device_trust.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$T"' EXIT
export EDGELOOP_STATE="$T/state" EDGELOOP_FLEET="$T/fleet"
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
run() { "$@" >"$T/out" 2>&1 || { echo "command failed: $*"; cat "$T/out"; bad "$*"; }; }

# Everything an import may change: versions, blob rows, trust state, policy.
snapshot() {
  python3 - "$EDGELOOP_STATE/registry.db" <<'PY'
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
out = []
for q in ("SELECT id, state, origin FROM versions ORDER BY id",
          "SELECT hash FROM blobs ORDER BY hash",
          "SELECT hex(root), root_version, last_time FROM trust",
          "SELECT kind, counter FROM trust_counters ORDER BY kind",
          "SELECT section, key, value FROM policy ORDER BY section, key",
          "SELECT version_id FROM active"):
    out.append(repr(db.execute(q).fetchall()))
print(hashlib.sha256("|".join(out).encode()).hexdigest())
PY
}

# refused CODE FILE DESCRIPTION: import must exit 3 with CODE, change nothing
refused() {
  local before after rc
  before=$(snapshot)
  "$E" import "$2" --json > "$T/refused.json" 2>/dev/null
  rc=$?
  after=$(snapshot)
  if [ $rc -eq 3 ] && grep -q "\"code\": *\"$1\"" "$T/refused.json" && [ "$before" = "$after" ]; then
    ok "$3: refused with $1"
  else
    bad "$3: exit $rc, want 3 and $1, state changed: $([ "$before" = "$after" ] && echo no || echo YES)"
    cat "$T/refused.json"
  fi
}

# A small random model (tiny_model.py, seed 9) and a trained adapter for it.
python3 "$(dirname "$0")/../e2e/tiny_model.py" "$T/model" 9 --layers 1 --hidden 16 --unit-norms
for i in $(seq 1 12); do echo "{\"text\": \"PRESS-0$i pressure=$((150 + i))bar status=OK\"}"; done > "$T/data.jsonl"
for a in A B C; do
  seed=$(printf '%d' "'$a")
  run "$E" train --model "$T/model" --data "$T/data.jsonl" --out "$T/adapter$a" --backend cpu \
    --threads 1 --steps 2 --batch 2 --seq-len 32 --rank 2 --targets q_proj,v_proj --seed "$seed"
done

# The fleet: CA, 2-of-3 root keys, 2-of-3 release keys, root version 1.
run "$F" ca init
for k in root1 root2 root3 rel1 rel2 rel3; do run "$F" keys gen $k; done
run "$F" root init --root-key root1 root2 root3 --root-threshold 2 \
  --release-key rel1 rel2 rel3 --release-threshold 2 --expires 365d

# Device state and enrollment.
run "$E" init --model "$T/model"
"$E" import "$T/fleet/root.elb" --json > "$T/ne.json" 2>/dev/null
expect '[ $? -eq 3 ] && grep -q "\"not_enrolled\"" "$T/ne.json"' "import before enrollment: not_enrolled"
"$E" bundle 1 -o "$T/x.elb" --json > "$T/ne.json" 2>/dev/null
rc=$?
expect '[ $rc -eq 3 ] && grep -q "\"not_enrolled\"" "$T/ne.json"' "bundle before enrollment: not_enrolled"
run "$E" enroll --csr-out "$T/dev.csr" --name dev-1
expect '[ "$(stat -c %a "$EDGELOOP_STATE/device.key")" = 600 ]' "device key is 0600"
expect 'grep -q "BEGIN CERTIFICATE REQUEST" "$T/dev.csr"' "CSR written"
key_before=$(sha256sum < "$EDGELOOP_STATE/device.key")
run "$E" enroll --csr-out "$T/dev2.csr" --name dev-1
expect '[ "$(sha256sum < "$EDGELOOP_STATE/device.key")" = "$key_before" ]' "a second CSR reuses the key"
run "$F" issue --csr "$T/dev.csr" --role device --group line-a -o "$T/dev.crt"
# a certificate for another key is refused as bad input, nothing pinned
run "$F" csr --cn dev-9 --key-out "$T/other.key" -o "$T/other.csr"
run "$F" issue --csr "$T/other.csr" --role device --group line-a -o "$T/other.crt"
"$E" enroll --cert "$T/other.crt" --ca "$T/fleet/ca.crt" --root "$T/fleet/root.elb" >/dev/null 2>&1
expect '[ $? -eq 2 ]' "certificate of another key: exit 2"
# a CA that did not issue the certificate is refused by trust
mkdir -p "$T/fleet2"
EDGELOOP_FLEET="$T/fleet2" "$F" ca init >/dev/null 2>&1
"$E" enroll --cert "$T/dev.crt" --ca "$T/fleet2/ca.crt" --root "$T/fleet/root.elb" --json \
  > "$T/e.json" 2>/dev/null
rc=$?
expect '[ $rc -eq 3 ] && grep -q untrusted_signer "$T/e.json"' "certificate from another CA: untrusted_signer"
"$E" enroll --cert "$T/dev.crt" --ca "$T/fleet/ca.crt" --root "$T/fleet/root.elb" \
  --hub https://hub.example:8443 --json > "$T/enroll.json"
expect '[ $? -eq 0 ]' "enroll --cert --ca --root"
expect '[ "$(jget "$T/enroll.json" "d[\"device_id\"]")" = dev-1 ]' "enrolled as dev-1"
expect '[ "$(jget "$T/enroll.json" "d[\"group\"]")" = line-a ]' "group line-a"
"$E" config --json > "$T/config.json"
expect 'grep -q "https://hub.example:8443" "$T/config.json" && grep -q "device.crt" "$T/config.json" && grep -q "device.key" "$T/config.json"' \
  "[hub] url, cert and key in the effective configuration"
expect '"$E" check >/dev/null' "state check after enrollment"

# A 2-of-3 signed adapter release installs.
mk() {  # mk NAME ADAPTER COUNTER TARGET [more create args]: unsigned release
  local name=$1 adapter=$2 counter=$3 target=$4; shift 4
  run "$F" release create --kind adapter --adapter "$T/$adapter" --base "$T/model" \
    --target "$target" --counter "$counter" --expires 30d -o "$T/$name.elb" "$@"
}
sign() { local f=$1; shift; for k in "$@"; do run "$F" release sign "$T/$f.elb" --key "$k"; done; }
mk rel1 adapterA 1 line-a
sign rel1 rel1 rel3
"$E" import "$T/rel1.elb" --json > "$T/i1.json"
expect '[ $? -eq 0 ]' "2-of-3 adapter release installs"
expect '[ "$(jget "$T/i1.json" "d[\"version\"]")" = 1 ] && [ "$(jget "$T/i1.json" "d[\"activated\"]")" = True ]' \
  "installed as version 1, activated"
"$E" show 1 --json > "$T/v1.json"
expect '[ "$(jget "$T/v1.json" "d[\"origin\"]")" = fleet ] && [ "$(jget "$T/v1.json" "d[\"state\"]")" = probation ]' \
  "version 1: origin fleet, on probation"
run "$E" export 1 --peft "$T/exported"
expect 'cmp -s "$T/exported/adapter_model.safetensors" "$T/adapterA/adapter_model.safetensors"' \
  "the installed adapter is bit-identical to the released one"

# A device delta of version 1, verified offline as the hub would.
"$E" bundle 1 -o "$T/dev1.elb" --json > "$T/b1.json"
expect '[ $? -eq 0 ] && [ "$(jget "$T/b1.json" "d[\"parent\"]")" = None ]' "bundle 1 -o dev1.elb"
expect '"$CHECK" "$T/fleet/root.elb" "$T/fleet/ca.crt" "$T/dev1.elb" dev-1 >/dev/null' \
  "device delta verifies offline and rebuilds to its result"
cp "$T/dev1.elb" "$T/dev1-bad.elb"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[-1]^=1; open(p,'wb').write(b)" "$T/dev1-bad.elb"
"$CHECK" "$T/fleet/root.elb" "$T/fleet/ca.crt" "$T/dev1-bad.elb" dev-1 > "$T/c.out"
rc=$?
expect '[ $rc -eq 3 ] && grep -q bad_signature "$T/c.out"' "tampered device delta refused"
"$CHECK" "$T/fleet/root.elb" "$T/fleet2/ca.crt" "$T/dev1.elb" dev-1 > "$T/c.out"
rc=$?
expect '[ $rc -eq 3 ]' "device delta under another fleet's CA refused ($(head -c 60 "$T/c.out"))"

# Attack classes: each refused, nothing changed.
cp "$T/rel1.elb" "$T/tampered.elb"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[-1]^=1; open(p,'wb').write(b)" "$T/tampered.elb"
refused bad_signature "$T/tampered.elb" "tampered payload"
mk unknown adapterB 2 line-a; sign unknown root1 root2
refused unknown_key "$T/unknown.elb" "signed by root keys, not release keys"
mk below adapterB 2 line-a; sign below rel2
refused threshold_not_met "$T/below.elb" "one signature of two"
refused replay "$T/rel1.elb" "the same release again"
mk target adapterB 2 line-b; sign target rel1 rel2
refused wrong_target "$T/target.elb" "release for another group"
run "$F" release create --kind adapter --adapter "$T/adapterB" \
  --base 0000000000000000000000000000000000000000000000000000000000000000 \
  --target line-a --counter 2 --expires 30d -o "$T/base.elb"
sign base rel1 rel2
refused wrong_base "$T/base.elb" "release for another base model"
EDGELOOP_FLEET_NOW=$(date -u -d '3 days ago' +%Y-%m-%dT%H:%M:%SZ) \
  "$F" release create --kind adapter --adapter "$T/adapterB" --base "$T/model" \
  --target line-a --counter 2 --expires 1d -o "$T/expired.elb" >/dev/null 2>&1 || bad "create expired"
sign expired rel1 rel2
refused expired "$T/expired.elb" "expired release"
# counter 3 (a child of version 1) installs; then counter 2 is a rollback
mk rel3 adapterC 3 line-a --parent "$T/adapterA"; sign rel3 rel2 rel3
"$E" import "$T/rel3.elb" --json > "$T/i3.json"
expect '[ $? -eq 0 ] && [ "$(jget "$T/i3.json" "d[\"version\"]")" = 2 ]' "delta release (parent = version 1) installs as version 2"
"$E" show 2 --json > "$T/v2.json"
expect '[ "$(jget "$T/v2.json" "d[\"parent\"]")" = 1 ]' "version 2's parent is version 1"
mk rel2 adapterB 2 line-a; sign rel2 rel1 rel2
refused rollback "$T/rel2.elb" "a lower counter after 3"

# Root rotation N -> N+1 revoking rel2; then root 1 again is refused, and a
# release signed with the revoked key is refused.
REL2_ID=$(openssl pkey -pubin -in "$EDGELOOP_FLEET/keys/rel2.pub" -outform DER 2>/dev/null | sha256sum | cut -c1-64)
run "$F" keys gen root4
run "$F" root rotate --root-key root2 root3 root4 --root-threshold 2 \
  --release-key rel1 rel2 rel3 --release-threshold 2 --revoke-key "$REL2_ID"
"$E" import "$T/fleet/root-2.elb" --json > "$T/r2.json"
expect '[ $? -eq 0 ] && [ "$(jget "$T/r2.json" "d[\"root_version\"]")" = 2 ]' "root rotated to version 2"
refused rollback "$T/fleet/root-1.elb" "root 1 after root 2"
mk rel4 adapterB 4 line-a; sign rel4 rel1 rel2
refused revoked "$T/rel4.elb" "release signed with a revoked key"

# A policy release replaces the fleet overrides.
printf '# fleet policy\n[gate]\nmin_gain = 0.05\n[probation]\nevents = 7\n' > "$T/policy.ini"
run "$F" release create --kind policy --policy "$T/policy.ini" --target '*' --counter 1 \
  --expires 1d -o "$T/pol.elb"
sign pol rel1 rel3
"$E" import "$T/pol.elb" --json > "$T/ip.json"
expect '[ $? -eq 0 ] && [ "$(jget "$T/ip.json" "d[\"policy_keys\"]")" = 2 ]' "policy release installs 2 keys"
"$E" config --json > "$T/config2.json"
expect 'python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
s = json.dumps(d)
assert \"0.05\" in s and \"policy\" in s, s
" "$T/config2.json"' "policy value and its source in the effective configuration"
# A base-model release becomes the current base; the active adapter (made
# for the old base) is deactivated, and releases for the old base no longer
# match.
mkdir -p "$T/model2"
python3 - "$T/model" "$T/model2" <<'PY'
import json, shutil, sys
shutil.copy(sys.argv[1] + "/config.json", sys.argv[2] + "/config.json")
b = bytearray(open(sys.argv[1] + "/model.safetensors", "rb").read())
b[-1] ^= 0x10   # another base: one weight differs
open(sys.argv[2] + "/model.safetensors", "wb").write(b)
PY
run "$F" release create --kind base-model --model "$T/model2" --target line-a --counter 1 \
  --expires 30d -o "$T/base2.elb"
sign base2 rel1 rel3
"$E" import "$T/base2.elb" --json > "$T/ib.json"
expect '[ $? -eq 0 ] && [ "$(jget "$T/ib.json" "d[\"base_id\"]")" = 2 ]' "base-model release installs as base 2"
expect 'cmp -s "$T/model2/model.safetensors" "$EDGELOOP_STATE/bases/$(sha256sum < "$T/model2/model.safetensors" | cut -c1-64)/model.safetensors"' \
  "the new base's weights are in the state directory"
"$E" versions --json > "$T/vs.json"
expect '[ "$(jget "$T/vs.json" "[v for v in (d if isinstance(d, list) else d[\"versions\"]) if v[\"active\"]]")" = "[]" ]' \
  "no adapter of the old base is active"
mk oldbase adapterB 5 line-a; sign oldbase rel1 rel3
refused wrong_base "$T/oldbase.elb" "adapter release for the replaced base"
refused replay "$T/base2.elb" "the same base-model release again"
expect '"$E" audit --verify >/dev/null' "audit chain verifies"
expect '"$E" check >/dev/null' "state check at the end"

# The outbox: a local version that becomes good is queued as a signed
# device delta (feedback), and the queued bytes verify offline.
S2="$T/state2"
run "$E" init --model "$T/model" --state "$S2"
cat > "$S2/edgeloop.conf" <<'CONF'
[train]
backend = cpu
steps = 4
rank = 2
batch = 4
seq_len = 32
lr = 0.01
targets = q_proj,v_proj
[gate]
min_gain = 0
max_forget = 1
[probation]
events = 2
min_events = 1
window = 2
max_reject_rate = 0.5
max_probe_regress = 1
CONF
for i in $(seq 1 6); do echo "{\"text\": \"PRESS-1$i pressure=$((170 + i))bar status=OK\"}"; done > "$T/h.jsonl"
for i in $(seq 1 6); do echo "{\"text\": \"line $i of the anchor text\"}"; done > "$T/a.jsonl"
run "$E" ingest "$T/data.jsonl" --split train --state "$S2"
run "$E" ingest "$T/h.jsonl" --split holdout --state "$S2"
run "$E" ingest "$T/a.jsonl" --split anchor --state "$S2"
run "$E" enroll --csr-out "$T/dev2.csr" --name dev-2 --state "$S2"
run "$F" issue --csr "$T/dev2.csr" --role device --group line-a -o "$T/dev2.crt"
run "$E" enroll --cert "$T/dev2.crt" --ca "$T/fleet/ca.crt" --root "$T/fleet/root-1.elb" --state "$S2"
"$E" train --threads 1 --state "$S2" --json > "$T/t.json" 2>&1
expect '[ "$(jget "$T/t.json" "d[\"state\"]")" = probation ]' "local version 1 on probation"
run "$E" feedback --accept --state "$S2"
"$E" feedback --accept --state "$S2" --json > "$T/fb.json"
expect '[ "$(jget "$T/fb.json" "d[\"state\"]")" = good ] && [ "$(jget "$T/fb.json" "d[\"outbox_queued\"]")" = 1 ]' \
  "good version queued in the outbox"
blob=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT blob FROM outbox").fetchone()[0])' "$S2/registry.db")
expect '"$CHECK" "$T/fleet/root-1.elb" "$T/fleet/ca.crt" "$S2/blobs/sha256/${blob:0:2}/${blob:2}" dev-2 >/dev/null' \
  "queued device delta verifies offline"
expect '"$E" check --state "$S2" >/dev/null' "state check with a queued bundle"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
