#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and the CUDA toolkit but no
# Node.js (the device tool's machine). Prepare here with
#   bash scripts/prepare-device.sh
# then run there with carry = [.device, dist, build/Release, node_modules/node-gyp-build]:
#   bash scripts/device-check.sh
# It builds the CUDA plug-in, runs every CUDA op against the CPU backend and
# times the FP8 GEMMs (scripts/device-check.mjs), and prints a short table last.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/moe-device-out}"
mkdir -p "$out" .device/bin
if [ ! -x .device/bin/node ]; then xz -dc .device/node.xz > .device/bin/node && chmod +x .device/bin/node; fi
export PATH="$PWD/.device/bin:$PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
cmake -S native/cuda -B build-cuda -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1
cmake --build build-cuda -j "$(nproc)" >> "$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
OUT="$out" node scripts/device-check.mjs 2>&1 | tee "$out/device-check.txt"
