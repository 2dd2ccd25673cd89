/*
 * A test double of libnccl.so.2 (test-only: never shipped, built by
 * scripts/ep/build-fake-nccl.sh into build-emu/libnccl.so.2 and selected with
 * MOE_NCCL_LIBRARY). It implements the entry points the addon's NCCL
 * transport (native/src/ep/nccl_transport.cpp) resolves, with NCCL's C ABI,
 * over MPI on host memory: under the CUDA plug-in's CPU emulation
 * (MOE_CUDA_PLUGIN=build-emu/libmoe_cuda.so) "device" memory is host memory,
 * so the layer's NCCL path runs end to end in CI without a GPU.
 *
 * As with NCCL, a group's transfers are ordered on the stream: ncclGroupEnd
 * enqueues them as a host callback on the emulated GPU's stream (the
 * emulator's launch_host_callback), so they read what the kernels before
 * them wrote and the work after them sees the received bytes. Without the
 * emulator they run in ncclGroupEnd. The callback posts MPI_Isend/MPI_Irecv
 * on a private duplicate of MPI_COMM_WORLD (NCCL's peers are MPI's ranks;
 * MPI keeps each pair's messages in order, as NCCL does) and polls them
 * until they complete or the communicator is aborted; a failure is the
 * communicator's asynchronous error (ncclCommGetAsyncError).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mpi.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe_cuda_api.h"

#define EXPORT __attribute__((visibility("default")))

typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7
} ncclResult_t;
typedef enum { ncclInt8 = 0, ncclUint8 = 1 } ncclDataType_t;
typedef struct { char internal[128]; } ncclUniqueId;

static const char kMagic[] = "moe-kernels fake NCCL (test-only)";

typedef struct ncclComm {
  MPI_Comm comm;
  int rank, size;
  atomic_int async_error; /* ncclResult_t */
  atomic_int aborted;
  atomic_int pending;     /* groups enqueued and not yet done */
} ncclComm;
typedef ncclComm* ncclComm_t;

typedef struct {
  void* buf;
  size_t bytes;
  int peer, send;
  ncclComm_t comm;
} op;

/* The open group (one per thread, as NCCL's). */
static __thread op* g_ops;
static __thread int g_count, g_capacity, g_depth;

EXPORT ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = 21903; /* reports itself as 2.19.3: new enough for ncclSend/ncclRecv */
  return ncclSuccess;
}

EXPORT const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "fake NCCL: an MPI transfer failed";
    case ncclInvalidArgument: return "fake NCCL: invalid argument";
    case ncclInvalidUsage: return "fake NCCL: invalid usage";
    case ncclRemoteError: return "fake NCCL: the communicator was aborted";
    default: return "fake NCCL: error";
  }
}

EXPORT ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return ncclInvalidArgument;
  memset(id, 0, sizeof *id);
  memcpy(id->internal, kMagic, sizeof kMagic);
  return ncclSuccess;
}

/* Collective: every rank calls it once, in the same order (MPI_Comm_dup). */
EXPORT ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!out || !initialized || memcmp(id.internal, kMagic, sizeof kMagic) != 0) return ncclInvalidUsage;
  int size = 0, me = -1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (nranks != size || rank != me) return ncclInvalidArgument;
  ncclComm_t c = calloc(1, sizeof *c);
  if (!c) return ncclSystemError;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) {
    free(c);
    return ncclSystemError;
  }
  MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
  c->rank = rank;
  c->size = size;
  *out = c;
  return ncclSuccess;
}

EXPORT ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  if (!comm || !error) return ncclInvalidArgument;
  *error = (ncclResult_t)atomic_load(&comm->async_error);
  return ncclSuccess;
}

/* Stops the transfers in flight (they return at their next poll); the
 * communicator itself is left allocated: a callback may still hold it. */
EXPORT ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  atomic_store(&comm->aborted, 1);
  if (atomic_load(&comm->async_error) == ncclSuccess) atomic_store(&comm->async_error, ncclRemoteError);
  return ncclSuccess;
}

EXPORT ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  int finalized = 0;
  MPI_Finalized(&finalized); /* (the addon may destroy it at exit, after MPI_Finalize) */
  if (atomic_load(&comm->pending) == 0 && !atomic_load(&comm->aborted)) {
    if (!finalized) MPI_Comm_free(&comm->comm);
    free(comm);
  }
  return ncclSuccess;
}

