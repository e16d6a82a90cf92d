// MqttSession against a real mosquitto broker on loopback, with TLS from a
// throw-away test CA (tests/support/make_test_ca.sh).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "net/mqtt_session.h"
#include "tests/net/session_recorder.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/support/test_env.h"

extern char** environ;

namespace ternd::net {
namespace {

using ternd::mqtt_testing::MakeTestCertificates;
using ternd::mqtt_testing::MosquittoBroker;
using ternd::mqtt_testing::MosquittoBrokerOptions;
using ternd::mqtt_testing::MqttProbe;
using ternd::mqtt_testing::MqttProbeOptions;
using ternd::mqtt_testing::MqttTestDir;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunFor;
using testing::RunUntil;
using testing::SessionRecorder;

constexpr char kDevice[] = "dev1";
const std::string kPrefix = "ternd/v1/testfleet";
const std::string kDeviceTopic = kPrefix + "/devices/dev1";

class MqttSessionIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeTestCertificates(certs_.path(), kDevice).ok());
    ASSERT_GE(sd_event_new(&loop_), 0);
  }
  void TearDown() override {
    sessions_.clear();
    sd_event_unref(loop_);
  }

  MosquittoBrokerOptions BrokerOptions() {
    MosquittoBrokerOptions o;
    o.cert_dir = certs_.path();
    return o;
  }

  MqttOptions SessionOptions(const MosquittoBroker& broker) {
    MqttOptions o;
    o.host = "127.0.0.1";
    o.port = broker.port();
    o.client_id = kDevice;
    o.ca_file = certs_.File("ca.pem");
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 400;
    o.backoff_seed = 1234;
    return o;
  }

  MqttProbeOptions ProbeOptions(const MosquittoBroker& broker) {
    MqttProbeOptions o;
    o.port = broker.port();
    o.ca_file = certs_.File("ca.pem");
    return o;
  }

  // Creates a session owned by the fixture, with `rec` observing it.
  MqttSession* NewSession(const MqttOptions& options, SessionRecorder* rec) {
    auto session = MqttSession::Create(loop_, options);
    EXPECT_TRUE(session.ok()) << session.status().message();
    if (!session.ok()) return nullptr;
    sessions_.push_back(std::move(*session));
    sessions_.back()->AddObserver(rec->Callbacks());
    return sessions_.back().get();
  }

  bool WaitConnected(MqttSession* s, int timeout_ms = 20000) {
    return RunUntil(
        loop_, [&] { return s->connected(); }, timeout_ms);
  }

  MqttTestDir certs_;
  sd_event* loop_ = nullptr;
  std::vector<std::unique_ptr<MqttSession>> sessions_;
};

TEST_F(MqttSessionIntegrationTest, ConnectsOverTlsAndGetsQos1Acknowledged) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe(kDeviceTopic + "/#").ok());

  SessionRecorder rec, second;  // every observer sees every event
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  s->AddObserver(second.Callbacks());
  s->Subscribe(kDeviceTopic + "/cmd", 1);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error() << "\n" << broker.Log();
  EXPECT_EQ(s->connects(), 1u);
  EXPECT_EQ(s->reconnects(), 0u);
  EXPECT_EQ(rec.connected, 1);
  EXPECT_TRUE(s->last_error().empty()) << s->last_error();

  auto mid = s->Publish(kDeviceTopic + "/telemetry", "batch-1", 1, false);
  ASSERT_TRUE(mid.ok()) << mid.status().message();
  EXPECT_EQ(s->inflight(), 1u);
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.done.count(*mid) > 0; }));
  EXPECT_EQ(rec.done[*mid], 0) << "PUBACK reason code";
  EXPECT_EQ(s->inflight(), 0u);
  auto got = (*probe)->WaitForMessage(kDeviceTopic + "/telemetry");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->payload, "batch-1");
  EXPECT_EQ(got->qos, 1);

  ASSERT_TRUE(broker.WaitForLog("dev1 1 " + kDeviceTopic + "/cmd"));
  ASSERT_TRUE((*probe)->Publish(kDeviceTopic + "/cmd", "rebirth", 1).ok());
  ASSERT_TRUE(RunUntil(
      loop_, [&] { return rec.Find(kDeviceTopic + "/cmd", "rebirth"); }));
  s->Stop();
  EXPECT_EQ(second.connected, rec.connected);
  EXPECT_EQ(second.done, rec.done);
  ASSERT_EQ(second.messages.size(), rec.messages.size());
  EXPECT_EQ(second.messages[0].payload, "rebirth");
  EXPECT_EQ(second.disconnects, rec.disconnects);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();

  // An idle connection sleeps in epoll: a second of keepalive bookkeeping
  // costs a few wake-ups, not a busy loop.
  const uint64_t wakeups = s->io_wakeups();
  RunFor(loop_, 1500);
  EXPECT_LT(s->io_wakeups() - wakeups, 10u);
  EXPECT_TRUE(s->connected());
}

