// Artifact download throughput and memory: a 100 MiB artifact over loopback
// HTTPS from the real nginx (tests/support/nginx_server.h, test CA), through
// ArtifactFetcher: TLS, per-chunk SHA-256, SQLite writes (WAL,
// synchronous=FULL) on the worker thread, and the final read-back check of
// the whole artifact's SHA-256. Each iteration starts from an empty state
// database, in $TMPDIR (db_in_memory:0) or in /dev/shm (db_in_memory:1).
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

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "ota/artifact.h"
#include "ota/fetcher.h"
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
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)),
                   std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) stime = std::atof(field.c_str());
  }
  return (utime + stime) * 1000.0 / sysconf(_SC_CLK_TCK);
}

// Resets VmHWM to the current resident set.
void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

// One nginx serving one 100 MiB artifact, shared by all iterations.
struct Fixture {
  https_testing::HttpsTestDir dir;
  std::unique_ptr<https_testing::NginxServer> nginx;
  FetchJob job;
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
    // Written chunk by chunk so the benchmark process never holds it.
    const std::string path = nginx->directory() + "/root/files/bench.zst";
    std::ofstream out(path, std::ios::binary);
    std::mt19937_64 rng(1);
    std::string chunk(kChunkBytes, '\0');
    job.artifact.artifact_length = kArtifactBytes;
    job.artifact.chunk_size = kChunkBytes;
    job.artifact.model_sha256 = Sha256("");
    for (uint64_t off = 0; off < kArtifactBytes; off += kChunkBytes) {
      for (size_t i = 0; i < chunk.size(); i += 8) {
        const uint64_t v = rng();
        std::memcpy(&chunk[i], &v, 8);
      }
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      job.artifact.chunk_sha256.push_back(Sha256(chunk));
    }
    out.close();
    // The whole-artifact hash, read back like a release tool would.
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    job.artifact.artifact_sha256 = Sha256(bytes);
    job.urls = {nginx->Url("files/bench.zst")};
  }
};

Fixture& GetFixture() {
  static Fixture* f = new Fixture();
  return *f;
}

void BM_FetchVerifyStore100MiB(benchmark::State& state) {
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
  long worst_growth_kib = 0;
  double client_cpu = 0, server_cpu = 0;
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
    Status result = Internal("not finished");
    ResetPeakRss();
    const long before = StatusKib("VmRSS:");
    const double client_before = ProcessCpuMs();
    const double server_before = OtherCpuMs(fx.nginx->pid());
    state.ResumeTiming();

    auto fetcher = ArtifactFetcher::Start(loop, fx.job, options, nullptr,
                                          [&](const Status& s) {
                                            result = s;
                                            sd_event_exit(loop, 0);
                                          });
    if (fetcher.ok()) sd_event_loop(loop);

    state.PauseTiming();
    client_cpu += ProcessCpuMs() - client_before;
    server_cpu += OtherCpuMs(fx.nginx->pid()) - server_before;
    worst_growth_kib = std::max(worst_growth_kib, StatusKib("VmHWM:") - before);
    if (fetcher.ok()) fetcher->reset();
    sd_event_unref(loop);
    if (!fetcher.ok() || !result.ok()) {
      state.SkipWithError(fetcher.ok() ? result.message()
                                       : fetcher.status().message());
      break;
    }
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kArtifactBytes));
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::remove((db + suffix).c_str());
  }
  state.counters["rss_growth_MiB"] = worst_growth_kib / 1024.0;
  const double n = std::max<double>(1, static_cast<double>(state.iterations()));
  state.counters["client_cpu_ms"] = client_cpu / n;
  state.counters["server_cpu_ms"] = server_cpu / n;
}
BENCHMARK(BM_FetchVerifyStore100MiB)
    ->ArgName("db_in_memory")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(5);

}  // namespace
}  // namespace ternd::ota

BENCHMARK_MAIN();
