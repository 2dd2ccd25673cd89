// The plug-in's ops on the emulated device: each "kernel" is the CPU
// backend's operation, run on the emulated stream; data errors become the
// real kernels' MOE_CUDA_FLAG_* bits (device.h).
#include <stdint.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <string>
#include <vector>

#include "api_entry.h"
#include "core/backend.h"
#include "core/numerics.h"
#include "core/ops.h"
#include "cpu/cpu_backend.h"
#include "emulator/device.h"
#include "gemm_problem.h"
#include "sm90_fp8_gemm_heuristics.h"
#include "split_k_workspace.h"

using namespace moe_emu;

namespace {

using moe::DType;
using moe::Status;
using moe::TensorView;

DType dtype_of(int32_t d) {
  switch (d) {
    case MOE_CUDA_DTYPE_BF16: return DType::kBF16;
    case MOE_CUDA_DTYPE_FP8_E4M3: return DType::kFP8E4M3;
    case MOE_CUDA_DTYPE_I32: return DType::kI32;
    default: return DType::kF32;
  }
}

size_t bytes_of(int32_t d) { return moe::dtypeSize(dtype_of(d)); }

TensorView view(const void* p, int32_t d, std::initializer_list<int64_t> dims) {
  return TensorView::contiguous(const_cast<void*>(p), dtype_of(d), dims);
}

int64_t groups_of(int64_t k) { return (k + 127) / 128; }

// A CPU backend Status as the plug-in reports it: data errors become flag
// bits (flags[code] for the codes the op's kernels flag), the rest return codes.
int from_status(const Status& s, int32_t* flag, std::initializer_list<std::pair<moe::Code, int32_t>> flags, char* err,
                size_t len) {
  if (s.isOk()) return MOE_CUDA_OK;
  for (const auto& f : flags) {
    if (s.code() == f.first) {
      if (flag != nullptr) *flag |= f.second;
      return MOE_CUDA_OK;
    }
  }
  return fail(static_cast<int>(s.code()), err, len, "%s", s.message().c_str());
}

moe::Backend& cpu() { return moe::cpu::cpuBackend(); }

// ---- the Hopper path's host-side contracts --------------------------------------
// The emulated device is a Hopper GPU (132 SMs). Where the real plug-in would
// run the sm_90a kernels (the same host rules: sm90_fp8_gemm_heuristics.h and
// split_k_workspace.h, shared with it), the emulation keeps what those
// kernels do differently from the CPU backend, so that host code feeding them
// what they cannot take fails here: the contiguous grouped GEMM gives a whole
// block of rows the group of its first row, and a split dense GEMM passes its
// partials through the one shared workspace between two stream items.
constexpr int kSms = 132;

// MOE_CUDA_GEMM_KERNEL as the plug-in reads it (auto / simt / hopper).
int32_t forced_kernel() {
  const char* env = getenv("MOE_CUDA_GEMM_KERNEL");
  if (env != nullptr && strcmp(env, "simt") == 0) return MOE_CUDA_KERNEL_SIMT;
  if (env != nullptr && strcmp(env, "hopper") == 0) return MOE_CUDA_KERNEL_HOPPER;
  return MOE_CUDA_KERNEL_AUTO;
}

// Whether the plug-in would run `p` on the Hopper kernels (and with which
// BLOCK_M); a forced Hopper kernel that cannot take `p` is refused as there.
int hopper_route(const moe_cuda::GemmProblem& p, int32_t kernel, const char* op, uint32_t* block_m, char* err, size_t len) {
  *block_m = 0;
  if (kernel == MOE_CUDA_KERNEL_AUTO) kernel = forced_kernel();
  if (kernel == MOE_CUDA_KERNEL_SIMT) return MOE_CUDA_OK;
  char why[256] = {0};
  if (moe_cuda::sm90_fp8_gemm_eligible(p, why, sizeof why)) {
    *block_m = moe_cuda::sm90_fp8_gemm_choose(p, kSms).block_m;
    return MOE_CUDA_OK;
  }
  if (kernel == MOE_CUDA_KERNEL_HOPPER) {
    return fail(MOE_CUDA_ERR_UNSUPPORTED, err, len, "%s: the Hopper kernels cannot take this problem: %s", op, why);
  }
  return MOE_CUDA_OK;
}

// The plug-in's one split-K workspace (SMs x 128 x 128 f32), kept for good.
moe_cuda::SplitKWorkspace& split_workspace() {
  static moe_cuda::SplitKWorkspace* w = [] {
    auto* ws = new moe_cuda::SplitKWorkspace;
    const char* env = getenv("MOE_CUDA_SPLIT_K");
    if (env == nullptr || strcmp(env, "0") != 0) {
      ws->bytes = size_t(kSms) * 128 * 128 * sizeof(float);
      ws->data = static_cast<float*>(malloc(ws->bytes));
    }
    return ws;
  }();
  return *w;
}

// groupIndex as the Hopper contiguous kernel reads it: every row of a block of
// `block_m` rows takes the group of the block's first row; rows of another
// group (out of its contract) come out zero, as padding rows do.
std::vector<int32_t> hopper_group_index(const int32_t* index, int64_t rows, uint32_t block_m) {
  std::vector<int32_t> seen(index, index + rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t first = index[r - r % block_m];
    if (index[r] != first) seen[size_t(r)] = -1;
  }
  return seen;
}
// The CPU backend finishes each call before it returns: one context serves all.
moe::ExecContext& done() {
  thread_local moe::ExecContext ctx;
  return ctx;
}

}  // namespace

