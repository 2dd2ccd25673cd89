// The floating-point environment every CPU kernel runs in.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace moe::cpu {

// The kernels assume IEEE-754 default arithmetic: round to nearest even,
// subnormal inputs and results kept. A process may run with other MXCSR
// settings: a shared library linked with -ffast-math (GCC's crtfastmath.o)
// turns on flush-to-zero and denormals-are-zero when it is loaded, and
// threads created afterwards inherit them. Under DAZ the AVX2 fp8 decode,
// which turns fp8 subnormal codes into f32 subnormals, would read them as
// zeros: a silently wrong product. So each parallel region (thread_pool.cpp)
// sets the default control bits for its duration and restores the caller's
// afterwards; pool workers hold them for their lifetime.
class DefaultFloatEnvironment {
 public:
#if defined(__x86_64__) || defined(__i386__)
  DefaultFloatEnvironment() : saved_(_mm_getcsr()) {
    // The low 6 bits are sticky exception flags, not settings.
    if ((saved_ & ~kFlags) != kDefault) _mm_setcsr(kDefault | (saved_ & kFlags));
  }
  ~DefaultFloatEnvironment() {
    if ((saved_ & ~kFlags) != kDefault) _mm_setcsr(saved_);
  }

 private:
  static constexpr unsigned kDefault = 0x1F80;  // every exception masked, round to nearest, no FTZ/DAZ
  static constexpr unsigned kFlags = 0x3F;
  unsigned saved_;
#endif

 public:
  DefaultFloatEnvironment(const DefaultFloatEnvironment&) = delete;
  DefaultFloatEnvironment& operator=(const DefaultFloatEnvironment&) = delete;
};

}  // namespace moe::cpu
