/*
 * moe-kernels CUDA plug-in: the C ABI between the Node.js addon and
 * libmoe_cuda.so.
 *
 * The addon dlopen()s the plug-in, looks up its one exported symbol,
 * moe_cuda_get_api, asks it for the table of MOE_CUDA_ABI_VERSION (NULL from a
 * library of another version: refused), then calls the table's probe.
 * Below, each entry point is documented under its name (moe_cuda_probe is the
 * table's `probe`, and so on). Nothing crosses this boundary but C types: device pointers
 * as void*, sizes as int64_t/size_t, enums as int32_t. No function throws;
 * each returns a moe_cuda_status and, where it takes (err, err_len), writes a
 * NUL-terminated message there on failure.
 *
 * Execution model: the plug-in owns one CUDA stream (non-blocking) on one
 * device. Every allocation, copy and kernel is enqueued on it in call order,
 * so operations are ordered without any synchronization by the caller. To
 * learn that work has finished without blocking, enqueue a host callback
 * (moe_cuda_launch_host_callback) or record an event and poll it.
 *
 * Thread safety: every function may be called from any thread; they share the
 * one stream, so calls made concurrently from different threads are ordered
 * in whatever order they reach the stream.
 */
#ifndef MOE_CUDA_API_H_
#define MOE_CUDA_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MOE_CUDA_API __declspec(dllexport)
#else
#define MOE_CUDA_API __attribute__((visibility("default")))
#endif

/* Bumped on any incompatible change to a struct or signature below. */
#define MOE_CUDA_ABI_VERSION 4

/* Status codes. The values of 1..7 equal moe::Code in native/src/core/status.h
 * (and so map 1:1 onto the package's MoeError codes). */
typedef enum moe_cuda_status {
  MOE_CUDA_OK = 0,
  MOE_CUDA_ERR_SHAPE = 1,       /* ERR_MOE_SHAPE: wrong rank or extent */
  MOE_CUDA_ERR_DTYPE = 2,       /* ERR_MOE_DTYPE: wrong element type */
  MOE_CUDA_ERR_RANGE = 3,       /* ERR_MOE_RANGE: a size or option out of range */
  MOE_CUDA_ERR_NONFINITE = 4,   /* ERR_MOE_NONFINITE: NaN or +-inf input. Never returned by a
                                 * function (detecting it needs a sync): moe_cuda_quantize writes
                                 * a device flag, and the caller maps flag != 0 to this code. */
  MOE_CUDA_ERR_UNSUPPORTED = 6, /* ERR_MOE_UNSUPPORTED: no usable device / kernel */
  MOE_CUDA_ERR_INTERNAL = 7,    /* ERR_MOE_INTERNAL: a CUDA error or allocation failure */
  MOE_CUDA_NOT_READY = 100      /* moe_cuda_event_elapsed_ms: work still pending (not an error) */
} moe_cuda_status;

typedef enum moe_cuda_dtype {
  MOE_CUDA_DTYPE_F32 = 0,
  MOE_CUDA_DTYPE_BF16 = 1,
  MOE_CUDA_DTYPE_FP8_E4M3 = 2, /* OCP E4M3FN */
  MOE_CUDA_DTYPE_I32 = 3
} moe_cuda_dtype;

/* How a quantization scale is stored (both as f32 values). */
typedef enum moe_cuda_scale_format {
  MOE_CUDA_SCALE_F32 = 0,   /* s = max(amax, 1e-4) / 448 */
  MOE_CUDA_SCALE_UE8M0 = 1  /* 2^ceil(log2 s): a power of two, stored as f32 */
} moe_cuda_scale_format;

/* Which FP8 GEMM implementation the device can run. */
typedef enum moe_cuda_path {
  MOE_CUDA_PATH_NONE = 0,   /* not usable */
  MOE_CUDA_PATH_SIMT = 1,   /* plain CUDA-core kernels (sm_80 and newer) */
  MOE_CUDA_PATH_HOPPER = 2  /* sm_90a: TMA + wgmma kernels, SIMT as fallback */
} moe_cuda_path;

