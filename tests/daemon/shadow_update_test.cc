// Shadow validation end to end with real peers on loopback: a mosquitto
// broker (TLS) carrying one signed group release to two daemons and their
// state reports back, an nginx HTTPS server holding the artifact, and a
// client per daemon sending its own traffic. The release's model agrees
// with what one daemon serves and not with what the other serves: the
// first activates it after the required requests, the second rejects it
// with the measured agreement, and none of its clients ever sees an
// answer of the staged model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "daemon/client/client.h"
#include "ota/update_state.pb.h"
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::SignedRelease;
using testing::TestFleet;

constexpr char kPrefix[] = "ternd/v1/testfleet";
constexpr int kInputs = 8;  // distinct requests each client cycles through

TestModelSpec Model(uint64_t version, uint32_t seed) {
  TestModelSpec s = FastModel();
  s.name = "fleetnet";
  s.version = version;
  s.seed = seed;
  return s;
}

wire::InferRequest Request(uint32_t seed) {
  wire::InferRequest r;
  TestModelSpec spec = FastModel();
  client::AddF32Input(&r, "x", 1, spec.inputs, TestInput(spec, 1, seed));
  return r;
}

// Every output's bytes, in order: what a client saw.
std::string Outputs(const wire::InferResponse& r) {
  std::string all;
  for (const wire::Tensor& t : r.outputs()) all += t.name() + ":" + t.data();
  return all;
}

// One client sending requests in a loop and keeping every answer.
class Traffic {
 public:
  Traffic(const std::string& socket, uint32_t first_seed)
      : socket_(socket), first_seed_(first_seed) {}
  ~Traffic() { Stop(); }

  void Start() {
    thread_ = std::thread([this] {
      Result<std::unique_ptr<Client>> c = Client::Connect(socket_);
      if (!c.ok()) {
        ++failed_;
        return;
      }
      for (uint64_t n = 0; !stop_; ++n) {
        const uint32_t seed = first_seed_ + static_cast<uint32_t>(n % kInputs);
        Result<wire::InferResponse> r = (*c)->Infer(Request(seed));
        if (!r.ok()) {
          ++failed_;
          continue;
        }
        std::lock_guard<std::mutex> lock(mu_);
        answers_.push_back({seed, r->model_version(), Outputs(*r)});
      }
    });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  struct Answer {
    uint32_t seed;
    uint64_t version;
    std::string outputs;
  };
  std::vector<Answer> answers() {
    std::lock_guard<std::mutex> lock(mu_);
    return answers_;
  }
  int failed() const { return failed_; }

 private:
  std::string socket_;
  uint32_t first_seed_;
  std::atomic<bool> stop_{false};
  std::atomic<int> failed_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Answer> answers_;
};

class ShadowUpdateTest : public UpdateFleetTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartFleet(
        "robot-a", std::string(kPrefix) + "/devices/+/update/state"));
  }

  // A daemon `id` serving `model` (hot swap unless `swap` says otherwise).
  std::unique_ptr<DaemonProcess> StartDevice(const std::string& id,
                                             const TestModelSpec& model,
                                             const std::string& swap = "hot") {
    const std::string d = dir_.File(id);
    ::mkdir(d.c_str(), 0700);
    EXPECT_TRUE(WriteTestModel(model, d + "/model.tern").ok());
    WriteText(
        d + "/ternd.toml",
        "[daemon]\nstate_directory = \"" + d + "\"\n[server]\nsocket = \"" + d +
            "/t.sock\"\n[runtime]\nmodel = \"" + d +
            "/model.tern\"\nworkers = 2\narena_mb = 32\nswap = \"" + swap +
            "\"\n[device]\nid = \"" + id +
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
    auto daemon = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(daemon->WaitForNotify("READY=1")) << daemon->Log();
    // Subscribed and reporting: its first state report is retained.
    EXPECT_TRUE(probe_->WaitFor(
        [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
          for (const auto& m : all) {
            if (m.topic == StateTopic(id)) return true;
          }
          return false;
        },
        15000))
        << daemon->Log();
    return daemon;
  }

  static std::string StateTopic(const std::string& id) {
    return std::string(kPrefix) + "/devices/" + id + "/update/state";
  }
  std::string Socket(const std::string& id) {
    return dir_.File(id) + "/t.sock";
  }

  // The group release of `model` with shadow validation `v`, its artifact
  // on nginx.
  SignedRelease Publishable(const TestModelSpec& model, uint64_t sequence,
                            const ota::ShadowValidation& v) {
    SignedRelease r = fleet_.Release(ModelBytes(model), model.name,
                                     model.version, sequence, "", "lab", 1024);
    const std::string name = "fleetnet-" + std::to_string(model.version) + "-" +
                             std::to_string(sequence) + ".tern.zst";
    EXPECT_TRUE(nginx_->PutFile("files", name, r.artifact).ok());
    r.release.clear_urls();
    r.release.add_urls(nginx_->Url("files/" + name));
    *r.release.mutable_shadow_validation() = v;
    r.envelope = fleet_.Sign(r.release);
    return r;
  }

  void Publish(const SignedRelease& r) {
    Result<int> mid = probe_->Publish(
        std::string(kPrefix) + "/groups/lab/update/release", r.envelope, 1,
        /*retain=*/true);
    ASSERT_TRUE(mid.ok()) << mid.status().message();
  }

  // Waits for device `id` to report `state` for `version`.
  std::optional<ota::UpdateReport> WaitForState(const std::string& id,
                                                const std::string& state,
                                                uint64_t version,
                                                int timeout_ms = 30000) {
    return mqtt_testing::WaitForUpdateState(*probe_, StateTopic(id), state,
                                            version, timeout_ms);
  }

  // The states `id` reported for `version`, repeats folded.
  std::vector<std::string> StatesSeen(const std::string& id, uint64_t version) {
    return mqtt_testing::UpdateStatesSeen(*probe_, StateTopic(id), version);
  }

  // What `socket`'s daemon answers now for each input seed.
  std::map<uint32_t, std::string> Baseline(const std::string& socket,
                                           uint32_t first_seed) {
    std::map<uint32_t, std::string> out;
    Result<std::unique_ptr<Client>> c = Client::Connect(socket);
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (!c.ok()) return out;
    for (uint32_t s = first_seed; s < first_seed + kInputs; ++s) {
      Result<wire::InferResponse> r = (*c)->Infer(Request(s));
      EXPECT_TRUE(r.ok()) << r.status().message();
      if (r.ok()) out[s] = Outputs(*r);
    }
    return out;
  }

  static ota::ShadowValidation Validation(uint64_t min_requests,
                                          uint32_t time_limit_s) {
    ota::ShadowValidation v;
    v.set_sample_rate(0.5);
    v.set_min_requests(min_requests);
    v.set_min_agreement(0.9);
    v.set_metric("argmax");
    v.set_output("probs");
    v.set_time_limit_s(time_limit_s);
    return v;
  }
};

