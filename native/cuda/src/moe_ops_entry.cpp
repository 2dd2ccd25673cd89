// The MoE layer's entry points (router logits, route, dispatch layout,
// dispatch, swiglu, combine): guards, then the launchers (moe_ops.h).
#include <stdint.h>

#include "api_entry.h"
#include "moe_ops.h"
#include "runtime.h"

namespace moe_cuda {
namespace {

bool is_float_dtype(int32_t d) { return d == MOE_CUDA_DTYPE_F32 || d == MOE_CUDA_DTYPE_BF16; }

int check_float(const char* op, const char* name, int32_t d, char* err, size_t err_len) {
  if (!is_float_dtype(d)) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: %s must be f32 or bf16 (dtype %d)", op, name, d);
  return MOE_CUDA_OK;
}

int check_scale_format(const char* op, int32_t f, char* err, size_t err_len) {
  if (f != MOE_CUDA_SCALE_F32 && f != MOE_CUDA_SCALE_UE8M0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown scale format %d (0 = f32, 1 = ue8m0)", op, f);
  }
  return MOE_CUDA_OK;
}

int check_flag(const char* op, const int32_t* flag, char* err, size_t err_len) {
  return flag ? check_aligned(op, "error_flag", flag, 4, err, err_len) : MOE_CUDA_OK;
}

size_t elem_size(int32_t d) { return d == MOE_CUDA_DTYPE_BF16 ? 2 : d == MOE_CUDA_DTYPE_FP8_E4M3 ? 1 : 4; }

}  // namespace
}  // namespace moe_cuda

using namespace moe_cuda;

