// A test hook that corrupts what one rank received, after the transport
// delivered it and before the layer reads it: the receiving side's checks
// (counts, headers, expert ids, weights, scales) are exercised on real
// exchanges between processes. Inert unless the environment names a fault:
//
//   MOE_EP_TEST_CORRUPT=<rank>:<forward>:<step>:<offset>:<hex bytes>
//
// <step> is `counts` (the counts all-to-all), `dispatch` (the forward's first
// row exchange) or `combine` (its second); <forward> counts a communicator's
// forwards from 1; <offset> is a byte offset into what the step received
// (counts: [size, 32-byte records]; dispatch: the records in source order;
// combine: the returned rows). Bytes past what arrived are left alone. The
// hook only overwrites received bytes: it never skips or loosens a check.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace moe::ep {

class FaultInjection {
 public:
  enum class Step { kNone, kCounts, kDispatch, kCombine };

  // The fault in MOE_EP_TEST_CORRUPT for `rank`, or none (also when malformed).
  static FaultInjection fromEnvironment(int rank) {
    FaultInjection f;
    const char* spec = std::getenv("MOE_EP_TEST_CORRUPT");
    if (spec == nullptr || spec[0] == 0) return f;
    char step[16] = {0}, hex[257] = {0};
    int targetRank = -1;
    unsigned long long forward = 0, offset = 0;
    if (std::sscanf(spec, "%d:%llu:%15[a-z]:%llu:%256[0-9a-fA-F]", &targetRank, &forward, step, &offset, hex) != 5) return f;
    if (targetRank != rank || std::strlen(hex) % 2 != 0) return f;
    const std::string s(step);
    f.step_ = s == "counts" ? Step::kCounts : s == "dispatch" ? Step::kDispatch : s == "combine" ? Step::kCombine : Step::kNone;
    f.forward_ = forward;
    f.offset_ = static_cast<size_t>(offset);
    for (size_t i = 0; hex[2 * i]; ++i) f.bytes_.push_back(static_cast<uint8_t>(std::strtoul(std::string(hex + 2 * i, 2).c_str(), nullptr, 16)));
    return f;
  }

  bool armed() const { return step_ != Step::kNone; }

  // Called after a successful receive of `received` bytes at `recv` in
  // forward `forward`. Row exchanges are numbered within a forward
  // (dispatch, then combine).
  void afterReceive(Step kind, uint64_t forward, void* recv, size_t received) {
    if (!armed()) return;
    Step step = kind;
    if (kind != Step::kCounts) {
      if (forward != rowForward_) rowForward_ = forward, rowExchanges_ = 0;
      step = rowExchanges_++ == 0 ? Step::kDispatch : Step::kCombine;
    }
    if (step != step_ || forward != forward_ || offset_ + bytes_.size() > received) return;
    std::memcpy(static_cast<uint8_t*>(recv) + offset_, bytes_.data(), bytes_.size());
  }

 private:
  Step step_ = Step::kNone;
  uint64_t forward_ = 0;
  size_t offset_ = 0;
  std::vector<uint8_t> bytes_;
  uint64_t rowForward_ = 0;
  int rowExchanges_ = 0;
};

}  // namespace moe::ep
