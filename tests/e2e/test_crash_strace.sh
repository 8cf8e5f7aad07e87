#!/usr/bin/env bash
# kill -9 cannot reveal a missing fsync, so this test reads the system calls
# of a blob write + activation (`register-adapter DIR --activate`) and
# asserts their order, for every blob:
#   data written to the .tmp file, then fsync(tmp), then rename(tmp, blob),
#   then fsync(blob's directory), then the database commit (fdatasync/fsync
#   of registry.db-wal) that records the version;
# and for the activation: every blob re-read (verified) after that commit,
# then the activation's own commit.
# usage: test_crash_strace.sh EDGELOOP
set -euo pipefail
E=$(realpath "$1")
command -v strace >/dev/null || { echo "strace is not installed: skipped"; exit 77; }
here=$(dirname "$(realpath "$0")")
. "$here/test_crash_fixtures.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGELOOP_STATE=$work/state
make_model "$work/model"
make_adapter "$work/adapter" 1
"$E" init --model "$work/model" >/dev/null
log=$work/strace.log
# LeakSanitizer cannot run under ptrace; everything else of a sanitizer
# build still does
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
strace -f -y -o "$log" -e trace=openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2 \
  "$E" register-adapter "$work/adapter" --activate >/dev/null

awk -v state="$EDGELOOP_STATE" '
function fdpath(line,   m) {   # the <path> of the first fd argument
  if (match(line, /\([0-9]+</)) {
    m = substr(line, RSTART + RLENGTH)
    return substr(m, 1, index(m, ">") - 1)
  }
  return ""
}
/ (write|pwrite64)\(/ { lastwrite[fdpath($0)] = NR }
/ (fsync|fdatasync)\(/ {
  p = fdpath($0); lastsync[p] = NR; syncs[p] = syncs[p] " " NR
  if (p == state "/registry.db-wal") wal[++nwal] = NR
}
/ rename(at2?)?\(/ && /blobs\/sha256\// {
  n = split($0, q, "\"")
  tmp = q[2]; final = q[4]
  renamed[final] = NR; tmpof[final] = tmp; nblobs++
}
/ openat\(/ && /O_RDONLY/ && /blobs\/sha256\/[0-9a-f][0-9a-f]\/[0-9a-f]+"/ {
  n = split($0, q, "\""); readat[q[2]] = NR
}
END {
  bad = 0; maxd = 0; maxread = 0
  if (nblobs < 2) { print "expected 2 blob writes, saw " nblobs; exit 1 }
  for (b in renamed) {
    t = tmpof[b]; r = renamed[b]; w = lastwrite[t]; f = lastsync[t]
    dir = b; sub(/\/[^\/]*$/, "", dir)
    d = 0; k = split(syncs[dir], ds, " ")
    for (i = 1; i <= k; i++) if (ds[i] + 0 > r) { d = ds[i] + 0; break }
    c = 0
    for (i = 1; i <= nwal; i++) if (wal[i] > d) { c = wal[i]; break }
    printf "%s: write@%d fsync@%d rename@%d dirsync@%d commit@%d read@%d\n", \
      substr(b, length(state) + 1), w, f, r, d, c, readat[b]
    if (!(w > 0 && f > w && r > f && d > r && c > d)) { print "  wrong order"; bad = 1 }
    if (d > maxd) maxd = d
    if (!(readat[b] > c)) { print "  not re-read (verified) after its commit"; bad = 1 }
    if (readat[b] > maxread) maxread = readat[b]
  }
  after = 0
  for (i = 1; i <= nwal; i++) if (wal[i] > maxread) after++
  # the activation commit, then the session close
  if (after < 2) { print "no activation commit after the blob verification"; bad = 1 }
  exit bad
}' "$log"
"$E" check >/dev/null
echo "test_crash_strace: ok"
