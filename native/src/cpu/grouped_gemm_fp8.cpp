#include "cpu/grouped_gemm_fp8.h"

#include <cstring>
#include <string>
#include <vector>

#include "cpu/gemm_fp8.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

// Rows [row0, row0 + rows) of a row-major matrix view [*, cols].
TensorView rowSlice(const TensorView& t, int64_t row0, int64_t rows, int64_t cols) {
  auto* base = static_cast<uint8_t*>(t.data) + row0 * cols * static_cast<int64_t>(dtypeSize(t.dtype));
  return TensorView::contiguous(base, t.dtype, {rows, cols});
}

void zeroRows(const TensorView& d, int64_t row0, int64_t rows, int64_t cols) {
  if (rows <= 0) return;
  const int64_t rowBytes = cols * static_cast<int64_t>(dtypeSize(d.dtype));
  std::memset(static_cast<uint8_t*>(d.data) + row0 * rowBytes, 0, static_cast<size_t>(rows * rowBytes));
}

// D rows [row0, row0 + rows) = A rows * B[group]^T.
Status runGroup(const GroupedGemmFp8Args& args, int64_t group, int64_t row0, int64_t rows, int64_t n, int64_t k) {
  const int64_t kGroups = ceilDiv(k, kQuantGroup);
  const int64_t nBlocks = ceilDiv(n, kWeightBlockRows);
  GemmFp8Args dense;
  dense.a = rowSlice(args.a, row0, rows, k);                // [rows, K] fp8
  dense.aScales = rowSlice(args.aScales, row0, rows, kGroups);  // [rows, ceil(K/128)] f32
  dense.b = rowSlice(args.b, group * n, n, k);              // [N, K] fp8: expert `group`
  dense.bScales = rowSlice(args.bScales, group * nBlocks, nBlocks, kGroups);  // [ceil(N/128), ceil(K/128)]
  dense.d = rowSlice(args.d, row0, rows, n);                // [rows, N]
  return gemmFp8(dense);
}

// One group's rows: D[row0, row0 + rows) = A[row0, ...) * B[group]^T, or zero rows when group < 0.
struct Segment {
  int64_t group;
  int64_t row0;
  int64_t rows;
};

// Runs the segments. With many of them (MoE: one per expert hit) each segment
// is one task and its dense GEMM runs on that thread alone (the pool runs a
// nested region serially): one parallel region per grouped GEMM instead of one
// per expert, and no thread wake-ups per expert. With few segments, each one
// gets all the threads.
Status runSegments(const GroupedGemmFp8Args& args, const std::vector<Segment>& segments, int64_t n, int64_t k) {
  ThreadPool& pool = ThreadPool::instance();
  const bool perSegmentTasks = static_cast<int64_t>(segments.size()) >= 4 * pool.numThreads();
  if (!perSegmentTasks) {
    for (const Segment& s : segments) {
      if (s.group < 0) zeroRows(args.d, s.row0, s.rows, n);
      else MOE_RETURN_IF_ERROR(runGroup(args, s.group, s.row0, s.rows, n, k));
    }
    return Status::ok();
  }
  std::vector<Status> failures(segments.size());
  pool.parallelFor(static_cast<int64_t>(segments.size()), [&](int64_t i, int) {
    const Segment& s = segments[static_cast<size_t>(i)];
    if (s.group < 0) zeroRows(args.d, s.row0, s.rows, n);
    else failures[static_cast<size_t>(i)] = runGroup(args, s.group, s.row0, s.rows, n, k);
  });
  for (const Status& status : failures) MOE_RETURN_IF_ERROR(status);  // the first failing segment
  return Status::ok();
}

Status expectOutput(const TensorView& d, std::initializer_list<int64_t> dims) {
  if (d.dtype != DType::kF32 && d.dtype != DType::kBF16) {
    return Status(Code::kDtype, std::string("out: expected dtype bf16 or f32, got ") + dtypeName(d.dtype));
  }
  MOE_RETURN_IF_ERROR(expectShape(d, dims, "out"));
  return expectContiguous(d, "out");
}

