// Ternary GEMM for x86-64 with SSSE3 (tgemm__ssse3), for CPUs without AVX:
// Atom, Celeron and Pentium parts (Apollo Lake, Gemini Lake, Elkhart Lake,
// Jasper Lake). Compiled with -mssse3 only; called only when
// GetCpuFeatures().ssse3.
//
// Layout: the same InterleavedLayout{8 rows, 256 columns} as the AVX2 and
// AVX-512 variants; a row's 64-byte block is read as four 16-byte quarters.
// Byte i of quarter h holds the codes of columns 16 h + i + 64 j (bits 2j,
// 2j + 1), j = 0..3, so field j lines up with the 16 activations at
// 64 j + 16 h.
//
// Arithmetic: pmaddubsw multiplies the unsigned codes c = w + 1 in {0, 1, 2}
// by the int8 activations and adds pairs into int16; y = sum(c * x) -
// row_sum(x). Batch 1 masks the fields at bits 2-3 and 6-7 in place (values
// 4c) into a second int16 accumulator, shifted right by 2 (exact: every
// product is a multiple of 4) before the two are added, which saves two
// shifts per 16 bytes of weights.
//
// Accumulator headroom (ternary_kernel.h: a 16-bit partial sum holds at most
// 255 products of magnitude 128, so at most 127 of the |c * x| <= 256 here):
// an int16 accumulator collects one 256-column block, i.e. 4 quarters x 2
// fields x 2 products = 16 products per lane (<= 16 * 256 = 4096; the 4c
// accumulator <= 16 * 1024 = 16384, and pmaddubsw's pairs <= 2 * 1024 do not
// saturate), then pmaddwd widens it into int32. An int32 lane holds at most
// 2 * 128 * K / 8 <= 2^27 for K <= kMaxFeatures = 2^22; y is at most 2^29.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/interleaved_pack.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/simd_x86.h"

