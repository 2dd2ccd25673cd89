#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value CudaLoad(const Napi::CallbackInfo& info);
Napi::Value CudaAlloc(const Napi::CallbackInfo& info);
Napi::Value CudaFree(const Napi::CallbackInfo& info);
Napi::Value CudaCopyToDevice(const Napi::CallbackInfo& info);
Napi::Value CudaCopyToHost(const Napi::CallbackInfo& info);
Napi::Value CudaTimerStart(const Napi::CallbackInfo& info);
Napi::Value CudaTimerStop(const Napi::CallbackInfo& info);
Napi::Value CudaFlushL2(const Napi::CallbackInfo& info);
Napi::Value CudaCopyDeviceToDevice(const Napi::CallbackInfo& info);
Napi::Value CudaSetDataChecks(const Napi::CallbackInfo& info);

}  // namespace moe::addon
