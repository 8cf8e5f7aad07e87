#!/usr/bin/env bash
# The closed loop in one command (README command one): a fleet manager, a
# hub on loopback and two devices, on the bundled tiny-bytes model and the
# site-a / site-b data, with real training, signed releases, probation,
# rollback and trust refusals. Each step prints one line; the commands and
# their output go to WORK/demo.log. Every step checks what it claims (exit
# codes, --json fields, `edgeloop versions --json` states): a step that did
# not do what its line says prints the log tail and exits 1.
#
# usage: tools/demo.sh [--build-dir DIR] [--no-setup] [--keep DIR] [--quick]
#   --build-dir DIR  meson build directory with the binaries (default: build)
#   --no-setup       skip tools/deps.sh and the build (use DIR as it is)
#   --keep DIR       work in DIR (created; must be empty or absent) instead
#                    of a new mktemp directory; either way it is kept
#   --quick          shorter training runs (CI); the same steps and checks
set -u
set -o pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$SRC/build"
SETUP=1
WORK=
QUICK=0
usage() {
  sed -n '/^# usage:/,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) [ $# -ge 2 ] || { usage >&2; exit 1; }; BUILD=$(realpath -m "$2"); shift 2 ;;
    --no-setup) SETUP=0; shift ;;
    --keep) [ $# -ge 2 ] || { usage >&2; exit 1; }; WORK=$(realpath -m "$2"); shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; usage >&2; exit 1 ;;
  esac
done

if [ "$SETUP" -eq 1 ]; then
  echo "setup: installing missing Debian packages (tools/deps.sh) and building $BUILD"
  bash "$SRC/tools/deps.sh" || { echo "demo: tools/deps.sh failed" >&2; exit 1; }
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$SRC" >/dev/null || { echo "demo: meson setup failed" >&2; exit 1; }
  fi
  ninja -C "$BUILD" agent/edgeloop sync/hub/edgeloop-hub tools/fleet/edgeloop-fleet >/dev/null ||
    { echo "demo: build failed (ninja -C $BUILD)" >&2; exit 1; }
fi
E="$BUILD/agent/edgeloop"
HUB="$BUILD/sync/hub/edgeloop-hub"
FLEET="$BUILD/tools/fleet/edgeloop-fleet"
for x in "$E" "$HUB" "$FLEET"; do
  [ -x "$x" ] || { echo "demo: $x is missing (build first, or drop --no-setup)" >&2; exit 1; }
done
for x in curl python3; do
  command -v "$x" >/dev/null || { echo "demo: $x is needed (bash tools/deps.sh)" >&2; exit 1; }
done

if [ -z "$WORK" ]; then
  WORK=$(mktemp -d /tmp/edgeloop-demo.XXXXXX)
else
  mkdir -p "$WORK" && [ -z "$(ls -A "$WORK")" ] ||
    { echo "demo: --keep $WORK must be an empty or new directory" >&2; exit 1; }
fi
LOG="$WORK/demo.log"
: >"$LOG"
MODEL="$SRC/tools/models/tiny-bytes"
DATA="$SRC/tools/data"
export EDGELOOP_FLEET="$WORK/fleet"

HUB_PID=
AGENT_PID=
cleanup() {
  if [ -n "$AGENT_PID" ]; then kill -TERM "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; fi
  if [ -n "$HUB_PID" ]; then kill -TERM "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers ----------------------------------------------------------------

STEP=0
NSTEPS=12
step() { STEP=$((STEP + 1)); printf '[%d/%d] %s... ' "$STEP" "$NSTEPS" "$1"; echo "== [$STEP] $1" >>"$LOG"; }
done_() { echo "$1"; echo "-- ok: $1" >>"$LOG"; }
die() {
  echo "FAILED"
  echo "demo: step $STEP: $1" >&2
  echo "--- last lines of $LOG:" >&2
  tail -n 25 "$LOG" >&2
  exit 1
}
# run CMD...: runs it with its output in the log; returns its exit code.
run() { echo "\$ $*" >>"$LOG"; "$@" >>"$LOG" 2>&1; }
# runj OUT CMD...: stdout to OUT (and the log), stderr to the log; returns the exit code.
runj() {
  local out=$1; shift
  echo "\$ $* > $out" >>"$LOG"
  "$@" >"$out" 2>>"$LOG"
  local rc=$?
  cat "$out" >>"$LOG"
  return $rc
}
# jget FILE EXPR: EXPR evaluated with d = the JSON document in FILE.
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# vfield STATE ID EXPR: EXPR over v = version ID of `edgeloop versions --json`.
vfield() {
  "$E" versions --state "$1" --json >"$WORK/versions.json" 2>>"$LOG" || return 1
  python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
v = [x for x in d["versions"] if x["id"] == int(sys.argv[2])][0]
print(eval(sys.argv[3]))' "$WORK/versions.json" "$2" "$3"
}
active_of() {
  "$E" versions --state "$1" --json >"$WORK/versions.json" 2>>"$LOG" || return 1
  jget "$WORK/versions.json" 'd["active"]'
}
last_id() {
  "$E" versions --state "$1" --json >"$WORK/versions.json" 2>>"$LOG" || return 1
  jget "$WORK/versions.json" 'max(x["id"] for x in d["versions"])'
}
admin_get() { # admin_get PATH: GET with curl as the fleet admin; prints the HTTP code
  curl -s -o "$WORK/admin.out" -w '%{http_code}' --cert "$WORK/admin.crt" --key "$WORK/admin.key" \
    --cacert "$EDGELOOP_FLEET/ca.crt" "https://localhost:$PORT$1"
}
fmt() { python3 -c 'import sys; print("%.2f" % float(sys.argv[1]))' "$1"; }

if [ "$QUICK" -eq 1 ]; then
  TRAIN_LINES=200; STEPS=30
else
  TRAIN_LINES=400; STEPS=60
fi

echo "edgeloop demo: work directory $WORK (log: $LOG)"

# ---- 1. fleet ----------------------------------------------------------------

step "fleet manager creates the CA, a root key, 3 release keys and root metadata (releases need 2 of 3)"
run "$FLEET" ca init || die "ca init"
for k in root1 rel1 rel2 rel3 rogue; do run "$FLEET" keys gen "$k" || die "keys gen $k"; done
run "$FLEET" root init --root-key root1 --root-threshold 1 --release-key rel1 rel2 rel3 \
  --release-threshold 2 --expires 365d || die "root init"
ROOT=$(ls "$EDGELOOP_FLEET"/root*.elb 2>/dev/null | head -n 1)
[ -n "$ROOT" ] || die "no root.elb in $EDGELOOP_FLEET"
CA="$EDGELOOP_FLEET/ca.crt"
run "$FLEET" csr --cn localhost --key-out "$WORK/hub.key" -o "$WORK/hub.csr" || die "hub csr"
run "$FLEET" issue --csr "$WORK/hub.csr" --role hub --name localhost -o "$WORK/hub.crt" || die "hub cert"
run "$FLEET" csr --cn admin-1 --key-out "$WORK/admin.key" -o "$WORK/admin.csr" || die "admin csr"
run "$FLEET" issue --csr "$WORK/admin.csr" --role admin -o "$WORK/admin.crt" || die "admin cert"
done_ "root v1 signed; hub and admin certificates issued"

# ---- 2. hub ------------------------------------------------------------------

step "a hub starts on loopback (mutual TLS, SQLite + blob dir, port chosen at run time)"
echo "\$ $HUB serve --listen 127.0.0.1:0 ... (log: $WORK/hub.log)" >>"$LOG"
"$HUB" serve --listen 127.0.0.1:0 --port-file "$WORK/hub.port" --cert "$WORK/hub.crt" \
  --key "$WORK/hub.key" --ca "$CA" --root "$ROOT" --data "$WORK/hub" >>"$WORK/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 100); do [ -s "$WORK/hub.port" ] && break; sleep 0.1; done
[ -s "$WORK/hub.port" ] || die "the hub wrote no port file (see $WORK/hub.log)"
PORT=$(cat "$WORK/hub.port")
# what the fleet manager passes to the commands that talk to the hub
H=(--hub "https://localhost:$PORT" --cert "$WORK/admin.crt" --key "$WORK/admin.key" --ca "$CA")
[ "$(admin_get /v1/root/1)" = 200 ] || die "the hub does not serve root 1 to the admin"
done_ "https://localhost:$PORT"

# ---- 3. enrollment -------------------------------------------------------------

step "two devices enroll: dev-a (group line-a, site A) and dev-b (group line-b, site B)"
A="$WORK/dev-a"
B="$WORK/dev-b"
for d in a b; do
  S="$WORK/dev-$d"
  run "$E" init --state "$S" --model "$MODEL" || die "init dev-$d"
  run "$E" enroll --state "$S" --csr-out "$WORK/dev-$d.csr" --name "dev-$d" || die "csr dev-$d"
  run "$FLEET" issue --csr "$WORK/dev-$d.csr" --role device --group "line-$d" -o "$WORK/dev-$d.crt" ||
    die "issue dev-$d"
  run "$E" enroll --state "$S" --cert "$WORK/dev-$d.crt" --ca "$CA" --root "$ROOT" \
    --hub "https://localhost:$PORT" || die "enroll dev-$d"
  # (read whole, then matched: under pipefail, grep -q closing the pipe early
  # would fail the command that is still writing)
  cfg=$("$E" config --state "$S" 2>>"$LOG") &&
    grep -qx "\[hub\] url = https://localhost:$PORT (file)" <<<"$cfg" ||
    die "dev-$d: enroll did not configure the hub"
  # the demo's settings: the built-in training and gate defaults (rank 2,
  # all seven projections, lr 0.002, batch 32 of which 30 rows rehearse the
  # base model's replay.jsonl; min_gain 0.01, max_forget 0.02), $STEPS steps,
  # and a 3-event probation so a few operator answers decide it
  cat >>"$S/edgeloop.conf" <<CONF

# --- tools/demo.sh
[train]
backend = auto
steps = $STEPS
seed = 1
[probation]
events = 3
min_events = 3
window = 3
max_reject_rate = 0.3
CONF
done
done_ "device keys made on the devices, certificates issued from their CSRs, root pinned"

# ---- 4-7. local training and sync ---------------------------------------------

# wait_for SECONDS CMD...: polls CMD every half second; 0 once it succeeds.
wait_for() {
  local n=$(($1 * 2)); shift
  while [ "$n" -gt 0 ]; do
    "$@" && return 0
    sleep 0.5
    n=$((n - 1))
  done
  return 1
}
trained() { # trained STATE: a version exists and the gate has judged it
  local v
  v=$(last_id "$1" 2>/dev/null) && [ "$v" != None ] && [ "$(vfield "$1" "$v" 'v["state"]')" != candidate ]
}
logged() { # logged EVENT LOGFILE: the agent wrote an event=EVENT line
  grep -q "event=$1" "$2" 2>/dev/null
}
sent() { # sent STATE: the hub acknowledged at least one outbox entry
  [ "$(python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0])' \
    "$1/registry.db" 2>>"$LOG")" -ge 1 ] 2>/dev/null
}

# train_device NAME STATE SITE oneshot|agent: ingest the site's data and
# train, with `edgeloop train` or through the agent's inbox; check the gate.
train_device() {
  local name=$1 S=$2 site=$3 mode=$4 v hb ha
  head -n "$TRAIN_LINES" "$DATA/$site/train.jsonl" >"$WORK/$name-train.jsonl"
  head -n 60 "$DATA/$site/holdout.jsonl" >"$WORK/$name-holdout.jsonl"
  head -n 120 "$DATA/$site/anchor.jsonl" >"$WORK/$name-anchor.jsonl"
  for sp in holdout anchor; do
    run "$E" ingest --state "$S" --split "$sp" "$WORK/$name-$sp.jsonl" || die "$name ingest $sp"
  done
  if [ "$mode" = oneshot ]; then
    run "$E" ingest --state "$S" --split train "$WORK/$name-train.jsonl" || die "$name ingest train"
    runj "$WORK/train-$name.json" nice -n 5 "$E" train --state "$S" --json ||
      die "$name: train failed or the gate refused it"
  else
    # the agent trains once min_new_samples arrived and syncs on its timer
    printf '[train]\nmin_new_samples = 50\n[sync]\ninterval_s = 2\nbackoff_base_s = 1\nbackoff_cap_s = 2\n' \
      >>"$S/edgeloop.conf"
    echo "\$ $E agent --state $S (log: $WORK/agent-$name.log)" >>"$LOG"
    nice -n 5 "$E" agent --state "$S" 2>>"$WORK/agent-$name.log" &
    AGENT_PID=$!
    mkdir -p "$S/inbox"
    cp "$WORK/$name-train.jsonl" "$S/inbox/$site.jsonl.tmp" &&
      mv "$S/inbox/$site.jsonl.tmp" "$S/inbox/$site.jsonl" || die "$name: inbox"
    wait_for 240 trained "$S" || die "$name: the agent did not train within 240 s (see $WORK/agent-$name.log)"
    # the version is judged before the training child exits and the agent
    # logs train.done, so wait for the line too
    wait_for 60 logged train.done "$WORK/agent-$name.log" || die "$name: the agent logged no train.done"
    [ -e "$S/inbox/done/$site.jsonl" ] || die "$name: the inbox file was not ingested"
  fi
  v=$(last_id "$S") || die "$name: no version"
  [ "$(vfield "$S" "$v" 'v["gate"]["pass"]')" = True ] || die "$name: the gate did not pass"
  [ "$(vfield "$S" "$v" 'v["state"]')" = probation ] || die "$name: v$v is not on probation"
  [ "$(active_of "$S")" = "$v" ] || die "$name: v$v is not active"
  hb=$(fmt "$(vfield "$S" "$v" 'v["metrics"]["holdout_before"]')") || die "$name: no metrics"
  ha=$(fmt "$(vfield "$S" "$v" 'v["metrics"]["holdout_after"]')") || die "$name: no metrics"
  done_ "$(vfield "$S" "$v" 'v["backend"]') backend: holdout loss $hb -> $ha, gate passed, v$v on probation"
}
# good_and_sync NAME STATE oneshot|agent: three operator accepts end
# probation; `edgeloop sync` (or the agent, at once) uploads the good
# version's signed delta.
good_and_sync() {
  local name=$1 S=$2 mode=$3 s="$WORK/sync-$1.json" v how
  v=$(active_of "$S") || die "$name: no versions"
  for _ in 1 2 3; do run "$E" feedback --state "$S" --accept || die "$name: feedback"; done
  [ "$(vfield "$S" "$v" 'v["state"]')" = good ] || die "$name: v$v is not good after 3 accepts"
  if [ "$mode" = oneshot ]; then
    runj "$s" "$E" sync --state "$S" --json || die "$name: sync failed"
    [ "$(jget "$s" 'd["status_posted"]')" = True ] || die "$name: no status posted"
    how="edgeloop sync"
    [ "$name" = dev-a ] && A_BUNDLE=$(jget "$s" '[e["bundle"] for e in d["events"] if e["outcome"] == "uploaded"][0]')
  else
    wait_for 60 sent "$S" || die "$name: the agent did not upload the delta within 60 s"
    kill -TERM "$AGENT_PID"
    wait "$AGENT_PID"
    local rc=$?
    AGENT_PID=
    [ "$rc" -eq 0 ] || die "$name: the agent did not stop cleanly (exit $rc)"
    how="the agent"
  fi
  sent "$S" || die "$name: the hub acknowledged no delta"
  [ "$(admin_get "/v1/devices/$name")" = 200 ] || die "the hub does not know $name"
  done_ "3 accepts, v$v good; $how uploaded its signed delta and audit head"
}

step "dev-a ingests site-A data ($TRAIN_LINES train lines) and trains once (edgeloop train, --backend auto)"
train_device dev-a "$A" site-a oneshot
step "dev-a: operator accepts end probation; edgeloop sync sends the signed delta to the hub"
good_and_sync dev-a "$A" oneshot
step "dev-b runs the agent daemon: site-B data ($TRAIN_LINES lines) dropped into its inbox, it ingests and trains"
train_device dev-b "$B" site-b agent
step "dev-b: operator accepts end probation; the agent syncs the signed delta at once, then stops"
good_and_sync dev-b "$B" agent
B_GOOD=$(active_of "$B")

# ---- 8-9. a bad release to one group, rolled back on probation ----------------

step "the manager pushes a signed (2-of-3) adapter release to group line-b (a packaging bug flipped its sign); dev-b installs it on probation"
# a bad adapter: dev-a's good one packaged with the update's sign flipped
# and doubled (every lora_B x -2), a bug no signature check can see
A_GOOD=$(active_of "$A")
run "$E" export "$A_GOOD" --peft "$WORK/bad-adapter" --state "$A" || die "export dev-a v$A_GOOD"
python3 - "$WORK/bad-adapter/adapter_model.safetensors" <<'PY' || die "making the bad adapter"
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
for k, t in json.loads(b[8:8 + n]).items():
    if k == "__metadata__" or "lora_B" not in k or t["dtype"] != "F32":
        continue
    s, e = (8 + n + x for x in t["data_offsets"])
    vals = struct.unpack("<%df" % ((e - s) // 4), b[s:e])
    b[s:e] = struct.pack("<%df" % len(vals), *(-2.0 * x for x in vals))
open(p, "wb").write(b)
PY
run "$FLEET" release create --kind adapter --adapter "$WORK/bad-adapter" --base "$MODEL" \
  --target line-b --counter 1 --expires 30d -o "$WORK/rel-bad.elb" || die "release create"
run "$FLEET" release sign "$WORK/rel-bad.elb" --key rel1 || die "release sign rel1"
run "$FLEET" release sign "$WORK/rel-bad.elb" --key rel2 || die "release sign rel2"
run "$FLEET" release push "$WORK/rel-bad.elb" "${H[@]}" || die "edgeloop-fleet release push"
runj "$WORK/sync-a2.json" "$E" sync --state "$A" --json || die "dev-a sync"
[ "$(jget "$WORK/sync-a2.json" 'd["installed"]')" = 0 ] || die "dev-a (line-a) installed a line-b release"
runj "$WORK/sync-b2.json" "$E" sync --state "$B" --json || die "dev-b sync"
[ "$(jget "$WORK/sync-b2.json" 'd["installed"]')" = 1 ] || die "dev-b did not install the release"
B_BAD=$(active_of "$B")
[ "$B_BAD" != "$B_GOOD" ] && [ "$B_BAD" != None ] || die "the release is not active on dev-b"
[ "$(vfield "$B" "$B_BAD" 'v["origin"]')" = fleet ] || die "v$B_BAD is not a fleet version"
[ "$(vfield "$B" "$B_BAD" 'v["state"]')" = probation ] || die "v$B_BAD is not on probation"
done_ "dev-b: v$B_BAD (fleet) active on probation; dev-a (line-a) left it alone"

step "dev-b's operators reject the bad update; probation rolls it back automatically"
for _ in 1 2 3; do run "$E" feedback --state "$B" --reject || die "feedback --reject"; done
[ "$(vfield "$B" "$B_BAD" 'v["state"]')" = rolled_back ] || die "v$B_BAD was not rolled back"
[ "$(active_of "$B")" = "$B_GOOD" ] || die "dev-b's last good version v$B_GOOD is not active again"
run "$E" audit --state "$B" --verify || die "dev-b's audit chain does not verify"
done_ "3/3 rejected (max 0.30): v$B_BAD rolled_back, v$B_GOOD active again, audit chain verifies"

# ---- 10. refusals --------------------------------------------------------------

step "forged releases are refused by the hub (release push) and by the devices (USB import): rogue key, one key only, altered manifest"
run "$FLEET" release create --kind adapter --adapter "$WORK/bad-adapter" --base "$MODEL" \
  --target line-b --counter 5 --expires 30d -o "$WORK/rel-forged.elb" || die "release create"
cp "$WORK/rel-forged.elb" "$WORK/rel-onekey.elb"
cp "$WORK/rel-forged.elb" "$WORK/rel-altered.elb"
run "$FLEET" release sign "$WORK/rel-forged.elb" --key rogue || die "sign rogue"
run "$FLEET" release sign "$WORK/rel-forged.elb" --key rel1 || die "sign rel1"
run "$FLEET" release sign "$WORK/rel-onekey.elb" --key rel1 || die "sign rel1"
run "$FLEET" release sign "$WORK/rel-altered.elb" --key rel1 || die "sign rel1"
run "$FLEET" release sign "$WORK/rel-altered.elb" --key rel3 || die "sign rel3"
# signed 2-of-3, then re-targeted by someone without keys: line-b -> line-a
python3 - "$WORK/rel-altered.elb" <<'PY' || die "altering the manifest"
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<I", b[4:8])[0]
i = b.index(b'"line-b"', 8, 8 + n)
b[i:i + 8] = b'"line-a"'
open(sys.argv[1], "wb").write(b)
PY
codes=
for r in forged onekey altered; do
  runj "$WORK/push-$r.json" "$FLEET" release push "$WORK/rel-$r.elb" "${H[@]}" --json
  rc=$?
  # exit 3 (refused by trust); the hub answers a signature that does not
  # verify as bad input (HTTP 400, exit 2), still with the trust code
  [ "$rc" -eq 3 ] || [ "$rc" -eq 2 ] || die "the hub did not refuse the $r release (release push exit $rc)"
  hc=$(jget "$WORK/push-$r.json" 'd["error"]["code"]') || die "no error code from the hub"
  # offered offline (USB) to the device it names: the same trust checks
  S=$B
  [ "$r" = altered ] && S=$A
  runj "$WORK/import-$r.json" "$E" import "$WORK/rel-$r.elb" --state "$S" --json
  rc=$?
  [ "$rc" -eq 3 ] || die "the $r release was not refused by the device (exit $rc)"
  c=$(jget "$WORK/import-$r.json" 'd["error"]["code"]') || die "no error code"
  case "$r:$c" in
    forged:unknown_key|forged:threshold_not_met|onekey:threshold_not_met|altered:bad_signature) ;;
    *) die "the $r release was refused for the wrong reason ($c)" ;;
  esac
  codes="$codes$r: hub $hc / device $c, "
done
[ "$(active_of "$B")" = "$B_GOOD" ] && [ "$(active_of "$A")" = "$A_GOOD" ] ||
  die "a refused release changed an active version"
done_ "all refused (${codes%, }); nothing changed"

# ---- 11. promotion --------------------------------------------------------------

step "dev-a's synced adapter is promoted (edgeloop-fleet promote) to a release for line-b, signed 2-of-3, pushed, installed on dev-b"
# the manager rebuilds dev-a's adapter from the delta the hub holds
runj "$WORK/promote.json" "$FLEET" promote "$A_BUNDLE" "${H[@]}" --target line-b --counter 2 \
  --expires 30d -o "$WORK/rel-promoted.elb" --json || die "edgeloop-fleet promote $A_BUNDLE"
run "$FLEET" release sign "$WORK/rel-promoted.elb" --key rel2 || die "sign rel2"
run "$FLEET" release sign "$WORK/rel-promoted.elb" --key rel3 || die "sign rel3"
run "$FLEET" release inspect "$WORK/rel-promoted.elb" || die "release inspect refuses it"
run "$FLEET" release push "$WORK/rel-promoted.elb" "${H[@]}" || die "release push of the promoted release"
runj "$WORK/sync-b3.json" "$E" sync --state "$B" --json || die "dev-b sync"
[ "$(jget "$WORK/sync-b3.json" 'd["installed"]')" = 1 ] || die "dev-b did not install the promoted release"
B_PROM=$(active_of "$B")
[ "$(vfield "$B" "$B_PROM" 'v["origin"]')" = fleet ] &&
  [ "$(vfield "$B" "$B_PROM" 'v["state"]')" = probation ] || die "v$B_PROM is not a fleet version on probation"
# the hub and dev-b rebuilt it from a delta: the weights must be dev-a's, bit for bit
run "$E" export "$B_PROM" --peft "$WORK/dev-b-v$B_PROM" --state "$B" || die "export dev-b v$B_PROM"
run "$E" export "$A_GOOD" --peft "$WORK/dev-a-v$A_GOOD" --state "$A" || die "export dev-a v$A_GOOD"
cmp -s "$WORK/dev-a-v$A_GOOD/adapter_model.safetensors" "$WORK/dev-b-v$B_PROM/adapter_model.safetensors" ||
  die "dev-b's v$B_PROM weights differ from dev-a's v$A_GOOD"
done_ "dev-b: v$B_PROM (fleet, = dev-a v$A_GOOD bit for bit) active on probation"

# ---- 12. summary -----------------------------------------------------------------

step "final state: state checks, and the fleet versions' loss on dev-b's own holdout data"
for d in a b; do
  run "$E" check --state "$WORK/dev-$d" || die "dev-$d: edgeloop check fails"
  run "$E" sync --state "$WORK/dev-$d" || die "dev-$d: the last status report"
done
# the fleet as the hub sees it, from the devices' signed status reports
runj "$WORK/fleet-status.txt" "$FLEET" status "${H[@]}" || die "edgeloop-fleet status"
grep -Eq "^dev-a +line-a +1 +good " "$WORK/fleet-status.txt" &&
  grep -Eq "^dev-b +line-b +$B_PROM +probation .*reject" "$WORK/fleet-status.txt" ||
  die "edgeloop-fleet status does not show what the devices did"
# fleet versions carry no local gate figures: measure them here (the base,
# then each adapter, on the holdout lines dev-b ingested)
evalj() { # evalj OUT [--adapter DIR]: the base (+ adapter) on dev-b's holdout
  local out=$1; shift
  runj "$out" "$E" eval --model "$MODEL" --data "$WORK/dev-b-holdout.jsonl" --seq-len 128 \
    --backend auto --json "$@"
}
evalj "$WORK/eval-base.json" || die "eval of the base model"
echo "{\"base\": $(jget "$WORK/eval-base.json" 'd["loss"]')" >"$WORK/eval-dev-b.json"
run "$E" export "$B_BAD" --peft "$WORK/dev-b-v$B_BAD" --state "$B" || die "export dev-b v$B_BAD"
for v in "$B_BAD" "$B_PROM"; do
  evalj "$WORK/eval-v$v.json" --adapter "$WORK/dev-b-v$v" || die "eval of dev-b v$v"
  echo ", \"$v\": $(jget "$WORK/eval-v$v.json" 'd["loss"]')" >>"$WORK/eval-dev-b.json"
done
echo "}" >>"$WORK/eval-dev-b.json"
[ "$(jget "$WORK/eval-dev-b.json" "d['$B_PROM'] < d['base']")" = True ] ||
  die "site A's adapter does not lower the loss on site B's holdout"
[ "$(jget "$WORK/eval-dev-b.json" "d['$B_BAD'] > $(vfield "$B" "$B_GOOD" 'v["metrics"]["holdout_after"]')")" = True ] ||
  die "the rolled-back v$B_BAD is not worse than the v$B_GOOD it replaced"
done_ "checks clean; base $(fmt "$(jget "$WORK/eval-dev-b.json" 'd["base"]')"), bad v$B_BAD $(
  fmt "$(jget "$WORK/eval-dev-b.json" "d['$B_BAD']")"), promoted v$B_PROM $(
  fmt "$(jget "$WORK/eval-dev-b.json" "d['$B_PROM']")")"
echo
for d in a b; do
  S="$WORK/dev-$d"
  "$E" versions --state "$S" --json >"$WORK/versions-$d.json" 2>>"$LOG" || die "versions dev-$d"
  python3 - "$WORK/versions-$d.json" "dev-$d" "$WORK/eval-dev-$d.json" <<'PY' || die "summary dev-$d"
import json, os, sys
d = json.load(open(sys.argv[1]))
measured = json.load(open(sys.argv[3])) if os.path.exists(sys.argv[3]) else {}
print(f"{sys.argv[2]}  (active: v{d['active']})")
print("  ver  origin  state        holdout before -> after   note")
for v in d["versions"]:
    m = v.get("metrics") or {}
    hb, ha = m.get("holdout_before"), m.get("holdout_after")
    # a fleet version's own figures are its source device's: measure it here
    if v["origin"] == "fleet" and str(v["id"]) in measured:
        hb, ha = measured["base"], measured[str(v["id"])]
    loss = f"{hb:6.2f} -> {ha:6.2f}" if hb is not None and ha is not None else "       -"
    note = "trained on this site's data" if v["origin"] == "local" else "fleet release"
    if v["origin"] == "fleet" and str(v["id"]) in measured:
        note += " (loss by edgeloop eval)"
    if v["state"] == "rolled_back":
        why = v.get("reason") or "probation"
        note = "rolled back: " + why + (" (operator rejects)" if why == "reject_rate" else "")
    elif v["state"] == "rejected":
        note = "gate refused: " + (v.get("reason") or "")
    mark = "*" if v["active"] else " "
    print(f"  {mark}v{v['id']:<2} {v['origin']:<7} {v['state']:<12} {loss:<25} {note}")
PY
done
echo
echo "the hub's view (edgeloop-fleet status):"
sed 's/^/  /' "$WORK/fleet-status.txt"
echo
echo "files: $WORK"
echo "  fleet keys, CA, root.elb: $EDGELOOP_FLEET"
echo "  hub data: $WORK/hub (log $WORK/hub.log), device states: $A, $B"
echo "  log of every command: $LOG"
echo "demo: all $NSTEPS steps passed"
