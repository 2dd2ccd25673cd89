// Reading lib/'s Tensor objects ({ data: TypedArray, dtype, shape }) into
// TensorViews, checking that the typed array agrees with dtype and shape.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "core/tensor.h"

namespace moe::addon {

// Holds JS objects alive while native code (possibly on another thread) uses
// their memory.
class KeepAlive {
 public:
  // An object the op reads needs a reference only while an async op runs: a
  // sync op returns before JS can collect anything (and each reference costs
  // a decode forward a few microseconds on cold caches).
  void add(const Napi::Object& object) {
    if (!synchronous_) refs_.push_back(Napi::Persistent(object));
  }
  void setSynchronous(bool synchronous) {
    synchronous_ = synchronous;
    pinBuffers_ = !synchronous;
  }
  // Whether the host buffers read must be pinned (errors.h, pinArrayBuffer):
  // their memory is used after the call returns. Async ops, and the prepared
  // weights and workspaces that later async forwards read.
  void setPinBuffers(bool pin) { pinBuffers_ = pin; }
  bool pinBuffers() const { return pinBuffers_; }

  // The devices of the tensors read so far: an op runs where its tensors are.
  void noteDevice(Device device) { (device == Device::kCuda ? sawCuda_ : sawCpu_) = true; }
  bool mixedDevices() const { return sawCpu_ && sawCuda_; }
  Device device() const { return sawCuda_ ? Device::kCuda : Device::kCpu; }

 private:
  std::vector<Napi::ObjectReference> refs_;
  bool sawCpu_ = false;
  bool sawCuda_ = false;
  bool synchronous_ = false;
  bool pinBuffers_ = true;
};

// The memory of a typed array: its elements' address (SharedArrayBuffers
// included: their memory cannot be detached), element count and type, read
// with checked statuses. kDetached for a detached buffer. A view of a
// resizable ArrayBuffer is refused where the memory is used after the call
// returns (`usedAfterReturn`: async ops, prepared handles), since it could
// shrink under the op; a sync op reads the length while no JS can run
// (and each property read costs a decode forward a few microseconds on
// cold caches).
struct HostArray {
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type = napi_uint8_array;
  napi_value arrayBuffer = nullptr;
};
Status hostArrayFromJs(napi_env env, napi_value value, const std::string& what, HostArray* out, bool usedAfterReturn = true);

// Device memory owned by a JS object (lib/'s device tensors hold one as an
// External); freed by the finalizer when the object is collected, or at once
// by dispose().
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// args[key] as a tensor; `what` names it in errors ("gemmFp8: a.data").
Status tensorFromJs(const Napi::Object& args, const char* key, const char* what, TensorView* out, KeepAlive* keep);

// The same for an optional tensor: absent (undefined or null) leaves out->data null.
Status optionalTensorFromJs(const Napi::Object& args, const char* key, const char* what, TensorView* out,
                            KeepAlive* keep);

// Plain options: numbers, booleans and strings, with a range check for integers.
Status int64FromJs(const Napi::Object& args, const char* key, const char* what, int64_t min, int64_t max,
                   int64_t* out);
Status boolFromJs(const Napi::Object& args, const char* key, const char* what, bool* out);
Status floatFromJs(const Napi::Object& args, const char* key, const char* what, float* out);
Status stringFromJs(const Napi::Object& args, const char* key, const char* what, std::string* out);
// The strings of an array (a plug-in's candidate paths); other elements and a non-array are skipped:
// lib/ builds the list, and a direct caller's junk only means fewer candidates.
std::vector<std::string> stringsFromJs(const Napi::Value& list);

}  // namespace moe::addon
