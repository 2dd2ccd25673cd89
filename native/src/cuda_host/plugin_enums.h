// The addon's enums as the plug-in's C ABI spells them (MOE_CUDA_DTYPE_*,
// MOE_CUDA_SCALE_* in moe_cuda_api.h): one mapping for the per-op calls
// (cuda_backend.cpp).
#pragma once

#include <stdint.h>

#include "core/ops.h"
#include "moe_cuda_api.h"

namespace moe::cuda {

inline int32_t pluginDtype(DType dtype) {
  switch (dtype) {
    case DType::kF32: return MOE_CUDA_DTYPE_F32;
    case DType::kBF16: return MOE_CUDA_DTYPE_BF16;
    case DType::kFP8E4M3: return MOE_CUDA_DTYPE_FP8_E4M3;
    case DType::kI32: return MOE_CUDA_DTYPE_I32;
  }
  return MOE_CUDA_DTYPE_F32;
}

inline int32_t pluginScaleFormat(ScaleFormat format) {
  return format == ScaleFormat::kUE8M0 ? MOE_CUDA_SCALE_UE8M0 : MOE_CUDA_SCALE_F32;
}

}  // namespace moe::cuda
