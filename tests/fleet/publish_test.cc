// `ternctl publish` against a real mosquitto broker on loopback with TLS
// (the test CA of tests/support/make_test_ca.sh): the retained release
// arrives on the topic of docs/ota.md with the exact bytes of the file, a
// publish the broker's ACL refuses fails with the broker's reason, and
// --clear removes the retained message.
#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/fleet/fleet_harness.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"

namespace ternd::fleet_testing {
namespace {

using mqtt_testing::MosquittoBroker;
using mqtt_testing::MosquittoBrokerOptions;
using mqtt_testing::MqttProbe;
using mqtt_testing::MqttProbeOptions;
using mqtt_testing::MqttTestDir;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class PublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(mqtt_testing::MakeTestCertificates(certs_.path(), "ops").ok());
    for (const char* k : {"r1", "rel", "ts"})
      Ok(std::string("keygen --out ") + k);
    Ok("root --fleet acme --root-key r1.pub --release-key rel.pub "
       "--timestamp-key ts.pub --sign r1.key --out root-1.pb");
    WriteModel(work_.File("m.tern"), "m", 1);
    Ok("sign m.tern --url https://u.example/ --target-device robot-7 "
       "--target-group warehouse --key rel.key --out-dir out");
    WriteBytes(work_.File("password"), "s3cret-pass\n");
  }

  CmdResult Ok(const std::string& args) {
    CmdResult r = Ternctl(args, work_.path());
    EXPECT_EQ(r.exit_code, 0) << "ternctl " << args << "\n" << r.all();
    return r;
  }

  void StartBroker(MosquittoBrokerOptions o) {
    o.cert_dir = certs_.path();
    broker_ = std::make_unique<MosquittoBroker>(o);
    Status s = broker_->Start();
    ASSERT_TRUE(s.ok()) << s.message() << "\n" << broker_->Log();
  }

  std::string Broker() {
    return "--broker 127.0.0.1:" + std::to_string(broker_->port()) +
           " --cafile " + certs_.File("ca.pem") + " ";
  }

  std::unique_ptr<MqttProbe> Probe(const std::string& user = "",
                                   const std::string& password = "") {
    MqttProbeOptions o;
    o.port = broker_->port();
    o.ca_file = certs_.File("ca.pem");
    o.username = user;
    o.password = password;
    auto p = MqttProbe::Connect(o);
    EXPECT_TRUE(p.ok()) << p.status().message() << "\n" << broker_->Log();
    return p.ok() ? std::move(*p) : nullptr;
  }

  MqttTestDir certs_;
  TempDir work_;
  std::unique_ptr<MosquittoBroker> broker_;
};

TEST_F(PublishTest, RetainedReleaseArrivesOnTheDeviceTopicWithTheExactBytes) {
  StartBroker({});
  const std::string file = work_.File("out/m-1.release.pb");
  CmdResult r = Ok("publish " + Broker() +
                   "--fleet acme --device robot-7 out/m-1.release.pb --json");
  const std::string topic = "ternd/v1/acme/devices/robot-7/update/release";
  EXPECT_TRUE(Contains(r.out, "\"topic\":\"" + topic + "\"")) << r.out;
  const auto printed = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(printed.is_object()) << r.out;
  EXPECT_EQ(printed.value("topic", ""), topic);
  EXPECT_EQ(printed.value("bytes", size_t{0}), ReadBytes(file).size());
  EXPECT_EQ(printed.value("retained", false), true);
  EXPECT_EQ(printed.value("qos", 0), 1);
  EXPECT_EQ(printed.value("cleared", true), false);
  // A subscriber that connects afterwards gets it: it is retained.
  std::unique_ptr<MqttProbe> probe = Probe();
  ASSERT_TRUE(probe);
  ASSERT_TRUE(probe->Subscribe("ternd/v1/acme/#").ok());
  auto m = probe->WaitForMessage(topic);
  ASSERT_TRUE(m.has_value()) << broker_->Log();
  EXPECT_EQ(m->payload, ReadBytes(file));
  EXPECT_TRUE(m->retained);
  EXPECT_EQ(m->qos, 1);

  // Group, root and timestamp topics; a custom prefix.
  Ok("publish " + Broker() +
     "--prefix fleets/acme/ --group warehouse out/m-1.release.pb");
  std::unique_ptr<MqttProbe> other = Probe();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->Subscribe("fleets/acme/#").ok());
  auto gm =
      other->WaitForMessage("fleets/acme/groups/warehouse/update/release");
  ASSERT_TRUE(gm.has_value());
  EXPECT_EQ(gm->payload, ReadBytes(file));
  Ok("publish " + Broker() + "--root root-1.pb");  // fleet from the root
  auto root = probe->WaitForMessage("ternd/v1/acme/trust/root");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->payload, ReadBytes(work_.File("root-1.pb")));
  Ok("timestamp --release out/m-1.release.pb --key ts.key --out ts.pb");
  Ok("publish " + Broker() + "--fleet acme --timestamp ts.pb");
  auto ts = probe->WaitForMessage("ternd/v1/acme/trust/timestamp");
  ASSERT_TRUE(ts.has_value());
  EXPECT_EQ(ts->payload, ReadBytes(work_.File("ts.pb")));

  // --clear: subscribers see the empty retained message, and a new one gets
  // nothing retained on that topic any more.
  probe->Clear();
  const auto clear = nlohmann::json::parse(
      Ok("publish " + Broker() + "--fleet acme --device robot-7 --clear --json")
          .out,
      nullptr, false);
  ASSERT_TRUE(clear.is_object());
  EXPECT_EQ(clear.value("cleared", false), true);
  EXPECT_EQ(clear.value("bytes", size_t{1}), 0u);
  auto cleared = probe->WaitForMessage(topic);
  ASSERT_TRUE(cleared.has_value());
  EXPECT_EQ(cleared->payload, "");
  std::unique_ptr<MqttProbe> late = Probe();
  ASSERT_TRUE(late);
  ASSERT_TRUE(late->Subscribe(topic).ok());
  // The retained root arrives after anything retained on `topic` would have.
  ASSERT_TRUE(late->Subscribe("ternd/v1/acme/trust/root").ok());
  ASSERT_TRUE(late->WaitForMessage("ternd/v1/acme/trust/root").has_value());
  EXPECT_TRUE(late->MessagesOn(topic).empty());
}

