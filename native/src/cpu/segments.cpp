#include "cpu/segments.h"

#include <algorithm>
#include <atomic>
#include <memory>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <thread>

#include "cpu/gemm_fp8.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

TensorView rowSlice(const TensorView& t, int64_t row0, int64_t rows, int64_t cols) {
  auto* base = static_cast<uint8_t*>(t.data) + row0 * cols * static_cast<int64_t>(dtypeSize(t.dtype));
  return TensorView::contiguous(base, t.dtype, {rows, cols});
}

std::vector<Segment> contiguousSegments(const int32_t* groupIndex, int64_t rows, int64_t groupOffset) {
  std::vector<Segment> segments;
  for (int64_t start = 0; start < rows;) {
    int64_t end = start + 1;
    while (end < rows && groupIndex[end] == groupIndex[start]) ++end;
    segments.push_back({groupIndex[start] < 0 ? -1 : groupIndex[start] - groupOffset, start, end - start});
    start = end;
  }
  return segments;
}

namespace {

constexpr int64_t kSplitMaxRows = 16;
// Each extra run restarts the weight stream and repacks A: at T = 1 on 2
// threads, runs for 8 tasks per thread (18 tasks) took 4-10% longer than
// the 9 whole experts (alternating runs), so runs are cut only below 4.
constexpr int64_t kTasksPerThread = 4;

}  // namespace

std::vector<ExpertTask> planExpertTasks(const std::vector<Segment>& segments, int64_t sharedRows, int64_t cols, int64_t colBlock,
                                        int threads) {
  std::vector<Segment> items;
  const int64_t sharedChunk = sharedRows > 0 ? gemmRowTileRows(sharedRows) : 1;
  for (int64_t r0 = 0; r0 < sharedRows; r0 += sharedChunk)
    items.push_back({kSharedGroup, r0, std::min(sharedChunk, sharedRows - r0)});
  items.insert(items.end(), segments.begin(), segments.end());
  const int64_t blocks = std::max<int64_t>(1, ceilDiv(cols, colBlock));
  const int64_t want = kTasksPerThread * std::max(threads, 1);
  const int64_t parts = std::clamp<int64_t>(ceilDiv(want, std::max<int64_t>(1, static_cast<int64_t>(items.size()))), 1, blocks);
  std::vector<ExpertTask> tasks;
  for (size_t i = 0; i < items.size(); ++i) {
    const Segment& s = items[i];
    const int64_t n = s.group != -1 && s.rows <= kSplitMaxRows ? parts : 1;
    for (int64_t p = 0; p < n; ++p) {
      const int64_t c0 = std::min(cols, blocks * p / n * colBlock), c1 = std::min(cols, blocks * (p + 1) / n * colBlock);
      tasks.push_back({s.group, s.row0, s.rows, c0, c1 - c0, static_cast<int64_t>(i)});
    }
  }
  return tasks;
}

Status forEachExpertTask(const std::vector<ExpertTask>& tasks, const std::function<Status(const ExpertTask&, int thread)>& run,
                         bool* perTask, int threads) {
  const bool parallel = static_cast<int64_t>(tasks.size()) >= 4 * threads && threads > 1;
  if (perTask != nullptr) *perTask = parallel;
  if (!parallel) {
    for (const ExpertTask& t : tasks) MOE_RETURN_IF_ERROR(run(t, 0));
    return Status::ok();
  }
  std::vector<Status> failures(tasks.size());
  ThreadPool::instance().parallelFor(static_cast<int64_t>(tasks.size()), [&](int64_t i, int thread) {
    failures[static_cast<size_t>(i)] = run(tasks[static_cast<size_t>(i)], thread);
  }, threads);
  for (const Status& status : failures) MOE_RETURN_IF_ERROR(status);
  return Status::ok();
}

bool chainable(const std::vector<ExpertTask>& first, const std::vector<ExpertTask>& second, int threads) {
  const auto perTask = [&](const std::vector<ExpertTask>& tasks) { return static_cast<int64_t>(tasks.size()) >= 4 * threads; };
  return threads > 1 && perTask(first) && perTask(second);
}

void forEachChainedTask(const std::vector<ExpertTask>& first, const std::vector<ExpertTask>& second,
                        const std::function<Status(const ExpertTask&, int thread)>& runFirst,
                        const std::function<Status(const ExpertTask&, int thread)>& runSecond, int threads, Status* firstStatus,
                        Status* secondStatus) {
  int64_t items = 0;
  for (const ExpertTask& t : first) items = std::max(items, t.item + 1);
  for (const ExpertTask& t : second) items = std::max(items, t.item + 1);
  // Per item: its `first` tasks not yet done, and whether one failed.
  std::unique_ptr<std::atomic<int32_t>[]> pending(new std::atomic<int32_t>[static_cast<size_t>(items)]);
  std::unique_ptr<std::atomic<bool>[]> failed(new std::atomic<bool>[static_cast<size_t>(items)]);
  for (int64_t i = 0; i < items; ++i) {
    pending[i].store(0, std::memory_order_relaxed);
    failed[i].store(false, std::memory_order_relaxed);
  }
  for (const ExpertTask& t : first) pending[t.item].fetch_add(1, std::memory_order_relaxed);
  std::vector<Status> failures(first.size() + second.size());
  const int64_t numFirst = static_cast<int64_t>(first.size());
  ThreadPool::instance().parallelFor(numFirst + static_cast<int64_t>(second.size()), [&](int64_t i, int thread) {
    if (i < numFirst) {
      const ExpertTask& t = first[static_cast<size_t>(i)];
      Status status = runFirst(t, thread);
      if (!status.isOk()) failed[t.item].store(true, std::memory_order_relaxed);
      failures[static_cast<size_t>(i)] = std::move(status);
      pending[t.item].fetch_sub(1, std::memory_order_release);  // publishes the task's output with it
      return;
    }
    const ExpertTask& t = second[static_cast<size_t>(i - numFirst)];
    // Usually long done: the item's first tasks were handed out a whole
    // round of tasks earlier. Else the thread running one is near its end.
    for (int spins = 0; pending[t.item].load(std::memory_order_acquire) != 0; ++spins) {
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
      if (spins >= 64) std::this_thread::yield();  // its thread may be queued on this vCPU
    }
    if (failed[t.item].load(std::memory_order_relaxed)) return;
    failures[static_cast<size_t>(i)] = runSecond(t, thread);
  }, threads);
  *firstStatus = Status::ok();
  *secondStatus = Status::ok();
  for (int64_t i = 0; i < static_cast<int64_t>(failures.size()); ++i) {
    Status* out = i < numFirst ? firstStatus : secondStatus;
    if (out->isOk() && !failures[static_cast<size_t>(i)].isOk()) *out = failures[static_cast<size_t>(i)];
  }
}

}  // namespace moe::cpu
