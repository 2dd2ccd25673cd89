#include "cpu/segments.h"

#include <algorithm>

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

Status forEachSegment(const std::vector<Segment>& segments, const std::function<Status(const Segment&, int thread)>& run,
                      bool* perSegmentTasks, int maxThreads) {
  ThreadPool& pool = ThreadPool::instance();
  const bool perTask = static_cast<int64_t>(segments.size()) >= 4 * std::min(pool.numThreads(), maxThreads);
  if (perSegmentTasks != nullptr) *perSegmentTasks = perTask;
  if (!perTask) {
    for (const Segment& s : segments) MOE_RETURN_IF_ERROR(run(s, 0));
    return Status::ok();
  }
  std::vector<Status> failures(segments.size());
  pool.parallelFor(static_cast<int64_t>(segments.size()), [&](int64_t i, int thread) {
    failures[static_cast<size_t>(i)] = run(segments[static_cast<size_t>(i)], thread);
  }, maxThreads);
  for (const Status& status : failures) MOE_RETURN_IF_ERROR(status);
  return Status::ok();
}

}  // namespace moe::cpu
