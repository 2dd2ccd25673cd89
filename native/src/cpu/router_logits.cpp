#include "cpu/router_logits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <immintrin.h>

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/quantize.h"
#include "cpu/quantize_row_kernels.h"
#include "cpu/router_logits_amx.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu {

namespace {

// Each task widens a few tokens and streams every router row past them once:
// w (E x H floats, megabytes) is read once per task, not once per token.
constexpr int64_t kTokensPerTask = 8;
// Experts are split too, so that a decode step (a single token block) still
// spreads its E x H router weights over every thread.
constexpr int64_t kExpertsPerTask = 32;

void widenRow(const TensorView& t, int64_t row, int64_t cols, float* out) {
  if (t.dtype == DType::kF32) {
    std::copy_n(t.as<const float>() + row * cols, cols, out);
  } else {
    const uint16_t* in = t.as<const uint16_t>() + row * cols;
    for (int64_t c = 0; c < cols; ++c) out[c] = bf16ToFloat(in[c]);
  }
}

// Eight independent partial sums so that the compiler can vectorize the loop
// without reassociating a single float sum (which -O3 alone will not do).
float dot(const float* a, const float* b, int64_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) partial[i % 8] += a[i] * b[i];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

// out[t] = rows[t] . w for the `count` (<= kTokensPerTask) rows of a block
// [count, H] f32: each w vector is loaded once for all the rows. The SIMD
// versions take the row count as a template argument so that the
// accumulators stay in registers.
using BlockDots = void (*)(const float* rows, int64_t count, const float* w, int64_t h, float* out);

void blockDotsPortable(const float* rows, int64_t count, const float* w, int64_t h, float* out) {
  for (int64_t t = 0; t < count; ++t) out[t] = dot(rows + t * h, w, h);
}

template <int64_t kRows>
__attribute__((target("avx2,fma"))) void blockDotsAvx2(const float* rows, const float* w, int64_t h, float* out) {
  __m256 acc[kRows];
  for (auto& a : acc) a = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= h; i += 8) {
    const __m256 wv = _mm256_loadu_ps(w + i);
    for (int64_t t = 0; t < kRows; ++t) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(rows + t * h + i), wv, acc[t]);
  }
  for (int64_t t = 0; t < kRows; ++t) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[t]);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (int64_t j = i; j < h; ++j) sum += rows[t * h + j] * w[j];
    out[t] = sum;
  }
}

template <int64_t kRows>
__attribute__((target("avx512f"))) void blockDotsAvx512(const float* rows, const float* w, int64_t h, float* out) {
  __m512 acc[kRows];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < h; i += 16) {
    // H is a multiple of 16 for the layer, but the op takes any H: mask the tail.
    const __mmask16 mask = h - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (h - i)) - 1u);
    const __m512 wv = _mm512_maskz_loadu_ps(mask, w + i);
    for (int64_t t = 0; t < kRows; ++t) acc[t] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, rows + t * h + i), wv, acc[t]);
  }
  // A store and a scalar sum rather than _mm512_reduce_add_ps, whose GCC 12
  // header trips -Wuninitialized.
  for (int64_t t = 0; t < kRows; ++t) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[t]);
    float sum = 0.0f;
    for (float lane : lanes) sum += lane;
    out[t] = sum;
  }
}

// Sums each of 16 vectors: lane i of the result is the sum of v[i]'s lanes
// (a transpose-and-add tree: 15 adds and 30 shuffles for 16 sums).
__attribute__((target("avx512f"))) inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 2; ++i) {
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// A full block of 8 rows against experts [e0, e1) of w, two experts per pass:
// 16 accumulators (8 rows x 2 experts) take 10 loads per 16 FMAs, and one
// tree reduction finishes all 16 dots. An odd last expert uses blockDotsAvx512.
__attribute__((target("avx512f"))) void block8Avx512(const float* rows, const float* w, int64_t h, int64_t e0,
                                                     int64_t e1, float* logits, int64_t experts) {
  int64_t e = e0;
  for (; e + 2 <= e1; e += 2) {
    const float* w0 = w + e * h;
    const float* w1 = w0 + h;
    __m512 acc[16];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += 16) {
      const __mmask16 mask = h - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (h - i)) - 1u);
      const __m512 wa = _mm512_maskz_loadu_ps(mask, w0 + i);
      const __m512 wb = _mm512_maskz_loadu_ps(mask, w1 + i);
      for (int t = 0; t < 8; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(mask, rows + t * h + i);
        acc[2 * t] = _mm512_fmadd_ps(xv, wa, acc[2 * t]);
        acc[2 * t + 1] = _mm512_fmadd_ps(xv, wb, acc[2 * t + 1]);
      }
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, sum16(acc));
    for (int t = 0; t < 8; ++t) {
      logits[t * experts + e] = sums[2 * t];
      logits[t * experts + e + 1] = sums[2 * t + 1];
    }
  }
  if (e < e1) {
    float dots[8];
    blockDotsAvx512<8>(rows, w + e * h, h, dots);
    for (int t = 0; t < 8; ++t) logits[t * experts + e] = dots[t];
  }
}

