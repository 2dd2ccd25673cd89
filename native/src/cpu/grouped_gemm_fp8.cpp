#include "cpu/grouped_gemm_fp8.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/op_checks.h"
#include "cpu/gemm_fp8.h"
#include "cpu/index_snapshot.h"
#include "cpu/segments.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

namespace moe::cpu {

namespace {

void zeroRows(const TensorView& d, int64_t row0, int64_t rows, int64_t cols) {
  if (rows <= 0) return;
  const int64_t rowBytes = cols * static_cast<int64_t>(dtypeSize(d.dtype));
  std::memset(static_cast<uint8_t*>(d.data) + row0 * rowBytes, 0, static_cast<size_t>(rows * rowBytes));
}

// Group `group`'s weights: [N, K] fp8 and [ceil(N/128), ceil(K/128)] f32.
void groupWeights(const GroupedGemmFp8Args& args, int64_t group, int64_t n, int64_t k, TensorView* b, TensorView* bScales) {
  const int64_t kGroups = ceilDiv(k, kQuantGroup), nBlocks = ceilDiv(n, kWeightBlockRows);
  if (group == kSharedGroup) {
    *b = args.sharedB;
    *bScales = args.sharedBScales;
  } else if (args.groupTable != nullptr) {
    *b = TensorView::contiguous(const_cast<uint8_t*>(args.groupTable->b[group]), DType::kFP8E4M3, {n, k});
    *bScales = TensorView::contiguous(const_cast<float*>(args.groupTable->bScales[group]), DType::kF32, {nBlocks, kGroups});
  } else {
    *b = rowSlice(args.b, group * n, n, k);                              // expert `group`
    *bScales = rowSlice(args.bScales, group * nBlocks, nBlocks, kGroups);
  }
}

// Per thread: a task's block of D when it covers part of N.
thread_local ThreadScratch t_block;

// One task: D rows = A rows * B[group]^T over the output columns [col0,
// col0 + cols) (a run of 128-row blocks of B); padding rows are zeros.
Status runTask(const GroupedGemmFp8Args& args, const ExpertTask& t, int64_t n, int64_t k) {
  const bool shared = t.group == kSharedGroup;
  const TensorView& a = shared ? args.sharedA : args.a;              // [*, K] fp8
  const TensorView& aScales = shared ? args.sharedAScales : args.aScales;  // [*, ceil(K/128)] f32
  const TensorView& d = shared ? args.sharedD : args.d;              // [*, N]
  if (t.group == -1) {
    zeroRows(d, t.row0, t.rows, n);
    return Status::ok();
  }
  const int64_t kGroups = ceilDiv(k, kQuantGroup);
  TensorView b, bScales;
  groupWeights(args, t.group, n, k, &b, &bScales);
  GemmFp8Args dense;
  dense.a = rowSlice(a, t.row0, t.rows, k);
  dense.aScales = rowSlice(aScales, t.row0, t.rows, kGroups);
  dense.b = rowSlice(b, t.col0, t.cols, k);                                                          // [cols, K] fp8
  dense.bScales = rowSlice(bScales, t.col0 / kWeightBlockRows, ceilDiv(t.cols, kWeightBlockRows), kGroups);
  dense.batchInvariant = args.batchInvariant;
  const size_t elem = dtypeSize(d.dtype);
  if (t.cols == n || t.rows == 1) {  // D's block is contiguous
    dense.d = TensorView::contiguous(static_cast<uint8_t*>(d.data) + (t.row0 * n + t.col0) * static_cast<int64_t>(elem), d.dtype,
                                     {t.rows, t.cols});
    return gemmFp8(dense);
  }
  auto* block = static_cast<uint8_t*>(t_block.get(static_cast<size_t>(t.rows * t.cols) * elem));
  if (block == nullptr) return Status(Code::kInternal, "out of memory for a block of d");
  dense.d = TensorView::contiguous(block, d.dtype, {t.rows, t.cols});
  MOE_RETURN_IF_ERROR(gemmFp8(dense));
  const size_t rowBytes = static_cast<size_t>(t.cols) * elem;
  for (int64_t r = 0; r < t.rows; ++r)
    std::memcpy(static_cast<uint8_t*>(d.data) + ((t.row0 + r) * n + t.col0) * static_cast<int64_t>(elem), block + r * rowBytes, rowBytes);
  return Status::ok();
}

// The tasks over the segments (and the shared expert's rows): a group's rows
// as dense GEMMs against that group's weights, padding rows (and a masked
// group's unused rows) as zeros.
std::vector<ExpertTask> segmentTasks(const GroupedGemmFp8Args& args, const std::vector<Segment>& segments, int64_t n, int threads) {
  const int64_t sharedRows = args.sharedA.data != nullptr ? args.sharedA.dim(0) : 0;
  return planExpertTasks(segments, sharedRows, n, kWeightBlockRows, threads);
}

Status runSegments(const GroupedGemmFp8Args& args, const std::vector<Segment>& segments, int64_t n, int64_t k) {
  const int threads = ThreadPool::instance().numThreads();
  return forEachExpertTask(segmentTasks(args, segments, n, threads), [&](const ExpertTask& t, int) { return runTask(args, t, n, k); },
                           nullptr, threads);
}

// The contiguous layout's groupIndex: -1 or a group of this call's weights.
Status checkGroupIndex(const GroupedGemmFp8Args& args, const GroupedShape& shape) {
  const int32_t* groupIndex = args.groupIndex.as<const int32_t>();  // [R] i32: -1 or a group of this shard
  const int64_t first = args.groupOffset, last = args.groupOffset + shape.groups;
  for (int64_t r = 0; r < shape.rows; ++r) {
    if (groupIndex[r] != -1 && (groupIndex[r] < first || groupIndex[r] >= last)) {
      return Status(Code::kRange, "groupIndex[" + std::to_string(r) + "] = " + std::to_string(groupIndex[r]) +
                                      " is not -1 and not in [" + std::to_string(first) + ", " + std::to_string(last) + ")");
    }
  }
  return Status::ok();
}

Status contiguous(const GroupedGemmFp8Args& args, const GroupedShape& shape) {
  MOE_RETURN_IF_ERROR(checkGroupIndex(args, shape));
  return runSegments(args, contiguousSegments(args.groupIndex.as<const int32_t>(), shape.rows, args.groupOffset), shape.n, shape.k);
}

Status masked(const GroupedGemmFp8Args& args, const GroupedShape& shape) {
  const int64_t groups = shape.groups, n = shape.n, k = shape.k, maxRows = shape.rows;
  const int32_t* maskedM = args.maskedM.as<const int32_t>();  // [G] i32 in [0, Mmax]
  for (int64_t g = 0; g < groups; ++g) {
    if (maskedM[g] < 0 || maskedM[g] > maxRows) {
      return Status(Code::kRange, "maskedM[" + std::to_string(g) + "] = " + std::to_string(maskedM[g]) +
                                      " is out of range [0, " + std::to_string(maxRows) + "]");
    }
  }
  std::vector<Segment> segments;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t row0 = g * maxRows;
    if (maskedM[g] > 0) segments.push_back({g, row0, maskedM[g]});
    if (maskedM[g] < maxRows) segments.push_back({-1, row0 + maskedM[g], maxRows - maskedM[g]});
  }
  return runSegments(args, segments, n, k);
}

}  // namespace

