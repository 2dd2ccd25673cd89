// moe_cuda_get_api: the plug-in's one exported symbol, the table of its
// entry points (api_entry.h). Free of CUDA headers: the CPU emulation of the
// plug-in (test/emulator/) builds the same table over its own entry points.
#include "api_entry.h"

namespace {

const moe_cuda_api kApi = {
    MOE_CUDA_ABI_VERSION,
    sizeof(moe_cuda_api),
    moe_cuda_probe,
    moe_cuda_alloc,
    moe_cuda_free,
    moe_cuda_copy_h2d,
    moe_cuda_copy_d2h,
    moe_cuda_copy_d2d,
    moe_cuda_memset,
    moe_cuda_host_register,
    moe_cuda_synchronize,
    moe_cuda_launch_host_callback,
    moe_cuda_poll_error,
    moe_cuda_event_create_timed,
    moe_cuda_event_record,
    moe_cuda_event_elapsed_ms,
    moe_cuda_flush_l2,
    moe_cuda_get_stream,
    moe_cuda_gemm_fp8,
    moe_cuda_grouped_gemm_fp8,
    moe_cuda_grouped_gemm_fp8_masked,
    moe_cuda_quantize,
    moe_cuda_dequantize,
    moe_cuda_router_logits,
    moe_cuda_route,
    moe_cuda_dispatch_layout,
    moe_cuda_dispatch,
    moe_cuda_swiglu,
    moe_cuda_combine,
    moe_cuda_graph_begin_capture,
    moe_cuda_graph_end_capture,
    moe_cuda_graph_launch,
    moe_cuda_graph_destroy,
};

}  // namespace

extern "C" MOE_CUDA_API const moe_cuda_api* moe_cuda_get_api(uint32_t abi_version) {
  return abi_version == MOE_CUDA_ABI_VERSION ? &kApi : nullptr;
}
