#include "cuda_host/cuda_backend.h"

#include <memory>
#include <string>

#include "core/moe_op_checks.h"
#include "core/op_checks.h"
#include "cuda_host/plugin.h"
#include "cuda_host/plugin_enums.h"

namespace moe::cuda {

static_assert(static_cast<int>(FlagOp::kRoute) == kFlagRoute && static_cast<int>(FlagOp::kLayout) == kFlagLayout &&
                  static_cast<int>(FlagOp::kDispatch) == kFlagDispatch && static_cast<int>(FlagOp::kSwiglu) == kFlagSwiglu &&
                  static_cast<int>(FlagOp::kCombine) == kFlagCombine && static_cast<int>(FlagOp::kQuantize) == kFlagQuantize,
              "a FlagOp is its word of ExecContext::flagWords");

Status expectOnDevice(std::initializer_list<const TensorView*> tensors, const char* op) {
  for (const TensorView* t : tensors) {
    if (t->data != nullptr && t->device != Device::kCuda) {
      return Status(Code::kDevice, std::string(op) + ": every tensor must be on the CUDA device");
    }
  }
  return Plugin::instance().expectAvailable(op);
}

namespace {

// An async op's verdict: its slot's host word, read once the stream has
// passed the copy behind the op.
class SlotCheck final : public DeferredCheck {
 public:
  SlotCheck(FlagSlot slot, FlagOp kind, const char* op) : slot_(slot), kind_(kind), op_(op) {}
  ~SlotCheck() override { releaseFlagSlot(slot_); }
  Status finish() override {
    const int32_t bits = *static_cast<volatile int32_t*>(slot_.host);
    releaseFlagSlot(slot_);
    slot_.index = -1;
    return statusFromFlags(kind_, bits, "", op_);
  }

 private:
  FlagSlot slot_;
  FlagOp kind_;
  const char* op_;  // a string literal
};

}  // namespace

Status CudaBackend::openFlag(ExecContext& ctx, FlagOp kind, const char* op, OpFlag* flag) {
  if (ctx.flagWords.data != nullptr) {  // the layer forward's: zeroed once, read by its caller
    flag->word = ctx.flagWords.as<int32_t>() + static_cast<int>(kind);
    return Status::ok();
  }
  if (!dataChecks_.load(std::memory_order_relaxed)) return Status::ok();
  const PluginApi& api = Plugin::instance().api();
  char err[512] = {0};
  if (acquireFlagSlot(&flag->slot)) {
    flag->word = flag->slot.device;
  } else {
    void* word = nullptr;
    MOE_RETURN_IF_ERROR(fromPlugin(api.alloc(sizeof(int32_t), &word, err, sizeof err), err, op));
    flag->word = static_cast<int32_t*>(word);
    flag->temporary = true;
  }
  const Status cleared = fromPlugin(api.memset(flag->word, 0, sizeof(int32_t), err, sizeof err), err, op);
  if (!cleared.isOk()) closeFlag(ctx, kind, op, flag, cleared);
  return cleared;
}

Status CudaBackend::closeFlag(ExecContext& ctx, FlagOp kind, const char* op, OpFlag* flag, const Status& enqueued) {
  if (flag->word == nullptr || ctx.flagWords.data != nullptr) return enqueued;
  const PluginApi& api = Plugin::instance().api();
  char err[512] = {0};
  Status status = enqueued;
  if (flag->slot.index >= 0) {
    if (status.isOk()) status = fromPlugin(api.copy_d2h(flag->slot.host, flag->word, sizeof(int32_t), err, sizeof err), err, op);
    if (status.isOk() && ctx.async) {
      ctx.deferred = std::make_unique<SlotCheck>(flag->slot, kind, op);
      return status;
    }
    if (status.isOk()) status = fromPlugin(api.synchronize(err, sizeof err), err, op);
    const int32_t bits = *flag->slot.host;
    releaseFlagSlot(flag->slot);
    return status.isOk() ? statusFromFlags(kind, bits, "", op) : status;
  }
  // A word of its own (every slot in flight): wait for it, then free it.
  int32_t bits = 0;
  if (status.isOk()) status = fromPlugin(api.copy_d2h(&bits, flag->word, sizeof bits, err, sizeof err), err, op);
  if (status.isOk()) status = fromPlugin(api.synchronize(err, sizeof err), err, op);
  (void)api.free(flag->word, err, sizeof err);
  return status.isOk() ? statusFromFlags(kind, bits, "", op) : status;
}

// The operations that run on the device (listed, so that an op added to the
// table later is reported unsupported until it has a CUDA implementation).
bool CudaBackend::supportsOp(OpKind op) const {
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

// Quantizing reports NaN or infinity like the CPU backend: the kernel sets a
// device flag word, read once the kernel is done.
Status CudaBackend::quantize(const QuantizeArgs& args, int64_t blockRows, const char* op, ExecContext& ctx) {
  MOE_RETURN_IF_ERROR(checkQuantize(args, blockRows, op));
  MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.q, &args.scales}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kQuantize, op, &flag));
  moe_cuda_quantize_args q{};
  q.x = args.x.data;
  q.q = args.q.data;
  q.scales = args.scales.as<float>();
  q.nonfinite_flag = flag.word;
  q.rows = args.x.dim(0);
  q.cols = args.x.dim(1);
  q.block_rows = blockRows;
  q.x_dtype = pluginDtype(args.x.dtype);
  q.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  q.scale_dtype = MOE_CUDA_DTYPE_F32;
  q.scale_format = pluginScaleFormat(args.scaleFormat);
  char err[512] = {0};
  return closeFlag(ctx, FlagOp::kQuantize, op, &flag, fromPlugin(Plugin::instance().api().quantize(&q, err, sizeof err), err, op));
}

