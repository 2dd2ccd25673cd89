// The GPU's JS surface: loading and probing its backend, and the device
// memory behind lib/'s CUDA tensors, all through the Backend interface. Device memory is an External whose
// finalizer frees it (and reports it to V8 as external memory, so that the
// garbage collector knows what a small JS object is holding on to).
#include "addon/cuda_bindings.h"

#include <string>
#include <vector>

#include "addon/errors.h"
#include "addon/js_tensor.h"
#include "core/backend.h"

namespace moe::addon {

namespace {

Backend& gpu() { return backendFor(Device::kCuda); }

Napi::Value throwStatus(Napi::Env env, const Status& status) {
  toJsError(env, status).ThrowAsJavaScriptException();
  return env.Undefined();
}

void freeDeviceBuffer(Napi::Env env, DeviceBuffer* buffer) {
  if (buffer->ptr != nullptr) {
    (void)gpu().free(buffer->ptr);  // a failure here has nobody to report to
    Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(buffer->bytes));
    buffer->ptr = nullptr;
  }
}

Status deviceBufferArg(const Napi::Value& value, DeviceBuffer** buffer) {
  if (!value.IsExternal()) return Status(Code::kDtype, "expected a CUDA device handle");
  *buffer = value.As<Napi::External<DeviceBuffer>>().Data();
  if ((*buffer)->ptr == nullptr) return Status(Code::kDetached, "the CUDA tensor was disposed");
  return Status::ok();
}

// (handle, typedArray[, byteOffset]) for the copies: the host array's bytes
// go to / come from the device buffer at byteOffset (default 0).
Status copyArgs(const Napi::CallbackInfo& info, DeviceBuffer** buffer, void** host, size_t* bytes, size_t* offset) {
  MOE_RETURN_IF_ERROR(gpu().expectAvailable("copy"));
  if (info.Length() < 2 || !info[1].IsTypedArray()) return Status(Code::kDtype, "copy: expected (handle, typedArray)");
  MOE_RETURN_IF_ERROR(deviceBufferArg(info[0], buffer));
  HostArray array;
  MOE_RETURN_IF_ERROR(hostArrayFromJs(info.Env(), info[1], "copy: the host array", &array));
  *host = array.data;
  *bytes = info[1].As<Napi::TypedArray>().ByteLength();
  *offset = 0;
  if (info.Length() > 2 && info[2].IsNumber()) {
    const double o = info[2].As<Napi::Number>().DoubleValue();
    if (!(o >= 0) || o != static_cast<double>(static_cast<size_t>(o))) return Status(Code::kRange, "copy: byteOffset must be a non-negative integer");
    *offset = static_cast<size_t>(o);
  }
  if (*offset > (*buffer)->bytes || *bytes > (*buffer)->bytes - *offset) {
    return Status(Code::kShape, "copy: the host array does not fit the device buffer at that offset");
  }
  return Status::ok();
}

}  // namespace

// cudaLoad(candidates: string[]) -> { available, reason, path, device? }
Napi::Value CudaLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<std::string> candidates = stringsFromJs(info[0]);
  Backend& backend = gpu();
  backend.load(candidates);
  const DeviceInfo d = backend.deviceInfo();
  Napi::Object result = Napi::Object::New(env);
  result.Set("available", d.available);
  result.Set("reason", d.reason);
  if (!d.path.empty()) result.Set("path", d.path);
  if (d.hasDevice) {
    Napi::Object device = Napi::Object::New(env);
    device.Set("name", d.name);
    device.Set("computeCapability", std::to_string(d.smMajor) + "." + std::to_string(d.smMinor));
    device.Set("multiprocessors", d.multiprocessors);
    device.Set("memoryBytes", d.memoryBytes);
    device.Set("driverVersion", d.driverVersion);
    device.Set("runtimeVersion", d.runtimeVersion);
    device.Set("kernels", d.kernels);
    result.Set("device", device);
  }
  return result;
}

