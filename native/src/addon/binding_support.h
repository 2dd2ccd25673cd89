// What every operation binding shares: reading the (args, async) call,
// options, the backend choice, and running the op sync or async.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "addon/op_runner.h"
#include "core/backend.h"

namespace moe::addon {

struct Call {
  Napi::Env env;
  Napi::Object args;
  bool async;
  std::unique_ptr<KeepAlive> keep = std::make_unique<KeepAlive>();
};

inline Status parseCall(const Napi::CallbackInfo& info, const char* op, Call* call) {
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsBoolean()) {
    return Status(Code::kInternal, std::string(op) + ": expected (args: object, async: boolean)");
  }
  call->args = info[0].As<Napi::Object>();
  call->async = info[1].As<Napi::Boolean>().Value();
  call->keep->setSynchronous(!call->async);
  return Status::ok();
}

inline Status parseScaleFormat(const Napi::Object& args, const char* what, ScaleFormat* format) {
  std::string name;
  const bool isString = stringFromJs(args, "scaleFormat", what, &name).isOk();
  if (isString && name == "f32") {
    *format = ScaleFormat::kF32;
  } else if (isString && name == "ue8m0") {
    *format = ScaleFormat::kUE8M0;
  } else {
    return Status(Code::kRange, std::string(what) + ": scaleFormat must be 'f32' or 'ue8m0'");
  }
  return Status::ok();
}

inline Status parseRouteOptions(const Napi::Object& options, RouteArgs* args) {
  std::string scoring;
  MOE_RETURN_IF_ERROR(stringFromJs(options, "scoring", "route: scoring", &scoring));
  if (scoring != "softmax" && scoring != "sigmoid") {
    return Status(Code::kRange, "route: scoring must be 'softmax' or 'sigmoid'");
  }
  args->scoring = scoring == "softmax" ? Scoring::kSoftmax : Scoring::kSigmoid;
  MOE_RETURN_IF_ERROR(int64FromJs(options, "topK", "route: topK", 1, 1 << 20, &args->topK));
  MOE_RETURN_IF_ERROR(int64FromJs(options, "numGroups", "route: numGroups", 1, 1 << 20, &args->numGroups));
  MOE_RETURN_IF_ERROR(int64FromJs(options, "topKGroups", "route: topKGroups", 1, 1 << 20, &args->topKGroups));
  MOE_RETURN_IF_ERROR(boolFromJs(options, "renormalize", "route: renormalize", &args->renormalize));
  return floatFromJs(options, "scale", "route: scale", &args->scale);
}

// The backend that runs a call: the one where its tensors live.
inline Status selectBackend(const KeepAlive& tensors, const char* op, Backend** backend) {
  if (tensors.mixedDevices()) {
    return Status(Code::kDevice, std::string(op) + ": tensors on different devices (move them with t.to('cpu') or t.to('cuda'))");
  }
  Backend& chosen = backendFor(tensors.device());
  MOE_RETURN_IF_ERROR(chosen.expectAvailable(op));
  *backend = &chosen;
  return Status::ok();
}

// Reads the call with `parse`, picks the backend from the tensors' device, and
// runs `run(backend, ctx)` sync or async.
template <typename Parse, typename Run>
Napi::Value bind(const Napi::CallbackInfo& info, const char* op, Parse parse, Run run) {
  Call call{info.Env(), Napi::Object(), false};
  Backend* backend = nullptr;
  Status status = parseCall(info, op, &call);
  if (status.isOk()) status = parse(call);
  if (status.isOk()) status = selectBackend(*call.keep, op, &backend);
  if (!status.isOk()) return failOp(call.env, call.async, status);
  return runOp(call.env, call.async, *backend, std::move(call.keep), [run, backend](ExecContext& ctx) { return run(*backend, ctx); });
}

}  // namespace moe::addon
