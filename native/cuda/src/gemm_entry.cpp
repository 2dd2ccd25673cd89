// The FP8 GEMM entry points (dense, contiguous grouped, masked grouped):
// the guards on their operands, then the choice between the Hopper (sm_90a)
// and the SIMT kernels.
#include <stdint.h>

#include "api_entry.h"
#include "gemm_problem.h"
#include "runtime.h"
#include "sm80_simt_fp8_gemm.h"
#include "sm90_fp8_gemm.h"
#include "sm90_fp8_gemm_heuristics.h"

namespace moe_cuda {
namespace {

int check_dtypes(const char* op, int32_t a, int32_t b, int32_t scale, int32_t d, char* err, size_t err_len) {
  if (a != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: A must be fp8_e4m3 (dtype %d)", op, a);
  if (b != MOE_CUDA_DTYPE_FP8_E4M3) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: B must be fp8_e4m3 (dtype %d)", op, b);
  if (scale != MOE_CUDA_DTYPE_F32) return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: scales must be f32 (dtype %d)", op, scale);
  if (d != MOE_CUDA_DTYPE_BF16 && d != MOE_CUDA_DTYPE_F32) {
    return fail(MOE_CUDA_ERR_DTYPE, err, err_len, "%s: the output must be bf16 or f32 (dtype %d)", op, d);
  }
  return MOE_CUDA_OK;
}

int check_k(const char* op, int64_t k, char* err, size_t err_len) {
  const int rc = check_extent(op, "K", k, 16, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  if (k % 16 != 0) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: K = %lld must be a multiple of 16", op, (long long)k);
  return MOE_CUDA_OK;
}

int check_kernel_choice(const char* op, int32_t kernel, char* err, size_t err_len) {
  if (kernel != MOE_CUDA_KERNEL_AUTO && kernel != MOE_CUDA_KERNEL_SIMT && kernel != MOE_CUDA_KERNEL_HOPPER) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: unknown kernel selection %d", op, kernel);
  }
  return MOE_CUDA_OK;
}

// The Hopper dense GEMM, split over K when its tiles would leave most SMs
// idle (split_k_workspace.h): both of a split GEMM's launches reach the
// stream while it holds the workspace's lock.
int run_sm90_dense(GemmProblem q, uint32_t block_m, cudaStream_t stream, char* err, size_t err_len) {
  State& s = state();
  const uint32_t splits = split_k_count(s.split, q, block_m, s.info.sm_count);
  if (splits < 2) return sm90_fp8_gemm_dense(q, block_m, s.info.sm_count, stream, err, err_len);
  q.k_splits = int32_t(splits);
  q.split_workspace = s.split.data;
  std::lock_guard<std::mutex> lock(s.split.lock);
  return sm90_fp8_gemm_dense(q, block_m, s.info.sm_count, stream, err, err_len);
}

// Chooses Hopper or SIMT and enqueues the kernel.
int run_gemm(const char* op, const GemmProblem& p, int32_t kernel, char* err, size_t err_len) {
  cudaStream_t stream = nullptr;
  const int rc = ready(&stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  const State& s = state();
  if (kernel == MOE_CUDA_KERNEL_AUTO) kernel = s.gemm_kernel;
  const bool hopper_device = s.info.path == MOE_CUDA_PATH_HOPPER;
  if (kernel == MOE_CUDA_KERNEL_HOPPER && !hopper_device) {
    return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: the Hopper kernels cannot run here (%s)", op, s.reason);
  }
  if (kernel != MOE_CUDA_KERNEL_SIMT && hopper_device) {
    char why[256] = {0};
    if (sm90_fp8_gemm_eligible(p, why, sizeof(why))) {
      const Sm90Choice c = sm90_fp8_gemm_choose(p, s.info.sm_count);
      GemmProblem q = p;
      q.hang_trap_ns = s.hang_trap_ns;
      switch (q.layout) {
        case GemmLayout::kDense:
          return run_sm90_dense(q, c.block_m, stream, err, err_len);
        case GemmLayout::kContiguous:
          return sm90_fp8_gemm_contiguous(q, c.block_m, s.info.sm_count, stream, err, err_len);
        case GemmLayout::kMasked:
          return sm90_fp8_gemm_masked(q, c.block_m, s.info.sm_count, stream, err, err_len);
      }
    }
    if (kernel == MOE_CUDA_KERNEL_HOPPER) {
      return fail(MOE_CUDA_ERR_UNSUPPORTED, err, err_len, "%s: the Hopper kernels cannot take this problem: %s", op, why);
    }
  }
  return simt_fp8_gemm_run(p, stream, err, err_len);
}

}  // namespace
}  // namespace moe_cuda

using namespace moe_cuda;

extern "C" {

// The operands every GEMM entry point shares (A, B, their scales, D), checked
// for null (with the layout's index array, `index` named `indexName`, before
// D) and copied into the problem; the callers add their layout's rows, groups
// and index arrays. Args: any of the three GEMM argument structs.
extern "C++" {  // a template, inside this file's extern "C" block
template <typename Args>
static int common_operands(const char* op, const Args* args, GemmLayout layout, const void* index, const char* indexName,
                           GemmProblem* p, char* err, size_t err_len) {
  if (!args->a) return null_pointer(op, "A", err, err_len);
  if (!args->sa) return null_pointer(op, "scales of A", err, err_len);
  if (!args->b) return null_pointer(op, "B", err, err_len);
  if (!args->sb) return null_pointer(op, "scales of B", err, err_len);
  if (indexName && !index) return null_pointer(op, indexName, err, err_len);
  if (!args->d) return null_pointer(op, "D", err, err_len);
  *p = GemmProblem{};
  p->layout = layout;
  p->a = static_cast<const uint8_t*>(args->a);
  p->sa = args->sa;
  p->b = static_cast<const uint8_t*>(args->b);
  p->sb = args->sb;
  p->d = args->d;
  p->d_f32 = args->d_dtype == MOE_CUDA_DTYPE_F32;
  p->n = args->n;
  p->k = args->k;
  return MOE_CUDA_OK;
}
}  // extern "C++"

int moe_cuda_gemm_fp8(const moe_cuda_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "gemm_fp8";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "M", args->m, 0, err, err_len)) || (rc = check_extent(op, "N", args->n, 1, err, err_len)) ||
      (rc = check_k(op, args->k, err, err_len)) || (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->m == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kDense, nullptr, nullptr, &p, err, err_len))) return rc;
  p.rows = args->m;
  p.groups = 1;
  return run_gemm(op, p, args->kernel, err, err_len);
}

