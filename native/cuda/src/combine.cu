// combine (SPEC.md "combine"): out[t] = sum over slots j in order, with
// slotRow[t, j] >= 0, of w[t, j] * y[slotRow[t, j]], summed in f32, then
// + shared[t] when given; f32 or bf16 out. Each output element is summed by
// one thread in slot order with combine_math's rounded multiply then add (no
// FMA, no atomics): bitwise deterministic and equal to the CPU backend
// (cpu/combine.cpp; tested on the host in test/moe_math_test.cu).
//
// A thread owns 8 consecutive columns of one token (16-byte loads of bf16 y
// rows, two for f32; 16-byte stores), a block 128 threads = 1024 columns;
// blocks walk (token, column tile) pairs. Where H % 8 != 0 or a pointer is
// not 16-byte aligned the same kernel runs with 1 column per thread.
// Memory-bound: reads k rows of y (+ shared) and writes one row per token.

#include <cuda_runtime.h>

#include "combine_math.cuh"
#include "common.h"
#include "moe_ops.h"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace {

using namespace quant;

constexpr int kThreads = 128;
constexpr int32_t kBadRow = MOE_CUDA_FLAG_BAD_INDEX;
constexpr int32_t kNonFiniteWeight = MOE_CUDA_FLAG_NONFINITE;

enum SharedKind { kNoShared = 0, kSharedF32 = 1, kSharedBF16 = 2 };

template <int kVec>
__device__ __forceinline__ void load_vec(const void* base, int64_t i, bool bf16, float (&v)[kVec]) {
  if (kVec == 8) {
    if (bf16) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + i));
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[2 * j] = float_from_bits(words[j] << 16);
        v[2 * j + 1] = float_from_bits(words[j] & 0xFFFF0000u);
      }
    } else {
      const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
      const float4 a = __ldg(src), b = __ldg(src + 1);
      v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
      v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      v[j] = bf16 ? bf16_to_float(static_cast<const uint16_t*>(base)[i + j]) : static_cast<const float*>(base)[i + j];
    }
  }
}

template <int kVec>
__device__ __forceinline__ void store_vec(void* base, int64_t i, bool bf16, const float (&v)[kVec]) {
  if (kVec == 8) {
    if (bf16) {
      uint32_t words[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        words[j] = static_cast<uint32_t>(bf16_from_float(v[2 * j])) | (static_cast<uint32_t>(bf16_from_float(v[2 * j + 1])) << 16);
      }
      *reinterpret_cast<uint4*>(static_cast<uint16_t*>(base) + i) = make_uint4(words[0], words[1], words[2], words[3]);
    } else {
      float4* dst = reinterpret_cast<float4*>(static_cast<float*>(base) + i);
      dst[0] = make_float4(v[0], v[1], v[2], v[3]);
      dst[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (bf16) {
        static_cast<uint16_t*>(base)[i + j] = bf16_from_float(v[j]);
      } else {
        static_cast<float*>(base)[i + j] = v[j];
      }
    }
  }
}

template <int kVec, int kShared>
__global__ void __launch_bounds__(kThreads) combine_kernel(CombineProblem p) {
  const int64_t H = p.hidden;
  const int64_t tile_cols = static_cast<int64_t>(kThreads) * kVec;
  const int64_t tiles = (H + tile_cols - 1) / tile_cols;
  const int64_t work = p.tokens * tiles;
  for (int64_t b = blockIdx.x; b < work; b += gridDim.x) {
    const int64_t t = b / tiles, tile = b % tiles;
    const int64_t col = tile * tile_cols + static_cast<int64_t>(threadIdx.x) * kVec;
    const int32_t* slot_row = p.slot_row + t * p.slots;  // [k] i32
    const float* weights = p.weights + t * p.slots;      // [k] f32
    int32_t bad = 0;
    float acc[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] = 0.0f;
    for (int64_t j = 0; j < p.slots; ++j) {
      const int32_t row = slot_row[j];
      const float w = weights[j];
      if (!is_finite(w)) bad |= kNonFiniteWeight;
      if (row == -1) continue;
      if (!combine_math::valid_row(row, p.rows)) {
        bad |= kBadRow;
        continue;
      }
      if (col < H) {
        float y[kVec];
        load_vec<kVec>(p.y, static_cast<int64_t>(row) * H + col, p.y_bf16, y);
#pragma unroll
        for (int c = 0; c < kVec; ++c) acc[c] = combine_math::accumulate(acc[c], w, y[c]);
      }
    }
    if (col < H) {
      if (kShared != kNoShared) {
        float s[kVec];
        load_vec<kVec>(p.shared, t * H + col, kShared == kSharedBF16, s);
#pragma unroll
        for (int c = 0; c < kVec; ++c) acc[c] = combine_math::add_shared(acc[c], s[c]);
      }
      store_vec<kVec>(p.out, t * H + col, p.out_bf16, acc);
    }
    if (bad != 0 && tile == 0 && threadIdx.x == 0 && p.flag != nullptr) atomicOr(p.flag, bad);
  }
}

template <int kVec>
void launch(const CombineProblem& p, unsigned grid, cudaStream_t stream) {
  if (p.shared == nullptr) {
    combine_kernel<kVec, kNoShared><<<grid, kThreads, 0, stream>>>(p);
  } else if (p.shared_bf16) {
    combine_kernel<kVec, kSharedBF16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    combine_kernel<kVec, kSharedF32><<<grid, kThreads, 0, stream>>>(p);
  }
}

bool aligned16(const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

int combine_run(const CombineProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.tokens == 0 || p.hidden == 0) return MOE_CUDA_OK;
  const bool vec = p.hidden % 8 == 0 && aligned16(p.y) && aligned16(p.shared) && aligned16(p.out);
  const int64_t tile_cols = static_cast<int64_t>(kThreads) * (vec ? 8 : 1);
  const int64_t work = p.tokens * ((p.hidden + tile_cols - 1) / tile_cols);
  const unsigned grid = static_cast<unsigned>(work < (1 << 20) ? work : (1 << 20));
  if (vec) {
    launch<8>(p, grid, stream);
  } else {
    launch<1>(p, grid, stream);
  }
  MOE_CUDA_CHECK_LAUNCH("combine_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
