// Per-element math of the combine kernel (combine.cu), host and device:
//   acc = 0; for j in slot order with slotRow[t, j] >= 0: acc = acc + (w_j * y_j);
//   then acc = acc + shared; out = acc (f32) or bf16(acc).
// Each product is rounded before the add (the CPU backend's kernels never
// fuse them: cpu/combine.cpp), so every step here is one correctly rounded
// IEEE operation (__fmul_rn / __fadd_rn, which nvcc never contracts into an
// FMA): the GPU's sums are the CPU's bits, and no atomics or reordering
// anywhere makes them deterministic.
#pragma once

#include "exp_math.cuh"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace combine_math {

// acc + w * y, product rounded first.
MOE_QUANT_HD float accumulate(float acc, float w, float y) { return expm::add_rn(acc, quant::mul_rn(w, y)); }

// acc + shared (the shared experts' output, added after every routed slot).
MOE_QUANT_HD float add_shared(float acc, float shared) { return expm::add_rn(acc, shared); }

// The output slot ids a kernel may read: [-1, rows); anything else is an
// out-of-contract id that is skipped (and reported through the error flag).
MOE_QUANT_HD bool valid_row(int32_t row, int64_t rows) { return row >= 0 && static_cast<int64_t>(row) < rows; }

}  // namespace combine_math
}  // namespace moe_cuda
