// fp8 quantize / dequantize kernels (SPEC.md "Quantization"), bit for bit the
// CPU backend's results. Arguments are checked by quantize_entry.cpp before these run.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

namespace moe_cuda {

struct QuantizeProblem {
  const void* x;      // [rows, cols] f32 or bf16
  bool x_bf16;
  uint8_t* q;         // [rows, cols] fp8 e4m3
  float* scales;      // [ceil(rows / block_rows), ceil(cols / 128)] f32
  int32_t* nonfinite; // optional: set to 1 if x holds NaN / +-inf (zeroed first by the caller)
  int64_t rows, cols; // rows >= 1, cols >= 1, each < 2^31
  int64_t block_rows; // 1 or 128
  bool ue8m0;
};

struct DequantizeProblem {
  const uint8_t* q;    // [rows, cols] fp8 e4m3
  const float* scales; // [ceil(rows / block_rows), ceil(cols / 128)] f32
  void* out;           // [rows, cols] f32 or bf16
  bool out_bf16;
  int64_t rows, cols;  // >= 1, each < 2^31
  int64_t block_rows;  // 1 or 128
};

// Enqueue the kernel on `stream`; return a moe_cuda_status.
int quantize_run(const QuantizeProblem& p, cudaStream_t stream, char* err, size_t err_len);
int dequantize_run(const DequantizeProblem& p, cudaStream_t stream, char* err, size_t err_len);

}  // namespace moe_cuda
