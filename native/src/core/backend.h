// The one door to a device (after ggml-backend): the table of operations
// every backend implements, and the device services the layers above need
// (memory, copies, completion, error polling, graphs, timers). The CPU
// backend is the reference: every other backend is tested against it, op by
// op, on random inputs. Nothing above this interface names a backend's
// implementation: the addon picks one with backendFor(device) and asks it
// what it can do (supportsOp, queued).
#pragma once

#include <stddef.h>

#include <string>
#include <vector>

#include "core/exec_context.h"
#include "core/ops.h"
#include "core/status.h"

namespace moe {

struct MoeForwardArgs;

enum class OpKind {
  kQuantizeActivations,
  kQuantizeWeights,
  kDequantize,
  kGemmFp8,
  kGroupedGemmFp8,
  kGroupedGemmFp8Masked,
  kRoute,
  kDispatchLayout,
  kDispatch,
  kSwiglu,
  kCombine,
  kRouterLogits,
  kExpertUp,        // optional fusion: the layer forward runs dispatch, groupedGemmFp8 and swiglu without it
  kRouterQuantize,  // optional fusion: the layer forward runs routerLogits and quantizeActivations without it
  kShardedExperts,  // contiguous grouped GEMMs over expert weights split in shards (GroupedGemmFp8Args::groupOffset)
  kBatchInvariant,  // the GEMMs and the router honour batchInvariant (ops.h): one path per row at every batch size
  kGroupTable,      // groupedGemmFp8 (contiguous) and expertUp take each group's weights from a GroupTable (ops.h)
  kSharedExpert,    // groupedGemmFp8 (contiguous) and expertUp run the shared expert's product in the same call (ops.h)
  kExpertChain,     // optional fusion: the layer forward runs expertUp and groupedGemmFp8 without it
};

// What a backend says about itself and its device (cudaInfo() in lib/).
struct DeviceInfo {
  bool available = false;
  std::string reason;  // why it is unavailable, or which kernels run when it is
  std::string path;    // the library it was loaded from (a plug-in), or empty
  bool hasDevice = false;  // the fields below are set
  std::string name;
  int smMajor = 0, smMinor = 0, multiprocessors = 0;
  double memoryBytes = 0;
  int driverVersion = 0, runtimeVersion = 0;
  std::string kernels;  // the GEMM path: "hopper" or "simt"
};

// A captured sequence of a queued backend's work (see beginCapture).
struct Graph;

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  virtual bool supportsOp(OpKind op) const = 0;
  // ok unless batchInvariant is asked of a backend that cannot honour it
  // (kBatchInvariant); `op` starts the message.
  Status expectBatchInvariant(bool requested, const char* op) const;

  // ---- operations (ops.h). Each checks its arguments (core/op_checks.h)
  // before touching memory. `ctx` says how the call runs (exec_context.h).
  virtual Status quantizeActivations(const QuantizeArgs& args, ExecContext& ctx) = 0;
  virtual Status quantizeWeights(const QuantizeArgs& args, ExecContext& ctx) = 0;
  virtual Status dequantize(const DequantizeArgs& args, ExecContext& ctx) = 0;
  virtual Status gemmFp8(const GemmFp8Args& args, ExecContext& ctx) = 0;
  // groupIndex set: the contiguous layout; maskedM set: the masked layout.
  virtual Status groupedGemmFp8(const GroupedGemmFp8Args& args, ExecContext& ctx) = 0;

  virtual Status routerLogits(const RouterLogitsArgs& args, ExecContext& ctx) = 0;
  virtual Status route(const RouteArgs& args, ExecContext& ctx) = 0;
  virtual Status dispatchLayout(const LayoutArgs& args, ExecContext& ctx) = 0;
  virtual Status dispatch(const DispatchArgs& args, ExecContext& ctx) = 0;
  virtual Status swiglu(const SwigluArgs& args, ExecContext& ctx) = 0;
  virtual Status combine(const CombineArgs& args, ExecContext& ctx) = 0;

  // Optional fused operations: a backend that lacks one reports it through
  // supportsOp and callers run the separate operations instead.
  virtual Status expertUp(const ExpertUpArgs&, ExecContext&) { return unsupported("expertUp"); }
  virtual Status routerLogitsQuantize(const RouterQuantizeArgs&, ExecContext&) { return unsupported("routerLogitsQuantize"); }
  virtual Status expertChain(const ExpertChainArgs&, ExecContext&) { return unsupported("expertChain"); }

