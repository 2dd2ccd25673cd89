// Status codes returned by all core and backend code. Core code never throws:
// it returns a Status, and the addon turns a failed Status into a MoeError in
// exactly one place (addon/errors.cpp).
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace moe {

// Each code maps 1:1 to a JavaScript MoeError code (see lib/errors.ts).
enum class Code {
  kOk = 0,
  kShape,        // ERR_MOE_SHAPE: wrong rank or extent
  kDtype,        // ERR_MOE_DTYPE: wrong element type
  kRange,        // ERR_MOE_RANGE: an index or option out of its range
  kNonFinite,    // ERR_MOE_NONFINITE: NaN or infinity where finite values are required
  kDetached,     // ERR_MOE_DETACHED: a buffer whose memory is gone
  kUnsupported,  // ERR_MOE_UNSUPPORTED: the backend cannot run this op
  kInternal,     // ERR_MOE_INTERNAL: a bug or an allocation failure
  kDevice,       // ERR_MOE_DEVICE: tensors on different devices, or on a device that is not available
  // Expert parallelism (several processes, one communicator):
  kEpTimeout,    // ERR_MOE_EP_TIMEOUT: an exchange did not complete in time (a peer died, hangs or skipped it)
  kEpPeer,       // ERR_MOE_EP_PEER: another rank failed this forward (its error is in the message)
  kEpConfig,     // ERR_MOE_EP_CONFIG: the ranks disagree on the layer (H, E, k, dtype, checkpoint) or on the rank layout
  kEpProtocol,   // ERR_MOE_EP_PROTOCOL: a received count, header or payload is not what the protocol allows
  kEpTransport,  // ERR_MOE_EP_TRANSPORT: the transport failed, is absent, or is unusable after an earlier failure
};

const char* codeName(Code code);

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return Status(); }

  bool isOk() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A failed status with `prefix` (an op's name and ": ") before its message, so
// an error says which op of a forward failed; ok passes through unchanged.
inline Status prefixed(std::string_view prefix, Status status) {
  if (status.isOk()) return status;
  return Status(status.code(), std::string(prefix) + status.message());
}

// Propagates a failed Status to the caller.
#define MOE_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::moe::Status moe_status_ = (expr); \
    if (!moe_status_.isOk()) return moe_status_; \
  } while (0)

}  // namespace moe
