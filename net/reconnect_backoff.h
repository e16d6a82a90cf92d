// Delays between reconnect attempts: exponential backoff with full jitter.
//
// After the n-th consecutive failure (n = 0 for the first) the delay is drawn
// uniformly from [min_ms, ceiling], where ceiling = min(max_ms, min_ms * 2^n).
// So the first retry waits exactly min_ms, the ceiling doubles with every
// further failure until it reaches max_ms, and the random draw spreads a
// fleet of devices that lost the same broker at the same moment so they do
// not all come back in one burst. Reset() after a successful connect starts
// the sequence again from min_ms.
//
// The random generator is seeded explicitly so that tests can replay a
// sequence; the session seeds it from std::random_device.
//
// Thread-safety: a value; not synchronized.
#ifndef TERND_NET_RECONNECT_BACKOFF_H_
#define TERND_NET_RECONNECT_BACKOFF_H_

#include <cstdint>
#include <random>

namespace ternd::net {

class ReconnectBackoff {
 public:
  // REQUIRES: 1 <= min_ms <= max_ms.
  ReconnectBackoff(int min_ms, int max_ms, uint64_t seed);

  // The delay before the next attempt; counts one more failure.
  int NextDelayMs();
  // The upper bound NextDelayMs() will draw from next (for logs and tests).
  int CeilingMs() const;
  // Forgets the failures (after a successful connect).
  void Reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  int min_ms_;
  int max_ms_;
  int failures_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace ternd::net

#endif  // TERND_NET_RECONNECT_BACKOFF_H_
