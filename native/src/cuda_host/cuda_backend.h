// The CUDA backend: the Backend interface over the dlopen'd plug-in. Tensors
// are device pointers (TensorView::device == kCuda); every op's arguments are
// checked here with the core checks (core/op_checks.h), the same as the CPU
// backend's, before anything is enqueued; the plug-in keeps only the guards
// that keep its kernels in bounds. Two files: the operations
// (cuda_backend.cpp) and the device services (cuda_device.cpp).
#pragma once

#include <atomic>
#include <initializer_list>

#include "core/backend.h"
#include "cuda_host/device_flags.h"
#include "cuda_host/flag_slots.h"

namespace moe::cuda {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  bool supportsOp(OpKind op) const override;

  Status quantizeActivations(const QuantizeArgs& args, ExecContext& ctx) override;
  Status quantizeWeights(const QuantizeArgs& args, ExecContext& ctx) override;
  Status dequantize(const DequantizeArgs& args, ExecContext& ctx) override;
  Status gemmFp8(const GemmFp8Args& args, ExecContext& ctx) override;
  Status groupedGemmFp8(const GroupedGemmFp8Args& args, ExecContext& ctx) override;
  Status routerLogits(const RouterLogitsArgs& args, ExecContext& ctx) override;
  Status route(const RouteArgs& args, ExecContext& ctx) override;
  Status dispatchLayout(const LayoutArgs& args, ExecContext& ctx) override;
  Status dispatch(const DispatchArgs& args, ExecContext& ctx) override;
  Status swiglu(const SwigluArgs& args, ExecContext& ctx) override;
  Status combine(const CombineArgs& args, ExecContext& ctx) override;
  Status layoutOffsets(const LayoutArgs& layout, ExecContext& ctx, std::vector<int32_t>* offsets) override;

  // cuda_device.cpp
  Status expectAvailable(const char* what) const override;
  void load(const std::vector<std::string>& candidates) override;
  DeviceInfo deviceInfo() const override;
  bool queued() const override { return true; }
  Status alloc(size_t bytes, void** ptr) override;
  Status free(void* ptr) override;
  Status copyToDevice(void* device, const void* host, size_t bytes) override;
  Status copyToHost(void* host, const void* device, size_t bytes) override;
  Status copyOnDevice(void* dst, const void* src, size_t bytes) override;
  Status fill(void* device, int byte, size_t bytes) override;
  Status synchronize() override;
  Status pollError() override;
  Status enqueueCompletion(void (*fn)(void* user), void* user) override;
  Status nativeQueue(void** queue) override;
  Status beginCapture() override;
  Status endCapture(Graph** graph) override;
  Status launchGraph(Graph* graph) override;
  void destroyGraph(Graph* graph) override;
  Status startTimer() override;
  Status stopTimer(float* ms) override;
  Status flushCaches() override;
  void setDataChecks(bool enabled) override { dataChecks_.store(enabled, std::memory_order_relaxed); }
  Status flagsStatus(const int32_t* words, const std::string& prefix) const override;

 private:
  // The word an op's kernels report into (see flag_slots.h and
  // ExecContext::flagWords): opened before the op is enqueued, closed after.
  struct OpFlag {
    int32_t* word = nullptr;  // null: data checks are off
    FlagSlot slot;            // a slot of its own (index >= 0)
    bool temporary = false;   // no slot was free: a word allocated for this op
  };
  Status openFlag(ExecContext& ctx, FlagOp kind, const char* op, OpFlag* flag);
  // Sync: waits and returns the op's verdict. Async: leaves it in ctx.deferred.
  Status closeFlag(ExecContext& ctx, FlagOp kind, const char* op, OpFlag* flag, const Status& enqueued);

  Status quantize(const QuantizeArgs& args, int64_t blockRows, const char* op, ExecContext& ctx);

  std::atomic<bool> dataChecks_{true};
};

Backend& cudaBackend();

// Every tensor of an op on the device, and the plug-in usable.
Status expectOnDevice(std::initializer_list<const TensorView*> tensors, const char* op);

}  // namespace moe::cuda
