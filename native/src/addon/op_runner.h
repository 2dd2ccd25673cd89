// Runs one operation either on the JS thread (the ...Sync API) or on a libuv
// worker thread behind a Promise. Execute never touches JS values: `work`
// sees only TensorViews, and the JS objects behind them are held by KeepAlive
// until the Promise settles.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>

#include "addon/js_tensor.h"
#include "core/status.h"

namespace moe::addon {

using Work = std::function<Status()>;

// Sync: runs `work`, throws a MoeError on failure, returns undefined.
// Async: returns a Promise that resolves to undefined or rejects with a MoeError.
Napi::Value runOp(Napi::Env env, bool async, std::unique_ptr<KeepAlive> keep, Work work);

// Reports an error found before `work` could run, the same way runOp would.
Napi::Value failOp(Napi::Env env, bool async, const Status& status);

}  // namespace moe::addon
