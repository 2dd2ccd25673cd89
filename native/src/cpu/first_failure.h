// The first (lowest) row at which a parallel kernel found a problem, whatever
// the order in which its threads ran: errors name the same row every time.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>

namespace moe::cpu {

class FirstFailure {
 public:
  void report(int64_t row) {
    int64_t seen = row_.load(std::memory_order_relaxed);
    while (row < seen && !row_.compare_exchange_weak(seen, row, std::memory_order_relaxed)) {
    }
  }
  bool any() const { return row() != kNone; }
  int64_t row() const { return row_.load(std::memory_order_relaxed); }

 private:
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> row_{kNone};
};

}  // namespace moe::cpu
