// Ternary GEMM for x86-64 with AVX2 (tgemm__avx2). Compiled with -mavx2;
// called only when GetCpuFeatures().avx2.
//
// Layout: the same InterleavedLayout{8 rows, 256 columns} as the AVX-512
// variant; a row's 64-byte block is read as two 32-byte halves. Byte i of
// half h holds the codes of columns 32 h + i + 64 j (bits 2j, 2j + 1), so
// field j lines up with the 32 activations at 64 j + 32 h.
//
// Every batch walks a row group block by block, the group's 8 rows one after
// another within a block, so the weights are read as one sequential stream
// (one row over all blocks, then the next, read each 512-byte block of a
// group eight times, a cache line each time: 0.3 of the read bandwidth
// cold). The int16 sums of the rows in flight stay in registers; their int32
// sums live in memory, one load and store per row, token and block.
//
// Arithmetic: weight codes c = w + 1 in {0, 1, 2} (unsigned) times int8
// activations with vpmaddubsw, then y = sum(c * x) - row_sum(x). Batch 1
// masks the fields at bits 2-3 and 6-7 in place (values 4c) into a second
// int16 sum, shifted right by 2 (exact: every product is a multiple of 4)
// before the two are added: one shift per 32 bytes of weights instead of 3.
//
// Accumulator headroom (ternary_kernel.h: at most 127 products of
// |c * x| <= 256 in an int16 sum): vpmaddubsw adds two products into int16,
// at most 2 * 2 * 128 = 512 (4c: 2 * 8 * 128 = 2048; no saturation). An
// int16 sum collects one 256-column block: 2 halves x 4 fields x 2 products
// = 16 products, <= 4096 (batch 1: two sums of 8 products, the 4c one
// <= 8192) before vpmaddwd widens it to int32. An int32 lane then holds at
// most 2 * 128 * K / 8 <= 2^27 for K <= kMaxFeatures = 2^22; y is at most
// 2^29 in magnitude.
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
// Rows per pass within a block at batch 1.
constexpr int kGemvRows = 2;
// Tokens per pass over the weights (8 int16 sums, 4 decoded fields and a
// mask in the 16 ymm registers).
constexpr int kMaxTokens = 8;

bool Supported() { return GetCpuFeatures().avx2; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

inline __m256i Load(const void* p) {
  return _mm256_load_si256(static_cast<const __m256i*>(p));
}

// Batch 1: the 8 rows of a group against one token, so that the weights are
// one sequential stream. Within a block the rows go in pairs; fields 0 and 2
// are masked to c, fields 1 and 3 in place to 4c, into two int16 sums per
// row that stay in registers (the 4c sum is shifted right by 2, exactly,
// before the two are added); the int32 sums of the 8 rows live in memory,
// one load and store per row and block. out[r] = sum of c * x.
__attribute__((noinline)) void GemvGroup(const uint8_t* w, size_t blocks,
                                         const int8_t* x,
                                         int32_t out[kGroupRows]) {
  const __m256i m_lo = _mm256_set1_epi8(0x03);
  const __m256i m_hi = _mm256_set1_epi8(0x0c);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kGroupRows];
  for (size_t r = 0; r < kGroupRows; ++r) acc[r] = _mm256_setzero_si256();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
#pragma GCC unroll 1
    for (size_t r = 0; r < kGroupRows; r += kGemvRows) {
      // Opaque to the compiler, so that it loads the activations here (from
      // L1) instead of hoisting them out of the row loop into spills.
      const int8_t* xr = xb;
      __asm__("" : "+r"(xr));
      __m256i s1[kGemvRows], s4[kGemvRows];
      for (int i = 0; i < kGemvRows; ++i) {
        s1[i] = _mm256_setzero_si256();
        s4[i] = _mm256_setzero_si256();
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i x0 = Load(xr + 32 * h);
        const __m256i x1 = Load(xr + 64 + 32 * h);
        const __m256i x2 = Load(xr + 128 + 32 * h);
        const __m256i x3 = Load(xr + 192 + 32 * h);
#pragma GCC unroll 4
        for (int i = 0; i < kGemvRows; ++i) {
          const __m256i v = Load(wb + (r + i) * kBlockBytes + 32 * h);
          const __m256i t = _mm256_srli_epi16(v, 4);
          s1[i] = _mm256_add_epi16(
              s1[i], _mm256_maddubs_epi16(_mm256_and_si256(v, m_lo), x0));
          s4[i] = _mm256_add_epi16(
              s4[i], _mm256_maddubs_epi16(_mm256_and_si256(v, m_hi), x1));
          s1[i] = _mm256_add_epi16(
              s1[i], _mm256_maddubs_epi16(_mm256_and_si256(t, m_lo), x2));
          s4[i] = _mm256_add_epi16(
              s4[i], _mm256_maddubs_epi16(_mm256_and_si256(t, m_hi), x3));
        }
      }
      for (int i = 0; i < kGemvRows; ++i) {
        const __m256i s = _mm256_add_epi16(s1[i], _mm256_srai_epi16(s4[i], 2));
        acc[r + i] = _mm256_add_epi32(acc[r + i], _mm256_madd_epi16(s, ones));
      }
    }
  }
  for (size_t r = 0; r < kGroupRows; ++r) out[r] = HorizontalSum(acc[r]);
}

