// Integration tests: the real ternd binary on a temporary socket, driven over
// the real socket with the C++ client library and raw bytes.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "daemon/client/client.h"
#include "daemon/frame.h"
#include "runtime/format.h"
#include "runtime/runtime.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon_testing {
namespace {

using client::Client;
using ::testing::HasSubstr;

constexpr int kInvalidArgument = 3;
constexpr int kDeadlineExceeded = 4;
constexpr int kPermissionDenied = 7;
constexpr int kResourceExhausted = 8;
constexpr int kUnavailable = 14;
// [runtime] line for tests whose requests must stay queued or running for a
// while: with the reference kernel a SlowModel request of 32-64 rows
// computes for about a second, far longer than a loaded machine needs to
// read the requests sent with it.
constexpr const char* kRefKernel = "kernel = \"ref\"";

wire::InferRequest MakeInfer(const TestModelSpec& spec, uint32_t rows,
                             uint32_t seed) {
  wire::InferRequest r;
  const std::vector<float> x = TestInput(spec, rows, seed);
  client::AddF32Input(&r, "x", rows, spec.inputs, x);
  return r;
}

wire::Request Wrap(uint64_t id, const wire::InferRequest& infer) {
  wire::Request r;
  r.set_id(id);
  *r.mutable_infer() = infer;
  return r;
}

// The model run in this process: what the daemon must answer, bit for bit.
class Reference {
 public:
  explicit Reference(const TestModelSpec& spec) : spec_(spec) {
    Result<std::vector<uint8_t>> bytes = BuildTestModel(spec);
    EXPECT_TRUE(bytes.ok());
    Result<runtime::ModelFile> f =
        runtime::ModelFile::Parse(std::move(*bytes), "reference");
    EXPECT_TRUE(f.ok());
    file_ = std::make_unique<runtime::ModelFile>(std::move(*f));
    runtime::RuntimeOptions o;
    o.slots = 1;
    o.arena_bytes = 64 << 20;
    runtime_ = std::move(runtime::Runtime::Create(o).value());
    model_ = *runtime_->Load(0, *file_);
  }
  std::vector<float> Probs(uint32_t rows, uint32_t seed) {
    const std::vector<float> x = TestInput(spec_, rows, seed);
    runtime::Executor ex = model_->executor(0);
    std::copy(x.begin(), x.end(), ex.input(0));
    EXPECT_TRUE(ex.Invoke(static_cast<int>(rows)).ok());
    return std::vector<float>(ex.output_f32(0),
                              ex.output_f32(0) + rows * spec_.classes);
  }

 private:
  TestModelSpec spec_;
  std::unique_ptr<runtime::ModelFile> file_;
  std::unique_ptr<runtime::Runtime> runtime_;
  const runtime::LoadedModel* model_;
};

std::vector<float> ProbsOf(const wire::InferResponse& r) {
  for (const wire::Tensor& t : r.outputs()) {
    if (t.name() == "probs") {
      std::span<const float> d = client::F32Data(t);
      return std::vector<float>(d.begin(), d.end());
    }
  }
  return {};
}

class DaemonTest : public ::testing::Test {
 protected:
  std::string socket_path() const { return dir_.File("t.sock"); }

  // Writes `spec` as the model and a configuration, starts the daemon and
  // waits for READY=1.
  std::unique_ptr<DaemonProcess> Start(const std::string& server_extra = "",
                                       int workers = 2,
                                       const TestModelSpec& spec = FastModel(),
                                       const std::string& runtime_extra = "") {
    EXPECT_TRUE(WriteTestModel(spec, dir_.File("model.tern")).ok());
    WriteConfig(server_extra, workers, runtime_extra);
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    auto d = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(d->WaitForNotify("READY=1")) << d->Log();
    return d;
  }

  void WriteConfig(const std::string& server_extra, int workers,
                   const std::string& runtime_extra,
                   const std::string& model = "model.tern") {
    WriteText(dir_.File("ternd.toml"),
              "[server]\nsocket = \"" + socket_path() + "\"\n" + server_extra +
                  "\n[runtime]\nmodel = \"" + dir_.File(model) +
                  "\"\narena_mb = 64\nworkers = " + std::to_string(workers) +
                  "\n" + runtime_extra + "\n");
  }

