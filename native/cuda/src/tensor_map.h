// TMA tensor maps, encoded with cuTensorMapEncodeTiled reached through the
// runtime's driver entry point (the plug-in never links libcuda).
#pragma once

#include <cuda.h>  // CUtensorMap and enums only: header types, no libcuda symbols
#include <stddef.h>
#include <stdint.h>

namespace moe_cuda {

// Whether cuTensorMapEncodeTiled can be obtained from the installed driver.
// On failure writes why into (err, len).
bool tensor_map_available(char* err, size_t len);

// Encodes a rank-3 tiled tensor map:
//   dims    = {inner, middle, outer} extents in elements
//   strides = byte strides of the middle and outer dimensions
//   box     = {inner, middle, outer} box extents in elements
// with 128-byte swizzle, no interleave, 256B L2 promotion, zero OOB fill.
// Validates the driver's documented constraints first (sm90_layouts.h,
// tma_desc_valid). Returns a moe_cuda_status.
int encode_tensor_map_3d(CUtensorMap* out, CUtensorMapDataType dtype, uint32_t elem_bytes, const void* base,
                         const uint64_t dims[3], const uint64_t strides[2], const uint32_t box[3], char* err,
                         size_t len);

}  // namespace moe_cuda
