// The avx512vnni variant's products of 2..4 tokens (the variant itself:
// ternary_gemm_avx512vnni.cc, whose header comment gives the layout, the
// arithmetic and the accumulator headroom). Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni, by clang 19 when it is installed:
// it keeps the accumulator array in registers where g++ 12 spills part of
// it (0.92-0.94 of the vpdpbusd peak at batch 8 against 0.74,
// docs/performance.md "g++ and clang").
#include <algorithm>
#include <cstring>

#include "runtime/kernels/simd_x86.h"
#include "runtime/kernels/ternary_gemm_avx512vnni.h"

namespace ternd::runtime::avx512vnni {
namespace {

// Batch B (2..4): R rows of a group against B tokens, R * B accumulators in
// registers. Each decoded field of a row is reused by all B tokens; the field
// loop shifts the row's bytes by 2 after each field, so every shift is an
// immediate. out[r * B + t] = sum over k of c * x (row sums not subtracted).
// Everything is in one function with fully unrolled loops so that GCC keeps
// the accumulator array in registers.
template <int R, int B>
void GemmTile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
              int32_t out[R * B]) {
  const __m512i mask = _mm512_set1_epi8(0x03);
  constexpr int kAcc = (R * B + 7) / 8 * 8;
  __m512i acc[kAcc];
#pragma GCC unroll 32
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_setzero_si512();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
#pragma GCC unroll 8
    for (size_t line = 0; line < R * kBlockBytes; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(wb) +
                       kPrefetchBlocks * kGroupBlockBytes + line,
                   _MM_HINT_T0);
    }
    __m512i wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = _mm512_load_si512(wb + r * kBlockBytes);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m512i xv[B];
#pragma GCC unroll 8
      for (int t = 0; t < B; ++t) {
        xv[t] = _mm512_load_si512(xb + t * stride + j * 64);
        // Keep the activations in registers: otherwise GCC folds the load
        // into every vpdpbusd that uses it, R loads instead of one.
        __asm__("" : "+v"(xv[t]));
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i c = _mm512_and_si512(wv[r], mask);
        wv[r] = _mm512_srli_epi16(wv[r], 2);
#pragma GCC unroll 8
        for (int t = 0; t < B; ++t) {
          acc[r * B + t] = _mm512_dpbusd_epi32(acc[r * B + t], c, xv[t]);
        }
      }
    }
  }
  alignas(32) int32_t sums[kAcc];
#pragma GCC unroll 4
  for (int i = 0; i < kAcc; i += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + i), Reduce8(acc + i));
  }
  std::memcpy(out, sums, sizeof(int32_t) * R * B);
}

template <int R, int B>
void GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int32_t* y, size_t ldy) {
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[R * B];
  for (size_t g = 0; g < kLayout.Groups(n); ++g) {
    for (size_t sub = 0; sub < kGroupRows; sub += R) {
      const size_t row0 = g * kGroupRows + sub;
      if (row0 >= n) break;
      GemmTile<R, B>(packed + g * group_bytes + sub * kBlockBytes, blocks, x,
                     stride, out);
      const size_t rows = std::min<size_t>(R, n - row0);
      for (int t = 0; t < B; ++t) {
        int32_t* yt = y + t * ldy + row0;
        for (size_t r = 0; r < rows; ++r) yt[r] = out[r * B + t] - row_sums[t];
      }
    }
  }
}

}  // namespace

void GemmBatched(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
                 size_t stride, const int32_t* row_sums, int b, int32_t* y,
                 size_t ldy) {
  switch (b) {
    case 2:
      return GemmChunk<8, 2>(packed, n, k, x, stride, row_sums, y, ldy);
    case 3:
      return GemmChunk<8, 3>(packed, n, k, x, stride, row_sums, y, ldy);
    default:
      return GemmChunk<4, 4>(packed, n, k, x, stride, row_sums, y, ldy);
  }
}

}  // namespace ternd::runtime::avx512vnni
