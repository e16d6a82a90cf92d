#include "daemon/latency_histogram.h"

#include <cmath>

namespace ternd::daemon {

int LatencyHistogram::BucketOf(uint64_t ns) {
  if (ns < 2) return 0;
  const int exponent = 63 - __builtin_clzll(ns);  // 2^exponent <= ns
  // The next 3 bits below the leading one pick the sub-bucket linearly,
  // which is within 9% of the logarithmic split.
  const int sub = exponent >= 3 ? static_cast<int>((ns >> (exponent - 3)) & 7)
                                : static_cast<int>((ns << (3 - exponent)) & 7);
  const int b = exponent * kSubBuckets + sub;
  return b < kBuckets ? b : kBuckets - 1;
}

void LatencyHistogram::Record(int64_t nanoseconds) {
  ++buckets_[BucketOf(nanoseconds < 0 ? 0
                                      : static_cast<uint64_t>(nanoseconds))];
  ++count_;
}

double LatencyHistogram::Percentile(double fraction) const {
  if (count_ == 0) return 0;
  if (fraction < 0) fraction = 0;
  if (fraction > 1) fraction = 1;
  const double rank = fraction * static_cast<double>(count_);
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets_[b];
    if (buckets_[b] > 0 && static_cast<double>(seen) >= rank) {
      const int exponent = b / kSubBuckets;
      const int sub = b % kSubBuckets;
      const double low = std::ldexp(1.0 + sub / 8.0, exponent);
      const double high = std::ldexp(1.0 + (sub + 1) / 8.0, exponent);
      return std::sqrt(low * high);
    }
  }
  return 0;
}

void LatencyHistogram::Clear() {
  buckets_.fill(0);
  count_ = 0;
}

}  // namespace ternd::daemon
