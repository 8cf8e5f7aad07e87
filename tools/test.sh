#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is
# missing, configures, builds, runs every suite (gpu on lavapipe with the
# Khronos validation layer on), then the unit and crypto suites and the
# hub's TLS/HTTP/API tests again under AddressSanitizer +
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/deps.sh

jobs=$(nproc)
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
ninja -C build
meson test -C build --print-errorlogs --num-processes "$jobs" \
  --suite unit --suite crypto --suite e2e | tee -a "$summary"
# GPU tests run one at a time: lavapipe already uses every core.
meson test -C build --print-errorlogs --num-processes 1 --suite gpu | tee -a "$summary"

if [ "${EDGELOOP_SKIP_SANITIZE:-0}" != 1 ]; then
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
  fi
  ninja -C build-asan
  ASAN_OPTIONS=detect_leaks=1 meson test -C build-asan --print-errorlogs \
    --num-processes "$jobs" --suite unit --suite crypto | tee -a "$summary"
  # the hub's threads (workers, poller, shared key tables) under the sanitizers
  ASAN_OPTIONS=detect_leaks=1 meson test -C build-asan --print-errorlogs \
    --num-processes "$jobs" test_tls test_hub_api test_hub_fault test_hub_http test_hub_store | tee -a "$summary"
fi
count() { awk -v k="$1" '$1 == k":" { n += $2 } END { print n + 0 }' "$summary"; }
echo "tools/test.sh: all suites passed"
echo "tests: $(count Ok) passed, $(count Fail) failed, $(count Skipped) skipped"