/* Kernel selection for the GEMM ops (tests force one; AUTO for normal use). */
typedef enum moe_cuda_kernel {
  MOE_CUDA_KERNEL_AUTO = 0,   /* MOE_CUDA_GEMM_KERNEL's choice if set; else Hopper when the device and the shapes allow, else SIMT */
  MOE_CUDA_KERNEL_SIMT = 1,
  MOE_CUDA_KERNEL_HOPPER = 2  /* fails with MOE_CUDA_ERR_UNSUPPORTED where it cannot run */
} moe_cuda_kernel;

typedef struct moe_cuda_device_info {
  int32_t device;          /* CUDA device ordinal */
  int32_t sm_major;        /* compute capability */
  int32_t sm_minor;
  int32_t sm_count;        /* streaming multiprocessors */
  int32_t path;            /* moe_cuda_path */
  int32_t driver_version;  /* e.g. 13000 for CUDA 13.0 */
  int32_t runtime_version; /* the static runtime the plug-in was built with */
  int32_t reserved;
  uint64_t total_memory;   /* bytes */
  char name[256];          /* the device's marketing name */
} moe_cuda_device_info;

/* Finds and initializes the device (ordinal from the environment variable
 * MOE_CUDA_DEVICE, default 0): creates the plug-in's stream and memory pool.
 * Idempotent. Returns MOE_CUDA_OK when the device is usable and fills `info`
 * (may be NULL); `reason` then says which path runs, e.g.
 *   "usable (Hopper): NVIDIA H100 80GB HBM3, sm_90"
 *   "usable (SIMT only): GPU is sm_80; FP8 Hopper kernels need sm_90"
 * Otherwise returns MOE_CUDA_ERR_UNSUPPORTED (or _INTERNAL) with a reason such
 * as "no NVIDIA driver", "no CUDA device", "NVIDIA driver too old: ...",
 * "GPU is sm_75; the CUDA backend needs sm_80 or newer". */

/* ---- stream-ordered memory ------------------------------------------------
 * Allocations come from a dedicated memory pool (cudaMallocFromPoolAsync)
 * whose release threshold keeps freed memory cached for reuse. A pointer is
 * usable by work enqueued after moe_cuda_alloc returns; moe_cuda_free
 * returns it to the pool once prior work on the stream is done. */

/* Releases cached pool memory above `keep_bytes` back to the driver. */

/* Asynchronous copies and fills on the plug-in stream. Host memory must stay
 * valid until the copy has completed (moe_cuda_synchronize, an event or a host
 * callback). Pageable host memory makes the CUDA driver stage the copy, so
 * d2h into pageable memory returns only once the data has arrived; pin the
 * buffer with moe_cuda_host_register for fully asynchronous copies. */

/* ---- completion ----------------------------------------------------------- */
/* Blocks until all work enqueued so far has finished; reports asynchronous
 * kernel errors (e.g. an illegal address) that happened since the last call. */

/* Enqueues fn(user) to run on a CUDA-internal host thread once all work
 * enqueued before it has finished, or once the device has failed: it runs
 * even after a kernel fault (cudaStreamAddCallback, not cudaLaunchHostFunc,
 * which would never call it and leave the caller waiting for good). fn must
 * not call any moe_cuda_* or CUDA function; it should only signal the caller
 * (e.g. a uv_async_t / napi_threadsafe_function), which then learns the
 * outcome from moe_cuda_poll_error. Not for use during graph capture. */

/* Never blocks: reports an asynchronous error (a kernel fault, a trap) that
 * has happened on the device so far, or MOE_CUDA_OK while all is well,
 * whether or not enqueued work is still running. */

/* Events, for timing: moe_cuda_event_create_timed makes one that
 * moe_cuda_event_elapsed_ms can measure; moe_cuda_event_record records it on
 * the stream. */
