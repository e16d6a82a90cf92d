// Updates from the fleet, end to end, with real peers on loopback: a
// mosquitto broker (TLS, test CA) carrying the signed manifests and the
// device's reported state, and an nginx HTTPS server holding the artifacts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "daemon/client/client.h"
#include "ota/signing.h"
#include "ota/update_state.pb.h"
#include "telemetry/batch.h"
#include "telemetry/telemetry.pb.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/daemon/update_fleet_fixture.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/support/nginx_server.h"
#include "tests/support/test_env.h"
#include "tests/support/test_fleet.h"
#include "tests/support/update_states.h"

namespace ternd::daemon_testing {
namespace {

using client::Client;
using mqtt_testing::MqttProbe;
using mqtt_testing::MqttProbeOptions;
using ::testing::HasSubstr;
using testing::SignedRelease;
using testing::TestFleet;

constexpr char kDevice[] = "robot-9";
constexpr char kPrefix[] = "ternd/v1/testfleet";

std::string ModelBytes(uint64_t version, bool wrong_golden = false) {
  TestModelSpec s = FastModel();
  s.name = "fleetnet";
  s.version = version;
  s.seed = static_cast<uint32_t>(20 + version);
  s.wrong_golden = wrong_golden;
  Result<std::vector<uint8_t>> b = BuildTestModel(s);
  EXPECT_TRUE(b.ok());
  return std::string(b->begin(), b->end());
}

// Polls `done` until it holds or `timeout_ms` passes, for conditions no
// event announces (a line in the daemon's log, a counter of another thread).
bool WaitUntil(const std::function<bool()>& done, int timeout_ms) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

// The peak resident set of process `pid` in KiB (VmHWM), or -1.
long PeakRssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class FleetUpdateTest : public UpdateFleetTest {
 protected:
  void SetUp() override {
    // persistence: retained manifests survive a broker restart.
    ASSERT_NO_FATAL_FAILURE(
        StartFleet(kDevice, StateTopic(), /*persistence=*/true));
    TestModelSpec v1 = FastModel();
    v1.name = "fleetnet";
    ASSERT_TRUE(WriteTestModel(v1, dir_.File("model.tern")).ok());
    WriteText(
        dir_.File("ternd.toml"),
        "[daemon]\nstate_directory = \"" + dir_.path() +
            "\"\n[server]\nsocket = \"" + dir_.File("t.sock") +
            "\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
            "\"\nworkers = 2\narena_mb = 32\n[device]\nid = \"" + kDevice +
            "\"\nfleet = \"testfleet\"\ngroups = [\"lab\"]\n[mqtt]\nbroker = "
            "\"127.0.0.1:" +
            std::to_string(broker_->port()) + "\"\nca_file = \"" +
            dir_.File("ca.pem") +
            "\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n[ota]\n"
            "root_file = \"" +
            dir_.File("root.pb") +
            "\"\nretry_min_ms = 50\nretry_max_ms = 500\n");
  }

  void AppendToConfig(const std::string& text) {
    WriteText(dir_.File("ternd.toml"),
              ReadText(dir_.File("ternd.toml")) + text);
  }

  // Runs `sql` on the daemon's state database (read beside the running
  // daemon: WAL) and returns the first column of the first row as text;
  // "<no row>" or "<error: ...>" otherwise.
  std::string StateDb(const std::string& sql) {
    const std::string path = dir_.File("state.db");
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
        SQLITE_OK) {
      const std::string e = "<error: " + path + ": " + sqlite3_errmsg(db) + ">";
      sqlite3_close(db);
      return e;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* q = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr) != SQLITE_OK) {
      out = "<error: " + path + ": " + sqlite3_errmsg(db) + ">";
    } else if (sqlite3_step(q) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(q, 0);
      out = t ? reinterpret_cast<const char*>(t) : "<null>";
    } else {
      out = "<no row>";
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return out;
  }

  static std::string StateTopic() {
    return std::string(kPrefix) + "/devices/" + kDevice + "/update/state";
  }

  std::unique_ptr<DaemonProcess> Start() {
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    auto d = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(d->WaitForNotify("READY=1")) << d->Log();
    return d;
  }