  std::unique_ptr<Client> Connect(int timeout_ms = 20000) {
    client::ClientOptions o;
    o.timeout_ms = timeout_ms;
    Result<std::unique_ptr<Client>> c = Client::Connect(socket_path(), o);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  uint64_t StatusCount(Client* c, const std::string& code) {
    Result<wire::StatsResponse> s = c->Stats();
    EXPECT_TRUE(s.ok());
    for (const wire::StatusCount& sc : s->responses()) {
      if (sc.code() == code) return sc.count();
    }
    return 0;
  }

  // A fresh raw connection, for sending bytes the client would not.
  int RawConnect() {
    const int fd = ::ternd::testing::ConnectUnixSocket(socket_path());
    EXPECT_GE(fd, 0) << strerror(errno);
    return fd;
  }

  TempDir dir_;
};

// Waits until the daemon reports at least `n` Infer calls queued or running
// (asked on `probe`, a connection of its own), instead of sleeping and hoping
// a loaded machine has read them.
::testing::AssertionResult WaitForQueueDepth(Client* probe, uint64_t n) {
  uint64_t depth = 0;
  for (int i = 0; i < 5000; ++i) {
    Result<wire::StatsResponse> st = probe->Stats();
    if (!st.ok()) {
      return ::testing::AssertionFailure() << st.status().message();
    }
    depth = st->queue_depth();
    if (depth >= n) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ::testing::AssertionFailure()
         << "queue depth stayed at " << depth << ", expected " << n;
}

TEST_F(DaemonTest, ReadyAndStatusAreNotifiedAndSocketIs0660) {
  auto d = Start();
  EXPECT_TRUE(d->WaitForNotify("STATUS=Serving model 'testnet' version 1"));
  struct stat st;
  ASSERT_EQ(stat(socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0) << d->Log();
  EXPECT_TRUE(d->WaitForNotify("STOPPING=1"));
  // The daemon removes the socket it created.
  EXPECT_NE(stat(socket_path().c_str(), &st), 0);
}

TEST_F(DaemonTest, LoopPingsTheWatchdog) {
  ASSERT_TRUE(WriteTestModel(FastModel(), dir_.File("model.tern")).ok());
  WriteConfig("", 1, "");
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  o.extra_env = {"WATCHDOG_USEC=200000"};
  DaemonProcess d(o);
  ASSERT_TRUE(d.WaitForNotify("READY=1")) << d.Log();
  // sd-event pings at half the interval or more often; expect several.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  d.WaitForNotify("@none@", 10);
  int pings = 0;
  for (const std::string& n : d.notifications()) {
    if (n.find("WATCHDOG=1") != std::string::npos) ++pings;
  }
  EXPECT_GE(pings, 3);
  EXPECT_THAT(d.Log(), HasSubstr("watchdog enabled"));
}

TEST_F(DaemonTest, AThousandConcurrentConnections) {
  auto d = Start("max_connections = 1100");
  constexpr int kConnections = 1000;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(Connect());
    ASSERT_NE(clients.back(), nullptr) << i;
  }
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_TRUE(
        clients[i]->Send(Wrap(i + 1, MakeInfer(FastModel(), 1, i % 50))).ok());
  }
  Reference ref(FastModel());
  int errors = 0;
  for (int i = 0; i < kConnections; ++i) {
    wire::Response r;
    if (!clients[i]->Receive(&r).ok() || r.status().code() != 0 ||
        r.id() != static_cast<uint64_t>(i + 1) ||
        ProbsOf(r.infer()) != ref.Probs(1, i % 50)) {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 0);
  Result<wire::StatsResponse> s = clients[0]->Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->connections(), static_cast<uint64_t>(kConnections));
}

TEST_F(DaemonTest, ServesEmbeddedDefaultWithoutAConfig) {
  ASSERT_EQ(mkdir(dir_.File("models").c_str(), 0755), 0);
  ASSERT_TRUE(
      WriteTestModel(FastModel(), dir_.File("models/digits.tern")).ok());
  DaemonOptions o;
  o.directory = dir_.path();
  DaemonProcess d(o);
  ASSERT_TRUE(d.WaitForNotify("READY=1")) << d.Log();
  // Socket under the working directory.
  Result<std::unique_ptr<Client>> c = Client::Connect(dir_.File("ternd.sock"));
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<wire::InferResponse> r = (*c)->Infer(MakeInfer(FastModel(), 1, 1));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model(), "testnet");
  EXPECT_THAT(d.Log(), HasSubstr("embedded default"));
}

TEST_F(DaemonTest, InferMatchesTheRuntimeBitForBit) {
  auto d = Start();
  auto c = Connect();
  Reference ref(FastModel());
  for (uint32_t rows : {1u, 3u, 16u}) {
    Result<wire::InferResponse> r =
        c->Infer(MakeInfer(FastModel(), rows, rows));
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->model(), "testnet");
    EXPECT_EQ(r->model_version(), 1u);
    ASSERT_EQ(r->outputs_size(), 2);
    EXPECT_EQ(r->outputs(0).name(), "probs");
    EXPECT_EQ(r->outputs(0).dtype(), wire::F32);
    EXPECT_THAT(r->outputs(0).shape(), ::testing::ElementsAre(rows, 4u));
    EXPECT_EQ(r->outputs(1).name(), "class");
    EXPECT_EQ(r->outputs(1).dtype(), wire::I32);
    EXPECT_EQ(ProbsOf(*r), ref.Probs(rows, rows));
  }
  // Asking for one output returns only that one.
  wire::InferRequest only = MakeInfer(FastModel(), 2, 5);
  only.add_outputs("class");
  Result<wire::InferResponse> r = c->Infer(only);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->outputs_size(), 1);
  EXPECT_EQ(r->outputs(0).name(), "class");
  EXPECT_EQ(client::I32Data(r->outputs(0)).size(), 2u);
}

TEST_F(DaemonTest, AcceptsInt8InputsAndShapelessTensors) {
  auto d = Start();
  auto c = Connect();
  wire::InferRequest r;
  wire::Tensor* t = r.add_inputs();
  t->set_name("x");
  t->set_dtype(wire::I8);
  t->set_data(std::string(2 * 16, '\x05'));  // no shape: 2 rows by size
  Result<wire::InferResponse> got = c->Infer(r);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_THAT(got->outputs(0).shape(), ::testing::ElementsAre(2u, 4u));
}

TEST_F(DaemonTest, ModelInfoHealthAndStats) {
  auto d = Start("", 2);
  auto c = Connect();
  Result<wire::ModelInfoResponse> info = c->ModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->name(), "testnet");
  EXPECT_EQ(info->version(), 1u);
  ASSERT_EQ(info->inputs_size(), 1);
  EXPECT_EQ(info->inputs(0).name(), "x");
  EXPECT_EQ(info->inputs(0).features(), 16u);
  ASSERT_EQ(info->outputs_size(), 2);
  EXPECT_EQ(info->outputs(1).dtype(), wire::I32);
  EXPECT_EQ(info->max_batch(), 16u);
  EXPECT_FALSE(info->kernel().empty());
  EXPECT_EQ(info->arena_bytes(), 64u << 20);
  EXPECT_GT(info->slot_bytes_used(), 0u);
  EXPECT_LE(info->slot_bytes_used(), info->slot_bytes());
  EXPECT_EQ(info->workers(), 2u);
  EXPECT_EQ(info->swap(), "hot");

  Result<wire::HealthResponse> h = c->Health();
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->live());
  EXPECT_TRUE(h->ready());
  EXPECT_EQ(h->state(), "serving");

  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(c->Infer(MakeInfer(FastModel(), 2, i)).ok());
  Result<wire::StatsResponse> s = c->Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->inferences_total(), 20u);
  EXPECT_EQ(s->connections(), 1u);
  EXPECT_GT(s->latency_p50_us(), 0);
  EXPECT_GE(s->latency_p99_us(), s->latency_p50_us());
  EXPECT_EQ(s->queue_depth(), 0u);
  EXPECT_EQ(StatusCount(c.get(), "OK"), 13u);  // info, health, 10, stats
}

// Reads one unlabelled counter from the Stats call's Prometheus text.
double PrometheusValue(const wire::StatsResponse& s, const std::string& name) {
  const std::string& text = s.prometheus_text();
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + name.size() + 2, nullptr);
}