// Dispatches a run-time row count to the kernel instantiated for it.
template <template <int64_t> class Kernel>
void byRowCount(const float* rows, int64_t count, const float* w, int64_t h, float* out) {
  switch (count) {
    case 1: return Kernel<1>::run(rows, w, h, out);
    case 2: return Kernel<2>::run(rows, w, h, out);
    case 3: return Kernel<3>::run(rows, w, h, out);
    case 4: return Kernel<4>::run(rows, w, h, out);
    case 5: return Kernel<5>::run(rows, w, h, out);
    case 6: return Kernel<6>::run(rows, w, h, out);
    case 7: return Kernel<7>::run(rows, w, h, out);
    default: return Kernel<8>::run(rows, w, h, out);
  }
}
static_assert(kTokensPerTask == 8, "byRowCount covers 1..8 rows");

template <int64_t kRows>
struct Avx512Dots {
  static void run(const float* rows, const float* w, int64_t h, float* out) { blockDotsAvx512<kRows>(rows, w, h, out); }
};
template <int64_t kRows>
struct Avx2Dots {
  static void run(const float* rows, const float* w, int64_t h, float* out) { blockDotsAvx2<kRows>(rows, w, h, out); }
};

BlockDots selectBlockDots() {
  const CpuFeatures& f = cpuFeatures();
  if (f.avx512f) return byRowCount<Avx512Dots>;
  if (f.avx2 && f.fma) return byRowCount<Avx2Dots>;
  return blockDotsPortable;
}

// The AMX path needs bf16 on both sides (exact tile products), whole K steps
// of 32 and whole 16-expert tiles; the layer's shapes always qualify.
bool amxApplies(const RouterLogitsArgs& args) {
  return gemmUsesAmx() && args.x.dtype == DType::kBF16 && args.w.dtype == DType::kBF16 &&
         args.x.dim(1) % 32 == 0 && args.w.dim(0) % kAmxRouterExperts == 0;
}

// Tasks are blocks of 32 tokens x a run of experts: all experts when there
// are enough token blocks for the threads (w, [E, H] bf16, stays in L2 and
// each token block is packed once); otherwise the experts are split so that
// a decode step still spreads w over every thread.
thread_local ThreadScratch t_routerScratch;

// Quantizes x's token rows [t0, t0 + count) 1x128 (the row kernels of
// quantizeActivations, so the same bits); false if a row is not finite.
bool quantizeTokenRows(const QuantizeArgs& q, int64_t t0, int64_t count) {
  const int64_t hidden = q.x.dim(1), groups = ceilDiv(hidden, kQuantGroup);
  const qrow::RowKernels& kernels = qrow::selectedRowKernels();
  bool finite = true;
  for (int64_t t = t0; t < t0 + count; ++t) {
    finite &= kernels.quantizeRowBF16(q.x.as<const uint16_t>() + t * hidden, hidden, q.scaleFormat,
                                      q.q.as<uint8_t>() + t * hidden, q.scales.as<float>() + t * groups);
  }
  return finite;
}

using Clock = std::chrono::steady_clock;

