// Ternary GEMM for AArch64 NEON without the dot-product extension
// (tgemm__neon), for armv8.0-a cores such as the Cortex-A53. Needs no extra
// flags; called only when GetCpuFeatures().neon (HWCAP_ASIMD).
//
// Layout: InterleavedLayout{4 rows, 64 columns}, as the dotprod variant.
//
// Arithmetic: smull/smlal2 multiply the weight codes c = w + 1 in {0, 1, 2}
// by the int8 activations into int16, sadalp widens pairs into int32, and
// y = sum(c * x) - row_sum(x).
// Accumulator headroom: one int16 lane collects 8 products of at most
// 2 * 128 = 256 per 64-column block (<= 2048 < 32767) before sadalp; an
// int32 lane then holds at most 2 * 128 * K / 4 <= 2^28 for
// K <= kMaxFeatures = 2^22; y is at most 2^29 in magnitude.
#include <arm_neon.h>

#include "runtime/kernels/batch_chunks.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/interleaved_pack.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/mca_markers.h"
#include "runtime/kernels/quantize_neon.h"
#include "runtime/ops.h"

namespace ternd::runtime {
namespace {

constexpr InterleavedLayout kLayout{4, 64};
constexpr size_t kGroupRows = 4;
constexpr size_t kBlockBytes = 16;
constexpr size_t kGroupBlockBytes = kGroupRows * kBlockBytes;

bool Supported() { return GetCpuFeatures().neon; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

inline int16x8_t MulAcc(int16x8_t s, int8x16_t c, int8x16_t x) {
  s = vmlal_s8(s, vget_low_s8(c), vget_low_s8(x));
  return vmlal_high_s8(s, c, x);
}

// One row against B tokens (B <= 8): out[t] = sum(c * x).
template <int B>
void RowTile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
             int32_t out[B]) {
  const uint8x16_t mask = vdupq_n_u8(3);
  int32x4_t acc[B];
  for (int t = 0; t < B; ++t) acc[t] = vdupq_n_s32(0);
  for (size_t kb = 0; kb < blocks; ++kb) {
    if constexpr (B == 1) TERND_MCA_BEGIN("neon");
    const uint8x16_t v = vld1q_u8(w + kb * kGroupBlockBytes);
    const int8x16_t c0 = vreinterpretq_s8_u8(vandq_u8(v, mask));
    const int8x16_t c1 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), mask));
    const int8x16_t c2 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), mask));
    const int8x16_t c3 = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
    for (int t = 0; t < B; ++t) {
      const int8_t* xb = x + t * stride + kb * 64;
      int16x8_t s = vdupq_n_s16(0);
      s = MulAcc(s, c0, vld1q_s8(xb));
      s = MulAcc(s, c1, vld1q_s8(xb + 16));
      s = MulAcc(s, c2, vld1q_s8(xb + 32));
      s = MulAcc(s, c3, vld1q_s8(xb + 48));
      acc[t] = vpadalq_s16(acc[t], s);
    }
    if constexpr (B == 1) TERND_MCA_END("neon");
  }
  for (int t = 0; t < B; ++t) out[t] = vaddvq_s32(acc[t]);
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

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<8>(x.batch, [&](auto rows, int b0) {
    GemmChunk<decltype(rows)::value>(packed, n, k, x.q + b0 * x.stride,
                                     x.stride, x.row_sums + b0, y + b0 * ldy,
                                     ldy);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelNeon = {
    "neon",
    Supported,
    PackedSize,
    Pack,
    Gemm,
    "NEON (ASIMD)",
    QuantizeActivationsNeon,
    "interleaved: 4-row groups x 64-column blocks",
};

}  // namespace ternd::runtime