TEST_F(ShadowUpdateTest, AgreeingDeviceActivatesDisagreeingDeviceRejects) {
  // robot-a serves the weights the release carries (seed 21), robot-b
  // others (seed 77); each gets its own traffic.
  auto a = StartDevice("robot-a", Model(1, 21));
  auto b = StartDevice("robot-b", Model(1, 77));
  const std::map<uint32_t, std::string> b_before =
      Baseline(Socket("robot-b"), 101);
  // What the release's model answers to robot-b's requests (robot-a
  // serves the same weights): it must never reach robot-b's client.
  const std::map<uint32_t, std::string> staged_on_b =
      Baseline(Socket("robot-a"), 101);
  int differing = 0;
  for (const auto& [seed, out] : b_before) {
    if (staged_on_b.at(seed) != out) ++differing;
  }
  ASSERT_EQ(differing, kInputs) << "the two models must answer differently";

  Traffic on_a(Socket("robot-a"), 1), on_b(Socket("robot-b"), 101);
  on_a.Start();
  on_b.Start();
  constexpr uint64_t kRequired = 30;
  Publish(Publishable(Model(2, 21), 1, Validation(kRequired, 60)));

  std::optional<ota::UpdateReport> validating =
      WaitForState("robot-a", "validating", 2);
  ASSERT_TRUE(validating) << a->Log();
  EXPECT_EQ(validating->shadow_required(), kRequired);
  EXPECT_GT(validating->shadow_deadline(), 0);

  std::optional<ota::UpdateReport> active =
      WaitForState("robot-a", "active", 2);
  ASSERT_TRUE(active) << a->Log();
  EXPECT_EQ(active->active_version(), 2u);
  EXPECT_GE(active->shadow_requests(), kRequired);
  EXPECT_EQ(active->shadow_agreement(), 1.0);
  EXPECT_EQ(active->shadow_rows(), active->shadow_agreeing());
  EXPECT_THAT(StatesSeen("robot-a", 2),
              ElementsAre("received", "downloading", "verifying", "staged",
                          "validating", "activating", "active"));

  std::optional<ota::UpdateReport> rejected =
      WaitForState("robot-b", "rejected", 2);
  ASSERT_TRUE(rejected) << b->Log();
  EXPECT_THAT(rejected->reason(), HasSubstr("shadow validation failed: "));
  EXPECT_THAT(rejected->reason(), HasSubstr("required 0.900 over 30 requests"));
  EXPECT_GE(rejected->shadow_requests(), kRequired);
  EXPECT_LT(rejected->shadow_agreement(), 0.9);
  char measured[32];
  std::snprintf(measured, sizeof(measured), "agreement %.3f",
                rejected->shadow_agreement());
  EXPECT_THAT(rejected->reason(), HasSubstr(measured));
  EXPECT_EQ(rejected->active_version(), 1u);
  EXPECT_THAT(StatesSeen("robot-b", 2),
              ElementsAre("received", "downloading", "verifying", "staged",
                          "validating", "rejected"));

  on_a.Stop();
  on_b.Stop();
  EXPECT_EQ(on_a.failed(), 0);
  EXPECT_EQ(on_b.failed(), 0);
  // robot-b's client saw only the serving model's answers, before, during
  // and after the validation: never the staged model's.
  const std::vector<Traffic::Answer> seen_b = on_b.answers();
  ASSERT_GE(seen_b.size(), kRequired);
  for (const Traffic::Answer& x : seen_b) {
    ASSERT_EQ(x.version, 1u);
    ASSERT_EQ(x.outputs, b_before.at(x.seed)) << "request seed " << x.seed;
    ASSERT_NE(x.outputs, staged_on_b.at(x.seed));
  }
  // robot-a's client got version 1 until the swap, then version 2: the
  // same weights, the same answers.
  bool saw_v2 = false;
  for (const Traffic::Answer& x : on_a.answers()) saw_v2 |= x.version == 2;
  EXPECT_TRUE(saw_v2);
  Result<std::unique_ptr<Client>> cb = Client::Connect(Socket("robot-b"));
  ASSERT_TRUE(cb.ok());
  Result<wire::UpdateStatusResponse> st = (*cb)->UpdateStatus();
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->state(), "rejected");
  EXPECT_EQ(st->shadow().requests(), rejected->shadow_requests());
  EXPECT_EQ(st->shadow().metric(), "argmax");
  EXPECT_EQ(st->shadow().output(), "probs");
  // The agreement is in the metrics too (ternd_shadow_agreement, what the
  // telemetry batches carry in their quality section).
  const std::string prom = dir_.File("prom.txt");
  ASSERT_EQ(std::system((std::string(TERNCTL_PATH) + " stats --prometheus -s " +
                         Socket("robot-b") + " > " + prom + " 2>&1")
                            .c_str()),
            0)
      << ReadText(prom);
  const std::string text = ReadText(prom);
  const std::string series =
      "ternd_shadow_agreement{model=\"fleetnet\",version=\"2\"} ";
  const size_t at = text.find(series);
  ASSERT_NE(at, std::string::npos) << text;
  EXPECT_NEAR(std::strtod(text.c_str() + at + series.size(), nullptr),
              rejected->shadow_agreement(), 1e-9);
}

