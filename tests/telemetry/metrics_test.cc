// The registry's instruments: histogram bucket bounds, percentiles against
// exact percentiles of the sorted samples, merging, and concurrent
// recording from several threads.
#include "telemetry/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "telemetry/service_metrics.h"

namespace ternd::telemetry {
namespace {

using Snap = HistogramSnapshot;

std::vector<int64_t> LogUniform(int n, double lo, double hi, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(std::log(lo), std::log(hi));
  std::vector<int64_t> v(n);
  for (int64_t& x : v) x = static_cast<int64_t>(std::exp(u(rng)));
  return v;
}

TEST(HistogramTest, EveryValueLiesInItsBucket) {
  std::vector<uint64_t> values = {
      0,  1,  2,  3,    4,    5,    7,    8,         9,
      15, 16, 17, 1000, 1023, 1024, 1025, 123456789, (uint64_t{1} << 41) - 1};
  for (int64_t v : LogUniform(20000, 1, 1e12, 1)) values.push_back(v);
  for (uint64_t v : values) {
    const int b = Snap::BucketOf(v);
    ASSERT_GE(b, 0);
    ASSERT_LT(b, Snap::kBuckets);
    EXPECT_LE(Snap::BucketLow(b), double(v)) << "value " << v;
    EXPECT_LT(double(v), Snap::BucketHigh(b)) << "value " << v;
    if (v >= 8) {
      // Width at most 1/8 of the lower bound.
      EXPECT_LE(Snap::BucketHigh(b) - Snap::BucketLow(b),
                Snap::BucketLow(b) / 8 + 1e-9)
          << "value " << v;
    }
  }
  // Beyond the range: the last bucket.
  EXPECT_EQ(Snap::BucketOf(uint64_t{1} << 50), Snap::kBuckets - 1);
  // Buckets are contiguous.
  for (int b = 1; b < Snap::kBuckets; ++b) {
    EXPECT_DOUBLE_EQ(Snap::BucketHigh(b - 1), Snap::BucketLow(b)) << b;
  }
}

TEST(HistogramTest, PercentilesMatchSortedSamplesWithinTheBucketBound) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    Histogram h(1e-9);
    std::vector<int64_t> samples = LogUniform(50000, 200, 2e9, seed);
    for (int64_t s : samples) h.Record(s);
    std::sort(samples.begin(), samples.end());
    const Snap snap = h.Snapshot();
    ASSERT_EQ(snap.count, samples.size());
    uint64_t sum = 0;
    for (int64_t s : samples) sum += s;
    EXPECT_EQ(snap.sum, sum);
    for (double q : {0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999,
                     0.9999, 1.0}) {
      const size_t rank =
          std::max<size_t>(1, size_t(std::ceil(q * double(samples.size()))));
      const double exact = double(samples[rank - 1]);
      const double est = snap.Percentile(q);
      const int b = Snap::BucketOf(samples[rank - 1]);
      EXPECT_GE(est, Snap::BucketLow(b)) << "q=" << q;
      EXPECT_LT(est, Snap::BucketHigh(b)) << "q=" << q;
      EXPECT_LE(std::fabs(est - exact) / exact, 0.125)
          << "q=" << q << " exact " << exact << " estimate " << est;
    }
  }
}

TEST(HistogramTest, EmptyAndNegative) {
  Histogram h(1);
  EXPECT_EQ(h.Snapshot().Percentile(0.5), 0);
  h.Record(-5);
  const Snap s = h.Snapshot();
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.buckets[0], 1u);
  EXPECT_EQ(s.sum, 0u);
}

TEST(HistogramTest, MergeEqualsRecordingEverythingInOne) {
  Histogram a(1e-9), b(1e-9), all(1e-9);
  for (int64_t v : LogUniform(10000, 1e3, 1e6, 7)) {
    a.Record(v);
    all.Record(v);
  }
  for (int64_t v : LogUniform(10000, 1e5, 1e9, 8)) {
    b.Record(v);
    all.Record(v);
  }
  Snap merged = a.Snapshot();
  merged.Merge(b.Snapshot());
  const Snap expect = all.Snapshot();
  EXPECT_EQ(merged.buckets, expect.buckets);
  EXPECT_EQ(merged.count, expect.count);
  EXPECT_EQ(merged.sum, expect.sum);
  for (double q : {0.1, 0.5, 0.99}) {
    EXPECT_EQ(merged.Percentile(q), expect.Percentile(q));
  }
  // The merged median lies between the parts' medians.
  EXPECT_GT(merged.Percentile(0.5), a.Snapshot().Percentile(0.5));
  EXPECT_LT(merged.Percentile(0.5), b.Snapshot().Percentile(0.5));
}

