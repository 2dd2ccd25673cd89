// Per-thread scratch memory for kernels called once per expert (no page
// faults and no allocator traffic per call).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>

#include "cpu/huge_pages.h"

namespace moe::cpu {

// 64-byte aligned scratch owned by the calling thread, grown on demand and
// kept for the thread's next call (no page faults per call: the grouped GEMM
// calls gemmFp8 once per expert). Requests above kKeepBytes are freed after
// the call instead. A large buffer is backed by 2 MiB pages where the kernel
// agrees: a fresh 32 MiB one (A of a 1024 x 16384 GEMM, packed to bf16) took
// 8,000 page faults of 4 KiB per call, ~10% of that GEMM's time here.
class ThreadScratch {
 public:
  static constexpr size_t kKeepBytes = size_t{32} << 20;
  ThreadScratch() = default;
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;
  ~ThreadScratch() { std::free(data_); }

  // Null when out of memory. The previous contents are not kept.
  void* get(size_t bytes) {
    bytes = std::max<size_t>(bytes, 64);
    if (bytes > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      void* ptr = nullptr;
      if (posix_memalign(&ptr, 64, bytes) != 0) return nullptr;
      adviseHugePages(ptr, bytes);
      data_ = ptr;
      capacity_ = bytes;
    }
    return data_;
  }
  // Drops a buffer too large to keep.
  void trim() {
    if (capacity_ > kKeepBytes) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
    }
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace moe::cpu
