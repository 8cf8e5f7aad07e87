#!/usr/bin/env bash
# Crash tests of the device state (OSTree/Mender style): the process is
# killed with SIGKILL (el_crash_point, $EDGELOOP_CRASH_AT) at every named
# point of ingest, register, activate, rollback, feedback, gc and the atomic
# writer, then at random points of random commands in a loop. After every
# kill `edgeloop check` must pass: PRAGMA integrity_check ok, the audit
# chain verifies, every blob matches its hash, no version points at a
# missing blob, the active version verifies; and no sample whose ingest
# returned 0 is ever lost, and an interrupted ingest is all or nothing. gc
# is also interleaved with a writer of the same blobs ($EDGELOOP_PAUSE_AT).
# usage: test_crash_points.sh EDGELOOP [RANDOM_ITERATIONS (default 60)]
set -uo pipefail
E=$(realpath "$1")
N=${2:-60}
here=$(dirname "$(realpath "$0")")
. "$here/test_crash_fixtures.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGELOOP_STATE=$work/state
fails=0
tag=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

samples() { "$E" check --json | sed -n 's/^  "samples": \([0-9]*\),*$/\1/p'; }

check_state() {  # check_state CONTEXT
  local out
  if ! out=$("$E" check 2>&1); then
    fail "$1: state check failed: $out"
    "$E" check --json
    exit 1
  fi
}

active() { "$E" versions --json | sed -n 's/^  "active": \([0-9a-z]*\),*$/\1/p'; }

# run POINT CMD...: runs CMD with a crash armed at POINT; must be killed
crash() {
  local point=$1; shift
  EDGELOOP_CRASH_AT=$point "$@" >/dev/null 2>&1
  local rc=$?
  [ $rc -eq 137 ] || fail "$point: expected a kill (137), got $rc from $*"
}

# new_adapter: a fresh, distinct PEFT directory in $adir (no subshell, so
# the tag counter advances)
new_adapter() { tag=$((tag + 1)); adir=$work/a$tag; make_adapter "$adir" "$tag"; }

make_model "$work/model"
"$E" init --model "$work/model" >/dev/null || { echo "init failed"; exit 1; }
printf '[probation]\nevents = 2\nmax_crashes = 1000\n' > "$EDGELOOP_STATE/edgeloop.conf"

# ---- ingest: all or nothing, nothing lost once it returned ----------------
for point in ingest.mid ingest.before_commit ingest.after_commit; do
  tag=$((tag + 1)); make_jsonl "$work/d$tag.jsonl" "$tag" 5
  before=$(samples)
  crash "$point" "$E" ingest "$work/d$tag.jsonl" --split train
  check_state "$point"
  after=$(samples)
  case $point in
    ingest.after_commit) [ "$after" -eq $((before + 5)) ] || fail "$point: $before -> $after samples" ;;
    ingest.mid|ingest.before_commit) [ "$after" -eq "$before" ] || fail "$point: $before -> $after samples" ;;
  esac
  "$E" ingest "$work/d$tag.jsonl" --split train >/dev/null || fail "$point: re-ingest"
  [ "$(samples)" -eq $((before + 5)) ] || fail "$point: re-ingest count"
done

# ---- register (blob writes) ---------------------------------------------------
for point in fs.before_fsync fs.before_rename fs.before_dirsync register.after_blobs \
             register.before_commit; do
  new_adapter
  nv=$("$E" versions --json | grep -c '"adapter_hash"')
  crash "$point" "$E" register-adapter "$adir"
  check_state "$point"
  [ "$("$E" versions --json | grep -c '"adapter_hash"')" -eq "$nv" ] || fail "$point: a version appeared"
  "$E" gc >/dev/null || fail "$point: gc"
  check_state "$point gc"
done

# ---- activate: the old active version or the new one, never anything else --
new_adapter; "$E" register-adapter "$adir" --activate >/dev/null
"$E" feedback --accept >/dev/null; "$E" feedback --accept >/dev/null   # -> good
for point in activate.after_blob activate.before_commit activate.after_commit; do
  new_adapter; "$E" register-adapter "$adir" >/dev/null
  id=$("$E" versions --json | sed -n 's/^      "id": \([0-9]*\),*$/\1/p' | tail -1)
  old=$(active)
  crash "$point" "$E" activate "$id"
  check_state "$point"
  now=$(active)
  if [ "$point" = activate.after_commit ]; then
    [ "$now" = "$id" ] || fail "$point: active $now, expected $id"
  else
    [ "$now" = "$old" ] || fail "$point: active $now, expected $old"
  fi
  [ "$now" = "$id" ] || "$E" activate "$id" >/dev/null || fail "$point: activate after crash"
  "$E" feedback --accept >/dev/null; "$E" feedback --accept >/dev/null
done