TEST_F(PublishTest, RefusedByTheBrokersAclFailsWithTheReason) {
  MosquittoBrokerOptions o;
  o.allow_anonymous = false;
  o.users = {{"ops", "s3cret-pass"}};
  o.acl = "user ops\ntopic readwrite ternd/v1/acme/groups/#\n";
  StartBroker(o);
  const std::string auth = "--username ops --password-file password ";
  CmdResult denied = Ternctl("publish " + Broker() + auth +
                                 "--fleet acme --device robot-7 "
                                 "out/m-1.release.pb",
                             work_.path());
  EXPECT_EQ(denied.exit_code, 1) << denied.all();
  EXPECT_TRUE(Contains(denied.err,
                       "refused the publish to "
                       "ternd/v1/acme/devices/robot-7/update/"
                       "release: Not authorized"))
      << denied.err;
  // The password never shows up in what ternctl prints.
  EXPECT_FALSE(Contains(denied.all(), "s3cret-pass"));
  // What the ACL allows goes through, with the same credentials.
  Ok("publish " + Broker() + auth +
     "--fleet acme --group warehouse out/m-1.release.pb");
  std::unique_ptr<MqttProbe> probe = Probe("ops", "s3cret-pass");
  ASSERT_TRUE(probe);
  ASSERT_TRUE(probe->Subscribe("ternd/v1/acme/groups/#").ok());
  auto m =
      probe->WaitForMessage("ternd/v1/acme/groups/warehouse/update/release");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, ReadBytes(work_.File("out/m-1.release.pb")));
  // A wrong password is refused at CONNECT.
  WriteBytes(work_.File("wrong"), "nope\n");
  CmdResult bad = Ternctl("publish " + Broker() +
                              "--username ops --password-file wrong "
                              "--fleet acme --group warehouse "
                              "out/m-1.release.pb",
                          work_.path());
  EXPECT_EQ(bad.exit_code, 1) << bad.all();
  EXPECT_TRUE(Contains(bad.err,
                       "refused this client: Not authorized (CONNACK "
                       "reason 0x87)"))
      << bad.err;
  EXPECT_TRUE(Contains(bad.err, "user name 'ops'")) << bad.err;
}

// A broker that requires client certificates, and a publish without one:
// the error says so and names the options that supply one.
TEST_F(PublishTest, ABrokerThatWantsACertificateSaysWhichOptionsGiveOne) {
  MosquittoBrokerOptions o;
  o.require_certificate = true;
  StartBroker(o);
  CmdResult r = Ternctl("publish " + Broker() +
                            "--fleet acme --group warehouse "
                            "out/m-1.release.pb",
                        work_.path());
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_TRUE(Contains(r.err,
                       "no client certificate was given (--cert C "
                       "--key K)"))
      << r.err;
  EXPECT_FALSE(Contains(r.err, "Resource temporarily unavailable (reason"))
      << r.err;
  // With the client certificate the test CA made: accepted.
  Ok("publish " + Broker() + "--cert " + certs_.File("client.pem") + " --key " +
     certs_.File("client.key") +
     " --fleet acme --group warehouse out/m-1.release.pb");
}

TEST_F(PublishTest, ChecksTheServerAndWhatIsPublished) {
  StartBroker({});
  // A broker whose certificate is not from --cafile is not talked to.
  CmdResult tls = Ternctl(
      "publish --broker 127.0.0.1:" + std::to_string(broker_->port()) +
          " --cafile " + certs_.File("other-ca.pem") +
          " --fleet acme --device robot-7 out/m-1.release.pb --timeout 20",
      work_.path());
  EXPECT_EQ(tls.exit_code, 1) << tls.all();
  EXPECT_TRUE(Contains(tls.err, "127.0.0.1:" + std::to_string(broker_->port())))
      << tls.err;
  // The TLS failure is reported as such, not as a timeout.
  EXPECT_TRUE(Contains(tls.err, "TLS with 127.0.0.1:")) << tls.err;
  EXPECT_TRUE(Contains(tls.err, "certificate verify failed")) << tls.err;
  // Only signed metadata of the right role goes to a topic.
  CmdResult role =
      Ternctl("publish " + Broker() + "--fleet acme --device robot-7 root-1.pb",
              work_.path());
  EXPECT_EQ(role.exit_code, 1);
  EXPECT_TRUE(Contains(role.err,
                       "root-1.pb is a 'root' envelope, expected "
                       "'release'"))
      << role.err;
  CmdResult key =
      Ternctl("publish " + Broker() + "--fleet acme --device robot-7 rel.key",
              work_.path());
  EXPECT_EQ(key.exit_code, 1);
  EXPECT_TRUE(Contains(key.err, "rel.key is not signed ternd metadata"))
      << key.err;
  // A release published where it is not targeted would only be refused.
  CmdResult target = Ternctl("publish " + Broker() +
                                 "--fleet acme --device robot-8 "
                                 "out/m-1.release.pb",
                             work_.path());
  EXPECT_EQ(target.exit_code, 1);
  EXPECT_TRUE(Contains(target.err, "does not target device 'robot-8'"))
      << target.err;
}

}  // namespace
}  // namespace ternd::fleet_testing