  std::unique_ptr<Client> Connect() {
    Result<std::unique_ptr<Client>> c = Client::Connect(dir_.File("t.sock"));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::string Served() {
    Result<wire::ModelInfoResponse> i = Connect()->ModelInfo();
    return i.ok() ? i->name() + " v" + std::to_string(i->version()) : "";
  }

  // A release whose artifact nginx serves.
  SignedRelease Publishable(uint64_t version, uint64_t sequence,
                            const std::string& device,
                            const std::string& group = "",
                            bool wrong_golden = false) {
    SignedRelease r =
        fleet_.Release(ModelBytes(version, wrong_golden), "fleetnet", version,
                       sequence, device, group, 1024);
    const std::string name = "fleetnet-" + std::to_string(version) + "-" +
                             std::to_string(sequence) + ".tern.zst";
    EXPECT_TRUE(nginx_->PutFile("files", name, r.artifact).ok());
    r.release.clear_urls();
    r.release.add_urls(nginx_->Url("files/" + name));
    r.envelope = fleet_.Sign(r.release);
    return r;
  }

  // `m` decoded, when it is a state report for `version`.
  std::optional<ota::UpdateReport> StateReport(
      const mqtt_testing::ReceivedMessage& m, uint64_t version) {
    return mqtt_testing::UpdateReportOf(m, StateTopic(), version);
  }

  // Waits for a reported state (decoded from the retained topic).
  std::optional<ota::UpdateReport> WaitForState(const std::string& state,
                                                uint64_t version,
                                                int timeout_ms = 30000) {
    return mqtt_testing::WaitForUpdateState(*probe_, StateTopic(), state,
                                            version, timeout_ms);
  }

  // The states reported for `version`, in the order they arrived, with
  // repeats (progress reports of one state) folded.
  std::vector<std::string> StatesSeen(uint64_t version) {
    return mqtt_testing::UpdateStatesSeen(*probe_, StateTopic(), version);
  }

  void PublishRelease(const std::string& topic, const std::string& envelope) {
    Result<int> mid = probe_->Publish(topic, envelope, 1, true);
    ASSERT_TRUE(mid.ok()) << mid.status().message();
  }

  // Waits for a presence message of `state` whose boot epoch passes
  // `epoch_ok`.
  bool WaitForPresence(telemetry::Presence::State state,
                       const std::function<bool(uint64_t)>& epoch_ok,
                       int timeout_ms = 15000) {
    const std::string topic =
        std::string(kPrefix) + "/devices/" + kDevice + "/presence";
    return probe_->WaitFor(
        [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
          for (const auto& m : all) {
            telemetry::Presence p;
            if (m.topic == topic && p.ParseFromString(m.payload) &&
                p.state() == state && epoch_ok(p.boot_epoch())) {
              return true;
            }
          }
          return false;
        },
        timeout_ms);
  }

  // Waits for the daemon's log to contain `needle`.
  bool WaitForLog(const DaemonProcess& d, const std::string& needle,
                  int timeout_ms = 30000) {
    return WaitUntil([&] { return d.Log().find(needle) != std::string::npos; },
                     timeout_ms);
  }

  // Waits for `n` more successful inferences counted by another thread.
  static bool WaitForCount(const std::atomic<int>& count, int n,
                           int timeout_ms = 30000) {
    return WaitUntil([&] { return count >= n; }, timeout_ms);
  }

  // Waits until the daemon is connected and subscribed again after a broker
  // restart (its birth names its second session), then lets it refuse a live
  // manifest for another device: once that refusal is reported, everything
  // the broker sent it before (the retained manifests) has been handled.
  void WaitUntilRetainedAreHandled(const DaemonProcess& d, uint64_t marker) {
    const std::string presence =
        std::string(kPrefix) + "/devices/" + kDevice + "/presence";
    ASSERT_TRUE(WaitUntil([&] { return probe_->connected(); }, 30000))
        << "the probe did not reconnect to the restarted broker";
    ASSERT_TRUE(probe_->Subscribe(StateTopic()).ok());
    ASSERT_TRUE(probe_->Subscribe(presence).ok());
    ASSERT_TRUE(probe_->WaitFor(
        [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
          for (const auto& m : all) {
            telemetry::Presence p;
            if (m.topic == presence && p.ParseFromString(m.payload) &&
                p.state() == telemetry::Presence::ONLINE && p.session() >= 2) {
              return true;
            }
          }
          return false;
        },
        30000))
        << "no birth from the daemon after the broker restart\n"
        << d.Log();
    Result<int> mid = probe_->Publish(
        GroupTopic("lab"), Publishable(marker, 1, "robot-2").envelope, 1,
        /*retain=*/false);
    ASSERT_TRUE(mid.ok()) << mid.status().message();
    ASSERT_TRUE(WaitForState("rejected", marker))
        << "the marker manifest (version " << marker
        << ", for another device) was not refused\n"
        << d.Log();
  }

  std::string DeviceTopic() const {
    return std::string(kPrefix) + "/devices/" + kDevice + "/update/release";
  }
  std::string GroupTopic(const std::string& g) const {
    return std::string(kPrefix) + "/groups/" + g + "/update/release";
  }
};

TEST_F(FleetUpdateTest,
       PublishedReleaseIsDownloadedAndServedWithNoFailedRequest) {
  auto d = Start();
  EXPECT_EQ(Served(), "fleetnet v1");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  load.emplace_back([&] {
    auto c = Connect();
    wire::InferRequest req;
    TestModelSpec spec = FastModel();
    client::AddF32Input(&req, "x", 1, spec.inputs, TestInput(spec, 1, 3));
    while (!stop) (c->Infer(req).ok() ? ok : failed)++;
  });
  ::ternd::testing::StopAndJoin joiner(&stop, &load);
  SignedRelease r = Publishable(2, 1, kDevice);
  PublishRelease(DeviceTopic(), r.envelope);
  std::optional<ota::UpdateReport> active = WaitForState("active", 2);
  ASSERT_TRUE(active) << d->Log();
  EXPECT_EQ(active->active_version(), 2u);
  EXPECT_EQ(active->device_id(), kDevice);
  EXPECT_EQ(active->rollout_id(), "rollout-1");
  EXPECT_TRUE(active->probation());
  const int at_swap = ok;
  const bool served_after_swap = WaitForCount(ok, at_swap + 50);
  joiner.Join();
  ASSERT_TRUE(served_after_swap)
      << "50 inferences after the swap did not succeed within 30 s (" << ok
      << " ok, " << failed << " failed)";
  EXPECT_EQ(failed, 0);
  EXPECT_GT(ok, 50);
  EXPECT_EQ(Served(), "fleetnet v2");
  // Every state was reported, in order, however fast the update went
  // (reports queue while one is unacknowledged), with the signed total.
  std::optional<ota::UpdateReport> downloading =
      WaitForState("downloading", 2, 1);
  ASSERT_TRUE(downloading);
  EXPECT_GT(downloading->bytes_total(), 0u);
  EXPECT_THAT(StatesSeen(2),
              ::testing::ElementsAre("received", "downloading", "verifying",
                                     "staged", "activating", "active"));
  // The artifact was fetched from nginx, over TLS, in full.
  EXPECT_FALSE(nginx_->AccessLog(".tern.zst").empty());
  // The retained manifest comes back on every reconnect: not news.
  ASSERT_TRUE(broker_->Stop().ok());
  probe_->Clear();
  ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
  WaitUntilRetainedAreHandled(*d, 90);
  EXPECT_EQ(Served(), "fleetnet v2");
  EXPECT_THAT(StatesSeen(2), ::testing::Not(::testing::Contains("rejected")))
      << d->Log();
}

TEST_F(FleetUpdateTest, GroupAndDeviceManifestsCannotBeMixedBackwards) {
  auto d = Start();
  // The group's release (sequence 5) installs.
  PublishRelease(GroupTopic("lab"), Publishable(3, 5, "", "lab").envelope);
  ASSERT_TRUE(WaitForState("active", 3)) << d->Log();
  // An older device manifest (sequence 4), retained or replayed, is
  // refused as a replay even though its version is higher.
  PublishRelease(DeviceTopic(), Publishable(4, 4, kDevice).envelope);
  std::optional<ota::UpdateReport> r = WaitForState("rejected", 4);
  ASSERT_TRUE(r) << d->Log();
  EXPECT_THAT(r->reason(), HasSubstr("replay"));
  EXPECT_EQ(r->active_version(), 3u);
  EXPECT_EQ(Served(), "fleetnet v3");
  // Another device's manifest on our group topic is not for us.
  PublishRelease(GroupTopic("lab"), Publishable(5, 6, "robot-2").envelope);
  r = WaitForState("rejected", 5);
  ASSERT_TRUE(r);
  EXPECT_THAT(r->reason(), HasSubstr("not_for_this_device"));
  EXPECT_EQ(Served(), "fleetnet v3");
}

TEST_F(FleetUpdateTest, BadArtifactsAndModelsAreReportedAndNotServed) {
  auto d = Start();
  // The server has other bytes than the release signs.
  SignedRelease r = Publishable(2, 1, kDevice);
  ASSERT_TRUE(nginx_
                  ->PutFile("garbage", "g.tern.zst",
                            std::string(r.artifact.size(), 'x'))
                  .ok());
  r.release.clear_urls();
  r.release.add_urls(nginx_->Url("garbage/g.tern.zst"));
  r.envelope = fleet_.Sign(r.release);
  PublishRelease(DeviceTopic(), r.envelope);
  std::optional<ota::UpdateReport> failed = WaitForState("failed", 2, 60000);
  ASSERT_TRUE(failed) << d->Log();
  EXPECT_THAT(failed->reason(), HasSubstr("SHA-256"));
  EXPECT_EQ(Served(), "fleetnet v1");
  // A model that fails its golden health check is not activated.
  PublishRelease(DeviceTopic(), Publishable(3, 2, kDevice, "", true).envelope);
  failed = WaitForState("failed", 3);
  ASSERT_TRUE(failed) << d->Log();
  EXPECT_THAT(failed->reason(), HasSubstr("golden health check failed"));
  EXPECT_EQ(Served(), "fleetnet v1");
}

TEST_F(FleetUpdateTest, KilledWhileDownloadingResumesAfterRestart) {
  // The server sends at 1 MiB/s (nginx's /slow/), so the kill lands
  // mid-download: the daemon's own rate_limit_kbps is curl's average over
  // the last seconds and lets the first seconds through at full speed.
  auto d = Start();
  TestModelSpec big = SlowModel();
  big.name = "fleetnet";
  big.version = 2;
  Result<std::vector<uint8_t>> bytes = BuildTestModel(big);
  ASSERT_TRUE(bytes.ok());
  SignedRelease r = fleet_.Release(std::string(bytes->begin(), bytes->end()),
                                   "fleetnet", 2, 1, kDevice, "", 16384);
  ASSERT_TRUE(nginx_->PutFile("files", "big.tern.zst", r.artifact).ok());
  r.release.clear_urls();
  r.release.add_urls(nginx_->Url("slow/big.tern.zst"));
  r.envelope = fleet_.Sign(r.release);
  ASSERT_GT(r.artifact.size(), 4u * 16384) << "the model must span chunks";
  PublishRelease(DeviceTopic(), r.envelope);
  std::optional<ota::UpdateReport> progress;
  ASSERT_TRUE(probe_->WaitFor(
      [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
        for (const auto& m : all) {
          ota::UpdateReport rep;
          if (m.topic == StateTopic() && rep.ParseFromString(m.payload) &&
              rep.state() == "downloading" && rep.bytes_done() >= 2 * 16384) {
            progress = rep;
            return true;
          }
        }
        return false;
      },
      60000))
      << d->Log();
  d->Signal(SIGKILL);
  d->WaitExit();
  d = Start();
  ASSERT_TRUE(WaitForState("active", 2, 120000)) << d->Log();
  EXPECT_EQ(Served(), "fleetnet v2");
  // The second run asked for the bytes after what was verified, not 0
  // (nginx logs the cut first request when it notices the close).
  const bool both_logged = nginx_->WaitForRequests(2, "big.tern.zst");
  const std::vector<https_testing::AccessLogEntry> log =
      nginx_->AccessLog("big.tern.zst");
  std::string requests;  // what nginx logged, for the failure messages
  bool resumed = false;
  for (const auto& e : log) {
    requests += "  Range '" + e.range + "' -> " + std::to_string(e.status) +
                ", " + std::to_string(e.body_bytes_sent) + " bytes" +
                (e.completed ? "" : " (cut)") + "\n";
    if (e.range.rfind("bytes=", 0) == 0 && e.range != "bytes=0-")
      resumed = true;
  }
  ASSERT_TRUE(both_logged) << "requests of " << r.artifact.size() << " bytes:\n"
                           << requests;
  EXPECT_TRUE(resumed) << "no request resumed past byte 0:\n" << requests;
}

// The daemon's telemetry on the real broker: batches carry the daemon's
// request counters and model, the birth names the serving model, a clean
// stop publishes `offline` itself and a SIGKILL leaves it to the will.
TEST_F(FleetUpdateTest, DaemonTelemetryAndPresence) {
  std::string toml = ReadText(dir_.File("ternd.toml"));
  toml += "[telemetry]\ninterval_s = 1\n";
  WriteText(dir_.File("ternd.toml"), toml);
  const std::string device = std::string(kPrefix) + "/devices/" + kDevice;
  ASSERT_TRUE(probe_->Subscribe(device + "/telemetry").ok());
  ASSERT_TRUE(probe_->Subscribe(device + "/presence").ok());
  auto d = Start();
  auto c = Connect();
  wire::InferRequest req;
  TestModelSpec spec = FastModel();
  client::AddF32Input(&req, "x", 1, spec.inputs, TestInput(spec, 1, 1));
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(c->Infer(req).ok());
  // A batch that counts the 7 inferences (cumulative counters).
  telemetry::BatchCodec codec;
  std::optional<telemetry::TelemetryBatch> seen;
  ASSERT_TRUE(probe_->WaitFor(
      [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
        for (const auto& m : all) {
          if (m.topic != device + "/telemetry") continue;
          Result<telemetry::TelemetryBatch> b = codec.Decode(m.payload);
          if (!b.ok()) continue;
          for (const telemetry::Metric& metric : b->metrics()) {
            bool infer_ok = false;
            for (const auto& l : metric.labels()) {
              if (l.name() == "call" && l.value() == "infer") infer_ok = true;
            }
            if (metric.name() == "ternd_requests_total" && infer_ok &&
                metric.value() >= 7) {
              seen = *b;
              return true;
            }
          }
        }
        return false;
      },
      30000))
      << d->Log();
  EXPECT_EQ(seen->device_id(), kDevice);
  EXPECT_GE(seen->sequence(), 1u);
  // The birth names the model that serves.
  std::optional<mqtt_testing::ReceivedMessage> birth =
      probe_->WaitForMessage(device + "/presence");
  ASSERT_TRUE(birth);
  telemetry::Presence p;
  ASSERT_TRUE(p.ParseFromString(birth->payload));
  EXPECT_EQ(p.state(), telemetry::Presence::ONLINE);
  EXPECT_EQ(p.model_name(), "fleetnet");
  const uint64_t epoch = p.boot_epoch();
  // A clean stop says offline itself.
  probe_->Clear();
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0) << d->Log();
  ASSERT_TRUE(WaitForPresence(telemetry::Presence::OFFLINE,
                              [&](uint64_t e) { return e == epoch; }));
  // A crash leaves it to the Last Will, with the new boot epoch.
  d = Start();
  ASSERT_TRUE(WaitForPresence(telemetry::Presence::ONLINE,
                              [&](uint64_t e) { return e > epoch; }));
  probe_->Clear();
  d->Signal(SIGKILL);
  d->WaitExit();
  ASSERT_TRUE(WaitForPresence(
      telemetry::Presence::OFFLINE, [&](uint64_t e) { return e > epoch; },
      60000))
      << broker_->Log();
}

// The operator's path, with the real tools: keys, root, a signed release of
// a model file, the artifact on the HTTPS server, `ternctl publish`, and the
// device serving it while a client keeps calling.
TEST_F(FleetUpdateTest, FromTernctlPublishToServing) {
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(TERNCTL_PATH) + " " + args + " > " +
                            dir_.File("cmd.out") + " 2>&1";
    const int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << args << "\n" << ReadText(dir_.File("cmd.out"));
    return rc == 0;
  };
  const std::string k = dir_.path() + "/";
  ASSERT_TRUE(run("keygen --out " + k + "root"));
  ASSERT_TRUE(run("keygen --out " + k + "release"));
  ASSERT_TRUE(run("keygen --out " + k + "ts"));
  ASSERT_TRUE(run("root --fleet testfleet --version 1 --days 30 --root-key " +
                  k + "root.pub --root-threshold 1 --release-key " + k +
                  "release.pub --timestamp-key " + k + "ts.pub --sign " + k +
                  "root.key --out " + k + "root.pb --force"));
  TestModelSpec v2 = FastModel();
  v2.name = "fleetnet";
  v2.version = 2;
  v2.seed = 77;
  ASSERT_TRUE(WriteTestModel(v2, dir_.File("v2.tern")).ok());
  ASSERT_TRUE(run("sign " + k + "v2.tern --url " + nginx_->Url("files/") +
                  " --target-device " + kDevice + " --key " + k +
                  "release.key --root " + k + "root.pb --out-dir " + k +
                  "dist"));
  ASSERT_TRUE(nginx_
                  ->PutFile("files", "fleetnet-2.tern.zst",
                            ReadText(dir_.File("dist/fleetnet-2.tern.zst")))
                  .ok());
  auto d = Start();  // pins root.pb, written by `ternctl root` above
  EXPECT_EQ(Served(), "fleetnet v1");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  load.emplace_back([&] {
    auto c = Connect();
    wire::InferRequest req;
    TestModelSpec spec = FastModel();
    client::AddF32Input(&req, "x", 1, spec.inputs, TestInput(spec, 1, 5));
    while (!stop) (c->Infer(req).ok() ? ok : failed)++;
  });
  ::ternd::testing::StopAndJoin joiner(&stop, &load);
  ASSERT_TRUE(
      run("publish --broker 127.0.0.1:" + std::to_string(broker_->port()) +
          " --cafile " + k + "ca.pem --fleet testfleet --device " + kDevice +
          " " + k + "dist/fleetnet-2.release.pb"));
  std::optional<ota::UpdateReport> active = WaitForState("active", 2);
  ASSERT_TRUE(active) << d->Log();
  const int at_swap = ok;
  const bool served_after_swap = WaitForCount(ok, at_swap + 50);
  joiner.Join();
  ASSERT_TRUE(served_after_swap)
      << "50 inferences after the swap did not succeed within 30 s (" << ok
      << " ok, " << failed << " failed)";
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(Served(), "fleetnet v2");
  // The fleet side sees the retained state, decoded.
  const std::string watch =
      "timeout 3 " + std::string(TERNCTL_PATH) +
      " watch --broker 127.0.0.1:" + std::to_string(broker_->port()) +
      " --cafile " + k + "ca.pem --fleet testfleet --json > " + k +
      "watch.out 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(watch.c_str())), 124);  // timed out
  const std::string seen = ReadText(dir_.File("watch.out"));
  EXPECT_THAT(seen, HasSubstr("\"type\":\"update_state\",\"device\":\"" +
                              std::string(kDevice) + "\""));
  EXPECT_THAT(seen, HasSubstr("\"state\":\"active\""));
  EXPECT_THAT(seen, HasSubstr("\"active_version\":2"));
}

