#include "cpu/expert_chain.h"

#include <chrono>
#include <vector>

#include "cpu/expert_up.h"
#include "cpu/grouped_gemm_fp8.h"
#include "cpu/segments.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

using Clock = std::chrono::steady_clock;

// Whether every item (a run of rows) names the same rows in both plans: the
// second half reads exactly the rows of hq that the first half wrote.
bool sameItems(const std::vector<ExpertTask>& first, const std::vector<ExpertTask>& second) {
  std::vector<const ExpertTask*> items;
  for (const ExpertTask& t : first) {
    if (t.item >= static_cast<int64_t>(items.size())) items.resize(static_cast<size_t>(t.item + 1), nullptr);
    items[static_cast<size_t>(t.item)] = &t;
  }
  for (const ExpertTask& t : second) {
    if (t.item >= static_cast<int64_t>(items.size())) return false;
    const ExpertTask* u = items[static_cast<size_t>(t.item)];
    if (u == nullptr || u->group != t.group || u->row0 != t.row0 || u->rows != t.rows) return false;
  }
  return true;
}

}  // namespace

Status expertChain(const ExpertChainArgs& args) {
  const int threads = ThreadPool::instance().numThreads();
  ExpertUpJob up;
  GroupedGemmJob down;
  MOE_RETURN_IF_ERROR(up.prepare(args.up, threads));
  MOE_RETURN_IF_ERROR(down.prepare(args.down, threads));
  const auto runUp = [&](const ExpertTask& t, int thread) { return up.run(t, thread); };
  const auto runDown = [&](const ExpertTask& t, int) { return down.run(t); };
  if (!chainable(up.tasks(), down.tasks(), threads) || !sameItems(up.tasks(), down.tasks())) {
    bool perTask = false;
    const Status first = forEachExpertTask(up.tasks(), runUp, &perTask, threads);
    if (args.up.swigluSeconds) *args.up.swigluSeconds = up.swigluSeconds(perTask);
    MOE_RETURN_IF_ERROR(prefixed("expertUp: ", first));
    const Clock::time_point t0 = Clock::now();
    const Status second = forEachExpertTask(down.tasks(), runDown, nullptr, threads);
    if (args.downSeconds) *args.downSeconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return prefixed(kGroupedGemmPrefix, second);
  }
  std::vector<double> downSeconds(static_cast<size_t>(threads), 0.0);  // per pool thread
  const auto timedDown = [&](const ExpertTask& t, int thread) {
    const Clock::time_point t0 = Clock::now();
    Status status = down.run(t);
    downSeconds[static_cast<size_t>(thread)] += std::chrono::duration<double>(Clock::now() - t0).count();
    return status;
  };
  Status first, second;
  forEachChainedTask(up.tasks(), down.tasks(), runUp, timedDown, threads, &first, &second);
  if (args.up.swigluSeconds) *args.up.swigluSeconds = up.swigluSeconds(true);
  if (args.downSeconds) {
    double seconds = 0;
    for (double s : downSeconds) seconds += s;
    *args.downSeconds = seconds / threads;
  }
  MOE_RETURN_IF_ERROR(prefixed("expertUp: ", first));
  return prefixed(kGroupedGemmPrefix, second);
}

}  // namespace moe::cpu