// `n` Infer calls of 3 rows, each sent when the one before was answered,
// checked against the reference.
void InferOneAfterAnother(Client* c, Reference* ref, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    Result<wire::InferResponse> r = c->Infer(MakeInfer(FastModel(), 3, i));
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(ProbsOf(*r), ref->Probs(3, i));
  }
}

TEST_F(DaemonTest, SmallModelRunsInlineWhenNoWorkerIsBusy) {
  // A generous bound so a loaded machine cannot change the outcome: every
  // request after the first (which measures the model) runs on the loop.
  auto d = Start("", 2, FastModel(), "inline_max_us = 100000");
  auto c = Connect();
  Reference ref(FastModel());
  ASSERT_NO_FATAL_FAILURE(InferOneAfterAnother(c.get(), &ref, 20));
  Result<wire::StatsResponse> s = c->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(PrometheusValue(*s, "ternd_inline_requests_total"), 19);
  EXPECT_EQ(s->inferences_total(), 60u);

  // Pipelined: the loop reads the burst and runs each request in turn (the
  // one before it has finished by then); every answer is right.
  for (uint32_t i = 0; i < 32; ++i) {
    ASSERT_TRUE(c->Send(Wrap(100 + i, MakeInfer(FastModel(), 1, i))).ok());
  }
  for (int i = 0; i < 32; ++i) {
    wire::Response got;
    ASSERT_TRUE(c->Receive(&got).ok());
    ASSERT_EQ(got.status().code(), 0);
    EXPECT_EQ(ProbsOf(got.infer()),
              ref.Probs(1, static_cast<uint32_t>(got.id() - 100)));
  }
}

TEST_F(DaemonTest, InlineZeroSendsEveryRequestToTheWorkers) {
  auto d = Start("", 2, FastModel(), "inline_max_us = 0");
  auto c = Connect();
  Reference ref(FastModel());
  ASSERT_NO_FATAL_FAILURE(InferOneAfterAnother(c.get(), &ref, 20));
  Result<wire::StatsResponse> s = c->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(PrometheusValue(*s, "ternd_inline_requests_total"), 0);
}

TEST_F(DaemonTest, SlowModelStaysOnTheWorkers) {
  // SlowModel computes for far longer than 25 us per row: never inline, so
  // the loop keeps answering other calls while it runs.
  const TestModelSpec slow = SlowModel();
  auto d = Start("", 2, slow);
  auto c = Connect();
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(c->Infer(MakeInfer(slow, 1, i)).ok());
  }
  Result<wire::StatsResponse> s = c->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(PrometheusValue(*s, "ternd_inline_requests_total"), 0);
}

// utime + stime of a process, in milliseconds.
double ProcessCpuMs(pid_t pid) {
  return ::ternd::testing::ProcessCpuSeconds(pid) * 1000.0;
}

TEST_F(DaemonTest, BusyPollKeepsTheLoopPollingAfterARequest) {
  auto d = Start("busy_poll_us = 1000000", 1);
  client::ClientOptions o;
  o.busy_poll_us = 1000;
  Result<std::unique_ptr<Client>> c = Client::Connect(socket_path(), o);
  ASSERT_TRUE(c.ok());
  Reference ref(FastModel());
  Result<wire::InferResponse> r = (*c)->Infer(MakeInfer(FastModel(), 2, 7));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(ProbsOf(*r), ref.Probs(2, 7));
  // For a second after that request the loop polls instead of sleeping:
  // the daemon burns CPU while no request comes.
  const double before = ProcessCpuMs(d->pid());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_GT(ProcessCpuMs(d->pid()) - before, 80);
}

TEST_F(DaemonTest, IdleDaemonSleeps) {
  auto d = Start("", 1);
  auto c = Connect();
  ASSERT_TRUE(c->Infer(MakeInfer(FastModel(), 2, 7)).ok());
  const double before = ProcessCpuMs(d->pid());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_LT(ProcessCpuMs(d->pid()) - before, 40);
}

TEST_F(DaemonTest, PipelinedRequestsAllAnsweredWithTheirIds) {
  auto d = Start("max_inflight_per_connection = 1000", 2);
  auto c = Connect();
  Reference ref(FastModel());
  constexpr int kRequests = 300;
  for (int i = 1; i <= kRequests; ++i) {
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(FastModel(), 1 + i % 4, i))).ok());
  }
  std::set<uint64_t> seen;
  for (int i = 0; i < kRequests; ++i) {
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    ASSERT_EQ(r.status().code(), 0) << r.status().message();
    EXPECT_TRUE(seen.insert(r.id()).second) << "duplicate id " << r.id();
    const uint32_t id = static_cast<uint32_t>(r.id());
    EXPECT_EQ(ProbsOf(r.infer()), ref.Probs(1 + id % 4, id)) << id;
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(*seen.begin(), 1u);
  EXPECT_EQ(*seen.rbegin(), static_cast<uint64_t>(kRequests));
}

TEST_F(DaemonTest, FastRequestOvertakesASlowOne) {
  // The reference kernel: 64 rows take about a second, one row about 1/64
  // of that, whatever else the machine is doing.
  const TestModelSpec slow = SlowModel();
  auto d = Start("", 2, slow, kRefKernel);
  auto c = Connect();
  ASSERT_TRUE(c->Send(Wrap(1, MakeInfer(slow, 64, 1))).ok());
  ASSERT_TRUE(WaitForQueueDepth(Connect().get(), 1));  // the slow one runs
  ASSERT_TRUE(c->Send(Wrap(2, MakeInfer(slow, 1, 2))).ok());
  wire::Response first, second;
  ASSERT_TRUE(c->Receive(&first).ok());
  ASSERT_TRUE(c->Receive(&second).ok());
  EXPECT_EQ(first.id(), 2u);
  EXPECT_EQ(second.id(), 1u);
  EXPECT_EQ(first.status().code(), 0);
  EXPECT_EQ(second.status().code(), 0);
}

