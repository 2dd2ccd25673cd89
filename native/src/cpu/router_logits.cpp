#include "cpu/router_logits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/quantize.h"
#include "cpu/quantize_row_kernels.h"
#include "cpu/router_dots.h"
#include "cpu/router_logits_amx.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

namespace moe::cpu {

namespace {

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

// x's 1x128 quantization folded into the router's tasks (both kernels): each
// token block is quantized by the task that covers its first experts, right
// after the projection has read its rows; time is kept per pool thread.
class FusedQuantize {
 public:
  FusedQuantize(const QuantizeArgs* quantize, int threads)
      : quantize_(quantize), seconds_(static_cast<size_t>(threads), 0.0) {}

  // After the task over tokens [t0, t0 + count) and experts from e0, on pool thread `thread`.
  void afterTask(int64_t t0, int64_t count, int64_t e0, int thread) {
    if (quantize_ == nullptr || e0 != 0) return;
    const Clock::time_point start = Clock::now();
    if (!quantizeTokenRows(*quantize_, t0, count)) notFinite_.store(true, std::memory_order_relaxed);
    seconds_[static_cast<size_t>(thread)] += std::chrono::duration<double>(Clock::now() - start).count();
  }

  // *quantizeSeconds (optional): the per-thread time summed over the threads,
  // over their count. kNonFinite (no message) if a quantized row was not finite.
  Status finish(double* quantizeSeconds) const {
    if (quantizeSeconds != nullptr) {
      double seconds = 0;
      for (double t : seconds_) seconds += t;
      *quantizeSeconds = seconds / static_cast<double>(seconds_.size());
    }
    return notFinite_.load() ? Status(Code::kNonFinite, "") : Status::ok();
  }

 private:
  const QuantizeArgs* quantize_;
  std::vector<double> seconds_;  // per pool thread
  std::atomic<bool> notFinite_{false};
};

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
  std::atomic<bool> outOfMemory{false};
  const int threads = pool.numThreads();
  FusedQuantize fused(quantize, threads);
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
    fused.afterTask(t0, count, e0, thread);
  }, threads);
  if (outOfMemory.load()) return Status(Code::kInternal, "routerLogits: out of memory for a scratch block");
  return fused.finish(quantizeSeconds);
}

// Experts per task when a step has too few token blocks to keep every thread
// busy: a decode step still spreads its E x H router weights over every
// thread, each task streaming one contiguous run of w's rows.
constexpr int64_t kExpertsPerTask = 32;

thread_local ThreadScratch t_rowScratch;  // per thread: a block's x rows widened to f32

