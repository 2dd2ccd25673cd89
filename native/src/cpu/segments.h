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

// One task of an experts op (expertUp, the contiguous grouped GEMM): rows of
// one group against a run of the op's output columns. Decode steps give each
// expert 1-4 rows: where few experts are hit for the threads, column runs
// give every thread a share. The shared expert is one more such group, so
// that its weights stream in the same parallel region as the routed ones'.
struct ExpertTask {
  int64_t group;       // local group, -1 for padding rows, or kSharedGroup
  int64_t row0, rows;  // layout rows (a group) or token rows (the shared expert)
  int64_t col0, cols;  // output columns [col0, col0 + cols) of the op's N
  int64_t item;        // the run of rows (shared expert chunk or segment) in plan order, the same in every op's plan
};
constexpr int64_t kSharedGroup = -2;

// The tasks of an op over `segments` plus, when sharedRows > 0, the shared
// expert's token rows [0, sharedRows) (first: at large T its rows are the
// largest block of work; cut into the GEMM's row tiles, gemmRowTileRows:
// runs of <= 256 rows that give each row the bits it has in the full call).
// A segment of few rows (<= 16, where repacking its A rows per run costs
// little next to streaming the weights) is cut into runs of whole
// `colBlock`-column blocks of [0, cols) until there are >= 4 tasks per
// thread; padding segments stay whole.
std::vector<ExpertTask> planExpertTasks(const std::vector<Segment>& segments, int64_t sharedRows, int64_t cols, int64_t colBlock,
                                        int threads);

// Calls run(task, thread) for every task: one pool task each where there
// are >= 4 per thread (a GEMM inside then runs on that thread alone), else
// one after another, each free to use every thread. *perTask (may be null)
// says which. Returns the first failing task's status.
Status forEachExpertTask(const std::vector<ExpertTask>& tasks, const std::function<Status(const ExpertTask&, int thread)>& run,
                         bool* perTask, int threads);

// Whether two ops' tasks run as one chain (forEachChainedTask): both would
// run one pool task each (forEachExpertTask's rule).
bool chainable(const std::vector<ExpertTask>& first, const std::vector<ExpertTask>& second, int threads);

// Two ops of which the second reads what the first wrote for the same rows
// (the experts' first half, then their second GEMM), as one parallel region:
// every `first` task, then every `second` task, handed out in that order; a
// `second` task waits until each `first` task of its item is done (they were
// all handed out before it, to running threads, so the wait ends). Against
// two regions, a decode step saves waking the threads again and the idle
// tail of the first region (9 experts' weights over 2 threads: one thread
// streams the last expert alone). A `second` task whose item failed in
// `first` is skipped. *firstStatus, *secondStatus: the first failing task of
// each op, in task order.
void forEachChainedTask(const std::vector<ExpertTask>& first, const std::vector<ExpertTask>& second,
                        const std::function<Status(const ExpertTask&, int thread)>& runFirst,
                        const std::function<Status(const ExpertTask&, int thread)>& runSecond, int threads, Status* firstStatus,
                        Status* secondStatus);

}  // namespace moe::cpu
