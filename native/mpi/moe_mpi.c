/*
 * The MPI transport plug-in: expert parallelism's exchanges on the system's
 * MPI (Open MPI or MPICH), built with its mpicc by `npm run build:mpi` into
 * build-mpi/libmoe_mpi.so and dlopen()ed by the addon. It knows nothing of
 * MoE layers: it moves rows between ranks, with deadlines (moe_mpi_api.h).
 */
#define _GNU_SOURCE
#include "moe_mpi_api.h"

#include <dlfcn.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static MPI_Comm g_comm = MPI_COMM_NULL;
static int g_rank = -1, g_size = 0, g_thread_level = -1;
static int g_we_initialized = 0, g_finalized = 0, g_broken = 0;
static int g_yield = 0; /* more ranks on this host than cores: a spinning rank yields its core */
static char g_version[MPI_MAX_LIBRARY_VERSION_STRING];

static int fail(char* err, size_t len, int code, const char* fmt, ...) {
  if (err && len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* An MPI error code as text, and the communicator marked broken: after a
 * failed exchange the ranks no longer agree on where they are. */
static int mpi_fail(char* err, size_t len, int rc, const char* what) {
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(rc, text, &n) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", rc);
  g_broken = 1;
  return fail(err, len, MOE_MPI_ERR_TRANSPORT, "%s failed on rank %d: %s", what, g_rank, text);
}

static int check_ready(char* err, size_t len) {
  if (g_comm == MPI_COMM_NULL || g_finalized) return fail(err, len, MOE_MPI_ERR_STATE, "MPI is not initialized (call initExpertParallel first)");
  if (g_broken) return fail(err, len, MOE_MPI_ERR_BROKEN, "the communicator is unusable after an earlier exchange failed or timed out");
  return MOE_MPI_OK;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Polls the requests until all complete or the deadline passes. Spins with
 * MPI_Testall, which is what moves the data: Open MPI's nonblocking
 * collectives and its shared-memory transport progress a message fragment by
 * fragment only inside MPI calls, so a pause between polls stalls the
 * exchange. Only where this host's ranks outnumber its cores (g_yield) does
 * the spinning thread yield its core to the other ranks, every 64 polls:
 * elsewhere sched_yield() hands the core to whatever else is runnable, and on
 * a busy machine the rank got it back a scheduler tick later (4 ms at
 * HZ = 250), mid-exchange: a 3.4 MB exchange ran at 0.10-0.64x of a blocking
 * MPI_Alltoallv (which does not yield) in some runs. After SPIN_S of
 * waiting, which only a slow or dead peer causes, it sleeps 50 us between
 * polls instead of burning a core until the deadline. On a timeout the
 * requests stay outstanding: the communicator is marked broken (see
 * moe_mpi_api.h). */
#define SPIN_S 0.05
static int wait_all(MPI_Request* reqs, int n, double timeout_s, const char* what, char* err, size_t len) {
  const double start = now_s();
  const double deadline = start + timeout_s;
  for (long polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_fail(err, len, rc, what);
    if (done) return MOE_MPI_OK;
    if ((polls & 63) != 63) continue; /* the clock is read every 64 polls */
    const double t = now_s();
    if (t > deadline) {
      g_broken = 1;
      return fail(err, len, MOE_MPI_ERR_TIMEOUT,
                  "%s on rank %d did not complete within %.3g s: a peer rank died, hangs, or did not make the same call", what,
                  g_rank, timeout_s);
    }
    if (t - start > SPIN_S) {
      const struct timespec pause = {0, 50000};
      nanosleep(&pause, NULL);
    } else if (g_yield) {
      sched_yield();
    }
  }
}

static const char* library_version(void) {
  if (!g_version[0]) {
    int n = 0;
    MPI_Get_library_version(g_version, &n);
    char* eol = strchr(g_version, '\n');
    if (eol) *eol = 0;
  }
  return g_version;
}

/* Open MPI loads its own components with dlopen and expects libmpi's symbols
 * to be global; the addon loads this plug-in (and with it libmpi) with
 * RTLD_LOCAL. Re-opening libmpi RTLD_GLOBAL | RTLD_NOLOAD promotes it. */
static void promote_libmpi(void) {
  Dl_info info;
  if (dladdr((void*)&MPI_Init_thread, &info) && info.dli_fname) dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

static int init(int* rank, int* size, int* thread_level, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = MOE_MPI_OK;
  if (g_finalized) {
    code = fail(err, len, MOE_MPI_ERR_STATE, "MPI was finalized; it cannot be initialized again in this process");
    goto out;
  }
  if (g_comm == MPI_COMM_NULL) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      promote_libmpi();
      int provided = -1;
      const int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
      if (rc != MPI_SUCCESS) {
        code = fail(err, len, MOE_MPI_ERR_TRANSPORT, "MPI_Init_thread failed (error %d)", rc);
        goto out;
      }
      g_we_initialized = 1;
      g_thread_level = provided;
    } else {
      MPI_Query_thread(&g_thread_level);
    }
    if (g_thread_level < MPI_THREAD_SERIALIZED) {
      code = fail(err, len, MOE_MPI_ERR_STATE, "this MPI provides thread level %d; forwards on worker threads need MPI_THREAD_SERIALIZED (%d) or more",
                  g_thread_level, MPI_THREAD_SERIALIZED);
      goto out;
    }
    MPI_Comm comm;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &comm) != MPI_SUCCESS) {
      code = fail(err, len, MOE_MPI_ERR_TRANSPORT, "MPI_Comm_dup(MPI_COMM_WORLD) failed");
      goto out;
    }
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, &g_rank);
    MPI_Comm_size(comm, &g_size);
    /* This host's ranks against its cores (MOE_MPI_YIELD=0/1 overrides). */
    MPI_Comm host;
    int local = 1;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host) == MPI_SUCCESS) {
      MPI_Comm_size(host, &local);
      MPI_Comm_free(&host);
    }
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char* yield = getenv("MOE_MPI_YIELD");
    g_yield = yield && yield[0] ? atoi(yield) != 0 : cores > 0 && local > cores;
    g_comm = comm;
    library_version();
  }
  *rank = g_rank;
  *size = g_size;
  *thread_level = g_thread_level;
