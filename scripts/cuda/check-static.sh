#!/usr/bin/env bash
# Static checks of the CUDA plug-in that need no GPU (CI and developer boxes):
#   1. the plug-in builds (cmake; skipped when build-cuda/libmoe_cuda.so is
#      newer than every file under native/cuda/);
#   2. ptxas -v for every sm_90a Hopper kernel: no spill stores/loads, no stack
#      frame (local memory), no wgmma serialization note, and the register
#      count setmaxnreg relies on (168);
#   3. the generated PTX contains wgmma.mma_async ... .e4m3.e4m3 and
#      cp.async.bulk.tensor (plus setmaxnreg, and mbarrier waits with their
#      hang watchdog: %globaltimer and trap);
#   4. the library links the static CUDA runtime and neither libcuda nor
#      libcudart.so, and exports the C ABI;
#   5. native/cuda/test/layouts_test.cpp (g++): the layout arithmetic against
#      an independent model of the PTX ISA's tables;
#   6. native/cuda/test/simt_math_test.cu (nvcc, host code): the SIMT kernels'
#      per-element math against a float64 reference of SPEC.md;
#   7. native/cuda/test/quantize_math_test.cu (nvcc host code, linked with the
#      CPU backend's quantizer from native/src): the quantize / dequantize
#      kernels' math bit for bit against the CPU backend; exhaustive over all
#      2^32 floats (about a minute on 2 cores; MOE_CUDA_QUICK=1 skips the
#      sweeps), then again with MOE_CPU_ISA=portable (tensors only);
#   8. native/cuda/test/moe_math_test.cu (nvcc host code, linked with the CPU
#      backend's route, layout, dispatch, swiglu and combine): the MoE
#      kernels' math and decomposition against the CPU backend (ids exactly,
#      everything else bit for bit; softmax weights within 1e-5);
#   9. ptxas -v of the MoE kernels (route, layout, dispatch, swiglu, combine,
#      router logits): no spills, no stack frame / local memory;
#  10. a dlopen smoke test: ABI version, probe verdict, host-side checks.
# Exits non-zero on the first failing step. Environment:
#   MOE_CUDA_BUILD_DIR (default build-cuda), MOE_CUDA_JOBS (default 2),
#   MOE_CUDA_QUICK (1: no exhaustive sweeps in step 7).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
src="$root/native/cuda"
build="${MOE_CUDA_BUILD_DIR:-$root/build-cuda}"
jobs="${MOE_CUDA_JOBS:-2}"
lib="$build/libmoe_cuda.so"
logs="$build/sm90_ptxas"
keep="$build/sm90_keep"
sm90_sources=(sm90_fp8_gemm_dense sm90_fp8_gemm_grouped sm90_fp8_gemm_masked)
moe_sources=(router_logits route dispatch_layout dispatch swiglu combine)
moe_logs="$build/moe_ptxas"
expect_regs=168

summary=()
fail() {
  echo "check-static: FAIL: $*" >&2
  exit 1
}
note() { summary+=("$*"); echo "check-static: $*"; }

# What steps 2 and 9 check in every object's ptxas -v log (the build's ptxas
# gate checked it too; this catches a stale or hand-built object): at least
# one kernel, no spills, no stack frame, no local memory, and a clean spill
# report per kernel. Sets n to the object's kernel count.
check_ptxas_log() {  # <name> <log>
  local s=$1 log=$2
  [ -f "$log" ] || fail "no ptxas log $log"
  n=$(grep -c "Compiling entry function" "$log" || true)
  [ "$n" -gt 0 ] || fail "$s: ptxas compiled no entry function"
  if grep -E '[1-9][0-9]* bytes spill (stores|loads)' "$log" >&2; then fail "$s: register spills"; fi
  if grep -E '[1-9][0-9]* bytes stack frame' "$log" >&2; then fail "$s: stack frame / local memory"; fi
  if grep -iE 'ptxas warning.*(local memory|lmem)' "$log" >&2; then fail "$s: local memory"; fi
  [ "$(grep -c '0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads' "$log")" -ge "$n" ] ||
    fail "$s: a kernel without a clean spill report"
}

