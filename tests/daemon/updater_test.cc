// The Updater in process, against a fake model host (no arena, no
// inference): the update state machine, the boot guard (probation, crash
// counting, rollback) and refusals, with a real state database, real
// signed bundles and a real sd-event loop. What update_test.cc checks
// through a spawned daemon, here without one.
#include "daemon/updater.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "base/clock.h"
#include "base/event_loop.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::TempDir;
using daemon_testing::TestModelSpec;
using daemon_testing::WriteText;
using ::ternd::testing::SignedRelease;
using ::ternd::testing::TestFleet;
using ::testing::HasSubstr;

constexpr char kDevice[] = "robot-1";

// What the updater needs from the service: it produces the model (as the
// loader thread would, here on a thread of its own), keeps it "staged",
// and swaps on ActivateStaged. Completions come back through the loop.
class FakeHost : public ModelHost {
 public:
  explicit FakeHost(sd_event* loop)
      : finish_(loop, "fake-host", [this]() { Finish(); }) {}

  Status ChangeModel(ModelChange change) override {
    if (change_) return FailedPrecondition("a change runs");
    change_ = std::move(change);
    produced_ = change_->produce();  // blocking: the test's loop thread
    finish_.Schedule();
    return Status::Ok();
  }
  Result<int64_t> ActivateStaged() override {
    if (!staged_) return FailedPrecondition("nothing staged");
    serving_ = *staged_;
    staged_.reset();
    ++swaps;
    return 1;
  }
  void DiscardStaged() override { staged_.reset(); }
  ServingModel serving() const override { return serving_; }

  int swaps = 0;

 private:
  void Finish() {
    ModelChange change = std::move(*change_);
    change_.reset();
    Status s = produced_.ok() ? Status::Ok() : produced_.status();
    if (s.ok()) {
      const model::ModelHeader& h = produced_->header();
      if (change.require_golden && !h.has_golden()) {
        s = FailedPrecondition("no golden pair");
      } else {
        staged_ = ServingModel{h.name(), h.version()};
      }
    }
    if (s.ok() && change.swap_when_staged) {
      if (Result<int64_t> r = ActivateStaged(); !r.ok()) s = r.status();
    }
    if (change.done) change.done(s);
  }

  LoopTask finish_;
  std::optional<ModelChange> change_;
  Result<runtime::ModelFile> produced_ = Internal("nothing produced");
  std::optional<ServingModel> staged_;
  ServingModel serving_{"configured", 1};
};

class UpdaterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(1));
  }

  // A fresh Updater on the same state database: what a daemon (re)start
  // does. Boot places nothing real; it reports what it would serve.
  void StartUpdater(bool* installed = nullptr) {
    updater_.reset();
    host_ = std::make_unique<FakeHost>(loop_.get());
    UpdaterOptions o;
    o.state_db = dir_.File("state.db");
    o.root_file = dir_.File("root.pb");
    o.device.id = kDevice;
    o.policy.build_time = fleet_.now() - 86400;
    o.policy.runtime_version = "0.1.0";
    o.probation_crashes = 2;
    Result<std::unique_ptr<Updater>> u = Updater::Create(loop_.get(), o);
    ASSERT_TRUE(u.ok()) << u.status().message();
    updater_ = std::move(*u);
    booted_.reset();
    Result<bool> boot = updater_->Boot([&](runtime::ModelFile f) {
      booted_ = f.header().name() + " v" + std::to_string(f.header().version());
      return Status::Ok();
    });
    ASSERT_TRUE(boot.ok()) << boot.status().message();
    if (installed) *installed = *boot;
    updater_->Attach(host_.get());
  }

  // Installs a bundle and turns the loop until it is answered.
  Result<UpdateStatus> Install(const std::string& bundle) {
    UniqueFd fd(memfd_create("bundle", MFD_CLOEXEC));
    EXPECT_EQ(write(fd.get(), bundle.data(), bundle.size()),
              static_cast<ssize_t>(bundle.size()));
    std::optional<Result<UpdateStatus>> answer;
    Status s = updater_->InstallBundle(
        std::move(fd), bundle.size(),
        [&](const Result<UpdateStatus>& st) { answer = st; });
    if (!s.ok()) return s;
    const int64_t end = MonotonicNs() + 20'000'000'000LL;
    while (!answer && MonotonicNs() < end) {
      sd_event_run(loop_.get(), 10000);
    }
    if (!answer) return Internal("the install was never answered");
    return *answer;
  }

  std::string Bundle(uint64_t version, uint64_t sequence,
                     bool wrong_golden = false) {
    TestModelSpec spec = FastModel();
    spec.name = "upnet";
    spec.version = version;
    spec.wrong_golden = wrong_golden;
    spec.golden = !wrong_golden;
    Result<std::vector<uint8_t>> bytes = BuildTestModel(spec);
    EXPECT_TRUE(bytes.ok());
    SignedRelease r = fleet_.Release(std::string(bytes->begin(), bytes->end()),
                                     "upnet", version, sequence, kDevice);
    return fleet_.Bundle(r);
  }

  TempDir dir_;
  TestFleet fleet_;
  EventLoop loop_;
  std::unique_ptr<FakeHost> host_;
  std::unique_ptr<Updater> updater_;
  std::optional<std::string> booted_;
};

