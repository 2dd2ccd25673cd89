// A CPU emulation of the CUDA plug-in's C ABI (include/moe_cuda_api.h), for
// testing everything above the kernels on machines without a GPU: the
// addon's CUDA backend (native/src/cuda_host/), device tensors and their
// finalizers, the Promise forms and their deferred error flags, the GPU layer
// forward and its CUDA graph capture, and scripts/device-check.mjs.
//
// "Device memory" is host memory; each "kernel" is the CPU backend's
// operation, run by an emulated GPU: a thread that executes the one stream's
// work in order, asynchronously to the caller and a little late (a pause
// before each item), so that host code which reads results, reuses buffers
// or settles Promises before the stream got there sees wrong data here as it
// would on a GPU. Host callbacks run on that thread in stream order. The kernels
// themselves are not under test here (scripts/cuda/check-static.sh and a
// real GPU cover those); what the emulation checks, and a GPU would report
// far less clearly, is the plumbing around them:
//   - every device operand of every op lies inside one live allocation, with
//     the extent the op's shape implies (an offset or size bug in the
//     orchestration fails with the operand's name, instead of corrupting
//     memory or reading a neighbour's data);
//   - new allocations are filled with garbage (0xA5), as device memory is;
//   - a graph launch finds every buffer its ops were captured with still
//     allocated;
//   - while a graph is being captured nothing synchronizes, reads back,
//     copies from host memory, allocates, frees or adds a host callback
//     (each invalidates a real capture): the capture fails with the reason.
// Data errors (an id out of range, NaN) reach the caller as the real
// kernels report them: as MOE_CUDA_FLAG_* bits in the op's device flag.
// Not emulated (a bug there passes here): the plug-in's host-side argument
// checks (api.cpp; the addon checks shapes before calling), the Hopper
// kernels' contracts (128-row groups, eligibility), capture by other threads
// (capture here is per thread, in CUDA per stream), and copies from
// registered host memory (staged at call time here, read later by a GPU).
//
// Built by scripts/cuda/build-emulator.sh (g++ only) into
// build-emu/libmoe_cuda.so; select it with MOE_CUDA_PLUGIN. Test-only: no
// install builds it.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "core/ops.h"
#include "cpu/cpu_backend.h"
#include "fail.h"
#include "moe_cuda_api.h"

namespace {

using moe::DType;
using moe::Status;
using moe::TensorView;

using moe_cuda::fail;

// A deferred "kernel": runs at its turn on the stream, or at each replay of
// the graph it was captured into.
using Work = std::function<int(char* err, size_t len)>;

// The emulated GPU: one thread running the stream's work in order. An item
// that fails leaves a sticky error (as a faulting kernel does), reported by
// the next synchronize or poll; the items after it still run.
class Gpu {
 public:
  void submit(Work work) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    queue_.push_back(std::move(work));
    ++submitted_;
    cv_.notify_all();
  }

