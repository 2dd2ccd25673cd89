#include "platform/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moe::platform {

namespace {

Status failure(const std::string& path, const std::string& what, int error) {
  return Status(Code::kRange, path + ": " + what + ": " + std::strerror(error));
}

// Closes the descriptor on every path out of mapRange (the mapping keeps its own reference to the file).
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

Status mapRange(const std::string& path, uint64_t offset, uint64_t length, uint64_t expectedFileSize,
                MappedRange* out) {
  *out = MappedRange{};
  if (length == 0) return Status(Code::kRange, path + ": cannot map an empty range");
  if (offset > expectedFileSize || length > expectedFileSize - offset) {
    return Status(Code::kRange, path + ": bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                                    ") are past the end of a file of " + std::to_string(expectedFileSize) + " bytes");
  }
  // O_NONBLOCK: a FIFO put in the file's place opens at once (and then fails the size check).
  Fd file{open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (file.fd < 0) return failure(path, "cannot open", errno);
  // The size of the file now open (lseek rather than fstat: fstat is a glibc
  // 2.33 symbol, and the addon loads on 2.28; see glibc_compat.cpp).
  const off_t size = lseek(file.fd, 0, SEEK_END);
  if (size < 0) return failure(path, "cannot find its size", errno);
  if (static_cast<uint64_t>(size) != expectedFileSize) {
    return Status(Code::kRange, path + ": the file is " + std::to_string(size) + " bytes, its header was read from a file of " +
                                    std::to_string(expectedFileSize) + " (modified since?)");
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const size_t bytes = static_cast<size_t>(offset + length - start);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, static_cast<off_t>(start));
  if (base == MAP_FAILED) return failure(path, "cannot map " + std::to_string(bytes) + " bytes", errno);
  // Start reading the range into the page cache now, in the background:
  // the first forward then finds most pages present instead of faulting
  // them in one by one. Advice only: a failure changes nothing.
  madvise(base, bytes, MADV_WILLNEED);
  out->base = base;
  out->mappedBytes = bytes;
  out->data = static_cast<const uint8_t*>(base) + (offset - start);
  return Status::ok();
}

void unmapRange(const MappedRange& range) {
  if (range.base != nullptr) munmap(range.base, range.mappedBytes);
}

}  // namespace moe::platform
