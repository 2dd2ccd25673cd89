// The plug-in's device and runtime entry points: probing the device, the
// stream and its memory pool, copies, completion (host callbacks, error
// polling), timing events and the L2 flush. No exceptions cross (or are
// thrown inside) the plug-in.
#include "runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <new>

#include "api_entry.h"
#include "sm80_simt_fp8_gemm.h"
#include "sm90_fp8_gemm.h"
#include "tensor_map.h"

namespace moe_cuda {

namespace {

thread_local cudaStream_t t_capture_stream = nullptr;

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
      if (cudaMalloc(reinterpret_cast<void**>(&s.split.data), bytes) == cudaSuccess) {
        s.split.bytes = bytes;
      } else {
        (void)cudaGetLastError();
        s.split.data = nullptr;
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

}  // namespace

State& state() {
  static State s;  // never destroyed: CUDA may already be torn down at exit
  return s;
}

void set_capture_stream(cudaStream_t stream) { t_capture_stream = stream; }

int ready(cudaStream_t* stream, char* err, size_t err_len) {
  State& s = state();
  int status;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    status = probe_locked(s);
  }
  if (status != MOE_CUDA_OK) return fail(status, err, err_len, "CUDA backend unavailable: %s", s.reason);
  MOE_CUDA_CHECK(cudaSetDevice(s.device));
  if (stream != nullptr) *stream = t_capture_stream != nullptr ? t_capture_stream : s.stream;
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

int null_pointer(const char* op, const char* name, char* err, size_t err_len) {
  return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "%s: %s is a null device pointer", op, name);
}

int check_aligned(const char* op, const char* name, const void* p, size_t align, char* err, size_t err_len) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: %s (%p) must be %zu-byte aligned", op, name, p, align);
  }
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda

using namespace moe_cuda;

extern "C" {

int moe_cuda_probe(char* reason, size_t reason_len, moe_cuda_device_info* info) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const int status = probe_locked(s);
  if (reason != nullptr && reason_len > 0) snprintf(reason, reason_len, "%s", s.reason);
  if (info != nullptr) *info = s.info;
  return status;
}

int moe_cuda_alloc(size_t bytes, void** ptr, char* err, size_t err_len) {
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

int moe_cuda_free(void* ptr, char* err, size_t err_len) {
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

int moe_cuda_copy_h2d(void* dst_device, const void* src_host, size_t bytes, char* err, size_t err_len) {
  return copy(dst_device, src_host, bytes, cudaMemcpyHostToDevice, "moe_cuda_copy_h2d", err, err_len);
}

int moe_cuda_copy_d2h(void* dst_host, const void* src_device, size_t bytes, char* err, size_t err_len) {
  return copy(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, "moe_cuda_copy_d2h", err, err_len);
}

int moe_cuda_copy_d2d(void* dst_device, const void* src_device, size_t bytes, char* err, size_t err_len) {
  return copy(dst_device, src_device, bytes, cudaMemcpyDeviceToDevice, "moe_cuda_copy_d2d", err, err_len);
}

int moe_cuda_memset(void* dst_device, int value, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (dst_device == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_memset: null pointer");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaMemsetAsync(dst_device, value, bytes, stream));
  return MOE_CUDA_OK;
}

int moe_cuda_host_register(void* host, size_t bytes, char* err, size_t err_len) {
  if (host == nullptr || bytes == 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_host_register: empty range");
  const int rc = ready(nullptr, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaHostRegister(host, bytes, cudaHostRegisterDefault));
  return MOE_CUDA_OK;
}


int moe_cuda_synchronize(char* err, size_t err_len) {
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

int moe_cuda_launch_host_callback(void (*fn)(void* user), void* user, char* err, size_t err_len) {
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

int moe_cuda_poll_error(char* err, size_t err_len) {
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


int moe_cuda_event_create_timed(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, true, "moe_cuda_event_create_timed", err, err_len);
}

int moe_cuda_event_record(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_record: event is null");
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  MOE_CUDA_CHECK(cudaEventRecord(event->event, stream));
  event->recorded.store(true);
  return MOE_CUDA_OK;
}




int moe_cuda_event_elapsed_ms(moe_cuda_event start, moe_cuda_event end, float* ms, char* err,
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

int moe_cuda_flush_l2(char* err, size_t err_len) {
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
    const cudaError_t e = cudaMalloc(&p, bytes);  // outside the pool: kept for good
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


int moe_cuda_get_stream(void** stream, char* err, size_t err_len) {
  if (stream == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_get_stream: stream is null");
  cudaStream_t s = nullptr;
  const int rc = ready(&s, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  *stream = static_cast<void*>(s);
  return MOE_CUDA_OK;
}

}  // extern "C"
