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

// The plug-in's entry points: the table its one exported symbol,
// moe_cuda_get_api, returns for this addon's ABI version.
using PluginApi = moe_cuda_api;

class Plugin {
 public:
  static Plugin& instance();

  // Loads the first candidate path that exists (once; later calls return the
  // first result, concurrent ones wait for it). Never throws and never
  // crashes on a missing library, a missing symbol, an ABI mismatch, a
  // missing driver or an unsupported GPU: each becomes the reason string.
  // Until a load succeeds, api() is a table whose entries are all null.
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
  PluginApi api_{};
};

// Turns a plug-in status and message into a Status.
Status fromPlugin(int status, const char* message, const char* what);

}  // namespace moe::cuda
