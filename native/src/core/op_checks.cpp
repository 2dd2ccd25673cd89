#include "core/op_checks.h"

#include <string>

#include "core/tensor.h"

namespace moe {

Status expect2dContiguous(const TensorView& t, const char* what) {
  if (t.ndim != 2) {
    return Status(Code::kShape, std::string(what) + ": expected a 2-D tensor, got shape " + t.shapeString());
  }
  return expectContiguous(t, what);
}

Status expectFloatInput(const TensorView& t, const char* what) {
  if (t.dtype == DType::kF32 || t.dtype == DType::kBF16) return Status::ok();
  return Status(Code::kDtype, std::string(what) + ": expected dtype f32 or bf16, got " + dtypeName(t.dtype));
}

Status expectKMultipleOf16(int64_t k, const char* what) {
  if (k > 0 && k % 16 == 0) return Status::ok();
  return Status(Code::kShape, std::string(what) + ": K must be a positive multiple of 16, got " + std::to_string(k));
}


namespace {

Status expectOutput(const TensorView& d, std::initializer_list<int64_t> dims) {
  if (d.dtype != DType::kF32 && d.dtype != DType::kBF16) {
    return Status(Code::kDtype, std::string("out: expected dtype bf16 or f32, got ") + dtypeName(d.dtype));
  }
  MOE_RETURN_IF_ERROR(expectShape(d, dims, "out"));
  return expectContiguous(d, "out");
}

Status validateWeights(const GroupedGemmFp8Args& args, int64_t* g, int64_t* n, int64_t* k) {
  if (args.b.ndim != 3) return Status(Code::kShape, "b.data: expected [G, N, K], got " + args.b.shapeString());
  MOE_RETURN_IF_ERROR(expectDtype(args.b, DType::kFP8E4M3, "b.data"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.b, "b.data"));
  *g = args.b.dim(0);
  *n = args.b.dim(1);
  *k = args.b.dim(2);
  if (*k <= 0 || *k % 16 != 0) return Status(Code::kShape, "b.data: K must be a positive multiple of 16");
  MOE_RETURN_IF_ERROR(expectDtype(args.bScales, DType::kF32, "b.scales"));
  MOE_RETURN_IF_ERROR(
      expectShape(args.bScales, {*g, ceilDiv(*n, kWeightBlockRows), ceilDiv(*k, kQuantGroup)}, "b.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.bScales, "b.scales"));
  return groupTableGroups(args.groupTable, args.b, g);
}

}  // namespace

Status groupTableGroups(const GroupTable* table, const TensorView& first, int64_t* groups) {
  if (table == nullptr) return Status::ok();
  if (first.dim(0) != 1) return Status(Code::kShape, "with a group table the weights tensor is group 0's, [1, N, K], got " + first.shapeString());
  if (table->b.empty() || table->b.size() != table->bScales.size()) return Status(Code::kShape, "the group table's weights and scales differ in count");
  for (size_t i = 0; i < table->b.size(); ++i) {
    if (table->b[i] == nullptr || table->bScales[i] == nullptr) return Status(Code::kInternal, "the group table has a null entry");
  }
  *groups = static_cast<int64_t>(table->b.size());
  return Status::ok();
}

Status checkQuantize(const QuantizeArgs& args, int64_t blockRows, const char* op) {
  const std::string name(op);
  MOE_RETURN_IF_ERROR(expect2dContiguous(args.x, (name + ": x").c_str()));
  MOE_RETURN_IF_ERROR(expectFloatInput(args.x, (name + ": x").c_str()));
  const int64_t rows = args.x.dim(0), cols = args.x.dim(1);
  MOE_RETURN_IF_ERROR(expectKMultipleOf16(cols, (name + ": x").c_str()));
  MOE_RETURN_IF_ERROR(expectDtype(args.q, DType::kFP8E4M3, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectShape(args.q, {rows, cols}, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectContiguous(args.q, (name + ": q").c_str()));
  MOE_RETURN_IF_ERROR(expectDtype(args.scales, DType::kF32, (name + ": scales").c_str()));
  MOE_RETURN_IF_ERROR(
      expectShape(args.scales, {ceilDiv(rows, blockRows), ceilDiv(cols, kQuantGroup)}, (name + ": scales").c_str()));
  return expectContiguous(args.scales, (name + ": scales").c_str());
}

Status checkDequantize(const DequantizeArgs& args) {
  MOE_RETURN_IF_ERROR(expect2dContiguous(args.q, "dequantize: q.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.q, DType::kFP8E4M3, "dequantize: q.data"));
  const int64_t rows = args.q.dim(0), cols = args.q.dim(1);
  if (args.blockRows != 1 && args.blockRows != kWeightBlockRows) {
    return Status(Code::kRange, "dequantize: blockRows must be 1 or 128, got " + std::to_string(args.blockRows));
  }
  MOE_RETURN_IF_ERROR(expectDtype(args.scales, DType::kF32, "dequantize: q.scales"));
  MOE_RETURN_IF_ERROR(expectShape(args.scales, {ceilDiv(rows, args.blockRows), ceilDiv(cols, kQuantGroup)},
                                  "dequantize: q.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.scales, "dequantize: q.scales"));
  MOE_RETURN_IF_ERROR(expectFloatInput(args.out, "dequantize: out"));
  MOE_RETURN_IF_ERROR(expectShape(args.out, {rows, cols}, "dequantize: out"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.out, "dequantize: out"));
  return Status::ok();
}

Status checkGemmFp8(const GemmFp8Args& args) {
  MOE_RETURN_IF_ERROR(expect2dContiguous(args.a, "gemmFp8: a.data"));
  MOE_RETURN_IF_ERROR(expect2dContiguous(args.b, "gemmFp8: b.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.a, DType::kFP8E4M3, "gemmFp8: a.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.b, DType::kFP8E4M3, "gemmFp8: b.data"));
  const int64_t m = args.a.dim(0), k = args.a.dim(1), n = args.b.dim(0);
  MOE_RETURN_IF_ERROR(expectKMultipleOf16(k, "gemmFp8: a.data"));
  MOE_RETURN_IF_ERROR(expectShape(args.b, {n, k}, "gemmFp8: b.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.aScales, DType::kF32, "gemmFp8: a.scales"));
  MOE_RETURN_IF_ERROR(expectShape(args.aScales, {m, ceilDiv(k, kQuantGroup)}, "gemmFp8: a.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.aScales, "gemmFp8: a.scales"));
  MOE_RETURN_IF_ERROR(expectDtype(args.bScales, DType::kF32, "gemmFp8: b.scales"));
  MOE_RETURN_IF_ERROR(
    expectShape(args.bScales, {ceilDiv(n, kWeightBlockRows), ceilDiv(k, kQuantGroup)}, "gemmFp8: b.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.bScales, "gemmFp8: b.scales"));
  MOE_RETURN_IF_ERROR(expectFloatInput(args.d, "gemmFp8: out"));
  MOE_RETURN_IF_ERROR(expectShape(args.d, {m, n}, "gemmFp8: out"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.d, "gemmFp8: out"));
  return Status::ok();
}

namespace {

// The optional shared expert's product (GroupedGemmFp8Args::sharedA..sharedD).
Status checkSharedProduct(const GroupedGemmFp8Args& args, int64_t n, int64_t k) {
  if (args.sharedA.data == nullptr) return Status::ok();
  if (args.sharedA.ndim != 2) return Status(Code::kShape, "shared.a: expected [S, K], got " + args.sharedA.shapeString());
  const int64_t rows = args.sharedA.dim(0);
  MOE_RETURN_IF_ERROR(expectDtype(args.sharedA, DType::kFP8E4M3, "shared.a"));
  MOE_RETURN_IF_ERROR(expectShape(args.sharedA, {rows, k}, "shared.a"));
  MOE_RETURN_IF_ERROR(expectDtype(args.sharedAScales, DType::kF32, "shared.aScales"));
  MOE_RETURN_IF_ERROR(expectShape(args.sharedAScales, {rows, ceilDiv(k, kQuantGroup)}, "shared.aScales"));
  MOE_RETURN_IF_ERROR(expectDtype(args.sharedB, DType::kFP8E4M3, "shared.b"));
  MOE_RETURN_IF_ERROR(expectShape(args.sharedB, {n, k}, "shared.b"));
  MOE_RETURN_IF_ERROR(expectDtype(args.sharedBScales, DType::kF32, "shared.bScales"));
  MOE_RETURN_IF_ERROR(expectShape(args.sharedBScales, {ceilDiv(n, kWeightBlockRows), ceilDiv(k, kQuantGroup)}, "shared.bScales"));
  if (args.sharedD.dtype != args.d.dtype) return Status(Code::kDtype, "shared.d: expected the dtype of d");
  MOE_RETURN_IF_ERROR(expectShape(args.sharedD, {rows, n}, "shared.d"));
  for (const auto& [t, what] : {std::pair{&args.sharedA, "shared.a"}, {&args.sharedAScales, "shared.aScales"},
                                {&args.sharedB, "shared.b"}, {&args.sharedBScales, "shared.bScales"}, {&args.sharedD, "shared.d"}}) {
    MOE_RETURN_IF_ERROR(expectContiguous(*t, what));
  }
  return Status::ok();
}

}  // namespace

Status checkGroupedGemmFp8(const GroupedGemmFp8Args& args, GroupedShape* shape) {
  int64_t groups = 0, n = 0, k = 0;
  MOE_RETURN_IF_ERROR(validateWeights(args, &groups, &n, &k));
  shape->groups = groups;
  shape->n = n;
  shape->k = k;
  shape->masked = args.maskedM.data != nullptr;
  if (!shape->masked) {
    if (args.a.ndim != 2) return Status(Code::kShape, "a.data: expected [R, K], got " + args.a.shapeString());
    const int64_t rows = args.a.dim(0);
    MOE_RETURN_IF_ERROR(expectDtype(args.a, DType::kFP8E4M3, "a.data"));
    MOE_RETURN_IF_ERROR(expectShape(args.a, {rows, k}, "a.data"));
    MOE_RETURN_IF_ERROR(expectContiguous(args.a, "a.data"));
    MOE_RETURN_IF_ERROR(expectDtype(args.aScales, DType::kF32, "a.scales"));
    MOE_RETURN_IF_ERROR(expectShape(args.aScales, {rows, ceilDiv(k, kQuantGroup)}, "a.scales"));
    MOE_RETURN_IF_ERROR(expectContiguous(args.aScales, "a.scales"));
    MOE_RETURN_IF_ERROR(expectDtype(args.groupIndex, DType::kI32, "groupIndex"));
    MOE_RETURN_IF_ERROR(expectShape(args.groupIndex, {rows}, "groupIndex"));
    MOE_RETURN_IF_ERROR(expectOutput(args.d, {rows, n}));
    if (args.segmentAlign < 1 || args.segmentAlign > (1 << 16)) {
      return Status(Code::kRange, "align: expected an integer in [1, 65536], got " + std::to_string(args.segmentAlign));
    }

    shape->rows = rows;
    return checkSharedProduct(args, n, k);
  }
  if (args.sharedA.data != nullptr) return Status(Code::kUnsupported, "shared: the masked layout takes no shared expert");
  if (args.a.ndim != 3) return Status(Code::kShape, "a.data: expected [G, Mmax, K], got " + args.a.shapeString());
  const int64_t maxRows = args.a.dim(1);
  MOE_RETURN_IF_ERROR(expectDtype(args.a, DType::kFP8E4M3, "a.data"));
  MOE_RETURN_IF_ERROR(expectShape(args.a, {groups, maxRows, k}, "a.data"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.a, "a.data"));
  MOE_RETURN_IF_ERROR(expectDtype(args.aScales, DType::kF32, "a.scales"));
  MOE_RETURN_IF_ERROR(expectShape(args.aScales, {groups, maxRows, ceilDiv(k, kQuantGroup)}, "a.scales"));
  MOE_RETURN_IF_ERROR(expectContiguous(args.aScales, "a.scales"));
  MOE_RETURN_IF_ERROR(expectDtype(args.maskedM, DType::kI32, "maskedM"));
  MOE_RETURN_IF_ERROR(expectShape(args.maskedM, {groups}, "maskedM"));
  MOE_RETURN_IF_ERROR(expectOutput(args.d, {groups, maxRows, n}));

  shape->rows = maxRows;
  return Status::ok();
}

}  // namespace moe
