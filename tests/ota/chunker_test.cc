#include "ota/chunker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace ternd::ota {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) v[i + j] = r >> (8 * j);
  }
  return v;
}

// The chunks of `data` as (offset, length) pairs.
std::vector<std::pair<uint64_t, uint64_t>> Chunks(
    const std::vector<uint8_t>& data, const ChunkLimits& limits) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t at = 0;
  for (uint64_t len : ChunkLengths(data, limits)) {
    out.emplace_back(at, len);
    at += len;
  }
  return out;
}

// How many bytes of `b` lie in chunks whose content also is a chunk of `a`.
uint64_t SharedBytes(const std::vector<uint8_t>& a,
                     const std::vector<uint8_t>& b, const ChunkLimits& limits) {
  std::map<std::string, int> have;
  for (auto [at, len] : Chunks(a, limits)) {
    have[std::string(a.begin() + at, a.begin() + at + len)] = 1;
  }
  uint64_t shared = 0;
  for (auto [at, len] : Chunks(b, limits)) {
    if (have.count(std::string(b.begin() + at, b.begin() + at + len))) {
      shared += len;
    }
  }
  return shared;
}

TEST(ChunkerTest, LimitsAreChecked) {
  EXPECT_TRUE(CheckChunkLimits(ChunkLimits{}).ok());
  struct Bad {
    ChunkLimits limits;
    const char* says;
  } bad[] = {
      {{16 << 10, 60000, 256 << 10}, "power of two"},
      {{16, 64 << 10, 256 << 10}, "at least 64"},
      {{64 << 10, 64 << 10, 256 << 10}, "below the average"},
      {{16 << 10, 64 << 10, 64 << 10}, "above the average"},
      {{64, 128, 512}, "power of two from 256"},
  };
  for (const Bad& b : bad) {
    Status s = CheckChunkLimits(b.limits);
    ASSERT_FALSE(s.ok()) << b.says;
    EXPECT_NE(std::string(s.message()).find(b.says), std::string::npos)
        << s.message();
  }
}

// The gear table is splitmix64 from "ternd": pinned, because it decides
// where every publisher cuts (a change would silently stop chunks from
// being shared between versions published before and after it).
TEST(ChunkerTest, GearTableIsSplitmix64FromTernd) {
  const uint64_t* gear = GearTable();
  uint64_t state = 0x7465726e64;
  for (int i = 0; i < 256; ++i) {
    state += 0x9e3779b97f4a7c15;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    ASSERT_EQ(gear[i], z ^ (z >> 31)) << "entry " << i;
  }
  // All distinct (a collision would make two byte values cut alike).
  std::vector<uint64_t> sorted(gear, gear + 256);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
}

TEST(ChunkerTest, ChunksCoverTheDataWithinTheLimits) {
  const ChunkLimits limits;
  const std::vector<uint8_t> data = RandomBytes(24 << 20, 1);
  const std::vector<uint64_t> lengths = ChunkLengths(data, limits);
  EXPECT_EQ(std::accumulate(lengths.begin(), lengths.end(), uint64_t{0}),
            data.size());
  for (size_t i = 0; i + 1 < lengths.size(); ++i) {
    ASSERT_GE(lengths[i], limits.min) << "chunk " << i;
    ASSERT_LE(lengths[i], limits.max) << "chunk " << i;
  }
  ASSERT_LE(lengths.back(), limits.max);
  // Normalized chunking keeps random data's chunks near the average.
  const double mean = static_cast<double>(data.size()) / lengths.size();
  EXPECT_GT(mean, 0.75 * limits.avg) << lengths.size() << " chunks";
  EXPECT_LT(mean, 1.5 * limits.avg) << lengths.size() << " chunks";
  // Deterministic.
  EXPECT_EQ(ChunkLengths(data, limits), lengths);
}

TEST(ChunkerTest, ShortAndUniformData) {
  const ChunkLimits limits;
  EXPECT_TRUE(ChunkLengths({}, limits).empty());
  const std::vector<uint8_t> tiny = RandomBytes(100, 2);
  EXPECT_EQ(ChunkLengths(tiny, limits), std::vector<uint64_t>{100});
  // Zeros never hit the mask (gear[0] is not 0): max-sized chunks, the
  // same ones every time, so runs of zeros are shared too.
  const std::vector<uint8_t> zeros(1 << 20, 0);
  const std::vector<uint64_t> lengths = ChunkLengths(zeros, limits);
  ASSERT_EQ(lengths.size(), 4u);
  for (uint64_t len : lengths) EXPECT_EQ(len, limits.max);
}

// Streaming: NextChunkLength given max bytes (or the rest) cuts where the
// whole-buffer cut does.
TEST(ChunkerTest, AWindowOfMaxBytesCutsAsTheWholeData) {
  const ChunkLimits limits{1 << 10, 4 << 10, 16 << 10};
  const std::vector<uint8_t> data = RandomBytes(1 << 20, 3);
  uint64_t at = 0;
  for (uint64_t len : ChunkLengths(data, limits)) {
    const uint64_t window = std::min<uint64_t>(limits.max, data.size() - at);
    ASSERT_EQ(NextChunkLength(data.data() + at, window, limits), len);
    at += len;
  }
}

// What delta downloads rely on: bytes inserted, removed or changed in one
// place change only the chunks around that place.
TEST(ChunkerTest, AnEditChangesOnlyTheChunksAroundIt) {
  const ChunkLimits limits;
  const std::vector<uint8_t> a = RandomBytes(16 << 20, 4);
  const uint64_t at = 5 << 20;

  std::vector<uint8_t> inserted = a;
  const std::vector<uint8_t> extra = RandomBytes(1000, 5);
  inserted.insert(inserted.begin() + at, extra.begin(), extra.end());

  std::vector<uint8_t> removed = a;
  removed.erase(removed.begin() + at, removed.begin() + at + 777);

  std::vector<uint8_t> changed = a;  // a "retrained layer" of 100 KiB
  const std::vector<uint8_t> layer = RandomBytes(100 << 10, 6);
  std::copy(layer.begin(), layer.end(), changed.begin() + at);

  for (const auto* b : {&inserted, &removed, &changed}) {
    const uint64_t shared = SharedBytes(a, *b, limits);
    const uint64_t fresh = b->size() - shared;
    // At most the edit plus the chunk it starts in and the one after the
    // hash resynchronises (each at most max bytes).
    EXPECT_LE(fresh, (100 << 10) + 3 * limits.max)
        << "fresh " << fresh << " of " << b->size();
    EXPECT_GT(fresh, 0u);
  }
  // Fixed-size chunks would lose everything after an insertion; content-
  // defined ones keep it.
  EXPECT_GT(SharedBytes(a, inserted, limits), a.size() * 9 / 10);
}

TEST(ChunkerTest, UnrelatedDataSharesNothing) {
  const ChunkLimits limits;
  EXPECT_EQ(
      SharedBytes(RandomBytes(4 << 20, 7), RandomBytes(4 << 20, 8), limits),
      0u);
}

}  // namespace
}  // namespace ternd::ota
