#include "daemon/latency_histogram.h"

#include <gtest/gtest.h>

namespace ternd::daemon {
namespace {

TEST(LatencyHistogramTest, EmptyHasZeroPercentiles) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.Percentile(0.5), 0.0);
}

TEST(LatencyHistogramTest, PercentilesWithinBucketResolution) {
  LatencyHistogram h;
  // 1..100000 ns uniformly: p50 ~ 50000, p99 ~ 99000.
  for (int64_t v = 1; v <= 100000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_NEAR(h.Percentile(0.50), 50000, 50000 * 0.07);
  EXPECT_NEAR(h.Percentile(0.99), 99000, 99000 * 0.07);
  EXPECT_NEAR(h.Percentile(0.001), 100, 100 * 0.07);
}

TEST(LatencyHistogramTest, SeparatesFastFromSlowSamples) {
  LatencyHistogram h;
  for (int i = 0; i < 990; ++i) h.Record(10000);   // 10 us
  for (int i = 0; i < 10; ++i) h.Record(5000000);  // 5 ms
  EXPECT_NEAR(h.Percentile(0.5), 10000, 700);
  EXPECT_NEAR(h.Percentile(0.999), 5000000, 350000);
}

TEST(LatencyHistogramTest, ClampsNegativeAndHugeValues) {
  LatencyHistogram h;
  h.Record(-5);
  h.Record(int64_t{1} << 62);
  EXPECT_EQ(h.count(), 2u);
  EXPECT_GT(h.Percentile(1.0), 1e11);
  h.Clear();
  EXPECT_EQ(h.count(), 0u);
}

}  // namespace
}  // namespace ternd::daemon
