// The JS entry points of the operations. Each takes one plain object of
// tensors and options (built by lib/ops) and a flag: run now, or return a
// Promise. Argument errors found here are reported like kernel errors.
#include "addon/op_bindings.h"

#include <memory>
#include <string>

#include "addon/binding_support.h"

namespace moe::addon {

namespace {

Napi::Value quantize(const Napi::CallbackInfo& info, const char* op, bool weights) {
  auto args = std::make_shared<QuantizeArgs>();
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
      [args, weights](Backend& backend, ExecContext& ctx) {
        return weights ? backend.quantizeWeights(*args, ctx) : backend.quantizeActivations(*args, ctx);
      });
}

}  // namespace

Napi::Value QuantizeActivations(const Napi::CallbackInfo& info) {
  return quantize(info, "quantizeActivations", false);
}

Napi::Value QuantizeWeights(const Napi::CallbackInfo& info) { return quantize(info, "quantizeWeights", true); }

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<DequantizeArgs>();
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
      [args](Backend& backend, ExecContext& ctx) { return backend.dequantize(*args, ctx); });
}

Napi::Value GemmFp8(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<GemmFp8Args>();
  return bind(
      info, "gemmFp8",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "a", "gemmFp8: a.data", &args->a, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "aScales", "gemmFp8: a.scales", &args->aScales, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "b", "gemmFp8: b.data", &args->b, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "bScales", "gemmFp8: b.scales", &args->bScales, keep));
        if (!call.args.Get("batchInvariant").IsUndefined()) {
          MOE_RETURN_IF_ERROR(boolFromJs(call.args, "batchInvariant", "gemmFp8: batchInvariant", &args->batchInvariant));
        }
        return tensorFromJs(call.args, "d", "gemmFp8: out", &args->d, keep);
      },
      [args](Backend& backend, ExecContext& ctx) {
        MOE_RETURN_IF_ERROR(backend.expectBatchInvariant(args->batchInvariant, "gemmFp8"));
        return backend.gemmFp8(*args, ctx);
      });
}

Napi::Value GroupedGemmFp8(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<GroupedGemmFp8Args>();
  return bind(
      info, "groupedGemmFp8",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "a", "groupedGemmFp8: a.data", &args->a, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "aScales", "groupedGemmFp8: a.scales", &args->aScales, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "b", "groupedGemmFp8: b.data", &args->b, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "bScales", "groupedGemmFp8: b.scales", &args->bScales, keep));
        MOE_RETURN_IF_ERROR(
            optionalTensorFromJs(call.args, "groupIndex", "groupedGemmFp8: groupIndex", &args->groupIndex, keep));
        MOE_RETURN_IF_ERROR(optionalTensorFromJs(call.args, "maskedM", "groupedGemmFp8: maskedM", &args->maskedM, keep));
        if (!call.args.Get("align").IsUndefined()) {
          MOE_RETURN_IF_ERROR(int64FromJs(call.args, "align", "groupedGemmFp8: align", 1, 1 << 16, &args->segmentAlign));
        }
        if ((args->groupIndex.data == nullptr) == (args->maskedM.data == nullptr)) {
          return Status(Code::kRange, "groupedGemmFp8: exactly one of groupIndex and maskedM must be given");
        }
        return tensorFromJs(call.args, "d", "groupedGemmFp8: out", &args->d, keep);
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.groupedGemmFp8(*args, ctx); });
}

Napi::Value Route(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<RouteArgs>();
  return bind(
      info, "route",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "logits", "route: logits", &args->logits, keep));
        MOE_RETURN_IF_ERROR(optionalTensorFromJs(call.args, "bias", "route: bias", &args->bias, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "ids", "route: ids", &args->ids, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "weights", "route: weights", &args->weights, keep));
        return parseRouteOptions(call.args, args.get());
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.route(*args, ctx); });
}

