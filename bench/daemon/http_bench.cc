// The HTTP face against the native socket, in the same run (docs/http.md,
// docs/performance.md "The HTTP face").
//
//   BM_InferRoundTrip  one client, one request at a time, alternating: an
//                      Infer of one demo-model row over the native socket,
//                      and the same row as POST /v1/infer over the HTTP
//                      unix socket (keep-alive). Reports each p50/p99 in
//                      microseconds and http_over_native (p50 ratio).
//   BM_FirstToken      time to first token of a small random-weight
//                      language model, alternating: the native Generate
//                      stream's first token frame, and the first token
//                      chunk of POST /v1/completions with "stream": true
//                      over the HTTP unix socket. Reports p50s and
//                      sse_over_native.
//
// Run: build/bench/daemon/http_bench   (starts two ternd processes itself)
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
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

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int ConnectUnix(const std::string& path) {
  for (int i = 0; i < 400; ++i) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      return fd;
    }
    close(fd);
    usleep(25000);
  }
  std::fprintf(stderr, "cannot connect to %s\n", path.c_str());
  std::exit(1);
}

void WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w <= 0) std::exit(1);
    c += w;
    n -= static_cast<size_t>(w);
  }
}

// A ternd on a config of its own, in a temporary directory.
class Daemon {
 public:
  Daemon(const std::string& name, const std::string& config_tail) {
    dir_ = std::filesystem::temp_directory_path() /
           ("ternd-http-bench-" + name + "-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "ternd.toml")
        << "[server]\nsocket = \"" << socket() << "\"\n[http]\nsocket = \""
        << http_socket() << "\"\n"
        << config_tail;
    pid_ = fork();
    if (pid_ == 0) {
      chdir(dir_.c_str());
      execl(TERND_DAEMON_PATH, "ternd", "--config", "ternd.toml", nullptr);
      _exit(127);
    }
    close(ConnectUnix(socket()));
    close(ConnectUnix(http_socket()));
  }
  ~Daemon() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    std::filesystem::remove_all(dir_);
  }
  std::string socket() const { return (dir_ / "t.sock").string(); }
  std::string http_socket() const { return (dir_ / "h.sock").string(); }
  std::string file(const char* n) const { return (dir_ / n).string(); }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

// Native framed calls on one connection.
class Native {
 public:
  explicit Native(const std::string& path)
      : fd_(ConnectUnix(path)), decoder_(64 << 20) {}
  ~Native() { close(fd_); }
  void Send(const ternd::wire::Request& r) {
    out_.clear();
    ternd::wire::AppendFrame(r, SIZE_MAX, &out_);
    WriteAll(fd_, out_.data(), out_.size());
  }
  void Receive(ternd::wire::Response* r) {
    std::span<const uint8_t> payload;
    uint32_t announced;
    for (;;) {
      if (decoder_.TakeFrame(&payload, &announced) ==
          ternd::wire::FrameDecoder::Next::kFrame) {
        r->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
        return;
      }
      std::span<uint8_t> space = decoder_.WritableSpace(65536);
      const ssize_t n = read(fd_, space.data(), space.size());
      if (n <= 0) std::exit(1);
      decoder_.Commit(static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  ternd::wire::FrameDecoder decoder_;
  std::vector<uint8_t> out_;
};

// HTTP/1.1 keep-alive on one connection: requests with a body, answers
// with Content-Length or chunked.
class Http {
 public:
  explicit Http(const std::string& path) : fd_(ConnectUnix(path)) {}
  ~Http() { close(fd_); }
  void Post(const std::string& target, const std::string& body) {
    const std::string req = "POST " + target +
                            " HTTP/1.1\r\nHost: localhost\r\n"
                            "Content-Type: application/json\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    WriteAll(fd_, req.data(), req.size());
  }
  void ReadMore() {
    char tmp[65536];
    const ssize_t n = read(fd_, tmp, sizeof(tmp));
    if (n <= 0) std::exit(1);
    buf_.append(tmp, static_cast<size_t>(n));
  }
  // Reads until `needle` is in what arrived since the last Consume().
  void ReadUntil(std::string_view needle) {
    while (buf_.find(needle) == std::string::npos) ReadMore();
  }
  // A whole Content-Length answer.
  void ReadAnswer() {
    ReadUntil("\r\n\r\n");
    const size_t head = buf_.find("\r\n\r\n") + 4;
    const size_t cl = buf_.find("Content-Length: ");
    const size_t len = std::strtoul(buf_.c_str() + cl + 16, nullptr, 10);
    while (buf_.size() < head + len) ReadMore();
    Consume(head + len);
  }
  void Consume(size_t n) { buf_.erase(0, n); }
  void ConsumeAll() { Consume(buf_.size()); }
  const std::string& buffer() const { return buf_; }

 private:
  int fd_;
  std::string buf_;
};

double Percentile(std::vector<int64_t> v, double p) {
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[static_cast<size_t>(p * (v.size() - 1))]) /
         1000.0;
}

void BM_InferRoundTrip(benchmark::State& state) {
  static Daemon daemon("graph",
                       "[runtime]\nmodel = \"" TERND_DEMO_MODEL "\"\n");
  Native native(daemon.socket());
  Http http(daemon.http_socket());
  ternd::wire::Request request;
  request.set_id(1);
  ternd::wire::Tensor* t = request.mutable_infer()->add_inputs();
  t->set_name("x");
  t->set_dtype(ternd::wire::F32);
  t->add_shape(1);
  t->add_shape(16);
  std::vector<float> row(16);
  std::string json = R"({"inputs": {"x": [[)";
  for (int i = 0; i < 16; ++i) {
    row[i] = 0.1f * static_cast<float>(i);
    json += (i ? "," : "") + std::to_string(row[i]);
  }
  json += "]]}}";
  t->set_data(row.data(), row.size() * 4);
  ternd::wire::Response response;
  std::vector<int64_t> n_ns, h_ns;
  for (int i = 0; i < 200; ++i) {  // warm both paths
    native.Send(request);
    native.Receive(&response);
    http.Post("/v1/infer", json);
    http.ReadAnswer();
  }
  for (auto _ : state) {
    int64_t t0 = NowNs();
    native.Send(request);
    native.Receive(&response);
    n_ns.push_back(NowNs() - t0);
    t0 = NowNs();
    http.Post("/v1/infer", json);
    http.ReadAnswer();
    h_ns.push_back(NowNs() - t0);
  }
  state.counters["native_p50_us"] = Percentile(n_ns, 0.5);
  state.counters["native_p99_us"] = Percentile(n_ns, 0.99);
  state.counters["http_p50_us"] = Percentile(h_ns, 0.5);
  state.counters["http_p99_us"] = Percentile(h_ns, 0.99);
  state.counters["http_over_native"] =
      Percentile(h_ns, 0.5) / Percentile(n_ns, 0.5);
}
BENCHMARK(BM_InferRoundTrip)->Iterations(3000)->UseRealTime();

void BM_FirstToken(benchmark::State& state) {
  static Daemon lm_daemon = [] {
    const std::string dir = std::filesystem::temp_directory_path() /
                            ("ternd-http-bench-lm-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string make =
        std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH +
        " --arch bitnet-b1.58 --hidden 256 --ffn 512 --layers 4 --heads 4 "
        "--vocab 600 --seed 3 -o " +
        dir + "/lm.gguf && " + TERNCTL_PATH + " convert " + dir +
        "/lm.gguf -o " + dir + "/lm.tern > /dev/null";
    if (std::system(make.c_str()) != 0) std::exit(1);
    return Daemon("lm", "[runtime]\nmodel = \"" + dir +
                                "/lm.tern\"\narena_mb = 64\n[llm]\n"
                                "threads = 1\nmax_context = 256\n");
  }();
  Daemon* daemon = &lm_daemon;
  Native native(daemon->socket());
  Http http(daemon->http_socket());
  const std::string prompt =
      "the left motor stalled twice while the arm was moving";
  ternd::wire::Request request;
  request.set_id(1);
  request.mutable_generate()->set_prompt(prompt);
  request.mutable_generate()->set_max_tokens(2);
  const std::string json = R"({"prompt": ")" + prompt +
                           R"(", "max_tokens": 2, "temperature": 0, )"
                           R"("stream": true})";
  ternd::wire::Response response;
  std::vector<int64_t> n_ns, h_ns;
  auto run = [&](bool record) {
    int64_t t0 = NowNs();
    native.Send(request);
    bool first = true;
    do {
      native.Receive(&response);
      if (first && record) n_ns.push_back(NowNs() - t0);
      first = false;
    } while (!response.final());
    t0 = NowNs();
    http.Post("/v1/completions", json);
    http.ReadUntil("data: {");
    if (record) h_ns.push_back(NowNs() - t0);
    http.ReadUntil("data: [DONE]\n\n\r\n0\r\n\r\n");
    http.ConsumeAll();
  };
  for (int i = 0; i < 20; ++i) run(false);
  for (auto _ : state) run(true);
  state.counters["native_p50_us"] = Percentile(n_ns, 0.5);
  state.counters["sse_p50_us"] = Percentile(h_ns, 0.5);
  state.counters["sse_over_native"] =
      Percentile(h_ns, 0.5) / Percentile(n_ns, 0.5);
}
BENCHMARK(BM_FirstToken)->Iterations(200)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
