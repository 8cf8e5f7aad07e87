#!/usr/bin/env bash
# Installs the Debian 12 packages edgeloop needs to build, test and run its
# demo. Idempotent: prints nothing and touches nothing when all are present.
set -euo pipefail

pkgs=(
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  glslang-tools libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  libsqlite3-dev sqlite3 libmbedtls-dev libzstd-dev
  libopenblas-dev libopenblas0-pthread libjansson-dev libgoogle-perftools-dev
  python3 python3-torch python3-numpy
  openssl curl strace
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