// Delta downloads (docs/ota.md): releases signed with `ternctl sign
// --content-chunks`; the device holds v2's chunks, and v3 (its output head
// retrained, so its header, head and golden pair changed) downloads only
// the chunks v2 does not have, as nginx's log shows.
TEST_F(FleetUpdateTest, DeltaUpdateDownloadsOnlyTheChangedChunks) {
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(TERNCTL_PATH) + " " + args + " > " +
                            dir_.File("cmd.out") + " 2>&1";
    const int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << args << "\n" << ReadText(dir_.File("cmd.out"));
    return rc == 0;
  };
  const std::string k = dir_.path() + "/";
  ASSERT_TRUE(run("keygen --out " + k + "root"));
  ASSERT_TRUE(run("keygen --out " + k + "release"));
  ASSERT_TRUE(run("keygen --out " + k + "ts"));
  ASSERT_TRUE(run("root --fleet testfleet --version 1 --days 30 --root-key " +
                  k + "root.pub --root-threshold 1 --release-key " + k +
                  "release.pub --timestamp-key " + k + "ts.pub --sign " + k +
                  "root.key --out " + k + "root.pb --force"));
  // About 0.5 MiB of ternary layers (16 -> 1024 -> 1024 -> 1024 -> 4).
  TestModelSpec spec = FastModel();
  spec.name = "fleetnet";
  spec.hidden = 1024;
  spec.layers = 3;
  spec.seed = 5;
  auto sign = [&](uint64_t version, uint32_t head_seed) -> ota::Release {
    TestModelSpec v = spec;
    v.version = version;
    v.head_seed = head_seed;
    const std::string stem = "fleetnet-" + std::to_string(version);
    EXPECT_TRUE(WriteTestModel(v, dir_.File(stem + ".tern")).ok());
    EXPECT_TRUE(run("sign " + k + stem + ".tern --content-chunks --url " +
                    nginx_->Url("files/") + " --target-device " + kDevice +
                    " --key " + k + "release.key --root " + k +
                    "root.pb --out-dir " + k + "dist"));
    EXPECT_TRUE(nginx_
                    ->PutFile("files", stem + ".tern.zst",
                              ReadText(dir_.File("dist/" + stem + ".tern.zst")))
                    .ok());
    ota::SignedEnvelope env;
    ota::Release r;
    EXPECT_TRUE(env.ParseFromString(
        ReadText(dir_.File("dist/" + stem + ".release.pb"))));
    EXPECT_TRUE(r.ParseFromString(env.payload()));
    EXPECT_EQ(r.model_sha256(),
              ota::Sha256(ReadText(dir_.File(stem + ".tern"))));
    return r;
  };
  auto publish = [&](uint64_t version) {
    return run("publish --broker 127.0.0.1:" + std::to_string(broker_->port()) +
               " --cafile " + k + "ca.pem --fleet testfleet --device " +
               kDevice + " " + k + "dist/fleetnet-" + std::to_string(version) +
               ".release.pb");
  };
  const ota::Release r2 = sign(2, 0);
  const ota::Release r3 = sign(3, 99);
  ASSERT_GT(r2.chunk_length_size(), 4);
  ASSERT_EQ(r2.chunk_size(), 0u);
  // What v3 lacks from v2, as the device should ask for it.
  std::set<std::string> have(r2.chunk_sha256().begin(),
                             r2.chunk_sha256().end());
  std::vector<std::string> runs;
  uint64_t missing = 0, at = 0;
  for (int i = 0; i < r3.chunk_length_size();) {
    if (have.count(r3.chunk_sha256(i))) {
      at += r3.chunk_length(i++);
      continue;
    }
    const uint64_t first = at;
    while (i < r3.chunk_length_size() && !have.count(r3.chunk_sha256(i))) {
      at += r3.chunk_length(i++);
    }
    // A run to the end of the artifact is asked for as an open range.
    runs.push_back("bytes=" + std::to_string(first) + "-" +
                   (at == r3.artifact_length() ? "" : std::to_string(at - 1)));
    missing += at - first;
  }
  ASSERT_FALSE(runs.empty());
  ASSERT_LT(missing, r3.artifact_length() / 2);

  auto d = Start();  // pins root.pb, written by `ternctl root` above
  ASSERT_TRUE(publish(2));
  ASSERT_TRUE(WaitForState("active", 2)) << d->Log();
  ASSERT_TRUE(publish(3));
  std::optional<ota::UpdateReport> active = WaitForState("active", 3);
  ASSERT_TRUE(active) << d->Log();
  EXPECT_EQ(active->active_version(), 3u);
  EXPECT_EQ(Served(), "fleetnet v3");

  // v2 in one request; v3 only its missing runs, nothing else.
  const std::vector<https_testing::AccessLogEntry> log2 =
      nginx_->AccessLog("fleetnet-2.tern.zst");
  ASSERT_EQ(log2.size(), 1u);
  EXPECT_EQ(log2[0].status, 200);
  EXPECT_EQ(log2[0].body_bytes_sent, r2.artifact_length());
  const std::vector<https_testing::AccessLogEntry> log3 =
      nginx_->AccessLog("fleetnet-3.tern.zst");
  ASSERT_EQ(log3.size(), runs.size());
  uint64_t sent = 0;
  for (size_t i = 0; i < log3.size(); ++i) {
    EXPECT_EQ(log3[i].range, runs[i]);
    EXPECT_EQ(log3[i].status, 206);
    sent += log3[i].body_bytes_sent;
  }
  EXPECT_EQ(sent, missing);
  EXPECT_THAT(d->Log(), HasSubstr("reused from chunks already stored"));
  std::printf(
      "delta v2 -> v3: %d chunks, %zu runs, %llu of %llu artifact bytes "
      "downloaded (%.1f%%)\n",
      r3.chunk_length_size(), runs.size(),
      static_cast<unsigned long long>(sent),
      static_cast<unsigned long long>(r3.artifact_length()),
      100.0 * static_cast<double>(sent) /
          static_cast<double>(r3.artifact_length()));
}

