// Ternary GEMM for x86-64 with AVX-VNNI (tgemm__avxvnni): vpdpbusd on ymm in
// its VEX encoding, for CPUs with AVX2 and AVX-VNNI but no AVX-512 (Alder
// Lake and later client cores, Zen 5 client parts). Compiled with -mavx2
// -mavxvnni; called only when GetCpuFeatures().avx_vnni.
//
// The test build compiles this file a second time with -mavx512vnni
// -mavx512vl instead (TERND_AVXVNNI_AS_EVEX, tests/kernels/CMakeLists.txt):
// the EVEX encoding of the same ymm vpdpbusd, with the same semantics, so
// the algorithm is tested bit-exact on CPUs that have AVX-512 VNNI but not
// AVX-VNNI ("avxvnni-evex", a test-only variant).
//
// Layout: the same InterleavedLayout{8 rows, 256 columns} as the AVX2 and
// AVX-512 variants; a row's 64-byte block is read as two 32-byte halves.
// Byte i of half h holds the codes of columns 32 h + i + 64 j (bits 2j,
// 2j + 1), so field j lines up with the 32 activations at 64 j + 32 h.
//
// Arithmetic: vpdpbusd multiplies the unsigned codes c = w + 1 in {0, 1, 2}
// by the int8 activations, and y = sum(c * x) - row_sum(x).
//
// Accumulator headroom (K <= kMaxFeatures = 2^22): an int32 lane receives 32
// products of at most 2 * 128 = 256 in magnitude per 256-column block (2
// halves x 4 fields x 4 bytes), so it holds at most K / 256 * 32 * 256 =
// 32 K <= 2^27; the full sum(c * x) is at most 2^30 and y at most 2^29.
// vpdpbusd does not saturate, and no partial sum is narrower than 32 bits.
#include <algorithm>
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
// Software prefetch distance, in blocks of a group (512 bytes each).
constexpr size_t kPrefetchBlocks = 8;

#if defined(TERND_AVXVNNI_AS_EVEX)
#if !defined(__AVX512VNNI__) || !defined(__AVX512VL__)
#error "the EVEX test build needs -mavx512vnni -mavx512vl"
#endif
bool Supported() { return GetCpuFeatures().avx512_vnni; }
inline __m256i Dpbusd(__m256i acc, __m256i u8, __m256i s8) {
  return _mm256_dpbusd_epi32(acc, u8, s8);
}
#else
bool Supported() { return GetCpuFeatures().avx_vnni; }
inline __m256i Dpbusd(__m256i acc, __m256i u8, __m256i s8) {
  return _mm256_dpbusd_avx_epi32(acc, u8, s8);
}
#endif

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

inline __m256i Load(const void* p) {
  return _mm256_load_si256(static_cast<const __m256i*>(p));
}

inline void Prefetch(const uint8_t* wb, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(wb) +
                     kPrefetchBlocks * kGroupBlockBytes + line,
                 _MM_HINT_T0);
  }
}

// Batch 1: all 8 rows of a group against one token, one accumulator per row
// (8 of the 16 ymm registers; the activations of a half take 4 more), so the
// weights are one sequential stream. Each field is shifted down and masked:
// the in-place 4c masking of avx512vnni needs a second accumulator per row,
// and a tile of 4 rows with two accumulators each (reading each 512-byte
// block of a group in two passes) measured 5% faster warm but 35% slower
// cold (docs/performance.md). out[r] = sum of c * x.
void GemvGroup(const uint8_t* w, size_t blocks, const int8_t* x,
               int32_t out[kGroupRows]) {
  const __m256i mask = _mm256_set1_epi8(0x03);
  __m256i acc[kGroupRows];
  for (size_t r = 0; r < kGroupRows; ++r) acc[r] = _mm256_setzero_si256();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
    Prefetch(wb, kGroupBlockBytes);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i x0 = Load(xb + 32 * h);
      const __m256i x1 = Load(xb + 64 + 32 * h);
      const __m256i x2 = Load(xb + 128 + 32 * h);
      const __m256i x3 = Load(xb + 192 + 32 * h);
#pragma GCC unroll 8
      for (size_t r = 0; r < kGroupRows; ++r) {
        const __m256i v = Load(wb + r * kBlockBytes + 32 * h);
        acc[r] = Dpbusd(acc[r], _mm256_and_si256(v, mask), x0);
        acc[r] =
            Dpbusd(acc[r], _mm256_and_si256(_mm256_srli_epi16(v, 2), mask), x1);
        acc[r] =
            Dpbusd(acc[r], _mm256_and_si256(_mm256_srli_epi16(v, 4), mask), x2);
        acc[r] =
            Dpbusd(acc[r], _mm256_and_si256(_mm256_srli_epi16(v, 6), mask), x3);
      }
    }
  }
  for (size_t r = 0; r < kGroupRows; ++r) out[r] = HorizontalSum(acc[r]);
}

