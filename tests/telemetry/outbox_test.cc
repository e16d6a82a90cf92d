// The SQLite outbox: order, persistence, boot epoch, byte and age bounds
// with the dropped-batch total, and errors that name the file.
#include "telemetry/outbox.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/telemetry/temp_dir.h"

namespace ternd::telemetry {
namespace {

constexpr int64_t kNow = 1800000000000;  // 2027-01-15, a plausible clock
constexpr int64_t kHour = 3600 * 1000;

std::string Payload(size_t n, char c) { return std::string(n, c); }

TEST(OutboxTest, AppendReadDeleteInOrderAndAcrossReopen) {
  testing::TempDir dir;
  const std::string path = dir / "telemetry.db";
  {
    auto box = Outbox::Open(path, OutboxLimits{});
    ASSERT_TRUE(box.ok()) << box.status().message();
    for (uint64_t seq = 1; seq <= 5; ++seq) {
      auto dropped = (*box)->Append(1, seq, kNow + int64_t(seq),
                                    Payload(10 * seq, char('a' + seq)));
      ASSERT_TRUE(dropped.ok()) << dropped.status().message();
      EXPECT_EQ(*dropped, 0u);
    }
    EXPECT_EQ((*box)->rows(), 5u);
    EXPECT_EQ((*box)->bytes(), 150u);
    EXPECT_EQ((*box)->oldest_unix_ms(), kNow + 1);
    auto rows = (*box)->ReadAfter(0, 3);
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), 3u);
    EXPECT_EQ((*rows)[0].sequence, 1u);
    EXPECT_EQ((*rows)[2].sequence, 3u);
    EXPECT_EQ((*rows)[1].payload, Payload(20, 'c'));
    ASSERT_TRUE((*box)->Delete((*rows)[0].id).ok());
    ASSERT_TRUE((*box)->Delete((*rows)[0].id).ok());  // already gone: fine
    EXPECT_EQ((*box)->rows(), 4u);
    EXPECT_EQ((*box)->bytes(), 140u);
    EXPECT_EQ((*box)->oldest_unix_ms(), kNow + 2);
    auto rest = (*box)->ReadAfter((*rows)[2].id, 10);
    ASSERT_TRUE(rest.ok());
    ASSERT_EQ(rest->size(), 2u);
    EXPECT_EQ((*rest)[0].sequence, 4u);
  }
  auto box = Outbox::Open(path, OutboxLimits{});
  ASSERT_TRUE(box.ok());
  EXPECT_EQ((*box)->rows(), 4u);
  EXPECT_EQ((*box)->bytes(), 140u);
  auto rows = (*box)->ReadAfter(0, 10);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ(rows->front().sequence, 2u);
  EXPECT_EQ(rows->back().sequence, 5u);
}

TEST(OutboxTest, BootEpochIncrementsOnEveryOpen) {
  testing::TempDir dir;
  for (uint64_t want = 1; want <= 3; ++want) {
    auto box = Outbox::Open(dir / "t.db", OutboxLimits{});
    ASSERT_TRUE(box.ok());
    auto epoch = (*box)->NextBootEpoch();
    ASSERT_TRUE(epoch.ok());
    EXPECT_EQ(*epoch, want);
  }
}

TEST(OutboxTest, ByteBoundDropsTheOldestAndCountsThem) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 1000;
  {
    auto box = Outbox::Open(dir / "t.db", limits);
    ASSERT_TRUE(box.ok());
    uint64_t dropped_sum = 0;
    for (uint64_t seq = 1; seq <= 20; ++seq) {
      auto d = (*box)->Append(1, seq, kNow, Payload(300, 'x'));
      ASSERT_TRUE(d.ok()) << d.status().message();
      dropped_sum += *d;
      EXPECT_LE((*box)->bytes(), limits.max_bytes);
    }
    EXPECT_EQ((*box)->rows(), 3u);
    EXPECT_EQ(dropped_sum, 17u);
    EXPECT_EQ((*box)->dropped_total(), 17u);
    auto rows = (*box)->ReadAfter(0, 100);
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), 3u);
    EXPECT_EQ((*rows)[0].sequence, 18u);  // the newest are kept
    EXPECT_EQ((*rows)[2].sequence, 20u);
  }
  // The total survives a restart and keeps adding up.
  auto box = Outbox::Open(dir / "t.db", limits);
  ASSERT_TRUE(box.ok());
  EXPECT_EQ((*box)->dropped_total(), 17u);
  ASSERT_TRUE((*box)->Append(2, 1, kNow, Payload(300, 'y')).ok());
  EXPECT_EQ((*box)->dropped_total(), 18u);
}

TEST(OutboxTest, TheNewestRowIsKeptEvenWhenAloneOverTheBound) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 100;
  auto box = Outbox::Open(dir / "t.db", limits);
  ASSERT_TRUE(box.ok());
  ASSERT_TRUE((*box)->Append(1, 1, kNow, Payload(50, 'a')).ok());
  auto d = (*box)->Append(1, 2, kNow, Payload(500, 'b'));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, 1u);
  EXPECT_EQ((*box)->rows(), 1u);
  auto rows = (*box)->ReadAfter(0, 10);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->front().sequence, 2u);
}

TEST(OutboxTest, AgeBoundDropsOldRowsButNotUnsetClockRows) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_age_ms = kHour;
  auto box = Outbox::Open(dir / "t.db", limits);
  ASSERT_TRUE(box.ok());
  ASSERT_TRUE((*box)->Append(1, 1, 5000, Payload(10, 'a')).ok());  // 1970
  ASSERT_TRUE((*box)->Append(1, 2, kNow, Payload(10, 'b')).ok());
  ASSERT_TRUE((*box)->Append(1, 3, kNow + kHour / 2, Payload(10, 'c')).ok());
  EXPECT_EQ((*box)->rows(), 3u);
  // Two hours later: sequences 2 and 3 are older than an hour.
  auto d = (*box)->Append(1, 4, kNow + 2 * kHour, Payload(10, 'd'));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, 2u);
  auto rows = (*box)->ReadAfter(0, 10);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].sequence, 1u);  // stamped with an unset clock: kept
  EXPECT_EQ((*rows)[1].sequence, 4u);
  // DropExpired alone, with the clock unset: nothing happens.
  auto none = (*box)->DropExpired(10000);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  auto later = (*box)->DropExpired(kNow + 4 * kHour);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(*later, 0u);  // the newest row is always kept
  EXPECT_EQ((*box)->dropped_total(), 2u);
}

TEST(OutboxTest, ErrorsNameTheFile) {
  testing::TempDir dir;
  const std::string path = dir / "not-a-db";
  std::ofstream(path) << "this is not an SQLite database, just some text "
                         "long enough to have a header page of garbage.....";
  auto box = Outbox::Open(path, OutboxLimits{});
  ASSERT_FALSE(box.ok());
  EXPECT_NE(std::string(box.status().message()).find(path), std::string::npos)
      << box.status().message();
  auto missing = Outbox::Open(dir / "no/such/dir/t.db", OutboxLimits{});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("no/such/dir"),
            std::string::npos)
      << missing.status().message();
}

}  // namespace
}  // namespace ternd::telemetry