extern "C" {

int moe_cuda_router_logits(const moe_cuda_router_logits_args* a, char* err, size_t err_len) {
  static const char* op = "routerLogits";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "x", a->x_dtype, err, err_len)) || (rc = check_float(op, "w", a->w_dtype, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_extent(op, "E", a->experts, 0, err, err_len))) {
    return rc;
  }
  if (a->tokens * a->experts > 0) {
    if (!a->x || !a->w || !a->logits) return null_pointer(op, "x, w or logits", err, err_len);
    if ((rc = check_aligned(op, "x", a->x, elem_size(a->x_dtype), err, err_len)) ||
        (rc = check_aligned(op, "w", a->w, elem_size(a->w_dtype), err, err_len)) ||
        (rc = check_aligned(op, "logits", a->logits, 4, err, err_len))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (a->hidden == 0 && a->tokens * a->experts > 0) {
    MOE_CUDA_CHECK(cudaMemsetAsync(a->logits, 0, sizeof(float) * a->tokens * a->experts, stream));  // empty dots
    return MOE_CUDA_OK;
  }
  RouterLogitsProblem p{a->x, a->x_dtype == MOE_CUDA_DTYPE_BF16, a->w, a->w_dtype == MOE_CUDA_DTYPE_BF16, a->logits,
                        a->tokens, a->hidden, a->experts};
  return router_logits_run(p, stream, err, err_len);
}

int moe_cuda_route(const moe_cuda_route_args* a, char* err, size_t err_len) {
  static const char* op = "route";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "logits", a->logits_dtype, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "E", a->experts, 1, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  // The kernel's loops and indexing depend on these; the routing rules proper
  // (topK within the kept groups, bias only with sigmoid, a finite scale)
  // are the core checks' (moe_op_checks.cpp), run before this is called.
  const int64_t E = a->experts;
  if (a->top_k < 1 || a->top_k > E) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: topK must be in [1, E=%lld], got %lld", op, (long long)E, (long long)a->top_k);
  if (a->num_groups < 1 || a->num_groups > E || E % a->num_groups != 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: numGroups must be >= 1 and divide E=%lld, got %lld", op, (long long)E, (long long)a->num_groups);
  }
  if (a->top_k_groups < 1 || a->top_k_groups > a->num_groups) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: topKGroups must be in [1, numGroups=%lld], got %lld", op, (long long)a->num_groups, (long long)a->top_k_groups);
  }
  // One warp per token keeps [2E + 2G] floats in shared memory: up to 48 KiB (no opt-in) per warp.
  if (route_smem_per_warp(E, a->num_groups) > 48 * 1024 / 4) {
    return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: E = %lld with %lld groups is more than the CUDA routing kernel holds (E + G <= 1536)", op,
                (long long)E, (long long)a->num_groups);
  }
  if (a->tokens > 0) {
    if (!a->logits || !a->ids || !a->weights) return null_pointer(op, "logits, ids or weights", err, err_len);
    if ((rc = check_aligned(op, "logits", a->logits, elem_size(a->logits_dtype), err, err_len)) ||
        (rc = check_aligned(op, "ids", a->ids, 4, err, err_len)) || (rc = check_aligned(op, "weights", a->weights, 4, err, err_len)) ||
        (a->bias && (rc = check_aligned(op, "bias", a->bias, 4, err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  RouteProblem p{};
  p.logits = a->logits;
  p.logits_bf16 = a->logits_dtype == MOE_CUDA_DTYPE_BF16;
  p.bias = a->bias;
  p.ids = a->ids;
  p.weights = a->weights;
  p.flag = a->error_flag;
  p.tokens = a->tokens;
  p.experts = E;
  p.top_k = a->top_k;
  p.groups = a->num_groups;
  p.top_k_groups = a->top_k_groups;
  p.sigmoid = a->sigmoid != 0;
  p.renormalize = a->renormalize != 0;
  p.scale = a->scale;
  return route_run(p, stream, err, err_len);
}

int moe_cuda_dispatch_layout(const moe_cuda_layout_args* a, char* err, size_t err_len) {
  static const char* op = "dispatchLayout";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "k", a->slots, 0, err, err_len)) ||
      (rc = check_extent(op, "E", a->experts, 1, err, err_len)) ||
      (rc = check_extent(op, "capacity", a->capacity, 0, err, err_len)) || (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (a->tokens * a->slots > kMaxExtent) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: T * k exceeds 2^31 - 1", op);
  if (a->masked) {
    if (a->max_rows < 0 || a->max_rows > kMaxExtent / a->experts) {
      return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: maxRowsPerExpert must be in [0, %lld], got %lld", op,
                  (long long)(kMaxExtent / a->experts), (long long)a->max_rows);
    }
    if (a->capacity < a->experts * a->max_rows) {
      return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: rowToken and groupIndex hold %lld rows, the layout needs %lld (E * maxRowsPerExpert)", op,
                  (long long)a->capacity, (long long)(a->experts * a->max_rows));
    }
  } else if (a->align < 1 || a->align > kMaxExtent) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: align must be in [1, 2^31 - 1], got %lld", op, (long long)a->align);
  }
  if (!a->tokens_per_expert || !a->offsets) return null_pointer(op, "tokensPerExpert or offsets", err, err_len);
  if (a->tokens * a->slots > 0 && (!a->ids || !a->slot_row)) return null_pointer(op, "ids or slotRow", err, err_len);
  if (a->capacity > 0 && (!a->row_token || !a->group_index)) return null_pointer(op, "rowToken or groupIndex", err, err_len);
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  LayoutProblem p{};
  p.ids = a->ids;
  p.tokens_per_expert = a->tokens_per_expert;
  p.offsets = a->offsets;
  p.row_token = a->row_token;
  p.group_index = a->group_index;
  p.slot_row = a->slot_row;
  p.flag = a->error_flag;
  p.tokens = a->tokens;
  p.slots = a->slots;
  p.experts = a->experts;
  p.capacity = a->capacity;
  p.align = a->masked ? 1 : a->align;
  p.masked = a->masked != 0;
  p.max_rows = a->max_rows;
  return dispatch_layout_run(p, stream, err, err_len);
}

