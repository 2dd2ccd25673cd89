// The plug-in's C ABI (include/moe_cuda_api.h): device probing, the stream and
// memory pool, host-side argument checks, and the dispatch between the Hopper
// and SIMT kernels. No exceptions cross (or are thrown inside) this file.

#include "moe_cuda_api.h"

#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <mutex>
#include <new>

#include "common.h"
#include "gemm_problem.h"
#include "moe_ops.h"
#include "quantize.h"
#include "simt_fp8_gemm.h"
#include "sm90_fp8_gemm.h"
#include "sm90_layouts.h"
#include "tensor_map.h"

namespace moe_cuda {
namespace {

// ---------------------------------------------------------------------------
// Plug-in state: one device, one stream, one memory pool.
// ---------------------------------------------------------------------------
struct State {
  std::mutex mu;
  bool probed = false;
  int status = MOE_CUDA_ERR_UNSUPPORTED;
  char reason[512] = {0};
  moe_cuda_device_info info{};
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;  // null: the device has no memory pools; use cudaMalloc
  void* l2_flush = nullptr;      // moe_cuda_flush_l2's buffer (cudaMalloc, kept), guarded by mu
  size_t l2_flush_bytes = 0;
  int l2_flush_value = 0;
  int32_t gemm_kernel = MOE_CUDA_KERNEL_AUTO;  // what MOE_CUDA_KERNEL_AUTO means (MOE_CUDA_GEMM_KERNEL)
  uint64_t hang_trap_ns = 10'000'000'000ull;   // the Hopper GEMM's pipeline-wait limit (MOE_CUDA_HANG_TRAP_S)
  bool split_k = true;                          // dense Hopper GEMMs may split K (MOE_CUDA_SPLIT_K=0: never)
  float* split_workspace = nullptr;             // their partial slices (cudaMalloc, kept; see run_sm90_dense)
  size_t split_workspace_bytes = 0;
};

State& state() {
  static State s;  // never destroyed: CUDA may already be torn down at exit
  return s;
}

int set_reason(State& s, int status, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s.reason, sizeof(s.reason), fmt, ap);
  va_end(ap);
  s.status = status;
  return status;
}

// Runs the probe once; later calls return the cached verdict.
int probe_locked(State& s) {
  if (s.probed) return s.status;
  s.probed = true;
  moe_cuda_device_info& info = s.info;
  memset(&info, 0, sizeof(info));

  // MOE_CUDA_GEMM_KERNEL=simt|hopper forces one GEMM kernel wherever a call
  // asks for AUTO: the device check compares each with the CPU backend, and a
  // user can step around a kernel that misbehaves on their GPU. Parsed first
  // so that a typo is the reported reason on any machine.
  if (const char* env = getenv("MOE_CUDA_GEMM_KERNEL")) {
    if (strcmp(env, "auto") == 0) {
      s.gemm_kernel = MOE_CUDA_KERNEL_AUTO;
    } else if (strcmp(env, "simt") == 0) {
      s.gemm_kernel = MOE_CUDA_KERNEL_SIMT;
    } else if (strcmp(env, "hopper") == 0) {
      s.gemm_kernel = MOE_CUDA_KERNEL_HOPPER;
    } else {
      return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "MOE_CUDA_GEMM_KERNEL='%s' is not auto, simt or hopper", env);
    }
  }

