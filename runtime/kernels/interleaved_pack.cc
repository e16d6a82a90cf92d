#include "runtime/kernels/interleaved_pack.h"

#include <cstring>

#include "runtime/ternary_pack.h"

namespace ternd::runtime {

void PackInterleaved(const InterleavedLayout& layout, const uint8_t* canonical,
                     size_t n, size_t k, uint8_t* dst) {
  const size_t row_bytes = TernaryRowBytes(k);
  const size_t block_bytes = layout.BlockBytes();
  const size_t blocks = layout.Blocks(k);
  // Code 1 in every field: padding rows and columns are zero weights.
  std::memset(dst, 0x55, layout.PackedSize(n, k));
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* row = canonical + r * row_bytes;
    const size_t g = r / layout.group_rows;
    const size_t in_group = r % layout.group_rows;
    for (size_t kb = 0; kb < blocks; ++kb) {
      uint8_t* out = dst + g * layout.GroupBytes(k) +
                     (kb * layout.group_rows + in_group) * block_bytes;
      const size_t c0 = kb * layout.block_k;
      for (size_t i = 0; i < block_bytes; ++i) {
        uint8_t byte = 0;
        for (size_t j = 0; j < 4; ++j) {
          const size_t c = c0 + j * block_bytes + i;
          const int code = c < k ? TernaryCode(row, c) : 1;
          byte = static_cast<uint8_t>(byte | (code << (2 * j)));
        }
        out[i] = byte;
      }
    }
  }
}

}  // namespace ternd::runtime