TEST_F(MqttSessionIntegrationTest, RefusesABrokerCertifiedByAnotherCa) {
  MosquittoBrokerOptions bo = BrokerOptions();
  bo.server_cert = "other-server";
  MosquittoBroker broker(bo);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(RunUntil(loop_, [&] { return s->reconnects() >= 2; }))
      << s->last_error();
  EXPECT_THAT(s->last_error(), HasSubstr("TLS handshake with 127.0.0.1:" +
                                         std::to_string(broker.port()) +
                                         " failed: certificate verify failed"));
  EXPECT_EQ(s->connects(), 0u);
  EXPECT_EQ(rec.connected, 0);
  EXPECT_NE(s->state(), MqttState::kConnected);
  ASSERT_FALSE(rec.disconnects.empty());
  EXPECT_EQ(rec.disconnects.front(), s->last_error());
}

TEST_F(MqttSessionIntegrationTest, ClientCertificateRequiredAndProvided) {
  MosquittoBrokerOptions bo = BrokerOptions();
  bo.require_certificate = true;
  MosquittoBroker broker(bo);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();

  // Without a certificate the broker ends the handshake.
  SessionRecorder without;
  MqttOptions o = SessionOptions(broker);
  o.client_id = "no-cert";
  MqttSession* bare = NewSession(o, &without);
  ASSERT_NE(bare, nullptr);
  bare->Start();
  // The broker's alert names the reason, but it races with the broker
  // closing the socket (a reset can discard it): some attempt reports it.
  auto alert_seen = [&] {
    for (const std::string& why : without.disconnects) {
      if (why.find("certificate required") != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(RunUntil(loop_, alert_seen))
      << "last error: " << bare->last_error();
  EXPECT_GE(without.disconnects.size(), 1u);
  for (const std::string& why : without.disconnects) {
    EXPECT_THAT(why, HasSubstr("127.0.0.1:" + std::to_string(broker.port())));
  }
  EXPECT_EQ(bare->connects(), 0u);
  EXPECT_EQ(without.connected, 0);
  bare->Stop();

  // With the device certificate it connects.
  SessionRecorder with;
  o = SessionOptions(broker);
  o.cert_file = certs_.File("client.pem");
  o.key_file = certs_.File("client.key");
  MqttSession* s = NewSession(o, &with);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error() << "\n" << broker.Log();
  EXPECT_EQ(with.connected, 1);
}

TEST_F(MqttSessionIntegrationTest, WrongPasswordIsRefusedAndNotLogged) {
  MosquittoBrokerOptions bo = BrokerOptions();
  bo.allow_anonymous = false;
  bo.users = {{kDevice, "right-password"}};
  MosquittoBroker broker(bo);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();

  SessionRecorder wrong;
  MqttOptions o = SessionOptions(broker);
  o.username = kDevice;
  o.password = "wrong-password";
  MqttSession* s = NewSession(o, &wrong);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(RunUntil(loop_, [&] { return s->reconnects() >= 1; }))
      << s->last_error();
  EXPECT_EQ(s->connects(), 0u);
  EXPECT_EQ(wrong.connected, 0);
  EXPECT_THAT(s->last_error(),
              HasSubstr("connection refused by broker 127.0.0.1:" +
                        std::to_string(broker.port())));
  EXPECT_THAT(s->last_error(), Not(HasSubstr("wrong-password")));
  s->Stop();

  SessionRecorder right;
  o.password = "right-password";
  MqttSession* ok = NewSession(o, &right);
  ASSERT_NE(ok, nullptr);
  ok->Start();
  ASSERT_TRUE(WaitConnected(ok)) << ok->last_error() << "\n" << broker.Log();
}

TEST_F(MqttSessionIntegrationTest, SubscribesAndReceivesRetainedAndLive) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  const std::string release = kDeviceTopic + "/update/release";
  auto reason = (*probe)->Publish(release, "manifest-v7", 1, /*retain=*/true);
  ASSERT_TRUE(reason.ok()) << reason.status().message();
  ASSERT_EQ(*reason, 0x10) << "accepted, no subscribers yet";

  SessionRecorder rec;
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  s->Subscribe(kDeviceTopic + "/update/+", 1);
  s->Start();
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.Find(release, "manifest-v7"); }))
      << s->last_error();
  EXPECT_TRUE(rec.Find(release, "manifest-v7")->retained);

  // Subscribing while connected takes effect at once.
  const std::string cmd = kDeviceTopic + "/cmd";
  s->Subscribe(cmd, 1);
  ASSERT_TRUE(broker.WaitForLog(std::string(kDevice) + " 1 " + cmd));
  ASSERT_TRUE((*probe)->Publish(cmd, "rebirth", 1, false).ok());
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.Find(cmd, "rebirth"); }));
  EXPECT_FALSE(rec.Find(cmd, "rebirth")->retained);

  ASSERT_TRUE((*probe)->ClearRetained(release).ok());
}