  // MOE_CUDA_HANG_TRAP_S: seconds a Hopper GEMM pipeline wait may take before
  // the kernel traps instead of hanging (default 10; 0: wait forever, for
  // compute-sanitizer and debuggers, which slow kernels down enormously).
  if (const char* env = getenv("MOE_CUDA_HANG_TRAP_S")) {
    char* end = nullptr;
    const double seconds = strtod(env, &end);
    if (end == env || *end != '\0' || !(seconds >= 0.0 && seconds <= 1e6)) {
      return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "MOE_CUDA_HANG_TRAP_S='%s' is not a number of seconds in [0, 1e6]", env);
    }
    s.hang_trap_ns = static_cast<uint64_t>(seconds * 1e9);
  }

  // MOE_CUDA_SPLIT_K=0 keeps every dense Hopper GEMM in one pass over K
  // (for comparisons, and as a way around a fault in the split path).
  if (const char* env = getenv("MOE_CUDA_SPLIT_K")) {
    if (strcmp(env, "0") != 0 && strcmp(env, "1") != 0) {
      return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "MOE_CUDA_SPLIT_K='%s' is not 0 or 1", env);
    }
    s.split_k = strcmp(env, "1") == 0;
  }

  int driver = 0, runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  info.runtime_version = runtime;
  // With no libcuda.so.1 the runtime reports driver version 0.
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    (void)cudaGetLastError();
    return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "no NVIDIA driver");
  }
  info.driver_version = driver;

  int count = 0;
  const cudaError_t ce = cudaGetDeviceCount(&count);
  if (ce == cudaErrorNoDevice || (ce == cudaSuccess && count == 0)) {
    (void)cudaGetLastError();
    return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "no CUDA device");
  }
  if (ce == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED,
                      "NVIDIA driver too old: it supports CUDA %d.%d, the plug-in was built with CUDA %d.%d",
                      driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
  }
  if (ce != cudaSuccess) {
    (void)cudaGetLastError();
    return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "CUDA unavailable: %s", cudaGetErrorString(ce));
  }

  int device = 0;
  if (const char* env = getenv("MOE_CUDA_DEVICE")) {
    char* end = nullptr;
    const long v = strtol(env, &end, 10);
    if (end == env || *end != '\0' || v < 0 || v >= count) {
      return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "MOE_CUDA_DEVICE='%s' is not a device ordinal in [0, %d)", env,
                        count);
    }
    device = static_cast<int>(v);
  }
  s.device = device;
  info.device = device;

  cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) return set_reason(s, MOE_CUDA_ERR_INTERNAL, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  snprintf(info.name, sizeof(info.name), "%s", prop.name);

  if (prop.major < 8) {
    return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "GPU is sm_%d%d; the CUDA backend needs sm_80 or newer", prop.major,
                      prop.minor);
  }

  e = cudaSetDevice(device);
  if (e != cudaSuccess) return set_reason(s, MOE_CUDA_ERR_INTERNAL, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
  char why[256] = {0};
  if (!simt_fp8_gemm_image_available(why, sizeof(why))) return set_reason(s, MOE_CUDA_ERR_UNSUPPORTED, "%s", why);

  // Stream and memory pool.
  e = cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return set_reason(s, MOE_CUDA_ERR_INTERNAL, "cudaStreamCreate: %s", cudaGetErrorString(e));
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
  if (pools) {
    cudaMemPoolProps props;
    memset(&props, 0, sizeof(props));
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    e = cudaMemPoolCreate(&s.pool, &props);
    if (e != cudaSuccess) return set_reason(s, MOE_CUDA_ERR_INTERNAL, "cudaMemPoolCreate: %s", cudaGetErrorString(e));
    // Keep freed memory cached in the pool instead of returning it to the driver
    // at every synchronization (moe_cuda_trim releases it on request).
    uint64_t threshold = UINT64_MAX;
    e = cudaMemPoolSetAttribute(s.pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    if (e != cudaSuccess) return set_reason(s, MOE_CUDA_ERR_INTERNAL, "cudaMemPoolSetAttribute: %s", cudaGetErrorString(e));
  }

  // Which FP8 path: the sm_90a kernels run on compute capability 9.0 exactly
  // ('a' features are not forward compatible), and need the driver's TMA
  // descriptor encoder.
  if (prop.major == 9 && prop.minor == 0) {
    if (!sm90_fp8_gemm_image_available()) {
      info.path = MOE_CUDA_PATH_SIMT;
      return set_reason(s, MOE_CUDA_OK, "usable (SIMT only): the sm_90a kernel image does not load on this GPU");
    }
    if (!tensor_map_available(why, sizeof(why))) {
      info.path = MOE_CUDA_PATH_SIMT;
      return set_reason(s, MOE_CUDA_OK, "usable (SIMT only): %s", why);
    }
    // The split-K workspace: one buffer for every split GEMM, as they all run
    // in order on the one stream, and outside the pool so that a GEMM inside
    // a captured graph splits exactly as the same GEMM run directly. Its size
    // bounds every split problem: splits x tiles <= SMs (choose_k_splits) and
    // a tile covers at most 128 x 128 outputs, so splits x M x N <= SMs x
    // 128 x 128. Without it the GEMMs simply never split.
    if (s.split_k) {
      const size_t bytes = size_t(prop.multiProcessorCount) * 128 * 128 * sizeof(float);
      if (cudaMalloc(reinterpret_cast<void**>(&s.split_workspace), bytes) == cudaSuccess) {
        s.split_workspace_bytes = bytes;
      } else {
        (void)cudaGetLastError();
        s.split_workspace = nullptr;
      }
    }
    info.path = MOE_CUDA_PATH_HOPPER;
    return set_reason(s, MOE_CUDA_OK, "usable (Hopper): %s, sm_90", prop.name);
  }
  info.path = MOE_CUDA_PATH_SIMT;
  if (prop.major < 9) {
    return set_reason(s, MOE_CUDA_OK, "usable (SIMT only): GPU is sm_%d%d; FP8 Hopper kernels need sm_90", prop.major,
                      prop.minor);
  }
  return set_reason(s, MOE_CUDA_OK, "usable (SIMT only): GPU is sm_%d%d; the Hopper kernels are built for sm_90a only",
                    prop.major, prop.minor);
}

// Every entry point: the device must have probed usable; make it current on
// this thread (the runtime's current device is per host thread).
int ready(cudaStream_t* stream, char* err, size_t err_len) {
  State& s = state();
  int status;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    status = probe_locked(s);
  }
  if (status != MOE_CUDA_OK) return fail(status, err, err_len, "CUDA backend unavailable: %s", s.reason);
  MOE_CUDA_CHECK(cudaSetDevice(s.device));
  if (stream != nullptr) *stream = s.stream;
  return MOE_CUDA_OK;
}

// ---------------------------------------------------------------------------
// Argument checks shared by the three GEMMs
// ---------------------------------------------------------------------------
constexpr int64_t kMaxExtent = 0x7FFFFFFF;

int check_dtypes(const char* op, int32_t a, int32_t b, int32_t scale, int32_t d, char* err, size_t err_len) {
  if (a != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: A must be fp8_e4m3 (dtype %d)", op, a);
  if (b != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: B must be fp8_e4m3 (dtype %d)", op, b);
  if (scale != MOE_CUDA_DTYPE_F32) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d)", op, scale);
  if (d != MOE_CUDA_DTYPE_BF16 && d != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: the output must be bf16 or f32 (dtype %d)", op, d);
  }
  return MOE_CUDA_OK;
}

int check_extent(const char* op, const char* name, int64_t v, int64_t min, char* err, size_t err_len) {
  if (v < min) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: %s = %lld must be >= %lld", op, name, (long long)v, (long long)min);
  if (v > kMaxExtent) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: %s = %lld exceeds the CUDA backend's limit of 2^31 - 1", op, name,
                (long long)v);
  }
  return MOE_CUDA_OK;
}

int check_k(const char* op, int64_t k, char* err, size_t err_len) {
  const int rc = check_extent(op, "K", k, 16, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (k % 16 != 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: K = %lld must be a multiple of 16", op, (long long)k);
  return MOE_CUDA_OK;
}

int check_kernel_choice(const char* op, int32_t kernel, char* err, size_t err_len) {
  if (kernel != MOE_CUDA_KERNEL_AUTO && kernel != MOE_CUDA_KERNEL_SIMT && kernel != MOE_CUDA_KERNEL_HOPPER) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown kernel selection %d", op, kernel);
  }
  return MOE_CUDA_OK;
}

int null_pointer(const char* op, const char* name, char* err, size_t err_len) {
  return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "%s: %s is a null device pointer", op, name);
}

