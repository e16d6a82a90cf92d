// Model-quality telemetry end to end with real peers on loopback: two
// daemons serving two versions of a classifier (different weights), each
// sending its telemetry batches to a mosquitto broker (TLS), a client per
// daemon sending its own traffic, and `ternctl watch --quality --json`
// reading the batches live (and then from its --db). The watcher's
// per-version request and class counts must equal what the clients sent and
// got back, and the version whose class distribution moved is flagged
// exactly when the threshold is below the distance the test computes from
// the answers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon/client/client.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/test_env.h"

namespace ternd::daemon_testing {
namespace {

using client::Client;
using mqtt_testing::MosquittoBroker;
using mqtt_testing::MosquittoBrokerOptions;
using Json = nlohmann::json;

constexpr char kPrefix[] = "ternd/v1/qualityfleet";
constexpr uint32_t kClasses = 4;

TestModelSpec Model(uint64_t version, uint32_t seed) {
  TestModelSpec s = FastModel();
  s.name = "qualitynet";
  s.version = version;
  s.seed = seed;
  return s;
}

// `ternctl` with `args`; stdout lines collected by a thread until the
// process ends or is stopped (SIGTERM).
class Ternctl {
 public:
  explicit Ternctl(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      std::string bin = TERNCTL_PATH;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      std::string buf;
      char chunk[4096];
      ssize_t n;
      while ((n = read(fd, chunk, sizeof chunk)) > 0) {
        buf.append(chunk, size_t(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
          std::lock_guard<std::mutex> lock(mu_);
          lines_.push_back(buf.substr(0, nl));
          buf.erase(0, nl + 1);
        }
      }
      close(fd);
    });
  }
  ~Ternctl() { Stop(); }
  // SIGTERM (if still running), then the exit status.
  int Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
    return status_;
  }
  // Waits for the process to end by itself.
  int Wait() {
    if (pid_ > 0) {
      waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
    return status_;
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::thread reader_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// The last `"type":"quality"` line of `lines`, parsed; null if none.
Json LastQuality(const std::vector<std::string>& lines) {
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (it->find("\"type\":\"quality\"") == std::string::npos) continue;
    return Json::parse(*it, nullptr, /*allow_exceptions=*/false);
  }
  return Json();
}

// The entry of `version` in a quality line; null if absent.
Json VersionOf(const Json& quality, const std::string& version) {
  if (!quality.is_object()) return Json();
  for (const Json& v : quality["versions"]) {
    if (v["version"] == version) return v;
  }
  return Json();
}

// What a daemon's clients sent and got: requests and rows per class.
struct Sent {
  uint64_t requests = 0;
  std::vector<uint64_t> classes = std::vector<uint64_t>(kClasses, 0);
};

// Sends `requests` requests of `batch` rows each (inputs from seeds
// first_seed, first_seed + 1, ...) and counts the classes answered.
Sent SendTraffic(const std::string& socket, int requests, int batch,
                 uint32_t first_seed) {
  Sent sent;
  Result<std::unique_ptr<Client>> c = Client::Connect(socket);
  EXPECT_TRUE(c.ok()) << c.status().message();
  if (!c.ok()) return sent;
  const TestModelSpec spec = FastModel();
  for (int i = 0; i < requests; ++i) {
    wire::InferRequest r;
    client::AddF32Input(&r, "x", batch, spec.inputs,
                        TestInput(spec, batch, first_seed + uint32_t(i)));
    Result<wire::InferResponse> answer = (*c)->Infer(r);
    EXPECT_TRUE(answer.ok()) << answer.status().message();
    if (!answer.ok()) continue;
    ++sent.requests;
    for (const wire::Tensor& t : answer->outputs()) {
      if (t.name() != "class") continue;
      EXPECT_EQ(t.data().size(), size_t(batch) * 4);
      for (int row = 0; row < batch; ++row) {
        int32_t k;
        std::memcpy(&k, t.data().data() + row * 4, 4);
        EXPECT_LT(uint32_t(k), kClasses);
        if (uint32_t(k) < kClasses) ++sent.classes[size_t(k)];
      }
    }
  }
  return sent;
}

double Distance(const std::vector<uint64_t>& a,
                const std::vector<uint64_t>& b) {
  double sa = 0, sb = 0, d = 0;
  for (uint64_t v : a) sa += double(v);
  for (uint64_t v : b) sb += double(v);
  for (size_t i = 0; i < a.size(); ++i) {
    d += std::abs(double(a[i]) / sa - double(b[i]) / sb);
  }
  return d / 2;
}

class QualityWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        mqtt_testing::MakeTestCertificates(dir_.path(), "robot-a").ok());
    MosquittoBrokerOptions bo;
    bo.cert_dir = dir_.path();
    broker_ = std::make_unique<MosquittoBroker>(bo);
    ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
  }

  std::unique_ptr<DaemonProcess> StartDevice(const std::string& id,
                                             const TestModelSpec& model) {
    const std::string d = dir_.File(id);
    ::mkdir(d.c_str(), 0700);
    EXPECT_TRUE(WriteTestModel(model, d + "/model.tern").ok());
    WriteText(d + "/ternd.toml",
              "[daemon]\nstate_directory = \"" + d +
                  "\"\n[server]\nsocket = \"" + d +
                  "/t.sock\"\n[runtime]\nmodel = \"" + d +
                  "/model.tern\"\nworkers = 2\narena_mb = 32\n[device]\n"
                  "id = \"" +
                  id +
                  "\"\nfleet = \"qualityfleet\"\n[mqtt]\nbroker = "
                  "\"127.0.0.1:" +
                  std::to_string(broker_->port()) + "\"\nca_file = \"" +
                  dir_.File("ca.pem") +
                  "\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n"
                  "[telemetry]\ninterval_s = 1\n");
    DaemonOptions o;
    o.directory = d;
    o.config_path = d + "/ternd.toml";
    auto daemon = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(daemon->WaitForNotify("READY=1")) << daemon->Log();
    return daemon;
  }

  std::vector<std::string> WatchArgs(const std::string& db) {
    return {"watch",
            "--broker",
            "127.0.0.1:" + std::to_string(broker_->port()),
            "--cafile",
            dir_.File("ca.pem"),
            "--prefix",
            kPrefix,
            "--quality",
            "--json",
            "--db",
            db};
  }

  TempDir dir_;
  std::unique_ptr<MosquittoBroker> broker_;
};