// `quantize` (optional): also quantize x, each token block by the task that
// covers its first experts; *quantizeSeconds gets the time, per thread summed
// over the threads. Returns kNonFinite (without a message) if a quantized row
// was not finite: the caller reruns the plain quantizer for its error.
Status routerLogitsAmx(const RouterLogitsArgs& args, const QuantizeArgs* quantize = nullptr,
                       double* quantizeSeconds = nullptr) {
  const int64_t tokens = args.x.dim(0), hidden = args.x.dim(1), experts = args.w.dim(0);
  const uint16_t* x = args.x.as<const uint16_t>();  // [T, H] bf16
  const uint16_t* w = args.w.as<const uint16_t>();  // [E, H] bf16
  float* logits = args.logits.as<float>();          // [T, E] f32
  ThreadPool& pool = ThreadPool::instance();
  const int64_t tokenBlocks = ceilDiv(tokens, kAmxRouterTokens);
  int64_t expertChunks = 1;
  if (tokenBlocks < 4 * pool.numThreads()) {
    expertChunks = std::min(experts / kAmxRouterExperts, ceilDiv(4 * pool.numThreads(), tokenBlocks));
  }
  const int64_t expertsPerTask = ceilDiv(experts / kAmxRouterExperts, expertChunks) * kAmxRouterExperts;
  expertChunks = ceilDiv(experts, expertsPerTask);
  std::atomic<bool> outOfMemory{false}, notFinite{false};
  const int threads = pool.numThreads();
  std::vector<double> quantizing(static_cast<size_t>(threads), 0.0);  // per thread: seconds
  pool.parallelFor(tokenBlocks * expertChunks, [&](int64_t task, int thread) {
    // The packed token block and the tile store buffer, kept per thread (a
    // decode step would otherwise allocate and clear it on every call).
    auto* scratch = static_cast<uint32_t*>(t_routerScratch.get(static_cast<size_t>(amxRouterScratchWords(hidden)) * 4));
    if (scratch == nullptr) {
      outOfMemory.store(true);
      return;
    }
    const int64_t t0 = (task / expertChunks) * kAmxRouterTokens;
    const int64_t e0 = (task % expertChunks) * expertsPerTask;
    const int64_t e1 = std::min(experts, e0 + expertsPerTask);
    const int64_t count = std::min(tokens - t0, kAmxRouterTokens);
    amxRouterBlock(x + t0 * hidden, count, w, e0, e1, hidden, logits + t0 * experts, experts, scratch);
    if (quantize != nullptr && e0 == 0) {
      const Clock::time_point start = Clock::now();
      if (!quantizeTokenRows(*quantize, t0, count)) notFinite.store(true, std::memory_order_relaxed);
      quantizing[static_cast<size_t>(thread)] += std::chrono::duration<double>(Clock::now() - start).count();
    }
  }, threads);
  if (outOfMemory.load()) return Status(Code::kInternal, "routerLogits: out of memory for a scratch block");
  if (quantizeSeconds != nullptr) {
    double seconds = 0;
    for (double t : quantizing) seconds += t;
    *quantizeSeconds = seconds / threads;
  }
  return notFinite.load() ? Status(Code::kNonFinite, "") : Status::ok();
}

// The projection of routerLogits without the finiteness check.
Status projectLogits(const RouterLogitsArgs& args) {
  // Batch invariance: no AMX tiles and no 8-token tree reduction; every token
  // takes the per-row dot kernel, whose order does not depend on T.
  if (!args.batchInvariant && amxApplies(args)) return routerLogitsAmx(args);
  const int64_t tokens = args.x.dim(0), hidden = args.x.dim(1), experts = args.w.dim(0);
  // w widened to f32 once, shared by all tasks.
  std::vector<float> w;  // [E, H] f32
  if (args.w.dtype == DType::kBF16) {
    w.resize(static_cast<size_t>(experts * hidden));
    for (int64_t e = 0; e < experts; ++e) widenRow(args.w, e, hidden, w.data() + e * hidden);
  }
  const float* weights = args.w.dtype == DType::kF32 ? args.w.as<const float>() : w.data();
  float* logits = args.logits.as<float>();  // [T, E] f32
  const int numThreads = ThreadPool::instance().numThreads();
  std::vector<std::vector<float>> rows(static_cast<size_t>(numThreads));  // per thread: [kTokensPerTask, H] f32
  const BlockDots blockDots = selectBlockDots();
  const bool avx512 = cpuFeatures().avx512f;
  const int64_t tokenBlocks = ceilDiv(tokens, kTokensPerTask);
  // With enough token blocks each task covers all experts (its x rows are
  // widened once); otherwise experts are split too, so that a decode step
  // still spreads its E x H router weights over every thread.
  int64_t expertChunks = 1;
  if (tokenBlocks < 4 * numThreads) {
    expertChunks = std::min(ceilDiv(experts, kExpertsPerTask), ceilDiv(4 * numThreads, tokenBlocks));
  }
  const int64_t expertsPerTask = ceilDiv(ceilDiv(experts, expertChunks), 2) * 2;
  expertChunks = ceilDiv(experts, expertsPerTask);
  ThreadPool::instance().parallelFor(tokenBlocks * expertChunks, [&](int64_t task, int thread) {
    std::vector<float>& block = rows[static_cast<size_t>(thread)];
    block.resize(static_cast<size_t>(kTokensPerTask * hidden));
    const int64_t t0 = (task / expertChunks) * kTokensPerTask;
    const int64_t e0 = (task % expertChunks) * expertsPerTask;
    const int64_t e1 = std::min(experts, e0 + expertsPerTask);
    const int64_t count = std::min(tokens, t0 + kTokensPerTask) - t0;
    for (int64_t i = 0; i < count; ++i) widenRow(args.x, t0 + i, hidden, block.data() + i * hidden);
    if (avx512 && count == kTokensPerTask && !args.batchInvariant) {
      block8Avx512(block.data(), weights, hidden, e0, e1, logits + t0 * experts, experts);
      return;
    }
    float dots[kTokensPerTask];
    for (int64_t e = e0; e < e1; ++e) {
      blockDots(block.data(), count, weights + e * hidden, hidden, dots);
      for (int64_t i = 0; i < count; ++i) logits[(t0 + i) * experts + e] = dots[i];
    }
  }, numThreads);
  return Status::ok();
}

