// Host-only check of the SIMT kernels' per-element math
// (src/sm80_simt_fp8_gemm_math.cuh) against an independent float64 reference of
// SPEC.md: dense, contiguous grouped (with -1 padding rows and an out-of-range
// index) and masked grouped (with masked_m of 0, partial, Mmax and beyond).
// Compiled by nvcc as host code; runs without a GPU:
//
//   nvcc -std=c++17 -Inative/cuda/src native/cuda/test/simt_math_test.cu -o simt_math_test
//
// Tolerance: SPEC's calc_diff (1 - 2 sum(xy) / sum(x^2 + y^2)) < 1e-6 per
// problem; padding / masked outputs must be exactly 0.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <random>
#include <vector>

#include "sm80_simt_fp8_gemm_math.cuh"

using moe_cuda::simt::Operands;

static int g_failures = 0;

// OCP E4M3FN decoded from its definition: 1 sign, 4 exponent (bias 7), 3
// mantissa bits; exponent 0 is subnormal (m / 8 * 2^-6); S.1111.111 is NaN;
// no infinities.
static double e4m3_reference(uint8_t bits) {
  const int sign = bits >> 7, exp = (bits >> 3) & 0xF, man = bits & 7;
  if (exp == 0xF && man == 7) return NAN;
  const double mag = exp == 0 ? ldexp(man / 8.0, -6) : ldexp(1.0 + man / 8.0, exp - 7);
  return sign ? -mag : mag;
}

static uint8_t random_fp8(std::mt19937& rng) {
  for (;;) {
    const uint8_t b = static_cast<uint8_t>(rng() & 0xFF);
    if ((b & 0x7F) != 0x7F) return b;  // no NaN operands
  }
}

static double calc_diff(const std::vector<double>& x, const std::vector<double>& y) {
  double xy = 0, xx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += x[i] * y[i];
    xx += x[i] * x[i] + y[i] * y[i];
  }
  return xx == 0 ? 0 : 1 - 2 * xy / xx;
}

struct Data {
  std::vector<uint8_t> a, b;
  std::vector<float> sa, sb;
};

static Data make_data(std::mt19937& rng, int64_t a_rows, int64_t groups, int64_t n, int64_t k) {
  const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
  Data d;
  d.a.resize(a_rows * k);
  d.b.resize(groups * n * k);
  d.sa.resize(a_rows * kb);
  d.sb.resize(groups * nb * kb);
  std::uniform_real_distribution<float> scale(0.01f, 2.0f);
  for (auto& v : d.a) v = random_fp8(rng);
  for (auto& v : d.b) v = random_fp8(rng);
  for (auto& v : d.sa) v = scale(rng);
  for (auto& v : d.sb) v = scale(rng);
  return d;
}

// float64 reference of one output element: A row `ar`, B row `br` of group g.
static double reference(const Data& d, int64_t ar, int64_t g, int64_t col, int64_t n, int64_t k) {
  const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
  double acc = 0;
  for (int64_t blk = 0; blk < kb; ++blk) {
    double part = 0;
    for (int64_t kk = blk * 128; kk < k && kk < blk * 128 + 128; ++kk) {
      part += e4m3_reference(d.a[ar * k + kk]) * e4m3_reference(d.b[(g * n + col) * k + kk]);
    }
    acc += double(d.sa[ar * kb + blk]) * double(d.sb[(g * nb + col / 128) * kb + blk]) * part;
  }
  return acc;
}

