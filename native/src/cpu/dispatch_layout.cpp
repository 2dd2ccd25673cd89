#include "cpu/dispatch_layout.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "core/moe_op_checks.h"
#include "cpu/index_snapshot.h"

namespace moe::cpu {

namespace {

constexpr int64_t kMaxI32 = std::numeric_limits<int32_t>::max();

std::string str(int64_t v) { return std::to_string(v); }

// Checks every id is in [-1, E) and counts each expert's (token, slot) pairs.
Status countIds(const LayoutArgs& a, std::vector<int64_t>& counts /* [E] */) {
  const int32_t* ids = a.ids.as<const int32_t>();  // [T, k] i32
  const int64_t slots = a.ids.dim(1), n = a.ids.numel(), experts = a.numExperts;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = ids[i];
    if (e < -1 || e >= experts) {
      return Status(Code::kRange, "dispatchLayout: ids[" + str(i / slots) + ", " + str(i % slots) + "] = " + str(e) +
                                      " is out of range [-1, " + str(experts) + ")");
    }
    if (e >= 0) ++counts[e];
  }
  return Status::ok();
}

// First row of each expert, then the total R: offsets [E + 1]. Contiguous
// segments span roundUp(count, align) rows; masked ones maxRowsPerExpert rows.
Status computeOffsets(const LayoutArgs& a, const std::vector<int64_t>& counts, std::vector<int64_t>& offsets) {
  const int64_t experts = a.numExperts;
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (a.masked && counts[e] > a.maxRowsPerExpert) {
      return Status(Code::kRange, "dispatchLayout: expert " + str(e) + " has " + str(counts[e]) +
                                      " rows, more than maxRowsPerExpert = " + str(a.maxRowsPerExpert));
    }
    const int64_t span = a.masked ? a.maxRowsPerExpert : ceilDiv(counts[e], a.align) * a.align;
    offsets[e + 1] = offsets[e] + span;
    if (offsets[e + 1] > kMaxI32) {
      return Status(Code::kRange, "dispatchLayout: the layout needs more than 2^31 - 1 rows");
    }
  }
  const int64_t rows = offsets[experts], capacity = a.rowToken.dim(0);
  if (capacity < rows) {
    return Status(Code::kShape, "dispatchLayout: rowToken and groupIndex hold " + str(capacity) + " rows, the layout needs " +
                                    str(rows) + (a.masked ? " (E * maxRowsPerExpert)" : " (T * k + E * (align - 1) always suffices)"));
  }
  return Status::ok();
}

// Places each (token, slot) at the next free row of its expert, in token then
// slot order: a serial pass, so the layout is a pure function of ids.
void placeRows(const LayoutArgs& a, const std::vector<int64_t>& offsets) {
  const int32_t* ids = a.ids.as<const int32_t>();     // [T, k] i32
  int32_t* slotRow = a.slotRow.as<int32_t>();         // [T, k] i32
  int32_t* rowToken = a.rowToken.as<int32_t>();       // [capacity] i32
  int32_t* groupIndex = a.groupIndex.as<int32_t>();   // [capacity] i32
  const int64_t slots = a.ids.dim(1), n = a.ids.numel();
  std::fill(rowToken, rowToken + a.rowToken.dim(0), -1);  // padding and unused rows
  std::fill(groupIndex, groupIndex + a.groupIndex.dim(0), -1);
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);  // [E] next free row per expert
  for (int64_t i = 0; i < n; ++i) {
    const int32_t e = ids[i];
    if (e < 0) {
      slotRow[i] = -1;
      continue;
    }
    const int64_t row = next[e]++;
    slotRow[i] = static_cast<int32_t>(row);
    rowToken[row] = static_cast<int32_t>(i / slots);
    groupIndex[row] = e;
  }
}

void writeCounts(const LayoutArgs& a, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets) {
  int32_t* tokensPerExpert = a.tokensPerExpert.as<int32_t>();  // [E] i32
  int32_t* offsetsOut = a.offsets.as<int32_t>();               // [E + 1] i32
  for (int64_t e = 0; e < a.numExperts; ++e) tokensPerExpert[e] = static_cast<int32_t>(counts[e]);
  for (int64_t e = 0; e <= a.numExperts; ++e) offsetsOut[e] = static_cast<int32_t>(offsets[e]);
}

}  // namespace

Status dispatchLayout(const LayoutArgs& input) {
  // The shapes, dtypes and options: core/moe_op_checks (shared with the CUDA
  // backend); the ids are data, checked by countIds on a copy that placeRows
  // reads again (index_snapshot.h).
  MOE_RETURN_IF_ERROR(checkDispatchLayout(input));
  LayoutArgs args = input;
  IndexSnapshot ids;
  if (!ids.take(&args.ids)) return Status(Code::kInternal, "dispatchLayout: out of memory for a copy of ids");
  try {
    std::vector<int64_t> counts(args.numExperts, 0);       // [E] rows per expert
    std::vector<int64_t> offsets(args.numExperts + 1, 0);  // [E + 1] first row per expert, then R
    MOE_RETURN_IF_ERROR(countIds(args, counts));
    MOE_RETURN_IF_ERROR(computeOffsets(args, counts, offsets));
    // Validation is complete: only now are outputs written.
    writeCounts(args, counts, offsets);
    placeRows(args, offsets);
  } catch (const std::bad_alloc&) {
    return Status(Code::kInternal, "dispatchLayout: out of memory for per-expert counters");
  }
  return Status::ok();
}

}  // namespace moe::cpu
