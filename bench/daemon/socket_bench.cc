// Round trips to a real ternd over its unix socket, on the demo model.
//
// The benchmark starts ternd itself (2 workers, the demo model, a socket in
// a temporary directory) and measures from the client side:
//   BM_SocketpairFloor     this machine's floor for the same exchange with
//   BM_SocketpairFloorPoll no daemon: a thread echoes each request frame
//                          with an answer-sized frame over a socketpair,
//                          blocking (or polling, both sides); p50/p99
//   BM_RoundTrip           one client, one request at a time: latency
//                          percentiles (p50/p99/p99.9 in microseconds), and
//                          p99 as a ratio to the blocking floor's p99 of
//                          the same run (p99_of_floor)
//   BM_RoundTripBusyPoll   the same against a second ternd with
//                          server.busy_poll_us = 200, the client polling
//                          for its answer too (ClientOptions::busy_poll_us);
//                          p99_of_floor against the polling floor
//   BM_Throughput/C/D      C concurrent clients (threads, one connection
//                          each) keeping D requests in flight: inferences/s
//   BM_ManyConnections     1,000 connections open at once, one request on
//                          each: errors (must be 0) and the daemon's RSS
//
// Run: build/bench/daemon/socket_bench [--benchmark_filter=...]
// The model and daemon binary default to the build's; override with
// TERND_BENCH_MODEL and TERND_BENCH_DAEMON; TERND_BENCH_CONFIG is appended
// to the daemons' configuration (e.g. "[telemetry]\nquality = false\n").
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/frame.h"
#include "daemon/protocol.pb.h"

namespace {

using ternd::wire::FrameDecoder;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The daemon under test, started once for the whole run.
class Daemon {
 public:
  static Daemon& Get() {
    static Daemon daemon(0);
    return daemon;
  }
  static Daemon& GetBusyPoll() {
    static Daemon daemon(200);
    return daemon;
  }
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }
  long RssKb() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return -1;
  }

 private:
  explicit Daemon(int busy_poll_us) {
    char dir_template[] = "/tmp/ternd-bench-XXXXXX";
    dir_ = mkdtemp(dir_template);
    socket_ = dir_ + "/ternd.sock";
    const char* model = getenv("TERND_BENCH_MODEL");
    const char* binary = getenv("TERND_BENCH_DAEMON");
    const std::string config = dir_ + "/ternd.toml";
    std::ofstream(config) << "[server]\nsocket = \"" << socket_
                          << "\"\nmax_connections = 4096\n"
                             "max_inflight_per_connection = 1024\n"
                             "max_queue_depth = 16384\n"
                             "busy_poll_us = "
                          << busy_poll_us
                          << "\n"
                             "[runtime]\nmodel = \""
                          << (model ? model : TERND_DEMO_MODEL)
                          << "\"\nworkers = 2\n"
                          << (getenv("TERND_BENCH_CONFIG")
                                  ? getenv("TERND_BENCH_CONFIG")
                                  : "");
    pid_ = fork();
    if (pid_ == 0) {
      const char* path = binary ? binary : TERND_DAEMON_PATH;
      execl(path, path, "--config", config.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 500 && !std::filesystem::exists(socket_); ++i)
      usleep(10000);
    usleep(20000);
  }
  ~Daemon() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    std::filesystem::remove_all(dir_);
  }
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

int Connect(const Daemon& daemon = Daemon::Get()) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s",
                daemon.socket().c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One Infer request for the demo model (one row of 16 values), framed.
