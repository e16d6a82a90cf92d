// Recording into the registry never touches the heap: operator new and
// malloc are replaced by counting versions (as tests/unit/no_alloc_test.cc
// does), with positive controls proving the hooks are live.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "telemetry/metrics.h"
#include "telemetry/quality.h"
#include "tests/support/alloc_hooks.h"

using ternd::testing::g_alloc_counting;
using ternd::testing::g_allocations;

namespace ternd::telemetry {
namespace {

TEST(TelemetryNoAllocTest, HooksAreLive) {
  g_allocations = 0;
  g_alloc_counting = true;
  std::vector<int>* v = new std::vector<int>(100);
  delete v;
#if TERND_COUNT_MALLOC
  void* volatile p = std::malloc(10);
  std::free(p);
#endif
  g_alloc_counting = false;
  EXPECT_GE(g_allocations.load(), 2);
}

TEST(TelemetryNoAllocTest, RecordingAllocatesNothing) {
  Registry r;
  Histogram* h = r.AddLatencyHistogram("ternd_compute_seconds", "c");
  Counter* c = r.AddCounter("ternd_requests_total", "r", "requests",
                            {{"call", "infer"}, {"status", "OK"}});
  Gauge* g = r.AddGauge("ternd_inflight_requests", "i", "requests");
  std::atomic<bool> go{false};
  std::atomic<long> in_thread{-1};
  // A fresh thread: its first record also picks its shard.
  std::thread worker([&] {
    while (!go.load()) {
    }
    const long before = g_allocations.load();
    for (int i = 0; i < 100000; ++i) {
      h->Record(1000 + i);
      c->Add();
      g->Add(1);
      g->Add(-1);
    }
    in_thread = g_allocations.load() - before;
  });
  g_allocations = 0;
  g_alloc_counting = true;
  go = true;
  for (int i = 0; i < 100000; ++i) {
    h->Record(int64_t{i} * 1000);
    c->Add(2);
    g->Set(i);
  }
  worker.join();
  g_alloc_counting = false;
  EXPECT_EQ(in_thread.load(), 0) << "allocations in the worker thread";
  EXPECT_EQ(g_allocations.load(), 0) << "heap allocations while recording";
  EXPECT_EQ(h->Snapshot().count, 200000u);
  EXPECT_EQ(c->Value(), 300000u);
}

// Model-quality statistics on the inference path: a classifier's class,
// confidence and input statistics, and a regression model's output norm,
// from a fresh thread (its first record picks its shard).
TEST(TelemetryNoAllocTest, QualityRecordingAllocatesNothing) {
  Registry r;
  ModelQualityStats::Shape cs;
  cs.model = "m";
  cs.version = "1";
  cs.classes = 80;
  cs.input_features = 100;
  cs.slots = 2;
  ModelQualityStats classifier(&r, cs);
  ModelQualityStats::Shape ns = cs;
  ns.version = "2";
  ns.classes = 0;
  ModelQualityStats regression(&r, ns);
  std::vector<float> in(4 * 100), out(4 * 80);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i % 7) - 3;
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(i % 13) / 5;
  std::atomic<long> in_thread{-1};
  std::atomic<bool> go{false};
  std::thread worker([&] {
    while (!go.load()) {
    }
    const long before = g_allocations.load();
    for (int i = 0; i < 2000; ++i) {
      classifier.Record(1, 4, in.data(), 100, out.data(), 80);
      regression.Record(1, 4, in.data(), 100, out.data(), 80);
    }
    in_thread = g_allocations.load() - before;
  });
  g_allocations = 0;
  g_alloc_counting = true;
  go = true;
  for (int i = 0; i < 2000; ++i) {
    classifier.Record(0, 4, in.data(), 100, out.data(), 80);
  }
  worker.join();
  g_alloc_counting = false;
  EXPECT_EQ(in_thread.load(), 0) << "allocations in the worker thread";
  EXPECT_EQ(g_allocations.load(), 0) << "heap allocations while recording";
}

}  // namespace
}  // namespace ternd::telemetry
