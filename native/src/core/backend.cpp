// The CPU's answers to Backend's device services: host memory, and work that
// is done when a call returns. Queued backends override them all. Also the
// capability check every backend shares.
#include "core/backend.h"

#include <cstring>
#include <string>

namespace moe {

Status Backend::expectBatchInvariant(bool requested, const char* op) const {
  if (!requested || supportsOp(OpKind::kBatchInvariant)) return Status::ok();
  return Status(Code::kUnsupported,
                std::string(op) + ": batchInvariant is not supported on the " + name() + " backend (its GEMM kernels are chosen by shape)");
}

DeviceInfo Backend::deviceInfo() const {
  DeviceInfo info;
  info.available = true;
  info.reason = "usable";
  return info;
}

Status Backend::copyToDevice(void* device, const void* host, size_t bytes) {
  std::memcpy(device, host, bytes);
  return Status::ok();
}

Status Backend::copyToHost(void* host, const void* device, size_t bytes) {
  std::memcpy(host, device, bytes);
  return Status::ok();
}

Status Backend::copyOnDevice(void* dst, const void* src, size_t bytes) {
  std::memmove(dst, src, bytes);
  return Status::ok();
}

Status Backend::fill(void* device, int byte, size_t bytes) {
  std::memset(device, byte, bytes);
  return Status::ok();
}

Status Backend::layoutOffsets(const LayoutArgs& layout, ExecContext&, std::vector<int32_t>* offsets) {
  const int32_t* host = layout.offsets.as<const int32_t>();  // [E + 1], written by dispatchLayout
  offsets->assign(host, host + layout.numExperts + 1);
  return Status::ok();
}

}  // namespace moe