command -v nvcc >/dev/null || fail "nvcc is not on PATH"
command -v cmake >/dev/null || fail "cmake is not on PATH"

# ---- 1. build ----------------------------------------------------------------
needs_build=1
if [ -f "$lib" ] && [ -z "$(find "$src" "$root/CMakeLists.txt" -type f -newer "$lib" -print -quit)" ]; then
  needs_build=0
  for s in "${sm90_sources[@]}"; do
    [ -f "$logs/$s.cu.o.ptxas.log" ] && [ -f "$keep/$s.ptx" ] || needs_build=1
  done
  # the ptxas logs are a by-product of compiling the Hopper objects: force them
  [ $needs_build -eq 1 ] && rm -f "$build"/CMakeFiles/moe_cuda_sm90.dir/native/cuda/src/*.o
  for s in "${moe_sources[@]}"; do
    if [ ! -f "$moe_logs/$s.cu.o.ptxas.log" ]; then
      needs_build=1
      rm -f "$build"/CMakeFiles/moe_cuda_moe.dir/native/cuda/src/*.o
    fi
  done
fi
if [ $needs_build -eq 1 ]; then
  start=$(date +%s)
  # A build folder configured from another source folder (the plug-in's build
  # used to start in native/cuda/) is configured afresh.
  if [ -f "$build/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$build/CMakeCache.txt"; then
    rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
  fi
  if [ ! -f "$build/CMakeCache.txt" ]; then
    mkdir -p "$build"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build/configure.log" 2>&1 ||
      { cat "$build/configure.log" >&2; fail "cmake configure"; }
  fi
  cmake --build "$build" -j"$jobs" >"$build/build.log" 2>&1 ||
    { grep -E "error|ptxas gate" "$build/build.log" >&2 || tail -40 "$build/build.log" >&2; fail "build (see $build/build.log)"; }
  note "built $lib in $(( $(date +%s) - start )) s"
else
  note "$lib is up to date"
fi
[ -f "$lib" ] || fail "no $lib"

# ---- 2. ptxas report of the Hopper kernels -------------------------------------
kernels=0
for s in "${sm90_sources[@]}"; do
  log="$logs/$s.cu.o.ptxas.log"
  check_ptxas_log "$s" "$log"
  kernels=$((kernels + n))
  if grep -iE 'wgmma.*serializ|serializ.*wgmma' "$log" >&2; then fail "$s: wgmma serialization"; fi
  if grep -iE 'setmaxnreg.*ignored' "$log" >&2; then fail "$s: ptxas ignored setmaxnreg"; fi
  if grep -iE 'ptxas (warning|error)' "$log" >&2; then fail "$s: ptxas warnings"; fi
  bad=$(grep -oE 'Used [0-9]+ registers' "$log" | awk -v want=$expect_regs '$2 != want' | head -1)
  [ -z "$bad" ] || fail "$s: '$bad' but setmaxnreg assumes $expect_regs"
  [ "$(grep -c 'Used [0-9]* registers' "$log")" -eq "$n" ] || fail "$s: a kernel without a register report"
done
note "ptxas: $kernels sm_90a kernels, all $expect_regs registers, 0 spills, 0 stack, no wgmma serialization, no setmaxnreg ignored"

# ---- 3. PTX content ------------------------------------------------------------------
for s in "${sm90_sources[@]}"; do
  ptx="$keep/$s.ptx"
  [ -f "$ptx" ] || fail "no PTX $ptx"
  grep -q '^\.target sm_90a' "$ptx" || fail "$s: PTX target is not sm_90a"
  wg=$(grep -cE 'wgmma\.mma_async\.sync\.aligned\.m64n[0-9]+k32\.f32\.e4m3\.e4m3' "$ptx" || true)
  tma_load=$(grep -c 'cp\.async\.bulk\.tensor\.3d\.shared::cluster\.global\.tile\.mbarrier::complete_tx::bytes' "$ptx" || true)
  tma_store=$(grep -c 'cp\.async\.bulk\.tensor\.3d\.global\.shared::cta' "$ptx" || true)
  regs=$(grep -c 'setmaxnreg' "$ptx" || true)
  waits=$(grep -c 'mbarrier\.try_wait\.parity' "$ptx" || true)
  watchdog=$(grep -c '%globaltimer' "$ptx" || true)
  [ "$wg" -gt 0 ] || fail "$s: no wgmma.mma_async with e4m3 operands in the PTX"
  [ "$tma_load" -gt 0 ] || fail "$s: no cp.async.bulk.tensor load in the PTX"
  [ "$tma_store" -gt 0 ] || fail "$s: no cp.async.bulk.tensor store in the PTX"
  [ "$regs" -gt 0 ] || fail "$s: no setmaxnreg in the PTX"
  [ "$waits" -gt 0 ] || fail "$s: no mbarrier wait in the PTX"
  { [ "$watchdog" -gt 0 ] && grep -q 'trap;' "$ptx"; } || fail "$s: the pipeline waits lack their hang watchdog (globaltimer + trap)"
  note "PTX $s: $wg wgmma e4m3, $tma_load TMA loads, $tma_store TMA stores, $regs setmaxnreg"
done

# ---- 4. linkage --------------------------------------------------------------------
needed=$(readelf -d "$lib" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | tr '\n' ' ')
case " $needed " in
  *libcuda.so*) fail "links libcuda ($needed)" ;;
  *libcudart.so*) fail "links the shared CUDA runtime ($needed)" ;;
esac
nm -D --defined-only "$lib" | grep -q ' cudaMalloc' && fail "re-exports CUDA runtime symbols"
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep '^moe_cuda_' | tr '\n' ' ' || true)
[ "$exported" = "moe_cuda_get_api " ] || fail "exports '$exported'; the plug-in's one exported symbol is moe_cuda_get_api"
note "linkage: NEEDED = $needed; exports moe_cuda_get_api only"

# ---- 5. layout test (CPU, g++) ---------------------------------------------------------
g++ -std=c++17 -O1 -Wall -Wextra -Werror -I"$src/include" -I"$src/src" "$src/test/layouts_test.cpp" \
  "$src/src/sm90_fp8_gemm_heuristics.cpp" -o "$build/layouts_test"
"$build/layouts_test" >"$build/layouts_test.log" 2>&1 || { cat "$build/layouts_test.log" >&2; fail "layouts_test"; }
note "layouts_test: $(tail -1 "$build/layouts_test.log")"

# ---- 6. SIMT element math (nvcc host code) --------------------------------------
nvcc -std=c++17 -O1 -Werror all-warnings -I"$src/src" "$src/test/simt_math_test.cu" -o "$build/simt_math_test"
"$build/simt_math_test" >"$build/simt_math_test.log" 2>&1 || { cat "$build/simt_math_test.log" >&2; fail "simt_math_test"; }
note "simt_math_test: $(grep -c '^  ok' "$build/simt_math_test.log") checks vs a float64 SPEC reference, $(tail -1 "$build/simt_math_test.log" | sed 's/^ *//')"

