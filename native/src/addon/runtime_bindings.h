#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value CpuInfo(const Napi::CallbackInfo& info);
Napi::Value CastFromF32(const Napi::CallbackInfo& info);
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info);
Napi::Value EvictFromCaches(const Napi::CallbackInfo& info);
Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info);
Napi::Value MeasureMemoryBandwidth(const Napi::CallbackInfo& info);
Napi::Value MeasureBf16DotPeak(const Napi::CallbackInfo& info);
Napi::Value MeasureMatrixPeak(const Napi::CallbackInfo& info);

}  // namespace moe::addon