// A release that crashed in probation and was rolled back is never installed
// again, whoever sends it: here the same release (name, version, artifact),
// signed again for the device's group, and the retained original after a
// restart. Only a newer release moves the device.
TEST_F(FleetUpdateTest, RolledBackReleaseIsNotInstalledAgain) {
  AppendToConfig("probation_s = 3600\nprobation_crashes = 2\n");
  auto d = Start();
  PublishRelease(DeviceTopic(), Publishable(2, 1, kDevice).envelope);
  ASSERT_TRUE(WaitForState("active", 2)) << d->Log();
  const SignedRelease v3 = Publishable(3, 2, kDevice);
  PublishRelease(DeviceTopic(), v3.envelope);
  ASSERT_TRUE(WaitForState("active", 3)) << d->Log();
  // Another device's manifest is refused meanwhile: the rollback must still
  // report the version it rolled back, not this one.
  PublishRelease(GroupTopic("lab"), Publishable(9, 3, "robot-2").envelope);
  ASSERT_TRUE(WaitForState("rejected", 9)) << d->Log();
  for (int crash = 1; crash <= 2; ++crash) {
    d->Signal(SIGKILL);
    ASSERT_EQ(d->WaitExit(), 128 + SIGKILL);
    probe_->Clear();
    d = Start();
  }
  std::optional<ota::UpdateReport> rolled = WaitForState("rolled_back", 3);
  ASSERT_TRUE(rolled) << "no rolled_back report for version 3; states: "
                      << ::testing::PrintToString(StatesSeen(9)) << "\n"
                      << d->Log();
  EXPECT_THAT(rolled->reason(), HasSubstr("stopped unexpectedly 2 times"));
  EXPECT_EQ(rolled->model_name(), "fleetnet");
  EXPECT_EQ(rolled->active_version(), 2u);
  EXPECT_EQ(Served(), "fleetnet v2");

  // The same release again on the group topic, with a newer sequence.
  probe_->Clear();
  SignedRelease again = Publishable(3, 4, "", "lab");
  ASSERT_EQ(again.release.artifact_sha256(), v3.release.artifact_sha256());
  PublishRelease(GroupTopic("lab"), again.envelope);
  std::optional<ota::UpdateReport> refused = WaitForState("rejected", 3);
  ASSERT_TRUE(refused) << "states for version 3: "
                       << ::testing::PrintToString(StatesSeen(3)) << "\n"
                       << d->Log();
  EXPECT_THAT(refused->reason(),
              HasSubstr("rolled_back: model 'fleetnet' version 3 was rolled "
                        "back on this device"));
  EXPECT_EQ(refused->active_version(), 2u);
  EXPECT_EQ(Served(), "fleetnet v2");
  // The list survives a restart, which delivers both retained manifests.
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0) << d->Log();
  d = Start();
  EXPECT_EQ(StateDb("SELECT model_version FROM update_rolled_back WHERE "
                    "model_name = 'fleetnet';"),
            "3");
  // A newer release does move the device; nothing installed 3 meanwhile.
  PublishRelease(DeviceTopic(), Publishable(4, 5, kDevice).envelope);
  ASSERT_TRUE(WaitForState("active", 4)) << d->Log();
  EXPECT_EQ(Served(), "fleetnet v4");
  for (const std::string& s : StatesSeen(3)) {
    EXPECT_TRUE(s == "rejected" || s == "rolled_back")
        << "version 3 was acted on again: " << s << "\n"
        << d->Log();
  }
}