std::vector<uint8_t> InferFrame(uint64_t id) {
  ternd::wire::Request r;
  r.set_id(id);
  ternd::wire::Tensor* t = r.mutable_infer()->add_inputs();
  t->set_name("x");
  t->set_dtype(ternd::wire::F32);
  t->add_shape(1);
  t->add_shape(16);
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i) x[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
  t->set_data(x.data(), x.size() * sizeof(float));
  std::vector<uint8_t> frame;
  ternd::wire::AppendFrame(r, 1 << 20, &frame);
  return frame;
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until `count` responses arrived; counts the non-OK ones. With
// `spin`, polls the socket without sleeping.
bool ReadResponses(int fd, FrameDecoder* dec, int count, int64_t* errors,
                   bool spin = false) {
  ternd::wire::Response response;
  while (count > 0) {
    std::span<const uint8_t> payload;
    while (count > 0 &&
           dec->TakeFrame(&payload, nullptr) == FrameDecoder::Next::kFrame) {
      if (!response.ParseFromArray(payload.data(),
                                   static_cast<int>(payload.size())) ||
          response.status().code() != 0) {
        ++*errors;
      }
      --count;
    }
    if (count == 0) break;
    std::span<uint8_t> space = dec->WritableSpace(64 * 1024);
    ssize_t n;
    do {
      n = recv(fd, space.data(), space.size(), spin ? MSG_DONTWAIT : 0);
    } while (spin && n < 0 && errno == EAGAIN);
    if (n <= 0) return false;
    dec->Commit(static_cast<size_t>(n));
  }
  return true;
}

// p99 of the floors measured in this run (0: not run), in microseconds.
double floor_p99_us[2] = {0, 0};  // [spin]

// The p50/p99/p99.9 counters of `samples` (nanoseconds), sorted here.
void Percentiles(benchmark::State& state, std::vector<int64_t>* samples) {
  std::sort(samples->begin(), samples->end());
  auto pct = [&](double p) {
    return samples->empty()
               ? 0.0
               : static_cast<double>((*samples)[std::min(
                     samples->size() - 1,
                     static_cast<size_t>(
                         p * static_cast<double>(samples->size())))]) /
                     1000.0;
  };
  state.counters["p50_us"] = pct(0.50);
  state.counters["p99_us"] = pct(0.99);
  state.counters["p999_us"] = pct(0.999);
}

// Size of the demo model's Infer answer frame (probs[10] and class[1]);
// the floor's echo thread answers with this many bytes.
constexpr size_t kAnswerBytes = 120;

void SocketpairFloor(benchmark::State& state, bool spin) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  const std::vector<uint8_t> request = InferFrame(1);
  std::thread echo([&]() {
    std::vector<uint8_t> in(request.size()), out(kAnswerBytes, 0x5a);
    for (;;) {
      size_t got = 0;
      while (got < in.size()) {
        const ssize_t n = recv(sv[1], in.data() + got, in.size() - got,
                               spin ? MSG_DONTWAIT : 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return;
        if (n > 0) got += static_cast<size_t>(n);
      }
      if (!WriteAll(sv[1], out.data(), out.size())) return;
    }
  });
  std::vector<uint8_t> answer(kAnswerBytes);
  std::vector<int64_t> samples;
  samples.reserve(1 << 20);
  auto exchange = [&]() {
    if (!WriteAll(sv[0], request.data(), request.size())) return false;
    size_t got = 0;
    while (got < answer.size()) {
      const ssize_t n = recv(sv[0], answer.data() + got, answer.size() - got,
                             spin ? MSG_DONTWAIT : 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return false;
      if (n > 0) got += static_cast<size_t>(n);
    }
    return true;
  };
  for (int i = 0; i < 1000; ++i) exchange();  // warm up
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    if (!exchange()) {
      state.SkipWithError("socketpair exchange failed");
      break;
    }
    samples.push_back(NowNs() - t0);
  }
  shutdown(sv[0], SHUT_RDWR);
  echo.join();
  close(sv[0]);
  close(sv[1]);
  Percentiles(state, &samples);
  floor_p99_us[spin] = state.counters["p99_us"];
  state.SetItemsProcessed(state.iterations());
}
void BM_SocketpairFloor(benchmark::State& state) {
  SocketpairFloor(state, /*spin=*/false);
}
BENCHMARK(BM_SocketpairFloor)->UseRealTime()->MinTime(2.0);
void BM_SocketpairFloorPoll(benchmark::State& state) {
  SocketpairFloor(state, /*spin=*/true);
}
BENCHMARK(BM_SocketpairFloorPoll)->UseRealTime()->MinTime(2.0);

void RoundTrip(benchmark::State& state, const Daemon& daemon, bool spin) {
  const int fd = Connect(daemon);
  if (fd < 0) {
    state.SkipWithError("cannot connect to ternd");
    return;
  }
  const std::vector<uint8_t> frame = InferFrame(1);
  FrameDecoder dec(1 << 20);
  std::vector<int64_t> samples;
  samples.reserve(1 << 20);
  int64_t errors = 0;
  for (int i = 0; i < 1000; ++i) {  // warm up
    WriteAll(fd, frame.data(), frame.size());
    ReadResponses(fd, &dec, 1, &errors, spin);
  }
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    if (!WriteAll(fd, frame.data(), frame.size()) ||
        !ReadResponses(fd, &dec, 1, &errors, spin)) {
      state.SkipWithError("connection lost");
      break;
    }
    samples.push_back(NowNs() - t0);
  }
  close(fd);
  Percentiles(state, &samples);
  if (floor_p99_us[spin] > 0) {
    state.counters["p99_of_floor"] =
        state.counters["p99_us"] / floor_p99_us[spin];
  }
  state.counters["errors"] = static_cast<double>(errors);
  state.SetItemsProcessed(state.iterations());
}
void BM_RoundTrip(benchmark::State& state) {
  RoundTrip(state, Daemon::Get(), /*spin=*/false);
}
BENCHMARK(BM_RoundTrip)->UseRealTime()->MinTime(2.0);

