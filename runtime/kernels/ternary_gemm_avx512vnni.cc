// Ternary GEMM for x86-64 with AVX-512 VNNI (tgemm__avx512vnni).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; called only when
// GetCpuFeatures().avx512_vnni.
//
// Layout: InterleavedLayout{8 rows, 256 columns}: one 64-byte block per row
// and 256 columns, the 8 rows of a group one after another, so the whole
// matrix is one sequential stream.
//
// Arithmetic: vpdpbusd multiplies unsigned bytes by signed bytes, so the
// weights enter as their codes c = w + 1 in {0, 1, 2} (or 4c, see below) and
// the activations as they are; y = sum(c * x) - row_sum(x) is exact.
//
// Accumulator headroom (K <= kMaxFeatures = 2^22): a product is at most
// 8 * 128 = 2^10 in magnitude (the batch-1 path multiplies 4c <= 8), each
// int32 lane receives 4 products per 256-column block, so a lane holds at
// most K / 256 * 4 * 2^10 = 16 K <= 2^26; the full sum(c * x) is at most
// 2 * 128 * K = 2^30 and y at most 2^29. vpdpbusd does not saturate, and no
// partial sum is kept narrower than 32 bits.
#include "runtime/kernels/ternary_gemm_avx512vnni.h"

#include <algorithm>
#include <cstring>

#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/interleaved_pack.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/mca_markers.h"
#include "runtime/kernels/simd_x86.h"

namespace ternd::runtime {
namespace {

using namespace avx512vnni;  // the layout constants

bool Supported() { return GetCpuFeatures().avx512_vnni; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

// Batch 1: all 8 rows of a group against one token. Per block and row: one
// load, one shift, four masks and four vpdpbusd. The fields at bits 2-3 and
// 6-7 are masked in place (values 4c) into a second accumulator, which is
// divided by 4 (exactly) at the end; that saves two shifts per block.
void GemvGroup(const uint8_t* w, size_t blocks, const int8_t* x,
               int32_t out[kGroupRows]) {
  const __m512i m_lo = _mm512_set1_epi8(0x03);
  const __m512i m_hi = _mm512_set1_epi8(0x0c);
  __m512i acc1[kGroupRows], acc4[kGroupRows];
#pragma GCC unroll 8
  for (size_t r = 0; r < kGroupRows; ++r) {
    acc1[r] = _mm512_setzero_si512();
    acc4[r] = _mm512_setzero_si512();
  }
  for (size_t kb = 0; kb < blocks; ++kb) {
    TERND_MCA_BEGIN("avx512vnni");
    const int8_t* xb = x + kb * 256;
    const __m512i x0 = _mm512_load_si512(xb);
    const __m512i x1 = _mm512_load_si512(xb + 64);
    const __m512i x2 = _mm512_load_si512(xb + 128);
    const __m512i x3 = _mm512_load_si512(xb + 192);
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    // Every cache line of the block kPrefetchBlocks ahead: one sequential
    // stream, so this runs ahead of the out-of-order window when the
    // weights come from memory.
#pragma GCC unroll 8
    for (size_t line = 0; line < kGroupBlockBytes; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(wb) +
                       kPrefetchBlocks * kGroupBlockBytes + line,
                   _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (size_t r = 0; r < kGroupRows; ++r) {
      const __m512i v = _mm512_load_si512(wb + r * kBlockBytes);
      const __m512i s = _mm512_srli_epi16(v, 4);
      acc1[r] = _mm512_dpbusd_epi32(acc1[r], _mm512_and_si512(v, m_lo), x0);
      acc4[r] = _mm512_dpbusd_epi32(acc4[r], _mm512_and_si512(v, m_hi), x1);
      acc1[r] = _mm512_dpbusd_epi32(acc1[r], _mm512_and_si512(s, m_lo), x2);
      acc4[r] = _mm512_dpbusd_epi32(acc4[r], _mm512_and_si512(s, m_hi), x3);
    }
    TERND_MCA_END("avx512vnni");
  }
  __m512i sum[kGroupRows];
#pragma GCC unroll 8
  for (size_t r = 0; r < kGroupRows; ++r) {
    // Every lane of acc4 is a sum of products of 4c: exact division by 4.
    sum[r] = _mm512_add_epi32(acc1[r], _mm512_srai_epi32(acc4[r], 2));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), Reduce8(sum));
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

// Rows per tile for B tokens: R * B accumulators + B activations + R weight
// vectors + 2 must fit in the 32 zmm registers. Measured on Zen 5 (see
// docs/performance.md), 4 rows x 4 tokens beat 2 x 8 for a batch of 8 (the
// activations in registers serve 4 rows instead of 2), so batches above 4 run
// in chunks of at most 4.
void GemmBatch(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
               size_t stride, const int32_t* row_sums, int b, int32_t* y,
               size_t ldy) {
  switch (b) {
    case 1:
      return Gemv(packed, n, k, x, row_sums[0], y);
    default:
      return avx512vnni::GemmBatched(packed, n, k, x, stride, row_sums, b, y,
                                     ldy);
  }
}

// QuantizeActivations (runtime/ops.h), 16 values at a time: the same absmax
// (max is exact), the same float product x * (127 / amax), the same
// round-half-to-even (vcvtps2dq in the default rounding mode, like
// nearbyint) and the same clamp, so the bytes are identical.
void Quantize(const float* x, size_t ldx, int batch, size_t k, int8_t* q,
              size_t stride, int32_t* row_sums, float* dequant) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * ldx;
    int8_t* qb = q + static_cast<size_t>(b) * stride;
    __m512 vmax = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= k; c += 16) {
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(xb + c)));
    }
    const __mmask16 tail = static_cast<__mmask16>((1u << (k - c)) - 1);
    vmax =
        _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, xb + c)));
    const float amax = _mm512_reduce_max_ps(vmax);
    if (!(amax >= kQuantizeMinAmax)) {
      std::memset(qb, 0, stride);
      dequant[b] = 0.0f;
      row_sums[b] = 0;
      continue;
    }
    const __m512 inv = _mm512_set1_ps(127.0f / amax);
    const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
    __m512i sum = _mm512_setzero_si512();
    for (c = 0; c < k; c += 16) {
      const __mmask16 m = k - c >= 16
                              ? static_cast<__mmask16>(0xffff)
                              : static_cast<__mmask16>((1u << (k - c)) - 1);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xb + c), inv);
      __m512i i = _mm512_cvtps_epi32(v);  // round half to even
      i = _mm512_min_epi32(_mm512_max_epi32(i, lo), hi);
      sum = _mm512_add_epi32(sum, i);
      _mm_mask_storeu_epi8(qb + c, m, _mm512_cvtepi32_epi8(i));
    }
    std::memset(qb + k, 0, stride - k);
    row_sums[b] = _mm512_reduce_add_epi32(sum);
    dequant[b] = amax / 127.0f;
  }
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    GemmBatch(packed, n, k, x.q + b0 * x.stride, x.stride, x.row_sums + b0,
              decltype(rows)::value, y + b0 * ldy, ldy);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelAvx512Vnni = {
    "avx512vnni", Supported,
    PackedSize,   Pack,
    Gemm,         "AVX-512 VNNI (F, BW, VL, VNNI)",
    Quantize,     "interleaved: 8-row groups x 256-column blocks",
};

}  // namespace ternd::runtime
