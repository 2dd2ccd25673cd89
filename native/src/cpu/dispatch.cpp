#include "cpu/dispatch.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "cpu/first_failure.h"
#include "cpu/index_snapshot.h"
#include "cpu/quantize.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// The shapes, dtypes and options: core/moe_op_checks (shared with the CUDA
// backend). rowToken's values are data, read here once its shape is known good.
Status validateDispatch(const DispatchArgs& a) {
  MOE_RETURN_IF_ERROR(checkDispatch(a));
  const int64_t tokens = a.x.dim(0);
  const int32_t* rows = a.rowToken.as<const int32_t>();  // [R] i32
  for (int64_t r = 0; r < a.rowToken.dim(0); ++r) {
    if (rows[r] < -1 || rows[r] >= tokens) {
      return Status(Code::kRange, "dispatch: rowToken[" + str(r) + "] = " + str(rows[r]) + " is out of range [-1, " +
                                      str(tokens) + ")");
    }
  }
  return Status::ok();
}

// Copies rows [r0, r1) bit-exactly in x's dtype; padding rows become zero bytes (+0).
void copyRows(const DispatchArgs& a, int64_t r0, int64_t r1) {
  const int64_t rowBytes = a.x.dim(1) * static_cast<int64_t>(dtypeSize(a.x.dtype));
  const int32_t* rowToken = a.rowToken.as<const int32_t>();  // [R] i32
  const char* x = a.x.as<const char>();                      // [T, H] f32 or bf16
  char* out = a.out.as<char>();                              // [R, H] x's dtype
  for (int64_t r = r0; r < r1; ++r) {
    char* dst = out + r * rowBytes;
    if (rowToken[r] < 0) {
      std::memset(dst, 0, static_cast<size_t>(rowBytes));
    } else {
      std::memcpy(dst, x + rowToken[r] * rowBytes, static_cast<size_t>(rowBytes));
    }
  }
}

// Quantizes rows [r0, r1) 1x128 with quantizeRow (bf16 rows widen to f32 in
// registers: quantizeRowBF16, same bits, no copy); a padding row (token -1)
// quantizes a zero row: q = 0, every scale groupScale(0). Returns the first row
// holding a NaN or infinity, or r1 if none.
int64_t quantizeRows(const DispatchArgs& a, int64_t r0, int64_t r1) {
  const int64_t hidden = a.x.dim(1), groups = ceilDiv(hidden, kQuantGroup);
  const int32_t* rowToken = a.rowToken.as<const int32_t>();  // [R] i32
  uint8_t* q = a.out.as<uint8_t>();                          // [R, H] fp8
  float* scales = a.scales.as<float>();                      // [R, ceil(H/128)] f32
  const float zeroScale = groupScale(0.0f, a.scaleFormat);
  int64_t firstBad = r1;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t token = rowToken[r];
    bool finite = true;
    if (token < 0) {
      std::memset(q + r * hidden, 0, static_cast<size_t>(hidden));
      std::fill(scales + r * groups, scales + (r + 1) * groups, zeroScale);
    } else if (a.x.dtype == DType::kF32) {
      finite = quantizeRow(a.x.as<const float>() + token * hidden, hidden, a.scaleFormat, q + r * hidden,
                           scales + r * groups);
    } else {
      finite = quantizeRowBF16(a.x.as<const uint16_t>() + token * hidden, hidden, a.scaleFormat, q + r * hidden,
                               scales + r * groups);
    }
    if (!finite && firstBad == r1) firstBad = r;
  }
  return firstBad;
}


