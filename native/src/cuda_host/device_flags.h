// The CUDA kernels' error flags (MOE_CUDA_FLAG_* in moe_cuda_api.h) turned
// into the Status the CPU backend returns for the same input: what the CPU
// checks before it runs (an id out of range, NaN in x, ...) the GPU learns
// only after its kernels ran.
#pragma once

#include <stdint.h>

#include <string>

#include "core/status.h"
#include "moe_cuda_api.h"

namespace moe::cuda {

enum class FlagOp { kRoute, kLayout, kDispatch, kSwiglu, kCombine, kQuantize };

// `quantizeOp` names the quantizer in kQuantize's message (activations or weights).
inline Status statusFromFlags(FlagOp op, int32_t bits, const std::string& prefix = "",
                              const char* quantizeOp = "quantizeActivations") {
  if (bits == 0) return Status::ok();
  const auto say = [&](Code code, const char* text) { return Status(code, prefix + text); };
  switch (op) {
    case FlagOp::kRoute:
      return say(Code::kNonFinite, "route: bias contains NaN or infinity");
    case FlagOp::kLayout:
      if (bits & MOE_CUDA_FLAG_BAD_INDEX) return say(Code::kRange, "dispatchLayout: ids holds a value out of range [-1, E)");
      if (bits & MOE_CUDA_FLAG_OVER_MAX_ROWS) return say(Code::kRange, "dispatchLayout: an expert has more rows than maxRowsPerExpert");
      if (bits & MOE_CUDA_FLAG_OVER_I32) return say(Code::kRange, "dispatchLayout: the layout needs more than 2^31 - 1 rows");
      return say(Code::kShape, "dispatchLayout: rowToken and groupIndex hold fewer rows than the layout needs (T * k + E * (align - 1) always suffices)");
    case FlagOp::kDispatch:
      if (bits & MOE_CUDA_FLAG_BAD_INDEX) return say(Code::kRange, "dispatch: rowToken holds a value out of range [-1, T)");
      return say(Code::kNonFinite, "dispatch: x (a dispatched row) contains NaN or infinity");
    case FlagOp::kSwiglu:
      return say(Code::kNonFinite, "swiglu: h contains NaN or infinity, or silu(gate) * up overflows f32");
    case FlagOp::kCombine:
      if (bits & MOE_CUDA_FLAG_BAD_INDEX) return say(Code::kRange, "combine: slotRow holds a value out of range [-1, R)");
      return say(Code::kNonFinite, "combine: weights hold a value that is not finite");
    case FlagOp::kQuantize:
      return Status(Code::kNonFinite, prefix + quantizeOp + ": x contains NaN or infinity");
  }
  return say(Code::kInternal, "unknown device error flag");
}

}  // namespace moe::cuda
