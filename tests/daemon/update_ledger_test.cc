// UpdateLedger with a real state database and a real sd-event loop: the
// mirror changes at once and the disk in order; completions run on the
// loop after the write; a write that waits for the disk never holds up the
// caller; what was written reads back after a reopen; other connections to
// the same database (the loader thread, the download's chunk writer) open
// and write while the ledger writes.
#include "daemon/update_ledger.h"

#include <gtest/gtest.h>
#include <systemd/sd-event.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "base/clock.h"
#include "base/event_loop.h"
#include "daemon/artifact_cache.h"
#include "ota/state_store.h"
#include "tests/daemon/daemon_process.h"

namespace ternd::daemon {
namespace {

using daemon_testing::TempDir;

class UpdateLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
  }

  std::unique_ptr<UpdateLedger> Open() {
    Result<std::unique_ptr<UpdateLedger>> l =
        UpdateLedger::Open(loop_.get(), dir_.File("state.db"));
    EXPECT_TRUE(l.ok()) << l.status().message();
    return l.ok() ? std::move(*l) : nullptr;
  }

  // Turns the loop until `done` or 10 s.
  bool RunUntil(const std::function<bool()>& done) {
    const int64_t end = MonotonicNs() + 10'000'000'000LL;
    while (!done() && MonotonicNs() < end) sd_event_run(loop_.get(), 10000);
    return done();
  }

  static ota::UpdateRecord Record(ota::UpdateState state, uint64_t version) {
    ota::UpdateRecord r;
    r.state = state;
    r.model_name = "m";
    r.model_version = version;
    r.envelope_sha256 = std::string(32, static_cast<char>(version));
    return r;
  }

  static ota::InstalledModel Installed(uint64_t version) {
    ota::InstalledModel m;
    m.model_name = "m";
    m.model_version = version;
    m.release_envelope = "release " + std::to_string(version);
    m.artifact_sha256 = std::string(32, static_cast<char>('a' + version));
    return m;
  }

  TempDir dir_;
  EventLoop loop_;
};

TEST_F(UpdateLedgerTest, MirrorChangesAtOnceAndTheDiskInOrder) {
  auto ledger = Open();
  ASSERT_TRUE(ledger);
  EXPECT_TRUE(ledger->last_run_clean());  // the first run ever
  EXPECT_FALSE(ledger->active());

  // The ledger thread is held up (a disk that takes its time): the calls
  // below return at once, and the mirror already says what they wrote.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ledger->Post([released](Result<ota::StateStore*>) { released.wait(); },
               nullptr);
  std::vector<std::string> order;
  const int64_t start = MonotonicNs();
  ledger->BeginRun();
  ledger->SaveUpdate(Record(ota::UpdateState::kReceived, 2),
                     [&](const Status& s) {
                       EXPECT_TRUE(s.ok()) << s.message();
                       order.push_back("received");
                     });
  ledger->Activate(Installed(2), Record(ota::UpdateState::kActive, 2),
                   [&](const Status& s) {
                     EXPECT_TRUE(s.ok()) << s.message();
                     order.push_back("active");
                   });
  bool flushed = false;
  ledger->Flush([&] {
    order.push_back("flush");
    flushed = true;
  });
  EXPECT_LT(MonotonicNs() - start, 2'000'000'000) << "a write waited";
  EXPECT_EQ(ledger->record().state, ota::UpdateState::kActive);
  ASSERT_TRUE(ledger->active());
  EXPECT_EQ(ledger->active()->model_version, 2u);
  EXPECT_TRUE(ledger->probation().active);
  EXPECT_EQ(ledger->probation().model_version, 2u);
  // Nothing has reached the disk yet: completions wait for it.
  sd_event_run(loop_.get(), 20000);
  EXPECT_TRUE(order.empty());

  release.set_value();
  ASSERT_TRUE(RunUntil([&] { return flushed; }));
  EXPECT_EQ(order, (std::vector<std::string>{"received", "active", "flush"}));

  // A restart reads back what the mirror said; the run did not end
  // cleanly (no EndRun).
  ledger.reset();
  ledger = Open();
  ASSERT_TRUE(ledger);
  EXPECT_FALSE(ledger->last_run_clean());
  EXPECT_EQ(ledger->record().state, ota::UpdateState::kActive);
  ASSERT_TRUE(ledger->active());
  EXPECT_EQ(ledger->active()->model_version, 2u);
  EXPECT_TRUE(ledger->probation().active);
}

