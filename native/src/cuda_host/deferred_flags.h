// An op's end-of-op error flags without a host synchronization, for the
// Promise forms. The MoE ops (route, layout, dispatch, swiglu, combine) and
// quantize learn of bad input (an id out of range, NaN) only from a device
// flag word their kernels set. A ...Sync call reads it back at once; a
// Promise form must not hold the JS thread while the GPU works, so runCudaOp
// opens a DeferredFlags scope around the enqueue: the backend then enqueues
// only a copy of the word into a page-locked host slot, and the completion,
// once the stream has passed that copy, turns the slot into the op's Status.
#pragma once

#include <stdint.h>

#include "core/status.h"
#include "cuda_host/device_flags.h"

namespace moe::cuda {

// What the backend left for the completion to check.
struct FlagCheck {
  bool pending = false;
  FlagOp kind = FlagOp::kRoute;
  const char* op = "";  // a string literal: names the quantizer in a kQuantize message
  int slot = -1;

  // Once the copy has completed: the op's Status; frees the slot.
  Status finish();
};

class DeferredFlags {
 public:
  // Opens the scope on this thread (the JS thread that enqueues the op).
  explicit DeferredFlags(FlagCheck* sink);
  ~DeferredFlags();
  DeferredFlags(const DeferredFlags&) = delete;
  DeferredFlags& operator=(const DeferredFlags&) = delete;

  // The open scope's check to fill, or null: read the flags at once.
  static FlagCheck* current();

  // A page-locked host word for the copy and its index, or nullptr when none
  // can be had (all in flight, or pinning failed): then read synchronously.
  static int32_t* acquireSlot(int* index);
};

}  // namespace moe::cuda
