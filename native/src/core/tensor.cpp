#include "core/tensor.h"


namespace moe {

size_t dtypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kFP8E4M3: return 1;
    case DType::kI32: return 4;
  }
  return 0;
}

bool deviceFromName(const std::string& name, Device* device) {
  if (name == "cpu") *device = Device::kCpu;
  else if (name == "cuda") *device = Device::kCuda;
  else return false;
  return true;
}

const char* dtypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kFP8E4M3: return "fp8_e4m3";
    case DType::kI32: return "i32";
  }
  return "?";
}

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<int64_t> dims) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) t.shape[i++] = d;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::isContiguous() const {
  int64_t stride = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != stride) return false;
    stride *= shape[d];
  }
  return true;
}

std::string TensorView::shapeString() const {
  std::string out = "[";
  for (int i = 0; i < ndim; ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

Status expectDtype(const TensorView& t, DType dtype, const char* what) {
  if (t.dtype == dtype) return Status::ok();
  return Status(Code::kDtype, std::string(what) + ": expected dtype " + dtypeName(dtype) +
                                  ", got " + dtypeName(t.dtype));
}

Status expectShape(const TensorView& t, std::initializer_list<int64_t> dims, const char* what) {
  bool same = t.ndim == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) {
    if (!same) break;
    same = t.shape[i++] == d;
  }
  if (same) return Status::ok();
  TensorView expected = TensorView::contiguous(nullptr, t.dtype, dims);
  return Status(Code::kShape, std::string(what) + ": expected shape " + expected.shapeString() +
                                  ", got " + t.shapeString());
}

Status expectContiguous(const TensorView& t, const char* what) {
  if (t.isContiguous()) return Status::ok();
  return Status(Code::kShape, std::string(what) + ": expected a contiguous tensor");
}

}  // namespace moe