// The 8 rows of a group against B tokens (B <= 8), one row at a time within
// a block (one sequential weight stream, as GemvGroup): the four fields of a
// half are decoded once into registers for the B tokens, each of which adds
// its four products into its int16 sum, its activations addressed from one
// pointer that steps by the stride (g++ ran out of address registers when
// each token had its own). The int32 sums live in memory.
// out[r * B + t] = sum of c * x.
template <int B>
__attribute__((noinline)) void GemmGroup(const uint8_t* w, size_t blocks,
                                         const int8_t* x, size_t stride,
                                         int32_t out[kGroupRows * B]) {
  const __m256i mask = _mm256_set1_epi8(0x03);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kGroupRows * B];
  for (size_t i = 0; i < kGroupRows * B; ++i) acc[i] = _mm256_setzero_si256();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 256;
#pragma GCC unroll 1
    for (size_t r = 0; r < kGroupRows; ++r) {
      __m256i s[B];
      for (int t = 0; t < B; ++t) s[t] = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256i v = Load(wb + r * kBlockBytes + 32 * h);
        const __m256i c0 = _mm256_and_si256(v, mask);
        const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), mask);
        const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), mask);
        const int8_t* xt = xb + 32 * h;
#pragma GCC unroll 8
        for (int t = 0; t < B; ++t) {
          s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c0, Load(xt)));
          // Opaque: otherwise g++ 12 reassociates the sums into all the
          // products first, spilled to the stack (30% slower).
          __asm__("" : "+x"(s[t]));
          s[t] =
              _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c1, Load(xt + 64)));
          __asm__("" : "+x"(s[t]));
          s[t] =
              _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c2, Load(xt + 128)));
          __asm__("" : "+x"(s[t]));
          s[t] =
              _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c3, Load(xt + 192)));
          __asm__("" : "+x"(s[t]));
          xt += stride;
        }
      }
#pragma GCC unroll 8
      for (int t = 0; t < B; ++t) {
        acc[r * B + t] =
            _mm256_add_epi32(acc[r * B + t], _mm256_madd_epi16(s[t], ones));
      }
    }
  }
  for (size_t i = 0; i < kGroupRows * B; ++i) out[i] = HorizontalSum(acc[i]);
}

template <int B>
void GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int32_t* y, size_t ldy) {
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[kGroupRows * B];
  for (size_t g = 0; g < kLayout.Groups(n); ++g) {
    if constexpr (B == 1) {
      GemvGroup(packed + g * group_bytes, blocks, x, out);
    } else {
      GemmGroup<B>(packed + g * group_bytes, blocks, x, stride, out);
    }
    const size_t row0 = g * kGroupRows;
    const size_t rows = std::min(kGroupRows, n - row0);
    for (int t = 0; t < B; ++t) {
      for (size_t r = 0; r < rows; ++r) {
        y[t * ldy + row0 + r] = out[r * B + t] - row_sums[t];
      }
    }
  }
}

// QuantizeActivations (runtime/ops.h), 8 values at a time with the same
// float operations and round-half-to-even, so the bytes are identical; the
// last k % 8 values take the scalar path of the reference.
void Quantize(const float* x, size_t ldx, int batch, size_t k, int8_t* q,
              size_t stride, int32_t* row_sums, float* dequant) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * ldx;
    int8_t* qb = q + static_cast<size_t>(b) * stride;
    const size_t k8 = k / 8 * 8;
    __m256 vmax = _mm256_setzero_ps();
    for (size_t c = 0; c < k8; c += 8) {
      vmax =
          _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xb + c), abs_mask));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float amax = 0.0f;
    for (float v : lanes) amax = std::fmax(amax, v);
    for (size_t c = k8; c < k; ++c) amax = std::fmax(amax, std::fabs(xb[c]));
    if (!(amax >= kQuantizeMinAmax)) {
      std::memset(qb, 0, stride);
      dequant[b] = 0.0f;
      row_sums[b] = 0;
      continue;
    }
    const float inv_s = 127.0f / amax;
    const __m256 inv = _mm256_set1_ps(inv_s);
    const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
    __m256i sum = _mm256_setzero_si256();
    for (size_t c = 0; c < k8; c += 8) {
      __m256i i = _mm256_cvtps_epi32(
          _mm256_mul_ps(_mm256_loadu_ps(xb + c), inv));  // half to even
      i = _mm256_min_epi32(_mm256_max_epi32(i, lo), hi);
      sum = _mm256_add_epi32(sum, i);
      // int32 -> int8 within each 128-bit lane, then gather the two lanes.
      const __m256i w16 = _mm256_packs_epi32(i, i);
      const __m256i w8 = _mm256_packs_epi16(w16, w16);
      const int64_t lo4 = _mm256_extract_epi32(w8, 0);
      const int64_t hi4 = _mm256_extract_epi32(w8, 4);
      const int64_t bytes = (lo4 & 0xffffffff) | (hi4 << 32);
      std::memcpy(qb + c, &bytes, 8);
    }
    int32_t total = HorizontalSum(sum);
    for (size_t c = k8; c < k; ++c) {
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
  ForEachBatchChunk<kMaxTokens>(x.batch, [&](auto rows, int b0) {
    GemmChunk<decltype(rows)::value>(packed, n, k, x.q + b0 * x.stride,
                                     x.stride, x.row_sums + b0, y + b0 * ldy,
                                     ldy);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelAvx2 = {
    "avx2",     Supported,
    PackedSize, Pack,
    Gemm,       "AVX2",
    Quantize,   "interleaved: 8-row groups x 256-column blocks",
};

}  // namespace ternd::runtime