// The Hopper dense GEMM, split over K when its tiles would leave most SMs
// idle (sm90_layouts.h, choose_k_splits), into the plug-in's split workspace.
int run_sm90_dense(GemmProblem q, uint32_t block_m, cudaStream_t stream, char* err, size_t err_len) {
  const State& s = state();
  if (s.split_workspace != nullptr) {
    const uint64_t tiles = uint64_t((q.rows + block_m - 1) / block_m) * uint64_t((q.n + 127) / 128);
    const uint32_t splits = sm90::choose_k_splits(tiles, uint32_t(q.k / 128), uint32_t(s.info.sm_count));
    if (splits > 1 && uint64_t(splits) * uint64_t(q.rows) * uint64_t(q.n) * sizeof(float) <= s.split_workspace_bytes) {
      q.k_splits = int32_t(splits);
      q.split_workspace = s.split_workspace;
    }
  }
  return sm90_fp8_gemm_dense(q, block_m, s.info.sm_count, stream, err, err_len);
}

// Chooses Hopper or SIMT and enqueues the kernel.
int run_gemm(const char* op, const GemmProblem& p, int32_t kernel, char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  const State& s = state();
  if (kernel == MOE_CUDA_KERNEL_AUTO) kernel = s.gemm_kernel;
  const bool hopper_device = s.info.path == MOE_CUDA_PATH_HOPPER;
  if (kernel == MOE_CUDA_KERNEL_HOPPER && !hopper_device) {
    return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: the Hopper kernels cannot run here (%s)", op, s.reason);
  }
  if (kernel != MOE_CUDA_KERNEL_SIMT && hopper_device) {
    char why[256] = {0};
    if (sm90_fp8_gemm_eligible(p, why, sizeof(why))) {
      const Sm90Choice c = sm90_fp8_gemm_choose(p, s.info.sm_count);
      GemmProblem q = p;
      q.hang_trap_ns = s.hang_trap_ns;
      switch (q.layout) {
        case GemmLayout::kDense:
          return run_sm90_dense(q, c.block_m, stream, err, err_len);
        case GemmLayout::kContiguous:
          return sm90_fp8_gemm_contiguous(q, c.block_m, s.info.sm_count, stream, err, err_len);
        case GemmLayout::kMasked:
          return sm90_fp8_gemm_masked(q, c.block_m, s.info.sm_count, stream, err, err_len);
      }
    }
    if (kernel == MOE_CUDA_KERNEL_HOPPER) {
      return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: the Hopper kernels cannot take this problem: %s", op, why);
    }
  }
  return simt_fp8_gemm_run(p, stream, err, err_len);
}

// ---------------------------------------------------------------------------
// Argument checks of quantize / dequantize
// ---------------------------------------------------------------------------
int check_block_rows(const char* op, int64_t block_rows, char* err, size_t err_len) {
  if (block_rows != 1 && block_rows != 128) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 (activations, 1x128) or 128 (weights, 128x128), got %lld",
                op, (long long)block_rows);
  }
  return MOE_CUDA_OK;
}

int check_aligned(const char* op, const char* name, const void* p, size_t align, char* err, size_t err_len) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: %s (%p) must be %zu-byte aligned", op, name, p, align);
  }
  return MOE_CUDA_OK;
}

}  // namespace
}  // namespace moe_cuda

using namespace moe_cuda;

// ---------------------------------------------------------------------------
// C ABI
// ---------------------------------------------------------------------------

extern "C" {

MOE_CUDA_API uint32_t moe_cuda_abi_version(void) { return MOE_CUDA_ABI_VERSION; }

MOE_CUDA_API int moe_cuda_probe(char* reason, size_t reason_len, moe_cuda_device_info* info) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const int status = probe_locked(s);
  if (reason != nullptr && reason_len > 0) snprintf(reason, reason_len, "%s", s.reason);
  if (info != nullptr) *info = s.info;
  return status;
}

