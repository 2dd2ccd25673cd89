#include "cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <pthread.h>
#endif

#include "cpu/float_environment.h"

namespace moe::cpu {

namespace {
thread_local bool t_insideRegion = false;
thread_local int regionThread = 0;  // the pool thread index while inside a region
}

int defaultNumThreads() {
  if (const char* env = std::getenv("MOE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void nameThisThread(const char* name) {
#if defined(__linux__)
  char truncated[16] = {};
  std::snprintf(truncated, sizeof truncated, "%s", name);
  pthread_setname_np(pthread_self(), truncated);
#else
  (void)name;
#endif
}

namespace {

int spinMicrosFromEnv() {
  if (const char* env = std::getenv("MOE_CPU_SPIN_US")) {
    char* end = nullptr;
    const long us = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && us >= 0 && us <= 10000) return static_cast<int>(us);
  }
  return ThreadPool::kSpinMicros;
}

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

bool traceFromEnv() {
  const char* env = std::getenv("MOE_TRACE_REGIONS");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

using Clock = std::chrono::steady_clock;

}  // namespace

template <class Ready>
bool ThreadPool::watch(Ready ready, int micros) const {
  if (ready()) return true;
  if (micros == 0) return false;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point end = Clock::now() + std::chrono::microseconds(micros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {  // ~2-5 us of pauses between looks at the clock
      cpuRelax();
      if (ready()) return true;
    }
    if (Clock::now() >= end) return ready();
    // On an oversubscribed machine the thread this one waits for may be
    // queued on this vCPU: let it run (returns at once when nothing waits).
    std::this_thread::yield();
  }
}

ThreadPool& ThreadPool::instance() {
  // Never destroyed: joining threads during static destruction at process exit
  // races with Node's own teardown. Its threads outlive any one environment:
  // a worker thread that exits (process.exit, terminate) with Promise-form ops
  // in flight leaves them running here, which is safe only because the addon
  // is never unmapped (-z nodelete, binding.gyp). Work that an op queues
  // elsewhere (libuv's pool, a package-owned queue for the Promise forms) must
  // either run only this library's code, or be drained and joined in an
  // environment cleanup hook (napi_add_env_cleanup_hook) before the
  // environment's state (its references, its instance data) is freed.
  static ThreadPool* pool = new ThreadPool(defaultNumThreads());
  return *pool;
}

ThreadPool::ThreadPool(int n)
    : spinMicros_(spinMicrosFromEnv()),
      wakeWatchMicros_(spinMicros_ == 0 ? 0 : std::max(spinMicros_, kWakeWatchMicros)),
      trace_(traceFromEnv()) {
  start(n);
}

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int n) {
  n = n < 1 ? 1 : n;
  stopping_.store(false);
  // A worker started by setNumThreads() must not take the last region's
  // generation for a new job: it would run no task yet count itself done,
  // and the pool's count of busy workers would no longer match the region's
  // (a region waiting forever, or ending while a task still ran).
  const uint64_t born = generation_.load();
  // The calling thread is thread 0; workers are 1..n-1.
  busySeconds_.assign(static_cast<size_t>(n), 0.0);
  for (int t = 1; t < n; ++t) workers_.emplace_back([this, t, born] { workerLoop(t, born); });
  numThreads_.store(n, std::memory_order_release);
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

void ThreadPool::setNumThreads(int n) {
  std::lock_guard<std::mutex> region(regionMutex_);
  if (n == numThreads_.load()) return;
  stop();
  start(n);
}

void ThreadPool::runTasks(int thread) {
  regionThread = thread;
  for (;;) {
    const int64_t task = nextTask_.fetch_add(1, std::memory_order_relaxed);
    if (task >= jobTasks_) return;
    if (trace_) {
      const Clock::time_point start = Clock::now();
      (*job_)(task, thread);
      busySeconds_[static_cast<size_t>(thread)] += std::chrono::duration<double>(Clock::now() - start).count();
    } else {
      (*job_)(task, thread);
    }
  }
}

void ThreadPool::traceRegion(int64_t numTasks, int threads, Clock::time_point start) {
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  char line[512];
  int at = std::snprintf(line, sizeof line, "moe-kernels region: tasks %lld, wall %.3f ms, busy", static_cast<long long>(numTasks), wall * 1e3);
  double idle = 0;
  for (int t = 0; t < threads; ++t) {
    const double busy = busySeconds_[static_cast<size_t>(t)];
    idle += wall - busy;
    busySeconds_[static_cast<size_t>(t)] = 0;
    if (at > 0 && at < static_cast<int>(sizeof line)) at += std::snprintf(line + at, sizeof line - at, " %.3f", busy * 1e3);
  }
  if (at > 0 && at < static_cast<int>(sizeof line)) std::snprintf(line + at, sizeof line - at, " ms, idle %.3f ms\n", idle * 1e3);
  std::fputs(line, stderr);
}

void ThreadPool::warmCaches(int thread, uint64_t seen, const CacheRange* ranges, int count, int workers) const {
  constexpr size_t kLine = 64, kStep = 4096;  // a region's start is looked for every kStep bytes
  size_t total = 0;
  for (int r = 0; r < count; ++r) total += ranges[r].bytes;
  // Worker `thread` (1..workers) reads bytes [begin, end) of the ranges laid end to end.
  const size_t share = total / static_cast<size_t>(workers);
  const size_t begin = share * static_cast<size_t>(thread - 1), end = thread == workers ? total : begin + share;
  size_t offset = 0;  // of range r in the ranges laid end to end
  for (int r = 0; r < count && offset < end; offset += ranges[r].bytes, ++r) {
    const size_t lo = std::max(begin, offset), hi = std::min(end, offset + ranges[r].bytes);
    if (lo >= hi) continue;
    const uintptr_t base = reinterpret_cast<uintptr_t>(ranges[r].data) - offset;
    for (uintptr_t at = (base + lo) & ~uintptr_t{kLine - 1}; at < base + hi; at += kStep) {
      if (generation_.load(std::memory_order_relaxed) != seen || stopping_.load(std::memory_order_relaxed)) return;
      const uintptr_t stop = std::min<uintptr_t>(at + kStep, base + hi);
      for (uintptr_t line = at; line < stop; line += kLine) __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
    }
  }
}

void ThreadPool::workerLoop(int thread, uint64_t seen) {
  const DefaultFloatEnvironment fpEnvironment;  // for the worker's lifetime
  nameThisThread(("moe-pool-" + std::to_string(thread)).c_str());
  int micros = spinMicros_;
  for (;;) {
    // Watch for the next region (or the pool's end), then sleep until it.
    watch([&] { return generation_.load(std::memory_order_acquire) != seen || stopping_.load(std::memory_order_relaxed); }, micros);
    bool join = false;
    CacheRange warm[kMaxCacheRanges];
    int warmCount = 0, warmWorkers = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!(stopping_ || generation_ != seen)) {
        ++sleepingWorkers_;
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        --sleepingWorkers_;
      }
      if (stopping_) return;
      seen = generation_;
      micros = announced_ ? wakeWatchMicros_ : spinMicros_;
      // A worker that wakes after the caller closed the region (every task
      // taken) or beyond the caller's per-thread slots has nothing to do
      // (but an announced region's first reads).
      join = open_ && thread < jobThreads_;
      if (join) {
        activeWorkers_.fetch_add(1, std::memory_order_relaxed);
      } else if (announced_ && thread <= warmWorkers_) {
        warmCount = warmCount_;
        warmWorkers = warmWorkers_;
        std::copy(warm_, warm_ + warmCount, warm);
      }
    }
    if (!join) {
      if (warmCount > 0) {
        const auto start = std::chrono::steady_clock::now();
        warmCaches(thread, seen, warm, warmCount, warmWorkers);
        // The watch that follows is what the reads left of it.
        const auto spent = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
        micros = static_cast<int>(std::max<int64_t>(spinMicros_, micros - spent));
      }
      continue;
    }
    t_insideRegion = true;
    runTasks(thread);
    t_insideRegion = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Release: the caller that sees 0 without the lock sees the tasks' writes.
      if (activeWorkers_.fetch_sub(1, std::memory_order_release) == 1 && callerSleeping_) done_.notify_one();
    }
  }
}

