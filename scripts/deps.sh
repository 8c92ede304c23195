#!/usr/bin/env bash
# Install the Debian 12 packages annal needs to build and test, if any is missing.
# Usage: scripts/deps.sh [extra-package ...]   (as root, or with sudo available)
# Another apt or dpkg run (unattended upgrades, common right after boot) holds the
# package locks for a while: wait for it, up to ANNAL_DEPS_WAIT seconds (default 600).
set -euo pipefail
pkgs=(build-essential cmake pkg-config liblmdb-dev libjansson-dev libcmocka-dev
      python3 cppcheck clang-format clang-tidy liblua5.4-dev libsqlite3-dev libpq-dev postgresql
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev "$@")
pkgs+=(libyaml-dev libssl-dev) # annal serve --config (libyaml), annal cert (OpenSSL)
pkgs+=(libargon2-dev) # annal serve's users: argon2id password hashes (docs/security.md)
wait_s="${ANNAL_DEPS_WAIT:-600}"
poll_s="${ANNAL_DEPS_POLL:-5}"

# Run an apt-get command; while it fails because another process holds a lock, wait and
# run it again. apt-get waits for the dpkg lock itself (DPkg::Lock::Timeout), but not for
# the lists lock of `update`.
apt_wait() {
  local deadline=$((SECONDS + wait_s)) out said=0
  while :; do
    if out=$("$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out" >&2
      return 0
    fi
    if grep -qiE 'could not get lock|unable to acquire|another process' <<<"$out" &&
       ((SECONDS < deadline)); then
      ((said)) || echo "deps: another apt/dpkg run holds the package locks; waiting (up to ${wait_s}s)" >&2
      said=1
      sleep "$poll_s"
      continue
    fi
    printf '%s\n' "$out" >&2
    return 1
  done
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The server's e2e test runs the official Node.js clients: Debian's nodejs and npm, unless
# a node with its own npm (e.g. NodeSource's, which conflicts with Debian's npm) is there.
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=()
  [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  lock=(-o "DPkg::Lock::Timeout=$wait_s")
  apt_wait "${SUDO[@]}" apt-get "${lock[@]}" update -qq
  apt_wait "${SUDO[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi
