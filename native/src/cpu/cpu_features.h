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
};

// What the hardware (and OS) supports, ignoring MOE_CPU_ISA.
const CpuFeatures& hardwareCpuFeatures();

// The features the kernels may use: the hardware's, with everything above the
// level named by env MOE_CPU_ISA=portable|avx2|avx512 switched off (read once).
// The override can only lower the level, so every path can be tested on one
// machine; an unknown value is ignored.
const CpuFeatures& cpuFeatures();

enum class GemmIsa { kPortable, kAvx2, kAvx512 };

// The code path the fp8 GEMM uses, derived from cpuFeatures().
GemmIsa gemmIsa();
const char* gemmIsaName();  // "avx512", "avx2" or "portable"

}  // namespace moe::cpu
