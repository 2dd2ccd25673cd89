// The one table of operations that every backend implements (after
// ggml-backend). The CPU backend is the reference: every other backend is
// tested against it, op by op, on random inputs.
#pragma once

#include "core/ops.h"
#include "core/status.h"

#include <string>

namespace moe {

enum class OpKind {
  kQuantizeActivations,
  kQuantizeWeights,
  kDequantize,
  kGemmFp8,
  kGroupedGemmFp8,
  kGroupedGemmFp8Masked,
  kRoute,
  kDispatchLayout,
  kDispatch,
  kSwiglu,
  kCombine,
  kRouterLogits,
  kExpertUp,        // optional fusion: moeForward runs dispatch, groupedGemmFp8 and swiglu without it
  kRouterQuantize,  // optional fusion: moeForward runs routerLogits and quantizeActivations without it
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  virtual bool supportsOp(OpKind op) const = 0;

  virtual Status quantizeActivations(const QuantizeArgs& args) = 0;
  virtual Status quantizeWeights(const QuantizeArgs& args) = 0;
  virtual Status dequantize(const DequantizeArgs& args) = 0;
  virtual Status gemmFp8(const GemmFp8Args& args) = 0;
  // groupIndex set: the contiguous layout; maskedM set: the masked layout.
  virtual Status groupedGemmFp8(const GroupedGemmFp8Args& args) = 0;

  virtual Status routerLogits(const RouterLogitsArgs& args) = 0;
  virtual Status route(const RouteArgs& args) = 0;
  virtual Status dispatchLayout(const LayoutArgs& args) = 0;
  virtual Status dispatch(const DispatchArgs& args) = 0;
  virtual Status swiglu(const SwigluArgs& args) = 0;
  virtual Status combine(const CombineArgs& args) = 0;

  // Optional fused operations: a backend that lacks one reports it through
  // supportsOp and callers run the separate operations instead.
  virtual Status expertUp(const ExpertUpArgs&) { return Status(Code::kUnsupported, std::string("expertUp does not run on the ") + name() + " backend"); }
  virtual Status routerLogitsQuantize(const RouterQuantizeArgs&) {
    return Status(Code::kUnsupported, std::string("routerLogitsQuantize does not run on the ") + name() + " backend");
  }
};

}  // namespace moe
