// Host-only check of the fp8 quantize / dequantize kernels' math
// (src/quantize_math.cuh) against the CPU backend itself: core/numerics.h
// (fp8FromFloat, fp8ToFloat, bf16FromFloat) and cpu/quantize.cpp (groupScale,
// quantizeBlocks, dequantizeBlocks), linked in from native/src. Compiled by
// nvcc as host code; runs without a GPU (scripts/cuda/check-static.sh):
//
//   nvcc -std=c++17 -O2 -Inative/cuda/src -Inative/src native/cuda/test/quantize_math_test.cu \
//     native/src/cpu/{quantize,quantize_row_avx2,quantize_row_avx512,cpu_features,thread_pool}.cpp \
//     native/src/core/{numerics,status,tensor}.cpp -o quantize_math_test
//   ./quantize_math_test            # exhaustive sweeps + tensors (~1 min on 2 cores)
//   ./quantize_math_test --quick    # tensors only (e.g. again with MOE_CPU_ISA=portable)
//
// Bit-exact everywhere (no tolerance):
//   1. fp8_from_float == fp8FromFloat for all 2^32 floats, and CUDA's
//      __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) (host path = the
//      sm_80 device path) == fp8FromFloat for all 2^32 floats except NaN
//      payloads (CUDA gives 0x7F for every NaN too: reported separately);
//   2. ue8m0_ceil == ldexp(1, frexp ...) (groupScale's rounding) for all 2^32;
//      group_scale == groupScale for every non-negative amax bit pattern
//      (+0 .. +inf, and every NaN) in both formats, plus negatives sampled;
//   3. bf16_from_float == bf16FromFloat for all 2^32; fp8_to_float ==
//      fp8ToFloat for all 256 codes; dequantize_value == the CPU's
//      decode * s for all 256 codes x special and random scales;
//   4. whole tensors: a model of each kernel's thread mapping (warp lanes,
//      shuffle tree, the 128x128 block's 8 warps) built from these functions
//      == quantizeBlocks / dequantizeBlocks (bf16/f32 in and out, f32/ue8m0,
//      block_rows 1 and 128, row/column tails, zero rows, huge/tiny ranges,
//      NaN/inf with the non-finite verdict).
#include <cuda_fp8.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "core/numerics.h"
#include "core/ops.h"
#include "cpu/quantize.h"
#include "quantize_math.cuh"

namespace q = moe_cuda::quant;

static int g_failures = 0;
static int g_checks = 0;

static void expect(bool ok, const char* what) {
  ++g_checks;
  printf("  %s %s\n", ok ? "ok  " : "FAIL", what);
  fflush(stdout);
  if (!ok) ++g_failures;
}

static uint32_t bits_of(float x) { return moe::floatBits(x); }
static float from_bits(uint32_t b) { return moe::floatFromBits(b); }
static bool same_bits(float a, float b) { return bits_of(a) == bits_of(b); }

// Runs fn(lo, hi, counters) over [0, 2^32) split across threads.
template <typename Fn>
static void sweep32(int threads, Fn fn) {
  std::vector<std::thread> pool;
  const uint64_t total = 1ull << 32;
  for (int t = 0; t < threads; ++t) {
    const uint64_t lo = total * t / threads, hi = total * (t + 1) / threads;
    pool.emplace_back([=] { fn(lo, hi); });
  }
  for (auto& th : pool) th.join();
}

static int sweep_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : (n > 4 ? 4 : static_cast<int>(n));
}

// ---- 1. float -> fp8 ---------------------------------------------------------
static void test_fp8_conversion_exhaustive() {
  std::atomic<uint64_t> ours_bad{0}, cuda_bad{0}, cuda_nan_bad{0}, first_ours{~0ull}, first_cuda{~0ull};
  sweep32(sweep_threads(), [&](uint64_t lo, uint64_t hi) {
    uint64_t ob = 0, cb = 0, cnb = 0;
    for (uint64_t i = lo; i < hi; ++i) {
      const float x = from_bits(static_cast<uint32_t>(i));
      const uint8_t ref = moe::fp8FromFloat(x);
      const uint8_t ours = q::fp8_from_float(x);
      const uint8_t cuda = static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
      if (ours != ref) {
        if (ob++ == 0) first_ours = i;
      }
      if (cuda != ref) {
        if (isnan(x)) {
          ++cnb;
        } else if (cb++ == 0) {
          first_cuda = i;
        }
      }
    }
    ours_bad += ob;
    cuda_bad += cb;
    cuda_nan_bad += cnb;
  });
  char what[200];
  snprintf(what, sizeof(what), "fp8_from_float == fp8FromFloat for all 2^32 floats (%llu differ, first 0x%08llx)",
           (unsigned long long)ours_bad.load(), (unsigned long long)(ours_bad ? first_ours.load() : 0));
  expect(ours_bad == 0, what);
  snprintf(what, sizeof(what),
           "__nv_cvt_float_to_fp8(SATFINITE, E4M3) host path == fp8FromFloat for all 2^32 floats "
           "(%llu non-NaN differ, first 0x%08llx; %llu NaN differ)",
           (unsigned long long)cuda_bad.load(), (unsigned long long)(cuda_bad ? first_cuda.load() : 0),
           (unsigned long long)cuda_nan_bad.load());
  expect(cuda_bad == 0 && cuda_nan_bad == 0, what);
}

