#!/usr/bin/env bash
# The main job: install what is missing, build, and play the seed's order story with
# `annal demo` on the embedded store in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANNAL_BUILD_BENCH=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
./build/annal --data ./data demo
