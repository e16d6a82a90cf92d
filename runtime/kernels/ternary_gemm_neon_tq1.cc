// 1.6-bit ternary GEMM for AArch64 NEON without the dot-product extension
// (neon-1.6), for armv8.0-a cores such as the Cortex-A53. Called only when
// GetCpuFeatures().neon (HWCAP_ASIMD).
//
// Layout: tq1 (tq1_pack.h); a row's 64-byte block is read as four 16-byte
// quarters, digit j of quarter h lining up with the 16 activations at
// start + 64 j + 16 h. Decode: tq1_neon.h. The codes (0..2) multiply the
// int8 activations with smull/smlal2 into int16, sadalp widens pairs into
// int32 after each quarter; y = sum(c * x) - row_sum.
//
// Headroom: an int16 lane adds 2 products of at most 2 * 128 per digit, 10
// per quarter (<= 2560) before sadalp; an int32 lane then holds at most
// 2 * 128 * K / 4 <= 2^28 for K <= 2^22.
#include <arm_neon.h>

#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/mca_markers.h"
#include "runtime/kernels/quantize_neon.h"
#include "runtime/kernels/tq1_gemm.h"
#include "runtime/kernels/tq1_neon.h"
#include "runtime/kernels/tq1_pack.h"

namespace ternd::runtime {
namespace {

constexpr int kRows = kTq1NeonRows;

// Rows of the tile against B tokens, block by block through the group's
// sequential stream; out[r * B + t] = sum of c * x.
template <int B>
__attribute__((noinline)) void Tile(const uint8_t* w, size_t blocks,
                                    const int8_t* x, size_t stride,
                                    int32_t out[kRows * B]) {
  int32x4_t acc[kRows * B];
  for (int i = 0; i < kRows * B; ++i) acc[i] = vdupq_n_s32(0);
  for (size_t kb = 0; kb < blocks; ++kb) {
    if constexpr (B == 1) TERND_MCA_BEGIN("neon-1.6");
    const uint8_t* wb = w + kb * kTq1GroupBlockBytes;
    const int8_t* xb = x + kb * kTq1BlockK;
#pragma GCC unroll 4
    for (int h = 0; h < 4; ++h) {
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        uint8x16_t t = vld1q_u8(wb + r * kTq1BlockBytes + h * 16);
        int16x8_t s[B];
        for (int b = 0; b < B; ++b) s[b] = vdupq_n_s16(0);
        for (int j = 0; j < 5; ++j) {
          const int8x16_t c = Tq1NegDigit(t);
          for (int b = 0; b < B; ++b) {
            const int8x16_t xs = vld1q_s8(xb + b * stride + j * 64 + h * 16);
            s[b] = vmlal_s8(s[b], vget_low_s8(c), vget_low_s8(xs));
            s[b] = vmlal_high_s8(s[b], c, xs);
          }
          t = Tq1Next(t);
        }
        for (int b = 0; b < B; ++b) {
          acc[r * B + b] = vpadalq_s16(acc[r * B + b], s[b]);
        }
      }
    }
    if constexpr (B == 1) TERND_MCA_END("neon-1.6");
  }
  for (int i = 0; i < kRows * B; ++i) out[i] = -vaddvq_s32(acc[i]);
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<4>(x.batch, [&](auto rows, int b0) {
    constexpr int B = decltype(rows)::value;
    // A lambda, so that this instance of Tq1GemmChunk is this file's own.
    Tq1GemmChunk<kRows, B>(
        packed, n, k, x.q + b0 * x.stride, x.stride, x.row_sums + b0,
        y + b0 * ldy, ldy,
        [](const uint8_t* w, size_t blocks, const int8_t* xs, size_t stride,
           int32_t* out) { Tile<B>(w, blocks, xs, stride, out); });
  });
}

bool Supported() { return GetCpuFeatures().neon; }

}  // namespace

const TernaryKernel kTernaryKernelNeonTq1 = {
    "neon-1.6",
    Supported,
    Tq1PackedSize,
    PackTq1,
    Gemm,
    "NEON (ASIMD)",
    QuantizeActivationsNeon,
    "tq1: 5 weights per byte (1.6 bits), 8-row groups x 320-column blocks",
};

}  // namespace ternd::runtime