static void test_fp8_conversion_special() {
  struct Case {
    float x;
    uint8_t want;
  };
  const Case cases[] = {
      {0.0f, 0x00},          {-0.0f, 0x80},        {448.0f, 0x7E},          {-448.0f, 0xFE},
      {463.99997f, 0x7E},    {464.0f, 0x7E},       {464.00003f, 0x7E},      {1e30f, 0x7E},
      {INFINITY, 0x7E},      {-INFINITY, 0xFE},    {NAN, 0x7F},             {-NAN, 0x7F},
      {0.001953125f, 0x01},  /* 2^-9: smallest subnormal */
      {0.0009765625f, 0x00}, /* 2^-10: tie to even -> 0 */
      {0.00097656256f, 0x01},/* just above 2^-10 */
      {-0.0009765625f, 0x80},{0.015625f, 0x08},    /* 2^-6: smallest normal */
      {1.0f, 0x38},          {1.0625f, 0x38},      /* tie 1 + 1/16 -> even 1.0 */
      {1.1875f, 0x3A},       /* tie 1 + 3/16 -> 1.25 */
      {240.0f, 0x77},        {1e-45f, 0x00},       {-1e-45f, 0x80},
  };
  int bad = 0;
  for (const Case& c : cases) {
    const uint8_t got = q::fp8_from_float(c.x);
    if (got != c.want || moe::fp8FromFloat(c.x) != c.want) {
      printf("    x=%a: got 0x%02x, CPU 0x%02x, want 0x%02x\n", c.x, got, moe::fp8FromFloat(c.x), c.want);
      ++bad;
    }
  }
  expect(bad == 0, "fp8_from_float special cases (zeros, saturation at 464, inf, NaN -> 0x7F, subnormal ties)");
}

// ---- 2. scales -------------------------------------------------------------------
static float ue8m0_reference(float s) {  // groupScale's rounding, verbatim
  int exponent = 0;
  const float mantissa = std::frexp(s, &exponent);
  return std::ldexp(1.0f, mantissa == 0.5f ? exponent - 1 : exponent);
}

static void test_ue8m0_exhaustive() {
  std::atomic<uint64_t> bad{0}, first{0};
  sweep32(sweep_threads(), [&](uint64_t lo, uint64_t hi) {
    uint64_t b = 0;
    for (uint64_t i = lo; i < hi; ++i) {
      const float s = from_bits(static_cast<uint32_t>(i));
      if (!same_bits(q::ue8m0_ceil(s), ue8m0_reference(s))) {
        if (b++ == 0) first = i;
      }
    }
    bad += b;
  });
  char what[160];
  snprintf(what, sizeof(what), "ue8m0_ceil == ldexp(1, frexp) rounding for all 2^32 floats (%llu differ, first 0x%08llx)",
           (unsigned long long)bad.load(), (unsigned long long)first.load());
  expect(bad == 0, what);
}

