// Ternary GEMM for AArch64 with the dot-product extension
// (tgemm__neondot). Compiled with -march=armv8.2-a+dotprod; called only when
// GetCpuFeatures().dotprod (HWCAP_ASIMDDP).
//
// Layout: InterleavedLayout{4 rows, 64 columns}: one 16-byte block per row
// and 64 columns, the 4 rows of a group one after another.
//
// Arithmetic: sdot multiplies signed bytes; the weight codes c = w + 1 in
// {0, 1, 2} enter as they are and y = sum(c * x) - row_sum(x).
// Accumulator headroom: an int32 lane gets 4 products of at most
// 2 * 128 = 256 per 64-column block, so at most 2 * 128 * K / 4 <= 2^28 for
// K <= kMaxFeatures = 2^22; y is at most 2^29 in magnitude.
#include <arm_neon.h>

#include <algorithm>

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

bool Supported() { return GetCpuFeatures().dotprod; }

size_t PackedSize(size_t n, size_t k) { return kLayout.PackedSize(n, k); }

void Pack(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  PackInterleaved(kLayout, canonical, n, k, dst);
}

template <int J>
inline int8x16_t Field(const uint8_t* p) {
  const uint8x16_t v = vld1q_u8(p);
  if constexpr (J == 0) {
    return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(3)));
  } else if constexpr (J == 3) {
    return vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  } else {
    return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2 * J), vdupq_n_u8(3)));
  }
}

template <int J, int R, int B>
inline void Step(const uint8_t* wb, const int8_t* xb, size_t stride,
                 int32x4_t acc[R * B]) {
  int8x16_t xv[B];
  for (int t = 0; t < B; ++t) xv[t] = vld1q_s8(xb + t * stride + 16 * J);
  for (int r = 0; r < R; ++r) {
    const int8x16_t c = Field<J>(wb + r * kBlockBytes);
    for (int t = 0; t < B; ++t) {
      acc[r * B + t] = vdotq_s32(acc[r * B + t], c, xv[t]);
    }
  }
}

// R rows of a group against B tokens: out[r * B + t] = sum(c * x).
template <int R, int B>
void Tile(const uint8_t* w, size_t blocks, const int8_t* x, size_t stride,
          int32_t out[R * B]) {
  int32x4_t acc[R * B];
  for (int i = 0; i < R * B; ++i) acc[i] = vdupq_n_s32(0);
  for (size_t kb = 0; kb < blocks; ++kb) {
    if constexpr (B == 1) TERND_MCA_BEGIN("neondot");
    const uint8_t* wb = w + kb * kGroupBlockBytes;
    const int8_t* xb = x + kb * 64;
    Step<0, R, B>(wb, xb, stride, acc);
    Step<1, R, B>(wb, xb, stride, acc);
    Step<2, R, B>(wb, xb, stride, acc);
    Step<3, R, B>(wb, xb, stride, acc);
    if constexpr (B == 1) TERND_MCA_END("neondot");
  }
  for (int i = 0; i < R * B; ++i) out[i] = vaddvq_s32(acc[i]);
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
      Tile<R, B>(packed + g * group_bytes + sub * kBlockBytes, blocks, x,
                 stride, out);
      const size_t rows = std::min<size_t>(R, n - row0);
      for (int t = 0; t < B; ++t) {
        for (size_t r = 0; r < rows; ++r) {
          y[t * ldy + row0 + r] = out[r * B + t] - row_sums[t];
        }
      }
    }
  }
}

// R * B accumulators + B activations + decoded weights in 32 registers.
void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ForEachBatchChunk<8>(x.batch, [&](auto rows, int b0) {
    // Four weight rows per tile up to four tokens, two beyond (registers).
    constexpr int kRows = decltype(rows)::value <= 4 ? 4 : 2;
    GemmChunk<kRows, decltype(rows)::value>(packed, n, k, x.q + b0 * x.stride,
                                            x.stride, x.row_sums + b0,
                                            y + b0 * ldy, ldy);
  });
}

}  // namespace

const TernaryKernel kTernaryKernelNeonDot = {
    "neondot",
    Supported,
    PackedSize,
    Pack,
    Gemm,
    "NEON dot product (ASIMDDP)",
    QuantizeActivationsNeon,
    "interleaved: 4-row groups x 64-column blocks",
};

}  // namespace ternd::runtime