MOE_CUDA_API int moe_cuda_alloc(size_t bytes, void** ptr, char* err, size_t err_len) {
  if (ptr == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_alloc: ptr is null");
  *ptr = nullptr;
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (bytes == 0) return MOE_CUDA_OK;
  const State& s = state();
  const cudaError_t e =
      s.pool != nullptr ? cudaMallocFromPoolAsync(ptr, bytes, s.pool, stream) : cudaMalloc(ptr, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    *ptr = nullptr;
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "out of GPU memory allocating %zu bytes: %s", bytes,
                cudaGetErrorString(e));
  }
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_free(void* ptr, char* err, size_t err_len) {
  if (ptr == nullptr) return MOE_CUDA_OK;
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (state().pool != nullptr) {
    MOE_CUDA_CHECK(cudaFreeAsync(ptr, stream));
  } else {
    MOE_CUDA_CHECK(cudaFree(ptr));
  }
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_trim(size_t keep_bytes, char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (state().pool == nullptr) return MOE_CUDA_OK;
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  MOE_CUDA_CHECK(cudaMemPoolTrimTo(state().pool, keep_bytes));
  return MOE_CUDA_OK;
}

static int copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* op, char* err,
                size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (dst == nullptr || src == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: null pointer", op);
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_copy_h2d(void* dst_device, const void* src_host, size_t bytes, char* err, size_t err_len) {
  return copy(dst_device, src_host, bytes, cudaMemcpyHostToDevice, "moe_cuda_copy_h2d", err, err_len);
}

MOE_CUDA_API int moe_cuda_copy_d2h(void* dst_host, const void* src_device, size_t bytes, char* err, size_t err_len) {
  return copy(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, "moe_cuda_copy_d2h", err, err_len);
}

MOE_CUDA_API int moe_cuda_copy_d2d(void* dst_device, const void* src_device, size_t bytes, char* err, size_t err_len) {
  return copy(dst_device, src_device, bytes, cudaMemcpyDeviceToDevice, "moe_cuda_copy_d2d", err, err_len);
}

MOE_CUDA_API int moe_cuda_memset(void* dst_device, int value, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (dst_device == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_memset: null pointer");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaMemsetAsync(dst_device, value, bytes, stream));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_host_register(void* host, size_t bytes, char* err, size_t err_len) {
  if (host == nullptr || bytes == 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_host_register: empty range");
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaHostRegister(host, bytes, cudaHostRegisterDefault));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_host_unregister(void* host, char* err, size_t err_len) {
  if (host == nullptr) return MOE_CUDA_OK;
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaHostUnregister(host));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_synchronize(char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return MOE_CUDA_OK;
}

namespace {
struct HostCallback {
  void (*fn)(void* user);
  void* user;
};
// cudaStreamAddCallback's signature around the caller's fn(user). The status
// is not passed on: the caller asks moe_cuda_poll_error, which also sees
// errors that this callback's status would not name.
void CUDART_CB run_host_callback(cudaStream_t, cudaError_t, void* data) {
  HostCallback* cb = static_cast<HostCallback*>(data);
  cb->fn(cb->user);
  delete cb;
}
}  // namespace

MOE_CUDA_API int moe_cuda_launch_host_callback(void (*fn)(void* user), void* user, char* err, size_t err_len) {
  if (fn == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_launch_host_callback: fn is null");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  HostCallback* cb = new (std::nothrow) HostCallback{fn, user};
  if (cb == nullptr) return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_launch_host_callback: out of host memory");
  // NOTE: cudaLaunchHostFunc skips its function once the context has failed;
  // this one is called with the error instead, so a Promise waiting on it settles.
  const cudaError_t e = cudaStreamAddCallback(stream, run_host_callback, cb, 0);
  if (e != cudaSuccess) {
    delete cb;
    return cuda_fail(e, "cudaStreamAddCallback", err, err_len);
  }
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_poll_error(char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  const cudaError_t e = cudaStreamQuery(stream);  // a sticky device error shows here; never waits
  if (e == cudaSuccess) return MOE_CUDA_OK;
  if (e == cudaErrorNotReady) {
    // Later work still runs. NotReady is also recorded as this thread's last
    // error: clear it, or the next launch check would report it as its own.
    (void)cudaGetLastError();
    return MOE_CUDA_OK;
  }
  return cuda_fail(e, "the CUDA stream", err, err_len);
}

struct moe_cuda_event_s {
  cudaEvent_t event;
  bool timed;                          // created with timing (moe_cuda_event_create_timed)
  std::atomic<bool> recorded{false};   // moe_cuda_event_record has been called
};

static int event_create(moe_cuda_event* event, bool timed, const char* op, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: event is null", op);
  *event = nullptr;
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  cudaEvent_t e;
  // Blocking sync: moe_cuda_event_synchronize sleeps instead of spinning.
  const unsigned flags = timed ? cudaEventBlockingSync : (cudaEventDisableTiming | cudaEventBlockingSync);
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&e, flags));
  moe_cuda_event_s* h = new (std::nothrow) moe_cuda_event_s;
  if (h == nullptr) {
    cudaEventDestroy(e);
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "%s: out of host memory", op);
  }
  h->event = e;
  h->timed = timed;
  *event = h;
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_create(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, false, "moe_cuda_event_create", err, err_len);
}

MOE_CUDA_API int moe_cuda_event_create_timed(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, true, "moe_cuda_event_create_timed", err, err_len);
}

MOE_CUDA_API int moe_cuda_event_record(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_record: event is null");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaEventRecord(event->event, stream));
  event->recorded.store(true);
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_query(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_query: event is null");
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  const cudaError_t e = cudaEventQuery(event->event);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return MOE_CUDA_NOT_READY;
  }
  MOE_CUDA_CHECK(e);
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_synchronize(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_synchronize: event is null");
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaEventSynchronize(event->event));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_destroy(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return MOE_CUDA_OK;
  const int rc = ready(nullptr, err, err_len);
  const cudaError_t e = rc == MOE_CUDA_OK ? cudaEventDestroy(event->event) : cudaSuccess;
  delete event;
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(e);
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_elapsed_ms(moe_cuda_event start, moe_cuda_event end, float* ms, char* err,
                                           size_t err_len) {
  static const char* op = "moe_cuda_event_elapsed_ms";
  if (ms == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: ms is null", op);
  *ms = 0.0f;
  if (start == nullptr || end == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: event is null", op);
  if (!start->timed || !end->timed) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len,
                "%s: the %s event was created without timing (use moe_cuda_event_create_timed)", op,
                !start->timed ? "start" : "end");
  }
  if (!start->recorded.load() || !end->recorded.load()) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: the %s event has not been recorded", op,
                !start->recorded.load() ? "start" : "end");
  }
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  const cudaError_t e = cudaEventElapsedTime(ms, start->event, end->event);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    *ms = 0.0f;
    return MOE_CUDA_NOT_READY;
  }
  MOE_CUDA_CHECK(e);
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_flush_l2(char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.l2_flush == nullptr) {
    int l2 = 0;
    MOE_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, s.device));
    // twice the L2 (at least 8 MiB if the attribute is 0), whole MiBs
    size_t bytes = 2 * static_cast<size_t>(l2 > 0 ? l2 : (4 << 20));
    bytes = (bytes + (1u << 20) - 1) & ~static_cast<size_t>((1u << 20) - 1);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);  // outside the pool: moe_cuda_trim leaves it alone
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "%s: out of GPU memory allocating the %zu-byte L2 flush buffer: %s",
                  "moe_cuda_flush_l2", bytes, cudaGetErrorString(e));
    }
    s.l2_flush = p;
    s.l2_flush_bytes = bytes;
  }
  // Writes go through L2 (the device's point of coherence) and evict what the
  // previous kernels left there; alternate the value so no two calls write the same bytes.
  s.l2_flush_value ^= 0x5A;
  MOE_CUDA_CHECK(cudaMemsetAsync(s.l2_flush, s.l2_flush_value, s.l2_flush_bytes, stream));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_get_stream(void** stream, char* err, size_t err_len) {
  if (stream == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_get_stream: stream is null");
  cudaStream_t s = nullptr;
  const int rc = ready(&s, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  *stream = static_cast<void*>(s);
  return MOE_CUDA_OK;
}

// The operands every GEMM entry point shares (A, B, their scales, D), checked
// for null (with the layout's index array, `index` named `indexName`, before
// D) and copied into the problem; the callers add their layout's rows, groups
// and index arrays. Args: any of the three GEMM argument structs.
extern "C++" {  // a template, inside this file's extern "C" block
template <typename Args>
static int common_operands(const char* op, const Args* args, GemmLayout layout, const void* index, const char* indexName,
                           GemmProblem* p, char* err, size_t err_len) {
  if (!args->a) return null_pointer(op, "A", err, err_len);
  if (!args->sa) return null_pointer(op, "scales of A", err, err_len);
  if (!args->b) return null_pointer(op, "B", err, err_len);
  if (!args->sb) return null_pointer(op, "scales of B", err, err_len);
  if (indexName && !index) return null_pointer(op, indexName, err, err_len);
  if (!args->d) return null_pointer(op, "D", err, err_len);
  *p = GemmProblem{};
  p->layout = layout;
  p->a = static_cast<const uint8_t*>(args->a);
  p->sa = args->sa;
  p->b = static_cast<const uint8_t*>(args->b);
  p->sb = args->sb;
  p->d = args->d;
  p->d_f32 = args->d_dtype == MOE_CUDA_DTYPE_F32;
  p->n = args->n;
  p->k = args->k;
  return MOE_CUDA_OK;
}
}  // extern "C++"

MOE_CUDA_API int moe_cuda_gemm_fp8(const moe_cuda_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "gemm_fp8";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "M", args->m, 0, err, err_len)) || (rc = check_extent(op, "N", args->n, 1, err, err_len)) ||
      (rc = check_k(op, args->k, err, err_len)) || (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->m == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kDense, nullptr, nullptr, &p, err, err_len))) return rc;
  p.rows = args->m;
  p.groups = 1;
  return run_gemm(op, p, args->kernel, err, err_len);
}

