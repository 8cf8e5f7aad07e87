#!/usr/bin/env bash
# kill -9 of `edgeloop agent` in the middle of an activation, then a restart.
# The agent runs with EDGELOOP_CRASH_AT=activate.after_blob; its training
# child inherits it and is killed (SIGKILL) after the new version's blob was
# verified and before the activation's transaction, and the agent is killed
# with -9 right after. Then, restarted without the variable: `edgeloop check`
# is clean, the previous active version is still active (never a half
# activation), the gated version is a candidate, the audit chain verifies
# and records no activation of it, and the agent trains and activates
# again from new inbox data.
# usage: test_agent_crash.sh EDGELOOP
set -uo pipefail
E=$(realpath "$1")
work=$(mktemp -d /tmp/el_acrash.XXXXXX)
AGENT_PID=
cleanup() {
  if [ -n "$AGENT_PID" ]; then kill -9 "$AGENT_PID"; wait "$AGENT_PID"; fi 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export EDGELOOP_STATE=$work/state
S=$EDGELOOP_STATE
LOG=$work/agent.log
. "$(dirname "$0")/checks.sh"
fail() { bad "$*"; }
lines() { # lines N TAG: N prompt/completion samples unique to TAG
  local i
  for ((i = 0; i < $1; i++)); do
    echo "{\"prompt\": \"$2 PRESS-0$((i % 9)) pressure=$((150 + i))bar Action:\", \"completion\": \" check seal $i\"}"
  done
}
active() { "$E" versions --json | sed -n 's/^  "active": \([0-9a-z]*\),*$/\1/p'; }
vstate() { "$E" show "$1" --json | sed -n 's/^  "state": "\([a-z_]*\)",*$/\1/p'; }
nstarted() { grep -c "event=train.started" "$LOG"; }
start_agent() { # start_agent [ENV=VALUE]: the agent, up once its socket answers
  env "$@" "$E" agent --stop-timeout 5 2>>"$LOG" &
  AGENT_PID=$!
  # the status is read whole before it is matched: with pipefail, grep -q
  # closing the pipe early would fail `status` (SIGPIPE) while it writes
  wait_for 'st=$("$E" status --json 2>/dev/null) && [[ $st == *"\"running\": true"* ]]' ||
    fail "agent did not come up"
}

# a small random Llama (as in test_agent.sh): cpu training takes a second
/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$work/model" 11

"$E" init --model "$work/model" >/dev/null || { echo "init failed"; exit 1; }
cat >>"$S/edgeloop.conf" <<'EOF2'

[train]
backend = cpu
steps = 4
batch = 2
seq_len = 48
rank = 2
min_new_samples = 20
window = 00:00-00:00

[gate]
min_gain = 0
max_forget = 1

[probation]
events = 1
min_events = 1
max_crashes = 0
EOF2
: >"$LOG"
lines 20 hold >"$work/holdout.jsonl"
lines 30 anchor >"$work/anchor.jsonl"
"$E" ingest --split holdout "$work/holdout.jsonl" >/dev/null || fail "ingest holdout"
"$E" ingest --split anchor "$work/anchor.jsonl" >/dev/null || fail "ingest anchor"

# ---- a first version, trained by the agent, activated and judged good ----
start_agent
lines 25 first >"$work/first.jsonl" && mv "$work/first.jsonl" "$S/inbox/first.jsonl"
wait_for 'grep -qE "event=train.(done|refused|failed)" "$LOG"' 1200 || fail "no first training"
grep -q "event=train.done" "$LOG" || { fail "first training not activated"; cat "$LOG"; exit 1; }
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "SIGTERM: agent exit $?"
AGENT_PID=
V1=$(active)
[ -n "$V1" ] && [ "$V1" != null ] || { fail "no active version after training"; exit 1; }
"$E" feedback --accept >/dev/null || fail "feedback --accept"
[ "$(vstate "$V1")" = good ] || fail "version $V1 is $(vstate "$V1"), expected good"
audit_before=$("$E" audit --json | grep -c '"seq"')

# ---- the crash: the trainer dies after the blob check, the agent with -9 ---
start_agent EDGELOOP_CRASH_AT=activate.after_blob
lines 25 second >"$work/second.jsonl" && mv "$work/second.jsonl" "$S/inbox/second.jsonl"
wait_for '[ "$(nstarted)" -ge 2 ]' 1200 || fail "second training did not start"
wait_for 'grep -q "event=train.failed exit=137" "$LOG"' 1200 ||
  fail "the trainer was not killed at activate.after_blob"
kill -9 "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null
AGENT_PID=
V2=$("$E" versions --json | sed -n 's/^ *"id": \([0-9]*\),*$/\1/p' | sort -n | tail -n 1)
[ "$V2" -gt "$V1" ] 2>/dev/null || fail "the interrupted run registered no version"

# ---- restart without the variable -------------------------------------------
out=$("$E" check 2>&1) || fail "state check after the crash: $out"
start_agent
out=$("$E" check 2>&1) || fail "state check after the restart: $out"
"$E" audit --verify >/dev/null 2>&1 || fail "audit chain does not verify"
a=$(active)
[ "$a" = "$V1" ] || fail "active after the crash: $a, expected the previous one ($V1)"
[ "$(vstate "$V1")" = good ] || fail "version $V1 is $(vstate "$V1") after the restart"
[ "$(vstate "$V2")" = candidate ] || fail "version $V2 is $(vstate "$V2"), expected candidate"
acts=$("$E" audit --json | /usr/bin/python3 -c '
import json, sys
rows = json.load(sys.stdin)["audit"]
print(*[sum(r["event"] == "activated" and r["version"] == int(v) for r in rows)
        for v in sys.argv[1:]])' "$V1" "$V2")
[ "$acts" = "1 0" ] ||
  fail "audit activations of $V1 and $V2: $acts, expected 1 and 0 (no half activation)"
[ "$("$E" audit --json | grep -c '"seq"')" -ge "$audit_before" ] || fail "audit entries lost"
ok "after the crash: $V1 active and good, $V2 candidate"

# the restarted agent carries on: new data, a new run, a new active version
lines 40 third >"$work/third.jsonl" && mv "$work/third.jsonl" "$S/inbox/third.jsonl"
n0=$(nstarted)
wait_for '[ "$(nstarted)" -gt "$n0" ] && [ "$(grep -cE "event=train.(done|refused)" "$LOG")" -ge 2 ]' 1200 ||
  fail "the restarted agent did not train"
if grep "event=train" "$LOG" | tail -n 1 | grep -q "event=train.done"; then
  a=$(active)
  [ "$a" -gt "$V2" ] 2>/dev/null && [ "$(vstate "$a")" = probation ] ||
    fail "after the retrain: active $a ($(vstate "$a")), expected a new version on probation"
  ok "the restarted agent trained and activated version $a"
else
  fail "the retrain was refused: $(grep "event=train" "$LOG" | tail -n 1)"
fi
out=$("$E" check 2>&1) || fail "state check after the retrain: $out"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "final SIGTERM: exit $?"
AGENT_PID=

if [ "$fails" -ne 0 ]; then
  echo "--- agent log"; cat "$LOG"
  echo "$fails check(s) failed"
  exit 1
fi
echo "all agent crash checks passed"