TEST_F(DaemonTest, ConcurrentClients) {
  auto d = Start("", 2);
  Reference ref(FastModel());
  std::vector<std::vector<float>> expected;
  for (uint32_t i = 0; i < 50; ++i) expected.push_back(ref.Probs(2, i));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto c = Client::Connect(socket_path());
      if (!c.ok()) {
        ++failures;
        return;
      }
      for (uint32_t i = 0; i < 50; ++i) {
        const uint32_t seed = (i + static_cast<uint32_t>(t) * 7) % 50;
        Result<wire::InferResponse> r =
            (*c)->Infer(MakeInfer(FastModel(), 2, seed));
        if (!r.ok() || ProbsOf(*r) != expected[seed]) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(DaemonTest, InvalidRequestsGetInvalidArgumentAndKeepTheConnection) {
  auto d = Start();
  auto c = Connect();
  struct Case {
    const char* what;
    wire::InferRequest request;
    const char* message;
  };
  std::vector<Case> cases;
  {
    wire::InferRequest r = MakeInfer(FastModel(), 1, 1);
    r.mutable_inputs(0)->set_name("y");
    cases.push_back({"unknown input", r, "'y' is not an input"});
  }
  {
    wire::InferRequest r;
    const std::vector<float> v(15);
    client::AddF32Input(&r, "x", 1, 15, v);
    cases.push_back({"wrong features", r, "model takes 16"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 1, 1);
    r.mutable_inputs(0)->set_dtype(wire::I32);
    cases.push_back({"bad dtype", r, "has dtype"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 17, 1);
    cases.push_back({"batch too large", r, "takes 1..16"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 2, 1);
    r.mutable_inputs(0)->mutable_data()->resize(10);
    cases.push_back({"short data", r, "bytes of data"});
  }
  {
    wire::InferRequest r;
    cases.push_back({"missing input", r, "input 'x'"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 1, 1);
    *r.add_inputs() = r.inputs(0);
    cases.push_back({"input twice", r, "given twice"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 1, 1);
    r.add_outputs("nope");
    cases.push_back({"unknown output", r, "'nope' is not an output"});
  }
  {
    wire::InferRequest r = MakeInfer(FastModel(), 1, 1);
    float nan = std::nanf("");
    std::memcpy(r.mutable_inputs(0)->mutable_data()->data(), &nan, 4);
    cases.push_back({"not finite", r, "finite"});
  }
  for (const Case& k : cases) {
    Result<wire::InferResponse> r = c->Infer(k.request);
    ASSERT_FALSE(r.ok()) << k.what;
    EXPECT_EQ(static_cast<int>(r.status().code()), kInvalidArgument) << k.what;
    EXPECT_THAT(r.status().message(), HasSubstr(k.message)) << k.what;
  }
  // Same connection still serves.
  EXPECT_TRUE(c->Infer(MakeInfer(FastModel(), 1, 1)).ok());
  // A request with no call, and a Generate on a graph model.
  wire::Request empty;
  empty.set_id(77);
  ASSERT_TRUE(c->Send(empty).ok());
  wire::Response resp;
  ASSERT_TRUE(c->Receive(&resp).ok());
  EXPECT_EQ(resp.id(), 77u);
  EXPECT_EQ(resp.status().code(), kInvalidArgument);
  wire::Request gen;
  gen.set_id(78);
  gen.mutable_generate()->set_prompt("hi");
  ASSERT_TRUE(c->Send(gen).ok());
  ASSERT_TRUE(c->Receive(&resp).ok());
  EXPECT_EQ(resp.id(), 78u);
  // A graph model does not generate (docs/protocol.md).
  EXPECT_EQ(resp.status().code(),
            static_cast<int>(StatusCode::kFailedPrecondition));
  EXPECT_NE(resp.status().message().find("Generate needs a language model"),
            std::string::npos);
  EXPECT_TRUE(resp.final());
}

TEST_F(DaemonTest, InflightPerConnectionLimit) {
  const TestModelSpec slow = SlowModel();
  // The reference kernel: each request computes for far longer than the
  // daemon needs to read all five, even on a loaded machine.
  auto d = Start("max_inflight_per_connection = 2", 1, slow, kRefKernel);
  auto c = Connect();
  for (int i = 1; i <= 5; ++i)
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(slow, 32, i))).ok());
  std::map<uint64_t, wire::Response> got;
  for (int i = 0; i < 5; ++i) {
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    got[r.id()] = r;
  }
  EXPECT_EQ(got[1].status().code(), 0);
  EXPECT_EQ(got[2].status().code(), 0);
  for (int i = 3; i <= 5; ++i) {
    EXPECT_EQ(got[i].status().code(), kResourceExhausted) << i;
    EXPECT_THAT(got[i].status().message(),
                HasSubstr("max_inflight_per_connection"));
  }
  // Another connection is not affected by this one's limit.
  auto other = Connect();
  EXPECT_TRUE(other->Infer(MakeInfer(slow, 1, 1)).ok());
}

TEST_F(DaemonTest, TotalQueueDepthLimit) {
  const TestModelSpec slow = SlowModel();
  auto d = Start("max_queue_depth = 2", 1, slow, kRefKernel);
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a->Send(Wrap(1, MakeInfer(slow, 64, 1))).ok());
  ASSERT_TRUE(a->Send(Wrap(2, MakeInfer(slow, 64, 2))).ok());
  // Wait until the daemon holds both (one on the worker, one queued) rather
  // than guessing with a sleep: a loaded machine reads them late.
  ASSERT_TRUE(WaitForQueueDepth(b.get(), 2));
  Result<wire::InferResponse> r = b->Infer(MakeInfer(slow, 1, 3));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(static_cast<int>(r.status().code()), kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("max_queue_depth"));
  wire::Response x;
  ASSERT_TRUE(a->Receive(&x).ok());
  ASSERT_TRUE(a->Receive(&x).ok());
  EXPECT_TRUE(b->Infer(MakeInfer(slow, 1, 3)).ok());
}

TEST_F(DaemonTest, ConnectionLimit) {
  auto d = Start("max_connections = 2", 1);
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a->Health().ok());
  ASSERT_TRUE(b->Health().ok());
  auto c = Connect();
  wire::Response r;
  ASSERT_TRUE(c->Receive(&r).ok());
  EXPECT_EQ(r.id(), 0u);
  EXPECT_EQ(r.status().code(), kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("max_connections"));
  Status s = c->Receive(&r);
  EXPECT_FALSE(s.ok());  // closed
  a.reset();
  // A freed place is available again.
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto again = Connect();
    if (again->Health().ok()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL() << "no connection accepted after one closed";
}

TEST_F(DaemonTest, DeadlineExceededWhileQueued) {
  const TestModelSpec slow = SlowModel();
  auto d = Start("", 1, slow, kRefKernel);
  auto c = Connect();
  ASSERT_TRUE(c->Send(Wrap(1, MakeInfer(slow, 64, 1))).ok());
  wire::InferRequest quick = MakeInfer(slow, 1, 2);
  quick.set_deadline_us(1000);
  ASSERT_TRUE(c->Send(Wrap(2, quick)).ok());
  std::map<uint64_t, wire::Response> got;
  for (int i = 0; i < 2; ++i) {
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    got[r.id()] = r;
  }
  EXPECT_EQ(got[1].status().code(), 0);
  EXPECT_EQ(got[2].status().code(), kDeadlineExceeded);
  // A generous deadline is met.
  wire::InferRequest fine = MakeInfer(slow, 1, 3);
  fine.set_deadline_us(10000000);
  EXPECT_TRUE(c->Infer(fine).ok());
}

TEST_F(DaemonTest, OversizedFrameGetsAnErrorAndOnlyThatConnectionCloses) {
  auto d = Start("max_frame_bytes = 4096");
  auto bystander = Connect();
  auto c = Connect();
  const uint8_t header[4] = {0x01, 0x20, 0, 0};  // 8193 bytes announced
  ASSERT_EQ(write(c->fd(), header, 4), 4);
  wire::Response r;
  ASSERT_TRUE(c->Receive(&r).ok());
  EXPECT_EQ(r.id(), 0u);
  EXPECT_EQ(r.status().code(), kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("max_frame_bytes"));
  EXPECT_FALSE(c->Receive(&r).ok());  // then closed
  EXPECT_TRUE(bystander->Health().ok());
  // A large request the client builds is refused the same way.
  auto c2 = Connect();
  Result<wire::InferResponse> big =
      c2->Infer(MakeInfer(FastModel(), 16, 1) /*1 KiB*/);
  EXPECT_TRUE(big.ok());
  wire::InferRequest huge;
  const std::vector<float> v(16 * 100);
  client::AddF32Input(&huge, "x", 100, 16, v);  // 6.4 KB
  Result<wire::InferResponse> r2 = c2->Infer(huge);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(static_cast<int>(r2.status().code()), kResourceExhausted);
}

TEST_F(DaemonTest, MalformedFrameGetsAnErrorThenClose) {
  auto d = Start();
  auto c = Connect();
  const uint8_t frame[9] = {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
  ASSERT_EQ(write(c->fd(), frame, sizeof(frame)),
            static_cast<ssize_t>(sizeof(frame)));
  wire::Response r;
  ASSERT_TRUE(c->Receive(&r).ok());
  EXPECT_EQ(r.id(), 0u);
  EXPECT_EQ(r.status().code(), kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("not a valid Request"));
  EXPECT_FALSE(c->Receive(&r).ok());
  auto other = Connect();
  Result<wire::StatsResponse> s = other->Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->frames_rejected(), 1u);
}

TEST_F(DaemonTest, InvalidUtf8IsAMalformedFrame) {
  auto d = Start();
  for (int i = 0; i < 10; ++i) {
    auto c = Connect();
    wire::Request r;
    r.set_id(1);
    r.mutable_infer()->add_outputs("ok");
    std::vector<uint8_t> bytes;
    ASSERT_TRUE(wire::AppendFrame(r, 1 << 20, &bytes));
    bytes[bytes.size() - 1] = 0xff;  // "ok" -> "o\xff": not UTF-8
    ASSERT_EQ(write(c->fd(), bytes.data(), bytes.size()),
              static_cast<ssize_t>(bytes.size()));
    wire::Response resp;
    ASSERT_TRUE(c->Receive(&resp).ok());
    EXPECT_EQ(resp.status().code(), kInvalidArgument);
    EXPECT_THAT(resp.status().message(), HasSubstr("not a valid Request"));
  }
  auto c = Connect();
  EXPECT_TRUE(c->Health().ok());
}

TEST_F(DaemonTest, TruncatedFrameThenHangUpLeavesTheDaemonServing) {
  auto d = Start();
  wire::Request health;
  health.set_id(1);
  health.mutable_health();
  for (int i = 0; i < 20; ++i) {
    auto c = Connect();
    // A whole Health request and the start of a second frame in one write:
    // once Health is answered, the daemon holds the partial frame.
    std::vector<uint8_t> bytes;
    ASSERT_TRUE(wire::AppendFrame(health, 1 << 20, &bytes));
    const uint8_t partial[6] = {100, 0, 0, 0, 0x08, 0x01};
    bytes.insert(bytes.end(), partial, partial + sizeof(partial));
    ASSERT_EQ(write(c->fd(), bytes.data(), bytes.size()),
              static_cast<ssize_t>(bytes.size()));
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    EXPECT_EQ(r.id(), 1u);
    if (i % 2) shutdown(c->fd(), SHUT_WR);  // half close, then close
  }
  auto c = Connect();
  EXPECT_TRUE(c->Infer(MakeInfer(FastModel(), 1, 1)).ok());
  EXPECT_TRUE(d->running());
  uint64_t rejected = 0;
  for (int attempt = 0; attempt < 200 && rejected < 20; ++attempt) {
    Result<wire::StatsResponse> s = c->Stats();
    ASSERT_TRUE(s.ok());
    rejected = s->frames_rejected();
    if (rejected < 20)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(rejected, 20u);
}

TEST_F(DaemonTest, HalfClosedClientStillGetsItsAnswers) {
  auto d = Start();
  auto c = Connect();
  for (int i = 1; i <= 3; ++i)
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(FastModel(), 1, i))).ok());
  shutdown(c->fd(), SHUT_WR);
  for (int i = 0; i < 3; ++i) {
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    EXPECT_EQ(r.status().code(), 0);
  }
  wire::Response r;
  EXPECT_FALSE(c->Receive(&r).ok());  // then the daemon closes
}

TEST_F(DaemonTest, ClientDisconnectingMidRequestIsCancelled) {
  const TestModelSpec slow = SlowModel();
  auto d = Start("", 1, slow, kRefKernel);
  auto other = Connect();
  {
    auto c = Connect();
    ASSERT_TRUE(c->Send(Wrap(1, MakeInfer(slow, 64, 1))).ok());
    ASSERT_TRUE(WaitForQueueDepth(other.get(), 1));
  }  // closed with the request running
  for (int attempt = 0; attempt < 500; ++attempt) {
    if (StatusCount(other.get(), "CANCELLED") == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(StatusCount(other.get(), "CANCELLED"), 1u);
  EXPECT_TRUE(other->Infer(MakeInfer(slow, 1, 1)).ok());
}

TEST_F(DaemonTest, SlowReaderIsThrottledNotBuffered) {
  auto d = Start("max_output_buffer_bytes = 4096");
  const int fd = RawConnect();
  // One Health request frame, repeated: 32 MB of requests, ~64 MB of answers.
  wire::Request health;
  health.set_id(1);
  health.mutable_health();
  std::vector<uint8_t> one;
  ASSERT_TRUE(wire::AppendFrame(health, 1 << 20, &one));
  std::vector<uint8_t> chunk;
  while (chunk.size() < (1u << 16))
    chunk.insert(chunk.end(), one.begin(), one.end());
  const size_t per_chunk = chunk.size() / one.size();
  size_t written_chunks = 0;
  // Write without reading until the daemon stops taking requests.
  for (; written_chunks < 512; ++written_chunks) {
    size_t off = 0;
    bool blocked = false;
    while (off < chunk.size()) {
      struct pollfd p = {fd, POLLOUT, 0};
      if (poll(&p, 1, 300) == 0) {
        blocked = true;
        break;
      }
      const ssize_t n = send(fd, chunk.data() + off, chunk.size() - off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
      ASSERT_GT(n, 0);
      off += static_cast<size_t>(n);
    }
    if (blocked) {
      // Finish this chunk later so the frames stay whole.
      std::thread finish([&, off] {
        size_t o = off;
        while (o < chunk.size()) {
          const ssize_t n =
              send(fd, chunk.data() + o, chunk.size() - o, MSG_NOSIGNAL);
          if (n <= 0) return;
          o += static_cast<size_t>(n);
        }
      });
      // The daemon holds back: far fewer than 512 chunks went in.
      EXPECT_LT(written_chunks, 100u);
      // Now read every answer; the writer finishes as we read.
      const size_t expected = (written_chunks + 1) * per_chunk;
      wire::FrameDecoder dec(1 << 20);
      size_t answers = 0;
      while (answers < expected) {
        std::span<uint8_t> space = dec.WritableSpace(1 << 16);
        struct pollfd p = {fd, POLLIN, 0};
        ASSERT_GT(poll(&p, 1, 10000), 0) << answers << " of " << expected;
        const ssize_t n = read(fd, space.data(), space.size());
        ASSERT_GT(n, 0);
        dec.Commit(static_cast<size_t>(n));
        std::span<const uint8_t> payload;
        while (dec.TakeFrame(&payload, nullptr) ==
               wire::FrameDecoder::Next::kFrame) {
          ++answers;
        }
      }
      finish.join();
      EXPECT_EQ(answers, expected);
      close(fd);
      return;
    }
  }
  close(fd);
  FAIL()
      << "the daemon read 32 MB of requests from a client that reads nothing";
}

TEST_F(DaemonTest, SigtermDrainsRequestsInFlight) {
  const TestModelSpec slow = SlowModel();
  // The reference kernel: all three are still queued or running when the
  // probe asks, even on a loaded machine.
  auto d = Start("", 1, slow, kRefKernel);
  auto c = Connect();
  for (int i = 1; i <= 3; ++i)
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(slow, 32, i))).ok());
  ASSERT_TRUE(WaitForQueueDepth(Connect().get(), 3));
  d->Signal(SIGTERM);
  std::set<uint64_t> ok;
  for (int i = 0; i < 3; ++i) {
    wire::Response r;
    ASSERT_TRUE(c->Receive(&r).ok());
    EXPECT_EQ(r.status().code(), 0) << r.status().message();
    ok.insert(r.id());
  }
  EXPECT_EQ(ok, (std::set<uint64_t>{1, 2, 3}));
  EXPECT_EQ(d->WaitExit(), 0) << d->Log();
  EXPECT_TRUE(d->WaitForNotify("STOPPING=1"));
  // No new connections after SIGTERM.
  Result<std::unique_ptr<Client>> late = Client::Connect(socket_path());
  EXPECT_FALSE(late.ok());
}

TEST_F(DaemonTest, DrainTimeoutBoundsShutdown) {
  const TestModelSpec slow = SlowModel();
  auto d = Start("drain_timeout_ms = 0", 1, slow);
  auto c = Connect();
  // How long one request takes here (kernels and machine load vary): the
  // request on the worker when SIGTERM arrives must finish, the 29 queued
  // behind it must not be waited for.
  const auto s0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->Infer(MakeInfer(slow, 64, 0)).ok());
  const auto one = std::chrono::steady_clock::now() - s0;
  for (int i = 1; i <= 30; ++i)
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(slow, 64, i))).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto t0 = std::chrono::steady_clock::now();
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0,
            4 * one + std::chrono::milliseconds(500))
      << "one request takes "
      << std::chrono::duration_cast<std::chrono::milliseconds>(one).count()
      << " ms; draining all 30 would take about 30 times that";
  EXPECT_THAT(d->Log(), HasSubstr("drain timeout"));
}

