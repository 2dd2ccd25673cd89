#include "ep/nccl_transport.h"

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>


namespace moe::ep {

namespace {

template <typename Fn>
void resolve(void* library, const char* name, Fn* out, std::string* missing) {
  *out = reinterpret_cast<Fn>(dlsym(library, name));
  if (*out == nullptr && missing->empty()) *missing = name;
}

}  // namespace

const NcclLibrary* NcclLibrary::load(std::string* reason) {
  static std::once_flag once;
  static NcclLibrary library;
  static std::string why;
  static bool usable = false;
  std::call_once(once, [] {
    const char* override = std::getenv("MOE_NCCL_LIBRARY");
    const char* name = override && override[0] ? override : "libnccl.so.2";
    void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* error = dlerror();
      why = std::string("NCCL is not installed (") + (error ? error : name) + ")";
      return;
    }
    std::string missing;
    resolve(handle, "ncclGetVersion", &library.getVersion, &missing);
    resolve(handle, "ncclGetUniqueId", &library.getUniqueId, &missing);
    resolve(handle, "ncclCommInitRank", &library.commInitRank, &missing);
    resolve(handle, "ncclCommDestroy", &library.commDestroy, &missing);
    resolve(handle, "ncclCommAbort", &library.commAbort, &missing);
    resolve(handle, "ncclCommGetAsyncError", &library.commGetAsyncError, &missing);
    resolve(handle, "ncclGetErrorString", &library.getErrorString, &missing);
    resolve(handle, "ncclGroupStart", &library.groupStart, &missing);
    resolve(handle, "ncclGroupEnd", &library.groupEnd, &missing);
    resolve(handle, "ncclSend", &library.send, &missing);
    resolve(handle, "ncclRecv", &library.recv, &missing);
    if (!missing.empty()) {
      why = std::string(name) + " lacks " + missing + " (ncclSend/ncclRecv need NCCL >= 2.7)";
      return;
    }
    library.getVersion(&library.version);
    why = "usable";
    usable = true;
  });
  *reason = why;
  return usable ? &library : nullptr;
}

Status NcclTransport::create(std::shared_ptr<MpiTransport> mpi, std::shared_ptr<NcclTransport>* out) {
  std::string reason;
  const NcclLibrary* library = NcclLibrary::load(&reason);
  // Every rank learns whether every rank can use NCCL before any joins: a
  // rank without it must not leave the others in ncclCommInitRank.
  Backend& device = backendFor(Device::kCuda);
  void* stream = nullptr;
  Status local = library ? device.expectAvailable("expert parallelism over NCCL") : Status(Code::kEpTransport, reason);
  if (local.isOk()) local = device.nativeQueue(&stream);
  const int32_t ready = local.isOk() ? 1 : 0;
  std::vector<int32_t> all(mpi->size());
  MOE_RETURN_IF_ERROR(mpi->allgather(&ready, all.data(), sizeof ready));
  if (!local.isOk()) return local;
  for (int r = 0; r < mpi->size(); ++r) {
    if (!all[r]) return Status(Code::kEpTransport, "expert parallelism over NCCL: rank " + std::to_string(r) + " cannot use NCCL");
  }
  nccl::ncclUniqueId id{};
  if (mpi->rank() == 0 && library->getUniqueId(&id) != nccl::ncclSuccess) {
    return Status(Code::kEpTransport, "expert parallelism over NCCL: ncclGetUniqueId failed");
  }
  MOE_RETURN_IF_ERROR(mpi->bcast(&id, sizeof id, 0));
  nccl::ncclComm_t comm = nullptr;
  const nccl::ncclResult_t joined = library->commInitRank(&comm, mpi->size(), id, mpi->rank());
  if (joined != nccl::ncclSuccess) {
    return Status(Code::kEpTransport, std::string("expert parallelism over NCCL: ncclCommInitRank failed: ") + library->getErrorString(joined));
  }
  out->reset(new NcclTransport(std::move(mpi), library, comm, device, stream));
  return Status::ok();
}