// The session announces its maximum packet size in CONNECT (4 MiB by
// default, MqttOptions::max_packet_bytes), so the broker does not deliver a
// larger message at all; what fits still arrives, in order.
TEST_F(MqttSessionIntegrationTest, BrokerDeliversNothingOverTheMaximumPacket) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  SessionRecorder rec;
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  const std::string cmd = kDeviceTopic + "/cmd";
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  s->Subscribe(cmd, 1);
  ASSERT_TRUE(broker.WaitForLog(std::string(kDevice) + " 1 " + cmd))
      << broker.Log();
  const std::string big(size_t{8} << 20, 'b');   // over the cap
  const std::string fits(size_t{3} << 20, 'f');  // a large manifest
  ASSERT_TRUE((*probe)->Publish(cmd, big, 1, false).ok());
  ASSERT_TRUE((*probe)->Publish(cmd, fits, 1, false).ok());
  ASSERT_TRUE((*probe)->Publish(cmd, "rebirth", 1, false).ok());
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.Find(cmd, "rebirth"); }))
      << s->last_error();
  std::vector<size_t> sizes;
  for (const auto& m : rec.messages) sizes.push_back(m.payload.size());
  EXPECT_THAT(sizes, ::testing::ElementsAre(fits.size(), 7u));
  EXPECT_TRUE(s->connected());
}

TEST_F(MqttSessionIntegrationTest, AclRefusedPublishReportsNotAuthorized) {
  MosquittoBrokerOptions bo = BrokerOptions();
  bo.allow_anonymous = false;
  bo.users = {{kDevice, "pw"}};
  bo.acl = "user dev1\ntopic readwrite " + kDeviceTopic + "/#\n";
  MosquittoBroker broker(bo);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  o.username = kDevice;
  o.password = "pw";
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error() << "\n" << broker.Log();

  auto allowed = s->Publish(kDeviceTopic + "/telemetry", "mine", 1, false);
  auto denied =
      s->Publish(kPrefix + "/devices/dev2/telemetry", "not mine", 1, false);
  ASSERT_TRUE(allowed.ok()) << allowed.status().message();
  ASSERT_TRUE(denied.ok()) << denied.status().message();
  ASSERT_TRUE(RunUntil(loop_, [&] {
    return rec.done.count(*allowed) && rec.done.count(*denied);
  })) << broker.Log();
  EXPECT_EQ(rec.done[*denied], 0x87) << "MQTT v5 not authorized";
  EXPECT_LT(rec.done[*allowed], 0x80) << "accepted (0 or 0x10)";
  EXPECT_EQ(s->inflight(), 0u);
  EXPECT_TRUE(s->connected()) << "a refused publish keeps the connection";
}

