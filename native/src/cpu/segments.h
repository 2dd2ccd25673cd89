// The grouped ops' unit of work: a run of layout rows that belong to one
// group (expert), and how such runs are spread over the thread pool.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace moe::cpu {

struct Segment {
  int64_t group;  // local group index, or -1 for padding rows
  int64_t row0;
  int64_t rows;
};

// Rows [row0, row0 + rows) of a row-major [*, cols] tensor, as a contiguous
// [rows, cols] view (a segment's rows, or one group's weight matrix).
TensorView rowSlice(const TensorView& t, int64_t row0, int64_t rows, int64_t cols);

// Runs of equal groupIndex (values minus groupOffset; -1 stays -1).
//   groupIndex: [rows] i32, already range-checked.
std::vector<Segment> contiguousSegments(const int32_t* groupIndex, int64_t rows, int64_t groupOffset);

// Calls run(segment, thread) for every segment. With many segments (MoE: one
// per expert hit) each one is a task of the pool and whatever it calls runs
// on that thread alone (the pool runs a nested region serially): one parallel
// region per grouped op instead of one per expert. With few segments they run
// one after another, each free to use every thread. *perSegmentTasks (may be
// null) says which. Returns the first failing segment's status. `thread` stays
// below maxThreads (see ThreadPool::parallelFor).
Status forEachSegment(const std::vector<Segment>& segments, const std::function<Status(const Segment&, int thread)>& run,
                      bool* perSegmentTasks = nullptr, int maxThreads = std::numeric_limits<int>::max());

}  // namespace moe::cpu
