// The routed experts' first half, fused (core/ops.h, ExpertUpArgs): gather,
// first grouped GEMM and SwiGLU + fp8 quantization per expert, in L2-sized
// per-thread scratch. At T = 4096 the separate ops wrote and re-read the
// gathered rows [R, H] and h [R, 2I] through memory, ~10% of the layer.
#pragma once

#include <vector>

#include "core/ops.h"
#include "cpu/segments.h"

namespace moe::cpu {

// Validates args (like dispatch, groupedGemmFp8 and swiglu) and runs it.
Status expertUp(const ExpertUpArgs& args);

// The op as its tasks, for running them inside a larger parallel region
// (expert_chain.h): expertUp is prepare(), then run() of every task.
class ExpertUpJob {
 public:
  // Validates args (kept by reference: they must outlive the job) and plans
  // the tasks for `threads` pool threads. Errors carry the op's prefix.
  Status prepare(const ExpertUpArgs& args, int threads);
  const std::vector<ExpertTask>& tasks() const { return tasks_; }
  // One task on pool thread `thread` (< threads). Errors without the prefix.
  Status run(const ExpertTask& task, int thread);
  // Wall-clock seconds in SwiGLU: the threads' summed time over `threads`
  // where the tasks ran one per pool task, else the sum.
  double swigluSeconds(bool perTask) const;

  struct Shape {
    int64_t tokens, hidden, rows, groups, n;  // n = 2I
  };

 private:
  const ExpertUpArgs* args_ = nullptr;
  Shape shape_{};
  std::vector<ExpertTask> tasks_;
  std::vector<double> swiglu_;  // per pool thread: seconds in SwiGLU
};

}  // namespace moe::cpu
