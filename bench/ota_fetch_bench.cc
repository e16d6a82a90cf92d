// Artifact download throughput and memory: a 100 MiB artifact (a zstd
// frame holding a model-like payload of random ternary codes) over loopback
// HTTPS from the real nginx (tests/support/nginx_server.h, test CA), through
// ArtifactFetcher: TLS, per-chunk SHA-256, SQLite writes on the worker
// thread, the whole artifact's SHA-256. BM_FetchVerifyStage100MiB also
// stages it as the daemon's updates do (FetchOptions::stage: each stored
// chunk decompressed on the worker into the model, the model's SHA-256
// checked), and BM_FetchThenStage100MiB stages after the download instead
// (ota::StageArtifact: every stored chunk read back and checked again, as
// after a restart). Each iteration starts
// from an empty state database, in $TMPDIR (db_in_memory:0) or in /dev/shm
// (db_in_memory:1).
//
// BM_CurlSha256Floor100MiB is the floor measured in the same run: the curl
// command line tool downloading the same artifact from the same nginx into
// a file in the same place (tee), with sha256sum reading the stream
// alongside. The daemon-path benchmarks report their throughput as a ratio
// to it (of_curl: 1.0 = as fast as curl + sha256sum).
//
// Counters: bytes_per_second (MiB/s of artifact downloaded, verified and
// stored; wall time, since the work spans the loop thread, the worker
// thread and nginx), rss_growth_MiB (peak resident set during the download
// minus the resident set before it; the largest over the iterations),
// client_cpu_ms / server_cpu_ms (CPU time per iteration of this process,
// all threads, and of nginx: what the download costs when the machine is
// shared and wall time is not telling).
//
// Run: build/bench/ota_fetch_bench   (docs/performance.md, "OTA download")
#include <benchmark/benchmark.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "base/clock.h"
#include "ota/artifact.h"
#include "ota/fetcher.h"
#include "ota/signing.h"
#include "tests/support/nginx_server.h"

namespace ternd::ota {
namespace {

constexpr uint64_t kArtifactBytes = 100ull << 20;
constexpr uint64_t kChunkBytes = 1 << 20;

// Resident set (VmRSS) or its peak (VmHWM) in KiB.
long StatusKib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, n, field) == 0) return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

