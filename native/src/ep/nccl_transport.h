// Expert parallelism's exchanges between GPUs: NCCL, found at run time
// (dlopen("libnccl.so.2"); MOE_NCCL_LIBRARY overrides), its communicator's
// unique id broadcast over the MPI communicator. Row exchanges are grouped
// ncclSend/ncclRecv on the CUDA backend's queue over device buffers; the
// small host records (counts, agreements) still go over MPI. Like the MPI
// plug-in's, every exchange has a deadline: past it the NCCL communicator is
// aborted (ncclCommAbort) and the exchange fails with kEpTimeout.
#pragma once

#include <memory>
#include <string>

#include "core/backend.h"
#include "core/transport.h"
#include "ep/mpi_transport.h"
#include "ep/nccl_api.h"

namespace moe::ep {

struct NcclLibrary {
  nccl::GetVersionFn getVersion = nullptr;
  nccl::GetUniqueIdFn getUniqueId = nullptr;
  nccl::CommInitRankFn commInitRank = nullptr;
  nccl::CommDestroyFn commDestroy = nullptr;
  nccl::CommAbortFn commAbort = nullptr;
  nccl::CommGetAsyncErrorFn commGetAsyncError = nullptr;
  nccl::GetErrorStringFn getErrorString = nullptr;
  nccl::GroupFn groupStart = nullptr;
  nccl::GroupFn groupEnd = nullptr;
  nccl::SendFn send = nullptr;
  nccl::RecvFn recv = nullptr;
  int version = 0;

  // Loads libnccl.so.2 once; the reason when it cannot be used.
  static const NcclLibrary* load(std::string* reason);
};

class NcclTransport : public Transport {
 public:
  // Collective over the MPI communicator: rank 0 makes the unique id, MPI
  // broadcasts it, every rank joins (ncclCommInitRank).
  static Status create(std::shared_ptr<MpiTransport> mpi, std::shared_ptr<NcclTransport>* out);
  ~NcclTransport() override;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  // Host records: over MPI.
  Status alltoall(const void* send, void* recv, size_t bytes) override { return mpi_->alltoall(send, recv, bytes); }
  Status allgather(const void* send, void* recv, size_t bytes) override { return mpi_->allgather(send, recv, bytes); }
  // Device rows: ncclSend/ncclRecv to every peer with rows, in one group.
  Status alltoallv(const RowExchange* exchanges, int count) override;
  int ncclVersion() const { return library_->version; }

 private:
  NcclTransport(std::shared_ptr<MpiTransport> mpi, const NcclLibrary* library, nccl::ncclComm_t comm, Backend& device, void* stream)
      : mpi_(std::move(mpi)), library_(library), comm_(comm), device_(device), stream_(stream) {}
  Status check(nccl::ncclResult_t result, const char* what);
  Status wait(const char* what);

  std::shared_ptr<MpiTransport> mpi_;
  const NcclLibrary* library_;
  nccl::ncclComm_t comm_;
  Backend& device_;  // the GPU whose queue the exchanges run on
  void* stream_;     // its native queue (cudaStream_t)
  bool broken_ = false;
};

}  // namespace moe::ep
