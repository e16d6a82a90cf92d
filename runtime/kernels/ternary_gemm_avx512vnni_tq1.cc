// 1.6-bit ternary GEMM for x86-64 with AVX-512 VNNI (avx512vnni-1.6).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; called only
// when GetCpuFeatures().avx512_vnni.
//
// Layout: tq1 (tq1_pack.h), 64 bytes per row and 320-column block.
//
// Decode without extracting digits: with t_0 = q and t_{j+1} = 3 t_j mod 256
// (two byte adds), 256 c_j = 3 t_j - t_{j+1} for every byte, so
//
//   256 * sum_j c_j . x_j = 3 * sum_j t_j . x_j - sum_j t_{j+1} . x_j
//
// and two vpdpbusd per digit (unsigned t times signed x) replace the digit
// extraction. Per int32 lane, 3a - b is 256 times the lane's exact sum of
// c * x. a and b wrap modulo 2^32 (vpdpbusd and vpaddd do not saturate), so
// 3a - b is right modulo 2^32; it is right outright while |256 * sum| <
// 2^31: a lane gets 20 products of |c * x| <= 256 per block, so at most
// 256 * 20 * 256 * blocks < 2^31 for blocks <= kTq1ChunkBlocks = 1024
// (< 1638). The arithmetic shift by 8 is then exact.
#include <cstring>

#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/mca_markers.h"
#include "runtime/kernels/simd_x86.h"
#include "runtime/kernels/tq1_gemm.h"
#include "runtime/kernels/tq1_pack.h"

namespace ternd::runtime {
namespace {

// Software prefetch distance, in blocks of a group (512 bytes each).
constexpr size_t kPrefetchBlocks = 8;

bool Supported() { return GetCpuFeatures().avx512_vnni; }

// R rows against B tokens: 2 R B accumulators, 5 B activation vectors (kept
// in registers up to B = 3; GCC would otherwise fold a load into every
// vpdpbusd), one weight vector being decoded.
template <int R, int B>
void Tile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
          int32_t out[R * B]) {
  constexpr int kAcc = (R * B + 7) / 8 * 8;
  __m512i a[kAcc] = {}, b[kAcc] = {};  // zeros
  for (size_t kb = 0; kb < blocks; ++kb) {
    if constexpr (B == 1) TERND_MCA_BEGIN("avx512vnni-1.6");
    const uint8_t* wb = w + kb * kTq1GroupBlockBytes;
    const int8_t* xb = x + kb * kTq1BlockK;
#pragma GCC unroll 8
    for (size_t line = 0; line < R * kTq1BlockBytes; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(wb) +
                       kPrefetchBlocks * kTq1GroupBlockBytes + line,
                   _MM_HINT_T0);
    }
    __m512i xv[B][5];
#pragma GCC unroll 4
    for (int t = 0; t < B; ++t) {
#pragma GCC unroll 5
      for (int j = 0; j < 5; ++j) {
        xv[t][j] = _mm512_load_si512(xb + t * stride + j * 64);
        if constexpr (B <= 3) __asm__("" : "+v"(xv[t][j]));
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512i t = _mm512_load_si512(wb + r * kTq1BlockBytes);
#pragma GCC unroll 5
      for (int j = 0; j < 5; ++j) {
#pragma GCC unroll 4
        for (int tok = 0; tok < B; ++tok) {
          a[r * B + tok] = _mm512_dpbusd_epi32(a[r * B + tok], t, xv[tok][j]);
        }
        t = _mm512_add_epi8(t, _mm512_add_epi8(t, t));
#pragma GCC unroll 4
        for (int tok = 0; tok < B; ++tok) {
          b[r * B + tok] = _mm512_dpbusd_epi32(b[r * B + tok], t, xv[tok][j]);
        }
      }
    }
    if constexpr (B == 1) TERND_MCA_END("avx512vnni-1.6");
  }
#pragma GCC unroll 16
  for (int i = 0; i < kAcc; ++i) {
    const __m512i a3 = _mm512_add_epi32(a[i], _mm512_add_epi32(a[i], a[i]));
    a[i] = _mm512_srai_epi32(_mm512_sub_epi32(a3, b[i]), 8);
  }
  alignas(32) int32_t sums[kAcc];
#pragma GCC unroll 2
  for (int i = 0; i < kAcc; i += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + i), Reduce8(a + i));
  }
  std::memcpy(out, sums, sizeof(int32_t) * R * B);
}

// Rows per tile for B tokens, so that everything stays in the 32 zmm
// registers.
template <int B>
constexpr int kRows = B == 1   ? 8
                      : B == 2 ? 4
                               : 2;

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    constexpr int B = decltype(rows)::value;
    Tq1GemmChunk<kRows<B>, B>(packed, n, k, x.q + b0 * x.stride, x.stride,
                              x.row_sums + b0, y + b0 * ldy, ldy,
                              Tile<kRows<B>, B>);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelAvx512VnniTq1 = {
    "avx512vnni-1.6",
    Supported,
    Tq1PackedSize,
    PackTq1,
    Gemm,
    "AVX-512 VNNI (F, BW, VL, VNNI)",
    kTernaryKernelAvx512Vnni.quantize,
    "tq1: 5 weights per byte (1.6 bits), 8-row groups x 320-column blocks",
};

}  // namespace ternd::runtime
