#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value QuantizeActivations(const Napi::CallbackInfo& info);
Napi::Value QuantizeWeights(const Napi::CallbackInfo& info);
Napi::Value Dequantize(const Napi::CallbackInfo& info);
Napi::Value GemmFp8(const Napi::CallbackInfo& info);

}  // namespace moe::addon