double ProcessCpuMs() {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// utime + stime of another process, in ms.
double OtherCpuMs(pid_t pid) {
  return ::ternd::testing::ProcessCpuSeconds(pid) * 1000.0;
}

// Resets VmHWM to the current resident set.
void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

// MiB/s of the curl floor in this run, by db_in_memory (0: not run).
double curl_floor_bytes_per_s[2] = {0, 0};

// One nginx serving one 100 MiB artifact, shared by all iterations.
struct Fixture {
  https_testing::HttpsTestDir dir;
  std::unique_ptr<https_testing::NginxServer> nginx;
  FetchJob job;
  uint64_t model_length = 0;
  std::string error;

  Fixture() {
    Status s = https_testing::MakeTestCertificates(dir.path(), "bench");
    if (!s.ok()) {
      error = s.message();
      return;
    }
    https_testing::NginxOptions options;
    options.cert_dir = dir.path();
    nginx = std::make_unique<https_testing::NginxServer>(options);
    s = nginx->Start();
    if (!s.ok()) {
      error = std::string(s.message()) + nginx->ErrorLog();
      return;
    }
    // The model: 2-bit codes of uniformly random ternary weights (what
    // packed BitNet weights look like to a compressor: about 1.58 bits of
    // entropy per 2-bit code), sized so that the zstd artifact is 100 MiB.
    std::mt19937_64 rng(1);
    std::string model(kArtifactBytes * 127 / 100, '\0');
    for (char& c : model) {
      uint8_t b = 0;
      for (int k = 0; k < 4; ++k) b = static_cast<uint8_t>(b << 2 | rng() % 3);
      c = static_cast<char>(b);
    }
    std::string artifact(ZSTD_compressBound(model.size()), '\0');
    const size_t n = ZSTD_compress(artifact.data(), artifact.size(),
                                   model.data(), model.size(), 3);
    if (ZSTD_isError(n)) {
      error = ZSTD_getErrorName(n);
      return;
    }
    artifact.resize(n);
    model_length = model.size();
    job.artifact.model_length = model.size();
    job.artifact.model_sha256 = Sha256(model);
    model = std::string();
    job.artifact.artifact_length = artifact.size();
    job.artifact.chunk_size = kChunkBytes;
    job.artifact.artifact_sha256 = Sha256(artifact);
    for (uint64_t off = 0; off < artifact.size(); off += kChunkBytes) {
      job.artifact.chunk_sha256.push_back(
          Sha256(std::string_view(artifact).substr(off, kChunkBytes)));
    }
    std::ofstream out(nginx->directory() + "/root/files/bench.zst",
                      std::ios::binary);
    out.write(artifact.data(), static_cast<std::streamsize>(artifact.size()));
    job.urls = {nginx->Url("files/bench.zst")};
  }
};

// Destroyed at exit, which stops nginx (it was left running before).
Fixture& GetFixture() {
  static Fixture f;
  return f;
}

// Downloads (and, with `stage`, stages) the fixture's artifact once per
// iteration.
enum class Stage { kNone, kWhileFetching, kAfter };

void FetchBenchmark(benchmark::State& state, Stage stage) {
  Fixture& fx = GetFixture();
  if (!fx.error.empty()) {
    state.SkipWithError(fx.error.c_str());
    return;
  }
  // Arg 0: the state database in $TMPDIR (the disk, as on a device);
  // arg 1: in /dev/shm (memory), to separate the download path from the
  // disk's write bandwidth.
  const std::string db = state.range(0) == 0
                             ? fx.dir.File("bench-state.db")
                             : "/dev/shm/ternd-ota-fetch-bench-" +
                                   std::to_string(getpid()) + ".db";
  // Stands for the idle arena slot: reserved and touched before the run.
  std::vector<uint8_t> slot(stage == Stage::kAfter ? fx.model_length : 0, 1);
  long worst_growth_kib = 0;
  double client_cpu = 0, server_cpu = 0, seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::remove((db + suffix).c_str());
    }
    sd_event* loop = nullptr;
    sd_event_new(&loop);
    FetchOptions options;
    options.state_db = db;
    options.ca_file = fx.dir.File("ca.pem");
    options.stage = stage == Stage::kWhileFetching;
    Status result = Internal("not finished");
    ResetPeakRss();
    const long before = StatusKib("VmRSS:");
    const double client_before = ProcessCpuMs();
    const double server_before = OtherCpuMs(fx.nginx->pid());
    state.ResumeTiming();
    const int64_t t0 = MonotonicNs();

    auto fetcher = ArtifactFetcher::Start(loop, fx.job, options, nullptr,
                                          [&](const Status& s) {
                                            result = s;
                                            sd_event_exit(loop, 0);
                                          });
    if (fetcher.ok()) sd_event_loop(loop);
    if (stage == Stage::kWhileFetching && fetcher.ok() && result.ok() &&
        (*fetcher)->TakeStagedModel().size() != fx.model_length) {
      result = Internal("the download did not stage the model");
    }
    if (stage == Stage::kAfter && fetcher.ok() && result.ok()) {
      fetcher->reset();
      Result<std::unique_ptr<StateStore>> store = StateStore::Open(db);
      Result<uint64_t> staged = store.ok()
                                    ? StageArtifact(**store, fx.job.artifact,
                                                    std::span<uint8_t>(slot))
                                    : Result<uint64_t>(store.status());
      if (!staged.ok()) result = staged.status();
    }

    seconds += static_cast<double>(MonotonicNs() - t0) / 1e9;
    state.PauseTiming();
    client_cpu += ProcessCpuMs() - client_before;
    server_cpu += OtherCpuMs(fx.nginx->pid()) - server_before;
    worst_growth_kib = std::max(worst_growth_kib, StatusKib("VmHWM:") - before);
    if (fetcher.ok() && *fetcher) fetcher->reset();
    sd_event_unref(loop);
    if (!fetcher.ok() || !result.ok()) {
      state.SkipWithError(fetcher.ok() ? result.message()
                                       : fetcher.status().message());
      break;
    }
    state.ResumeTiming();
  }
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations()) *
      static_cast<int64_t>(fx.job.artifact.artifact_length));
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::remove((db + suffix).c_str());
  }
  state.counters["rss_growth_MiB"] = worst_growth_kib / 1024.0;
  state.counters["artifact_MiB"] =
      static_cast<double>(fx.job.artifact.artifact_length) / (1 << 20);
  const double n = std::max<double>(1, static_cast<double>(state.iterations()));
  state.counters["client_cpu_ms"] = client_cpu / n;
  state.counters["server_cpu_ms"] = server_cpu / n;
  const double floor = curl_floor_bytes_per_s[state.range(0) != 0];
  if (floor > 0 && seconds > 0) {
    state.counters["of_curl"] =
        static_cast<double>(state.iterations()) *
        static_cast<double>(fx.job.artifact.artifact_length) / seconds / floor;
  }
}