int moe_cuda_grouped_gemm_fp8(const moe_cuda_grouped_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "grouped_gemm_fp8";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "R", args->r, 0, err, err_len)) || (rc = check_extent(op, "N", args->n, 1, err, err_len)) ||
      (rc = check_k(op, args->k, err, err_len)) || (rc = check_extent(op, "G", args->g, 1, err, err_len)) ||
      (rc = check_extent(op, "align", args->align, 1, err, err_len)) || (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->r == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kContiguous, args->group_index, "groupIndex", &p, err, err_len))) return rc;
  p.rows = args->r;
  p.groups = args->g;
  p.group_index = args->group_index;
  p.segment_align = args->align;
  return run_gemm(op, p, args->kernel, err, err_len);
}

int moe_cuda_grouped_gemm_fp8_masked(const moe_cuda_masked_gemm_args* args, char* err, size_t err_len) {
  static const char* op = "grouped_gemm_fp8_masked";
  if (args == nullptr) return fail(MOE_CUDA_ERR_SHAPE, err, err_len, "%s: args is null", op);
  int rc;
  if ((rc = check_dtypes(op, args->a_dtype, args->b_dtype, args->scale_dtype, args->d_dtype, err, err_len)) ||
      (rc = check_extent(op, "G", args->g, 1, err, err_len)) ||
      (rc = check_extent(op, "Mmax", args->m_max, 0, err, err_len)) ||
      (rc = check_extent(op, "N", args->n, 1, err, err_len)) || (rc = check_k(op, args->k, err, err_len)) ||
      (rc = check_kernel_choice(op, args->kernel, err, err_len))) {
    return rc;
  }
  if (args->expected_m < 0) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: expectedM = %lld must be >= 0", op, (long long)args->expected_m);
  }
  if (args->g * args->m_max > kMaxExtent) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "%s: G * Mmax = %lld exceeds 2^31 - 1", op,
                (long long)(args->g * args->m_max));
  }
  if (args->m_max == 0) return ready(nullptr, err, err_len);
  GemmProblem p;
  if ((rc = common_operands(op, args, GemmLayout::kMasked, args->masked_m, "maskedM", &p, err, err_len))) return rc;
  p.rows = args->m_max;
  p.groups = args->g;
  p.masked_m = args->masked_m;
  p.expected_m = args->expected_m;
  return run_gemm(op, p, args->kernel, err, err_len);
}

}  // extern "C"
