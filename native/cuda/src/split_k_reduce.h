// The second half of the Hopper dense GEMM's split-K (sm90_layouts.h): adds
// the f32 partial slices of the workspace in split order into D.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

namespace moe_cuda {

// d[i] = sum over s = 0 .. splits-1, in that order, of partial[s * count + i],
// for i < count (count % 4 == 0; partial 16-byte aligned), as f32 or as bf16
// rounded to nearest even. Enqueued on `stream`.
int split_k_reduce(const float* partial /* [splits, count] f32 */, int32_t splits, int64_t count, void* d, bool d_f32,
                   cudaStream_t stream, char* err, size_t err_len);

}  // namespace moe_cuda
