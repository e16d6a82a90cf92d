// lm_math's instruction-set-specific functions, each defined in a source
// file compiled with its own flags (lm_math_avx512.cc) and called only
// when the CPU has them (lm_math.cc chooses).
#ifndef TERND_RUNTIME_LM_LM_MATH_INTERNAL_H_
#define TERND_RUNTIME_LM_LM_MATH_INTERNAL_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime::lm_math::internal {

// Rows per group of the AVX-512 head layout (lm_math_avx512.cc).
inline constexpr size_t kHeadGroup = 4;

#if defined(__x86_64__)
void HeadI8Avx512Vnni(const int8_t* packed, const float* scale,
                      const int32_t* row_sums, size_t rows, size_t n,
                      const float* x, void* work, float* out);
void HeadF16Avx512(const uint16_t* packed, size_t rows, size_t n,
                   const float* x, void* work, float* out);
void DequantSiluGateAvx512(const int32_t* acc, float s, float* y, size_t n);
void AttendAvx512(const float* q, size_t heads, size_t d, float scale,
                  const uint16_t* ka, const uint16_t* va, size_t count_a,
                  const uint16_t* kb, const uint16_t* vb, size_t count_b,
                  float* scores, float* out);
#endif

}  // namespace ternd::runtime::lm_math::internal

#endif  // TERND_RUNTIME_LM_LM_MATH_INTERNAL_H_
