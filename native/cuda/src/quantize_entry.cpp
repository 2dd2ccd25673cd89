// The quantize / dequantize entry points: guards, then the launchers
// (quantize.h). moe_cuda_quantize is quantizeActivations (block_rows 1, 1x128
// per token) and quantizeWeights (block_rows 128, 128x128 blocks) of lib/ and
// the Backend; moe_cuda_dequantize is dequantize.
#include <stdint.h>

#include "api_entry.h"
#include "quantize.h"
#include "runtime.h"

namespace moe_cuda {
namespace {

int check_block_rows(const char* op, int64_t block_rows, char* err, size_t err_len) {
  if (block_rows != 1 && block_rows != 128) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 (activations, 1x128) or 128 (weights, 128x128), got %lld",
                op, (long long)block_rows);
  }
  return MOE_CUDA_OK;
}

}  // namespace
}  // namespace moe_cuda

using namespace moe_cuda;

extern "C" {

int moe_cuda_quantize(const moe_cuda_quantize_args* args, char* err, size_t err_len) {
  static const char* op = "quantize";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (args->x_dtype != MOE_CUDA_DTYPE_F32 && args->x_dtype != MOE_CUDA_DTYPE_BF16) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: x must be f32 or bf16 (dtype %d)", op, args->x_dtype);
  }
  if (args->q_dtype != MOE_CUDA_DTYPE_FP8_E4M3) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: q must be fp8_e4m3 (dtype %d)", op, args->q_dtype);
  }
  if (args->scale_dtype != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d; ue8m0 scales are f32 powers of two)",
                op, args->scale_dtype);
  }
  if (args->scale_format != MOE_CUDA_SCALE_F32 && args->scale_format != MOE_CUDA_SCALE_UE8M0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown scale format %d (0 = f32, 1 = ue8m0)", op,
                args->scale_format);
  }
  int rc;
  if ((rc = check_block_rows(op, args->block_rows, err, err_len)) ||
      (rc = check_extent(op, "rows", args->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "cols (K)", args->cols, 16, err, err_len))) {
    return rc;
  }
  if (args->cols % 16 != 0) {
    return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: cols (K) = %lld must be a positive multiple of 16", op,
                (long long)args->cols);
  }
  const bool bf16 = args->x_dtype == MOE_CUDA_DTYPE_BF16;
  if (args->rows > 0) {
    if (!args->x) return null_pointer(op, "x", err, err_len);
    if (!args->q) return null_pointer(op, "q", err, err_len);
    if (!args->scales) return null_pointer(op, "scales", err, err_len);
    if ((rc = check_aligned(op, "x", args->x, bf16 ? 2 : 4, err, err_len)) ||
        (rc = check_aligned(op, "scales", args->scales, 4, err, err_len))) {
      return rc;
    }
  }
  if (args->nonfinite_flag && (rc = check_aligned(op, "nonfinite_flag", args->nonfinite_flag, 4, err, err_len))) return rc;
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (args->nonfinite_flag) MOE_CUDA_CHECK(cudaMemsetAsync(args->nonfinite_flag, 0, sizeof(int32_t), stream));
  if (args->rows == 0) return MOE_CUDA_OK;
  QuantizeProblem p{};
  p.x = args->x;
  p.x_bf16 = bf16;
  p.q = static_cast<uint8_t*>(args->q);
  p.scales = args->scales;
  p.nonfinite = args->nonfinite_flag;
  p.rows = args->rows;
  p.cols = args->cols;
  p.block_rows = args->block_rows;
  p.ue8m0 = args->scale_format == MOE_CUDA_SCALE_UE8M0;
  return quantize_run(p, stream, err, err_len);
}

int moe_cuda_dequantize(const moe_cuda_dequantize_args* args, char* err, size_t err_len) {
  static const char* op = "dequantize";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (args->q_dtype != MOE_CUDA_DTYPE_FP8_E4M3) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: q must be fp8_e4m3 (dtype %d)", op, args->q_dtype);
  }
  if (args->scale_dtype != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d)", op, args->scale_dtype);
  }
  if (args->out_dtype != MOE_CUDA_DTYPE_F32 && args->out_dtype != MOE_CUDA_DTYPE_BF16) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: the output must be f32 or bf16 (dtype %d)", op, args->out_dtype);
  }
  int rc;
  if ((rc = check_block_rows(op, args->block_rows, err, err_len)) ||
      (rc = check_extent(op, "rows", args->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "cols", args->cols, 0, err, err_len))) {
    return rc;
  }
  const bool bf16 = args->out_dtype == MOE_CUDA_DTYPE_BF16;
  if (args->rows == 0 || args->cols == 0) return ready(nullptr, err, err_len);
  if (!args->q) return null_pointer(op, "q", err, err_len);
  if (!args->scales) return null_pointer(op, "scales", err, err_len);
  if (!args->out) return null_pointer(op, "out", err, err_len);
  if ((rc = check_aligned(op, "scales", args->scales, 4, err, err_len)) ||
      (rc = check_aligned(op, "out", args->out, bf16 ? 2 : 4, err, err_len))) {
    return rc;
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  DequantizeProblem p{};
  p.q = static_cast<const uint8_t*>(args->q);
  p.scales = args->scales;
  p.out = args->out;
  p.out_bf16 = bf16;
  p.rows = args->rows;
  p.cols = args->cols;
  p.block_rows = args->block_rows;
  return dequantize_run(p, stream, err, err_len);
}

}  // extern "C"