TEST_F(MqttSessionIntegrationTest, InflightCapRefusesBeyondMaxInflight) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  o.max_inflight = 2;
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();

  // The loop does not run between these calls, so no PUBACK can arrive.
  const std::string topic = kDeviceTopic + "/telemetry";
  auto a = s->Publish(topic, "1", 1, false);
  auto b = s->Publish(topic, "2", 1, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(s->inflight(), 2u);
  auto c = s->Publish(topic, "3", 1, false);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("max_inflight 2"));
  EXPECT_THAT(c.status().message(), HasSubstr(topic));
  auto qos0 = s->Publish(topic, "best effort", 0, false);
  EXPECT_TRUE(qos0.ok()) << "QoS 0 is not capped";

  ASSERT_TRUE(RunUntil(loop_, [&] { return s->inflight() == 0; }));
  EXPECT_EQ(rec.done.size(), 2u) << "QoS 0 publishes are not reported";
  EXPECT_TRUE(s->Publish(topic, "3", 1, false).ok());
}

TEST_F(MqttSessionIntegrationTest, OutageReconnectsResubscribesAndFlows) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  const std::string release = kDeviceTopic + "/update/release";
  s->Subscribe(release, 1);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();

  // A publish the broker never acknowledges: it is paused, then killed.
  broker.Pause();
  auto lost = s->Publish(kDeviceTopic + "/telemetry", "lost", 1, false);
  ASSERT_TRUE(lost.ok()) << lost.status().message();
  broker.Kill();
  ASSERT_TRUE(RunUntil(loop_, [&] { return !rec.disconnects.empty(); }));
  EXPECT_THAT(rec.disconnects.front(),
              HasSubstr("127.0.0.1:" + std::to_string(broker.port())));
  ASSERT_EQ(rec.done.count(*lost), 1u);
  EXPECT_EQ(rec.done[*lost], -1) << "in flight when the connection dropped";
  EXPECT_EQ(s->inflight(), 0u);
  auto offline = s->Publish(kDeviceTopic + "/telemetry", "x", 1, false);
  EXPECT_EQ(offline.status().code(), StatusCode::kUnavailable);

  // While the broker is down the session keeps trying, backing off.
  ASSERT_TRUE(RunUntil(loop_, [&] { return s->reconnects() >= 3; }));
  EXPECT_THAT(s->last_error(),
              HasSubstr("connecting to 127.0.0.1:" +
                        std::to_string(broker.port()) + " failed"));
  for (size_t i = 1; i < rec.disconnect_times_ms.size(); ++i) {
    EXPECT_GE(rec.disconnect_times_ms[i] - rec.disconnect_times_ms[i - 1],
              o.reconnect_min_ms - 1);
  }

  // The broker comes back on the same port. A retained release is published
  // before the session gets a chance to reconnect (its loop is not running).
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Publish(release, "manifest-v8", 1, true).ok());
  ASSERT_TRUE((*probe)->Subscribe(kDeviceTopic + "/telemetry").ok());

  ASSERT_TRUE(RunUntil(
      loop_,
      [&] { return s->connected() && rec.Find(release, "manifest-v8"); }))
      << s->last_error() << "\n"
      << broker.Log();
  EXPECT_EQ(s->connects(), 2u);
  EXPECT_EQ(rec.connected, 2);
  EXPECT_TRUE(rec.Find(release, "manifest-v8")->retained)
      << "delivered by the re-sent subscription";

  // Traffic flows both ways on the new socket.
  auto mid = s->Publish(kDeviceTopic + "/telemetry", "after", 1, false);
  ASSERT_TRUE(mid.ok()) << mid.status().message();
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.done.count(*mid) > 0; }));
  EXPECT_EQ(rec.done[*mid], 0);
  EXPECT_TRUE(
      (*probe)->WaitForMessage(kDeviceTopic + "/telemetry", 15000, "after"));
  ASSERT_TRUE((*probe)->Publish(release, "manifest-v9", 1, false).ok());
  ASSERT_TRUE(
      RunUntil(loop_, [&] { return rec.Find(release, "manifest-v9"); }));
  EXPECT_FALSE(rec.Find(release, "manifest-v9")->retained);
}

