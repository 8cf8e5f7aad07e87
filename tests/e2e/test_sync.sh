#!/usr/bin/env bash
# `edgeloop sync` against a real edgeloop-hub on 127.0.0.1 (a port chosen at
# run time), with a fleet made by edgeloop-fleet and a device enrolled with
# `edgeloop enroll`:
#  - the status report reaches the hub with a signed audit head;
#  - a 2-of-2 signed policy release published by an admin is fetched and
#    installed (the policy is in effect), and not fetched again (cursor);
#  - a replayed counter is refused with the trust code, reported, and the
#    cursor moves past it (no retry loop);
#  - a newer root published on the hub is pinned (N -> N+1);
#  - a partial download left by an interrupted run is resumed;
#  - hub down: one clear line and exit 75, nothing changes; back up: syncs;
#  - the agent syncs on its timer, backs off while the hub is down, and
#    syncs again once it is back.
# argv: edgeloop, edgeloop-hub, edgeloop-fleet executables.
set -u
EL="$1"
HUB="$2"
F="$3"
TMP=$(mktemp -d /tmp/el_sync.XXXXXX)
. "$(dirname "$0")/lib.sh"

fleet_init root2   # root2 signs root 2 (the rotation below)
start_hub
# a small random Llama for the device (cpu training takes a second)
/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$TMP/model" 11 --layers 1 --unit-norms

S="$TMP/state"
quiet "$EL" init --state "$S" --model "$TMP/model"
"$EL" sync --state "$S" >/dev/null 2>"$TMP/noenroll.err"
expect '[ $? -eq 75 ] && grep -q "offline" "$TMP/noenroll.err"' \
       "no hub configured: offline, exit 75"
enroll "$S" dev-1 line-a
# a good local version for the outbox
good_version "$S"
expect '"$EL" versions --state "$S" | grep -q good' "a good local version exists"

# ---- outbox upload + status ----

"$EL" sync --state "$S" --json >"$TMP/s1.json" 2>"$TMP/s1.err"
expect '[ $? -eq 0 ]' "first sync succeeds"
expect '[ "$(jget "$TMP/s1.json" "[\"status_posted\"]")" = True ]' "status posted"
expect '[ "$(jget "$TMP/s1.json" "[\"releases_seen\"]")" = 0 ]' "no releases yet"
expect '[ "$(jget "$TMP/s1.json" "[\"uploaded\"]")" = 1 ]' "the good version's delta is uploaded"
BUNDLE=$(jget "$TMP/s1.json" '["events"][0]["bundle"]')
expect '[ "$(admin GET "/v1/bundles/$BUNDLE")" = 200 ]' "the hub holds the uploaded bundle"
expect '[ "$(stat -c %a "$S/sync/tls-session")" = 600 ]' "the TLS session is kept, mode 0600"
# handshakes KIND: the hub's count of KIND (full|resumed) handshakes, read
# from a fresh /metrics (curl's own handshake is a full one and is counted)
handshakes() { sed -n "s/^edgeloop_hub_handshakes_total{kind=\"$1\"} //p" "$TMP/admin.out"; }
admin GET /metrics >/dev/null
F0=$(handshakes full) R0=$(handshakes resumed)
"$EL" sync --state "$S" --json >"$TMP/s1b.json" 2>/dev/null
admin GET /metrics >/dev/null
expect '[ "$(handshakes full)" -eq $((F0 + 1)) ] && [ "$(handshakes resumed)" -gt "$R0" ]' \
       "the next sync (a new process) resumes that session: no full handshake"
expect '[ "$(jget "$TMP/s1b.json" "[\"uploaded\"] + d[\"already_held\"]")" = 0 ]' \
       "nothing the hub acknowledged is sent again"
