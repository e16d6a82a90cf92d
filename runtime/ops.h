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

#include "runtime/format.h"
#include "runtime/kernels/ternary_kernel.h"

namespace ternd::runtime {

// Per-token absmax quantization of x [batch, k] (rows `ldx` floats apart):
//   amax = max |x[b, :]|;  inv = 127.0f / amax  (float32 division)
//   q[b, c] = clamp(round_half_even(x[b, c] * inv), -128, 127)
//   dequant[b] = amax / 127.0f;  row_sums[b] = sum_c q[b, c]
// A row whose amax is below kQuantizeMinAmax (2^-100; zero included)
// gives q = 0 and dequant 0. Bytes [k, stride) of every q row
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

// --- The convolutional family (format version 3). Spatial values are one
// sample each, channels last: x[(ih * in_w + iw) * in_c + c]; `g` says
// where the windows lie (format.h). Output position p = oh * out_w + ow
// reads input (oh * sh - ph + kh * dh, ow * sw - pw + kw * dw).

// im2col of int8 codes: for output positions first .. first + rows - 1,
// row r of `out` (rows `stride` bytes apart) gets the window of position
// first + r in (kh, kw, c) order, 0 where the window lies in the padding,
// and 0 in bytes [patch, stride); row_sums[r] is the row's sum.
void Im2colRows(const int8_t* codes, const WindowGeometry& g, size_t first,
                int rows, int8_t* out, size_t stride, int32_t* row_sums);

// y[p, c] = bias[c] + sum over (kh, kw) in order of w[kh, kw, c] * x[...]
// (window positions in the padding skipped); float32 weights [KH, KW, C],
// bias may be null. One sample.
void DepthwiseConv2d(const float* x, const WindowGeometry& g, const float* w,
                     const float* bias, float* y);
// Largest value of each window (positions in the padding ignored).
void MaxPool(const float* x, const WindowGeometry& g, float* y);
// Sum of the window in (kh, kw) order, padding counting as zeros, divided
// by kh * kw (PyTorch's count_include_pad=True).
void AvgPool(const float* x, const WindowGeometry& g, float* y);
// y[c] = (sum over positions in order of x[p, c]) / positions. One sample.
void GlobalAvgPool(const float* x, size_t positions, size_t channels, float* y);
// Appends `channels` values of each position of `x` at channel `offset` of
// y (rows of `out_channels`). One sample.
void CopyChannels(const float* x, size_t positions, size_t channels,
                  size_t offset, size_t out_channels, float* y);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_OPS_H_
