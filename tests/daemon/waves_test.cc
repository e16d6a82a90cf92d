// Staged waves, rollout halts and `ternctl rollout status`, end to end with
// real peers on loopback: a mosquitto broker (TLS, test CA) carrying the
// signed releases, timestamps and halts and the devices' reported states,
// an nginx HTTPS server holding the artifacts, and real ternd daemons.
//
// Time is moved through the trusted-time source, never waited for: a
// signed timestamp issued in the future (TestFleet::Timestamp) moves a
// device's trusted-time floor there, exactly as the wave hours passing
// would (ota/trust.h: trusted time = max(build, floor, clock)).
#include "ota/waves.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon/client/client.h"
#include "ota/keys.h"
#include "ota/signing.h"
#include "ota/update_state.pb.h"
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
using ::testing::HasSubstr;
using testing::SignedRelease;
using ::testing::StartsWith;
using testing::TestFleet;
using Json = nlohmann::json;

constexpr char kPrefix[] = "ternd/v1/testfleet";

std::string ModelBytes(uint64_t version) {
  TestModelSpec s = FastModel();
  s.name = "fleetnet";
  s.version = version;
  s.seed = static_cast<uint32_t>(20 + version);
  Result<std::vector<uint8_t>> b = BuildTestModel(s);
  EXPECT_TRUE(b.ok());
  return std::string(b->begin(), b->end());
}

bool WaitUntil(const std::function<bool()>& done, int timeout_ms) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

uint32_t Percentile(const std::string& rollout, const std::string& device) {
  return ota::WavePercentile(ota::WavePlace(rollout, device));
}

// The first ids "robot-N" whose place in `rollout` is below / at or above
// `percent`.
std::vector<std::string> Devices(const std::string& rollout, uint32_t percent,
                                 int below, int above) {
  std::vector<std::string> in, out;
  for (int i = 0; static_cast<int>(in.size()) < below ||
                  static_cast<int>(out.size()) < above;
       ++i) {
    const std::string id = "robot-" + std::to_string(i);
    auto& list = Percentile(rollout, id) < percent ? in : out;
    auto want = Percentile(rollout, id) < percent ? below : above;
    if (static_cast<int>(list.size()) < want) list.push_back(id);
  }
  in.insert(in.end(), out.begin(), out.end());
  return in;
}

