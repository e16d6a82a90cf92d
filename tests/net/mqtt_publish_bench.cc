// MQTT publish cost through MqttSession: a real mosquitto on loopback with
// TLS (test CA), QoS 1, the session on an sd-event loop in this thread.
//
//   BM_Qos1RoundTrip/<bytes>: one publish, turn the loop until its PUBACK
//     (latency of an acknowledged publish; the broker runs on the other core).
//   BM_Qos1Window/<max_inflight>: 500 publishes of 1 KiB with up to
//     max_inflight unacknowledged (what the telemetry outbox does); items/s
//     is the acknowledged publish rate.
//
// Run: build/tests/net/mqtt_publish_bench (docs/performance.md, "MQTT").
#include <benchmark/benchmark.h>
#include <systemd/sd-event.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "base/log.h"
#include "net/mqtt_session.h"
#include "tests/support/mosquitto_broker.h"

namespace ternd::net {
namespace {

using ternd::mqtt_testing::MakeTestCertificates;
using ternd::mqtt_testing::MosquittoBroker;
using ternd::mqtt_testing::MosquittoBrokerOptions;
using ternd::mqtt_testing::MqttTestDir;

// One broker for the whole run.
struct Broker {
  Broker() {
    SetLogLevel(LogLevel::kWarning);
    if (!MakeTestCertificates(dir.path()).ok()) std::abort();
    MosquittoBrokerOptions o;
    o.cert_dir = dir.path();
    // Per-message debug lines would measure the broker's logging.
    o.log_types = "error warning";
    o.extra_config = "set_tcp_nodelay true\n";
    broker = std::make_unique<MosquittoBroker>(o);
    const Status s = broker->Start();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.message());
      std::abort();
    }
  }
  MqttTestDir dir;
  std::unique_ptr<MosquittoBroker> broker;
};

Broker& SharedBroker() {
  static Broker* broker = new Broker();
  return *broker;
}

struct Session {
  explicit Session(uint32_t max_inflight) {
    sd_event_new(&loop);
    Broker& b = SharedBroker();
    MqttOptions o;
    o.host = "127.0.0.1";
    o.port = b.broker->port();
    o.client_id = "bench-device";
    o.ca_file = b.dir.File("ca.pem");
    o.max_inflight = max_inflight;
    auto s = MqttSession::Create(loop, o);
    if (!s.ok()) std::abort();
    session = std::move(*s);
    MqttCallbacks c;
    c.on_publish_done = [this](int, int reason) {
      ++acked;
      if (reason != 0 && reason != 0x10) ++refused;
    };
    session->AddObserver(std::move(c));
    session->Start();
    while (!session->connected()) sd_event_run(loop, 100 * 1000);
  }
  ~Session() {
    session.reset();
    sd_event_unref(loop);
  }
  sd_event* loop = nullptr;
  std::unique_ptr<MqttSession> session;
  uint64_t acked = 0;
  uint64_t refused = 0;
};

void BM_Qos1RoundTrip(benchmark::State& state) {
  Session s(16);
  const std::string payload(static_cast<size_t>(state.range(0)), 'x');
  for (auto _ : state) {
    const uint64_t before = s.acked;
    auto mid = s.session->Publish("bench/telemetry", payload, 1, false);
    if (!mid.ok()) {
      state.SkipWithError(mid.status().message());
      break;
    }
    while (s.acked == before) sd_event_run(s.loop, UINT64_MAX);
  }
  if (s.refused) state.SkipWithError("broker refused publishes");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Qos1RoundTrip)->Arg(64)->Arg(1024)->Arg(16384)->UseRealTime();

void BM_Qos1Window(benchmark::State& state) {
  const uint32_t window = static_cast<uint32_t>(state.range(0));
  constexpr int kBatch = 500;
  Session s(window);
  const std::string payload(1024, 'x');
  for (auto _ : state) {
    // One iteration: kBatch publishes, never more than `window` unacked.
    const uint64_t target = s.acked + kBatch;
    int sent = 0;
    while (s.acked < target) {
      while (sent < kBatch && s.session->inflight() < window) {
        auto mid = s.session->Publish("bench/telemetry", payload, 1, false);
        if (!mid.ok()) {
          state.SkipWithError(mid.status().message());
          return;
        }
        ++sent;
      }
      sd_event_run(s.loop, UINT64_MAX);
    }
  }
  if (s.refused) state.SkipWithError("broker refused publishes");
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(state.iterations() * kBatch * 1024);
}
BENCHMARK(BM_Qos1Window)->Arg(1)->Arg(16)->Arg(64)->UseRealTime();

}  // namespace
}  // namespace ternd::net

BENCHMARK_MAIN();
