#include "cpu/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/one_plus_exp.h"
#include "cpu/quantize_row_kernels.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

constexpr float kMinAmax = 1e-4f;

inline void storeFromFloat(const TensorView& t, int64_t i, float v) {
  if (t.dtype == DType::kBF16) {
    t.as<uint16_t>()[i] = bf16FromFloat(v);
  } else {
    t.as<float>()[i] = v;
  }
}

}  // namespace

float groupScale(float amax, ScaleFormat format) {
  const float scale = std::max(amax, kMinAmax) / kFp8E4M3Max;
  if (format == ScaleFormat::kF32) return scale;
  // ue8m0: 2^ceil(log2 s), computed exactly from the binary exponent.
  int exponent = 0;
  const float mantissa = std::frexp(scale, &exponent);  // scale = mantissa * 2^exponent, mantissa in [0.5, 1)
  return std::ldexp(1.0f, mantissa == 0.5f ? exponent - 1 : exponent);
}

namespace qrow {

float scalarAbsMaxF32(const float* x, int64_t ld, int64_t rows, int64_t cols) {
  float amax = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[r * ld + c]));
  }
  return amax;
}

float scalarAbsMaxBF16(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols) {
  float amax = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(bf16ToFloat(x[r * ld + c])));
  }
  return amax;
}

namespace {

// ---- The portable set: the scalar reference definitions ----------------------

inline float loadValue(float v) { return v; }
inline float loadValue(uint16_t v) { return bf16ToFloat(v); }

// One block of rows x cols: amax (NaN ignored), scale, q = fp8(x / scale).
template <typename T>
bool scalarTile(const T* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format, uint8_t* q, int64_t ldq,
                float* scaleOut) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = loadValue(x[r * ld + c]);
      finite &= std::isfinite(v);
      amax = std::max(amax, std::fabs(v));
    }
  }
  const float scale = groupScale(amax, format);
  *scaleOut = scale;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) q[r * ldq + c] = fp8FromFloat(loadValue(x[r * ld + c]) / scale);
  }
  return finite;
}

template <typename T>
bool scalarRow(const T* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  bool finite = true;
  for (int64_t c0 = 0; c0 < cols; c0 += kQuantGroup) {
    const int64_t n = std::min(cols - c0, kQuantGroup);
    finite &= scalarTile(row + c0, 0, 1, n, format, q + c0, 0, scales + c0 / kQuantGroup);
  }
  return finite;
}

// silu(g) * up with the vector kernels' exp (quantize_row_kernels.h, qexp):
// the same operations in the same order, every multiply-add an explicit fma.
float siluMul(float g, float up) { return g / qrow::onePlusExp(-g) * up; }

template <typename T>
bool scalarSwiglu(const T* gate, const T* up, int64_t n, float* act) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float v = siluMul(loadValue(gate[i]), loadValue(up[i]));
    finite &= std::isfinite(v);
    act[i] = v;
  }
  return finite;
}

bool portableRowF32(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return scalarRow(row, cols, format, q, scales);
}
bool portableRowBF16(const uint16_t* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return scalarRow(row, cols, format, q, scales);
}
bool portableTileF32(const float* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format, uint8_t* q,
                     int64_t ldq, float* scale) {
  return scalarTile(x, ld, rows, cols, format, q, ldq, scale);
}
bool portableTileBF16(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format, uint8_t* q,
                      int64_t ldq, float* scale) {
  return scalarTile(x, ld, rows, cols, format, q, ldq, scale);
}
bool portableSwigluF32(const float* gate, const float* up, int64_t n, float* act) {
  return scalarSwiglu(gate, up, n, act);
}
bool portableSwigluBF16(const uint16_t* gate, const uint16_t* up, int64_t n, float* act) {
  return scalarSwiglu(gate, up, n, act);
}
void portableNarrowBF16(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16FromFloat(src[i]);
}

}  // namespace

extern const RowKernels kRowPortable = {
    "portable",     portableRowF32,    portableRowBF16,    portableTileF32,
    portableTileBF16, portableSwigluF32, portableSwigluBF16, portableNarrowBF16,
};

const RowKernels& selectedRowKernels() {
  static const RowKernels& kernels = gemmIsa() == GemmIsa::kAvx512 ? kRowAvx512
                                     : gemmIsa() == GemmIsa::kAvx2 ? kRowAvx2
                                                                   : kRowPortable;
  return kernels;
}

}  // namespace qrow

