#include "addon/js_tensor.h"

#include "addon/errors.h"

#include <string>

namespace moe::addon {

namespace {

bool parseDtype(const std::string& name, DType* dtype) {
  if (name == "f32") *dtype = DType::kF32;
  else if (name == "bf16") *dtype = DType::kBF16;
  else if (name == "fp8_e4m3") *dtype = DType::kFP8E4M3;
  else if (name == "i32") *dtype = DType::kI32;
  else return false;
  return true;
}

// The typed array each dtype is stored in (see lib/dtype.ts).
napi_typedarray_type storageType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return napi_float32_array;
    case DType::kBF16: return napi_uint16_array;
    case DType::kFP8E4M3: return napi_uint8_array;
    case DType::kI32: return napi_int32_array;
  }
  return napi_uint8_array;
}

}  // namespace

Status tensorFromJs(const Napi::Object& args, const char* key, const char* what, TensorView* out, KeepAlive* keep) {
  const std::string name(what);
  Napi::Value value = args.Get(key);
  if (!value.IsObject()) return Status(Code::kDtype, name + ": expected a tensor");
  Napi::Object tensor = value.As<Napi::Object>();

  Napi::Value dtypeValue = tensor.Get("dtype");
  if (!dtypeValue.IsString() || !parseDtype(dtypeValue.As<Napi::String>().Utf8Value(), &out->dtype)) {
    return Status(Code::kDtype, name + ": unknown dtype");
  }

  Napi::Value shapeValue = tensor.Get("shape");
  if (!shapeValue.IsArray()) return Status(Code::kShape, name + ": shape must be an array");
  Napi::Array shape = shapeValue.As<Napi::Array>();
  if (shape.Length() < 1 || shape.Length() > kMaxDims) {
    return Status(Code::kShape, name + ": rank must be 1.." + std::to_string(kMaxDims));
  }
  out->ndim = static_cast<int>(shape.Length());
  int64_t numel = 1;
  for (uint32_t i = 0; i < shape.Length(); ++i) {
    Napi::Value extent = shape.Get(i);
    if (!extent.IsNumber()) return Status(Code::kShape, name + ": shape entries must be numbers");
    const double d = extent.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<int64_t>(d))) {
      return Status(Code::kShape, name + ": shape entries must be non-negative integers");
    }
    out->shape[i] = static_cast<int64_t>(d);
    numel *= out->shape[i];
  }
  int64_t stride = 1;
  for (int d = out->ndim - 1; d >= 0; --d) {
    out->strides[d] = stride;
    stride *= out->shape[d];
  }

  const Napi::Value deviceName = tensor.Get("device");
  Device device = Device::kCpu;
  if (deviceName.IsString() && deviceFromName(deviceName.As<Napi::String>().Utf8Value(), &device) && device != Device::kCpu) {
    const Napi::Value handle = tensor.Get("handle");
    if (!handle.IsExternal()) return Status(Code::kDtype, name + ": a CUDA tensor without its device handle");
    const DeviceBuffer* buffer = handle.As<Napi::External<DeviceBuffer>>().Data();
    if (buffer == nullptr || buffer->ptr == nullptr) {
      return Status(Code::kDetached, name + ": the CUDA tensor was disposed");
    }
    if (buffer->bytes < static_cast<size_t>(numel) * dtypeSize(out->dtype)) {
      return Status(Code::kShape, name + ": device buffer of " + std::to_string(buffer->bytes) + " bytes is too small for shape " +
                                      out->shapeString());
    }
    out->data = buffer->ptr;
    out->device = device;
    keep->add(tensor);
    keep->noteDevice(device);
    return Status::ok();
  }

  Napi::Value dataValue = tensor.Get("data");
  if (!dataValue.IsTypedArray()) return Status(Code::kDtype, name + ": data must be a typed array");
  HostArray data;
  MOE_RETURN_IF_ERROR(hostArrayFromJs(args.Env(), dataValue, name, &data, keep->pinBuffers()));
  if (data.type != storageType(out->dtype)) {
    return Status(Code::kDtype, name + ": data's typed array does not match dtype " + dtypeName(out->dtype));
  }
  if (static_cast<int64_t>(data.length) != numel) {
    return Status(Code::kShape, name + ": data has " + std::to_string(data.length) +
                                    " elements, shape " + out->shapeString() + " needs " + std::to_string(numel));
  }
  if (keep->pinBuffers()) pinArrayBuffer(args.Env(), data.arrayBuffer);
  out->data = data.data;
  out->device = Device::kCpu;
  keep->add(tensor);
  keep->noteDevice(Device::kCpu);
  return Status::ok();
}