MOE_CUDA_API int moe_cuda_grouped_gemm_fp8(const moe_cuda_grouped_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "grouped_gemm_fp8";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "R", args->r, 0, err, err_len)) || (rc = check_extent(op, "N", args->n, 1, err, err_len)) ||
      (rc = check_k(op, args->k, err, err_len)) || (rc = check_extent(op, "G", args->g, 1, err, err_len)) ||
      (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->r == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kContiguous, args->group_index, "groupIndex", &p, err, err_len))) return rc;
  p.rows = args->r;
  p.groups = args->g;
  p.group_index = args->group_index;
  return run_gemm(op, p, args->kernel, err, err_len);
}

MOE_CUDA_API int moe_cuda_grouped_gemm_fp8_masked(const moe_cuda_masked_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "grouped_gemm_fp8_masked";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "G", args->g, 1, err, err_len)) ||
      (rc = check_extent(op, "Mmax", args->m_max, 0, err, err_len)) ||
      (rc = check_extent(op, "N", args->n, 1, err, err_len)) || (rc = check_k(op, args->k, err, err_len)) ||
      (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->expected_m < 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: expectedM = %lld must be >= 0", op, (long long)args->expected_m);
  }
  if (args->g * args->m_max > kMaxExtent) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: G * Mmax = %lld exceeds 2^31 - 1", op,
                (long long)(args->g * args->m_max));
  }
  if (args->m_max == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kMasked, args->masked_m, "maskedM", &p, err, err_len))) return rc;
  p.rows = args->m_max;
  p.groups = args->g;
  p.masked_m = args->masked_m;
  p.expected_m = args->expected_m;
  return run_gemm(op, p, args->kernel, err, err_len);
}