void BM_RoundTripBusyPoll(benchmark::State& state) {
  RoundTrip(state, Daemon::GetBusyPoll(), /*spin=*/true);
}
BENCHMARK(BM_RoundTripBusyPoll)->UseRealTime()->MinTime(2.0);

// state.range(0): pipeline depth per client; threads: clients.
void BM_Throughput(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  const int fd = Connect();
  if (fd < 0) {
    state.SkipWithError("cannot connect to ternd");
    return;
  }
  const std::vector<uint8_t> one = InferFrame(1);
  std::vector<uint8_t> burst;
  for (int i = 0; i < depth; ++i)
    burst.insert(burst.end(), one.begin(), one.end());
  FrameDecoder dec(1 << 20);
  int64_t errors = 0;
  // Keep `depth` requests in flight: send a burst, then per answered burst
  // send the next one.
  bool ok = WriteAll(fd, burst.data(), burst.size());
  for (auto _ : state) {
    ok = ok && ReadResponses(fd, &dec, depth, &errors) &&
         WriteAll(fd, burst.data(), burst.size());
    if (!ok) {
      state.SkipWithError("connection lost");
      break;
    }
  }
  if (ok) ReadResponses(fd, &dec, depth, &errors);
  close(fd);
  state.counters["inferences_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * depth),
                         benchmark::Counter::kIsRate);
  state.counters["errors"] = benchmark::Counter(
      static_cast<double>(errors), benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_Throughput)
    ->ArgName("depth")
    ->Arg(1)
    ->Arg(32)
    ->Threads(1)
    ->Threads(2)
    ->Threads(8)
    ->Threads(64)
    ->UseRealTime()
    ->MinTime(1.0);

void BM_ManyConnections(benchmark::State& state) {
  constexpr int kConnections = 1000;
  const std::vector<uint8_t> frame = InferFrame(1);
  int64_t errors = 0;
  long rss_before = Daemon::Get().RssKb(), rss_after = 0;
  for (auto _ : state) {
    std::vector<int> fds;
    for (int i = 0; i < kConnections; ++i) {
      const int fd = Connect();
      if (fd < 0) {
        ++errors;
        continue;
      }
      fds.push_back(fd);
    }
    for (int fd : fds) {
      if (!WriteAll(fd, frame.data(), frame.size())) ++errors;
    }
    for (int fd : fds) {
      FrameDecoder dec(1 << 20);
      if (!ReadResponses(fd, &dec, 1, &errors)) ++errors;
    }
    rss_after = std::max(rss_after, Daemon::Get().RssKb());
    for (int fd : fds) close(fd);
  }
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["rss_before_kb"] = static_cast<double>(rss_before);
  state.counters["rss_peak_kb"] = static_cast<double>(rss_after);
  state.SetItemsProcessed(state.iterations() * kConnections);
}
BENCHMARK(BM_ManyConnections)->UseRealTime()->Iterations(20);

}  // namespace

BENCHMARK_MAIN();
