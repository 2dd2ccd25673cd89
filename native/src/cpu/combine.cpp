#include "cpu/combine.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/numerics.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

// Columns per task: tasks tile [T, H] so that decode (a few tokens) still
// spreads over the threads; each output element is summed by one task in the
// same fixed order, so the tiling never changes the bits.
constexpr int64_t kColsPerTask = 2048;

std::string str(int64_t v) { return std::to_string(v); }

bool isFloatDtype(DType d) { return d == DType::kF32 || d == DType::kBF16; }

Status expectFloat2d(const TensorView& t, const char* what) {
  if (t.ndim != 2) return Status(Code::kShape, std::string(what) + ": expected a 2-D tensor, got shape " + t.shapeString());
  if (!isFloatDtype(t.dtype)) {
    return Status(Code::kDtype, std::string(what) + ": expected dtype f32 or bf16, got " + dtypeName(t.dtype));
  }
  return expectContiguous(t, what);
}

Status validateSlots(const CombineArgs& a, int64_t rows) {
  MOE_RETURN_IF_ERROR(expectDtype(a.slotRow, DType::kI32, "combine: slotRow"));
  if (a.slotRow.ndim != 2) return Status(Code::kShape, "combine: slotRow must be 2-D [T, k], got shape " + a.slotRow.shapeString());
  MOE_RETURN_IF_ERROR(expectContiguous(a.slotRow, "combine: slotRow"));
  const int64_t tokens = a.slotRow.dim(0), slots = a.slotRow.dim(1);
  MOE_RETURN_IF_ERROR(expectDtype(a.weights, DType::kF32, "combine: weights"));
  MOE_RETURN_IF_ERROR(expectShape(a.weights, {tokens, slots}, "combine: weights"));
  MOE_RETURN_IF_ERROR(expectContiguous(a.weights, "combine: weights"));
  const int32_t* slotRow = a.slotRow.as<const int32_t>();  // [T, k] i32
  const float* weights = a.weights.as<const float>();      // [T, k] f32
  for (int64_t i = 0; i < tokens * slots; ++i) {
    if (slotRow[i] < -1 || slotRow[i] >= rows) {
      return Status(Code::kRange, "combine: slotRow[" + str(i / slots) + ", " + str(i % slots) + "] = " + str(slotRow[i]) +
                                      " is out of range [-1, " + str(rows) + ")");
    }
    if (!std::isfinite(weights[i])) {
      return Status(Code::kNonFinite, "combine: weights[" + str(i / slots) + ", " + str(i % slots) + "] = " +
                                          std::to_string(weights[i]) + " is not finite");
    }
  }
  return Status::ok();
}

Status validateCombine(const CombineArgs& a) {
  MOE_RETURN_IF_ERROR(expectFloat2d(a.y, "combine: y"));
  MOE_RETURN_IF_ERROR(validateSlots(a, a.y.dim(0)));
  const int64_t tokens = a.slotRow.dim(0), hidden = a.y.dim(1);
  if (a.shared.data != nullptr) {
    MOE_RETURN_IF_ERROR(expectFloat2d(a.shared, "combine: shared"));
    MOE_RETURN_IF_ERROR(expectShape(a.shared, {tokens, hidden}, "combine: shared"));
  }
  MOE_RETURN_IF_ERROR(expectFloat2d(a.out, "combine: out"));
  return expectShape(a.out, {tokens, hidden}, "combine: out");
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16ToFloat(v); }

// acc [n] += w * src [n]: a plain loop that -O3 vectorizes (no FMA contraction
// without -mfma, so the product is rounded before the add, as in the reference).
template <typename T>
void accumulate(float* acc, const T* src, float w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * widen(src[c]);
}

template <typename T>
void addRow(float* acc, const T* src, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += widen(src[c]);
}

// Dispatches on a row's dtype: acc [n] += w * row [n] (w == nullptr: plain add).
void accumulateRow(float* acc, const TensorView& t, int64_t row, int64_t c0, int64_t n, const float* w) {
  const int64_t offset = row * t.dim(1) + c0;
  if (t.dtype == DType::kF32) {
    const float* src = t.as<const float>() + offset;
    w ? accumulate(acc, src, *w, n) : addRow(acc, src, n);
  } else {
    const uint16_t* src = t.as<const uint16_t>() + offset;
    w ? accumulate(acc, src, *w, n) : addRow(acc, src, n);
  }
}

void storeRow(const TensorView& out, int64_t token, int64_t c0, int64_t n, const float* acc) {
  const int64_t offset = token * out.dim(1) + c0;
  if (out.dtype == DType::kF32) {
    std::copy(acc, acc + n, out.as<float>() + offset);
  } else {
    uint16_t* dst = out.as<uint16_t>() + offset;  // rounded once, nearest even
    for (int64_t c = 0; c < n; ++c) dst[c] = bf16FromFloat(acc[c]);
  }
}

// out[t, c0 .. c0+n) for one token: slots 0..k-1 in order, then the shared term.
void combineTile(const CombineArgs& a, int64_t token, int64_t c0, int64_t n, float* acc /* [n] f32 */) {
  const int64_t slots = a.slotRow.dim(1);
  const int32_t* slotRow = a.slotRow.as<const int32_t>() + token * slots;  // [k] i32
  const float* weights = a.weights.as<const float>() + token * slots;      // [k] f32
  std::fill(acc, acc + n, 0.0f);
  for (int64_t j = 0; j < slots; ++j) {
    if (slotRow[j] >= 0) accumulateRow(acc, a.y, slotRow[j], c0, n, &weights[j]);
  }
  if (a.shared.data != nullptr) accumulateRow(acc, a.shared, token, c0, n, nullptr);
  storeRow(a.out, token, c0, n, acc);
}

}  // namespace

Status combine(const CombineArgs& args) {
  MOE_RETURN_IF_ERROR(validateCombine(args));
  const int64_t tokens = args.out.dim(0), hidden = args.out.dim(1);
  const int64_t colsPerTask = std::min<int64_t>(kColsPerTask, std::max<int64_t>(hidden, 1));
  const int64_t colTiles = ceilDiv(hidden, colsPerTask);
  // ~8K output elements per task (each reads k rows): enough work to amortize the hand-out.
  const int64_t tokensPerTask = std::max<int64_t>(1, 8192 / colsPerTask);
  const int64_t tokenTiles = ceilDiv(tokens, tokensPerTask);
  ThreadPool::instance().parallelFor(tokenTiles * colTiles, [&](int64_t task, int) {
    float acc[kColsPerTask];  // [colsPerTask] f32 accumulator of one token's tile
    const int64_t c0 = (task % colTiles) * colsPerTask;
    const int64_t n = std::min(hidden, c0 + colsPerTask) - c0;
    const int64_t t0 = (task / colTiles) * tokensPerTask;
    const int64_t t1 = std::min(tokens, t0 + tokensPerTask);
    for (int64_t t = t0; t < t1; ++t) combineTile(args, t, c0, n, acc);
  });
  return Status::ok();
}

}  // namespace moe::cpu
