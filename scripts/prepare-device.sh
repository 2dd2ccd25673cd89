#!/usr/bin/env bash
# Prepares what scripts/device-check.sh carries to the GPU machine: a
# stripped, xz-compressed copy of this Node binary (.device/node.xz, ~22 MB),
# the compiled lib/ (dist), the addon (build/Release), the CUDA plug-in built
# here (.device/libmoe_cuda.so: used there if its own build fails) and
# node_modules for vitest (.device/node_modules.tar.xz).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
cp "$(command -v node)" .device/node && strip .device/node && xz -9 -f .device/node
npm run build:ts
[ -f build/Release/moe_kernels.node ] || npm run build:native
npm run build:cuda
# node_modules without the compiler (~11 MB): vitest runs the GPU test files there.
tar --exclude=node_modules/typescript --exclude=node_modules/@types -cf - node_modules | xz -T2 -6 > .device/node_modules.tar.xz
cp build-cuda/libmoe_cuda.so .device/libmoe_cuda.so && strip --strip-unneeded .device/libmoe_cuda.so
du -sh .device dist build/Release node_modules/node-gyp-build