static void test_group_scale() {
  // every non-negative pattern: +0 .. +inf and the positive NaNs (amax is a max of |x|)
  std::atomic<uint64_t> bad{0}, first{0};
  std::vector<std::thread> pool;
  const int threads = sweep_threads();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      uint64_t b = 0;
      const uint64_t lo = (0x80000000ull * t) / threads, hi = (0x80000000ull * (t + 1)) / threads;
      for (uint64_t i = lo; i < hi; ++i) {
        const float amax = from_bits(static_cast<uint32_t>(i));
        if (!same_bits(q::group_scale(amax, false), moe::cpu::groupScale(amax, moe::ScaleFormat::kF32)) ||
            !same_bits(q::group_scale(amax, true), moe::cpu::groupScale(amax, moe::ScaleFormat::kUE8M0))) {
          if (b++ == 0) first = i;
        }
      }
      bad += b;
    });
  }
  for (auto& th : pool) th.join();
  char what[200];
  snprintf(what, sizeof(what),
           "group_scale == groupScale (f32 and ue8m0) for all 2^31 non-negative amax patterns (%llu differ, first 0x%08llx)",
           (unsigned long long)bad.load(), (unsigned long long)first.load());
  expect(bad == 0, what);
  // negatives (never an amax) and a few named values
  std::mt19937 rng(7);
  int nb = 0;
  for (int i = 0; i < 1000000; ++i) {
    const float a = from_bits(static_cast<uint32_t>(rng()) | 0x80000000u);
    nb += !same_bits(q::group_scale(a, false), moe::cpu::groupScale(a, moe::ScaleFormat::kF32));
    nb += !same_bits(q::group_scale(a, true), moe::cpu::groupScale(a, moe::ScaleFormat::kUE8M0));
  }
  const float named[] = {0.0f, 1e-4f, 9.9999e-5f, 1.00001e-4f, 448.0f, 1.0f, 3.5f, 65504.0f, 3.4e38f, INFINITY};
  for (float a : named) {
    nb += !same_bits(q::group_scale(a, false), moe::cpu::groupScale(a, moe::ScaleFormat::kF32));
    nb += !same_bits(q::group_scale(a, true), moe::cpu::groupScale(a, moe::ScaleFormat::kUE8M0));
  }
  expect(nb == 0, "group_scale == groupScale for 10^6 negative patterns and named values (1e-4 clamp, 448, inf)");
  expect(same_bits(q::group_scale(448.0f, true), 1.0f) && same_bits(q::group_scale(449.0f, true), 2.0f) &&
             same_bits(q::group_scale(0.0f, false), 1e-4f / 448.0f),
         "ue8m0: 448 -> 2^0, 449 -> 2^1; amax 0 -> 1e-4 / 448");
}

// ---- 3. bf16, fp8 decode, dequantize -------------------------------------------------
static void test_bf16_exhaustive() {
  std::atomic<uint64_t> bad{0};
  sweep32(sweep_threads(), [&](uint64_t lo, uint64_t hi) {
    uint64_t b = 0;
    for (uint64_t i = lo; i < hi; ++i) {
      const float x = from_bits(static_cast<uint32_t>(i));
      b += q::bf16_from_float(x) != moe::bf16FromFloat(x);
    }
    bad += b;
  });
  char what[120];
  snprintf(what, sizeof(what), "bf16_from_float == bf16FromFloat for all 2^32 floats (%llu differ)",
           (unsigned long long)bad.load());
  expect(bad == 0, what);
  int wb = 0;
  for (uint32_t v = 0; v < 65536; ++v) wb += !same_bits(q::bf16_to_float(static_cast<uint16_t>(v)), moe::bf16ToFloat(static_cast<uint16_t>(v)));
  expect(wb == 0, "bf16_to_float == bf16ToFloat for all 65536 codes");
}

static std::vector<float> special_scales(std::mt19937& rng) {
  std::vector<float> s = {1.0f,        0.5f,      2.0f,          1e-4f / 448.0f, 448.0f,   3.4e38f,  1e-38f,
                          1.4e-45f,    0.0f,      -0.0f,         -1.0f,          INFINITY, -INFINITY, NAN,
                          from_bits(0x7FA00001u), from_bits(0xFF800001u), 0.0078125f, 1.0f / 3.0f};
  std::uniform_real_distribution<float> u(-40.0f, 40.0f);
  for (int i = 0; i < 300; ++i) s.push_back(std::ldexp(1.0f + std::fabs(u(rng)) / 40.0f, static_cast<int>(u(rng))));
  for (int i = 0; i < 300; ++i) s.push_back(from_bits(static_cast<uint32_t>(rng())));
  return s;
}

