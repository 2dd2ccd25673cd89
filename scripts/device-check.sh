#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and the CUDA toolkit but no
# Node.js (the device tool's machine). Prepare here with
#   bash scripts/prepare-device.sh
# then run there with carry = [.device, dist, build/Release, node_modules/node-gyp-build]:
#   bash scripts/device-check.sh          # fits one 10-minute call (BUDGET_S, default 570)
# It builds the CUDA plug-in (or, if that fails, uses the one prepare-device.sh
# built here and carried in .device/), then runs scripts/device-check.mjs one
# phase per process, each under a time limit: the GEMMs against the CPU
# backend with each kernel forced (SIMT, then Hopper), the other ops, the
# layer and its CUDA graph, the suite's GPU test files (vitest), then the
# timings. A phase that faults or hangs
# costs its own limit, not the whole device budget (and the Hopper GEMM's
# pipeline waits trap after 10 s rather than hang). Expert parallelism's NCCL
# exchange (scripts/ep/nccl-check.mjs under mpirun) needs 2+ GPUs: on a
# one-GPU machine it is listed as not run. The short table comes last.
# Environment: PHASES (a subset of the list below, in order), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/moe-device-out}"
export OUT="$out"
mkdir -p "$out" .device/bin
: > "$out/phases.txt"
if [ ! -x .device/bin/node ]; then xz -dc .device/node.xz > .device/bin/node && chmod +x .device/bin/node; fi
if [ ! -d node_modules/vitest ] && [ -f .device/node_modules.tar.xz ]; then tar -xJf .device/node_modules.tar.xz; fi
export PATH="$PWD/.device/bin:$PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true

start=$SECONDS
if cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release > "$out/cmake.log" 2>&1 &&
  cmake --build build-cuda -j "$(nproc)" >> "$out/cmake.log" 2>&1; then
  echo "build: ok ($((SECONDS - start)) s)" | tee -a "$out/phases.txt"
else
  tail -30 "$out/cmake.log"
  [ -f .device/libmoe_cuda.so ] || { echo "build: FAILED and no carried plug-in" | tee -a "$out/phases.txt"; exit 1; }
  mkdir -p build-cuda && cp .device/libmoe_cuda.so build-cuda/libmoe_cuda.so
  echo "build: FAILED ($((SECONDS - start)) s); using the plug-in built by prepare-device.sh" | tee -a "$out/phases.txt"
fi

