#include "cuda_host/cuda_moe_forward.h"

#include <string>

#include "cuda_host/device_flags.h"
#include "cuda_host/plugin.h"
#include "cuda_host/plugin_enums.h"

namespace moe::cuda {

namespace {

// Word of `flags` each stage reports into.
enum FlagWord { kFlagRoute, kFlagLayout, kFlagDispatch, kFlagSwiglu, kFlagCombine, kFlagSharedQuantize, kFlagSharedSwiglu };

class Forward {
 public:
  Forward(const MoeForwardArgs& args, const CudaMoeOptions& options)
      : a_(args), o_(options), api_(Plugin::instance().api()), flags_(options.flags.as<int32_t>()) {}

  Status run();

 private:
  Status check(int rc, const char* what) { return fromPlugin(rc, err_, what); }
  int32_t* flag(FlagWord w) const { return flags_ + w; }
  Status validate();
  Status routeAndLayout();
  Status experts(int64_t rows);
  Status shared();
  Status combine(int64_t rows);
  Status gemm(const ExpertWeights& w, const TensorView& a, const TensorView& aScales, const TensorView& d, int64_t rows,
              int64_t k, int64_t n, const char* what);
  Status denseGemm(const ExpertWeights& w, const TensorView& a, const TensorView& aScales, const TensorView& d,
                   const char* what);

