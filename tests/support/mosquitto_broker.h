// A real mosquitto broker for integration tests (Debian package `mosquitto`,
// /usr/sbin/mosquitto), started on 127.0.0.1 on a free port with a config
// generated in its own temporary directory.
//
//   MqttTestDir dir;                              // $TMPDIR/ternd-mqtt-XXXXXX
//   ASSERT_TRUE(MakeTestCertificates(dir.path(), "dev1").ok());
//   MosquittoBrokerOptions options;
//   options.cert_dir = dir.path();                // TLS with the test CA
//   MosquittoBroker broker(options);
//   ASSERT_TRUE(broker.Start().ok()) << broker.Log();
//   ... connect to 127.0.0.1:broker.port() with dir.File("ca.pem") ...
//   broker.Stop(); broker.Start();                // an outage, same port
//
// What can be configured: a TLS listener (the certificates written by
// tests/support/make_test_ca.sh: ca.pem, server.pem/key or, to test a broker
// the device must refuse, other-server.pem/key), require_certificate (with
// the client certificate's CN as the user name, so ACLs can name devices),
// a password file (users are hashed with mosquitto_passwd), an ACL file,
// anonymous access, persistence of retained messages across Stop()/Start().
// The broker logs everything (connections, denials) to a file that Log()
// returns, so a failing test can print what the broker saw.
//
// Started as root, mosquitto would drop privileges to the `mosquitto` user
// and could not read the test's 0700 directory or 0600 keys: the generated
// config names the current user, so it keeps running as the test does.
//
// Thread-safety: none; use from the test's thread.
#ifndef TERND_TESTS_SUPPORT_MOSQUITTO_BROKER_H_
#define TERND_TESTS_SUPPORT_MOSQUITTO_BROKER_H_

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "tests/support/test_env.h"

namespace ternd::mqtt_testing {

// The shared scratch directory, certificates and ports (test_env.h).
using MqttTestDir = ::ternd::testing::TempDir;
using ::ternd::testing::FindFreePort;
using ::ternd::testing::MakeTestCertificates;

struct MosquittoBrokerOptions {
  // Directory with make_test_ca.sh's output. Empty: a plain TCP listener
  // (only for tests that are not about TLS).
  std::string cert_dir;
  // "server" (signed by ca.pem) or "other-server" (signed by other-ca.pem).
  std::string server_cert = "server";
  // Clients must present a certificate signed by ca.pem; its CN becomes the
  // client's user name for the ACL.
  bool require_certificate = false;
  // user name -> password; written to a password file when not empty.
  std::vector<std::pair<std::string, std::string>> users;
  // Contents of an ACL file (mosquitto's acl_file syntax); empty: no ACL,
  // everyone may do everything. Example:
  //   "user dev1\ntopic readwrite fleet/devices/dev1/#\n"
  std::string acl;
  bool allow_anonymous = true;
  // Keep retained messages and sessions across Stop()/Start() (not Kill()).
  bool persistence = false;
  // mosquitto log_type values, space-separated. "all" logs every packet
  // (what a failing test wants to see); benchmarks use "error warning".
  std::string log_types = "all";
  // Appended to the generated mosquitto.conf as is.
  std::string extra_config;
  // 0: a free port is picked by the first Start().
  int port = 0;
};

class MosquittoBroker {
 public:
  explicit MosquittoBroker(MosquittoBrokerOptions options = {});
  ~MosquittoBroker();  // kills the broker if it still runs
  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;

  // Writes the config (first call), starts mosquitto and waits until it
  // accepts TCP connections (at most `timeout_ms`). Later calls start it
  // again on the same port. The error names the reason and includes the end
  // of the broker's log.
  Status Start(int timeout_ms = 15000);
  // SIGTERM and wait: a clean shutdown (persistence is written).
  Status Stop(int timeout_ms = 15000);
  // SIGKILL and wait: a crash.
  void Kill();
  // SIGSTOP / SIGCONT: the broker stops answering without closing anything.
  void Pause();
  void Resume();
  bool running();

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  // Directory of the generated config, log, password and ACL files.
  const std::string& directory() const { return dir_.path(); }
  // Everything the broker logged so far, across restarts.
  std::string Log() const;
  // Waits until Log() contains `needle` (e.g. "Client dev1 disconnected").
  bool WaitForLog(const std::string& needle, int timeout_ms = 10000) const;

 private:
  Status WriteConfig();
  int WaitExit(int timeout_ms);

  MosquittoBrokerOptions options_;
  MqttTestDir dir_;
  std::string host_ = "127.0.0.1";
  int port_ = 0;
  bool configured_ = false;
  pid_t pid_ = -1;
};

}  // namespace ternd::mqtt_testing

#endif  // TERND_TESTS_SUPPORT_MOSQUITTO_BROKER_H_
