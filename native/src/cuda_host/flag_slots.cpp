#include "cuda_host/flag_slots.h"

#include <mutex>
#include <vector>

#include "cuda_host/plugin.h"

namespace moe::cuda {

namespace {

// One page of host words, page-locked once (cudaHostRegister) so that the
// device-to-host copy is truly asynchronous, and as many device words. Shared
// by every JS thread (worker_threads) that uses the addon, hence the mutex.
constexpr int kSlots = 1024;
alignas(4096) int32_t gHostWords[kSlots];

struct SlotPool {
  std::mutex mu;
  bool tried = false;
  int32_t* deviceWords = nullptr;  // [kSlots] i32 on the device, never freed
  std::vector<int> free;
};

SlotPool& pool() {
  static SlotPool p;
  return p;
}

}  // namespace

bool acquireFlagSlot(FlagSlot* slot) {
  SlotPool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  if (!p.tried) {
    p.tried = true;
    const PluginApi& api = Plugin::instance().api();
    char err[512] = {0};
    void* words = nullptr;
    if (api.alloc(sizeof gHostWords, &words, err, sizeof err) == MOE_CUDA_OK) {
      p.deviceWords = static_cast<int32_t*>(words);
      // Unpinned host words still work: the copy back then waits for the op.
      (void)api.host_register(gHostWords, sizeof gHostWords, err, sizeof err);
      for (int i = kSlots - 1; i >= 0; --i) p.free.push_back(i);
    }
  }
  if (p.free.empty()) return false;
  slot->index = p.free.back();
  p.free.pop_back();
  slot->device = p.deviceWords + slot->index;
  slot->host = &gHostWords[slot->index];
  return true;
}

void releaseFlagSlot(const FlagSlot& slot) {
  if (slot.index < 0) return;
  SlotPool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.free.push_back(slot.index);
}

}  // namespace moe::cuda
