// The plug-in's one way to report an error: a printf-style message into the
// caller's (err, len) buffer, and the status code returned. Free of CUDA
// headers, so the plug-in's CPU emulation (test/emulator/) uses it too.
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

namespace moe_cuda {

__attribute__((format(printf, 4, 5))) inline int fail(int code, char* err, size_t len, const char* fmt, ...) {
  if (err != nullptr && len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
  }
  return code;
}

}  // namespace moe_cuda
