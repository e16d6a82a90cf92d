// The peers of the end-to-end update tests (fleet updates, shadow
// validation, staged waves): a mosquitto broker and an nginx artifact
// server on loopback with TLS from the test CA, a probe subscribed to the
// devices' update states, and the test fleet's keys with its first root in
// root.pb. The fixtures derive from UpdateFleetTest and call StartFleet
// from their SetUp.
#ifndef TERND_TESTS_DAEMON_UPDATE_FLEET_FIXTURE_H_
#define TERND_TESTS_DAEMON_UPDATE_FLEET_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/daemon/daemon_process.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/support/nginx_server.h"
#include "tests/support/test_env.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon_testing {

class UpdateFleetTest : public ::testing::Test {
 protected:
  // Makes the test CA with a client certificate for `client`, starts the
  // broker (`persistence`: retained messages survive a broker restart) and
  // nginx, connects probe_ subscribed to `state_filter`, and writes
  // root.pb. Fails the test (ASSERT) when a peer does not start.
  void StartFleet(const std::string& client, const std::string& state_filter,
                  bool persistence = false) {
    ASSERT_TRUE(mqtt_testing::MakeTestCertificates(dir_.path(), client).ok());
    mqtt_testing::MosquittoBrokerOptions bo;
    bo.cert_dir = dir_.path();
    bo.persistence = persistence;
    broker_ = std::make_unique<mqtt_testing::MosquittoBroker>(bo);
    ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
    https_testing::NginxOptions no;
    no.cert_dir = dir_.path();
    nginx_ = std::make_unique<https_testing::NginxServer>(no);
    ASSERT_TRUE(nginx_->Start().ok()) << nginx_->ErrorLog();
    mqtt_testing::MqttProbeOptions po;
    po.port = broker_->port();
    po.ca_file = dir_.File("ca.pem");
    Result<std::unique_ptr<mqtt_testing::MqttProbe>> probe =
        mqtt_testing::MqttProbe::Connect(po);
    ASSERT_TRUE(probe.ok()) << probe.status().message();
    probe_ = std::move(*probe);
    ASSERT_TRUE(probe_->Subscribe(state_filter).ok());
    WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(1));
  }

  testing::TempDir dir_;
  testing::TestFleet fleet_;
  std::unique_ptr<mqtt_testing::MosquittoBroker> broker_;
  std::unique_ptr<https_testing::NginxServer> nginx_;
  std::unique_ptr<mqtt_testing::MqttProbe> probe_;
};

}  // namespace ternd::daemon_testing

#endif  // TERND_TESTS_DAEMON_UPDATE_FLEET_FIXTURE_H_
