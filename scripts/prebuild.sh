#!/usr/bin/env bash
# npm run prebuild: prebuilds/linux-x64/ with the N-API addon (prebuildify,
# stripped) and, beside it, the CUDA plug-in (cmake-js; prebuildify drives only
# node-gyp). node-gyp-build loads the addon from there at install time, and
# the addon finds the plug-in beside it, so installing compiles nothing.
#   bash scripts/prebuild.sh              always rebuild
#   bash scripts/prebuild.sh --if-stale   (npm's prepack) only when a prebuild is
#                                         missing or older than its sources, so
#                                         a plain `npm pack` ships binaries
set -euo pipefail
cd "$(dirname "$0")/.."
platform="$(node -p 'process.platform + "-" + process.arch')"
dir="prebuilds/$platform"
if [ "${1:-}" = "--if-stale" ]; then
  addon="$(ls "$dir"/*.node 2>/dev/null | head -1 || true)"
  fresh=1
  if [ -z "$addon" ] || [ -n "$(find native/src binding.gyp -newer "$addon" -print -quit)" ]; then fresh=0; fi
  if command -v nvcc >/dev/null 2>&1 && { [ ! -f "$dir/libmoe_cuda.so" ] ||
      [ -n "$(find native/cuda native/src/core CMakeLists.txt -newer "$dir/libmoe_cuda.so" -print -quit)" ]; }; then fresh=0; fi
  if [ "$fresh" = 1 ]; then echo "prebuild: $dir is up to date"; ls -la "$dir"; exit 0; fi
fi
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