static void test_decode_dequantize(std::mt19937& rng) {
  int bad = 0;
  for (int v = 0; v < 256; ++v) bad += !same_bits(q::fp8_to_float(uint8_t(v)), moe::fp8ToFloat(uint8_t(v)));
  expect(bad == 0, "fp8_to_float == fp8ToFloat for all 256 codes (NaN bits included)");
  // The CPU's dequantizeBlocks computes decode[q] * s with the table; compare
  // with a direct call on a [1, 256] tensor per scale so the CPU's own code runs.
  const std::vector<float> scales = special_scales(rng);
  std::vector<uint8_t> codes(256);
  for (int v = 0; v < 256; ++v) codes[v] = uint8_t(v);
  int bad_f32 = 0, bad_bf16 = 0, bad_nan = 0;
  for (float s : scales) {
    float sc[2] = {s, s};
    std::vector<float> out(256);
    std::vector<uint16_t> out16(256);
    moe::DequantizeArgs a;
    a.q = moe::TensorView::contiguous(codes.data(), moe::DType::kFP8E4M3, {1, 256});
    a.scales = moe::TensorView::contiguous(sc, moe::DType::kF32, {1, 2});
    a.blockRows = 1;
    a.out = moe::TensorView::contiguous(out.data(), moe::DType::kF32, {1, 256});
    moe::cpu::dequantizeBlocks(a);
    a.out = moe::TensorView::contiguous(out16.data(), moe::DType::kBF16, {1, 256});
    moe::cpu::dequantizeBlocks(a);
    for (int v = 0; v < 256; ++v) {
      const float got = q::dequantize_value(uint8_t(v), s);
      if (!same_bits(got, out[v])) {
        if (isnan(got) && isnan(out[v])) {
          ++bad_nan;
        } else {
          ++bad_f32;
        }
      }
      bad_bf16 += q::bf16_from_float(got) != out16[v] && !(isnan(got) && isnan(out[v]));
    }
  }
  char what[200];
  snprintf(what, sizeof(what), "dequantize_value == dequantizeBlocks (f32 and bf16 out) for 256 codes x %zu scales",
           scales.size());
  expect(bad_f32 == 0 && bad_bf16 == 0, what);
  snprintf(what, sizeof(what), "dequantize NaN results carry the CPU's NaN bits (%d differ)", bad_nan);
  expect(bad_nan == 0, what);
}

// ---- 4. whole tensors: models of the kernels' thread mapping ---------------------------

// warp_amax: the xor-shuffle tree over 32 lanes (every lane ends with the max).
static void warp_tree(float* lanes) {
  for (int off = 16; off > 0; off >>= 1) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = q::amax_step(lanes[l], lanes[l ^ off]);
    memcpy(lanes, next, sizeof(next));
  }
}

struct Model {
  std::vector<uint8_t> q;
  std::vector<float> scales;
  bool nonfinite = false;
};

static float load(const void* x, bool bf16, int64_t i) {
  return bf16 ? q::bf16_to_float(static_cast<const uint16_t*>(x)[i]) : static_cast<const float*>(x)[i];
}

// quantize_1x128_kernel: lane l of the warp for (row, g) holds columns l + 32 i.
static Model model_1x128(const void* x, bool bf16, int64_t rows, int64_t cols, bool ue8m0) {
  const int64_t groups = (cols + 127) / 128;
  Model m;
  m.q.assign(rows * cols, 0xEE);
  m.scales.assign(rows * groups, -1.0f);
  for (int64_t t = 0; t < rows * groups; ++t) {
    const int64_t row = t / groups, g = t % groups, c0 = g * 128;
    const int64_t n = cols - c0 < 128 ? cols - c0 : 128;
    const int64_t base = row * cols + c0;
    float lanes[32], v[32][4];
    for (int lane = 0; lane < 32; ++lane) {
      lanes[lane] = 0.0f;
      for (int i = 0; i < 4; ++i) {
        const int c = lane + 32 * i;
        v[lane][i] = 0.0f;
        if (c < n) {
          v[lane][i] = load(x, bf16, base + c);
          m.nonfinite |= !q::is_finite(v[lane][i]);
          lanes[lane] = q::amax_step(lanes[lane], v[lane][i]);
        }
      }
    }
    warp_tree(lanes);
    const float s = q::group_scale(lanes[0], ue8m0);
    m.scales[row * groups + g] = s;
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const int c = lane + 32 * i;
        if (c < n) m.q[base + c] = q::quantize_value(v[lane][i], s);
      }
    }
  }
  return m;
}

