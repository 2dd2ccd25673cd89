/* Loads libmoe_cuda.so the way the addon does (dlopen, RTLD_LOCAL, then its
 * one exported symbol, moe_cuda_get_api), checks the table it returns (every
 * entry point there, NULL for another ABI version), runs the probe and the
 * plug-in's guards. Needs no GPU: without a driver the probe must fail cleanly
 * with a reason, never crash.
 *
 *   cc -std=c99 -Inative/cuda/include native/cuda/test/dlopen_smoke.c -ldl -o smoke
 *   ./smoke build-cuda/libmoe_cuda.so
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "moe_cuda_api.h"

typedef int (*probe_fn)(char*, size_t, moe_cuda_device_info*);
typedef int (*gemm_fn)(const moe_cuda_gemm_args*, char*, size_t);
typedef int (*quantize_fn)(const moe_cuda_quantize_args*, char*, size_t);
typedef int (*dequantize_fn)(const moe_cuda_dequantize_args*, char*, size_t);
typedef int (*elapsed_fn)(moe_cuda_event, moe_cuda_event, float*, char*, size_t);

static int failures = 0;
static void expect(int ok, const char* what) {
  printf("  %s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s libmoe_cuda.so\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("  FAIL dlopen: %s\n", dlerror());
    return 1;
  }
  moe_cuda_get_api_fn get_api = (moe_cuda_get_api_fn)dlsym(lib, "moe_cuda_get_api");
  if (get_api == NULL) {
    printf("  FAIL missing symbol moe_cuda_get_api\n");
    return 1;
  }
  expect(get_api(MOE_CUDA_ABI_VERSION + 1) == NULL && get_api(0) == NULL, "another ABI version gets no table");
  const moe_cuda_api* api = get_api(MOE_CUDA_ABI_VERSION);
  if (api == NULL) {
    printf("  FAIL moe_cuda_get_api(%d) returned NULL\n", MOE_CUDA_ABI_VERSION);
    return 1;
  }
  expect(api->abi_version == MOE_CUDA_ABI_VERSION && api->size == sizeof(moe_cuda_api), "the table says its version and size");
  /* every member after the two header words is a function pointer */
  const size_t entries = (sizeof(moe_cuda_api) - 2 * sizeof(uint32_t)) / sizeof(void (*)(void));
  void (*const* fns)(void) = (void (*const*)(void))((const char*)api + 2 * sizeof(uint32_t));
  size_t missing = 0;
  for (size_t i = 0; i < entries; ++i) missing += fns[i] == NULL;
  expect(missing == 0, "every entry point of the table is set");
  expect(dlsym(lib, "moe_cuda_probe") == NULL && dlsym(lib, "moe_cuda_gemm_fp8") == NULL, "only moe_cuda_get_api is exported");
  probe_fn probe = api->probe;
  gemm_fn gemm = api->gemm_fp8;

  char reason[512] = "";
  moe_cuda_device_info info;
  memset(&info, 0, sizeof(info));
  const int rc = probe(reason, sizeof(reason), &info);
  printf("  probe: status %d, path %d, \"%s\"\n", rc, info.path, reason);
  expect((rc == MOE_CUDA_OK && info.path != MOE_CUDA_PATH_NONE) ||
             (rc != MOE_CUDA_OK && info.path == MOE_CUDA_PATH_NONE && reason[0] != '\0'),
         "probe gives a verdict with a reason");
  expect(probe(reason, sizeof(reason), NULL) == rc, "probe is idempotent");

  /* host checks run before any device work */
  moe_cuda_gemm_args a;
  memset(&a, 0, sizeof(a));
  a.m = 4;
  a.n = 8;
  a.k = 100;
  a.a_dtype = a.b_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  a.scale_dtype = MOE_CUDA_DTYPE_F32;
  a.d_dtype = MOE_CUDA_DTYPE_BF16;
  char err[256] = "";
  expect(gemm(&a, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE && strstr(err, "multiple of 16") != NULL,
         "K % 16 != 0 is a shape error");
  a.k = 128;
  a.d_dtype = MOE_CUDA_DTYPE_I32;
  expect(gemm(&a, err, sizeof(err)) == MOE_CUDA_ERR_DTYPE, "an i32 output is a dtype error");
  a.d_dtype = MOE_CUDA_DTYPE_BF16;
  a.n = (int64_t)1 << 32;
  expect(gemm(&a, err, sizeof(err)) == MOE_CUDA_ERR_RANGE, "N >= 2^31 is a range error");
  a.n = 8;
  a.kernel = 7;
  expect(gemm(&a, err, sizeof(err)) == MOE_CUDA_ERR_RANGE, "an unknown kernel selection is a range error");
  a.kernel = MOE_CUDA_KERNEL_AUTO;
  a.m = 0;
  const int empty = gemm(&a, err, sizeof(err));
  expect(rc == MOE_CUDA_OK ? empty == MOE_CUDA_OK : empty == rc, "M = 0 is a no-op (or reports the probe's verdict)");
  if (rc != MOE_CUDA_OK) {
    a.m = 4;
    a.a = a.b = a.d = (void*)16;
    a.sa = a.sb = (const float*)16;
    expect(gemm(&a, err, sizeof(err)) == rc && strstr(err, reason) != NULL,
           "without a device, ops fail with the probe's reason");
  }

  /* quantize / dequantize: host checks before any device work */
  quantize_fn quantize = api->quantize;
  dequantize_fn dequantize = api->dequantize;
  elapsed_fn elapsed = api->event_elapsed_ms;
  moe_cuda_quantize_args qa;
  memset(&qa, 0, sizeof(qa));
  qa.x = qa.q = (void*)16;
  qa.scales = (float*)16;
  qa.rows = 4;
  qa.cols = 256;
  qa.block_rows = 1;
  qa.x_dtype = MOE_CUDA_DTYPE_BF16;
  qa.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  qa.scale_dtype = MOE_CUDA_DTYPE_F32;
  qa.scale_format = MOE_CUDA_SCALE_UE8M0;
  expect(quantize(NULL, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE, "quantize: null args is a shape error");
  qa.cols = 100;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE && strstr(err, "multiple of 16") != NULL,
         "quantize: K % 16 != 0 is a shape error");
  qa.cols = 256;
  qa.block_rows = 64;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_RANGE && strstr(err, "block_rows") != NULL,
         "quantize: block_rows 64 is a range error");
  qa.block_rows = 128;
  qa.x_dtype = MOE_CUDA_DTYPE_I32;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_DTYPE, "quantize: an i32 x is a dtype error");
  qa.x_dtype = MOE_CUDA_DTYPE_F32;
  qa.scale_format = 2;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_RANGE, "quantize: an unknown scale format is a range error");
  qa.scale_format = MOE_CUDA_SCALE_F32;
  qa.rows = (int64_t)1 << 31;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_RANGE, "quantize: rows >= 2^31 is a range error");
  qa.rows = 4;
  qa.x = (void*)18;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_RANGE && strstr(err, "aligned") != NULL,
         "quantize: a misaligned f32 x is a range error");
  qa.x = NULL;
  expect(quantize(&qa, err, sizeof(err)) == MOE_CUDA_ERR_INTERNAL && strstr(err, "null") != NULL,
         "quantize: a null x is reported");
  qa.x = (void*)16;
  if (rc != MOE_CUDA_OK) {
    expect(quantize(&qa, err, sizeof(err)) == rc && strstr(err, reason) != NULL,
           "quantize: without a device, fails with the probe's reason");
  }
  moe_cuda_dequantize_args da;
  memset(&da, 0, sizeof(da));
  da.q = da.out = (void*)16;
  da.scales = (const float*)16;
  da.rows = 3;
  da.cols = 40;
  da.block_rows = 128;
  da.q_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  da.scale_dtype = MOE_CUDA_DTYPE_F32;
  da.out_dtype = MOE_CUDA_DTYPE_FP8_E4M3;
  expect(dequantize(&da, err, sizeof(err)) == MOE_CUDA_ERR_DTYPE, "dequantize: an fp8 output is a dtype error");
  da.out_dtype = MOE_CUDA_DTYPE_BF16;
  da.block_rows = 0;
  expect(dequantize(&da, err, sizeof(err)) == MOE_CUDA_ERR_RANGE, "dequantize: block_rows 0 is a range error");
  da.block_rows = 1;
  da.cols = -1;
  expect(dequantize(&da, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE, "dequantize: negative cols is a shape error");
  da.cols = 40;
  if (rc != MOE_CUDA_OK) {
    expect(dequantize(&da, err, sizeof(err)) == rc, "dequantize: without a device, fails with the probe's verdict");
  }
  float ms = -1.0f;
  expect(elapsed(NULL, NULL, &ms, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE && ms == 0.0f,
         "event_elapsed_ms: null events are a shape error");
  expect(elapsed(NULL, NULL, NULL, err, sizeof(err)) == MOE_CUDA_ERR_SHAPE, "event_elapsed_ms: null ms is a shape error");

  printf("  %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
