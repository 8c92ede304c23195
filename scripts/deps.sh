#!/usr/bin/env bash
# Install the Debian 12 packages annal needs to build and test, if any is missing.
# Usage: scripts/deps.sh [extra-package ...]   (as root, or with sudo available)
set -euo pipefail
pkgs=(build-essential cmake pkg-config liblmdb-dev libjansson-dev libcmocka-dev
      python3 cppcheck clang-format liblua5.4-dev libsqlite3-dev libpq-dev postgresql "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
