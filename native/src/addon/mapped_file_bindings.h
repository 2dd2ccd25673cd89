#pragma once

#include <napi.h>

namespace moe::addon {

// mapFileRange(path, offset, length, fileSize) -> ArrayBuffer over the mapped bytes (platform/mapped_file.h).
Napi::Value MapFileRange(const Napi::CallbackInfo& info);

}  // namespace moe::addon
