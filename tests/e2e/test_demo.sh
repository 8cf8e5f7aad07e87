#!/usr/bin/env bash
# The demo (tools/demo.sh --quick) against the binaries of the build under
# test: it must exit 0 with every step line in order, leave the work
# directory it names with the states it claims (checked here again from the
# registries, not from the demo's own output), and stop the hub it started.
# Then a device whose `enroll --cert` pretends to work (exit 0, nothing
# done) must make the demo fail at that step: "FAILED", the log tail,
# exit 1, and no hub left running.
# usage: test_demo.sh BUILD_ROOT SOURCE_ROOT
set -u
BUILD=$(realpath "$1")
SRC=$(realpath "$2")
TMP=$(mktemp -d /tmp/el_demo.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
E="$BUILD/agent/edgeloop"
# vget STATE ID FIELD: a field of version ID; vget STATE active: the active id
vjson() { "$E" versions --state "$1" --json; }
vget() {
  vjson "$1" | python3 -c 'import json,sys
d = json.load(sys.stdin)
if sys.argv[1] == "active":
    print(d["active"])
else:
    v = [x for x in d["versions"] if x["id"] == int(sys.argv[1])][0]
    print(v[sys.argv[2]])' "$2" "${3:-}"
}
hub_running() { pgrep -f -- "--data $1/hub" >/dev/null; }

# ---- the whole demo ----
W="$TMP/work"
bash "$SRC/tools/demo.sh" --no-setup --build-dir "$BUILD" --keep "$W" --quick >"$TMP/out" 2>&1
rc=$?
cat "$TMP/out"
expect '[ $rc -eq 0 ]' "the demo exits 0 (rc=$rc)"
expect '[ "$(grep -c "^\[[0-9]*/12\] " "$TMP/out")" -eq 12 ]' "12 step lines"
expect '! grep -q FAILED "$TMP/out"' "no step failed"
expect 'grep -q "^\[4/12\] .*holdout loss [0-9.]* -> [0-9.]*, gate passed, v1 on probation" "$TMP/out"' \
  "dev-a's step line shows its losses and the gate"
expect 'grep -q "^\[9/12\] .*v2 rolled_back, v1 active again" "$TMP/out"' "the rollback line"
expect 'grep -q "^\[10/12\] .*onekey: hub threshold_not_met / device threshold_not_met.*altered: hub [a-z_]* / device bad_signature" "$TMP/out"' \
  "the refusal line names the trust codes"
expect 'grep -q "^demo: all 12 steps passed" "$TMP/out"' "the closing line"
expect 'grep -q "^files: $W" "$TMP/out" && [ -s "$W/demo.log" ]' "the work directory and log are kept"
expect 'grep -q "^\[6/12\] dev-b runs the agent daemon.*gate passed, v1 on probation" "$TMP/out" &&
        grep -q "event=train.done" "$W/agent-dev-b.log"' "dev-b trained through its agent"
expect 'grep -Eq "^  dev-b +line-b +3 +probation .*reject_rate" "$TMP/out"' \
  "the hub's view shows dev-b's active version and its last rollback"
expect '! hub_running "$W"' "the hub is stopped"
expect '! pgrep -f -- "agent --state $W/dev-b" >/dev/null' "the agent is stopped"

# the states, read from the registries
# shellcheck disable=SC2034  # A and B are read inside the expect strings
A="$W/dev-a" B="$W/dev-b"
expect '[ "$(vget "$A" 1 state)" = good ] && [ "$(vget "$A" active)" = 1 ]' "dev-a: v1 good and active"
expect '[ "$(vget "$B" 1 state)" = good ]' "dev-b: v1 good"
expect '[ "$(vget "$B" 2 origin)" = fleet ] && [ "$(vget "$B" 2 state)" = rolled_back ]' \
  "dev-b: the pushed fleet release v2 rolled back"
expect '[ "$(vget "$B" 3 origin)" = fleet ] && [ "$(vget "$B" 3 state)" = probation ] &&
        [ "$(vget "$B" active)" = 3 ]' "dev-b: the promoted release v3 active on probation"
expect '[ "$(vjson "$B" | python3 -c "import json,sys; print(len(json.load(sys.stdin)[\"versions\"]))")" = 3 ]' \
  "dev-b: the forged releases left no version"
expect 'cmp -s "$W/dev-a-v1/adapter_model.safetensors" "$W/dev-b-v3/adapter_model.safetensors"' \
  "dev-b's v3 holds dev-a's v1 weights"
expect '"$E" check --state "$A" >/dev/null && "$E" check --state "$B" >/dev/null' "both states check clean"

# ---- a step that does not do what it says ----
# a build dir whose edgeloop skips `enroll --cert` (exit 0, no change)
FB="$TMP/fakebuild"
mkdir -p "$FB/agent" "$FB/sync/hub" "$FB/tools/fleet"
ln -s "$BUILD/sync/hub/edgeloop-hub" "$FB/sync/hub/edgeloop-hub"
ln -s "$BUILD/tools/fleet/edgeloop-fleet" "$FB/tools/fleet/edgeloop-fleet"
cat >"$FB/agent/edgeloop" <<EOF
#!/usr/bin/env bash
if [ "\$1" = enroll ] && [[ " \$* " == *" --cert "* ]]; then exit 0; fi
exec "$E" "\$@"
EOF
chmod +x "$FB/agent/edgeloop"
W2="$TMP/work2"
bash "$SRC/tools/demo.sh" --no-setup --build-dir "$FB" --keep "$W2" >"$TMP/out2" 2>&1
rc=$?
expect '[ $rc -eq 1 ]' "a skipped enrollment fails the demo (rc=$rc)"
expect 'grep -q "^\[3/12\] .*FAILED" "$TMP/out2"' "the failing step says FAILED"
expect 'grep -q "enroll did not configure the hub" "$TMP/out2"' "and why"
expect 'grep -q "last lines of $W2/demo.log" "$TMP/out2"' "the log tail is printed"
expect '! grep -q "^\[4/12\]" "$TMP/out2"' "no later step runs"
expect '! hub_running "$W2"' "the hub is stopped after a failure"

if [ "$fails" -ne 0 ]; then
  echo "--- second run"
  cat "$TMP/out2"
  echo "$fails check(s) failed"
  exit 1
fi
echo "all demo checks passed"