Napi::Value DispatchLayout(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<LayoutArgs>();
  return bind(
      info, "dispatchLayout",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "ids", "dispatchLayout: ids", &args->ids, keep));
        MOE_RETURN_IF_ERROR(
            int64FromJs(call.args, "numExperts", "dispatchLayout: numExperts", 1, 1 << 24, &args->numExperts));
        MOE_RETURN_IF_ERROR(int64FromJs(call.args, "align", "dispatchLayout: align", 1, 1 << 20, &args->align));
        MOE_RETURN_IF_ERROR(boolFromJs(call.args, "masked", "dispatchLayout: masked", &args->masked));
        MOE_RETURN_IF_ERROR(int64FromJs(call.args, "maxRowsPerExpert", "dispatchLayout: maxRowsPerExpert", 0,
                                        int64_t{1} << 31, &args->maxRowsPerExpert));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "tokensPerExpert", "dispatchLayout: tokensPerExpert",
                                         &args->tokensPerExpert, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "offsets", "dispatchLayout: offsets", &args->offsets, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "rowToken", "dispatchLayout: rowToken", &args->rowToken, keep));
        MOE_RETURN_IF_ERROR(
            tensorFromJs(call.args, "groupIndex", "dispatchLayout: groupIndex", &args->groupIndex, keep));
        return tensorFromJs(call.args, "slotRow", "dispatchLayout: slotRow", &args->slotRow, keep);
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.dispatchLayout(*args, ctx); });
}

// Output tensors `out` and, when quantizing to fp8, `scales`.
Status parseQuantizedOutput(Call& call, const char* op, TensorView* out, TensorView* scales, ScaleFormat* format) {
  const std::string name(op);
  MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "out", (name + ": out").c_str(), out, call.keep.get()));
  MOE_RETURN_IF_ERROR(optionalTensorFromJs(call.args, "scales", (name + ": scales").c_str(), scales, call.keep.get()));
  if (scales->data == nullptr) return Status::ok();
  return parseScaleFormat(call.args, op, format);
}

Napi::Value Dispatch(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<DispatchArgs>();
  return bind(
      info, "dispatch",
      [&](Call& call) {
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "x", "dispatch: x", &args->x, call.keep.get()));
        MOE_RETURN_IF_ERROR(
            tensorFromJs(call.args, "rowToken", "dispatch: layout.rowToken", &args->rowToken, call.keep.get()));
        return parseQuantizedOutput(call, "dispatch", &args->out, &args->scales, &args->scaleFormat);
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.dispatch(*args, ctx); });
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<SwigluArgs>();
  return bind(
      info, "swiglu",
      [&](Call& call) {
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "h", "swiglu: h", &args->h, call.keep.get()));
        return parseQuantizedOutput(call, "swiglu", &args->out, &args->scales, &args->scaleFormat);
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.swiglu(*args, ctx); });
}

Napi::Value RouterLogits(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<RouterLogitsArgs>();
  return bind(
      info, "routerLogits",
      [&](Call& call) {
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "x", "routerLogits: x", &args->x, call.keep.get()));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "w", "routerLogits: w", &args->w, call.keep.get()));
        return tensorFromJs(call.args, "logits", "routerLogits: logits", &args->logits, call.keep.get());
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.routerLogits(*args, ctx); });
}

Napi::Value Combine(const Napi::CallbackInfo& info) {
  auto args = std::make_shared<CombineArgs>();
  return bind(
      info, "combine",
      [&](Call& call) {
        KeepAlive* keep = call.keep.get();
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "y", "combine: y", &args->y, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "slotRow", "combine: layout.slotRow", &args->slotRow, keep));
        MOE_RETURN_IF_ERROR(tensorFromJs(call.args, "weights", "combine: weights", &args->weights, keep));
        MOE_RETURN_IF_ERROR(optionalTensorFromJs(call.args, "shared", "combine: options.shared", &args->shared, keep));
        return tensorFromJs(call.args, "out", "combine: out", &args->out, keep);
      },
      [args](Backend& backend, ExecContext& ctx) { return backend.combine(*args, ctx); });
}

}  // namespace moe::addon
