#include "ep/nccl_transport.h"

#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "cuda_host/plugin.h"

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
      why = std::string("NCCL is not installed (") + (error ? error : name) + "): device rows are staged through host memory over MPI";
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

Status PluginStream::resolve(PluginStream* out) {
  const cuda::Plugin& plugin = cuda::Plugin::instance();
  MOE_RETURN_IF_ERROR(plugin.expectAvailable("expert parallelism over NCCL"));
  // The plug-in is loaded already: RTLD_NOLOAD hands back its handle.
  void* handle = dlopen(plugin.path().c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return Status(Code::kEpTransport, "expert parallelism over NCCL: the CUDA plug-in is not loaded");
  using GetStream = int (*)(void**, char*, size_t);
  auto getStream = reinterpret_cast<GetStream>(dlsym(handle, "moe_cuda_get_stream"));
  std::string missing;
  ep::resolve(handle, "moe_cuda_event_create", &out->eventCreate, &missing);
  ep::resolve(handle, "moe_cuda_event_record", &out->eventRecord, &missing);
  ep::resolve(handle, "moe_cuda_event_query", &out->eventQuery, &missing);
  ep::resolve(handle, "moe_cuda_event_destroy", &out->eventDestroy, &missing);
  if (getStream == nullptr || !missing.empty()) {
    return Status(Code::kEpTransport, "expert parallelism over NCCL: the CUDA plug-in lacks its stream or event entry points");
  }
  char err[256] = {0};
  MOE_RETURN_IF_ERROR(cuda::fromPlugin(getStream(&out->stream, err, sizeof err), err, "expert parallelism over NCCL"));
  return Status::ok();
}

Status NcclTransport::create(std::shared_ptr<MpiTransport> mpi, std::shared_ptr<NcclTransport>* out) {
  std::string reason;
  const NcclLibrary* library = NcclLibrary::load(&reason);
  // Every rank learns whether every rank can use NCCL before any joins: a
  // rank without it must not leave the others in ncclCommInitRank.
  PluginStream stream;
  Status local = library ? PluginStream::resolve(&stream) : Status(Code::kEpTransport, reason);
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
  out->reset(new NcclTransport(std::move(mpi), library, comm, stream));
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

// Waits for the group on the stream: an event recorded behind it is polled
// with the MPI transport's deadline, and NCCL's asynchronous errors (a peer
// that failed) are checked on the way. Past the deadline the communicator is
// aborted, which also releases the kernels waiting for a dead peer.
Status NcclTransport::wait(const char* what) {
  char err[256] = {0};
  void* event = nullptr;
  MOE_RETURN_IF_ERROR(cuda::fromPlugin(stream_.eventCreate(&event, err, sizeof err), err, what));
  Status status = cuda::fromPlugin(stream_.eventRecord(event, err, sizeof err), err, what);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(mpi_->timeoutSeconds());
  while (status.isOk()) {
    const int state = stream_.eventQuery(event, err, sizeof err);
    if (state == MOE_CUDA_OK) break;
    if (state != MOE_CUDA_NOT_READY) {
      status = cuda::fromPlugin(state, err, what);
      break;
    }
    nccl::ncclResult_t async = nccl::ncclSuccess;
    library_->commGetAsyncError(comm_, &async);
    if (async != nccl::ncclSuccess && async != nccl::ncclInProgress) {
      status = check(async, what);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      broken_ = true;
      library_->commAbort(comm_);
      status = Status(Code::kEpTimeout, std::string("expert parallelism over NCCL: ") + what + " on rank " + std::to_string(rank()) +
                                            " did not complete within " + std::to_string(mpi_->timeoutSeconds()) + " s");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  stream_.eventDestroy(event, err, sizeof err);
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
        status = check(library_->send(src, sendBytes, nccl::ncclUint8, peer, comm_, stream_.stream), "ncclSend");
      }
      if (status.isOk() && recvBytes) {
        auto* dst = static_cast<uint8_t*>(x.recv) + static_cast<size_t>(x.recvOffsets[peer]) * x.rowBytes;
        status = check(library_->recv(dst, recvBytes, nccl::ncclUint8, peer, comm_, stream_.stream), "ncclRecv");
      }
    }
  }
  const Status ended = broken_ ? Status::ok() : check(library_->groupEnd(), "ncclGroupEnd");
  MOE_RETURN_IF_ERROR(status);
  MOE_RETURN_IF_ERROR(ended);
  return wait("the row exchange (ncclSend/ncclRecv)");
}

}  // namespace moe::ep
