// Splitting a batch for kernels that keep a fixed number of activation rows
// in registers.
//
// A batch of B rows runs as ceil(B / kMaxRows) chunks of nearly equal size
// (17 rows with kMaxRows 8 become 5 + 6 + 6, not 8 + 8 + 1), and each chunk's
// row count reaches the kernel as a compile-time constant, so one template
// instance per count is all a variant writes.
#ifndef TERND_RUNTIME_KERNELS_BATCH_CHUNKS_H_
#define TERND_RUNTIME_KERNELS_BATCH_CHUNKS_H_

#include <type_traits>
#include <utility>

namespace ternd::runtime {

// Calls chunk(std::integral_constant<int, rows>{}, first_row) for each chunk.
// Every rows is in 1..kMaxRows.
template <int kMaxRows, typename Chunk>
inline void ForEachBatchChunk(int batch, Chunk&& chunk) {
  const int chunks = (batch + kMaxRows - 1) / kMaxRows;
  int first = 0;
  for (int c = 0; c < chunks; ++c) {
    const int rows = (batch - first) / (chunks - c);
    [&]<int... I>(std::integer_sequence<int, I...>) {
      (void)((rows == I + 1 &&
              (chunk(std::integral_constant<int, I + 1>{}, first), true)) ||
             ...);
    }
    (std::make_integer_sequence<int, kMaxRows>{});
    first += rows;
  }
}

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_BATCH_CHUNKS_H_
