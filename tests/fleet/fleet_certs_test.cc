// tools/ternd-fleet-certs, run as an operator would: a fleet CA, the
// broker's certificate, a device's and an operator's, and the ACL it
// prints, loaded by a real mosquitto (TLS with client certificates, the
// common name as user name). The broker takes the ACL without a warning,
// and it lets each client do exactly what docs/mqtt.md says.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/support/test_env.h"

namespace ternd {
namespace {

using mqtt_testing::MosquittoBroker;
using mqtt_testing::MosquittoBrokerOptions;
using mqtt_testing::MqttProbe;
using mqtt_testing::MqttProbeOptions;
using testing::CommandResult;
using testing::RunCommand;
using testing::TempDir;

const std::string kPrefix = "ternd/v1/acme";

class FleetCertsTest : public ::testing::Test {
 protected:
  CommandResult Certs(const std::string& args) {
    return RunCommand(std::string(FLEET_CERTS_PATH) + " " + args);
  }
  std::string Ok(const std::string& args) {
    CommandResult r = Certs(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out << r.err;
    return r.out;
  }
  std::unique_ptr<MqttProbe> Client(const std::string& id) {
    MqttProbeOptions o;
    o.port = broker_->port();
    o.ca_file = dir_.File("ca.pem");
    o.cert_file = dir_.File(id + ".pem");
    o.key_file = dir_.File(id + ".key");
    auto p = MqttProbe::Connect(o);
    EXPECT_TRUE(p.ok()) << p.status().message() << "\n" << broker_->Log();
    return p.ok() ? std::move(*p) : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<MosquittoBroker> broker_;
};

TEST_F(FleetCertsTest, CertificatesAndAclWorkInARealBroker) {
  const std::string d = dir_.path();
  Ok("ca " + d + " --fleet acme");
  // The test broker's fixture looks for server.pem / server.key.
  Ok("server " + d + " server --dns localhost --ip 127.0.0.1");
  Ok("client " + d + " robot-9");
  Ok("client " + d + " ops");
  struct stat st;
  ASSERT_EQ(stat(dir_.File("robot-9.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir_.File("ca.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);

  MosquittoBrokerOptions o;
  o.cert_dir = d;
  o.require_certificate = true;
  o.acl = Ok("acl --fleet acme --operator ops --device robot-9:lab");
  broker_ = std::make_unique<MosquittoBroker>(o);
  ASSERT_TRUE(broker_->Start().ok()) << broker_->Log();
  EXPECT_EQ(broker_->Log().find("Warning: ACL"), std::string::npos)
      << broker_->Log();

  auto robot = Client("robot-9");
  auto ops = Client("ops");
  ASSERT_TRUE(robot && ops);
  // The device reads its own and its group's releases and the trust
  // topics. (mosquitto grants any subscription and filters what it
  // delivers.)
  ASSERT_TRUE(
      robot->Subscribe(kPrefix + "/devices/robot-9/update/release").ok());
  ASSERT_TRUE(robot->Subscribe(kPrefix + "/groups/+/update/release").ok());
  ASSERT_TRUE(robot->Subscribe(kPrefix + "/trust/#").ok());
  ASSERT_TRUE(robot->Subscribe(kPrefix + "/rollouts/+/halt").ok());
  ASSERT_TRUE(ops->Subscribe(kPrefix + "/devices/+/telemetry").ok());
  // The device writes its own telemetry, not another device's.
  Result<int> own = robot->Publish(kPrefix + "/devices/robot-9/telemetry", "t");
  ASSERT_TRUE(own.ok());
  EXPECT_LT(*own, 0x80);
  Result<int> other =
      robot->Publish(kPrefix + "/devices/robot-1/telemetry", "spoof");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*other, 0x87);  // not authorized
  // The operator publishes releases and roots; the device receives them.
  for (const std::string& t :
       {kPrefix + "/groups/lab/update/release", kPrefix + "/trust/root",
        kPrefix + "/rollouts/r-7/halt"}) {
    Result<int> r = ops->Publish(t, "signed bytes");
    ASSERT_TRUE(r.ok());
    EXPECT_LT(*r, 0x80) << t;
    EXPECT_TRUE(robot->WaitForMessage(t).has_value()) << t;
  }
  EXPECT_TRUE(
      ops->WaitForMessage(kPrefix + "/devices/robot-9/telemetry").has_value());
  // The device may not publish a release.
  Result<int> release =
      robot->Publish(kPrefix + "/groups/lab/update/release", "forged");
  ASSERT_TRUE(release.ok());
  EXPECT_EQ(*release, 0x87);
}

TEST_F(FleetCertsTest, MistakesAreRefusedWithWhatToDo) {
  const std::string d = dir_.path();
  CommandResult no_ca = Certs("client " + d + " robot-9");
  EXPECT_EQ(no_ca.exit_code, 2);
  EXPECT_NE(no_ca.err.find("run 'ternd-fleet-certs ca"), std::string::npos)
      << no_ca.err;
  Ok("ca " + d + " --fleet acme");
  CommandResult again = Certs("ca " + d + " --fleet acme");
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("ca.pem exists"), std::string::npos) << again.err;
  CommandResult slash = Certs("client " + d + " a/b");
  EXPECT_EQ(slash.exit_code, 2);
  EXPECT_NE(slash.err.find("client id 'a/b'"), std::string::npos) << slash.err;
  CommandResult wildcard = Certs("acl --fleet acme --device robot-9:la+b");
  EXPECT_EQ(wildcard.exit_code, 2);
  EXPECT_NE(wildcard.err.find("group of robot-9 'la+b'"), std::string::npos)
      << wildcard.err;
  CommandResult no_san = Certs("server " + d + " broker");
  EXPECT_EQ(no_san.exit_code, 2);
  EXPECT_NE(no_san.err.find("--dns HOST"), std::string::npos) << no_san.err;
}

}  // namespace
}  // namespace ternd
