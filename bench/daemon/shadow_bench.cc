// What shadow validation costs the requests it watches. The real daemon
// (two workers), one client doing Infer round trips, one request at a
// time, on a model of a few tens of microseconds a call:
//
//   BM_RoundTrip/0      round trips with no update: p50/p90/p99/p99.9
//   BM_RoundTrip/<pct>  the same while a staged model is validated (an
//                       offline bundle whose release asks for shadow
//                       validation of <pct>% of the requests, with a
//                       requirement it never reaches): the same
//                       percentiles, how many requests the staged model
//                       also ran (`compared`) and how many samples were
//                       dropped because the shadow job was busy or a
//                       request outstanding (`dropped`)
//
// Each case starts its own daemon and runs once (Iterations(1)); run the
// binary several times and take medians (docs/performance.md, "Shadow
// validation"). Run: build/bench/daemon/shadow_bench
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "daemon/client/client.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/test_env.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon_testing {
namespace {

constexpr char kDevice[] = "bench-1";
constexpr auto kWarmUp = std::chrono::seconds(1);
constexpr auto kPhase = std::chrono::seconds(4);

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

TestModelSpec Model(uint64_t version, uint32_t seed) {
  TestModelSpec s = FastModel();
  s.name = "shadownet";
  s.version = version;
  s.seed = seed;
  s.inputs = 256;
  s.hidden = 1024;
  s.layers = 2;
  return s;
}

struct Setup {
  TempDir dir;
  ::ternd::testing::TestFleet fleet{"benchfleet"};
  std::unique_ptr<DaemonProcess> daemon;
  std::thread install;  // waits for the validation's end
  std::string error;

  Setup() {
    if (Status st = Init(); !st.ok()) error = st.message();
  }
  ~Setup() {
    if (daemon) daemon.reset();  // SIGKILL: ends the install's wait
    if (install.joinable()) install.join();
  }

  Status Init() {
    TERND_RETURN_IF_ERROR(WriteTestModel(Model(1, 1), dir.File("model.tern")));
    WriteText(dir.File("root.pb"), fleet.RootEnvelope(1));
    WriteText(dir.File("ternd.toml"),
              "[daemon]\nstate_directory = \"" + dir.path() +
                  "\"\n[server]\nsocket = \"" + dir.File("t.sock") +
                  "\"\n[runtime]\nmodel = \"" + dir.File("model.tern") +
                  "\"\nworkers = 2\narena_mb = 64\n[device]\nid = \"" +
                  kDevice +
                  "\"\nfleet = \"benchfleet\"\n[ota]\nroot_file = \"" +
                  dir.File("root.pb") + "\"\n");
    DaemonOptions o;
    o.directory = dir.path();
    o.config_path = dir.File("ternd.toml");
    daemon = std::make_unique<DaemonProcess>(o);
    if (!daemon->WaitForNotify("READY=1", 30000)) {
      return Internal("the daemon did not start: %s", daemon->Log().c_str());
    }
    return Status::Ok();
  }

