// The one place where a failed Status becomes a JavaScript exception.
#pragma once

#include <napi.h>

#include "core/status.h"

namespace moe::addon {

// lib/ hands the MoeError class to the addon once per environment, at load,
// with worker_threads' markAsUntransferable (see pinArrayBuffer).
void setErrorClass(const Napi::Function& moeErrorClass, const Napi::Value& pinBuffer);

// Marks an ArrayBuffer whose memory native code keeps using after the call
// returns (a Promise-form op's tensors, a layer's prepared weights) as
// untransferable: a transfer (postMessage, structuredClone, transfer()) would
// otherwise free it under the running op. Node >= 21 then refuses the
// transfer; Node 20 copies instead of transferring. README, "Buffers and
// concurrency".
void pinArrayBuffer(Napi::Env env, napi_value arrayBuffer);

// new MoeError(code, message), or a plain Error with a `code` before lib/ registered the class.
Napi::Error toJsError(Napi::Env env, const Status& status);

}  // namespace moe::addon
