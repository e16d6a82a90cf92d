// TrustKeeper with a real state database: checks change nothing until
// Commit, Commit hands each new state to its writer once (an unchanged one
// not at all), a restart reads back what was committed, and a newer pinned
// root is adopted (and written) keeping what was learnt.
#include "daemon/trust_keeper.h"

#include <gtest/gtest.h>

#include "ota/state_store.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::TempDir;
using daemon_testing::WriteText;
using ::ternd::testing::SignedRelease;
using ::ternd::testing::TestFleet;

class TrustKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(1));
    policy_.build_time = fleet_.now() - 86400;
    Result<std::unique_ptr<ota::StateStore>> s =
        ota::StateStore::Open(dir_.File("state.db"));
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(*s);
  }

  std::unique_ptr<TrustKeeper> Open() {
    Result<std::optional<ota::TrustState>> stored = store_->LoadTrust();
    EXPECT_TRUE(stored.ok());
    Result<std::unique_ptr<TrustKeeper>> k = TrustKeeper::Open(
        stored.ok() ? *stored : std::nullopt, dir_.File("root.pb"), policy_,
        [this](const ota::TrustState& t) {
          ++writes_;
          Status s = store_->SaveTrust(t);
          EXPECT_TRUE(s.ok()) << s.message();
        });
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k.ok() ? std::move(*k) : nullptr;
  }

  SignedRelease Release(uint64_t version, uint64_t sequence) {
    daemon_testing::TestModelSpec spec = FastModel();
    spec.name = "m";
    spec.version = version;
    Result<std::vector<uint8_t>> bytes = BuildTestModel(spec);
    EXPECT_TRUE(bytes.ok());
    return fleet_.Release(std::string(bytes->begin(), bytes->end()), "m",
                          version, sequence, "dev1");
  }

  TempDir dir_;
  TestFleet fleet_;
  ota::TrustPolicy policy_;
  std::unique_ptr<ota::StateStore> store_;
  int writes_ = 0;
  const ota::DeviceIdentity device_{"dev1", {}};
};

TEST_F(TrustKeeperTest, ChecksChangeNothingUntilCommit) {
  auto keeper = Open();
  ASSERT_TRUE(keeper);
  EXPECT_EQ(keeper->root_version(), 1u);

  Result<ota::TrustState> rotated =
      keeper->CheckRoot(fleet_.RootEnvelope(2), fleet_.now());
  ASSERT_TRUE(rotated.ok()) << rotated.status().message();
  EXPECT_EQ(rotated->root.version(), 2u);
  EXPECT_EQ(keeper->root_version(), 1u);  // not yet

  ota::TrustState next;
  ota::RejectReason reason = ota::RejectReason::kNone;
  const SignedRelease r = Release(2, 5);
  Result<ota::Release> release = keeper->CheckRelease(
      r.envelope, device_, 1, fleet_.now(), &next, &reason);
  ASSERT_TRUE(release.ok()) << release.status().message();
  EXPECT_EQ(next.highest_sequence, 5u);
  EXPECT_EQ(keeper->state().highest_sequence, 0u);  // not yet

  EXPECT_EQ(writes_, 1);  // the pinned root, adopted at the first start

  const ota::TrustState again = *rotated;
  ASSERT_TRUE(keeper->Commit(std::move(*rotated)));
  EXPECT_EQ(keeper->root_version(), 2u);
  EXPECT_EQ(writes_, 2);
  EXPECT_FALSE(keeper->Commit(again));  // nothing new: not written again
  EXPECT_EQ(writes_, 2);
}

TEST_F(TrustKeeperTest, CommittedStateSurvivesARestart) {
  {
    auto keeper = Open();
    ASSERT_TRUE(keeper);
    ASSERT_TRUE(keeper->Commit(
        *keeper->CheckRoot(fleet_.RootEnvelope(2), fleet_.now())));
    ota::TrustState next;
    ota::RejectReason reason;
    ASSERT_TRUE(keeper
                    ->CheckRelease(Release(2, 7).envelope, device_, 1,
                                   fleet_.now(), &next, &reason)
                    .ok());
    ASSERT_TRUE(keeper->Commit(std::move(next)));
  }
  // The pinned file still says version 1: the stored, newer state wins.
  auto keeper = Open();
  ASSERT_TRUE(keeper);
  EXPECT_EQ(keeper->root_version(), 2u);
  EXPECT_EQ(keeper->state().highest_sequence, 7u);
  // So a replay of an older sequence is refused after the restart.
  ota::TrustState next;
  ota::RejectReason reason = ota::RejectReason::kNone;
  EXPECT_FALSE(keeper
                   ->CheckRelease(Release(3, 6).envelope, device_, 1,
                                  fleet_.now(), &next, &reason)
                   .ok());
  EXPECT_EQ(reason, ota::RejectReason::kReplay);
}

TEST_F(TrustKeeperTest, NewerPinnedRootIsAdoptedKeepingWhatWasLearnt) {
  {
    auto keeper = Open();
    ota::TrustState next;
    ota::RejectReason reason;
    ASSERT_TRUE(keeper
                    ->CheckRelease(Release(2, 9).envelope, device_, 1,
                                   fleet_.now(), &next, &reason)
                    .ok());
    ASSERT_TRUE(keeper->Commit(std::move(next)));
  }
  WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(3));  // by hand
  auto keeper = Open();
  ASSERT_TRUE(keeper);
  EXPECT_EQ(keeper->root_version(), 3u);
  EXPECT_EQ(keeper->state().highest_sequence, 9u);
}

TEST_F(TrustKeeperTest, RefusalsLeaveTheStateAsItWas) {
  auto keeper = Open();
  ASSERT_TRUE(keeper);
  TestFleet stranger;  // other keys
  EXPECT_FALSE(keeper->CheckRoot(stranger.RootEnvelope(2), fleet_.now()).ok());
  ota::TrustState next;
  ota::RejectReason reason = ota::RejectReason::kNone;
  daemon_testing::TestModelSpec spec = FastModel();
  Result<std::vector<uint8_t>> bytes = BuildTestModel(spec);
  ASSERT_TRUE(bytes.ok());
  const SignedRelease foreign = stranger.Release(
      std::string(bytes->begin(), bytes->end()), "m", 2, 1, "dev1");
  EXPECT_FALSE(keeper
                   ->CheckRelease(foreign.envelope, device_, 1, fleet_.now(),
                                  &next, &reason)
                   .ok());
  EXPECT_EQ(reason, ota::RejectReason::kBadSignature);
  EXPECT_EQ(keeper->root_version(), 1u);
  EXPECT_EQ(keeper->state().highest_sequence, 0u);
  // A missing pinned root with no stored state is an error naming the key.
  Result<std::unique_ptr<TrustKeeper>> none =
      TrustKeeper::Open(std::nullopt, dir_.File("missing.pb"), policy_,
                        [](const ota::TrustState&) {});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message()).find("ota.root_file"),
            std::string::npos);
}

}  // namespace
}  // namespace ternd::daemon
