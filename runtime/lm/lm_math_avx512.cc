// The output head with AVX-512 (F, BW, VL, VNNI): lm_math.h's
// "avx512vnni" set. Compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni; called only when the CPU has them (lm_math.cc).
//
// Layout (kHeadGroup = 4): rows in groups of 4, each group as blocks of 64
// bytes per row (64 int8 or 32 f16 values), the 4 rows of a block one after
// another; padding (columns past n, rows past the last) is zero. A group is
// one sequential stream, and each vector of x loaded serves 4 rows.
//
// int8: x becomes u_i = m_i + 2^31 (m_i = rint(x_i * 2^s), |m_i| < 2^31)
// in four byte planes d_j (u_i = sum_j d_j[i] 2^(8j)), and vpdpbusd
// (unsigned planes times signed weights) sums each plane exactly:
//
//   sum_i q_i m_i = sum_j 2^(8j) sum_i d_j[i] q_i - 2^31 sum_i q_i.
//
// Accumulator headroom: a lane gets 4 products of at most 255 * 128 per
// block, so after n / 64 blocks at most 130560 n / 64 < 2^31 for n <= 2^20
// (the widest embedding a GGUF file may declare, gguf_arch.h). The lanes are
// added in int64.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/lm/lm_math_internal.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the merge operand
// of their masked builtins, which -W(maybe-)uninitialized reports once they
// are inlined here; the values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ternd::runtime::lm_math::internal {
namespace {

constexpr size_t kBlock = 64;  // bytes per row and block
constexpr size_t kGroupBlock = kHeadGroup * kBlock;

int64_t SumLanes(__m512i v) {
  const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
  const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
  return _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

}  // namespace

void HeadI8Avx512Vnni(const int8_t* packed, const float* scale,
                      const int32_t* row_sums, size_t rows, size_t n,
                      const float* x, void* work, float* out) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  const size_t padded = blocks * kBlock;
  // s: max|x| * 2^s < 2^31.
  __m512 vmax = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  }
  float amax = _mm512_reduce_max_ps(vmax);
  for (; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  if (!std::isfinite(amax)) {
    for (size_t r = 0; r < rows; ++r) {
      out[r] = std::numeric_limits<float>::quiet_NaN();
    }
    return;
  }
  int e = 0;
  std::frexp(amax, &e);  // amax < 2^e (e = 0 for amax = 0)
  const int s = 31 - e;
  // 2^s in two float factors (s can exceed 127 for tiny x); each product
  // is exact.
  const int s1 = s > 127 ? 127 : s < -126 ? -126 : s;
  const __m512 f1 = _mm512_set1_ps(std::ldexp(1.0f, s1));
  const __m512 f2 = _mm512_set1_ps(std::ldexp(1.0f, s - s1));
  uint8_t* d = static_cast<uint8_t*>(work);  // planes d_0..d_3, `padded` each
  const __m512i bias = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  for (i = 0; i < padded; i += 16) {
    const __mmask16 m = i + 16 <= n ? static_cast<__mmask16>(0xffff)
                        : i < n ? static_cast<__mmask16>((1u << (n - i)) - 1)
                                : 0;
    const __m512 v =
        _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), f1), f2);
    // Round half to even (vcvtps2dq, the default mode), then u = m + 2^31.
    const __m512i u = _mm512_xor_si512(_mm512_cvtps_epi32(v), bias);
    for (int j = 0; j < 4; ++j) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j * padded + i),
                       _mm512_cvtepi32_epi8(
                           _mm512_srli_epi32(u, static_cast<unsigned>(8 * j))));
    }
  }
  const double unscale = std::ldexp(1.0, -s);
  const uint8_t* d0 = d;
  const uint8_t* d1 = d + padded;
  const uint8_t* d2 = d + 2 * padded;
  const uint8_t* d3 = d + 3 * padded;
  for (size_t r0 = 0; r0 < rows; r0 += kHeadGroup) {
    const int8_t* w = packed + r0 / kHeadGroup * blocks * kGroupBlock;
    // Accumulators a<row><plane>, named rather than an array: GCC 12 keeps
    // an array of 16 vectors partly in memory and copies it every block.
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
    __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (size_t b = 0; b < blocks; ++b) {
      const int8_t* wb = w + b * kGroupBlock;
      const size_t at = b * kBlock;
      __m512i p0 = _mm512_loadu_si512(d0 + at);
      __m512i p1 = _mm512_loadu_si512(d1 + at);
      __m512i p2 = _mm512_loadu_si512(d2 + at);
      __m512i p3 = _mm512_loadu_si512(d3 + at);
      // Keep the planes in registers (GCC would fold their loads into every
      // vpdpbusd: four loads instead of one).
      __asm__("" : "+v"(p0), "+v"(p1), "+v"(p2), "+v"(p3));
#define TERND_HEAD_ROW(g)                                  \
  {                                                        \
    const __m512i q = _mm512_loadu_si512(wb + (g)*kBlock); \
    a##g##0 = _mm512_dpbusd_epi32(a##g##0, p0, q);         \
    a##g##1 = _mm512_dpbusd_epi32(a##g##1, p1, q);         \
    a##g##2 = _mm512_dpbusd_epi32(a##g##2, p2, q);         \
    a##g##3 = _mm512_dpbusd_epi32(a##g##3, p3, q);         \
  }
      TERND_HEAD_ROW(0)
      TERND_HEAD_ROW(1)
      TERND_HEAD_ROW(2)
      TERND_HEAD_ROW(3)
#undef TERND_HEAD_ROW
    }
    const __m512i acc[kHeadGroup][4] = {{a00, a01, a02, a03},
                                        {a10, a11, a12, a13},
                                        {a20, a21, a22, a23},
                                        {a30, a31, a32, a33}};
    const size_t valid = rows - r0 < kHeadGroup ? rows - r0 : kHeadGroup;
    for (size_t g = 0; g < valid; ++g) {
      const int64_t sum = SumLanes(acc[g][0]) + SumLanes(acc[g][1]) * 256 +
                          SumLanes(acc[g][2]) * 65536 +
                          SumLanes(acc[g][3]) * 16777216 -
                          static_cast<int64_t>(row_sums[r0 + g]) * 2147483648;
      out[r0 + g] = scale[r0 + g] *
                    static_cast<float>(static_cast<double>(sum) * unscale);
    }
  }
}