  // Installs version 2 (other weights) with a validation that never ends
  // within the benchmark, and waits until it runs.
  Status StartValidation(double sample_rate) {
    ::ternd::testing::SignedRelease r =
        fleet.Release(ModelBytes(Model(2, 2)), "shadownet", 2, 1, kDevice);
    ota::ShadowValidation* v = r.release.mutable_shadow_validation();
    v->set_sample_rate(sample_rate);
    v->set_min_requests(uint64_t{1} << 40);
    v->set_min_agreement(0.5);
    v->set_metric("argmax");
    v->set_time_limit_s(3600);
    r.envelope = fleet.Sign(r.release);
    const std::string bundle = fleet.Bundle(r);
    const std::string socket = dir.File("t.sock");
    install = std::thread([bundle, socket] {
      client::ClientOptions co;
      co.timeout_ms = 3600 * 1000;
      Result<std::unique_ptr<client::Client>> c =
          client::Client::Connect(socket, co);
      if (c.ok()) (*c)->Install(bundle).status().IgnoreError();
    });
    TERND_ASSIGN_OR_RETURN(std::unique_ptr<client::Client> c,
                           client::Client::Connect(socket));
    const int64_t end = NowNs() + 30'000'000'000LL;
    while (NowNs() < end) {
      TERND_ASSIGN_OR_RETURN(wire::UpdateStatusResponse st, c->UpdateStatus());
      if (st.state() == "validating") return Status::Ok();
      if (st.state() == "rejected" || st.state() == "failed") {
        return Internal("the update was %s: %s", st.state().c_str(),
                        st.reason().c_str());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Internal("no validation after 30 s: %s", daemon->Log().c_str());
  }
};

std::vector<int64_t> RoundTrips(client::Client* c, int64_t* errors) {
  wire::Request request;
  request.set_id(1);
  const TestModelSpec spec = Model(1, 1);
  client::AddF32Input(request.mutable_infer(), "x", 1, spec.inputs,
                      TestInput(spec, 1, 3));
  std::vector<int64_t> samples;
  samples.reserve(1 << 20);
  // A second of round trips first, not counted: the new daemon's pages,
  // caches and the client's connection warm up.
  const auto start = std::chrono::steady_clock::now() + kWarmUp;
  const auto end = start + kPhase;
  while (std::chrono::steady_clock::now() < end) {
    const bool counted = std::chrono::steady_clock::now() >= start;
    const int64_t t0 = NowNs();
    wire::Response r;
    if (!c->Send(request).ok() || !c->Receive(&r).ok()) {
      ++*errors;
      break;
    }
    const int64_t t1 = NowNs();
    if (r.status().code() != 0 || r.infer().model_version() != 1) {
      ++*errors;
    } else if (counted) {
      samples.push_back(t1 - t0);
    }
  }
  std::sort(samples.begin(), samples.end());
  return samples;
}

double Pct(const std::vector<int64_t>& s, double p) {
  if (s.empty()) return 0;
  return static_cast<double>(s[std::min(
             s.size() - 1,
             static_cast<size_t>(p * static_cast<double>(s.size())))]) /
         1000.0;
}

void Report(benchmark::State& state, const std::vector<int64_t>& s,
            int64_t errors) {
  state.counters["p50_us"] = Pct(s, 0.50);
  state.counters["p90_us"] = Pct(s, 0.90);
  state.counters["p99_us"] = Pct(s, 0.99);
  state.counters["p999_us"] = Pct(s, 0.999);
  state.counters["requests"] = static_cast<double>(s.size());
  state.counters["errors"] = static_cast<double>(errors);
}

void BM_RoundTrip(benchmark::State& state) {
  Setup s;
  if (!s.error.empty()) return state.SkipWithError(s.error.c_str());
  const int64_t pct = state.range(0);
  if (pct > 0) {
    if (Status v = s.StartValidation(static_cast<double>(pct) / 100.0);
        !v.ok()) {
      return state.SkipWithError(v.message());
    }
  }
  Result<std::unique_ptr<client::Client>> c =
      client::Client::Connect(s.dir.File("t.sock"));
  if (!c.ok()) return state.SkipWithError(c.status().message());
  Result<wire::UpdateStatusResponse> before = (*c)->UpdateStatus();
  int64_t errors = 0;
  std::vector<int64_t> samples;
  for (auto _ : state) samples = RoundTrips(c->get(), &errors);
  Result<wire::UpdateStatusResponse> after = (*c)->UpdateStatus();
  Report(state, samples, errors);
  state.counters["compared"] = 0;
  state.counters["dropped"] = 0;
  if (pct > 0 && before.ok() && after.ok()) {
    state.counters["compared"] = static_cast<double>(
        after->shadow().requests() - before->shadow().requests());
    state.counters["dropped"] = static_cast<double>(after->shadow().dropped() -
                                                    before->shadow().dropped());
  }
}
BENCHMARK(BM_RoundTrip)
    ->Arg(0)
    ->Arg(100)
    ->Arg(10)
    ->Iterations(1)
    ->UseRealTime();

}  // namespace
}  // namespace ternd::daemon_testing

BENCHMARK_MAIN();
