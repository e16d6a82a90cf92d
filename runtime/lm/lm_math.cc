#include "runtime/lm/lm_math.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "runtime/kernels/cpu_features.h"
#include "runtime/lm/lm_math_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ternd::runtime::lm_math {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: mant * 2^-24, exact in float
      float f = static_cast<float>(mant) * (1.0f / 16777216.0f);
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    float af;
    std::memcpy(&af, &abs, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(af * 16777216.0f));
  }
  const uint32_t mant = abs & 0x7fffff;
  uint32_t h = (((abs >> 23) - 112) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

namespace {

// Portable: four partial sums (a fixed order that compilers keep).
float DotF32(const float* a, const float* b, size_t n) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float DotF16(const uint16_t* h, const float* x, size_t n) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += HalfToFloat(h[i + j]) * x[i + j];
  }
  for (; i < n; ++i) s[0] += HalfToFloat(h[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float DotI8(const int8_t* q, const float* x, size_t n) {
  float s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += static_cast<float>(q[i + j]) * x[i + j];
  }
  for (; i < n; ++i) s[0] += static_cast<float>(q[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

void AxpyF16(float w, const uint16_t* v, float* acc, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] += w * HalfToFloat(v[i]);
}

void ToF16(const float* x, uint16_t* h, size_t n) {
  for (size_t i = 0; i < n; ++i) h[i] = FloatToHalf(x[i]);
}

void ScaleMul(const float* x, float s, const float* g, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] * s * g[i];
}

void DequantSet(const int32_t* acc, float s, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(acc[i]) * s;
}

void DequantAdd(const int32_t* acc, float s, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += static_cast<float>(acc[i]) * s;
}

void DequantRelu2Gate(const int32_t* acc, float s, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = y[i];
    y[i] = (g > 0.0f ? g * g : 0.0f) * (static_cast<float>(acc[i]) * s);
  }
}

// Attention with the set's dot and axpy: scores, exp, then the weighted sum
// one value row at a time.
template <float (*kDot)(const uint16_t*, const float*, size_t),
          void (*kAxpy)(float, const uint16_t*, float*, size_t)>
void AttendOne(const float* q, size_t d, float scale, const uint16_t* ka,
               const uint16_t* va, size_t count_a, const uint16_t* kb,
               const uint16_t* vb, size_t count_b, float* scores, float* out) {
  const size_t count = count_a + count_b;
  float mx = -INFINITY;
  for (size_t t = 0; t < count; ++t) {
    const uint16_t* k = t < count_a ? ka + t * d : kb + (t - count_a) * d;
    scores[t] = kDot(k, q, d) * scale;
    mx = scores[t] > mx ? scores[t] : mx;
  }
  float sum = 0.0f;
  for (size_t t = 0; t < count; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  const float inv = 1.0f / sum;
  std::memset(out, 0, sizeof(float) * d);
  for (size_t t = 0; t < count; ++t) {
    const uint16_t* v = t < count_a ? va + t * d : vb + (t - count_a) * d;
    kAxpy(scores[t] * inv, v, out, d);
  }
}

template <float (*kDot)(const uint16_t*, const float*, size_t),
          void (*kAxpy)(float, const uint16_t*, float*, size_t)>
void Attend(const float* q, size_t heads, size_t d, float scale,
            const uint16_t* ka, const uint16_t* va, size_t count_a,
            const uint16_t* kb, const uint16_t* vb, size_t count_b,
            float* scores, float* out) {
  for (size_t h = 0; h < heads; ++h) {
    AttendOne<kDot, kAxpy>(q + h * d, d, scale, ka, va, count_a, kb, vb,
                           count_b, scores, out + h * d);
  }
}

void DequantSiluGate(const int32_t* acc, float s, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = y[i];
    y[i] = g / (1.0f + std::exp(-g)) * (static_cast<float>(acc[i]) * s);
  }
}

// Row-major heads (head_group 1): one row after another, each a dot.
template <float (*kDot)(const int8_t*, const float*, size_t)>
void HeadI8Rows(const int8_t* q, const float* scale, const int32_t*,
                size_t rows, size_t n, const float* x, void*, float* out) {
  for (size_t r = 0; r < rows; ++r) out[r] = scale[r] * kDot(q + r * n, x, n);
}

template <float (*kDot)(const uint16_t*, const float*, size_t)>
void HeadF16Rows(const uint16_t* h, size_t rows, size_t n, const float* x,
                 void*, float* out) {
  for (size_t r = 0; r < rows; ++r) out[r] = kDot(h + r * n, x, n);
}

#if defined(__x86_64__)
#define TERND_AVX2 __attribute__((target("avx2,fma,f16c")))

TERND_AVX2 float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TERND_AVX2 float DotF32Avx2(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8),
                         s1);
  }
  for (; i + 8 <= n; i += 8) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  }
  float s = HorizontalSum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

