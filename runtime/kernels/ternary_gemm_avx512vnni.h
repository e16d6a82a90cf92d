// What the two sources of the avx512vnni variant share: the layout and the
// batched product. ternary_gemm_avx512vnni.cc holds the variant (batch 1,
// quantizer, dispatch) and ternary_gemm_avx512vnni_batch.cc the products of
// 2..4 tokens, in a source of its own so that each can be compiled by the
// compiler that makes it fastest (cmake/TerndKernelCompiler.cmake; measured
// in docs/performance.md, "g++ and clang").
#ifndef TERND_RUNTIME_KERNELS_TERNARY_GEMM_AVX512VNNI_H_
#define TERND_RUNTIME_KERNELS_TERNARY_GEMM_AVX512VNNI_H_

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/interleaved_pack.h"

namespace ternd::runtime::avx512vnni {

inline constexpr InterleavedLayout kLayout{8, 256};
inline constexpr size_t kGroupRows = 8;
inline constexpr size_t kBlockBytes = 64;
inline constexpr size_t kGroupBlockBytes = kGroupRows * kBlockBytes;
// Software prefetch distance, in blocks of a group (512 bytes each).
inline constexpr size_t kPrefetchBlocks = 8;

// y[t][row] = sum(c * x[t]) - row_sums[t] for the b (2..4) token rows of x
// (`stride` bytes apart) against the packed matrix [n, k].
void GemmBatched(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
                 size_t stride, const int32_t* row_sums, int b, int32_t* y,
                 size_t ldy);

}  // namespace ternd::runtime::avx512vnni

#endif  // TERND_RUNTIME_KERNELS_TERNARY_GEMM_AVX512VNNI_H_
