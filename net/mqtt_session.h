// One MQTT v5 session to the fleet broker, driven by the daemon's sd-event
// loop (libmosquitto with an external loop: no library threads).
//
// - TLS with the fleet CA and an optional device client certificate.
// - Own reconnect timer with exponential backoff and full jitter (the
//   library's reconnect delay only works with its own threads).
// - The socket fd is re-registered with the loop after every (re)connect;
//   writability is watched whenever mosquitto_want_write() says so; a timer
//   runs mosquitto_loop_misc() for keepalives.
// - Subscriptions are remembered and re-sent on every connect.
// - Publishing is refused while disconnected and beyond `max_inflight`
//   unacknowledged QoS 1 messages, so libmosquitto's unbounded in-memory
//   queue never grows: callers keep their data (SQLite outbox) until
//   on_publish_done reports the broker's v5 reason code.
// - The Last Will can be changed between connections (session counter).
// - Passwords and key material are never logged.
//
// Thread-safety: everything runs on the loop's thread.
#ifndef TERND_NET_MQTT_SESSION_H_
#define TERND_NET_MQTT_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

typedef struct sd_event sd_event;

namespace ternd::net {

struct MqttWill {
  std::string topic;
  std::string payload;
  int qos = 1;
  bool retain = true;
};

struct MqttOptions {
  std::string host = "localhost";
  int port = 8883;
  std::string client_id;  // the device id
  bool tls = true;        // false only for tests and closed networks
  std::string ca_file;    // fleet CA (PEM); empty: the system store
  std::string cert_file;  // optional device client certificate (PEM)
  std::string key_file;   // and its key
  std::string username;   // optional
  std::string password;   // optional; never logged
  int keepalive_seconds = 30;
  int reconnect_min_ms = 500;
  int reconnect_max_ms = 60000;
  uint32_t max_inflight = 16;  // unacknowledged QoS 1 publishes
  std::optional<MqttWill> will;
};

enum class MqttState { kDisconnected, kConnecting, kConnected, kStopped };
const char* MqttStateName(MqttState state);  // "connected", ...

struct MqttCallbacks {
  // After a successful CONNACK; subscriptions have been re-sent.
  std::function<void()> on_connected;
  // After losing (or failing to establish) the connection; `why` is for
  // logs and status ("connection refused: not authorized", ...).
  std::function<void(const std::string& why)> on_disconnected;
  std::function<void(std::string_view topic, std::string_view payload,
                     bool retained)>
      on_message;
  // A QoS 1 publish was acknowledged (PUBACK); `reason_code` is the MQTT v5
  // reason code (0 success, >= 0x80 failure, e.g. 0x87 not authorized).
  // Also called with `reason_code` -1 for every in-flight publish when the
  // connection drops before its PUBACK (the caller retries it later).
  std::function<void(int mid, int reason_code)> on_publish_done;
};

class MqttSession {
 public:
  static Result<std::unique_ptr<MqttSession>> Create(sd_event* loop,
                                                     MqttOptions options);
  ~MqttSession();  // disconnects cleanly (no will) and unregisters
  MqttSession(const MqttSession&) = delete;
  MqttSession& operator=(const MqttSession&) = delete;

  // Starts connecting in the background (never blocks the loop for long:
  // give a numeric host or one in /etc/hosts; DNS is resolved
  // synchronously by libmosquitto).
  void Start();
  // Disconnects cleanly; no will is sent. Start() connects again.
  void Stop();

  // Adds an observer; every observer sees every event (each ignores the
  // topics and message ids it does not own). Add observers before Start().
  void AddObserver(MqttCallbacks callbacks);

  // Adds a subscription (sent now if connected, and on every connect).
  void Subscribe(const std::string& topic_filter, int qos);
  // Replaces the will used from the next connect on.
  void SetWill(std::optional<MqttWill> will);

  // Publishes; returns the message id. Refused (UNAVAILABLE) when not
  // connected, (RESOURCE_EXHAUSTED) at max_inflight for QoS 1.
  Result<int> Publish(const std::string& topic, std::string_view payload,
                      int qos, bool retain);

  MqttState state() const;
  bool connected() const { return state() == MqttState::kConnected; }
  uint32_t inflight() const;
  uint64_t connects() const;     // successful connects so far
  uint64_t reconnects() const;   // connection attempts after a loss
  const std::string& last_error() const;

  class Impl;

 private:
  explicit MqttSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternd::net

#endif  // TERND_NET_MQTT_SESSION_H_