TEST_F(UpdaterTest, BundleGoesActiveAndIsServedAfterARestart) {
  bool installed = true;
  StartUpdater(&installed);
  EXPECT_FALSE(installed);  // nothing installed yet: the configured model
  std::vector<std::string> states;
  updater_->SetObserver([&](const UpdateStatus& st) {
    states.push_back(ota::UpdateStateName(st.record.state));
  });
  Result<UpdateStatus> st = Install(Bundle(2, 1));
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->record.state, ota::UpdateState::kActive) << st->record.reason;
  EXPECT_EQ(host_->serving().name, "upnet");
  EXPECT_EQ(host_->serving().version, 2u);
  EXPECT_EQ(host_->swaps, 1);
  EXPECT_TRUE(st->probation);
  EXPECT_THAT(states,
              ::testing::IsSupersetOf({"received", "downloading", "verifying",
                                       "staged", "activating"}));
  // A clean restart boots the installed model from the store.
  updater_->Shutdown();
  StartUpdater(&installed);
  EXPECT_TRUE(installed);
  EXPECT_EQ(booted_.value_or(""), "upnet v2");
}

TEST_F(UpdaterTest, CrashesInProbationRollBackOnceAndTheReleaseStaysOut) {
  StartUpdater();
  ASSERT_EQ(Install(Bundle(2, 1))->record.state, ota::UpdateState::kActive);
  ASSERT_EQ(Install(Bundle(3, 2))->record.state, ota::UpdateState::kActive);
  // Two starts after unclean stops (no Shutdown) within probation.
  StartUpdater();
  EXPECT_EQ(booted_.value_or(""), "upnet v3");
  StartUpdater();
  EXPECT_EQ(booted_.value_or(""), "upnet v2");  // rolled back
  UpdateStatus st = updater_->status();
  EXPECT_EQ(st.record.state, ota::UpdateState::kRolledBack);
  EXPECT_EQ(st.record.model_version, 3u);
  EXPECT_THAT(st.record.reason, HasSubstr("version 3"));
  // The rolled-back release does not come back, even re-signed with a new
  // sequence; a newer version does.
  Result<UpdateStatus> again = Install(Bundle(3, 3));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->record.state, ota::UpdateState::kRejected);
  EXPECT_THAT(again->record.reason, HasSubstr("rolled_back"));
  EXPECT_EQ(Install(Bundle(4, 4))->record.state, ota::UpdateState::kActive);
}

TEST_F(UpdaterTest, RefusalsChangeNothingThatServes) {
  StartUpdater();
  // Not newer than what is installed.
  ASSERT_EQ(Install(Bundle(2, 1))->record.state, ota::UpdateState::kActive);
  Result<UpdateStatus> st = Install(Bundle(2, 2));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->record.state, ota::UpdateState::kRejected);
  EXPECT_THAT(st->record.reason, HasSubstr("not_newer"));
  // A model without a golden pair fails its staging; v2 keeps serving.
  st = Install(Bundle(3, 3, /*wrong_golden=*/true));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->record.state, ota::UpdateState::kFailed);
  EXPECT_EQ(host_->serving().version, 2u);
  // Not a bundle at all: refused before anything is recorded.
  st = Install("not a bundle");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.status().message()), HasSubstr("bundle"));
  EXPECT_EQ(updater_->status().record.model_version, 3u);
}

}  // namespace
}  // namespace ternd::daemon
