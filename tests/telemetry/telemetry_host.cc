// A process that runs what the daemon runs for telemetry: an sd-event loop,
// a real MqttSession, a Registry and a TelemetryAgent, so integration tests
// can start, stop and SIGKILL it.
//
// Usage: telemetry_host --port N --ca FILE --state-dir DIR --device ID
//                       [--prefix P] [--interval-ms N] [--max-bytes N]
//                       [--textfile FILE] [--reconnect-max-ms N]
//                       [--flush-every-ms N --flush-count N]
// --flush-every-ms/--flush-count: the host itself makes N batches (calls
// Flush()) at that period, then stops making them; with a long
// --interval-ms this gives a test an exact number of batches.
// SIGTERM: publishes the offline presence, stops the session and exits 0.
// Every interval it also records a few fake requests so batches carry
// counters and a histogram that change.
#include <systemd/sd-event.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/log.h"
#include "net/mqtt_session.h"
#include "telemetry/agent.h"

namespace {

struct Host {
  ternd::telemetry::Registry registry;
  std::unique_ptr<ternd::net::MqttSession> session;
  std::unique_ptr<ternd::telemetry::TelemetryAgent> agent;
  ternd::telemetry::Counter* requests = nullptr;
  ternd::telemetry::Histogram* latency = nullptr;
  sd_event_source* traffic = nullptr;
  uint64_t tick = 0;
  int flush_every_ms = 0;
  int flushes_left = 0;
};

int OnFlush(sd_event_source* s, uint64_t, void* p) {
  auto* h = static_cast<Host*>(p);
  ternd::Status st = h->agent->Flush();
  if (!st.ok()) std::fprintf(stderr, "telemetry_host: %s\n", st.message());
  if (--h->flushes_left > 0) {
    sd_event_source_set_time_relative(s, uint64_t(h->flush_every_ms) * 1000);
    sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  }
  return 0;
}

int OnTraffic(sd_event_source* s, uint64_t, void* p) {
  auto* h = static_cast<Host*>(p);
  ++h->tick;
  h->requests->Add(3);
  for (int i = 0; i < 3; ++i)
    h->latency->Record(100000 + 1000 * int64_t(h->tick));
  sd_event_source_set_time_relative(s, 50 * 1000);
  sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  return 0;
}

int OnTerm(sd_event_source*, const signalfd_siginfo*, void* p) {
  auto* h = static_cast<Host*>(p);
  h->agent->Shutdown();
  sd_event_exit(sd_event_source_get_event(h->traffic), 0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string ca, state_dir, device, prefix = "ternd/v1/test", textfile;
  int port = 0, interval_ms = 200, reconnect_max_ms = 1000;
  long long max_bytes = 16 << 20;
  int flush_every_ms = 0, flush_count = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--port")
      port = std::atoi(v.c_str());
    else if (k == "--ca")
      ca = v;
    else if (k == "--state-dir")
      state_dir = v;
    else if (k == "--device")
      device = v;
    else if (k == "--prefix")
      prefix = v;
    else if (k == "--interval-ms")
      interval_ms = std::atoi(v.c_str());
    else if (k == "--max-bytes")
      max_bytes = std::atoll(v.c_str());
    else if (k == "--textfile")
      textfile = v;
    else if (k == "--reconnect-max-ms")
      reconnect_max_ms = std::atoi(v.c_str());
    else if (k == "--flush-every-ms")
      flush_every_ms = std::atoi(v.c_str());
    else if (k == "--flush-count")
      flush_count = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "telemetry_host: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  ternd::SetLogLevel(ternd::LogLevel::kDebug);
  sd_event* loop = nullptr;
  if (sd_event_default(&loop) < 0) return 1;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, nullptr);

  Host h;
  ternd::net::MqttOptions mo;
  mo.host = "127.0.0.1";
  mo.port = port;
  mo.client_id = device;
  mo.ca_file = ca;
  mo.reconnect_min_ms = 100;
  mo.reconnect_max_ms = reconnect_max_ms;
  auto session = ternd::net::MqttSession::Create(loop, mo);
  if (!session.ok()) {
    std::fprintf(stderr, "telemetry_host: %s\n", session.status().message());
    return 1;
  }
  h.session = std::move(*session);
  h.requests =
      h.registry.AddCounter("ternd_requests_total", "Requests", "requests",
                            {{"call", "infer"}, {"status", "OK"}});
  h.latency = h.registry.AddLatencyHistogram("ternd_request_compute_seconds",
                                             "Compute", {{"call", "infer"}});

  ternd::telemetry::TelemetryOptions to;
  to.interval = std::chrono::milliseconds(interval_ms);
  to.topic_prefix = prefix;
  to.outbox.max_bytes = static_cast<uint64_t>(max_bytes);
  to.textfile_path = textfile;
  to.retry_min = std::chrono::milliseconds(200);
  to.retry_max = std::chrono::milliseconds(1000);
  ternd::telemetry::DeviceIdentity id;
  id.device_id = device;
  id.daemon_version = "0.1.0-test";
  id.groups = {"test-group"};
  id.capabilities = {"infer", "telemetry"};
  auto agent = ternd::telemetry::TelemetryAgent::Create(
      loop, h.session.get(), &h.registry, state_dir, id, to);
  if (!agent.ok()) {
    std::fprintf(stderr, "telemetry_host: %s\n", agent.status().message());
    return 1;
  }
  h.agent = std::move(*agent);
  h.agent->SetModel("digits", "3", "avx2");
  sd_event_add_time_relative(loop, &h.traffic, CLOCK_MONOTONIC, 50 * 1000, 0,
                             &OnTraffic, &h);
  sd_event_add_signal(loop, nullptr, SIGTERM, &OnTerm, &h);
  h.flush_every_ms = flush_every_ms;
  h.flushes_left = flush_count;
  if (flush_every_ms > 0 && flush_count > 0) {
    sd_event_add_time_relative(loop, nullptr, CLOCK_MONOTONIC,
                               uint64_t(flush_every_ms) * 1000, 0, &OnFlush,
                               &h);
  }
  h.session->Start();
  std::printf("epoch %llu\n",
              static_cast<unsigned long long>(h.agent->boot_epoch()));
  std::fflush(stdout);
  const int r = sd_event_loop(loop);
  h.agent.reset();
  h.session.reset();
  sd_event_source_disable_unref(h.traffic);
  sd_event_unref(loop);
  return r < 0 ? 1 : 0;
}