TEST_F(DaemonTest, SighupReloadsConfigAndModel) {
  auto d = Start();
  auto c = Connect();
  ASSERT_EQ(c->ModelInfo()->name(), "testnet");
  TestModelSpec next = FastModel();
  next.name = "nextnet";
  next.version = 2;
  next.seed = 9;
  ASSERT_TRUE(WriteTestModel(next, dir_.File("next.tern")).ok());
  WriteConfig("max_frame_bytes = 8192", 2, "", "next.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("RELOADING=1"));
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'nextnet' version 2"));
  Result<wire::ModelInfoResponse> info = c->ModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->name(), "nextnet");
  EXPECT_EQ(info->version(), 2u);
  Reference ref(next);
  Result<wire::InferResponse> r = c->Infer(MakeInfer(next, 2, 4));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ProbsOf(*r), ref.Probs(2, 4));
  // The new frame limit applies at once, to the existing connection too.
  wire::InferRequest big;
  const std::vector<float> v(16 * 16);
  client::AddF32Input(&big, "x", 16, 16, v);
  big.mutable_inputs(0)->mutable_data()->append(8192, '\0');
  EXPECT_EQ(static_cast<int>(c->Infer(big).status().code()),
            kResourceExhausted);
}

TEST_F(DaemonTest, ReloadLoadsTheModelOffTheEventLoop) {
  // The new model is a FIFO nobody writes yet: reading it blocks whoever
  // reads. The loop must keep answering (Health, Infer on the old model)
  // while the loader thread waits; writing the model completes the reload.
  auto d = Start();
  auto c = Connect();
  const std::string fifo = dir_.File("next.tern");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  WriteConfig("", 2, "", "next.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("STATUS=Loading model (reload of "));
  for (int i = 0; i < 20; ++i) {
    Result<wire::HealthResponse> h = c->Health();
    ASSERT_TRUE(h.ok()) << h.status().message();
    EXPECT_TRUE(h->live());
    Result<wire::InferResponse> r = c->Infer(MakeInfer(FastModel(), 1, i));
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->model(), "testnet");
  }
  TestModelSpec next = FastModel();
  next.name = "fifonet";
  ASSERT_TRUE(WriteTestModel(next, dir_.File("next.bytes")).ok());
  const std::string bytes = ReadText(dir_.File("next.bytes"));
  const int fd = open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'fifonet'")) << d->Log();
  Result<wire::InferResponse> r = c->Infer(MakeInfer(next, 1, 1));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model(), "fifonet");
}