typedef struct moe_cuda_event_s* moe_cuda_event;

/* ---- benchmarking ------------------------------------------------------------
 * GPU time between two recorded timed events, in milliseconds (resolution
 * about 0.5 us): record `start`, enqueue the work, record `end`, then call
 * this (it does not wait: MOE_CUDA_NOT_READY while either event's work is
 * still pending; wait with moe_cuda_synchronize first).
 * MOE_CUDA_ERR_RANGE if an event has never been recorded. */

/* Enqueues a write of a device buffer twice the size of the device's L2 cache
 * (allocated on the first call and kept), so that the next kernel starts with
 * a cold L2, as in a real layer. Stream-ordered; put it before the `start`
 * event, not between the events. */

/* The plug-in's cudaStream_t, for callers that link CUDA themselves. */

/* The plug-in's cudaStream_t (as void*), for callers that link CUDA
 * themselves (the NCCL transport enqueues its collectives on it). */

/* ---- FP8 GEMMs --------------------------------------------------------------
 * All pointers are device pointers; every tensor is dense row-major.
 *   D[m, n] = sum_g sa[m, g] * sb[n / 128, g] * sum_{k in g} A[m, k] * B[n, k]
 * with g running over the ceil(K/128) groups of 128 columns of K, fp32
 * accumulation, D in bf16 (round to nearest even) or f32. K must be a
 * multiple of 16. The Hopper kernels additionally need K % 128 == 0, N % 8 == 0
 * and 16-byte aligned A, B, D; with MOE_CUDA_KERNEL_AUTO other shapes run the
 * SIMT kernels. */
typedef struct moe_cuda_gemm_args {
  const void* a;      /* [M, K] fp8 e4m3, K-major */
  const float* sa;    /* [M, ceil(K/128)] f32 */
  const void* b;      /* [N, K] fp8 e4m3, K-major */
  const float* sb;    /* [ceil(N/128), ceil(K/128)] f32 */
  void* d;            /* [M, N] bf16 or f32 */
  int64_t m, n, k;
  int32_t a_dtype;     /* MOE_CUDA_DTYPE_FP8_E4M3 */
  int32_t b_dtype;     /* MOE_CUDA_DTYPE_FP8_E4M3 */
  int32_t scale_dtype; /* MOE_CUDA_DTYPE_F32 (ue8m0 scales are passed as f32 powers of two) */
  int32_t d_dtype;     /* MOE_CUDA_DTYPE_BF16 or MOE_CUDA_DTYPE_F32 */
  int32_t kernel;      /* moe_cuda_kernel */
  int32_t reserved;
} moe_cuda_gemm_args;

/* Contiguous grouped layout (MoE prefill): rows of one group are contiguous.
 * Row r uses B[group_index[r]]; group_index[r] == -1 (or any value outside
 * [0, G)) marks a padding row whose output is zero. `align`: the caller's
 * promise that every group's segment starts at a multiple of `align` rows
 * (the dispatch layout's alignment; 1 promises nothing). The Hopper kernel
 * takes the group of a whole 64/128-row block from its first row, so it runs
 * only where align is a multiple of its block (64 or 128 rows); any other
 * call runs the SIMT kernel, which honors every row (a forced
 * MOE_CUDA_KERNEL_HOPPER is refused with MOE_CUDA_ERR_UNSUPPORTED). */
typedef struct moe_cuda_grouped_gemm_args {
  const void* a;              /* [R, K] fp8 e4m3 */
  const float* sa;            /* [R, ceil(K/128)] f32 */
  const void* b;              /* [G, N, K] fp8 e4m3 */
  const float* sb;            /* [G, ceil(N/128), ceil(K/128)] f32 */
  const int32_t* group_index; /* [R] int32 */
  void* d;                    /* [R, N] bf16 or f32 */
  int64_t r, n, k, g;
  int32_t a_dtype, b_dtype, scale_dtype, d_dtype;
  int32_t kernel;
  int32_t align;              /* >= 1: segments start at multiples of it */
} moe_cuda_grouped_gemm_args;

