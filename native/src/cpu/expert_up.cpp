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

using Shape = ExpertUpJob::Shape;

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
  if (a.sharedW13.data != nullptr) {
    const int64_t nBlocks = ceilDiv(n, kWeightBlockRows), kGroups = ceilDiv(hidden, kQuantGroup);
    MOE_RETURN_IF_ERROR(expectDtype(a.sharedW13, DType::kFP8E4M3, "sharedW13"));
    MOE_RETURN_IF_ERROR(expectShape(a.sharedW13, {n, hidden}, "sharedW13"));
    MOE_RETURN_IF_ERROR(expectDtype(a.sharedW13Scales, DType::kF32, "sharedW13Scales"));
    MOE_RETURN_IF_ERROR(expectShape(a.sharedW13Scales, {nBlocks, kGroups}, "sharedW13Scales"));
    MOE_RETURN_IF_ERROR(expectDtype(a.sharedHq, DType::kFP8E4M3, "sharedHq"));
    MOE_RETURN_IF_ERROR(expectShape(a.sharedHq, {tokens, inter}, "sharedHq"));
    MOE_RETURN_IF_ERROR(expectDtype(a.sharedHqScales, DType::kF32, "sharedHqScales"));
    MOE_RETURN_IF_ERROR(expectShape(a.sharedHqScales, {tokens, ceilDiv(inter, kQuantGroup)}, "sharedHqScales"));
    for (const auto& [t, what] : {std::pair{&a.sharedW13, "sharedW13"}, {&a.sharedW13Scales, "sharedW13Scales"},
                                  {&a.sharedHq, "sharedHq"}, {&a.sharedHqScales, "sharedHqScales"}}) {
      MOE_RETURN_IF_ERROR(expectContiguous(*t, what));
    }
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

// Per thread: one task's h (bf16), its gate and up halves, and its hq block.
thread_local ThreadScratch t_h;
thread_local ThreadScratch t_block;

using Clock = std::chrono::steady_clock;

// Copies rows x [bytes] of a packed block into a [*, stride]-byte tensor at (row0, byte col0).
void copyBlock(const uint8_t* block, int64_t rows, int64_t bytes, uint8_t* dst, int64_t row0, int64_t col0, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + (row0 + r) * stride + col0, block + r * bytes, static_cast<size_t>(bytes));
}