  // The whole MoE layer (core/moe_forward.h), one sequence of the operations
  // above, the same on every backend.
  Status forward(const MoeForwardArgs& args, ExecContext& ctx);

  // The contiguous layout's row offsets [E + 1] (args as given to
  // dispatchLayout, which has run) on the host: the CPU reads them in place;
  // a queued device copies them back (the one host synchronization of a
  // contiguous forward: its grouped GEMMs' grids depend on them) and reports
  // the layout's device verdict with them (ctx.flagWords).
  virtual Status layoutOffsets(const LayoutArgs& layout, ExecContext& ctx, std::vector<int32_t>* offsets);

  // ---- the device. The CPU backend's memory is the host's and its work is
  // done when a call returns; the defaults below are that.

  // Whether the backend can run (a plug-in loaded, a device found); `what`
  // names the caller in the ERR_MOE_DEVICE error.
  virtual Status expectAvailable(const char* what) const { (void)what; return Status::ok(); }
  // Loads the backend's implementation from the first candidate path that
  // exists (once; a no-op where nothing is loaded) and describes it.
  virtual void load(const std::vector<std::string>& candidates) { (void)candidates; }
  virtual DeviceInfo deviceInfo() const;

  // true: calls enqueue work on the device's one queue and return at once;
  // the work is done once synchronize() returns or enqueueCompletion's
  // callback runs. false: the work is done when a call returns.
  virtual bool queued() const { return false; }

  virtual Status alloc(size_t bytes, void** ptr) { (void)bytes; (void)ptr; return unsupported("alloc"); }
  virtual Status free(void* ptr) { (void)ptr; return unsupported("free"); }
  // Copies in queue order; host memory must stay valid until the copy has completed.
  virtual Status copyToDevice(void* device, const void* host, size_t bytes);
  virtual Status copyToHost(void* host, const void* device, size_t bytes);
  virtual Status copyOnDevice(void* dst, const void* src, size_t bytes);
  virtual Status fill(void* device, int byte, size_t bytes);

  // Waits for all work queued so far; reports an asynchronous device fault.
  virtual Status synchronize() { return Status::ok(); }
  // Never waits: a device fault that has happened so far, or ok.
  virtual Status pollError() { return Status::ok(); }
  // Calls fn(user) on some thread once all work queued before it has
  // finished (or the device failed). fn must not call into the backend.
  virtual Status enqueueCompletion(void (*fn)(void* user), void* user) { fn(user); return Status::ok(); }
  // The queue's native handle (the CUDA plug-in's cudaStream_t) for a
  // library that enqueues on it itself: NCCL's exchanges between GPUs
  // (ep/nccl_transport.cpp), ordered with the layer's kernels.
  virtual Status nativeQueue(void** queue) { *queue = nullptr; return unsupported("nativeQueue"); }

  // Graphs: the calls made on this thread between beginCapture and
  // endCapture are recorded, not run (nothing recorded may wait for the
  // device); launchGraph queues one replay.
  virtual Status beginCapture() { return unsupported("graph capture"); }
  virtual Status endCapture(Graph** graph) { (void)graph; return unsupported("graph capture"); }
  virtual Status launchGraph(Graph* graph) { (void)graph; return unsupported("graph replay"); }
  virtual void destroyGraph(Graph* graph) { (void)graph; }

  // Benchmarks: device time between startTimer and stopTimer (which waits),
  // a cold cache before the next kernel, and the per-op device-verdict
  // read-back turned off (bad input then goes unreported).
  virtual Status startTimer() { return unsupported("timers"); }
  virtual Status stopTimer(float* ms) { (void)ms; return unsupported("timers"); }
  virtual Status flushCaches() { return unsupported("flushCaches"); }
  virtual void setDataChecks(bool enabled) { (void)enabled; }

  // The first error recorded in a host copy of ExecContext::flagWords
  // ([kFlagWordsAllocated] i32) after a forward completed, or ok; `prefix`
  // starts the message.
  virtual Status flagsStatus(const int32_t* words, const std::string& prefix) const {
    (void)words;
    (void)prefix;
    return Status::ok();
  }

 protected:
  Status unsupported(const char* what) const {
    return Status(Code::kUnsupported, std::string(what) + " does not run on the " + name() + " backend");
  }
};

// The backend of a device (the CPU's is always there; the CUDA one may be
// unavailable: see expectAvailable).
Backend& backendFor(Device device);

}  // namespace moe
