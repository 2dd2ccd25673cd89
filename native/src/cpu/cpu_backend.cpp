#include "cpu/cpu_backend.h"

#include <string>

#include "core/op_checks.h"
#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/dispatch_layout.h"
#include "cpu/expert_chain.h"
#include "cpu/expert_up.h"
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
// Every call is done when it returns, so the ExecContext changes nothing here.
class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  bool supportsOp(OpKind) const override { return true; }

  Status quantizeActivations(const QuantizeArgs& args, ExecContext&) override {
    MOE_RETURN_IF_ERROR(checkQuantize(args, 1, "quantizeActivations"));
    return prefixed("quantizeActivations: ", cpu::quantizeActivations(args));
  }

  Status quantizeWeights(const QuantizeArgs& args, ExecContext&) override {
    MOE_RETURN_IF_ERROR(checkQuantize(args, kWeightBlockRows, "quantizeWeights"));
    return prefixed("quantizeWeights: ", cpu::quantizeWeights(args));
  }

  Status dequantize(const DequantizeArgs& args, ExecContext&) override {
    MOE_RETURN_IF_ERROR(checkDequantize(args));
    return prefixed("dequantize: ", cpu::dequantize(args));
  }

  Status gemmFp8(const GemmFp8Args& args, ExecContext&) override {
    MOE_RETURN_IF_ERROR(checkGemmFp8(args));
    return cpu::gemmFp8(args);
  }

  // The MoE operations validate their own arguments (they know their layouts best).
  Status groupedGemmFp8(const GroupedGemmFp8Args& args, ExecContext&) override { return cpu::groupedGemmFp8(args); }
  Status routerLogits(const RouterLogitsArgs& args, ExecContext&) override { return cpu::routerLogits(args); }
  Status route(const RouteArgs& args, ExecContext&) override { return cpu::route(args); }
  Status dispatchLayout(const LayoutArgs& args, ExecContext&) override { return cpu::dispatchLayout(args); }
  Status dispatch(const DispatchArgs& args, ExecContext&) override { return cpu::dispatch(args); }
  Status swiglu(const SwigluArgs& args, ExecContext&) override { return cpu::swiglu(args); }
  Status combine(const CombineArgs& args, ExecContext&) override { return cpu::combine(args); }
  Status expertUp(const ExpertUpArgs& args, ExecContext&) override { return cpu::expertUp(args); }
  Status expertChain(const ExpertChainArgs& args, ExecContext&) override { return cpu::expertChain(args); }
  Status routerLogitsQuantize(const RouterQuantizeArgs& args, ExecContext&) override {
    MOE_RETURN_IF_ERROR(checkQuantize(args.quantize, 1, "quantizeActivations"));
    return cpu::routerLogitsQuantize(args);
  }
};

}  // namespace

Backend& cpuBackend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace moe::cpu