bool quantizeRow(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return qrow::selectedRowKernels().quantizeRowF32(row, cols, format, q, scales);
}

bool quantizeRowBF16(const uint16_t* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return qrow::selectedRowKernels().quantizeRowBF16(row, cols, format, q, scales);
}

Status quantizeBlocks(const QuantizeArgs& args, int64_t blockRows) {
  const int64_t rows = args.x.dim(0);  // M (activations) or N (weights)
  const int64_t cols = args.x.dim(1);  // K
  const int64_t groups = ceilDiv(cols, kQuantGroup);
  const int64_t rowBlocks = ceilDiv(rows, blockRows);
  const bool bf16 = args.x.dtype == DType::kBF16;
  uint8_t* q = args.q.as<uint8_t>();          // [rows, cols] fp8
  float* scales = args.scales.as<float>();    // [rowBlocks, groups]
  const qrow::RowKernels& kernels = qrow::selectedRowKernels();
  std::atomic<bool> nonFinite{false};

  if (blockRows == 1) {
    // Activations: whole rows (contiguous), ~16K elements per task.
    const int64_t rowsPerTask = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
    ThreadPool::instance().parallelFor(ceilDiv(rows, rowsPerTask), [&](int64_t task, int) {
      const int64_t r1 = std::min(rows, (task + 1) * rowsPerTask);
      bool finite = true;
      for (int64_t r = task * rowsPerTask; r < r1; ++r) {
        finite &= bf16 ? kernels.quantizeRowBF16(args.x.as<const uint16_t>() + r * cols, cols, args.scaleFormat,
                                                 q + r * cols, scales + r * groups)
                       : kernels.quantizeRowF32(args.x.as<const float>() + r * cols, cols, args.scaleFormat,
                                                q + r * cols, scales + r * groups);
      }
      if (!finite) nonFinite.store(true, std::memory_order_relaxed);
    });
  } else {
    // Weights: one task per (row block, group) tile.
    ThreadPool::instance().parallelFor(rowBlocks * groups, [&](int64_t task, int) {
      const int64_t block = task / groups, group = task % groups;
      const int64_t r0 = block * blockRows, c0 = group * kQuantGroup;
      const int64_t n = std::min(rows, r0 + blockRows) - r0, m = std::min(cols, c0 + kQuantGroup) - c0;
      float* scale = scales + block * groups + group;
      const bool finite =
          bf16 ? kernels.quantizeTileBF16(args.x.as<const uint16_t>() + r0 * cols + c0, cols, n, m,
                                          args.scaleFormat, q + r0 * cols + c0, cols, scale)
               : kernels.quantizeTileF32(args.x.as<const float>() + r0 * cols + c0, cols, n, m, args.scaleFormat,
                                         q + r0 * cols + c0, cols, scale);
      if (!finite) nonFinite.store(true, std::memory_order_relaxed);
    });
  }
  if (nonFinite.load()) return Status(Code::kNonFinite, "x contains NaN or infinity");
  return Status::ok();
}

Status dequantizeBlocks(const DequantizeArgs& args) {
  const int64_t rows = args.q.dim(0);
  const int64_t cols = args.q.dim(1);
  const int64_t groups = ceilDiv(cols, kQuantGroup);
  const uint8_t* q = args.q.as<const uint8_t>();       // [rows, cols] fp8
  const float* scales = args.scales.as<const float>();  // [ceil(rows/blockRows), groups]
  const float* decode = fp8DecodeTable().value;
  const int64_t rowsPerTask = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  ThreadPool::instance().parallelFor(ceilDiv(rows, rowsPerTask), [&](int64_t task, int) {
    const int64_t r1 = std::min(rows, (task + 1) * rowsPerTask);
    for (int64_t r = task * rowsPerTask; r < r1; ++r) {
      const float* rowScales = scales + (r / args.blockRows) * groups;
      for (int64_t c = 0; c < cols; ++c) {
        storeFromFloat(args.out, r * cols + c, decode[q[r * cols + c]] * rowScales[c / kQuantGroup]);
      }
    }
  });
  return Status::ok();
}

}  // namespace moe::cpu
