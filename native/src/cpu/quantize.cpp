#include "cpu/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "core/numerics.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

constexpr float kMinAmax = 1e-4f;

// Reads element i of an f32 or bf16 row as f32 (bf16 widens exactly).
inline float loadAsFloat(const TensorView& t, int64_t i) {
  return t.dtype == DType::kBF16 ? bf16ToFloat(t.as<const uint16_t>()[i]) : t.as<const float>()[i];
}

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

bool quantizeRow(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  bool finite = true;
  for (int64_t c0 = 0; c0 < cols; c0 += kQuantGroup) {
    const int64_t c1 = std::min(cols, c0 + kQuantGroup);
    float amax = 0.0f;
    for (int64_t c = c0; c < c1; ++c) {
      finite &= std::isfinite(row[c]);
      amax = std::max(amax, std::fabs(row[c]));
    }
    const float scale = groupScale(amax, format);
    scales[c0 / kQuantGroup] = scale;
    for (int64_t c = c0; c < c1; ++c) q[c] = fp8FromFloat(row[c] / scale);
  }
  return finite;
}

Status quantizeBlocks(const QuantizeArgs& args, int64_t blockRows) {
  const int64_t rows = args.x.dim(0);  // M (activations) or N (weights)
  const int64_t cols = args.x.dim(1);  // K
  const int64_t groups = ceilDiv(cols, kQuantGroup);
  const int64_t rowBlocks = ceilDiv(rows, blockRows);
  uint8_t* q = args.q.as<uint8_t>();          // [rows, cols] fp8
  float* scales = args.scales.as<float>();    // [rowBlocks, groups]
  std::atomic<bool> nonFinite{false};

  // One task per (row block, group); for activations a task covers several
  // row blocks so that a task is not smaller than a few thousand elements.
  const int64_t blocksPerTask = std::max<int64_t>(1, 4096 / (blockRows * kQuantGroup));
  const int64_t tasks = ceilDiv(rowBlocks, blocksPerTask) * groups;
  ThreadPool::instance().parallelFor(tasks, [&](int64_t task, int) {
    const int64_t group = task % groups;
    const int64_t firstBlock = (task / groups) * blocksPerTask;
    const int64_t lastBlock = std::min(rowBlocks, firstBlock + blocksPerTask);
    const int64_t c0 = group * kQuantGroup;
    const int64_t c1 = std::min(cols, c0 + kQuantGroup);
    for (int64_t block = firstBlock; block < lastBlock; ++block) {
      const int64_t r0 = block * blockRows;
      const int64_t r1 = std::min(rows, r0 + blockRows);
      float amax = 0.0f;
      bool finite = true;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          const float v = loadAsFloat(args.x, r * cols + c);
          finite &= std::isfinite(v);
          amax = std::max(amax, std::fabs(v));
        }
      }
      if (!finite) nonFinite.store(true, std::memory_order_relaxed);
      const float scale = groupScale(amax, args.scaleFormat);
      scales[block * groups + group] = scale;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) q[r * cols + c] = fp8FromFloat(loadAsFloat(args.x, r * cols + c) / scale);
      }
    }
  });
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
