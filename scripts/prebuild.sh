#!/usr/bin/env bash
# npm run prebuild: prebuilds/linux-x64/ with the N-API addon (prebuildify,
# stripped) and, beside it, the CUDA plug-in (cmake-js; prebuildify drives only
# node-gyp). node-gyp-build loads the addon from there at install time, and
# the addon finds the plug-in beside it, so installing compiles nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
platform="$(node -p 'process.platform + "-" + process.arch')"
prebuildify --napi --strip
if command -v nvcc >/dev/null 2>&1; then
  npm run build:cuda
  cp build-cuda/libmoe_cuda.so "prebuilds/$platform/libmoe_cuda.so"
  strip --strip-unneeded "prebuilds/$platform/libmoe_cuda.so"
else
  echo "prebuild: nvcc not found; the prebuild has no CUDA plug-in (the package then runs on the CPU only)" >&2
fi
bash scripts/check-symbols.sh prebuilds/"$platform"/*
ls -la "prebuilds/$platform"
