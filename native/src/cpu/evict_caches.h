// Evicting a buffer from every cache level, for the benchmarks: a model's
// layers each read their weights from memory (a whole model's weights are far
// beyond any cache), while one layer timed alone would find its weights left
// in the last-level cache by the previous run. Evicting only the weights keeps
// what a serving loop does keep cached: code, page tables, workspaces.
#pragma once

#include <cstddef>

namespace moe::cpu {

// Writes back and invalidates every cache line of [data, data + bytes)
// (CLFLUSHOPT where the CPU has it, else CLFLUSH). Returns false where there
// is no such instruction (not x86), having done nothing.
bool evictFromCaches(const void* data, size_t bytes);

}  // namespace moe::cpu
