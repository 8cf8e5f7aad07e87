# Shared by the e2e tests that run a fleet (edgeloop-fleet), a real
# edgeloop-hub on 127.0.0.1 (a port chosen at run time) and devices
# (edgeloop): test_sync.sh, test_fleet_hub.sh, test_sync_base.sh.
#
# Source it after setting EL, HUB and F (the edgeloop, edgeloop-hub and
# edgeloop-fleet executables) and TMP (a fresh directory). It sets the EXIT
# trap: a hub or agent still running (HUB_PID, AGENT_PID) is killed and TMP
# removed, unless KEEP is set (KEEP=1 to look at a failed run's files).
# shellcheck shell=bash

# ---- checks: every failed check counts in $fails; finish gives the verdict
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
# quiet CMD...: runs CMD, prints its output only when it fails (a failure)
quiet() { "$@" >"$TMP/out" 2>&1 || { echo "FAIL: $*"; cat "$TMP/out"; fails=$((fails + 1)); }; }
# jget FILE EXPR: d EXPR of the JSON document FILE, e.g. jget f.json '["a"][0]'
jget() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" "$1" "$2"; }
# finish WHAT: exit 1 with the hub log's tail if a check failed, else a last line
finish() {
  if [ "$fails" -ne 0 ]; then
    echo "--- hub log"
    tail -n 20 "$TMP/hub.log"
    echo "$fails check(s) failed"
    exit 1
  fi
  echo "all $1 checks passed"
}

HUB_PID=
AGENT_PID=
lib_cleanup() {
  if [ -n "$AGENT_PID" ]; then kill -9 "$AGENT_PID"; wait "$AGENT_PID"; fi 2>/dev/null
  if [ -n "$HUB_PID" ]; then kill -9 "$HUB_PID"; wait "$HUB_PID"; fi 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap lib_cleanup EXIT

# ---- the fleet and its hub

# fleet_init [KEY...]: a fleet in $EDGELOOP_FLEET (default $TMP/fleet): CA,
# keys root1 rel1 rel2 and the KEYs, root 1 (root1 1-of-1, releases 2-of-2
# rel1 + rel2, a year), a hub certificate for localhost ($TMP/hub.{key,crt})
# and an admin one ($TMP/admin.{key,crt}). Sets ROOT1 and CA.
fleet_init() {
  export EDGELOOP_FLEET="${EDGELOOP_FLEET:-$TMP/fleet}"
  quiet "$F" ca init
  for k in root1 rel1 rel2 "$@"; do quiet "$F" keys gen "$k"; done
  quiet "$F" root init --root-key root1 --root-threshold 1 --release-key rel1 rel2 \
    --release-threshold 2 --expires 365d
  ROOT1=$(ls "$EDGELOOP_FLEET"/root*.elb | head -n 1)
  CA="$EDGELOOP_FLEET/ca.crt"
  quiet "$F" csr --cn localhost --key-out "$TMP/hub.key" -o "$TMP/hub.csr"
  quiet "$F" issue --csr "$TMP/hub.csr" --role hub --name localhost -o "$TMP/hub.crt"
  quiet "$F" csr --cn admin-1 --key-out "$TMP/admin.key" -o "$TMP/admin.csr"
  quiet "$F" issue --csr "$TMP/admin.csr" --role admin -o "$TMP/admin.crt"
}

# start_hub [PORT]: the hub on 127.0.0.1:PORT (default: any free port), data
# in $TMP/hubdata, log appended to $TMP/hub.log; sets HUB_PID and PORT once
# the hub has written its port file (10 s at most).
start_hub() {
  rm -f "$TMP/port"
  "$HUB" serve --listen "127.0.0.1:${1:-0}" --port-file "$TMP/port" --cert "$TMP/hub.crt" \
    --key "$TMP/hub.key" --ca "$CA" --root "$ROOT1" --data "$TMP/hubdata" >>"$TMP/hub.log" 2>&1 &
  HUB_PID=$!
  for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
  PORT=$(cat "$TMP/port")
}

# stop_hub: SIGTERM to the hub, and wait for it (the devices see it offline)
stop_hub() {
  kill -TERM "$HUB_PID"
  wait "$HUB_PID" 2>/dev/null
  HUB_PID=
}

# admin METHOD PATH [FILE]: curl as the fleet admin (FILE as the body),
# prints the HTTP code; the answer's body is in $TMP/admin.out
admin() {
  curl -s -o "$TMP/admin.out" -w '%{http_code}' --cert "$TMP/admin.crt" --key "$TMP/admin.key" \
    --cacert "$CA" -X "$1" ${3:+--data-binary "@$3"} "https://localhost:$PORT$2"
}

# sign_release FILE: signs the release with rel1 and rel2 (root 1's 2-of-2)
sign_release() {
  quiet "$F" release sign "$1" --key rel1
  quiet "$F" release sign "$1" --key rel2
}

# bundle_id FILE: the bundle's id (sha256 of its header bytes, DESIGN.md)
bundle_id() {
  head -c 8 "$1" | tail -c 4 | od -An -tu4 | tr -d ' ' |
    { read -r n; tail -c +9 "$1" | head -c "$n" | sha256sum | cut -c1-64; }
}

# ---- devices

# enroll STATE NAME GROUP: enrolls an initialised device with the fleet (CSR
# $TMP/NAME.csr, certificate $TMP/NAME.crt in GROUP) and the hub
enroll() {
  quiet "$EL" enroll --state "$1" --csr-out "$TMP/$2.csr" --name "$2"
  quiet "$F" issue --csr "$TMP/$2.csr" --role device --group "$3" -o "$TMP/$2.crt"
  quiet "$EL" enroll --state "$1" --cert "$TMP/$2.crt" --ca "$CA" --root "$ROOT1" \
    --hub "https://localhost:$PORT"
}

# device STATE NAME GROUP: init on $TMP/model + enroll
device() {
  quiet "$EL" init --state "$1" --model "$TMP/model"
  enroll "$@"
}

# lines N PREFIX: N prompt/completion samples unique to PREFIX
lines() {
  for i in $(seq 1 "$1"); do
    echo "{\"prompt\": \"$2 PRESS-0$((i % 9)) pressure=$((150 + i))bar Action:\", \"completion\": \" check seal $i\"}"
  done
}

# good_version STATE: a local version that becomes good, for the outbox: a
# lenient gate and a one-event probation, so a two-step run on the cpu
# passes and one accept makes it good
good_version() {
  printf '\n[train]\nbackend = cpu\nsteps = 2\nbatch = 2\nseq_len = 48\nrank = 2\n' >>"$1/edgeloop.conf"
  printf '[gate]\nmin_gain = 0\nmax_forget = 1\n' >>"$1/edgeloop.conf"
  printf '[probation]\nevents = 1\nmin_events = 1\nmax_probe_regress = 1\n' >>"$1/edgeloop.conf"
  lines 30 train >"$TMP/train.jsonl"
  lines 20 hold >"$TMP/hold.jsonl"
  lines 30 anchor >"$TMP/anchor.jsonl"
  quiet "$EL" ingest --state "$1" --split train "$TMP/train.jsonl"
  quiet "$EL" ingest --state "$1" --split holdout "$TMP/hold.jsonl"
  quiet "$EL" ingest --state "$1" --split anchor "$TMP/anchor.jsonl"
  quiet "$EL" train --state "$1"
  quiet "$EL" feedback --state "$1" --accept
}
