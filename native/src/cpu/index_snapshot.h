// A private copy of an i32 index tensor (ids, slotRow, rowToken, groupIndex,
// maskedM), taken before it is validated.
//
// Index tensors live in the caller's memory: a SharedArrayBuffer that another
// thread writes, or a typed array that JavaScript writes while a Promise-form
// operation runs. Validated in place and then read again by the kernel, a
// value changed in between would index out of bounds; validated and read from
// a copy, it cannot. The copies are small ([T, k] or [R] ints, a few hundred
// KiB at most) next to the rows they index.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "core/tensor.h"

namespace moe::cpu {

class IndexSnapshot {
 public:
  // Copies view's values and points view at the copy (a view without data is
  // left alone). False when out of memory.
  bool take(TensorView* view) {
    if (view->data == nullptr) return true;
    try {
      copy_.resize(static_cast<size_t>(view->numel()));
    } catch (const std::bad_alloc&) {
      return false;
    }
    if (!copy_.empty()) std::memcpy(copy_.data(), view->data, copy_.size() * sizeof(int32_t));
    view->data = copy_.data();
    return true;
  }

 private:
  std::vector<int32_t> copy_;
};

}  // namespace moe::cpu
