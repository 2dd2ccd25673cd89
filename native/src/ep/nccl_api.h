// The few NCCL declarations expert parallelism uses, written here so that
// nothing needs nccl.h to build: libnccl.so.2 is dlopen()ed at run time
// (ep/nccl_transport.cpp). Values and layouts are NCCL's stable C ABI
// (nccl.h since 2.x: ncclUniqueId is 128 bytes, ncclUint8 is 1).
#pragma once

#include <cstddef>

namespace moe::ep::nccl {

typedef struct ncclComm* ncclComm_t;

constexpr size_t kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct ncclUniqueId {
  char internal[kUniqueIdBytes];
};
static_assert(sizeof(ncclUniqueId) == 128, "ncclUniqueId is 128 bytes in NCCL's ABI");

enum ncclResult_t {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
};

enum ncclDataType_t { ncclInt8 = 0, ncclUint8 = 1 };

using GetVersionFn = ncclResult_t (*)(int* version);
using GetUniqueIdFn = ncclResult_t (*)(ncclUniqueId* id);
using CommInitRankFn = ncclResult_t (*)(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
using CommDestroyFn = ncclResult_t (*)(ncclComm_t comm);
using CommAbortFn = ncclResult_t (*)(ncclComm_t comm);
using CommGetAsyncErrorFn = ncclResult_t (*)(ncclComm_t comm, ncclResult_t* asyncError);
using GetErrorStringFn = const char* (*)(ncclResult_t result);
using GroupFn = ncclResult_t (*)();
// cudaStream_t is a pointer to an opaque struct: passed as void*.
using SendFn = ncclResult_t (*)(const void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, void* stream);
using RecvFn = ncclResult_t (*)(void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, void* stream);

}  // namespace moe::ep::nccl
