// The plug-in's entry points, one per member of moe_cuda_api (documented in
// include/moe_cuda_api.h): defined by the plug-in's files (runtime,
// gemm_entry, quantize_entry, moe_ops_entry, graphs) or by its CPU emulation
// (test/emulator/), and gathered into the table by api_table.cpp. Not
// exported: the library's one exported symbol is moe_cuda_get_api.
#pragma once

#include "moe_cuda_api.h"

#ifdef __cplusplus
extern "C" {
#endif

int moe_cuda_probe(char* reason, size_t reason_len, moe_cuda_device_info* info);
int moe_cuda_alloc(size_t bytes, void** ptr, char* err, size_t err_len);
int moe_cuda_free(void* ptr, char* err, size_t err_len);
int moe_cuda_copy_h2d(void* dst_device, const void* src_host, size_t bytes, char* err, size_t err_len);
int moe_cuda_copy_d2h(void* dst_host, const void* src_device, size_t bytes, char* err, size_t err_len);
int moe_cuda_copy_d2d(void* dst_device, const void* src_device, size_t bytes, char* err, size_t err_len);
int moe_cuda_memset(void* dst_device, int value, size_t bytes, char* err, size_t err_len);
int moe_cuda_host_register(void* host, size_t bytes, char* err, size_t err_len);
int moe_cuda_synchronize(char* err, size_t err_len);
int moe_cuda_launch_host_callback(void (*fn)(void* user), void* user, char* err, size_t err_len);
int moe_cuda_poll_error(char* err, size_t err_len);
int moe_cuda_event_create_timed(moe_cuda_event* event, char* err, size_t err_len);
int moe_cuda_event_record(moe_cuda_event event, char* err, size_t err_len);
int moe_cuda_event_elapsed_ms(moe_cuda_event start, moe_cuda_event end, float* ms, char* err, size_t err_len);
int moe_cuda_flush_l2(char* err, size_t err_len);
int moe_cuda_get_stream(void** stream, char* err, size_t err_len);
int moe_cuda_gemm_fp8(const moe_cuda_gemm_args* args, char* err, size_t err_len);
int moe_cuda_grouped_gemm_fp8(const moe_cuda_grouped_gemm_args* args, char* err, size_t err_len);
int moe_cuda_grouped_gemm_fp8_masked(const moe_cuda_masked_gemm_args* args, char* err, size_t err_len);
int moe_cuda_quantize(const moe_cuda_quantize_args* args, char* err, size_t err_len);
int moe_cuda_dequantize(const moe_cuda_dequantize_args* args, char* err, size_t err_len);
int moe_cuda_router_logits(const moe_cuda_router_logits_args* args, char* err, size_t err_len);
int moe_cuda_route(const moe_cuda_route_args* args, char* err, size_t err_len);
int moe_cuda_dispatch_layout(const moe_cuda_layout_args* args, char* err, size_t err_len);
int moe_cuda_dispatch(const moe_cuda_dispatch_args* args, char* err, size_t err_len);
int moe_cuda_swiglu(const moe_cuda_swiglu_args* args, char* err, size_t err_len);
int moe_cuda_combine(const moe_cuda_combine_args* args, char* err, size_t err_len);
int moe_cuda_graph_begin_capture(char* err, size_t err_len);
int moe_cuda_graph_end_capture(moe_cuda_graph* graph, char* err, size_t err_len);
int moe_cuda_graph_launch(moe_cuda_graph graph, char* err, size_t err_len);
int moe_cuda_graph_destroy(moe_cuda_graph graph, char* err, size_t err_len);

#ifdef __cplusplus
} /* extern "C" */
#endif