MOE_CUDA_API int moe_cuda_quantize(const moe_cuda_quantize_args* args, char* err, size_t err_len) {
  static const char* op = "quantize";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (args->x_dtype != MOE_CUDA_DTYPE_F32 && args->x_dtype != MOE_CUDA_DTYPE_BF16) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: x must be f32 or bf16 (dtype %d)", op, args->x_dtype);
  }
  if (args->q_dtype != MOE_CUDA_DTYPE_FP8_E4M3) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: q must be fp8_e4m3 (dtype %d)", op, args->q_dtype);
  }
  if (args->scale_dtype != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d; ue8m0 scales are f32 powers of two)",
                op, args->scale_dtype);
  }
  if (args->scale_format != MOE_CUDA_SCALE_F32 && args->scale_format != MOE_CUDA_SCALE_UE8M0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown scale format %d (0 = f32, 1 = ue8m0)", op,
                args->scale_format);
  }
  int rc;
  if ((rc = check_block_rows(op, args->block_rows, err, err_len)) ||
      (rc = check_extent(op, "rows", args->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "cols (K)", args->cols, 16, err, err_len))) {
    return rc;
  }
  if (args->cols % 16 != 0) {
    return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: cols (K) = %lld must be a positive multiple of 16", op,
                (long long)args->cols);
  }
  const bool bf16 = args->x_dtype == MOE_CUDA_DTYPE_BF16;
  if (args->rows > 0) {
    if (!args->x) return null_pointer(op, "x", err, err_len);
    if (!args->q) return null_pointer(op, "q", err, err_len);
    if (!args->scales) return null_pointer(op, "scales", err, err_len);
    if ((rc = check_aligned(op, "x", args->x, bf16 ? 2 : 4, err, err_len)) ||
        (rc = check_aligned(op, "scales", args->scales, 4, err, err_len))) {
      return rc;
    }
  }
  if (args->nonfinite_flag && (rc = check_aligned(op, "nonfinite_flag", args->nonfinite_flag, 4, err, err_len))) return rc;
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (args->nonfinite_flag) MOE_CUDA_CHECK(cudaMemsetAsync(args->nonfinite_flag, 0, sizeof(int32_t), stream));
  if (args->rows == 0) return MOE_CUDA_OK;
  QuantizeProblem p{};
  p.x = args->x;
  p.x_bf16 = bf16;
  p.q = static_cast<uint8_t*>(args->q);
  p.scales = args->scales;
  p.nonfinite = args->nonfinite_flag;
  p.rows = args->rows;
  p.cols = args->cols;
  p.block_rows = args->block_rows;
  p.ue8m0 = args->scale_format == MOE_CUDA_SCALE_UE8M0;
  return quantize_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_dequantize(const moe_cuda_dequantize_args* args, char* err, size_t err_len) {
  static const char* op = "dequantize";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (args->q_dtype != MOE_CUDA_DTYPE_FP8_E4M3) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: q must be fp8_e4m3 (dtype %d)", op, args->q_dtype);
  }
  if (args->scale_dtype != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d)", op, args->scale_dtype);
  }
  if (args->out_dtype != MOE_CUDA_DTYPE_F32 && args->out_dtype != MOE_CUDA_DTYPE_BF16) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: the output must be f32 or bf16 (dtype %d)", op, args->out_dtype);
  }
  int rc;
  if ((rc = check_block_rows(op, args->block_rows, err, err_len)) ||
      (rc = check_extent(op, "rows", args->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "cols", args->cols, 0, err, err_len))) {
    return rc;
  }
  const bool bf16 = args->out_dtype == MOE_CUDA_DTYPE_BF16;
  if (args->rows == 0 || args->cols == 0) return ready(nullptr, err, err_len);
  if (!args->q) return null_pointer(op, "q", err, err_len);
  if (!args->scales) return null_pointer(op, "scales", err, err_len);
  if (!args->out) return null_pointer(op, "out", err, err_len);
  if ((rc = check_aligned(op, "scales", args->scales, 4, err, err_len)) ||
      (rc = check_aligned(op, "out", args->out, bf16 ? 2 : 4, err, err_len))) {
    return rc;
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  DequantizeProblem p{};
  p.q = static_cast<const uint8_t*>(args->q);
  p.scales = args->scales;
  p.out = args->out;
  p.out_bf16 = bf16;
  p.rows = args->rows;
  p.cols = args->cols;
  p.block_rows = args->block_rows;
  return dequantize_run(p, stream, err, err_len);
}

}  // extern "C"

// ---------------------------------------------------------------------------
// The MoE layer's operations: host checks, then the launchers (moe_ops.h)
// ---------------------------------------------------------------------------
namespace moe_cuda {
namespace {

bool is_float_dtype(int32_t d) { return d == MOE_CUDA_DTYPE_F32 || d == MOE_CUDA_DTYPE_BF16; }

int check_float(const char* op, const char* name, int32_t d, char* err, size_t err_len) {
  if (!is_float_dtype(d)) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: %s must be f32 or bf16 (dtype %d)", op, name, d);
  return MOE_CUDA_OK;
}

int check_scale_format(const char* op, int32_t f, char* err, size_t err_len) {
  if (f != MOE_CUDA_SCALE_F32 && f != MOE_CUDA_SCALE_UE8M0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown scale format %d (0 = f32, 1 = ue8m0)", op, f);
  }
  return MOE_CUDA_OK;
}

int check_flag(const char* op, const int32_t* flag, char* err, size_t err_len) {
  return flag ? check_aligned(op, "error_flag", flag, 4, err, err_len) : MOE_CUDA_OK;
}

size_t elem_size(int32_t d) { return d == MOE_CUDA_DTYPE_BF16 ? 2 : d == MOE_CUDA_DTYPE_FP8_E4M3 ? 1 : 4; }

}  // namespace
}  // namespace moe_cuda

