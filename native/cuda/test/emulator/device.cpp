// The emulated device of the plug-in's CPU emulation (device.h).
#include "emulator/device.h"

namespace moe_emu {

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

namespace {

// [p, p + bytes) inside one of `ranges` (base -> bytes); the caller holds the lock.
bool inside(const std::map<uintptr_t, size_t>& ranges, const void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = ranges.upper_bound(a);
  if (it == ranges.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

}  // namespace

bool in_allocation(const void* p, size_t bytes) {
  if (bytes == 0) return true;
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  return inside(e.allocations, p, bytes);
}

bool registered(const void* p, size_t bytes) {
  Emulator& e = emu();
  std::lock_guard<std::mutex> lock(e.mu);
  return inside(e.pinned, p, bytes);
}

// The alignment the real plug-in demands of an operand (src/*_entry.cpp's
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

}  // namespace moe_emu
