# Check helpers shared by the e2e shell tests (sourced; lib.sh sources it
# too). Every failed check counts in $fails; the test decides its exit.
# shellcheck shell=bash
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fails=$((fails + 1)); }
expect() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
# wait_for COND [TENTHS]: polls COND every 0.1 s (default up to 60 s);
# returns 0 as soon as it holds, 1 when it never did
wait_for() {
  local n=${2:-600}
  while [ "$n" -gt 0 ]; do
    eval "$1" && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}
