// The CPU backend: the reference semantics of SPEC.md with a fast
// multi-threaded path. Validates what it is handed before touching memory.
#pragma once

#include "core/backend.h"

namespace moe::cpu {

Backend& cpuBackend();

}  // namespace moe::cpu
