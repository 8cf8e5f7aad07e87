#!/usr/bin/env bash
# edgeloop-fleet's hub commands against a real edgeloop-hub on 127.0.0.1 (a
# port chosen at run time), and the device's trusted time from the hub:
#  - release push publishes a 2-of-2 signed release (201), again is
#    idempotent (200), and a 1-of-2 signed one is refused with exit 3;
#  - status lists an enrolled device after its sync (table and --json);
#  - promote fetches a device's delta, verifies and rebuilds it, and makes an
#    unsigned release; signed 2-of-2 and pushed, a second device installs it;
#  - a device whose clock is set back (EDGELOOP_NOW) takes the hub's time at
#    its sync and then refuses an expired release it accepted before; but
#    not a hub time after the hub certificate's own expiry.
# argv: edgeloop, edgeloop-hub, edgeloop-fleet executables.
set -u
EL="$1"
HUB="$2"
F="$3"
TMP=$(mktemp -d /tmp/el_fleethub.XXXXXX)
. "$(dirname "$0")/lib.sh"
rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

NOW=$(date +%s)
DAY=86400
# The fleet is made 60 days ago, so that a device whose clock is 50 days
# behind still accepts its certificates and root.
export EDGELOOP_FLEET_NOW=$(rfc3339 $((NOW - 60 * DAY)))
fleet_init
start_hub
H=(--hub "https://localhost:$PORT" --cert "$TMP/admin.crt" --key "$TMP/admin.key" --ca "$CA")

# a small random Llama for the device (cpu training takes a second)
/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$TMP/model" 11 --layers 1 --unit-norms

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
good_version "$S1"
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
sign_release "$TMP/promo.elb"
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
sign_release "$TMP/promo2.elb"
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
sign_release "$TMP/old.elb"
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

# A hub with a certificate for 30 days whose clock runs 100 days ahead,
# past that certificate's expiry: the device does not take that time (else
# it would refuse every hub from then on), says so, and its trusted time
# stays where it was.
stop_hub
quiet "$F" issue --csr "$TMP/hub.csr" --role hub --name localhost --days 30 -o "$TMP/hub.crt"
EDGELOOP_NOW=$((NOW + 100 * DAY)) start_hub "$PORT"
S4="$TMP/dev4"
export EDGELOOP_FLEET_NOW=$(rfc3339 $((NOW - 60 * DAY)))
device "$S4" dev-4 line-b
unset EDGELOOP_FLEET_NOW
"$EL" sync --state "$S4" --json >"$TMP/s4.json" 2>"$TMP/s4.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s4.json" "[\"hub_time_refused\"]")" -ge $((NOW + 99 * DAY)) ]' \
       "a hub clock past its certificate's expiry: the sync works, that time is refused"
"$EL" sync --state "$S4" >/dev/null 2>"$TMP/s4b.err"
expect 'grep -q "after its certificate" "$TMP/s4b.err"' "the text output warns about it"
"$EL" import --state "$S4" "$TMP/old.elb" >/dev/null 2>&1
expect '[ $? -eq 0 ]' "the device's trusted time did not move: a release valid by its clock installs"
unset EDGELOOP_NOW

finish "fleet hub"
