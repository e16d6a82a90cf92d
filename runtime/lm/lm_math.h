// The float parts of a transformer step, with an AVX-512 VNNI set and an
// AVX2+FMA+F16C set on x86 chosen at start and a portable set everywhere
// else. Dot products may sum in any fixed order (the order depends only on
// n, never on threads), so a result is the same whichever thread computes
// it.
//
// The output head (the largest matrix, read once per generated token) is
// stored in the set's own layout (PackHead): the AVX-512 set interleaves
// groups of 4 rows in 64-byte blocks so that the matrix is one sequential
// stream and each vector of x serves 4 rows, and computes the int8 head's
// dot products exactly in integers (HeadI8 below).
#ifndef TERND_RUNTIME_LM_LM_MATH_H_
#define TERND_RUNTIME_LM_LM_MATH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ternd::runtime::lm_math {

// IEEE binary16 <-> float32; FloatToHalf rounds to nearest even.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

struct Ops {
  const char* name;  // "avx512vnni", "avx2" or "portable"
  float (*dot_f32)(const float* a, const float* b, size_t n);
  // sum_i half(h[i]) * x[i]
  float (*dot_f16)(const uint16_t* h, const float* x, size_t n);
  // sum_i q[i] * x[i] (the caller applies the row scale)
  float (*dot_i8)(const int8_t* q, const float* x, size_t n);
  // acc[i] += w * half(v[i])
  void (*axpy_f16)(float w, const uint16_t* v, float* acc, size_t n);
  void (*to_f16)(const float* x, uint16_t* h, size_t n);
  // y[i] = (x[i] * s) * g[i]: the scaling of an RMSNorm.
  void (*scale_mul)(const float* x, float s, const float* g, float* y,
                    size_t n);
  // The results of a ternary product, v = float(acc[i]) * s, then
  // y[i] = v, y[i] += v, or y[i] = relu(y[i])^2 * v (the squared-ReLU gate
  // with y the gate's values). Each value rounded as written (no fused
  // multiply-add), the same in every set.
  void (*dequant_set)(const int32_t* acc, float s, float* y, size_t n);
  void (*dequant_add)(const int32_t* acc, float s, float* y, size_t n);
  void (*dequant_relu2_gate)(const int32_t* acc, float s, float* y, size_t n);
  // y[i] = silu(y[i]) * v, silu(g) = g / (1 + exp(-g)) (the SiLU gate); the
  // AVX-512 set's exp is a polynomial (about 2 ulp), the others' std::exp.
  void (*dequant_silu_gate)(const int32_t* acc, float s, float* y, size_t n);

  // Attention of `heads` queries q [heads, d] sharing count_a keys and
  // values (rows of d halves) at ka, va followed by count_b at kb, vb:
  // out[h] = sum_t w_t v_t, w = softmax(scale * (q[h] . k_t)) (the max
  // subtracted before exp). `scores` has room for heads * (count_a +
  // count_b) floats. A query's result does not depend on `heads`.
  void (*attend)(const float* q, size_t heads, size_t d, float scale,
                 const uint16_t* ka, const uint16_t* va, size_t count_a,
                 const uint16_t* kb, const uint16_t* vb, size_t count_b,
                 float* scores, float* out);

  // The output head [rows, n] in this set's layout (PackHead): rows in
  // groups of head_group (1: row-major, as in the file).
  int head_group;
  // out[r] = scale[r] * dot(q[r], x) for the `rows` rows starting at
  // `packed` (the head's first row or the first row of a group); row_sums
  // from PackHead; `work` has HeadWorkBytes(n) bytes. Each row's value
  // depends only on its own weights, x and n, never on `rows` or on where
  // the row lies, so any split of the rows (at group boundaries) between
  // threads gives the same values.
  //
  // The dot product: the portable and AVX2 sets sum float products in a
  // fixed order. The AVX-512 VNNI set computes it in integers: x is scaled
  // by a power of two 2^s with max|x| * 2^s < 2^31 and rounded to integers
  // m (exact for every x_i >= max|x| / 2^8, otherwise off by at most
  // 2^-s / 2), the sum of q * m is exact (int64), and dot = that sum * 2^-s
  // rounded once to float: the correctly rounded dot product of q with x
  // to within 2^-32 max|x| per element. A row whose x is not finite falls
  // back to the float sum.
  void (*head_i8)(const int8_t* packed, const float* scale,
                  const int32_t* row_sums, size_t rows, size_t n,
                  const float* x, void* work, float* out);
  // out[r] = sum_i half(h[r, i]) * x[i], as head_i8 without scales.
  void (*head_f16)(const uint16_t* packed, size_t rows, size_t n,
                   const float* x, void* work, float* out);
};

// Bytes of the head [rows, n] of `elem_bytes` (1: int8, 2: f16) values in
// the layout of `ops`.
size_t HeadPackedBytes(const Ops& ops, size_t elem_bytes, size_t rows,
                       size_t n);
// Row-major [rows, n] -> the layout of `ops` (padding zero). For int8 also
// the row sums head_i8 needs (rows entries; may be null for f16).
void PackHead(const Ops& ops, size_t elem_bytes, const void* src, size_t rows,
              size_t n, void* dst, int32_t* row_sums);
// Row `row` of a packed head, as n values of elem_bytes (the embedding
// lookup of a tied model).
void CopyHeadRow(const Ops& ops, size_t elem_bytes, const void* packed,
                 size_t n, size_t row, void* dst);
// Bytes of the `work` buffer of head_i8 and head_f16 for rows of n.
size_t HeadWorkBytes(size_t n);

// y = x * (1 / sqrt(mean(x^2) + eps)) * gain (docs/llm.md, RMSNorm): the
// sum of squares with dot_f32, the scaling with scale_mul.
void RmsNorm(const Ops& ops, const float* x, size_t n, const float* gain,
             float eps, float* y);

// The best set for this CPU (TERND_KERNEL=ref forces the portable one,
// TERND_KERNEL=avx2 the AVX2 one).
const Ops& BestOps();
const Ops& PortableOps();
// Every set this CPU can run, the best first (for tests and benchmarks).
std::vector<const Ops*> SupportedOps();

}  // namespace ternd::runtime::lm_math

#endif  // TERND_RUNTIME_LM_LM_MATH_H_