TEST_F(MqttSessionIntegrationTest, CleanStopSendsNoWill) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const std::string presence = kDeviceTopic + "/presence";
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe(presence).ok());

  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  o.will = MqttWill{presence, "offline", 1, true};
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  MqttCallbacks birth;
  birth.on_connected = [&] {
    ASSERT_TRUE(s->Publish(presence, "online", 1, true).ok());
  };
  s->AddObserver(std::move(birth));
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  // The birth leaves when the loop turns.
  ASSERT_TRUE(RunUntil(loop_, [&] {
    return (*probe)->WaitForMessage(presence, 0, "online").has_value();
  })) << broker.Log();

  s->Stop();
  EXPECT_EQ(s->state(), MqttState::kStopped);
  ASSERT_EQ(rec.disconnects.size(), 1u);
  EXPECT_EQ(rec.disconnects[0], "stopped");
  ASSERT_TRUE(broker.WaitForLog("Client dev1 disconnected.")) << broker.Log();
  // Anything the broker sent for that disconnect precedes this marker.
  ASSERT_TRUE((*probe)->Publish(presence, "marker", 1, false).ok());
  ASSERT_TRUE((*probe)->WaitForMessage(presence, 15000, "marker"));
  for (const auto& m : (*probe)->MessagesOn(presence)) {
    EXPECT_NE(m.payload, "offline") << "will sent after a clean Stop()";
  }
}

// Starts mqtt_session_runner; returns its pid and a pipe for its stdout.
pid_t SpawnRunner(const std::vector<std::string>& args, int* stdout_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::vector<char*> argv;
  std::string path = MQTT_SESSION_RUNNER;
  argv.push_back(path.data());
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err =
      posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    return -1;
  }
  *stdout_fd = fds[0];
  return pid;
}

// Reads the runner's stdout until it contains `needle`.
bool WaitForOutput(int fd, const std::string& needle, std::string* seen,
                   int timeout_ms = 20000) {
  const int64_t end = testing::MonotonicMs() + timeout_ms;
  while (seen->find(needle) == std::string::npos) {
    const int64_t left = end - testing::MonotonicMs();
    if (left <= 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[256];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    seen->append(buf, static_cast<size_t>(n));
  }
  return true;
}

TEST_F(MqttSessionIntegrationTest, KilledProcessMakesTheBrokerPublishTheWill) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const std::string presence = kDeviceTopic + "/presence";
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe(presence).ok());

  // The runner connects with will "offline-1", then (clean stop, no will)
  // replaces it with "offline-2" and connects again; then it is killed.
  int out = -1;
  const pid_t pid = SpawnRunner(
      {"127.0.0.1", std::to_string(broker.port()), certs_.File("ca.pem"),
       kDevice, presence, "offline-1", "offline-2"},
      &out);
  ASSERT_GT(pid, 0);
  std::string seen;
  const bool second = WaitForOutput(out, "connected 2", &seen);
  if (second) {
    // The second CONNECT reached the broker before the runner said so.
    kill(pid, SIGKILL);
  }
  int status = 0;
  if (!second) kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  close(out);
  ASSERT_TRUE(second) << "runner said: " << seen << "\n" << broker.Log();
  EXPECT_TRUE(WIFSIGNALED(status));

  auto will = (*probe)->WaitForMessage(presence, 15000, "offline-2");
  ASSERT_TRUE(will.has_value()) << broker.Log();
  for (const auto& m : (*probe)->MessagesOn(presence)) {
    EXPECT_NE(m.payload, "offline-1") << "the first will after a clean stop";
  }
  // Retained: a newcomer sees the device as offline.
  auto late = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(late.ok()) << late.status().message();
  ASSERT_TRUE((*late)->Subscribe(presence).ok());
  auto retained = (*late)->WaitForMessage(presence, 15000, "offline-2");
  ASSERT_TRUE(retained.has_value());
  EXPECT_TRUE(retained->retained);
}

}  // namespace
}  // namespace ternd::net

