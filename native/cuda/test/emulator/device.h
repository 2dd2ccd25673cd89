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
// The Hopper kernels' host-side contracts are kept (kernels.cpp): where the
// plug-in's rules (shared with it) would pick them, a contiguous grouped GEMM
// reads groupIndex a block of rows at a time, and a split dense GEMM passes
// through the one shared split-K workspace between two stream items.
// Not emulated (a bug there passes here): the plug-in's own guards (its
// src/*_entry.cpp; the addon checks every op before calling), capture by
// other threads (one capture at a time here), and copies from registered
// host memory (staged at call time here, read later by a GPU).
//
// Three files: device.{h,cpp} (the emulated GPU: its stream thread, memory
// registry, capture state and operand checks), runtime.cpp (the C ABI's
// memory, completion, events and graphs), kernels.cpp (the ops).
//
// Built by scripts/cuda/build-emulator.sh (g++ only) into
// build-emu/libmoe_cuda.so; select it with MOE_CUDA_PLUGIN. Test-only: no
// install builds it.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fail.h"
#include "moe_cuda_api.h"

namespace moe_emu {

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

// The one emulated device.
Emulator& emu();
// Whether this thread is capturing a graph.
bool capturing_here();
// An operation that a real capture cannot record: it invalidates the capture
// (the capture then fails to end, naming it) and fails itself.
int refuse_in_capture(const char* op, char* err, size_t len);
// Device range [p, p + bytes) inside one live allocation.
bool in_allocation(const void* p, size_t bytes);
// Host range [p, p + bytes) inside one moe_cuda_host_register'ed range.
bool registered(const void* p, size_t bytes);
// The alignment the real plug-in demands of an operand (src/*_entry.cpp's
// check_aligned); false with the message written otherwise.
bool aligned(const char* op, const char* name, const void* p, size_t align, char* err, size_t len);
// One device operand of op `op`: inside a live allocation (and, while
// capturing, kept with the graph); false with the message written otherwise.
bool operand(const char* op, const char* name, const void* p, size_t bytes, char* err, size_t len);
// Submits `work` to the stream, or records it while this thread captures a graph.
int enqueue(Work work, char* err, size_t len);

}  // namespace moe_emu
