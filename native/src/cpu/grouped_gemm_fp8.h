// Grouped FP8 GEMMs on the CPU (SPEC.md, "Grouped, contiguous layout" and
// "Grouped, masked layout"), built from the dense kernel: each group's rows
// are one dense GEMM against that group's weights, so every group gets the
// dense path that suits its row count (streaming for a few decode rows,
// packed for prefill-sized segments).
#pragma once

#include <vector>

#include "core/ops.h"
#include "cpu/index_snapshot.h"
#include "cpu/segments.h"

namespace moe::cpu {

// Validates and runs either layout (groupIndex set: contiguous; maskedM set: masked).
Status groupedGemmFp8(const GroupedGemmFp8Args& args);

// The contiguous layout as its tasks, for running them inside a larger
// parallel region (expert_chain.h): groupedGemmFp8 is prepare(), then run()
// of every task.
class GroupedGemmJob {
 public:
  // Validates args (copied; the group indices too, index_snapshot.h) and
  // plans the tasks for `threads` pool threads. Errors carry the op's prefix.
  Status prepare(const GroupedGemmFp8Args& args, int threads);
  const std::vector<ExpertTask>& tasks() const { return tasks_; }
  // One task. Errors without the prefix.
  Status run(const ExpertTask& task) const;

 private:
  GroupedGemmFp8Args args_;
  IndexSnapshot groupIndex_;
  int64_t n_ = 0, k_ = 0;
  std::vector<ExpertTask> tasks_;
};

constexpr const char* kGroupedGemmPrefix = "groupedGemmFp8: ";

}  // namespace moe::cpu