TEST(HistogramTest, CountBelowPowersOfTwo) {
  Histogram h(1);
  for (int64_t v : {1000, 1023, 1024, 1025, 4000, 5000}) h.Record(v);
  const Snap s = h.Snapshot();
  EXPECT_EQ(s.CountBelow(1024), 2u);  // 1000, 1023
  EXPECT_EQ(s.CountBelow(2048), 4u);
  EXPECT_EQ(s.CountBelow(4096), 5u);
  EXPECT_EQ(s.CountBelow(8192), 6u);
}

TEST(RegistryTest, ConcurrentRecordingLosesNothing) {
  Registry r;
  Counter* c = r.AddCounter("ternd_test_total", "test", "1");
  Histogram* h = r.AddLatencyHistogram("ternd_test_seconds", "test");
  Gauge* g = r.AddGauge("ternd_test_inflight", "test", "1");
  constexpr int kThreads = 12;  // more than kShards: shards are shared
  constexpr int kPerThread = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c->Add();
        h->Record(1000 + t);
        g->Add(1);
        g->Add(-1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->Value(), uint64_t{kThreads} * kPerThread);
  const Snap s = h->Snapshot();
  EXPECT_EQ(s.count, uint64_t{kThreads} * kPerThread);
  uint64_t sum = 0;
  for (int t = 0; t < kThreads; ++t) sum += uint64_t(1000 + t) * kPerThread;
  EXPECT_EQ(s.sum, sum);
  EXPECT_EQ(g->Value(), 0);
}

TEST(RegistryTest, SeriesAreFoundAgainByNameAndLabels) {
  Registry r;
  Counter* ok = r.AddCounter("ternd_requests_total", "Requests", "requests",
                             {{"call", "infer"}, {"status", "OK"}});
  Counter* bad = r.AddCounter("ternd_requests_total", "Requests", "requests",
                              {{"call", "infer"}, {"status", "INTERNAL"}});
  EXPECT_NE(ok, bad);
  EXPECT_EQ(ok, r.AddCounter("ternd_requests_total", "Requests", "requests",
                             {{"call", "infer"}, {"status", "OK"}}));
  ok->Add(3);
  bad->Add(1);
  Info* model = r.AddInfo("ternd_model_info", "Model");
  model->Set({{"name", "digits"}, {"version", "3"}});
  r.AddInfo("ternd_update_state_info", "never set: not reported");
  const auto snap = r.Snapshot();
  ASSERT_EQ(snap.size(), 3u);
  EXPECT_EQ(snap[0].value, 3);
  EXPECT_EQ(snap[1].value, 1);
  EXPECT_EQ(snap[2].kind, MetricKind::kInfo);
  EXPECT_EQ(snap[2].labels, (Labels{{"name", "digits"}, {"version", "3"}}));
}

TEST(ServiceMetricsTest, EveryCallAndStatusHasItsSeries) {
  Registry r;
  ServiceMetrics m(&r, {"infer", "health"});
  m.Request(1, StatusCode::kUnavailable)->Add(4);
  m.Request(0, StatusCode::kOk)->Add(1);
  m.compute_seconds(1)->Record(5000);
  int requests = 0;
  for (const MetricSnapshot& s : r.Snapshot()) {
    if (s.name == "ternd_requests_total") {
      ++requests;
      const Labels want_health = {{"call", "health"},
                                  {"status", "UNAVAILABLE"}};
      const Labels want_infer = {{"call", "infer"}, {"status", "OK"}};
      const double want = s.labels == want_health  ? 4
                          : s.labels == want_infer ? 1
                                                   : 0;
      EXPECT_EQ(s.value, want) << s.labels[0].second << s.labels[1].second;
    }
    if (s.name == "ternd_request_compute_seconds") {
      EXPECT_EQ(s.histogram.count, s.labels[0].second == "health" ? 1u : 0u);
    }
  }
  EXPECT_EQ(requests, 2 * ServiceMetrics::kStatusCodes);
}

}  // namespace
}  // namespace ternd::telemetry