/* Masked grouped layout (decode; a fixed launch, CUDA-graph capturable):
 * group g computes rows [0, masked_m[g]) of A[g]; rows at or past masked_m[g]
 * (clamped to [0, Mmax]) are not computed and their output is zero. */
typedef struct moe_cuda_masked_gemm_args {
  const void* a;           /* [G, Mmax, K] fp8 e4m3 */
  const float* sa;         /* [G, Mmax, ceil(K/128)] f32 */
  const void* b;           /* [G, N, K] fp8 e4m3 */
  const float* sb;         /* [G, ceil(N/128), ceil(K/128)] f32 */
  const int32_t* masked_m; /* [G] int32, device memory */
  void* d;                 /* [G, Mmax, N] bf16 or f32 */
  int64_t g, m_max, n, k;
  int64_t expected_m;      /* typical rows per group (tile-size hint); 0 = unknown */
  int32_t a_dtype, b_dtype, scale_dtype, d_dtype;
  int32_t kernel;
  int32_t reserved;
} moe_cuda_masked_gemm_args;

/* ---- FP8 quantization (SPEC.md "Quantization") -------------------------------
 * Bit for bit the CPU backend's results (cpu/quantize.cpp). For every group
 * of block_rows x 128 elements (rows r0.., columns 128g..; the last row block
 * and column group may be smaller):
 *   amax = max |x| over the group (NaN skipped), s = max(amax, 1e-4) / 448 in
 *   f32 (IEEE division), for ue8m0 then s = 2^ceil(log2 s);
 *   q = fp8_e4m3(x / s): round to nearest even, saturate to +-448, NaN -> 0x7F.
 * block_rows = 1: per-token activations, scales [rows, ceil(cols/128)];
 * block_rows = 128: weights, scales [ceil(rows/128), ceil(cols/128)]
 * (DeepSeek-V3's weight_scale_inv).
 * Non-finite input: q and scales are still written (as the CPU backend writes
 * them), and if nonfinite_flag is not NULL the op first sets *nonfinite_flag
 * to 0 and then to 1 if x holds a NaN or +-inf. Read the flag after the op has
 * completed (moe_cuda_copy_d2h + moe_cuda_synchronize, or an event) and treat
 * 1 as MOE_CUDA_ERR_NONFINITE ("x contains NaN or infinity"). */
typedef struct moe_cuda_quantize_args {
  const void* x;           /* [rows, cols] f32 or bf16 */
  void* q;                 /* [rows, cols] fp8 e4m3 (output) */
  float* scales;           /* [ceil(rows/block_rows), ceil(cols/128)] f32 (output) */
  int32_t* nonfinite_flag; /* optional (NULL): device int32, 4-byte aligned */
  int64_t rows;            /* >= 0 (0: nothing to do) */
  int64_t cols;            /* K: a positive multiple of 16 */
  int64_t block_rows;      /* 1 or 128 */
  int32_t x_dtype;         /* MOE_CUDA_DTYPE_F32 or MOE_CUDA_DTYPE_BF16 */
  int32_t q_dtype;         /* MOE_CUDA_DTYPE_FP8_E4M3 */
  int32_t scale_dtype;     /* MOE_CUDA_DTYPE_F32 */
  int32_t scale_format;    /* moe_cuda_scale_format */
} moe_cuda_quantize_args;

/* out = decode(q) * s in f32 (s the scale of the element's group), stored as
 * f32 or bf16 (round to nearest even); bit for bit the CPU backend's
 * dequantize, NaN codes included. */