Status groupedGemmFp8(const GroupedGemmFp8Args& input) {
  const bool isMasked = input.maskedM.data != nullptr;
  GroupedShape shape;
  Status status = checkGroupedGemmFp8(input, &shape);
  // groupIndex / maskedM: validated and read from one copy (index_snapshot.h).
  GroupedGemmFp8Args args = input;
  IndexSnapshot groupIndex, maskedM;
  if (status.isOk() && !(groupIndex.take(&args.groupIndex) && maskedM.take(&args.maskedM))) {
    status = Status(Code::kInternal, "out of memory for a copy of the group indices");
  }
  if (status.isOk()) status = isMasked ? masked(args, shape) : contiguous(args, shape);
  return prefixed(isMasked ? "groupedGemmFp8Masked: " : kGroupedGemmPrefix, status);
}

Status GroupedGemmJob::prepare(const GroupedGemmFp8Args& args, int threads) {
  args_ = args;
  tasks_.clear();
  GroupedShape shape;
  Status status = args.maskedM.data != nullptr ? Status(Code::kInternal, "the masked layout runs as groupedGemmFp8")
                                               : checkGroupedGemmFp8(args, &shape);
  if (status.isOk() && !groupIndex_.take(&args_.groupIndex)) status = Status(Code::kInternal, "out of memory for a copy of the group indices");
  if (status.isOk()) status = checkGroupIndex(args_, shape);
  if (!status.isOk()) return prefixed(kGroupedGemmPrefix, status);
  n_ = shape.n;
  k_ = shape.k;
  tasks_ = segmentTasks(args_, contiguousSegments(args_.groupIndex.as<const int32_t>(), shape.rows, args_.groupOffset), n_, threads);
  return status;
}

Status GroupedGemmJob::run(const ExpertTask& task) const { return runTask(args_, task, n_, k_); }

}  // namespace moe::cpu
