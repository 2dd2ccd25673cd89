#include "cuda_host/deferred_flags.h"

#include <mutex>
#include <vector>

#include "cuda_host/plugin.h"

namespace moe::cuda {

namespace {

thread_local FlagCheck* tOpenScope = nullptr;

// One page of flag words, page-locked once (cudaHostRegister) so that the
// device-to-host copy is truly asynchronous. 1024 Promise-form ops may be in
// flight at once; beyond that an op reads its flags synchronously. Shared by
// every JS thread (worker_threads) that uses the addon, hence the mutex.
constexpr int kSlots = 1024;
alignas(4096) int32_t gSlots[kSlots];

struct SlotPool {
  std::mutex mu;
  bool tried = false;
  bool pinned = false;
  std::vector<int> free;
};

SlotPool& pool() {
  static SlotPool p;
  return p;
}

}  // namespace

Status FlagCheck::finish() {
  if (!pending) return Status::ok();
  pending = false;
  const int32_t bits = *static_cast<volatile int32_t*>(&gSlots[slot]);
  SlotPool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.free.push_back(slot);
  }
  slot = -1;
  return statusFromFlags(kind, bits, "", op);
}

DeferredFlags::DeferredFlags(FlagCheck* sink) { tOpenScope = sink; }
DeferredFlags::~DeferredFlags() { tOpenScope = nullptr; }

FlagCheck* DeferredFlags::current() { return tOpenScope; }

int32_t* DeferredFlags::acquireSlot(int* index) {
  SlotPool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  if (!p.tried) {
    p.tried = true;
    char err[512] = {0};
    p.pinned = Plugin::instance().api().hostRegister(gSlots, sizeof gSlots, err, sizeof err) == MOE_CUDA_OK;
    for (int i = kSlots - 1; p.pinned && i >= 0; --i) p.free.push_back(i);
  }
  if (p.free.empty()) return nullptr;
  *index = p.free.back();
  p.free.pop_back();
  return &gSlots[*index];
}

}  // namespace moe::cuda
