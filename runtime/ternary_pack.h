// The canonical 2-bit packing of ternary weights, independent of any ISA.
//
// A TERNARY2 tensor [N, K] stores row n in bytes [n*RowBytes(K), (n+1)*...).
// Weight (n, k) is in byte k / 4 of its row, bits 2*(k % 4) and 2*(k % 4)+1,
// as the code c = w + 1: 0 means -1, 1 means 0, 2 means +1; 3 is invalid.
// Codes past K in a row's last byte are padding and must be 1 (zero).
// The runtime repacks this into whatever layout the chosen kernel wants.
#ifndef TERND_RUNTIME_TERNARY_PACK_H_
#define TERND_RUNTIME_TERNARY_PACK_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime {

inline constexpr size_t TernaryRowBytes(size_t k) { return (k + 3) / 4; }

// Code of weight k of a canonical row.
inline int TernaryCode(const uint8_t* row, size_t k) {
  return (row[k / 4] >> (2 * (k % 4))) & 3;
}

// Packs n*k weights in {-1,0,+1} (row-major) into n*TernaryRowBytes(k) bytes.
// REQUIRES: every weight is -1, 0 or +1.
void PackTernary(const int8_t* weights, size_t n, size_t k, uint8_t* out);

// Scans a canonical tensor for invalid codes without unpacking it. Returns
// false and sets `*bad_row`, `*bad_col` at the first code that is 3, or a
// padding code (col >= k) that is not 1; true when every code is valid.
bool CheckTernaryCodes(const uint8_t* packed, size_t n, size_t k,
                       size_t* bad_row, size_t* bad_col);

// Unpacks into n*k int8 values. Returns false (leaving `out` partly written)
// if a code is 3 or a padding code is not 1; `*bad_row`, `*bad_col` then
// name the first offending position (col >= k means padding).
bool UnpackTernary(const uint8_t* packed, size_t n, size_t k, int8_t* out,
                   size_t* bad_row, size_t* bad_col);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_TERNARY_PACK_H_