class WavesTest : public UpdateFleetTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(
        StartFleet("probe", std::string(kPrefix) + "/devices/+/update/state"));
    TestModelSpec v1 = FastModel();
    v1.name = "fleetnet";
    ASSERT_TRUE(WriteTestModel(v1, dir_.File("model.tern")).ok());
    // The release key as the operator holds it, for `ternctl rollout halt`.
    Result<std::string> pem = ota::EncodePrivateKeyPem(fleet_.release_key());
    ASSERT_TRUE(pem.ok());
    WriteText(dir_.File("release.key"), *pem);
    ::chmod(dir_.File("release.key").c_str(), 0600);
  }

  // A daemon for device `id` (group "lab") in a directory of its own.
  std::unique_ptr<DaemonProcess> StartDevice(const std::string& id) {
    const std::string d = dir_.File(id);
    std::filesystem::create_directories(d);
    WriteText(
        d + "/ternd.toml",
        "[daemon]\nstate_directory = \"" + d + "\"\n[server]\nsocket = \"" + d +
            "/t.sock\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
            "\"\nworkers = 1\narena_mb = 32\n[device]\nid = \"" + id +
            "\"\nfleet = \"testfleet\"\ngroups = [\"lab\"]\n[mqtt]\nbroker = "
            "\"127.0.0.1:" +
            std::to_string(broker_->port()) + "\"\nca_file = \"" +
            dir_.File("ca.pem") +
            "\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n[ota]\n"
            "root_file = \"" +
            dir_.File("root.pb") +
            "\"\nretry_min_ms = 50\nretry_max_ms = 500\n");
    DaemonOptions o;
    o.directory = d;
    o.config_path = d + "/ternd.toml";
    auto p = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(p->WaitForNotify("READY=1")) << p->Log();
    return p;
  }

  std::string Served(const std::string& id) {
    Result<std::unique_ptr<Client>> c =
        Client::Connect(dir_.File(id) + "/t.sock");
    if (!c.ok()) return "<" + std::string(c.status().message()) + ">";
    Result<wire::ModelInfoResponse> i = (*c)->ModelInfo();
    return i.ok() ? i->name() + " v" + std::to_string(i->version()) : "";
  }

  // The state code recorded in device `id`'s state database.
  std::string RecordedState(const std::string& id) {
    const std::string path = dir_.File(id) + "/state.db";
    sqlite3* db = nullptr;
    std::string out = "<no row>";
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
        SQLITE_OK) {
      sqlite3_busy_timeout(db, 5000);
      sqlite3_stmt* q = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT state FROM update_record", -1, &q,
                             nullptr) == SQLITE_OK &&
          sqlite3_step(q) == SQLITE_ROW) {
        out = std::to_string(sqlite3_column_int(q, 0));
      }
      sqlite3_finalize(q);
    }
    sqlite3_close(db);
    return out;
  }

  // A release of fleetnet `version` for group "lab" whose artifact nginx
  // serves, with rollout `rollout` and `waves` (none when empty).
  SignedRelease Publishable(uint64_t version, uint64_t sequence,
                            const std::string& rollout, int64_t wave_start,
                            std::vector<std::pair<int64_t, uint32_t>> waves) {
    SignedRelease r = fleet_.Release(ModelBytes(version), "fleetnet", version,
                                     sequence, "", "lab", 1024);
    const std::string name = "fleetnet-" + std::to_string(version) + "-" +
                             std::to_string(sequence) + ".tern.zst";
    EXPECT_TRUE(nginx_->PutFile("files", name, r.artifact).ok());
    r.release.clear_urls();
    r.release.add_urls(nginx_->Url("files/" + name));
    r.release.set_rollout_id(rollout);
    if (!waves.empty()) {
      r.release.mutable_waves()->set_start(wave_start);
      for (const auto& [offset, percent] : waves) {
        ota::WaveStep* s = r.release.mutable_waves()->add_steps();
        s->set_offset_s(offset);
        s->set_percent(percent);
      }
    }
    r.envelope = fleet_.Sign(r.release);
    return r;
  }

  void Publish(const std::string& topic, const std::string& payload) {
    Result<int> mid = probe_->Publish(topic, payload, 1, true);
    ASSERT_TRUE(mid.ok()) << mid.status().message();
  }
  static std::string GroupTopic() {
    return std::string(kPrefix) + "/groups/lab/update/release";
  }
  static std::string StateTopic(const std::string& id) {
    return std::string(kPrefix) + "/devices/" + id + "/update/state";
  }

  // Waits for device `id` to report `state` about `version`.
  std::optional<ota::UpdateReport> WaitForState(const std::string& id,
                                                const std::string& state,
                                                uint64_t version,
                                                int timeout_ms = 30000) {
    return mqtt_testing::WaitForUpdateState(*probe_, StateTopic(id), state,
                                            version, timeout_ms);
  }

  // States `id` reported about `version` so far, repeats folded.
  std::vector<std::string> StatesSeen(const std::string& id, uint64_t version) {
    return mqtt_testing::UpdateStatesSeen(*probe_, StateTopic(id), version);
  }

  // Runs `ternctl ARGS` with the broker flags; the exit code and what it
  // printed on stdout (its stderr, the session's log lines, goes to
  // ternctl.err).
  std::pair<int, std::string> Ternctl(const std::string& args) {
    const std::string out = dir_.File("ternctl.out");
    const std::string cmd =
        std::string(TERNCTL_PATH) + " " + args +
        " --broker 127.0.0.1:" + std::to_string(broker_->port()) +
        " --cafile " + dir_.File("ca.pem") + " --fleet testfleet > " + out +
        " 2> " + dir_.File("ternctl.err");
    const int rc = std::system(cmd.c_str());
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadText(out)};
  }
  std::string TernctlErr() { return ReadText(dir_.File("ternctl.err")); }
};

