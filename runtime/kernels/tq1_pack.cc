#include "runtime/kernels/tq1_pack.h"

#include <cstring>

#include "runtime/ternary_pack.h"

namespace ternd::runtime {

void PackTq1(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst) {
  const int zeros[5] = {1, 1, 1, 1, 1};
  // Padding rows and columns are zero weights.
  std::memset(dst, Tq1Encode(zeros), Tq1PackedSize(n, k));
  const size_t row_bytes = TernaryRowBytes(k);
  const size_t blocks = Tq1Blocks(k);
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* row = canonical + r * row_bytes;
    uint8_t* group = dst + (r / kTq1GroupRows) * Tq1GroupBytes(k);
    for (size_t kb = 0; kb < blocks; ++kb) {
      uint8_t* out =
          group + (kb * kTq1GroupRows + r % kTq1GroupRows) * kTq1BlockBytes;
      const size_t c0 = kb * kTq1BlockK;
      for (size_t i = 0; i < kTq1BlockBytes; ++i) {
        int codes[5];
        for (size_t j = 0; j < 5; ++j) {
          const size_t c = c0 + j * kTq1BlockBytes + i;
          codes[j] = c < k ? TernaryCode(row, c) : 1;
        }
        out[i] = Tq1Encode(codes);
      }
    }
  }
}

}  // namespace ternd::runtime