// quantize_128x128_kernel: warp w takes rows w, w + 8, ...; lanes as above;
// the 8 warp maxima are combined in warp order.
static Model model_128x128(const void* x, bool bf16, int64_t rows, int64_t cols, bool ue8m0) {
  const int64_t groups = (cols + 127) / 128, row_blocks = (rows + 127) / 128;
  Model m;
  m.q.assign(rows * cols, 0xEE);
  m.scales.assign(row_blocks * groups, -1.0f);
  for (int64_t t = 0; t < row_blocks * groups; ++t) {
    const int64_t rb = t / groups, g = t % groups, r0 = rb * 128, c0 = g * 128;
    const int64_t nr = rows - r0 < 128 ? rows - r0 : 128, nc = cols - c0 < 128 ? cols - c0 : 128;
    const int64_t base = r0 * cols + c0;
    float warp_max[8];
    for (int w = 0; w < 8; ++w) {
      float lanes[32];
      for (int lane = 0; lane < 32; ++lane) {
        lanes[lane] = 0.0f;
        for (int64_t r = w; r < nr; r += 8) {
          for (int i = 0; i < 4; ++i) {
            const int c = lane + 32 * i;
            if (c < nc) {
              const float v = load(x, bf16, base + r * cols + c);
              m.nonfinite |= !q::is_finite(v);
              lanes[lane] = q::amax_step(lanes[lane], v);
            }
          }
        }
      }
      warp_tree(lanes);
      warp_max[w] = lanes[0];
    }
    float amax = warp_max[0];
    for (int w = 1; w < 8; ++w) amax = q::amax_step(amax, warp_max[w]);
    const float s = q::group_scale(amax, ue8m0);
    m.scales[rb * groups + g] = s;
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t c = 0; c < nc; ++c) m.q[base + r * cols + c] = q::quantize_value(load(x, bf16, base + r * cols + c), s);
    }
  }
  return m;
}

// dequantize_kernel
static void model_dequantize(const uint8_t* qv, const float* scales, int64_t rows, int64_t cols, int64_t block_rows,
                             float* out32, uint16_t* out16) {
  const int64_t groups = (cols + 127) / 128;
  for (int64_t t = 0; t < rows * groups; ++t) {
    const int64_t row = t / groups, g = t % groups, c0 = g * 128;
    const int64_t n = cols - c0 < 128 ? cols - c0 : 128;
    const float s = scales[(row / block_rows) * groups + g];
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const int c = lane + 32 * i;
        if (c < n) {
          const float v = q::dequantize_value(qv[row * cols + c0 + c], s);
          out32[row * cols + c0 + c] = v;
          out16[row * cols + c0 + c] = q::bf16_from_float(v);
        }
      }
    }
  }
}

enum class Fill { kNormal, kWideRange, kTiny, kZeroRows, kNonFinite };

static void fill(std::vector<float>& x, int64_t rows, int64_t cols, Fill f, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> ex(-30, 30);
  for (int64_t i = 0; i < rows * cols; ++i) {
    switch (f) {
      case Fill::kNormal: x[i] = nd(rng) * 3.0f; break;
      case Fill::kWideRange: x[i] = std::ldexp(nd(rng), ex(rng)); break;
      case Fill::kTiny: x[i] = nd(rng) * 1e-6f; break;  // amax < 1e-4: the clamp
      case Fill::kZeroRows: x[i] = (i / cols) % 3 == 1 ? 0.0f : nd(rng); break;
      case Fill::kNonFinite: x[i] = nd(rng); break;
    }
  }
  if (f == Fill::kNonFinite) {
    x[(rows * cols) / 3] = NAN;
    x[(rows * cols) / 2] = INFINITY;
    x[rows * cols - 1] = -INFINITY;
    x[0] = -NAN;
  }
  if (f == Fill::kWideRange && rows * cols > 8) {
    x[1] = 1e30f;  // far above 448 * s of other groups
    x[5] = -1e-40f;  // subnormal input
  }
}

