// A small persistent thread pool for the CPU backend's kernels.
//
// Written by hand rather than using OpenMP: calls arrive from libuv's worker
// threads (the async API) as well as from the JS thread, and each OpenMP
// caller thread would grow its own team; one pool shared by all callers, with
// one parallel region at a time, keeps the machine at exactly N busy threads.
//
// Between regions a worker watches for the next one for kSpinMicros before it
// sleeps, and the caller watches for the workers' last tasks as long before
// it sleeps: a decode step's regions follow each other within ~20 us, while
// waking a thread that sleeps in the kernel costs the waker 17-32 us and the
// woken thread 43-77 us more on a virtual machine (the hypervisor brings the
// idle vCPU back). The watch is bounded, so an idle process uses no CPU.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
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

  // Memory a woken worker reads into the caches (wakeWorkers).
  struct CacheRange {
    const void* data = nullptr;
    size_t bytes = 0;
  };
  static constexpr int kMaxCacheRanges = 8;

  // Work is coming (a layer forward about to start): sleeping workers wake
  // now and watch for its first region (for kWakeWatchMicros), so that their
  // wake-up overlaps the caller's preparation instead of the region. Costs
  // the caller the notify where a worker sleeps, nothing else; does nothing
  // while a region runs, or where a woken worker would not watch
  // (MOE_CPU_SPIN_US=0).
  //
  // `ranges` (at most kMaxCacheRanges, in the order the work reads them):
  // before watching, the woken workers read these into the caches, split
  // between them, and stop as soon as a region starts. A decode forward's
  // argument checks (JS and addon) take 100-250 us on cold caches and read
  // no weights: the memory bus would idle. A worker woken from sleep starts
  // reading 90-150 us after the wake on the 2-vCPU VM and reads ~30 GB/s,
  // so the router's weights (0.9 MB) and most of the shared expert's (2.75
  // MB) are in the caches when their regions start. Only prefetch
  // instructions touch the ranges (they never fault): a range freed in
  // between costs nothing.
  void wakeWorkers(const CacheRange* ranges = nullptr, int count = 0);

  // True while this thread runs a region's task: a parallelFor from here
  // runs serially on this thread alone.
  static bool insideRegion();

  // How long a worker watches for the next region, and a caller for its
  // workers' last tasks, before sleeping (MOE_CPU_SPIN_US overrides: 0 never
  // watches, at most 10000).
  static constexpr int kSpinMicros = 100;
  int spinMicros() const { return spinMicros_; }
  // How long a worker woken by wakeWorkers() watches for the region it
  // announced: a decode forward's first region starts 60-260 us after the
  // wake (the argument checks in JS and in the addon; the longer times right
  // after the caches were flushed), past kSpinMicros, and a worker asleep
  // again by then costs the region its 40-80 us wake-up a second time.
  // Bounded as the watch is (0 where MOE_CPU_SPIN_US is 0).
  static constexpr int kWakeWatchMicros = 500;
  int wakeWatchMicros() const { return wakeWatchMicros_; }

 private:
  explicit ThreadPool(int n);
  void start(int n);
  void stop();
  void workerLoop(int thread, uint64_t seen);
  // Worker `thread`'s share (of `workers`) of the announced ranges, read into
  // the caches until the generation moves past `seen`.
  void warmCaches(int thread, uint64_t seen, const CacheRange* ranges, int count, int workers) const;
  void runTasks(int thread);
  // The tracing line of a region that started at `start` (and resets its busy times).
  void traceRegion(int64_t numTasks, int threads, std::chrono::steady_clock::time_point start);
  // Watches `ready` for up to spinMicros_; true once it holds.
  template <class Ready>
  bool watch(Ready ready, int micros) const;

  std::atomic<int> numThreads_{1};
  int spinMicros_ = kSpinMicros;
  int wakeWatchMicros_ = kWakeWatchMicros;
  // MOE_TRACE_REGIONS=1: every region run by more than one thread writes a
  // line to stderr, "moe-kernels region: tasks N, wall W ms, busy B0 B1 ..
  // ms, idle I ms": per pool thread the time spent in its tasks, and the
  // threads' time in the region outside their tasks (waking late, or done
  // while others still ran). Read when the pool starts; off, a task costs
  // one branch more.
  bool trace_ = false;
  // Per pool thread, the current region's time in tasks (tracing only):
  // written by that thread, read by the caller once every worker is done.
  std::vector<double> busySeconds_;
  std::vector<std::thread> workers_;

  std::mutex regionMutex_;  // one parallel region at a time

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // Written under mutex_; read without it by threads that watch for a change.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> activeWorkers_{0};  // workers that joined the region and have not finished
  bool open_ = false;           // a region's tasks are still being handed out: workers may join it
  bool announced_ = false;      // the current generation is wakeWorkers()'s: a region is on its way
  CacheRange warm_[kMaxCacheRanges];  // the announced region's first reads (announced_ only)
  int warmCount_ = 0;
  int warmWorkers_ = 0;  // the workers that share them: 1..warmWorkers_
  int sleepingWorkers_ = 0;     // workers blocked on wake_: a new region notifies only these
  bool callerSleeping_ = false;  // the caller blocks on done_: the last worker out notifies it

  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t jobTasks_ = 0;
  int jobThreads_ = 0;  // threads [0, jobThreads_) take the job's tasks
  std::atomic<int64_t> nextTask_{0};
};

int defaultNumThreads();

// Names the calling thread (at most 15 characters show) where the platform
// allows: `top -H`, `perf` and /proc/<pid>/task/*/comm tell the package's
// threads from the runtime's.
void nameThisThread(const char* name);

}  // namespace moe::cpu