TEST_F(WavesTest, AWaveHoldsADeviceBackUntilItOpensAcrossARestart) {
  const std::string rollout = "wave-hold";
  const std::string id = Devices(rollout, 100, 1, 0)[0];
  const uint32_t place = Percentile(rollout, id);
  auto d = StartDevice(id);
  // The first step opens for the devices below `place`: not this one; the
  // second, an hour later, for everyone.
  const int64_t start = fleet_.now();
  SignedRelease r =
      Publishable(2, 10, rollout, start, {{0, place}, {3600, 100}});
  Publish(GroupTopic(), r.envelope);
  std::optional<ota::UpdateReport> waiting = WaitForState(id, "waiting", 2);
  ASSERT_TRUE(waiting) << d->Log();
  EXPECT_EQ(waiting->state_code(), 10);
  EXPECT_EQ(waiting->rollout_id(), rollout);
  EXPECT_EQ(waiting->wave_start(), start);
  EXPECT_EQ(waiting->wave_opens(), start + 3600);
  EXPECT_EQ(waiting->wave_percent(), place);
  EXPECT_EQ(RecordedState(id), "10");
  EXPECT_THAT(d->Log(), HasSubstr("opens for this device at " +
                                  std::to_string(start + 3600)));

  // A restart keeps waiting (the release is kept in the state database).
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0) << d->Log();
  probe_->Clear();
  d = StartDevice(id);
  ASSERT_TRUE(WaitForState(id, "waiting", 2)) << d->Log();
  EXPECT_EQ(RecordedState(id), "10");
  EXPECT_EQ(Served(id), "fleetnet v1");
  EXPECT_TRUE(nginx_->AccessLog("fleetnet-2-10.tern.zst").empty())
      << "a waiting device downloaded the artifact";

  // An hour passes, signed: the wave opens, the device updates.
  Publish(std::string(kPrefix) + "/trust/timestamp",
          fleet_.Timestamp(start + 3601));
  ASSERT_TRUE(WaitForState(id, "active", 2)) << d->Log();
  EXPECT_EQ(Served(id), "fleetnet v2");
  EXPECT_THAT(
      StatesSeen(id, 2),
      ::testing::ElementsAre("waiting", "received", "downloading", "verifying",
                             "staged", "activating", "active"));
}

TEST_F(WavesTest, DevicesInTheOpenWaveGoAtOnceAndBadSchedulesAreRefused) {
  const std::string rollout = "wave-now";
  const std::string id = Devices(rollout, 50, 1, 0)[0];  // below 50
  auto d = StartDevice(id);
  // A schedule devices refuse: offsets that do not increase.
  SignedRelease bad =
      Publishable(2, 10, rollout, fleet_.now(), {{60, 10}, {60, 50}});
  Publish(GroupTopic(), bad.envelope);
  std::optional<ota::UpdateReport> refused = WaitForState(id, "rejected", 2);
  ASSERT_TRUE(refused) << d->Log();
  EXPECT_EQ(refused->reason(),
            "malformed: release v2: waves: step 2: offset 60 s, expected more "
            "than step 1's 60 s (offsets must increase)");
  probe_->Clear();
  SignedRelease r = Publishable(3, 11, rollout, fleet_.now(), {{0, 50}});
  Publish(GroupTopic(), r.envelope);
  ASSERT_TRUE(WaitForState(id, "active", 3)) << d->Log();
  EXPECT_THAT(StatesSeen(id, 3),
              ::testing::Not(::testing::Contains("waiting")));
}

