#include "core/numerics.h"

namespace moe {

const Fp8DecodeTable& fp8DecodeTable() {
  static const Fp8DecodeTable table;
  return table;
}

}  // namespace moe
