// Portable 1.6-bit variant (ref-1.6): the tq1 layout (tq1_pack.h) decoded
// one byte at a time with Tq1Code. It specifies the layout in plain C++ and
// serves CPUs without a SIMD 1.6-bit variant when the layout is forced.
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/tq1_gemm.h"
#include "runtime/kernels/tq1_pack.h"
#include "runtime/ops.h"

namespace ternd::runtime {
namespace {

bool Always() { return true; }

// Codes times activations for one row of B = 1 token over `blocks` blocks.
void RowTile(const uint8_t* w, size_t blocks, const int8_t* x,
             size_t /*stride*/, int32_t out[1]) {
  int32_t acc = 0;
  for (size_t kb = 0; kb < blocks; ++kb) {
    const uint8_t* wb = w + kb * kTq1GroupBlockBytes;
    const int8_t* xb = x + kb * kTq1BlockK;
    for (size_t i = 0; i < kTq1BlockBytes; ++i) {
      for (int j = 0; j < 5; ++j) {
        acc += Tq1Code(wb[i], j) * xb[j * kTq1BlockBytes + i];
      }
    }
  }
  out[0] = acc;
}

void Gemm(const uint8_t* packed, size_t n, size_t k,
          const QuantizedActivations& x, int32_t* y, size_t ldy) {
  for (int b = 0; b < x.batch; ++b) {
    Tq1GemmChunk<1, 1>(packed, n, k, x.q + b * x.stride, x.stride,
                       x.row_sums + b, y + b * ldy, ldy, RowTile);
  }
}

}  // namespace

const TernaryKernel kTernaryKernelRefTq1 = {
    "ref-1.6",
    Always,
    Tq1PackedSize,
    PackTq1,
    Gemm,
    "portable C++",
    QuantizeActivations,
    "tq1: 5 weights per byte (1.6 bits), 8-row groups x 320-column blocks",
};

}  // namespace ternd::runtime
