// The 1.6-bit ("tq1") layout of ternary weights: 5 weights per byte, shared
// by the 1.6-bit variants (ref-1.6, avx2-1.6, avx512vnni-1.6).
//
// Encoding: five codes c0..c4 (c = w + 1 in {0, 1, 2}, as in the canonical
// packing) form v = 81 c0 + 27 c1 + 9 c2 + 3 c3 + c4 in 0..242, stored as
// the byte q = ceil(256 v / 243). Code j is then the top base-3 digit of q
// multiplied by 3^j modulo 256:
//
//   t_0 = q,  t_{j+1} = 3 t_j mod 256,  c_j = floor(3 t_j / 256),
//
// so 256 c_j = 3 t_j - t_{j+1} exactly. Kernels decode with byte adds only
// (Tq1Code below is the scalar form; tests check all 243 bytes).
//
// Blocking: rows are taken in groups of 8 (the last padded with zero rows);
// within a group, for each block of 320 columns, the 8 rows follow one
// another, each as 64 bytes. Byte i of a row's block holds the codes of
// columns block_start + j * 64 + i for j = 0..4, so digit j of a 64-byte
// vector lines up with the 64 activations at block_start + 64 j: one
// decoded vector per int8 dot-product instruction. Columns past k and
// padding rows hold code 1 (weight 0, byte 128). 1.6 bits per weight, 20%
// fewer bytes than the 2-bit layouts.
//
// Thread-safety: pure functions.
#ifndef TERND_RUNTIME_KERNELS_TQ1_PACK_H_
#define TERND_RUNTIME_KERNELS_TQ1_PACK_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime {

inline constexpr size_t kTq1GroupRows = 8;
inline constexpr size_t kTq1BlockK = 320;     // columns per block
inline constexpr size_t kTq1BlockBytes = 64;  // bytes per row and block
inline constexpr size_t kTq1GroupBlockBytes = kTq1GroupRows * kTq1BlockBytes;

inline constexpr size_t Tq1Groups(size_t n) {
  return (n + kTq1GroupRows - 1) / kTq1GroupRows;
}
inline constexpr size_t Tq1Blocks(size_t k) {
  return (k + kTq1BlockK - 1) / kTq1BlockK;
}
inline constexpr size_t Tq1GroupBytes(size_t k) {
  return Tq1Blocks(k) * kTq1GroupBlockBytes;
}
inline constexpr size_t Tq1PackedSize(size_t n, size_t k) {
  return Tq1Groups(n) * Tq1GroupBytes(k);
}

// The byte of five codes (c[0] most significant).
inline constexpr uint8_t Tq1Encode(const int c[5]) {
  const int v = (((c[0] * 3 + c[1]) * 3 + c[2]) * 3 + c[3]) * 3 + c[4];
  return static_cast<uint8_t>((256 * v + 242) / 243);
}

// Code j (0..4) of an encoded byte.
inline constexpr int Tq1Code(uint8_t q, int j) {
  unsigned t = q;
  for (int i = 0; i < j; ++i) t = (3 * t) & 0xff;
  return static_cast<int>((3 * t) >> 8);
}

// Canonical packing (runtime/ternary_pack.h) -> the tq1 layout.
// REQUIRES: dst has Tq1PackedSize(n, k) bytes.
void PackTq1(const uint8_t* canonical, size_t n, size_t k, uint8_t* dst);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_TQ1_PACK_H_
