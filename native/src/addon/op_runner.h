// Runs one operation either on the JS thread (the ...Sync API) or behind a
// Promise. CPU work runs on a libuv worker thread (Execute never touches JS
// values: `work` sees only TensorViews). CUDA work is only enqueued on the JS
// thread — that is cheap — and the Promise settles from a plug-in host
// callback when the GPU is done, so no thread waits for the GPU. The JS
// objects behind the tensors are held by KeepAlive until then.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>

#include "addon/js_tensor.h"
#include "core/status.h"

namespace moe::addon {

using Work = std::function<Status()>;

// Sync: runs `work` (and waits for the GPU), throws a MoeError on failure,
// returns undefined. Async: returns a Promise that resolves to undefined or
// rejects with a MoeError.
Napi::Value runOp(Napi::Env env, bool async, Device device, std::unique_ptr<KeepAlive> keep, Work work);

// Reports an error found before `work` could run, the same way runOp would.
Napi::Value failOp(Napi::Env env, bool async, const Status& status);

}  // namespace moe::addon