TEST_F(WavesTest, HaltStopsTheWaitingButNotTheFinished) {
  const std::string rollout = "wave-halt";
  // `early` is in the first wave (below 50%), `late` is not.
  const std::vector<std::string> ids = Devices(rollout, 50, 1, 1);
  const std::string early = ids[0], late = ids[1];
  auto a = StartDevice(early);
  auto b = StartDevice(late);
  const int64_t start = fleet_.now();
  SignedRelease r = Publishable(2, 10, rollout, start, {{0, 50}, {600, 100}});
  Publish(GroupTopic(), r.envelope);
  ASSERT_TRUE(WaitForState(early, "active", 2)) << a->Log();
  ASSERT_TRUE(WaitForState(late, "waiting", 2)) << b->Log();

  // A halt not signed by the release keys changes nothing.
  TestFleet impostor;
  Publish(std::string(kPrefix) + "/rollouts/" + rollout + "/halt",
          impostor.Halt(rollout, "forged"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        return b->Log().find("/rollouts/" + rollout +
                             "/halt: halt refused, nothing changes") !=
               std::string::npos;
      },
      15000))
      << b->Log();
  EXPECT_EQ(RecordedState(late), "10");

  // The operator's halt, with the real tool and the release key.
  probe_->Clear();
  auto [rc, out] = Ternctl("rollout halt " + rollout + " --sign " +
                           dir_.File("release.key") + " --reason 'bad batch'");
  ASSERT_EQ(rc, 0) << out << TernctlErr();
  EXPECT_THAT(out, HasSubstr("halted       rollout " + rollout));
  std::optional<ota::UpdateReport> halted = WaitForState(late, "rejected", 2);
  ASSERT_TRUE(halted) << b->Log();
  EXPECT_THAT(halted->reason(),
              StartsWith("halted: rollout 'wave-halt' was halted (bad batch)"));
  EXPECT_EQ(RecordedState(late), "2");
  // The finished device stays where it is.
  EXPECT_EQ(Served(early), "fleetnet v2");
  EXPECT_EQ(RecordedState(early), "7");

  // The rest of the schedule passes: the halted device does not move, also
  // after a restart (the retained halt comes before the release again).
  Publish(std::string(kPrefix) + "/trust/timestamp",
          fleet_.Timestamp(start + 601));
  b->Signal(SIGTERM);
  ASSERT_EQ(b->WaitExit(), 0) << b->Log();
  b = StartDevice(late);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return b->Log().find("rollout 'wave-halt' halted by the fleet") !=
               std::string::npos;
      },
      15000))
      << b->Log();
  EXPECT_EQ(Served(late), "fleetnet v1");
  EXPECT_EQ(RecordedState(late), "2");
}

