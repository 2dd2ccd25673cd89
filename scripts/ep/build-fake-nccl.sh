#!/usr/bin/env bash
# Builds the test double of NCCL (test/ep/fake-nccl/: libnccl.so.2's entry
# points over MPI on host memory) into build-emu/libnccl.so.2 with the
# system's mpicc. Test-only, never shipped; with the CUDA plug-in's CPU
# emulation it runs the layer's NCCL path without a GPU:
#   MOE_CUDA_PLUGIN=build-emu/libmoe_cuda.so MOE_NCCL_LIBRARY=build-emu/libnccl.so.2
set -euo pipefail
cd "$(dirname "$0")/../.."
mpicc="${MPICC:-mpicc}"
command -v "$mpicc" >/dev/null || { echo "build-fake-nccl: '$mpicc' not found (Debian: apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 1; }
mkdir -p build-emu
"$mpicc" -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror -Inative/cuda/include \
  test/ep/fake-nccl/fake_nccl.c -o build-emu/libnccl.so.2 -ldl
echo "build-fake-nccl: built build-emu/libnccl.so.2"
