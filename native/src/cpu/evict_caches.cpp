#include "cpu/evict_caches.h"

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe::cpu {

#if defined(__x86_64__)
namespace {

constexpr size_t kLine = 64;

__attribute__((target("clflushopt"))) void flushOpt(const char* begin, const char* end) {
  for (const char* p = begin; p < end; p += kLine) _mm_clflushopt(const_cast<char*>(p));
}

void flush(const char* begin, const char* end) {
  for (const char* p = begin; p < end; p += kLine) _mm_clflush(p);
}

}  // namespace

bool evictFromCaches(const void* data, size_t bytes) {
  if (bytes == 0) return true;
  const auto first = reinterpret_cast<uintptr_t>(data) & ~uintptr_t{kLine - 1};
  const char* begin = reinterpret_cast<const char*>(first);
  const char* end = static_cast<const char*>(data) + bytes;
  if (__builtin_cpu_supports("clflushopt")) {
    flushOpt(begin, end);
  } else {
    flush(begin, end);
  }
  _mm_mfence();  // the flushes are done before the timed run starts
  return true;
}

#else

bool evictFromCaches(const void*, size_t) { return false; }

#endif

}  // namespace moe::cpu
