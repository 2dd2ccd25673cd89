#include "addon/op_runner.h"

#include "addon/errors.h"
#include "cuda_host/deferred_flags.h"
#include "cuda_host/plugin.h"

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

class OpWorker final : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, std::unique_ptr<KeepAlive> keep, Work work)
      : Napi::AsyncWorker(env, "moe-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_(std::move(keep)),
        work_(std::move(work)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override { status_ = work_(); }

  void OnOK() override { settle(Env(), deferred_, status_); }

 private:
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<KeepAlive> keep_;
  Work work_;
  Status status_;
};

// The completion channel of one JS thread (the main thread, or a worker):
// one thread-safe function that the CUDA host callbacks signal, made at the
// thread's first Promise-form CUDA op and referenced only while ops are in
// flight, so that it never keeps the event loop alive by itself.
//
// NOTE: a worker that exits with ops in flight tears down its environment,
// and with it the thread-safe function, while host callbacks may still be on
// their way from the GPU. The channel's cleanup hook, registered after the
// function was made and so run before its teardown (hooks run last-in
// first-out), waits for the stream: every host callback has then run and
// none can reach a freed function.
struct CudaChannel {
  Napi::ThreadSafeFunction tsfn;
  int inFlight = 0;
};

thread_local CudaChannel* tChannel = nullptr;

void closeChannel(void* arg) {
  char err[512] = {0};
  (void)cuda::Plugin::instance().api().synchronize(err, sizeof err);  // the callbacks have all run
  delete static_cast<CudaChannel*>(arg);
  tChannel = nullptr;
}

CudaChannel& channel(Napi::Env env) {
  if (tChannel == nullptr) {
    tChannel = new CudaChannel;
    tChannel->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "moe-kernels-cuda", 0, 1);
    tChannel->tsfn.Unref(env);
    napi_add_env_cleanup_hook(env, closeChannel, tChannel);
  }
  return *tChannel;
}

// A CUDA op in flight: settled on the JS thread once the plug-in's host
// callback says the stream has reached it.
struct CudaCompletion {
  Napi::Promise::Deferred deferred;
  std::unique_ptr<KeepAlive> keep;
  CudaChannel* channel;
  cuda::FlagCheck flags;  // the op's error flags, copied to a host slot behind it
};

void settleCudaCompletion(Napi::Env env, Napi::Function, CudaCompletion* done) {
  if (env != nullptr) {
    char err[512] = {0};
    // The callback ran, so the work is finished (or the device failed): ask for
    // an error without waiting, as work enqueued after this op may still run.
    // A kernel fault surfaces here rather than in a later, unrelated call.
    Status status = cuda::fromPlugin(cuda::Plugin::instance().api().pollError(err, sizeof err), err, "CUDA");
    const Status flagged = done->flags.finish();
    if (status.isOk()) status = flagged;
    settle(env, done->deferred, status);
    if (--done->channel->inFlight == 0) done->channel->tsfn.Unref(env);
  }
  done->flags.finish();  // (already done above) or, at env teardown, frees the slot: the slots are process-wide
  delete done;
}

// Runs on a CUDA-internal thread: only hands the completion to the JS thread.
void onCudaHostCallback(void* user) {
  auto* done = static_cast<CudaCompletion*>(user);
  done->channel->tsfn.NonBlockingCall(done, [](Napi::Env env, Napi::Function fn, CudaCompletion* d) { settleCudaCompletion(env, fn, d); });
}

Napi::Value runCudaOp(Napi::Env env, bool async, std::unique_ptr<KeepAlive> keep, const Work& work) {
  const cuda::PluginApi& api = cuda::Plugin::instance().api();
  char err[512] = {0};
  cuda::FlagCheck flags;
  Status status;
  if (async) {
    const cuda::DeferredFlags scope(&flags);  // the op's flag read becomes an enqueued copy
    status = work();                          // enqueues on the plug-in's stream
  } else {
    status = work();
  }
  if (status.isOk() && !async) status = cuda::fromPlugin(api.synchronize(err, sizeof err), err, "CUDA");
  if (!status.isOk() || !async) {
    flags.finish();  // frees a slot taken before a later step failed
    if (!status.isOk()) return failOp(env, async, status);
    return env.Undefined();
  }
  CudaChannel& ch = channel(env);
  auto* done = new CudaCompletion{Napi::Promise::Deferred::New(env), std::move(keep), &ch, flags};
  Napi::Promise promise = done->deferred.Promise();
  if (ch.inFlight++ == 0) ch.tsfn.Ref(env);
  status = cuda::fromPlugin(api.launchHostCallback(onCudaHostCallback, done, err, sizeof err), err, "CUDA");
  if (!status.isOk()) {
    if (--ch.inFlight == 0) ch.tsfn.Unref(env);
    done->flags.finish();
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

Napi::Value runOp(Napi::Env env, bool async, Device device, std::unique_ptr<KeepAlive> keep, Work work) {
  if (device == Device::kCuda) return runCudaOp(env, async, std::move(keep), work);
  if (!async) {
    const Status status = work();
    if (!status.isOk()) toJsError(env, status).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* worker = new OpWorker(env, std::move(keep), std::move(work));  // deletes itself when done
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace moe::addon