// Quantizing is a pure function of the row, so when tokens are dispatched to
// several rows (top-k routing) each token is quantized once into a [T, H]
// buffer and its rows copy the fp8 bytes and scales: the same bits, k times
// less arithmetic and one read of x instead of k gathers of it.
Status quantizeOncePerToken(const DispatchArgs& args, FirstFailure& firstBad) {
  const int64_t rows = args.rowToken.dim(0), tokens = args.x.dim(0), hidden = args.x.dim(1);
  const int64_t groups = ceilDiv(hidden, kQuantGroup);
  std::unique_ptr<uint8_t[]> qx, finite;
  std::unique_ptr<float[]> sx;
  try {
    qx.reset(new uint8_t[static_cast<size_t>(tokens * hidden)]);     // [T, H] fp8
    sx.reset(new float[static_cast<size_t>(tokens * groups)]);      // [T, groups] f32
    finite.reset(new uint8_t[static_cast<size_t>(tokens)]);         // [T] 1 if x[t] is finite
  } catch (const std::bad_alloc&) {
    return Status(Code::kInternal, "dispatch: out of memory for the quantized tokens");
  }
  const int64_t tokensPerTask = std::max<int64_t>(1, 16384 / std::max<int64_t>(hidden, 1));
  ThreadPool::instance().parallelFor(ceilDiv(tokens, tokensPerTask), [&](int64_t task, int) {
    const int64_t t1 = std::min(tokens, (task + 1) * tokensPerTask);
    for (int64_t t = task * tokensPerTask; t < t1; ++t) {
      bool ok;
      if (args.x.dtype == DType::kF32) {
        ok = quantizeRow(args.x.as<const float>() + t * hidden, hidden, args.scaleFormat, qx.get() + t * hidden,
                         sx.get() + t * groups);
      } else {
        ok = quantizeRowBF16(args.x.as<const uint16_t>() + t * hidden, hidden, args.scaleFormat,
                             qx.get() + t * hidden, sx.get() + t * groups);
      }
      finite[t] = ok ? 1 : 0;
    }
  });
  const int32_t* rowToken = args.rowToken.as<const int32_t>();  // [R] i32
  uint8_t* q = args.out.as<uint8_t>();                          // [R, H] fp8
  float* scales = args.scales.as<float>();                      // [R, groups] f32
  const float zeroScale = groupScale(0.0f, args.scaleFormat);
  const int64_t rowsPerTask = std::max<int64_t>(1, 65536 / std::max<int64_t>(hidden, 1));
  ThreadPool::instance().parallelFor(ceilDiv(rows, rowsPerTask), [&](int64_t task, int) {
    const int64_t r0 = task * rowsPerTask, r1 = std::min(rows, r0 + rowsPerTask);
    int64_t bad = r1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t token = rowToken[r];
      if (token < 0) {
        std::memset(q + r * hidden, 0, static_cast<size_t>(hidden));
        std::fill(scales + r * groups, scales + (r + 1) * groups, zeroScale);
        continue;
      }
      std::memcpy(q + r * hidden, qx.get() + token * hidden, static_cast<size_t>(hidden));
      std::memcpy(scales + r * groups, sx.get() + token * groups, static_cast<size_t>(groups) * sizeof(float));
      if (!finite[token] && bad == r1) bad = r;
    }
    if (bad < r1) firstBad.report(bad);
  });
  return Status::ok();
}

}  // namespace

Status dispatch(const DispatchArgs& input) {
  DispatchArgs args = input;
  IndexSnapshot rowToken;  // validated and read from one copy (index_snapshot.h)
  if (!rowToken.take(&args.rowToken)) return Status(Code::kInternal, "dispatch: out of memory for a copy of rowToken");
  MOE_RETURN_IF_ERROR(validateDispatch(args));
  const int64_t rows = args.rowToken.dim(0), tokens = args.x.dim(0), hidden = args.x.dim(1);
  const bool quantize = args.scales.data != nullptr;
  FirstFailure firstBad;  // first row with a non-finite value
  if (quantize && rows >= 2 * tokens && tokens > 0) {
    MOE_RETURN_IF_ERROR(quantizeOncePerToken(args, firstBad));
  } else {
    // ~16K elements per task: large enough to amortize the hand-out, small enough to balance.
    const int64_t rowsPerTask = std::max<int64_t>(1, 16384 / std::max<int64_t>(hidden, 1));
    ThreadPool::instance().parallelFor(ceilDiv(rows, rowsPerTask), [&](int64_t task, int) {
      const int64_t r0 = task * rowsPerTask, r1 = std::min(rows, r0 + rowsPerTask);
      if (!quantize) {
        copyRows(args, r0, r1);
        return;
      }
      const int64_t bad = quantizeRows(args, r0, r1);
      if (bad < r1) firstBad.report(bad);
    });
  }
  if (firstBad.any()) {
    const int64_t bad = firstBad.row();
    return Status(Code::kNonFinite, "dispatch: x[" + str(args.rowToken.as<const int32_t>()[bad]) +
                                        "] (dispatched to row " + str(bad) + ") contains NaN or infinity");
  }
  return Status::ok();
}

}  // namespace moe::cpu
