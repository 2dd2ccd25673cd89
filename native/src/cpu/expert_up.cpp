#include "cpu/expert_up.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "core/op_checks.h"
#include "cpu/gemm_fp8.h"
#include "cpu/segments.h"
#include "cpu/swiglu.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

namespace moe::cpu {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

struct Shape {
  int64_t tokens, hidden, rows, groups, n;  // n = 2I
};

Status validate(const ExpertUpArgs& a, Shape* shape) {
  MOE_RETURN_IF_ERROR(expectDtype(a.xq, DType::kFP8E4M3, "xq"));
  if (a.xq.ndim != 2) return Status(Code::kShape, "xq: expected [T, H], got " + a.xq.shapeString());
  const int64_t tokens = a.xq.dim(0), hidden = a.xq.dim(1);
  MOE_RETURN_IF_ERROR(expectDtype(a.w13, DType::kFP8E4M3, "w13"));
  if (a.w13.ndim != 3 || a.w13.dim(2) != hidden || a.w13.dim(1) % 2 != 0) {
    return Status(Code::kShape, "w13: expected [G, 2I, " + str(hidden) + "], got " + a.w13.shapeString());
  }
  int64_t groups = a.w13.dim(0);
  const int64_t n = a.w13.dim(1), inter = n / 2;
  if (inter % 16 != 0 || hidden % 16 != 0) return Status(Code::kShape, "I and H must be multiples of 16, got I = " + str(inter) + ", H = " + str(hidden));
  MOE_RETURN_IF_ERROR(expectDtype(a.rowToken, DType::kI32, "rowToken"));
  if (a.rowToken.ndim != 1) return Status(Code::kShape, "rowToken: expected [R], got " + a.rowToken.shapeString());
  const int64_t rows = a.rowToken.dim(0);
  MOE_RETURN_IF_ERROR(expectDtype(a.groupIndex, DType::kI32, "groupIndex"));
  MOE_RETURN_IF_ERROR(expectShape(a.groupIndex, {rows}, "groupIndex"));
  MOE_RETURN_IF_ERROR(expectDtype(a.xqScales, DType::kF32, "xqScales"));
  MOE_RETURN_IF_ERROR(expectShape(a.xqScales, {tokens, ceilDiv(hidden, kQuantGroup)}, "xqScales"));
  MOE_RETURN_IF_ERROR(expectDtype(a.w13Scales, DType::kF32, "w13Scales"));
  MOE_RETURN_IF_ERROR(expectShape(a.w13Scales, {groups, ceilDiv(n, kWeightBlockRows), ceilDiv(hidden, kQuantGroup)}, "w13Scales"));
  MOE_RETURN_IF_ERROR(groupTableGroups(a.groupTable, a.w13, &groups));
  MOE_RETURN_IF_ERROR(expectDtype(a.hq, DType::kFP8E4M3, "hq"));
  MOE_RETURN_IF_ERROR(expectShape(a.hq, {rows, inter}, "hq"));
  MOE_RETURN_IF_ERROR(expectDtype(a.hqScales, DType::kF32, "hqScales"));
  MOE_RETURN_IF_ERROR(expectShape(a.hqScales, {rows, ceilDiv(inter, kQuantGroup)}, "hqScales"));
  for (const auto& [t, what] : {std::pair{&a.xq, "xq"}, {&a.xqScales, "xqScales"}, {&a.rowToken, "rowToken"},
                                {&a.groupIndex, "groupIndex"}, {&a.w13, "w13"}, {&a.w13Scales, "w13Scales"},
                                {&a.hq, "hq"}, {&a.hqScales, "hqScales"}}) {
    MOE_RETURN_IF_ERROR(expectContiguous(*t, what));
  }
  const int32_t* rowToken = a.rowToken.as<const int32_t>();
  const int32_t* groupIndex = a.groupIndex.as<const int32_t>();
  const int64_t first = a.groupOffset, last = a.groupOffset + groups;
  for (int64_t r = 0; r < rows; ++r) {
    if (groupIndex[r] == -1) continue;
    if (groupIndex[r] < first || groupIndex[r] >= last) {
      return Status(Code::kRange, "groupIndex[" + str(r) + "] = " + str(groupIndex[r]) + " is not -1 and not in [" +
                                      str(first) + ", " + str(last) + ")");
    }
    if (rowToken[r] < 0 || rowToken[r] >= tokens) {
      return Status(Code::kRange, "rowToken[" + str(r) + "] = " + str(rowToken[r]) + " is not in [0, " + str(tokens) + ")");
    }
  }
  *shape = Shape{tokens, hidden, rows, groups, n};
  return Status::ok();
}

// Per thread: one expert's h (bf16).
thread_local ThreadScratch t_h;

using Clock = std::chrono::steady_clock;

// One segment: h = xq[rowToken rows] * w13[group]^T (the rows read in place
// by the GEMM's A packing), then SwiGLU quantized into the segment's rows of
// hq. Padding rows (group -1) take h = 0, as the separate ops give them.
// Adds the SwiGLU time to *swigluSeconds.
Status runSegment(const ExpertUpArgs& a, const Shape& s, const Segment& seg, double* swigluSeconds) {
  const int64_t kGroups = ceilDiv(s.hidden, kQuantGroup);
  auto* h = static_cast<uint16_t*>(t_h.get(static_cast<size_t>(seg.rows * s.n) * 2));
  if (h == nullptr) return Status(Code::kInternal, "out of memory for an expert's h rows");
  const TensorView hView = TensorView::contiguous(h, DType::kBF16, {seg.rows, s.n});  // [rows, 2I] bf16
  if (seg.group < 0) {
    std::memset(h, 0, static_cast<size_t>(seg.rows * s.n) * 2);
  } else {
    const int64_t nBlocks = ceilDiv(s.n, kWeightBlockRows);
    GemmFp8Args dense;
    dense.a = a.xq;                                                               // [T, H] fp8
    dense.aScales = a.xqScales;                                                   // [T, ceil(H/128)] f32
    if (a.groupTable != nullptr) {
      dense.b = TensorView::contiguous(const_cast<uint8_t*>(a.groupTable->b[seg.group]), DType::kFP8E4M3, {s.n, s.hidden});
      dense.bScales = TensorView::contiguous(const_cast<float*>(a.groupTable->bScales[seg.group]), DType::kF32, {nBlocks, kGroups});
    } else {
      dense.b = rowSlice(a.w13, seg.group * s.n, s.n, s.hidden);                    // [2I, H] fp8
      dense.bScales = rowSlice(a.w13Scales, seg.group * nBlocks, nBlocks, kGroups);  // [ceil(2I/128), ceil(H/128)]
    }
    dense.d = hView;
    dense.batchInvariant = a.batchInvariant;
    MOE_RETURN_IF_ERROR(gemmFp8Rows(dense, a.rowToken.as<const int32_t>() + seg.row0, seg.rows));
  }
  const Clock::time_point t0 = Clock::now();
  SwigluArgs act;
  act.h = hView;
  act.out = rowSlice(a.hq, seg.row0, seg.rows, s.n / 2);
  act.scales = rowSlice(a.hqScales, seg.row0, seg.rows, ceilDiv(s.n / 2, kQuantGroup));
  const Status status = swiglu(act);
  *swigluSeconds += std::chrono::duration<double>(Clock::now() - t0).count();
  if (status.isOk()) return status;
  return Status(status.code(), "rows " + str(seg.row0) + ".." + str(seg.row0 + seg.rows - 1) + ": " + status.message());
}

}  // namespace

Status expertUp(const ExpertUpArgs& args) {
  Shape shape;
  Status status = validate(args, &shape);
  if (status.isOk() && shape.rows > 0) {
    const int threads = ThreadPool::instance().numThreads();
    std::vector<double> act(static_cast<size_t>(threads), 0.0);  // per thread: seconds in SwiGLU
    bool perSegmentTasks = false;
    status = forEachSegment(
        contiguousSegments(args.groupIndex.as<const int32_t>(), shape.rows, args.groupOffset),
        [&](const Segment& seg, int thread) { return runSegment(args, shape, seg, &act[static_cast<size_t>(thread)]); },
        &perSegmentTasks, threads);
    // Per-segment tasks share the wall time among the threads; segments run
    // one after another take theirs whole.
    double seconds = 0;
    for (double t : act) seconds += t;
    if (args.swigluSeconds) *args.swigluSeconds = perSegmentTasks ? seconds / threads : seconds;
  }
  if (status.isOk()) return status;
  return Status(status.code(), "expertUp: " + status.message());
}

}  // namespace moe::cpu
