// SIMD helpers shared by the x86-64 kernel variants. Include only from
// sources compiled with -mssse3, -mavx2 or the AVX-512 flags (runtime/kernels/
// CMakeLists.txt), instead of <immintrin.h>: each helper is defined for the
// instruction set its source is compiled for. They are always inlined: an
// out-of-line copy compiled with wider flags in one source could be the one
// the linker keeps for the calls of a source with narrower flags.
#ifndef TERND_RUNTIME_KERNELS_SIMD_X86_H_
#define TERND_RUNTIME_KERNELS_SIMD_X86_H_

// GCC 12's AVX-512 headers build some intrinsics from _mm512_undefined_*()
// and then warn that the undefined value is used (GCC bug 105593, fixed in
// GCC 13); the values are don't-care by design. This must precede the first
// <immintrin.h> of the source.
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

namespace ternd::runtime {

#if defined(__SSSE3__) && !defined(__AVX__)
// Sum of the 4 int32 lanes. Only for the SSSE3 sources (the others have the
// 256-bit form).
[[gnu::always_inline]] inline int32_t HorizontalSum(__m128i v) {
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(v);
}
#endif

#if defined(__AVX2__)
// Sum of the 8 int32 lanes.
[[gnu::always_inline]] inline int32_t HorizontalSum(__m256i v) {
  __m128i s =
      _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}
#endif

#if defined(__AVX512F__)
// Horizontal sums of 8 vectors of 16 int32: lane i of the result is the sum
// of v[i] (a transpose-and-add tree, 3 instructions per vector).
[[gnu::always_inline]] inline __m256i Reduce8(const __m512i v[8]) {
  __m512i s[4];
  for (int i = 0; i < 4; ++i) {
    const __m512i a = v[2 * i], b = v[2 * i + 1];
    s[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b),
                            _mm512_unpackhi_epi32(a, b));
  }
  // Each 128-bit lane of t0 holds partial sums of v0..v3, of t1 of v4..v7.
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi64(s[0], s[1]),
                                      _mm512_unpackhi_epi64(s[0], s[1]));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi64(s[2], s[3]),
                                      _mm512_unpackhi_epi64(s[2], s[3]));
  const __m512i u =
      _mm512_add_epi32(_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i w =
      _mm512_add_epi32(_mm512_shuffle_i32x4(u, u, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_i32x4(u, u, _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_castsi512_si256(w);
}
#endif

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_SIMD_X86_H_
