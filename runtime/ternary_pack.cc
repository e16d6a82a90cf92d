#include "runtime/ternary_pack.h"

#include <cstring>

#include "base/check.h"

namespace ternd::runtime {

void PackTernary(const int8_t* weights, size_t n, size_t k, uint8_t* out) {
  const size_t row_bytes = TernaryRowBytes(k);
  // Padding codes are 1 (0b01 in every 2-bit field = 0x55).
  std::memset(out, 0x55, n * row_bytes);
  for (size_t r = 0; r < n; ++r) {
    uint8_t* row = out + r * row_bytes;
    for (size_t c = 0; c < k; ++c) {
      int w = weights[r * k + c];
      TERND_CHECK(w >= -1 && w <= 1);
      const int shift = 2 * static_cast<int>(c % 4);
      row[c / 4] = static_cast<uint8_t>((row[c / 4] & ~(3 << shift)) |
                                        ((w + 1) << shift));
    }
  }
}

bool CheckTernaryCodes(const uint8_t* packed, size_t n, size_t k,
                       size_t* bad_row, size_t* bad_col) {
  const size_t row_bytes = TernaryRowBytes(k);
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    for (size_t i = 0; i < row_bytes; ++i) {
      const uint8_t b = row[i];
      // A 2-bit field is 3 exactly when both of its bits are set.
      const bool has_three = (b & (b >> 1) & 0x55) != 0;
      const bool last = i + 1 == row_bytes;
      if (!has_three && !(last && k % 4 != 0)) continue;
      for (size_t c = i * 4; c < i * 4 + 4; ++c) {
        int code = TernaryCode(row, c);
        if (code == 3 || (c >= k && code != 1)) {
          *bad_row = r;
          *bad_col = c;
          return false;
        }
      }
    }
  }
  return true;
}

bool UnpackTernary(const uint8_t* packed, size_t n, size_t k, int8_t* out,
                   size_t* bad_row, size_t* bad_col) {
  const size_t row_bytes = TernaryRowBytes(k);
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    for (size_t c = 0; c < row_bytes * 4; ++c) {
      int code = TernaryCode(row, c);
      if (code == 3 || (c >= k && code != 1)) {
        *bad_row = r;
        *bad_col = c;
        return false;
      }
      if (c < k) out[r * k + c] = static_cast<int8_t>(code - 1);
    }
  }
  return true;
}

}  // namespace ternd::runtime
