#!/usr/bin/env bash
# The state-changing commands the agent's socket offers (feedback, activate,
# rollback, pin, unpin, pause-training, resume-training) are routed: with a real agent
# daemon running they are answered by it ("via": "agent"), without one they
# work on the state directly ("via": "direct") under the shared agent lock.
#  - The same script of commands (successes and refusals, --json and text)
#    runs on two identical states, one with an agent and one without; the
#    transcripts (stdout, stderr, exit status) must be equal once "via" and
#    timestamps are set aside, and the resulting states must be equal too.
#  - The lock: a command waits for an agent that holds agent.lock but does
#    not answer and, past EDGELOOP_AGENT_WAIT_S, fails (exit 1,
#    "unavailable") without changing anything; an agent waits for commands
#    holding the lock shared; a pause written without an agent is honoured
#    by an agent started later.
# argv[1]: the edgeloop executable.
set -u
EL=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
. "$here/test_crash_fixtures.sh"
TMP=$(mktemp -d /tmp/el_agentctl.XXXXXX)
AGENT_PID=
HOLDER_PID=
cleanup() {
  if [ -n "$AGENT_PID" ]; then kill -9 "$AGENT_PID"; wait "$AGENT_PID"; fi 2>/dev/null
  if [ -n "$HOLDER_PID" ]; then kill "$HOLDER_PID"; wait "$HOLDER_PID"; fi 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
. "$here/checks.sh"
# hold sh|ex FILE SECONDS: one process holds flock(FILE) for SECONDS (or
# until killed), as an agent (ex) or a routed command (sh) would; it
# touches FILE.ready once it holds the lock and FILE.released just before
# it lets go. Sets HOLDER_PID.
hold() {
  rm -f "$2.ready" "$2.released"
  /usr/bin/python3 -c '
import fcntl, sys, time
f = open(sys.argv[2])
fcntl.flock(f, fcntl.LOCK_EX if sys.argv[1] == "ex" else fcntl.LOCK_SH)
open(sys.argv[2] + ".ready", "w").close()
time.sleep(float(sys.argv[3]))
open(sys.argv[2] + ".released", "w").close()
' "$1" "$2" "$3" &
  HOLDER_PID=$!
  HOLD_FILE=$2
  wait_for '[ -e "$HOLD_FILE.ready" ]' || bad "lock holder did not start"
}
jget() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

/usr/bin/python3 "$here/tiny_model.py" "$TMP/model" 5
for t in 1 2 3; do make_adapter "$TMP/a$t" "$t"; done
# setup DIR: a state with three imported candidates (1, 2, 3) and a short
# probation: 3 events end it, 2 rejects out of 2 roll it back
setup() {
  "$EL" init --state "$1" --model "$TMP/model" >/dev/null || bad "init $1"
  cat >>"$1/edgeloop.conf" <<'EOF'

[train]
min_new_samples = 1000000

[probation]
events = 3
min_events = 2
window = 3
max_reject_rate = 0.3
EOF
  for t in 1 2 3; do "$EL" register-adapter --state "$1" "$TMP/a$t" >/dev/null || bad "register $t"; done
}
start_agent() { # start_agent DIR LOG
  AGENT_DIR=$1
  "$EL" agent --state "$1" --stop-timeout 5 2>>"$2" &
  AGENT_PID=$!
  wait_for '"$EL" status --state "$AGENT_DIR" --json 2>/dev/null | grep -q "\"running\": true"' ||
    bad "agent on $1 did not come up"
}
stop_agent() {
  kill -TERM "$AGENT_PID"
  wait "$AGENT_PID"
  expect '[ $? -eq 0 ]' "agent stops cleanly"
  AGENT_PID=
}

# script DIR OUT: the commands, each as "$ cmd" + stdout + stderr + exit
# status into OUT (volatile fields are dropped when comparing)
script() {
  local S=$1 out=$2
  run() {
    printf '$ %s\n' "$*" >>"$out"
    "$EL" "$@" --state "$S" >>"$out" 2>"$TMP/stderr"
    local rc=$?
    sed "s|$S|STATE|g" "$TMP/stderr" >>"$out"
    echo "exit $rc" >>"$out"
  }
  run activate 1 --json                  # candidate -> probation
  run feedback --accept --json
  run feedback --accept
  run feedback --accept --json           # third event: good
  run activate 2                         # good 1 stays good
  run feedback --reject --json
  run feedback --reject --json           # 2/2 rejected: rolled back to 1
  run activate 3 --json
  run rollback --json                    # 3 rolled back, 1 active again
  run rollback --to base --json
  run rollback --to 1                    # a good version, by id
  run feedback --accept --version 1 --json
  run pin 1 --json                       # 1 is active and good
  run rollback --to base --json          # refused while pinned: exit 3
  run pin 2                              # not the active version: exit 3
  run unpin --json
  run unpin                              # nothing pinned: exit 3
  run pin 1
  run unpin
  # refusals: same code, message and exit status with or without an agent
  run activate 99 --json                 # not_found: exit 2
  run activate 99
  run activate 2 --json                  # rolled_back: refused, exit 3
  run rollback --to 2 --json             # not good: exit 3
  run rollback --to 99
  run feedback --reject --version 99 --json
  run activate 1 --json                  # already active: exit 3
  run rollback --to x                    # usage: exit 1, never sent
  run feedback --json                    # usage
  run pause-training --json
  run pause-training
  run resume-training --json
  run resume-training
}
normalize() { # drops "via" and timestamps; $1 the transcript
  grep -vE '"via"|_at"|"probation_since"' "$1"
}
# state_of DIR: what both runs must agree on (an operator rollback's reason
# says whether it came through the socket)
state_of() {
  "$EL" versions --state "$1" --json | grep -vE '_at"|"probation_since"' |
    sed 's/"operator (agent socket)"/"operator"/'
  [ -e "$1/agent.paused" ] && echo paused || echo not paused
}

D="$TMP/direct"
A="$TMP/agent"
setup "$D"
setup "$A"

# ---- without an agent -----------------------------------------------------
script "$D" "$TMP/direct.txt"
expect '[ "$(grep -c "\"via\": \"direct\"" "$TMP/direct.txt")" -ge 10 ] &&
        ! grep -q "\"via\": \"agent\"" "$TMP/direct.txt"' "no agent: commands work directly"
"$EL" status --state "$D" --json >"$TMP/st_direct.json"
expect '[ "$(jget "[\"agent\"][\"running\"]" <"$TMP/st_direct.json")" = False ]' \
       "status without an agent"

# ---- with an agent ------------------------------------------------------------
start_agent "$A" "$TMP/agent.log"
script "$A" "$TMP/agent.txt"
expect '[ "$(grep -c "\"via\": \"agent\"" "$TMP/agent.txt")" -ge 10 ] &&
        ! grep -q "\"via\": \"direct\"" "$TMP/agent.txt"' "agent running: the agent answers"
expect 'grep -q "event=feedback verdict=accept version=1 outcome=good" "$TMP/agent.log" &&
        grep -q "event=feedback verdict=reject version=2 outcome=rolled_back" "$TMP/agent.log" &&
        grep -q "event=activated version=3" "$TMP/agent.log" &&
        grep -q "event=rolled_back from=3 active=1" "$TMP/agent.log" &&
        grep -q "event=pinned version=1" "$TMP/agent.log" &&
        grep -q "event=unpinned version=1" "$TMP/agent.log" &&
        grep -q "event=train.paused" "$TMP/agent.log"' "the agent logged each command"
# the agent's store acts as "agent": the audit chain says who did it
expect '"$EL" audit --state "$A" --json | grep -q "\"actor\": \"agent\""' \
       "audit rows name the agent as actor"

normalize "$TMP/direct.txt" >"$TMP/direct.norm"
normalize "$TMP/agent.txt" >"$TMP/agent.norm"
if diff -u "$TMP/direct.norm" "$TMP/agent.norm" >"$TMP/diff"; then
  ok "same output, errors and exit status with and without an agent"
else
  bad "transcripts differ:"; cat "$TMP/diff"
fi
expect 'grep -A3 "^\$ activate 99 --json" "$TMP/agent.txt" | grep -q "\"code\":\"not_found\"" &&
        grep -A3 "^\$ activate 99 --json" "$TMP/agent.txt" | grep -q "^exit 2"' \
       "a bad version id through the agent: not_found, exit 2"
expect 'grep -A3 "^\$ activate 2 --json" "$TMP/agent.txt" | grep -q "^exit 3"' \
       "a refused activation through the agent: exit 3"
expect 'grep -A6 "^\$ pin 1 --json" "$TMP/agent.txt" | grep -q "\"via\": \"agent\"" &&
        grep -A2 "^\$ rollback --to base --json" "$TMP/agent.txt" | grep -q "is pinned" &&
        grep -A2 "^\$ rollback --to base --json" "$TMP/agent.txt" | grep -q "^exit 3" &&
        grep -A3 "^\$ pin 2$" "$TMP/agent.txt" | grep -q "^exit 3" &&
        grep -A3 "^\$ unpin$" "$TMP/agent.txt" | grep -q "^exit 3"' \
       "pin and unpin through the agent, refusals with exit 3"
expect '[ "$(state_of "$D")" = "$(state_of "$A")" ]' "both states end the same"
"$EL" versions --state "$A" --json >"$TMP/v.json"
expect '[ "$(jget "[\"active\"]" <"$TMP/v.json")" = 1 ] &&
        [ "$(jget "[\"versions\"][1][\"state\"]" <"$TMP/v.json")" = rolled_back ] &&
        [ "$(jget "[\"versions\"][2][\"state\"]" <"$TMP/v.json")" = rolled_back ] &&
        [ "$(jget "[\"versions\"][0][\"state\"]" <"$TMP/v.json")" = good ]' \
       "the resulting state: 1 good and active, 2 and 3 rolled back"

# ---- the lock --------------------------------------------------------------
expect '! flock -n -s "$A/agent.lock" true' "a running agent holds agent.lock exclusively"
stop_agent
# an agent that holds agent.lock but does not answer (starting, stopping,
# stuck): here a process that only holds the lock
hold ex "$D/agent.lock" 60
before=$("$EL" audit --state "$D" --json | grep -c '"seq"')
EDGELOOP_AGENT_WAIT_S=1 "$EL" feedback --accept --state "$D" --json >"$TMP/held.json"
rc=$?
expect '[ $rc -eq 1 ] && grep -q "\"code\":\"unavailable\"" "$TMP/held.json" &&
        grep -q "does not answer" "$TMP/held.json"' \
       "lock held, no answer: the command gives up (exit 1, unavailable)"
expect '[ "$("$EL" audit --state "$D" --json | grep -c "\"seq\"")" -eq "$before" ]' \
       "... and changed nothing"
EDGELOOP_AGENT_WAIT_S=1 "$EL" pause-training --state "$D" >/dev/null 2>&1
expect '[ $? -eq 1 ] && [ ! -e "$D/agent.paused" ]' "pause-training does not write beside a lock holder"
kill "$HOLDER_PID"; wait "$HOLDER_PID" 2>/dev/null
HOLDER_PID=
# a holder that lets go: the command waits for it, then works directly
hold ex "$D/agent.lock" 1
"$EL" pause-training --state "$D" --json >"$TMP/waited.json"
rc=$?
expect '[ $rc -eq 0 ] && [ -e "$D/agent.lock.released" ] &&
        grep -q "\"via\": \"direct\"" "$TMP/waited.json"' \
       "a command waits for the lock, then works directly"
wait "$HOLDER_PID"
HOLDER_PID=
expect '[ -e "$D/agent.paused" ]' "pause written without an agent"
"$EL" status --state "$D" --json >"$TMP/st_paused.json"
expect '[ "$(jget "[\"agent\"][\"paused\"]" <"$TMP/st_paused.json")" = True ]' \
       "status without an agent shows the pause"

# an agent waits for a command holding the lock shared (as routed commands
# do while they work directly), and honours the pause written without it
hold sh "$D/agent.lock" 1
start_agent "$D" "$TMP/agent2.log"
wait "$HOLDER_PID"
HOLDER_PID=
expect 'grep -q "event=agent.waiting" "$TMP/agent2.log" && [ -e "$D/agent.lock.released" ]' \
       "an agent waits for a command holding the lock"
expect 'grep -q "event=agent.started.*paused=1" "$TMP/agent2.log"' \
       "an agent started later honours the pause"
"$EL" resume-training --state "$D" --json >"$TMP/resumed.json"
expect 'grep -q "\"via\": \"agent\"" "$TMP/resumed.json" && [ ! -e "$D/agent.paused" ]' \
       "resume-training through the agent removes the flag"
"$EL" agent --state "$D" >/dev/null 2>"$TMP/second.err"
expect '[ $? -eq 1 ] && grep -q "another agent" "$TMP/second.err"' "a second agent is refused at once"
stop_agent
expect '"$EL" check --state "$D" >/dev/null && "$EL" check --state "$A" >/dev/null' \
       "both states check clean"

# ---- help ------------------------------------------------------------------
for cmd in feedback activate rollback pin unpin pause-training resume-training; do
  expect '"$EL" $cmd --help | grep -q "agent"' "$cmd --help mentions the agent"
done

if [ "$fails" -ne 0 ]; then
  for f in "$TMP"/agent*.log; do echo "--- $f"; cat "$f"; done
  echo "$fails check(s) failed"
  exit 1
fi
echo "all agent control checks passed"
