// The monotonic clock (CLOCK_MONOTONIC) in nanoseconds: request timing,
// deadlines, rate limits and timeouts all read it here.
#ifndef TERND_BASE_CLOCK_H_
#define TERND_BASE_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace ternd {

inline int64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace ternd

#endif  // TERND_BASE_CLOCK_H_
