#include "runtime/ops.h"

#include <cmath>
#include <cstring>

namespace ternd::runtime {

void QuantizeActivations(const float* x, size_t ldx, int batch, size_t k,
                         int8_t* q, size_t stride, int32_t* row_sums,
                         float* dequant) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * ldx;
    int8_t* qb = q + static_cast<size_t>(b) * stride;
    float amax = 0.0f;
    for (size_t c = 0; c < k; ++c) amax = std::fmax(amax, std::fabs(xb[c]));
    int32_t sum = 0;
    if (amax >= kQuantizeMinAmax) {
      const float inv = 127.0f / amax;
      for (size_t c = 0; c < k; ++c) {
        // nearbyint rounds half to even in the default rounding mode.
        float v = std::nearbyint(xb[c] * inv);
        v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
        qb[c] = static_cast<int8_t>(v);
        sum += qb[c];
      }
      dequant[b] = amax / 127.0f;
    } else {
      std::memset(qb, 0, k);
      dequant[b] = 0.0f;
    }
    std::memset(qb + k, 0, stride - k);
    row_sums[b] = sum;
  }
}

void DequantizeRows(const int32_t* acc, size_t ldacc, int batch, size_t n,
                    const float* wscale, bool per_row, const float* dequant,
                    const float* bias, float* y, size_t ldy) {
  for (int b = 0; b < batch; ++b) {
    const int32_t* ab = acc + static_cast<size_t>(b) * ldacc;
    float* yb = y + static_cast<size_t>(b) * ldy;
    for (size_t r = 0; r < n; ++r) {
      const float s = (per_row ? wscale[r] : wscale[0]) * dequant[b];
      float v = static_cast<float>(ab[r]) * s;
      if (bias) v += bias[r];
      yb[r] = v;
    }
  }
}

void LinearF32(const float* x, int batch, size_t k, const float* w, size_t n,
               const float* bias, float* y) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * k;
    for (size_t r = 0; r < n; ++r) {
      const float* wr = w + r * k;
      float acc = 0.0f;
      for (size_t c = 0; c < k; ++c) acc += wr[c] * xb[c];
      y[static_cast<size_t>(b) * n + r] = bias ? acc + bias[r] : acc;
    }
  }
}

void RmsNorm(const float* x, int batch, size_t f, const float* gain, float eps,
             float* y) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * f;
    float* yb = y + static_cast<size_t>(b) * f;
    float ss = 0.0f;
    for (size_t i = 0; i < f; ++i) ss += xb[i] * xb[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(f) + eps);
    for (size_t i = 0; i < f; ++i) yb[i] = xb[i] * inv * gain[i];
  }
}

void LayerNorm(const float* x, int batch, size_t f, const float* gain,
               const float* bias, float eps, float* y) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * f;
    float* yb = y + static_cast<size_t>(b) * f;
    float mean = 0.0f;
    for (size_t i = 0; i < f; ++i) mean += xb[i];
    mean /= static_cast<float>(f);
    float var = 0.0f;
    for (size_t i = 0; i < f; ++i) var += (xb[i] - mean) * (xb[i] - mean);
    var /= static_cast<float>(f);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (size_t i = 0; i < f; ++i) {
      float v = (xb[i] - mean) * inv * gain[i];
      yb[i] = bias ? v + bias[i] : v;
    }
  }
}

void Relu(const float* x, size_t count, float* y) {
  for (size_t i = 0; i < count; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void Relu2(const float* x, size_t count, float* y) {
  for (size_t i = 0; i < count; ++i) {
    const float r = x[i] > 0.0f ? x[i] : 0.0f;
    y[i] = r * r;
  }
}

void Silu(const float* x, size_t count, float* y) {
  for (size_t i = 0; i < count; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void Gelu(const float* x, size_t count, float* y) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  for (size_t i = 0; i < count; ++i) {
    y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
  }
}

void Add(const float* a, const float* b, size_t count, float* y) {
  for (size_t i = 0; i < count; ++i) y[i] = a[i] + b[i];
}

void Softmax(const float* x, int batch, size_t f, float* y) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * f;
    float* yb = y + static_cast<size_t>(b) * f;
    float mx = xb[0];
    for (size_t i = 1; i < f; ++i) mx = std::fmax(mx, xb[i]);
    float sum = 0.0f;
    for (size_t i = 0; i < f; ++i) {
      yb[i] = std::exp(xb[i] - mx);
      sum += yb[i];
    }
    const float inv = 1.0f / sum;
    for (size_t i = 0; i < f; ++i) yb[i] *= inv;
  }
}

void Argmax(const float* x, int batch, size_t f, int32_t* y) {
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * f;
    size_t best = 0;
    for (size_t i = 1; i < f; ++i) {
      if (xb[i] > xb[best]) best = i;
    }
    y[b] = static_cast<int32_t>(best);
  }
}