// Metadata messages are capped: the broker does not even deliver one over
// the maximum packet size the daemon announces, and the updater refuses a
// release over its cap before parsing it. Neither reaches the state
// database, the daemon's memory stays small, and the next release installs.
TEST_F(FleetUpdateTest, OversizedMetadataIsRefusedAndNotStored) {
  auto d = Start();
  // 64 MiB of noise: over the announced maximum packet size.
  PublishRelease(DeviceTopic(), RandomBytes(size_t{64} << 20, 1));
  // 3 MiB: within the packet size, over the release manifest cap.
  const std::string topic = GroupTopic("lab");
  PublishRelease(topic, RandomBytes(size_t{3} << 20, 2));
  EXPECT_TRUE(WaitForLog(*d, topic + ": 3145728 bytes"))
      << "no refusal naming the topic and the size in the log:\n"
      << d->Log();
  EXPECT_THAT(d->Log(), HasSubstr("bytes allowed"));
  const std::string stored =
      StateDb("SELECT length(release) FROM update_record;");
  EXPECT_TRUE(stored == "<no row>" || std::stoll(stored) < 65536)
      << "update_record.release holds " << stored << " bytes";
  // The daemon never held the 64 MiB message (it started at about 32 MiB).
  const long peak = PeakRssKiB(d->pid());
  EXPECT_GT(peak, 0);
  EXPECT_LT(peak, 96 * 1024) << "peak RSS " << peak << " KiB";
  // A wrongly signed small release is refused and only its identity kept.
  TestFleet other;
  other.RootEnvelope(1);
  SignedRelease forged =
      other.Release(ModelBytes(5), "fleetnet", 5, 1, kDevice);
  PublishRelease(DeviceTopic(), forged.envelope);
  std::optional<ota::UpdateReport> rejected = WaitForState("rejected", 5);
  ASSERT_TRUE(rejected) << d->Log();
  EXPECT_THAT(rejected->reason(), HasSubstr("bad_signature"));
  EXPECT_EQ(StateDb("SELECT length(release) FROM update_record;"), "0");
  EXPECT_EQ(StateDb("SELECT lower(hex(envelope_sha256)) FROM update_record;"),
            ota::Hex(ota::Sha256(forged.envelope)));
  EXPECT_EQ(StateDb("SELECT model_version || ' ' || reason FROM "
                    "update_record;")
                .substr(0, 16),
            "5 bad_signature:");
  // The daemon serves on and takes the next release.
  EXPECT_EQ(Served(), "fleetnet v1");
  PublishRelease(DeviceTopic(), Publishable(2, 2, kDevice).envelope);
  ASSERT_TRUE(WaitForState("active", 2)) << d->Log();
  EXPECT_EQ(Served(), "fleetnet v2");
}

