// MqttSession without a broker: option checks, refusal to publish while
// offline, and the reconnect loop against a port where nothing listens and
// against a peer that accepts TCP but never answers.
#include "net/mqtt_session.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "tests/net/session_recorder.h"
#include "tests/support/mosquitto_broker.h"

namespace ternd::net {
namespace {

using ternd::mqtt_testing::FindFreePort;
using ternd::mqtt_testing::MakeTestCertificates;
using ternd::mqtt_testing::MqttTestDir;
using ::testing::HasSubstr;
using testing::RunFor;
using testing::RunUntil;
using testing::SessionRecorder;

class MqttSessionUnitTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sd_event_new(&loop_), 0); }
  void TearDown() override { sd_event_unref(loop_); }

  MqttOptions Options(int port) {
    MqttOptions o;
    o.host = "127.0.0.1";
    o.port = port;
    o.client_id = "unit-device";
    o.tls = false;
    o.reconnect_min_ms = 30;
    o.reconnect_max_ms = 120;
    return o;
  }

  sd_event* loop_ = nullptr;
};

TEST_F(MqttSessionUnitTest, StateNames) {
  EXPECT_STREQ(MqttStateName(MqttState::kConnected), "connected");
  EXPECT_STREQ(MqttStateName(MqttState::kConnecting), "connecting");
  EXPECT_STREQ(MqttStateName(MqttState::kDisconnected), "disconnected");
  EXPECT_STREQ(MqttStateName(MqttState::kStopped), "stopped");
}