// The floor: `curl URL | tee FILE | sha256sum`, FILE where the database of
// the same argument goes; the printed digest must be the artifact's.
void BM_CurlSha256Floor100MiB(benchmark::State& state) {
  Fixture& fx = GetFixture();
  if (!fx.error.empty()) {
    state.SkipWithError(fx.error.c_str());
    return;
  }
  const std::string file =
      state.range(0) == 0
          ? fx.dir.File("curl-artifact")
          : "/dev/shm/ternd-ota-curl-bench-" + std::to_string(getpid());
  const std::string digest_file = fx.dir.File("curl-digest");
  const std::string command = "set -o pipefail; curl -sS --fail --cacert '" +
                              fx.dir.File("ca.pem") + "' '" + fx.job.urls[0] +
                              "' | tee '" + file + "' | sha256sum > '" +
                              digest_file + "'";
  double seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::remove(file.c_str());
    state.ResumeTiming();
    const int64_t t0 = MonotonicNs();
    const int rc = std::system(("bash -c \"" + command + "\"").c_str());
    seconds += static_cast<double>(MonotonicNs() - t0) / 1e9;
    state.PauseTiming();
    std::ifstream in(digest_file);
    std::string hex;
    in >> hex;
    if (rc != 0 || hex != Hex(fx.job.artifact.artifact_sha256)) {
      state.SkipWithError(
          ("curl | sha256sum failed or digest differs: " + command).c_str());
      break;
    }
    state.ResumeTiming();
  }
  std::remove(file.c_str());
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations()) *
      static_cast<int64_t>(fx.job.artifact.artifact_length));
  if (seconds > 0) {
    curl_floor_bytes_per_s[state.range(0) != 0] =
        static_cast<double>(state.iterations()) *
        static_cast<double>(fx.job.artifact.artifact_length) / seconds;
  }
}
void BM_FetchVerifyStore100MiB(benchmark::State& state) {
  FetchBenchmark(state, Stage::kNone);
}
void BM_FetchVerifyStage100MiB(benchmark::State& state) {
  FetchBenchmark(state, Stage::kWhileFetching);
}
void BM_FetchThenStage100MiB(benchmark::State& state) {
  FetchBenchmark(state, Stage::kAfter);
}
// Database on disk (0) and in memory (1); five downloads each.
void Configure(benchmark::internal::Benchmark* b) {
  b->ArgName("db_in_memory")
      ->Arg(0)
      ->Arg(1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(5);
}
BENCHMARK(BM_CurlSha256Floor100MiB)->Apply(Configure);
BENCHMARK(BM_FetchVerifyStore100MiB)->Apply(Configure);
BENCHMARK(BM_FetchVerifyStage100MiB)->Apply(Configure);
BENCHMARK(BM_FetchThenStage100MiB)->Apply(Configure);

}  // namespace
}  // namespace ternd::ota

BENCHMARK_MAIN();