TEST_F(ShadowUpdateTest, NoTrafficWithinTheTimeLimitIsRejected) {
  auto a = StartDevice("robot-a", Model(1, 21));
  Publish(Publishable(Model(2, 21), 1, Validation(5, 3)));
  std::optional<ota::UpdateReport> validating =
      WaitForState("robot-a", "validating", 2);
  ASSERT_TRUE(validating) << a->Log();
  // While validating, the local view has the live numbers.
  Result<std::unique_ptr<Client>> c = Client::Connect(Socket("robot-a"));
  ASSERT_TRUE(c.ok());
  Result<wire::UpdateStatusResponse> st = (*c)->UpdateStatus();
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->state(), "validating");
  EXPECT_EQ(st->state_code(), 11);
  EXPECT_EQ(st->shadow().required(), 5u);
  EXPECT_EQ(st->shadow().requests(), 0u);
  const std::string out = dir_.File("status.txt");
  const int rc = std::system((std::string(TERNCTL_PATH) + " status -s " +
                              Socket("robot-a") + " > " + out + " 2>&1")
                                 .c_str());
  EXPECT_EQ(rc, 0) << ReadText(out);
  EXPECT_THAT(ReadText(out),
              HasSubstr("update      validating (11) 'fleetnet' version 2"));
  EXPECT_THAT(ReadText(out),
              HasSubstr("shadow      0 / 5 requests compared, agreement "
                        "0.000 (0 of 0 rows, argmax on 'probs'; required "
                        "0.900)"));
  std::optional<ota::UpdateReport> rejected =
      WaitForState("robot-a", "rejected", 2, 15000);
  ASSERT_TRUE(rejected) << a->Log();
  EXPECT_THAT(rejected->reason(),
              HasSubstr("shadow validation timed out: 3 s passed with 0 of 5 "
                        "requests compared"));
  Result<wire::ModelInfoResponse> info = (*c)->ModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version(), 1u);
}

