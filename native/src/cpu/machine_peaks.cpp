#include "cpu/machine_peaks.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <unistd.h>

#include "cpu/cpu_features.h"
#include "cpu/gemm_fp8_kernels.h"
#include "cpu/huge_pages.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps results observable so the compiler cannot drop the measured loops.
std::atomic<uint64_t> g_sink{0};

using Burn = double (*)(int64_t iters, float* sink);

// One timed round: every pool thread runs `burn` for `iters` rounds. Returns flop/s.
double burnRound(Burn burn, int64_t iters) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.numThreads();
  std::vector<double> flops(static_cast<size_t>(threads), 0.0);
  const auto start = Clock::now();
  pool.parallelFor(threads, [&](int64_t, int thread) {
    float sink = 0.0f;
    flops[static_cast<size_t>(thread)] += burn(iters, &sink);
    g_sink.fetch_add(static_cast<uint64_t>(sink), std::memory_order_relaxed);
  }, threads);
  const double elapsed = secondsSince(start);
  double total = 0.0;
  for (double f : flops) total += f;
  return total / elapsed;
}

// Best GFLOP/s of `burn` on all pool threads within about `seconds`.
double measurePeak(Burn burn, int64_t probeIters, double seconds) {
  // Size one round to ~1/8 of the budget from a short single-thread probe.
  float sink = 0.0f;
  const auto start = Clock::now();
  burn(probeIters, &sink);
  const double probe = std::max(secondsSince(start), 1e-6);
  g_sink.fetch_add(static_cast<uint64_t>(sink), std::memory_order_relaxed);
  const double perRound = std::max(seconds, 0.05) / 8.0;
  const int64_t iters = std::max<int64_t>(1000, static_cast<int64_t>(probeIters * perRound / probe));

  double best = 0.0;
  const auto budgetStart = Clock::now();
  for (int rep = 0; rep < 3 || (rep < 64 && secondsSince(budgetStart) < seconds); ++rep)
    best = std::max(best, burnRound(burn, iters));
  return best / 1e9;
}

}  // namespace

double measureFmaPeakGflops(double seconds) {
  return measurePeak(fp8gemm::selectedKernels().fmaBurn, 100000, seconds);
}

double measureBf16DotPeakGflops(double seconds) {
  if (!gemmUsesAvx512Bf16()) return 0.0;
  return measurePeak(fp8gemm::kAvx512Bf16Kernels.dotBurn, 100000, seconds);
}

double measureMatrixPeakGflops(double seconds) {
  if (!gemmUsesAmx()) return 0.0;
  return measurePeak(fp8gemm::amxBurn, 20000, seconds);
}

double measureMemoryBandwidthGBs(double seconds) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.numThreads();

  // [words] uint64: 8x the last-level cache as the C library reports it,
  // within [256 MiB, 1.5 GiB] (1.5 GiB where it reports none: 5x the largest
  // L3 a VM reports, 300 MiB). Small enough to allocate and touch before and
  // after every benchmark row.
  const int64_t maxBytes = (int64_t{3} << 30) / 2, minBytes = int64_t{256} << 20;
#ifdef _SC_LEVEL3_CACHE_SIZE
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#else
  const long llc = 0;
#endif
  int64_t words = (llc > 0 ? std::clamp<int64_t>(8 * static_cast<int64_t>(llc), minBytes, maxBytes) : maxBytes) / 8;
  void* raw = nullptr;
  while (words >= (int64_t{256} << 20) / 8 && posix_memalign(&raw, size_t{2} << 20, static_cast<size_t>(words) * 8) != 0) {
    raw = nullptr;
    words /= 2;
  }
  if (raw == nullptr) return 0.0;
  // On the pages the layer's weights and workspaces get (huge_pages.h), so
  // that the ceiling is not understated next to them.
  adviseHugePages(raw, static_cast<size_t>(words) * 8);
  uint64_t* data = static_cast<uint64_t*>(raw);
  const int64_t slice = (words + threads - 1) / threads;

  // Touch every page (from the thread that will read it) so page faults are
  // not measured.
  pool.parallelFor(threads, [&](int64_t t, int) {
    const int64_t begin = t * slice, end = std::min(words, begin + slice);
    for (int64_t i = begin; i < end; ++i) data[i] = static_cast<uint64_t>(i);
  });

  double best = 0.0;
  const auto budgetStart = Clock::now();
  for (int rep = 0; rep < 3 || (rep < 64 && secondsSince(budgetStart) < seconds); ++rep) {
    const auto start = Clock::now();
    pool.parallelFor(threads, [&](int64_t t, int) {
      const int64_t begin = t * slice, end = std::min(words, begin + slice);
      // 8 independent sums: enough loads in flight; the loop vectorizes.
      uint64_t s[8] = {};
      int64_t i = begin;
      for (; i + 8 <= end; i += 8)
        for (int u = 0; u < 8; ++u) s[u] += data[i + u];
      for (; i < end; ++i) s[0] += data[i];
      uint64_t sum = 0;
      for (uint64_t v : s) sum += v;
      g_sink.fetch_add(sum, std::memory_order_relaxed);
    });
    best = std::max(best, static_cast<double>(words) * 8.0 / secondsSince(start));
  }
  std::free(raw);
  return best / 1e9;
}

}  // namespace moe::cpu
