#!/usr/bin/env bash
# Install the pinned Node.js clients (tests/e2e/package-lock.json) into NODE_DIR, once per
# lock file. ctest runs several server tests at once and each needs them: one `npm ci` at a
# time (under a lock beside NODE_DIR), the others wait for it and then find it done.
# Usage: tests/e2e/install.sh NODE_DIR
set -euo pipefail
node_dir=$1
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$node_dir"
exec 9>"$node_dir.lock"
flock 9
if ! cmp -s "$src/package-lock.json" "$node_dir/node_modules/.installed-lock" 2>/dev/null; then
    cp "$src/package.json" "$src/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$src/package-lock.json" "$node_dir/node_modules/.installed-lock"
fi
