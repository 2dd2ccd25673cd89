// Honest machine peaks for the benchmark's efficiency ratios: what the FMA
// units and the memory system of this machine actually deliver, measured with
// all pool threads busy.
#pragma once

namespace moe::cpu {

// GFLOP/s (1e9, 2 flops per FMA lane) of the whole machine: every pool thread
// runs independent FMA chains with the widest vectors the fp8 GEMM dispatch
// uses (so MOE_CPU_ISA lowers it too). Best of several repetitions within
// about `seconds` in total.
double measureFmaPeakGflops(double seconds);

// GFLOP/s (1e9, 2 flops per multiply-add) of VDPBF16PS (AVX512_BF16: two
// bf16 products added into each f32 lane) with 512-bit vectors on every pool
// thread: the compute ceiling of the AVX512_BF16 GEMM path. 0 when the GEMM
// does not use that path (no AVX512_BF16 or MOE_CPU_ISA below "avx512bf16").
double measureBf16DotPeakGflops(double seconds);

// GFLOP/s (1e9, 2 flops per multiply-add) of the matrix unit the fp8 GEMM
// uses for large M: every pool thread runs AMX TDPBF16PS (16 x 16 x 32 bf16
// -> f32) into 4 independent C tiles. 0 when the GEMM does not use AMX
// (no AMX-BF16, no OS permission, or MOE_CPU_ISA below "amx"). Best of
// several repetitions within about `seconds` in total.
double measureMatrixPeakGflops(double seconds);

// GB/s (1e9 bytes) of stream-reading a buffer of 8x the last-level cache
// (256 MiB .. 1.5 GiB: far beyond the caches, even the 300 MiB L3 a VM may
// report) with all pool threads. The buffer is allocated and touched once per
// call; best of several passes within about `seconds`. Returns 0 if no buffer
// of >= 256 MiB can be had.
double measureMemoryBandwidthGBs(double seconds);

}  // namespace moe::cpu
