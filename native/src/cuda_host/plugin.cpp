#include "cuda_host/plugin.h"

#include <dlfcn.h>
#include <unistd.h>

namespace moe::cuda {

namespace {

// access() rather than stat(): stat's symbol version is newer than the glibc
// 2.28 baseline (see platform/glibc_compat.cpp).
bool fileExists(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

template <typename Fn>
bool resolve(void* library, const char* name, Fn* out, std::string* missing) {
  *out = reinterpret_cast<Fn>(dlsym(library, name));
  if (*out == nullptr && missing->empty()) *missing = name;
  return *out != nullptr;
}

}  // namespace

Plugin& Plugin::instance() {
  static Plugin plugin;
  return plugin;
}

void Plugin::load(const std::vector<std::string>& candidates) {
  // NOTE: worker threads may reach here at the same time (each JS environment
  // loads the backend on first use): one loads, the others wait for its
  // verdict instead of reading a half-written one.
  std::lock_guard<std::mutex> lock(loadMutex_);
  if (loaded_.load(std::memory_order_acquire)) return;
  loadOnce(candidates);
  loaded_.store(true, std::memory_order_release);
}

void Plugin::loadOnce(const std::vector<std::string>& candidates) {
  for (const std::string& candidate : candidates) {
    if (fileExists(candidate)) {
      path_ = candidate;
      break;
    }
  }
  if (path_.empty()) {
    reason_ = "the CUDA plug-in is not built (npm run build:cuda builds libmoe_cuda.so)";
    return;
  }
  // RTLD_LOCAL: the plug-in's static CUDA runtime stays out of the global namespace.
  void* library = dlopen(path_.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* error = dlerror();
    reason_ = std::string("cannot load the CUDA plug-in: ") + (error ? error : path_);
    return;
  }
  std::string missing;
  PluginApi api;
  resolve(library, "moe_cuda_abi_version", &api.abiVersion, &missing);
  resolve(library, "moe_cuda_probe", &api.probe, &missing);
  resolve(library, "moe_cuda_alloc", &api.alloc, &missing);
  resolve(library, "moe_cuda_free", &api.free, &missing);
  resolve(library, "moe_cuda_copy_h2d", &api.copyH2D, &missing);
  resolve(library, "moe_cuda_copy_d2h", &api.copyD2H, &missing);
  resolve(library, "moe_cuda_copy_d2d", &api.copyD2D, &missing);
  resolve(library, "moe_cuda_synchronize", &api.synchronize, &missing);
  resolve(library, "moe_cuda_launch_host_callback", &api.launchHostCallback, &missing);
  resolve(library, "moe_cuda_get_stream", &api.getStream, &missing);
  resolve(library, "moe_cuda_poll_error", &api.pollError, &missing);
  resolve(library, "moe_cuda_host_register", &api.hostRegister, &missing);
  resolve(library, "moe_cuda_gemm_fp8", &api.gemmFp8, &missing);
  resolve(library, "moe_cuda_grouped_gemm_fp8", &api.groupedGemmFp8, &missing);
  resolve(library, "moe_cuda_grouped_gemm_fp8_masked", &api.groupedGemmFp8Masked, &missing);
  resolve(library, "moe_cuda_quantize", &api.quantize, &missing);
  resolve(library, "moe_cuda_dequantize", &api.dequantize, &missing);
  resolve(library, "moe_cuda_event_create_timed", &api.eventCreateTimed, &missing);
  resolve(library, "moe_cuda_event_record", &api.eventRecord, &missing);
  resolve(library, "moe_cuda_event_elapsed_ms", &api.eventElapsedMs, &missing);
  resolve(library, "moe_cuda_flush_l2", &api.flushL2, &missing);
  resolve(library, "moe_cuda_memset", &api.memset, &missing);
  resolve(library, "moe_cuda_router_logits", &api.routerLogits, &missing);
  resolve(library, "moe_cuda_route", &api.route, &missing);
  resolve(library, "moe_cuda_dispatch_layout", &api.dispatchLayout, &missing);
  resolve(library, "moe_cuda_dispatch", &api.dispatch, &missing);
  resolve(library, "moe_cuda_swiglu", &api.swiglu, &missing);
  resolve(library, "moe_cuda_combine", &api.combine, &missing);
  resolve(library, "moe_cuda_graph_begin_capture", &api.graphBeginCapture, &missing);
  resolve(library, "moe_cuda_graph_end_capture", &api.graphEndCapture, &missing);
  resolve(library, "moe_cuda_graph_launch", &api.graphLaunch, &missing);
  resolve(library, "moe_cuda_graph_destroy", &api.graphDestroy, &missing);
  if (!missing.empty()) {
    reason_ = "the CUDA plug-in at " + path_ + " lacks " + missing + " (an older or foreign build)";
    return;
  }
  const uint32_t version = api.abiVersion();
  if (version != MOE_CUDA_ABI_VERSION) {
    reason_ = "the CUDA plug-in speaks ABI " + std::to_string(version) + ", this addon needs " +
              std::to_string(MOE_CUDA_ABI_VERSION) + " (rebuild it with npm run build:cuda)";
    return;
  }
  char reason[512] = {0};
  const int status = api.probe(reason, sizeof reason, &device_);
  reason_ = reason[0] ? reason : (status == MOE_CUDA_OK ? "usable" : "the CUDA device is not usable");
  available_ = status == MOE_CUDA_OK;
  api_ = api;
}

Status Plugin::expectAvailable(const char* what) const {
  if (available_) return Status::ok();
  return Status(Code::kDevice, std::string(what) + ": the CUDA backend is not available: " + reason_);
}

Status fromPlugin(int status, const char* message, const char* what) {
  if (status == MOE_CUDA_OK) return Status::ok();
  const std::string text = std::string(what) + ": " + (message && message[0] ? message : "CUDA error");
  switch (status) {
    case MOE_CUDA_ERR_SHAPE: return Status(Code::kShape, text);
    case MOE_CUDA_ERR_DTYPE: return Status(Code::kDtype, text);
    case MOE_CUDA_ERR_RANGE: return Status(Code::kRange, text);
    case MOE_CUDA_ERR_NONFINITE: return Status(Code::kNonFinite, text);
    case MOE_CUDA_ERR_UNSUPPORTED: return Status(Code::kUnsupported, text);
    default: return Status(Code::kInternal, text);
  }
}

}  // namespace moe::cuda