TEST_F(ShadowUpdateTest, RestartWhileValidatingCountsAgain) {
  auto a = StartDevice("robot-a", Model(1, 21));
  ota::ShadowValidation v = Validation(40, 60);
  v.set_sample_rate(1.0);
  Publish(Publishable(Model(2, 21), 1, v));
  ASSERT_TRUE(WaitForState("robot-a", "validating", 2)) << a->Log();
  // Some requests are compared, and reported (at most once a second).
  {
    Result<std::unique_ptr<Client>> c = Client::Connect(Socket("robot-a"));
    ASSERT_TRUE(c.ok());
    for (uint32_t i = 0; i < 10; ++i) ASSERT_TRUE((*c)->Infer(Request(i)).ok());
  }
  ASSERT_TRUE(probe_->WaitFor(
      [&](const std::vector<mqtt_testing::ReceivedMessage>& all) {
        for (const auto& m : all) {
          ota::UpdateReport r;
          if (m.topic == StateTopic("robot-a") &&
              r.ParseFromString(m.payload) && r.state() == "validating" &&
              r.shadow_requests() > 0) {
            return true;
          }
        }
        return false;
      },
      15000))
      << a->Log();
  a->Signal(SIGKILL);
  a->WaitExit();
  probe_->Clear();
  a = StartDevice("robot-a", Model(1, 21));
  // Staged again from the stored artifact; the count starts over.
  std::optional<ota::UpdateReport> again =
      WaitForState("robot-a", "validating", 2);
  ASSERT_TRUE(again) << a->Log();
  EXPECT_EQ(again->shadow_requests(), 0u);
  EXPECT_THAT(a->Log(), HasSubstr("resuming the update"));
  Traffic on_a(Socket("robot-a"), 1);
  on_a.Start();
  std::optional<ota::UpdateReport> active =
      WaitForState("robot-a", "active", 2);
  ASSERT_TRUE(active) << a->Log();
  EXPECT_GE(active->shadow_requests(), 40u);
  on_a.Stop();
  EXPECT_EQ(on_a.failed(), 0);
}

TEST_F(ShadowUpdateTest, ColdSwapRefusesShadowValidationBeforeDownloading) {
  auto a = StartDevice("robot-a", Model(1, 21), "cold");
  Publish(Publishable(Model(2, 21), 1, Validation(5, 60)));
  std::optional<ota::UpdateReport> rejected =
      WaitForState("robot-a", "rejected", 2);
  ASSERT_TRUE(rejected) << a->Log();
  EXPECT_THAT(rejected->reason(),
              HasSubstr("shadow_validation: runtime.swap is \"cold\""));
  EXPECT_THAT(StatesSeen("robot-a", 2), ElementsAre("rejected"));
  EXPECT_TRUE(nginx_->AccessLog(".tern.zst").empty());
}

TEST_F(ShadowUpdateTest, BadManifestFieldIsRejectedWithItsName) {
  auto a = StartDevice("robot-a", Model(1, 21));
  ota::ShadowValidation v = Validation(5, 60);
  v.set_sample_rate(1.5);
  Publish(Publishable(Model(2, 21), 1, v));
  std::optional<ota::UpdateReport> rejected =
      WaitForState("robot-a", "rejected", 2);
  ASSERT_TRUE(rejected) << a->Log();
  EXPECT_THAT(rejected->reason(),
              HasSubstr("shadow_validation.sample_rate is 1.5; expected"));
}

}  // namespace
}  // namespace ternd::daemon_testing
