// Does an update hurt the device's real job? The real daemon with the real
// peers on loopback (mosquitto with TLS carrying the signed release, nginx
// with HTTPS holding the artifact), one client doing Infer round trips on
// the served model, one request at a time:
//
//   idle     round trips for a few seconds with no update: p50/p99
//   update   round trips while a ~100 MiB artifact (a ternary model of
//            32 x 4096 x 4096 random weights, zstd) downloads, verifies and
//            stages in the background, until the update is staged (answers
//            computed by the new model do not count): p50/p99, and
//            p99_of_idle, the target's ratio (<= 1.25)
//   alone    the same update with no inference load: the daemon's
//            CPU-seconds for it (cpu_s_per_100MiB) and its wall time
//
// With TERND_BENCH_SLOW_FSYNC_MS=N the daemon runs on a slow disk: every
// fsync and fdatasync waits N ms first (bench/daemon/slow_fsync.c, an
// LD_PRELOAD shim), so whatever flushes on the serving loop shows in the
// round trips.
//
// Google Benchmark runs each phase once (Iterations(1)); run the binary
// several times and take medians (docs/performance.md, "Updates under
// load"). The peers and the daemon are started by the benchmark itself.
// Run: build/bench/daemon/update_load_bench
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/client/client.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/support/nginx_server.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon_testing {
namespace {

constexpr char kDevice[] = "bench-1";
constexpr char kPrefix[] = "ternd/v1/benchfleet";
constexpr auto kIdleTime = std::chrono::seconds(4);

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

TestModelSpec Served() {
  TestModelSpec s = FastModel();  // 16 -> 32 -> 4: microseconds a call
  s.name = "benchnet";
  return s;
}

// The update: same input as the served model, ~100 MiB of 2-bit weights.
TestModelSpec Big(uint64_t version) {
  TestModelSpec s = Served();
  s.version = version;
  s.hidden = 4096;
  s.layers = 32;  // 128 MiB of 2-bit codes: a ~100 MiB zstd artifact
  s.seed = static_cast<uint32_t>(version);
  return s;
}

struct Setup {
  TempDir dir;
  std::unique_ptr<mqtt_testing::MosquittoBroker> broker;
  std::unique_ptr<https_testing::NginxServer> nginx;
  std::unique_ptr<mqtt_testing::MqttProbe> probe;
  ::ternd::testing::TestFleet fleet{"benchfleet"};
  std::unique_ptr<DaemonProcess> daemon;
  std::string error;
  uint64_t artifact_bytes = 0;

  Setup() {
    if (Status st = Init(); !st.ok()) error = st.message();
  }

  Status Init() {
    Status s = mqtt_testing::MakeTestCertificates(dir.path(), kDevice);
    if (!s.ok()) return s;
    mqtt_testing::MosquittoBrokerOptions bo;
    bo.cert_dir = dir.path();
    broker = std::make_unique<mqtt_testing::MosquittoBroker>(bo);
    if (s = broker->Start(); !s.ok()) return s;
    https_testing::NginxOptions no;
    no.cert_dir = dir.path();
    nginx = std::make_unique<https_testing::NginxServer>(no);
    if (s = nginx->Start(); !s.ok()) return s;
    mqtt_testing::MqttProbeOptions po;
    po.port = broker->port();
    po.ca_file = dir.File("ca.pem");
    Result<std::unique_ptr<mqtt_testing::MqttProbe>> p =
        mqtt_testing::MqttProbe::Connect(po);
    if (!p.ok()) return p.status();
    probe = std::move(*p);
    if (s = WriteTestModel(Served(), dir.File("model.tern")); !s.ok()) {
      return s;
    }
    WriteText(dir.File("root.pb"), fleet.RootEnvelope(1));
    WriteText(dir.File("ternd.toml"),
              "[daemon]\nstate_directory = \"" + dir.path() +
                  "\"\n[server]\nsocket = \"" + dir.File("t.sock") +
                  "\"\n[runtime]\nmodel = \"" + dir.File("model.tern") +
                  "\"\nworkers = 2\narena_mb = 640\n[device]\nid = \"" +
                  kDevice +
                  "\"\nfleet = \"benchfleet\"\n[mqtt]\nbroker = \"127.0.0.1:" +
                  std::to_string(broker->port()) + "\"\nca_file = \"" +
                  dir.File("ca.pem") + "\"\n[ota]\nroot_file = \"" +
                  dir.File("root.pb") + "\"\nmax_artifact_mb = 256\n");
    DaemonOptions o;
    o.directory = dir.path();
    o.config_path = dir.File("ternd.toml");
    // A slow disk: every fsync/fdatasync of the daemon waits this long.
    if (const char* ms = getenv("TERND_BENCH_SLOW_FSYNC_MS")) {
      o.extra_env = {std::string("LD_PRELOAD=") + TERND_SLOW_FSYNC_PATH,
                     std::string("SLOW_FSYNC_MS=") + ms};
    }
    daemon = std::make_unique<DaemonProcess>(o);
    if (!daemon->WaitForNotify("READY=1", 30000)) {
      return Internal("the daemon did not start: %s", daemon->Log().c_str());
    }
    return Status::Ok();
  }

  // Version `version` of the big model for this device: its artifact on
  // nginx, and the signed release (what Publish sends).
  Result<std::string> Prepare(uint64_t version) {
    TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           BuildTestModel(Big(version)));
    ::ternd::testing::SignedRelease r =
        fleet.Release(std::string(bytes.begin(), bytes.end()), "benchnet",
                      version, version, kDevice, "", 1 << 20);
    const std::string name = "benchnet-" + std::to_string(version) + ".zst";
    TERND_RETURN_IF_ERROR(nginx->PutFile("files", name, r.artifact));
    artifact_bytes = r.artifact.size();
    r.release.clear_urls();
    r.release.add_urls(nginx->Url("files/" + name));
    return fleet.Sign(r.release);
  }

  Status Publish(const std::string& envelope) {
    TERND_ASSIGN_OR_RETURN(
        int mid, probe->Publish(std::string(kPrefix) + "/devices/" + kDevice +
                                    "/update/release",
                                envelope, 1, true));
    (void)mid;
    return Status::Ok();
  }
};

// Destroyed at exit, which stops the daemon, nginx and mosquitto.
Setup& Get() {
  static Setup s;
  return s;
}

wire::Request InferRequest() {
  wire::Request r;
  r.set_id(1);
  client::AddF32Input(r.mutable_infer(), "x", 1, 16, TestInput(Served(), 1, 3));
  return r;
}

// Round trips until `done()` says stop; samples of answers by version 1.
std::vector<int64_t> RoundTrips(client::Client* c,
                                const std::function<bool()>& done,
                                int64_t* errors) {
  const wire::Request request = InferRequest();
  std::vector<int64_t> samples;
  samples.reserve(1 << 20);
  while (!done()) {
    const int64_t t0 = NowNs();
    wire::Response r;
    if (!c->Send(request).ok() || !c->Receive(&r).ok()) {
      ++*errors;
      break;
    }
    const int64_t t1 = NowNs();
    if (r.status().code() != 0) {
      ++*errors;
    } else if (r.infer().model_version() == 1) {
      samples.push_back(t1 - t0);
    }
  }
  std::sort(samples.begin(), samples.end());
  return samples;
}

// The tail a percentile hides: the longest round trip, and how many took
// over a millisecond (a flush waited for on the loop is one such request,
// however rare).
void Tail(benchmark::State& state, const std::vector<int64_t>& sorted) {
  state.counters["max_us"] =
      sorted.empty() ? 0 : static_cast<double>(sorted.back()) / 1000.0;
  state.counters["over_1ms"] = static_cast<double>(
      sorted.end() -
      std::upper_bound(sorted.begin(), sorted.end(), int64_t{1000000}));
}

double Pct(const std::vector<int64_t>& s, double p) {
  if (s.empty()) return 0;
  return static_cast<double>(s[std::min(
             s.size() - 1,
             static_cast<size_t>(p * static_cast<double>(s.size())))]) /
         1000.0;
}

// The update's state as the daemon reports it over the socket.
std::string State(client::Client* c, uint64_t* version) {
  Result<wire::UpdateStatusResponse> st = c->UpdateStatus();
  if (!st.ok()) return "error";
  *version = st->model_version();
  return st->state();
}

bool Staged(const std::string& state) {
  return state == "staged" || state == "activating" || state == "active";
}

double idle_p99_us = 0;

void BM_IdleRoundTrip(benchmark::State& state) {
  Setup& s = Get();
  if (!s.error.empty()) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  Result<std::unique_ptr<client::Client>> c =
      client::Client::Connect(s.dir.File("t.sock"));
  if (!c.ok()) return state.SkipWithError(c.status().message());
  int64_t errors = 0;
  std::vector<int64_t> samples;
  for (auto _ : state) {
    const auto end = std::chrono::steady_clock::now() + kIdleTime;
    samples = RoundTrips(
        c->get(), [&] { return std::chrono::steady_clock::now() > end; },
        &errors);
  }
  idle_p99_us = Pct(samples, 0.99);
  Tail(state, samples);
  state.counters["p50_us"] = Pct(samples, 0.50);
  state.counters["p99_us"] = idle_p99_us;
  state.counters["requests"] = static_cast<double>(samples.size());
  state.counters["errors"] = static_cast<double>(errors);
}
BENCHMARK(BM_IdleRoundTrip)->Iterations(1)->UseRealTime();

void BM_RoundTripDuringUpdate(benchmark::State& state) {
  Setup& s = Get();
  if (!s.error.empty()) return state.SkipWithError(s.error.c_str());
  Result<std::unique_ptr<client::Client>> c =
      client::Client::Connect(s.dir.File("t.sock"));
  Result<std::unique_ptr<client::Client>> status =
      client::Client::Connect(s.dir.File("t.sock"));
  if (!c.ok() || !status.ok()) return state.SkipWithError("cannot connect");
  int64_t errors = 0;
  std::vector<int64_t> samples;
  double update_s = 0;
  for (auto _ : state) {
    Result<std::string> release = s.Prepare(2);
    if (!release.ok()) return state.SkipWithError(release.status().message());
    const int64_t t0 = NowNs();
    if (Status p = s.Publish(*release); !p.ok()) {
      return state.SkipWithError(p.message());
    }
    int64_t next_check = 0;
    bool staged = false;
    samples = RoundTrips(
        c->get(),
        [&] {
          const int64_t now = NowNs();
          if (now > next_check) {  // ask every 50 ms, on its own connection
            next_check = now + 50'000'000;
            uint64_t version = 0;
            const std::string st = State(status->get(), &version);
            staged = version == 2 && Staged(st);
            if (st == "failed" || st == "rejected") staged = true;
          }
          return staged || now - t0 > 300'000'000'000LL;
        },
        &errors);
    update_s = static_cast<double>(NowNs() - t0) / 1e9;
  }
  uint64_t version = 0;
  const std::string final_state = State(status->get(), &version);
  if (!Staged(final_state)) {
    return state.SkipWithError(
        ("the update ended " + final_state + ": " + s.daemon->Log()).c_str());
  }
  state.counters["p50_us"] = Pct(samples, 0.50);
  state.counters["p99_us"] = Pct(samples, 0.99);
  Tail(state, samples);
  if (idle_p99_us > 0) {
    state.counters["p99_of_idle"] = Pct(samples, 0.99) / idle_p99_us;
  }
  state.counters["requests"] = static_cast<double>(samples.size());
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["update_s"] = update_s;
  state.counters["artifact_MiB"] =
      static_cast<double>(s.artifact_bytes) / (1 << 20);
}
BENCHMARK(BM_RoundTripDuringUpdate)->Iterations(1)->UseRealTime();

void BM_UpdateAlone(benchmark::State& state) {
  Setup& s = Get();
  if (!s.error.empty()) return state.SkipWithError(s.error.c_str());
  Result<std::unique_ptr<client::Client>> status =
      client::Client::Connect(s.dir.File("t.sock"));
  if (!status.ok()) return state.SkipWithError("cannot connect");
  double cpu = 0, wall = 0;
  for (auto _ : state) {
    // Wait for the previous update to finish activating first.
    uint64_t version = 0;
    for (int i = 0; i < 6000 && State(status->get(), &version) != "active";
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Result<std::string> release = s.Prepare(3);
    if (!release.ok()) return state.SkipWithError(release.status().message());
    const double cpu0 = ::ternd::testing::ProcessCpuSeconds(s.daemon->pid());
    const int64_t t0 = NowNs();
    if (Status p = s.Publish(*release); !p.ok()) {
      return state.SkipWithError(p.message());
    }
    std::string st;
    for (int i = 0; i < 30000; ++i) {
      st = State(status->get(), &version);
      if (version == 3 && (Staged(st) || st == "failed")) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    wall = static_cast<double>(NowNs() - t0) / 1e9;
    cpu = ::ternd::testing::ProcessCpuSeconds(s.daemon->pid()) - cpu0;
    if (!Staged(st)) return state.SkipWithError(("update " + st).c_str());
  }
  const double mib = static_cast<double>(s.artifact_bytes) / (1 << 20);
  state.counters["update_s"] = wall;
  state.counters["cpu_s"] = cpu;
  state.counters["cpu_s_per_100MiB"] = cpu / mib * 100;
  state.counters["artifact_MiB"] = mib;
}
BENCHMARK(BM_UpdateAlone)->Iterations(1)->UseRealTime();

}  // namespace
}  // namespace ternd::daemon_testing

BENCHMARK_MAIN();
