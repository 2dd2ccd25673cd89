// The communication side of expert parallelism: what the layer forward needs
// from a transport (MPI today, ep/mpi_transport.cpp), as plain C++ that knows
// nothing of the plug-in's ABI. Every exchange is collective: every rank of
// the communicator makes the same calls in the same order, and each call
// fails (kEpTimeout) rather than waits forever when a peer does not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "core/status.h"

namespace moe {

// One all-to-all-v of fixed-size rows: rank d gets sendRows[d] rows from
// send + sendOffsets[d] * rowBytes; rows from rank s land at recv +
// recvOffsets[s] * rowBytes. Arrays have size() entries.
struct RowExchange {
  const void* send = nullptr;
  void* recv = nullptr;
  size_t rowBytes = 0;
  const int64_t* sendRows = nullptr;
  const int64_t* sendOffsets = nullptr;
  const int64_t* recvRows = nullptr;
  const int64_t* recvOffsets = nullptr;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // send [size * bytes] -> recv [size * bytes]: block d goes to rank d.
  virtual Status alltoall(const void* send, void* recv, size_t bytes) = 0;
  // Several row exchanges posted together and completed together.
  virtual Status alltoallv(const RowExchange* exchanges, int count) = 0;
  // send [bytes] -> recv [size * bytes] in rank order.
  virtual Status allgather(const void* send, void* recv, size_t bytes) = 0;

  // Forwards on one transport run one at a time (their collectives must not
  // interleave) and are numbered: a record from another forward number means
  // the ranks are out of step.
  std::mutex serial;
  uint64_t forwards = 0;
};

}  // namespace moe