# phase  time limit (s)  environment (comma-separated assignments, or -).
# Correctness first, then the sanitizers, the suite's GPU files, the timings:
# what the 10-minute budget cuts off (see BUDGET_S below) is the least needed.
# The sanitizer phases run the `sanitize` checks (every sm_90a kernel once,
# small, and a small layer) under compute-sanitizer's memcheck, racecheck and
# synccheck, with the Hopper kernels forced and their pipeline-wait trap off
# (the tools slow kernels down by orders of magnitude).
sanitize_env="MOE_CUDA_GEMM_KERNEL=hopper,MOE_CUDA_HANG_TRAP_S=0,MOE_CUDA_PROBE=inprocess"
plan=(
  "gemm 120 MOE_CUDA_GEMM_KERNEL=simt"
  "gemm 120 MOE_CUDA_GEMM_KERNEL=hopper"
  "gemm 120 MOE_CUDA_GEMM_KERNEL=hopper,MOE_CUDA_SPLIT_K=0"
  "ops 120 -"
  "layer 120 -"
  "memcheck 90 $sanitize_env"
  "racecheck 90 $sanitize_env"
  "synccheck 60 $sanitize_env"
  "vitest 180 -"
  "time-gemm 180 -"
  "time-gemm 120 MOE_CUDA_SPLIT_K=0"
  "time-ops 90 -"
  "time-layer 240 -"
)
wanted="${PHASES:-gemm ops layer memcheck racecheck synccheck vitest time-gemm time-ops time-layer}"
# The whole check, build included, must fit one 10-minute call of the device
# tool: a phase gets at most what is left of BUDGET_S (seconds since the
# script started), and is skipped (and reported so) with under 30 s left.
budget="${BUDGET_S:-570}"
sanitizer="$(command -v compute-sanitizer || true)"
[ -n "$sanitizer" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || sanitizer=/usr/local/cuda/bin/compute-sanitizer
hopper_ok=1          # the Hopper GEMM phase (split-K on) passed
hopper_nosplit_ok=1  # the Hopper GEMM phase with MOE_CUDA_SPLIT_K=0 passed
for entry in "${plan[@]}"; do
  read -r phase limit assignment <<< "$entry"
  case " $wanted " in *" $phase "*) ;; *) continue ;; esac
  if [ "$assignment" = "-" ]; then assignment=""; else assignment="${assignment//,/ }"; fi
  # With a failing Hopper GEMM, check the other ops and the layer on a GEMM
  # that passed (Hopper without split-K, else SIMT) so that their own results
  # still come back.
  if [ -z "$assignment" ] && [ "$phase" != time-gemm ] && [ $hopper_ok = 0 ]; then
    if [ $hopper_nosplit_ok = 1 ]; then assignment="MOE_CUDA_SPLIT_K=0"; else assignment="MOE_CUDA_GEMM_KERNEL=simt"; fi
  fi
  left=$((budget - SECONDS))
  if [ $left -lt 30 ]; then
    echo "phase $phase ${assignment:-}: skipped (${left} s of the ${budget} s budget left)" >> "$out/phases.txt"
    continue
  fi
  [ "$limit" -le $((left - 10)) ] || limit=$((left - 10))
  echo "==== $phase $assignment (limit $limit s)"
  t0=$SECONDS
  case "$phase" in
    vitest)
      # The GPU test files of the suite (skipped on machines without a GPU).
      command=(node node_modules/vitest/vitest.mjs run test/native-checks.test.ts test/cuda-host-contracts.test.ts test/cuda-backend.test.ts
        test/moe-ops-cuda.test.ts test/moe-layer-cuda.test.ts test/checkpoint-python.test.ts test/worker-teardown.test.ts) ;;
    memcheck | racecheck | synccheck)
      if [ -z "$sanitizer" ]; then
        echo "phase $phase: FAILED: compute-sanitizer not found" >> "$out/phases.txt"
        continue
      fi
      command=("$sanitizer" --tool "$phase" --error-exitcode 3 --print-limit 20 node scripts/device-check.mjs sanitize)
      assignment="$assignment DEVICE_CHECK_LABEL=$phase" ;;
    *) command=(node scripts/device-check.mjs "$phase") ;;
  esac
  env $assignment timeout -k 10 "$limit" "${command[@]}" 2>&1 | tee -a "$out/device-check.txt"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) verdict="ok" ;;
    124 | 137) verdict="TIMED OUT" ;;
    1) verdict="checks failed" ;;
    3) verdict="FAILED: $phase reported errors" ;;
    *) verdict="died (exit $rc)" ;;
  esac
  echo "phase $phase ${assignment:-}: $verdict ($((SECONDS - t0)) s)" >> "$out/phases.txt"
  if [ "$phase" = gemm ] && [ "$rc" != 0 ]; then
    case "$assignment" in
      "MOE_CUDA_GEMM_KERNEL=hopper") hopper_ok=0 ;;
      "MOE_CUDA_GEMM_KERNEL=hopper MOE_CUDA_SPLIT_K=0") hopper_nosplit_ok=0 ;;
    esac
  fi
done
# Expert parallelism's GPU exchange (NCCL) needs 2+ GPUs, MPI and NCCL: a
# one-GPU machine lists it as not run.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -ge 2 ] && command -v mpirun > /dev/null && ldconfig -p 2>/dev/null | grep -q libnccl.so.2 &&
  { [ -f build-mpi/libmoe_mpi.so ] || bash scripts/mpi/build.sh > "$out/build-mpi.log" 2>&1; }; then
  timeout -k 10 120 mpirun --allow-run-as-root --oversubscribe -np 2 node scripts/ep/nccl-check.mjs 2>&1 | tee -a "$out/device-check.txt"
  echo "phase ep-nccl: $([ "${PIPESTATUS[0]}" = 0 ] && echo ok || echo FAILED)" >> "$out/phases.txt"
else
  echo "phase ep-nccl: not run (needs 2+ GPUs, mpirun, libnccl.so.2 and an MPI compiler; this machine has ${gpus:-0} GPU(s))" >> "$out/phases.txt"
fi
node scripts/device-check.mjs report 2>&1 | tee -a "$out/device-check.txt"