namespace ternd::net {
namespace {

TEST_F(MqttSessionIntegrationTest, SilentBrokerIsDetectedByTheKeepalive) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  o.keepalive_seconds = 5;  // the smallest allowed: the test takes ~10 s
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  // The broker stops answering but its sockets stay open: only the
  // keepalive can tell.
  broker.Pause();
  ASSERT_TRUE(RunUntil(
      loop_, [&] { return !rec.disconnects.empty(); }, 40000));
  EXPECT_EQ(rec.disconnects.front(),
            "no answer from 127.0.0.1:" + std::to_string(broker.port()) +
                " within the keepalive (5 s)");
  broker.Resume();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error() << "\n" << broker.Log();
  EXPECT_EQ(s->connects(), 2u);
}

TEST_F(MqttSessionIntegrationTest, StopThenStartConnectsAgain) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  const std::string cmd = kDeviceTopic + "/cmd";
  s->Subscribe(cmd, 1);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  s->Stop();
  EXPECT_FALSE(s->Publish(cmd, "x", 1, false).ok());
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  EXPECT_EQ(s->connects(), 2u);
  EXPECT_EQ(s->reconnects(), 0u) << "a deliberate restart is no reconnect";
  auto probe = MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  // The subscription is back: wait until the broker confirms it twice
  // (once per connection), then a command gets through.
  ASSERT_TRUE(RunUntil(loop_, [&] {
    const std::string log = broker.Log();
    const std::string line = std::string(kDevice) + " 1 " + cmd;
    const size_t first = log.find(line);
    return first != std::string::npos &&
           log.find(line, first + 1) != std::string::npos;
  }));
  ASSERT_TRUE((*probe)->Publish(cmd, "flush", 1, false).ok());
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.Find(cmd, "flush"); }));
}

// The fixture itself: what other suites rely on.
TEST(MosquittoBrokerFixtureTest, PersistenceKeepsRetainedAcrossRestart) {
  MqttTestDir certs;
  ASSERT_TRUE(MakeTestCertificates(certs.path()).ok());
  MosquittoBrokerOptions o;
  o.cert_dir = certs.path();
  o.persistence = true;
  MosquittoBroker broker(o);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const int port = broker.port();
  MqttProbeOptions po;
  po.port = port;
  po.ca_file = certs.File("ca.pem");
  {
    auto probe = MqttProbe::Connect(po);
    ASSERT_TRUE(probe.ok()) << probe.status().message();
    ASSERT_TRUE((*probe)->Publish("fleet/kept", "v1", 1, true).ok());
  }
  ASSERT_TRUE(broker.Stop().ok());
  EXPECT_FALSE(broker.running());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  EXPECT_EQ(broker.port(), port);
  auto probe = MqttProbe::Connect(po);
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe("fleet/#").ok());
  auto kept = (*probe)->WaitForMessage("fleet/kept");
  ASSERT_TRUE(kept.has_value()) << broker.Log();
  EXPECT_EQ(kept->payload, "v1");
  EXPECT_TRUE(kept->retained);
  ASSERT_TRUE((*probe)->ClearRetained("fleet/kept").ok());
}

TEST(MosquittoBrokerFixtureTest, WithoutPersistenceRetainedIsGoneAfterKill) {
  MqttTestDir certs;
  ASSERT_TRUE(MakeTestCertificates(certs.path()).ok());
  MosquittoBrokerOptions o;
  o.cert_dir = certs.path();
  MosquittoBroker broker(o);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  MqttProbeOptions po;
  po.port = broker.port();
  po.ca_file = certs.File("ca.pem");
  {
    auto probe = MqttProbe::Connect(po);
    ASSERT_TRUE(probe.ok()) << probe.status().message();
    ASSERT_TRUE((*probe)->Publish("fleet/lost", "v1", 1, true).ok());
  }
  broker.Kill();
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto probe = MqttProbe::Connect(po);
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe("fleet/#").ok());
  // A marker published after the subscription arrives after any retained
  // message the subscription would have delivered.
  ASSERT_TRUE((*probe)->Publish("fleet/marker", "m", 1, false).ok());
  ASSERT_TRUE((*probe)->WaitForMessage("fleet/marker").has_value());
  EXPECT_TRUE((*probe)->MessagesOn("fleet/lost").empty());
  // The log carries what the broker saw, for failure messages.
  EXPECT_THAT(broker.Log(), HasSubstr("Received SUBSCRIBE from"));
}

