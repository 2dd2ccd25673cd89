// fp8 quantization and dequantization kernels of the CPU backend (SPEC.md,
// "Quantization"). Arguments are validated by the backend before these run.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Scales for groups of `blockRows` rows x 128 channels: blockRows = 1 is the
// per-token activation layout, 128 the weight-block layout.
Status quantizeBlocks(const QuantizeArgs& args, int64_t blockRows);
Status dequantizeBlocks(const DequantizeArgs& args);

// The ops by their names (lib/ops/quantize.ts, Backend::quantizeActivations /
// quantizeWeights; on the GPU moe_cuda_quantize with block_rows 1 / 128).
inline Status quantizeActivations(const QuantizeArgs& args) { return quantizeBlocks(args, 1); }
inline Status quantizeWeights(const QuantizeArgs& args) { return quantizeBlocks(args, kWeightBlockRows); }
inline Status dequantize(const DequantizeArgs& args) { return dequantizeBlocks(args); }

// Quantizes one row of f32 values [cols] 1x128: q [cols] fp8 and scales
// [ceil(cols/128)]. Bit-exact with quantizeBlocks(blockRows = 1); the fused
// kernels (dispatch, swiglu) call it so that all paths agree. Returns false if
// the row holds a NaN or infinity (the outputs are then still written).
// Dispatches at run time to the AVX-512 / AVX2 / scalar kernels
// (quantize_row_kernels.h), which give the same bits.
bool quantizeRow(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales);

// quantizeRow of a bf16 row, widened exactly to f32 (in registers, no copy).
bool quantizeRowBF16(const uint16_t* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales);

// The scale of one group: max(amax, 1e-4) / 448, rounded up to a power of two for ue8m0.
float groupScale(float amax, ScaleFormat format);

}  // namespace moe::cpu
