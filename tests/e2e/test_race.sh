#!/usr/bin/env bash
# Several `edgeloop` commands racing on one state directory for ~10 s:
# writers (ingest of distinct files, feedback, activate, rollback --to, gc,
# pin/unpin, one `train`) and readers (versions, audit --verify, status).
# Afterwards every command has exited 0 or with a clean refusal (1/2/3 and a
# message, no crash, no sanitizer report, no SQLite "locked"/"busy" leaking
# out: the store waits on a busy timeout and takes write locks with BEGIN
# IMMEDIATE), `edgeloop check` is clean, every sample whose ingest returned
# 0 is there (counted per file), and at most one version is active.
# usage: test_race.sh EDGELOOP [SECONDS (default 10)]
set -uo pipefail
E=$(realpath "$1")
DUR=${2:-10}
here=$(dirname "$(realpath "$0")")
. "$here/test_crash_fixtures.sh"
work=$(mktemp -d /tmp/el_race.XXXXXX)
trap 'rm -rf "$work"' EXIT
export EDGELOOP_STATE=$work/state
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# a small random Llama (as in test_agent.sh): cpu training takes a second
/usr/bin/python3 "$(dirname "$0")/tiny_model.py" "$work/model" 11

"$E" init --model "$work/model" >/dev/null || { echo "init failed"; exit 1; }
cat >>"$EDGELOOP_STATE/edgeloop.conf" <<'EOF'

[train]
backend = cpu
steps = 2
batch = 2
seq_len = 48
rank = 2
min_new_samples = 1

[probation]
events = 1000000
max_crashes = 1000
EOF

samples() { "$E" check --json | sed -n 's/^  "samples": \([0-9]*\),*$/\1/p'; }
lines() { # lines N TAG: N prompt/completion samples unique to TAG
  local i
  for ((i = 0; i < $1; i++)); do
    echo "{\"prompt\": \"$2 PRESS-0$((i % 9)) pressure=$((150 + i))bar Action:\", \"completion\": \" check seal $i\"}"
  done
}
lines 20 hold >"$work/holdout.jsonl"
lines 20 anchor >"$work/anchor.jsonl"
lines 30 seed >"$work/seed.jsonl"
"$E" ingest --split holdout "$work/holdout.jsonl" >/dev/null || fail "ingest holdout"
"$E" ingest --split anchor "$work/anchor.jsonl" >/dev/null || fail "ingest anchor"
"$E" ingest --split train "$work/seed.jsonl" >/dev/null || fail "ingest seed"
for t in 1 2 3 4; do
  make_adapter "$work/a$t" "$t"
  "$E" register-adapter "$work/a$t" >/dev/null || fail "register-adapter $t"
done
mapfile -t IDS < <("$E" versions --json | sed -n 's/^ *"id": \([0-9]*\),*$/\1/p')
[ "${#IDS[@]}" -ge 4 ] || fail "expected 4 versions, got ${#IDS[@]}"
base_samples=$(samples)

# run LOOP CMD...: runs CMD, appends "rc<TAB>LOOP<TAB>CMD" to the loop's
# record and keeps its stderr for the verdict below
n_run=0
run() {
  local loop=$1; shift
  n_run=$((n_run + 1))
  local errf="$work/err/$loop.$n_run"
  "$@" >/dev/null 2>"$errf"
  local rc=$?
  printf '%d\t%s\t%s\n' "$rc" "$errf" "$*" >>"$work/rec/$loop"
  [ -s "$errf" ] || rm -f "$errf"
  return $rc
}
mkdir -p "$work/err" "$work/rec" "$work/in"
end=$((SECONDS + DUR))