TERND_AVX2 float DotF16Avx2(const uint16_t* h, const float* x, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i hv =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i));
    const __m256 a = _mm256_cvtph_ps(_mm256_castsi256_si128(hv));
    const __m256 b = _mm256_cvtph_ps(_mm256_extracti128_si256(hv, 1));
    s0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    s0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), s0);
  }
  float s = HorizontalSum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += HalfToFloat(h[i]) * x[i];
  return s;
}

TERND_AVX2 float DotI8Avx2(const int8_t* q, const float* x, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
    const __m256 a0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    const __m256 a1 =
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
    s0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(a1, _mm256_loadu_ps(x + i + 8), s1);
  }
  float s = HorizontalSum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += static_cast<float>(q[i]) * x[i];
  return s;
}

TERND_AVX2 void AxpyF16Avx2(float w, const uint16_t* v, float* acc, size_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i)));
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(wv, a, _mm256_loadu_ps(acc + i)));
  }
  for (; i < n; ++i) acc[i] += w * HalfToFloat(v[i]);
}

TERND_AVX2 void ToF16Avx2(const float* x, uint16_t* h, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(h + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) h[i] = FloatToHalf(x[i]);
}

// The element-wise loops, 8 at a time, with exactly the scalar operations
// (a multiply and an add, never fused): compiled without FMA, which GCC
// would otherwise contract them into, vectors and scalar tails alike.
#define TERND_AVX2_NO_FMA __attribute__((target("avx2")))

TERND_AVX2_NO_FMA void ScaleMulAvx2(const float* x, float s, const float* g,
                                    float* y, size_t n) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i,
                     _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv),
                                   _mm256_loadu_ps(g + i)));
  }
  for (; i < n; ++i) y[i] = x[i] * s * g[i];
}

TERND_AVX2_NO_FMA __m256 DequantAvx2(const int32_t* acc, __m256 s) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(
                           reinterpret_cast<const __m256i*>(acc))),
                       s);
}

TERND_AVX2_NO_FMA void DequantSetAvx2(const int32_t* acc, float s, float* y,
                                      size_t n) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, DequantAvx2(acc + i, sv));
  for (; i < n; ++i) y[i] = static_cast<float>(acc[i]) * s;
}

TERND_AVX2_NO_FMA void DequantAddAvx2(const int32_t* acc, float s, float* y,
                                      size_t n) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(
        y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), DequantAvx2(acc + i, sv)));
  }
  for (; i < n; ++i) y[i] += static_cast<float>(acc[i]) * s;
}

TERND_AVX2_NO_FMA void DequantRelu2GateAvx2(const int32_t* acc, float s,
                                            float* y, size_t n) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // max(g, 0)^2 is g * g for g > 0 and 0 otherwise (also for -0 and NaN:
    // vmaxps returns its second operand, 0, when the first is NaN, as the
    // scalar g > 0 test does).
    const __m256 g = _mm256_max_ps(_mm256_loadu_ps(y + i), _mm256_setzero_ps());
    _mm256_storeu_ps(
        y + i, _mm256_mul_ps(_mm256_mul_ps(g, g), DequantAvx2(acc + i, sv)));
  }
  for (; i < n; ++i) {
    const float g = y[i];
    y[i] = (g > 0.0f ? g * g : 0.0f) * (static_cast<float>(acc[i]) * s);
  }
}

constexpr Ops kAvx2{"avx2",
                    DotF32Avx2,
                    DotF16Avx2,
                    DotI8Avx2,
                    AxpyF16Avx2,
                    ToF16Avx2,
                    ScaleMulAvx2,
                    DequantSetAvx2,
                    DequantAddAvx2,
                    DequantRelu2GateAvx2,
                    DequantSiluGate,
                    Attend<DotF16Avx2, AxpyF16Avx2>,
                    1,
                    HeadI8Rows<DotI8Avx2>,
                    HeadF16Rows<DotF16Avx2>};

constexpr Ops kAvx512Vnni{"avx512vnni",
                          DotF32Avx2,
                          DotF16Avx2,
                          DotI8Avx2,
                          AxpyF16Avx2,
                          ToF16Avx2,
                          ScaleMulAvx2,
                          DequantSetAvx2,
                          DequantAddAvx2,
                          DequantRelu2GateAvx2,
                          internal::DequantSiluGateAvx512,
                          internal::AttendAvx512,
                          static_cast<int>(internal::kHeadGroup),
                          internal::HeadI8Avx512Vnni,
                          internal::HeadF16Avx512};