extern "C" {

MOE_CUDA_API int moe_cuda_router_logits(const moe_cuda_router_logits_args* a, char* err, size_t err_len) {
  static const char* op = "routerLogits";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "x", a->x_dtype, err, err_len)) || (rc = check_float(op, "w", a->w_dtype, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_extent(op, "E", a->experts, 0, err, err_len))) {
    return rc;
  }
  if (a->tokens * a->experts > 0) {
    if (!a->x || !a->w || !a->logits) return null_pointer(op, "x, w or logits", err, err_len);
    if ((rc = check_aligned(op, "x", a->x, elem_size(a->x_dtype), err, err_len)) ||
        (rc = check_aligned(op, "w", a->w, elem_size(a->w_dtype), err, err_len)) ||
        (rc = check_aligned(op, "logits", a->logits, 4, err, err_len))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (a->hidden == 0 && a->tokens * a->experts > 0) {
    MOE_CUDA_CHECK(cudaMemsetAsync(a->logits, 0, sizeof(float) * a->tokens * a->experts, stream));  // empty dots
    return MOE_CUDA_OK;
  }
  RouterLogitsProblem p{a->x, a->x_dtype == MOE_CUDA_DTYPE_BF16, a->w, a->w_dtype == MOE_CUDA_DTYPE_BF16, a->logits,
                        a->tokens, a->hidden, a->experts};
  return router_logits_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_route(const moe_cuda_route_args* a, char* err, size_t err_len) {
  static const char* op = "route";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "logits", a->logits_dtype, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "E", a->experts, 1, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  const int64_t E = a->experts;
  if (a->top_k < 1 || a->top_k > E) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: topK must be in [1, E=%lld], got %lld", op, (long long)E, (long long)a->top_k);
  if (a->num_groups < 1 || a->num_groups > E || E % a->num_groups != 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: numGroups must be >= 1 and divide E=%lld, got %lld", op, (long long)E, (long long)a->num_groups);
  }
  if (a->top_k_groups < 1 || a->top_k_groups > a->num_groups) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: topKGroups must be in [1, numGroups=%lld], got %lld", op, (long long)a->num_groups, (long long)a->top_k_groups);
  }
  if (a->top_k > a->top_k_groups * (E / a->num_groups)) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: topK must be <= topKGroups * (E / numGroups) = %lld, got %lld", op,
                (long long)(a->top_k_groups * (E / a->num_groups)), (long long)a->top_k);
  }
  if (a->bias && !a->sigmoid) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: bias is only supported with sigmoid scoring", op);
  if (!(a->scale - a->scale == 0.0f)) return fail(MOE_CUDA_ERR_NONFINITE, err, err_len, "%s: scale must be finite", op);
  // One warp per token keeps [2E + 2G] floats in shared memory: up to 48 KiB (no opt-in) per warp.
  if (route_smem_per_warp(E, a->num_groups) > 48 * 1024 / 4) {
    return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: E = %lld with %lld groups is more than the CUDA routing kernel holds (E + G <= 1536)", op,
                (long long)E, (long long)a->num_groups);
  }
  if (a->tokens > 0) {
    if (!a->logits || !a->ids || !a->weights) return null_pointer(op, "logits, ids or weights", err, err_len);
    if ((rc = check_aligned(op, "logits", a->logits, elem_size(a->logits_dtype), err, err_len)) ||
        (rc = check_aligned(op, "ids", a->ids, 4, err, err_len)) || (rc = check_aligned(op, "weights", a->weights, 4, err, err_len)) ||
        (a->bias && (rc = check_aligned(op, "bias", a->bias, 4, err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  RouteProblem p{};
  p.logits = a->logits;
  p.logits_bf16 = a->logits_dtype == MOE_CUDA_DTYPE_BF16;
  p.bias = a->bias;
  p.ids = a->ids;
  p.weights = a->weights;
  p.flag = a->error_flag;
  p.tokens = a->tokens;
  p.experts = E;
  p.top_k = a->top_k;
  p.groups = a->num_groups;
  p.top_k_groups = a->top_k_groups;
  p.sigmoid = a->sigmoid != 0;
  p.renormalize = a->renormalize != 0;
  p.scale = a->scale;
  return route_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_dispatch_layout(const moe_cuda_layout_args* a, char* err, size_t err_len) {
  static const char* op = "dispatchLayout";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "k", a->slots, 0, err, err_len)) ||
      (rc = check_extent(op, "E", a->experts, 1, err, err_len)) ||
      (rc = check_extent(op, "capacity", a->capacity, 0, err, err_len)) || (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (a->tokens * a->slots > kMaxExtent) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: T * k exceeds 2^31 - 1", op);
  if (a->masked) {
    if (a->max_rows < 0 || a->max_rows > kMaxExtent / a->experts) {
      return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: maxRowsPerExpert must be in [0, %lld], got %lld", op,
                  (long long)(kMaxExtent / a->experts), (long long)a->max_rows);
    }
    if (a->capacity < a->experts * a->max_rows) {
      return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: rowToken and groupIndex hold %lld rows, the layout needs %lld (E * maxRowsPerExpert)", op,
                  (long long)a->capacity, (long long)(a->experts * a->max_rows));
    }
  } else if (a->align < 1 || a->align > kMaxExtent) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: align must be in [1, 2^31 - 1], got %lld", op, (long long)a->align);
  }
  if (!a->tokens_per_expert || !a->offsets) return null_pointer(op, "tokensPerExpert or offsets", err, err_len);
  if (a->tokens * a->slots > 0 && (!a->ids || !a->slot_row)) return null_pointer(op, "ids or slotRow", err, err_len);
  if (a->capacity > 0 && (!a->row_token || !a->group_index)) return null_pointer(op, "rowToken or groupIndex", err, err_len);
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  LayoutProblem p{};
  p.ids = a->ids;
  p.tokens_per_expert = a->tokens_per_expert;
  p.offsets = a->offsets;
  p.row_token = a->row_token;
  p.group_index = a->group_index;
  p.slot_row = a->slot_row;
  p.flag = a->error_flag;
  p.tokens = a->tokens;
  p.slots = a->slots;
  p.experts = a->experts;
  p.capacity = a->capacity;
  p.align = a->masked ? 1 : a->align;
  p.masked = a->masked != 0;
  p.max_rows = a->max_rows;
  return dispatch_layout_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_dispatch(const moe_cuda_dispatch_args* a, char* err, size_t err_len) {
  static const char* op = "dispatch";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  const bool quantize = a->scales != nullptr;
  if ((rc = check_float(op, "x", a->x_dtype, err, err_len)) || (rc = check_extent(op, "R", a->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (quantize) {
    if ((rc = check_scale_format(op, a->scale_format, err, err_len))) return rc;
    if (a->out_dtype != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out must be fp8_e4m3 when quantizing", op);
    if (a->hidden <= 0 || a->hidden % 16 != 0) {
      return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: quantizing needs H to be a positive multiple of 16, got %lld", op, (long long)a->hidden);
    }
  } else if (a->out_dtype != a->x_dtype) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out must have x's dtype when not quantizing", op);
  }
  if (a->rows > 0 && a->hidden > 0) {
    if (!a->x && a->tokens > 0) return null_pointer(op, "x", err, err_len);
    if (!a->row_token || !a->out) return null_pointer(op, "rowToken or out", err, err_len);
    if (quantize && ((rc = check_aligned(op, "x", a->x, 16, err, err_len)) || (rc = check_aligned(op, "out", a->out, 16, err, err_len)) ||
                     (rc = check_aligned(op, "scales", a->scales, 4, err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  if (a->rows == 0 || a->hidden == 0) return MOE_CUDA_OK;
  DispatchProblem p{};
  p.x = a->x;
  p.x_bf16 = a->x_dtype == MOE_CUDA_DTYPE_BF16;
  p.row_token = a->row_token;
  p.out = a->out;
  p.scales = a->scales;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.tokens = a->tokens;
  p.hidden = a->hidden;
  p.ue8m0 = a->scale_format == MOE_CUDA_SCALE_UE8M0;
  return dispatch_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_swiglu(const moe_cuda_swiglu_args* a, char* err, size_t err_len) {
  static const char* op = "swiglu";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "h", a->h_dtype, err, err_len)) || (rc = check_extent(op, "R", a->rows, 0, err, err_len)) ||
      (rc = check_extent(op, "I", a->inter, 1, err, err_len)) || (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  const bool quantize = a->out_dtype == MOE_CUDA_DTYPE_FP8_E4M3;
  if (quantize) {
    if ((rc = check_scale_format(op, a->scale_format, err, err_len))) return rc;
    if (a->scales == nullptr && a->rows > 0) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: out is fp8_e4m3 but scales is null", op);
    if (a->inter % 16 != 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: quantizing needs I to be a multiple of 16, got %lld", op, (long long)a->inter);
  } else if ((rc = check_float(op, "out", a->out_dtype, err, err_len))) {
    return rc;
  }
  if (a->rows > 0) {
    if (!a->h || !a->out) return null_pointer(op, "h or out", err, err_len);
    if (quantize && ((rc = check_aligned(op, "h", a->h, 16, err, err_len)) || (rc = check_aligned(op, "out", a->out, 16, err, err_len)) ||
                     (rc = check_aligned(op, "scales", a->scales, 4, err, err_len)))) {
      return rc;
    }
    if (!quantize && ((rc = check_aligned(op, "h", a->h, elem_size(a->h_dtype), err, err_len)) ||
                      (rc = check_aligned(op, "out", a->out, elem_size(a->out_dtype), err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  SwigluProblem p{};
  p.h = a->h;
  p.h_bf16 = a->h_dtype == MOE_CUDA_DTYPE_BF16;
  p.out = a->out;
  p.out_dtype = a->out_dtype;
  p.scales = quantize ? a->scales : nullptr;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.inter = a->inter;
  p.ue8m0 = a->scale_format == MOE_CUDA_SCALE_UE8M0;
  return swiglu_run(p, stream, err, err_len);
}

MOE_CUDA_API int moe_cuda_combine(const moe_cuda_combine_args* a, char* err, size_t err_len) {
  static const char* op = "combine";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_float(op, "y", a->y_dtype, err, err_len)) || (rc = check_float(op, "out", a->out_dtype, err, err_len)) ||
      (a->shared && (rc = check_float(op, "shared", a->shared_dtype, err, err_len))) ||
      (rc = check_extent(op, "R", a->rows, 0, err, err_len)) || (rc = check_extent(op, "T", a->tokens, 0, err, err_len)) ||
      (rc = check_extent(op, "k", a->slots, 0, err, err_len)) || (rc = check_extent(op, "H", a->hidden, 0, err, err_len)) ||
      (rc = check_flag(op, a->error_flag, err, err_len))) {
    return rc;
  }
  if (a->tokens > 0 && a->hidden > 0) {
    if (!a->out || (a->slots > 0 && (!a->slot_row || !a->weights))) return null_pointer(op, "out, slotRow or weights", err, err_len);
    if (a->rows > 0 && !a->y) return null_pointer(op, "y", err, err_len);
    if ((rc = check_aligned(op, "out", a->out, elem_size(a->out_dtype), err, err_len)) ||
        (a->y && (rc = check_aligned(op, "y", a->y, elem_size(a->y_dtype), err, err_len))) ||
        (a->shared && (rc = check_aligned(op, "shared", a->shared, elem_size(a->shared_dtype), err, err_len)))) {
      return rc;
    }
  }
  cudaStream_t stream = nullptr;
  if ((rc = ready(&stream, err, err_len))) return rc;
  CombineProblem p{};
  p.y = a->y;
  p.y_bf16 = a->y_dtype == MOE_CUDA_DTYPE_BF16;
  p.slot_row = a->slot_row;
  p.weights = a->weights;
  p.shared = a->shared;
  p.shared_bf16 = a->shared_dtype == MOE_CUDA_DTYPE_BF16;
  p.out = a->out;
  p.out_bf16 = a->out_dtype == MOE_CUDA_DTYPE_BF16;
  p.flag = a->error_flag;
  p.rows = a->rows;
  p.tokens = a->tokens;
  p.slots = a->slots;
  p.hidden = a->hidden;
  return combine_run(p, stream, err, err_len);
}

// ---- CUDA graphs ----------------------------------------------------------------

struct moe_cuda_graph_s {
  cudaGraphExec_t exec = nullptr;
};

MOE_CUDA_API int moe_cuda_graph_begin_capture(char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_end_capture(moe_cuda_graph* graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_end_capture: graph is null");
  *graph = nullptr;
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  cudaGraph_t captured = nullptr;
  MOE_CUDA_CHECK(cudaStreamEndCapture(stream, &captured));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, captured, 0);
  cudaGraphDestroy(captured);  // the executable graph is independent of it
  if (e != cudaSuccess) return cuda_fail(e, "cudaGraphInstantiate", err, err_len);
  moe_cuda_graph_s* h = new (std::nothrow) moe_cuda_graph_s;
  if (h == nullptr) {
    cudaGraphExecDestroy(exec);
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_graph_end_capture: out of host memory");
  }
  h->exec = exec;
  *graph = h;
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_launch(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_launch: graph is null");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaGraphLaunch(graph->exec, stream));
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_destroy(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return MOE_CUDA_OK;
  const int rc = ready(nullptr, err, err_len);
  const cudaError_t e = rc == MOE_CUDA_OK ? cudaGraphExecDestroy(graph->exec) : cudaSuccess;
  delete graph;
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(e);
  return MOE_CUDA_OK;
}

}  // extern "C"
