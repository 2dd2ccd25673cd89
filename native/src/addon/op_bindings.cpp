// The JS entry points of the operations. Each takes one plain object of
// tensors and options (built by lib/ops) and a flag: run now, or return a
// Promise. Argument errors found here are reported like kernel errors.
#include "addon/op_bindings.h"

#include <memory>
#include <string>

#include "addon/op_runner.h"
#include "cpu/cpu_backend.h"

namespace moe::addon {

namespace {

struct Call {
  Napi::Env env;
  Napi::Object args;
  bool async;
  std::unique_ptr<KeepAlive> keep = std::make_unique<KeepAlive>();
};

Status parseCall(const Napi::CallbackInfo& info, const char* op, Call* call) {
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsBoolean()) {
    return Status(Code::kInternal, std::string(op) + ": expected (args: object, async: boolean)");
  }
  call->args = info[0].As<Napi::Object>();
  call->async = info[1].As<Napi::Boolean>().Value();
  return Status::ok();
}

Status parseScaleFormat(const Napi::Object& args, const char* what, ScaleFormat* format) {
  const Napi::Value value = args.Get("scaleFormat");
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "f32") *format = ScaleFormat::kF32;
  else if (name == "ue8m0") *format = ScaleFormat::kUE8M0;
  else return Status(Code::kRange, std::string(what) + ": scaleFormat must be 'f32' or 'ue8m0'");
  return Status::ok();
}

// The backend that runs a call. Only the CPU backend exists so far; the CUDA
// plug-in will be chosen here from the tensors' device.
Backend* selectBackend(const Napi::CallbackInfo&) { return &cpu::cpuBackend(); }

template <typename Parse, typename Run>
Napi::Value bind(const Napi::CallbackInfo& info, const char* op, Parse parse, Run run) {
  Call call{info.Env(), Napi::Object(), false};
  Status status = parseCall(info, op, &call);
  if (status.isOk()) status = parse(call);
  if (!status.isOk()) return failOp(call.env, call.async, status);
  return runOp(call.env, call.async, std::move(call.keep), run);
}

Napi::Value quantize(const Napi::CallbackInfo& info, const char* op, bool weights) {
  auto args = std::make_shared<QuantizeArgs>();
  Backend* backend = selectBackend(info);
  const std::string name(op);
  return bind(
      info, op,
      [&](Call& call) {
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "x", (name + ": x").c_str(), &args->x, call.keep.get()));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "q", (name + ": q").c_str(), &args->q, call.keep.get()));
        MOE_RETURN_IF_ERROR(
            tensorFromJs(call.args, "scales", (name + ": scales").c_str(), &args->scales, call.keep.get()));
        return parseScaleFormat(call.args, op, &args->scaleFormat);
      },
      [args, backend, weights]() {
        return weights ? backend->quantizeWeights(*args) : backend->quantizeActivations(*args);
      });
}

}  // namespace

Napi::Value QuantizeActivations(const Napi::CallbackInfo& info) {
  return quantize(info, "quantizeActivations", false);
}

Napi::Value QuantizeWeights(const Napi::CallbackInfo& info) { return quantize(info, "quantizeWeights", true); }

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<DequantizeArgs>();
  Backend* backend = selectBackend(info);
  return bind(
      info, "dequantize",
      [&](Call& call) {
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "q", "dequantize: q.data", &args->q, call.keep.get()));
        MOE_RETURN_IF_ERROR(
            tensorFromJs(call.args, "scales", "dequantize: q.scales", &args->scales, call.keep.get()));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "out", "dequantize: out", &args->out, call.keep.get()));
        const Napi::Value blockRows = call.args.Get("blockRows");
        if (!blockRows.IsNumber()) return Status(Code::kRange, "dequantize: blockRows must be a number");
        args->blockRows = blockRows.As<Napi::Number>().Int64Value();
        return Status::ok();
      },
      [args, backend]() { return backend->dequantize(*args); });
}

Napi::Value GemmFp8(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<GemmFp8Args>();
  Backend* backend = selectBackend(info);
  return bind(
      info, "gemmFp8",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "a", "gemmFp8: a.data", &args->a, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "aScales", "gemmFp8: a.scales", &args->aScales, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "b", "gemmFp8: b.data", &args->b, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "bScales", "gemmFp8: b.scales", &args->bScales, keep));
        return tensorFromJs(call.args, "d", "gemmFp8: out", &args->d, keep);
      },
      [args, backend]() { return backend->gemmFp8(*args); });
}

}  // namespace moe::addon
