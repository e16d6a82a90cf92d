// The per-token int8 quantization of activations (QuantizeActivations,
// runtime/ops.h) with AArch64 NEON, bit-identical to it: absmax with
// fmax/fabs, 127.0f / amax in float32, x * inv rounded half to even
// (fcvtns), clamped to [-128, 127], 16 values per step. The NEON and
// dotprod variants use it as their `quantize`.
#ifndef TERND_RUNTIME_KERNELS_QUANTIZE_NEON_H_
#define TERND_RUNTIME_KERNELS_QUANTIZE_NEON_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime {

void QuantizeActivationsNeon(const float* x, size_t ldx, int batch, size_t k,
                             int8_t* q, size_t stride, int32_t* row_sums,
                             float* dequant);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_QUANTIZE_NEON_H_