Status validateWeights(const GroupedGemmFp8Args& args, int64_t* g, int64_t* n, int64_t* k) {
  if (args.b.ndim != 3) return Status(Code::kShape, "b.data: expected [G, N, K], got " + args.b.shapeString());
  MOE_RETURN_IF_ERROR(expectDtype(args.b, DType::kFP8E4M3, "b.data"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.b, "b.data"));
  *g = args.b.dim(0);
  *n = args.b.dim(1);
  *k = args.b.dim(2);
  if (*k <= 0 || *k % 16 != 0) return Status(Code::kShape, "b.data: K must be a positive multiple of 16");
  MOE_RETURN_IF_ERROR(expectDtype(args.bScales, DType::kF32, "b.scales"));
  MOE_RETURN_IF_ERROR(
      expectShape(args.bScales, {*g, ceilDiv(*n, kWeightBlockRows), ceilDiv(*k, kQuantGroup)}, "b.scales"));
  return expectContiguous(args.bScales, "b.scales");
}

Status contiguous(const GroupedGemmFp8Args& args) {
  int64_t groups = 0, n = 0, k = 0;
  MOE_RETURN_IF_ERROR(validateWeights(args, &groups, &n, &k));
  if (args.a.ndim != 2) return Status(Code::kShape, "a.data: expected [R, K], got " + args.a.shapeString());
  const int64_t rows = args.a.dim(0);
  MOE_RETURN_IF_ERROR(expectDtype(args.a, DType::kFP8E4M3, "a.data"));
  MOE_RETURN_IF_ERROR(expectShape(args.a, {rows, k}, "a.data"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.a, "a.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.aScales, DType::kF32, "a.scales"));
  MOE_RETURN_IF_ERROR(expectShape(args.aScales, {rows, ceilDiv(k, kQuantGroup)}, "a.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.aScales, "a.scales"));
  MOE_RETURN_IF_ERROR(expectDtype(args.groupIndex, DType::kI32, "groupIndex"));
  MOE_RETURN_IF_ERROR(expectShape(args.groupIndex, {rows}, "groupIndex"));
  MOE_RETURN_IF_ERROR(expectOutput(args.d, {rows, n}));

  const int32_t* groupIndex = args.groupIndex.as<const int32_t>();  // [R] i32: -1 or a group of this shard
  const int64_t first = args.groupOffset, last = args.groupOffset + groups;
  for (int64_t r = 0; r < rows; ++r) {
    if (groupIndex[r] != -1 && (groupIndex[r] < first || groupIndex[r] >= last)) {
      return Status(Code::kRange, "groupIndex[" + std::to_string(r) + "] = " + std::to_string(groupIndex[r]) +
                                      " is not -1 and not in [" + std::to_string(first) + ", " + std::to_string(last) + ")");
    }
  }
  // Runs of equal groupIndex: a group's segment, or padding (-1) rows to zero.
  std::vector<Segment> segments;
  for (int64_t start = 0; start < rows;) {
    int64_t end = start + 1;
    while (end < rows && groupIndex[end] == groupIndex[start]) ++end;
    segments.push_back({groupIndex[start] < 0 ? -1 : groupIndex[start] - first, start, end - start});
    start = end;
  }
  return runSegments(args, segments, n, k);
}

Status masked(const GroupedGemmFp8Args& args) {
  int64_t groups = 0, n = 0, k = 0;
  MOE_RETURN_IF_ERROR(validateWeights(args, &groups, &n, &k));
  if (args.a.ndim != 3) return Status(Code::kShape, "a.data: expected [G, Mmax, K], got " + args.a.shapeString());
  const int64_t maxRows = args.a.dim(1);
  MOE_RETURN_IF_ERROR(expectDtype(args.a, DType::kFP8E4M3, "a.data"));
  MOE_RETURN_IF_ERROR(expectShape(args.a, {groups, maxRows, k}, "a.data"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.a, "a.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.aScales, DType::kF32, "a.scales"));
  MOE_RETURN_IF_ERROR(expectShape(args.aScales, {groups, maxRows, ceilDiv(k, kQuantGroup)}, "a.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.aScales, "a.scales"));
  MOE_RETURN_IF_ERROR(expectDtype(args.maskedM, DType::kI32, "maskedM"));
  MOE_RETURN_IF_ERROR(expectShape(args.maskedM, {groups}, "maskedM"));
  MOE_RETURN_IF_ERROR(expectOutput(args.d, {groups, maxRows, n}));

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

Status groupedGemmFp8(const GroupedGemmFp8Args& args) {
  const bool isMasked = args.maskedM.data != nullptr;
  Status status = isMasked ? masked(args) : contiguous(args);
  if (status.isOk()) return status;
  return Status(status.code(), std::string(isMasked ? "groupedGemmFp8Masked: " : "groupedGemmFp8: ") + status.message());
}

}  // namespace moe::cpu
