// The one table of operations that every backend implements (after
// ggml-backend). The CPU backend is the reference: every other backend is
// tested against it, op by op, on random inputs.
#pragma once

#include "core/ops.h"
#include "core/status.h"

namespace moe {

enum class OpKind { kQuantizeActivations, kQuantizeWeights, kDequantize, kGemmFp8 };

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  virtual bool supportsOp(OpKind op) const = 0;

  virtual Status quantizeActivations(const QuantizeArgs& args) = 0;
  virtual Status quantizeWeights(const QuantizeArgs& args) = 0;
  virtual Status dequantize(const DequantizeArgs& args) = 0;
  virtual Status gemmFp8(const GemmFp8Args& args) = 0;
};

}  // namespace moe