out:
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int finalize(char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = MOE_MPI_OK;
  if (g_comm != MPI_COMM_NULL && !g_finalized && !g_broken) {
    MPI_Comm_free(&g_comm);
    if (g_we_initialized && MPI_Finalize() != MPI_SUCCESS) code = fail(err, len, MOE_MPI_ERR_TRANSPORT, "MPI_Finalize failed");
    g_finalized = 1;
  }
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int broken(void) { return g_broken; }

static int alltoall(const void* send, void* recv, size_t bytes, double timeout_s, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  if (code == MOE_MPI_OK && bytes > INT_MAX) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoall: %zu bytes per rank is over MPI's int count", bytes);
  if (code == MOE_MPI_OK) {
    MPI_Request req;
    const int rc = MPI_Ialltoall(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, g_comm, &req);
    code = rc != MPI_SUCCESS ? mpi_fail(err, len, rc, "MPI_Ialltoall") : wait_all(&req, 1, timeout_s, "the counts exchange (MPI_Ialltoall)", err, len);
  }
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int allgather(const void* send, void* recv, size_t bytes, double timeout_s, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  if (code == MOE_MPI_OK && bytes > INT_MAX) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "allgather: %zu bytes per rank is over MPI's int count", bytes);
  if (code == MOE_MPI_OK) {
    MPI_Request req;
    const int rc = MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, g_comm, &req);
    code = rc != MPI_SUCCESS ? mpi_fail(err, len, rc, "MPI_Iallgather") : wait_all(&req, 1, timeout_s, "MPI_Iallgather", err, len);
  }
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int bcast(void* buffer, size_t bytes, int root, double timeout_s, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  if (code == MOE_MPI_OK && (bytes > INT_MAX || root < 0 || root >= g_size)) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "bcast: bad size or root");
  if (code == MOE_MPI_OK) {
    MPI_Request req;
    const int rc = MPI_Ibcast(buffer, (int)bytes, MPI_BYTE, root, g_comm, &req);
    code = rc != MPI_SUCCESS ? mpi_fail(err, len, rc, "MPI_Ibcast") : wait_all(&req, 1, timeout_s, "MPI_Ibcast", err, len);
  }
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int barrier(double timeout_s, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  if (code == MOE_MPI_OK) {
    MPI_Request req;
    const int rc = MPI_Ibarrier(g_comm, &req);
    code = rc != MPI_SUCCESS ? mpi_fail(err, len, rc, "MPI_Ibarrier") : wait_all(&req, 1, timeout_s, "MPI_Ibarrier", err, len);
  }
  pthread_mutex_unlock(&g_lock);
  return code;
}

/* One exchange's counts and displacements: in bytes with MPI_BYTE when every
 * one fits MPI's int (no datatype to build per call), else in rows of a
 * contiguous row datatype. */
typedef struct {
  MPI_Datatype row;
  int own_type; /* row was made here and must be freed */
  int *send_counts, *send_displs, *recv_counts, *recv_displs;
} prepared_exchange;

static int to_int(int64_t v, int* out) {
  if (v < 0 || v > INT_MAX) return 0;
  *out = (int)v;
  return 1;
}

static int prepare(const moe_mpi_exchange* x, int* ints, prepared_exchange* p, char* err, size_t len) {
  p->send_counts = ints;
  p->send_displs = ints + g_size;
  p->recv_counts = ints + 2 * g_size;
  p->recv_displs = ints + 3 * g_size;
  p->own_type = 0;
  if (x->row_bytes == 0 || x->row_bytes > INT_MAX) return fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: row size %zu out of range", x->row_bytes);
  const int64_t rb = (int64_t)x->row_bytes;
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t unit = pass == 0 ? rb : 1; /* pass 0: bytes; pass 1: rows */
    int fits = 1;
    for (int r = 0; r < g_size && fits; ++r) {
      if (x->send_rows[r] < 0 || x->send_offsets[r] < 0 || x->recv_rows[r] < 0 || x->recv_offsets[r] < 0) {
        return fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: a negative row count or offset for rank %d", r);
      }
      fits = x->send_rows[r] <= INT_MAX / unit && x->send_offsets[r] <= INT_MAX / unit && x->recv_rows[r] <= INT_MAX / unit &&
             x->recv_offsets[r] <= INT_MAX / unit && to_int(x->send_rows[r] * unit, &p->send_counts[r]) &&
             to_int(x->send_offsets[r] * unit, &p->send_displs[r]) && to_int(x->recv_rows[r] * unit, &p->recv_counts[r]) &&
             to_int(x->recv_offsets[r] * unit, &p->recv_displs[r]);
    }
    if (!fits) continue;
    if (pass == 0) {
      p->row = MPI_BYTE;
      return MOE_MPI_OK;
    }
    if (MPI_Type_contiguous((int)x->row_bytes, MPI_BYTE, &p->row) != MPI_SUCCESS || MPI_Type_commit(&p->row) != MPI_SUCCESS) {
      return fail(err, len, MOE_MPI_ERR_TRANSPORT, "alltoallv: cannot make a %zu-byte row datatype", x->row_bytes);
    }
    p->own_type = 1;
    return MOE_MPI_OK;
  }
  return fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: a row count or offset is over MPI's int range");
}