# ---- 7. quantize / dequantize math vs the CPU backend (nvcc host code) ------------
cpu_src="$root/native/src"
nvcc -std=c++17 -O2 -Werror all-warnings -Xcompiler -pthread -I"$src/src" -I"$cpu_src" \
  "$src/test/quantize_math_test.cu" \
  "$cpu_src/cpu/quantize.cpp" "$cpu_src/cpu/quantize_row_avx2.cpp" "$cpu_src/cpu/quantize_row_avx512.cpp" \
  "$cpu_src/cpu/cpu_features.cpp" "$cpu_src/cpu/thread_pool.cpp" \
  "$cpu_src/core/numerics.cpp" "$cpu_src/core/status.cpp" "$cpu_src/core/tensor.cpp" \
  -o "$build/quantize_math_test"
quick=()
[ "${MOE_CUDA_QUICK:-0}" = 1 ] && quick=(--quick)
"$build/quantize_math_test" "${quick[@]}" >"$build/quantize_math_test.log" 2>&1 ||
  { cat "$build/quantize_math_test.log" >&2; fail "quantize_math_test"; }
MOE_CPU_ISA=portable "$build/quantize_math_test" --quick >"$build/quantize_math_test_portable.log" 2>&1 ||
  { cat "$build/quantize_math_test_portable.log" >&2; fail "quantize_math_test (MOE_CPU_ISA=portable)"; }