Status hostArrayFromJs(napi_env env, napi_value value, const std::string& what, HostArray* out, bool usedAfterReturn) {
  size_t byteOffset = 0;
  if (napi_get_typedarray_info(env, value, &out->type, &out->length, &out->data, &out->arrayBuffer, &byteOffset) != napi_ok) {
    return Status(Code::kDtype, what + ": expected a typed array");
  }
  bool detached = false;  // (always false for a SharedArrayBuffer)
  if (napi_is_detached_arraybuffer(env, out->arrayBuffer, &detached) != napi_ok || detached) {
    return Status(Code::kDetached, what + ": the buffer is detached");
  }
  if (out->data == nullptr && out->length > 0) return Status(Code::kDetached, what + ": the buffer has no memory");
  if (!usedAfterReturn) return Status::ok();
  bool resizable = false;  // a resizable ArrayBuffer could shrink under a running op
  napi_value flag = nullptr;
  if (napi_get_named_property(env, out->arrayBuffer, "resizable", &flag) == napi_ok &&
      napi_get_value_bool(env, flag, &resizable) == napi_ok && resizable) {
    return Status(Code::kDtype, what + ": a view of a resizable ArrayBuffer (use a fixed-length one)");
  }
  return Status::ok();
}

Status optionalTensorFromJs(const Napi::Object& args, const char* key, const char* what, TensorView* out,
                            KeepAlive* keep) {
  const Napi::Value value = args.Get(key);
  if (value.IsUndefined() || value.IsNull()) {
    *out = TensorView();
    return Status::ok();
  }
  return tensorFromJs(args, key, what, out, keep);
}

Status int64FromJs(const Napi::Object& args, const char* key, const char* what, int64_t min, int64_t max,
                   int64_t* out) {
  const Napi::Value value = args.Get(key);
  const double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1e300;
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<int64_t>(d))) {
    return Status(Code::kRange, std::string(what) + ": expected an integer in [" + std::to_string(min) + ", " +
                                    std::to_string(max) + "]");
  }
  *out = static_cast<int64_t>(d);
  return Status::ok();
}

Status boolFromJs(const Napi::Object& args, const char* key, const char* what, bool* out) {
  const Napi::Value value = args.Get(key);
  if (!value.IsBoolean()) return Status(Code::kRange, std::string(what) + ": expected a boolean");
  *out = value.As<Napi::Boolean>().Value();
  return Status::ok();
}

Status floatFromJs(const Napi::Object& args, const char* key, const char* what, float* out) {
  const Napi::Value value = args.Get(key);
  if (!value.IsNumber()) return Status(Code::kRange, std::string(what) + ": expected a number");
  *out = value.As<Napi::Number>().FloatValue();
  return Status::ok();
}

Status stringFromJs(const Napi::Object& args, const char* key, const char* what, std::string* out) {
  const Napi::Value value = args.Get(key);
  if (!value.IsString()) return Status(Code::kRange, std::string(what) + ": expected a string");
  *out = value.As<Napi::String>().Utf8Value();
  return Status::ok();
}

std::vector<std::string> stringsFromJs(const Napi::Value& list) {
  std::vector<std::string> strings;
  if (!list.IsArray()) return strings;
  const Napi::Array array = list.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const Napi::Value item = array.Get(i);
    if (item.IsString()) strings.push_back(item.As<Napi::String>().Utf8Value());
  }
  return strings;
}

}  // namespace moe::addon
