// Telemetry benchmarks (docs/performance.md, section "Telemetry"):
//
//   BM_RecordLatency      one Histogram::Record (target <= 20 ns), 1 and 2
//                         threads recording into the same histogram
//   BM_CounterAdd         one Counter::Add
//   BM_BatchEncodeAppend  snapshot of a daemon-like registry + protobuf +
//                         zstd + one outbox transaction (what every
//                         interval costs the loop)
//   BM_Compress/...       zstd on a serialized batch, without and with a
//                         trained dictionary; counters give the ratios
//   BM_OutboxCycle        append, read back and delete one batch (the
//                         sustained outbox throughput)
//   BM_QualityRecord/C/F/I  one request's model-quality record: a row of C
//                         class probabilities (C = 0: the norm of a 16-value
//                         row), F input features, input statistics on (I = 1)
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "telemetry/batch.h"
#include "telemetry/metrics.h"
#include "telemetry/outbox.h"
#include "telemetry/quality.h"
#include "telemetry/service_metrics.h"
#include "telemetry/system_probes.h"

namespace ternd::telemetry {
namespace {

std::string TempDirPath() {
  const char* base = std::getenv("TMPDIR");
  std::string t = std::string(base && *base ? base : "/tmp") +
                  "/ternd-telemetry-bench-XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) std::abort();
  return buf.data();
}

// The instruments the daemon registers (ServiceMetrics), with traffic on a
// few of the call x status counters as a busy device would have.
struct DaemonLikeRegistry {
  Registry registry;
  ServiceMetrics metrics{&registry,
                         {"infer", "generate", "model_info", "health", "stats",
                          "install", "update_status"}};
  std::mt19937 rng{1};

