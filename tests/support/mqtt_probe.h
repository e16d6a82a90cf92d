// A small MQTT v5 test client: plays the fleet side (or a second device) in
// integration tests. libmosquitto with its own network thread, TLS with the
// test CA, optional client certificate and user name.
//
//   MqttProbeOptions o;
//   o.port = broker.port();
//   o.ca_file = dir.File("ca.pem");
//   auto probe = MqttProbe::Connect(o);                 // waits for CONNACK
//   ASSERT_TRUE(probe.ok()) << probe.status().message();
//   ASSERT_TRUE((*probe)->Subscribe("fleet/#").ok());   // waits for SUBACK
//   auto m = (*probe)->WaitForMessage("fleet/devices/dev1/presence");
//   ASSERT_TRUE(m.has_value());
//   EXPECT_TRUE(m->retained);
//   ASSERT_TRUE((*probe)->Publish("fleet/x", "payload", 1, true).ok());
//   ASSERT_TRUE((*probe)->ClearRetained("fleet/x").ok());
//
// Messages are collected in arrival order (topic, payload, QoS, retain flag)
// until Clear(). Every wait has a timeout and returns what it found, so a
// test asserts on the result instead of sleeping.
//
// Thread-safety: all methods may be called from any thread; the callbacks
// run on libmosquitto's thread and only append under a mutex.
#ifndef TERND_TESTS_SUPPORT_MQTT_PROBE_H_
#define TERND_TESTS_SUPPORT_MQTT_PROBE_H_

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

struct mosquitto;

namespace ternd::mqtt_testing {

struct MqttProbeOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string client_id;  // empty: "probe-<pid>-<counter>"
  bool tls = true;
  std::string ca_file;  // required with tls
  std::string cert_file;
  std::string key_file;
  std::string username;
  std::string password;
  int keepalive_seconds = 30;
  // false: resume the broker's session for client_id (give a fixed id) and
  // keep it for session_expiry_seconds after a disconnect, so messages
  // published while the probe is cut off (a broker restart with
  // persistence) are queued for it. libmosquitto's thread reconnects by
  // itself either way; with a clean start, subscriptions are lost then.
  bool clean_start = true;
  uint32_t session_expiry_seconds = 0;
};

struct ReceivedMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retained = false;
};

class MqttProbe {
 public:
  // Connects (MQTT v5, clean start) and waits for the CONNACK. The error
  // names the broker and the reason (TLS or CONNACK refusal).
  static Result<std::unique_ptr<MqttProbe>> Connect(MqttProbeOptions options,
                                                    int timeout_ms = 15000);
  ~MqttProbe();  // disconnects cleanly and stops the thread
  MqttProbe(const MqttProbe&) = delete;
  MqttProbe& operator=(const MqttProbe&) = delete;

  // Subscribes and waits for the SUBACK; a refused subscription is an error.
  Status Subscribe(const std::string& filter, int qos = 1,
                   int timeout_ms = 15000);
  // Publishes. QoS 1: waits for the PUBACK and returns its MQTT v5 reason
  // code (0 accepted, 0x10 no subscribers, 0x87 not authorized, ...); QoS 0:
  // returns 0 once handed to the library.
  Result<int> Publish(const std::string& topic, const std::string& payload,
                      int qos = 1, bool retain = false, int timeout_ms = 15000);
  // Publishes an empty retained message, which removes the retained one.
  Status ClearRetained(const std::string& topic, int timeout_ms = 15000);

  // Waits until `done` returns true for the messages received so far (it is
  // re-evaluated on every arrival). Returns false on timeout.
  bool WaitFor(
      const std::function<bool(const std::vector<ReceivedMessage>&)>& done,
      int timeout_ms = 15000);
  // The first message on `topic` (received before or during the wait),
  // optionally with a given payload; std::nullopt on timeout.
  std::optional<ReceivedMessage> WaitForMessage(
      const std::string& topic, int timeout_ms = 15000,
      const std::optional<std::string>& payload = std::nullopt);
  // Messages received so far, oldest first.
  std::vector<ReceivedMessage> messages() const;
  // Messages on `topic` received so far.
  std::vector<ReceivedMessage> MessagesOn(const std::string& topic) const;
  void Clear();

  bool connected() const;

 private:
  friend struct ProbeCallbacks;  // libmosquitto's callbacks (mqtt_probe.cc)
  MqttProbe() = default;

  std::string peer_;
  mosquitto* mosq_ = nullptr;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  int connack_ = -1;        // reason code of the CONNACK; -1: none yet
  int disconnect_rc_ = -1;  // set when the connection ends
  std::string tls_error_;
  std::vector<ReceivedMessage> messages_;
  std::map<int, int> acks_;     // mid -> PUBACK reason code
  std::map<int, int> subacks_;  // mid -> granted QoS or reason code
};

}  // namespace ternd::mqtt_testing

#endif  // TERND_TESTS_SUPPORT_MQTT_PROBE_H_
