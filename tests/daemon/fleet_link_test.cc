// FleetLink in process against a real mosquitto broker on loopback (TLS
// with a throw-away test CA): the subscriptions (device, groups, trust),
// the size caps, and the ordered, acknowledged state reports that replace
// each other while they wait and start over on every connect.
#include "daemon/fleet_link.h"

#include <gtest/gtest.h>
#include <systemd/sd-event.h>

#include <string>
#include <vector>

#include "base/event_loop.h"
#include "net/mqtt_session.h"
#include "tests/net/session_recorder.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"

namespace ternd::daemon {
namespace {

using ternd::mqtt_testing::MakeTestCertificates;
using ternd::mqtt_testing::MosquittoBroker;
using ternd::mqtt_testing::MosquittoBrokerOptions;
using ternd::mqtt_testing::MqttProbe;
using ternd::mqtt_testing::MqttProbeOptions;
using ternd::mqtt_testing::MqttTestDir;
using ternd::net::testing::RunUntil;

const std::string kPrefix = "ternd/v1/testfleet";

class FleetLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeTestCertificates(certs_.path(), "dev1").ok());
    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    MosquittoBrokerOptions b;
    b.cert_dir = certs_.path();
    broker_ = std::make_unique<MosquittoBroker>(b);
    ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
    MqttProbeOptions p;
    p.port = broker_->port();
    p.ca_file = certs_.File("ca.pem");
    auto probe = MqttProbe::Connect(p);
    ASSERT_TRUE(probe.ok()) << probe.status().message();
    probe_ = std::move(*probe);
    ASSERT_TRUE(probe_->Subscribe(kPrefix + "/devices/dev1/update/state").ok());
  }

  void Connect() {
    net::MqttOptions o;
    o.host = "127.0.0.1";
    o.port = broker_->port();
    o.client_id = "dev1";
    o.ca_file = certs_.File("ca.pem");
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 200;
    auto s = net::MqttSession::Create(loop_.get(), o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    session_ = std::move(*s);
    FleetHandlers h;
    h.connected = [this] {
      ++connects_;
      link_->Report(Report(100 + connects_));  // "the state now"
    };
    h.release = [this](const std::string& e) { releases_.push_back(e); };
    h.root = [this](std::string_view t, const std::string& b) {
      roots_.push_back(std::string(t) + "=" + b);
    };
    h.timestamp = [this](std::string_view, const std::string& b) {
      timestamps_.push_back(b);
    };
    ota::DeviceIdentity device{"dev1", {"north", "lab"}};
    link_ =
        std::make_unique<FleetLink>(session_.get(), kPrefix, device,
                                    /*max_release_bytes=*/1000, std::move(h));
    session_->Start();
    ASSERT_TRUE(RunUntil(loop_.get(), [&] { return connects_ > 0; }));
    // The trust/timestamp subscription is the last one sent: once a
    // message on it arrives, the broker has every subscription in place.
    ASSERT_TRUE(RunUntil(loop_.get(), [&] {
      if (!probe_->Publish(kPrefix + "/trust/timestamp", "ready", 0).ok()) {
        return false;
      }
      net::testing::RunFor(loop_.get(), 20);
      return !timestamps_.empty();
    }));
    timestamps_.clear();
  }

  // Turns the loop until the probe has seen `n` state reports.
  bool WaitForReports(size_t n) {
    return RunUntil(loop_.get(), [&] { return Reports().size() >= n; });
  }

  // A report whose state code and progress identify it.
  static ota::UpdateReport Report(int state, uint64_t bytes_done = 0) {
    ota::UpdateReport r;
    r.set_device_id("dev1");
    r.set_state_code(state);
    r.set_bytes_done(bytes_done);
    return r;
  }

  std::vector<ota::UpdateReport> Reports() {
    std::vector<ota::UpdateReport> out;
    for (const auto& m :
         probe_->MessagesOn(kPrefix + "/devices/dev1/update/state")) {
      ota::UpdateReport r;
      EXPECT_TRUE(r.ParseFromString(m.payload));
      out.push_back(r);
    }
    return out;
  }

  MqttTestDir certs_;
  EventLoop loop_;
  std::unique_ptr<MosquittoBroker> broker_;
  std::unique_ptr<MqttProbe> probe_;
  std::unique_ptr<net::MqttSession> session_;
  std::unique_ptr<FleetLink> link_;
  int connects_ = 0;
  std::vector<std::string> releases_, roots_, timestamps_;
};