TEST_F(QualityWatchTest, PerVersionCountsMatchTrafficAndMovedVersionIsFlagged) {
  // Version 1 on device a, version 2 (other weights) on device b.
  std::unique_ptr<DaemonProcess> a = StartDevice("dev-a", Model(1, 1));
  std::unique_ptr<DaemonProcess> b = StartDevice("dev-b", Model(2, 7));
  const Sent sent_a = SendTraffic(dir_.File("dev-a") + "/t.sock", 40, 3, 100);
  const Sent sent_b = SendTraffic(dir_.File("dev-b") + "/t.sock", 25, 2, 5000);
  ASSERT_EQ(sent_a.requests, 40u);
  ASSERT_EQ(sent_b.requests, 25u);
  const double moved = Distance(sent_a.classes, sent_b.classes);
  // The two weight sets answer the same kind of input differently enough
  // for the flag to mean something.
  ASSERT_GT(moved, 0.05) << "choose other seeds";
  RecordProperty("class_distance", std::to_string(moved));

  const std::string db = dir_.File("watch.db");
  Json quality;
  {
    std::vector<std::string> args = WatchArgs(db);
    args.push_back("--threshold");
    args.push_back(std::to_string(moved / 2));
    Ternctl watch(args);
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      quality = LastQuality(watch.lines());
      const Json v1 = VersionOf(quality, "1"), v2 = VersionOf(quality, "2");
      if (v1.is_object() && v2.is_object() &&
          v1["requests"] == sent_a.requests &&
          v2["requests"] == sent_b.requests) {
        break;
      }
      if (std::chrono::steady_clock::now() > until) {
        FAIL() << "no quality line with every request; last: " << quality.dump()
               << "\n"
               << a->Log() << b->Log();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const Json v1 = VersionOf(quality, "1"), v2 = VersionOf(quality, "2");
  EXPECT_EQ(v1["model"], "qualitynet");
  EXPECT_EQ(v1["devices"], 1);
  EXPECT_EQ(v2["devices"], 1);
  EXPECT_EQ(v1["rows"], 40 * 3);
  EXPECT_EQ(v2["rows"], 25 * 2);
  EXPECT_EQ(v1["classifier"], true);
  // Counts per class equal what the clients got (trailing zeros are left
  // out of a batch).
  for (size_t k = 0; k < kClasses; ++k) {
    const uint64_t got1 = k < v1["class_counts"].size()
                              ? v1["class_counts"][k].get<uint64_t>()
                              : 0;
    const uint64_t got2 = k < v2["class_counts"].size()
                              ? v2["class_counts"][k].get<uint64_t>()
                              : 0;
    EXPECT_EQ(got1, sent_a.classes[k]) << "class " << k;
    EXPECT_EQ(got2, sent_b.classes[k]) << "class " << k;
  }
  EXPECT_GT(v1["mean_confidence"].get<double>(), 1.0 / kClasses);
  EXPECT_LE(v1["mean_confidence"].get<double>(), 1.0);
  EXPECT_TRUE(v1["previous_version"].is_null());
  EXPECT_FALSE(v1["flagged"].get<bool>());
  EXPECT_EQ(v2["previous_version"], "1");
  EXPECT_NEAR(v2["distance"].get<double>(), moved, 1e-6);
  EXPECT_TRUE(v2["flagged"].get<bool>());  // threshold moved / 2

  // From the database alone (no broker): flagged or not by the threshold.
  for (const double threshold : {moved / 2, std::min(1.0, moved * 1.5)}) {
    Ternctl offline({"watch", "--quality", "--json", "--db", db, "--threshold",
                     std::to_string(threshold)});
    EXPECT_EQ(offline.Wait(), 0);
    const Json q = LastQuality(offline.lines());
    const Json o2 = VersionOf(q, "2");
    ASSERT_TRUE(o2.is_object()) << q.dump();
    EXPECT_EQ(o2["requests"], sent_b.requests);
    EXPECT_EQ(VersionOf(q, "1")["requests"], sent_a.requests);
    EXPECT_EQ(o2["flagged"].get<bool>(), threshold < moved)
        << "threshold " << threshold << " distance " << moved;
  }
}

}  // namespace
}  // namespace ternd::daemon_testing