static void expect(bool ok, const char* what) {
  printf("  %s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++g_failures;
}

static void test_fp8_decode() {
  int bad = 0;
  for (int b = 0; b < 256; ++b) {
    const double want = e4m3_reference(uint8_t(b));
    const double got = moe_cuda::simt::fp8_e4m3_to_float(uint8_t(b));
    if (!(got == want || (isnan(got) && isnan(want)))) ++bad;
  }
  expect(bad == 0, "fp8 e4m3 decode matches the format definition for all 256 codes");
}

static void test_dense(std::mt19937& rng, int64_t m, int64_t n, int64_t k) {
  Data d = make_data(rng, m, 1, n, k);
  Operands o{d.a.data(), d.sa.data(), d.b.data(), d.sb.data(), nullptr, nullptr, m, n, k, 1};
  std::vector<double> got, want;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      got.push_back(moe_cuda::simt::dense_element(o, r, c));
      want.push_back(reference(d, r, 0, c, n, k));
    }
  }
  char what[128];
  const double diff = calc_diff(got, want);
  snprintf(what, sizeof(what), "dense M=%lld N=%lld K=%lld: diff %.2e", (long long)m, (long long)n, (long long)k, diff);
  expect(diff < 1e-6, what);
}

static void test_contiguous(std::mt19937& rng) {
  // 3 groups: segments of 128 rows starting at multiples of 128; padding at
  // the end of each segment; one row with an out-of-range group index.
  const int64_t g = 3, n = 136, k = 272, r = 384;
  Data d = make_data(rng, r, g, n, k);
  std::vector<int32_t> gi(r, -1);
  for (int64_t i = 0; i < 100; ++i) gi[i] = 0;
  for (int64_t i = 128; i < 130; ++i) gi[i] = 2;
  for (int64_t i = 256; i < 384; ++i) gi[i] = 1;
  gi[300] = 7;  // out of range: zero
  Operands o{d.a.data(), d.sa.data(), d.b.data(), d.sb.data(), gi.data(), nullptr, r, n, k, g};
  std::vector<double> got, want;
  bool zeros = true;
  for (int64_t row = 0; row < r; ++row) {
    for (int64_t c = 0; c < n; ++c) {
      const double v = moe_cuda::simt::contiguous_element(o, row, c);
      if (gi[row] < 0 || gi[row] >= g) {
        zeros &= v == 0.0;
      } else {
        got.push_back(v);
        want.push_back(reference(d, row, gi[row], c, n, k));
      }
    }
  }
  expect(zeros, "contiguous: padding (-1) and out-of-range rows are exactly 0");
  char what[128];
  const double diff = calc_diff(got, want);
  snprintf(what, sizeof(what), "contiguous G=3 R=384 N=136 K=272: diff %.2e", diff);
  expect(diff < 1e-6, what);
}

static void test_masked(std::mt19937& rng) {
  const int64_t g = 4, m_max = 40, n = 72, k = 256;
  Data d = make_data(rng, g * m_max, g, n, k);
  const std::vector<int32_t> masked = {0, 17, 40, 1000};  // empty, partial, full, beyond Mmax
  Operands o{d.a.data(), d.sa.data(), d.b.data(), d.sb.data(), nullptr, masked.data(), m_max, n, k, g};
  std::vector<double> got, want;
  bool zeros = true;
  for (int64_t grp = 0; grp < g; ++grp) {
    for (int64_t row = 0; row < m_max; ++row) {
      for (int64_t c = 0; c < n; ++c) {
        const double v = moe_cuda::simt::masked_element(o, grp, row, c);
        if (row >= masked[grp]) {
          zeros &= v == 0.0;
        } else {
          got.push_back(v);
          want.push_back(reference(d, grp * m_max + row, grp, c, n, k));
        }
      }
    }
  }
  expect(zeros, "masked: rows at or past maskedM are exactly 0");
  char what[128];
  const double diff = calc_diff(got, want);
  snprintf(what, sizeof(what), "masked G=4 Mmax=40 N=72 K=256: diff %.2e", diff);
  expect(diff < 1e-6, what);
}

int main() {
  printf("SIMT FP8 GEMM element math vs a float64 reference of SPEC.md\n");
  std::mt19937 rng(1234);
  test_fp8_decode();
  test_dense(rng, 5, 200, 16);    // K < 128: one short group
  test_dense(rng, 9, 130, 400);   // K tail group of 16, two n scale blocks
  test_dense(rng, 3, 256, 1024);  // whole groups
  test_contiguous(rng);
  test_masked(rng);
  printf("  %d failure(s)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
