// A read-only view of a byte range of a file through the page cache
// (mmap), so that processes mapping the same checkpoint share one copy of
// its pages instead of each reading the bytes into memory of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace moe::platform {

struct MappedRange {
  void* base = nullptr;        // the mapping (page-aligned), for unmapRange
  size_t mappedBytes = 0;      // its length: the range rounded out to whole pages
  const uint8_t* data = nullptr;  // the range's first byte, inside the mapping
};

// Maps bytes [offset, offset + length) of `path`, whose size must still be
// `expectedFileSize` (the size its header was validated against): a file
// replaced or truncated since then is refused here instead of faulting
// (SIGBUS) on the first read past its new end. A file truncated while
// mapped still faults: checkpoint files must not be modified while mapped.
//
// The mapping is private and writable: reads share the file's page-cache
// pages with every other process, and a write through a JS view of it (a
// caller writing into a weight tensor) copies that one page into the process
// instead of crashing on a read-only page or changing the file.
Status mapRange(const std::string& path, uint64_t offset, uint64_t length, uint64_t expectedFileSize,
                MappedRange* out);

// Releases a mapping made by mapRange (safe on an empty MappedRange).
void unmapRange(const MappedRange& range);

}  // namespace moe::platform