namespace ternd::runtime {
namespace {

constexpr InterleavedLayout kLayout{8, 256};
constexpr size_t kGroupRows = 8;
constexpr size_t kBlockBytes = 64;
constexpr size_t kGroupBlockBytes = kGroupRows * kBlockBytes;

bool Supported() { return GetCpuFeatures().ssse3; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

inline __m128i Load(const void* p) {
  return _mm_load_si128(static_cast<const __m128i*>(p));
}

// Batch 1: the 8 rows of a group against one token, so that the weights are
// read as one sequential stream (a row at a time would visit each 512-byte
// block of a group eight times, one cache line each time). Within a block
// the rows go in pairs whose int16 sums stay in registers; the int32 sums
// of the 8 rows live in memory (one load and store per row and block).
// out[r] = sum of c * x. Not inlined: g++ 12 then spilled the pair's sums
// inside the loop.
__attribute__((noinline)) void GemvGroup(const uint8_t* w, size_t blocks,
                                         const int8_t* x,
                                         int32_t out[kGroupRows]) {
  const __m128i m_lo = _mm_set1_epi8(0x03);
  const __m128i m_hi = _mm_set1_epi8(0x0c);
  const __m128i ones = _mm_set1_epi16(1);
  __m128i acc[kGroupRows];
  for (size_t r = 0; r < kGroupRows; ++r) acc[r] = _mm_setzero_si128();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
#pragma GCC unroll 1
    for (size_t r = 0; r < kGroupRows; r += 2) {
      __m128i s1[2], s4[2];
      for (int i = 0; i < 2; ++i) {
        s1[i] = _mm_setzero_si128();
        s4[i] = _mm_setzero_si128();
      }
#pragma GCC unroll 1
      for (int h = 0; h < 4; ++h) {
        const __m128i x0 = Load(xb + 16 * h);
        const __m128i x1 = Load(xb + 64 + 16 * h);
        const __m128i x2 = Load(xb + 128 + 16 * h);
        const __m128i x3 = Load(xb + 192 + 16 * h);
#pragma GCC unroll 2
        for (int i = 0; i < 2; ++i) {
          const __m128i v = Load(wb + (r + i) * kBlockBytes + 16 * h);
          const __m128i t = _mm_srli_epi16(v, 4);
          s1[i] = _mm_add_epi16(s1[i],
                                _mm_maddubs_epi16(_mm_and_si128(v, m_lo), x0));
          s4[i] = _mm_add_epi16(s4[i],
                                _mm_maddubs_epi16(_mm_and_si128(v, m_hi), x1));
          s1[i] = _mm_add_epi16(s1[i],
                                _mm_maddubs_epi16(_mm_and_si128(t, m_lo), x2));
          s4[i] = _mm_add_epi16(s4[i],
                                _mm_maddubs_epi16(_mm_and_si128(t, m_hi), x3));
        }
      }
      for (int i = 0; i < 2; ++i) {
        const __m128i s = _mm_add_epi16(s1[i], _mm_srai_epi16(s4[i], 2));
        acc[r + i] = _mm_add_epi32(acc[r + i], _mm_madd_epi16(s, ones));
      }
    }
  }
  for (size_t r = 0; r < kGroupRows; ++r) out[r] = HorizontalSum(acc[r]);
}

// The 8 rows of a group against B tokens (B <= 4), one sequential weight
// stream as in GemvGroup: per block, each row's four fields of a quarter are
// decoded once for the B tokens, whose int16 sums stay in registers; the
// int32 sums live in memory. out[r * B + t] = sum of c * x.
template <int B>
__attribute__((noinline)) void GemmGroup(const uint8_t* w, size_t blocks,
                                         const int8_t* x, size_t stride,
                                         int32_t out[kGroupRows * B]) {
  const __m128i mask = _mm_set1_epi8(0x03);
  const __m128i ones = _mm_set1_epi16(1);
  __m128i acc[kGroupRows * B];
  for (size_t i = 0; i < kGroupRows * B; ++i) acc[i] = _mm_setzero_si128();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
#pragma GCC unroll 1
    for (size_t r = 0; r < kGroupRows; ++r) {
      __m128i s[B];
      for (int t = 0; t < B; ++t) s[t] = _mm_setzero_si128();
#pragma GCC unroll 1
      for (int h = 0; h < 4; ++h) {
        const __m128i v = Load(wb + r * kBlockBytes + 16 * h);
        const __m128i c0 = _mm_and_si128(v, mask);
        const __m128i c1 = _mm_and_si128(_mm_srli_epi16(v, 2), mask);
        const __m128i c2 = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
        const __m128i c3 = _mm_and_si128(_mm_srli_epi16(v, 6), mask);
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t) {
          const int8_t* xb = x + t * stride + kb * 256 + 16 * h;
          s[t] = _mm_add_epi16(s[t], _mm_maddubs_epi16(c0, Load(xb)));
          s[t] = _mm_add_epi16(s[t], _mm_maddubs_epi16(c1, Load(xb + 64)));
          s[t] = _mm_add_epi16(s[t], _mm_maddubs_epi16(c2, Load(xb + 128)));
          s[t] = _mm_add_epi16(s[t], _mm_maddubs_epi16(c3, Load(xb + 192)));
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        acc[r * B + t] =
            _mm_add_epi32(acc[r * B + t], _mm_madd_epi16(s[t], ones));
      }
    }
  }
  for (size_t i = 0; i < kGroupRows * B; ++i) out[i] = HorizontalSum(acc[i]);
}

void Gemv(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
          int32_t row_sum, int32_t* y) {
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[kGroupRows];
  for (size_t g = 0; g < kLayout.Groups(n); ++g) {
    GemvGroup(packed + g * group_bytes, blocks, x, out);
    const size_t row0 = g * kGroupRows;
    const size_t rows = std::min(kGroupRows, n - row0);
    for (size_t r = 0; r < rows; ++r) y[row0 + r] = out[r] - row_sum;
  }
}

template <int B>
void GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int32_t* y, size_t ldy) {
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[kGroupRows * B];
  for (size_t g = 0; g < kLayout.Groups(n); ++g) {
    GemmGroup<B>(packed + g * group_bytes, blocks, x, stride, out);
    const size_t row0 = g * kGroupRows;
    const size_t rows = std::min(kGroupRows, n - row0);
    for (int t = 0; t < B; ++t) {
      for (size_t r = 0; r < rows; ++r) {
        y[t * ldy + row0 + r] = out[r * B + t] - row_sums[t];
      }
    }
  }
}

