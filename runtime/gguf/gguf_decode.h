// Decoding GGUF tensor data into ternd's representations.
//
// Ternary tensors (I2_S, TQ2_0, TQ1_0) become the canonical 2-bit packing
// of runtime/ternary_pack.h plus one float scale per tensor: weight (n, k)
// is code(n, k) * scale. Everything else that an importer needs (F32, F16,
// BF16, Q8_0, Q6_K, Q4_K) becomes float32 rows.
//
// Scales of TQ1_0 / TQ2_0: those types carry one fp16 scale per block of 256
// weights, but a BitNet b1.58 layer has one scale per tensor (absmean of the
// whole matrix), so every block of a well-formed file carries the same
// scale. The decoder keeps one scale per tensor and refuses a tensor whose
// blocks carry different scales, naming the tensor, the block and both
// values: keeping per-block scales would need a kernel the runtime does not
// have, and silently averaging them would change the model. A block whose
// weights are all zero carries no information about the scale (a quantizer
// writes 0 there) and is exempt from the check.
//
// GGUF dims are innermost first: a tensor with dims [K, N] is N rows of K.
#ifndef TERND_RUNTIME_GGUF_GGUF_DECODE_H_
#define TERND_RUNTIME_GGUF_GGUF_DECODE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "runtime/gguf/gguf_reader.h"

namespace ternd::gguf {

// F16 / BF16 bits to float (exact; NaN and infinity are kept).
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t h);

bool IsTernaryType(uint32_t type);
// F32, F16, BF16, Q8_0, Q6_K, Q4_K.
bool IsFloatDecodableType(uint32_t type);

struct TernaryTensor {
  uint64_t rows = 0;            // N = product of dims[1..]
  uint64_t cols = 0;            // K = dims[0]
  std::vector<uint8_t> packed;  // rows * TernaryRowBytes(cols), canonical
  float scale = 0;
};

// Decodes a ternary tensor. Errors name the tensor and the offending
// position: an invalid code (I2_S 3, a TQ1_0 byte beyond 3^5), differing
// block scales (above), a scale that is not finite or is negative.
Result<TernaryTensor> DecodeTernary(const TensorInfo& t);

// Decodes a tensor of a float-decodable type into elems float32 values
// (row-major, rows of dims[0]). Non-finite values are refused, naming the
// tensor and the element.
Result<std::vector<float>> DecodeFloat(const TensorInfo& t);

}  // namespace ternd::gguf

#endif  // TERND_RUNTIME_GGUF_GGUF_DECODE_H_
