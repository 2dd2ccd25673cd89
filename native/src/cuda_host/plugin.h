// The CUDA plug-in (libmoe_cuda.so), loaded with dlopen() at run time: the
// addon itself never links CUDA, so it loads and runs on the CPU on machines
// without a driver, a GPU or the toolkit. Everything here is plain C++.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "moe_cuda_api.h"

namespace moe::cuda {

// The plug-in's entry points, resolved by name.
struct PluginApi {
  decltype(&moe_cuda_abi_version) abiVersion = nullptr;
  decltype(&moe_cuda_probe) probe = nullptr;
  decltype(&moe_cuda_alloc) alloc = nullptr;
  decltype(&moe_cuda_free) free = nullptr;
  decltype(&moe_cuda_copy_h2d) copyH2D = nullptr;
  decltype(&moe_cuda_copy_d2h) copyD2H = nullptr;
  decltype(&moe_cuda_copy_d2d) copyD2D = nullptr;
  decltype(&moe_cuda_synchronize) synchronize = nullptr;
  decltype(&moe_cuda_launch_host_callback) launchHostCallback = nullptr;
  decltype(&moe_cuda_get_stream) getStream = nullptr;
  decltype(&moe_cuda_poll_error) pollError = nullptr;
  decltype(&moe_cuda_host_register) hostRegister = nullptr;
  decltype(&moe_cuda_gemm_fp8) gemmFp8 = nullptr;
  decltype(&moe_cuda_grouped_gemm_fp8) groupedGemmFp8 = nullptr;
  decltype(&moe_cuda_grouped_gemm_fp8_masked) groupedGemmFp8Masked = nullptr;
  decltype(&moe_cuda_quantize) quantize = nullptr;
  decltype(&moe_cuda_dequantize) dequantize = nullptr;
  decltype(&moe_cuda_event_create_timed) eventCreateTimed = nullptr;
  decltype(&moe_cuda_event_record) eventRecord = nullptr;
  decltype(&moe_cuda_event_elapsed_ms) eventElapsedMs = nullptr;
  decltype(&moe_cuda_flush_l2) flushL2 = nullptr;
  decltype(&moe_cuda_memset) memset = nullptr;
  decltype(&moe_cuda_router_logits) routerLogits = nullptr;
  decltype(&moe_cuda_route) route = nullptr;
  decltype(&moe_cuda_dispatch_layout) dispatchLayout = nullptr;
  decltype(&moe_cuda_dispatch) dispatch = nullptr;
  decltype(&moe_cuda_swiglu) swiglu = nullptr;
  decltype(&moe_cuda_combine) combine = nullptr;
  decltype(&moe_cuda_graph_begin_capture) graphBeginCapture = nullptr;
  decltype(&moe_cuda_graph_end_capture) graphEndCapture = nullptr;
  decltype(&moe_cuda_graph_launch) graphLaunch = nullptr;
  decltype(&moe_cuda_graph_destroy) graphDestroy = nullptr;
};

class Plugin {
 public:
  static Plugin& instance();

  // Loads the first candidate path that exists (once; later calls return the
  // first result, concurrent ones wait for it). Never throws and never
  // crashes on a missing library, a missing symbol, an ABI mismatch, a
  // missing driver or an unsupported GPU: each becomes the reason string.
  void load(const std::vector<std::string>& candidates);

  bool loaded() const { return loaded_.load(std::memory_order_acquire); }
  bool available() const { return available_; }
  // Why the CUDA backend is unavailable, or which path it runs when it is.
  const std::string& reason() const { return reason_; }
  const std::string& path() const { return path_; }
  const moe_cuda_device_info& device() const { return device_; }
  const PluginApi& api() const { return api_; }

  // Fails with ERR_MOE_DEVICE (naming the reason) when the plug-in cannot run.
  Status expectAvailable(const char* what) const;

 private:
  void loadOnce(const std::vector<std::string>& candidates);

  std::mutex loadMutex_;
  std::atomic<bool> loaded_{false};  // set last: the fields below are complete once it reads true
  bool available_ = false;
  std::string reason_ = "the CUDA plug-in has not been looked for";
  std::string path_;
  moe_cuda_device_info device_{};
  PluginApi api_;
};

// Turns a plug-in status and message into a Status.
Status fromPlugin(int status, const char* message, const char* what);

}  // namespace moe::cuda
