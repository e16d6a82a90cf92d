// The float parts of a transformer step, with an AVX2+FMA+F16C path on x86
// chosen at start and a portable path everywhere else. Dot products may
// sum in any fixed order (the order depends only on n, never on threads),
// so a result is the same whichever thread computes it.
#ifndef TERND_RUNTIME_LM_LM_MATH_H_
#define TERND_RUNTIME_LM_LM_MATH_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime::lm_math {

// IEEE binary16 <-> float32; FloatToHalf rounds to nearest even.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

struct Ops {
  const char* name;  // "avx2" or "portable"
  float (*dot_f32)(const float* a, const float* b, size_t n);
  // sum_i half(h[i]) * x[i]
  float (*dot_f16)(const uint16_t* h, const float* x, size_t n);
  // sum_i q[i] * x[i] (the caller applies the row scale)
  float (*dot_i8)(const int8_t* q, const float* x, size_t n);
  // acc[i] += w * half(v[i])
  void (*axpy_f16)(float w, const uint16_t* v, float* acc, size_t n);
  void (*to_f16)(const float* x, uint16_t* h, size_t n);
};

// The best set for this CPU (TERND_KERNEL=ref forces the portable one).
const Ops& BestOps();
const Ops& PortableOps();

}  // namespace ternd::runtime::lm_math

#endif  // TERND_RUNTIME_LM_LM_MATH_H_