// The detected CPU (never a test's fake: these sets are chosen once).
bool HasAvx2() {
  const CpuFeatures& f = DetectedCpuFeatures();
  return f.avx2 && f.fma_f16c;
}

bool HasAvx512Vnni() { return HasAvx2() && DetectedCpuFeatures().avx512_vnni; }
#endif

constexpr Ops kPortable{"portable",
                        DotF32,
                        DotF16,
                        DotI8,
                        AxpyF16,
                        ToF16,
                        ScaleMul,
                        DequantSet,
                        DequantAdd,
                        DequantRelu2Gate,
                        DequantSiluGate,
                        Attend<DotF16, AxpyF16>,
                        1,
                        HeadI8Rows<DotI8>,
                        HeadF16Rows<DotF16>};

const Ops* Choose() {
  const char* forced = std::getenv("TERND_KERNEL");
  const std::string_view name = forced != nullptr ? forced : "";
  if (name == "ref") return &kPortable;
#if defined(__x86_64__)
  if (HasAvx512Vnni() && name != "avx2") return &kAvx512Vnni;
  if (HasAvx2()) return &kAvx2;
#endif
  return &kPortable;
}

// Offset of (row, block) in a grouped layout of 64-byte blocks.
size_t HeadOffset(size_t group, size_t blocks, size_t row, size_t block) {
  return ((row / group * blocks + block) * group + row % group) * 64;
}

}  // namespace

const Ops& BestOps() {
  static const Ops* ops = Choose();
  return *ops;
}

const Ops& PortableOps() { return kPortable; }

void RmsNorm(const Ops& ops, const float* x, size_t n, const float* gain,
             float eps, float* y) {
  const float ss = ops.dot_f32(x, x, n);
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  ops.scale_mul(x, inv, gain, y, n);
}

std::vector<const Ops*> SupportedOps() {
  std::vector<const Ops*> ops;
#if defined(__x86_64__)
  if (HasAvx512Vnni()) ops.push_back(&kAvx512Vnni);
  if (HasAvx2()) ops.push_back(&kAvx2);
#endif
  ops.push_back(&kPortable);
  return ops;
}

size_t HeadPackedBytes(const Ops& ops, size_t elem_bytes, size_t rows,
                       size_t n) {
  const size_t group = static_cast<size_t>(ops.head_group);
  if (group == 1) return rows * n * elem_bytes;
  const size_t per_block = 64 / elem_bytes;
  const size_t blocks = (n + per_block - 1) / per_block;
  return (rows + group - 1) / group * group * blocks * 64;
}

void PackHead(const Ops& ops, size_t elem_bytes, const void* src, size_t rows,
              size_t n, void* dst, int32_t* row_sums) {
  const size_t group = static_cast<size_t>(ops.head_group);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  if (row_sums != nullptr && elem_bytes == 1) {
    const auto* q = static_cast<const int8_t*>(src);
    for (size_t r = 0; r < rows; ++r) {
      int32_t sum = 0;
      for (size_t i = 0; i < n; ++i) sum += q[r * n + i];
      row_sums[r] = sum;
    }
  }
  if (group == 1) {
    std::memcpy(out, in, rows * n * elem_bytes);
    return;
  }
  std::memset(out, 0, HeadPackedBytes(ops, elem_bytes, rows, n));
  const size_t per_block = 64 / elem_bytes;
  const size_t blocks = (n + per_block - 1) / per_block;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t b = 0; b < blocks; ++b) {
      const size_t cols = std::min(per_block, n - b * per_block);
      std::memcpy(out + HeadOffset(group, blocks, r, b),
                  in + (r * n + b * per_block) * elem_bytes, cols * elem_bytes);
    }
  }
}

void CopyHeadRow(const Ops& ops, size_t elem_bytes, const void* packed,
                 size_t n, size_t row, void* dst) {
  const size_t group = static_cast<size_t>(ops.head_group);
  const auto* in = static_cast<const uint8_t*>(packed);
  auto* out = static_cast<uint8_t*>(dst);
  if (group == 1) {
    std::memcpy(out, in + row * n * elem_bytes, n * elem_bytes);
    return;
  }
  const size_t per_block = 64 / elem_bytes;
  const size_t blocks = (n + per_block - 1) / per_block;
  for (size_t b = 0; b < blocks; ++b) {
    const size_t cols = std::min(per_block, n - b * per_block);
    std::memcpy(out + b * per_block * elem_bytes,
                in + HeadOffset(group, blocks, row, b), cols * elem_bytes);
  }
}

size_t HeadWorkBytes(size_t n) {
  // int8: four byte planes of n rounded up to 64; f16: n floats rounded up
  // to 32.
  return 4 * ((n + 63) / 64 * 64);
}

}  // namespace ternd::runtime::lm_math