// A root the device refuses is reported like a refused release: on the
// retained state topic and in `ternctl status`.
TEST_F(FleetUpdateTest, RefusedRootIsReported) {
  auto d = Start();
  // Root 2 signed only by keys root 1 does not know.
  TestFleet stranger;
  const std::string bad_root = stranger.RootEnvelope(2);
  ASSERT_TRUE(
      probe_->Publish(std::string(kPrefix) + "/trust/root", bad_root, 1, true)
          .ok());
  auto root_refusal = [&](const ota::UpdateReport& r) {
    return r.state() == "rejected" &&
           r.reason().find("root: version 2 refused: ") != std::string::npos;
  };
  ASSERT_TRUE(probe_->WaitFor(
      [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
        for (const auto& m : all) {
          ota::UpdateReport r;
          if (m.topic == StateTopic() && r.ParseFromString(m.payload) &&
              root_refusal(r)) {
            return true;
          }
        }
        return false;
      },
      30000))
      << d->Log();
  // Retained: a dashboard connecting now sees it.
  MqttProbeOptions po;
  po.port = broker_->port();
  po.ca_file = dir_.File("ca.pem");
  Result<std::unique_ptr<MqttProbe>> late = MqttProbe::Connect(po);
  ASSERT_TRUE(late.ok()) << late.status().message();
  ASSERT_TRUE((*late)->Subscribe(StateTopic()).ok());
  std::optional<mqtt_testing::ReceivedMessage> retained =
      (*late)->WaitForMessage(StateTopic());
  ASSERT_TRUE(retained);
  ota::UpdateReport r;
  ASSERT_TRUE(r.ParseFromString(retained->payload));
  EXPECT_TRUE(root_refusal(r)) << r.ShortDebugString();
  EXPECT_EQ(r.root_version(), 1u);
  // ternctl status shows it.
  const std::string cmd = std::string(TERNCTL_PATH) + " status -s " +
                          dir_.File("t.sock") + " > " + dir_.File("st.out") +
                          " 2>&1";
  std::system(cmd.c_str());  // exit status 1: the state is a refusal
  const std::string status = ReadText(dir_.File("st.out"));
  EXPECT_THAT(status, HasSubstr("rejected (2)"));
  EXPECT_THAT(status, HasSubstr("root: version 2 refused: "));
  EXPECT_EQ(Served(), "fleetnet v1");
  // The refused root changed nothing: a release signed under root 1 installs.
  PublishRelease(DeviceTopic(), Publishable(2, 1, kDevice).envelope);
  ASSERT_TRUE(WaitForState("active", 2)) << d->Log();
}

