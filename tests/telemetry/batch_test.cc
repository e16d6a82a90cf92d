// Batches: a registry snapshot survives encode (protobuf + zstd) and decode;
// corrupt payloads are refused with a reason; dictionary frames need the
// dictionary.
#include "telemetry/batch.h"

#include <gtest/gtest.h>

#include <random>

namespace ternd::telemetry {
namespace {

Registry* FilledRegistry(Registry* r, int seed) {
  std::mt19937 rng(seed);
  r->AddCounter("ternd_requests_total", "Requests", "requests",
                {{"call", "infer"}, {"status", "OK"}})
      ->Add(1000 + rng() % 1000);
  r->AddGauge("ternd_queue_depth", "Queue", "requests")->Set(rng() % 10);
  Histogram* h = r->AddLatencyHistogram("ternd_compute_seconds", "Compute");
  for (int i = 0; i < 5000; ++i) h->Record(20000 + rng() % 200000);
  r->AddInfo("ternd_model_info", "Model")->Set({{"name", "digits"}});
  return r;
}

BatchHeader Header(uint64_t seq) {
  BatchHeader h;
  h.device_id = "dev-1";
  h.boot_epoch = 7;
  h.sequence = seq;
  h.start_unix_ms = 1800000000000;
  h.end_unix_ms = 1800000010000;
  h.uptime_ms = 12345;
  h.dropped_batches_total = 3;
  h.boot_id = "boot";
  return h;
}

TEST(BatchTest, RoundTripKeepsEveryValue) {
  Registry r;
  FilledRegistry(&r, 1);
  const auto snap = r.Snapshot();
  TelemetryBatch batch;
  FillBatch(Header(42), snap, &batch);
  BatchCodec codec;
  auto payload = codec.Encode(batch);
  ASSERT_TRUE(payload.ok()) << payload.status().message();
  EXPECT_LT(payload->size(), batch.ByteSizeLong());  // it compresses
  auto back = codec.Decode(*payload);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->device_id(), "dev-1");
  EXPECT_EQ(back->boot_epoch(), 7u);
  EXPECT_EQ(back->sequence(), 42u);
  EXPECT_EQ(back->dropped_batches_total(), 3u);
  EXPECT_EQ(back->end_unix_ms(), 1800000010000);
  ASSERT_EQ(back->metrics_size(), int(snap.size()));
  EXPECT_EQ(back->metrics(0).kind(), Metric::COUNTER);
  EXPECT_EQ(back->metrics(0).value(), snap[0].value);
  EXPECT_EQ(back->metrics(0).labels(1).value(), "OK");
  // The sparse histogram rebuilds the same buckets.
  const HistogramValue& hv = back->metrics(2).histogram();
  HistogramSnapshot rebuilt;
  for (int i = 0; i < hv.bucket_index_size(); ++i) {
    rebuilt.buckets[hv.bucket_index(i)] = hv.bucket_count(i);
  }
  EXPECT_EQ(rebuilt.buckets, snap[2].histogram.buckets);
  EXPECT_EQ(hv.count(), 5000u);
  EXPECT_NEAR(hv.p50(), snap[2].histogram.Percentile(0.5) * 1e-9, 1e-15);
  EXPECT_EQ(back->metrics(3).kind(), Metric::INFO);
}

TEST(BatchTest, CorruptPayloadsAreRefusedWithAReason) {
  BatchCodec codec;
  auto empty = codec.Decode("");
  ASSERT_FALSE(empty.ok());
  auto text = codec.Decode("hello, not zstd");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(std::string(text.status().message()).find("not a zstd frame"),
            std::string::npos)
      << text.status().message();
  Registry r;
  FilledRegistry(&r, 2);
  TelemetryBatch batch;
  FillBatch(Header(1), r.Snapshot(), &batch);
  auto payload = codec.Encode(batch);
  ASSERT_TRUE(payload.ok());
  auto cut = codec.Decode(payload->substr(0, payload->size() / 2));
  EXPECT_FALSE(cut.ok());
  // Valid zstd around bytes that are not a TelemetryBatch.
  auto junk = codec.Compress(std::string("\xff\xff\xff\xff\x0f", 5));
  ASSERT_TRUE(junk.ok());
  auto bad = codec.Decode(*junk);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("not a TelemetryBatch"),
            std::string::npos)
      << bad.status().message();
}

TEST(BatchTest, DictionaryFramesNeedTheirDictionary) {
  std::vector<std::string> samples;
  for (int i = 0; i < 200; ++i) {
    Registry r;
    FilledRegistry(&r, 100 + i);
    TelemetryBatch b;
    FillBatch(Header(i + 1), r.Snapshot(), &b);
    samples.push_back(b.SerializeAsString());
  }
  auto dict = TrainDictionary(samples, 16 * 1024);
  ASSERT_TRUE(dict.ok()) << dict.status().message();
  BatchCodec with;
  ASSERT_TRUE(with.UseDictionary(*dict).ok());
  auto payload = with.Compress(samples[0]);
  ASSERT_TRUE(payload.ok());
  auto same = with.Decompress(*payload);
  ASSERT_TRUE(same.ok()) << same.status().message();
  EXPECT_EQ(*same, samples[0]);
  BatchCodec without;
  auto refused = without.Decompress(*payload);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(refused.status().message()).find("dictionary"),
            std::string::npos);
  ASSERT_TRUE(without.AddDecodingDictionary(*dict).ok());
  EXPECT_TRUE(without.Decompress(*payload).ok());
  EXPECT_FALSE(with.UseDictionary("not a dictionary").ok());
}

}  // namespace
}  // namespace ternd::telemetry
