// The loop every 1.6-bit variant shares around its register tile: row
// groups of the tq1 layout (tq1_pack.h), rows in tiles of R, blocks in
// chunks, the last block's activations copied into a zero-padded buffer
// when its 320 columns reach past the activation row stride, and the row
// sums subtracted (y = sum(c * x) - row_sum, c = w + 1).
//
// A Tile is called as tile(w, blocks, x, stride, out): w is the tile's first
// row at its first block (rows kTq1BlockBytes apart, blocks
// kTq1GroupBlockBytes apart), x the B activation rows at the first block's
// column, and it writes out[r * B + t] = sum of c * x over those blocks.
// Header-only with no instruction-set code, so each variant instantiates it
// with its own compile flags.
#ifndef TERND_RUNTIME_KERNELS_TQ1_GEMM_H_
#define TERND_RUNTIME_KERNELS_TQ1_GEMM_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/kernels/tq1_pack.h"

namespace ternd::runtime {

// Blocks per tile call: a tile may keep sums that are exact only modulo
// 2^32 (see ternary_gemm_avx512vnni_tq1.cc) and must see at most this many.
inline constexpr size_t kTq1ChunkBlocks = 1024;
// Row stride of the zero-padded copy of the last block's activations.
inline constexpr size_t kTq1TailStride = 384;

template <int R, int B, typename Tile>
void Tq1GemmChunk(const uint8_t* packed, size_t n, size_t k, const int8_t* x,
                  size_t stride, const int32_t* row_sums, int32_t* y,
                  size_t ldy, Tile&& tile) {
  static_assert(kTq1GroupRows % R == 0);
  const size_t blocks = Tq1Blocks(k);
  // Blocks whose activations lie within the stride; only the last can reach
  // past it (stride >= k > (blocks - 1) * kTq1BlockK).
  const size_t full = std::min(blocks, stride / kTq1BlockK);
  alignas(64) int8_t tail[B][kTq1TailStride];
  if (full < blocks) {
    const size_t have = stride - full * kTq1BlockK;
    for (int t = 0; t < B; ++t) {
      std::memcpy(tail[t], x + t * stride + full * kTq1BlockK, have);
      std::memset(tail[t] + have, 0, kTq1TailStride - have);
    }
  }
  int32_t out[R * B], part[R * B];
  for (size_t g = 0; g < Tq1Groups(n); ++g) {
    for (size_t sub = 0; sub < kTq1GroupRows; sub += R) {
      const size_t row0 = g * kTq1GroupRows + sub;
      if (row0 >= n) break;
      const uint8_t* w = packed + g * Tq1GroupBytes(k) + sub * kTq1BlockBytes;
      std::fill(out, out + R * B, 0);
      auto add = [&] {
        for (int i = 0; i < R * B; ++i) out[i] += part[i];
      };
      for (size_t b0 = 0; b0 < full; b0 += kTq1ChunkBlocks) {
        tile(w + b0 * kTq1GroupBlockBytes, std::min(kTq1ChunkBlocks, full - b0),
             x + b0 * kTq1BlockK, stride, part);
        add();
      }
      if (full < blocks) {
        tile(w + full * kTq1GroupBlockBytes, 1, &tail[0][0], kTq1TailStride,
             part);
        add();
      }
      const size_t rows = std::min<size_t>(R, n - row0);
      for (int t = 0; t < B; ++t) {
        int32_t* yt = y + t * ldy + row0;
        for (size_t r = 0; r < rows; ++r) yt[r] = out[r * B + t] - row_sums[t];
      }
    }
  }
}

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_TQ1_GEMM_H_
