// Content-defined chunking of model files, for delta downloads: a file is
// cut where its content says, not every N bytes, so that a new version that
// changes, inserts or removes bytes in one place (a retrained output head, a
// resized layer) keeps the chunks of everything else, which a device that
// holds the old version does not download again.
//
// The cut rule (FastCDC's normalized chunking over a gear rolling hash; it
// is part of the artifact format: a publisher that cut differently would
// still produce valid artifacts, but would share fewer chunks with the ones
// devices already hold):
//
//   gear[0..255]: the first 256 outputs of splitmix64 seeded with
//                 0x7465726e64 ("ternd"), in order.
//   For a chunk starting at offset s, h = 0, and for each byte b at offset
//   i = s + min, s + min + 1, ...:  h = (h << 1) + gear[b]  (mod 2^64);
//   the chunk ends after byte i when (h & mask) == 0, where mask has the top
//   log2(avg) + 2 bits set for i - s < avg, and the top log2(avg) - 2 bits
//   set from then on; it ends at s + max at the latest, and at the end of
//   the data (a chunk of n <= min bytes is the rest of the data).
//
// Since bit j of h depends only on the last j + 1 bytes, the top bits look
// at the last 64 bytes: a cut depends on the 64 bytes before it and on
// where the chunk started (min and the two masks). Every chunk but the last
// is in [min, max] bytes; with the default limits chunks of random data
// average close to 64 KiB.
//
// Thread-safety: pure functions.
#ifndef TERND_OTA_CHUNKER_H_
#define TERND_OTA_CHUNKER_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"

namespace ternd::ota {

struct ChunkLimits {
  uint64_t min = 16 << 10;
  uint64_t avg = 64 << 10;  // a power of two in [256, 2^30]
  uint64_t max = 256 << 10;
};

// Checks min < avg < max, avg a power of two in [256, 2^30], and
// min >= 64; the error names the limit and the value.
Status CheckChunkLimits(const ChunkLimits& limits);

// The gear table (above): 256 entries.
const uint64_t* GearTable();

// The length of the chunk that starts at data[0], given the `n` bytes from
// there to the end of the data (a caller that streams must pass at least
// `limits.max` bytes unless the data ends sooner). 0 only when n == 0.
// `limits` must pass CheckChunkLimits.
uint64_t NextChunkLength(const uint8_t* data, uint64_t n,
                         const ChunkLimits& limits);

// The lengths of all chunks of `data`, in order; they sum to data.size().
std::vector<uint64_t> ChunkLengths(std::span<const uint8_t> data,
                                   const ChunkLimits& limits);

}  // namespace ternd::ota

#endif  // TERND_OTA_CHUNKER_H_
