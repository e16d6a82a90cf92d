#include "runtime/kernels/quantize_neon.h"

#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "runtime/kernels/ternary_kernel.h"

namespace ternd::runtime {

void QuantizeActivationsNeon(const float* x, size_t ldx, int batch, size_t k,
                             int8_t* q, size_t stride, int32_t* row_sums,
                             float* dequant) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * ldx;
    int8_t* qb = q + static_cast<size_t>(b) * stride;
    // Absmax: max is exact, so the order does not matter.
    float32x4_t m0 = vdupq_n_f32(0), m1 = m0, m2 = m0, m3 = m0;
    size_t c = 0;
    for (; c + 16 <= k; c += 16) {
      m0 = vmaxq_f32(m0, vabsq_f32(vld1q_f32(xb + c)));
      m1 = vmaxq_f32(m1, vabsq_f32(vld1q_f32(xb + c + 4)));
      m2 = vmaxq_f32(m2, vabsq_f32(vld1q_f32(xb + c + 8)));
      m3 = vmaxq_f32(m3, vabsq_f32(vld1q_f32(xb + c + 12)));
    }
    float amax = vmaxvq_f32(vmaxq_f32(vmaxq_f32(m0, m1), vmaxq_f32(m2, m3)));
    for (; c < k; ++c) amax = std::fmax(amax, std::fabs(xb[c]));
    if (!(amax >= kQuantizeMinAmax)) {
      std::memset(qb, 0, stride);
      dequant[b] = 0.0f;
      row_sums[b] = 0;
      continue;
    }
    const float inv_s = 127.0f / amax;
    const float32x4_t inv = vdupq_n_f32(inv_s);
    const int32x4_t lo = vdupq_n_s32(-128), hi = vdupq_n_s32(127);
    int32x4_t sum = vdupq_n_s32(0);
    auto one = [&](const float* p) {
      // fcvtns: to nearest, ties to even, as nearbyint in the default mode.
      int32x4_t i = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p), inv));
      i = vminq_s32(vmaxq_s32(i, lo), hi);
      sum = vaddq_s32(sum, i);
      return i;
    };
    c = 0;
    for (; c + 16 <= k; c += 16) {
      const int32x4_t i0 = one(xb + c), i1 = one(xb + c + 4),
                      i2 = one(xb + c + 8), i3 = one(xb + c + 12);
      const int16x8_t h0 = vcombine_s16(vmovn_s32(i0), vmovn_s32(i1));
      const int16x8_t h1 = vcombine_s16(vmovn_s32(i2), vmovn_s32(i3));
      vst1q_s8(qb + c, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
    }
    int32_t total = vaddvq_s32(sum);
    for (; c < k; ++c) {
      float v = std::nearbyint(xb[c] * inv_s);
      v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
      qb[c] = static_cast<int8_t>(v);
      total += qb[c];
    }
    std::memset(qb + k, 0, stride - k);
    dequant[b] = amax / 127.0f;
    row_sums[b] = total;
  }
}

}  // namespace ternd::runtime
