#include "net/reconnect_backoff.h"

#include "base/check.h"

namespace ternd::net {

ReconnectBackoff::ReconnectBackoff(int min_ms, int max_ms, uint64_t seed)
    : min_ms_(min_ms), max_ms_(max_ms), rng_(seed) {
  TERND_CHECK(min_ms >= 1 && min_ms <= max_ms);
}

int ReconnectBackoff::CeilingMs() const {
  // Doubling in 64 bits cannot overflow before it passes max_ms (an int).
  int64_t ceiling = min_ms_;
  for (int i = 0; i < failures_ && ceiling < max_ms_; ++i) ceiling *= 2;
  return static_cast<int>(ceiling < max_ms_ ? ceiling : max_ms_);
}

int ReconnectBackoff::NextDelayMs() {
  const int ceiling = CeilingMs();
  if (failures_ < 64) ++failures_;
  std::uniform_int_distribution<int> draw(min_ms_, ceiling);
  return draw(rng_);
}

}  // namespace ternd::net
