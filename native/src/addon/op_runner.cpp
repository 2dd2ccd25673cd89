#include "addon/op_runner.h"

#include "addon/errors.h"
#include "addon/package_threads.h"

namespace moe::addon {

namespace {

// Whether JavaScript can still run in `env`. A Node worker thread that exits
// (process.exit, worker.terminate) with operations in flight tears its
// environment down while their completions still arrive; from then on every
// N-API call that could run JS fails, and node-addon-api turns such a failure
// (resolving a Promise, setting the error's code) into a fatal error that
// aborts the whole process. A throwaway property write is the cheapest call
// that fails the same way; when it does, the Promise is left alone: nobody
// can observe it any more.
bool canRunJs(napi_env env) {
  napi_value probe = nullptr, undefined = nullptr;
  return napi_create_object(env, &probe) == napi_ok && napi_get_undefined(env, &undefined) == napi_ok &&
         napi_set_named_property(env, probe, "p", undefined) == napi_ok;
}

// A Promise and the handle that settles it, made with a checked status.
// node-addon-api's Promise::Deferred leaves both handles uninitialized when
// napi_create_promise fails, which it does once a worker's environment is
// exiting (worker.terminate() from another thread while the op's arguments
// are read, or process.exit() in a getter the op reads): returned to JS,
// such an uninitialized napi_value can crash the process. Here a failed
// creation is seen, and the op is not started.
struct PendingPromise {
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  bool made() const { return deferred != nullptr; }
};

PendingPromise makePromise(napi_env env) {
  PendingPromise p;
  if (napi_create_promise(env, &p.deferred, &p.promise) != napi_ok) p = PendingPromise();
  return p;
}

// What an op returns to JS: its Promise, or undefined where none could be
// made (the environment is exiting; nobody will look).
Napi::Value returned(Napi::Env env, const PendingPromise& p) {
  return p.made() ? Napi::Value(env, p.promise) : env.Undefined();
}

// Settles `p` with `status` (undefined, or the MoeError), if it still can.
void settle(Napi::Env env, const PendingPromise& p, const Status& status) {
  if (!p.made() || !canRunJs(env)) return;
  if (status.isOk()) napi_resolve_deferred(env, p.deferred, env.Undefined());
  else napi_reject_deferred(env, p.deferred, toJsError(env, status).Value());
}

// The completion channel of one JS thread (the main thread, or a worker):
// one thread-safe function that a queued backend's completion callbacks
// signal, made at the thread's first Promise-form op on that backend and
// referenced only while ops are in flight, so that it never keeps the event
// loop alive by itself.
//
// NOTE: a worker that exits with ops in flight tears down its environment,
// and with it the thread-safe function, while completions may still be on
// their way from the device. The channel's cleanup hook, registered after the
// function was made and so run before its teardown (hooks run last-in
// first-out), waits for the device: every completion has then run and none
// can reach a freed function.
struct QueueChannel {
  Napi::ThreadSafeFunction tsfn;
  Backend* backend = nullptr;
  int inFlight = 0;
};

thread_local QueueChannel* tChannel = nullptr;

void closeChannel(void* arg) {
  auto* channel = static_cast<QueueChannel*>(arg);
  (void)channel->backend->synchronize();  // the completions have all run
  delete channel;
  tChannel = nullptr;
}

// nullptr where its function cannot be made (an exiting environment).
QueueChannel* channel(Napi::Env env, Backend& backend) {
  if (tChannel == nullptr) {
    Napi::ThreadSafeFunction tsfn;
    if (!makeCompletionFunction(env, "moe-kernels-device", &tsfn)) return nullptr;
    tChannel = new QueueChannel;
    tChannel->backend = &backend;
    tChannel->tsfn = tsfn;
    napi_add_env_cleanup_hook(env, closeChannel, tChannel);
  }
  return tChannel;
}

// An op in flight on a queued backend: settled on the JS thread once the
// backend's completion callback says the device has reached it.
struct Completion {
  PendingPromise promise;
  std::unique_ptr<KeepAlive> keep;
  QueueChannel* channel;
  std::unique_ptr<DeferredCheck> check;  // the op's device verdict, copied back behind it (or none)
};

void settleCompletion(Napi::Env env, Napi::Function, Completion* done) {
  if (env != nullptr) {
    // The callback ran, so the work is finished (or the device failed): ask for
    // an error without waiting, as work enqueued after this op may still run.
    // A kernel fault surfaces here rather than in a later, unrelated call.
    Status status = done->channel->backend->pollError();
    const Status flagged = done->check ? done->check->finish() : Status::ok();
    if (status.isOk()) status = flagged;
    settle(env, done->promise, status);
    if (--done->channel->inFlight == 0) done->channel->tsfn.Unref(env);
  }
  delete done;  // at env teardown: releases what the check holds
}

// Runs on a device-internal thread: only hands the completion to the JS thread.
void onCompletion(void* user) {
  auto* done = static_cast<Completion*>(user);
  done->channel->tsfn.NonBlockingCall(done, [](Napi::Env env, Napi::Function fn, Completion* d) { settleCompletion(env, fn, d); });
}

Napi::Value runQueuedOp(Napi::Env env, bool async, Backend& backend, std::unique_ptr<KeepAlive> keep, const Work& work) {
  ExecContext ctx;
  ctx.async = async;
  Status status = work(ctx);  // enqueues on the backend's queue
  if (status.isOk() && !async) status = backend.synchronize();
  if (!status.isOk() || !async) {
    ctx.deferred.reset();  // releases a verdict slot taken before a later step failed
    if (!status.isOk()) return failOp(env, async, status);
    return env.Undefined();
  }
  const PendingPromise promise = makePromise(env);
  QueueChannel* channelOfEnv = promise.made() ? channel(env, backend) : nullptr;
  if (channelOfEnv == nullptr) {
    // The environment is exiting: wait for the enqueued work here instead of
    // handing its completion to a function that is being torn down.
    (void)backend.synchronize();
    return env.Undefined();
  }
  QueueChannel& ch = *channelOfEnv;
  auto* done = new Completion{promise, std::move(keep), &ch, std::move(ctx.deferred)};
  if (ch.inFlight++ == 0) ch.tsfn.Ref(env);
  status = backend.enqueueCompletion(onCompletion, done);
  if (!status.isOk()) {
    if (--ch.inFlight == 0) ch.tsfn.Unref(env);
    settle(env, promise, status);
    delete done;
  }
  return returned(env, promise);
}

}  // namespace

Napi::Value failOp(Napi::Env env, bool async, const Status& status) {
  if (!async) {
    toJsError(env, status).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const PendingPromise promise = makePromise(env);
  settle(env, promise, status);
  return returned(env, promise);
}

Napi::Value runOp(Napi::Env env, bool async, Backend& backend, std::unique_ptr<KeepAlive> keep, Work work) {
  if (backend.queued()) return runQueuedOp(env, async, backend, std::move(keep), work);
  if (!async) {
    ExecContext ctx;
    const Status status = work(ctx);
    if (!status.isOk()) toJsError(env, status).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // CPU work runs on the package's own threads (package_threads.h), not libuv's pool.
  const PendingPromise promise = makePromise(env);
  if (!promise.made()) return env.Undefined();  // exiting: the op is not started
  struct Pending {
    PendingPromise promise;
    std::unique_ptr<KeepAlive> keep;
  };
  auto* pending = new Pending{promise, std::move(keep)};
  auto run = [work = std::move(work)]() {
    ExecContext ctx;  // the work is done when it returns: async changes nothing below
    return work(ctx);
  };
  const bool started = runOnPackageThreads(env, std::move(run), [pending](napi_env e, const Status& status) {
    if (e != nullptr) settle(Napi::Env(e), pending->promise, status);
    delete pending;
  });
  if (!started) {  // exiting: the Promise never settles, and nobody can wait for it
    delete pending;
    return env.Undefined();
  }
  return returned(env, promise);
}

}  // namespace moe::addon
