#!/usr/bin/env bash
# Installs a packed tarball into an empty project on a machine whose
# compilers, make, python and nvcc are made unusable, then loads the package
# with require and with import and runs a small GEMM: proves that installing
# the prebuilt package compiles nothing.
#   bash scripts/install-smoke.sh moe-kernels-0.1.0.tgz
set -euo pipefail
tarball="$(realpath "$1")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/no-tools" "$work/app"
for tool in cc gcc g++ c++ clang clang++ make cmake nvcc python python3 node-gyp; do
  printf '#!/bin/sh\necho "install-smoke: %s must not run during install" >&2\nexit 1\n' "$tool" > "$work/no-tools/$tool"
  chmod +x "$work/no-tools/$tool"
done
cd "$work/app"
npm init -y > /dev/null
PATH="$work/no-tools:$PATH" CC=false CXX=false npm install --no-audit --no-fund "$tarball"
script='
  const x = m.tensor(Float32Array.from({ length: 4 * 256 }, (_, i) => Math.sin(i)), [4, 256]);
  const w = m.tensor(Float32Array.from({ length: 130 * 256 }, (_, i) => Math.cos(i)), [130, 256]);
  const d = m.gemmFp8Sync(m.quantizeActivationsSync(x), m.quantizeWeightsSync(w), { out: "f32" });
  if (d.shape.join() !== "4,130" || !Array.from(d.data).every(Number.isFinite)) throw new Error("bad GEMM result");
  console.log(`${how}: ok, backends ${JSON.stringify(m.backends().map((b) => [b.name, b.available, b.reason ?? ""]))}`);'
PATH="$work/no-tools:$PATH" node -e "const m = require('moe-kernels'); const how = 'require'; $script"
PATH="$work/no-tools:$PATH" node --input-type=module -e "import * as m from 'moe-kernels'; const how = 'import'; $script"
PATH="$work/no-tools:$PATH" npx --no-install moe-kernels info
