#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value QuantizeActivations(const Napi::CallbackInfo& info);
Napi::Value QuantizeWeights(const Napi::CallbackInfo& info);
Napi::Value Dequantize(const Napi::CallbackInfo& info);
Napi::Value GemmFp8(const Napi::CallbackInfo& info);
Napi::Value GroupedGemmFp8(const Napi::CallbackInfo& info);  // both layouts
Napi::Value Route(const Napi::CallbackInfo& info);
Napi::Value DispatchLayout(const Napi::CallbackInfo& info);
Napi::Value Dispatch(const Napi::CallbackInfo& info);
Napi::Value Swiglu(const Napi::CallbackInfo& info);
Napi::Value RouterLogits(const Napi::CallbackInfo& info);
Napi::Value Combine(const Napi::CallbackInfo& info);

}  // namespace moe::addon
