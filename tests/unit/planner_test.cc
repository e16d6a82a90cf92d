#include "runtime/planner.h"

#include <gtest/gtest.h>

#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

// No two buffers alive at the same op may share a byte.
void ExpectNoConflicts(const std::vector<BufferRequest>& req,
                       const MemoryPlan& plan) {
  for (size_t i = 0; i < req.size(); ++i) {
    EXPECT_LE(plan.offsets[i] + req[i].bytes, plan.total_bytes);
    EXPECT_EQ(plan.offsets[i] % 64, 0u);
    for (size_t j = i + 1; j < req.size(); ++j) {
      const bool alive_together = req[i].first_op <= req[j].last_op &&
                                  req[j].first_op <= req[i].last_op;
      const bool overlap = plan.offsets[i] < plan.offsets[j] + req[j].bytes &&
                           plan.offsets[j] < plan.offsets[i] + req[i].bytes;
      EXPECT_FALSE(alive_together && overlap) << i << " and " << j;
    }
  }
}

TEST(PlannerTest, ChainReusesMemory) {
  // A chain a -> b -> c -> d: each buffer lives for two ops, so two buffers
  // of the largest size are enough.
  std::vector<BufferRequest> req = {
      {1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  MemoryPlan plan = PlanMemory(req, 64);
  ExpectNoConflicts(req, plan);
  EXPECT_EQ(plan.total_bytes, 2 * 1024u);
}

TEST(PlannerTest, ResidualKeepsBufferAlive) {
  std::vector<BufferRequest> req = {
      {640, 0, 3}, {640, 1, 2}, {640, 2, 3}, {640, 3, 4}};
  MemoryPlan plan = PlanMemory(req, 64);
  ExpectNoConflicts(req, plan);
  EXPECT_EQ(plan.total_bytes, 3 * 640u);
}

TEST(PlannerTest, RandomPlansAreValidAndNoWorseThanSeparate) {
  testing::Rng rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<BufferRequest> req(rng.Int(1, 30));
    size_t sum = 0;
    for (BufferRequest& r : req) {
      r.bytes = rng.Int(1, 5000);
      r.first_op = rng.Int(0, 20);
      r.last_op = r.first_op + rng.Int(0, 5);
      sum += (r.bytes + 63) / 64 * 64;
    }
    MemoryPlan plan = PlanMemory(req, 64);
    ExpectNoConflicts(req, plan);
    EXPECT_LE(plan.total_bytes, sum);
    // Lower bound: the bytes alive at the busiest op.
    for (int op = 0; op < 26; ++op) {
      size_t live = 0;
      for (const BufferRequest& r : req) {
        if (r.first_op <= op && op <= r.last_op) live += r.bytes;
      }
      EXPECT_GE(plan.total_bytes, live);
    }
  }
}

}  // namespace
}  // namespace ternd::runtime