TEST_F(DaemonTest, HotSwapWaitsForTheSlotItReplaces) {
  // Requests run on slot A; reload 1 puts B into slot B at once; reload 2
  // must wait for A's requests before loading C into slot A.
  const TestModelSpec slow = SlowModel();
  auto d = Start("", 1, slow, kRefKernel);
  auto c = Connect();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(c->Send(Wrap(i, MakeInfer(slow, 64, i))).ok());
  }
  ASSERT_TRUE(WaitForQueueDepth(Connect().get(), 3));
  TestModelSpec b = slow;
  b.name = "slow_b";
  ASSERT_TRUE(WriteTestModel(b, dir_.File("b.tern")).ok());
  WriteConfig("", 1, "", "b.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'slow_b'"));
  TestModelSpec cspec = FastModel();
  cspec.name = "fast_c";
  ASSERT_TRUE(WriteTestModel(cspec, dir_.File("c.tern")).ok());
  WriteConfig("", 1, "", "c.tern");
  d->Signal(SIGHUP);
  // Slot A frees once the three batch-64 requests on the reference kernel
  // are done: seconds here, and more than the default 10 s wait under
  // AddressSanitizer on a busy machine (where this test timed out twice).
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'fast_c'", 120000))
      << d->Log();
  // Every request read before the swaps was answered by the first model.
  for (int i = 0; i < 3; ++i) {
    wire::Response r;
    const Status received = c->Receive(&r);
    ASSERT_TRUE(received.ok())
        << "answer " << i << ": " << received.message() << "\n"
        << d->Log();
    EXPECT_EQ(r.status().code(), 0) << r.status().message();
    EXPECT_EQ(r.infer().model(), "slownet");
  }
  Result<wire::InferResponse> r = c->Infer(MakeInfer(cspec, 1, 1));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model(), "fast_c");
}

