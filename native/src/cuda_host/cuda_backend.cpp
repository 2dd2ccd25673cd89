#include "cuda_host/cuda_backend.h"

#include <string>

#include "core/moe_op_checks.h"
#include "core/op_checks.h"
#include "cuda_host/deferred_flags.h"
#include "cuda_host/device_flags.h"
#include "cuda_host/plugin.h"
#include "cuda_host/plugin_enums.h"

namespace moe::cuda {

namespace {

bool gDataChecks = true;

Status expectOnDevice(std::initializer_list<const TensorView*> tensors, const char* op) {
  for (const TensorView* t : tensors) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      return Status(Code::kDevice, std::string(op) + ": every tensor must be on the CUDA device");
    }
  }
  return Plugin::instance().expectAvailable(op);
}

class CudaBackend final : public Backend {
 private:
  // Quantizing reports NaN or infinity like the CPU backend: the kernel sets a
  // device flag, read back once the kernel is done (this makes the call wait
  // for the GPU; the price of the same error on both backends).
  Status quantize(const QuantizeArgs& args, int64_t blockRows, const char* op) {
    MOE_RETURN_IF_ERROR(checkQuantize(args, blockRows, op));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.q, &args.scales}, op));
    const PluginApi& api = Plugin::instance().api();
    char err[512] = {0};
    if (nonFiniteFlag_ == nullptr) {
      MOE_RETURN_IF_ERROR(fromPlugin(api.alloc(sizeof(int32_t), &nonFiniteFlag_, err, sizeof err), err, op));
    }
    moe_cuda_quantize_args q{};
    q.x = args.x.data;
    q.q = args.q.data;
    q.scales = args.scales.as<float>();
    q.nonfinite_flag = static_cast<int32_t*>(nonFiniteFlag_);
    q.rows = args.x.dim(0);
    q.cols = args.x.dim(1);
    q.block_rows = blockRows;
    q.x_dtype = pluginDtype(args.x.dtype);
    q.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    q.scale_dtype = MOE_CUDA_DTYPE_F32;
    q.scale_format = pluginScaleFormat(args.scaleFormat);
    MOE_RETURN_IF_ERROR(fromPlugin(api.quantize(&q, err, sizeof err), err, op));
    return checkFlag(op, FlagOp::kQuantize);
  }

  void* nonFiniteFlag_ = nullptr;  // [1] i32 on the device

  // The device flag the MoE ops OR their MOE_CUDA_FLAG_* bits into, zeroed
  // (stream-ordered) before the op.
  Status clearFlag(const char* op, int32_t** flag) {
    *flag = nullptr;
    if (!gDataChecks) return Status::ok();
    const PluginApi& api = Plugin::instance().api();
    char err[512] = {0};
    if (nonFiniteFlag_ == nullptr) {
      MOE_RETURN_IF_ERROR(fromPlugin(api.alloc(sizeof(int32_t), &nonFiniteFlag_, err, sizeof err), err, op));
    }
    MOE_RETURN_IF_ERROR(fromPlugin(api.memset(nonFiniteFlag_, 0, sizeof(int32_t), err, sizeof err), err, op));
    *flag = static_cast<int32_t*>(nonFiniteFlag_);
    return Status::ok();
  }

  // The flag word's verdict once the op is done: the price of reporting bad
  // input (an id out of range, NaN) with the CPU backend's error codes. A
  // ...Sync call waits for it here (one host synchronization per op); a
  // Promise form only enqueues its copy into a page-locked slot that the
  // completion reads (deferred_flags.h). MoeLayer's GPU forward does not go
  // through here (cuda_moe_forward.cpp keeps one flag word per op and the
  // caller reads them after the forward has completed).
  Status checkFlag(const char* op, FlagOp kind) {
    const PluginApi& api = Plugin::instance().api();
    char err[512] = {0};
    if (FlagCheck* deferred = DeferredFlags::current()) {
      int slot = -1;
      if (int32_t* host = DeferredFlags::acquireSlot(&slot)) {
        *deferred = FlagCheck{true, kind, op, slot};
        const Status copied = fromPlugin(api.copyD2H(host, nonFiniteFlag_, sizeof(int32_t), err, sizeof err), err, op);
        if (!copied.isOk()) deferred->finish();
        return copied;
      }
    }
    int32_t bits = 0;
    MOE_RETURN_IF_ERROR(fromPlugin(api.copyD2H(&bits, nonFiniteFlag_, sizeof bits, err, sizeof err), err, op));
    MOE_RETURN_IF_ERROR(fromPlugin(api.synchronize(err, sizeof err), err, op));
    return statusFromFlags(kind, bits, "", op);
  }

  Status readFlag(const char* op, FlagOp kind) {
    if (!gDataChecks) return Status::ok();
    return checkFlag(op, kind);
  }

 public:
  const char* name() const override { return "cuda"; }

  // The operations that run on the device (listed, so that an op added to the
  // table later is reported unsupported until it has a CUDA implementation).
  bool supportsOp(OpKind op) const override {
    switch (op) {
      case OpKind::kQuantizeActivations:
      case OpKind::kQuantizeWeights:
      case OpKind::kDequantize:
      case OpKind::kGemmFp8:
      case OpKind::kGroupedGemmFp8:
      case OpKind::kGroupedGemmFp8Masked:
      case OpKind::kRoute:
      case OpKind::kDispatchLayout:
      case OpKind::kDispatch:
      case OpKind::kSwiglu:
      case OpKind::kCombine:
      case OpKind::kRouterLogits:
        return true;
      default:
        return false;
    }
  }

  Status quantizeActivations(const QuantizeArgs& args) override { return quantize(args, 1, "quantizeActivations"); }
  Status quantizeWeights(const QuantizeArgs& args) override { return quantize(args, kWeightBlockRows, "quantizeWeights"); }

  Status dequantize(const DequantizeArgs& args) override {
    MOE_RETURN_IF_ERROR(checkDequantize(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.q, &args.scales, &args.out}, "dequantize"));
    moe_cuda_dequantize_args d{};
    d.q = args.q.data;
    d.scales = args.scales.as<const float>();
    d.out = args.out.data;
    d.rows = args.q.dim(0);
    d.cols = args.q.dim(1);
    d.block_rows = args.blockRows;
    d.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    d.scale_dtype = MOE_CUDA_DTYPE_F32;
    d.out_dtype = pluginDtype(args.out.dtype);
    char err[512] = {0};
    return fromPlugin(Plugin::instance().api().dequantize(&d, err, sizeof err), err, "dequantize");
  }

  Status gemmFp8(const GemmFp8Args& args) override {
    MOE_RETURN_IF_ERROR(checkGemmFp8(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.a, &args.aScales, &args.b, &args.bScales, &args.d}, "gemmFp8"));
    moe_cuda_gemm_args g{};
    g.a = args.a.data;
    g.sa = args.aScales.as<const float>();
    g.b = args.b.data;
    g.sb = args.bScales.as<const float>();
    g.d = args.d.data;
    g.m = args.a.dim(0);
    g.n = args.b.dim(0);
    g.k = args.a.dim(1);
    g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    g.scale_dtype = MOE_CUDA_DTYPE_F32;
    g.d_dtype = pluginDtype(args.d.dtype);
    g.kernel = MOE_CUDA_KERNEL_AUTO;
    char err[512] = {0};
    return fromPlugin(Plugin::instance().api().gemmFp8(&g, err, sizeof err), err, "gemmFp8");
  }

  Status groupedGemmFp8(const GroupedGemmFp8Args& args) override {
    GroupedShape shape;
    const char* op = args.maskedM.data ? "groupedGemmFp8Masked" : "groupedGemmFp8";
    Status status = checkGroupedGemmFp8(args, &shape);
    if (!status.isOk()) return Status(status.code(), std::string(op) + ": " + status.message());
    MOE_RETURN_IF_ERROR(
        expectOnDevice({&args.a, &args.aScales, &args.b, &args.bScales, &args.groupIndex, &args.maskedM, &args.d}, op));
    if (args.groupOffset != 0) return Status(Code::kUnsupported, std::string(op) + ": sharded expert weights on the CUDA backend");
    char err[512] = {0};
    const PluginApi& api = Plugin::instance().api();
    if (!shape.masked) {
      moe_cuda_grouped_gemm_args g{};
      g.a = args.a.data;
      g.sa = args.aScales.as<const float>();
      g.b = args.b.data;
      g.sb = args.bScales.as<const float>();
      g.group_index = args.groupIndex.as<const int32_t>();
      g.d = args.d.data;
      g.r = shape.rows;
      g.n = shape.n;
      g.k = shape.k;
      g.g = shape.groups;
      g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
      g.scale_dtype = MOE_CUDA_DTYPE_F32;
      g.d_dtype = pluginDtype(args.d.dtype);
      g.kernel = MOE_CUDA_KERNEL_AUTO;
      return fromPlugin(api.groupedGemmFp8(&g, err, sizeof err), err, op);
    }
    moe_cuda_masked_gemm_args g{};
    g.a = args.a.data;
    g.sa = args.aScales.as<const float>();
    g.b = args.b.data;
    g.sb = args.bScales.as<const float>();
    g.masked_m = args.maskedM.as<const int32_t>();
    g.d = args.d.data;
    g.g = shape.groups;
    g.m_max = shape.rows;
    g.n = shape.n;
    g.k = shape.k;
    g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    g.scale_dtype = MOE_CUDA_DTYPE_F32;
    g.d_dtype = pluginDtype(args.d.dtype);
    g.kernel = MOE_CUDA_KERNEL_AUTO;
    return fromPlugin(api.groupedGemmFp8Masked(&g, err, sizeof err), err, op);
  }

  Status routerLogits(const RouterLogitsArgs& args) override {
    static const char* op = "routerLogits";
    MOE_RETURN_IF_ERROR(checkRouterLogits(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.w, &args.logits}, op));
    moe_cuda_router_logits_args a{};
    a.x = args.x.data;
    a.w = args.w.data;
    a.logits = args.logits.as<float>();
    a.tokens = args.x.dim(0);
    a.hidden = args.x.dim(1);
    a.experts = args.w.dim(0);
    a.x_dtype = pluginDtype(args.x.dtype);
    a.w_dtype = pluginDtype(args.w.dtype);
    char err[512] = {0};
    return fromPlugin(Plugin::instance().api().routerLogits(&a, err, sizeof err), err, op);
  }

  Status route(const RouteArgs& args) override {
    static const char* op = "route";
    MOE_RETURN_IF_ERROR(checkRoute(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.logits, &args.bias, &args.ids, &args.weights}, op));
    int32_t* flag = nullptr;
    MOE_RETURN_IF_ERROR(clearFlag(op, &flag));
    moe_cuda_route_args a{};
    a.logits = args.logits.data;
    a.bias = args.bias.as<const float>();
    a.ids = args.ids.as<int32_t>();
    a.weights = args.weights.as<float>();
    a.error_flag = flag;
    a.tokens = args.logits.dim(0);
    a.experts = args.logits.dim(1);
    a.top_k = args.topK;
    a.num_groups = args.numGroups;
    a.top_k_groups = args.topKGroups;
    a.logits_dtype = pluginDtype(args.logits.dtype);
    a.sigmoid = args.scoring == Scoring::kSigmoid ? 1 : 0;
    a.renormalize = args.renormalize ? 1 : 0;
    a.scale = args.scale;
    char err[512] = {0};
    MOE_RETURN_IF_ERROR(fromPlugin(Plugin::instance().api().route(&a, err, sizeof err), err, op));
    return readFlag(op, FlagOp::kRoute);
  }

  Status dispatchLayout(const LayoutArgs& args) override {
    static const char* op = "dispatchLayout";
    MOE_RETURN_IF_ERROR(checkDispatchLayout(args));
    MOE_RETURN_IF_ERROR(
        expectOnDevice({&args.ids, &args.tokensPerExpert, &args.offsets, &args.rowToken, &args.groupIndex, &args.slotRow}, op));
    int32_t* flag = nullptr;
    MOE_RETURN_IF_ERROR(clearFlag(op, &flag));
    moe_cuda_layout_args a{};
    a.ids = args.ids.as<const int32_t>();
    a.tokens_per_expert = args.tokensPerExpert.as<int32_t>();
    a.offsets = args.offsets.as<int32_t>();
    a.row_token = args.rowToken.as<int32_t>();
    a.group_index = args.groupIndex.as<int32_t>();
    a.slot_row = args.slotRow.as<int32_t>();
    a.error_flag = flag;
    a.tokens = args.ids.dim(0);
    a.slots = args.ids.dim(1);
    a.experts = args.numExperts;
    a.capacity = args.rowToken.dim(0);
    a.align = args.align;
    a.masked = args.masked ? 1 : 0;
    a.max_rows = args.maxRowsPerExpert;
    char err[512] = {0};
    MOE_RETURN_IF_ERROR(fromPlugin(Plugin::instance().api().dispatchLayout(&a, err, sizeof err), err, op));
    return readFlag(op, FlagOp::kLayout);
  }

  Status dispatch(const DispatchArgs& args) override {
    static const char* op = "dispatch";
    MOE_RETURN_IF_ERROR(checkDispatch(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.rowToken, &args.out, &args.scales}, op));
    int32_t* flag = nullptr;
    MOE_RETURN_IF_ERROR(clearFlag(op, &flag));
    moe_cuda_dispatch_args a{};
    a.x = args.x.data;
    a.row_token = args.rowToken.as<const int32_t>();
    a.out = args.out.data;
    a.scales = args.scales.as<float>();
    a.error_flag = flag;
    a.rows = args.rowToken.dim(0);
    a.tokens = args.x.dim(0);
    a.hidden = args.x.dim(1);
    a.x_dtype = pluginDtype(args.x.dtype);
    a.out_dtype = pluginDtype(args.out.dtype);
    a.scale_format = pluginScaleFormat(args.scaleFormat);
    char err[512] = {0};
    MOE_RETURN_IF_ERROR(fromPlugin(Plugin::instance().api().dispatch(&a, err, sizeof err), err, op));
    return readFlag(op, FlagOp::kDispatch);
  }

  Status swiglu(const SwigluArgs& args) override {
    static const char* op = "swiglu";
    MOE_RETURN_IF_ERROR(checkSwiglu(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.h, &args.out, &args.scales}, op));
    int32_t* flag = nullptr;
    MOE_RETURN_IF_ERROR(clearFlag(op, &flag));
    moe_cuda_swiglu_args a{};
    a.h = args.h.data;
    a.out = args.out.data;
    a.scales = args.scales.as<float>();
    a.error_flag = flag;
    a.rows = args.h.dim(0);
    a.inter = args.h.dim(1) / 2;
    a.h_dtype = pluginDtype(args.h.dtype);
    a.out_dtype = pluginDtype(args.out.dtype);
    a.scale_format = pluginScaleFormat(args.scaleFormat);
    char err[512] = {0};
    MOE_RETURN_IF_ERROR(fromPlugin(Plugin::instance().api().swiglu(&a, err, sizeof err), err, op));
    return readFlag(op, FlagOp::kSwiglu);
  }

  Status combine(const CombineArgs& args) override {
    static const char* op = "combine";
    MOE_RETURN_IF_ERROR(checkCombine(args));
    MOE_RETURN_IF_ERROR(expectOnDevice({&args.y, &args.slotRow, &args.weights, &args.shared, &args.out}, op));
    int32_t* flag = nullptr;
    MOE_RETURN_IF_ERROR(clearFlag(op, &flag));
    moe_cuda_combine_args a{};
    a.y = args.y.data;
    a.slot_row = args.slotRow.as<const int32_t>();
    a.weights = args.weights.as<const float>();
    a.shared = args.shared.data;
    a.out = args.out.data;
    a.error_flag = flag;
    a.rows = args.y.dim(0);
    a.tokens = args.slotRow.dim(0);
    a.slots = args.slotRow.dim(1);
    a.hidden = args.y.dim(1);
    a.y_dtype = pluginDtype(args.y.dtype);
    a.shared_dtype = args.shared.data ? pluginDtype(args.shared.dtype) : MOE_CUDA_DTYPE_F32;
    a.out_dtype = pluginDtype(args.out.dtype);
    char err[512] = {0};
    MOE_RETURN_IF_ERROR(fromPlugin(Plugin::instance().api().combine(&a, err, sizeof err), err, op));
    return readFlag(op, FlagOp::kCombine);
  }
};

}  // namespace

void setDataChecks(bool enabled) { gDataChecks = enabled; }

Backend& cudaBackend() {
  static CudaBackend backend;
  return backend;
}

}  // namespace moe::cuda
