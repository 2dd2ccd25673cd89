// Run-time CPU feature detection for the CPU backend's SIMD dispatch.
#pragma once

namespace moe::cpu {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vbmi = false;  // byte permutes: the table decode of fp8 -> bf16
  bool avx512bf16 = false;  // VDPBF16PS: bf16 pair dot products into f32
  // AMX tiles with bf16 dot products, usable: CPUID, the OS's XCR0 tile
  // state, and Linux's per-process permission (arch_prctl
  // ARCH_REQ_XCOMP_PERM, requested once during detection) all agree.
  bool amxTile = false;
  bool amxBf16 = false;
};

// What the hardware (and OS) supports, ignoring MOE_CPU_ISA.
const CpuFeatures& hardwareCpuFeatures();

// The features the kernels may use: the hardware's, with everything above the
// level named by env MOE_CPU_ISA=portable|avx2|avx512|avx512bf16|amx switched
// off (read once; "avx512bf16" keeps AVX512_BF16 and turns AMX off; "avx512"
// keeps AVX-512 F/BW/VL/DQ and turns AVX512_BF16 and AMX off).
// The override can only lower the level, so every path can be tested on one
// machine; an unknown value is ignored.
const CpuFeatures& cpuFeatures();

enum class GemmIsa { kPortable, kAvx2, kAvx512 };

// The vector level of the fp8 GEMM's kernels, derived from cpuFeatures().
// AMX is not a level here (other kernels compare against kAvx512): it is an
// addition on top of kAvx512, reported by gemmUsesAmx().
GemmIsa gemmIsa();

// True when the fp8 GEMM multiplies with AVX512_BF16 (VDPBF16PS: fp8 decoded
// exactly to bf16, products exact in f32, twice the FMA path's rate):
// gemmIsa() is kAvx512 and the CPU has AVX512_BF16 and AVX512_VBMI (Zen 4/5,
// Sapphire Rapids and later; Cooper Lake lacks VBMI and keeps the FMA path).
// Under AMX this path serves the rows AMX does not (M <= 2).
bool gemmUsesAvx512Bf16();

// True when the fp8 GEMM runs its compute-bound shapes (enough rows of A) on
// AMX tiles: gemmIsa() is kAvx512 and AMX-BF16 is usable. Small M still
// streams through the AVX-512 kernels.
bool gemmUsesAmx();

// The fp8 GEMM's path: "amx", "avx512bf16", "avx512", "avx2" or "portable".
const char* gemmIsaName();

}  // namespace moe::cpu
