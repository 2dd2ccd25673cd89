#!/usr/bin/env bash
# Prepares what scripts/device-check.sh carries to the GPU machine: a
# stripped, xz-compressed copy of this Node binary (.device/node.xz, ~22 MB),
# the compiled lib/ (dist) and the addon (build/Release).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
cp "$(command -v node)" .device/node && strip .device/node && xz -9 -f .device/node
npm run build:ts
[ -f build/Release/moe_kernels.node ] || npm run build:native
du -sh .device dist build/Release node_modules/node-gyp-build
