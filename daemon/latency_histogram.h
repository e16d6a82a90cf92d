// A log-bucketed latency histogram: percentiles without storing samples.
//
// Each power of two of nanoseconds is split into 8 equal buckets, so any
// percentile is known within about 7% of the true value, from 1 ns up to 2^40
// ns (18 minutes; longer durations fall into the last bucket). Recording is a
// few instructions and never allocates.
//
// Thread-safety: not thread-safe; the daemon records on its loop thread.
#ifndef TERND_DAEMON_LATENCY_HISTOGRAM_H_
#define TERND_DAEMON_LATENCY_HISTOGRAM_H_

#include <array>
#include <cstdint>

namespace ternd::daemon {

class LatencyHistogram {
 public:
  static constexpr int kSubBuckets = 8;  // per power of two
  static constexpr int kBuckets = 40 * kSubBuckets;

  void Record(int64_t nanoseconds);
  uint64_t count() const { return count_; }
  // The duration below which `fraction` (0..1) of the samples fall, in
  // nanoseconds, as the geometric middle of its bucket; 0 when empty.
  double Percentile(double fraction) const;
  void Clear();

 private:
  static int BucketOf(uint64_t ns);
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_LATENCY_HISTOGRAM_H_