typedef struct moe_cuda_dequantize_args {
  const void* q;       /* [rows, cols] fp8 e4m3 */
  const float* scales; /* [ceil(rows/block_rows), ceil(cols/128)] f32 */
  void* out;           /* [rows, cols] f32 or bf16 (output) */
  int64_t rows;        /* >= 0 */
  int64_t cols;        /* >= 0 (0 rows or columns: nothing to do) */
  int64_t block_rows;  /* 1 or 128 */
  int32_t q_dtype;     /* MOE_CUDA_DTYPE_FP8_E4M3 */
  int32_t scale_dtype; /* MOE_CUDA_DTYPE_F32 */
  int32_t out_dtype;   /* MOE_CUDA_DTYPE_F32 or MOE_CUDA_DTYPE_BF16 */
  int32_t reserved;
} moe_cuda_dequantize_args;

/* Shape, dtype and range errors are checked on the host before anything is
 * enqueued: MOE_CUDA_ERR_SHAPE (extents), _DTYPE, _RANGE (block_rows,
 * scale_format, an extent >= 2^31, a misaligned pointer), _INTERNAL (a null
 * device pointer). */

/* ---- the MoE layer's operations (SPEC.md "Routing", "Dispatch layout,
 * dispatch, combine") ----------------------------------------------------------
 * Device pointers, dense row-major tensors; shapes, dtypes and options are
 * checked on the host before anything is enqueued (the same conditions and
 * codes as the CPU backend's checks). What needs the data (an id out of
 * range, a NaN) cannot be known without waiting for the GPU, so these calls
 * never return it: each takes an optional device int32 `error_flag` (4-byte
 * aligned) into which its kernels OR the MOE_CUDA_FLAG_* bits below. The
 * caller zeroes the flag (moe_cuda_memset) and reads it back once the work
 * has completed; several ops may share one word or use one word each. The
 * kernels never touch memory out of bounds on such data: an out-of-range
 * index is skipped (its slot or row is treated as padding). Unlike the CPU
 * backend, outputs are written even when a flag is raised. */
#define MOE_CUDA_FLAG_BAD_INDEX 1      /* an id / rowToken / slotRow out of range: ERR_MOE_RANGE */
#define MOE_CUDA_FLAG_NONFINITE 2      /* NaN or +-inf input (or an f32 overflow): ERR_MOE_NONFINITE */
#define MOE_CUDA_FLAG_OVER_CAPACITY 4  /* layout: more rows than rowToken holds: ERR_MOE_SHAPE */
#define MOE_CUDA_FLAG_OVER_MAX_ROWS 8  /* masked layout: an expert over max_rows: ERR_MOE_RANGE */
#define MOE_CUDA_FLAG_OVER_I32 16      /* layout: more than 2^31 - 1 rows: ERR_MOE_RANGE */

/* logits = x * w^T in f32 (f32 accumulation; not bitwise the CPU's order). */
typedef struct moe_cuda_router_logits_args {
  const void* x;    /* [T, H] f32 or bf16 */
  const void* w;    /* [E, H] f32 or bf16 */
  float* logits;    /* [T, E] f32 (output) */
  int64_t tokens, hidden, experts;
  int32_t x_dtype, w_dtype;
} moe_cuda_router_logits_args;

/* Fused routing, one warp per token: ids exactly the CPU backend's; sigmoid
 * weights bit for bit, softmax weights within 1e-5 (device expf). Flag:
 * NONFINITE when bias holds NaN or +-inf. */
typedef struct moe_cuda_route_args {
  const void* logits;   /* [T, E] f32 or bf16 */
  const float* bias;    /* [E] f32 or NULL (sigmoid only; selection only) */
  int32_t* ids;         /* [T, k] i32 (output) */
  float* weights;       /* [T, k] f32 (output) */
  int32_t* error_flag;  /* optional */
  int64_t tokens, experts, top_k, num_groups, top_k_groups;
  int32_t logits_dtype;
  int32_t sigmoid;      /* 0: softmax, 1: sigmoid */
  int32_t renormalize;  /* 0 or 1 */
  float scale;
} moe_cuda_route_args;

