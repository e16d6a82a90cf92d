#include "base/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace ternd {
namespace {

using std::chrono::milliseconds;

BackoffPolicy Policy(int64_t initial, int64_t max, int64_t floor,
                     double jitter = 1.0, double multiplier = 2.0) {
  BackoffPolicy p;
  p.initial = milliseconds(initial);
  p.max = milliseconds(max);
  p.floor = milliseconds(floor);
  p.jitter = jitter;
  p.multiplier = multiplier;
  return p;
}

std::vector<int64_t> Sequence(Backoff& backoff, int n) {
  std::vector<int64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(backoff.Next().count());
  return out;
}

TEST(BackoffTest, EveryDelayLiesBetweenTheFloorAndTheGrowingCeiling) {
  for (const double jitter : {0.0, 0.5, 1.0}) {
    for (const int64_t floor : {int64_t{0}, int64_t{100}}) {
      Backoff backoff(Policy(100, 5000, floor, jitter), Backoff::Seeded(7));
      int64_t ceiling = 100;
      for (int i = 0; i < 40; ++i) {
        const int64_t expected = std::min<int64_t>(ceiling, 5000);
        ASSERT_EQ(backoff.Ceiling().count(), expected) << i;
        const int64_t d = backoff.Next().count();
        const int64_t low =
            std::max<int64_t>(floor, expected - int64_t(jitter * expected));
        EXPECT_GE(d, low) << "attempt " << i << " jitter " << jitter;
        EXPECT_LE(d, expected) << "attempt " << i << " jitter " << jitter;
        ceiling *= 2;
      }
      EXPECT_EQ(backoff.Ceiling().count(), 5000);
    }
  }
}

TEST(BackoffTest, CeilingGrowsByTheMultiplierUntilTheMaximum) {
  Backoff backoff(Policy(10, 1000, 0, 1.0, 3.0), Backoff::Seeded(1));
  std::vector<int64_t> ceilings;
  for (int i = 0; i < 7; ++i) {
    ceilings.push_back(backoff.Ceiling().count());
    backoff.Next();
  }
  EXPECT_EQ(ceilings, (std::vector<int64_t>{10, 30, 90, 270, 810, 1000, 1000}));
}

TEST(BackoffTest, WithoutJitterTheSequenceIsExactlyExponential) {
  Backoff backoff(Policy(250, 2000, 0, 0.0), Backoff::Seeded(1));
  EXPECT_EQ(Sequence(backoff, 6),
            (std::vector<int64_t>{250, 500, 1000, 2000, 2000, 2000}));
}

TEST(BackoffTest, AFloorEqualToTheInitialCeilingMakesTheFirstDelayExact) {
  // The MQTT reconnect policy: the first retry waits exactly the minimum.
  Backoff backoff(Policy(250, 60000, 250), Backoff::Seeded(1));
  EXPECT_EQ(backoff.Next().count(), 250);
}

TEST(BackoffTest, SameSeedSameSequenceOtherSeedOtherSequence) {
  Backoff a(Policy(10, 100000, 0), Backoff::Seeded(42));
  Backoff b(Policy(10, 100000, 0), Backoff::Seeded(42));
  Backoff c(Policy(10, 100000, 0), Backoff::Seeded(43));
  const std::vector<int64_t> sa = Sequence(a, 16), sb = Sequence(b, 16),
                             sc = Sequence(c, 16);
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(BackoffTest, InjectedRandomSourceReachesBothEndsOfTheRange) {
  uint64_t next = 0;
  Backoff backoff(Policy(100, 100, 10),
                  [&next] { return next; });  // span [10, 100]: 91 values
  next = 0;
  EXPECT_EQ(backoff.Next().count(), 10);
  next = 90;
  EXPECT_EQ(backoff.Next().count(), 100);
  next = 91;  // wraps
  EXPECT_EQ(backoff.Next().count(), 10);
  next = ~uint64_t{0};
  const int64_t d = backoff.Next().count();
  EXPECT_GE(d, 10);
  EXPECT_LE(d, 100);
}

TEST(BackoffTest, FullJitterSpreadsDelaysOnceTheCeilingIsReached) {
  Backoff backoff(Policy(10, 1000, 10), Backoff::Seeded(3));
  Sequence(backoff, 10);
  ASSERT_EQ(backoff.Ceiling().count(), 1000);
  std::set<int64_t> distinct;
  int below_half = 0;
  for (int i = 0; i < 200; ++i) {
    const int64_t d = backoff.Next().count();
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

TEST(BackoffTest, EqualJitterStaysInTheUpperHalf) {
  Backoff backoff(Policy(1000, 1000, 0, 0.5), Backoff::Seeded(5));
  std::set<int64_t> distinct;
  for (int i = 0; i < 200; ++i) {
    const int64_t d = backoff.Next().count();
    ASSERT_GE(d, 500);
    ASSERT_LE(d, 1000);
    distinct.insert(d);
  }
  EXPECT_GT(distinct.size(), 50u);
}

TEST(BackoffTest, ResetStartsAgainFromTheInitialCeiling) {
  Backoff backoff(Policy(20, 10000, 20), Backoff::Seeded(5));
  Sequence(backoff, 8);
  EXPECT_GT(backoff.Ceiling().count(), 20);
  EXPECT_EQ(backoff.failures(), 8);
  backoff.Reset();
  EXPECT_EQ(backoff.failures(), 0);
  EXPECT_EQ(backoff.Ceiling().count(), 20);
  EXPECT_EQ(backoff.Next().count(), 20);
  EXPECT_EQ(backoff.Ceiling().count(), 40);
}

TEST(BackoffTest, DrawCountsNoFailure) {
  Backoff backoff(Policy(100, 10000, 0), Backoff::Seeded(9));
  Sequence(backoff, 3);
  for (int i = 0; i < 50; ++i) {
    const int64_t d = backoff.Draw(0).count();
    ASSERT_GE(d, 0);
    ASSERT_LE(d, 100);
  }
  EXPECT_EQ(backoff.failures(), 3);
  EXPECT_EQ(backoff.Ceiling().count(), 800);
}

TEST(BackoffTest, MinimumEqualToMaximumIsAFixedDelay) {
  Backoff backoff(Policy(300, 300, 300), Backoff::Seeded(9));
  for (int64_t d : Sequence(backoff, 10)) EXPECT_EQ(d, 300);
}

TEST(BackoffTest, ZeroInitialCeilingMeansNoDelay) {
  Backoff backoff(Policy(0, 300, 0), Backoff::Seeded(9));
  for (int64_t d : Sequence(backoff, 10)) EXPECT_EQ(d, 0);
}

TEST(BackoffTest, ManyFailuresNeitherOverflowNorLeaveTheBounds) {
  Backoff backoff(Policy(1, 2147483647, 1), Backoff::Seeded(11));
  for (int i = 0; i < 200; ++i) {
    const int64_t d = backoff.Next().count();
    ASSERT_GE(d, 1);
    ASSERT_LE(d, 2147483647);
  }
  EXPECT_EQ(backoff.Ceiling().count(), 2147483647);
  EXPECT_EQ(backoff.CeilingAfter(1 << 30).count(), 2147483647);
  // A multiplier of 1 never grows (and never loops long).
  Backoff flat(Policy(5, 1000, 0, 1.0, 1.0), Backoff::Seeded(1));
  EXPECT_EQ(flat.CeilingAfter(1 << 30).count(), 5);
}

TEST(BackoffTest, ValidRefusesInconsistentPolicies) {
  EXPECT_TRUE(Backoff::Valid(Policy(10, 100, 0)));
  EXPECT_FALSE(Backoff::Valid(Policy(100, 10, 0)));       // initial > max
  EXPECT_FALSE(Backoff::Valid(Policy(10, 100, 20)));      // floor > initial
  EXPECT_FALSE(Backoff::Valid(Policy(10, 100, -1)));      // negative floor
  EXPECT_FALSE(Backoff::Valid(Policy(10, 100, 0, 1.5)));  // jitter > 1
  EXPECT_FALSE(Backoff::Valid(Policy(10, 100, 0, 1.0, 0.5)));  // shrinking
}

}  // namespace
}  // namespace ternd