TEST_F(UpdateLedgerTest, RollBackAndEndRunReadBackAfterAReopen) {
  {
    auto ledger = Open();
    ASSERT_TRUE(ledger);
    ledger->BeginRun();
    ledger->Activate(Installed(2), Record(ota::UpdateState::kActive, 2));
    ledger->Activate(Installed(3), Record(ota::UpdateState::kActive, 3));
    ASSERT_TRUE(ledger->previous());
    EXPECT_EQ(ledger->previous()->model_version, 2u);
    ota::UpdateRecord back = Record(ota::UpdateState::kRolledBack, 3);
    back.reason = "crashed twice";
    ledger->RollBack(back);
    // The mirror does what the journal's transaction does.
    ASSERT_TRUE(ledger->active());
    EXPECT_EQ(ledger->active()->model_version, 2u);
    EXPECT_FALSE(ledger->previous());
    EXPECT_FALSE(ledger->probation().active);
    ASSERT_EQ(ledger->rolled_back().size(), 1u);
    EXPECT_EQ(ledger->rolled_back()[0].model_version, 3u);
    ledger->EndRun();
    ledger->Wait();
  }
  auto ledger = Open();
  ASSERT_TRUE(ledger);
  EXPECT_TRUE(ledger->last_run_clean());
  ASSERT_TRUE(ledger->active());
  EXPECT_EQ(ledger->active()->model_version, 2u);
  EXPECT_FALSE(ledger->previous());
  ASSERT_EQ(ledger->rolled_back().size(), 1u);
  EXPECT_EQ(ledger->rolled_back()[0].model_version, 3u);
  EXPECT_EQ(ledger->rolled_back()[0].reason, "crashed twice");
  EXPECT_EQ(ledger->record().state, ota::UpdateState::kRolledBack);
}

// The loader thread (staging from the store) and the download's chunk
// writer open connections of their own while the ledger writes: none may
// find the database busy.
TEST_F(UpdateLedgerTest, OtherConnectionsOpenAndWriteWhileTheLedgerWrites) {
  auto ledger = Open();
  ASSERT_TRUE(ledger);
  std::atomic<bool> stop{false};
  std::thread other([&] {
    for (int i = 0; i < 40 && !stop; ++i) {
      Result<std::unique_ptr<ota::StateStore>> s =
          ota::StateStore::Open(dir_.File("state.db"));
      ASSERT_TRUE(s.ok()) << "open " << i << ": " << s.status().message();
      Status put = (*s)->PutChunk(std::string(32, 'c'), i, "chunk");
      ASSERT_TRUE(put.ok()) << "write " << i << ": " << put.message();
    }
  });
  int written = 0;
  for (int i = 0; i < 200; ++i) {
    ledger->SaveUpdate(Record(ota::UpdateState::kDownloading, 2),
                       [&](const Status& s) {
                         EXPECT_TRUE(s.ok()) << s.message();
                         ++written;
                       });
    if (i % 20 == 0) sd_event_run(loop_.get(), 0);
  }
  other.join();
  stop = true;
  ASSERT_TRUE(RunUntil([&] { return written == 200; }));
}

TEST_F(UpdateLedgerTest, EvictionKeepsWhatServesAndTheNewestThatFit) {
  auto ledger = Open();
  ASSERT_TRUE(ledger);
  {
    Result<std::unique_ptr<ota::StateStore>> s =
        ota::StateStore::Open(dir_.File("state.db"));
    ASSERT_TRUE(s.ok());
    // Oldest first: a (kept, 300 bytes), b, c, d (100 bytes each).
    for (char c : std::string("abcd")) {
      const std::string chunk(c == 'a' ? 300 : 100, c);
      ASSERT_TRUE((*s)->PutChunk(std::string(32, c), 0, chunk).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  bool evicted = false;
  ledger->Evict({std::string(32, 'a')}, 500, [&] { evicted = true; });
  ASSERT_TRUE(RunUntil([&] { return evicted; }));
  Result<std::unique_ptr<ota::StateStore>> s =
      ota::StateStore::Open(dir_.File("state.db"));
  ASSERT_TRUE(s.ok());
  Result<std::vector<ota::StateStore::StoredArtifact>> left = (*s)->Artifacts();
  ASSERT_TRUE(left.ok());
  std::string names;
  for (const auto& a : *left) names += a.sha256[0];
  std::sort(names.begin(), names.end());
  // 300 kept + the two newest (d, c) = 500: b goes.
  EXPECT_EQ(names, "acd");
}

TEST(ArtifactCacheTest, PlanKeepsPinnedArtifactsWhateverTheirSize) {
  using A = ota::StateStore::StoredArtifact;
  const std::vector<A> stored = {{"new", 40}, {"big", 100}, {"old", 30}};
  // Nothing fits beside the pinned 100: every other one goes.
  EXPECT_EQ(ArtifactsToEvict(stored, {"big"}, 100),
            (std::vector<std::string>{"new", "old"}));
  // 100 + 40 fit in 150, 30 more do not.
  EXPECT_EQ(ArtifactsToEvict(stored, {"big"}, 150),
            (std::vector<std::string>{"old"}));
  // A smaller, older one still fits after a bigger, newer one did not.
  EXPECT_EQ(ArtifactsToEvict(stored, {}, 75),
            (std::vector<std::string>{"big"}));
  EXPECT_TRUE(ArtifactsToEvict(stored, {}, 170).empty());
}

}  // namespace
}  // namespace ternd::daemon