TEST_F(DaemonTest, SighupKeepsServingWhenTheReloadIsBad) {
  auto d = Start();
  auto c = Connect();
  // 1: a config with a typo.
  WriteText(dir_.File("ternd.toml"), "[server]\nsocket = \"" + socket_path() +
                                         "\"\nmax_frme_bytes = 1\n");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("last reload failed"));
  EXPECT_THAT(d->Log(), HasSubstr("server.max_frme_bytes"));
  EXPECT_EQ(c->ModelInfo()->name(), "testnet");
  // 2: a model that fails its golden health check.
  TestModelSpec bad = FastModel();
  bad.name = "badnet";
  bad.wrong_golden = true;
  ASSERT_TRUE(WriteTestModel(bad, dir_.File("bad.tern")).ok());
  WriteConfig("", 2, "", "bad.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("golden"));
  EXPECT_EQ(c->ModelInfo()->name(), "testnet");
  EXPECT_TRUE(c->Infer(MakeInfer(FastModel(), 1, 1)).ok());
  // 3: a restart-only key is reported and kept.
  WriteConfig("", 1, "");
  d->Signal(SIGHUP);
  for (int i = 0;
       i < 100 && d->Log().find("runtime.workers") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(
      d->Log(),
      HasSubstr("runtime.workers (2 -> 1) takes effect only after a restart"));
  EXPECT_EQ(c->ModelInfo()->workers(), 2u);
}

TEST_F(DaemonTest, ColdSwapReload) {
  auto d = Start("", 2, FastModel(), "swap = \"cold\"");
  auto c = Connect();
  EXPECT_EQ(c->ModelInfo()->swap(), "cold");
  TestModelSpec next = FastModel();
  next.name = "coldnext";
  ASSERT_TRUE(WriteTestModel(next, dir_.File("next.tern")).ok());
  WriteConfig("", 2, "swap = \"cold\"", "next.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'coldnext'"));
  EXPECT_TRUE(c->Infer(MakeInfer(next, 1, 1)).ok());
  // A failing replacement restores the served model.
  TestModelSpec bad = FastModel();
  bad.name = "badcold";
  bad.wrong_golden = true;
  ASSERT_TRUE(WriteTestModel(bad, dir_.File("bad.tern")).ok());
  WriteConfig("", 2, "swap = \"cold\"", "bad.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("last reload failed"));
  EXPECT_EQ(c->ModelInfo()->name(), "coldnext");
  Reference ref(next);
  Result<wire::InferResponse> r = c->Infer(MakeInfer(next, 1, 1));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ProbsOf(*r), ref.Probs(1, 1));
}

