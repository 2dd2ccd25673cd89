// mapFileRange: a file range mapped through the page cache, handed to JS as
// an ArrayBuffer that owns the mapping: the buffer's finalizer unmaps it
// when the garbage collector frees the buffer (lib/checkpoint/mapped.ts).
#include "addon/mapped_file_bindings.h"

#include <cmath>
#include <string>

#include "addon/errors.h"
#include "platform/mapped_file.h"

namespace moe::addon {

namespace {

// An integral byte count or offset from JS (a double: exact up to 2^53).
bool bytesFromJs(const Napi::Value& value, uint64_t* out) {
  if (!value.IsNumber()) return false;
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || std::floor(d) != d) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

void unmapFinalizer(napi_env, void*, void* hint) {
  auto* range = static_cast<platform::MappedRange*>(hint);
  platform::unmapRange(*range);
  delete range;
}

}  // namespace

Napi::Value MapFileRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t offset = 0, length = 0, fileSize = 0;
  if (info.Length() < 4 || !info[0].IsString() || !bytesFromJs(info[1], &offset) || !bytesFromJs(info[2], &length) ||
      !bytesFromJs(info[3], &fileSize)) {
    toJsError(env, Status(Code::kInternal, "mapFileRange(path, offset, length, fileSize)")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* range = new platform::MappedRange;
  const Status status = platform::mapRange(info[0].As<Napi::String>().Utf8Value(), offset, length, fileSize, range);
  if (!status.isOk()) {
    delete range;
    toJsError(env, status).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  napi_value buffer = nullptr;
  // (The mapping is private and writable: handing its bytes out as mutable is sound, see mapped_file.h.)
  if (napi_create_external_arraybuffer(env, const_cast<uint8_t*>(range->data), static_cast<size_t>(length), unmapFinalizer,
                                       range, &buffer) != napi_ok) {
    platform::unmapRange(*range);
    delete range;
    toJsError(env, Status(Code::kInternal, "mapFileRange: cannot create an external ArrayBuffer")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Value(env, buffer);
}

}  // namespace moe::addon
