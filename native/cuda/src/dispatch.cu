// dispatch (SPEC.md "Dispatch"): out[r] = x[rowToken[r]] (padding rows, token
// -1, are zero), fused with 1x128 fp8 quantization: bf16 or f32 rows in, fp8
// rows + f32 scales out, bit for bit the CPU backend's quantizer (the same
// quantize_math.cuh functions as quantize.cu, tested on the host against
// cpu/quantize.cpp). A padding row quantizes a zero row as the CPU does:
// q = 0, every scale group_scale(0).
//
// One warp per row, 512 columns per step: lane l takes 16 consecutive
// columns (one 16-byte fp8 store; two bf16 or four f32 16-byte loads), so
// a 128-column group is 8 adjacent lanes and its amax is a 3-step xor
// shuffle inside those lanes. Memory-bound: per row it reads H * |x| bytes
// and writes H + 4 * H / 128.

#include <cuda_runtime.h>

#include "common.h"
#include "moe_ops.h"
#include "quantize_math.cuh"
#include "vec_io.cuh"

namespace moe_cuda {
namespace {

using namespace quant;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;

constexpr int32_t kBadToken = MOE_CUDA_FLAG_BAD_INDEX;
constexpr int32_t kNonFinite = MOE_CUDA_FLAG_NONFINITE;

template <bool kBF16>
__global__ void __launch_bounds__(kThreads) dispatch_fp8_kernel(DispatchProblem p) {
  const int lane = threadIdx.x & 31;
  const int64_t H = p.hidden, groups = (H + kGroup - 1) / kGroup;
  uint8_t* out = static_cast<uint8_t*>(p.out);  // [R, H] fp8
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < p.rows;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int32_t token = p.row_token[r];
    const bool valid = token >= 0 && token < p.tokens;
    if (!valid && token != -1 && lane == 0 && p.flag != nullptr) atomicOr(p.flag, kBadToken);
    bool finite = true;
    for (int64_t c0 = 0; c0 < H; c0 += kStep) {
      const int64_t col = c0 + lane * kPerLane;
      const bool active = col < H;  // H % 16 == 0: a lane's 16 columns are all in or all out
      float v[kPerLane];
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) v[j] = 0.0f;
      if (active && valid) load16<kBF16>(p.x, static_cast<int64_t>(token) * H + col, v);
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        finite &= is_finite(v[j]);
        amax = amax_step(amax, v[j]);
      }
      quantize_store16(v, amax, active, p.ue8m0, lane, out + r * H, p.scales + r * groups, col);  // scales: [R, groups] f32
    }
    if (__any_sync(kFull, !finite) && lane == 0 && p.flag != nullptr) atomicOr(p.flag, kNonFinite);
  }
}

// No quantization: a bit-exact row copy in x's dtype, 16 bytes per access
// when rows are 16-byte multiples (else 2 bytes); padding rows are +0.
template <typename Word>
__global__ void __launch_bounds__(kThreads) dispatch_copy_kernel(DispatchProblem p, int64_t words_per_row) {
  const Word* x = static_cast<const Word*>(p.x);  // [T, words_per_row]
  Word* out = static_cast<Word*>(p.out);          // [R, words_per_row]
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < p.rows;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int32_t token = p.row_token[r];
    const bool valid = token >= 0 && token < p.tokens;
    if (!valid && token != -1 && (threadIdx.x & 31) == 0 && p.flag != nullptr) atomicOr(p.flag, kBadToken);
    for (int64_t w = threadIdx.x & 31; w < words_per_row; w += 32) {
      Word v{};
      if (valid) v = x[static_cast<int64_t>(token) * words_per_row + w];
      out[r * words_per_row + w] = v;
    }
  }
}

unsigned grid_for_rows(int64_t rows) {
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < 65536 ? blocks : 65536));
}

}  // namespace

int dispatch_run(const DispatchProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.rows == 0) return MOE_CUDA_OK;
  const unsigned grid = grid_for_rows(p.rows);
  if (p.scales != nullptr) {
    if (p.x_bf16) {
      dispatch_fp8_kernel<true><<<grid, kThreads, 0, stream>>>(p);
    } else {
      dispatch_fp8_kernel<false><<<grid, kThreads, 0, stream>>>(p);
    }
    MOE_CUDA_CHECK_LAUNCH("dispatch_fp8_kernel");
    return MOE_CUDA_OK;
  }
  const int64_t row_bytes = p.hidden * (p.x_bf16 ? 2 : 4);
  const bool aligned = reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  if (row_bytes % 16 == 0 && aligned) {
    dispatch_copy_kernel<uint4><<<grid, kThreads, 0, stream>>>(p, row_bytes / 16);
  } else {
    dispatch_copy_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(p, row_bytes / 2);
  }
  MOE_CUDA_CHECK_LAUNCH("dispatch_copy_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
