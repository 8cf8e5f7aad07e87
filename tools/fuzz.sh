#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in their own build
# directory and runs each for a given time on a scratch copy of its corpus.
# New inputs that increase coverage are left in build-fuzz/corpus/<target>/;
# crashes in build-fuzz/artifacts/. Copy a small, interesting one into
# tests/fuzz/corpus/<target>/ to keep it as a regression seed.
#
# usage: tools/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#   targets: fuzz_bundle fuzz_manifest fuzz_delta (and fuzz_safetensors when
#   present). Runs under nice; one job per target, one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
build=${FUZZ_BUILD_DIR:-build-fuzz}
# Everything the targets link is instrumented for coverage
# (-fsanitize=fuzzer-no-link); only the targets themselves link libFuzzer.
if [ ! -d "$build" ]; then
  CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
nice -n 10 ninja -C "$build" "${targets[@]/#/tests/fuzz/}"
mkdir -p "$build/artifacts"
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  echo "== $t: ${secs}s"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 nice -n 10 \
      "$build/tests/fuzz/$t" -max_total_time="$secs" -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "$corpus" \
      2>"$build/$t.log"; then
    echo "$t: FAILED, see $build/$t.log and $build/artifacts/"
    status=1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE' "$build/$t.log" || true
done
exit $status