#define MAX_EXCHANGES 8

/* Posts one exchange as point-to-point messages (tag: the exchange's index
 * in the call): a receive from every peer with rows for this rank, then a
 * send to every peer it has rows for, peers in a ring order starting next to
 * this rank so that the ranks do not all send to rank 0 first; its rows to
 * itself are copied here. The same bytes as MPI_Ialltoallv, without its
 * nonblocking-collective schedule (built per call) and without a message to
 * itself: 0.96-0.97x of MPI_Alltoallv with it, 0.98-1.03x without (2 ranks,
 * bench ep). Appends the requests to reqs[*n]. */
static int post_exchange(const moe_mpi_exchange* x, const prepared_exchange* p, int tag, MPI_Request* reqs, int* n, char* err, size_t len) {
  int unit = 0; /* bytes per count: 1 (MPI_BYTE) or a row */
  MPI_Type_size(p->row, &unit);
  if (p->send_counts[g_rank] != p->recv_counts[g_rank]) {
    return fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: rank %d sends itself %d and expects %d", g_rank, p->send_counts[g_rank],
                p->recv_counts[g_rank]);
  }
  for (int k = 1; k < g_size; ++k) {
    const int r = (g_rank + g_size - k) % g_size;
    if (p->recv_counts[r] == 0) continue;
    const int rc = MPI_Irecv((char*)x->recv + (size_t)p->recv_displs[r] * (size_t)unit, p->recv_counts[r], p->row, r, tag, g_comm, &reqs[(*n)++]);
    if (rc != MPI_SUCCESS) return mpi_fail(err, len, rc, "MPI_Irecv");
  }
  for (int k = 1; k < g_size; ++k) {
    const int r = (g_rank + k) % g_size;
    if (p->send_counts[r] == 0) continue;
    const int rc = MPI_Isend((const char*)x->send + (size_t)p->send_displs[r] * (size_t)unit, p->send_counts[r], p->row, r, tag, g_comm,
                             &reqs[(*n)++]);
    if (rc != MPI_SUCCESS) return mpi_fail(err, len, rc, "MPI_Isend");
  }
  memcpy((char*)x->recv + (size_t)p->recv_displs[g_rank] * (size_t)unit, (const char*)x->send + (size_t)p->send_displs[g_rank] * (size_t)unit,
         (size_t)p->send_counts[g_rank] * (size_t)unit);
  return MOE_MPI_OK;
}