// cudaAlloc(bytes) -> handle (External); freed by GC or cudaFree(handle).
Napi::Value CudaAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Status status = gpu().expectAvailable("cudaAlloc");
  if (!status.isOk()) return throwStatus(env, status);
  const double requested = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(requested >= 0) || requested > 9.0e15) return throwStatus(env, Status(Code::kRange, "cudaAlloc: bad byte count"));
  auto* buffer = new DeviceBuffer{nullptr, static_cast<size_t>(requested)};
  // A zero-byte tensor still gets a distinct allocation, so that "disposed" stays observable.
  status = gpu().alloc(buffer->bytes ? buffer->bytes : 1, &buffer->ptr);
  if (!status.isOk()) {
    delete buffer;
    return throwStatus(env, status);
  }
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(buffer->bytes));
  return Napi::External<DeviceBuffer>::New(env, buffer, [](Napi::Env e, DeviceBuffer* b) {
    freeDeviceBuffer(e, b);
    delete b;
  });
}

Napi::Value CudaFree(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsExternal()) freeDeviceBuffer(info.Env(), info[0].As<Napi::External<DeviceBuffer>>().Data());
  return info.Env().Undefined();
}

namespace {
// A synchronous copy between a host typed array and a device buffer: the host
// array may be collected or changed as soon as the call returns.
Napi::Value copySync(const Napi::CallbackInfo& info, bool toDevice) {
  DeviceBuffer* buffer = nullptr;
  void* host = nullptr;
  size_t bytes = 0, offset = 0;
  const char* what = toDevice ? "to('cuda')" : "to('cpu')";
  Status status = copyArgs(info, &buffer, &host, &bytes, &offset);
  Backend& backend = gpu();
  if (status.isOk()) {
    void* device = static_cast<uint8_t*>(buffer->ptr) + offset;
    status = toDevice ? backend.copyToDevice(device, host, bytes) : backend.copyToHost(host, device, bytes);
  }
  if (status.isOk()) status = backend.synchronize();
  if (!status.isOk() && status.message().rfind(what, 0) != 0) status = Status(status.code(), std::string(what) + ": " + status.message());
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}
}  // namespace

Napi::Value CudaCopyToDevice(const Napi::CallbackInfo& info) { return copySync(info, true); }
Napi::Value CudaCopyToHost(const Napi::CallbackInfo& info) { return copySync(info, false); }

// Timing for benchmarks: cudaTimerStart() records an event on the device's
// queue; cudaTimerStop() records another, waits for it and returns the GPU
// time between the two in ms. cudaFlushL2() overwrites the L2 so that the next
// kernel starts cold.
Napi::Value CudaTimerStart(const Napi::CallbackInfo& info) {
  const Status status = gpu().startTimer();
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}

Napi::Value CudaTimerStop(const Napi::CallbackInfo& info) {
  float ms = 0;
  const Status status = gpu().stopTimer(&ms);
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return Napi::Number::New(info.Env(), ms);
}

// cudaCopyDeviceToDevice(dst, src, bytes): enqueued only (the benchmark's HBM probe times it with events).
Napi::Value CudaCopyDeviceToDevice(const Napi::CallbackInfo& info) {
  DeviceBuffer* dst = nullptr;
  DeviceBuffer* src = nullptr;
  Status status = gpu().expectAvailable("cudaCopyDeviceToDevice");
  if (status.isOk() && info.Length() >= 3) status = deviceBufferArg(info[0], &dst);
  if (status.isOk()) status = deviceBufferArg(info[1], &src);
  const double bytes = info.Length() >= 3 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : -1;
  if (status.isOk() && (!(bytes >= 0) || bytes > static_cast<double>(dst->bytes) || bytes > static_cast<double>(src->bytes))) {
    status = Status(Code::kRange, "cudaCopyDeviceToDevice: byte count out of range");
  }
  if (status.isOk()) status = gpu().copyOnDevice(dst->ptr, src->ptr, static_cast<size_t>(bytes));
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}

Napi::Value CudaFlushL2(const Napi::CallbackInfo& info) {
  const Status status = gpu().flushCaches();
  if (!status.isOk()) return throwStatus(info.Env(), status);
  return info.Env().Undefined();
}

// cudaSetDataChecks(enabled): benchmarks turn off the ops' per-call device
// verdict read-back (Backend::setDataChecks).
Napi::Value CudaSetDataChecks(const Napi::CallbackInfo& info) {
  gpu().setDataChecks(info.Length() < 1 || !info[0].IsBoolean() || info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

}  // namespace moe::addon
