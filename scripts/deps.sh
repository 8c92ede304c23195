#!/usr/bin/env bash
# Install the Debian 12 packages annal needs to build and test, if any is missing.
# Usage: scripts/deps.sh [extra-package ...]   (as root, or with sudo available)
set -euo pipefail
pkgs=(build-essential cmake pkg-config liblmdb-dev libjansson-dev libcmocka-dev
      python3 cppcheck clang-format liblua5.4-dev libsqlite3-dev libpq-dev postgresql
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev "$@")
pkgs+=(libyaml-dev libssl-dev) # annal serve --config (libyaml), annal cert (OpenSSL)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The server's e2e test runs the official Node.js clients: Debian's nodejs and npm, unless
# a node with its own npm (e.g. NodeSource's, which conflicts with Debian's npm) is there.
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
