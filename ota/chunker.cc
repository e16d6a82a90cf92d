#include "ota/chunker.h"

#include <array>
#include <bit>
#include <cinttypes>

namespace ternd::ota {
namespace {

std::array<uint64_t, 256> MakeGear() {
  std::array<uint64_t, 256> gear{};
  uint64_t state = 0x7465726e64;  // "ternd"
  for (uint64_t& g : gear) {
    // splitmix64
    state += 0x9e3779b97f4a7c15;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    g = z ^ (z >> 31);
  }
  return gear;
}

// The top `bits` bits of a 64-bit word.
constexpr uint64_t TopBits(int bits) { return ~uint64_t{0} << (64 - bits); }

}  // namespace

Status CheckChunkLimits(const ChunkLimits& limits) {
  if (limits.avg < 256 || limits.avg > (uint64_t{1} << 30) ||
      !std::has_single_bit(limits.avg)) {
    return InvalidArgument("chunk average %" PRIu64
                           " bytes: must be a power of two from 256 to "
                           "2^30",
                           limits.avg);
  }
  if (limits.min < 64 || limits.min >= limits.avg) {
    return InvalidArgument("chunk minimum %" PRIu64
                           " bytes: must be at least 64 and below the "
                           "average (%" PRIu64 ")",
                           limits.min, limits.avg);
  }
  if (limits.max <= limits.avg) {
    return InvalidArgument("chunk maximum %" PRIu64
                           " bytes: must be above the average (%" PRIu64 ")",
                           limits.max, limits.avg);
  }
  return Status::Ok();
}

const uint64_t* GearTable() {
  static const std::array<uint64_t, 256> gear = MakeGear();
  return gear.data();
}

uint64_t NextChunkLength(const uint8_t* data, uint64_t n,
                         const ChunkLimits& limits) {
  if (n <= limits.min) return n;
  const uint64_t end = n < limits.max ? n : limits.max;
  const uint64_t normal = n < limits.avg ? n : limits.avg;
  const int bits = std::countr_zero(limits.avg);
  const uint64_t mask_small = TopBits(bits + 2);  // harder before avg
  const uint64_t mask_large = TopBits(bits - 2);  // easier after
  const uint64_t* gear = GearTable();
  uint64_t h = 0;
  uint64_t i = limits.min;
  for (; i < normal; ++i) {
    h = (h << 1) + gear[data[i]];
    if ((h & mask_small) == 0) return i + 1;
  }
  for (; i < end; ++i) {
    h = (h << 1) + gear[data[i]];
    if ((h & mask_large) == 0) return i + 1;
  }
  return end;
}

std::vector<uint64_t> ChunkLengths(std::span<const uint8_t> data,
                                   const ChunkLimits& limits) {
  std::vector<uint64_t> lengths;
  uint64_t at = 0;
  while (at < data.size()) {
    const uint64_t len =
        NextChunkLength(data.data() + at, data.size() - at, limits);
    lengths.push_back(len);
    at += len;
  }
  return lengths;
}

}  // namespace ternd::ota