bool ThreadPool::insideRegion() { return t_insideRegion; }

void ThreadPool::wakeWorkers(const CacheRange* ranges, int count) {
  // A woken worker that does not watch (MOE_CPU_SPIN_US=0) would find no
  // region yet and sleep again at once: the wake would cost the caller its
  // notify and the woken thread its round trip through the kernel, and still
  // leave the first region to wake it. Measured with a lone caller of a 1-
  // and a 30-token forward (H = 896): 16 and 35 us less of the caller's CPU
  // per forward without it, the forward's wall time no longer (within 1-5%).
  if (wakeWatchMicros_ == 0) return;
  std::unique_lock<std::mutex> region(regionMutex_, std::try_to_lock);
  if (!region.owns_lock()) return;  // a region runs (or the pool resizes): its workers are awake
  if (workers_.empty()) return;
  bool wakeSleepers = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // A generation without a job (open_ is false between regions): each
    // worker, asleep or still watching after the last region, finds nothing
    // to join and watches for the announced region (kWakeWatchMicros).
    announced_ = true;
    warmCount_ = std::clamp(count, 0, kMaxCacheRanges);
    std::copy(ranges, ranges + warmCount_, warm_);
    warmWorkers_ = numThreads_.load() - 1;  // fixed while the region lock is held
    generation_.fetch_add(1, std::memory_order_release);
    wakeSleepers = sleepingWorkers_ > 0;
  }
  if (wakeSleepers) wake_.notify_all();
}

