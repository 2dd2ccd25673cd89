#include "cpu/cpu_backend.h"

#include "core/op_checks.h"

#include <string>

#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/dispatch_layout.h"
#include "cpu/gemm_fp8.h"
#include "cpu/grouped_gemm_fp8.h"
#include "cpu/quantize.h"
#include "cpu/route.h"
#include "cpu/router_logits.h"
#include "cpu/swiglu.h"

namespace moe::cpu {

namespace {

// Native code checks what it is handed even though TypeScript validated it
// first: a caller of the addon that skips lib/ must get an error, not a crash.
Status validateQuantize(const QuantizeArgs& args, int64_t blockRows, const char* op) {
  const std::string name(op);
  MOE_RETURN_IF_ERROR(expect2dContiguous(args.x, (name + ": x").c_str()));
  MOE_RETURN_IF_ERROR(expectFloatInput(args.x, (name + ": x").c_str()));
  const int64_t rows = args.x.dim(0), cols = args.x.dim(1);
  MOE_RETURN_IF_ERROR(expectKMultipleOf16(cols, (name + ": x").c_str()));
  MOE_RETURN_IF_ERROR(expectDtype(args.q, DType::kFP8E4M3, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectShape(args.q, {rows, cols}, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectContiguous(args.q, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectDtype(args.scales, DType::kF32, (name + ": scales").c_str()));
  MOE_RETURN_IF_ERROR(
      expectShape(args.scales, {ceilDiv(rows, blockRows), ceilDiv(cols, kQuantGroup)}, (name + ": scales").c_str()));
  return expectContiguous(args.scales, (name + ": scales").c_str());
}

Status prefixed(const char* op, Status status) {
  if (status.isOk()) return status;
  return Status(status.code(), std::string(op) + ": " + status.message());
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  bool supportsOp(OpKind) const override { return true; }

  Status quantizeActivations(const QuantizeArgs& args) override {
    MOE_RETURN_IF_ERROR(validateQuantize(args, 1, "quantizeActivations"));
    return prefixed("quantizeActivations", quantizeBlocks(args, 1));
  }

  Status quantizeWeights(const QuantizeArgs& args) override {
    MOE_RETURN_IF_ERROR(validateQuantize(args, kWeightBlockRows, "quantizeWeights"));
    return prefixed("quantizeWeights", quantizeBlocks(args, kWeightBlockRows));
  }

  Status dequantize(const DequantizeArgs& args) override {
    MOE_RETURN_IF_ERROR(expect2dContiguous(args.q, "dequantize: q.data"));
    MOE_RETURN_IF_ERROR(expectDtype(args.q, DType::kFP8E4M3, "dequantize: q.data"));
    const int64_t rows = args.q.dim(0), cols = args.q.dim(1);
    if (args.blockRows != 1 && args.blockRows != kWeightBlockRows) {
      return Status(Code::kRange, "dequantize: blockRows must be 1 or 128, got " + std::to_string(args.blockRows));
    }
    MOE_RETURN_IF_ERROR(expectDtype(args.scales, DType::kF32, "dequantize: q.scales"));
    MOE_RETURN_IF_ERROR(expectShape(args.scales, {ceilDiv(rows, args.blockRows), ceilDiv(cols, kQuantGroup)},
                                    "dequantize: q.scales"));
    MOE_RETURN_IF_ERROR(expectContiguous(args.scales, "dequantize: q.scales"));
    MOE_RETURN_IF_ERROR(expectFloatInput(args.out, "dequantize: out"));
    MOE_RETURN_IF_ERROR(expectShape(args.out, {rows, cols}, "dequantize: out"));
    MOE_RETURN_IF_ERROR(expectContiguous(args.out, "dequantize: out"));
    return prefixed("dequantize", dequantizeBlocks(args));
  }

  Status gemmFp8(const GemmFp8Args& args) override {
    MOE_RETURN_IF_ERROR(checkGemmFp8(args));
    return cpu::gemmFp8(args);
  }

  // The MoE operations validate their own arguments (they know their layouts best).
  Status groupedGemmFp8(const GroupedGemmFp8Args& args) override { return cpu::groupedGemmFp8(args); }
  Status routerLogits(const RouterLogitsArgs& args) override { return cpu::routerLogits(args); }
  Status route(const RouteArgs& args) override { return cpu::route(args); }
  Status dispatchLayout(const LayoutArgs& args) override { return cpu::dispatchLayout(args); }
  Status dispatch(const DispatchArgs& args) override { return cpu::dispatch(args); }
  Status swiglu(const SwigluArgs& args) override { return cpu::swiglu(args); }
  Status combine(const CombineArgs& args) override { return cpu::combine(args); }
};

}  // namespace

Backend& cpuBackend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace moe::cpu
