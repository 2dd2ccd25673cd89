// Tasks handed out in contiguous runs, one run per thread, for the kernels
// that stream B from memory at small M.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"

namespace moe::cpu {

// Runs fn(task, thread) for every task in [0, tasks) on at most `threads`
// threads (thread < threads, as for ThreadPool::parallelFor's maxThreads:
// the count the caller sized per-thread scratch by). Thread p first takes
// the tasks of run p (the p-th of `threads` near-equal contiguous runs) in
// order, then helps the other runs from where they stand. Tasks that are
// consecutive runs of B rows then stream as one region per thread: a task's
// prefetches run on into the thread's own next task, where handing tasks out
// one by one made every task start cold and its last lines prefetched for the
// other thread.
template <typename Fn>
void parallelForInRuns(int64_t tasks, int threads, const Fn& fn) {
  const int64_t runs = tasks < threads ? tasks : threads;
  struct Run {
    alignas(64) std::atomic<int64_t> next;  // the run's next task
    int64_t end;
  };
  std::vector<Run> run(static_cast<size_t>(runs));
  for (int64_t r = 0; r < runs; ++r) {
    run[static_cast<size_t>(r)].next.store(tasks * r / runs, std::memory_order_relaxed);
    run[static_cast<size_t>(r)].end = tasks * (r + 1) / runs;
  }
  ThreadPool::instance().parallelFor(runs, [&](int64_t own, int thread) {
    for (int64_t q = 0; q < runs; ++q) {
      Run& r = run[static_cast<size_t>((own + q) % runs)];
      for (int64_t t; (t = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end;) fn(t, thread);
    }
  }, threads);
}

}  // namespace moe::cpu