// One task: rows of one group (or the shared expert's token rows) against the
// I-columns [col0, col0 + cols). h = the rows of xq * the task's gate and up
// rows of the weights (read in place by the GEMM's A packing), then SwiGLU
// quantized into the rows' hq columns (a run of whole 128-wide groups).
// Padding rows (group -1) take h = 0, as the separate ops give them. Adds
// the SwiGLU time to *swigluSeconds.
Status runTask(const ExpertUpArgs& a, const Shape& s, const ExpertTask& t, double* swigluSeconds) {
  const int64_t kGroups = ceilDiv(s.hidden, kQuantGroup), inter = s.n / 2;
  const bool shared = t.group == kSharedGroup, whole = t.cols == inter;
  const int64_t hBytes = t.rows * 2 * t.cols * 2;                               // [rows, 2 cols] bf16
  const int64_t halfBytes = whole || t.rows == 1 ? 0 : t.rows * t.cols * 2;     // gate, up: [rows, cols] bf16 each
  const int64_t outBytes = whole ? 0 : t.rows * t.cols + t.rows * ceilDiv(t.cols, kQuantGroup) * 4;  // hq, scales block
  auto* h = static_cast<uint16_t*>(t_h.get(static_cast<size_t>(hBytes + 2 * halfBytes)));
  auto* out = static_cast<uint8_t*>(t_block.get(static_cast<size_t>(outBytes)));
  if (h == nullptr || out == nullptr) return Status(Code::kInternal, "out of memory for an expert's h rows");
  const TensorView hView = TensorView::contiguous(h, DType::kBF16, {t.rows, 2 * t.cols});  // [rows, 2 cols] bf16: gate | up
  if (t.group == -1) {
    std::memset(h, 0, static_cast<size_t>(hBytes));
  } else {
    const int64_t nBlocks = ceilDiv(s.n, kWeightBlockRows);
    TensorView w, wScales;  // [2I, H] fp8, [ceil(2I/128), ceil(H/128)] f32: the group's w13
    if (shared) {
      w = a.sharedW13;
      wScales = a.sharedW13Scales;
    } else if (a.groupTable != nullptr) {
      w = TensorView::contiguous(const_cast<uint8_t*>(a.groupTable->b[t.group]), DType::kFP8E4M3, {s.n, s.hidden});
      wScales = TensorView::contiguous(const_cast<float*>(a.groupTable->bScales[t.group]), DType::kF32, {nBlocks, kGroups});
    } else {
      w = rowSlice(a.w13, t.group * s.n, s.n, s.hidden);
      wScales = rowSlice(a.w13Scales, t.group * nBlocks, nBlocks, kGroups);
    }
    GemmFp8Args dense;
    dense.a = shared ? rowSlice(a.xq, t.row0, t.rows, s.hidden) : a.xq;                           // [*, H] fp8
    dense.aScales = shared ? rowSlice(a.xqScales, t.row0, t.rows, kGroups) : a.xqScales;          // [*, ceil(H/128)] f32
    dense.batchInvariant = a.batchInvariant;
    const int32_t* aRows = shared ? nullptr : a.rowToken.as<const int32_t>() + t.row0;
    const auto product = [&](int64_t wRow0, int64_t count, void* d) {  // d [rows, count] = A * w[wRow0 .. + count)^T
      dense.b = rowSlice(w, wRow0, count, s.hidden);
      dense.bScales = rowSlice(wScales, wRow0 / kWeightBlockRows, ceilDiv(count, kWeightBlockRows), kGroups);
      dense.d = TensorView::contiguous(d, DType::kBF16, {t.rows, count});
      return aRows != nullptr ? gemmFp8Rows(dense, aRows, t.rows) : gemmFp8(dense);
    };
    if (whole) {
      MOE_RETURN_IF_ERROR(product(0, s.n, h));
    } else if (t.rows == 1) {  // gate | up land side by side in h's one row
      MOE_RETURN_IF_ERROR(product(t.col0, t.cols, h));
      MOE_RETURN_IF_ERROR(product(inter + t.col0, t.cols, h + t.cols));
    } else {
      uint16_t* gate = h + t.rows * 2 * t.cols;
      uint16_t* up = gate + t.rows * t.cols;
      MOE_RETURN_IF_ERROR(product(t.col0, t.cols, gate));
      MOE_RETURN_IF_ERROR(product(inter + t.col0, t.cols, up));
      for (int64_t r = 0; r < t.rows; ++r) {
        std::memcpy(h + r * 2 * t.cols, gate + r * t.cols, static_cast<size_t>(t.cols) * 2);
        std::memcpy(h + r * 2 * t.cols + t.cols, up + r * t.cols, static_cast<size_t>(t.cols) * 2);
      }
    }
  }
  const Clock::time_point t0 = Clock::now();
  const TensorView& hq = shared ? a.sharedHq : a.hq;                    // [*, I] fp8
  const TensorView& hqScales = shared ? a.sharedHqScales : a.hqScales;  // [*, ceil(I/128)] f32
  const int64_t scaleCols = ceilDiv(t.cols, kQuantGroup), scaleStride = ceilDiv(inter, kQuantGroup);
  SwigluArgs act;
  act.h = hView;
  if (whole) {
    act.out = rowSlice(hq, t.row0, t.rows, inter);
    act.scales = rowSlice(hqScales, t.row0, t.rows, scaleStride);
  } else {
    act.out = TensorView::contiguous(out, DType::kFP8E4M3, {t.rows, t.cols});
    act.scales = TensorView::contiguous(out + t.rows * t.cols, DType::kF32, {t.rows, scaleCols});
  }
  Status status = swiglu(act);
  if (status.isOk() && !whole) {
    copyBlock(out, t.rows, t.cols, hq.as<uint8_t>(), t.row0, t.col0, inter);
    copyBlock(out + t.rows * t.cols, t.rows, scaleCols * 4, hqScales.as<uint8_t>(), t.row0, t.col0 / kQuantGroup * 4, scaleStride * 4);
  }
  *swigluSeconds += std::chrono::duration<double>(Clock::now() - t0).count();
  if (status.isOk()) return status;
  // swiglu names rows of the task's block: name them as the caller knows them.
  return Status(status.code(), std::string(shared ? "shared expert, tokens " : "rows ") + str(t.row0) + ".." +
                                   str(t.row0 + t.rows - 1) + ": " + status.message());
}

}  // namespace

Status ExpertUpJob::prepare(const ExpertUpArgs& args, int threads) {
  args_ = &args;
  tasks_.clear();
  swiglu_.assign(static_cast<size_t>(threads), 0.0);
  const Status status = validate(args, &shape_);
  if (!status.isOk()) return prefixed("expertUp: ", status);
  if (shape_.rows == 0 && (args.sharedW13.data == nullptr || shape_.tokens == 0)) return status;
  // The tasks cut I into 128-column runs where each run's gate and up rows
  // start on a 128-row scale block (I a multiple of 128).
  const int64_t inter = shape_.n / 2;
  tasks_ = planExpertTasks(contiguousSegments(args.groupIndex.as<const int32_t>(), shape_.rows, args.groupOffset),
                           args.sharedW13.data != nullptr ? shape_.tokens : 0, inter,
                           inter % kWeightBlockRows == 0 ? kWeightBlockRows : inter, threads);
  return status;
}

Status ExpertUpJob::run(const ExpertTask& task, int thread) {
  return runTask(*args_, shape_, task, &swiglu_[static_cast<size_t>(thread)]);
}

double ExpertUpJob::swigluSeconds(bool perTask) const {
  double seconds = 0;
  for (double t : swiglu_) seconds += t;
  // Per-segment tasks share the wall time among the threads; segments run
  // one after another take theirs whole.
  return perTask ? seconds / static_cast<double>(swiglu_.size()) : seconds;
}

Status expertUp(const ExpertUpArgs& args) {
  ExpertUpJob job;
  const int threads = ThreadPool::instance().numThreads();
  MOE_RETURN_IF_ERROR(job.prepare(args, threads));
  bool perTask = false;
  const Status status =
      forEachExpertTask(job.tasks(), [&](const ExpertTask& t, int thread) { return job.run(t, thread); }, &perTask, threads);
  if (args.swigluSeconds) *args.swigluSeconds = job.swigluSeconds(perTask);
  return prefixed("expertUp: ", status);
}

}  // namespace moe::cpu