# the hub's answer lost (a crash before the entry was marked sent): the
# next sync sends it again and the hub answers that it holds it already
/usr/bin/python3 -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
c.execute('UPDATE outbox SET sent_at = NULL'); c.commit()" "$S/registry.db"
"$EL" sync --state "$S" --json >"$TMP/s1c.json" 2>/dev/null
expect '[ "$(jget "$TMP/s1c.json" "[\"already_held\"]")" = 1 ] &&
        [ "$(jget "$TMP/s1c.json" "[\"uploaded\"]")" = 0 ]' "a re-upload is idempotent"
expect '[ "$(admin GET /v1/devices/dev-1)" = 200 ] && grep -q "\"seq\"" "$TMP/admin.out"' \
       "the hub holds the device's audit head"

printf 'not a session' >"$S/sync/tls-session"
"$EL" sync --state "$S" --json >"$TMP/s1d.json" 2>"$TMP/s1d.err"
expect '[ $? -eq 0 ] && grep -q "sync.session" "$TMP/s1d.err"' \
       "a damaged session file is reported and the sync still succeeds"
expect '[ "$(stat -c %a "$S/sync/tls-session")" = 600 ]' "... and a fresh session is kept"

# ---- a policy release ----
printf '[probation]\nevents = 7\n' >"$TMP/policy.ini"
quiet "$F" release create --kind policy --policy "$TMP/policy.ini" --target '*' --counter 1 \
  --expires 30d -o "$TMP/pol1.elb"
sign_release "$TMP/pol1.elb"
ID1=$(bundle_id "$TMP/pol1.elb")
expect '[ "$(admin PUT "/v1/releases/$ID1" "$TMP/pol1.elb")" = 201 ]' "admin publishes the release"
"$EL" sync --state "$S" --json >"$TMP/s2.json" 2>"$TMP/s2.err"
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s2.json" "[\"installed\"]")" = 1 ]' \
       "sync installs the release"
expect '"$EL" config --state "$S" | grep -q "^\[probation\] events = 7 (policy)"' \
       "the fleet policy is in effect"
expect '[ "$(jget "$TMP/s2.json" "[\"events\"][0][\"bundle\"]")" = "$ID1" ] &&
        [ "$(jget "$TMP/s2.json" "[\"events\"][0][\"outcome\"]")" = installed ]' \
       "the install is reported per bundle"
"$EL" sync --state "$S" --json >"$TMP/s3.json" 2>/dev/null
expect '[ "$(jget "$TMP/s3.json" "[\"releases_seen\"]")" = 0 ]' "the cursor skips what was installed"

# ---- a replayed counter is refused once ----
printf '[probation]\nevents = 9\n' >"$TMP/policy2.ini"
quiet "$F" release create --kind policy --policy "$TMP/policy2.ini" --target '*' --counter 1 \
  --expires 30d -o "$TMP/pol2.elb"
sign_release "$TMP/pol2.elb"
ID2=$(bundle_id "$TMP/pol2.elb")
quiet admin PUT "/v1/releases/$ID2" "$TMP/pol2.elb"
"$EL" sync --state "$S" --json >"$TMP/s4.json" 2>/dev/null
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s4.json" "[\"refused\"]")" = 1 ]' \
       "a replayed counter is refused"
expect '[ "$(jget "$TMP/s4.json" "[\"events\"][0][\"error\"][\"code\"]")" = replay ]' \
       "the refusal carries the trust code"
expect '"$EL" config --state "$S" | grep -q "^\[probation\] events = 7 (policy)"' \
       "the refused policy changed nothing"
"$EL" sync --state "$S" --json >"$TMP/s5.json" 2>/dev/null
expect '[ "$(jget "$TMP/s5.json" "[\"releases_seen\"]")" = 0 ]' "a refused release is not fetched again"

# ---- a resumed download ----
quiet "$F" release create --kind policy --policy "$TMP/policy2.ini" --target '*' --counter 2 \
  --expires 30d -o "$TMP/pol3.elb"
sign_release "$TMP/pol3.elb"
ID3=$(bundle_id "$TMP/pol3.elb")
quiet admin PUT "/v1/releases/$ID3" "$TMP/pol3.elb"
BLOB3=$(sha256sum "$TMP/pol3.elb" | cut -c1-64)
# what an interrupted run leaves: the first bytes in BLOB.elb.part
head -c 100 "$TMP/pol3.elb" >"$S/sync/$BLOB3.elb.part"
"$EL" sync --state "$S" --json >"$TMP/s6.json" 2>/dev/null
expect '[ "$(jget "$TMP/s6.json" "[\"installed\"]")" = 1 ]' "a partial download is resumed and installed"
expect '"$EL" config --state "$S" | grep -q "^\[probation\] events = 9 (policy)"' \
       "counter 2 replaces the policy"
expect '[ ! -e "$S/sync/$BLOB3.elb.part" ] && [ ! -e "$S/sync/$BLOB3.elb" ]' \
       "nothing is left in STATE/sync after the install"

# ---- a newer root ----
quiet "$F" root rotate --root-key root1 root2 --root-threshold 1 --release-key rel1 rel2 \
  --release-threshold 2 --expires 365d
ROOT2=$(ls "$EDGELOOP_FLEET"/root-2.elb)
expect '[ "$(admin PUT /v1/roots/2 "$ROOT2")" = 201 ]' "admin publishes root 2"
"$EL" sync --state "$S" --json >"$TMP/s7.json" 2>/dev/null
expect '[ "$(jget "$TMP/s7.json" "[\"root_version\"]")" = 2 ] &&
        [ "$(jget "$TMP/s7.json" "[\"roots_installed\"]")" = 1 ]' "sync pins root 2"

# ---- offline ----
stop_hub
cp "$S/registry.db" "$TMP/before.db" 2>/dev/null
"$EL" sync --state "$S" >"$TMP/off.out" 2>"$TMP/off.err"
expect '[ $? -eq 75 ]' "hub down: exit 75"
expect '[ "$(wc -l <"$TMP/off.err")" -eq 1 ] && grep -q "^edgeloop sync: offline: hub" "$TMP/off.err"' \
       "hub down: one clear line"
"$EL" sync --state "$S" --json >"$TMP/off.json" 2>/dev/null
expect '[ $? -eq 75 ] && [ "$(jget "$TMP/off.json" "[\"offline\"]")" = True ]' \
       "hub down: --json says offline"
start_hub "$PORT"
"$EL" sync --state "$S" --json >"$TMP/s8.json" 2>/dev/null
expect '[ $? -eq 0 ] && [ "$(jget "$TMP/s8.json" "[\"status_posted\"]")" = True ]' \
       "hub back: sync works again"
expect '"$EL" check --state "$S" >/dev/null' "state checks clean"

# ---- the agent's sync timer: interval, offline backoff, recovery ----
printf '\n[sync]\ninterval_s = 1\nbackoff_base_s = 1\nbackoff_cap_s = 2\n' >>"$S/edgeloop.conf"
LOG="$TMP/agent.log"
"$EL" agent --state "$S" 2>"$LOG" &
AGENT_PID=$!
count() { grep -c "event=$1" "$LOG"; }
wait_for() { for _ in $(seq 300); do eval "$1" && return 0; sleep 0.1; done; return 1; }
expect 'wait_for "[ \$(count sync.done) -ge 2 ]"' "the agent syncs every interval"
stop_hub
expect 'wait_for "[ \$(count sync.offline) -ge 2 ]"' "hub down: the agent backs off and retries"
expect 'grep "event=sync.offline" "$LOG" | grep -q "retry_in_s="' "the retry delay is logged"
DONE=$(count sync.done)
start_hub "$PORT"
expect 'wait_for "[ \$(count sync.done) -gt $DONE ]"' "hub back: the agent syncs again"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID"
expect '[ $? -eq 0 ]' "agent stops cleanly"
AGENT_PID=

finish sync
