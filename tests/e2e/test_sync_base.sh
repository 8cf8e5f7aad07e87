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
. "$(dirname "$0")/lib.sh"
# registry STATE: bases (id, hash, config) and the base-model counter
registry() {
  /usr/bin/python3 - "$1/registry.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("SELECT id, hash, config FROM bases ORDER BY id").fetchall())
print(db.execute("SELECT kind, counter FROM trust_counters ORDER BY kind").fetchall())
PY
}

fleet_init
start_hub

# two small bases: model2 differs from model in one weight
/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$TMP/model" 3 --layers 1 --hidden 16 --unit-norms
cp -r "$TMP/model" "$TMP/model2"
/usr/bin/python3 -c "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-1] ^= 0x10; open(p, 'wb').write(b)" \
  "$TMP/model2/model.safetensors"

# device A syncs, device B imports; both enrolled in group line-a
for dev in A B; do device "$TMP/state$dev" "dev-$dev" line-a; done
HASH1=$(sha256sum < "$TMP/model/model.safetensors" | cut -c1-64)
HASH2=$(sha256sum < "$TMP/model2/model.safetensors" | cut -c1-64)
expect 'registry "$TMP/stateA" | grep -q "(1, '"'"'$HASH1'"'"'"' \
       "init records the base as sha256 of model.safetensors"

quiet "$F" release create --kind base-model --model "$TMP/model2" --target line-a --counter 1 \
  --expires 30d -o "$TMP/base2.elb"
sign_release "$TMP/base2.elb"
ID=$(bundle_id "$TMP/base2.elb")
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

finish "sync base"