// 20 devices: 3 real daemons, and 17 whose retained presence and update
// state the test publishes itself (as 17 more daemons would).
TEST_F(WavesTest, RolloutStatusSummarisesTwentyDevices) {
  const std::string rollout = "wave-status";
  const std::vector<std::string> real = Devices(rollout, 50, 2, 1);
  std::vector<std::unique_ptr<DaemonProcess>> daemons;
  for (const std::string& id : real) daemons.push_back(StartDevice(id));
  const int64_t start = fleet_.now() - 90;
  SignedRelease r = Publishable(2, 10, rollout, start, {{0, 50}, {86400, 100}});
  Publish(GroupTopic(), r.envelope);
  ASSERT_TRUE(WaitForState(real[0], "active", 2)) << daemons[0]->Log();
  ASSERT_TRUE(WaitForState(real[1], "active", 2)) << daemons[1]->Log();
  ASSERT_TRUE(WaitForState(real[2], "waiting", 2)) << daemons[2]->Log();

  struct Fake {
    const char* state;
    int code;
    const char* reason;
  };
  const std::vector<Fake> fakes = {
      {"active", 7, ""},
      {"active", 7, ""},
      {"active", 7, ""},
      {"active", 7, ""},
      {"active", 7, ""},
      {"active", 7, ""},
      {"waiting", 10, ""},
      {"waiting", 10, ""},
      {"waiting", 10, ""},
      {"waiting", 10, ""},
      {"downloading", 3, ""},
      {"downloading", 3, ""},
      {"validating", 11, ""},
      {"rejected", 2, "halted: rollout 'wave-status' was halted"},
      {"rejected", 2, "runtime_too_old: release v2 needs ternd 9.0.0"},
      {"failed", 8, "download: HTTP 404 from https://a.example/x"},
      {"failed", 8, "download: HTTP 503 from https://a.example/x"},
  };
  ASSERT_EQ(fakes.size(), 17u);
  for (size_t i = 0; i < fakes.size(); ++i) {
    const std::string id = "sim-" + std::to_string(i);
    telemetry::Presence p;
    p.set_state(telemetry::Presence::ONLINE);
    p.set_device_id(id);
    p.add_groups("lab");
    Publish(std::string(kPrefix) + "/devices/" + id + "/presence",
            p.SerializeAsString());
    ota::UpdateReport u;
    u.set_device_id(id);
    u.set_state(fakes[i].state);
    u.set_state_code(fakes[i].code);
    u.set_reason(fakes[i].reason);
    u.set_model_name("fleetnet");
    u.set_model_version(2);
    u.set_rollout_id(rollout);
    u.set_time(fleet_.now());
    Publish(StateTopic(id), u.SerializeAsString());
  }
  // Not part of it: a device of another group, and one reporting another
  // rollout.
  telemetry::Presence other;
  other.set_state(telemetry::Presence::ONLINE);
  other.add_groups("yard");
  Publish(std::string(kPrefix) + "/devices/yard-1/presence",
          other.SerializeAsString());
  ota::UpdateReport elsewhere;
  elsewhere.set_state("active");
  elsewhere.set_state_code(7);
  elsewhere.set_rollout_id("another-rollout");
  Publish(StateTopic("yard-1"), elsewhere.SerializeAsString());

  auto [rc, out] = Ternctl("rollout status " + rollout + " --json");
  ASSERT_EQ(rc, 0) << out << TernctlErr();
  const Json j = Json::parse(out);
  EXPECT_EQ(j["rollout_id"], rollout);
  EXPECT_EQ(j["model"], "fleetnet");
  EXPECT_EQ(j["version"], 2);
  EXPECT_EQ(j["targeted"], 20);
  EXPECT_EQ(j["reporting"], 20);
  EXPECT_EQ(j["not_reported"], 0);
  EXPECT_EQ(j["started"], start);
  EXPECT_GE(j["since_start_s"].get<int64_t>(), 90);
  EXPECT_EQ(j["wave_percent"], 50);
  EXPECT_EQ(j["states"]["active"], 8);
  EXPECT_EQ(j["states"]["waiting"], 5);
  EXPECT_EQ(j["states"]["downloading"], 2);
  EXPECT_EQ(j["states"]["validating"], 1);
  EXPECT_EQ(j["states"]["rejected"], 2);
  EXPECT_EQ(j["states"]["failed"], 2);
  ASSERT_EQ(j["reasons"].size(), 3u);
  EXPECT_EQ(j["reasons"][0]["reason"], "failed: download");
  EXPECT_EQ(j["reasons"][0]["count"], 2);
  EXPECT_EQ(j["halted"], false);
  EXPECT_EQ(j["devices"][real[2]], "waiting");

  // The text form, after a halt: the waiting daemon is rejected as halted.
  ASSERT_EQ(Ternctl("rollout halt " + rollout + " --sign " +
                    dir_.File("release.key") + " --reason 'pause'")
                .first,
            0);
  ASSERT_TRUE(WaitForState(real[2], "rejected", 2)) << daemons[2]->Log();
  auto [rc2, text] = Ternctl("rollout status " + rollout);
  ASSERT_EQ(rc2, 0) << text << TernctlErr();
  EXPECT_THAT(text, HasSubstr("rollout      wave-status\n"));
  EXPECT_THAT(text, HasSubstr("model        fleetnet v2\n"));
  EXPECT_THAT(text, HasSubstr("targeted     20 (from the release and "
                              "presence; 0 not reporting this rollout)\n"));
  EXPECT_THAT(text, HasSubstr("  waiting      4\n"));
  EXPECT_THAT(text, HasSubstr("  rejected     3\n"));
  EXPECT_THAT(text, HasSubstr("     2  rejected: halted (e.g. halted: "));
  EXPECT_THAT(text, HasSubstr("halted       yes: pause\n"));

  // --watch prints again when something changes, until stopped.
  const std::string watch =
      "timeout 3 " + std::string(TERNCTL_PATH) + " rollout status " + rollout +
      " --watch --json --settle-ms 100 --broker "
      "127.0.0.1:" +
      std::to_string(broker_->port()) + " --cafile " + dir_.File("ca.pem") +
      " --fleet testfleet > " + dir_.File("watch.out") + " 2> " +
      dir_.File("watch.err") + " &";
  ASSERT_EQ(std::system(watch.c_str()), 0);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ReadText(dir_.File("watch.out")).find('\n') != std::string::npos;
      },
      5000));
  ota::UpdateReport moved;
  moved.set_state("active");
  moved.set_state_code(7);
  moved.set_rollout_id(rollout);
  moved.set_model_version(2);
  Publish(StateTopic("sim-10"), moved.SerializeAsString());
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string w = ReadText(dir_.File("watch.out"));
        return std::count(w.begin(), w.end(), '\n') >= 2;
      },
      5000))
      << ReadText(dir_.File("watch.out"));
  const std::string w = ReadText(dir_.File("watch.out"));
  const Json second = Json::parse(w.substr(
      w.find('\n') + 1, w.find('\n', w.find('\n') + 1) - w.find('\n') - 1));
  EXPECT_EQ(second["states"]["active"], 9);
  EXPECT_EQ(second["states"]["downloading"], 1);
}

}  // namespace
}  // namespace ternd::daemon_testing
