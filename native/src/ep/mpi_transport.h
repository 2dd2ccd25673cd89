// The MPI transport plug-in (libmoe_mpi.so, native/mpi/), loaded with
// dlopen() at run time like the CUDA plug-in: the addon never links MPI. The
// plug-in's C table is seen here only; the layer forward sees a Transport.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/transport.h"
#include "ep/fault_injection.h"
#include "moe_mpi_api.h"

namespace moe::ep {

class MpiPlugin {
 public:
  static MpiPlugin& instance();

  // Loads the first candidate that exists, once; a missing file, a load
  // error, a missing symbol or another ABI version becomes reason().
  void load(const std::vector<std::string>& candidates);
  bool available() const { return api_ != nullptr; }
  const std::string& reason() const { return reason_; }
  const std::string& path() const { return path_; }
  const moe_mpi_api* api() const { return api_; }

 private:
  std::mutex mutex_;
  bool loaded_ = false;
  std::string reason_ = "the MPI transport has not been looked for";
  std::string path_;
  const moe_mpi_api* api_ = nullptr;
};

// Turns a plug-in status and message into a Status (kEpTimeout, kEpTransport, ...).
Status fromMpi(int code, const char* message, const char* what);

// MPI_COMM_WORLD (a private duplicate) as a Transport. Every exchange waits at
// most timeoutSeconds.
class MpiTransport : public Transport {
 public:
  MpiTransport(const moe_mpi_api* api, int rank, int size, double timeoutSeconds)
      : api_(api), rank_(rank), size_(size), timeout_(timeoutSeconds), fault_(FaultInjection::fromEnvironment(rank)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status alltoall(const void* send, void* recv, size_t bytes) override;
  Status alltoallv(const RowExchange* exchanges, int count) override;
  Status allgather(const void* send, void* recv, size_t bytes) override;
  Status bcast(void* buffer, size_t bytes, int root);
  Status barrier();
  // The blocking MPI_Alltoallv of one exchange (the benchmark's ceiling).
  Status alltoallvBlocking(const RowExchange& exchange);
  double wtime() const { return api_->wtime(); }
  double timeoutSeconds() const { return timeout_; }
  void setTimeoutSeconds(double seconds) { timeout_ = seconds; }

 private:
  const moe_mpi_api* api_;
  int rank_, size_;
  double timeout_;
  FaultInjection fault_;  // a test's corruption of received bytes (MOE_EP_TEST_CORRUPT), else inert
};

// The process's one communicator, once initExpertParallel ran (else nullptr).
std::shared_ptr<MpiTransport> worldTransport();
// MPI_Init_thread (once) and the communicator; rank, size and MPI's thread level.
Status initWorld(double timeoutSeconds, int* rank, int* size, int* threadLevel);
Status finalizeWorld();

}  // namespace moe::ep