/* Contiguous (masked = 0; segments aligned to `align`) or masked (segments of
 * max_rows) layout, rows in token then slot order, deterministic. Rows past
 * offsets[E] up to `capacity` get -1. No host synchronization: offsets[E]
 * (the row count) stays on the device. Flags: BAD_INDEX, OVER_CAPACITY,
 * OVER_MAX_ROWS, OVER_I32. */
typedef struct moe_cuda_layout_args {
  const int32_t* ids;          /* [T, k] i32 in [-1, E) */
  int32_t* tokens_per_expert;  /* [E] i32 (output) */
  int32_t* offsets;            /* [E + 1] i32 (output) */
  int32_t* row_token;          /* [capacity] i32 (output) */
  int32_t* group_index;        /* [capacity] i32 (output) */
  int32_t* slot_row;           /* [T, k] i32 (output) */
  int32_t* error_flag;         /* optional */
  int64_t tokens, slots, experts, capacity;
  int64_t align;               /* contiguous: >= 1 */
  int64_t max_rows;            /* masked: rows per expert */
  int32_t masked;
  int32_t reserved;
} moe_cuda_layout_args;

/* out[r] = x[row_token[r]] (zero for -1), quantized 1x128 to fp8 when scales
 * is not NULL (bit for bit the CPU quantizer; H % 16 == 0; x and out 16-byte
 * aligned). Flags: BAD_INDEX, NONFINITE. */
typedef struct moe_cuda_dispatch_args {
  const void* x;            /* [T, H] f32 or bf16 */
  const int32_t* row_token; /* [R] i32 */
  void* out;                /* [R, H] x's dtype, or fp8 e4m3 */
  float* scales;            /* [R, ceil(H/128)] f32, or NULL */
  int32_t* error_flag;      /* optional */
  int64_t rows, tokens, hidden;
  int32_t x_dtype, out_dtype, scale_format, reserved;
} moe_cuda_dispatch_args;

/* out = silu(gate) * up (h = [gate | up]) with the CPU backend's exact
 * operations, optionally quantized 1x128 (I % 16 == 0, 16-byte aligned h and
 * out). Flag: NONFINITE. */
typedef struct moe_cuda_swiglu_args {
  const void* h;         /* [R, 2I] f32 or bf16 */
  void* out;             /* [R, I] f32, bf16 or fp8 e4m3 */
  float* scales;         /* [R, ceil(I/128)] f32 when out is fp8, else NULL */
  int32_t* error_flag;   /* optional */
  int64_t rows, inter;
  int32_t h_dtype, out_dtype, scale_format, reserved;
} moe_cuda_swiglu_args;

/* out[t] = sum_j w[t, j] * y[slot_row[t, j]] in slot order (product rounded,
 * then added: the CPU's bits) + shared[t]; no atomics. Flags: BAD_INDEX,
 * NONFINITE (a weight). */
typedef struct moe_cuda_combine_args {
  const void* y;            /* [R, H] f32 or bf16 */
  const int32_t* slot_row;  /* [T, k] i32 in [-1, R) */
  const float* weights;     /* [T, k] f32 */
  const void* shared;       /* [T, H] f32 or bf16, or NULL */
  void* out;                /* [T, H] f32 or bf16 */
  int32_t* error_flag;      /* optional */
  int64_t rows, tokens, slots, hidden;
  int32_t y_dtype, shared_dtype, out_dtype, reserved;
} moe_cuda_combine_args;

/* ---- CUDA graphs ---------------------------------------------------------------
 * moe_cuda_graph_begin_capture starts recording on a capture stream of the
 * calling thread's own (cudaStreamCaptureModeThreadLocal): the ops called
 * after it, on this thread, are recorded, not run, while other threads keep
 * enqueueing on the plug-in's stream untouched (and unrecorded). Nothing
 * recorded may synchronize or read back.
 * moe_cuda_graph_end_capture ends it and instantiates the graph (on failure
 * the capture is ended and discarded). moe_cuda_graph_launch enqueues one
 * replay on the stream: the same kernels with the same pointers and sizes. */