extern "C" {

// ---- FP8 GEMMs --------------------------------------------------------------------
// fp8 NaN codes: the GPU multiplies them into NaN outputs without a report; the
// CPU backend refuses them (kNonFinite), which is dropped here.

int moe_cuda_gemm_fp8(const moe_cuda_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_gemm_fp8";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t m = a->m, n = a->n, k = a->k, kg = groups_of(k);
  if (m == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(m * k), err, err_len) || !operand(op, "sa", a->sa, size_t(m * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(m * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GemmFp8Args g;
  g.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {m, k});
  g.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {m, kg});
  g.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {n, k});
  g.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {groups_of(n), kg});
  g.d = view(a->d, a->d_dtype, {m, n});
  moe_cuda::GemmProblem p{};
  p.layout = moe_cuda::GemmLayout::kDense;
  p.a = static_cast<const uint8_t*>(a->a);
  p.b = static_cast<const uint8_t*>(a->b);
  p.d = a->d;
  p.d_f32 = a->d_dtype == MOE_CUDA_DTYPE_F32;
  p.rows = m;
  p.n = n;
  p.k = k;
  p.groups = 1;
  uint32_t block_m = 0;
  if (const int rc = hopper_route(p, a->kernel, op, &block_m, err, err_len)) return rc;
  moe_cuda::SplitKWorkspace& ws = split_workspace();
  if (block_m == 0 || moe_cuda::split_k_count(ws, p, block_m, kSms) < 2) {
    return enqueue([g](char* e, size_t l) { return from_status(cpu().gemmFp8(g, done()), nullptr, {{moe::Code::kNonFinite, 0}}, e, l); },
                   err, err_len);
  }
  // Split over K: the partials into the shared workspace, then their sum into
  // D, two stream items enqueued under the workspace's lock (as the plug-in's
  // run_sm90_dense does). Here the "partials" are the whole f32 product.
  moe::GemmFp8Args partial = g;
  partial.d = TensorView::contiguous(ws.data, DType::kF32, {m, n});
  const bool f32 = p.d_f32;
  void* d = a->d;
  float* slices = ws.data;
  std::lock_guard<std::mutex> lock(ws.lock);
  int rc = enqueue([partial](char* e, size_t l) {
    return from_status(cpu().gemmFp8(partial, done()), nullptr, {{moe::Code::kNonFinite, 0}}, e, l);
  }, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  // The host's pause between the two launches, as long as the emulated GPU's
  // per item: without the lock another thread's split GEMM gets in here.
  std::this_thread::sleep_for(std::chrono::microseconds(getenv("MOE_EMU_PAUSE_US") ? atol(getenv("MOE_EMU_PAUSE_US")) : 50));
  return enqueue([slices, d, f32, m, n](char*, size_t) {
    const int64_t count = m * n;
    if (f32) {
      std::memcpy(d, slices, size_t(count) * sizeof(float));
    } else {
      for (int64_t i = 0; i < count; ++i) static_cast<uint16_t*>(d)[i] = moe::bf16FromFloat(slices[i]);
    }
    return MOE_CUDA_OK;
  }, err, err_len);
}

int moe_cuda_grouped_gemm_fp8(const moe_cuda_grouped_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_grouped_gemm_fp8";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->r, n = a->n, k = a->k, g = a->g, kg = groups_of(k);
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(r * k), err, err_len) || !operand(op, "sa", a->sa, size_t(r * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(g * n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(g * groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "group_index", a->group_index, size_t(r) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(r * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GroupedGemmFp8Args x;
  x.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {r, k});
  x.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {r, kg});
  x.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {g, n, k});
  x.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {g, groups_of(n), kg});
  x.groupIndex = view(a->group_index, MOE_CUDA_DTYPE_I32, {r});
  x.d = view(a->d, a->d_dtype, {r, n});
  moe_cuda::GemmProblem p{};
  p.layout = moe_cuda::GemmLayout::kContiguous;
  p.a = static_cast<const uint8_t*>(a->a);
  p.b = static_cast<const uint8_t*>(a->b);
  p.d = a->d;
  p.d_f32 = a->d_dtype == MOE_CUDA_DTYPE_F32;
  p.rows = r;
  p.n = n;
  p.k = k;
  p.groups = g;
  p.group_index = a->group_index;
  p.segment_align = a->align;
  uint32_t block_m = 0;
  if (const int rc = hopper_route(p, a->kernel, op, &block_m, err, err_len)) return rc;
  return enqueue(
      [x, block_m, r](char* e, size_t l) {
        moe::GroupedGemmFp8Args y = x;
        std::vector<int32_t> seen;
        if (block_m != 0) {  // the Hopper kernel's reading of groupIndex
          seen = hopper_group_index(x.groupIndex.as<const int32_t>(), r, block_m);
          y.groupIndex = TensorView::contiguous(seen.data(), DType::kI32, {r});
        }
        return from_status(cpu().groupedGemmFp8(y, done()), nullptr, {{moe::Code::kNonFinite, 0}}, e, l);
      },
      err, err_len);
}

int moe_cuda_grouped_gemm_fp8_masked(const moe_cuda_masked_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_grouped_gemm_fp8_masked";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t g = a->g, mm = a->m_max, n = a->n, k = a->k, kg = groups_of(k);
  if (g == 0 || mm == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(g * mm * k), err, err_len) ||
      !operand(op, "sa", a->sa, size_t(g * mm * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(g * n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(g * groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "masked_m", a->masked_m, size_t(g) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(g * mm * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GroupedGemmFp8Args x;
  x.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {g, mm, k});
  x.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {g, mm, kg});
  x.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {g, n, k});
  x.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {g, groups_of(n), kg});
  x.maskedM = view(a->masked_m, MOE_CUDA_DTYPE_I32, {g});
  x.d = view(a->d, a->d_dtype, {g, mm, n});
  // The kernels clamp masked_m to [0, Mmax]; the CPU backend refuses values
  // outside it, so clamp a copy first (the caller's masked_m stays as it was).
  return enqueue([x, g, mm](char* e, size_t l) {
    std::vector<int32_t> clamped(static_cast<size_t>(g));
    const int32_t* m = x.maskedM.as<int32_t>();
    for (int64_t i = 0; i < g; ++i) clamped[size_t(i)] = m[i] < 0 ? 0 : (m[i] > mm ? int32_t(mm) : m[i]);
    moe::GroupedGemmFp8Args y = x;
    y.maskedM = TensorView::contiguous(clamped.data(), DType::kI32, {g});
    return from_status(cpu().groupedGemmFp8(y, done()), nullptr, {{moe::Code::kNonFinite, 0}}, e, l);
  }, err, err_len);
}

// ---- quantization -------------------------------------------------------------------

int moe_cuda_quantize(const moe_cuda_quantize_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_quantize";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (a->block_rows != 1 && a->block_rows != 128) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 or 128", op);
  const int64_t rows = a->rows, cols = a->cols, br = a->block_rows;
  if (rows == 0) {  // the real plug-in still clears the flag: "first sets *nonfinite_flag to 0"
    if (a->nonfinite_flag == nullptr) return MOE_CUDA_OK;
    return moe_cuda_memset(a->nonfinite_flag, 0, sizeof(int32_t), err, err_len);
  }
  const int64_t srows = (rows + br - 1) / br;
  if (!operand(op, "x", a->x, size_t(rows * cols) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "q", a->q, size_t(rows * cols), err, err_len) ||
      !operand(op, "scales", a->scales, size_t(srows * groups_of(cols)) * 4, err, err_len) ||
      (a->nonfinite_flag != nullptr && !operand(op, "nonfinite_flag", a->nonfinite_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::QuantizeArgs q;
  q.x = view(a->x, a->x_dtype, {rows, cols});
  q.q = view(a->q, MOE_CUDA_DTYPE_FP8_E4M3, {rows, cols});
  q.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {srows, groups_of(cols)});
  q.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->nonfinite_flag;
  return enqueue([q, br, flag](char* e, size_t l) {
    if (flag != nullptr) *flag = 0;
    const Status s = br == 1 ? cpu().quantizeActivations(q, done()) : cpu().quantizeWeights(q, done());
    return from_status(s, flag, {{moe::Code::kNonFinite, 1}}, e, l);
  }, err, err_len);
}

int moe_cuda_dequantize(const moe_cuda_dequantize_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dequantize";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (a->block_rows != 1 && a->block_rows != 128) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 or 128", op);
  const int64_t rows = a->rows, cols = a->cols, br = a->block_rows;
  if (rows == 0 || cols == 0) return MOE_CUDA_OK;
  const int64_t srows = (rows + br - 1) / br;
  if (!operand(op, "q", a->q, size_t(rows * cols), err, err_len) ||
      !operand(op, "scales", a->scales, size_t(srows * groups_of(cols)) * 4, err, err_len) ||
      !operand(op, "out", a->out, size_t(rows * cols) * bytes_of(a->out_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::DequantizeArgs d;
  d.q = view(a->q, MOE_CUDA_DTYPE_FP8_E4M3, {rows, cols});
  d.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {srows, groups_of(cols)});
  d.blockRows = br;
  d.out = view(a->out, a->out_dtype, {rows, cols});
  return enqueue([d](char* e, size_t l) { return from_status(cpu().dequantize(d, done()), nullptr, {}, e, l); }, err, err_len);
}

// ---- the MoE layer's operations ------------------------------------------------------

int moe_cuda_router_logits(const moe_cuda_router_logits_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_router_logits";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, h = a->hidden, e = a->experts;
  if (t == 0) return MOE_CUDA_OK;
  if (!operand(op, "x", a->x, size_t(t * h) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "w", a->w, size_t(e * h) * bytes_of(a->w_dtype), err, err_len) ||
      !operand(op, "logits", a->logits, size_t(t * e) * 4, err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::RouterLogitsArgs r;
  r.x = view(a->x, a->x_dtype, {t, h});
  r.w = view(a->w, a->w_dtype, {e, h});
  r.logits = view(a->logits, MOE_CUDA_DTYPE_F32, {t, e});
  // Non-finite inputs give non-finite logits on a GPU, which the caller checks.
  return enqueue([r](char* e2, size_t l) { return from_status(cpu().routerLogits(r, done()), nullptr, {{moe::Code::kNonFinite, 0}}, e2, l); },
                 err, err_len);
}

int moe_cuda_route(const moe_cuda_route_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_route";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, e = a->experts, k = a->top_k;
  if (t == 0) return MOE_CUDA_OK;
  if (!operand(op, "logits", a->logits, size_t(t * e) * bytes_of(a->logits_dtype), err, err_len) ||
      (a->bias != nullptr && !operand(op, "bias", a->bias, size_t(e) * 4, err, err_len)) ||
      !operand(op, "ids", a->ids, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "weights", a->weights, size_t(t * k) * 4, err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::RouteArgs r;
  r.logits = view(a->logits, a->logits_dtype, {t, e});
  if (a->bias != nullptr) r.bias = view(a->bias, MOE_CUDA_DTYPE_F32, {e});
  r.scoring = a->sigmoid ? moe::Scoring::kSigmoid : moe::Scoring::kSoftmax;
  r.topK = k;
  r.numGroups = a->num_groups;
  r.topKGroups = a->top_k_groups;
  r.renormalize = a->renormalize != 0;
  r.scale = a->scale;
  r.ids = view(a->ids, MOE_CUDA_DTYPE_I32, {t, k});
  r.weights = view(a->weights, MOE_CUDA_DTYPE_F32, {t, k});
  int32_t* flag = a->error_flag;
  return enqueue([r, flag](char* e2, size_t l) {
    return from_status(cpu().route(r, done()), flag, {{moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e2, l);
  }, err, err_len);
}

int moe_cuda_dispatch_layout(const moe_cuda_layout_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dispatch_layout";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, k = a->slots, e = a->experts, cap = a->capacity;
  if (!operand(op, "ids", a->ids, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "tokens_per_expert", a->tokens_per_expert, size_t(e) * 4, err, err_len) ||
      !operand(op, "offsets", a->offsets, size_t(e + 1) * 4, err, err_len) ||
      !operand(op, "row_token", a->row_token, size_t(cap) * 4, err, err_len) ||
      !operand(op, "group_index", a->group_index, size_t(cap) * 4, err, err_len) ||
      !operand(op, "slot_row", a->slot_row, size_t(t * k) * 4, err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::LayoutArgs x;
  x.ids = view(a->ids, MOE_CUDA_DTYPE_I32, {t, k});
  x.numExperts = e;
  x.align = a->align;
  x.masked = a->masked != 0;
  x.maxRowsPerExpert = a->max_rows;
  x.tokensPerExpert = view(a->tokens_per_expert, MOE_CUDA_DTYPE_I32, {e});
  x.offsets = view(a->offsets, MOE_CUDA_DTYPE_I32, {e + 1});
  x.rowToken = view(a->row_token, MOE_CUDA_DTYPE_I32, {cap});
  x.groupIndex = view(a->group_index, MOE_CUDA_DTYPE_I32, {cap});
  x.slotRow = view(a->slot_row, MOE_CUDA_DTYPE_I32, {t, k});
  int32_t* flag = a->error_flag;
  return enqueue([x, flag](char* e2, size_t l) {
    const Status s = cpu().dispatchLayout(x, done());
    // The CPU's range errors: an id out of range, or (masked) an expert over Mmax.
    const int32_t range = s.message().find("maxRowsPerExpert") != std::string::npos ? MOE_CUDA_FLAG_OVER_MAX_ROWS
                                                                                    : MOE_CUDA_FLAG_BAD_INDEX;
    return from_status(s, flag, {{moe::Code::kRange, range}, {moe::Code::kShape, MOE_CUDA_FLAG_OVER_CAPACITY}}, e2, l);
  }, err, err_len);
}

int moe_cuda_dispatch(const moe_cuda_dispatch_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dispatch";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, t = a->tokens, h = a->hidden;
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "x", a->x, size_t(t * h) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "row_token", a->row_token, size_t(r) * 4, err, err_len) ||
      !operand(op, "out", a->out, size_t(r * h) * bytes_of(a->out_dtype), err, err_len) ||
      (a->scales != nullptr && !operand(op, "scales", a->scales, size_t(r * groups_of(h)) * 4, err, err_len)) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  const size_t vec = a->scales != nullptr ? 16 : bytes_of(a->x_dtype);
  if (!aligned(op, "x", a->x, vec, err, err_len) || !aligned(op, "out", a->out, vec, err, err_len) ||
      !aligned(op, "row_token", a->row_token, 4, err, err_len)) {
    return MOE_CUDA_ERR_RANGE;
  }
  moe::DispatchArgs d;
  d.x = view(a->x, a->x_dtype, {t, h});
  d.rowToken = view(a->row_token, MOE_CUDA_DTYPE_I32, {r});
  d.out = view(a->out, a->out_dtype, {r, h});
  if (a->scales != nullptr) d.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {r, groups_of(h)});
  d.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->error_flag;
  return enqueue([d, flag](char* e, size_t l) {
    return from_status(cpu().dispatch(d, done()), flag,
                       {{moe::Code::kRange, MOE_CUDA_FLAG_BAD_INDEX}, {moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

int moe_cuda_swiglu(const moe_cuda_swiglu_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_swiglu";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, i = a->inter;
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "h", a->h, size_t(r * 2 * i) * bytes_of(a->h_dtype), err, err_len) ||
      !operand(op, "out", a->out, size_t(r * i) * bytes_of(a->out_dtype), err, err_len) ||
      (a->scales != nullptr && !operand(op, "scales", a->scales, size_t(r * groups_of(i)) * 4, err, err_len)) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  const bool quantizing = a->out_dtype == MOE_CUDA_DTYPE_FP8_E4M3;
  if (!aligned(op, "h", a->h, quantizing ? 16 : bytes_of(a->h_dtype), err, err_len) ||
      !aligned(op, "out", a->out, quantizing ? 16 : bytes_of(a->out_dtype), err, err_len)) {
    return MOE_CUDA_ERR_RANGE;
  }
  moe::SwigluArgs s;
  s.h = view(a->h, a->h_dtype, {r, 2 * i});
  s.out = view(a->out, a->out_dtype, {r, i});
  if (a->scales != nullptr) s.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {r, groups_of(i)});
  s.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->error_flag;
  return enqueue([s, flag](char* e, size_t l) {
    return from_status(cpu().swiglu(s, done()), flag, {{moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

int moe_cuda_combine(const moe_cuda_combine_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_combine";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, t = a->tokens, k = a->slots, h = a->hidden;
  if (t == 0) return MOE_CUDA_OK;
  if ((r > 0 && !operand(op, "y", a->y, size_t(r * h) * bytes_of(a->y_dtype), err, err_len)) ||
      !operand(op, "slot_row", a->slot_row, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "weights", a->weights, size_t(t * k) * 4, err, err_len) ||
      (a->shared != nullptr && !operand(op, "shared", a->shared, size_t(t * h) * bytes_of(a->shared_dtype), err, err_len)) ||
      !operand(op, "out", a->out, size_t(t * h) * bytes_of(a->out_dtype), err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::CombineArgs c;
  c.y = view(a->y, a->y_dtype, {r, h});
  c.slotRow = view(a->slot_row, MOE_CUDA_DTYPE_I32, {t, k});
  c.weights = view(a->weights, MOE_CUDA_DTYPE_F32, {t, k});
  if (a->shared != nullptr) c.shared = view(a->shared, a->shared_dtype, {t, h});
  c.out = view(a->out, a->out_dtype, {t, h});
  int32_t* flag = a->error_flag;
  return enqueue([c, flag](char* e, size_t l) {
    return from_status(cpu().combine(c, done()), flag,
                       {{moe::Code::kRange, MOE_CUDA_FLAG_BAD_INDEX}, {moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

}  // extern "C"