static void test_tensors(std::mt19937& rng) {
  const int64_t shapes[][2] = {{1, 16}, {3, 144}, {130, 400}, {257, 128}, {64, 1040}, {129, 16}};
  const Fill fills[] = {Fill::kNormal, Fill::kWideRange, Fill::kTiny, Fill::kZeroRows, Fill::kNonFinite};
  int cases = 0, bad_q = 0, bad_scales = 0, bad_verdict = 0, bad_deq = 0;
  for (const auto& sh : shapes) {
    const int64_t rows = sh[0], cols = sh[1];
    for (Fill f : fills) {
      std::vector<float> x32(rows * cols);
      fill(x32, rows, cols, f, rng);
      std::vector<uint16_t> x16(rows * cols);
      for (int64_t i = 0; i < rows * cols; ++i) x16[i] = moe::bf16FromFloat(x32[i]);
      for (int bf16 = 0; bf16 < 2; ++bf16) {
        for (int ue8m0 = 0; ue8m0 < 2; ++ue8m0) {
          for (int64_t block_rows : {int64_t(1), int64_t(128)}) {
            ++cases;
            const void* x = bf16 ? static_cast<const void*>(x16.data()) : static_cast<const void*>(x32.data());
            const int64_t groups = (cols + 127) / 128, rb = (rows + block_rows - 1) / block_rows;
            std::vector<uint8_t> qc(rows * cols, 0xEE);
            std::vector<float> sc(rb * groups, -1.0f);
            moe::QuantizeArgs a;
            a.x = moe::TensorView::contiguous(const_cast<void*>(x), bf16 ? moe::DType::kBF16 : moe::DType::kF32,
                                              {rows, cols});
            a.q = moe::TensorView::contiguous(qc.data(), moe::DType::kFP8E4M3, {rows, cols});
            a.scales = moe::TensorView::contiguous(sc.data(), moe::DType::kF32, {rb, groups});
            a.scaleFormat = ue8m0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
            const moe::Status st = moe::cpu::quantizeBlocks(a, block_rows);
            const Model m = block_rows == 1 ? model_1x128(x, bf16, rows, cols, ue8m0)
                                            : model_128x128(x, bf16, rows, cols, ue8m0);
            const bool cpu_nonfinite = !st.isOk() && st.code() == moe::Code::kNonFinite;
            if (m.q != qc) {
              ++bad_q;
              for (int64_t i = 0; i < rows * cols; ++i) {
                if (m.q[i] != qc[i]) {
                  printf("    q differs: rows %lld cols %lld fill %d bf16 %d ue8m0 %d block %lld at %lld: 0x%02x vs CPU 0x%02x\n",
                         (long long)rows, (long long)cols, int(f), bf16, ue8m0, (long long)block_rows, (long long)i,
                         m.q[i], qc[i]);
                  break;
                }
              }
            }
            bool scales_same = sc.size() == m.scales.size();
            for (size_t i = 0; scales_same && i < sc.size(); ++i) scales_same = same_bits(sc[i], m.scales[i]);
            bad_scales += !scales_same;
            bad_verdict += cpu_nonfinite != m.nonfinite || m.nonfinite != (f == Fill::kNonFinite);
            // dequantize what was quantized (block_rows of the scales)
            std::vector<float> d32(rows * cols), m32(rows * cols);
            std::vector<uint16_t> d16(rows * cols), m16(rows * cols);
            moe::DequantizeArgs d;
            d.q = a.q;
            d.scales = a.scales;
            d.blockRows = block_rows;
            d.out = moe::TensorView::contiguous(d32.data(), moe::DType::kF32, {rows, cols});
            moe::cpu::dequantizeBlocks(d);
            d.out = moe::TensorView::contiguous(d16.data(), moe::DType::kBF16, {rows, cols});
            moe::cpu::dequantizeBlocks(d);
            model_dequantize(qc.data(), sc.data(), rows, cols, block_rows, m32.data(), m16.data());
            bool deq_same = d16 == m16;
            for (int64_t i = 0; deq_same && i < rows * cols; ++i) deq_same = same_bits(d32[i], m32[i]);
            bad_deq += !deq_same;
          }
        }
      }
    }
  }
  char what[200];
  snprintf(what, sizeof(what), "quantize q == quantizeBlocks in %d cases (f32/bf16 x f32/ue8m0 x 1x128/128x128 x 6 shapes x 5 fills)",
           cases);
  expect(bad_q == 0, what);
  expect(bad_scales == 0, "quantize scales == quantizeBlocks' scales, bit for bit");
  expect(bad_verdict == 0, "non-finite verdict == quantizeBlocks' kNonFinite (and only for NaN/inf input)");
  expect(bad_deq == 0, "dequantize (f32 and bf16 out) == dequantizeBlocks on every quantized tensor");
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  printf("fp8 quantize/dequantize kernel math vs the CPU backend (%s)\n", quick ? "quick" : "exhaustive");
  std::mt19937 rng(20240611);
  test_fp8_conversion_special();
  if (!quick) {
    test_fp8_conversion_exhaustive();
    test_ue8m0_exhaustive();
    test_group_scale();
    test_bf16_exhaustive();
  }
  test_decode_dequantize(rng);
  test_tensors(rng);
  printf("  %d check(s), %d failure(s)\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