# ---- rollback and feedback ------------------------------------------------------
for point in rollback.before_commit rollback.after_commit feedback.before_commit \
             open.after_session; do
  new_adapter; "$E" register-adapter "$adir" --activate >/dev/null
  old=$(active)
  case $point in
    rollback.*) crash "$point" "$E" rollback ;;
    feedback.*) crash "$point" "$E" feedback --reject ;;
    *) crash "$point" "$E" versions ;;
  esac
  check_state "$point"
  now=$(active)
  case $point in
    rollback.before_commit) [ "$now" = "$old" ] || fail "$point: active moved" ;;
    rollback.after_commit) [ "$now" != "$old" ] || fail "$point: not rolled back" ;;
  esac
  [ "$now" != "$old" ] || "$E" rollback >/dev/null || fail "$point: rollback after crash"
done

# ---- gc: rows first, files after; leftovers swept by the next gc ----------
for point in gc.after_commit gc.mid_unlink; do
  for k in 1 2 3; do
    new_adapter; "$E" register-adapter "$adir" --activate >/dev/null
    "$E" rollback >/dev/null     # rolled_back: its blobs become garbage
  done
  crash "$point" "$E" gc
  check_state "$point"
  "$E" gc >/dev/null || fail "$point: gc after crash"
  check_state "$point second gc"
done

# ---- gc racing a writer of the same content ------------------------------------
# Blobs are shared by content: a version registered again after its first
# copy was rolled back reuses files that gc is freeing. $EDGELOOP_PAUSE_AT
# stops one process at a point while the other runs (blob.c invariants 2-3).
stopped() {  # stopped PID: waits until PID has stopped itself
  local i
  for ((i = 0; i < 200; i++)); do
    case $(ps -o stat= -p "$1") in T*) return 0 ;; esac
    sleep 0.05
  done
  fail "process $1 did not stop"
}
for paused in gc register; do
  new_adapter; "$E" register-adapter "$adir" --activate >/dev/null
  "$E" rollback --to base >/dev/null      # its blobs become garbage
  if [ $paused = gc ]; then
    # gc has dropped the rows and is about to unlink the files when the same
    # adapter is registered again
    EDGELOOP_PAUSE_AT=gc.after_commit "$E" gc >/dev/null & pid=$!
    stopped $pid
    "$E" register-adapter "$adir" >/dev/null || fail "register during gc"
  else
    # the writer found the files in place, then gc removes them before it
    # records them
    EDGELOOP_PAUSE_AT=register.after_blobs "$E" register-adapter "$adir" >/dev/null & pid=$!
    stopped $pid
    "$E" gc >/dev/null || fail "gc during register"
  fi
  kill -CONT $pid
  wait $pid || fail "paused $paused: exit status $?"
  check_state "gc racing a writer ($paused paused)"
done

# ---- random kills in a loop --------------------------------------------------------
expected=$(samples)
killed=0
for ((i = 1; i <= N; i++)); do
  op=$((i % 7))
  out=$work/out
  case $op in
    0|1) tag=$((tag + 1)); make_jsonl "$work/d$tag.jsonl" "r$tag" 3
         cmd=("$E" ingest "$work/d$tag.jsonl" --split "$([ $op -eq 0 ] && echo train || echo anchor)") ;;
    2) new_adapter; cmd=("$E" register-adapter "$adir" --activate) ;;
    3) cmd=("$E" feedback "$([ $((i % 3)) -eq 0 ] && echo --reject || echo --accept)") ;;
    4) cmd=("$E" rollback) ;;
    5) cmd=("$E" gc) ;;
    6) id=$("$E" versions --json | sed -n 's/^      "id": \([0-9]*\),*$/\1/p' | shuf -n 1 --random-source=<(yes $i))
       cmd=("$E" activate "${id:-1}") ;;
  esac
  EDGELOOP_CRASH_AT=random:$i:150 "${cmd[@]}" >"$out" 2>&1
  rc=$?
  [ $rc -eq 137 ] && killed=$((killed + 1))
  case $rc in
    0|3|137) ;;
    *) fail "iteration $i: ${cmd[*]} exited $rc: $(cat "$out")" ;;
  esac
  check_state "iteration $i (${cmd[1]}, rc $rc)"
  now=$(samples)
  if [ $op -le 1 ]; then
    if [ $rc -eq 0 ]; then
      [ "$now" -eq $((expected + 3)) ] || fail "iteration $i: ingest returned 0 but $expected -> $now"
    elif [ "$now" -ne "$expected" ] && [ "$now" -ne $((expected + 3)) ]; then
      fail "iteration $i: partial ingest $expected -> $now"
    fi
  else
    [ "$now" -eq "$expected" ] || fail "iteration $i: samples changed $expected -> $now by ${cmd[1]}"
  fi
  expected=$now
done
"$E" audit --verify >/dev/null || fail "final audit --verify"
echo "test_crash_points: $N random iterations, $killed killed, $fails failures"
[ $fails -eq 0 ]
