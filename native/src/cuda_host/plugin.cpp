#include "cuda_host/plugin.h"

#include <dlfcn.h>
#include <unistd.h>

namespace moe::cuda {

namespace {

// access() rather than stat(): stat's symbol version is newer than the glibc
// 2.28 baseline (see platform/glibc_compat.cpp).
bool fileExists(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

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
  const auto getApi = reinterpret_cast<moe_cuda_get_api_fn>(dlsym(library, "moe_cuda_get_api"));
  if (getApi == nullptr) {
    reason_ = "the CUDA plug-in at " + path_ + " lacks moe_cuda_get_api (an older or foreign build)";
    return;
  }
  const moe_cuda_api* table = getApi(MOE_CUDA_ABI_VERSION);
  if (table == nullptr || table->abi_version != MOE_CUDA_ABI_VERSION || table->size < sizeof(moe_cuda_api)) {
    reason_ = "the CUDA plug-in at " + path_ + " does not speak ABI " + std::to_string(MOE_CUDA_ABI_VERSION) +
              ", which this addon needs (rebuild it with npm run build:cuda)";
    return;
  }
  const PluginApi api = *table;
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
