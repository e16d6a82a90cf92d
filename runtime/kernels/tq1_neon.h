// The tq1 digit decoding both AArch64 1.6-bit variants share
// (ternary_gemm_neon_tq1.cc, ternary_gemm_neondot_tq1.cc): t_0 = q,
// t_{j+1} = 3 t_j mod 256 (byte adds), and the code c_j = floor(3 t_j / 256)
// = [t_j >= 86] + [t_j >= 171]. Static, so that each source keeps its own
// copy compiled with its own flags.
#ifndef TERND_RUNTIME_KERNELS_TQ1_NEON_H_
#define TERND_RUNTIME_KERNELS_TQ1_NEON_H_

#include <arm_neon.h>

namespace ternd::runtime {

// The negated code -c_j in {0, -1, -2}: the two comparisons give all-ones
// bytes (-1) where t_j >= 86 and t_j >= 171. Three instructions (cmhs,
// cmhs, add) instead of five for c_j itself; the products are summed
// negated and the sum negated once at the end.
static inline int8x16_t Tq1NegDigit(uint8x16_t t) {
  return vreinterpretq_s8_u8(
      vaddq_u8(vcgeq_u8(t, vdupq_n_u8(86)), vcgeq_u8(t, vdupq_n_u8(171))));
}

static inline uint8x16_t Tq1Next(uint8x16_t t) {
  return vaddq_u8(t, vaddq_u8(t, t));
}

// Rows per register tile in both variants.
inline constexpr int kTq1NeonRows = 4;

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_TQ1_NEON_H_
