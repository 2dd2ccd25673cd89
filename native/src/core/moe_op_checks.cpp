#include "core/moe_op_checks.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

namespace moe {

namespace {

constexpr int64_t kMaxI32 = std::numeric_limits<int32_t>::max();

std::string str(int64_t v) { return std::to_string(v); }
bool isFloatDtype(DType d) { return d == DType::kF32 || d == DType::kBF16; }

Status expectFloat2d(const TensorView& t, const char* what) {
  if (t.ndim != 2) return Status(Code::kShape, std::string(what) + ": expected a 2-D tensor, got shape " + t.shapeString());
  if (!isFloatDtype(t.dtype)) {
    return Status(Code::kDtype, std::string(what) + ": expected dtype f32 or bf16, got " + dtypeName(t.dtype));
  }
  return expectContiguous(t, what);
}

Status expectI32(const TensorView& t, int ndim, const char* what) {
  MOE_RETURN_IF_ERROR(expectDtype(t, DType::kI32, what));
  if (t.ndim != ndim) {
    return Status(Code::kShape, std::string(what) + ": expected a " + str(ndim) + "-D tensor, got shape " + t.shapeString());
  }
  return expectContiguous(t, what);
}

Status checkScaleFormat(const char* op, ScaleFormat format) {
  if (format != ScaleFormat::kF32 && format != ScaleFormat::kUE8M0) {
    return Status(Code::kRange, std::string(op) + ": scaleFormat must be f32 or ue8m0");
  }
  return Status::ok();
}

// The quantized output of dispatch / swiglu: fp8 [rows, cols] and scales [rows, ceil(cols/128)].
Status checkQuantizedOut(const char* op, const TensorView& out, const TensorView& scales, int64_t rows, int64_t cols) {
  MOE_RETURN_IF_ERROR(expectDtype(out, DType::kFP8E4M3, (std::string(op) + ": out (quantizing, scales given)").c_str()));
  MOE_RETURN_IF_ERROR(expectDtype(scales, DType::kF32, (std::string(op) + ": scales").c_str()));
  MOE_RETURN_IF_ERROR(expectShape(scales, {rows, ceilDiv(cols, kQuantGroup)}, (std::string(op) + ": scales").c_str()));
  return expectContiguous(scales, (std::string(op) + ": scales").c_str());
}

}  // namespace

Status checkRouterLogits(const RouterLogitsArgs& args) {
  // Not expectFloat2d: routerLogits' shape message has always read "got <shape>".
  for (const auto& [t, what] : {std::pair{&args.x, "routerLogits: x"}, std::pair{&args.w, "routerLogits: w"}}) {
    if (t->ndim != 2) return Status(Code::kShape, std::string(what) + ": expected a 2-D tensor, got " + t->shapeString());
    if (!isFloatDtype(t->dtype)) {
      return Status(Code::kDtype, std::string(what) + ": expected dtype f32 or bf16, got " + dtypeName(t->dtype));
    }
    MOE_RETURN_IF_ERROR(expectContiguous(*t, what));
  }
  MOE_RETURN_IF_ERROR(expectShape(args.w, {args.w.dim(0), args.x.dim(1)}, "routerLogits: w"));
  MOE_RETURN_IF_ERROR(expectDtype(args.logits, DType::kF32, "routerLogits: logits"));
  MOE_RETURN_IF_ERROR(expectShape(args.logits, {args.x.dim(0), args.w.dim(0)}, "routerLogits: logits"));
  return expectContiguous(args.logits, "routerLogits: logits");
}

Status checkRoute(const RouteArgs& a) {
  const TensorView& logits = a.logits;
  if (logits.ndim != 2) return Status(Code::kShape, "route: logits must be 2-D [T, E], got shape " + logits.shapeString());
  if (!isFloatDtype(logits.dtype)) {
    return Status(Code::kDtype, std::string("route: logits: expected dtype f32 or bf16, got ") + dtypeName(logits.dtype));
  }
  if (logits.dim(1) < 1) return Status(Code::kShape, "route: logits must have E >= 1 experts, got shape " + logits.shapeString());
  MOE_RETURN_IF_ERROR(expectContiguous(logits, "route: logits"));
  const int64_t tokens = logits.dim(0), experts = logits.dim(1);
  if (a.scoring != Scoring::kSoftmax && a.scoring != Scoring::kSigmoid) {
    return Status(Code::kRange, "route: scoring must be softmax or sigmoid");
  }
  if (a.topK < 1 || a.topK > experts) {
    return Status(Code::kRange, "route: topK must be in [1, E=" + str(experts) + "], got " + str(a.topK));
  }
  if (a.numGroups < 1 || a.numGroups > experts || experts % a.numGroups != 0) {
    return Status(Code::kRange, "route: numGroups must be >= 1 and divide E=" + str(experts) + ", got " + str(a.numGroups));
  }
  // Group-limited selection ranks groups by DeepSeek-V3's sigmoid group scores (SPEC.md "Routing").
  if (a.scoring == Scoring::kSoftmax && a.numGroups != 1) {
    return Status(Code::kRange, "route: numGroups: group-limited selection needs scoring 'sigmoid', got numGroups " + str(a.numGroups) +
                                    " with softmax");
  }
  if (a.topKGroups < 1 || a.topKGroups > a.numGroups) {
    return Status(Code::kRange, "route: topKGroups must be in [1, numGroups=" + str(a.numGroups) + "], got " + str(a.topKGroups));
  }
  // Only experts of the kept groups can be chosen; asking for more is a configuration error.
  const int64_t keptExperts = a.topKGroups * (experts / a.numGroups);
  if (a.topK > keptExperts) {
    return Status(Code::kRange, "route: topK must be <= topKGroups * (E / numGroups) = " + str(keptExperts) + ", got " + str(a.topK));
  }
  // An option out of range (ERR_MOE_RANGE, as lib/ says it), not non-finite data.
  if (!std::isfinite(a.scale)) return Status(Code::kRange, "route: scale must be a finite number, got " + std::to_string(a.scale));
  if (a.bias.data != nullptr) {
    if (a.scoring != Scoring::kSigmoid) return Status(Code::kRange, "route: bias is only supported with sigmoid scoring");
    MOE_RETURN_IF_ERROR(expectDtype(a.bias, DType::kF32, "route: bias"));
    MOE_RETURN_IF_ERROR(expectShape(a.bias, {experts}, "route: bias"));
    MOE_RETURN_IF_ERROR(expectContiguous(a.bias, "route: bias"));
  }
  MOE_RETURN_IF_ERROR(expectDtype(a.ids, DType::kI32, "route: ids"));
  MOE_RETURN_IF_ERROR(expectShape(a.ids, {tokens, a.topK}, "route: ids"));
  MOE_RETURN_IF_ERROR(expectContiguous(a.ids, "route: ids"));
  MOE_RETURN_IF_ERROR(expectDtype(a.weights, DType::kF32, "route: weights"));
  MOE_RETURN_IF_ERROR(expectShape(a.weights, {tokens, a.topK}, "route: weights"));
  return expectContiguous(a.weights, "route: weights");
}

Status checkDispatchLayout(const LayoutArgs& a) {
  if (a.numExperts < 1 || a.numExperts >= kMaxI32) {
    return Status(Code::kRange, "dispatchLayout: numExperts must be in [1, 2^31 - 1), got " + str(a.numExperts));
  }
  if (a.masked) {
    if (a.maxRowsPerExpert < 0 || a.maxRowsPerExpert > kMaxI32 / a.numExperts) {
      return Status(Code::kRange, "dispatchLayout: maxRowsPerExpert must be in [0, " + str(kMaxI32 / a.numExperts) +
                                      "] (E * maxRowsPerExpert must fit in i32), got " + str(a.maxRowsPerExpert));
    }
  } else if (a.align < 1 || a.align > kMaxI32) {
    return Status(Code::kRange, "dispatchLayout: align must be in [1, 2^31 - 1], got " + str(a.align));
  }
  MOE_RETURN_IF_ERROR(expectI32(a.ids, 2, "dispatchLayout: ids"));
  const int64_t tokens = a.ids.dim(0), slots = a.ids.dim(1), experts = a.numExperts;
  MOE_RETURN_IF_ERROR(expectI32(a.tokensPerExpert, 1, "dispatchLayout: tokensPerExpert"));
  MOE_RETURN_IF_ERROR(expectShape(a.tokensPerExpert, {experts}, "dispatchLayout: tokensPerExpert"));
  MOE_RETURN_IF_ERROR(expectI32(a.offsets, 1, "dispatchLayout: offsets"));
  MOE_RETURN_IF_ERROR(expectShape(a.offsets, {experts + 1}, "dispatchLayout: offsets"));
  MOE_RETURN_IF_ERROR(expectI32(a.rowToken, 1, "dispatchLayout: rowToken"));
  MOE_RETURN_IF_ERROR(expectI32(a.groupIndex, 1, "dispatchLayout: groupIndex"));
  MOE_RETURN_IF_ERROR(expectShape(a.groupIndex, {a.rowToken.dim(0)}, "dispatchLayout: groupIndex (same rows as rowToken)"));
  MOE_RETURN_IF_ERROR(expectI32(a.slotRow, 2, "dispatchLayout: slotRow"));
  MOE_RETURN_IF_ERROR(expectShape(a.slotRow, {tokens, slots}, "dispatchLayout: slotRow"));
  if (a.masked && a.rowToken.dim(0) < experts * a.maxRowsPerExpert) {
    return Status(Code::kShape, "dispatchLayout: rowToken and groupIndex hold " + str(a.rowToken.dim(0)) + " rows, the layout needs " +
                                    str(experts * a.maxRowsPerExpert) + " (E * maxRowsPerExpert)");
  }
  return Status::ok();
}

Status checkDispatch(const DispatchArgs& a) {
  if (a.x.ndim != 2) return Status(Code::kShape, "dispatch: x must be 2-D [T, H], got shape " + a.x.shapeString());
  if (!isFloatDtype(a.x.dtype)) {
    return Status(Code::kDtype, std::string("dispatch: x: expected dtype f32 or bf16, got ") + dtypeName(a.x.dtype));
  }
  MOE_RETURN_IF_ERROR(expectContiguous(a.x, "dispatch: x"));
  MOE_RETURN_IF_ERROR(expectDtype(a.rowToken, DType::kI32, "dispatch: rowToken"));
  if (a.rowToken.ndim != 1) return Status(Code::kShape, "dispatch: rowToken must be 1-D [R], got shape " + a.rowToken.shapeString());
  MOE_RETURN_IF_ERROR(expectContiguous(a.rowToken, "dispatch: rowToken"));
  const int64_t rows = a.rowToken.dim(0), hidden = a.x.dim(1);
  if (a.scales.data != nullptr) {
    MOE_RETURN_IF_ERROR(checkScaleFormat("dispatch", a.scaleFormat));
    // SPEC.md, "Quantization": quantized rows feed the FP8 GEMM, which needs 16-byte rows.
    if (hidden <= 0 || hidden % 16 != 0) {
      return Status(Code::kShape, "dispatch: quantizing needs H to be a positive multiple of 16, got " + str(hidden));
    }
    MOE_RETURN_IF_ERROR(checkQuantizedOut("dispatch", a.out, a.scales, rows, hidden));
  } else if (a.out.dtype == DType::kFP8E4M3) {
    return Status(Code::kDtype, "dispatch: out is fp8_e4m3 but scales.data is null (quantizing needs scales)");
  } else {
    MOE_RETURN_IF_ERROR(expectDtype(a.out, a.x.dtype, "dispatch: out (x's dtype when not quantizing)"));
  }
  MOE_RETURN_IF_ERROR(expectShape(a.out, {rows, hidden}, "dispatch: out"));
  return expectContiguous(a.out, "dispatch: out");
}

Status checkSwiglu(const SwigluArgs& a) {
  const TensorView& h = a.h;
  if (h.ndim != 2) return Status(Code::kShape, "swiglu: h must be 2-D [R, 2I], got shape " + h.shapeString());
  if (!isFloatDtype(h.dtype)) {
    return Status(Code::kDtype, std::string("swiglu: h: expected dtype f32 or bf16, got ") + dtypeName(h.dtype));
  }
  if (h.dim(1) < 2 || h.dim(1) % 2 != 0) {
    return Status(Code::kShape, "swiglu: h's last dimension must be 2I (gate then up) with I >= 1, got shape " + h.shapeString());
  }
  MOE_RETURN_IF_ERROR(expectContiguous(h, "swiglu: h"));
  const int64_t rows = h.dim(0), inter = h.dim(1) / 2;
  if (a.scales.data != nullptr) {
    MOE_RETURN_IF_ERROR(checkScaleFormat("swiglu", a.scaleFormat));
    // SPEC.md, "Quantization": quantized rows feed the FP8 GEMM, which needs 16-byte rows.
    if (inter % 16 != 0) return Status(Code::kShape, "swiglu: quantizing needs I to be a multiple of 16, got " + str(inter));
    MOE_RETURN_IF_ERROR(checkQuantizedOut("swiglu", a.out, a.scales, rows, inter));
  } else if (a.out.dtype == DType::kFP8E4M3) {
    return Status(Code::kDtype, "swiglu: out is fp8_e4m3 but scales.data is null (quantizing needs scales)");
  } else if (!isFloatDtype(a.out.dtype)) {
    return Status(Code::kDtype, std::string("swiglu: out: expected dtype f32, bf16 or fp8_e4m3, got ") + dtypeName(a.out.dtype));
  }
  MOE_RETURN_IF_ERROR(expectShape(a.out, {rows, inter}, "swiglu: out"));
  return expectContiguous(a.out, "swiglu: out");
}

Status checkCombine(const CombineArgs& a) {
  MOE_RETURN_IF_ERROR(expectFloat2d(a.y, "combine: y"));
  MOE_RETURN_IF_ERROR(expectDtype(a.slotRow, DType::kI32, "combine: slotRow"));
  if (a.slotRow.ndim != 2) return Status(Code::kShape, "combine: slotRow must be 2-D [T, k], got shape " + a.slotRow.shapeString());
  MOE_RETURN_IF_ERROR(expectContiguous(a.slotRow, "combine: slotRow"));
  const int64_t tokens = a.slotRow.dim(0), slots = a.slotRow.dim(1), hidden = a.y.dim(1);
  MOE_RETURN_IF_ERROR(expectDtype(a.weights, DType::kF32, "combine: weights"));
  MOE_RETURN_IF_ERROR(expectShape(a.weights, {tokens, slots}, "combine: weights"));
  MOE_RETURN_IF_ERROR(expectContiguous(a.weights, "combine: weights"));
  if (a.shared.data != nullptr) {
    MOE_RETURN_IF_ERROR(expectFloat2d(a.shared, "combine: shared"));
    MOE_RETURN_IF_ERROR(expectShape(a.shared, {tokens, hidden}, "combine: shared"));
  }
  MOE_RETURN_IF_ERROR(expectFloat2d(a.out, "combine: out"));
  return expectShape(a.out, {tokens, hidden}, "combine: out");
}

}  // namespace moe
