// How one call into a backend runs: synchronously or as a Promise, and where
// the errors go that a device learns only once its kernels ran (an id out of
// range, NaN in x). Passed explicitly to every Backend call, so nothing about
// a call's behaviour hides in thread-local state.
#pragma once

#include <memory>

#include "core/status.h"
#include "core/tensor.h"

namespace moe {

// A verdict a queued backend could not give before its work completed (the
// op's device error flag, copied back behind it). finish() is called once,
// after the device has passed the work; destroying it unfinished releases
// what it holds.
class DeferredCheck {
 public:
  virtual ~DeferredCheck() = default;
  virtual Status finish() = 0;
};

// The words of ExecContext::flagWords, one per kind of device-side check
// (several ops of one kind OR into the same word).
enum FlagWord { kFlagRoute, kFlagLayout, kFlagDispatch, kFlagSwiglu, kFlagCombine, kFlagQuantize, kNumFlagWords };
constexpr int kFlagWordsAllocated = 8;  // lib/'s workspace holds [8] i32

struct ExecContext {
  // The Promise form: nothing may wait for a queued device; the caller learns
  // of completion from Backend::enqueueCompletion and then runs `deferred`.
  bool async = false;

  // Set by the layer forward on a queued backend: every op ORs its device
  // verdict into word FlagWord of this [kFlagWordsAllocated] i32 device tensor
  // (zeroed before the first op) and nobody reads it inside the call; the
  // caller decodes a host copy with Backend::flagsStatus once the work has
  // completed. Unset: each op reports its own verdict (sync: before it
  // returns; async: through `deferred`).
  TensorView flagWords;

  // Left by an async op on a queued backend: its verdict, to finish once the
  // device has passed the op.
  std::unique_ptr<DeferredCheck> deferred;

  static ExecContext sync() { return ExecContext{}; }
};

}  // namespace moe