Status CudaBackend::quantizeActivations(const QuantizeArgs& args, ExecContext& ctx) {
  return quantize(args, 1, "quantizeActivations", ctx);
}

Status CudaBackend::quantizeWeights(const QuantizeArgs& args, ExecContext& ctx) {
  return quantize(args, kWeightBlockRows, "quantizeWeights", ctx);
}

Status CudaBackend::dequantize(const DequantizeArgs& args, ExecContext&) {
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

Status CudaBackend::gemmFp8(const GemmFp8Args& args, ExecContext&) {
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
  return fromPlugin(Plugin::instance().api().gemm_fp8(&g, err, sizeof err), err, "gemmFp8");
}

// The operands both grouped forms share: the plug-in's contiguous and masked
// argument structs name them alike (moe_cuda_api.h).
template <typename PluginArgs>
void setGroupedOperands(const GroupedGemmFp8Args& args, const GroupedShape& shape, PluginArgs& g) {
  g.a = args.a.data;
  g.sa = args.aScales.as<const float>();
  g.b = args.b.data;
  g.sb = args.bScales.as<const float>();
  g.d = args.d.data;
  g.n = shape.n;
  g.k = shape.k;
  g.g = shape.groups;
  g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  g.scale_dtype = MOE_CUDA_DTYPE_F32;
  g.d_dtype = pluginDtype(args.d.dtype);
  g.kernel = MOE_CUDA_KERNEL_AUTO;
}

Status CudaBackend::groupedGemmFp8(const GroupedGemmFp8Args& args, ExecContext&) {
  GroupedShape shape;
  const char* op = args.maskedM.data ? "groupedGemmFp8Masked" : "groupedGemmFp8";
  Status status = checkGroupedGemmFp8(args, &shape);
  if (!status.isOk()) return Status(status.code(), std::string(op) + ": " + status.message());
  MOE_RETURN_IF_ERROR(
      expectOnDevice({&args.a, &args.aScales, &args.b, &args.bScales, &args.groupIndex, &args.maskedM, &args.d}, op));
  // A capability difference (supportsOp(kShardedExperts)): the device holds
  // each expert matrix in one tensor, which has no 4 GiB limit.
  if (args.groupOffset != 0) return Status(Code::kUnsupported, std::string(op) + ": sharded expert weights on the CUDA backend");
  char err[512] = {0};
  const PluginApi& api = Plugin::instance().api();
  if (!shape.masked) {
    moe_cuda_grouped_gemm_args g{};
    setGroupedOperands(args, shape, g);
    g.group_index = args.groupIndex.as<const int32_t>();
    g.r = shape.rows;
    g.align = static_cast<int32_t>(args.segmentAlign);
    return fromPlugin(api.grouped_gemm_fp8(&g, err, sizeof err), err, op);
  }
  moe_cuda_masked_gemm_args g{};
  setGroupedOperands(args, shape, g);
  g.masked_m = args.maskedM.as<const int32_t>();
  g.m_max = shape.rows;
  g.expected_m = args.expectedRows;
  return fromPlugin(api.grouped_gemm_fp8_masked(&g, err, sizeof err), err, op);
}

Status CudaBackend::routerLogits(const RouterLogitsArgs& args, ExecContext&) {
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
  return fromPlugin(Plugin::instance().api().router_logits(&a, err, sizeof err), err, op);
}

Status CudaBackend::route(const RouteArgs& args, ExecContext& ctx) {
  static const char* op = "route";
  MOE_RETURN_IF_ERROR(checkRoute(args));
  MOE_RETURN_IF_ERROR(expectOnDevice({&args.logits, &args.bias, &args.ids, &args.weights}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kRoute, op, &flag));
  moe_cuda_route_args a{};
  a.logits = args.logits.data;
  a.bias = args.bias.as<const float>();
  a.ids = args.ids.as<int32_t>();
  a.weights = args.weights.as<float>();
  a.error_flag = flag.word;
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
  return closeFlag(ctx, FlagOp::kRoute, op, &flag, fromPlugin(Plugin::instance().api().route(&a, err, sizeof err), err, op));
}

Status CudaBackend::dispatchLayout(const LayoutArgs& args, ExecContext& ctx) {
  static const char* op = "dispatchLayout";
  MOE_RETURN_IF_ERROR(checkDispatchLayout(args));
  MOE_RETURN_IF_ERROR(
      expectOnDevice({&args.ids, &args.tokensPerExpert, &args.offsets, &args.rowToken, &args.groupIndex, &args.slotRow}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kLayout, op, &flag));
  moe_cuda_layout_args a{};
  a.ids = args.ids.as<const int32_t>();
  a.tokens_per_expert = args.tokensPerExpert.as<int32_t>();
  a.offsets = args.offsets.as<int32_t>();
  a.row_token = args.rowToken.as<int32_t>();
  a.group_index = args.groupIndex.as<int32_t>();
  a.slot_row = args.slotRow.as<int32_t>();
  a.error_flag = flag.word;
  a.tokens = args.ids.dim(0);
  a.slots = args.ids.dim(1);
  a.experts = args.numExperts;
  a.capacity = args.rowToken.dim(0);
  a.align = args.align;
  a.masked = args.masked ? 1 : 0;
  a.max_rows = args.maxRowsPerExpert;
  char err[512] = {0};
  return closeFlag(ctx, FlagOp::kLayout, op, &flag,
                   fromPlugin(Plugin::instance().api().dispatch_layout(&a, err, sizeof err), err, op));
}

// NOTE: the one host synchronization of a contiguous forward: the grouped
// GEMMs' row count R = offsets[E] decides their grids. Reading the layout's
// verdict with it costs nothing more.
Status CudaBackend::layoutOffsets(const LayoutArgs& layout, ExecContext& ctx, std::vector<int32_t>* offsets) {
  static const char* op = "moeForward: dispatchLayout";
  const PluginApi& api = Plugin::instance().api();
  char err[512] = {0};
  offsets->assign(layout.numExperts + 1, 0);
  int32_t bits = 0;
  MOE_RETURN_IF_ERROR(fromPlugin(api.copy_d2h(offsets->data(), layout.offsets.data, offsets->size() * sizeof(int32_t), err, sizeof err), err, op));
  if (ctx.flagWords.data != nullptr) {
    MOE_RETURN_IF_ERROR(
        fromPlugin(api.copy_d2h(&bits, ctx.flagWords.as<int32_t>() + kFlagLayout, sizeof bits, err, sizeof err), err, op));
  }
  MOE_RETURN_IF_ERROR(fromPlugin(api.synchronize(err, sizeof err), err, op));
  return statusFromFlags(FlagOp::kLayout, bits, "moeForward: ");
}

Status CudaBackend::dispatch(const DispatchArgs& args, ExecContext& ctx) {
  static const char* op = "dispatch";
  MOE_RETURN_IF_ERROR(checkDispatch(args));
  MOE_RETURN_IF_ERROR(expectOnDevice({&args.x, &args.rowToken, &args.out, &args.scales}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kDispatch, op, &flag));
  moe_cuda_dispatch_args a{};
  a.x = args.x.data;
  a.row_token = args.rowToken.as<const int32_t>();
  a.out = args.out.data;
  a.scales = args.scales.as<float>();
  a.error_flag = flag.word;
  a.rows = args.rowToken.dim(0);
  a.tokens = args.x.dim(0);
  a.hidden = args.x.dim(1);
  a.x_dtype = pluginDtype(args.x.dtype);
  a.out_dtype = pluginDtype(args.out.dtype);
  a.scale_format = pluginScaleFormat(args.scaleFormat);
  char err[512] = {0};
  return closeFlag(ctx, FlagOp::kDispatch, op, &flag, fromPlugin(Plugin::instance().api().dispatch(&a, err, sizeof err), err, op));
}

Status CudaBackend::swiglu(const SwigluArgs& args, ExecContext& ctx) {
  static const char* op = "swiglu";
  MOE_RETURN_IF_ERROR(checkSwiglu(args));
  MOE_RETURN_IF_ERROR(expectOnDevice({&args.h, &args.out, &args.scales}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kSwiglu, op, &flag));
  moe_cuda_swiglu_args a{};
  a.h = args.h.data;
  a.out = args.out.data;
  a.scales = args.scales.as<float>();
  a.error_flag = flag.word;
  a.rows = args.h.dim(0);
  a.inter = args.h.dim(1) / 2;
  a.h_dtype = pluginDtype(args.h.dtype);
  a.out_dtype = pluginDtype(args.out.dtype);
  a.scale_format = pluginScaleFormat(args.scaleFormat);
  char err[512] = {0};
  return closeFlag(ctx, FlagOp::kSwiglu, op, &flag, fromPlugin(Plugin::instance().api().swiglu(&a, err, sizeof err), err, op));
}

Status CudaBackend::combine(const CombineArgs& args, ExecContext& ctx) {
  static const char* op = "combine";
  MOE_RETURN_IF_ERROR(checkCombine(args));
  MOE_RETURN_IF_ERROR(expectOnDevice({&args.y, &args.slotRow, &args.weights, &args.shared, &args.out}, op));
  OpFlag flag;
  MOE_RETURN_IF_ERROR(openFlag(ctx, FlagOp::kCombine, op, &flag));
  moe_cuda_combine_args a{};
  a.y = args.y.data;
  a.slot_row = args.slotRow.as<const int32_t>();
  a.weights = args.weights.as<const float>();
  a.shared = args.shared.data;
  a.out = args.out.data;
  a.error_flag = flag.word;
  a.rows = args.y.dim(0);
  a.tokens = args.slotRow.dim(0);
  a.slots = args.slotRow.dim(1);
  a.hidden = args.y.dim(1);
  a.y_dtype = pluginDtype(args.y.dtype);
  a.shared_dtype = args.shared.data ? pluginDtype(args.shared.dtype) : MOE_CUDA_DTYPE_F32;
  a.out_dtype = pluginDtype(args.out.dtype);
  char err[512] = {0};
  return closeFlag(ctx, FlagOp::kCombine, op, &flag, fromPlugin(Plugin::instance().api().combine(&a, err, sizeof err), err, op));
}

Backend& cudaBackend() {
  static CudaBackend backend;
  return backend;
}

}  // namespace moe::cuda
