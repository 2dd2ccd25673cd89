#include "addon/op_runner.h"

#include "addon/errors.h"

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

Napi::Value runOp(Napi::Env env, bool async, std::unique_ptr<KeepAlive> keep, Work work) {
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
