#!/usr/bin/env bash
# Builds the CPU emulation of the CUDA plug-in (native/cuda/test/emulator/)
# into build-emu/libmoe_cuda.so with g++ alone: no CUDA
# toolkit, no GPU. The emulator runs each op through the CPU backend, so it
# links the CPU backend's sources. Test-only; select it with
#   MOE_CUDA_PLUGIN=build-emu/libmoe_cuda.so
# Skips the build when the library is newer than every source it uses.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$root/build-emu"
lib="$out/libmoe_cuda.so"
mkdir -p "$out/obj"
sources=("$root"/native/cuda/test/emulator/*.cpp "$root/native/cuda/src/api_table.cpp"
  "$root/native/cuda/src/sm90_fp8_gemm_heuristics.cpp" "$root"/native/src/cpu/*.cpp
  "$root/native/src/core/status.cpp" "$root/native/src/core/tensor.cpp" "$root/native/src/core/numerics.cpp"
  "$root/native/src/core/op_checks.cpp" "$root/native/src/core/moe_op_checks.cpp" "$root/native/src/core/backend.cpp")
selftest() {
  # The emulator must refuse what it exists to catch (native/cuda/test/emulator_selftest.c).
  cc -std=c99 -Wall -Wextra -Werror -I"$root/native/cuda/include" "$root/native/cuda/test/emulator_selftest.c" \
    "$lib" -Wl,-rpath,"$out" -o "$out/emulator_selftest"
  "$out/emulator_selftest" > "$out/emulator_selftest.log" 2>&1 || { cat "$out/emulator_selftest.log"; echo "build-emulator: self-test failed"; exit 1; }
  echo "build-emulator: self-test: $(grep -c '^  ok' "$out/emulator_selftest.log") refusals and waits as expected"
}
# (Newer sources, headers or this script rebuild; a fresh clone always builds.)
if [ -f "$lib" ] && [ -z "$(find "$root/native/src" "$root/native/cuda/include" "$root/native/cuda/src/fail.h" "$root/native/cuda/src/api_entry.h" "$root/native/cuda/src/api_table.cpp" \
  "$root/native/cuda/src/split_k_workspace.h" "$root/native/cuda/src/gemm_problem.h" "$root/native/cuda/src/sm90_fp8_gemm_heuristics.h" \
  "$root/native/cuda/src/sm90_fp8_gemm_heuristics.cpp" "$root/native/cuda/test/emulator/" \
  "$root/native/cuda/test/emulator_selftest.c" "${BASH_SOURCE[0]}" -newer "$lib" -print -quit)" ]; then
  echo "build-emulator: $lib is up to date"
  selftest
  exit 0
fi
flags=(-std=c++17 -O2 -fPIC -fvisibility=hidden -pthread -Wall -Wextra -Wno-unused-parameter
  -I"$root/native/src" -I"$root/native/cuda/include" -I"$root/native/cuda/src" -I"$root/native/cuda/test")
# One object per source, named by its path (native/src/cpu/x.cpp -> native_src_cpu_x.o).
object_of() { local rel="${1#"$root"/}"; echo "$out/obj/$(echo "${rel%.cpp}" | tr / _).o"; }
objects=()
for s in "${sources[@]}"; do objects+=("$(object_of "$s")"); done
# Compile in parallel (MOE_CUDA_JOBS, default 2), then link.
for s in "${sources[@]}"; do printf '%s\0%s\0' "$s" "$(object_of "$s")"; done |
  xargs -0 -n 2 -P "${MOE_CUDA_JOBS:-2}" bash -c 'a=("$@"); n=${#a[@]}; exec g++ "${a[@]:0:n-2}" -c "${a[n-2]}" -o "${a[n-1]}"' _ "${flags[@]}"
g++ -shared -pthread -o "$lib" "${objects[@]}" -Wl,-z,defs
echo "build-emulator: built $lib"
selftest