TEST_F(MqttSessionUnitTest, InvalidOptionsAreRefusedNamingTheOption) {
  struct Case {
    std::function<void(MqttOptions&)> change;
    const char* expected;
  };
  const Case cases[] = {
      {[](MqttOptions& o) { o.host.clear(); }, "host"},
      {[](MqttOptions& o) { o.port = 0; }, "port: 0"},
      {[](MqttOptions& o) { o.port = 70000; }, "port: 70000"},
      {[](MqttOptions& o) { o.keepalive_seconds = 2; }, "keepalive_seconds: 2"},
      {[](MqttOptions& o) { o.reconnect_min_ms = 0; }, "reconnect_min_ms 0"},
      {[](MqttOptions& o) { o.reconnect_max_ms = 10; }, "reconnect_max_ms 10"},
      {[](MqttOptions& o) { o.max_inflight = 0; }, "max_inflight: 0"},
      {[](MqttOptions& o) { o.connect_timeout_ms = 5; },
       "connect_timeout_ms: 5"},
      {[](MqttOptions& o) { o.password = "secret-pw"; }, "no username"},
      {[](MqttOptions& o) {
         o.tls = true;
         o.ca_file = "/nonexistent/ca.pem";
       },
       "ca_file: cannot read '/nonexistent/ca.pem'"},
      {[](MqttOptions& o) {
         o.tls = true;
         o.cert_file = "/etc/hostname";
       },
       "give both or neither"},
      {[](MqttOptions& o) { o.ca_file = "/etc/hostname"; }, "tls is off"},
      {[](MqttOptions& o) {
         o.will = MqttWill{"a/+/b", "x", 1, true};
       },
       "topic 'a/+/b'"},
  };
  for (const Case& c : cases) {
    MqttOptions o = Options(1883);
    c.change(o);
    auto session = MqttSession::Create(loop_, o);
    ASSERT_FALSE(session.ok()) << c.expected;
    EXPECT_EQ(session.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(session.status().message(), HasSubstr(c.expected));
    EXPECT_THAT(session.status().message(),
                ::testing::Not(HasSubstr("secret-pw")));
  }
}

TEST_F(MqttSessionUnitTest, PublishIsRefusedWhileNotConnected) {
  auto session = MqttSession::Create(loop_, Options(1883));
  ASSERT_TRUE(session.ok()) << session.status().message();
  EXPECT_EQ((*session)->state(), MqttState::kStopped);
  auto mid =
      (*session)->Publish("ternd/v1/t/devices/d/telemetry", "x", 1, false);
  ASSERT_FALSE(mid.ok());
  EXPECT_EQ(mid.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(mid.status().message(),
              HasSubstr("127.0.0.1:1883 is stopped: not publishing to "
                        "'ternd/v1/t/devices/d/telemetry'"));
  auto qos2 = (*session)->Publish("a", "x", 2, false);
  EXPECT_EQ(qos2.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*session)->inflight(), 0u);
}

TEST_F(MqttSessionUnitTest, RefusedConnectionsAreRetriedWithBackoff) {
  auto port = FindFreePort();  // nothing listens there
  ASSERT_TRUE(port.ok());
  MqttOptions o = Options(*port);
  auto session = MqttSession::Create(loop_, o);
  ASSERT_TRUE(session.ok()) << session.status().message();
  SessionRecorder rec;
  (*session)->AddObserver(rec.Callbacks());
  (*session)->Start();
  // Loopback may refuse at once (disconnected) or a moment later.
  EXPECT_NE((*session)->state(), MqttState::kStopped);
  ASSERT_TRUE(RunUntil(loop_, [&] { return (*session)->reconnects() >= 4; }))
      << (*session)->last_error();
  EXPECT_EQ((*session)->connects(), 0u);
  EXPECT_EQ(rec.connected, 0);
  EXPECT_THAT((*session)->last_error(),
              HasSubstr("connecting to 127.0.0.1:" + std::to_string(*port) +
                        " failed: Connection refused"));
  // One on_disconnected per failed attempt, spaced by at least the minimum
  // backoff (timers never fire early).
  ASSERT_GE(rec.disconnects.size(), 4u);
  for (size_t i = 1; i < rec.disconnect_times_ms.size(); ++i) {
    EXPECT_GE(rec.disconnect_times_ms[i] - rec.disconnect_times_ms[i - 1],
              o.reconnect_min_ms - 1)
        << "between attempts " << i - 1 << " and " << i;
  }
  (*session)->Stop();
  EXPECT_EQ((*session)->state(), MqttState::kStopped);
  const uint64_t attempts = (*session)->reconnects();
  RunFor(loop_, 3 * o.reconnect_max_ms);
  EXPECT_EQ((*session)->reconnects(), attempts) << "retrying after Stop()";
}

TEST_F(MqttSessionUnitTest, SilentPeerTimesOutWithoutSpinningTheLoop) {
  // A listener that never accepts: the kernel completes TCP handshakes, but
  // nobody answers the TLS ClientHello.
  MqttTestDir dir;
  ASSERT_TRUE(MakeTestCertificates(dir.path()).ok());
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)),
            0);
  ASSERT_EQ(listen(listener, 8), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  MqttOptions o = Options(ntohs(addr.sin_port));
  o.tls = true;
  o.ca_file = dir.File("ca.pem");
  o.connect_timeout_ms = 300;
  o.reconnect_min_ms = 5000;  // one attempt in this test
  o.reconnect_max_ms = 5000;
  auto session = MqttSession::Create(loop_, o);
  ASSERT_TRUE(session.ok()) << session.status().message();
  (*session)->Start();
  ASSERT_TRUE(
      RunUntil(loop_, [&] { return !(*session)->last_error().empty(); }));
  EXPECT_THAT(
      (*session)->last_error(),
      HasSubstr("no CONNACK from 127.0.0.1:" +
                std::to_string(ntohs(addr.sin_port)) + " within 300 ms"));
  EXPECT_EQ((*session)->state(), MqttState::kDisconnected);
  // Waiting for a reply must sleep in epoll, not spin on writability: a
  // handful of wake-ups (connect completion, handshake write), not
  // thousands.
  EXPECT_LT((*session)->io_wakeups(), 20u);
  close(listener);
}

}  // namespace
}  // namespace ternd::net
