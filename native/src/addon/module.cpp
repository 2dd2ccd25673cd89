// The addon's module table. This directory is the only code that includes napi.h.
#include <napi.h>

#include "addon/cuda_bindings.h"
#include "addon/ep_bindings.h"
#include "addon/errors.h"
#include "addon/mapped_file_bindings.h"
#include "addon/moe_bindings.h"
#include "addon/op_bindings.h"
#include "addon/runtime_bindings.h"

namespace moe::addon {

namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(info.Env(), "setErrorClass(MoeError)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  setErrorClass(info[0].As<Napi::Function>(), info[1]);
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, Napi::Function::Callback> functions[] = {
      {"setErrorClass", SetErrorClass},
      {"quantizeActivations", QuantizeActivations},
      {"quantizeWeights", QuantizeWeights},
      {"dequantize", Dequantize},
      {"gemmFp8", GemmFp8},
      {"groupedGemmFp8", GroupedGemmFp8},
      {"route", Route},
      {"dispatchLayout", DispatchLayout},
      {"dispatch", Dispatch},
      {"swiglu", Swiglu},
      {"routerLogits", RouterLogits},
      {"combine", Combine},
      {"moeForward", MoeForward},
      {"moePrepareWeights", MoePrepareWeights},
      {"moePrepareWorkspace", MoePrepareWorkspace},
      {"moeCapture", MoeCapture},
      {"moeReplay", MoeReplay},
      {"moeCheckFlags", MoeCheckFlags},
      {"cudaLoad", CudaLoad},
      {"cudaAlloc", CudaAlloc},
      {"cudaFree", CudaFree},
      {"cudaCopyToDevice", CudaCopyToDevice},
      {"cudaCopyToHost", CudaCopyToHost},
      {"cudaTimerStart", CudaTimerStart},
      {"cudaTimerStop", CudaTimerStop},
      {"cudaFlushL2", CudaFlushL2},
      {"cudaCopyDeviceToDevice", CudaCopyDeviceToDevice},
      {"cudaSetDataChecks", CudaSetDataChecks},
      {"getNumThreads", GetNumThreads},
      {"setNumThreads", SetNumThreads},
      {"wakeThreads", WakeThreads},
      {"cpuInfo", CpuInfo},
      {"castFromF32", CastFromF32},
      {"adviseHugePages", AdviseHugePages},
      {"evictFromCaches", EvictFromCaches},
      {"mapFileRange", MapFileRange},
      {"measureFmaPeak", MeasureFmaPeak},
      {"measureMemoryBandwidth", MeasureMemoryBandwidth},
      {"measureBf16DotPeak", MeasureBf16DotPeak},
      {"measureMatrixPeak", MeasureMatrixPeak},
      {"epLoad", EpLoad},
      {"epInit", EpInit},
      {"epFinalize", EpFinalize},
      {"epCreateShard", EpCreateShard},
      {"epFailForward", EpFailForward},
      {"epAllgather", EpAllgather},
      {"epBarrier", EpBarrier},
      {"epShardStats", EpShardStats},
      {"epExchangeAb", EpExchangeAb},
      {"epNcclProbe", EpNcclProbe},
      {"epNcclInit", EpNcclInit},
      {"epNcclExchange", EpNcclExchange},
  };
  for (const auto& [name, callback] : functions) exports.Set(name, Napi::Function::New(env, callback, name));
  return exports;
}

}  // namespace moe::addon

// NODE_API_MODULE pastes the name into an identifier, so it must be unqualified.
static Napi::Object InitMoeKernels(Napi::Env env, Napi::Object exports) { return moe::addon::Init(env, exports); }

NODE_API_MODULE(moe_kernels, InitMoeKernels)