TEST(MosquittoBrokerFixtureTest, ProbeReportsARefusedConnection) {
  MqttTestDir certs;
  ASSERT_TRUE(MakeTestCertificates(certs.path()).ok());
  MosquittoBrokerOptions o;
  o.cert_dir = certs.path();
  o.allow_anonymous = false;
  o.users = {{"fleet", "s3cret"}};
  MosquittoBroker broker(o);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  MqttProbeOptions po;
  po.port = broker.port();
  po.ca_file = certs.File("ca.pem");
  auto anonymous = MqttProbe::Connect(po);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_THAT(anonymous.status().message(),
              HasSubstr("127.0.0.1:" + std::to_string(broker.port())));
  po.username = "fleet";
  po.password = "s3cret";
  auto fleet = MqttProbe::Connect(po);
  ASSERT_TRUE(fleet.ok()) << fleet.status().message();
  EXPECT_TRUE((*fleet)->connected());
}

}  // namespace
}  // namespace ternd::net

namespace ternd::net {
namespace {

TEST(MosquittoBrokerFixtureTest, PersistentProbeGetsWhatWasSentWhileAway) {
  MqttTestDir certs;
  ASSERT_TRUE(MakeTestCertificates(certs.path()).ok());
  MosquittoBrokerOptions o;
  o.cert_dir = certs.path();
  o.persistence = true;
  MosquittoBroker broker(o);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  MqttProbeOptions po;
  po.port = broker.port();
  po.ca_file = certs.File("ca.pem");
  MqttProbeOptions persistent = po;
  persistent.client_id = "fleet-watcher";
  persistent.clean_start = false;
  persistent.session_expiry_seconds = 3600;
  auto watcher = MqttProbe::Connect(persistent);
  ASSERT_TRUE(watcher.ok()) << watcher.status().message();
  ASSERT_TRUE((*watcher)->Subscribe("fleet/#").ok());

  ASSERT_TRUE(broker.Stop().ok());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  {
    // Whether the watcher's thread reconnects before or after this, the
    // message reaches it only through its persisted session: the probe does
    // not subscribe again, a clean session would have lost "fleet/#".
    auto sender = MqttProbe::Connect(po);
    ASSERT_TRUE(sender.ok()) << sender.status().message();
    ASSERT_TRUE((*sender)->Publish("fleet/while-away", "queued", 1).ok());
  }
  auto got = (*watcher)->WaitForMessage("fleet/while-away", 30000, "queued");
  ASSERT_TRUE(got.has_value()) << broker.Log();
  EXPECT_TRUE((*watcher)->connected());
}

}  // namespace
}  // namespace ternd::net

