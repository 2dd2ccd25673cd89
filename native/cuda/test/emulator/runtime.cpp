// The plug-in's C ABI on the emulated device: probing, memory, completion,
// events, graphs (device.h says what the emulation checks).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "api_entry.h"
#include "emulator/device.h"

using namespace moe_emu;

namespace {

struct EventRecord {
  bool timed;
  bool recorded = false;
  std::chrono::steady_clock::time_point at;
};

}  // namespace

extern "C" {


int moe_cuda_probe(char* reason, size_t reason_len, moe_cuda_device_info* info) {
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
  fail(MOE_CUDA_OK, reason, reason_len, "usable (emulated on the CPU: native/cuda/test/emulator/)");
  return MOE_CUDA_OK;
}

// ---- memory ----------------------------------------------------------------------

int moe_cuda_alloc(size_t bytes, void** ptr, char* err, size_t err_len) {
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
int moe_cuda_free(void* ptr, char* err, size_t err_len) {
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

int moe_cuda_copy_h2d(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
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

int moe_cuda_copy_d2h(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
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

int moe_cuda_copy_d2d(void* dst, const void* src, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (!operand("moe_cuda_copy_d2d", "dst", dst, bytes, err, err_len) ||
      !operand("moe_cuda_copy_d2d", "src", src, bytes, err, err_len)) {
    return MOE_CUDA_ERR_INTERNAL;
  }
  return enqueue([=](char*, size_t) { memmove(dst, src, bytes); return MOE_CUDA_OK; }, err, err_len);
}

int moe_cuda_memset(void* dst, int value, size_t bytes, char* err, size_t err_len) {
  if (bytes == 0) return MOE_CUDA_OK;
  if (!operand("moe_cuda_memset", "dst", dst, bytes, err, err_len)) return MOE_CUDA_ERR_INTERNAL;
  return enqueue([=](char*, size_t) { memset(dst, value, bytes); return MOE_CUDA_OK; }, err, err_len);
}

int moe_cuda_host_register(void* host, size_t bytes, char* err, size_t err_len) {
  if (host == nullptr || bytes == 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_host_register: empty range");
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  e.pinned[reinterpret_cast<uintptr_t>(host)] = bytes;
  return MOE_CUDA_OK;
}

// ---- completion ------------------------------------------------------------------

int moe_cuda_synchronize(char* err, size_t err_len) {
  if (capturing_here()) return refuse_in_capture("moe_cuda_synchronize", err, err_len);
  return emu().gpu.wait_idle(err, err_len);
}

// fn runs on the emulated GPU's thread when the stream reaches it, even
// after an earlier item failed (cudaStreamAddCallback).
int moe_cuda_launch_host_callback(void (*fn)(void* user), void* user, char* err, size_t err_len) {
  if (fn == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_launch_host_callback: fn is null");
  if (capturing_here()) return refuse_in_capture("moe_cuda_launch_host_callback", err, err_len);
  emu().gpu.submit([fn, user](char*, size_t) {
    fn(user);
    return MOE_CUDA_OK;
  });
  return MOE_CUDA_OK;
}

int moe_cuda_poll_error(char* err, size_t err_len) { return emu().gpu.poll(err, err_len); }

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

int moe_cuda_event_create_timed(moe_cuda_event* event, char* err, size_t err_len) {
  return event_create(event, true, err, err_len);
}

int moe_cuda_event_record(moe_cuda_event event, char* err, size_t err_len) {
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

// As cudaEventDestroy: allowed while a record is still pending; the event
// goes once the stream has passed it.
int moe_cuda_event_elapsed_ms(moe_cuda_event start, moe_cuda_event end, float* ms, char* err,
                                           size_t err_len) {
  if (start == nullptr || end == nullptr || ms == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_event_elapsed_ms: null argument");
  if (start->pending > 0 || end->pending > 0) return MOE_CUDA_NOT_READY;
  if (!start->r.timed || !end->r.timed || !start->r.recorded || !end->r.recorded) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "moe_cuda_event_elapsed_ms: events must be timed and recorded");
  }
  *ms = std::chrono::duration<float, std::milli>(end->r.at - start->r.at).count();
  return MOE_CUDA_OK;
}

int moe_cuda_flush_l2(char*, size_t) { return MOE_CUDA_OK; }

int moe_cuda_get_stream(void** stream, char* err, size_t err_len) {
  if (stream == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_get_stream: stream is null");
  *stream = nullptr;  // the default stream's handle: there is no real one
  return MOE_CUDA_OK;
}

// ---- CUDA graphs ------------------------------------------------------------------------

struct moe_cuda_graph_s {
  std::vector<Work> work;
  std::vector<Operand> operands;
};

int moe_cuda_graph_begin_capture(char* err, size_t err_len) {
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

int moe_cuda_graph_end_capture(moe_cuda_graph* graph, char* err, size_t err_len) {
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

int moe_cuda_graph_launch(moe_cuda_graph graph, char* err, size_t err_len) {
  if (graph == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "moe_cuda_graph_launch: graph is null");
  if (capturing_here()) return refuse_in_capture("moe_cuda_graph_launch", err, err_len);
  for (const Operand& o : graph->operands) {
    if (!in_allocation(o.p, o.bytes)) {
      return fail(MOE_CUDA_ERR_INTERNAL, err, err_len,
                  "emulated device: moe_cuda_graph_launch: the graph's %s [%p, +%zu bytes) is no longer a live device allocation",
                  o.what.c_str(), o.p, o.bytes);
    }
  }
  // One launch, one item on the stream (as cudaGraphLaunch): another
  // thread's work cannot come between the graph's kernels.
  std::vector<Work> work = graph->work;
  emu().gpu.submit([work](char* e, size_t l) {
    int first = MOE_CUDA_OK;
    for (const Work& w : work) {
      const int rc = w(e, l);
      if (first == MOE_CUDA_OK) first = rc;
    }
    return first;
  });
  return MOE_CUDA_OK;
}

int moe_cuda_graph_destroy(moe_cuda_graph graph, char*, size_t) {
  delete graph;
  return MOE_CUDA_OK;
}

}  // extern "C"
