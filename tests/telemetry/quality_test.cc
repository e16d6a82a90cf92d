// Model-quality accumulators (telemetry/quality.h), the batch's quality
// section (schema 2) and the fleet's per-version comparison
// (telemetry/fleet_quality.h).
#include "telemetry/quality.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "telemetry/batch.h"
#include "telemetry/exposition.h"
#include "telemetry/fleet_quality.h"

namespace ternd::telemetry {
namespace {

const MetricSnapshot* Find(const std::vector<MetricSnapshot>& all,
                           const std::string& name, const Labels& has) {
  for (const MetricSnapshot& m : all) {
    if (m.name != name) continue;
    bool match = true;
    for (const auto& l : has) {
      bool found = false;
      for (const auto& ml : m.labels) found |= ml == l;
      match &= found;
    }
    if (match) return &m;
  }
  return nullptr;
}

TEST(QualityTest, ClassifyProbabilitiesAndLogits) {
  double conf;
  const float probs[] = {0.1f, 0.6f, 0.3f};
  EXPECT_EQ(ModelQualityStats::Classify(probs, 3, &conf), 1u);
  EXPECT_NEAR(conf, 0.6, 1e-6);
  // Logits: softmax max = 1 / (1 + e^-1 + e^-2).
  const float logits[] = {3.0f, 2.0f, 1.0f};
  EXPECT_EQ(ModelQualityStats::Classify(logits, 3, &conf), 0u);
  EXPECT_NEAR(conf, 1.0 / (1.0 + std::exp(-1.0) + std::exp(-2.0)), 1e-9);
  // In [0, 1] but not summing to 1: logits too.
  const float small[] = {0.2f, 0.2f, 0.9f};
  EXPECT_EQ(ModelQualityStats::Classify(small, 3, &conf), 2u);
  EXPECT_NEAR(conf, std::exp(0.9) / (2 * std::exp(0.2) + std::exp(0.9)), 1e-6);
  // Ties: the first.
  const float tie[] = {0.5f, 0.5f};
  EXPECT_EQ(ModelQualityStats::Classify(tie, 2, &conf), 0u);
  const float row[] = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(ModelQualityStats::Norm(row, 2), 5.0);
}

TEST(QualityTest, ClassCountsConfidenceAndOther) {
  Registry r;
  ModelQualityStats::Shape s;
  s.model = "m";
  s.version = "3";
  s.classes = 70;  // 64 counted, 6 in "other"
  ModelQualityStats q(&r, s);
  std::vector<float> rows(3 * 70, 0.0f);
  rows[0 * 70 + 5] = 1.0f;   // class 5, probability 1
  rows[1 * 70 + 5] = 1.0f;   // class 5
  rows[2 * 70 + 66] = 1.0f;  // class 66: other
  q.Record(0, 3, nullptr, 0, rows.data(), 70);
  q.Record(0, 1, nullptr, 0, rows.data() + 70, 70);
  const auto all = r.Snapshot();
  const Labels mv = {{"model", "m"}, {"version", "3"}};
  EXPECT_EQ(Find(all, "ternd_model_requests_total", mv)->value, 2);
  EXPECT_EQ(Find(all, "ternd_model_rows_total", mv)->value, 4);
  EXPECT_EQ(Find(all, "ternd_model_class_total", {{"class", "5"}})->value, 3);
  EXPECT_EQ(Find(all, "ternd_model_class_total", {{"class", "0"}})->value, 0);
  EXPECT_EQ(Find(all, "ternd_model_class_total", {{"class", "other"}})->value,
            1);
  EXPECT_EQ(Find(all, "ternd_model_class_total", {{"class", "64"}}), nullptr);
  const MetricSnapshot* c = Find(all, "ternd_model_confidence", mv);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->histogram.count, 4u);
  EXPECT_NEAR(double(c->histogram.sum) * c->scale, 4.0, 1e-9);
  EXPECT_EQ(Find(all, "ternd_model_output_norm", mv), nullptr);
  EXPECT_EQ(Find(all, "ternd_model_input_mean", mv), nullptr);  // no inputs
}

TEST(QualityTest, InputMeanAndVarianceMergeSlotsWithoutCancellation) {
  Registry r;
  ModelQualityStats::Shape s;
  s.model = "m";
  s.version = "1";
  s.classes = 0;
  s.input_features = 70;  // statistics for the first 64
  s.slots = 3;
  ModelQualityStats q(&r, s);
  EXPECT_EQ(q.input_features(), 64u);
  std::mt19937 rng(4);
  // Feature f: mean 1e6 + f, standard deviation 1 + f / 10.
  std::vector<std::normal_distribution<double>> dist;
  for (int f = 0; f < 70; ++f) dist.emplace_back(1e6 + f, 1 + f / 10.0);
  std::vector<std::vector<double>> seen(70);
  const float out[2] = {0, 0};
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> inputs(3);
  for (int slot = 0; slot < 3; ++slot) {
    for (int row = 0; row < 200 * (slot + 1); ++row) {
      for (int f = 0; f < 70; ++f) {
        const float v = float(dist[f](rng));
        inputs[slot].push_back(v);
        seen[f].push_back(v);
      }
    }
  }
  for (int slot = 0; slot < 3; ++slot) {
    threads.emplace_back([&, slot] {
      const int rows = 200 * (slot + 1);
      for (int row = 0; row < rows; row += 4) {
        q.Record(slot, 4, inputs[slot].data() + size_t(row) * 70, 70, out, 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto all = r.Snapshot();
  for (int f = 0; f < 64; ++f) {
    double mean = 0, var = 0;
    for (double v : seen[f]) mean += v;
    mean /= double(seen[f].size());
    for (double v : seen[f]) var += (v - mean) * (v - mean);
    var /= double(seen[f].size());
    const Labels fl = {{"feature", std::to_string(f)}};
    EXPECT_NEAR(Find(all, "ternd_model_input_mean", fl)->value, mean, 1e-6)
        << f;
    EXPECT_NEAR(Find(all, "ternd_model_input_variance", fl)->value, var,
                var * 1e-6)
        << f;
  }
  EXPECT_EQ(Find(all, "ternd_model_input_mean", {{"feature", "64"}}), nullptr);
  const MetricSnapshot* norm =
      Find(all, "ternd_model_output_norm", {{"version", "1"}});
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->histogram.count, 1200u);
}

TEST(QualityTest, InputStatisticsOff) {
  Registry r;
  ModelQualityStats::Shape s;
  s.model = "m";
  s.version = "1";
  s.input_features = 8;
  s.input_stats = false;
  ModelQualityStats q(&r, s);
  EXPECT_EQ(q.input_features(), 0u);
  const float in[8] = {}, out[2] = {1, 1};
  q.Record(0, 1, in, 8, out, 2);
  EXPECT_EQ(Find(r.Snapshot(), "ternd_model_input_mean", {}), nullptr);
}

TEST(QualityTest, PrometheusNamesAndTypes) {
  Registry r;
  ModelQualityStats::Shape s;
  s.model = "m";
  s.version = "2";
  s.classes = 2;
  s.input_features = 1;
  ModelQualityStats q(&r, s);
  const float in[1] = {2}, out[2] = {0.25f, 0.75f};
  q.Record(0, 1, in, 1, out, 2);
  const std::string text = FormatPrometheus(r.Snapshot());
  EXPECT_NE(text.find("# TYPE ternd_model_class_total counter"),
            std::string::npos);
  EXPECT_NE(text.find("ternd_model_class_total{model=\"m\",version=\"2\","
                      "class=\"1\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE ternd_model_confidence histogram"),
            std::string::npos);
  EXPECT_NE(text.find("ternd_model_input_mean{model=\"m\",version=\"2\","
                      "feature=\"0\"} 2"),
            std::string::npos)
      << text;
}

TEST(QualityTest, TotalVariation) {
  EXPECT_DOUBLE_EQ(TotalVariation({1, 1}, {2, 2}), 0.0);
  EXPECT_DOUBLE_EQ(TotalVariation({1, 0}, {0, 1}), 1.0);
  EXPECT_DOUBLE_EQ(TotalVariation({3, 1}, {1, 1}), 0.25);
  EXPECT_DOUBLE_EQ(TotalVariation({1}, {1, 1}), 0.5);  // missing counts 0
  EXPECT_DOUBLE_EQ(TotalVariation({}, {1}), 0.0);
  EXPECT_DOUBLE_EQ(ClassDistance({1, 1}, 2, {2, 2}, 0), 0.5);
}

TEST(QualityBatchTest, QualitySeriesGoToTheQualitySection) {
  Registry r;
  r.AddCounter("ternd_requests_total", "r", "requests", {{"call", "infer"}})
      ->Add(5);
  ModelQualityStats::Shape s;
  s.model = "m";
  s.version = "7";
  s.classes = 3;
  s.input_features = 2;
  ModelQualityStats q(&r, s);
  ModelQualityStats::Shape idle = s;
  idle.version = "8";  // loaded, never answered: left out
  ModelQualityStats q8(&r, idle);
  const float in[4] = {1, 2, 3, 4};
  const float out[6] = {0.7f, 0.2f, 0.1f, 0.1f, 0.1f, 0.8f};
  q.Record(0, 2, in, 2, out, 3);
  r.AddGauge("ternd_shadow_agreement", "a", "1",
             {{"model", "m"}, {"version", "7"}})
      ->Set(0.75);
  TelemetryBatch b;
  FillBatch(BatchHeader{}, r.Snapshot(), &b);
  EXPECT_EQ(b.schema_version(), 2u);
  for (const Metric& m : b.metrics()) {
    EXPECT_FALSE(IsQualitySeries(m.name())) << m.name();
  }
  EXPECT_EQ(b.metrics_size(), 1);
  ASSERT_EQ(b.quality_size(), 1);
  const ModelQuality& mq = b.quality(0);
  EXPECT_EQ(mq.model(), "m");
  EXPECT_EQ(mq.version(), "7");
  EXPECT_EQ(mq.requests(), 1u);
  EXPECT_EQ(mq.rows(), 2u);
  ASSERT_EQ(mq.class_count_size(), 3);
  EXPECT_EQ(mq.class_count(0), 1u);
  EXPECT_EQ(mq.class_count(1), 0u);
  EXPECT_EQ(mq.class_count(2), 1u);
  EXPECT_EQ(mq.confidence().count(), 2u);
  EXPECT_NEAR(mq.confidence().sum(), 1.5, 1e-5);
  ASSERT_EQ(mq.input_mean_size(), 2);
  EXPECT_DOUBLE_EQ(mq.input_mean(0), 2);
  EXPECT_DOUBLE_EQ(mq.input_mean(1), 3);
  EXPECT_DOUBLE_EQ(mq.input_variance(0), 1);
  EXPECT_TRUE(mq.has_shadow_agreement());
  EXPECT_DOUBLE_EQ(mq.shadow_agreement(), 0.75);

  // A schema 1 batch (no quality field) still decodes; a reader of schema 1
  // skips field 11 of a schema 2 batch (unknown fields).
  TelemetryBatch old;
  old.set_schema_version(1);
  old.set_sequence(4);
  BatchCodec codec;
  Result<std::string> payload = codec.Encode(old);
  ASSERT_TRUE(payload.ok());
  Result<TelemetryBatch> back = codec.Decode(*payload);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->quality_size(), 0);
  TelemetryBatch v1_reader;  // parses only the fields it knows
  v1_reader.ParseFromString(b.SerializeAsString());
  v1_reader.clear_quality();
  EXPECT_EQ(v1_reader.metrics_size(), 1);
}

// The bound docs/telemetry.md gives: a version's entry stays under 4 KiB
// of protobuf even with every class, every feature and a confidence spread
// over every bucket it can reach.
TEST(QualityBatchTest, AVersionsEntryIsBounded) {
  Registry r;
  ModelQualityStats::Shape s;
  s.model = "a-model-name-of-some-length";
  s.version = "18446744073709551615";
  s.classes = 200;
  s.input_features = 1000;
  ModelQualityStats q(&r, s);
  std::vector<float> in(1000), row(200);
  std::mt19937 rng(1);
  for (int i = 0; i < 20000; ++i) {
    for (float& v : row) v = float(rng() % 1000) / 50;  // logits
    for (float& v : in) v = float(rng() % 1000) * 1e6f;
    q.Record(0, 1, in.data(), 1000, row.data(), 200);
  }
  TelemetryBatch b;
  FillBatch(BatchHeader{}, r.Snapshot(), &b);
  ASSERT_EQ(b.quality_size(), 1);
  EXPECT_EQ(b.quality(0).class_count_size(), 64);
  EXPECT_EQ(b.quality(0).input_mean_size(), 64);
  EXPECT_GT(b.quality(0).other_class(), 0u);
  EXPECT_LT(b.quality(0).ByteSizeLong(), 4096u) << b.quality(0).ByteSizeLong();
  RecordProperty("entry_bytes", std::to_string(b.quality(0).ByteSizeLong()));
}

ModelQuality Q(const std::string& version, uint64_t requests,
               std::vector<uint64_t> classes, double confidence_sum = 0) {
  ModelQuality q;
  q.set_model("m");
  q.set_version(version);
  q.set_requests(requests);
  uint64_t rows = 0;
  for (uint64_t c : classes) {
    q.add_class_count(c);
    rows += c;
  }
  q.set_rows(rows);
  q.mutable_confidence()->set_count(rows);
  q.mutable_confidence()->set_sum(confidence_sum);
  return q;
}

TelemetryBatch Batch(uint64_t epoch, uint64_t seq,
                     std::vector<ModelQuality> q) {
  TelemetryBatch b;
  b.set_schema_version(2);
  b.set_boot_epoch(epoch);
  b.set_sequence(seq);
  for (auto& e : q) *b.add_quality() = e;
  return b;
}

TEST(FleetQualityTest, LatestPerEpochSummedAcrossDevicesAndEpochs) {
  FleetQuality f;
  EXPECT_TRUE(f.Add("a", Batch(1, 1, {Q("1", 2, {2, 0})})));
  EXPECT_TRUE(f.Add("a", Batch(1, 3, {Q("1", 5, {4, 1}, 4.0)})));
  EXPECT_FALSE(f.Add("a", Batch(1, 2, {Q("1", 3, {3, 0})})));      // older
  EXPECT_TRUE(f.Add("a", Batch(2, 1, {Q("1", 1, {1, 0}, 1.0)})));  // reboot
  EXPECT_TRUE(f.Add("b", Batch(9, 1, {Q("1", 4, {0, 4}, 2.0)})));
  const auto rows = f.Rows(0.1);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].devices, 2u);
  EXPECT_EQ(rows[0].requests, 10u);
  EXPECT_EQ(rows[0].rows, 10u);
  EXPECT_EQ(rows[0].classes, (std::vector<uint64_t>{5, 5}));
  EXPECT_DOUBLE_EQ(rows[0].mean_confidence, 0.7);
  EXPECT_TRUE(rows[0].previous_version.empty());
  EXPECT_FALSE(rows[0].flagged);
}

TEST(FleetQualityTest, FlagsAMovedDistributionOnlyAboveTheThreshold) {
  FleetQuality f;
  // Versions 10, 2 and 3 (numeric order 2, 3, 10): 3 keeps 2's
  // distribution (distance 0.05), 10 moves (distance 0.5 from 3).
  f.Add("a", Batch(1, 1, {Q("2", 100, {50, 50})}));
  f.Add("b", Batch(1, 1, {Q("3", 100, {55, 45})}));
  f.Add("c", Batch(1, 1, {Q("10", 100, {5, 95})}));
  auto rows = f.Rows(0.1);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].version, "2");
  EXPECT_EQ(rows[1].version, "3");
  EXPECT_EQ(rows[2].version, "10");
  EXPECT_EQ(rows[1].previous_version, "2");
  EXPECT_NEAR(rows[1].distance, 0.05, 1e-12);
  EXPECT_FALSE(rows[1].flagged);
  EXPECT_EQ(rows[2].previous_version, "3");
  EXPECT_NEAR(rows[2].distance, 0.5, 1e-12);
  EXPECT_TRUE(rows[2].flagged);
  rows = f.Rows(0.6);  // nothing moved that far
  EXPECT_FALSE(rows[2].flagged);
  rows = f.Rows(0.01);  // both moved that far
  EXPECT_TRUE(rows[1].flagged);
  EXPECT_TRUE(rows[2].flagged);
}

}  // namespace
}  // namespace ternd::telemetry