void ThreadPool::parallelFor(int64_t numTasks, const std::function<void(int64_t, int)>& fn, int maxThreads) {
  if (numTasks <= 0) return;
  if (t_insideRegion) {
    for (int64_t task = 0; task < numTasks; ++task) fn(task, regionThread);
    return;
  }
  const DefaultFloatEnvironment fpEnvironment;  // the caller's own settings come back on return
  if (numTasks == 1) {
    for (int64_t task = 0; task < numTasks; ++task) fn(task, 0);
    return;
  }
  std::lock_guard<std::mutex> region(regionMutex_);
  const int threads = numThreads_.load();  // fixed while the region lock is held
  if (threads == 1 || maxThreads <= 1) {
    // Still a region: a nested parallelFor from a task must run serially,
    // not wait for the lock this thread holds.
    t_insideRegion = true;
    regionThread = 0;
    for (int64_t task = 0; task < numTasks; ++task) fn(task, 0);
    t_insideRegion = false;
    return;
  }
  const Clock::time_point start = trace_ ? Clock::now() : Clock::time_point();
  bool wakeSleepers = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    jobTasks_ = numTasks;
    jobThreads_ = std::min(threads, maxThreads);
    nextTask_.store(0, std::memory_order_relaxed);
    open_ = true;
    announced_ = false;
    activeWorkers_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    wakeSleepers = sleepingWorkers_ > 0;  // workers still watching see the new generation themselves
  }
  if (wakeSleepers) wake_.notify_all();
  t_insideRegion = true;
  runTasks(0);
  t_insideRegion = false;
  // Every task is taken: wait only for the workers that joined and still run
  // theirs. One that has not woken yet (a vCPU idle in the hypervisor takes
  // 20-150 us to come back) no longer holds the region open; the caller has
  // done its share of the work meanwhile.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  const auto finished = [&] { return activeWorkers_.load(std::memory_order_acquire) == 0; };
  if (!watch(finished, spinMicros_)) {
    std::unique_lock<std::mutex> lock(mutex_);
    callerSleeping_ = true;
    done_.wait(lock, finished);
    callerSleeping_ = false;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  job_ = nullptr;
  if (trace_) traceRegion(numTasks, jobThreads_, start);
}

}  // namespace moe::cpu
