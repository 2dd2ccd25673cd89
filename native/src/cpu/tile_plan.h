// How a packed GEMM cuts C [M, N] into tiles for the thread pool, shared by
// the FMA and AVX512_BF16 drivers (gemm_fp8.cpp, gemm_fp8_bf16.cpp): the grid
// with the smallest estimated makespan, where each driver states what a tile
// costs beyond its multiply-adds (packing or decoding its A and B panels).
#pragma once

#include <algorithm>
#include <cstdint>

namespace moe::cpu {

struct TilePlan {
  int64_t mc = 0, nc = 0;  // tile extents (nc a multiple of nr)
  int64_t mTiles = 0, nTiles = 0;
};

struct TileCosts {
  int64_t mcMax, ncMax;  // the largest tile the driver's scratch holds
  double perBColumn;     // cost per k of preparing one of a tile's nc B columns, in multiply-adds
  double perARow;        // the same for one of its mc A rows
};

// ceil(tiles / threads) rounds of a tile's cost per k: mc x nc multiply-adds
// (nc padded to nr), the panels' preparation, and a fixed ~2000 for the tile's
// loop overheads. A few candidate grids around the smallest are tried.
inline TilePlan planTiles(int64_t M, int64_t N, int64_t nr, int threads, const TileCosts& costs) {
  const auto ceilDiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  TilePlan best;
  double bestCost = 0.0;
  const int64_t mMin = ceilDiv(M, costs.mcMax), nMin = ceilDiv(N, costs.ncMax);
  for (int64_t mt = mMin; mt <= std::min(M, mMin + 8); ++mt) {
    const int64_t mc = ceilDiv(M, mt);
    for (int64_t want = nMin; want <= std::min(ceilDiv(N, nr), nMin + 16); ++want) {
      const int64_t nc = ceilDiv(ceilDiv(N, want), nr) * nr;
      const int64_t nt = ceilDiv(N, nc);
      const double rounds = static_cast<double>(ceilDiv(ceilDiv(M, mc) * nt, threads));
      const double cost = rounds * (static_cast<double>(mc) * nc + costs.perBColumn * nc + costs.perARow * mc + 2000.0);
      if (best.mc == 0 || cost < bestCost * 0.999) {
        best = TilePlan{mc, nc, ceilDiv(M, mc), nt};
        bestCost = cost;
      }
    }
  }
  return best;
}

}  // namespace moe::cpu