ingest_loop() { # distinct files; the ones that returned 0 are recorded
  local k=0
  while [ $SECONDS -lt $end ]; do
    k=$((k + 1))
    local n=$((3 + k % 5)) f="$work/in/i$1-$k.jsonl"
    lines "$n" "race$1-$k" >"$f"
    run "ingest$1" "$E" ingest --split train "$f"
    printf '%s\t%d\t%d\n' "$f" "$n" $? >>"$work/ingested.$1"
  done
}
feedback_loop() {
  while [ $SECONDS -lt $end ]; do
    run feedback "$E" feedback --accept
    run feedback "$E" feedback --reject
  done
}
switch_loop() {
  local k=0
  # the hand-made adapters cannot be trained on: let `train` load its
  # parent (the base) before the first of them is activated
  sleep 1
  while [ $SECONDS -lt $end ]; do
    k=$((k + 1))
    # fresh versions keep activation possible once the first ones are
    # rolled back
    make_adapter "$work/s$k" $((100 + k))
    run switch "$E" register-adapter "$work/s$k" --activate
    run switch "$E" activate "${IDS[k % ${#IDS[@]}]}"
    run switch "$E" rollback --to "${IDS[(k + 1) % ${#IDS[@]}]}"
    [ $((k % 4)) -eq 0 ] && run switch "$E" rollback --to base
  done
}
maint_loop() {
  local k=0
  while [ $SECONDS -lt $end ]; do
    k=$((k + 1))
    run maint "$E" gc
    run maint "$E" pin "${IDS[k % ${#IDS[@]}]}"
    run maint "$E" unpin
  done
}
reader_loop() {
  while [ $SECONDS -lt $end ]; do
    run reader "$E" versions --json
    run reader "$E" audit --verify
    run reader "$E" status --json
  done
}

pids=()
ingest_loop 1 & pids+=($!)
ingest_loop 2 & pids+=($!)
feedback_loop & pids+=($!)
switch_loop & pids+=($!)
maint_loop & pids+=($!)
reader_loop & pids+=($!)
run train "$E" train & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done

# ---- every command: 0 or a clean refusal -----------------------------------
total=0
while IFS=$'\t' read -r rc errf cmd; do
  total=$((total + 1))
  [ "$rc" -eq 0 ] && continue
  msg=$(cat "$errf" 2>/dev/null)
  if [ "$rc" -gt 3 ]; then
    fail "exit $rc (crash?) from: $cmd: $msg"
  elif [ -z "$msg" ]; then
    fail "exit $rc without a message from: $cmd"
  elif printf '%s' "$msg" | grep -qiE "locked|SQLITE_BUSY|database is busy|internal|runtime error|AddressSanitizer|LeakSanitizer"; then
    fail "not a clean refusal from: $cmd: $msg"
  fi
done < <(cat "$work"/rec/*)
refused=$(cat "$work"/rec/* | awk -F'\t' '$1 != 0' | wc -l)
echo "train: $(cut -f1,3 "$work/rec/train") $(cat "$work"/err/train.* 2>/dev/null)"
echo "commands run: $total, refused cleanly: $refused"
for loop in ingest1 ingest2 feedback switch maint reader; do
  [ "$(awk -F'\t' '$1 == 0' "$work/rec/$loop" 2>/dev/null | wc -l)" -gt 0 ] ||
    fail "loop $loop never succeeded"
done
cat "$work"/rec/* | awk -F'\t' '$1 != 0 {print $1}' | sort | uniq -c
for f in "$work"/err/*; do [ -e "$f" ] && head -c 200 "$f"; done 2>/dev/null | sort | uniq -c | sort -rn | head -8

# ---- the state afterwards ---------------------------------------------------
out=$("$E" check 2>&1) || fail "state check failed: $out"
"$E" audit --verify >/dev/null 2>&1 || fail "audit chain does not verify"
added=$(cat "$work"/ingested.* 2>/dev/null | awk -F'\t' '$3 == 0 {s += $2} END {print s + 0}')
now=$(samples)
[ "$now" -eq $((base_samples + added)) ] ||
  fail "samples: $now, expected $base_samples + $added ingested"
# per file (the registry's source column): a file whose ingest returned 0
# has all its lines, a refused one none (an ingest is all or nothing)
bad_files=$(cat "$work"/ingested.* | /usr/bin/python3 -c '
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
for row in sys.stdin:
    f, n, rc = row.rstrip("\n").split("\t")
    got = db.execute("SELECT count(*) FROM samples WHERE source = ?", (f,)).fetchone()[0]
    want = int(n) if rc == "0" else 0
    if got != want:
        print(f"{f}: {got} samples, expected {want} (ingest exit {rc})")
' "$EDGELOOP_STATE/registry.db")
[ -z "$bad_files" ] || fail "per-file sample counts: $bad_files"
active=$("$E" versions --json | sed -n 's/^  "active": \([0-9a-z]*\),*$/\1/p')
[ "$(printf '%s\n' "$active" | grep -c .)" -le 1 ] || fail "more than one active version: $active"
echo "active after the race: ${active:-none}; samples: $now ($added raced in)"

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all race checks passed"