  DaemonLikeRegistry() {
    metrics.model->Set(
        {{"name", "digits"}, {"version", "12"}, {"kernel", "avx512vnni"}});
    metrics.update_state->Set({{"state", "active"}});
    metrics.arena_size_bytes->Set(64 << 20);
    Advance();
  }
  // One interval of traffic.
  void Advance() {
    for (size_t call : {0, 3, 4}) {
      metrics.Request(call, StatusCode::kOk)->Add(rng() % 5000);
    }
    metrics.Request(0, StatusCode::kInvalidArgument)->Add(rng() % 3);
    metrics.Request(0, StatusCode::kResourceExhausted)->Add(rng() % 2);
    for (int i = 0; i < 500; ++i) {
      metrics.queue_seconds(0)->Record(2000 + rng() % 200000);
      metrics.compute_seconds(0)->Record(20000 + rng() % 2000000);
    }
    metrics.inflight->Set(rng() % 8);
    metrics.queue_depth->Set(rng() % 8);
    metrics.connections->Set(3);
    metrics.connections_total->Add(rng() % 2);
    metrics.arena_used_bytes->Set(40 << 20);
  }
};

void BM_RecordLatency(benchmark::State& state) {
  static Registry* registry = new Registry();
  static Histogram* h =
      registry->AddLatencyHistogram("ternd_bench_seconds", "bench");
  std::vector<int64_t> values(4096);
  std::mt19937_64 rng(state.thread_index() + 1);
  for (int64_t& v : values) v = 1000 + int64_t(rng() % 10000000);
  size_t i = 0;
  for (auto _ : state) {
    h->Record(values[i++ & 4095]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RecordLatency)->Threads(1)->Threads(2);

void BM_CounterAdd(benchmark::State& state) {
  static Registry* registry = new Registry();
  static Counter* c = registry->AddCounter("ternd_bench_total", "b", "1");
  for (auto _ : state) c->Add();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterAdd)->Threads(1)->Threads(2);

void BM_BatchEncodeAppend(benchmark::State& state) {
  DaemonLikeRegistry d;
  SystemProbes probes(&d.registry, ProbeRoots{}, "/tmp");
  probes.Sample();
  const std::string dir = TempDirPath();
  auto box = Outbox::Open(dir + "/telemetry.db", OutboxLimits{});
  if (!box.ok()) {
    state.SkipWithError(box.status().message());
    return;
  }
  BatchCodec codec;
  TelemetryBatch batch;
  uint64_t seq = 0, raw = 0, compressed = 0;
  for (auto _ : state) {
    BatchHeader h;
    h.device_id = "bench-device-0001";
    h.boot_epoch = 1;
    h.sequence = ++seq;
    h.end_unix_ms = 1800000000000 + int64_t(seq) * 10000;
    h.start_unix_ms = h.end_unix_ms - 10000;
    FillBatch(h, d.registry.Snapshot(), &batch);
    auto payload = codec.Encode(batch);
    if (!payload.ok() ||
        !(*box)->Append(1, seq, h.end_unix_ms, *payload).ok()) {
      state.SkipWithError("encode or append failed");
      break;
    }
    raw += batch.ByteSizeLong();
    compressed += payload->size();
  }
  state.counters["raw_B"] = double(raw) / double(seq);
  state.counters["zstd_B"] = double(compressed) / double(seq);
  state.counters["metrics"] = batch.metrics_size();
  state.SetItemsProcessed(state.iterations());
  box->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_BatchEncodeAppend)->Unit(benchmark::kMicrosecond);

// The parts of BM_BatchEncodeAppend: registry snapshot alone, and
// snapshot + protobuf + zstd without the outbox.
void BM_Snapshot(benchmark::State& state) {
  DaemonLikeRegistry d;
  for (auto _ : state) benchmark::DoNotOptimize(d.registry.Snapshot());
}
BENCHMARK(BM_Snapshot)->Unit(benchmark::kMicrosecond);

void BM_BatchEncode(benchmark::State& state) {
  DaemonLikeRegistry d;
  BatchCodec codec;
  TelemetryBatch batch;
  BatchHeader h;
  h.device_id = "bench-device-0001";
  for (auto _ : state) {
    ++h.sequence;
    FillBatch(h, d.registry.Snapshot(), &batch);
    benchmark::DoNotOptimize(codec.Encode(batch));
  }
}
BENCHMARK(BM_BatchEncode)->Unit(benchmark::kMicrosecond);

// Serialized batches of consecutive intervals (training and test sets come
// from different devices' registries: different seeds).
std::vector<std::string> Batches(int n, uint32_t seed) {
  DaemonLikeRegistry d;
  d.rng.seed(seed);
  std::vector<std::string> out;
  TelemetryBatch batch;
  for (int i = 0; i < n; ++i) {
    d.Advance();
    BatchHeader h;
    h.device_id = "device-" + std::to_string(seed);
    h.boot_epoch = seed;
    h.sequence = uint64_t(i) + 1;
    h.end_unix_ms = 1800000000000 + i * 10000;
    FillBatch(h, d.registry.Snapshot(), &batch);
    out.push_back(batch.SerializeAsString());
  }
  return out;
}

void BM_Compress(benchmark::State& state) {
  const bool use_dict = state.range(0) != 0;
  const int level = int(state.range(1));
  std::vector<std::string> train;
  for (uint32_t s = 10; s < 20; ++s) {
    for (std::string& b : Batches(50, s)) train.push_back(std::move(b));
  }
  const std::vector<std::string> test = Batches(50, 99);
  BatchCodec codec(level);
  if (use_dict) {
    auto dict = TrainDictionary(train, 16 * 1024);
    if (!dict.ok() || !codec.UseDictionary(*dict).ok()) {
      state.SkipWithError("dictionary training failed");
      return;
    }
    state.counters["dict_B"] = double(dict->size());
  }
  uint64_t raw = 0, out = 0;
  size_t i = 0;
  for (auto _ : state) {
    const std::string& b = test[i++ % test.size()];
    auto c = codec.Compress(b);
    raw += b.size();
    out += c->size();
  }
  state.counters["ratio"] = double(raw) / double(out);
  state.counters["raw_B"] = double(raw) / double(state.iterations());
  state.counters["zstd_B"] = double(out) / double(state.iterations());
}
BENCHMARK(BM_Compress)
    ->ArgNames({"dict", "level"})
    ->Args({0, 3})
    ->Args({1, 3})
    ->Args({0, 19})
    ->Args({1, 19})
    ->Unit(benchmark::kMicrosecond);

void BM_OutboxCycle(benchmark::State& state) {
  const std::string dir = TempDirPath();
  auto box = Outbox::Open(dir + "/telemetry.db", OutboxLimits{});
  if (!box.ok()) {
    state.SkipWithError(box.status().message());
    return;
  }
  const std::string payload(size_t(state.range(0)), 'x');
  uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    auto a = (*box)->Append(1, seq, 1800000000000, payload);
    auto rows = (*box)->ReadAfter(0, 1);
    if (!a.ok() || !rows.ok() || rows->empty() ||
        !(*box)->Delete(rows->front().id).ok()) {
      state.SkipWithError("outbox cycle failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
  box->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_OutboxCycle)->Arg(2048)->Unit(benchmark::kMicrosecond);

void BM_QualityRecord(benchmark::State& state) {
  Registry registry;
  ModelQualityStats::Shape shape;
  shape.model = "bench";
  shape.version = "1";
  shape.classes = uint32_t(state.range(0));
  shape.input_features = uint32_t(state.range(1));
  shape.input_stats = state.range(2) != 0;
  ModelQualityStats q(&registry, shape);
  const uint32_t out_n = shape.classes ? shape.classes : 16;
  std::vector<float> out(out_n, 0.5f / float(out_n));
  out[1] += 0.5f;  // a probability row, class 1
  std::vector<float> in(size_t(std::max<int64_t>(state.range(1), 1)));
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) * 0.25f;
  for (auto _ : state) {
    q.Record(0, 1, in.data(), uint32_t(in.size()), out.data(), out_n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_QualityRecord)
    ->ArgNames({"classes", "features", "inputs"})
    ->Args({4, 16, 1})  // the demo model
    ->Args({4, 16, 0})
    ->Args({10, 64, 1})  // digits: 784 inputs, the first 64 tracked
    ->Args({10, 64, 0})
    ->Args({0, 16, 1});  // not a classifier: output norm

}  // namespace
}  // namespace ternd::telemetry

BENCHMARK_MAIN();