// While a cold swap rewrites the only slot, every call that needs the model
// sees a whole model or UNAVAILABLE, never the emptied slot (ModelInfo used
// to read it and the daemon died on the first reload).
TEST_F(DaemonTest, ColdSwapReloadWhileClientsAskForModelInfo) {
  const std::string cold = "swap = \"cold\"";
  auto d = Start("", 2, FastModel(), cold);
  std::atomic<bool> stop{false};
  std::atomic<int> whole{0}, unavailable{0}, wrong{0};
  std::string first_wrong;
  std::thread asker([&]() {
    auto c = Connect();
    while (!stop.load()) {
      Result<wire::ModelInfoResponse> info = c->ModelInfo();
      if (info.ok() && !info->name().empty() && info->inputs_size() == 1) {
        ++whole;
      } else if (!info.ok() &&
                 static_cast<int>(info.status().code()) == kUnavailable) {
        ++unavailable;
      } else {
        first_wrong = info.ok() ? "an empty model info"
                                : std::string(info.status().message());
        ++wrong;
        return;  // the connection may be gone with the daemon
      }
    }
  });
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* t;
    ~Joiner() {
      *stop = true;
      t->join();
    }
  } joiner{&stop, &asker};
  // SlowModel takes milliseconds to place and health-check: a wide window.
  for (int round = 1; round <= 3; ++round) {
    TestModelSpec next = SlowModel();
    next.name = "cold_" + std::to_string(round);
    next.seed = static_cast<uint32_t>(round);
    ASSERT_TRUE(WriteTestModel(next, dir_.File("next.tern")).ok());
    WriteConfig("", 2, cold, "next.tern");
    d->Signal(SIGHUP);
    ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model '" + next.name + "'"))
        << d->Log();
  }
  stop = true;
  ASSERT_TRUE(d->running()) << d->Log();
  EXPECT_EQ(wrong.load(), 0) << first_wrong;
  EXPECT_GT(whole.load(), 0);
  auto c = Connect();
  EXPECT_EQ(c->ModelInfo()->name(), "cold_3");
}

// The inline estimate belongs to one placement of a model. A model reloaded
// into the same slot (cold swap: slot 0 each time, at the same address)
// starts without one, so its first request goes to a worker instead of
// running on the loop on the old model's estimate.
TEST_F(DaemonTest, ReloadedModelStartsANewInlineEstimate) {
  const std::string extra =
      "swap = \"cold\"\ninline_max_us = 2000\n" + std::string(kRefKernel);
  auto d = Start("", 2, FastModel(), extra);
  auto c = Connect();
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(c->Infer(MakeInfer(FastModel(), 1, i)).ok());
  }
  Result<wire::StatsResponse> s = c->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(PrometheusValue(*s, "ternd_inline_requests_total"), 4);
  // SlowModel on the reference kernel computes for milliseconds per row.
  ASSERT_TRUE(WriteTestModel(SlowModel(), dir_.File("slow.tern")).ok());
  WriteConfig("", 2, extra, "slow.tern");
  d->Signal(SIGHUP);
  ASSERT_TRUE(d->WaitForNotify("STATUS=Serving model 'slownet'")) << d->Log();
  for (uint32_t i = 0; i < 3; ++i) {
    Result<wire::InferResponse> r = c->Infer(MakeInfer(SlowModel(), 1, i));
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_GT(r->compute_us(), 2000u);  // too slow to run inline at all
  }
  s = c->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(PrometheusValue(*s, "ternd_inline_requests_total"), 4);
}

TEST_F(DaemonTest, SocketActivationUsesThePassedSocket) {
  const std::string path = dir_.File("activated.sock");
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  ASSERT_TRUE(WriteTestModel(FastModel(), dir_.File("model.tern")).ok());
  WriteConfig("", 1, "");  // names t.sock, which must not be created
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  o.listen_fd = fd;
  auto d = std::make_unique<DaemonProcess>(o);
  close(fd);
  ASSERT_TRUE(d->WaitForNotify("READY=1")) << d->Log();
  Result<std::unique_ptr<Client>> c = Client::Connect(path);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE((*c)->Infer(MakeInfer(FastModel(), 1, 1)).ok());
  struct stat st;
  EXPECT_NE(stat(socket_path().c_str(), &st), 0);
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0);
  // The activated socket belongs to the service manager: left in place.
  EXPECT_EQ(stat(path.c_str(), &st), 0);
}

TEST_F(DaemonTest, AllowListRefusesOtherPeers) {
  const uint32_t me = getuid();
  auto d = Start("allow_uids = [" + std::to_string(me + 1) + "]");
  auto c = Connect();
  wire::Response r;
  ASSERT_TRUE(c->Receive(&r).ok());
  EXPECT_EQ(r.status().code(), kPermissionDenied);
  EXPECT_THAT(d->Log(), HasSubstr("refused connection from pid"));
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0);

  auto d2 = Start("allow_gids = [" + std::to_string(getgid()) + "]");
  auto c2 = Connect();
  EXPECT_TRUE(c2->Health().ok());
}

TEST_F(DaemonTest, BadConfigurationFailsStartWithTheKeyNamed) {
  WriteText(dir_.File("ternd.toml"), "[server]\nmax_connections = 0\n");
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  DaemonProcess d(o);
  EXPECT_EQ(d.WaitExit(), 1);
  EXPECT_THAT(d.Log(), HasSubstr("server.max_connections = 0"));
  EXPECT_THAT(d.Log(), HasSubstr("<3>"));  // error priority for the journal
  EXPECT_FALSE(d.WaitForNotify("READY=1", 10));
}

TEST_F(DaemonTest, MissingModelFailsStart) {
  WriteConfig("", 1, "", "absent.tern");
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  DaemonProcess d(o);
  EXPECT_EQ(d.WaitExit(), 1);
  EXPECT_THAT(d.Log(), HasSubstr("absent.tern"));
}

TEST_F(DaemonTest, CheckConfigValidatesWithoutServing) {
  WriteConfig("", 1, "");
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  o.extra_args = {"--check-config"};
  DaemonProcess d(o);
  EXPECT_EQ(d.WaitExit(), 0);
  struct stat st;
  EXPECT_NE(stat(socket_path().c_str(), &st), 0);
}

TEST_F(DaemonTest, RefusesToStealALiveSocket) {
  auto d = Start();
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  DaemonProcess second(o);
  EXPECT_EQ(second.WaitExit(), 1);
  EXPECT_THAT(second.Log(), HasSubstr("another process is serving"));
  auto c = Connect();
  EXPECT_TRUE(c->Health().ok());
}

}  // namespace
}  // namespace ternd::daemon_testing