note "quantize_math_test: $(grep -c '^  ok' "$build/quantize_math_test.log") bit-exact checks vs the CPU backend${quick:+ (quick)}, $(tail -1 "$build/quantize_math_test.log" | sed 's/^ *//'); portable ISA: $(tail -1 "$build/quantize_math_test_portable.log" | sed 's/^ *//')"

# ---- 8. MoE kernel math vs the CPU backend (nvcc host code) -------------------------
nvcc -std=c++17 -O2 -Werror all-warnings -Xcompiler -pthread -I"$src/src" -I"$src/include" -I"$cpu_src" \
  "$src/test/moe_math_test.cu" \
  "$cpu_src/cpu/route.cpp" "$cpu_src/cpu/dispatch_layout.cpp" "$cpu_src/cpu/dispatch.cpp" "$cpu_src/cpu/swiglu.cpp" \
  "$cpu_src/cpu/combine.cpp" "$cpu_src/cpu/quantize.cpp" "$cpu_src/cpu/quantize_row_avx2.cpp" \
  "$cpu_src/cpu/quantize_row_avx512.cpp" "$cpu_src/cpu/cpu_features.cpp" "$cpu_src/cpu/thread_pool.cpp" \
  "$cpu_src/core/numerics.cpp" "$cpu_src/core/status.cpp" "$cpu_src/core/tensor.cpp" "$cpu_src/core/moe_op_checks.cpp" \
  -o "$build/moe_math_test"
"$build/moe_math_test" >"$build/moe_math_test.log" 2>&1 || { cat "$build/moe_math_test.log" >&2; fail "moe_math_test"; }
MOE_CPU_ISA=portable "$build/moe_math_test" >"$build/moe_math_test_portable.log" 2>&1 ||
  { cat "$build/moe_math_test_portable.log" >&2; fail "moe_math_test (MOE_CPU_ISA=portable)"; }
note "moe_math_test: $(grep -c '^  ok' "$build/moe_math_test.log") checks vs the CPU backend, $(tail -1 "$build/moe_math_test.log" | sed 's/^ *//'); portable ISA: $(tail -1 "$build/moe_math_test_portable.log" | sed 's/^ *//')"

# ---- 9. ptxas report of the MoE kernels -----------------------------------------------
moe_kernels=0
for s in "${moe_sources[@]}"; do
  check_ptxas_log "$s" "$moe_logs/$s.cu.o.ptxas.log"
  moe_kernels=$((moe_kernels + n))
done
note "ptxas: $moe_kernels MoE kernel compilations (sm_80/89/90), 0 spills, 0 stack"

# ---- 10. dlopen smoke test -----------------------------------------------------------
cc -std=c99 -Wall -Wextra -Werror -I"$src/include" "$src/test/dlopen_smoke.c" -ldl -o "$build/dlopen_smoke"
"$build/dlopen_smoke" "$lib" >"$build/dlopen_smoke.log" 2>&1 || { cat "$build/dlopen_smoke.log" >&2; fail "dlopen smoke test"; }
note "dlopen smoke:$(grep 'probe:' "$build/dlopen_smoke.log" | sed 's/^ *probe://')"

echo
echo "CUDA plug-in static checks passed:"
for line in "${summary[@]}"; do echo "  - $line"; done
