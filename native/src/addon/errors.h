// The one place where a failed Status becomes a JavaScript exception.
#pragma once

#include <napi.h>

#include "core/status.h"

namespace moe::addon {

// lib/ hands the MoeError class to the addon once, at load.
void setErrorClass(const Napi::Function& moeErrorClass);

// new MoeError(code, message), or a plain Error with a `code` before lib/ registered the class.
Napi::Error toJsError(Napi::Env env, const Status& status);

}  // namespace moe::addon