void HeadF16Avx512(const uint16_t* packed, size_t rows, size_t n,
                   const float* x, void* work, float* out) {
  constexpr size_t kValues = kBlock / 2;  // 32 halves per block
  const size_t blocks = (n + kValues - 1) / kValues;
  float* xp = static_cast<float*>(work);  // x, zero-padded to the blocks
  std::memcpy(xp, x, sizeof(float) * n);
  std::memset(xp + n, 0, sizeof(float) * (blocks * kValues - n));
  for (size_t r0 = 0; r0 < rows; r0 += kHeadGroup) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(packed) +
                       r0 / kHeadGroup * blocks * kGroupBlock;
    __m512 a[kHeadGroup], c[kHeadGroup];
#pragma GCC unroll 4
    for (size_t g = 0; g < kHeadGroup; ++g) {
      a[g] = _mm512_setzero_ps();
      c[g] = _mm512_setzero_ps();
    }
    for (size_t b = 0; b < blocks; ++b) {
      const uint8_t* wb = w + b * kGroupBlock;
      const __m512 x0 = _mm512_loadu_ps(xp + b * kValues);
      const __m512 x1 = _mm512_loadu_ps(xp + b * kValues + 16);
#pragma GCC unroll 4
      for (size_t g = 0; g < kHeadGroup; ++g) {
        const __m512i h = _mm512_loadu_si512(wb + g * kBlock);
        a[g] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), x0,
                               a[g]);
        c[g] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)),
                               x1, c[g]);
      }
    }
    const size_t valid = rows - r0 < kHeadGroup ? rows - r0 : kHeadGroup;
    for (size_t g = 0; g < valid; ++g) {
      out[r0 + g] = _mm512_reduce_add_ps(_mm512_add_ps(a[g], c[g]));
    }
  }
}

}  // namespace ternd::runtime::lm_math::internal

namespace ternd::runtime::lm_math::internal {
namespace {

// exp(x) (Cephes' expf: x = n ln 2 + r, a degree-6 polynomial in r, then
// 2^n), to about 2 ulp; below -87 it returns exp(-87), above 88.7 infinity.
__m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
                                 _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

__mmask16 Lanes(size_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff)
                    : static_cast<__mmask16>((1u << left) - 1);
}

__m512 LoadHalves(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

}  // namespace

namespace {

// Softmax weights of `count` scores in place (unnormalized: exp(s - max)),
// returning 1 / their sum.
float SoftmaxWeights(float* scores, size_t count) {
  __m512 mv = _mm512_set1_ps(-INFINITY);
  for (size_t t = 0; t < count; t += 16) {
    mv =
        _mm512_mask_max_ps(mv, Lanes(count - t), mv,
                           _mm512_maskz_loadu_ps(Lanes(count - t), scores + t));
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
  __m512 sv = _mm512_setzero_ps();
  for (size_t t = 0; t < count; t += 16) {
    const __mmask16 m = Lanes(count - t);
    const __m512 e =
        Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + t), mx));
    _mm512_mask_storeu_ps(scores + t, m, e);
    sv = _mm512_add_ps(sv, _mm512_maskz_mov_ps(m, e));
  }
  return 1.0f / _mm512_reduce_add_ps(sv);
}

