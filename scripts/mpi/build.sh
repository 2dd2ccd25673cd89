#!/usr/bin/env bash
# Builds the MPI transport plug-in with the system's MPI compiler wrapper
# (Open MPI or MPICH; MPICC overrides) into build-mpi/libmoe_mpi.so. The
# addon dlopen()s it at run time (lib/ep/transport.ts lists where it looks).
set -euo pipefail
cd "$(dirname "$0")/../.."
mpicc="${MPICC:-mpicc}"
command -v "$mpicc" >/dev/null || { echo "build:mpi: '$mpicc' not found (Debian: apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 1; }
mkdir -p build-mpi
"$mpicc" -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
  -Inative/mpi/include native/mpi/moe_mpi.c -o build-mpi/libmoe_mpi.so -ldl -lpthread
echo "built build-mpi/libmoe_mpi.so with $("$mpicc" --showme:version 2>/dev/null || "$mpicc" -v 2>&1 | head -1)"