int moe_cuda_dispatch(const moe_cuda_dispatch_args* a, char* err, size_t err_len) {
  static const char* op = "dispatch";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  const bool quantize = a->scales != nullptr;
  if ((rc = check_float(op, "x", a->x_dtype, err, err_len)) || (rc = check_extent(op, "R", a->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (quantize) {
    if ((rc = check_scale_format(op, a->scale_format, err, err_len))) return rc;
    if (a->out_dtype != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out must be fp8_e4m3 when quantizing", op);
    if (a->hidden <= 0 || a->hidden % 16 != 0) {
      return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: quantizing needs H to be a positive multiple of 16, got %lld", op, (long long)a->hidden);
    }
  } else if (a->out_dtype != a->x_dtype) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out must have x's dtype when not quantizing", op);
  }
  if (a->rows > 0 && a->hidden > 0) {
    if (!a->x && a->tokens > 0) return null_pointer(op, "x", err, err_len);
    if (!a->row_token || !a->out) return null_pointer(op, "rowToken or out", err, err_len);
    if (quantize && ((rc = check_aligned(op, "x", a->x, 16, err, err_len)) || (rc = check_aligned(op, "out", a->out, 16, err, err_len)) ||
                     (rc = check_aligned(op, "scales", a->scales, 4, err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (a->rows == 0 || a->hidden == 0) return MOE_CUDA_OK;
  DispatchProblem p{};
  p.x = a->x;
  p.x_bf16 = a->x_dtype == MOE_CUDA_DTYPE_BF16;
  p.row_token = a->row_token;
  p.out = a->out;
  p.scales = a->scales;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.tokens = a->tokens;
  p.hidden = a->hidden;
  p.ue8m0 = a->scale_format == MOE_CUDA_SCALE_UE8M0;
  return dispatch_run(p, stream, err, err_len);
}

int moe_cuda_swiglu(const moe_cuda_swiglu_args* a, char* err, size_t err_len) {
  static const char* op = "swiglu";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "h", a->h_dtype, err, err_len)) || (rc = check_extent(op, "R", a->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "I", a->inter, 1, err, err_len)) || (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  const bool quantize = a->out_dtype == MOE_CUDA_DTYPE_FP8_E4M3;
  if (quantize) {
    if ((rc = check_scale_format(op, a->scale_format, err, err_len))) return rc;
    if (a->scales == nullptr && a->rows > 0) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out is fp8_e4m3 but scales is null", op);
    if (a->inter % 16 != 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: quantizing needs I to be a multiple of 16, got %lld", op, (long long)a->inter);
  } else if ((rc = check_float(op, "out", a->out_dtype, err, err_len))) {
    return rc;
  }
  if (a->rows > 0) {
    if (!a->h || !a->out) return null_pointer(op, "h or out", err, err_len);
    if (quantize && ((rc = check_aligned(op, "h", a->h, 16, err, err_len)) || (rc = check_aligned(op, "out", a->out, 16, err, err_len)) ||
                     (rc = check_aligned(op, "scales", a->scales, 4, err, err_len)))) {
      return rc;
    }
    if (!quantize && ((rc = check_aligned(op, "h", a->h, elem_size(a->h_dtype), err, err_len)) ||
                      (rc = check_aligned(op, "out", a->out, elem_size(a->out_dtype), err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  SwigluProblem p{};
  p.h = a->h;
  p.h_bf16 = a->h_dtype == MOE_CUDA_DTYPE_BF16;
  p.out = a->out;
  p.out_dtype = a->out_dtype;
  p.scales = quantize ? a->scales : nullptr;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.inter = a->inter;
  p.ue8m0 = a->scale_format == MOE_CUDA_SCALE_UE8M0;
  return swiglu_run(p, stream, err, err_len);
}

int moe_cuda_combine(const moe_cuda_combine_args* a, char* err, size_t err_len) {
  static const char* op = "combine";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "y", a->y_dtype, err, err_len)) || (rc = check_float(op, "out", a->out_dtype, err, err_len)) ||
      (a->shared && (rc = check_float(op, "shared", a->shared_dtype, err, err_len))) ||
      (rc = check_extent(op, "R", a->rows, 0, err, err_len)) || (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) ||
      (rc = check_extent(op, "k", a->slots, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (a->tokens > 0 && a->hidden > 0) {
    if (!a->out || (a->slots > 0 && (!a->slot_row || !a->weights))) return null_pointer(op, "out, slotRow or weights", err, err_len);
    if (a->rows > 0 && !a->y) return null_pointer(op, "y", err, err_len);
    if ((rc = check_aligned(op, "out", a->out, elem_size(a->out_dtype), err, err_len)) ||
        (a->y && (rc = check_aligned(op, "y", a->y, elem_size(a->y_dtype), err, err_len))) ||
        (a->shared && (rc = check_aligned(op, "shared", a->shared, elem_size(a->shared_dtype), err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  CombineProblem p{};
  p.y = a->y;
  p.y_bf16 = a->y_dtype == MOE_CUDA_DTYPE_BF16;
  p.slot_row = a->slot_row;
  p.weights = a->weights;
  p.shared = a->shared;
  p.shared_bf16 = a->shared_dtype == MOE_CUDA_DTYPE_BF16;
  p.out = a->out;
  p.out_bf16 = a->out_dtype == MOE_CUDA_DTYPE_BF16;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.tokens = a->tokens;
  p.slots = a->slots;
  p.hidden = a->hidden;
  return combine_run(p, stream, err, err_len);
}

}  // extern "C"