typedef struct moe_cuda_graph_s* moe_cuda_graph;

/* ---- the table ------------------------------------------------------------------
 * The plug-in exports ONE symbol, moe_cuda_get_api: the addon dlopen()s the
 * library, looks it up and asks for the table of the ABI it was built with.
 * NULL means the library speaks another ABI (rebuild it). Each member is the
 * entry point documented in the section above under its name. */
typedef struct moe_cuda_api {
  uint32_t abi_version; /* MOE_CUDA_ABI_VERSION */
  uint32_t size;        /* sizeof(moe_cuda_api) */
  int (*probe)(char* reason, size_t reason_len, moe_cuda_device_info* info);
  int (*alloc)(size_t bytes, void** ptr, char* err, size_t err_len);
  int (*free)(void* ptr, char* err, size_t err_len);
  int (*copy_h2d)(void* dst_device, const void* src_host, size_t bytes, char* err, size_t err_len);
  int (*copy_d2h)(void* dst_host, const void* src_device, size_t bytes, char* err, size_t err_len);
  int (*copy_d2d)(void* dst_device, const void* src_device, size_t bytes, char* err, size_t err_len);
  int (*memset)(void* dst_device, int value, size_t bytes, char* err, size_t err_len);
  int (*host_register)(void* host, size_t bytes, char* err, size_t err_len);
  int (*synchronize)(char* err, size_t err_len);
  int (*launch_host_callback)(void (*fn)(void* user), void* user, char* err, size_t err_len);
  int (*poll_error)(char* err, size_t err_len);
  int (*event_create_timed)(moe_cuda_event* event, char* err, size_t err_len);
  int (*event_record)(moe_cuda_event event, char* err, size_t err_len);
  int (*event_elapsed_ms)(moe_cuda_event start, moe_cuda_event end, float* ms, char* err, size_t err_len);
  int (*flush_l2)(char* err, size_t err_len);
  int (*get_stream)(void** stream, char* err, size_t err_len);
  int (*gemm_fp8)(const moe_cuda_gemm_args* args, char* err, size_t err_len);
  int (*grouped_gemm_fp8)(const moe_cuda_grouped_gemm_args* args, char* err, size_t err_len);
  int (*grouped_gemm_fp8_masked)(const moe_cuda_masked_gemm_args* args, char* err, size_t err_len);
  int (*quantize)(const moe_cuda_quantize_args* args, char* err, size_t err_len);
  int (*dequantize)(const moe_cuda_dequantize_args* args, char* err, size_t err_len);
  int (*router_logits)(const moe_cuda_router_logits_args* args, char* err, size_t err_len);
  int (*route)(const moe_cuda_route_args* args, char* err, size_t err_len);
  int (*dispatch_layout)(const moe_cuda_layout_args* args, char* err, size_t err_len);
  int (*dispatch)(const moe_cuda_dispatch_args* args, char* err, size_t err_len);
  int (*swiglu)(const moe_cuda_swiglu_args* args, char* err, size_t err_len);
  int (*combine)(const moe_cuda_combine_args* args, char* err, size_t err_len);
  int (*graph_begin_capture)(char* err, size_t err_len);
  int (*graph_end_capture)(moe_cuda_graph* graph, char* err, size_t err_len);
  int (*graph_launch)(moe_cuda_graph graph, char* err, size_t err_len);
  int (*graph_destroy)(moe_cuda_graph graph, char* err, size_t err_len);
} moe_cuda_api;

MOE_CUDA_API const moe_cuda_api* moe_cuda_get_api(uint32_t abi_version);
typedef const moe_cuda_api* (*moe_cuda_get_api_fn)(uint32_t abi_version);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOE_CUDA_API_H_ */
