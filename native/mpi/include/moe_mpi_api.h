/*
 * The C ABI of the MPI transport plug-in (libmoe_mpi.so). The addon dlopen()s
 * the plug-in at run time and asks it for this one table of functions, so the
 * addon itself never links MPI: a machine without MPI loads the package and
 * runs single-process, and backends() reports why the transport is absent.
 *
 * Every communicating call polls nonblocking MPI requests until they complete
 * or `timeout_s` seconds pass: a rank that died, hangs or skipped a step makes
 * the others fail with MOE_MPI_ERR_TIMEOUT instead of waiting forever. After a
 * timeout the requests are still outstanding (MPI cannot cancel a collective),
 * so the communicator is marked broken: every later call fails at once with
 * MOE_MPI_ERR_BROKEN, and the caller must keep the buffers of the abandoned
 * call alive (MPI may still write into them).
 *
 * Errors: a status code and a message written into (err, err_len).
 */
#ifndef MOE_MPI_API_H
#define MOE_MPI_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_MPI_ABI_VERSION 1u

enum {
  MOE_MPI_OK = 0,
  MOE_MPI_ERR_TIMEOUT = 1,    /* the deadline passed before the exchange completed */
  MOE_MPI_ERR_TRANSPORT = 2,  /* MPI returned an error (a peer's connection failed, ...) */
  MOE_MPI_ERR_ARGUMENT = 3,   /* a count or size that does not fit MPI's int counts */
  MOE_MPI_ERR_BROKEN = 4,     /* an earlier call timed out or failed: the communicator is unusable */
  MOE_MPI_ERR_STATE = 5       /* not initialized, already finalized, or too little thread support */
};

/* One all-to-all-v over `rows` of `row_bytes` bytes each: this rank sends
 * send_rows[d] rows from send + send_offsets[d] * row_bytes to rank d and
 * receives recv_rows[s] rows from rank s at recv + recv_offsets[s] * row_bytes.
 * The four arrays have `size` entries. Several are posted together and
 * completed together (moe_mpi_api.alltoallv's `count`). */
typedef struct moe_mpi_exchange {
  const void* send;
  void* recv;
  size_t row_bytes;
  const int64_t* send_rows;
  const int64_t* send_offsets;
  const int64_t* recv_rows;
  const int64_t* recv_offsets;
} moe_mpi_exchange;

typedef struct moe_mpi_api {
  uint32_t abi_version;
  uint32_t struct_size; /* sizeof(moe_mpi_api) as the plug-in was built */

  /* MPI_Get_library_version's text (e.g. "Open MPI v4.1.4 ..."), first line. */
  const char* (*library_version)(void);

  /* MPI_Init_thread (asking for MPI_THREAD_MULTIPLE; at least
   * MPI_THREAD_SERIALIZED is required: forwards run on worker threads, one at
   * a time) unless MPI is already initialized, then a private duplicate of
   * MPI_COMM_WORLD with errors returned, not fatal. Idempotent. */
  int (*init)(int* rank, int* size, int* thread_level, char* err, size_t err_len);

  /* MPI_Finalize, unless the communicator is broken (finalize would wait for
   * the requests that never completed) or MPI was initialized by someone else. */
  int (*finalize)(char* err, size_t err_len);

  /* 1 when an earlier call timed out or failed. */
  int (*broken)(void);

  /* MPI_Alltoall of `bytes` per rank: send [size * bytes], recv [size * bytes]. */
  int (*alltoall)(const void* send, void* recv, size_t bytes, double timeout_s, char* err, size_t err_len);

  /* `count` all-to-all-v exchanges, posted together, completed together. */
  int (*alltoallv)(const moe_mpi_exchange* exchanges, int count, double timeout_s, char* err, size_t err_len);

  /* MPI_Allgather of `bytes` per rank: recv [size * bytes]. */
  int (*allgather)(const void* send, void* recv, size_t bytes, double timeout_s, char* err, size_t err_len);

  /* MPI_Bcast of `bytes` from `root`. */
  int (*bcast)(void* buffer, size_t bytes, int root, double timeout_s, char* err, size_t err_len);

  int (*barrier)(double timeout_s, char* err, size_t err_len);

  /* The blocking MPI_Alltoallv on the same arguments as one exchange: the
   * benchmark's ceiling for what the exchanges above move. */
  int (*alltoallv_blocking)(const moe_mpi_exchange* exchange, char* err, size_t err_len);

  double (*wtime)(void);
} moe_mpi_api;

/* The one exported symbol: the table, or NULL when the plug-in was built for
 * another ABI version than `abi_version`. */
const moe_mpi_api* moe_mpi_get_api(uint32_t abi_version);

#ifdef __cplusplus
}
#endif

#endif /* MOE_MPI_API_H */
