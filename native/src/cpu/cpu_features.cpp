#include "cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace moe::cpu {

namespace {

CpuFeatures detectHardware() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  // libgcc's __builtin_cpu_supports also checks XCR0, i.e. that the OS saves
  // the AVX / AVX-512 register state, not only the CPUID bits.
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
#endif
  return f;
}

CpuFeatures applyOverride(CpuFeatures f) {
  const char* env = std::getenv("MOE_CPU_ISA");
  if (env == nullptr) return f;
  const bool portable = std::strcmp(env, "portable") == 0;
  const bool avx2 = std::strcmp(env, "avx2") == 0;
  if (portable || avx2) f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = false;
  if (portable) f.avx2 = f.fma = f.f16c = false;
  return f;
}

}  // namespace

const CpuFeatures& hardwareCpuFeatures() {
  static const CpuFeatures features = detectHardware();
  return features;
}

const CpuFeatures& cpuFeatures() {
  static const CpuFeatures features = applyOverride(hardwareCpuFeatures());
  return features;
}

GemmIsa gemmIsa() {
  const CpuFeatures& f = cpuFeatures();
  const bool avx2 = f.avx2 && f.fma && f.f16c;  // F16C: the fp8 decode goes through f16
  if (avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) return GemmIsa::kAvx512;
  if (avx2) return GemmIsa::kAvx2;
  return GemmIsa::kPortable;
}

const char* gemmIsaName() {
  switch (gemmIsa()) {
    case GemmIsa::kAvx512: return "avx512";
    case GemmIsa::kAvx2: return "avx2";
    case GemmIsa::kPortable: break;
  }
  return "portable";
}

}  // namespace moe::cpu
