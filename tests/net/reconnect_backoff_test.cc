#include "net/reconnect_backoff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace ternd::net {
namespace {

std::vector<int> Sequence(ReconnectBackoff& backoff, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(backoff.NextDelayMs());
  return out;
}

TEST(ReconnectBackoffTest, EveryDelayLiesBetweenMinAndTheDoublingCeiling) {
  constexpr int kMin = 100, kMax = 5000;
  ReconnectBackoff backoff(kMin, kMax, /*seed=*/7);
  int64_t ceiling = kMin;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(backoff.CeilingMs(), std::min<int64_t>(ceiling, kMax)) << i;
    const int delay = backoff.NextDelayMs();
    EXPECT_GE(delay, kMin) << "attempt " << i;
    EXPECT_LE(delay, std::min<int64_t>(ceiling, kMax)) << "attempt " << i;
    ceiling *= 2;
  }
  EXPECT_EQ(backoff.CeilingMs(), kMax);
}

TEST(ReconnectBackoffTest, FirstRetryWaitsTheMinimum) {
  ReconnectBackoff backoff(250, 60000, 1);
  EXPECT_EQ(backoff.NextDelayMs(), 250);
}

TEST(ReconnectBackoffTest, SameSeedSameSequenceOtherSeedOtherSequence) {
  ReconnectBackoff a(10, 100000, 42), b(10, 100000, 42), c(10, 100000, 43);
  const std::vector<int> sa = Sequence(a, 16), sb = Sequence(b, 16),
                         sc = Sequence(c, 16);
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(ReconnectBackoffTest, JitterSpreadsDelaysOnceTheCeilingIsReached) {
  ReconnectBackoff backoff(10, 1000, 3);
  Sequence(backoff, 10);  // ceiling now at max
  ASSERT_EQ(backoff.CeilingMs(), 1000);
  std::set<int> distinct;
  int below_half = 0;
  for (int i = 0; i < 200; ++i) {
    const int d = backoff.NextDelayMs();
    ASSERT_GE(d, 10);
    ASSERT_LE(d, 1000);
    distinct.insert(d);
    if (d < 505) ++below_half;
  }
  // Uniform over [10, 1000]: many values, and both halves well used (a
  // generator stuck near one end fails this by a wide margin).
  EXPECT_GT(distinct.size(), 100u);
  EXPECT_GT(below_half, 50);
  EXPECT_LT(below_half, 150);
}

TEST(ReconnectBackoffTest, ResetStartsAgainFromTheMinimum) {
  ReconnectBackoff backoff(20, 10000, 5);
  Sequence(backoff, 8);
  EXPECT_GT(backoff.CeilingMs(), 20);
  EXPECT_EQ(backoff.failures(), 8);
  backoff.Reset();
  EXPECT_EQ(backoff.failures(), 0);
  EXPECT_EQ(backoff.CeilingMs(), 20);
  EXPECT_EQ(backoff.NextDelayMs(), 20);
  EXPECT_EQ(backoff.CeilingMs(), 40);
}

TEST(ReconnectBackoffTest, MinEqualToMaxIsAFixedDelay) {
  ReconnectBackoff backoff(300, 300, 9);
  for (int d : Sequence(backoff, 10)) EXPECT_EQ(d, 300);
}

TEST(ReconnectBackoffTest, ManyFailuresDoNotOverflow) {
  ReconnectBackoff backoff(1, 2147483647, 11);
  for (int i = 0; i < 200; ++i) {
    const int d = backoff.NextDelayMs();
    ASSERT_GE(d, 1);
  }
  EXPECT_EQ(backoff.CeilingMs(), 2147483647);
}

}  // namespace
}  // namespace ternd::net
