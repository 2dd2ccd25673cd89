// A small persistent thread pool for the CPU backend's kernels.
//
// Written by hand rather than using OpenMP: calls arrive from libuv's worker
// threads (the async API) as well as from the JS thread, and each OpenMP
// caller thread would grow its own team; one pool shared by all callers, with
// one parallel region at a time, keeps the machine at exactly N busy threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::cpu {

class ThreadPool {
 public:
  // The process-wide pool. Its size comes from MOE_NUM_THREADS, else the number
  // of hardware threads.
  static ThreadPool& instance();

  ~ThreadPool();

  // May change at any time (setNumThreads from another thread): a caller that
  // sizes per-thread scratch by it passes the value it read to parallelFor.
  int numThreads() const { return numThreads_.load(std::memory_order_acquire); }
  // Resizes the pool (n >= 1); waits for a running region to finish first.
  void setNumThreads(int n);

  // Runs fn(task, thread) for every task in [0, numTasks), handing tasks out
  // dynamically (a worker that wakes late joins while tasks remain, else
  // sits the region out); `thread` is in [0, numThreads()) and unique among the calls
  // running at one time, so it can index per-thread scratch memory. Tasks
  // run in the default floating-point environment (float_environment.h).
  // Returns when all tasks are done. A call from inside a task runs serially.
  //
  // `maxThreads`: the number of per-thread slots the caller sized from an
  // earlier numThreads(); `thread` stays below it even if setNumThreads() grew
  // the pool in between (at most that many threads then take tasks).
  void parallelFor(int64_t numTasks, const std::function<void(int64_t task, int thread)>& fn,
                   int maxThreads = std::numeric_limits<int>::max());

  // True while this thread runs a region's task: a parallelFor from here
  // runs serially on this thread alone.
  static bool insideRegion();

 private:
  explicit ThreadPool(int n);
  void start(int n);
  void stop();
  void workerLoop(int thread, uint64_t seen);
  void runTasks(int thread);

  std::atomic<int> numThreads_{1};
  std::vector<std::thread> workers_;

  std::mutex regionMutex_;  // one parallel region at a time

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  bool open_ = false;      // a region's tasks are still being handed out: workers may join it
  int activeWorkers_ = 0;  // workers that joined the region and have not finished

  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t jobTasks_ = 0;
  int jobThreads_ = 0;  // threads [0, jobThreads_) take the job's tasks
  std::atomic<int64_t> nextTask_{0};
};

int defaultNumThreads();

}  // namespace moe::cpu
