// The worker pool in process: jobs run on the workers with the same results
// as in the calling thread, completions wake the eventfd once per batch and
// none is lost, a deadline that passes in the queue is an answer, and Stop
// cancels what is still queued.
#include "daemon/worker_pool.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <memory>
#include <vector>

#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::SlowModel;
using daemon_testing::TestInput;
using daemon_testing::TestModelSpec;

class WorkerPoolTest : public ::testing::Test {
 protected:
  void Load(const TestModelSpec& spec, const char* kernel = "auto") {
    spec_ = spec;
    Result<std::vector<uint8_t>> bytes = BuildTestModel(spec);
    ASSERT_TRUE(bytes.ok());
    Result<runtime::ModelFile> f =
        runtime::ModelFile::Parse(std::move(*bytes), "pool test");
    ASSERT_TRUE(f.ok());
    file_ = std::make_unique<runtime::ModelFile>(std::move(*f));
    runtime::RuntimeOptions o;
    o.slots = 1;
    o.arena_bytes = 64 << 20;
    o.workers = 3;  // two pool workers and the test's own executor
    o.kernel = kernel;
    Result<std::unique_ptr<runtime::Runtime>> r = runtime::Runtime::Create(o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    runtime_ = std::move(*r);
    Result<const runtime::LoadedModel*> m = runtime_->Load(0, *file_);
    ASSERT_TRUE(m.ok()) << m.status().message();
    model_ = *m;
  }

  std::unique_ptr<InferJob> Job(int rows, uint32_t seed) {
    auto job = std::make_unique<InferJob>();
    job->model = model_;
    job->batch = rows;
    job->inputs = TestInput(spec_, static_cast<uint32_t>(rows), seed);
    job->outputs = {0};
    job->received_ns = MonotonicNs();
    return job;
  }

  // Takes completions until `n` jobs are back (or 10 s pass).
  std::vector<InferJob*> TakeAll(WorkerPool* pool, size_t n) {
    std::vector<InferJob*> done;
    const int64_t end = MonotonicNs() + 10'000'000'000LL;
    while (done.size() < n && MonotonicNs() < end) {
      struct pollfd p = {pool->event_fd(), POLLIN, 0};
      if (poll(&p, 1, 100) == 1) pool->TakeCompleted(&done);
    }
    return done;
  }

  TestModelSpec spec_;
  std::unique_ptr<runtime::ModelFile> file_;
  std::unique_ptr<runtime::Runtime> runtime_;
  const runtime::LoadedModel* model_ = nullptr;
};

TEST_F(WorkerPoolTest, JobsRunOnTheWorkersWithTheCallersResults) {
  ASSERT_NO_FATAL_FAILURE(Load(FastModel()));
  Result<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create(2, 16);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ((*pool)->workers(), 2);
  std::vector<std::unique_ptr<InferJob>> jobs;
  for (uint32_t i = 0; i < 16; ++i) {
    jobs.push_back(Job(1 + i % 4, i));
    (*pool)->Submit(jobs.back().get());
  }
  std::vector<InferJob*> done = TakeAll(pool->get(), 16);
  ASSERT_EQ(done.size(), 16u);
  for (uint32_t i = 0; i < 16; ++i) {
    InferJob* job = jobs[i].get();
    ASSERT_TRUE(job->status.ok()) << job->status.message();
    EXPECT_GE(job->finished_ns, job->started_ns);
    // The same job in this thread, on the spare executor.
    std::unique_ptr<InferJob> here = Job(job->batch, i);
    WorkerPool::Run(2, here.get());
    EXPECT_EQ(job->results, here->results) << "job " << i;
  }
}

TEST_F(WorkerPoolTest, DeadlinePassedInTheQueueIsAnswered) {
  ASSERT_NO_FATAL_FAILURE(Load(FastModel()));
  Result<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create(1, 4);
  ASSERT_TRUE(pool.ok());
  std::unique_ptr<InferJob> late = Job(1, 1);
  late->deadline_ns = late->received_ns - 1;
  (*pool)->Submit(late.get());
  ASSERT_EQ(TakeAll(pool->get(), 1).size(), 1u);
  EXPECT_EQ(late->status.code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(late->results.empty());
}

TEST_F(WorkerPoolTest, StopCancelsQueuedJobsAndLosesNone) {
  // The reference kernel: each job computes for a while, so the second
  // and third are still queued when Stop() comes.
  ASSERT_NO_FATAL_FAILURE(Load(SlowModel(), "ref"));
  Result<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create(1, 4);
  ASSERT_TRUE(pool.ok());
  std::vector<std::unique_ptr<InferJob>> jobs;
  for (uint32_t i = 0; i < 3; ++i) {
    jobs.push_back(Job(8, i));
    (*pool)->Submit(jobs.back().get());
  }
  (*pool)->Stop();
  std::vector<InferJob*> done;
  (*pool)->TakeCompleted(&done);
  EXPECT_EQ(done.size(), 3u);
  int cancelled = 0;
  for (const auto& job : jobs) {
    if (job->status.code() == StatusCode::kCancelled) {
      ++cancelled;
    } else {
      EXPECT_TRUE(job->status.ok()) << job->status.message();
    }
  }
  EXPECT_GE(cancelled, 2);
  (*pool)->Stop();  // idempotent
}

TEST(WorkerPoolCreateTest, NeedsAWorkerAndCapacity) {
  EXPECT_FALSE(WorkerPool::Create(0, 4).ok());
  EXPECT_FALSE(WorkerPool::Create(1, 0).ok());
}

}  // namespace
}  // namespace ternd::daemon
