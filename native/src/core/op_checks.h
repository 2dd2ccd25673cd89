// Shape and dtype checks of the quantizers and GEMM operations, shared by every backend: a
// backend calls these before it touches memory, so that each one reports the
// same errors. They look at shapes and dtypes only, never at tensor data
// (which may live on a device).
#pragma once

#include "core/ops.h"

namespace moe {

// Building blocks; `what` names the argument in the message.
Status expect2dContiguous(const TensorView& t, const char* what);
Status expectFloatInput(const TensorView& t, const char* what);  // f32 or bf16
Status expectKMultipleOf16(int64_t k, const char* what);

// Quantization with scales per blockRows x 128 (1: activations, 128: weights); `op` prefixes messages.
Status checkQuantize(const QuantizeArgs& args, int64_t blockRows, const char* op);
Status checkDequantize(const DequantizeArgs& args);
Status checkGemmFp8(const GemmFp8Args& args);

// The extents of a grouped GEMM: groups G, output features N, K, and the rows
// of A (contiguous: R; masked: Mmax per group).
struct GroupedShape {
  int64_t groups = 0, n = 0, k = 0, rows = 0;
  bool masked = false;
};

// With a group table (ops.h): `first` (b or w13) must be [1, ...] and
// *groups becomes the table's count; without one, *groups is unchanged.
Status groupTableGroups(const GroupTable* table, const TensorView& first, int64_t* groups);

// Both layouts (maskedM set: masked). Messages are not prefixed with the op name.
Status checkGroupedGemmFp8(const GroupedGemmFp8Args& args, GroupedShape* shape);

}  // namespace moe
