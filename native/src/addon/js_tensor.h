// Reading lib/'s Tensor objects ({ data: TypedArray, dtype, shape }) into
// TensorViews, checking that the typed array agrees with dtype and shape.
#pragma once

#include <napi.h>

#include <vector>

#include "core/tensor.h"

namespace moe::addon {

// Holds JS objects alive while native code (possibly on another thread) uses
// their memory.
class KeepAlive {
 public:
  void add(const Napi::Object& object) { refs_.push_back(Napi::Persistent(object)); }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

// args[key] as a tensor; `what` names it in errors ("gemmFp8: a.data").
Status tensorFromJs(const Napi::Object& args, const char* key, const char* what, TensorView* out, KeepAlive* keep);

}  // namespace moe::addon
