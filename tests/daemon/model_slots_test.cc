// ModelSlots in process, on a real sd-event loop: swaps in both slot modes,
// a change waiting for the requests that hold its slot (and starting when
// the last one goes, without polling), a failed cold change restoring the
// served model, and completions that never run inside the caller's call.
#include "daemon/model_slots.h"

#include <gtest/gtest.h>
#include <systemd/sd-event.h>

#include <atomic>
#include <chrono>

#include "base/clock.h"
#include "base/event_loop.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::TestModelSpec;

Result<runtime::ModelFile> Model(const std::string& name, uint64_t version,
                                 bool wrong_golden = false) {
  TestModelSpec spec = FastModel();
  spec.name = name;
  spec.version = version;
  spec.wrong_golden = wrong_golden;
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, BuildTestModel(spec));
  return runtime::ModelFile::Parse(std::move(bytes), name);
}

class ModelSlotsTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    runtime::RuntimeOptions o;
    o.arena_bytes = 16 << 20;
    o.slots = GetParam();
    o.workers = 1;
    Result<std::unique_ptr<ModelSlots>> s = ModelSlots::Create(e, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    slots_ = std::move(*s);
    slots_->SetObserver([this]() { ++observed_; });
    Result<runtime::ModelFile> first = Model("first", 1);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(slots_->PlaceFirst(std::move(*first), true).ok());
  }

  bool cold() const { return GetParam() == 1; }

  // Turns the loop until `done` or a deadline; false on the deadline.
  bool RunUntil(const std::function<bool()>& done, int timeout_ms = 10000) {
    const int64_t end = MonotonicNs() + int64_t{timeout_ms} * 1000000;
    while (!done()) {
      if (MonotonicNs() > end) return false;
      if (sd_event_run(loop_.get(), 10000) < 0) return false;
    }
    return true;
  }

  ModelChange Change(const std::string& name, uint64_t version,
                     bool wrong_golden = false) {
    ModelChange c;
    c.what = "change to " + name;
    c.produce = [this, name, version, wrong_golden]() {
      ++produced_;
      return Model(name, version, wrong_golden);
    };
    c.require_golden = true;
    c.done = [this](const Status& s) {
      done_status_ = s;
      ++done_;
    };
    return c;
  }

  EventLoop loop_;
  std::unique_ptr<ModelSlots> slots_;
  std::atomic<int> produced_{0};
  int done_ = 0;
  Status done_status_;
  int observed_ = 0;
};

TEST_P(ModelSlotsTest, ChangeSwapsAndReportsThroughTheLoop) {
  EXPECT_EQ(slots_->serving().name, "first");
  ASSERT_TRUE(slots_->ChangeModel(Change("second", 2)).ok());
  // Never inside the call itself.
  EXPECT_EQ(done_, 0);
  EXPECT_EQ(slots_->changing(), "change to second");
  if (cold()) {
    EXPECT_EQ(slots_->usable(), nullptr);  // being rewritten
  }
  ASSERT_TRUE(RunUntil([&] { return done_ == 1 && observed_ == 1; }));
  ASSERT_TRUE(done_status_.ok()) << done_status_.message();
  EXPECT_EQ(slots_->serving().name, "second");
  EXPECT_EQ(slots_->serving().version, 2u);
  ASSERT_NE(slots_->usable(), nullptr);
  EXPECT_STREQ(slots_->usable()->name(), "second");
  EXPECT_TRUE(slots_->changing().empty());
}

TEST_P(ModelSlotsTest, FailedChangeKeepsTheServedModel) {
  ASSERT_TRUE(
      slots_->ChangeModel(Change("bad", 2, /*wrong_golden=*/true)).ok());
  ASSERT_TRUE(RunUntil([&] { return done_ == 1; }));
  EXPECT_FALSE(done_status_.ok());
  EXPECT_NE(std::string(done_status_.message()).find("golden"),
            std::string::npos)
      << done_status_.message();
  // Cold: the slot was overwritten and the first model put back.
  ASSERT_NE(slots_->usable(), nullptr);
  EXPECT_STREQ(slots_->usable()->name(), "first");
  EXPECT_EQ(slots_->serving().name, "first");
  EXPECT_EQ(observed_, 0);
}

TEST_P(ModelSlotsTest, ChangeWaitsForTheRequestsHoldingItsSlot) {
  // A request holds the serving slot. Hot: the first change goes into the
  // idle slot at once; the second goes back into the held slot and must
  // wait. Cold: the only slot is held, so the first change waits.
  const ModelSlots::Hold held = slots_->Acquire();
  EXPECT_STREQ(held.model->name(), "first");
  if (!cold()) {
    ASSERT_TRUE(slots_->ChangeModel(Change("second", 2)).ok());
    ASSERT_TRUE(RunUntil([&] { return done_ == 1; }));
    ASSERT_TRUE(done_status_.ok());
    EXPECT_STREQ(held.model->name(), "first");  // untouched while held
  }
  const int before = produced_.load();
  ASSERT_TRUE(slots_->ChangeModel(Change("third", 3)).ok());
  // Nothing may start while the slot is held, however long the loop turns.
  EXPECT_FALSE(RunUntil([&] { return produced_.load() > before; }, 200));
  if (cold()) {
    EXPECT_EQ(slots_->usable(), nullptr);  // no new requests
  }
  slots_->Release(held.slot);
  ASSERT_TRUE(RunUntil([&] { return done_ == (cold() ? 1 : 2); }));
  ASSERT_TRUE(done_status_.ok()) << done_status_.message();
  EXPECT_EQ(slots_->serving().name, "third");
}

TEST_P(ModelSlotsTest, EveryPlacementIsANewLoad) {
  const ModelSlots::Hold a = slots_->Acquire();
  slots_->Release(a.slot);
  ASSERT_TRUE(slots_->ChangeModel(Change("second", 2)).ok());
  ASSERT_TRUE(RunUntil([&] { return done_ == 1; }));
  const ModelSlots::Hold b = slots_->Acquire();
  slots_->Release(b.slot);
  EXPECT_NE(a.load, b.load);
  if (cold()) {
    EXPECT_EQ(a.model, b.model);  // same address, new model
  }
}

TEST_P(ModelSlotsTest, StagedModelWaitsForActivation) {
  ModelChange c = Change("staged", 2);
  c.swap_when_staged = false;
  ASSERT_TRUE(slots_->ChangeModel(std::move(c)).ok());
  ASSERT_TRUE(RunUntil([&] { return done_ == 1; }));
  ASSERT_TRUE(done_status_.ok());
  if (cold()) {
    // One slot: staging is swapping.
    EXPECT_EQ(slots_->serving().name, "staged");
    EXPECT_FALSE(slots_->has_staged());
    return;
  }
  EXPECT_EQ(slots_->serving().name, "first");
  EXPECT_TRUE(slots_->has_staged());
  EXPECT_FALSE(slots_->ChangeModel(Change("other", 3)).ok());
  Result<int64_t> swap = slots_->ActivateStaged();
  ASSERT_TRUE(swap.ok());
  EXPECT_EQ(slots_->serving().name, "staged");
  EXPECT_FALSE(slots_->has_staged());
}

TEST_P(ModelSlotsTest, NoChangesWhileStopping) {
  slots_->StopChanges();
  Status s = slots_->ChangeModel(Change("late", 2));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(done_, 0);
}

INSTANTIATE_TEST_SUITE_P(SlotModes, ModelSlotsTest, ::testing::Values(2, 1),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return p.param == 2 ? "Hot" : "Cold";
                         });

}  // namespace
}  // namespace ternd::daemon
