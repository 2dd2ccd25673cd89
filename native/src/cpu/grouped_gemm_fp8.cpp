#include "cpu/grouped_gemm_fp8.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/op_checks.h"
#include "cpu/gemm_fp8.h"
#include "cpu/index_snapshot.h"
#include "cpu/segments.h"

namespace moe::cpu {

namespace {

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
  if (args.groupTable != nullptr) {
    dense.b = TensorView::contiguous(const_cast<uint8_t*>(args.groupTable->b[group]), DType::kFP8E4M3, {n, k});  // [N, K] fp8
    dense.bScales = TensorView::contiguous(const_cast<float*>(args.groupTable->bScales[group]), DType::kF32, {nBlocks, kGroups});
  } else {
    dense.b = rowSlice(args.b, group * n, n, k);              // [N, K] fp8: expert `group`
    dense.bScales = rowSlice(args.bScales, group * nBlocks, nBlocks, kGroups);  // [ceil(N/128), ceil(K/128)]
  }
  dense.d = rowSlice(args.d, row0, rows, n);                // [rows, N]
  dense.batchInvariant = args.batchInvariant;
  return gemmFp8(dense);
}

// Runs the segments: a group's rows as one dense GEMM, padding rows (and a
// masked group's unused rows) as zeros.
Status runSegments(const GroupedGemmFp8Args& args, const std::vector<Segment>& segments, int64_t n, int64_t k) {
  return forEachSegment(segments, [&](const Segment& s, int) {
    if (s.group < 0) {
      zeroRows(args.d, s.row0, s.rows, n);
      return Status::ok();
    }
    return runGroup(args, s.group, s.row0, s.rows, n, k);
  });
}

Status contiguous(const GroupedGemmFp8Args& args, const GroupedShape& shape) {
  const int64_t groups = shape.groups, n = shape.n, k = shape.k, rows = shape.rows;
  const int32_t* groupIndex = args.groupIndex.as<const int32_t>();  // [R] i32: -1 or a group of this shard
  const int64_t first = args.groupOffset, last = args.groupOffset + groups;
  for (int64_t r = 0; r < rows; ++r) {
    if (groupIndex[r] != -1 && (groupIndex[r] < first || groupIndex[r] >= last)) {
      return Status(Code::kRange, "groupIndex[" + std::to_string(r) + "] = " + std::to_string(groupIndex[r]) +
                                      " is not -1 and not in [" + std::to_string(first) + ", " + std::to_string(last) + ")");
    }
  }
  return runSegments(args, contiguousSegments(groupIndex, rows, first), n, k);
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
  if (status.isOk()) return status;
  return Status(status.code(), std::string(isMasked ? "groupedGemmFp8Masked: " : "groupedGemmFp8: ") + status.message());
}

}  // namespace moe::cpu
