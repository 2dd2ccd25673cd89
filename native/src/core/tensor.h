// A non-owning view of a tensor: (pointer, dtype, shape, strides). Core and
// backend code sees only these; who owns the memory (a JS ArrayBuffer, a device
// allocation) is the addon's business.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/status.h"

namespace moe {

enum class DType { kF32, kBF16, kFP8E4M3, kI32 };

// Where a tensor's memory lives: host memory, or the CUDA plug-in's device.
enum class Device { kCpu, kCuda };

size_t dtypeSize(DType dtype);
const char* dtypeName(DType dtype);

// lib/'s name of a device ('cpu', 'cuda'); false for any other name.
bool deviceFromName(const std::string& name, Device* device);

constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0};  // in elements, row-major when contiguous

  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> dims);

  int64_t numel() const;
  int64_t dim(int i) const { return shape[i]; }
  bool isContiguous() const;
  std::string shapeString() const;  // "[2, 3]"

  template <typename T>
  T* as() const { return static_cast<T*>(data); }
};

// Checks used by every backend before it touches memory. `what` names the
// argument in the message ("gemmFp8: a.data").
Status expectDtype(const TensorView& t, DType dtype, const char* what);
Status expectShape(const TensorView& t, std::initializer_list<int64_t> dims, const char* what);
Status expectContiguous(const TensorView& t, const char* what);

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace moe