  const MoeForwardArgs& a_;
  const CudaMoeOptions& o_;
  const PluginApi& api_;
  int32_t* flags_;
  char err_[512] = {0};
  int64_t tokens_ = 0, experts_ = 0, topK_ = 0, hidden_ = 0;
};

Status Forward::validate() {
  const MoeWorkspace& ws = a_.ws;
  if (a_.x.ndim != 2) return Status(Code::kShape, "moeForward: x: expected [T, H], got " + a_.x.shapeString());
  tokens_ = a_.x.dim(0);
  hidden_ = a_.x.dim(1);
  experts_ = a_.gate.ndim == 2 ? a_.gate.dim(0) : 0;
  topK_ = a_.routing.topK;
  for (const ExpertWeights* w : {&a_.w13, &a_.w2}) {
    if (w->data.size() != 1 || w->scales.size() != 1) {
      return Status(Code::kUnsupported, "moeForward: the CUDA forward needs each expert weight in one device tensor [E, N, K] (no shards)");
    }
    if (w->data[0].ndim != 3 || w->data[0].dim(0) != experts_) {
      return Status(Code::kShape, "moeForward: expert weights must be [E, N, K] with E = " + std::to_string(experts_));
    }
  }
  if (o_.flags.data == nullptr || o_.flags.numel() < kNumFlags || o_.flags.dtype != DType::kI32) {
    return Status(Code::kShape, "moeForward: flags: expected [8] i32 on the device");
  }
  const int64_t capacity = ws.rowToken.dim(0);
  const int64_t need = o_.masked ? experts_ * o_.maxRowsPerExpert : tokens_ * topK_ + experts_ * (a_.align - 1);
  if (o_.masked && o_.maxRowsPerExpert < tokens_) {
    return Status(Code::kRange, "moeForward: maxRowsPerExpert must be >= T (an expert can receive every token)");
  }
  for (const TensorView* t : {&ws.rowToken, &ws.groupIndex, &ws.xq, &ws.xqScales, &ws.h, &ws.hq, &ws.hqScales, &ws.y}) {
    if (t->ndim < 1 || t->dim(0) < need || t->dim(0) != capacity) {
      return Status(Code::kShape, "moeForward: the device workspace holds " + std::to_string(t->dim(0)) + " rows, the layout needs " +
                                      std::to_string(need));
    }
  }
  return Status::ok();
}

Status Forward::routeAndLayout() {
  const MoeWorkspace& ws = a_.ws;
  moe_cuda_router_logits_args r{};
  r.x = a_.x.data;
  r.w = a_.gate.data;
  r.logits = ws.logits.as<float>();
  r.tokens = tokens_;
  r.hidden = hidden_;
  r.experts = experts_;
  r.x_dtype = pluginDtype(a_.x.dtype);
  r.w_dtype = pluginDtype(a_.gate.dtype);
  MOE_RETURN_IF_ERROR(check(api_.routerLogits(&r, err_, sizeof err_), "moeForward: routerLogits"));

  moe_cuda_route_args q{};
  q.logits = ws.logits.data;
  q.bias = a_.bias.as<const float>();
  q.ids = ws.ids.as<int32_t>();
  q.weights = ws.weights.as<float>();
  q.error_flag = flag(kFlagRoute);
  q.tokens = tokens_;
  q.experts = experts_;
  q.top_k = topK_;
  q.num_groups = a_.routing.numGroups;
  q.top_k_groups = a_.routing.topKGroups;
  q.logits_dtype = MOE_CUDA_DTYPE_F32;
  q.sigmoid = a_.routing.scoring == Scoring::kSigmoid ? 1 : 0;
  q.renormalize = a_.routing.renormalize ? 1 : 0;
  q.scale = a_.routing.scale;
  MOE_RETURN_IF_ERROR(check(api_.route(&q, err_, sizeof err_), "moeForward: route"));

  moe_cuda_layout_args l{};
  l.ids = ws.ids.as<const int32_t>();
  l.tokens_per_expert = ws.tokensPerExpert.as<int32_t>();
  l.offsets = ws.offsets.as<int32_t>();
  l.row_token = ws.rowToken.as<int32_t>();
  l.group_index = ws.groupIndex.as<int32_t>();
  l.slot_row = ws.slotRow.as<int32_t>();
  l.error_flag = flag(kFlagLayout);
  l.tokens = tokens_;
  l.slots = topK_;
  l.experts = experts_;
  l.capacity = ws.rowToken.dim(0);
  l.align = a_.align;
  l.masked = o_.masked ? 1 : 0;
  l.max_rows = o_.maxRowsPerExpert;
  return check(api_.dispatchLayout(&l, err_, sizeof err_), "moeForward: dispatchLayout");
}

// D [rows, n] = A [rows, k] * W^T per row's expert: the contiguous grouped
// GEMM, or the masked one over [E, Mmax] rows (maskedM = tokensPerExpert).
Status Forward::gemm(const ExpertWeights& w, const TensorView& a, const TensorView& aScales, const TensorView& d, int64_t rows,
                     int64_t k, int64_t n, const char* what) {
  if (!o_.masked) {
    moe_cuda_grouped_gemm_args g{};
    g.a = a.data;
    g.sa = aScales.as<const float>();
    g.b = w.data[0].data;
    g.sb = w.scales[0].as<const float>();
    g.group_index = a_.ws.groupIndex.as<const int32_t>();
    g.d = d.data;
    g.r = rows;
    g.n = n;
    g.k = k;
    g.g = experts_;
    g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
    g.scale_dtype = MOE_CUDA_DTYPE_F32;
    g.d_dtype = pluginDtype(d.dtype);
    g.kernel = MOE_CUDA_KERNEL_AUTO;
    return check(api_.groupedGemmFp8(&g, err_, sizeof err_), what);
  }
  moe_cuda_masked_gemm_args g{};
  g.a = a.data;
  g.sa = aScales.as<const float>();
  g.b = w.data[0].data;
  g.sb = w.scales[0].as<const float>();
  g.masked_m = a_.ws.tokensPerExpert.as<const int32_t>();
  g.d = d.data;
  g.g = experts_;
  g.m_max = o_.maxRowsPerExpert;
  g.n = n;
  g.k = k;
  g.expected_m = (tokens_ * topK_ + experts_ - 1) / experts_;  // rows per expert on average
  g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  g.scale_dtype = MOE_CUDA_DTYPE_F32;
  g.d_dtype = pluginDtype(d.dtype);
  g.kernel = MOE_CUDA_KERNEL_AUTO;
  return check(api_.groupedGemmFp8Masked(&g, err_, sizeof err_), what);
}

// dispatch (fp8) -> GEMM w13 -> swiglu (fp8) -> GEMM w2, over `rows` rows.
Status Forward::experts(int64_t rows) {
  const MoeWorkspace& ws = a_.ws;
  const int64_t inter = a_.w13.data[0].dim(1) / 2;
  moe_cuda_dispatch_args d{};
  d.x = a_.x.data;
  d.row_token = ws.rowToken.as<const int32_t>();
  d.out = ws.xq.data;
  d.scales = ws.xqScales.as<float>();
  d.error_flag = flag(kFlagDispatch);
  d.rows = rows;
  d.tokens = tokens_;
  d.hidden = hidden_;
  d.x_dtype = pluginDtype(a_.x.dtype);
  d.out_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  d.scale_format = MOE_CUDA_SCALE_F32;
  MOE_RETURN_IF_ERROR(check(api_.dispatch(&d, err_, sizeof err_), "moeForward: dispatch"));
  MOE_RETURN_IF_ERROR(gemm(a_.w13, ws.xq, ws.xqScales, ws.h, rows, hidden_, 2 * inter, "moeForward: grouped GEMM w13"));
  moe_cuda_swiglu_args s{};
  s.h = ws.h.data;
  s.out = ws.hq.data;
  s.scales = ws.hqScales.as<float>();
  s.error_flag = flag(kFlagSwiglu);
  s.rows = rows;
  s.inter = inter;
  s.h_dtype = pluginDtype(ws.h.dtype);
  s.out_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  s.scale_format = MOE_CUDA_SCALE_F32;
  MOE_RETURN_IF_ERROR(check(api_.swiglu(&s, err_, sizeof err_), "moeForward: swiglu"));
  return gemm(a_.w2, ws.hq, ws.hqScales, ws.y, rows, inter, hidden_, "moeForward: grouped GEMM w2");
}

Status Forward::denseGemm(const ExpertWeights& w, const TensorView& a, const TensorView& aScales, const TensorView& d,
                          const char* what) {
  moe_cuda_gemm_args g{};
  g.a = a.data;
  g.sa = aScales.as<const float>();
  g.b = w.data[0].data;  // [1, N, K]: the one expert's [N, K]
  g.sb = w.scales[0].as<const float>();
  g.d = d.data;
  g.m = tokens_;
  g.n = w.data[0].dim(1);
  g.k = w.data[0].dim(2);
  g.a_dtype = g.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  g.scale_dtype = MOE_CUDA_DTYPE_F32;
  g.d_dtype = pluginDtype(d.dtype);
  g.kernel = MOE_CUDA_KERNEL_AUTO;
  return check(api_.gemmFp8(&g, err_, sizeof err_), what);
}

// The shared experts: quantize x -> GEMM -> swiglu (fp8) -> GEMM, f32 out.
Status Forward::shared() {
  const MoeWorkspace& ws = a_.ws;
  moe_cuda_quantize_args q{};
  q.x = a_.x.data;
  q.q = ws.sharedXq.data;
  q.scales = ws.sharedXqScales.as<float>();
  q.nonfinite_flag = flag(kFlagSharedQuantize);
  q.rows = tokens_;
  q.cols = hidden_;
  q.block_rows = 1;
  q.x_dtype = pluginDtype(a_.x.dtype);
  q.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  q.scale_dtype = MOE_CUDA_DTYPE_F32;
  q.scale_format = MOE_CUDA_SCALE_F32;
  MOE_RETURN_IF_ERROR(check(api_.quantize(&q, err_, sizeof err_), "moeForward: shared quantize"));
  MOE_RETURN_IF_ERROR(denseGemm(a_.sharedW13, ws.sharedXq, ws.sharedXqScales, ws.sharedH, "moeForward: shared GEMM w13"));
  moe_cuda_swiglu_args s{};
  s.h = ws.sharedH.data;
  s.out = ws.sharedHq.data;
  s.scales = ws.sharedHqScales.as<float>();
  s.error_flag = flag(kFlagSharedSwiglu);
  s.rows = tokens_;
  s.inter = ws.sharedH.dim(1) / 2;
  s.h_dtype = pluginDtype(ws.sharedH.dtype);
  s.out_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  s.scale_format = MOE_CUDA_SCALE_F32;
  MOE_RETURN_IF_ERROR(check(api_.swiglu(&s, err_, sizeof err_), "moeForward: shared swiglu"));
  return denseGemm(a_.sharedW2, ws.sharedHq, ws.sharedHqScales, ws.sharedOut, "moeForward: shared GEMM w2");
}

Status Forward::combine(int64_t rows) {
  const MoeWorkspace& ws = a_.ws;
  const bool hasShared = !a_.sharedW13.empty();
  moe_cuda_combine_args c{};
  c.y = ws.y.data;
  c.slot_row = ws.slotRow.as<const int32_t>();
  c.weights = ws.weights.as<const float>();
  c.shared = hasShared ? ws.sharedOut.data : nullptr;
  c.out = a_.out.data;
  c.error_flag = flag(kFlagCombine);
  c.rows = rows;
  c.tokens = tokens_;
  c.slots = topK_;
  c.hidden = hidden_;
  c.y_dtype = pluginDtype(ws.y.dtype);
  c.shared_dtype = hasShared ? pluginDtype(ws.sharedOut.dtype) : MOE_CUDA_DTYPE_F32;
  c.out_dtype = pluginDtype(a_.out.dtype);
  return check(api_.combine(&c, err_, sizeof err_), "moeForward: combine");
}

Status Forward::run() {
  MOE_RETURN_IF_ERROR(validate());
  MOE_RETURN_IF_ERROR(check(api_.memset(flags_, 0, kNumFlags * sizeof(int32_t), err_, sizeof err_), "moeForward: flags"));
  MOE_RETURN_IF_ERROR(routeAndLayout());
  int64_t rows = experts_ * o_.maxRowsPerExpert;
  if (!o_.masked) {
    // NOTE: the one host synchronization of a prefill forward: the grouped
    // GEMMs' row count R = offsets[E] decides their grids. Reading the
    // layout's flag with it costs nothing more.
    int32_t host[2] = {0, 0};
    MOE_RETURN_IF_ERROR(check(api_.copyD2H(&host[0], a_.ws.offsets.as<int32_t>() + experts_, sizeof(int32_t), err_, sizeof err_),
                              "moeForward: read R"));
    MOE_RETURN_IF_ERROR(check(api_.copyD2H(&host[1], flag(kFlagLayout), sizeof(int32_t), err_, sizeof err_), "moeForward: read R"));
    MOE_RETURN_IF_ERROR(check(api_.synchronize(err_, sizeof err_), "moeForward: read R"));
    MOE_RETURN_IF_ERROR(statusFromFlags(FlagOp::kLayout, host[1], "moeForward: "));
    rows = host[0];
  }
  MOE_RETURN_IF_ERROR(experts(rows));
  if (!a_.sharedW13.empty()) MOE_RETURN_IF_ERROR(shared());
  return combine(rows);
}

}  // namespace

Status cudaMoeForward(const MoeForwardArgs& args, const CudaMoeOptions& options) {
  MOE_RETURN_IF_ERROR(Plugin::instance().expectAvailable("moeForward"));
  Forward forward(args, options);
  return forward.run();
}

Status flagsStatus(const int32_t* flags) {
  const FlagOp order[kNumFlags] = {FlagOp::kRoute,   FlagOp::kLayout,   FlagOp::kDispatch, FlagOp::kSwiglu,
                                   FlagOp::kCombine, FlagOp::kQuantize, FlagOp::kSwiglu,   FlagOp::kSwiglu};
  for (int i = 0; i < kNumFlags; ++i) {
    if (flags[i] != 0) {
      // The quantizer's flag is 1 for NaN (moe_cuda_quantize's convention), the others MOE_CUDA_FLAG_* bits.
      return statusFromFlags(order[i], order[i] == FlagOp::kQuantize ? MOE_CUDA_FLAG_NONFINITE : flags[i], "MoeLayer.forward: ");
    }
  }
  return Status::ok();
}

}  // namespace moe::cuda
