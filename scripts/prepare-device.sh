#!/usr/bin/env bash
# Prepares what scripts/device-check.sh carries to the GPU machine: a
# stripped, xz-compressed copy of this Node binary (.device/node.xz, ~22 MB),
# the compiled lib/ (dist), the addon (build/Release), and the CUDA plug-in
# built here (.device/libmoe_cuda.so: used there if its own build fails).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
cp "$(command -v node)" .device/node && strip .device/node && xz -9 -f .device/node
npm run build:ts
[ -f build/Release/moe_kernels.node ] || npm run build:native
npm run build:cuda
cp build-cuda/libmoe_cuda.so .device/libmoe_cuda.so && strip --strip-unneeded .device/libmoe_cuda.so
du -sh .device dist build/Release node_modules/node-gyp-build
