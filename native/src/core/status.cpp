#include "core/status.h"

namespace moe {

const char* codeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kShape: return "ERR_MOE_SHAPE";
    case Code::kDtype: return "ERR_MOE_DTYPE";
    case Code::kRange: return "ERR_MOE_RANGE";
    case Code::kNonFinite: return "ERR_MOE_NONFINITE";
    case Code::kDetached: return "ERR_MOE_DETACHED";
    case Code::kUnsupported: return "ERR_MOE_UNSUPPORTED";
    case Code::kInternal: return "ERR_MOE_INTERNAL";
    case Code::kDevice: return "ERR_MOE_DEVICE";
    case Code::kEpTimeout: return "ERR_MOE_EP_TIMEOUT";
    case Code::kEpPeer: return "ERR_MOE_EP_PEER";
    case Code::kEpConfig: return "ERR_MOE_EP_CONFIG";
    case Code::kEpProtocol: return "ERR_MOE_EP_PROTOCOL";
    case Code::kEpTransport: return "ERR_MOE_EP_TRANSPORT";
  }
  return "ERR_MOE_INTERNAL";
}

}  // namespace moe