  // Blocks until everything submitted so far has run; returns the sticky error.
  int wait_idle(char* err, size_t len) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = submitted_;
    cv_.wait(lock, [&] { return done_ >= target; });
    return error_locked(err, len);
  }

  int poll(char* err, size_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    return error_locked(err, len);
  }

 private:
  int error_locked(char* err, size_t len) {
    if (error_code_ == MOE_CUDA_OK) return MOE_CUDA_OK;
    return fail(error_code_, err, len, "emulated device (sticky): %s", error_.c_str());
  }

  void loop() {
    // NOTE: the pause makes the device lag the host by a realistic margin.
    const long pause_us = getenv("MOE_EMU_PAUSE_US") ? atol(getenv("MOE_EMU_PAUSE_US")) : 50;
    for (;;) {
      Work work;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      if (pause_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
      char message[512] = {0};
      const int rc = work(message, sizeof message);
      std::lock_guard<std::mutex> lock(mu_);
      if (rc != MOE_CUDA_OK && error_code_ == MOE_CUDA_OK) {
        error_code_ = rc;
        error_ = message;
      }
      ++done_;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Work> queue_;
  uint64_t submitted_ = 0, done_ = 0;
  int error_code_ = MOE_CUDA_OK;
  std::string error_;
  std::thread thread_;  // never joined: it lives as long as the process
};

// A device range an op uses, kept with a captured graph: each launch checks
// them again, so a graph that outlives a buffer it reads fails by name.
struct Operand {
  std::string what;  // "op: name"
  const void* p;
  size_t bytes;
};

struct Emulator {
  std::mutex mu;
  std::map<uintptr_t, size_t> allocations;  // base -> bytes
  bool capturing = false;
  std::thread::id capture_thread;
  std::vector<Work> recording;
  std::vector<Operand> recorded_operands;
  std::string capture_broken;  // why the capture is invalid ("" while it is fine)
  std::map<uintptr_t, size_t> pinned;  // moe_cuda_host_register'ed host ranges
  Gpu gpu;
};

Emulator& emu() {
  static Emulator* e = new Emulator;  // never destroyed: callbacks may run at exit
  return *e;
}

bool capturing_here() {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  return e.capturing && e.capture_thread == std::this_thread::get_id();
}

// An operation that a real capture cannot record: it invalidates the capture
// (the capture then fails to end, naming it) and fails itself.
int refuse_in_capture(const char* op, char* err, size_t len) {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.capture_broken.empty()) e.capture_broken = std::string(op) + " while capturing a graph";
  return fail(MOE_CUDA_ERR_INTERNAL, err, len, "emulated device: %s while capturing a graph (it invalidates the capture)", op);
}

// Device range [p, p + bytes) must lie inside one live allocation.
bool in_allocation(const void* p, size_t bytes) {
  if (bytes == 0) return true;
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = e.allocations.upper_bound(a);
  if (it == e.allocations.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

// Host range [p, p + bytes) inside one moe_cuda_host_register'ed range.
bool registered(const void* p, size_t bytes) {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = e.pinned.upper_bound(a);
  if (it == e.pinned.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

// The alignment the real plug-in demands of an operand (api.cpp's
// check_aligned): 16 bytes for the fp8 row kernels' vector operands, the
// element size elsewhere. A misaligned view is MOE_CUDA_ERR_RANGE there.
bool aligned(const char* op, const char* name, const void* p, size_t align, char* err, size_t len) {
  if (reinterpret_cast<uintptr_t>(p) % align == 0) return true;
  fail(MOE_CUDA_ERR_RANGE, err, len, "%s: %s (%p) must be %zu-byte aligned", op, name, p, align);
  return false;
}

// Checks one operand; on failure writes the message and returns false.
bool operand(const char* op, const char* name, const void* p, size_t bytes, char* err, size_t len) {
  if (capturing_here()) {
    Emulator& e = emu();
    std::lock_guard<std::mutex> lock(e.mu);
    e.recorded_operands.push_back(Operand{std::string(op) + ": " + name, p, bytes});
  }
  if (in_allocation(p, bytes)) return true;
  fail(MOE_CUDA_ERR_INTERNAL, err, len, "emulated device: %s: %s [%p, +%zu bytes) is not inside one live device allocation",
       op, name, p, bytes);
  return false;
}

// Submits `work` to the stream, or records it while this thread captures a graph.
int enqueue(Work work, char*, size_t) {
  if (capturing_here()) {
    Emulator& e = emu();
    std::lock_guard<std::mutex> lock(e.mu);
    e.recording.push_back(std::move(work));
    return MOE_CUDA_OK;
  }
  emu().gpu.submit(std::move(work));
  return MOE_CUDA_OK;
}

DType dtype_of(int32_t d) {
  switch (d) {
    case MOE_CUDA_DTYPE_BF16: return DType::kBF16;
    case MOE_CUDA_DTYPE_FP8_E4M3: return DType::kFP8E4M3;
    case MOE_CUDA_DTYPE_I32: return DType::kI32;
    default: return DType::kF32;
  }
}

size_t bytes_of(int32_t d) { return moe::dtypeSize(dtype_of(d)); }

TensorView view(const void* p, int32_t d, std::initializer_list<int64_t> dims) {
  return TensorView::contiguous(const_cast<void*>(p), dtype_of(d), dims);
}

int64_t groups_of(int64_t k) { return (k + 127) / 128; }

// A CPU backend Status as the plug-in reports it: data errors become flag
// bits (flags[code] for the codes the op's kernels flag), the rest return codes.
int from_status(const Status& s, int32_t* flag, std::initializer_list<std::pair<moe::Code, int32_t>> flags, char* err,
                size_t len) {
  if (s.isOk()) return MOE_CUDA_OK;
  for (const auto& f : flags) {
    if (s.code() == f.first) {
      if (flag != nullptr) *flag |= f.second;
      return MOE_CUDA_OK;
    }
  }
  return fail(static_cast<int>(s.code()), err, len, "%s", s.message().c_str());
}

moe::Backend& cpu() { return moe::cpu::cpuBackend(); }

struct EventRecord {
  bool timed;
  bool recorded = false;
  std::chrono::steady_clock::time_point at;
};

}  // namespace

extern "C" {

MOE_CUDA_API uint32_t moe_cuda_abi_version(void) { return MOE_CUDA_ABI_VERSION; }

MOE_CUDA_API int moe_cuda_probe(char* reason, size_t reason_len, moe_cuda_device_info* info) {
  if (info != nullptr) {
    memset(info, 0, sizeof(*info));
    info->sm_major = 9;
    info->sm_count = 132;
    info->path = MOE_CUDA_PATH_HOPPER;
    info->driver_version = 13000;
    info->runtime_version = 13000;
    info->total_memory = uint64_t(16) << 30;
    snprintf(info->name, sizeof(info->name), "CPU emulation of the CUDA plug-in (test only)");
  }
  fail(MOE_CUDA_OK, reason, reason_len, "usable (emulated on the CPU: native/cuda/test/emulated_plugin.cpp)");
  return MOE_CUDA_OK;
}

// ---- memory ----------------------------------------------------------------------

MOE_CUDA_API int moe_cuda_alloc(size_t bytes, void** ptr, char* err, size_t err_len) {
  if (ptr == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_alloc: ptr is null");
  *ptr = nullptr;
  if (bytes == 0) return MOE_CUDA_OK;
  if (capturing_here()) return refuse_in_capture("moe_cuda_alloc", err, err_len);
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = aligned_alloc(256, rounded);
  if (p == nullptr) return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "out of GPU memory allocating %zu bytes (emulated)", bytes);
  memset(p, 0xA5, rounded);  // device memory starts as garbage
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  e.allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return MOE_CUDA_OK;
}

// Stream-ordered, as cudaFreeAsync: the pointer is invalid for ops submitted
// from now on, and the memory goes once the work before it has run.
MOE_CUDA_API int moe_cuda_free(void* ptr, char* err, size_t err_len) {
  if (ptr == nullptr) return MOE_CUDA_OK;
  if (capturing_here()) return refuse_in_capture("moe_cuda_free", err, err_len);
  Emulator& e = emu();
  {
    std::lock_guard<std::mutex> lock(e.mu);
    auto it = e.allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == e.allocations.end()) {
      return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "emulated device: moe_cuda_free(%p): not a live allocation", ptr);
    }
    e.allocations.erase(it);
  }
  e.gpu.submit([ptr](char*, size_t) {
    free(ptr);
    return MOE_CUDA_OK;
  });
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_trim(size_t, char*, size_t) { return MOE_CUDA_OK; }

MOE_CUDA_API int moe_cuda_copy_h2d(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (capturing_here()) return refuse_in_capture("moe_cuda_copy_h2d (from pageable host memory)", err, err_len);
  if (src == nullptr || !operand("moe_cuda_copy_h2d", "dst", dst, bytes, err, err_len)) {
    return src == nullptr ? fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_copy_h2d: null pointer") : MOE_CUDA_ERR_INTERNAL;
  }
  // From pageable memory the driver stages the bytes before returning: the
  // caller may reuse `src` at once, the device sees them in stream order.
  auto staged = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(src), static_cast<const uint8_t*>(src) + bytes);
  emu().gpu.submit([dst, staged](char*, size_t) {
    memcpy(dst, staged->data(), staged->size());
    return MOE_CUDA_OK;
  });
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_copy_d2h(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (capturing_here()) return refuse_in_capture("moe_cuda_copy_d2h (a read-back)", err, err_len);
  if (dst == nullptr || !operand("moe_cuda_copy_d2h", "src", src, bytes, err, err_len)) {
    return dst == nullptr ? fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_copy_d2h: null pointer") : MOE_CUDA_ERR_INTERNAL;
  }
  emu().gpu.submit([=](char*, size_t) {
    memcpy(dst, src, bytes);
    return MOE_CUDA_OK;
  });
  // Into host memory registered with moe_cuda_host_register the copy is
  // asynchronous; into pageable memory it returns once the data arrived.
  if (registered(dst, bytes)) return MOE_CUDA_OK;
  return emu().gpu.wait_idle(err, err_len);
}

MOE_CUDA_API int moe_cuda_copy_d2d(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (!operand("moe_cuda_copy_d2d", "dst", dst, bytes, err, err_len) ||
      !operand("moe_cuda_copy_d2d", "src", src, bytes, err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  return enqueue([=](char*, size_t) { memmove(dst, src, bytes); return MOE_CUDA_OK; }, err, err_len);
}

MOE_CUDA_API int moe_cuda_memset(void* dst, int value, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (!operand("moe_cuda_memset", "dst", dst, bytes, err, err_len)) return MOE_CUDA_ERR_INTERNAL;
  return enqueue([=](char*, size_t) { memset(dst, value, bytes); return MOE_CUDA_OK; }, err, err_len);
}

MOE_CUDA_API int moe_cuda_host_register(void* host, size_t bytes, char* err, size_t err_len) {
  if (host == nullptr || bytes == 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_host_register: empty range");
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  e.pinned[reinterpret_cast<uintptr_t>(host)] = bytes;
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_host_unregister(void* host, char*, size_t) {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  e.pinned.erase(reinterpret_cast<uintptr_t>(host));
  return MOE_CUDA_OK;
}

// ---- completion ------------------------------------------------------------------

MOE_CUDA_API int moe_cuda_synchronize(char* err, size_t err_len) {
  if (capturing_here()) return refuse_in_capture("moe_cuda_synchronize", err, err_len);
  return emu().gpu.wait_idle(err, err_len);
}

// fn runs on the emulated GPU's thread when the stream reaches it, even
// after an earlier item failed (cudaStreamAddCallback).
MOE_CUDA_API int moe_cuda_launch_host_callback(void (*fn)(void* user), void* user, char* err, size_t err_len) {
  if (fn == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_launch_host_callback: fn is null");
  if (capturing_here()) return refuse_in_capture("moe_cuda_launch_host_callback", err, err_len);
  emu().gpu.submit([fn, user](char*, size_t) {
    fn(user);
    return MOE_CUDA_OK;
  });
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_poll_error(char* err, size_t err_len) { return emu().gpu.poll(err, err_len); }

struct moe_cuda_event_s {
  EventRecord r;
  std::atomic<uint64_t> pending{0};  // records submitted but not yet reached
};

static int event_create(moe_cuda_event* event, bool timed, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_create: event is null");
  *event = new moe_cuda_event_s;
  (*event)->r.timed = timed;
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_create(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, false, err, err_len);
}
MOE_CUDA_API int moe_cuda_event_create_timed(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, true, err, err_len);
}

MOE_CUDA_API int moe_cuda_event_record(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_record: event is null");
  // Inside a capture a plain record only orders the graph's own nodes: a
  // replay leaves the event alone.
  if (capturing_here()) return MOE_CUDA_OK;
  ++event->pending;
  return enqueue([event](char*, size_t) {
    event->r.recorded = true;
    event->r.at = std::chrono::steady_clock::now();
    if (event->pending > 0) --event->pending;
    return MOE_CUDA_OK;
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_event_query(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_query: event is null");
  return event->pending > 0 ? MOE_CUDA_NOT_READY : MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_synchronize(moe_cuda_event event, char* err, size_t err_len) {
  if (event == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_synchronize: event is null");
  if (capturing_here()) return refuse_in_capture("moe_cuda_event_synchronize", err, err_len);
  return event->pending > 0 ? emu().gpu.wait_idle(err, err_len) : MOE_CUDA_OK;
}

// As cudaEventDestroy: allowed while a record is still pending; the event
// goes once the stream has passed it.
MOE_CUDA_API int moe_cuda_event_destroy(moe_cuda_event event, char*, size_t) {
  if (event == nullptr) return MOE_CUDA_OK;
  emu().gpu.submit([event](char*, size_t) {
    delete event;
    return MOE_CUDA_OK;
  });
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_event_elapsed_ms(moe_cuda_event start, moe_cuda_event end, float* ms, char* err,
                                           size_t err_len) {
  if (start == nullptr || end == nullptr || ms == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_elapsed_ms: null argument");
  if (start->pending > 0 || end->pending > 0) return MOE_CUDA_NOT_READY;
  if (!start->r.timed || !end->r.timed || !start->r.recorded || !end->r.recorded) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "moe_cuda_event_elapsed_ms: events must be timed and recorded");
  }
  *ms = std::chrono::duration<float, std::milli>(end->r.at - start->r.at).count();
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_flush_l2(char*, size_t) { return MOE_CUDA_OK; }

MOE_CUDA_API int moe_cuda_get_stream(void** stream, char* err, size_t err_len) {
  if (stream == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_get_stream: stream is null");
  *stream = nullptr;  // the default stream's handle: there is no real one
  return MOE_CUDA_OK;
}

// ---- FP8 GEMMs --------------------------------------------------------------------
// fp8 NaN codes: the GPU multiplies them into NaN outputs without a report; the
// CPU backend refuses them (kNonFinite), which is dropped here.

MOE_CUDA_API int moe_cuda_gemm_fp8(const moe_cuda_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_gemm_fp8";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t m = a->m, n = a->n, k = a->k, kg = groups_of(k);
  if (m == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(m * k), err, err_len) || !operand(op, "sa", a->sa, size_t(m * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(m * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GemmFp8Args g;
  g.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {m, k});
  g.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {m, kg});
  g.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {n, k});
  g.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {groups_of(n), kg});
  g.d = view(a->d, a->d_dtype, {m, n});
  return enqueue([g](char* e, size_t l) { return from_status(cpu().gemmFp8(g), nullptr, {{moe::Code::kNonFinite, 0}}, e, l); },
                 err, err_len);
}

MOE_CUDA_API int moe_cuda_grouped_gemm_fp8(const moe_cuda_grouped_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_grouped_gemm_fp8";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->r, n = a->n, k = a->k, g = a->g, kg = groups_of(k);
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(r * k), err, err_len) || !operand(op, "sa", a->sa, size_t(r * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(g * n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(g * groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "group_index", a->group_index, size_t(r) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(r * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GroupedGemmFp8Args x;
  x.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {r, k});
  x.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {r, kg});
  x.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {g, n, k});
  x.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {g, groups_of(n), kg});
  x.groupIndex = view(a->group_index, MOE_CUDA_DTYPE_I32, {r});
  x.d = view(a->d, a->d_dtype, {r, n});
  return enqueue(
      [x](char* e, size_t l) { return from_status(cpu().groupedGemmFp8(x), nullptr, {{moe::Code::kNonFinite, 0}}, e, l); },
      err, err_len);
}

MOE_CUDA_API int moe_cuda_grouped_gemm_fp8_masked(const moe_cuda_masked_gemm_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_grouped_gemm_fp8_masked";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t g = a->g, mm = a->m_max, n = a->n, k = a->k, kg = groups_of(k);
  if (g == 0 || mm == 0) return MOE_CUDA_OK;
  if (!operand(op, "a", a->a, size_t(g * mm * k), err, err_len) ||
      !operand(op, "sa", a->sa, size_t(g * mm * kg) * 4, err, err_len) ||
      !operand(op, "b", a->b, size_t(g * n * k), err, err_len) ||
      !operand(op, "sb", a->sb, size_t(g * groups_of(n) * kg) * 4, err, err_len) ||
      !operand(op, "masked_m", a->masked_m, size_t(g) * 4, err, err_len) ||
      !operand(op, "d", a->d, size_t(g * mm * n) * bytes_of(a->d_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::GroupedGemmFp8Args x;
  x.a = view(a->a, MOE_CUDA_DTYPE_FP8_E4M3, {g, mm, k});
  x.aScales = view(a->sa, MOE_CUDA_DTYPE_F32, {g, mm, kg});
  x.b = view(a->b, MOE_CUDA_DTYPE_FP8_E4M3, {g, n, k});
  x.bScales = view(a->sb, MOE_CUDA_DTYPE_F32, {g, groups_of(n), kg});
  x.maskedM = view(a->masked_m, MOE_CUDA_DTYPE_I32, {g});
  x.d = view(a->d, a->d_dtype, {g, mm, n});
  // The kernels clamp masked_m to [0, Mmax]; the CPU backend refuses values
  // outside it, so clamp a copy first (the caller's masked_m stays as it was).
  return enqueue([x, g, mm](char* e, size_t l) {
    std::vector<int32_t> clamped(static_cast<size_t>(g));
    const int32_t* m = x.maskedM.as<int32_t>();
    for (int64_t i = 0; i < g; ++i) clamped[size_t(i)] = m[i] < 0 ? 0 : (m[i] > mm ? int32_t(mm) : m[i]);
    moe::GroupedGemmFp8Args y = x;
    y.maskedM = TensorView::contiguous(clamped.data(), DType::kI32, {g});
    return from_status(cpu().groupedGemmFp8(y), nullptr, {{moe::Code::kNonFinite, 0}}, e, l);
  }, err, err_len);
}

// ---- quantization -------------------------------------------------------------------

MOE_CUDA_API int moe_cuda_quantize(const moe_cuda_quantize_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_quantize";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (a->block_rows != 1 && a->block_rows != 128) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 or 128", op);
  const int64_t rows = a->rows, cols = a->cols, br = a->block_rows;
  if (rows == 0) {  // the real plug-in still clears the flag: "first sets *nonfinite_flag to 0"
    if (a->nonfinite_flag == nullptr) return MOE_CUDA_OK;
    return moe_cuda_memset(a->nonfinite_flag, 0, sizeof(int32_t), err, err_len);
  }
  const int64_t srows = (rows + br - 1) / br;
  if (!operand(op, "x", a->x, size_t(rows * cols) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "q", a->q, size_t(rows * cols), err, err_len) ||
      !operand(op, "scales", a->scales, size_t(srows * groups_of(cols)) * 4, err, err_len) ||
      (a->nonfinite_flag != nullptr && !operand(op, "nonfinite_flag", a->nonfinite_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::QuantizeArgs q;
  q.x = view(a->x, a->x_dtype, {rows, cols});
  q.q = view(a->q, MOE_CUDA_DTYPE_FP8_E4M3, {rows, cols});
  q.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {srows, groups_of(cols)});
  q.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->nonfinite_flag;
  return enqueue([q, br, flag](char* e, size_t l) {
    if (flag != nullptr) *flag = 0;
    const Status s = br == 1 ? cpu().quantizeActivations(q) : cpu().quantizeWeights(q);
    return from_status(s, flag, {{moe::Code::kNonFinite, 1}}, e, l);
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_dequantize(const moe_cuda_dequantize_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dequantize";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  if (a->block_rows != 1 && a->block_rows != 128) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: block_rows must be 1 or 128", op);
  const int64_t rows = a->rows, cols = a->cols, br = a->block_rows;
  if (rows == 0 || cols == 0) return MOE_CUDA_OK;
  const int64_t srows = (rows + br - 1) / br;
  if (!operand(op, "q", a->q, size_t(rows * cols), err, err_len) ||
      !operand(op, "scales", a->scales, size_t(srows * groups_of(cols)) * 4, err, err_len) ||
      !operand(op, "out", a->out, size_t(rows * cols) * bytes_of(a->out_dtype), err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::DequantizeArgs d;
  d.q = view(a->q, MOE_CUDA_DTYPE_FP8_E4M3, {rows, cols});
  d.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {srows, groups_of(cols)});
  d.blockRows = br;
  d.out = view(a->out, a->out_dtype, {rows, cols});
  return enqueue([d](char* e, size_t l) { return from_status(cpu().dequantize(d), nullptr, {}, e, l); }, err, err_len);
}

// ---- the MoE layer's operations ------------------------------------------------------

MOE_CUDA_API int moe_cuda_router_logits(const moe_cuda_router_logits_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_router_logits";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, h = a->hidden, e = a->experts;
  if (t == 0) return MOE_CUDA_OK;
  if (!operand(op, "x", a->x, size_t(t * h) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "w", a->w, size_t(e * h) * bytes_of(a->w_dtype), err, err_len) ||
      !operand(op, "logits", a->logits, size_t(t * e) * 4, err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::RouterLogitsArgs r;
  r.x = view(a->x, a->x_dtype, {t, h});
  r.w = view(a->w, a->w_dtype, {e, h});
  r.logits = view(a->logits, MOE_CUDA_DTYPE_F32, {t, e});
  // Non-finite inputs give non-finite logits on a GPU, which the caller checks.
  return enqueue([r](char* e2, size_t l) { return from_status(cpu().routerLogits(r), nullptr, {{moe::Code::kNonFinite, 0}}, e2, l); },
                 err, err_len);
}

MOE_CUDA_API int moe_cuda_route(const moe_cuda_route_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_route";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, e = a->experts, k = a->top_k;
  if (t == 0) return MOE_CUDA_OK;
  if (!operand(op, "logits", a->logits, size_t(t * e) * bytes_of(a->logits_dtype), err, err_len) ||
      (a->bias != nullptr && !operand(op, "bias", a->bias, size_t(e) * 4, err, err_len)) ||
      !operand(op, "ids", a->ids, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "weights", a->weights, size_t(t * k) * 4, err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::RouteArgs r;
  r.logits = view(a->logits, a->logits_dtype, {t, e});
  if (a->bias != nullptr) r.bias = view(a->bias, MOE_CUDA_DTYPE_F32, {e});
  r.scoring = a->sigmoid ? moe::Scoring::kSigmoid : moe::Scoring::kSoftmax;
  r.topK = k;
  r.numGroups = a->num_groups;
  r.topKGroups = a->top_k_groups;
  r.renormalize = a->renormalize != 0;
  r.scale = a->scale;
  r.ids = view(a->ids, MOE_CUDA_DTYPE_I32, {t, k});
  r.weights = view(a->weights, MOE_CUDA_DTYPE_F32, {t, k});
  int32_t* flag = a->error_flag;
  return enqueue([r, flag](char* e2, size_t l) {
    return from_status(cpu().route(r), flag, {{moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e2, l);
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_dispatch_layout(const moe_cuda_layout_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dispatch_layout";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t t = a->tokens, k = a->slots, e = a->experts, cap = a->capacity;
  if (!operand(op, "ids", a->ids, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "tokens_per_expert", a->tokens_per_expert, size_t(e) * 4, err, err_len) ||
      !operand(op, "offsets", a->offsets, size_t(e + 1) * 4, err, err_len) ||
      !operand(op, "row_token", a->row_token, size_t(cap) * 4, err, err_len) ||
      !operand(op, "group_index", a->group_index, size_t(cap) * 4, err, err_len) ||
      !operand(op, "slot_row", a->slot_row, size_t(t * k) * 4, err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::LayoutArgs x;
  x.ids = view(a->ids, MOE_CUDA_DTYPE_I32, {t, k});
  x.numExperts = e;
  x.align = a->align;
  x.masked = a->masked != 0;
  x.maxRowsPerExpert = a->max_rows;
  x.tokensPerExpert = view(a->tokens_per_expert, MOE_CUDA_DTYPE_I32, {e});
  x.offsets = view(a->offsets, MOE_CUDA_DTYPE_I32, {e + 1});
  x.rowToken = view(a->row_token, MOE_CUDA_DTYPE_I32, {cap});
  x.groupIndex = view(a->group_index, MOE_CUDA_DTYPE_I32, {cap});
  x.slotRow = view(a->slot_row, MOE_CUDA_DTYPE_I32, {t, k});
  int32_t* flag = a->error_flag;
  return enqueue([x, flag](char* e2, size_t l) {
    const Status s = cpu().dispatchLayout(x);
    // The CPU's range errors: an id out of range, or (masked) an expert over Mmax.
    const int32_t range = s.message().find("maxRowsPerExpert") != std::string::npos ? MOE_CUDA_FLAG_OVER_MAX_ROWS
                                                                                    : MOE_CUDA_FLAG_BAD_INDEX;
    return from_status(s, flag, {{moe::Code::kRange, range}, {moe::Code::kShape, MOE_CUDA_FLAG_OVER_CAPACITY}}, e2, l);
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_dispatch(const moe_cuda_dispatch_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_dispatch";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, t = a->tokens, h = a->hidden;
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "x", a->x, size_t(t * h) * bytes_of(a->x_dtype), err, err_len) ||
      !operand(op, "row_token", a->row_token, size_t(r) * 4, err, err_len) ||
      !operand(op, "out", a->out, size_t(r * h) * bytes_of(a->out_dtype), err, err_len) ||
      (a->scales != nullptr && !operand(op, "scales", a->scales, size_t(r * groups_of(h)) * 4, err, err_len)) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  const size_t vec = a->scales != nullptr ? 16 : bytes_of(a->x_dtype);
  if (!aligned(op, "x", a->x, vec, err, err_len) || !aligned(op, "out", a->out, vec, err, err_len) ||
      !aligned(op, "row_token", a->row_token, 4, err, err_len)) {
    return MOE_CUDA_ERR_RANGE;
  }
  moe::DispatchArgs d;
  d.x = view(a->x, a->x_dtype, {t, h});
  d.rowToken = view(a->row_token, MOE_CUDA_DTYPE_I32, {r});
  d.out = view(a->out, a->out_dtype, {r, h});
  if (a->scales != nullptr) d.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {r, groups_of(h)});
  d.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->error_flag;
  return enqueue([d, flag](char* e, size_t l) {
    return from_status(cpu().dispatch(d), flag,
                       {{moe::Code::kRange, MOE_CUDA_FLAG_BAD_INDEX}, {moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_swiglu(const moe_cuda_swiglu_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_swiglu";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, i = a->inter;
  if (r == 0) return MOE_CUDA_OK;
  if (!operand(op, "h", a->h, size_t(r * 2 * i) * bytes_of(a->h_dtype), err, err_len) ||
      !operand(op, "out", a->out, size_t(r * i) * bytes_of(a->out_dtype), err, err_len) ||
      (a->scales != nullptr && !operand(op, "scales", a->scales, size_t(r * groups_of(i)) * 4, err, err_len)) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  const bool quantizing = a->out_dtype == MOE_CUDA_DTYPE_FP8_E4M3;
  if (!aligned(op, "h", a->h, quantizing ? 16 : bytes_of(a->h_dtype), err, err_len) ||
      !aligned(op, "out", a->out, quantizing ? 16 : bytes_of(a->out_dtype), err, err_len)) {
    return MOE_CUDA_ERR_RANGE;
  }
  moe::SwigluArgs s;
  s.h = view(a->h, a->h_dtype, {r, 2 * i});
  s.out = view(a->out, a->out_dtype, {r, i});
  if (a->scales != nullptr) s.scales = view(a->scales, MOE_CUDA_DTYPE_F32, {r, groups_of(i)});
  s.scaleFormat = a->scale_format == MOE_CUDA_SCALE_UE8M0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
  int32_t* flag = a->error_flag;
  return enqueue([s, flag](char* e, size_t l) {
    return from_status(cpu().swiglu(s), flag, {{moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

MOE_CUDA_API int moe_cuda_combine(const moe_cuda_combine_args* a, char* err, size_t err_len) {
  static const char* op = "moe_cuda_combine";
  if (a == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  const int64_t r = a->rows, t = a->tokens, k = a->slots, h = a->hidden;
  if (t == 0) return MOE_CUDA_OK;
  if ((r > 0 && !operand(op, "y", a->y, size_t(r * h) * bytes_of(a->y_dtype), err, err_len)) ||
      !operand(op, "slot_row", a->slot_row, size_t(t * k) * 4, err, err_len) ||
      !operand(op, "weights", a->weights, size_t(t * k) * 4, err, err_len) ||
      (a->shared != nullptr && !operand(op, "shared", a->shared, size_t(t * h) * bytes_of(a->shared_dtype), err, err_len)) ||
      !operand(op, "out", a->out, size_t(t * h) * bytes_of(a->out_dtype), err, err_len) ||
      (a->error_flag != nullptr && !operand(op, "error_flag", a->error_flag, 4, err, err_len))) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  moe::CombineArgs c;
  c.y = view(a->y, a->y_dtype, {r, h});
  c.slotRow = view(a->slot_row, MOE_CUDA_DTYPE_I32, {t, k});
  c.weights = view(a->weights, MOE_CUDA_DTYPE_F32, {t, k});
  if (a->shared != nullptr) c.shared = view(a->shared, a->shared_dtype, {t, h});
  c.out = view(a->out, a->out_dtype, {t, h});
  int32_t* flag = a->error_flag;
  return enqueue([c, flag](char* e, size_t l) {
    return from_status(cpu().combine(c), flag,
                       {{moe::Code::kRange, MOE_CUDA_FLAG_BAD_INDEX}, {moe::Code::kNonFinite, MOE_CUDA_FLAG_NONFINITE}}, e, l);
  }, err, err_len);
}

// ---- CUDA graphs ------------------------------------------------------------------------

struct moe_cuda_graph_s {
  std::vector<Work> work;
  std::vector<Operand> operands;
};

MOE_CUDA_API int moe_cuda_graph_begin_capture(char* err, size_t err_len) {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.capturing) return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_graph_begin_capture: a capture is already running");
  e.capturing = true;
  e.capture_thread = std::this_thread::get_id();
  e.recording.clear();
  e.recorded_operands.clear();
  e.capture_broken.clear();
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_end_capture(moe_cuda_graph* graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_end_capture: graph is null");
  *graph = nullptr;
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  if (!e.capturing || e.capture_thread != std::this_thread::get_id()) {
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_graph_end_capture: this thread is not capturing");
  }
  e.capturing = false;
  std::vector<Work> work = std::move(e.recording);
  std::vector<Operand> operands = std::move(e.recorded_operands);
  e.recording.clear();
  e.recorded_operands.clear();
  if (!e.capture_broken.empty()) {
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "moe_cuda_graph_end_capture: the capture was invalidated (%s)",
                e.capture_broken.c_str());
  }
  *graph = new moe_cuda_graph_s{std::move(work), std::move(operands)};
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_launch(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_launch: graph is null");
  if (capturing_here()) return refuse_in_capture("moe_cuda_graph_launch", err, err_len);
  for (const Operand& o : graph->operands) {
    if (!in_allocation(o.p, o.bytes)) {
      return fail(MOE_CUDA_ERR_INTERNAL, err, err_len,
                  "emulated device: moe_cuda_graph_launch: the graph's %s [%p, +%zu bytes) is no longer a live device allocation",
                  o.what.c_str(), o.p, o.bytes);
    }
  }
  for (const Work& w : graph->work) emu().gpu.submit(w);
  return MOE_CUDA_OK;
}

MOE_CUDA_API int moe_cuda_graph_destroy(moe_cuda_graph graph, char*, size_t) {
  delete graph;
  return MOE_CUDA_OK;
}

}  // extern "C"