// The first element of a contiguous f32 or bf16 tensor that is NaN or
// infinite (-1: none), and which of the two it is.
int64_t firstNonFinite(const TensorView& t, bool* isNan) {
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = t.dtype == DType::kF32 ? t.as<const float>()[i] : bf16ToFloat(t.as<const uint16_t>()[i]);
    if (!std::isfinite(v)) {
      *isNan = std::isnan(v);
      return i;
    }
  }
  return -1;
}

// x and w must be finite. The check reads the logits, not the inputs: a NaN
// or infinity anywhere in x or w makes a logit NaN or infinite (inf * 0 is
// NaN), and at decode the [T, E] logits are a hundredth of w's [E, H] (a
// JS pass over w took ~0.3 ms per call at E = 256, H = 896). Only when a
// logit is not finite are the inputs scanned, to name the element; finite
// inputs whose dot product overflows keep their infinite logit, as before.
Status checkFiniteInputs(const RouterLogitsArgs& args) {
  const float* logits = args.logits.as<const float>();  // [T, E] f32
  const int64_t n = args.logits.numel();
  bool allFinite = true;
  for (int64_t i = 0; i < n; ++i) allFinite &= std::isfinite(logits[i]);
  if (allFinite) return Status::ok();
  for (const auto& [t, what] : {std::pair{&args.x, "routerLogits: x"}, std::pair{&args.w, "routerLogits: w"}}) {
    bool isNan = false;
    const int64_t bad = firstNonFinite(*t, &isNan);
    if (bad >= 0) {
      return Status(Code::kNonFinite, std::string(what) + ": element " + std::to_string(bad) + " is " +
                                          (isNan ? "NaN" : "infinite") + ", expected a finite number");
    }
  }
  return Status::ok();
}

}  // namespace

Status routerLogitsQuantize(const RouterQuantizeArgs& args) {
  MOE_RETURN_IF_ERROR(checkRouterLogits(args.router));
  const QuantizeArgs& q = args.quantize;
  if (q.x.data == args.router.x.data && q.x.dtype == DType::kBF16 && args.router.x.dim(0) > 0 && !args.router.batchInvariant &&
      amxApplies(args.router)) {
    const Status fused = routerLogitsAmx(args.router, &q, args.quantizeSeconds);
    if (fused.code() != Code::kNonFinite) return fused;
  } else {
    MOE_RETURN_IF_ERROR(routerLogits(args.router));
  }
  // Not fusable, or a row was not finite: the quantizer itself (its error names the row).
  const Clock::time_point start = Clock::now();
  Status status = quantizeBlocks(q, 1);
  if (args.quantizeSeconds != nullptr) *args.quantizeSeconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (status.isOk()) return status;
  return Status(status.code(), "quantizeActivations: " + status.message());
}

Status routerLogits(const RouterLogitsArgs& args) {
  MOE_RETURN_IF_ERROR(checkRouterLogits(args));  // core/moe_op_checks, shared with the CUDA backend
  if (args.x.dim(0) == 0) return Status::ok();
  MOE_RETURN_IF_ERROR(projectLogits(args));
  return checkFiniteInputs(args);
}

}  // namespace moe::cpu
