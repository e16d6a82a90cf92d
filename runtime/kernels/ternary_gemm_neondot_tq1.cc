// 1.6-bit ternary GEMM for AArch64 with the dot-product extension
// (neondot-1.6). Compiled with -march=armv8.2-a+dotprod; called only when
// GetCpuFeatures().dotprod (HWCAP_ASIMDDP).
//
// Layout: tq1 (tq1_pack.h); a row's 64-byte block is read as four 16-byte
// quarters, digit j of quarter h lining up with the 16 activations at
// start + 64 j + 16 h. Decode: tq1_neon.h. sdot multiplies the codes (0..2,
// as int8) by the int8 activations, 4 per int32 lane; y = sum(c * x) -
// row_sum.
//
// Headroom: an int32 lane adds at most 2 * 128 * K / 4 <= 2^27 for
// K <= 2^22.
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

// The tile's rows against B tokens, block by block through the group's
// sequential stream; each digit of a row decoded once for the B tokens.
// out[r * B + t] = sum of c * x.
template <int B>
__attribute__((noinline)) void Tile(const uint8_t* w, size_t blocks,
                                    const int8_t* x, size_t stride,
                                    int32_t out[kRows * B]) {
  int32x4_t acc[kRows * B];
  for (int i = 0; i < kRows * B; ++i) acc[i] = vdupq_n_s32(0);
  for (size_t kb = 0; kb < blocks; ++kb) {
    if constexpr (B == 1) TERND_MCA_BEGIN("neondot-1.6");
    const uint8_t* wb = w + kb * kTq1GroupBlockBytes;
    const int8_t* xb = x + kb * kTq1BlockK;
#pragma GCC unroll 4
    for (int h = 0; h < 4; ++h) {
      uint8x16_t t[kRows];
      for (int r = 0; r < kRows; ++r) {
        t[r] = vld1q_u8(wb + r * kTq1BlockBytes + h * 16);
      }
      for (int j = 0; j < 5; ++j) {
        int8x16_t xs[B];
        for (int b = 0; b < B; ++b) {
          xs[b] = vld1q_s8(xb + b * stride + j * 64 + h * 16);
        }
        for (int r = 0; r < kRows; ++r) {
          const int8x16_t c = Tq1NegDigit(t[r]);
          for (int b = 0; b < B; ++b) {
            acc[r * B + b] = vdotq_s32(acc[r * B + b], c, xs[b]);
          }
          t[r] = Tq1Next(t[r]);
        }
      }
    }
    if constexpr (B == 1) TERND_MCA_END("neondot-1.6");
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

bool Supported() { return GetCpuFeatures().dotprod; }

}  // namespace

const TernaryKernel kTernaryKernelNeonDotTq1 = {
    "neondot-1.6",
    Supported,
    Tq1PackedSize,
    PackTq1,
    Gemm,
    "NEON dotprod (armv8.2-a)",
    QuantizeActivationsNeon,
    "tq1: 5 weights per byte (1.6 bits), 8-row groups x 320-column blocks",
};

}  // namespace ternd::runtime