TEST_F(FleetLinkTest, HearsItsTopicsOnlyAndRefusesOversizedMetadata) {
  Connect();
  EXPECT_EQ(link_->state_topic(), kPrefix + "/devices/dev1/update/state");
  ASSERT_TRUE(
      probe_->Publish(kPrefix + "/devices/dev1/update/release", "mine", 1)
          .ok());
  ASSERT_TRUE(
      probe_->Publish(kPrefix + "/groups/lab/update/release", "group", 1).ok());
  ASSERT_TRUE(
      probe_->Publish(kPrefix + "/devices/dev2/update/release", "other", 1)
          .ok());
  ASSERT_TRUE(
      probe_->Publish(kPrefix + "/groups/south/update/release", "south", 1)
          .ok());
  ASSERT_TRUE(probe_
                  ->Publish(kPrefix + "/devices/dev1/update/release",
                            std::string(1001, 'x'), 1)
                  .ok());
  ASSERT_TRUE(probe_->Publish(kPrefix + "/trust/root", "root-2", 1).ok());
  ASSERT_TRUE(probe_
                  ->Publish(kPrefix + "/trust/timestamp",
                            std::string(ota::kMaxTrustMetadataBytes + 1, 't'),
                            1)
                  .ok());
  ASSERT_TRUE(probe_->Publish(kPrefix + "/trust/timestamp", "ts", 1).ok());
  ASSERT_TRUE(RunUntil(loop_.get(), [&] { return timestamps_.size() == 1; }));
  EXPECT_EQ(releases_, (std::vector<std::string>{"mine", "group"}));
  EXPECT_EQ(roots_, (std::vector<std::string>{kPrefix + "/trust/root=root-2"}));
  EXPECT_EQ(timestamps_, (std::vector<std::string>{"ts"}));
}

TEST_F(FleetLinkTest, ReportsArriveInOrderAndProgressReplacesProgress) {
  Connect();
  ASSERT_TRUE(WaitForReports(1));
  // Queued back to back: one is in flight, the rest wait; the two
  // progress reports of state 3 collapse into the newest.
  link_->Report(Report(1));
  link_->Report(Report(3, 10));
  link_->Report(Report(3, 20));
  link_->Report(Report(4));
  ASSERT_TRUE(WaitForReports(4));
  // Nothing more comes.
  net::testing::RunFor(loop_.get(), 200);
  std::vector<ota::UpdateReport> got = Reports();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].state_code(), 101);  // on connect
  EXPECT_EQ(got[1].state_code(), 1);
  EXPECT_EQ(got[2].state_code(), 3);
  EXPECT_EQ(got[2].bytes_done(), 20u);
  EXPECT_EQ(got[3].state_code(), 4);
  EXPECT_EQ(link_->queued(), 0u);
}

TEST_F(FleetLinkTest, WhatWaitedWhileDisconnectedIsDroppedForTheStateNow) {
  Connect();
  ASSERT_TRUE(WaitForReports(1));
  ASSERT_TRUE(broker_->Stop().ok());
  ASSERT_TRUE(RunUntil(loop_.get(), [&] { return !session_->connected(); }));
  for (int i = 0; i < 40; ++i) link_->Report(Report(i % 2 ? 3 : 4, i));
  EXPECT_LE(link_->queued(), 16u);  // bounded while nobody acknowledges
  ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
  ASSERT_TRUE(RunUntil(loop_.get(), [&] { return connects_ == 2; }));
  MqttProbeOptions p;
  p.port = broker_->port();
  p.ca_file = certs_.File("ca.pem");
  auto probe = MqttProbe::Connect(p);
  ASSERT_TRUE(probe.ok());
  probe_ = std::move(*probe);
  ASSERT_TRUE(probe_->Subscribe(kPrefix + "/devices/dev1/update/state").ok());
  // The retained state is the one reported on reconnect, and nothing of
  // what waited follows it.
  ASSERT_TRUE(WaitForReports(1));
  net::testing::RunFor(loop_.get(), 300);
  std::vector<ota::UpdateReport> got = Reports();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].state_code(), 102);
}

}  // namespace
}  // namespace ternd::daemon
