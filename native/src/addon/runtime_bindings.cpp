// Entry points that are not tensor operations: threads, machine facts,
// bulk number-format conversion, and the ceilings the benchmarks measure.
#include "addon/runtime_bindings.h"

#include "addon/js_tensor.h"

#include <algorithm>
#include <string>

#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/evict_caches.h"
#include "cpu/gemm_fp8.h"
#include "cpu/huge_pages.h"
#include "cpu/machine_peaks.h"
#include "cpu/thread_pool.h"

namespace moe::addon {

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::ThreadPool::instance().numThreads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  // lib/ validated the count; clamp anyway so a direct caller cannot ask for 0.
  const int n = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  cpu::ThreadPool::instance().setNumThreads(std::clamp(n, 1, 1024));
  return info.Env().Undefined();
}

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::CpuFeatures& features = cpu::cpuFeatures();
  Napi::Object result = Napi::Object::New(env);
  result.Set("gemmIsa", cpu::gemmIsaName());
  result.Set("threads", cpu::ThreadPool::instance().numThreads());
  result.Set("spinMicros", cpu::ThreadPool::instance().spinMicros());
  result.Set("wakeSpinMicros", cpu::ThreadPool::instance().wakeWatchMicros());
  Napi::Object flags = Napi::Object::New(env);
  flags.Set("avx2", features.avx2);
  flags.Set("fma", features.fma);
  flags.Set("f16c", features.f16c);
  flags.Set("avx512f", features.avx512f);
  flags.Set("avx512bw", features.avx512bw);
  flags.Set("avx512bf16", features.avx512bf16);
  flags.Set("amx", cpu::gemmUsesAmx());
  result.Set("features", flags);
  return result;
}

// castFromF32(src: Float32Array, dst: Uint8Array | Uint16Array, dtype: 'fp8_e4m3' | 'bf16')
// lib/ checks lengths and types; the checks here only keep a direct caller from crashing.
Napi::Value CastFromF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsString()) {
    Napi::TypeError::New(env, "castFromF32(src, dst, dtype)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  HostArray src, dst;
  const bool toFp8 = info[2].As<Napi::String>().Utf8Value() == "fp8_e4m3";
  const napi_typedarray_type dstType = toFp8 ? napi_uint8_array : napi_uint16_array;
  if (!hostArrayFromJs(env, info[0], "castFromF32: src", &src).isOk() || !hostArrayFromJs(env, info[1], "castFromF32: dst", &dst).isOk() ||
      src.type != napi_float32_array || dst.type != dstType || src.length != dst.length) {
    Napi::TypeError::New(env, "castFromF32: mismatched arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const float* in = static_cast<const float*>(src.data);
  uint8_t* out = static_cast<uint8_t*>(dst.data);
  const int64_t n = static_cast<int64_t>(src.length);
  constexpr int64_t kChunk = 1 << 16;
  cpu::ThreadPool::instance().parallelFor(ceilDiv(n, kChunk), [&](int64_t task, int) {
    const int64_t end = std::min(n, (task + 1) * kChunk);
    for (int64_t i = task * kChunk; i < end; ++i) {
      if (toFp8) {
        out[i] = fp8FromFloat(in[i]);
      } else {
        reinterpret_cast<uint16_t*>(out)[i] = bf16FromFloat(in[i]);
      }
    }
  });
  return env.Undefined();
}

namespace {

// `name`(array: TypedArray) -> boolean: applies fn(data, bytes) to the array's
// memory; false for a detached buffer (fn is not called), TypeError for
// anything but a typed array.
template <class Fn>
Napi::Value onArrayMemory(const Napi::CallbackInfo& info, const char* name, Fn fn) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, std::string(name) + "(array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  HostArray array;
  if (!hostArrayFromJs(env, info[0], name, &array).isOk()) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, fn(array.data, info[0].As<Napi::TypedArray>().ByteLength()));
}

}  // namespace

// adviseHugePages(array) -> boolean: see cpu/huge_pages.h.
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  return onArrayMemory(info, "adviseHugePages", cpu::adviseHugePages);
}

// evictFromCaches(array) -> boolean: see cpu/evict_caches.h.
Napi::Value EvictFromCaches(const Napi::CallbackInfo& info) {
  return onArrayMemory(info, "evictFromCaches", cpu::evictFromCaches);
}

Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  const double seconds = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), cpu::measureFmaPeakGflops(std::clamp(seconds, 0.01, 10.0)));
}

Napi::Value MeasureBf16DotPeak(const Napi::CallbackInfo& info) {
  const double seconds = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), cpu::measureBf16DotPeakGflops(std::clamp(seconds, 0.01, 10.0)));
}

Napi::Value MeasureMatrixPeak(const Napi::CallbackInfo& info) {
  const double seconds = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), cpu::measureMatrixPeakGflops(std::clamp(seconds, 0.01, 10.0)));
}

Napi::Value MeasureMemoryBandwidth(const Napi::CallbackInfo& info) {
  const double seconds = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), cpu::measureMemoryBandwidthGBs(std::clamp(seconds, 0.01, 10.0)));
}

}  // namespace moe::addon
