// The package's own threads for the Promise forms' CPU work. libuv's
// threadpool (4 threads by default) is shared with fs, dns.lookup, crypto and
// zlib: a few long forwards on it made fs.readFile wait for them (hundreds of
// ms). Work queued here runs on threads the package owns and completes on
// the JS thread through a thread-safe function, so libuv's pool stays free.
#pragma once

#include <napi.h>

#include <functional>

#include "core/status.h"

namespace moe::addon {

// Runs `work` on one of the package's threads, then `done(env, status)` on the
// JS thread of `env`. At that thread's teardown (a worker exiting with work in
// flight) `done` is not called (node-addon-api drops the call), or called
// with a null env: it must then only free what it holds. Work that has not
// started when its environment is torn down is skipped. Returns false, with
// nothing queued and `done` never called, where the environment is already
// exiting.
bool runOnPackageThreads(Napi::Env env, std::function<Status()> work, std::function<void(napi_env, const Status&)> done);

// A thread-safe function of `env` that carries completions to its JS thread
// (no JS function: each call brings its callback), made unreferenced, so that
// it keeps the event loop alive only while its owner holds a Ref. False where
// it cannot be made (an exiting environment): Node aborts the process on a
// Ref or Unref of a null function, so its owner must not make one then.
bool makeCompletionFunction(Napi::Env env, const char* name, Napi::ThreadSafeFunction* out);

// How many threads run such work: MOE_ASYNC_THREADS (1..64), else 4 (libuv's
// default pool size, so as many Promise forms run at once as before; the CPU
// kernels' own ThreadPool runs one parallel region at a time, so more would
// only wait).
int packageThreadCount();

}  // namespace moe::addon