static int alltoallv(const moe_mpi_exchange* exchanges, int count, double timeout_s, char* err, size_t len) {
  if (count < 1 || count > MAX_EXCHANGES) return fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: %d exchanges (1..%d)", count, MAX_EXCHANGES);
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  int* ints = code == MOE_MPI_OK ? (int*)malloc(sizeof(int) * 4 * (size_t)g_size * (size_t)count) : NULL;
  if (code == MOE_MPI_OK && !ints) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: out of memory");
  prepared_exchange p[MAX_EXCHANGES];
  MPI_Request* reqs = code == MOE_MPI_OK ? (MPI_Request*)malloc(sizeof(MPI_Request) * 2 * (size_t)g_size * (size_t)count) : NULL;
  if (code == MOE_MPI_OK && !reqs) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: out of memory");
  int prepared = 0, posted = 0;
  for (; code == MOE_MPI_OK && prepared < count; ++prepared) {
    code = prepare(&exchanges[prepared], ints + 4 * (size_t)g_size * (size_t)prepared, &p[prepared], err, len);
    if (code != MOE_MPI_OK) break;
  }
  int n = 0;
  for (; code == MOE_MPI_OK && posted < count; ++posted) code = post_exchange(&exchanges[posted], &p[posted], posted, reqs, &n, err, len);
  if (code == MOE_MPI_OK) code = wait_all(reqs, n, timeout_s, "the row exchange (MPI_Isend/MPI_Irecv)", err, len);
  /* Datatypes may be freed while requests that use them are pending (MPI 3.1, 2.5.3). */
  for (int i = 0; i < prepared && i < count; ++i) {
    if (p[i].own_type) MPI_Type_free(&p[i].row);
  }
  if (code == MOE_MPI_OK || code == MOE_MPI_ERR_ARGUMENT) free(ints); /* else MPI may still read the counts: kept */
  free(reqs); /* (pending requests after a timeout live on in MPI, not in this array) */
  pthread_mutex_unlock(&g_lock);
  return code;
}

static int alltoallv_blocking(const moe_mpi_exchange* x, char* err, size_t len) {
  pthread_mutex_lock(&g_lock);
  int code = check_ready(err, len);
  int* ints = code == MOE_MPI_OK ? (int*)malloc(sizeof(int) * 4 * (size_t)g_size) : NULL;
  prepared_exchange p;
  if (code == MOE_MPI_OK && !ints) code = fail(err, len, MOE_MPI_ERR_ARGUMENT, "alltoallv: out of memory");
  if (code == MOE_MPI_OK) code = prepare(x, ints, &p, err, len);
  if (code == MOE_MPI_OK) {
    const int rc = MPI_Alltoallv(x->send, p.send_counts, p.send_displs, p.row, x->recv, p.recv_counts, p.recv_displs, p.row, g_comm);
    if (p.own_type) MPI_Type_free(&p.row);
    if (rc != MPI_SUCCESS) code = mpi_fail(err, len, rc, "MPI_Alltoallv");
  }
  free(ints);
  pthread_mutex_unlock(&g_lock);
  return code;
}

static double wtime(void) { return MPI_Wtime(); }

static const moe_mpi_api g_api = {
    MOE_MPI_ABI_VERSION, sizeof(moe_mpi_api), library_version, init, finalize, broken, alltoall, alltoallv, allgather, bcast, barrier,
    alltoallv_blocking, wtime,
};

__attribute__((visibility("default"))) const moe_mpi_api* moe_mpi_get_api(uint32_t abi_version) {
  return abi_version == MOE_MPI_ABI_VERSION ? &g_api : NULL;
}
