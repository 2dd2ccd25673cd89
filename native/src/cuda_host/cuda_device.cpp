// The CUDA backend's device services (core/backend.h): loading the plug-in,
// memory, copies, completion, graphs and timers, each one plug-in call whose
// status becomes a Status.
#include <string>

#include "cuda_host/cuda_backend.h"
#include "cuda_host/plugin.h"

namespace moe::cuda {

namespace {

// One plug-in call: fn(args..., err, err_len) -> Status naming `what`.
template <typename Fn, typename... Args>
Status call(const char* what, Fn fn, Args... args) {
  MOE_RETURN_IF_ERROR(Plugin::instance().expectAvailable(what));
  char err[512] = {0};
  return fromPlugin(fn(args..., err, sizeof err), err, what);
}

const PluginApi& api() { return Plugin::instance().api(); }

}  // namespace

Status CudaBackend::expectAvailable(const char* what) const { return Plugin::instance().expectAvailable(what); }

void CudaBackend::load(const std::vector<std::string>& candidates) { Plugin::instance().load(candidates); }

DeviceInfo CudaBackend::deviceInfo() const {
  const Plugin& plugin = Plugin::instance();
  DeviceInfo info;
  info.available = plugin.available();
  info.reason = plugin.reason();
  info.path = plugin.path();
  if (!plugin.available()) return info;
  const moe_cuda_device_info& d = plugin.device();
  info.hasDevice = true;
  info.name = d.name;
  info.smMajor = d.sm_major;
  info.smMinor = d.sm_minor;
  info.multiprocessors = d.sm_count;
  info.memoryBytes = static_cast<double>(d.total_memory);
  info.driverVersion = d.driver_version;
  info.runtimeVersion = d.runtime_version;
  info.kernels = d.path == MOE_CUDA_PATH_HOPPER ? "hopper" : "simt";
  return info;
}

Status CudaBackend::alloc(size_t bytes, void** ptr) { return call("alloc", api().alloc, bytes, ptr); }
Status CudaBackend::free(void* ptr) { return call("free", api().free, ptr); }

Status CudaBackend::copyToDevice(void* device, const void* host, size_t bytes) {
  return call("to('cuda')", api().copy_h2d, device, host, bytes);
}

Status CudaBackend::copyToHost(void* host, const void* device, size_t bytes) {
  return call("to('cpu')", api().copy_d2h, host, device, bytes);
}

Status CudaBackend::copyOnDevice(void* dst, const void* src, size_t bytes) {
  return call("copy on the device", api().copy_d2d, dst, src, bytes);
}

Status CudaBackend::fill(void* device, int byte, size_t bytes) { return call("fill", api().memset, device, byte, bytes); }

Status CudaBackend::synchronize() { return call("CUDA", api().synchronize); }
Status CudaBackend::pollError() { return call("CUDA", api().poll_error); }

Status CudaBackend::enqueueCompletion(void (*fn)(void* user), void* user) {
  return call("CUDA", api().launch_host_callback, fn, user);
}

Status CudaBackend::nativeQueue(void** queue) { return call("nativeQueue", api().get_stream, queue); }

Status CudaBackend::beginCapture() { return call("graph capture", api().graph_begin_capture); }

Status CudaBackend::endCapture(Graph** graph) {
  moe_cuda_graph g = nullptr;
  const Status status = call("graph capture", api().graph_end_capture, &g);
  *graph = reinterpret_cast<Graph*>(g);
  return status;
}

Status CudaBackend::launchGraph(Graph* graph) {
  return call("graph replay", api().graph_launch, reinterpret_cast<moe_cuda_graph>(graph));
}

void CudaBackend::destroyGraph(Graph* graph) {
  if (graph != nullptr) (void)call("graph destroy", api().graph_destroy, reinterpret_cast<moe_cuda_graph>(graph));
}

// Benchmarks: two timed events on the stream (one pair per process).
namespace {
moe_cuda_event gTimer[2] = {nullptr, nullptr};

Status recordTimer(int which) {
  if (gTimer[which] == nullptr) MOE_RETURN_IF_ERROR(call("cudaTimer", api().event_create_timed, &gTimer[which]));
  return call("cudaTimer", api().event_record, gTimer[which]);
}
}  // namespace

Status CudaBackend::startTimer() { return recordTimer(0); }

Status CudaBackend::stopTimer(float* ms) {
  MOE_RETURN_IF_ERROR(recordTimer(1));
  MOE_RETURN_IF_ERROR(call("cudaTimer", api().synchronize));
  return call("cudaTimer", api().event_elapsed_ms, gTimer[0], gTimer[1], ms);
}

Status CudaBackend::flushCaches() { return call("cudaFlushL2", api().flush_l2); }

// The words in FlagWord order; the quantizer's word is 1 for NaN
// (moe_cuda_quantize's convention), the others hold MOE_CUDA_FLAG_* bits.
Status CudaBackend::flagsStatus(const int32_t* words, const std::string& prefix) const {
  for (int i = 0; i < kNumFlagWords; ++i) {
    if (words[i] != 0) return statusFromFlags(static_cast<FlagOp>(i), words[i], prefix);
  }
  return Status::ok();
}

}  // namespace moe::cuda
