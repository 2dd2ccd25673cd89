// Portable C++ kernels of the fp8 GEMM (see gemm_fp8_kernels.h), for CPUs
// without AVX2/FMA/F16C. Compiled with the baseline flags only; the compiler
// may auto-vectorize the loops with SSE2. fp8 is decoded exactly through the
// 256-entry table, so no extra factor needs folding into the scales.
#include <cstdint>
#include <cstring>

#include "core/numerics.h"
#include "cpu/gemm_fp8_kernels.h"

namespace moe::cpu::fp8gemm {
namespace {

constexpr int kMr = 4;
constexpr int kNr = 8;

inline bool isNanCode(uint8_t v) { return (v & 0x7F) == 0x7F; }

bool packA(const uint8_t* src, int64_t lds, const float* scales, int64_t ldScales, int64_t rows,
           int64_t k0, int64_t kc, float* dst, int64_t ldd) {
  const float* table = fp8DecodeTable().value;
  bool nan = false;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * lds + k0;
    float* out = dst + r * ldd;
    for (int64_t k = 0; k < kc; k += 16) {
      const float scale = scales[r * ldScales + ((k0 + k) >> 7)];
      for (int64_t t = k; t < k + 16; ++t) {
        nan |= isNanCode(s[t]);
        out[t] = table[s[t]] * scale;
      }
    }
  }
  return nan;
}

bool packB(const uint8_t* src, int64_t lds, const float* scaleRow, int64_t rows, int64_t k0, int64_t kc,
           float* dst) {
  const float* table = fp8DecodeTable().value;
  bool nan = false;
  for (int64_t k = 0; k < kc; ++k) {
    const float scale = scaleRow[(k0 + k) >> 7];
    for (int64_t j = 0; j < kNr; ++j) {
      float v = 0.0f;
      if (j < rows) {
        const uint8_t byte = src[j * lds + k0 + k];
        nan |= isNanCode(byte);
        v = table[byte] * scale;
      }
      dst[k * kNr + j] = v;
    }
  }
  return nan;
}

template <int MR>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, TileOut out,
           void* d, int64_t ldd) {
  float acc[MR][kNr] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) {
      const float av = a[i * kKc + k];
      for (int j = 0; j < kNr; ++j) acc[i][j] += av * b[k * kNr + j];
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < kNr; ++j) {
      const float v = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
      if (out == TileOut::kAccumulator) c[i * ldc + j] = v;
      else if (out == TileOut::kF32) static_cast<float*>(d)[i * ldd + j] = v;
      else static_cast<uint16_t*>(d)[i * ldd + j] = bf16FromFloat(v);
    }
  }
}

void scaleForStream(const float* src, int64_t rows, int64_t K, int64_t ld, const float* scaleRow, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) dst[r * ld + k] = src[r * ld + k] * scaleRow[k >> 7];
}

// Each B row is decoded a chunk at a time into a stack buffer (L1) and dotted
// with every A row; 8 partial sums per row let the compiler vectorize.
bool streamRows(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                int64_t K, float* out, int64_t ldo) {
  constexpr int64_t kChunk = 256;
  const float* table = fp8DecodeTable().value;
  bool nan = false;
  float decoded[kChunk];
  for (int64_t j = 0; j < nRows; ++j) {
    for (int64_t m = 0; m < rows; ++m) out[m * ldo + j] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      const int64_t len = K - k0 < kChunk ? K - k0 : kChunk;  // a multiple of 16
      for (int64_t t = 0; t < len; ++t) {
        const uint8_t byte = b[j * ldb + k0 + t];
        nan |= isNanCode(byte);
        decoded[t] = table[byte];
      }
      for (int64_t m = 0; m < rows; ++m) {
        const float* av = a + m * lda + k0;
        float part[8] = {};
        for (int64_t t = 0; t < len; t += 8)
          for (int u = 0; u < 8; ++u) part[u] += av[t + u] * decoded[t + u];
        out[m * ldo + j] += ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
      }
    }
  }
  return nan;
}

void storeTile(const float* c, int64_t ldc, int64_t rows, int64_t cols, void* d, int64_t ldd, bool bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    if (bf16) {
      uint16_t* out = static_cast<uint16_t*>(d) + r * ldd;
      for (int64_t j = 0; j < cols; ++j) out[j] = bf16FromFloat(c[r * ldc + j]);
    } else {
      std::memcpy(static_cast<float*>(d) + r * ldd, c + r * ldc, static_cast<size_t>(cols) * sizeof(float));
    }
  }
}

// Baseline x86-64 has no FMA: the "peak" here is SSE2 multiply + add pairs,
// counted as 2 flops, with the loop written so the compiler keeps 4-wide
// vectors in 8 independent chains.
double fmaBurn(int64_t iters, float* sink) {
  constexpr int kLanes = 32;
  float acc[kLanes];
  for (int i = 0; i < kLanes; ++i) acc[i] = 1.0f + 0.01f * i;
  const float x = 0.999f, y = 0.001f;
  for (int64_t it = 0; it < iters; ++it) {
    for (int i = 0; i < kLanes; ++i) acc[i] = acc[i] * x + y;
  }
  float sum = 0.0f;
  for (int i = 0; i < kLanes; ++i) sum += acc[i];
  *sink = sum;
  return static_cast<double>(iters) * kLanes * 2;
}

}  // namespace

extern const KernelSet kPortableKernels = {
    "portable",
    kMr,
    kNr,
    8,  // streamMaxM
    packA,
    packB,
    {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
     nullptr, nullptr, nullptr, nullptr, nullptr, nullptr},
    scaleForStream,
    streamRows,
    storeTile,
    fmaBurn,
};

}  // namespace moe::cpu::fp8gemm
