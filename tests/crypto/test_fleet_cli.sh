#!/bin/sh
# Drives the built edgeloop-fleet: a fleet with 2-of-3 root and release keys,
# a release made and signed by two keys verifies (inspect exits 0), one
# signature or a tampered byte is refused with the stable code (exit 3), the
# same key twice is refused, a forged CSR is refused by `issue`, and the
# issued certificates pass `openssl verify`.
# usage: test_fleet_cli.sh PATH/TO/edgeloop-fleet
set -u
FLEET_BIN=$1
T=$(mktemp -d /tmp/el-fleet-XXXXXX)
trap 'rm -rf "$T"' EXIT
export EDGELOOP_FLEET="$T/fleet"
fails=0
checks=0

ok() {   # ok DESCRIPTION CMD...: the command must exit 0
    d=$1; shift
    checks=$((checks + 1))
    if ! "$@" >"$T/out" 2>&1; then
        echo "FAIL: $d (exit $?)"; cat "$T/out"; fails=$((fails + 1))
    fi
}

refused() {   # refused CODE EXIT DESCRIPTION CMD...: exit EXIT and JSON code CODE
    code=$1 want=$2 d=$3; shift 3
    checks=$((checks + 1))
    "$@" --json >"$T/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ] || ! grep -q "\"code\": *\"$code\"" "$T/out"; then
        echo "FAIL: $d (exit $got, want $want and code $code)"; cat "$T/out"
        fails=$((fails + 1))
    fi
}

F=$FLEET_BIN
ok "help" $F --help
ok "release sign --help" $F release sign --help
ok "ca init" $F ca init
checks=$((checks + 1))
[ "$(stat -c %a "$EDGELOOP_FLEET/ca.key")" = 600 ] || { echo "FAIL: ca.key mode"; fails=$((fails + 1)); }
for k in root1 root2 root3 rel1 rel2 rel3; do ok "keys gen $k" $F keys gen $k; done
checks=$((checks + 1))
[ "$(stat -c %a "$EDGELOOP_FLEET/keys/rel1.key")" = 600 ] || { echo "FAIL: key mode"; fails=$((fails + 1)); }
ok "root init" $F root init --root-key root1 root2 root3 --root-threshold 2 \
    --release-key rel1 rel2 rel3 --release-threshold 2 --expires 365d

# A tiny PEFT adapter and base model directory.
mkdir -p "$T/adapter" "$T/base"
python3 - "$T" <<'EOF'
import json, struct, sys
t = sys.argv[1]
def st(path, tensors):
    hdr, off, blob = {}, 0, b""
    for name, shape in tensors:
        n = 1
        for s in shape: n *= s
        data = b"".join(struct.pack("<f", ((i * 37) % 101 - 50) / 1000.0) for i in range(n))
        hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data); blob += data
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + blob)
p = "base_model.model.model.layers.0.self_attn.q_proj."
st(t + "/adapter/adapter_model.safetensors", [(p + "lora_A.weight", [4, 16]), (p + "lora_B.weight", [16, 4])])
json.dump({"r": 4, "lora_alpha": 8, "peft_type": "LORA", "task_type": "CAUSAL_LM",
           "target_modules": ["q_proj"]}, open(t + "/adapter/adapter_config.json", "w"))
st(t + "/base/model.safetensors", [("model.norm.weight", [16])])
json.dump({"hidden_size": 16}, open(t + "/base/config.json", "w"))
EOF

REL="$T/rel.elb"
ok "release create" $F release create --kind adapter --adapter "$T/adapter" --base "$T/base" \
    --target line-a --counter 1 --expires 30d -o "$REL"
refused threshold_not_met 3 "unsigned release" $F release inspect "$REL"
ok "sign rel1" $F release sign "$REL" --key rel1
refused threshold_not_met 3 "one of two signatures" $F release inspect "$REL"
refused duplicate_signer 3 "same key twice" $F release sign "$REL" --key rel1
ok "sign rel3 by file" $F release sign "$REL" --key-file "$EDGELOOP_FLEET/keys/rel3.key"
ok "2-of-3 verifies" $F release inspect "$REL"
checks=$((checks + 1))
$F release inspect "$REL" --json > "$T/inspect.json"
grep -q '"decision": *"accept"' "$T/inspect.json" || { echo "FAIL: decision"; cat "$T/inspect.json"; fails=$((fails + 1)); }
refused wrong_base 3 "other base" $F release inspect "$REL" \
    --base 0000000000000000000000000000000000000000000000000000000000000000
refused wrong_target 3 "other group" $F release inspect "$REL" --group line-b

# Root keys are not release keys.
cp "$REL" "$T/rootsigned.elb"
ok "create policy" $F release create --kind policy --policy "$T/adapter/adapter_config.json" \
    --target '*' --counter 1 --expires 1d -o "$T/pol.elb"
