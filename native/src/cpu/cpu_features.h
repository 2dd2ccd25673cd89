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
  // AMX tiles with bf16 dot products, usable: CPUID, the OS's XCR0 tile
  // state, and Linux's per-process permission (arch_prctl
  // ARCH_REQ_XCOMP_PERM, requested once during detection) all agree.
  bool amxTile = false;
  bool amxBf16 = false;
};

// What the hardware (and OS) supports, ignoring MOE_CPU_ISA.
const CpuFeatures& hardwareCpuFeatures();

// The features the kernels may use: the hardware's, with everything above the
// level named by env MOE_CPU_ISA=portable|avx2|avx512|amx switched off (read
// once; "avx512" keeps AVX-512 and turns AMX off).
// The override can only lower the level, so every path can be tested on one
// machine; an unknown value is ignored.
const CpuFeatures& cpuFeatures();

enum class GemmIsa { kPortable, kAvx2, kAvx512 };

// The vector level of the fp8 GEMM's kernels, derived from cpuFeatures().
// AMX is not a level here (other kernels compare against kAvx512): it is an
// addition on top of kAvx512, reported by gemmUsesAmx().
GemmIsa gemmIsa();

// True when the fp8 GEMM runs its compute-bound shapes (enough rows of A) on
// AMX tiles: gemmIsa() is kAvx512 and AMX-BF16 is usable. Small M still
// streams through the AVX-512 kernels.
bool gemmUsesAmx();

// The fp8 GEMM's path: "amx", "avx512", "avx2" or "portable".
const char* gemmIsaName();

}  // namespace moe::cpu
