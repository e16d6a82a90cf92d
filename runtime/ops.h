// The graph ops of format version 1, on float32 rows [batch, features].
//
// These are the numerics of record (docs/model-format.md, "Numerics"). They
// never allocate: every buffer is given by the caller, out of the arena.
//
// Thread-safety: pure functions of their arguments.
#ifndef TERND_RUNTIME_OPS_H_
#define TERND_RUNTIME_OPS_H_

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/ternary_kernel.h"

namespace ternd::runtime {

// Per-token absmax quantization of x [batch, k] (rows `ldx` floats apart):
//   amax = max |x[b, :]|;  inv = 127.0f / amax  (float32 division)
//   q[b, c] = clamp(round_half_even(x[b, c] * inv), -128, 127)
//   dequant[b] = amax / 127.0f;  row_sums[b] = sum_c q[b, c]
// A row of zeros gives q = 0 and dequant 0. Bytes [k, stride) of every q row
// are set to zero. Non-finite inputs never reach here (Invoke checks).
void QuantizeActivations(const float* x, size_t ldx, int batch, size_t k,
                         int8_t* q, size_t stride, int32_t* row_sums,
                         float* dequant);

// y[b, n] = float(acc[b, n]) * (wscale[n or 0] * dequant[b]) + bias[n]
// `wscale` has 1 entry (per tensor) or n (per row); bias may be null.
void DequantizeRows(const int32_t* acc, size_t ldacc, int batch, size_t n,
                    const float* wscale, bool per_row, const float* dequant,
                    const float* bias, float* y, size_t ldy);

// y = x W^T + b with float32 weights W [n, k], accumulated in float in index
// order. bias may be null.
void LinearF32(const float* x, int batch, size_t k, const float* w, size_t n,
               const float* bias, float* y);

void RmsNorm(const float* x, int batch, size_t f, const float* gain, float eps,
             float* y);
void LayerNorm(const float* x, int batch, size_t f, const float* gain,
               const float* bias, float eps, float* y);
void Relu(const float* x, size_t count, float* y);
void Relu2(const float* x, size_t count, float* y);
void Silu(const float* x, size_t count, float* y);
void Gelu(const float* x, size_t count, float* y);
void Add(const float* a, const float* b, size_t count, float* y);
void Softmax(const float* x, int batch, size_t f, float* y);
// Index of the first largest element of each row.
void Argmax(const float* x, int batch, size_t f, int32_t* y);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_OPS_H_
