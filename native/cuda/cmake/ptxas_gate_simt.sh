#!/usr/bin/env bash
# CUDA compiler launcher for the MoE SIMT kernels (route, layout, dispatch,
# swiglu, combine, router logits):
#   ptxas_gate_simt.sh <log-dir> <nvcc> <args...>
# Runs the compile with ptxas -v, saves the report to <log-dir>/<object>.ptxas.log
# and fails the compile (removing the object) if any function spills
# registers, has a stack frame (local memory), or ptxas warns about local
# memory: these kernels are memory-bound and must keep their per-thread
# arrays in registers (every such array is indexed by unrolled constants).
set -u
log_dir=$1
shift 1

out="" prev=""
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
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

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "ptxas gate: $name: $p" >&2; done
  [ -n "$out" ] && rm -f "$out"
  exit 1
fi
exit 0
