// Runs one operation either on the JS thread (the ...Sync API) or behind a
// Promise. On a backend whose calls finish when they return (the CPU) the
// work runs on one of the package's own threads (package_threads.h; never
// libuv's pool; `work` sees only TensorViews, never JS values). On a queued backend (a GPU) the work is only
// enqueued on the JS thread — that is cheap — and the Promise settles from
// the backend's completion callback when the device is done, so no thread
// waits for it. The JS objects behind the tensors are held by KeepAlive until
// then.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>

#include "addon/js_tensor.h"
#include "core/backend.h"
#include "core/status.h"

namespace moe::addon {

// The operation: its calls into the backend, with the ExecContext that says
// how they run.
using Work = std::function<Status(ExecContext&)>;

// Sync: runs `work` (and waits for the GPU), throws a MoeError on failure,
// returns undefined. Async: returns a Promise that resolves to undefined or
// rejects with a MoeError.
Napi::Value runOp(Napi::Env env, bool async, Backend& backend, std::unique_ptr<KeepAlive> keep, Work work);

// Reports an error found before `work` could run, the same way runOp would.
Napi::Value failOp(Napi::Env env, bool async, const Status& status);

}  // namespace moe::addon
