#pragma once

#include <napi.h>

namespace moe::addon {

Napi::Value MoeForward(const Napi::CallbackInfo& info);

}  // namespace moe::addon
