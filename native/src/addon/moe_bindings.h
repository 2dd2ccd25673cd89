#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value MoeForward(const Napi::CallbackInfo& info);
Napi::Value MoePrepareWeights(const Napi::CallbackInfo& info);
Napi::Value MoePrepareWorkspace(const Napi::CallbackInfo& info);
Napi::Value MoeCapture(const Napi::CallbackInfo& info);
Napi::Value MoeReplay(const Napi::CallbackInfo& info);
Napi::Value MoeCheckFlags(const Napi::CallbackInfo& info);
Napi::Value WakeThreads(const Napi::CallbackInfo& info);

}  // namespace moe::addon
