// The tq1 digit decoding both AArch64 1.6-bit variants share
// (ternary_gemm_neon_tq1.cc, ternary_gemm_neondot_tq1.cc): t_0 = q,
// t_{j+1} = 3 t_j mod 256 (byte adds), and the code c_j = floor(3 t_j / 256)
// = [t_j >= 86] + [t_j >= 171], each term min(t_j -sat 85, 1) and
// min(t_j -sat 170, 1) (uqsub, umin): codes 0..2. Static, so that each
// source keeps its own copy compiled with its own flags.
#ifndef TERND_RUNTIME_KERNELS_TQ1_NEON_H_
#define TERND_RUNTIME_KERNELS_TQ1_NEON_H_

#include <arm_neon.h>

namespace ternd::runtime {

static inline uint8x16_t Tq1Digit(uint8x16_t t) {
  const uint8x16_t one = vdupq_n_u8(1);
  return vaddq_u8(vminq_u8(vqsubq_u8(t, vdupq_n_u8(85)), one),
                  vminq_u8(vqsubq_u8(t, vdupq_n_u8(170)), one));
}

static inline uint8x16_t Tq1Next(uint8x16_t t) {
  return vaddq_u8(t, vaddq_u8(t, t));
}

// Rows per register tile in both variants.
inline constexpr int kTq1NeonRows = 4;

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_TQ1_NEON_H_
