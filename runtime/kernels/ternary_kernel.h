// The contract every ternary matrix kernel implements.
//
// A kernel computes int32 dot products of ternary weights W [N, K] (values
// -1, 0, +1) with int8 activations X [batch, K]:
//
//   y[b * ldy + n] = sum_k W[n, k] * X[b, k]     for n < N, b < batch
//
// exactly, in integer arithmetic: every variant must produce the same int32
// results as the reference (`ternary_gemm__ref`), bit for bit.
//
// Accumulator headroom: |W| <= 1 and |X| <= 128, so |y| <= 128 * K. K is
// bounded by kMaxFeatures (2^22), so |y| <= 2^29: int32 accumulators have 4x
// headroom, and any partial sum a kernel keeps in 16 bits must hold at most
// 255 products (255 * 128 = 32640 < 32767).
//
// Weights reach a kernel in its own layout: at load the runtime calls
// `pack` once to turn the canonical 2-bit packing (runtime/ternary_pack.h)
// into `packed_size(N, K)` bytes at a 64-byte aligned address.
//
// Activations come as QuantizedActivations: each token is a row of `stride`
// bytes (a multiple of kActivationRowAlign, >= K) whose bytes past K are zero,
// so kernels may read whole blocks past K without masking. `row_sums[b]` is
// the sum of row b's int8 values, for kernels that multiply unsigned weight
// codes (w + 1) and subtract the sum afterwards.
//
// Thread-safety: kernels are pure functions of their arguments.
#ifndef TERND_RUNTIME_KERNELS_TERNARY_KERNEL_H_
#define TERND_RUNTIME_KERNELS_TERNARY_KERNEL_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime {

inline constexpr size_t kActivationRowAlign = 256;

// A token whose largest magnitude is below this quantizes to all zeros with
// scale 0, as an all-zero token does: below about 3.7e-37, 127 / amax is
// infinite in float32, and x * inf is NaN for x = 0, whose conversion to int
// is undefined and differs between instruction sets. 2^-100 (about 7.9e-31)
// is a round number far below any activation a model produces.
inline constexpr float kQuantizeMinAmax = 0x1p-100f;

inline constexpr size_t ActivationStride(size_t k) {
  return (k + kActivationRowAlign - 1) / kActivationRowAlign *
         kActivationRowAlign;
}

struct QuantizedActivations {
  const int8_t* q;          // batch rows of `stride` bytes, 64-byte aligned
  size_t stride;            // multiple of kActivationRowAlign, >= k
  const int32_t* row_sums;  // batch entries
  int batch;                // 1 .. kMaxKernelBatch
  size_t k;
};

// Largest batch a single kernel call handles; the runtime splits larger ones.
inline constexpr int kMaxKernelBatch = 16;

struct TernaryKernel {
  // "ref", "ssse3", "avx2", "avx512vnni", "neon", "neondot": what config and
  // CLI accept to force a variant.
  const char* name;
  // True when the running CPU can execute this variant.
  bool (*supported)();
  // Bytes of the packed layout for an [n, k] matrix.
  size_t (*packed_size)(size_t n, size_t k);
  // Canonical packing -> this kernel's layout. `dst` is 64-byte aligned.
  void (*pack)(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst);
  // y = W · X^T as described above. y rows are `ldy` int32 apart (ldy >= n).
  void (*gemm)(const uint8_t* packed, size_t n, size_t k,
               const QuantizedActivations& x, int32_t* y, size_t ldy);
  // The instruction set the variant needs, for messages ("AVX-512 VNNI").
  const char* isa;
  // Per-token int8 quantization with this variant's instruction set, with
  // exactly the arguments and results (bit for bit) of QuantizeActivations
  // in runtime/ops.h, which is what the reference variant uses. The runtime
  // calls it right before gemm, so it is part of every kernel's cost.
  // REQUIRES: finite inputs.
  void (*quantize)(const float* x, size_t ldx, int batch, size_t k, int8_t* q,
                   size_t stride, int32_t* row_sums, float* dequant);
  // The weight layout `pack` produces, for reports (`ternctl bench`).
  const char* layout;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_TERNARY_KERNEL_H_