// A root refused while an update downloads does not disturb it: the
// update finishes, then the refusal is reported.
TEST_F(FleetUpdateTest, RootRefusedDuringAnUpdateIsReportedAfterIt) {
  auto d = Start();
  TestModelSpec big = SlowModel();
  big.name = "fleetnet";
  big.version = 2;
  Result<std::vector<uint8_t>> bytes = BuildTestModel(big);
  ASSERT_TRUE(bytes.ok());
  SignedRelease r = fleet_.Release(std::string(bytes->begin(), bytes->end()),
                                   "fleetnet", 2, 1, kDevice, "", 16384);
  ASSERT_TRUE(nginx_->PutFile("files", "big.tern.zst", r.artifact).ok());
  r.release.clear_urls();
  r.release.add_urls(nginx_->Url("slow/big.tern.zst"));
  r.envelope = fleet_.Sign(r.release);
  PublishRelease(DeviceTopic(), r.envelope);
  ASSERT_TRUE(WaitForState("downloading", 2)) << d->Log();
  TestFleet stranger;
  ASSERT_TRUE(probe_
                  ->Publish(std::string(kPrefix) + "/trust/root",
                            stranger.RootEnvelope(2), 1, true)
                  .ok());
  ASSERT_TRUE(WaitForState("active", 2, 120000)) << d->Log();
  // Then the refusal, after the update's states.
  std::vector<std::string> seen;
  ASSERT_TRUE(probe_->WaitFor(
      [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
        seen.clear();
        for (const auto& m : all) {
          ota::UpdateReport rep;
          if (m.topic != StateTopic() || !rep.ParseFromString(m.payload)) {
            continue;
          }
          const bool root = rep.reason().find("root: version 2 refused: ") !=
                            std::string::npos;
          if (!root && rep.model_version() != 2) continue;  // "idle" first
          const std::string what = root ? "root refused" : rep.state();
          if (seen.empty() || seen.back() != what) seen.push_back(what);
        }
        return !seen.empty() && seen.back() == "root refused";
      },
      30000))
      << ::testing::PrintToString(seen) << "\n"
      << d->Log();
  EXPECT_THAT(seen, ::testing::ElementsAre("received", "downloading",
                                           "verifying", "staged", "activating",
                                           "active", "root refused"));
  EXPECT_EQ(Served(), "fleetnet v2");
}

}  // namespace
}  // namespace ternd::daemon_testing
