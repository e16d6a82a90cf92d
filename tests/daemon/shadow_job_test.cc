// The ShadowValidator in process, on a real sd-event loop with the real
// ModelSlots and WorkerPool: a staged model that agrees is accepted after
// the required requests and one that disagrees is not, the time limit
// rejects, and a sample (the copy, the submission, the worker's two
// models and the count) allocates nothing once validation has begun.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <systemd/sd-event.h>

#include <optional>

#include "base/clock.h"
#include "base/event_loop.h"
#include "daemon/model_slots.h"
#include "daemon/shadow_validator.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/alloc_hooks.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::TestInput;
using daemon_testing::TestModelSpec;
using ::testing::HasSubstr;

constexpr int kLoopExecutor = 1;  // the pool has one worker: executor 0

Result<runtime::ModelFile> Model(uint64_t version, uint32_t seed) {
  TestModelSpec spec = FastModel();
  spec.name = "shadownet";
  spec.version = version;
  spec.seed = seed;
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, BuildTestModel(spec));
  return runtime::ModelFile::Parse(std::move(bytes), "shadownet");
}

class ShadowJobTest : public ::testing::Test {
 protected:
  // Serves version 1 (seed 1) and stages version 2 of `staged_seed`.
  void Start(uint32_t staged_seed) {
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    runtime::RuntimeOptions o;
    o.arena_bytes = 16 << 20;
    o.slots = 2;
    o.workers = 2;  // pool worker 0, and this thread's executor
    Result<std::unique_ptr<ModelSlots>> s = ModelSlots::Create(e, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    slots_ = std::move(*s);
    Result<runtime::ModelFile> first = Model(1, 1);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(slots_->PlaceFirst(std::move(*first), true).ok());
    ModelChange c;
    c.what = "stage";
    c.produce = [staged_seed]() { return Model(2, staged_seed); };
    c.require_golden = true;
    c.swap_when_staged = false;
    bool staged = false;
    c.done = [&](const Status& st) {
      EXPECT_TRUE(st.ok()) << st.message();
      staged = true;
    };
    ASSERT_TRUE(slots_->ChangeModel(std::move(c)).ok());
    ASSERT_TRUE(RunUntil([&] { return staged; }));
    ASSERT_NE(slots_->staged(), nullptr);

    Result<std::unique_ptr<WorkerPool>> p = WorkerPool::Create(1, 4);
    ASSERT_TRUE(p.ok());
    pool_ = std::move(*p);
    completed_.reserve(4);
    sd_event_source* src = nullptr;
    ASSERT_GE(
        sd_event_add_io(e, &src, pool_->event_fd(), EPOLLIN, &OnPool, this), 0);
    pool_source_.reset(src);
    validator_ = std::make_unique<ShadowValidator>(e, slots_.get(), pool_.get(),
                                                   /*hot_swap=*/true,
                                                   [this]() { return idle_; });
  }

  void TearDown() override {
    validator_.reset();
    if (pool_) pool_->Stop();
    pool_source_.reset();
  }

  static int OnPool(sd_event_source*, int, uint32_t, void* self) {
    auto* t = static_cast<ShadowJobTest*>(self);
    t->completed_.clear();
    t->pool_->TakeCompleted(&t->completed_);
    for (InferJob* job : t->completed_) {
      EXPECT_TRUE(t->validator_->TakeCompleted(job));
      ++t->shadow_jobs_;
    }
    return 0;
  }

  bool RunUntil(const std::function<bool()>& done, int timeout_ms = 10000) {
    const int64_t end = MonotonicNs() + int64_t{timeout_ms} * 1000000;
    while (!done()) {
      if (MonotonicNs() > end) return false;
      if (sd_event_run(loop_.get(), 10000) < 0) return false;
    }
    return true;
  }

  // A client's request as the service leaves it after the answer: the
  // serving model ran it (here on this thread's executor).
  void Answer(uint32_t seed, bool with_probs) {
    const runtime::LoadedModel* m = slots_->usable();
    answered_.model = m;
    answered_.model_load = 1;
    answered_.batch = 2;
    answered_.inputs = TestInput(FastModel(), 2, seed);
    answered_.outputs.clear();
    if (with_probs) answered_.outputs.push_back(m->FindOutput("probs"));
    answered_.outputs.push_back(m->FindOutput("class"));
    WorkerPool::Run(kLoopExecutor, &answered_);
    ASSERT_TRUE(answered_.status.ok()) << answered_.status.message();
  }

  void Begin(uint64_t min_requests, uint32_t time_limit_s = 60) {
    ShadowSpec spec;
    spec.sample_rate = 1.0;
    spec.min_requests = min_requests;
    spec.min_agreement = 0.99;
    spec.output = "probs";
    spec.time_limit_s = time_limit_s;
    ASSERT_TRUE(
        validator_
            ->BeginValidation(
                spec, [] {}, [this](const ShadowOutcome& o) { outcome_ = o; })
            .ok());
  }

  // Offers the answer and waits until its shadow job is back.
  void Sample() {
    const int before = shadow_jobs_;
    validator_->Offer(answered_, idle_);
    ASSERT_TRUE(RunUntil([&] { return shadow_jobs_ > before; }));
  }

  EventLoop loop_;
  std::unique_ptr<ModelSlots> slots_;
  std::unique_ptr<WorkerPool> pool_;
  EventSource pool_source_;
  std::vector<InferJob*> completed_;
  std::unique_ptr<ShadowValidator> validator_;
  InferJob answered_;
  bool idle_ = true;
  int shadow_jobs_ = 0;
  std::optional<ShadowOutcome> outcome_;
};

TEST_F(ShadowJobTest, AgreeingModelPassesAfterMinRequestsWithoutAllocating) {
  Start(/*staged_seed=*/1);  // the same weights
  Begin(6);
  Answer(7, /*with_probs=*/true);
  Sample();  // the first one creates the loop's deferred task
  long allocations = 0;
  for (int i = 0; i < 4; ++i) {
    Answer(8 + static_cast<uint32_t>(i), /*with_probs=*/i % 2 == 0);
    testing::AllocCounting count;
    Sample();
    allocations += count.count();
  }
  EXPECT_EQ(allocations, 0);
  ASSERT_TRUE(validator_->validation());
  EXPECT_EQ(validator_->validation()->requests, 5u);
  EXPECT_EQ(validator_->validation()->agreeing, 10u);
  EXPECT_FALSE(outcome_);
  Sample();
  ASSERT_TRUE(RunUntil([&] { return outcome_.has_value(); }));
  EXPECT_TRUE(outcome_->agrees) << outcome_->reason;
  EXPECT_EQ(outcome_->progress.requests, 6u);
  EXPECT_EQ(outcome_->progress.rows, 12u);
  EXPECT_FALSE(validator_->validation());

  // The positive control: the hooks count.
  testing::AllocCounting count;
  auto* p = new int(1);
  delete p;
  EXPECT_GT(count.count(), 0);
}

TEST_F(ShadowJobTest, DisagreeingModelFailsWithItsAgreement) {
  Start(/*staged_seed=*/9);
  Begin(8);
  for (uint32_t i = 0; i < 8; ++i) {
    Answer(20 + i, /*with_probs=*/true);
    Sample();
  }
  ASSERT_TRUE(RunUntil([&] { return outcome_.has_value(); }));
  EXPECT_FALSE(outcome_->agrees);
  EXPECT_LT(outcome_->progress.agreement(), 0.99);
  EXPECT_THAT(outcome_->reason, HasSubstr("shadow validation failed: "));
  EXPECT_THAT(outcome_->reason, HasSubstr("16 rows agree by argmax on output "
                                          "'probs', 8 requests compared"));
}

TEST_F(ShadowJobTest, BusyOrNotIdleSamplesAreDroppedNotQueued) {
  Start(/*staged_seed=*/1);
  Begin(100);
  Answer(3, /*with_probs=*/true);
  idle_ = false;  // a client request is outstanding
  validator_->Offer(answered_, idle_);
  EXPECT_EQ(validator_->validation()->dropped, 1u);
  idle_ = true;
  validator_->Offer(answered_, idle_);  // copied, submitted next turn
  validator_->Offer(answered_, idle_);  // the job is taken: dropped
  EXPECT_EQ(validator_->validation()->dropped, 2u);
  // A request arrives before the next turn: the copied sample is dropped.
  idle_ = false;
  ASSERT_TRUE(RunUntil([&] { return validator_->validation()->dropped == 3; }));
  EXPECT_EQ(shadow_jobs_, 0);
  EXPECT_EQ(validator_->validation()->requests, 0u);
}

TEST_F(ShadowJobTest, TimeLimitWithoutEnoughRequestsFails) {
  Start(/*staged_seed=*/1);
  Begin(5, /*time_limit_s=*/1);
  Answer(3, /*with_probs=*/false);  // the serving model runs again
  Sample();
  ASSERT_TRUE(RunUntil([&] { return outcome_.has_value(); }, 5000));
  EXPECT_FALSE(outcome_->agrees);
  EXPECT_THAT(outcome_->reason,
              HasSubstr("shadow validation timed out: 1 s passed with 1 of 5 "
                        "requests compared"));
}

}  // namespace
}  // namespace ternd::daemon
