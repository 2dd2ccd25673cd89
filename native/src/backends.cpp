// The table of backends, one per device: the only place that names them.
#include "core/backend.h"
#include "cpu/cpu_backend.h"
#include "cuda_host/cuda_backend.h"

namespace moe {

Backend& backendFor(Device device) {
  switch (device) {
    case Device::kCuda: return cuda::cudaBackend();
    case Device::kCpu: break;
  }
  return cpu::cpuBackend();
}

}  // namespace moe
