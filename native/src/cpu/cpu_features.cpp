#include "cpu/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace moe::cpu {

namespace {

// AMX: CPUID.(7,0):EDX bit 24 (AMX-TILE) and bit 22 (AMX-BF16); the OS must
// enable the tile state in XCR0 (bits 17 XTILECFG, 18 XTILEDATA); and Linux
// (5.16+) hands the tile data state out per process on request only
// (ARCH_REQ_XCOMP_PERM), else the first tile instruction faults (SIGILL).
// The permission covers every thread of the process, present and future.
bool detectAmx() {
#if defined(__linux__) && defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid(1, eax, ebx, ecx, edx);
  if ((ecx & (1u << 27)) == 0) return false;  // OSXSAVE: xgetbv is usable
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool tile = (edx & (1u << 24)) != 0, bf16 = (edx & (1u << 22)) != 0;
  if (!tile || !bf16) return false;
  uint32_t xcr0Lo = 0, xcr0Hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0Lo), "=d"(xcr0Hi) : "c"(0));
  const uint32_t tileState = (1u << 17) | (1u << 18);
  if ((xcr0Lo & tileState) != tileState) return false;
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

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
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
  // The AMX kernels also use AVX512-VBMI byte permutes (every AMX CPU has it).
  f.amxTile = f.amxBf16 = detectAmx() && __builtin_cpu_supports("avx512vbmi");
#endif
  return f;
}

CpuFeatures applyOverride(CpuFeatures f) {
  const char* env = std::getenv("MOE_CPU_ISA");
  if (env == nullptr) return f;
  const bool portable = std::strcmp(env, "portable") == 0;
  const bool avx2 = std::strcmp(env, "avx2") == 0;
  const bool avx512 = std::strcmp(env, "avx512") == 0;
  const bool avx512bf16 = std::strcmp(env, "avx512bf16") == 0;
  if (portable || avx2 || avx512 || avx512bf16) f.amxTile = f.amxBf16 = false;
  if (portable || avx2 || avx512) f.avx512bf16 = false;
  if (portable || avx2) f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vbmi = false;
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

bool gemmUsesAmx() {
  const CpuFeatures& f = cpuFeatures();
  return gemmIsa() == GemmIsa::kAvx512 && f.amxTile && f.amxBf16;
}

bool gemmUsesAvx512Bf16() {
  const CpuFeatures& f = cpuFeatures();
  return gemmIsa() == GemmIsa::kAvx512 && f.avx512bf16 && f.avx512vbmi;
}

const char* gemmIsaName() {
  if (gemmUsesAmx()) return "amx";
  if (gemmUsesAvx512Bf16()) return "avx512bf16";
  switch (gemmIsa()) {
    case GemmIsa::kAvx512: return "avx512";
    case GemmIsa::kAvx2: return "avx2";
    case GemmIsa::kPortable: break;
  }
  return "portable";
}

}  // namespace moe::cpu