// R rows against B tokens (B = 2..4), R * B accumulators: each decoded field
// of a row serves the B tokens, whose activations are loaded once for the R
// rows. out[r * B + t] = sum of c * x.
template <int R, int B>
void GemmTile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
              int32_t out[R * B]) {
  const __m256i mask = _mm256_set1_epi8(0x03);
  __m256i acc[R * B];
  for (int i = 0; i < R * B; ++i) acc[i] = _mm256_setzero_si256();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
    Prefetch(wb, R * kBlockBytes);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256i wv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) wv[r] = Load(wb + r * kBlockBytes + 32 * h);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m256i xv[B];
#pragma GCC unroll 4
        for (int t = 0; t < B; ++t)
          xv[t] = Load(xb + t * stride + 64 * j + 32 * h);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m256i c = _mm256_and_si256(wv[r], mask);
          wv[r] = _mm256_srli_epi16(wv[r], 2);
#pragma GCC unroll 4
          for (int t = 0; t < B; ++t)
            acc[r * B + t] = Dpbusd(acc[r * B + t], c, xv[t]);
        }
      }
    }
  }
  for (int i = 0; i < R * B; ++i) out[i] = HorizontalSum(acc[i]);
}

// Rows per tile for B tokens, so that accumulators, activations and the
// rows' weight vectors fit the 16 ymm registers.
template <int B>
constexpr int kRows = B == 1   ? 8
                      : B == 2 ? 4
                               : 2;

template <int B>
void GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int32_t* y, size_t ldy) {
  constexpr int R = kRows<B>;
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[R * B];
  for (size_t g = 0; g < kLayout.Groups(n); ++g) {
    for (size_t sub = 0; sub < kGroupRows; sub += R) {
      const size_t row0 = g * kGroupRows + sub;
      if (row0 >= n) break;
      const uint8_t* w = packed + g * group_bytes + sub * kBlockBytes;
      if constexpr (B == 1) {
        GemvGroup(w, blocks, x, out);
      } else {
        GemmTile<R, B>(w, blocks, x, stride, out);
      }
      const size_t rows = std::min<size_t>(R, n - row0);
      for (int t = 0; t < B; ++t) {
        int32_t* yt = y + t * ldy + row0;
        for (size_t r = 0; r < rows; ++r) yt[r] = out[r * B + t] - row_sums[t];
      }
    }
  }
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    GemmChunk<decltype(rows)::value>(packed, n, k, x.q + b0 * x.stride,
                                     x.stride, x.row_sums + b0, y + b0 * ldy,
                                     ldy);
  });
}

}  // namespace

#if defined(TERND_AVXVNNI_AS_EVEX)
extern const TernaryKernel kTernaryKernelAvxVnniEvex;
const TernaryKernel kTernaryKernelAvxVnniEvex = {
    "avxvnni-evex",
    Supported,
    PackedSize,
    Pack,
    Gemm,
    "AVX-512 VNNI (the EVEX form of AVX-VNNI's ymm vpdpbusd)",
    kTernaryKernelAvx2.quantize,
    "interleaved: 8-row groups x 256-column blocks",
};
#else
const TernaryKernel kTernaryKernelAvxVnni = {
    "avxvnni",
    Supported,
    PackedSize,
    Pack,
    Gemm,
    "AVX-VNNI",
    kTernaryKernelAvx2.quantize,
    "interleaved: 8-row groups x 256-column blocks",
};
#endif

}  // namespace ternd::runtime
