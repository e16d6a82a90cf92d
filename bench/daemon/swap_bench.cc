// Hot swap of the served model on a real ternd, under load.
//
// The daemon serves the demo model with two arena slots; a client thread
// sends one request after another the whole time. Each iteration makes the
// daemon replace the model (SIGHUP with the other of two model files: the
// same path as an update's activation: placed and health-checked in the
// idle slot off the loop, then swapped between requests) and waits for the
// swap. Reported:
//   manual time       how long the swap held the event loop (the daemon
//                     logs it: "swap took N ns")
//   failed            requests that failed during the whole run (must be 0)
//   max_rtt_us        the slowest client round trip during the run
//   p50_rtt_us        the median round trip, for comparison
//
// Run: build/bench/daemon/swap_bench   (numbers in docs/performance.md)
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/client/client.h"

namespace {

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Swap times logged so far, in order.
std::vector<int64_t> SwapTimes(const std::string& log) {
  std::vector<int64_t> out;
  const std::string key = "swap took ";
  for (size_t at = log.find(key); at != std::string::npos;
       at = log.find(key, at + 1)) {
    out.push_back(std::atoll(log.c_str() + at + key.size()));
  }
  return out;
}

void BM_HotSwapUnderLoad(benchmark::State& state) {
  char dir_template[] = "/tmp/ternd-swap-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string socket = dir + "/ternd.sock";
  const std::string log = dir + "/ternd.log";
  std::filesystem::copy_file(TERND_DEMO_MODEL, dir + "/a.tern");
  std::filesystem::copy_file(TERND_DEMO_MODEL, dir + "/b.tern");
  auto write_config = [&](const char* model) {
    std::ofstream(dir + "/ternd.toml")
        << "[server]\nsocket = \"" << socket << "\"\n[runtime]\nmodel = \""
        << dir << "/" << model << "\"\nworkers = 1\nswap = \"hot\"\n";
  };
  write_config("a.tern");
  const pid_t pid = fork();
  if (pid == 0) {
    freopen(log.c_str(), "w", stderr);
    const std::string config = dir + "/ternd.toml";
    execl(TERND_DAEMON_PATH, TERND_DAEMON_PATH, "--config", config.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 500 && !std::filesystem::exists(socket); ++i) {
    usleep(10000);
  }
  usleep(20000);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failed{0};
  std::vector<int64_t> rtts;
  std::thread load([&] {
    auto c = ternd::client::Client::Connect(socket);
    if (!c.ok()) {
      ++failed;
      return;
    }
    ternd::wire::InferRequest req;
    std::vector<float> x(16, 0.25f);
    ternd::client::AddF32Input(&req, "x", 1, 16, x);
    while (!stop) {
      const int64_t t0 = NowNs();
      if (!(*c)->Infer(req).ok()) ++failed;
      rtts.push_back(NowNs() - t0);
    }
  });

  bool use_b = true;
  size_t swaps = 0;
  for (auto _ : state) {
    write_config(use_b ? "b.tern" : "a.tern");
    use_b = !use_b;
    kill(pid, SIGHUP);
    std::vector<int64_t> times;
    for (int i = 0; i < 5000; ++i) {
      times = SwapTimes(ReadAll(log));
      if (times.size() > swaps) break;
      usleep(1000);
    }
    if (times.size() <= swaps) {
      state.SkipWithError("the daemon did not swap within 5 s");
      break;
    }
    swaps = times.size();
    state.SetIterationTime(static_cast<double>(times.back()) * 1e-9);
  }
  stop = true;
  load.join();
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::sort(rtts.begin(), rtts.end());
  state.counters["failed"] = static_cast<double>(failed.load());
  state.counters["requests"] = static_cast<double>(rtts.size());
  if (!rtts.empty()) {
    state.counters["p50_rtt_us"] = rtts[rtts.size() / 2] / 1000.0;
    state.counters["max_rtt_us"] = rtts.back() / 1000.0;
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_HotSwapUnderLoad)
    ->UseManualTime()
    ->Iterations(200)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
