// Where a single op's device verdict goes (outside a layer forward, which
// uses ExecContext::flagWords): the MoE ops and quantize learn of bad input
// (an id out of range, NaN) only from a flag word their kernels set. Each op
// in flight gets its own slot, a device word and the page-locked host word it
// is copied back into behind the op, so that ops enqueued by several threads
// at once never read each other's bits, and a Promise form can read its
// verdict in its completion without any thread waiting for the GPU.
#pragma once

#include <stdint.h>

namespace moe::cuda {

struct FlagSlot {
  int32_t* device = nullptr;  // [1] i32 on the device
  int32_t* host = nullptr;    // [1] i32, page-locked where pinning worked
  int index = -1;
};

// false when every slot is in flight (1024) or the words could not be
// allocated: the caller then uses a word of its own and waits for it.
bool acquireFlagSlot(FlagSlot* slot);
void releaseFlagSlot(const FlagSlot& slot);

}  // namespace moe::cuda
