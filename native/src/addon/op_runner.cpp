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

// Settles `deferred` with `status` (undefined, or the MoeError), if it still can.
void settle(Napi::Env env, const Napi::Promise::Deferred& deferred, const Status& status) {
  if (!canRunJs(env)) return;
  if (status.isOk()) deferred.Resolve(env.Undefined());
  else deferred.Reject(toJsError(env, status).Value());
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

QueueChannel& channel(Napi::Env env, Backend& backend) {
  if (tChannel == nullptr) {
    tChannel = new QueueChannel;
    tChannel->backend = &backend;
    tChannel->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "moe-kernels-device", 0, 1);
    tChannel->tsfn.Unref(env);
    napi_add_env_cleanup_hook(env, closeChannel, tChannel);
  }
  return *tChannel;
}

// An op in flight on a queued backend: settled on the JS thread once the
// backend's completion callback says the device has reached it.
struct Completion {
  Napi::Promise::Deferred deferred;
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
    settle(env, done->deferred, status);
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
  QueueChannel& ch = channel(env, backend);
  auto* done = new Completion{Napi::Promise::Deferred::New(env), std::move(keep), &ch, std::move(ctx.deferred)};
  Napi::Promise promise = done->deferred.Promise();
  if (ch.inFlight++ == 0) ch.tsfn.Ref(env);
  status = backend.enqueueCompletion(onCompletion, done);
  if (!status.isOk()) {
    if (--ch.inFlight == 0) ch.tsfn.Unref(env);
    done->deferred.Reject(toJsError(env, status).Value());
    delete done;
  }
  return promise;
}

}  // namespace

Napi::Value failOp(Napi::Env env, bool async, const Status& status) {
  if (!async) {
    toJsError(env, status).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(toJsError(env, status).Value());
  return deferred.Promise();
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
  struct Pending {
    Napi::Promise::Deferred deferred;
    std::unique_ptr<KeepAlive> keep;
  };
  auto* pending = new Pending{Napi::Promise::Deferred::New(env), std::move(keep)};
  Napi::Promise promise = pending->deferred.Promise();
  auto run = [work = std::move(work)]() {
    ExecContext ctx;  // the work is done when it returns: async changes nothing below
    return work(ctx);
  };
  runOnPackageThreads(env, std::move(run), [pending](napi_env e, const Status& status) {
    if (e != nullptr) settle(Napi::Env(e), pending->deferred, status);
    delete pending;
  });
  return promise;
}

}  // namespace moe::addon
