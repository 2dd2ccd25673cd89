#include "addon/op_runner.h"

#include "addon/errors.h"
#include "cuda_host/deferred_flags.h"
#include "cuda_host/plugin.h"

namespace moe::addon {

namespace {

class OpWorker final : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, std::unique_ptr<KeepAlive> keep, Work work)
      : Napi::AsyncWorker(env, "moe-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_(std::move(keep)),
        work_(std::move(work)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override { status_ = work_(); }

  void OnOK() override {
    Napi::Env env = Env();
    if (status_.isOk()) {
      deferred_.Resolve(env.Undefined());
    } else {
      deferred_.Reject(toJsError(env, status_).Value());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<KeepAlive> keep_;
  Work work_;
  Status status_;
};

// A CUDA op in flight: resolved on the JS thread once the plug-in's host
// callback says the stream has reached it.
struct CudaCompletion {
  Napi::Promise::Deferred deferred;
  std::unique_ptr<KeepAlive> keep;
  Napi::ThreadSafeFunction signal;
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
    if (status.isOk()) done->deferred.Resolve(env.Undefined());
    else done->deferred.Reject(toJsError(env, status).Value());
  }
  done->flags.finish();  // (already done above) or, at env teardown, frees the slot: the slots are process-wide
  done->signal.Release();
  delete done;
}

// Runs on a CUDA-internal thread: only hands the completion to the JS thread.
void onCudaHostCallback(void* user) {
  auto* done = static_cast<CudaCompletion*>(user);
  done->signal.NonBlockingCall(done, [](Napi::Env env, Napi::Function fn, CudaCompletion* d) { settleCudaCompletion(env, fn, d); });
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
  auto* done = new CudaCompletion{Napi::Promise::Deferred::New(env), std::move(keep), {}, flags};
  done->signal = Napi::ThreadSafeFunction::New(env, Napi::Function(), "moe-kernels-cuda", 0, 1);
  Napi::Promise promise = done->deferred.Promise();
  status = cuda::fromPlugin(api.launchHostCallback(onCudaHostCallback, done, err, sizeof err), err, "CUDA");
  if (!status.isOk()) {
    done->flags.finish();
    done->deferred.Reject(toJsError(env, status).Value());
    done->signal.Release();
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
