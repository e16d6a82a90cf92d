// 1.6-bit ternary GEMM for x86-64 with AVX2 (avx2-1.6). Compiled with -mavx2;
// called only when GetCpuFeatures().avx2.
//
// Layout: tq1 (tq1_pack.h); a row's 64-byte block is read as two halves.
//
// Decode: t_0 = q, t_{j+1} = 3 t_j mod 256 (two byte adds), and the code
// c_j = floor(3 t_j / 256) = [t_j >= 86] + [t_j >= 171], each term
// min(t_j -sat 85, 1) and min(t_j -sat 170, 1) with unsigned saturating
// subtraction. vpmaddubsw multiplies the codes (unsigned, <= 2) by the int8
// activations: the five digits of the two halves of a block add at most
// 2 * 5 * 2 * 2 * 128 = 5120 per int16 lane (20 products; no saturation)
// before vpmaddwd widens to int32; an int32 lane then holds at most
// 2 * 128 * K / 8 <= 2^27 for K <= 2^22.
#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/simd_x86.h"
#include "runtime/kernels/tq1_gemm.h"
#include "runtime/kernels/tq1_pack.h"

namespace ternd::runtime {
namespace {

bool Supported() { return GetCpuFeatures().avx2; }

// The 8 rows of a group against B tokens (B <= 4), one row at a time within
// a block so that the weights are one sequential stream: the five digits of
// a half are decoded once for the B tokens, whose int16 sums stay in
// registers; the int32 sums live in memory. out[r * B + t] = sum of c * x.
template <int B>
__attribute__((noinline)) void GroupTile(const uint8_t* w, size_t blocks,
                                         const int8_t* x, size_t stride,
                                         int32_t out[kTq1GroupRows * B]) {
  const __m256i one8 = _mm256_set1_epi8(1);
  const __m256i lo = _mm256_set1_epi8(85), hi = _mm256_set1_epi8(-86);  // 170
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kTq1GroupRows * B] = {};  // zeros
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kTq1GroupBlockBytes;
    const int8_t* xb = x + kb * kTq1BlockK;
#pragma GCC unroll 1
    for (size_t r = 0; r < kTq1GroupRows; ++r) {
      __m256i s[B] = {};  // zeros
#pragma GCC unroll 1
      for (int h = 0; h < 2; ++h) {
        __m256i t8 = _mm256_load_si256(
            reinterpret_cast<const __m256i*>(wb + r * kTq1BlockBytes + h * 32));
#pragma GCC unroll 5
        for (int j = 0; j < 5; ++j) {
          const __m256i c =
              _mm256_add_epi8(_mm256_min_epu8(_mm256_subs_epu8(t8, lo), one8),
                              _mm256_min_epu8(_mm256_subs_epu8(t8, hi), one8));
          t8 = _mm256_add_epi8(t8, _mm256_add_epi8(t8, t8));
          const int8_t* xt = xb + j * 64 + h * 32;
#pragma GCC unroll 4
          for (int t = 0; t < B; ++t) {
            s[t] = _mm256_add_epi16(
                s[t], _mm256_maddubs_epi16(
                          c, _mm256_load_si256(
                                 reinterpret_cast<const __m256i*>(xt))));
            xt += stride;
          }
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < B; ++t) {
        acc[r * B + t] =
            _mm256_add_epi32(acc[r * B + t], _mm256_madd_epi16(s[t], ones));
      }
    }
  }
  for (size_t i = 0; i < kTq1GroupRows * B; ++i) out[i] = HorizontalSum(acc[i]);
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    constexpr int B = decltype(rows)::value;
    // A lambda, so that this instance of Tq1GemmChunk is this file's own
    // (the same template arguments in a source with other flags would be
    // merged with it by the linker).
    Tq1GemmChunk<kTq1GroupRows, B>(
        packed, n, k, x.q + b0 * x.stride, x.stride, x.row_sums + b0,
        y + b0 * ldy, ldy,
        [](const uint8_t* w, size_t blocks, const int8_t* xs, size_t stride,
           int32_t* out) { GroupTile<B>(w, blocks, xs, stride, out); });
  });
}

}  // namespace

const TernaryKernel kTernaryKernelAvx2Tq1 = {
    "avx2-1.6",
    Supported,
    Tq1PackedSize,
    PackTq1,
    Gemm,
    "AVX2",
    kTernaryKernelAvx2.quantize,
    "tq1: 5 weights per byte (1.6 bits), 8-row groups x 320-column blocks",
};

}  // namespace ternd::runtime