void Im2colRows(const int8_t* codes, const WindowGeometry& g, size_t first,
                int rows, int8_t* out, size_t stride, int32_t* row_sums) {
  const size_t c = g.in_c;
  const size_t patch = g.patch();
  for (int r = 0; r < rows; ++r) {
    const size_t p = first + static_cast<size_t>(r);
    const int64_t oh = static_cast<int64_t>(p / g.out_w);
    const int64_t ow = static_cast<int64_t>(p % g.out_w);
    int8_t* row = out + static_cast<size_t>(r) * stride;
    int8_t* dst = row;
    for (uint32_t kh = 0; kh < g.kh; ++kh) {
      const int64_t ih = oh * g.sh - g.ph + int64_t{kh} * g.dh;
      const bool row_in = ih >= 0 && ih < g.in_h;
      for (uint32_t kw = 0; kw < g.kw; ++kw, dst += c) {
        const int64_t iw = ow * g.sw - g.pw + int64_t{kw} * g.dw;
        if (row_in && iw >= 0 && iw < g.in_w) {
          std::memcpy(dst,
                      codes + (static_cast<size_t>(ih) * g.in_w +
                               static_cast<size_t>(iw)) *
                                  c,
                      c);
        } else {
          std::memset(dst, 0, c);
        }
      }
    }
    std::memset(row + patch, 0, stride - patch);
    int32_t sum = 0;
    for (size_t i = 0; i < patch; ++i) sum += row[i];
    row_sums[r] = sum;
  }
}

namespace {

// Calls f(ih, iw, kh, kw) for every window position of output (oh, ow) that
// lies inside the input, in (kh, kw) order.
template <typename F>
inline void ForWindow(const WindowGeometry& g, int64_t oh, int64_t ow, F f) {
  for (uint32_t kh = 0; kh < g.kh; ++kh) {
    const int64_t ih = oh * g.sh - g.ph + int64_t{kh} * g.dh;
    if (ih < 0 || ih >= g.in_h) continue;
    for (uint32_t kw = 0; kw < g.kw; ++kw) {
      const int64_t iw = ow * g.sw - g.pw + int64_t{kw} * g.dw;
      if (iw < 0 || iw >= g.in_w) continue;
      f(static_cast<size_t>(ih), static_cast<size_t>(iw), kh, kw);
    }
  }
}

}  // namespace

void DepthwiseConv2d(const float* x, const WindowGeometry& g, const float* w,
                     const float* bias, float* y) {
  const size_t c = g.in_c;
  for (uint32_t oh = 0; oh < g.out_h; ++oh) {
    for (uint32_t ow = 0; ow < g.out_w; ++ow) {
      float* yp = y + (static_cast<size_t>(oh) * g.out_w + ow) * c;
      for (size_t ch = 0; ch < c; ++ch) yp[ch] = 0.0f;
      ForWindow(g, oh, ow, [&](size_t ih, size_t iw, uint32_t kh, uint32_t kw) {
        const float* xp = x + (ih * g.in_w + iw) * c;
        const float* wp = w + (static_cast<size_t>(kh) * g.kw + kw) * c;
        for (size_t ch = 0; ch < c; ++ch) yp[ch] += wp[ch] * xp[ch];
      });
      if (bias) {
        for (size_t ch = 0; ch < c; ++ch) yp[ch] += bias[ch];
      }
    }
  }
}

void MaxPool(const float* x, const WindowGeometry& g, float* y) {
  const size_t c = g.in_c;
  for (uint32_t oh = 0; oh < g.out_h; ++oh) {
    for (uint32_t ow = 0; ow < g.out_w; ++ow) {
      float* yp = y + (static_cast<size_t>(oh) * g.out_w + ow) * c;
      bool first = true;
      ForWindow(g, oh, ow, [&](size_t ih, size_t iw, uint32_t, uint32_t) {
        const float* xp = x + (ih * g.in_w + iw) * c;
        for (size_t ch = 0; ch < c; ++ch) {
          yp[ch] = first ? xp[ch] : std::fmax(yp[ch], xp[ch]);
        }
        first = false;
      });
    }
  }
}

void AvgPool(const float* x, const WindowGeometry& g, float* y) {
  const size_t c = g.in_c;
  const float count = static_cast<float>(g.kh * g.kw);
  for (uint32_t oh = 0; oh < g.out_h; ++oh) {
    for (uint32_t ow = 0; ow < g.out_w; ++ow) {
      float* yp = y + (static_cast<size_t>(oh) * g.out_w + ow) * c;
      for (size_t ch = 0; ch < c; ++ch) yp[ch] = 0.0f;
      ForWindow(g, oh, ow, [&](size_t ih, size_t iw, uint32_t, uint32_t) {
        const float* xp = x + (ih * g.in_w + iw) * c;
        for (size_t ch = 0; ch < c; ++ch) yp[ch] += xp[ch];
      });
      for (size_t ch = 0; ch < c; ++ch) yp[ch] /= count;
    }
  }
}

void GlobalAvgPool(const float* x, size_t positions, size_t channels,
                   float* y) {
  for (size_t ch = 0; ch < channels; ++ch) y[ch] = 0.0f;
  for (size_t p = 0; p < positions; ++p) {
    const float* xp = x + p * channels;
    for (size_t ch = 0; ch < channels; ++ch) y[ch] += xp[ch];
  }
  const float n = static_cast<float>(positions);
  for (size_t ch = 0; ch < channels; ++ch) y[ch] /= n;
}

void CopyChannels(const float* x, size_t positions, size_t channels,
                  size_t offset, size_t out_channels, float* y) {
  for (size_t p = 0; p < positions; ++p) {
    std::memcpy(y + p * out_channels + offset, x + p * channels,
                channels * sizeof(float));
  }
}

}  // namespace ternd::runtime