namespace ternd::net {
namespace {

// docs/mqtt.md's ACL: the code blocks after the line that names
// /etc/mosquitto/fleet.acl: the ternd-fleet-certs command, then the ACL it
// prints (up to a "..." line).
struct DocumentedAcl {
  std::string command, acl;
};
DocumentedAcl ReadDocumentedAcl() {
  std::ifstream f(MQTT_DOC);
  std::string line;
  DocumentedAcl out;
  std::string* into = nullptr;
  int blocks = 0;
  bool after_name = false;
  while (std::getline(f, line)) {
    if (!after_name) {
      after_name = line.find("`/etc/mosquitto/fleet.acl`") == 0;
      continue;
    }
    if (line.rfind("```", 0) == 0) {
      if (into) {
        into = nullptr;
        if (++blocks == 2) break;
      } else {
        into = blocks == 0 ? &out.command : &out.acl;
      }
      continue;
    }
    if (into && line == "...") continue;
    if (into) *into += line + "\n";
  }
  return out;
}

TEST_F(MqttSessionIntegrationTest,
       DocumentedFleetAclLetsADeviceWriteOnlyItsOwn) {
  const DocumentedAcl doc = ReadDocumentedAcl();
  ASSERT_THAT(doc.acl, HasSubstr("pattern write"))
      << "ACL block not found in " << MQTT_DOC;
  // The documented command prints the documented ACL.
  std::string command = doc.command;
  for (size_t at; (at = command.find("\\\n")) != std::string::npos;) {
    command.replace(at, 2, " ");
  }
  command = command.substr(0, command.find('>'));
  ASSERT_EQ(command.rfind("ternd-fleet-certs ", 0), 0u) << command;
  command.replace(0, 17, FLEET_CERTS);
  const std::string printed = ::ternd::testing::RunCommand(command).out;
  EXPECT_EQ(printed.rfind(doc.acl, 0), 0u)
      << "docs/mqtt.md's ACL is not what `" << command << "` prints:\n"
      << printed << "---\n"
      << doc.acl;
  // The same tool for this test's fleet and device.
  const std::string acl =
      ::ternd::testing::RunCommand(std::string(FLEET_CERTS) +
                                   " acl --fleet testfleet --operator "
                                   "fleet-controller --device dev1:line-3")
          .out;
  ASSERT_THAT(acl, HasSubstr("pattern write ternd/v1/testfleet/devices/%u/"));
  MosquittoBrokerOptions bo = BrokerOptions();
  bo.require_certificate = true;  // CN dev1 becomes the user name
  bo.allow_anonymous = false;
  bo.acl = acl;
  MosquittoBroker broker(bo);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttOptions o = SessionOptions(broker);
  o.cert_file = certs_.File("client.pem");
  o.key_file = certs_.File("client.key");
  MqttSession* s = NewSession(o, &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error() << "\n" << broker.Log();

  struct Case {
    std::string topic;
    bool allowed;
  };
  const std::vector<Case> cases = {
      {kDeviceTopic + "/presence", true},
      {kDeviceTopic + "/telemetry", true},
      {kDeviceTopic + "/update/state", true},
      {kDeviceTopic + "/update/release", false},  // only the fleet writes
      {kDeviceTopic + "/cmd", false},
      {kPrefix + "/devices/dev2/telemetry", false},
      {kPrefix + "/trust/root", false},
  };
  std::map<int, const Case*> by_mid;
  for (const Case& c : cases) {
    auto mid = s->Publish(c.topic, "x", 1, false);
    ASSERT_TRUE(mid.ok()) << mid.status().message();
    by_mid[*mid] = &c;
  }
  ASSERT_TRUE(RunUntil(loop_, [&] { return s->inflight() == 0; }))
      << broker.Log();
  for (const auto& [mid, c] : by_mid) {
    ASSERT_EQ(rec.done.count(mid), 1u) << c->topic;
    if (c->allowed) {
      EXPECT_LT(rec.done[mid], 0x80) << c->topic;
    } else {
      EXPECT_EQ(rec.done[mid], 0x87) << c->topic;
    }
  }
}

}  // namespace
}  // namespace ternd::net

namespace ternd::net {
namespace {

TEST_F(MqttSessionIntegrationTest, BrokerShutdownAndTakeoverAreReported) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  SessionRecorder rec;
  MqttSession* s = NewSession(SessionOptions(broker), &rec);
  ASSERT_NE(s, nullptr);
  s->Start();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();
  const std::string peer = "127.0.0.1:" + std::to_string(broker.port());

  // A second client with the same id (a cloned device) takes the session
  // over; mosquitto 2.0 closes the old connection without a DISCONNECT.
  MqttProbeOptions clone = ProbeOptions(broker);
  clone.client_id = kDevice;
  auto probe = MqttProbe::Connect(clone);
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE(RunUntil(loop_, [&] { return !rec.disconnects.empty(); }));
  EXPECT_EQ(rec.disconnects.front(), "connection to " + peer + " lost");
  probe->reset();
  ASSERT_TRUE(WaitConnected(s)) << s->last_error();

  // A clean broker shutdown.
  const size_t before = rec.disconnects.size();
  ASSERT_TRUE(broker.Stop().ok());
  ASSERT_TRUE(RunUntil(loop_, [&] { return rec.disconnects.size() > before; }));
  EXPECT_THAT(rec.disconnects[before], HasSubstr(peer)) << broker.Log();
}

}  // namespace
}  // namespace ternd::net
