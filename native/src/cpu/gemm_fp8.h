// Block-scaled FP8 GEMM on the CPU (SPEC.md, "FP8 GEMM"):
//
//   D[m, n] = sum_g sa[m, g] * sb[n / 128, g] * sum_{k in group g} A[m, k] * B[n, k]
//
// A [M, K] and B [N, K] are fp8 e4m3, K-major; sa [M, ceil(K/128)] and
// sb [ceil(N/128), ceil(K/128)] are f32; D [M, N] is f32 or bf16.
//
// Why hand-written: no BLAS (OpenBLAS, MKL, BLIS, oneDNN's public GEMM) takes
// fp8 e4m3 inputs with 1x128 / 128x128 block scales, and decoding all of B to
// f32 first would cost 4x its bytes in memory traffic and a full-size copy.
// Here fp8 is decoded while packing (large M) or while streaming B (small M):
// to f32 with the scales folded in for the FMA kernels, or exactly to bf16 for
// AVX512_BF16 and AMX, whose f32 sums of each 128-wide K group then take the
// scales. See gemm_fp8.cpp for the choice of path, blocking and threading.
#pragma once

#include "core/ops.h"
#include "core/status.h"

namespace moe::cpu {

// Dtypes, shapes and contiguity of `args` must already be validated. Returns
// kNonFinite when A or B holds an fp8 NaN code (0x7F/0xFF); D may then be
// partially written. Returns kInternal if scratch memory cannot be allocated.
Status gemmFp8(const GemmFp8Args& args);

// The same with A's rows gathered: D row m = a[aRows[m]] * B^T for m < rows
// (args.a: [*, K] and args.aScales: [*, ceil(K/128)], every aRows[m] a valid
// row of them; args.d: [rows, N]). The AMX path reads the rows in place.
Status gemmFp8Rows(const GemmFp8Args& args, const int32_t* aRows, int64_t rows);

// Rows per row tile of a GEMM of M rows: calls on consecutive runs of this
// many rows of A (the last run shorter) give every row the bits it has in the
// whole call, as the kernels cut M this way themselves (the AVX512_BF16
// row-lane kernel: whole zmm of rows and at most one tail per tile).
int64_t gemmRowTileRows(int64_t M);

}  // namespace moe::cpu
