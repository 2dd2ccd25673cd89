// Fragment layout of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// (sm_80+), as constexpr functions usable on the host and the device, so that
// native/cuda/test/layouts_test.cpp checks them on the CPU against a model of
// the PTX ISA's tables ("Matrix Fragments for mma.m16n8k16 with floating
// point type") and emulates a warp's MMA with them.
//
// Each of a warp's 32 lanes holds, as 32-bit registers of two bf16 each (the
// lower k in the low half):
//   A [16 x 16] row-major: 4 registers,  B [16 x 8] (k x n): 2 registers,
//   C/D [16 x 8] f32: 4 registers.
// With g = lane / 4 and q = lane % 4, register r of A holds row g + 8 (r & 1),
// columns 2q + 8 (r >> 1) and +1; register r of B holds k = 2q + 8 r and +1 of
// column n = g; accumulator c holds row g + 8 (c >> 1), column 2q + (c & 1).
//
// This header must compile with a plain C++17 compiler: no CUDA types.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define MOE_MMA_HD __host__ __device__
#else
#define MOE_MMA_HD
#endif

namespace moe_cuda {
namespace mma16816 {

constexpr int kM = 16, kN = 8, kK = 16;

// A: the row and the first of the two columns register `reg` (0..3) of `lane` holds.
MOE_MMA_HD constexpr int a_row(int lane, int reg) { return (lane >> 2) + ((reg & 1) << 3); }
MOE_MMA_HD constexpr int a_col(int lane, int reg) { return ((lane & 3) << 1) + ((reg >> 1) << 3); }

// B (k x n): the first of the two k and the n register `reg` (0..1) of `lane` holds.
MOE_MMA_HD constexpr int b_k(int lane, int reg) { return ((lane & 3) << 1) + (reg << 3); }
MOE_MMA_HD constexpr int b_n(int lane) { return lane >> 2; }

// C/D: the row and column of accumulator `c` (0..3) of `lane`.
MOE_MMA_HD constexpr int c_row(int lane, int c) { return (lane >> 2) + ((c >> 1) << 3); }
MOE_MMA_HD constexpr int c_col(int lane, int c) { return ((lane & 3) << 1) + (c & 1); }

}  // namespace mma16816
}  // namespace moe_cuda
