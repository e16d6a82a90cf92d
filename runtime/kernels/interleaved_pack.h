// Row-interleaved, k-blocked repacking of canonical ternary weights, shared
// by the SIMD variants (each picks its own group and block sizes).
//
// Layout: rows are taken in groups of `group_rows` (the last group padded
// with zero rows); within a group, for each block of `block_k` columns, the
// group's rows follow one another, each as block_k / 4 bytes. So a kernel
// walking a group reads one sequential stream. Within a block of one row,
// byte i holds four 2-bit codes (c = w + 1, as in the canonical packing):
// bits 2j, 2j+1 hold column  block_start + j * (block_k / 4) + i, for j < 4.
// A kernel therefore gets the codes of 64 (x86) or 16 (ARM) contiguous
// columns from one shift and one mask of a whole vector. Columns past k and
// padding rows hold code 1 (weight 0).
//
// Thread-safety: pure functions.
#ifndef TERND_RUNTIME_KERNELS_INTERLEAVED_PACK_H_
#define TERND_RUNTIME_KERNELS_INTERLEAVED_PACK_H_

#include <cstddef>
#include <cstdint>

namespace ternd::runtime {

struct InterleavedLayout {
  size_t group_rows;  // rows per group
  size_t block_k;     // columns per block, a multiple of 4

  size_t Groups(size_t n) const { return (n + group_rows - 1) / group_rows; }
  size_t Blocks(size_t k) const { return (k + block_k - 1) / block_k; }
  size_t BlockBytes() const { return block_k / 4; }
  // Bytes of one group: every block of every row of the group.
  size_t GroupBytes(size_t k) const {
    return Blocks(k) * group_rows * BlockBytes();
  }
  size_t PackedSize(size_t n, size_t k) const {
    return Groups(n) * GroupBytes(k);
  }
};

// Canonical packing (runtime/ternary_pack.h) -> `layout`.
// REQUIRES: dst has layout.PackedSize(n, k) bytes.
void PackInterleaved(const InterleavedLayout& layout, const uint8_t* canonical,
                     size_t n, size_t k, uint8_t* dst);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_INTERLEAVED_PACK_H_