EXPORT ncclResult_t ncclGroupStart(void) {
  ++g_depth;
  return ncclSuccess;
}

static ncclResult_t add(void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, int send) {
  if (!comm || (type != ncclInt8 && type != ncclUint8) || peer < 0 || peer >= comm->size || count > INT32_MAX || (count && !buf)) {
    return ncclInvalidArgument;
  }
  if (atomic_load(&comm->aborted)) return ncclInvalidUsage;
  if (g_count == g_capacity) {
    const int capacity = g_capacity ? 2 * g_capacity : 16;
    op* grown = realloc(g_ops, sizeof(op) * (size_t)capacity);
    if (!grown) return ncclSystemError;
    g_ops = grown;
    g_capacity = capacity;
  }
  g_ops[g_count++] = (op){buf, count, peer, send, comm};
  return ncclSuccess;
}

typedef struct {
  int count;
  op ops[];
} group;

/* Runs a group's transfers to completion (or until its communicator is aborted). */
static void run_group(void* user) {
  group* g = user;
  MPI_Request* reqs = calloc((size_t)g->count, sizeof *reqs);
  ncclComm_t comm = g->count ? g->ops[0].comm : NULL;
  int failed = reqs == NULL && g->count > 0;
  for (int i = 0; i < g->count && !failed; ++i) {
    const op* o = &g->ops[i];
    const int rc = o->send ? MPI_Isend(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, o->comm->comm, &reqs[i])
                           : MPI_Irecv(o->buf, (int)o->bytes, MPI_BYTE, o->peer, 0, o->comm->comm, &reqs[i]);
    if (rc != MPI_SUCCESS) failed = 1;
  }
  for (int done = 0; !failed && !done;) {
    if (MPI_Testall(g->count, reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) failed = 1;
    if (!done && atomic_load(&comm->aborted)) break; /* requests left posted: the communicator is gone */
    if (!done) sched_yield();
  }
  if (failed && comm) atomic_store(&comm->async_error, ncclSystemError);
  if (comm) atomic_fetch_sub(&comm->pending, 1);
  free(reqs);
  free(g);
}

/* The emulated GPU's stream, when the CUDA plug-in's CPU emulation is loaded. */
static const moe_cuda_api* emulator(void) {
  const char* path = getenv("MOE_CUDA_PLUGIN");
  if (!path || !path[0]) return NULL;
  void* library = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (!library) return NULL;
  moe_cuda_get_api_fn get = (moe_cuda_get_api_fn)dlsym(library, "moe_cuda_get_api");
  return get ? get(MOE_CUDA_ABI_VERSION) : NULL;
}

EXPORT ncclResult_t ncclGroupEnd(void) {
  if (g_depth == 0) return ncclInvalidUsage;
  if (--g_depth > 0) return ncclSuccess;
  const int count = g_count;
  g_count = 0;
  if (count == 0) return ncclSuccess;
  ncclComm_t comm = g_ops[0].comm;
  for (int i = 1; i < count; ++i) {
    if (g_ops[i].comm != comm) return ncclInvalidUsage; /* one communicator per group, as used here */
  }
  group* g = malloc(sizeof *g + sizeof(op) * (size_t)count);
  if (!g) return ncclSystemError;
  g->count = count;
  memcpy(g->ops, g_ops, sizeof(op) * (size_t)count);
  atomic_fetch_add(&comm->pending, 1);
  const moe_cuda_api* gpu = emulator();
  char err[256];
  if (gpu && gpu->launch_host_callback(run_group, g, err, sizeof err) == MOE_CUDA_OK) return ncclSuccess;
  run_group(g);
  return (ncclResult_t)atomic_load(&comm->async_error);
}

static ncclResult_t single(ncclResult_t added) {
  if (added != ncclSuccess || g_depth > 0) return added;
  ++g_depth;
  return ncclGroupEnd();
}

EXPORT ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, void* stream) {
  (void)stream;
  return single(add((void*)buf, count, type, peer, comm, 1));
}

EXPORT ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, void* stream) {
  (void)stream;
  return single(add(buf, count, type, peer, comm, 0));
}
