// Helpers shared by the AVX-512 variants. Include only from sources compiled
// with AVX-512 F (see CMakeLists.txt); not part of any portable code.
#ifndef TERND_RUNTIME_KERNELS_AVX512_REDUCE_H_
#define TERND_RUNTIME_KERNELS_AVX512_REDUCE_H_

#include <immintrin.h>

namespace ternd::runtime {

// Horizontal sums of 8 vectors of 16 int32: lane i of the result is the sum
// of v[i] (a transpose-and-add tree, 3 instructions per vector).
inline __m256i Reduce8(const __m512i v[8]) {
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

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_AVX512_REDUCE_H_
