// Ternary GEMM for x86-64 with AVX2 (tgemm__avx2). Compiled with -mavx2;
// called only when GetCpuFeatures().avx2.
//
// Layout: the same InterleavedLayout{8 rows, 256 columns} as the AVX-512
// variant; a 64-byte block is read as two 32-byte halves.
//
// Arithmetic: weight codes c = w + 1 in {0, 1, 2} (unsigned) times int8
// activations with vpmaddubsw, then y = sum(c * x) - row_sum(x).
// Accumulator headroom: vpmaddubsw adds two products into int16 with
// saturation; |2 * c * x| <= 2 * 2 * 128 = 512, and the four fields of a
// block are added in int16 (<= 2048 < 32767) before vpmaddwd widens to int32.
// An int32 lane then holds at most 2 * 128 * K / 8 <= 2^27 for
// K <= kMaxFeatures = 2^22; y is at most 2^29 in magnitude.
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

bool Supported() { return GetCpuFeatures().avx2; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

// One row against B tokens (B <= 4: 4 decoded fields + B accumulators + 2
// constants fit in the 16 ymm registers). Returns sum(c * x) per token.
template <int B>
void RowTile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
             int32_t out[B]) {
  const __m256i mask = _mm256_set1_epi8(0x03);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[B];
  for (int t = 0; t < B; ++t) acc[t] = _mm256_setzero_si256();
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    for (int h = 0; h < 2; ++h) {
      const __m256i v =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(wb + h * 32));
      const __m256i c0 = _mm256_and_si256(v, mask);
      const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), mask);
      const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), mask);
      for (int t = 0; t < B; ++t) {
        const int8_t* xb = x + t * stride + kb * 256 + h * 32;
        auto xl = [xb](int j) {
          return _mm256_load_si256(
              reinterpret_cast<const __m256i*>(xb + 64 * j));
        };
        __m256i s = _mm256_maddubs_epi16(c0, xl(0));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c1, xl(1)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c2, xl(2)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c3, xl(3)));
        acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s, ones));
      }
    }
  }
  for (int t = 0; t < B; ++t) out[t] = HorizontalSum(acc[t]);
}

template <int B>
void GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int32_t* y, size_t ldy) {
  const size_t blocks = kLayout.Blocks(k);
  const size_t group_bytes = kLayout.GroupBytes(k);
  int32_t out[B];
  for (size_t row = 0; row < n; ++row) {
    const uint8_t* w = packed + (row / kGroupRows) * group_bytes +
                       (row % kGroupRows) * kBlockBytes;
    RowTile<B>(w, blocks, x, stride, out);
    for (int t = 0; t < B; ++t) y[t * ldy + row] = out[t] - row_sums[t];
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
    if (!(amax > 0.0f)) {
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
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
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
