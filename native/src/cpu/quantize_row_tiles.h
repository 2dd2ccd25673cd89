// The group loops of the fp8 row quantizers, written once for both vector
// ISAs. Included inside the anonymous namespace of quantize_row_avx2.cpp and
// quantize_row_avx512.cpp (after their target pragma, so it compiles once
// per ISA; hence no include guard), where these are defined first:
//   AbsBits                    the vector of |x| bit patterns (u32 lanes)
//   absMaxBits<L>(x, n, acc)   acc with the lane-wise max of |x[0 .. n)|'s bits
//   reduceMaxBits(acc)         the largest lane
//   convert<L>(x, n, scale, inverse, multiply, finite, q)  one row of a group to fp8
// L is the ISA's loader (LoadF32 or LoadBF16), L::T the element type.

inline float scalarAbsMax(const float* x, int64_t ld, int64_t rows, int64_t cols) {
  return scalarAbsMaxF32(x, ld, rows, cols);
}
inline float scalarAbsMax(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols) {
  return scalarAbsMaxBF16(x, ld, rows, cols);
}

// One block of rows x cols (cols <= 128): scale and fp8 values; false if not finite.
template <class L>
bool quantizeTile(const typename L::T* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format,
                  uint8_t* q, int64_t ldq, float* scaleOut) {
  AbsBits acc = AbsBits{};  // zero
  for (int64_t r = 0; r < rows; ++r) acc = absMaxBits<L>(x + r * ld, cols, acc);
  uint32_t amaxBits = reduceMaxBits(acc);
  const bool finite = amaxBits < 0x7F800000u;
  if (amaxBits > 0x7F800000u) amaxBits = floatBits(scalarAbsMax(x, ld, rows, cols));  // a NaN: ignore it
  float inverse = 0.0f;
  bool multiply = false;
  const float scale = groupScaleFromBits(amaxBits, format, &inverse, &multiply);
  *scaleOut = scale;
  for (int64_t r = 0; r < rows; ++r) convert<L>(x + r * ld, cols, scale, inverse, multiply, finite, q + r * ldq);
  return finite;
}

template <class L>
bool quantizeRowT(const typename L::T* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  bool finite = true;
  for (int64_t c0 = 0; c0 < cols; c0 += kQuantGroup) {
    const int64_t n = cols - c0 < kQuantGroup ? cols - c0 : kQuantGroup;
    finite &= quantizeTile<L>(row + c0, 0, 1, n, format, q + c0, 0, scales + c0 / kQuantGroup);
  }
  return finite;
}

bool quantizeRowF32(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return quantizeRowT<LoadF32>(row, cols, format, q, scales);
}
bool quantizeRowBF16(const uint16_t* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales) {
  return quantizeRowT<LoadBF16>(row, cols, format, q, scales);
}
bool quantizeTileF32(const float* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format, uint8_t* q,
                     int64_t ldq, float* scale) {
  return quantizeTile<LoadF32>(x, ld, rows, cols, format, q, ldq, scale);
}
bool quantizeTileBF16(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format, uint8_t* q,
                      int64_t ldq, float* scale) {
  return quantizeTile<LoadBF16>(x, ld, rows, cols, format, q, ldq, scale);
}