ok "sign root1" $F release sign "$T/pol.elb" --key root1
ok "sign root2" $F release sign "$T/pol.elb" --key root2
refused unknown_key 3 "signed by root keys" $F release inspect "$T/pol.elb"

# Tampered payload byte (the last byte of the file).
cp "$REL" "$T/tampered.elb"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[-1]^=1; open(p,'wb').write(b)" "$T/tampered.elb"
refused bad_signature 3 "tampered payload" $F release inspect "$T/tampered.elb"
# One byte more than the manifest says, and a file cut inside its header.
cp "$REL" "$T/longer.elb"; printf 'x' >> "$T/longer.elb"
refused oversize 3 "payload longer than its manifest" $F release inspect "$T/longer.elb"
head -c 100 "$REL" > "$T/cut.elb"
refused truncated 3 "cut inside the header" $F release inspect "$T/cut.elb"
# Another magic is bad input (exit 2).
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[3]=ord('2'); open(p,'wb').write(b)" "$T/tampered.elb"
checks=$((checks + 1))
$F release inspect "$T/tampered.elb" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: ELB2 magic not exit 2"; fails=$((fails + 1)); }

# Root rotation by the old keys plus the new ones, revoking release key rel2
# (its id computed by openssl: SHA-256 of the SPKI DER). The release signed by
# rel1 + rel3 still verifies under root 2; one signed by rel1 + rel2 is
# refused as revoked.
ok "keys gen root4" $F keys gen root4
REL2_ID=$(openssl pkey -pubin -in "$EDGELOOP_FLEET/keys/rel2.pub" -outform DER | sha256sum | cut -c1-64)
ok "root rotate" $F root rotate --root-key root2 root3 root4 --root-threshold 2 \
    --release-key rel1 rel2 rel3 --release-threshold 2 --revoke-key "$REL2_ID"
checks=$((checks + 1))
[ -f "$EDGELOOP_FLEET/root-2.elb" ] || { echo "FAIL: root-2.elb"; fails=$((fails + 1)); }
ok "2-of-3 still verifies under root 2" $F release inspect "$REL"
ok "create rel-b" $F release create --kind adapter --adapter "$T/adapter" --base "$T/base" \
    --target line-a --counter 2 --expires 30d -o "$T/relb.elb"
ok "sign rel-b 1" $F release sign "$T/relb.elb" --key rel1
ok "sign rel-b 2" $F release sign "$T/relb.elb" --key rel2
refused revoked 3 "revoked release key" $F release inspect "$T/relb.elb"
# A rotation that only the new keys sign is refused before it is written.
ok "keys gen root5" $F keys gen root5
mv "$EDGELOOP_FLEET/keys/root2.key" "$EDGELOOP_FLEET/keys/root3.key" "$T/"
refused bad_root_chain 3 "rotation by new keys only" $F root rotate --root-key root4 root5 \
    --root-threshold 2 --release-key rel1 rel3 --release-threshold 2
mv "$T/root2.key" "$T/root3.key" "$EDGELOOP_FLEET/keys/"

# Certificates: device CSR, hub CSR with a DNS name, a forged CSR.
ok "csr" $F csr --cn dev-1 --key-out "$T/dev.key" -o "$T/dev.csr"
ok "issue device" $F issue --csr "$T/dev.csr" --role device --group line-a -o "$T/dev.crt"
ok "csr hub" $F csr --cn hub --key-out "$T/hub.key" -o "$T/hub.csr"
ok "issue hub" $F issue --csr "$T/hub.csr" --role hub --name hub.example.net -o "$T/hub.crt"
if command -v openssl >/dev/null; then
    ok "openssl verify" openssl verify -CAfile "$EDGELOOP_FLEET/ca.crt" "$T/dev.crt" "$T/hub.crt"
    checks=$((checks + 1))
    openssl x509 -in "$T/hub.crt" -noout -text | grep -q 'DNS:hub.example.net' ||
        { echo "FAIL: SAN"; fails=$((fails + 1)); }
    # Forge: decode, change the CN, re-encode without re-signing.
    openssl req -in "$T/dev.csr" -outform DER -out "$T/dev.der"
    python3 -c "import sys; p=sys.argv[1]; b=open(p,'rb').read().replace(b'dev-1', b'dev-9', 1); open(p,'wb').write(b)" "$T/dev.der"
    refused bad_signature 3 "forged CSR" $F issue --csr "$T/dev.der" --role device -o "$T/forged.crt"
    checks=$((checks + 1))
    [ ! -e "$T/forged.crt" ] || { echo "FAIL: forged CSR produced a certificate"; fails=$((fails + 1)); }
fi
refused usage 1 "unknown option" $F release sign "$REL" --bogus x

echo "test_fleet_cli: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
