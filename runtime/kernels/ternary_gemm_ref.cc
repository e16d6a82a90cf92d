// Reference ternary kernel: the specification every SIMD variant must match
// bit for bit. It works directly on the canonical packing and is written to
// be read, not to be fast.
#include <cstring>

#include "runtime/kernels/kernels.h"
#include "runtime/ops.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {
namespace {

bool Always() { return true; }

size_t PackedSizeRef(size_t n, size_t k) { return n * TernaryRowBytes(k); }

void PackRef(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  std::memcpy(dst, canonical, PackedSizeRef(n, k));
}

}  // namespace

void ternary_gemm__ref(const uint8_t* packed, size_t n, size_t k,
                       const QuantizedActivations& x, int32_t* y, size_t ldy) {
  const size_t row_bytes = TernaryRowBytes(k);
  for (int b = 0; b < x.batch; ++b) {
    const int8_t* xb = x.q + static_cast<size_t>(b) * x.stride;
    for (size_t r = 0; r < n; ++r) {
      const uint8_t* row = packed + r * row_bytes;
      int32_t acc = 0;
      for (size_t c = 0; c < k; ++c) {
        const int w = TernaryCode(row, c) - 1;  // code 0,1,2 -> -1,0,+1
        acc += w * xb[c];
      }
      y[static_cast<size_t>(b) * ldy + r] = acc;
    }
  }
}

const TernaryKernel kTernaryKernelRef = {
    "ref",
    Always,
    PackedSizeRef,
    PackRef,
    ternary_gemm__ref,
    "portable C++",
    QuantizeActivations,
    "canonical: 2-bit codes, 4 per byte, row-major",
};

}  // namespace ternd::runtime
