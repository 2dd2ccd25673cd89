// cuTensorMapEncodeTiled through cudaGetDriverEntryPointByVersion.
//
// The static CUDA runtime loads libcuda.so.1 itself at run time; asking it for
// the driver entry point keeps libcuda out of the plug-in's link line, so the
// library loads on machines without a driver and reports why it cannot run.
// (cudaGetDriverEntryPoint is deprecated as of CUDA 12.5 in favour of the
// ...ByVersion form, which pins the ABI version of the returned function: we
// request the CUDA 12.0 signature, PFN_cuTensorMapEncodeTiled_v12000.)

#include "tensor_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <mutex>

#include "common.h"
#include "sm90_layouts.h"

namespace moe_cuda {
namespace {

struct EncodeFn {
  PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  char error[256] = {0};
};

const EncodeFn& encode_fn() {
  static EncodeFn state;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &query);
    if (e != cudaSuccess) {
      snprintf(state.error, sizeof(state.error), "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled) failed: %s",
               cudaGetErrorString(e));
    } else if (query != cudaDriverEntryPointSuccess || p == nullptr) {
      snprintf(state.error, sizeof(state.error),
               "the NVIDIA driver does not provide cuTensorMapEncodeTiled (query result %d)", static_cast<int>(query));
    } else {
      state.fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    }
  });
  return state;
}

}  // namespace

bool tensor_map_available(char* err, size_t len) {
  const EncodeFn& f = encode_fn();
  if (f.fn == nullptr) {
    fail(MOE_CUDA_ERR_UNSUPPORTED, err, len, "%s", f.error);
    return false;
  }
  return true;
}

int encode_tensor_map_3d(CUtensorMap* out, CUtensorMapDataType dtype, uint32_t elem_bytes, const void* base,
                         const uint64_t dims[3], const uint64_t strides[2], const uint32_t box[3], char* err,
                         size_t len) {
  const sm90::TmaDesc3d desc{{dims[0], dims[1], dims[2]},
                             {strides[0], strides[1]},
                             {box[0], box[1], box[2]},
                             elem_bytes,
                             reinterpret_cast<uint64_t>(base),
                             true};
  if (!sm90::tma_desc_valid(desc)) {
    return fail(MOE_CUDA_ERR_INTERNAL, err, len,
                "TMA descriptor out of the hardware's limits (dims %llu x %llu x %llu, strides %llu/%llu B, "
                "box %u x %u x %u, address %p)",
                (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2],
                (unsigned long long)strides[0], (unsigned long long)strides[1], box[0], box[1], box[2], base);
  }
  const EncodeFn& f = encode_fn();
  if (f.fn == nullptr) return fail(MOE_CUDA_ERR_UNSUPPORTED, err, len, "%s", f.error);
  const cuuint64_t g_dims[3] = {dims[0], dims[1], dims[2]};
  const cuuint64_t g_strides[2] = {strides[0], strides[1]};
  const cuuint32_t b_dims[3] = {box[0], box[1], box[2]};
  const cuuint32_t e_strides[3] = {1, 1, 1};
  const CUresult r = f.fn(out, dtype, 3, const_cast<void*>(base), g_dims, g_strides, b_dims, e_strides,
                          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return fail(MOE_CUDA_ERR_INTERNAL, err, len, "cuTensorMapEncodeTiled failed with CUresult %d", static_cast<int>(r));
  }
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
