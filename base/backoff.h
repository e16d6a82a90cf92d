// Backoff: the delays between retries of something that failed (an MQTT
// connection, an artifact download, a refused telemetry publish), as one
// policy: exponential growth with jitter.
//
// After `failures()` = n consecutive failures, the next delay is drawn
// uniformly from [low, high] where
//   high = min(max, initial * multiplier^n)   (the ceiling)
//   low  = max(floor, high - jitter * high)
// So jitter 1 is "full jitter" (anywhere between floor and the ceiling),
// jitter 0.5 is "equal jitter" (between half and all of the ceiling) and
// jitter 0 is a plain exponential sequence. The random spread keeps a fleet
// of devices that lost the same server at the same moment from coming back
// in one burst.
//
// Guarantees, whatever the sequence of calls:
// - floor <= every delay <= max, and every delay <= the ceiling it was
//   drawn under;
// - the ceiling never decreases between two Reset() calls and reaches max
//   (when multiplier > 1 and initial > 0) without overflowing, however many
//   failures are counted;
// - after Reset() the sequence starts again from `initial`;
// - the same random source (e.g. the same seed) gives the same sequence.
//
// The random source is injectable: tests seed it (Backoff::Seeded) or pass
// their own; by default it is seeded from std::random_device.
//
// Thread-safety: a value; not synchronized.
#ifndef TERND_BASE_BACKOFF_H_
#define TERND_BASE_BACKOFF_H_

#include <chrono>
#include <cstdint>
#include <functional>

namespace ternd {

struct BackoffPolicy {
  std::chrono::milliseconds initial{1000};  // the ceiling after 0 failures
  std::chrono::milliseconds max{60000};     // no delay is longer
  std::chrono::milliseconds floor{0};       // no delay is shorter
  double multiplier = 2.0;                  // ceiling growth per failure
  double jitter = 1.0;  // randomized fraction of the ceiling, in [0, 1]
};

class Backoff {
 public:
  // Uniformly distributed 64-bit values.
  using RandomSource = std::function<uint64_t()>;

  // REQUIRES: 0 <= floor <= initial <= max, multiplier >= 1,
  // 0 <= jitter <= 1 (Valid()). A null `random` is seeded from
  // std::random_device.
  explicit Backoff(BackoffPolicy policy, RandomSource random = nullptr);
  // A generator replaying the same sequence for the same seed.
  static RandomSource Seeded(uint64_t seed);
  static bool Valid(const BackoffPolicy& policy);

  // The delay before the next attempt; counts one more failure.
  std::chrono::milliseconds Next();
  // A delay drawn under the ceiling of `failures` failures, counting
  // nothing (e.g. a short pause at the first step's bounds).
  std::chrono::milliseconds Draw(int failures);
  // The upper bound the next Next() draws under.
  std::chrono::milliseconds Ceiling() const { return CeilingAfter(failures_); }
  std::chrono::milliseconds CeilingAfter(int failures) const;
  // Forgets the failures (after a success).
  void Reset() { failures_ = 0; }
  int failures() const { return failures_; }
  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  RandomSource random_;
  int failures_ = 0;
};

}  // namespace ternd

#endif  // TERND_BASE_BACKOFF_H_