// One query: the scores four keys at a time.
void AttendOne(const float* q, size_t d, float scale, const uint16_t* ka,
               const uint16_t* va, size_t count_a, const uint16_t* kb,
               const uint16_t* vb, size_t count_b, float* scores, float* out) {
  const size_t count = count_a + count_b;
  auto key = [&](size_t t) {
    return t < count_a ? ka + t * d : kb + (t - count_a) * d;
  };
  auto value = [&](size_t t) {
    return t < count_a ? va + t * d : vb + (t - count_a) * d;
  };
  // Scores, four keys at a time (each key's sum in the same order).
  size_t t = 0;
  for (; t + 4 <= count; t += 4) {
    const uint16_t* k0 = key(t);
    const uint16_t* k1 = key(t + 1);
    const uint16_t* k2 = key(t + 2);
    const uint16_t* k3 = key(t + 3);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < d; i += 16) {
      const __mmask16 m = Lanes(d - i);
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
      a0 = _mm512_fmadd_ps(LoadHalves(k0 + i, m), qv, a0);
      a1 = _mm512_fmadd_ps(LoadHalves(k1 + i, m), qv, a1);
      a2 = _mm512_fmadd_ps(LoadHalves(k2 + i, m), qv, a2);
      a3 = _mm512_fmadd_ps(LoadHalves(k3 + i, m), qv, a3);
    }
    scores[t] = _mm512_reduce_add_ps(a0) * scale;
    scores[t + 1] = _mm512_reduce_add_ps(a1) * scale;
    scores[t + 2] = _mm512_reduce_add_ps(a2) * scale;
    scores[t + 3] = _mm512_reduce_add_ps(a3) * scale;
  }
  for (; t < count; ++t) {
    const uint16_t* k0 = key(t);
    __m512 a0 = _mm512_setzero_ps();
    for (size_t i = 0; i < d; i += 16) {
      const __mmask16 m = Lanes(d - i);
      a0 = _mm512_fmadd_ps(LoadHalves(k0 + i, m),
                           _mm512_maskz_loadu_ps(m, q + i), a0);
    }
    scores[t] = _mm512_reduce_add_ps(a0) * scale;
  }
  const float inv = SoftmaxWeights(scores, count);
  // out = sum_t (e_t / sum) v_t, up to 128 values of d at a time in
  // registers.
  for (size_t c = 0; c < d; c += 128) {
    const size_t width = d - c < 128 ? d - c : 128;
    __m512 o[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) o[j] = _mm512_setzero_ps();
    for (t = 0; t < count; ++t) {
      const __m512 w = _mm512_set1_ps(scores[t] * inv);
      const uint16_t* v = value(t) + c;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        if (static_cast<size_t>(16 * j) < width) {
          o[j] = _mm512_fmadd_ps(
              w, LoadHalves(v + 16 * j, Lanes(width - 16 * j)), o[j]);
        }
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      if (static_cast<size_t>(16 * j) < width) {
        _mm512_mask_storeu_ps(out + c + 16 * j, Lanes(width - 16 * j), o[j]);
      }
    }
  }
}