// The projection on the vector kernels (router_dots.h). Tasks are blocks of
// kRouterBlockTokens tokens x runs of experts. `quantize` (optional): also
// quantize x, each token block by the task that covers its first experts,
// right after the kernel has read the rows; *quantizeSeconds as for
// routerLogitsAmx. Returns kNonFinite (without a message) if a quantized row
// was not finite.
Status routerLogitsVector(const RouterLogitsArgs& args, const QuantizeArgs* quantize = nullptr,
                          double* quantizeSeconds = nullptr) {
  const int64_t tokens = args.x.dim(0), hidden = args.x.dim(1), experts = args.w.dim(0);
  const RouterKernel kernel = selectRouterKernel(args.x.dtype, args.w.dtype);
  // Rows the kernel reads in place: x in the kernel's row type.
  const bool inPlace = (args.x.dtype == DType::kBF16) == kernel.bf16Rows;
  const size_t rowBytes = static_cast<size_t>(hidden) * dtypeSize(args.x.dtype);
  float* logits = args.logits.as<float>();  // [T, E] f32
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.numThreads();
  const int64_t tokenBlocks = ceilDiv(tokens, kRouterBlockTokens);
  // With enough token blocks each task covers all experts (w, [E, H], is read
  // from the caches once per block); otherwise experts are split too.
  int64_t expertChunks = 1;
  if (tokenBlocks < 4 * threads) {
    expertChunks = std::min(ceilDiv(experts, kExpertsPerTask), ceilDiv(4 * threads, tokenBlocks));
  }
  const int64_t expertsPerTask = ceilDiv(ceilDiv(experts, expertChunks), 4) * 4;
  expertChunks = ceilDiv(experts, expertsPerTask);
  std::atomic<bool> outOfMemory{false};
  FusedQuantize fused(quantize, threads);
  pool.parallelFor(tokenBlocks * expertChunks, [&](int64_t task, int thread) {
    const int64_t t0 = (task / expertChunks) * kRouterBlockTokens;
    const int64_t e0 = (task % expertChunks) * expertsPerTask;
    const int64_t e1 = std::min(experts, e0 + expertsPerTask);
    const int64_t count = std::min(tokens - t0, kRouterBlockTokens);
    RouterBlock block;
    block.count = count;
    block.w = args.w.data;
    block.hidden = hidden;
    block.logits = logits + t0 * experts;
    block.ldLogits = experts;
    if (inPlace) {
      block.rows = static_cast<const uint8_t*>(args.x.data) + t0 * static_cast<int64_t>(rowBytes);
    } else {  // bf16 x widened for the f32 kernels
      auto* rows = static_cast<float*>(t_rowScratch.get(static_cast<size_t>(kRouterBlockTokens * hidden) * 4));
      if (rows == nullptr) {
        outOfMemory.store(true);
        return;
      }
      const uint16_t* x = args.x.as<const uint16_t>() + t0 * hidden;  // [count, H] bf16
      for (int64_t i = 0; i < count * hidden; ++i) rows[i] = bf16ToFloat(x[i]);
      block.rows = rows;
    }
    kernel.run(block, e0, e1);
    fused.afterTask(t0, count, e0, thread);
  }, threads);
  if (outOfMemory.load()) return Status(Code::kInternal, "routerLogits: out of memory for a block of rows");
  return fused.finish(quantizeSeconds);
}

// The projection of routerLogits without the finiteness check (and with the
// optional quantization of x, as routerLogitsVector). Batch invariance: no
// AMX tiles, whose blocking depends on T; the vector kernels give a token the
// same bits at any T.
Status projectLogits(const RouterLogitsArgs& args, const QuantizeArgs* quantize = nullptr, double* quantizeSeconds = nullptr) {
  if (!args.batchInvariant && amxApplies(args)) return routerLogitsAmx(args, quantize, quantizeSeconds);
  return routerLogitsVector(args, quantize, quantizeSeconds);
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
  if (q.x.data == args.router.x.data && q.x.dtype == DType::kBF16 && args.router.x.dim(0) > 0) {
    const Status fused = projectLogits(args.router, &q, args.quantizeSeconds);
    if (!fused.isOk() && fused.code() != Code::kNonFinite) return fused;
    MOE_RETURN_IF_ERROR(checkFiniteInputs(args.router));  // the router's error first, as when not fused
    if (fused.isOk()) return fused;
  } else {
    MOE_RETURN_IF_ERROR(routerLogits(args.router));
  }
  // Not fusable, or a row was not finite: the quantizer itself (its error names the row).
  const Clock::time_point start = Clock::now();
  Status status = quantizeBlocks(q, 1);
  if (args.quantizeSeconds != nullptr) *args.quantizeSeconds = std::chrono::duration<double>(Clock::now() - start).count();
  return prefixed("quantizeActivations: ", status);
}

Status routerLogits(const RouterLogitsArgs& args) {
  MOE_RETURN_IF_ERROR(checkRouterLogits(args));  // core/moe_op_checks, shared with the CUDA backend
  if (args.x.dim(0) == 0) return Status::ok();
  MOE_RETURN_IF_ERROR(projectLogits(args));
  return checkFiniteInputs(args);
}

}  // namespace moe::cpu
