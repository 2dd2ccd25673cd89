#!/usr/bin/env bash
# CUDA compiler launcher (CMake CUDA_COMPILER_LAUNCHER) that gates a compile on
# ptxas' -v report:
#   ptxas_gate.sh simt <log-dir> <nvcc> <args...>
#   ptxas_gate.sh sm90 <log-dir> <keep-dir> <expected-registers> <nvcc> <args...>
# Runs the compile, saves ptxas' -v report to <log-dir>/<object>.ptxas.log,
# echoes it, and fails the compile (removing the object) when:
#   - any function spills (spill stores/loads > 0) or has a stack frame > 0,
#   - ptxas warns about local memory,
#   - there is no ptxas -v report.
# The MoE SIMT kernels (simt) are memory-bound and must keep their per-thread
# arrays in registers (every such array is indexed by unrolled constants).
# The Hopper kernels (sm90) also fail when:
#   - ptxas reports serialized wgmma (a "Potential Performance Loss" note),
#   - a kernel's register count differs from <expected-registers> (setmaxnreg
#     moves registers from a pool that size; see include/sm90_layouts.h),
#   - the kept PTX lacks wgmma.mma_async ... e4m3 or cp.async.bulk.tensor.
set -u
mode=$1 log_dir=$2
case "$mode" in
  simt) shift 2 ;;
  sm90) keep_dir=$3 expect_regs=$4; shift 4 ;;
  *) echo "ptxas gate: unknown mode '$mode' (simt or sm90)" >&2; exit 2 ;;
esac

out="" src="" prev=""
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
  case "$a" in *.cu) src=$a ;; esac
  prev=$a
done
name=$(basename "${out:-unknown.o}")
log="$log_dir/$name.ptxas.log"
mkdir -p "$log_dir"

"$@" 2>"$log"
rc=$?
cat "$log" >&2
[ $rc -ne 0 ] && exit $rc

problems=()
grep -qE '[1-9][0-9]* bytes spill (stores|loads)' "$log" && problems+=("register spills")
grep -qE '[1-9][0-9]* bytes stack frame' "$log" && problems+=("a stack frame (local memory)")
grep -qiE 'ptxas warning.*(local memory|lmem)' "$log" && problems+=("local memory use")
grep -q 'Used [0-9]* registers' "$log" || problems+=("no ptxas -v report")

if [ "$mode" = sm90 ]; then
  grep -qiE 'wgmma.*serializ|serializ.*wgmma' "$log" && problems+=("serialized wgmma")
  # ptxas drops setmaxnreg when it cannot prove the register count at the
  # instruction (C7515 "setmaxnreg ignored; unable to determine register
  # count at entry"): the consumers then run with the producers' budget.
  grep -qiE 'setmaxnreg.*ignored' "$log" && problems+=("setmaxnreg ignored")
  bad_regs=$(grep -oE 'Used [0-9]+ registers' "$log" | awk -v want="$expect_regs" '$2 != want' | head -1)
  [ -n "$bad_regs" ] && problems+=("'$bad_regs' (setmaxnreg assumes $expect_regs)")
  if [ -n "$src" ]; then
    ptx="$keep_dir/$(basename "${src%.cu}").ptx"
    if [ ! -f "$ptx" ]; then
      problems+=("no kept PTX at $ptx")
    else
      grep -qE 'wgmma\.mma_async\.sync\.aligned\.m64n[0-9]+k32\.f32\.e4m3\.e4m3' "$ptx" || problems+=("PTX without wgmma.mma_async e4m3")
      grep -q 'cp\.async\.bulk\.tensor' "$ptx" || problems+=("PTX without cp.async.bulk.tensor")
    fi
  fi
fi

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "ptxas gate: $name: $p" >&2; done
  [ -n "$out" ] && rm -f "$out"
  exit 1
fi
exit 0