// kHeads queries sharing the keys and values (grouped-query attention):
// each key and value row is converted once for all of them. Every query's
// arithmetic is AttendOne's (the same sums in the same order), so a head's
// result does not depend on which others it was grouped with.
template <int kHeads>
void AttendGroup(const float* q, size_t d, float scale, const uint16_t* ka,
                 const uint16_t* va, size_t count_a, const uint16_t* kb,
                 const uint16_t* vb, size_t count_b, float* scores,
                 float* out) {
  const size_t count = count_a + count_b;
  auto key = [&](size_t t) {
    return t < count_a ? ka + t * d : kb + (t - count_a) * d;
  };
  auto value = [&](size_t t) {
    return t < count_a ? va + t * d : vb + (t - count_a) * d;
  };
  // Scores [head][t], two keys at a time.
  size_t t = 0;
  for (; t + 2 <= count; t += 2) {
    const uint16_t* k0 = key(t);
    const uint16_t* k1 = key(t + 1);
    __m512 a[kHeads], b[kHeads];
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) a[h] = b[h] = _mm512_setzero_ps();
    for (size_t i = 0; i < d; i += 16) {
      const __mmask16 m = Lanes(d - i);
      const __m512 x0 = LoadHalves(k0 + i, m), x1 = LoadHalves(k1 + i, m);
#pragma GCC unroll 4
      for (int h = 0; h < kHeads; ++h) {
        const __m512 qv = _mm512_maskz_loadu_ps(m, q + h * d + i);
        a[h] = _mm512_fmadd_ps(x0, qv, a[h]);
        b[h] = _mm512_fmadd_ps(x1, qv, b[h]);
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) {
      scores[h * count + t] = _mm512_reduce_add_ps(a[h]) * scale;
      scores[h * count + t + 1] = _mm512_reduce_add_ps(b[h]) * scale;
    }
  }
  for (; t < count; ++t) {
    const uint16_t* k0 = key(t);
    __m512 a[kHeads];
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) a[h] = _mm512_setzero_ps();
    for (size_t i = 0; i < d; i += 16) {
      const __mmask16 m = Lanes(d - i);
      const __m512 x0 = LoadHalves(k0 + i, m);
#pragma GCC unroll 4
      for (int h = 0; h < kHeads; ++h) {
        a[h] =
            _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, q + h * d + i), a[h]);
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) {
      scores[h * count + t] = _mm512_reduce_add_ps(a[h]) * scale;
    }
  }
  float inv[kHeads];
#pragma GCC unroll 4
  for (int h = 0; h < kHeads; ++h) {
    inv[h] = SoftmaxWeights(scores + h * count, count);
  }
  // out[head] = sum_t w[head][t] v_t, 64 values of d at a time.
  for (size_t c = 0; c < d; c += 64) {
    const size_t width = d - c < 64 ? d - c : 64;
    __m512 o[kHeads][4];
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) o[h][j] = _mm512_setzero_ps();
    }
    for (t = 0; t < count; ++t) {
      const uint16_t* v = value(t) + c;
      __m512 w[kHeads];
#pragma GCC unroll 4
      for (int h = 0; h < kHeads; ++h) {
        w[h] = _mm512_set1_ps(scores[h * count + t] * inv[h]);
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (static_cast<size_t>(16 * j) < width) {
          const __m512 x = LoadHalves(v + 16 * j, Lanes(width - 16 * j));
#pragma GCC unroll 4
          for (int h = 0; h < kHeads; ++h) {
            o[h][j] = _mm512_fmadd_ps(w[h], x, o[h][j]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int h = 0; h < kHeads; ++h) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (static_cast<size_t>(16 * j) < width) {
          _mm512_mask_storeu_ps(out + h * d + c + 16 * j, Lanes(width - 16 * j),
                                o[h][j]);
        }
      }
    }
  }
}

}  // namespace

void DequantSiluGateAvx512(const int32_t* acc, float s, float* y, size_t n) {
  const __m512 sv = _mm512_set1_ps(s);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = Lanes(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, y + i);
    const __m512 v = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + i)), sv);
    const __m512 silu = _mm512_div_ps(
        g, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(silu, v));
  }
}

void AttendAvx512(const float* q, size_t heads, size_t d, float scale,
                  const uint16_t* ka, const uint16_t* va, size_t count_a,
                  const uint16_t* kb, const uint16_t* vb, size_t count_b,
                  float* scores, float* out) {
  const size_t count = count_a + count_b;
  size_t h = 0;
  for (; h + 4 <= heads; h += 4) {
    AttendGroup<4>(q + h * d, d, scale, ka, va, count_a, kb, vb, count_b,
                   scores, out + h * d);
  }
  switch (heads - h) {
    case 3:
      AttendGroup<3>(q + h * d, d, scale, ka, va, count_a, kb, vb, count_b,
                     scores, out + h * d);
      break;
    case 2:
      AttendGroup<2>(q + h * d, d, scale, ka, va, count_a, kb, vb, count_b,
                     scores, out + h * d);
      break;
    case 1:
      AttendOne(q + h * d, d, scale, ka, va, count_a, kb, vb, count_b, scores,
                out + h * d);
      break;
  }
  (void)count;
}

}  // namespace ternd::runtime::lm_math::internal