NcclTransport::~NcclTransport() {
  // An aborted communicator is gone already; a healthy one is destroyed.
  if (comm_ && !broken_) library_->commDestroy(comm_);
}

Status NcclTransport::check(nccl::ncclResult_t result, const char* what) {
  if (result == nccl::ncclSuccess) return Status::ok();
  broken_ = true;
  library_->commAbort(comm_);
  return Status(Code::kEpTransport, std::string("expert parallelism over NCCL: ") + what + " failed on rank " + std::to_string(rank()) +
                                        ": " + library_->getErrorString(result));
}

// Waits for the group on the queue: a completion callback enqueued behind it
// sets a flag, polled with the MPI transport's deadline while NCCL's
// asynchronous errors (a peer that failed) and device faults are checked.
// Past the deadline the communicator is aborted, which also releases the
// kernels waiting for a dead peer.
namespace {
struct Completion {
  std::atomic<bool> done{false};
  std::atomic<int> owners{2};  // the callback and the waiter: the last one frees it
  void release() {
    if (owners.fetch_sub(1) == 1) delete this;
  }
};
}  // namespace

Status NcclTransport::wait(const char* what) {
  auto* completion = new Completion();
  const Status enqueued = device_.enqueueCompletion(
      [](void* user) {
        auto* c = static_cast<Completion*>(user);
        c->done.store(true, std::memory_order_release);
        c->release();
      },
      completion);
  if (!enqueued.isOk()) {
    delete completion;
    return enqueued;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(mpi_->timeoutSeconds());
  Status status;
  while (!completion->done.load(std::memory_order_acquire)) {
    nccl::ncclResult_t async = nccl::ncclSuccess;
    library_->commGetAsyncError(comm_, &async);
    if (async != nccl::ncclSuccess && async != nccl::ncclInProgress) {
      status = check(async, what);
      break;
    }
    status = device_.pollError();
    if (!status.isOk()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      broken_ = true;
      library_->commAbort(comm_);
      status = Status(Code::kEpTimeout, std::string("expert parallelism over NCCL: ") + what + " on rank " + std::to_string(rank()) +
                                            " did not complete within " + std::to_string(mpi_->timeoutSeconds()) + " s");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  completion->release();
  return status;
}

Status NcclTransport::alltoallv(const RowExchange* exchanges, int count) {
  if (broken_) return Status(Code::kEpTransport, "expert parallelism over NCCL: the communicator was aborted after a failed exchange");
  MOE_RETURN_IF_ERROR(check(library_->groupStart(), "ncclGroupStart"));
  Status status;
  for (int i = 0; i < count && status.isOk(); ++i) {
    const RowExchange& x = exchanges[i];
    for (int peer = 0; peer < size() && status.isOk(); ++peer) {
      const size_t sendBytes = static_cast<size_t>(x.sendRows[peer]) * x.rowBytes;
      const size_t recvBytes = static_cast<size_t>(x.recvRows[peer]) * x.rowBytes;
      if (sendBytes) {
        const auto* src = static_cast<const uint8_t*>(x.send) + static_cast<size_t>(x.sendOffsets[peer]) * x.rowBytes;
        status = check(library_->send(src, sendBytes, nccl::ncclUint8, peer, comm_, stream_), "ncclSend");
      }
      if (status.isOk() && recvBytes) {
        auto* dst = static_cast<uint8_t*>(x.recv) + static_cast<size_t>(x.recvOffsets[peer]) * x.rowBytes;
        status = check(library_->recv(dst, recvBytes, nccl::ncclUint8, peer, comm_, stream_), "ncclRecv");
      }
    }
  }
  const Status ended = broken_ ? Status::ok() : check(library_->groupEnd(), "ncclGroupEnd");
  MOE_RETURN_IF_ERROR(status);
  MOE_RETURN_IF_ERROR(ended);
  return wait("the row exchange (ncclSend/ncclRecv)");
}

}  // namespace moe::ep