// QuantizeActivations (runtime/ops.h), 16 values at a time with the same
// float operations: the absmax (max is exact), the product x * (127 / amax),
// round-half-to-even (cvtps2dq in the default rounding mode, like
// nearbyint) and the clamp to [-128, 127] (packssdw saturates to int16,
// pminsw/pmaxsw clamp, packsswb cannot saturate any more), so the bytes are
// identical; the last k % 16 values take the reference's scalar path.
void Quantize(const float* x, size_t ldx, int batch, size_t k, int8_t* q,
              size_t stride, int32_t* row_sums, float* dequant) {
  const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * ldx;
    int8_t* qb = q + static_cast<size_t>(b) * stride;
    const size_t k4 = k / 4 * 4;
    const size_t k16 = k / 16 * 16;
    __m128 vmax = _mm_setzero_ps();
    for (size_t c = 0; c < k4; c += 4) {
      vmax = _mm_max_ps(vmax, _mm_and_ps(_mm_loadu_ps(xb + c), abs_mask));
    }
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, vmax);
    float amax = 0.0f;
    for (float v : lanes) amax = std::fmax(amax, v);
    for (size_t c = k4; c < k; ++c) amax = std::fmax(amax, std::fabs(xb[c]));
    if (!(amax >= kQuantizeMinAmax)) {
      std::memset(qb, 0, stride);
      dequant[b] = 0.0f;
      row_sums[b] = 0;
      continue;
    }
    const float inv_s = 127.0f / amax;
    const __m128 inv = _mm_set1_ps(inv_s);
    const __m128i lo = _mm_set1_epi16(-128), hi = _mm_set1_epi16(127);
    const __m128i ones = _mm_set1_epi16(1);
    __m128i sum = _mm_setzero_si128();
    auto convert = [&](const float* p) {
      return _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(p), inv));
    };
    for (size_t c = 0; c < k16; c += 16) {
      __m128i a = _mm_packs_epi32(convert(xb + c), convert(xb + c + 4));
      __m128i d = _mm_packs_epi32(convert(xb + c + 8), convert(xb + c + 12));
      a = _mm_min_epi16(_mm_max_epi16(a, lo), hi);
      d = _mm_min_epi16(_mm_max_epi16(d, lo), hi);
      sum = _mm_add_epi32(sum, _mm_madd_epi16(_mm_add_epi16(a, d), ones));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + c),
                       _mm_packs_epi16(a, d));
    }
    int32_t total = HorizontalSum(sum);
    for (size_t c = k16; c < k; ++c) {
      float v = std::nearbyint(xb[c] * inv_s);
      v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
      qb[c] = static_cast<int8_t>(v);
      total += qb[c];
    }
    std::memset(qb + k, 0, stride - k);
    row_sums[b] = total;
    dequant[b] = amax / 127.0f;
  }
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  if (x.batch == 1) return Gemv(packed, n, k, x.q, x.row_sums[0], y);
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    GemmChunk<decltype(rows)::value>(packed, n, k, x.q + b0 * x.stride,
                                     x.stride, x.row_sums + b0, y + b0 * ldy,
                                     ldy);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelSsse3 = {
    "ssse3",    Supported,
    PackedSize, Pack,
    Gemm,       "SSSE3",
    Quantize,   "interleaved: 8-row groups x 256-column blocks",
};

}  // namespace ternd::runtime
